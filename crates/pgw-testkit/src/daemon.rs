//! [`Daemon`]: one long-running process of a fixture (an etcd member, PgBouncer): spawned in
//! its own process group with its output appended to a log file, its pid written to a file
//! for the watchdog, polled for readiness with a deadline (failing at once if it exits), and
//! stopped with a signal, then SIGKILL.

use std::ffi::OsString;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgw_node::{one_line, OsUser};

use crate::TestkitError;

/// How many log lines go into an error.
const ERROR_LOG_LINES: usize = 10;

/// How a [`Daemon`] is started.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// For messages: "etcd member m0".
    pub(crate) what: String,
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    /// Variables whose names start with one of these are removed from its environment.
    pub(crate) clear_env_prefixes: Vec<&'static str>,
    /// Run as this user (when it is another user than us).
    pub(crate) user: Option<OsUser>,
    pub(crate) cwd: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) pidfile: PathBuf,
}

/// A fixture's process; see the module docs.
#[derive(Debug)]
pub(crate) struct Daemon {
    pub(crate) spec: Spec,
    child: Mutex<Option<Child>>,
}

impl Daemon {
    pub(crate) fn new(spec: Spec) -> Daemon {
        Daemon {
            spec,
            child: Mutex::new(None),
        }
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the process (it must not be running).
    pub(crate) fn spawn(&self) -> Result<(), TestkitError> {
        let mut child = self.child();
        if let Some(c) = child.as_mut() {
            if c.try_wait().ok().flatten().is_none() {
                return Ok(());
            }
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log)
            .map_err(|source| TestkitError::Io {
                action: "open log",
                path: self.spec.log.clone(),
                source,
            })?;
        let log2 = log.try_clone().map_err(|source| TestkitError::Io {
            action: "open log",
            path: self.spec.log.clone(),
            source,
        })?;
        let mut cmd = Command::new(&self.spec.program);
        cmd.args(&self.spec.args)
            .current_dir(&self.spec.cwd)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group: a Ctrl-C in the terminal does not reach it.
            .process_group(0);
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if self
                .spec
                .clear_env_prefixes
                .iter()
                .any(|p| k.starts_with(p))
            {
                cmd.env_remove(&key);
            }
        }
        if let Some(user) = &self.spec.user {
            user.apply(&mut cmd);
        }
        tracing::debug!(what = %self.spec.what, program = %self.spec.program.display(), args = ?self.spec.args, "spawn");
        let spawned = cmd.spawn().map_err(|source| TestkitError::Spawn {
            program: self.spec.program.clone(),
            source,
        })?;
        let pid = spawned.id();
        *child = Some(spawned);
        drop(child);
        fs::write(&self.spec.pidfile, format!("{pid}\n")).map_err(|source| TestkitError::Io {
            action: "write",
            path: self.spec.pidfile.clone(),
            source,
        })
    }

    /// The pid, while the process runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        let mut child = self.child();
        let c = child.as_mut()?;
        match c.try_wait() {
            Ok(None) => Some(c.id()),
            _ => None,
        }
    }

    /// Whether the process runs.
    pub(crate) fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// How it exited, if it did.
    pub(crate) fn exit_status(&self) -> Option<ExitStatus> {
        self.child().as_mut()?.try_wait().ok().flatten()
    }

    /// Sends `signal`; false if it is not running.
    pub(crate) fn signal(&self, signal: Signal) -> bool {
        let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) else {
            return false;
        };
        tracing::debug!(what = %self.spec.what, pid, ?signal, "signal");
        kill(Pid::from_raw(pid), signal).is_ok()
    }

    /// SIGKILL, and reap it.
    pub(crate) fn kill(&self) {
        let mut child = self.child();
        if let Some(c) = child.as_mut() {
            tracing::debug!(what = %self.spec.what, pid = c.id(), "SIGKILL");
            let _ = c.kill();
            let _ = c.wait();
        }
        *child = None;
    }

    /// `signal`, then SIGKILL after `grace` if it still runs; reaps it.
    pub(crate) fn stop(&self, signal: Signal, grace: Duration) {
        if self.signal(signal) {
            let deadline = Instant::now() + grace;
            while self.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// The whole log (empty if unreadable).
    pub(crate) fn log(&self) -> String {
        fs::read(&self.spec.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The log's length, to read later what a start added.
    pub(crate) fn log_len(&self) -> u64 {
        fs::metadata(&self.spec.log).map(|m| m.len()).unwrap_or(0)
    }

    /// The log from byte `start` on.
    pub(crate) fn log_since(&self, start: u64) -> String {
        let log = self.log();
        log.get(usize::try_from(start).unwrap_or(0)..)
            .unwrap_or(&log)
            .to_owned()
    }

    /// Polls `ready` every 50 ms until it holds; fails at once if the process exits, or at
    /// `timeout`, with the log tail.
    pub(crate) fn wait_ready(
        &self,
        timeout: Duration,
        log_start: u64,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), TestkitError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(TestkitError::Exited {
                    what: self.spec.what.clone(),
                    status,
                    log: one_line(&self.log_since(log_start), ERROR_LOG_LINES),
                });
            }
            if ready() {
                tracing::debug!(what = %self.spec.what, "ready");
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::NotReady {
                    what: self.spec.what.clone(),
                    secs: timeout.as_secs(),
                    log: one_line(&self.log_since(log_start), ERROR_LOG_LINES),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether `path` is an executable file; else the error naming the Debian package.
pub(crate) fn require_binary(path: &Path, package: &'static str) -> Result<(), TestkitError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(TestkitError::MissingBinary {
            path: path.to_owned(),
            package,
        })
    }
}

/// A temp dir in memory (`/dev/shm`) when the machine has one, else [`temp_dir`]'s. For
/// fixtures that fsync on every write (etcd): on a 2-core machine running the suite in
/// parallel, a disk fsync can stall for seconds and a 5 s lease with it, which tests the
/// disk rather than the code under test.
pub(crate) fn memory_temp_dir(
    prefix: &str,
    user: &OsUser,
) -> Result<tempfile::TempDir, TestkitError> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(tmp) = tempfile::Builder::new().prefix(prefix).tempdir_in(shm) {
            user.chown(tmp.path())?;
            return Ok(tmp);
        }
    }
    temp_dir(prefix, user)
}

/// A fixture's temp dir (`<prefix>XXXXXX`), reachable by `user`.
pub(crate) fn temp_dir(prefix: &str, user: &OsUser) -> Result<tempfile::TempDir, TestkitError> {
    let base = pgw_cluster::os::temp_base(user);
    let tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .map_err(|source| TestkitError::Io {
            action: "create temp dir in",
            path: base.clone(),
            source,
        })?;
    user.chown(tmp.path())?;
    Ok(tmp)
}
