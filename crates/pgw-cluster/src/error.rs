//! [`ClusterError`]: every way starting, using or stopping a throwaway cluster can fail.
//!
//! Each variant renders as one line with its cause. Multi-line output of a PostgreSQL tool
//! (initdb, pg_ctl, psql, the server log) is folded into one line by [`one_line`].

use std::io;
use std::path::PathBuf;

/// An error from `pgw-cluster`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The PostgreSQL binaries (`initdb`, `pg_ctl`, ...) are not in the bin dir.
    #[error(
        "PostgreSQL binaries not found at {} (install postgresql-15: apt-get install -y postgresql-15 postgresql-contrib-15)",
        dir.display()
    )]
    BinariesNotFound {
        /// The directory that was searched.
        dir: PathBuf,
        /// The first binary found missing.
        missing: &'static str,
    },

    /// We run as root, so the server must run as the `postgres` OS user, which does not exist.
    #[error("running as root but OS user \"{user}\" does not exist (PostgreSQL refuses to run as root; install postgresql-15 or create the user)")]
    ServerUserMissing {
        /// The user that was looked up.
        user: &'static str,
    },

    /// Looking up the server OS user failed.
    #[error("look up OS user \"{user}\": {source}")]
    LookupUser {
        /// The user that was looked up.
        user: &'static str,
        /// The cause.
        #[source]
        source: nix::Error,
    },

    /// A file system operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, a lowercase verb phrase ("create temp dir").
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// Changing the owner of a file to the server user failed.
    #[error("chown {} to the server user: {source}", path.display())]
    Chown {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: nix::Error,
    },

    /// A PostgreSQL tool (or the watchdog shell) could not be started at all.
    #[error("run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// A path given to [`ClusterBuilder::file`](crate::ClusterBuilder::file) is not a plain
    /// relative path inside the data directory.
    #[error("invalid data-dir file path {relative:?}: must be relative and must not contain '..'")]
    InvalidFilePath {
        /// The path as given.
        relative: String,
    },

    /// `initdb` exited with an error.
    #[error("initdb failed: {output}")]
    InitdbFailed {
        /// The last lines of its output, on one line.
        output: String,
    },

    /// `pg_basebackup` from the primary exited with an error.
    #[error("pg_basebackup from the primary failed: {output}")]
    BaseBackupFailed {
        /// The last lines of its output, on one line.
        output: String,
    },

    /// No free loopback port could be bound after several attempts.
    #[error("could not get a free loopback port after {attempts} attempts: {log}")]
    NoFreePort {
        /// How many ports were tried.
        attempts: u32,
        /// The tail of the server log, on one line.
        log: String,
    },

    /// `pg_ctl start` failed for a reason other than a taken port.
    #[error("server failed to start: {log}")]
    StartFailed {
        /// The tail of the server log (or pg_ctl's output), on one line.
        log: String,
    },

    /// The server was started but never accepted connections before the deadline.
    #[error("server did not become ready within {secs}s: {log}")]
    NotReady {
        /// The deadline in seconds.
        secs: u64,
        /// The tail of the server log, on one line.
        log: String,
    },

    /// A `pg_ctl` action (restart, reload, stop) failed.
    #[error("pg_ctl {action} failed: {output}")]
    PgCtl {
        /// The action.
        action: &'static str,
        /// Its output and the server log tail, on one line.
        output: String,
    },

    /// `psql` exited with an error (a failed statement, a refused connection).
    #[error("psql on database \"{dbname}\" failed: {stderr}")]
    Psql {
        /// The database.
        dbname: String,
        /// psql's stderr, on one line.
        stderr: String,
    },
}

/// The last `lines` non-empty lines of `text`, joined with `" | "` so that they fit on one line.
pub(crate) fn one_line(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text
        .lines()
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
    }

    #[test]
    fn binaries_not_found_message() {
        let e = ClusterError::BinariesNotFound {
            dir: PathBuf::from("/usr/lib/postgresql/15/bin"),
            missing: "initdb",
        };
        assert_eq!(
            e.to_string(),
            "PostgreSQL binaries not found at /usr/lib/postgresql/15/bin (install postgresql-15: apt-get install -y postgresql-15 postgresql-contrib-15)"
        );
    }
}
