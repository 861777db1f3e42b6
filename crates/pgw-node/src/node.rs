//! [`Node`]: one data directory and how to drive it (its bin dir, its OS user, its server
//! log). Adopting an existing directory ([`Node::open`]), reading its state (pg_control,
//! `postmaster.pid`, `standby.signal`, postgresql.auto.conf), making it a standby, and the
//! process-level operations: whether a server runs on it, signalling and killing it.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::command::{combined, run};
use crate::conf::{auto_conf_get, auto_conf_set};
use crate::error::one_line;
use crate::{process, BinDir, Conninfo, ControlData, NodeError, OsUser, PostmasterPid, Tool};

/// How long [`Node::kill`] waits for the killed processes to be gone.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// How long [`Node::kill`] waits for init to reap the killed postmaster.
const REAP_WAIT: Duration = Duration::from_secs(5);

/// A PostgreSQL data directory and the means to run its server.
///
/// Made by [`Node::open`] (an existing directory), [`Node::initdb`] (a new one) or
/// [`Node::base_backup`] (a copy of a running server). Holds no process: every method looks at
/// the directory afresh, so several `Node`s (or other tools) may watch the same directory.
#[derive(Debug, Clone)]
pub struct Node {
    pub(crate) data_dir: PathBuf,
    pub(crate) bin: BinDir,
    pub(crate) user: OsUser,
    pub(crate) log_file: PathBuf,
}

impl Node {
    /// Adopts the existing data directory `data_dir`: checks that it has a `PG_VERSION` of the
    /// binaries' major version, belongs to `user` and has mode 0700 or 0750, as the server
    /// itself would at start.
    pub fn open(
        bin: BinDir,
        user: OsUser,
        data_dir: impl Into<PathBuf>,
    ) -> Result<Node, NodeError> {
        let node = Node::unchecked(bin, user, data_dir.into());
        node.check()?;
        Ok(node)
    }

    /// A `Node` for `data_dir` without checks (for a directory that is about to be made).
    pub(crate) fn unchecked(bin: BinDir, user: OsUser, data_dir: PathBuf) -> Node {
        let log_file = default_log_file(&data_dir);
        Node {
            data_dir,
            bin,
            user,
            log_file,
        }
    }

    fn check(&self) -> Result<(), NodeError> {
        let meta = fs::metadata(&self.data_dir).map_err(|source| NodeError::Io {
            action: "open data directory",
            path: self.data_dir.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(NodeError::NotADataDir {
                path: self.data_dir.clone(),
                reason: "not a directory",
            });
        }
        let version = self.pg_version()?;
        let bin_version = self.bin.major_version()?;
        if version != bin_version {
            return Err(NodeError::VersionMismatch {
                path: self.data_dir.clone(),
                data_dir_version: version,
                bin_dir: self.bin.dir().to_owned(),
                bin_version,
            });
        }
        if meta.uid() != self.user.uid() {
            return Err(NodeError::WrongOwner {
                path: self.data_dir.clone(),
                owner: meta.uid(),
                user: self.user.name().to_owned(),
                uid: self.user.uid(),
            });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode != 0o700 && mode != 0o750 {
            return Err(NodeError::BadMode {
                path: self.data_dir.clone(),
                mode,
            });
        }
        tracing::debug!(data_dir = %self.data_dir.display(), version, "opened data directory");
        Ok(())
    }

    /// Sets the server log file that [`Node::start`] passes to `pg_ctl -l` and whose tail goes
    /// into errors. The default is `<data_dir>.log`, beside the data directory (not inside it,
    /// where pg_basebackup and pg_rewind would copy it).
    pub fn with_log_file(mut self, path: impl Into<PathBuf>) -> Node {
        self.log_file = path.into();
        self
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The bin dir.
    pub fn bin(&self) -> &BinDir {
        &self.bin
    }

    /// The OS user that runs the server.
    pub fn user(&self) -> &OsUser {
        &self.user
    }

    /// The server log file.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The whole server log (empty if it cannot be read).
    pub fn log(&self) -> String {
        fs::read(&self.log_file)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The current length of the server log, to read later what a step added.
    pub fn log_len(&self) -> u64 {
        fs::metadata(&self.log_file).map(|m| m.len()).unwrap_or(0)
    }

    /// The server log from byte `start` on (lossily decoded).
    pub fn log_since(&self, start: u64) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let mut text = Vec::new();
        if let Ok(mut f) = fs::File::open(&self.log_file) {
            if f.seek(SeekFrom::Start(start)).is_ok() {
                let _ = f.read_to_end(&mut text);
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// The major version in `PG_VERSION`.
    pub fn pg_version(&self) -> Result<u32, NodeError> {
        let path = self.data_dir.join("PG_VERSION");
        let text = fs::read_to_string(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                NodeError::NotADataDir {
                    path: self.data_dir.clone(),
                    reason: "PG_VERSION is missing",
                }
            } else {
                NodeError::Io {
                    action: "read",
                    path: path.clone(),
                    source,
                }
            }
        })?;
        text.trim().parse().map_err(|_| NodeError::NotADataDir {
            path: self.data_dir.clone(),
            reason: "PG_VERSION does not hold a major version",
        })
    }

    /// `pg_controldata`, parsed. Works whether or not the server runs (the values are those of
    /// the last checkpoint).
    pub fn control_data(&self) -> Result<ControlData, NodeError> {
        self.bin.require(&[Tool::PgControldata])?;
        let mut cmd = self.server_command(Tool::PgControldata);
        cmd.arg("-D").arg(&self.data_dir);
        let out = run(&mut cmd, Tool::PgControldata)?;
        if !out.status.success() {
            return Err(NodeError::ToolFailed {
                tool: Tool::PgControldata,
                status: out.status,
                output: one_line(&combined(&out), 6),
            });
        }
        ControlData::parse(&String::from_utf8_lossy(&out.stdout)).map_err(|problem| {
            NodeError::ControlData {
                data_dir: self.data_dir.clone(),
                problem,
            }
        })
    }

    /// Whether `standby.signal` is there: the server starts (or runs) as a standby.
    pub fn is_standby(&self) -> bool {
        self.data_dir.join("standby.signal").is_file()
    }

    /// Writes an empty `standby.signal`, so that the next start is a standby's.
    pub fn write_standby_signal(&self) -> Result<(), NodeError> {
        tracing::debug!(data_dir = %self.data_dir.display(), "write standby.signal");
        self.user
            .write_file(&self.data_dir.join("standby.signal"), b"", 0o600)
    }

    /// Sets `name = 'value'` in postgresql.auto.conf (every earlier line for `name` removed),
    /// or removes it when `value` is `None`. Like `ALTER SYSTEM`, but also while the server is
    /// stopped; a running server reads it on reload or restart.
    pub fn set_auto_conf(&self, name: &str, value: Option<&str>) -> Result<(), NodeError> {
        let path = self.auto_conf_path();
        let old = read_optional(&path)?;
        tracing::debug!(path = %path.display(), name, set = value.is_some(), "edit postgresql.auto.conf");
        self.user
            .write_file(&path, auto_conf_set(&old, name, value).as_bytes(), 0o600)
    }

    /// The value of `name` in postgresql.auto.conf, if set there.
    pub fn auto_conf(&self, name: &str) -> Result<Option<String>, NodeError> {
        Ok(auto_conf_get(&read_optional(&self.auto_conf_path())?, name))
    }

    /// Sets `primary_conninfo` in postgresql.auto.conf (password included, as pg_basebackup -R
    /// does; the file is mode 0600).
    pub fn set_primary_conninfo(&self, conninfo: &Conninfo) -> Result<(), NodeError> {
        self.set_auto_conf("primary_conninfo", Some(&conninfo.render()))
    }

    /// Makes the data directory a standby of `primary` on its next start: `standby.signal`,
    /// `primary_conninfo`, and `primary_slot_name` when a slot is given (else removed).
    pub fn configure_standby(
        &self,
        primary: &Conninfo,
        slot: Option<&str>,
    ) -> Result<(), NodeError> {
        if let Some(slot) = slot {
            crate::basebackup::check_slot_name(slot)?;
        }
        self.set_primary_conninfo(primary)?;
        self.set_auto_conf("primary_slot_name", slot)?;
        self.write_standby_signal()
    }

    /// `postmaster.pid`, parsed, if the file is there (it outlives a crashed server).
    pub fn postmaster_pid(&self) -> Result<Option<PostmasterPid>, NodeError> {
        let path = self.data_dir.join("postmaster.pid");
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(NodeError::Io {
                    action: "read",
                    path,
                    source,
                })
            }
        };
        PostmasterPid::parse(&text)
            .map(Some)
            .map_err(|reason| NodeError::PidFile { path, reason })
    }

    /// The pid of the postmaster running on the data directory, if one does: `postmaster.pid`
    /// names a live process that is this directory's postmaster (a `postgres` whose working
    /// directory is the data directory). An unreadable or half-written file counts as none, and
    /// so does a stale one whose pid now belongs to another process: every signal pgw-node
    /// sends to a postmaster goes to a pid this returned, so that process is never signalled.
    pub fn running_pid(&self) -> Option<u32> {
        let pid = self.postmaster_pid().ok().flatten()?.pid;
        if self.is_postmaster(pid) {
            return Some(pid);
        }
        if process::alive(pid) {
            tracing::debug!(
                pid,
                data_dir = %self.data_dir.display(),
                "stale postmaster.pid: the pid belongs to a process that is not this data directory's postmaster"
            );
        }
        None
    }

    /// [`NodeError::StalePidFile`] if `postmaster.pid` names a live process that is not this
    /// data directory's postmaster: checked before a `pg_ctl` action that would signal the pid
    /// in the file itself. (A dead pid is left to pg_ctl, which reports no server running.)
    pub(crate) fn refuse_stale_pid_file(&self) -> Result<(), NodeError> {
        match self.postmaster_pid() {
            Ok(Some(file)) if process::alive(file.pid) && !self.is_postmaster(file.pid) => {
                Err(NodeError::StalePidFile {
                    pid: file.pid,
                    data_dir: self.data_dir.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Whether `pid` is, right now, the live postmaster of this data directory.
    pub(crate) fn is_postmaster(&self, pid: u32) -> bool {
        process::is_postmaster_of(pid, &self.data_dir)
    }

    /// Whether a server runs on the data directory.
    pub fn is_running(&self) -> bool {
        self.running_pid().is_some()
    }

    /// Sends `signal` to the postmaster (SIGHUP reloads, SIGTERM/SIGINT/SIGQUIT are smart,
    /// fast and immediate shutdown). [`NodeError::NotRunning`] if none runs, also when
    /// `postmaster.pid` is stale and names another process (which is left alone).
    pub fn signal(&self, signal: Signal) -> Result<(), NodeError> {
        self.refuse_stale_pid_file()?;
        let pid = self.running_pid().ok_or_else(|| self.not_running())?;
        if process::signal(pid, signal) {
            Ok(())
        } else {
            Err(self.not_running())
        }
    }

    /// Crashes the server: SIGKILL to the postmaster and all its children at once (as when the
    /// machine is lost), then waits until they are gone, so that a start right after does not
    /// find the old shared memory in use. The data stays; the next start runs crash recovery.
    /// Returns whether a server was running (a stale `postmaster.pid` naming another process
    /// counts as none: nothing is signalled).
    pub fn kill(&self) -> Result<bool, NodeError> {
        let Some(pid) = self.running_pid() else {
            return Ok(false);
        };
        let mut pids = process::children(pid);
        pids.push(pid);
        tracing::debug!(
            pid,
            processes = pids.len(),
            "SIGKILL the postmaster and its children"
        );
        for p in &pids {
            process::signal(*p, Signal::SIGKILL);
        }
        if !process::wait_gone(&pids, KILL_WAIT) {
            return Err(NodeError::StillRunning {
                pid,
                data_dir: self.data_dir.clone(),
            });
        }
        // A start refuses while the old postmaster's pid exists, even as a zombie: give init
        // a moment to reap it (best effort: an init that never reaps cannot be helped).
        if !process::wait_reaped(&[pid], REAP_WAIT) {
            tracing::debug!(pid, "killed postmaster not reaped yet");
        }
        Ok(true)
    }

    /// A command for a server-side `tool`, as the server user, working in the data
    /// directory's parent (a directory the server user can reach, unlike perhaps our cwd).
    pub(crate) fn server_command(&self, tool: Tool) -> std::process::Command {
        let mut cmd = self.bin.command(tool);
        self.user.apply(&mut cmd);
        if let Some(parent) = self.data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            cmd.current_dir(parent);
        }
        cmd
    }

    pub(crate) fn not_running(&self) -> NodeError {
        NodeError::NotRunning {
            data_dir: self.data_dir.clone(),
        }
    }

    /// The last `lines` lines of the server log from byte `start` on, on one line.
    pub(crate) fn log_tail_since(&self, start: u64, lines: usize) -> String {
        one_line(&self.log_since(start), lines)
    }

    fn auto_conf_path(&self) -> PathBuf {
        self.data_dir.join("postgresql.auto.conf")
    }
}

/// `<data_dir>.log`.
fn default_log_file(data_dir: &Path) -> PathBuf {
    let mut name = data_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "data".into());
    name.push(".log");
    data_dir.with_file_name(name)
}

/// The file's text, or empty if it does not exist.
fn read_optional(path: &Path) -> Result<String, NodeError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(NodeError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_file_sits_beside_the_data_dir() {
        assert_eq!(
            default_log_file(Path::new("/var/lib/pg/node1")),
            PathBuf::from("/var/lib/pg/node1.log")
        );
        assert_eq!(
            default_log_file(Path::new("/var/lib/pg/node1/")),
            PathBuf::from("/var/lib/pg/node1.log")
        );
    }

    #[test]
    fn open_refuses_what_is_not_a_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let user = OsUser::current().unwrap();
        let err = Node::open(BinDir::new("/nonexistent"), user.clone(), dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                NodeError::NotADataDir {
                    reason: "PG_VERSION is missing",
                    ..
                }
            ),
            "{err:?}"
        );
        fs::write(dir.path().join("PG_VERSION"), "fifteen\n").unwrap();
        let err = Node::open(BinDir::new("/nonexistent"), user.clone(), dir.path()).unwrap_err();
        assert!(matches!(err, NodeError::NotADataDir { .. }), "{err:?}");
        let err = Node::open(BinDir::new("/nonexistent"), user, dir.path().join("x")).unwrap_err();
        assert!(matches!(err, NodeError::Io { .. }), "{err:?}");
    }
}
