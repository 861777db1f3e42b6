//! [`Watchdog`]: a detached `sh` loop that stops a fixture's processes and removes its temp
//! dir once the owning process is gone, however it went (SIGKILL, `exit` with the fixture in a
//! `static`, a panic that aborts). Clusters use it for their postmaster; `pgw-testkit` for
//! etcd and PgBouncer.
//!
//! It runs in its own process group (a Ctrl-C in the terminal does not reach it), ignores
//! SIGHUP/SIGINT/SIGTERM, and runs as the current user: root can signal processes owned by
//! `postgres`, and a non-root owner runs them as itself. Each [`Watched`] process is named by a
//! pid file (first line: the pid), read only when the owner is gone, so a process restarted in
//! between is still found. A pid file outlives its process, and the pid may since belong to
//! another: the watchdog signals the pid only if it is above 1 and the process's working
//! directory (`/proc/<pid>/cwd`) is the one the fixture gave (a postmaster's is its data
//! directory); otherwise the file is stale and the process is left alone. When the fixture drops normally it stops its processes itself and
//! then drops the `Watchdog`, which kills it (SIGKILL, which cannot be ignored); the watchdog
//! also exits on its own once the temp dir is gone.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use std::os::unix::process::CommandExt;

use crate::ClusterError;

/// `$1` = owner pid, `$2` = the temp dir, then quadruples: pid file, the process's working
/// directory, signal name, tenths of a second to wait before SIGKILL.
const SCRIPT: &str = r#"
trap '' HUP INT TERM PIPE
owner=$1
dir=$2
shift 2
nap() { sleep "$1" 2>/dev/null || sleep 1; }
# Alive and not a zombie (an exited process nobody reaped still answers kill -0).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [ -r "/proc/$1/stat" ] || return 0
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
  [ "$state" != Z ]
}
# Alive and working in $2: the process the pid file meant, not one that got its pid since.
ours() {
  alive "$1" || return 1
  want=$(cd "$2" 2>/dev/null && pwd -P) || return 1
  got=$(readlink "/proc/$1/cwd" 2>/dev/null) || return 1
  [ -n "$got" ] && [ "$got" = "$want" ]
}
while kill -0 "$owner" 2>/dev/null && [ -d "$dir" ]; do
  nap 0.5
done
while [ "$#" -ge 4 ]; do
  pidfile=$1 cwd=$2 sig=$3 tenths=$4
  shift 4
  [ -f "$pidfile" ] || continue
  pid=$(head -n 1 "$pidfile" 2>/dev/null)
  case "$pid" in ''|*[!0-9]*) continue ;; esac
  # kill 0 would signal our own process group, kill 1 init; leading zeros are no pid either.
  case "$pid" in 0*|1) continue ;; esac
  ours "$pid" "$cwd" || continue
  kill -s "$sig" "$pid" 2>/dev/null
  i=0
  while alive "$pid" && [ "$i" -lt "$tenths" ]; do
    nap 0.1
    i=$((i + 1))
  done
  ours "$pid" "$cwd" && kill -s KILL "$pid" 2>/dev/null
done
rm -rf "$dir"
"#;

/// A process the watchdog stops when the owner dies.
#[derive(Debug, Clone)]
pub struct Watched {
    /// A file whose first line is the process's pid (the postmaster's `postmaster.pid`, or
    /// one the fixture writes); a missing file means nothing to stop.
    pub pidfile: PathBuf,
    /// The process's working directory (a postmaster's: its data directory; a daemon's: the
    /// directory it was started in). A process named by the pid file that works elsewhere is
    /// not the one meant (the file is stale) and is not signalled.
    pub cwd: PathBuf,
    /// The signal asking it to stop (SIGQUIT for a postmaster: immediate shutdown).
    pub signal: Signal,
    /// How long to wait for it before SIGKILL.
    pub grace: Duration,
}

impl Watched {
    /// The process in `pidfile`, working in `cwd`, asked to stop with `signal`, killed after
    /// `grace`.
    pub fn new(
        pidfile: impl Into<PathBuf>,
        cwd: impl Into<PathBuf>,
        signal: Signal,
        grace: Duration,
    ) -> Watched {
        Watched {
            pidfile: pidfile.into(),
            cwd: cwd.into(),
            signal,
            grace,
        }
    }
}

/// A running watchdog; dropping it kills it (the fixture cleaned up itself).
#[derive(Debug)]
pub struct Watchdog {
    child: Child,
}

impl Watchdog {
    /// Spawns a watchdog for the fixture whose temp dir is `dir`, owned by this process: when
    /// this process is gone, it stops each of `watched` in order and removes `dir`.
    pub fn spawn(dir: &Path, watched: &[Watched]) -> Result<Watchdog, ClusterError> {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(SCRIPT)
            .arg("pgw-watchdog")
            .arg(std::process::id().to_string())
            .arg(dir);
        for w in watched {
            let name = w.signal.as_str().trim_start_matches("SIG");
            let tenths = (w.grace.as_millis() / 100).max(1).to_string();
            cmd.arg(&w.pidfile).arg(&w.cwd).arg(name).arg(tenths);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/")
            .process_group(0);
        let child = cmd.spawn().map_err(|source| ClusterError::Spawn {
            program: "/bin/sh (watchdog)".to_owned(),
            source,
        })?;
        tracing::debug!(pid = child.id(), dir = %dir.display(), processes = watched.len(), "spawned watchdog");
        Ok(Watchdog { child })
    }

    /// The watchdog's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        tracing::debug!(pid = self.child.id(), "stop watchdog");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
