//! `replica switchover`: the planned switch of roles with no data loss, for a primary whose
//! data directory is on this machine. The primary is stopped cleanly (its WAL senders send
//! everything, the shutdown checkpoint included, before it exits); the target standby is
//! waited on until it has received that checkpoint; the target is promoted; the old
//! primary restarts as its standby. Its WAL ends at the checkpoint the new primary has, so
//! no rewind is needed. If the target does not receive the checkpoint in time, the old
//! primary is started again as it was and nothing else changes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pgw_common::ConnParams;
use pgw_node::{BinDir, ClusterState, Lsn, Node, OsUser, StartOptions, StopOptions};
use serde::Serialize;
use tokio_postgres::Client;

use crate::blocking;
use crate::clone::wait_streaming;
use crate::{query, ReplicaError};

/// What to switch, and how.
#[derive(Debug, Clone)]
pub struct SwitchoverOptions {
    /// The running primary's data directory (on this machine).
    pub pgdata: PathBuf,
    /// The old primary's name in the new primary's `pg_stat_replication`.
    pub application_name: String,
    /// Stream through this physical slot on the new primary (created when missing).
    pub slot: Option<String>,
    pub bin: BinDir,
    /// How long each wait may take: the target receiving the checkpoint, the old primary
    /// streaming again.
    pub timeout: Duration,
}

/// A switchover done.
#[derive(Debug, Clone, Serialize)]
pub struct Switched {
    pub old_primary: PathBuf,
    pub new_primary: String,
    /// The old primary's shutdown checkpoint, which the new primary had received.
    pub shutdown_checkpoint: String,
    /// The new primary's timeline.
    pub timeline: i64,
    /// Milliseconds from the old primary's stop to the new one's promotion: no writes
    /// were possible in between.
    pub write_gap_ms: u64,
    pub application_name: String,
    pub streaming: bool,
}

/// Switches the primary in `opts.pgdata` with the standby `target` is connected to.
pub async fn switchover(
    target: &Client,
    target_params: &ConnParams,
    opts: &SwitchoverOptions,
) -> Result<Switched, ReplicaError> {
    let node = {
        let (bin, dir) = (opts.bin.clone(), opts.pgdata.clone());
        blocking(move || Node::open(bin, OsUser::detect()?, dir)).await?
    };
    let control = {
        let n = node.clone();
        blocking(move || n.control_data()).await?
    };
    let pgdata = opts.pgdata.clone();
    if control.state != ClusterState::InProduction || !node.is_running() {
        return Err(ReplicaError::NotRunningPrimary(pgdata));
    }
    let r = target
        .query_one(
            "SELECT pg_is_in_recovery(),
                    (SELECT system_identifier FROM pg_control_system())::text,
                    (SELECT status::text FROM pg_stat_wal_receiver)",
            &[],
        )
        .await
        .map_err(query("read the target's state"))?;
    let (in_recovery, system_id, receiver): (bool, String, Option<String>) =
        (r.get(0), r.get(1), r.get(2));
    if !in_recovery {
        return Err(ReplicaError::NotStandby(target_params.target()));
    }
    if system_id != control.system_identifier.to_string() {
        return Err(ReplicaError::OtherCluster {
            pgdata,
            ours: control.system_identifier.to_string(),
            theirs: system_id,
        });
    }
    if receiver.as_deref() != Some("streaming") {
        return Err(ReplicaError::TargetNotStreaming(target_params.target()));
    }

    // Stop cleanly: the shutdown checkpoint goes to the standbys before the server exits.
    let stopped_at = Instant::now();
    {
        let n = node.clone();
        blocking(move || n.stop(&StopOptions::default()).map(|_| ())).await?;
    }
    let checkpoint = {
        let n = node.clone();
        blocking(move || n.control_data()).await?.checkpoint_lsn
    };
    if let Err(e) = wait_received(target, checkpoint, opts.timeout).await {
        // Put the old primary back as it was; nothing else changed.
        let n = node.clone();
        let restarted = blocking(move || n.start(&StartOptions::default())).await;
        tracing::warn!(restarted = restarted.is_ok(), "switchover abandoned");
        return Err(e);
    }
    let promoted = crate::promote(target, &target_params.target(), 60).await?;
    let write_gap_ms = stopped_at.elapsed().as_millis() as u64;

    if let Some(slot) = &opts.slot {
        crate::ensure_slot(target, slot).await?;
    }
    let conninfo = crate::conninfo_of(target_params).with_application_name(&opts.application_name);
    {
        let (n, slot) = (node.clone(), opts.slot.clone());
        blocking(move || {
            n.configure_standby(&conninfo, slot.as_deref())?;
            n.start(&StartOptions::default())
        })
        .await?;
    }
    wait_streaming(target, &opts.application_name, opts.timeout).await?;
    Ok(Switched {
        old_primary: opts.pgdata.clone(),
        new_primary: target_params.target(),
        shutdown_checkpoint: checkpoint.to_string(),
        timeline: promoted.timeline,
        write_gap_ms,
        application_name: opts.application_name.clone(),
        streaming: true,
    })
}

/// Waits until the standby has received WAL past `lsn`.
async fn wait_received(target: &Client, lsn: Lsn, timeout: Duration) -> Result<(), ReplicaError> {
    let deadline = Instant::now() + timeout;
    let want = lsn.to_string();
    loop {
        let done: bool = target
            .query_one(
                "SELECT COALESCE(pg_last_wal_receive_lsn() > $1::text::pg_lsn, false)",
                &[&want],
            )
            .await
            .map_err(query("read the target's received WAL"))?
            .get(0);
        if done {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ReplicaError::CheckpointNotReceived {
                lsn: want,
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
