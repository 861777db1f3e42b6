//! [`Cluster`]: a running throwaway server, its operations, and its cleanup on drop.

use std::fmt;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::error::one_line;
use crate::os::{self, ServerUser};
use crate::{ports, ClusterBuilder, ClusterError};

/// The address the server listens on.
pub(crate) const HOST: &str = "127.0.0.1";
/// The bootstrap superuser created by initdb.
pub(crate) const SUPERUSER: &str = "postgres";
/// How long a start or restart may take before we give up.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How many lines of the server log go into an error message.
const ERROR_LOG_LINES: usize = 12;
/// How many lines of the server log are printed when a test panics.
const PANIC_LOG_LINES: usize = 60;

/// How to stop the server.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StopMode {
    /// `-m fast`: roll back transactions, disconnect clients, checkpoint.
    Fast,
    /// `-m immediate`: quit at once (crash recovery on next start; we delete the data anyway).
    Immediate,
}

impl StopMode {
    fn as_arg(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// A running throwaway PostgreSQL server in its own temp dir, on a free loopback port.
///
/// Dropping it stops the server (immediate mode) and removes all its files; if the thread is
/// panicking, the tail of the server log is printed to stderr first. [`Cluster::stop`] does the
/// same gracefully and reports errors. See the crate docs for the watchdog that cleans up if
/// the `Cluster` is never dropped.
pub struct Cluster {
    /// The temp dir: holds `data/`, `server.log` and the Unix socket. `None` once removed.
    pub(crate) tmp: Option<tempfile::TempDir>,
    pub(crate) root: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) log_path: PathBuf,
    pub(crate) bin_dir: PathBuf,
    /// 0 until a port is reserved.
    pub(crate) port: u16,
    pub(crate) password: String,
    pub(crate) user: ServerUser,
    pub(crate) watchdog: Option<Child>,
    /// Set once the server is stopped and the files removed (or that was attempted).
    pub(crate) torn_down: bool,
}

impl Cluster {
    /// Starts a cluster with the [`ClusterBuilder`] defaults.
    pub fn start() -> Result<Cluster, ClusterError> {
        ClusterBuilder::new().start()
    }

    /// A builder for a cluster with settings, files, pg_hba lines or another bin dir.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::new()
    }

    /// The address the server listens on: always `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The TCP port (never 5432).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's name: `postgres`.
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// The superuser's password, random per cluster (SCRAM over TCP; Unix-socket connections
    /// are trusted).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A libpq conninfo string for the superuser on database `postgres`.
    pub fn dsn(&self) -> String {
        self.dsn_for(SUPERUSER, &self.password, "postgres")
    }

    /// A libpq conninfo string for `user`/`password` on `dbname`, over TCP.
    pub fn dsn_for(&self, user: &str, password: &str, dbname: &str) -> String {
        format!(
            "host={HOST} port={} user={} password={} dbname={}",
            self.port,
            conninfo_value(user),
            conninfo_value(password),
            conninfo_value(dbname)
        )
    }

    /// A `postgresql://` URI for the superuser on database `postgres`.
    pub fn uri(&self) -> String {
        format!(
            "postgresql://{SUPERUSER}:{}@{HOST}:{}/postgres",
            self.password, self.port
        )
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory of the server's Unix socket (the cluster's temp dir).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// The directory of the PostgreSQL binaries in use.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The whole server log so far (empty if it cannot be read).
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The postmaster's pid from `postmaster.pid`, if the server is running.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Runs `sql` (one or more statements, fed to `psql` on stdin) on `dbname` as the
    /// superuser over TCP, with `psql -X -A -t -q -v ON_ERROR_STOP=1`, and returns its stdout
    /// without the trailing newline: unaligned, tuples only, `|` between columns.
    pub fn psql(&self, dbname: &str, sql: &str) -> Result<String, ClusterError> {
        let port = self.port.to_string();
        let mut cmd = os::command(&self.bin_dir, "psql", &self.root, None);
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h", HOST, "-p", &port, "-U", SUPERUSER, "-d", dbname, "-f", "-",
            ])
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGAPPNAME", "pgw-cluster")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        tracing::debug!(port = self.port, dbname, sql, "psql");
        let mut child = cmd.spawn().map_err(|source| ClusterError::Spawn {
            program: "psql".to_owned(),
            source,
        })?;
        // Feed stdin from a thread so a large script cannot deadlock against a full stdout.
        let writer = child.stdin.take().map(|mut stdin| {
            let sql = sql.to_owned();
            std::thread::spawn(move || {
                // A write error means psql exited early; its stderr says why.
                let _ = stdin.write_all(sql.as_bytes());
            })
        });
        let out = child
            .wait_with_output()
            .map_err(|source| ClusterError::Spawn {
                program: "psql".to_owned(),
                source,
            })?;
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(ClusterError::Psql {
                dbname: dbname.to_owned(),
                stderr: one_line(&stderr, 6),
            });
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        Ok(stdout.trim_end_matches(['\n', '\r']).to_owned())
    }

    /// Restarts the server (`pg_ctl restart -m fast -w`) and waits until it accepts
    /// connections; settings of context `postmaster` take effect.
    pub fn restart(&self) -> Result<(), ClusterError> {
        tracing::debug!(port = self.port, "restart");
        let log_start = self.log_len();
        let mut cmd = self.pg_ctl();
        cmd.arg("-l")
            .arg(&self.log_path)
            .args(["-w", "-t", &READY_TIMEOUT.as_secs().to_string()])
            .args(["-m", "fast", "restart"]);
        os::own_process_group(&mut cmd);
        let out = os::run(&mut cmd)?;
        if !out.status.success() {
            return Err(ClusterError::PgCtl {
                action: "restart",
                output: one_line(
                    &format!("{}\n{}", os::combined(&out), self.log_since(log_start)),
                    ERROR_LOG_LINES,
                ),
            });
        }
        self.wait_ready()
    }

    /// Makes the server re-read its configuration files (`pg_ctl reload`).
    pub fn reload(&self) -> Result<(), ClusterError> {
        tracing::debug!(port = self.port, "reload");
        let mut cmd = self.pg_ctl();
        cmd.arg("reload");
        let out = os::run(&mut cmd)?;
        if !out.status.success() {
            return Err(ClusterError::PgCtl {
                action: "reload",
                output: one_line(&os::combined(&out), ERROR_LOG_LINES),
            });
        }
        Ok(())
    }

    /// Stops the server gracefully (`pg_ctl stop -m fast`) and removes its files, reporting
    /// what went wrong (dropping does the same in immediate mode and cannot report).
    pub fn stop(mut self) -> Result<(), ClusterError> {
        self.teardown(StopMode::Fast)
    }

    /// `pg_ctl -D <data>` as the server user.
    pub(crate) fn pg_ctl(&self) -> std::process::Command {
        let mut cmd = os::command(&self.bin_dir, "pg_ctl", &self.root, Some(self.user));
        cmd.arg("-D").arg(&self.data_dir);
        cmd
    }

    /// The server log's current length, to read what a later step adds.
    pub(crate) fn log_len(&self) -> u64 {
        fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0)
    }

    /// The server log from byte `start` on.
    pub(crate) fn log_since(&self, start: u64) -> String {
        let mut text = Vec::new();
        if let Ok(mut f) = fs::File::open(&self.log_path) {
            if f.seek(SeekFrom::Start(start)).is_ok() {
                let _ = f.read_to_end(&mut text);
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// The last `lines` lines of the server log, on one line.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        one_line(&self.log(), lines)
    }

    /// Polls `pg_isready` until the server accepts connections, or fails after
    /// [`READY_TIMEOUT`] (or at once if the postmaster is gone) with the log tail.
    pub(crate) fn wait_ready(&self) -> Result<(), ClusterError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let port = self.port.to_string();
        loop {
            let mut cmd = os::command(&self.bin_dir, "pg_isready", &self.root, None);
            cmd.args([
                "-h", HOST, "-p", &port, "-U", SUPERUSER, "-d", "postgres", "-t", "2",
            ]);
            let out = os::run(&mut cmd)?;
            if out.status.success() {
                tracing::debug!(port = self.port, "server is ready");
                return Ok(());
            }
            if self.postmaster_pid().is_none() || Instant::now() >= deadline {
                return Err(ClusterError::NotReady {
                    secs: READY_TIMEOUT.as_secs(),
                    log: self.log_tail(ERROR_LOG_LINES),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server if it runs, kills the watchdog, releases the port and removes the temp
    /// dir; runs once. Every step is attempted; the first error is returned.
    pub(crate) fn teardown(&mut self, mode: StopMode) -> Result<(), ClusterError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut first_err = None;

        if let Some(pid) = self.postmaster_pid() {
            tracing::debug!(port = self.port, pid, mode = mode.as_arg(), "stop server");
            let mut cmd = self.pg_ctl();
            cmd.args(["-m", mode.as_arg(), "-w", "-t", "30", "stop"]);
            match os::run(&mut cmd) {
                Ok(out) if out.status.success() => {}
                Ok(out) => {
                    first_err = Some(ClusterError::PgCtl {
                        action: "stop",
                        output: one_line(&os::combined(&out), ERROR_LOG_LINES),
                    });
                }
                Err(e) => first_err = Some(e),
            }
            // pg_ctl failed (or timed out): signal the postmaster ourselves.
            if self.postmaster_pid() == Some(pid) && os::pid_alive(pid) {
                tracing::debug!(pid, "pg_ctl stop failed; sending SIGQUIT");
                os::signal(pid, Signal::SIGQUIT);
                let deadline = Instant::now() + Duration::from_secs(5);
                while os::pid_alive(pid) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if os::pid_alive(pid) {
                    os::signal(pid, Signal::SIGKILL);
                }
            }
        }

        if let Some(mut watchdog) = self.watchdog.take() {
            tracing::debug!(pid = watchdog.id(), "stop watchdog");
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }

        if self.port != 0 {
            ports::release(self.port);
        }

        if let Some(tmp) = self.tmp.take() {
            tracing::debug!(dir = %self.root.display(), "remove temp dir");
            if let Err(source) = tmp.close() {
                // Files the server was still writing may have raced the removal: try once more.
                if fs::remove_dir_all(&self.root).is_err() && self.root.exists() {
                    first_err.get_or_insert(ClusterError::Io {
                        action: "remove",
                        path: self.root.clone(),
                        source,
                    });
                }
            }
        }

        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.torn_down {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(PANIC_LOG_LINES)..];
            // writeln! rather than eprintln!, which panics (here: aborts) if stderr is gone.
            // It bypasses the test harness's capture, so name the thread (= the test).
            let _ = writeln!(
                std::io::stderr(),
                "----- pgw-cluster: {} panicked; last {} lines of the server log (port {}, {}) -----\n{}\n----- end of server log -----",
                std::thread::current().name().unwrap_or("a thread"),
                tail.len(),
                self.port,
                self.data_dir.display(),
                tail.join("\n")
            );
        }
        if let Err(e) = self.teardown(StopMode::Immediate) {
            tracing::warn!(port = self.port, error = %e, "cluster cleanup failed");
            let _ = writeln!(
                std::io::stderr(),
                "pgw-cluster: cleanup of the cluster on port {} failed: {e}",
                self.port
            );
        }
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("host", &HOST)
            .field("port", &self.port)
            .field("data_dir", &self.data_dir)
            .field("bin_dir", &self.bin_dir)
            .finish_non_exhaustive()
    }
}

/// Quotes a libpq conninfo value when it needs it (empty, spaces, quotes, backslashes).
fn conninfo_value(value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\');
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_quoting() {
        assert_eq!(conninfo_value("postgres"), "postgres");
        assert_eq!(conninfo_value(""), "''");
        assert_eq!(conninfo_value("a b"), "'a b'");
        assert_eq!(conninfo_value(r"it's\"), r"'it\'s\\'");
    }

    #[test]
    fn cluster_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Cluster>();
    }
}
