//! [`NodeError`]: every way controlling a data directory can fail, each rendering as one line
//! with its cause.
//!
//! Multi-line output of a PostgreSQL tool (initdb, pg_ctl, pg_basebackup, pg_rewind) or of the
//! server log is folded onto one line by [`one_line`], keeping the last lines, which are the
//! ones that say why.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

use crate::Tool;

/// An error from `pgw-node`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A PostgreSQL program the operation needs is not in the bin dir.
    #[error("{tool} not found in {} (install the Debian package {package}: apt-get install -y {package}, or set PGWARDEN_PG_BIN)", dir.display())]
    MissingBinary {
        /// The directory that was searched.
        dir: PathBuf,
        /// The program that is missing.
        tool: Tool,
        /// The Debian package that ships it.
        package: &'static str,
    },

    /// The version of the PostgreSQL binaries could not be read from `pg_ctl --version`.
    #[error("read the PostgreSQL version of {}: unexpected output {output:?}", dir.display())]
    BinaryVersion {
        /// The bin dir.
        dir: PathBuf,
        /// What `pg_ctl --version` printed, on one line.
        output: String,
    },

    /// The OS user that should run the server does not exist.
    #[error("OS user \"{user}\" does not exist (PostgreSQL refuses to run as root; install postgresql-15 or create the user)")]
    UnknownOsUser {
        /// The user that was looked up.
        user: String,
    },

    /// Looking up an OS user failed.
    #[error("look up OS user \"{user}\": {source}")]
    LookupUser {
        /// The user that was looked up.
        user: String,
        /// The cause.
        #[source]
        source: nix::Error,
    },

    /// A file system operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, a lowercase verb phrase ("create data directory").
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// Giving a file to the server's OS user failed.
    #[error("chown {} to OS user \"{user}\": {source}", path.display())]
    Chown {
        /// The path.
        path: PathBuf,
        /// The user.
        user: String,
        /// The cause.
        #[source]
        source: nix::Error,
    },

    /// A program could not be started at all.
    #[error("run {program}: {source}")]
    Spawn {
        /// The program.
        program: Tool,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// An option has a value the tool cannot take.
    #[error("invalid {option} {value:?}: {reason}")]
    InvalidOption {
        /// The option ("replication slot name").
        option: &'static str,
        /// The value as given (never a password).
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// The directory is not a PostgreSQL data directory.
    #[error("{} is not a PostgreSQL data directory: {reason}", path.display())]
    NotADataDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong ("PG_VERSION is missing").
        reason: &'static str,
    },

    /// The data directory was made by another major version than the binaries.
    #[error("data directory {} is PostgreSQL {data_dir_version} but the binaries in {} are PostgreSQL {bin_version}", path.display(), bin_dir.display())]
    VersionMismatch {
        /// The data directory.
        path: PathBuf,
        /// Its major version (`PG_VERSION`).
        data_dir_version: u32,
        /// The bin dir.
        bin_dir: PathBuf,
        /// The binaries' major version.
        bin_version: u32,
    },

    /// The data directory belongs to another OS user than the one that runs the server.
    #[error("data directory {} is owned by uid {owner}, not by OS user \"{user}\" (uid {uid}), which runs the server", path.display())]
    WrongOwner {
        /// The data directory.
        path: PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// The server's OS user.
        user: String,
        /// That user's uid.
        uid: u32,
    },

    /// The data directory's mode lets others in; PostgreSQL refuses to start on it.
    #[error("data directory {} has mode {mode:04o}; PostgreSQL needs 0700 (or 0750)", path.display())]
    BadMode {
        /// The data directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// The target directory of initdb or pg_basebackup exists and is not empty.
    #[error("{} exists and is not empty", path.display())]
    NotEmpty {
        /// The directory.
        path: PathBuf,
    },

    /// A PostgreSQL tool exited with an error.
    #[error("{tool} failed ({status}): {output}")]
    ToolFailed {
        /// The tool.
        tool: Tool,
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of its output (and of the server log, for pg_ctl), on one line.
        output: String,
    },

    /// A `pg_ctl` action exited with an error.
    #[error("pg_ctl {action} failed: {output}")]
    PgCtl {
        /// The action ("start", "stop", "promote").
        action: PgCtlAction,
        /// pg_ctl's output and the tail of the server log, on one line.
        output: String,
    },

    /// A `pg_ctl` action did not finish before its deadline.
    #[error("pg_ctl {action} did not finish within {secs}s: {log}")]
    Timeout {
        /// The action.
        action: PgCtlAction,
        /// The deadline in seconds.
        secs: u64,
        /// The tail of the server log, on one line.
        log: String,
    },

    /// The postmaster could not be stopped, not even with SIGKILL.
    #[error("postmaster {pid} of {} is still running after SIGKILL", data_dir.display())]
    StillRunning {
        /// The postmaster's pid.
        pid: u32,
        /// Its data directory.
        data_dir: PathBuf,
    },

    /// The operation needs a running server and none runs on the data directory.
    #[error("no server is running on {}", data_dir.display())]
    NotRunning {
        /// The data directory.
        data_dir: PathBuf,
    },

    /// `postmaster.pid` names a live process that is not this data directory's postmaster
    /// (the file outlived its server and the pid was reused); nothing was signalled.
    #[error("{}/postmaster.pid is stale: pid {pid} is not this data directory's postmaster (nothing was signalled; remove the file if no server runs)", data_dir.display())]
    StalePidFile {
        /// The pid the file names.
        pid: u32,
        /// The data directory.
        data_dir: PathBuf,
    },

    /// The operation needs a stopped server and one runs on the data directory.
    #[error("a server (pid {pid}) is running on {}", data_dir.display())]
    Running {
        /// The postmaster's pid.
        pid: u32,
        /// The data directory.
        data_dir: PathBuf,
    },

    /// The postmaster exited while we waited for it to accept connections.
    #[error("the postmaster of {} exited before accepting connections: {log}", data_dir.display())]
    PostmasterDied {
        /// The data directory.
        data_dir: PathBuf,
        /// The tail of the server log, on one line.
        log: String,
    },

    /// The server did not accept connections before the deadline.
    #[error("server on port {port} did not accept connections within {secs}s: {log}")]
    NotReady {
        /// The port that was polled.
        port: u16,
        /// The deadline in seconds.
        secs: u64,
        /// The last `pg_isready` answer and the tail of the server log, on one line.
        log: String,
    },

    /// `postmaster.pid` could not be understood.
    #[error("parse {}: {reason}", path.display())]
    PidFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: PidFileProblem,
    },

    /// `pg_controldata` printed something we could not read.
    #[error("parse pg_controldata output for {}: {problem}", data_dir.display())]
    ControlData {
        /// The data directory.
        data_dir: PathBuf,
        /// What is wrong with it.
        problem: crate::controldata::ParseProblem,
    },

    /// Neither `wal_log_hints` nor data checksums are on, so pg_rewind cannot run.
    #[error("pg_rewind cannot rewind {}: it needs wal_log_hints = on or data checksums (both are off in pg_control)", data_dir.display())]
    RewindImpossible {
        /// The target data directory.
        data_dir: PathBuf,
    },
}

/// The `pg_ctl` actions, for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgCtlAction {
    /// `pg_ctl start`.
    Start,
    /// `pg_ctl stop`.
    Stop,
    /// `pg_ctl restart`.
    Restart,
    /// `pg_ctl reload`.
    Reload,
    /// `pg_ctl promote`.
    Promote,
    /// `pg_ctl status`.
    Status,
}

impl PgCtlAction {
    /// The word pg_ctl takes for it.
    pub fn as_str(self) -> &'static str {
        match self {
            PgCtlAction::Start => "start",
            PgCtlAction::Stop => "stop",
            PgCtlAction::Restart => "restart",
            PgCtlAction::Reload => "reload",
            PgCtlAction::Promote => "promote",
            PgCtlAction::Status => "status",
        }
    }
}

impl std::fmt::Display for PgCtlAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What can be wrong with a `postmaster.pid` file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PidFileProblem {
    /// The file has fewer lines than PostgreSQL always writes (pid, data dir, start time, port).
    #[error("only {0} lines, expected at least 4")]
    TooShort(usize),
    /// A numeric line is not a number.
    #[error("line {line} ({field}) is not a number: {value:?}")]
    NotANumber {
        /// 1-based line number.
        line: usize,
        /// What the line holds.
        field: &'static str,
        /// The text found.
        value: String,
    },
    /// The pid line names 0 or 1, which no postmaster has (signalling 0 would reach our own
    /// process group, 1 is init).
    #[error("line 1 (pid) is {0}, which cannot be a postmaster's")]
    ImpossiblePid(u32),
}

/// The last `lines` non-empty lines of `text`, joined with `" | "` so that they fit on one line;
/// `(no output)` when there are none.
pub fn one_line(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text
        .lines()
        .flat_map(|l| l.split('\r'))
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let start = all.len().saturating_sub(lines);
    let joined = all[start..].join(" | ");
    if joined.is_empty() {
        "(no output)".to_owned()
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_keeps_last_non_empty_lines() {
        assert_eq!(one_line("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(one_line("a\nb", 5), "a | b");
        assert_eq!(one_line("\n \n", 3), "(no output)");
        assert_eq!(one_line("1 kB\r2 kB\r3 kB\n", 2), "2 kB | 3 kB");
    }

    #[test]
    fn missing_binary_names_the_package() {
        let e = NodeError::MissingBinary {
            dir: PathBuf::from("/opt/pg/bin"),
            tool: Tool::PgRewind,
            package: "postgresql-15",
        };
        assert_eq!(
            e.to_string(),
            "pg_rewind not found in /opt/pg/bin (install the Debian package postgresql-15: apt-get install -y postgresql-15, or set PGWARDEN_PG_BIN)"
        );
    }

    #[test]
    fn errors_render_on_one_line() {
        let e = NodeError::PgCtl {
            action: PgCtlAction::Promote,
            output: one_line(
                "pg_ctl: cannot promote server;\nserver is not in standby mode\n",
                5,
            ),
        };
        assert_eq!(
            e.to_string(),
            "pg_ctl promote failed: pg_ctl: cannot promote server; | server is not in standby mode"
        );
    }
}
