//! The watchdog: a detached `sh` loop that stops a cluster's server and removes its temp dir
//! once the owning process is gone, however it went (SIGKILL, `exit` with the `Cluster` in a
//! `static`, a panic that aborts).
//!
//! It runs in its own process group (a Ctrl-C in the terminal does not reach it), ignores
//! SIGHUP/SIGINT/SIGTERM, and runs as the current user: root can signal the postmaster owned
//! by `postgres`, and a non-root owner runs the server as itself. When the `Cluster` drops
//! normally it stops the server itself and then kills the watchdog (SIGKILL, which cannot be
//! ignored); the watchdog also exits on its own once the temp dir is gone.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::os::own_process_group;
use crate::ClusterError;

/// `$1` = owner pid, `$2` = the cluster's temp dir (data dir is `$2/data`).
const SCRIPT: &str = r#"
trap '' HUP INT TERM PIPE
owner=$1
dir=$2
pidfile="$dir/data/postmaster.pid"
nap() { sleep "$1" 2>/dev/null || sleep 1; }
# Alive and not a zombie (an exited postmaster nobody reaped still answers kill -0).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [ -r "/proc/$1/stat" ] || return 0
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
  [ "$state" != Z ]
}
while kill -0 "$owner" 2>/dev/null && [ -d "$dir" ]; do
  nap 0.5
done
if [ -f "$pidfile" ]; then
  pm=$(head -n 1 "$pidfile" 2>/dev/null)
  case "$pm" in ''|*[!0-9]*) pm= ;; esac
  if [ -n "$pm" ] && alive "$pm"; then
    # SIGQUIT: immediate shutdown; the postmaster takes its children down with it.
    kill -QUIT "$pm" 2>/dev/null
    i=0
    while alive "$pm" && [ "$i" -lt 100 ]; do
      nap 0.1
      i=$((i + 1))
    done
    alive "$pm" && kill -KILL "$pm" 2>/dev/null
  fi
fi
rm -rf "$dir"
"#;

/// Spawns the watchdog for the cluster whose temp dir is `dir`, owned by this process.
pub(crate) fn spawn(dir: &Path) -> Result<Child, ClusterError> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(SCRIPT)
        .arg("pgw-cluster-watchdog")
        .arg(std::process::id().to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/");
    own_process_group(&mut cmd);
    let child = cmd.spawn().map_err(|source| ClusterError::Spawn {
        program: "/bin/sh (watchdog)".to_owned(),
        source,
    })?;
    tracing::debug!(pid = child.id(), dir = %dir.display(), "spawned watchdog");
    Ok(child)
}
