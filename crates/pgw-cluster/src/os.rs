//! Operating-system plumbing: which OS user runs the server, building commands for the
//! PostgreSQL tools, ownership and modes of the files we write, and random test passwords.

use std::collections::hash_map::RandomState;
use std::ffi::OsStr;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::unistd::{Gid, Uid, User};

use crate::ClusterError;

/// The OS user the server runs as when we are root.
pub(crate) const SERVER_OS_USER: &str = "postgres";

/// Who runs `initdb`, `pg_ctl` and the server.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ServerUser {
    /// The current user (we are not root).
    Current,
    /// Another user, switched to with `setuid`/`setgid` (we are root).
    Other { uid: Uid, gid: Gid },
}

impl ServerUser {
    /// `postgres` when the effective uid is 0, else the current user.
    pub(crate) fn detect() -> Result<ServerUser, ClusterError> {
        if !Uid::effective().is_root() {
            return Ok(ServerUser::Current);
        }
        let user = User::from_name(SERVER_OS_USER)
            .map_err(|source| ClusterError::LookupUser {
                user: SERVER_OS_USER,
                source,
            })?
            .ok_or(ClusterError::ServerUserMissing {
                user: SERVER_OS_USER,
            })?;
        Ok(ServerUser::Other {
            uid: user.uid,
            gid: user.gid,
        })
    }

    /// Whether the server runs as a user other than us.
    pub(crate) fn is_other(self) -> bool {
        matches!(self, ServerUser::Other { .. })
    }

    /// Gives `path` to the server user (no-op when that is us).
    pub(crate) fn chown(self, path: &Path) -> Result<(), ClusterError> {
        match self {
            ServerUser::Current => Ok(()),
            ServerUser::Other { uid, gid } => nix::unistd::chown(path, Some(uid), Some(gid))
                .map_err(|source| ClusterError::Chown {
                    path: path.to_owned(),
                    source,
                }),
        }
    }

    /// Makes `cmd` run as the server user.
    fn apply(self, cmd: &mut Command) {
        if let ServerUser::Other { uid, gid } = self {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
    }
}

/// A command for `bin_dir/program` with a clean `PG*` environment, stdin from `/dev/null` and
/// `cwd` as its working directory; run as `user` when given (the server user for `initdb` and
/// `pg_ctl`, `None` for clients such as `psql`).
pub(crate) fn command(
    bin_dir: &Path,
    program: &str,
    cwd: &Path,
    user: Option<ServerUser>,
) -> Command {
    let mut cmd = Command::new(bin_dir.join(program));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&key);
        }
    }
    // Messages in English so that "could not bind" can be recognised.
    cmd.env("LC_MESSAGES", "C").env_remove("LANGUAGE");
    cmd.current_dir(cwd).stdin(Stdio::null());
    if let Some(user) = user {
        user.apply(&mut cmd);
    }
    cmd
}

/// Runs `cmd` to completion, capturing its output.
pub(crate) fn run(cmd: &mut Command) -> Result<Output, ClusterError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let args: Vec<&OsStr> = cmd.get_args().collect();
    tracing::debug!(%program, ?args, "run");
    cmd.output()
        .map_err(|source| ClusterError::Spawn { program, source })
}

/// stdout and stderr of `out`, one after the other, lossily decoded.
pub(crate) fn combined(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    s
}

/// Writes `contents` to `path` with mode 0600, owned by the server user.
pub(crate) fn write_private(
    user: ServerUser,
    path: &Path,
    contents: &[u8],
) -> Result<(), ClusterError> {
    let io = |source| ClusterError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(contents).map_err(io)?;
    // The mode given to open() only applies when the file is created.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io)?;
    user.chown(path)
}

/// Whether every ancestor of `dir` can be traversed by other users (o+x), so that the server
/// user can reach a directory we create inside it.
pub(crate) fn world_traversable(dir: &Path) -> bool {
    dir.ancestors().all(|a| {
        a.as_os_str().is_empty()
            || fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
    })
}

/// The directory to create the cluster's temp dir in: `$TMPDIR`, or `/tmp` if the server user
/// could not reach `$TMPDIR` or the socket path inside it would be too long for a Unix socket.
pub(crate) fn temp_base(user: ServerUser) -> PathBuf {
    let base = std::env::temp_dir();
    // "<base>/pgw-cluster-XXXXXX/.s.PGSQL.65535" must fit in sun_path (104 bytes on macOS).
    let too_long = base.as_os_str().len() + "/pgw-cluster-XXXXXX/.s.PGSQL.65535".len() > 100;
    if too_long || (user.is_other() && !world_traversable(&base)) {
        PathBuf::from("/tmp")
    } else {
        base
    }
}

/// A random-enough password for a throwaway cluster: 32 hex digits from the process's random
/// hash seed, the time, the pid and a counter.
pub(crate) fn random_password() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let half = |salt: u64| {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u64(n);
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

/// Quotes a value for postgresql.conf: `'...'` with `'` doubled and `\` escaped.
pub(crate) fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Process ids and signals, for the fallback when `pg_ctl stop` fails.
pub(crate) fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None).is_ok()
}

/// Sends `signal` to `pid`, ignoring errors (the process may be gone already).
pub(crate) fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal);
    }
}

/// Puts a command in its own process group, so that a Ctrl-C in the terminal (delivered to the
/// foreground process group) does not reach it.
pub(crate) fn own_process_group(cmd: &mut Command) -> &mut Command {
    cmd.process_group(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_differ_and_are_hex() {
        let a = random_password();
        let b = random_password();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn conf_quoting() {
        assert_eq!(conf_quote("12MB"), "'12MB'");
        assert_eq!(conf_quote("it's"), "'it''s'");
        assert_eq!(conf_quote(r"a\b"), r"'a\\b'");
    }

    #[test]
    fn root_is_traversable() {
        assert!(world_traversable(Path::new("/")));
    }
}
