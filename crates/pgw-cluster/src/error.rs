//! [`ClusterError`]: every way starting, using or stopping a throwaway cluster can fail.
//!
//! Each variant renders as one line with its cause. What pgw-node did (initdb, pg_ctl,
//! pg_basebackup, readiness) fails as [`ClusterError::Node`], with pgw-node's one-line
//! message; multi-line psql output is folded with [`pgw_node::one_line`].

use std::io;
use std::path::PathBuf;

use pgw_node::NodeError;

/// An error from `pgw-cluster`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The PostgreSQL binaries the harness runs (`initdb`, `pg_ctl`, ...) are not in the bin dir.
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

    /// Controlling the server failed (initdb, pg_ctl, pg_basebackup, pg_rewind, readiness,
    /// the OS user).
    #[error(transparent)]
    Node(#[from] NodeError),

    /// A file system operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, a lowercase verb phrase ("create temp dir in").
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// A program (psql, the watchdog shell) could not be started at all.
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

    /// No free loopback port could be bound after several attempts.
    #[error("could not get a free loopback port after {attempts} attempts: {log}")]
    NoFreePort {
        /// How many ports were tried.
        attempts: u32,
        /// The tail of the server log, on one line.
        log: String,
    },

    /// `psql` exited with an error (a failed statement, a refused connection).
    #[error("psql on database \"{dbname}\" failed: {stderr}")]
    Psql {
        /// The database.
        dbname: String,
        /// psql's stderr, on one line.
        stderr: String,
    },

    /// A standby did not stream from its primary before the deadline.
    #[error(
        "standby on port {port} was not streaming within {secs}s (wal receiver: {status}): {log}"
    )]
    NotStreaming {
        /// The standby's port.
        port: u16,
        /// The deadline in seconds.
        secs: u64,
        /// The last `pg_stat_wal_receiver.status` seen (`none` without a receiver).
        status: String,
        /// The tail of the standby's log, on one line.
        log: String,
    },

    /// A standby did not replay up to a WAL location before the deadline.
    #[error(
        "standby on port {port} did not replay up to {lsn} within {secs}s (replayed: {replayed})"
    )]
    NotCaughtUp {
        /// The standby's port.
        port: u16,
        /// The deadline in seconds.
        secs: u64,
        /// The location waited for.
        lsn: String,
        /// The last `pg_last_wal_replay_lsn()` seen.
        replayed: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn node_errors_keep_their_line() {
        let e = ClusterError::from(NodeError::NotRunning {
            data_dir: PathBuf::from("/d"),
        });
        assert_eq!(e.to_string(), "no server is running on /d");
    }
}
