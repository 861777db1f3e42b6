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
//! - [`switchover`]: the planned switch with no data loss: clean stop of a local primary,
//!   the target waited on until it has the shutdown checkpoint, promoted, the old primary
//!   restarted as its standby.
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
pub mod switchover;

pub use clone::{clone, CloneOptions, Cloned};
pub use promote::{promote, Promoted};
pub use rejoin::{rejoin, RejoinOptions, Rejoined};
pub use status::{status, Receiver, Role, Slot, Standby, Status};
pub use switchover::{switchover, Switched, SwitchoverOptions};

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
    /// `switchover --pgdata` is not a running primary.
    #[error("{} is not a running primary: switchover starts from the running primary's data directory", .0.display())]
    NotRunningPrimary(std::path::PathBuf),
    /// The target belongs to another cluster.
    #[error("{} belongs to system {ours}, the target to {theirs}: not the same cluster", pgdata.display())]
    OtherCluster {
        pgdata: std::path::PathBuf,
        ours: String,
        theirs: String,
    },
    /// The switchover target does not stream.
    #[error("{0} is not streaming (pg_stat_wal_receiver): it could not receive the primary's last WAL; nothing was changed")]
    TargetNotStreaming(String),
    /// The target did not receive the old primary's shutdown checkpoint in time.
    #[error("the target had not received the shutdown checkpoint {lsn} within {seconds} s: switchover abandoned, the old primary was started again as primary")]
    CheckpointNotReceived { lsn: String, seconds: u64 },
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
            | ReplicaError::FromNotPrimary(_)
            | ReplicaError::NotRunningPrimary(_)
            | ReplicaError::OtherCluster { .. }
            | ReplicaError::TargetNotStreaming(_) => pgw_common::ErrorClass::Input,
            ReplicaError::Node(e) => match e {
                pgw_node::NodeError::InvalidOption { .. }
                | pgw_node::NodeError::NotEmpty { .. }
                | pgw_node::NodeError::MissingBinary { .. } => pgw_common::ErrorClass::Input,
                _ => pgw_common::ErrorClass::Failed,
            },
            ReplicaError::Query { .. }
            | ReplicaError::Io { .. }
            | ReplicaError::RewindWalGone { .. }
            | ReplicaError::CheckpointNotReceived { .. }
            | ReplicaError::NotStreaming { .. }
            | ReplicaError::PromoteTimeout { .. } => pgw_common::ErrorClass::Failed,
        }
    }
}

/// Creates the physical slot `slot` on the primary `client` is connected to, unless it exists.
pub async fn ensure_slot(client: &tokio_postgres::Client, slot: &str) -> Result<(), ReplicaError> {
    client
        .execute(
            "SELECT pg_create_physical_replication_slot($1, true)
              WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            &[&slot],
        )
        .await
        .map_err(query("create the replication slot on the primary"))?;
    Ok(())
}

/// The conninfo a standby (or pg_rewind) uses to reach the server of `params`: its first
/// host and port, its user and password.
pub(crate) fn conninfo_of(params: &pgw_common::ConnParams) -> pgw_node::Conninfo {
    let c = pgw_node::Conninfo::tcp(
        params
            .hosts
            .first()
            .map(String::as_str)
            .unwrap_or("localhost"),
        params.port_for(0),
        &params.user,
    );
    match &params.password {
        Some(pw) => c.with_password(pgw_node::Password::new(pw.clone())),
        None => c,
    }
}

/// Runs a blocking pgw-node step off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, pgw_node::NodeError> + Send + 'static,
) -> Result<T, ReplicaError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ReplicaError::Io {
            path: std::path::PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })?
        .map_err(ReplicaError::Node)
}

/// A query error with what was being done.
pub(crate) fn query(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ReplicaError {
    move |source| ReplicaError::Query { what, source }
}
