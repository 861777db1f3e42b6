//! `pgwarden replica`: streaming replication operated from outside the servers.
//!
//! - [`status`]: what a server says of its replication: on a
//!   primary every standby (`pg_stat_replication`) and every slot; on a standby its WAL
//!   receiver and replay. Each lag is judged against the target (the service level: 500 ms)
//!   by the pure functions in [`judge`].
//! - [`promote`]: promotes a standby (`pg_promote(wait => true)`) and checks that it left
//!   recovery.
//!
//! Deliberately not here: printing and exit codes (the binary's), and asking for
//! confirmation (the binary asks before calling [`promote::promote`]). Everything reads
//! with no more than `pg_monitor`, except promotion (superuser or EXECUTE on `pg_promote`).

pub mod judge;
pub mod promote;
pub mod status;

pub use promote::{promote, Promoted};
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
    /// `pg_promote` returned false: the server did not leave recovery in time.
    #[error("{target} did not finish promoting within {seconds} s (pg_promote returned false); it may still: check pg_is_in_recovery() and its log")]
    PromoteTimeout { target: String, seconds: i32 },
}

impl pgw_common::Classify for ReplicaError {
    fn class(&self) -> pgw_common::ErrorClass {
        match self {
            ReplicaError::Connect(c) => pgw_common::Classify::class(c),
            ReplicaError::NotStandby(_) => pgw_common::ErrorClass::Input,
            ReplicaError::Query { .. } | ReplicaError::PromoteTimeout { .. } => {
                pgw_common::ErrorClass::Failed
            }
        }
    }
}

/// A query error with what was being done.
pub(crate) fn query(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ReplicaError {
    move |source| ReplicaError::Query { what, source }
}
