//! `pgwarden replica`: streaming replication operated from outside the servers.
//!
//! - [`status`]: what a server says of its replication: on a
//!   primary every standby (`pg_stat_replication`) and every slot; on a standby its WAL
//!   receiver and replay. Each lag is judged against the target (the service level: 500 ms)
//!   by the pure functions in [`judge`].
//! - [`clone`]: a new standby from a running primary: prerequisites checked first (each
//!   missing one named with its fix, pg_hba.conf matched by the pure [`hba`]), then
//!   `pg_basebackup -R -X stream [-C -S slot]`, optionally started and waited on until it
//!   streams; a failed clone leaves no data directory and no slot behind.
//! - [`rejoin`]: an old primary becomes a standby of the new one: pg_rewind (checked
//!   possible first), `standby.signal` and `primary_conninfo`, started, streaming.
//! - [`promote`]: promotes a standby (`pg_promote(wait => true)`) and checks that it left
//!   recovery.
//!
//! Deliberately not here: printing and exit codes (the binary's), and asking for
//! confirmation (the binary asks before calling [`promote::promote`]). Everything reads
//! with no more than `pg_monitor`, except promotion (superuser or EXECUTE on `pg_promote`).

pub mod clone;
pub mod hba;
pub mod judge;
pub mod promote;
pub mod rejoin;
pub mod status;

pub use clone::{clone, CloneOptions, Cloned};
pub use promote::{promote, Promoted};
pub use rejoin::{rejoin, RejoinOptions, Rejoined};
pub use status::{status, Receiver, Role, Slot, Standby, Status};

/// Why a replica command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Connect(#[from] pgw_common::ConnectError),
    #[error("{what}")]
    Query {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// `promote` on a server that is not in recovery.
    #[error("{0} is not a standby (pg_is_in_recovery() is false): nothing to promote")]
    NotStandby(String),
    /// The primary lacks what a standby needs: each problem with its fix.
    #[error("{primary} cannot feed a new standby yet: {}", problems.join("; "))]
    Prerequisites {
        primary: String,
        problems: Vec<String>,
    },
    /// The target data directory holds files.
    #[error("{} is not empty: clone into a new or empty directory", .0.display())]
    NotEmpty(std::path::PathBuf),
    #[error("{}", .path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// pg_basebackup, pg_ctl or the data directory failed (the copy was removed).
    #[error(transparent)]
    Node(pgw_node::NodeError),
    /// The started copy did not show up streaming on the primary in time.
    #[error("the copy started but {name} was not streaming on the primary within {seconds} s: see its server log beside the data directory")]
    NotStreaming { name: String, seconds: u64 },
    /// pg_rewind cannot work on this data directory.
    #[error("cannot rewind {}: {why}", pgdata.display())]
    RewindImpossible {
        pgdata: std::path::PathBuf,
        why: &'static str,
    },
    /// pg_rewind needs WAL the old primary no longer has.
    #[error("cannot rewind {}: it no longer has the WAL back to where the servers diverged ({output}); it is stopped and unchanged: make it a standby with `pgwarden replica clone` into an empty directory, and keep more WAL for next time (wal_keep_size, or archive WAL so pg_rewind can restore it)", pgdata.display())]
    RewindWalGone {
        pgdata: std::path::PathBuf,
        output: String,
    },
    /// `--from` is itself a standby.
    #[error("{0} is in recovery: --from must name the current primary")]
    FromNotPrimary(String),
    /// `pg_promote` returned false: the server did not leave recovery in time.
    #[error("{target} did not finish promoting within {seconds} s (pg_promote returned false); it may still: check pg_is_in_recovery() and its log")]
    PromoteTimeout { target: String, seconds: i32 },
}

impl pgw_common::Classify for ReplicaError {
    fn class(&self) -> pgw_common::ErrorClass {
        match self {
            ReplicaError::Connect(c) => pgw_common::Classify::class(c),
            ReplicaError::NotStandby(_)
            | ReplicaError::Prerequisites { .. }
            | ReplicaError::NotEmpty(_)
            | ReplicaError::RewindImpossible { .. }
            | ReplicaError::FromNotPrimary(_) => pgw_common::ErrorClass::Input,
            ReplicaError::Node(e) => match e {
                pgw_node::NodeError::InvalidOption { .. }
                | pgw_node::NodeError::NotEmpty { .. }
                | pgw_node::NodeError::MissingBinary { .. } => pgw_common::ErrorClass::Input,
                _ => pgw_common::ErrorClass::Failed,
            },
            ReplicaError::Query { .. }
            | ReplicaError::Io { .. }
            | ReplicaError::RewindWalGone { .. }
            | ReplicaError::NotStreaming { .. }
            | ReplicaError::PromoteTimeout { .. } => pgw_common::ErrorClass::Failed,
        }
    }
}

/// A query error with what was being done.
pub(crate) fn query(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ReplicaError {
    move |source| ReplicaError::Query { what, source }
}
