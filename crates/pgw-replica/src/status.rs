//! `replica status`: a server's replication as it reports it, each lag judged against the
//! target. On a primary: every standby and every slot. On a standby: its receiver, its
//! replay, and its own slots (cascading).

use serde::Serialize;
use tokio_postgres::Client;

use crate::judge::{receiver_meets, replay_delay_ms, standby_meets};
use crate::{query, ReplicaError};

/// Which side of replication the server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Standby,
}

/// What `replica status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The server, as `host:port`.
    pub server: String,
    pub role: Role,
    /// The replication-lag target the lags are judged against, in ms.
    pub target_ms: f64,
    /// On a primary: one row per connected standby (or pg_basebackup), from
    /// `pg_stat_replication`.
    pub standbys: Vec<Standby>,
    /// On a standby: its WAL receiver and replay.
    pub receiver: Option<Receiver>,
    /// Every replication slot on this server.
    pub slots: Vec<Slot>,
    /// Every standby (or this standby) meets the target.
    pub met: bool,
}

/// A primary's view of one standby.
#[derive(Debug, Clone, Serialize)]
pub struct Standby {
    pub pid: i32,
    pub application_name: String,
    /// The standby's address; None over a Unix socket (or when the role may not see it).
    pub client_addr: Option<String>,
    /// startup, catchup, streaming, backup or stopping.
    pub state: Option<String>,
    /// async, potential, sync or quorum.
    pub sync_state: Option<String>,
    pub sent_lsn: Option<String>,
    pub write_lsn: Option<String>,
    pub flush_lsn: Option<String>,
    pub replay_lsn: Option<String>,
    /// WAL written on the primary and not yet replayed there, in bytes.
    pub lag_bytes: Option<i64>,
    /// Time until the standby wrote, flushed and replayed recent WAL, in ms (NULL, here
    /// None, once caught up on an idle primary).
    pub write_lag_ms: Option<f64>,
    pub flush_lag_ms: Option<f64>,
    pub replay_lag_ms: Option<f64>,
    pub met: bool,
}

/// A standby's view of itself.
#[derive(Debug, Clone, Serialize)]
pub struct Receiver {
    /// `pg_stat_wal_receiver.status` (streaming, stopping, ...); None without a receiver.
    pub receiver_status: Option<String>,
    /// The primary it receives from, as `host:port`.
    pub sender: Option<String>,
    pub receive_lsn: Option<String>,
    pub replay_lsn: Option<String>,
    /// Received and not yet replayed, in bytes.
    pub unreplayed_bytes: i64,
    /// Age of the last replayed commit, in ms (None before any was replayed).
    pub last_replay_age_ms: Option<f64>,
    /// `recovery_min_apply_delay`, in ms: a delay asked for, not counted as lag.
    pub min_apply_delay_ms: f64,
    /// The replay delay judged: the last replayed commit's age (less the asked delay) while
    /// received WAL waits; 0 when nothing waits.
    pub delay_ms: f64,
    pub replay_paused: bool,
    pub streaming: bool,
    pub met: bool,
}

/// One replication slot.
#[derive(Debug, Clone, Serialize)]
pub struct Slot {
    pub name: String,
    /// physical or logical.
    pub slot_type: String,
    pub active: bool,
    /// WAL this slot keeps from being removed, in bytes.
    pub retained_bytes: Option<i64>,
    /// reserved, extended, unreserved or lost.
    pub wal_status: Option<String>,
}

/// Reads the replication status of the server `client` is connected to (`server` is how
/// it is named in the report), judging lags against `target_ms`.
pub async fn status(client: &Client, server: &str, target_ms: f64) -> Result<Status, ReplicaError> {
    let standby: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(query("ask whether the server is in recovery"))?
        .get(0);
    let slots = slots(client).await?;
    if standby {
        let receiver = receiver(client, target_ms).await?;
        Ok(Status {
            server: server.to_string(),
            role: Role::Standby,
            target_ms,
            met: receiver.met,
            standbys: Vec::new(),
            receiver: Some(receiver),
            slots,
        })
    } else {
        let standbys = standbys(client, target_ms).await?;
        Ok(Status {
            server: server.to_string(),
            role: Role::Primary,
            target_ms,
            met: standbys.iter().all(|s| s.met),
            standbys,
            receiver: None,
            slots,
        })
    }
}

async fn standbys(client: &Client, target_ms: f64) -> Result<Vec<Standby>, ReplicaError> {
    let rows = client
        .query(
            "SELECT pid, application_name::text, host(client_addr), state::text,
                    sync_state::text, sent_lsn::text, write_lsn::text, flush_lsn::text,
                    replay_lsn::text,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::int8,
                    (EXTRACT(epoch FROM write_lag) * 1000)::float8,
                    (EXTRACT(epoch FROM flush_lag) * 1000)::float8,
                    (EXTRACT(epoch FROM replay_lag) * 1000)::float8
               FROM pg_stat_replication
              ORDER BY application_name, client_addr, pid",
            &[],
        )
        .await
        .map_err(query("read pg_stat_replication"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let state: Option<String> = r.get(3);
            let replay_lag_ms: Option<f64> = r.get(12);
            Standby {
                pid: r.get(0),
                application_name: r.get(1),
                client_addr: r.get(2),
                met: standby_meets(state.as_deref().unwrap_or(""), replay_lag_ms, target_ms),
                state,
                sync_state: r.get(4),
                sent_lsn: r.get(5),
                write_lsn: r.get(6),
                flush_lsn: r.get(7),
                replay_lsn: r.get(8),
                lag_bytes: r.get(9),
                write_lag_ms: r.get(10),
                flush_lag_ms: r.get(11),
                replay_lag_ms,
            }
        })
        .collect())
}

async fn receiver(client: &Client, target_ms: f64) -> Result<Receiver, ReplicaError> {
    let r = client
        .query_one(
            "SELECT (SELECT status::text FROM pg_stat_wal_receiver),
                    (SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver),
                    pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
                    COALESCE(GREATEST(pg_wal_lsn_diff(pg_last_wal_receive_lsn(),
                                                      pg_last_wal_replay_lsn()), 0), 0)::int8,
                    (EXTRACT(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::float8,
                    (SELECT setting::float8 FROM pg_settings
                      WHERE name = 'recovery_min_apply_delay'),
                    pg_is_wal_replay_paused()",
            &[],
        )
        .await
        .map_err(query("read the standby's receiver and replay"))?;
    let receiver_status: Option<String> = r.get(0);
    let unreplayed_bytes: i64 = r.get(4);
    let last_replay_age_ms: Option<f64> = r.get(5);
    let min_apply_delay_ms: f64 = r.get::<_, Option<f64>>(6).unwrap_or(0.0);
    let replay_paused: bool = r.get(7);
    let streaming = receiver_status.as_deref() == Some("streaming");
    let delay_ms =
        (replay_delay_ms(unreplayed_bytes > 0, last_replay_age_ms) - min_apply_delay_ms).max(0.0);
    Ok(Receiver {
        met: receiver_meets(streaming, replay_paused, delay_ms, target_ms),
        receiver_status,
        sender: r.get(1),
        receive_lsn: r.get(2),
        replay_lsn: r.get(3),
        unreplayed_bytes,
        last_replay_age_ms,
        min_apply_delay_ms,
        delay_ms,
        replay_paused,
        streaming,
    })
}

async fn slots(client: &Client) -> Result<Vec<Slot>, ReplicaError> {
    let rows = client
        .query(
            "SELECT slot_name::text, slot_type::text, active,
                    pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery()
                                         THEN pg_last_wal_receive_lsn()
                                         ELSE pg_current_wal_lsn() END, restart_lsn)::int8,
                    wal_status::text
               FROM pg_replication_slots
              ORDER BY slot_name",
            &[],
        )
        .await
        .map_err(query("read pg_replication_slots"))?;
    Ok(rows
        .iter()
        .map(|r| Slot {
            name: r.get(0),
            slot_type: r.get(1),
            active: r.get(2),
            retained_bytes: r.get(3),
            wal_status: r.get(4),
        })
        .collect())
}
