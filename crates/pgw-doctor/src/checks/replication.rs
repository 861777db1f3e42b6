//! Replication checks, cluster-wide.
//!
//! `replication_lag`: on a primary (or a cascading standby), each standby's replay lag as
//! `pg_stat_replication` measures it (`replay_lag`, which keeps growing while a standby's
//! replay is stuck); on a standby, its own replay delay: `now()` minus the commit time of
//! the last replayed transaction, counted only while received WAL is still unreplayed (an
//! idle primary is not lag). A deliberate `recovery_min_apply_delay` is subtracted before
//! grading. Warning at `replication_lag_warning_ms` (500 ms, the service level), critical at
//! `replication_lag_critical_ms`. A standby whose replay is paused is at least a warning
//! (remedy `pg_wal_replay_resume()`); one with a `primary_conninfo` whose WAL receiver is
//! not streaming is a warning, since its lag cannot be known.
//!
//! `replication_slot`: a slot nobody consumes keeps every WAL segment from its
//! `restart_lsn` on (and, with an xmin, holds back vacuum) until the disk fills. Any
//! inactive slot is a warning; one retaining `slot_retained_critical_mb` MB of WAL or more,
//! or whose WAL is already lost (`wal_status = 'lost'`), is critical.

use pgw_common::sql;

use super::{CheckInfo, Ctx, Outcome, Scope};
use crate::model::{Finding, Severity};
use crate::thresholds::Thresholds;

/// The checks of this module, in the order they run.
pub(super) const CHECKS: &[CheckInfo] = &[
    CheckInfo {
        id: "replication_lag",
        scope: Scope::Cluster,
        summary: "standby replay lag (on a primary and on a standby), paused replay, a standby not streaming",
        thresholds: &["replication_lag_warning_ms", "replication_lag_critical_ms"],
    },
    CheckInfo {
        id: "replication_slot",
        scope: Scope::Cluster,
        summary: "inactive replication slots and the WAL they retain",
        thresholds: &["slot_retained_critical_mb"],
    },
];

/// Runs check `id` if it is one of this module's.
pub(super) async fn run(id: &str, ctx: &Ctx<'_>) -> Option<Result<Outcome, tokio_postgres::Error>> {
    Some(match id {
        "replication_lag" => replication_lag(ctx).await.map(Outcome::from),
        "replication_slot" => replication_slot(ctx).await.map(Outcome::from),
        _ => return None,
    })
}

/// Replay lag of this server's standbys, and of this server if it is a standby, in one query.
pub(super) async fn replication_lag(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let t = ctx.thresholds;
    // The first half lists the standbys streaming from this server (pg_basebackup's WAL
    // stream replays nothing, so rows without a replay position in streaming state are left
    // out); the second half is this server itself when it is a standby. CASE evaluates lazily:
    // pg_current_wal_lsn() would fail during recovery.
    let rows = ctx
        .query(
            "SELECT 'sender' AS side,
                    COALESCE(NULLIF(application_name, ''), 'pid ' || pid) AS name,
                    host(client_addr) AS addr, state, sync_state,
                    COALESCE(EXTRACT(epoch FROM replay_lag) * 1000, 0)::float8 AS lag_ms,
                    pg_wal_lsn_diff(
                        CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                             ELSE pg_current_wal_lsn() END,
                        replay_lsn)::float8 AS behind_bytes,
                    false AS paused, 0::float8 AS apply_delay_ms, true AS has_source
               FROM pg_stat_replication
              WHERE state <> 'backup' AND (replay_lsn IS NOT NULL OR state <> 'streaming')
             UNION ALL
             SELECT 'receiver', 'this standby', NULL,
                    (SELECT status FROM pg_stat_wal_receiver), NULL,
                    CASE WHEN pg_last_wal_receive_lsn() IS NULL
                           OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn()
                         THEN 0
                         ELSE COALESCE(EXTRACT(epoch FROM now() - pg_last_xact_replay_timestamp())
                                       * 1000, 0) END::float8,
                    GREATEST(pg_wal_lsn_diff(pg_last_wal_receive_lsn(),
                                             pg_last_wal_replay_lsn()), 0)::float8,
                    pg_is_wal_replay_paused(),
                    (SELECT setting::float8 FROM pg_settings
                      WHERE name = 'recovery_min_apply_delay'),
                    current_setting('primary_conninfo') <> ''
              WHERE pg_is_in_recovery()
              ORDER BY 1, 2",
            &[],
        )
        .await?;
    Ok(rows.iter().filter_map(|r| lag_finding(t, r)).collect())
}

/// The finding for one row of [`replication_lag`]'s query, if any.
fn lag_finding(t: &Thresholds, r: &tokio_postgres::Row) -> Option<Finding> {
    let sender = r.get::<_, String>("side") == "sender";
    let name: String = r.get("name");
    let addr: Option<String> = r.get("addr");
    let state: Option<String> = r.get("state");
    let lag_ms: f64 = r.get::<_, Option<f64>>("lag_ms").unwrap_or(0.0);
    let behind: f64 = r.get::<_, Option<f64>>("behind_bytes").unwrap_or(0.0);
    let paused: bool = r.get::<_, Option<bool>>("paused").unwrap_or(false);
    let delay_ms: f64 = r.get::<_, Option<f64>>("apply_delay_ms").unwrap_or(0.0);
    let has_source: bool = r.get::<_, Option<bool>>("has_source").unwrap_or(false);
    let (warn, crit) = (t.replication_lag_warning_ms, t.replication_lag_critical_ms);
    let effective = (lag_ms - delay_ms).max(0.0);
    let perfdata = Some(format!("lag={effective:.0}ms;{warn};{crit}"));
    let mb = behind / (1024.0 * 1024.0);

    if sender {
        let streaming = state.as_deref() == Some("streaming");
        let graded = Severity::grade(effective, warn, crit);
        let severity = match (graded, streaming) {
            (Some(s), _) => s,
            (None, false) => Severity::Warning,
            (None, true) => return None,
        };
        let who = match &addr {
            Some(a) => format!("standby {name} ({a})"),
            None => format!("standby {name}"),
        };
        let mut detail = format!(
            "{who} replays {effective:.0} ms behind ({mb:.1} MB of WAL); warning at {warn} ms, critical at {crit} ms"
        );
        if !streaming {
            detail.push_str(&format!(
                "; state {} (not yet streaming)",
                state.as_deref().unwrap_or("unknown")
            ));
        }
        return Some(Finding {
            check: "replication_lag".to_string(),
            severity,
            database: None,
            object: Some(name),
            detail,
            remediation: vec![format!(
                "action: on {who}, run `pgwarden doctor --check replication_lag` to see why replay is behind \
                 (paused replay, recovery conflicts, I/O); check the network between the two"
            )],
            perfdata,
        });
    }

    let streaming = state.as_deref() == Some("streaming");
    if paused {
        let severity = Severity::grade(effective, warn, crit).unwrap_or(Severity::Warning);
        return Some(Finding {
            check: "replication_lag".to_string(),
            severity,
            database: None,
            object: Some(name),
            detail: format!(
                "WAL replay is paused; {effective:.0} ms and {mb:.1} MB of received WAL not yet replayed"
            ),
            remediation: vec!["SELECT pg_wal_replay_resume();".to_string()],
            perfdata,
        });
    }
    if has_source && !streaming {
        return Some(Finding {
            check: "replication_lag".to_string(),
            severity: Severity::Warning,
            database: None,
            object: Some(name),
            detail: format!(
                "the WAL receiver is {} although primary_conninfo is set: the lag behind the primary \
                 cannot be measured and grows while it stays so",
                state.as_deref().unwrap_or("not running")
            ),
            remediation: vec!["action: check that the primary in primary_conninfo is up and reachable and accepts \
                          replication connections from this host; this server's log says why the \
                          WAL receiver stopped"
                .to_string()],
            perfdata: None,
        });
    }
    let severity = Severity::grade(effective, warn, crit)?;
    let mut detail = format!(
        "replay is {effective:.0} ms behind the last received WAL ({mb:.1} MB to replay); \
         warning at {warn} ms, critical at {crit} ms"
    );
    if delay_ms > 0.0 {
        detail.push_str(&format!(
            " (after subtracting recovery_min_apply_delay of {delay_ms:.0} ms)"
        ));
    }
    Some(Finding {
        check: "replication_lag".to_string(),
        severity,
        database: None,
        object: Some(name),
        detail,
        remediation: vec![
            "action: look for replay waiting on queries (pg_stat_database_conflicts, \
                      max_standby_streaming_delay) and for I/O or CPU saturation on this standby"
                .to_string(),
        ],
        perfdata,
    })
}

/// Inactive replication slots and the WAL they retain, measured from the current WAL
/// position (on a standby, the last WAL received, or replayed when nothing streams).
pub(super) async fn replication_slot(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let t = ctx.thresholds;
    // CASE evaluates lazily: pg_current_wal_lsn() would fail during recovery.
    let rows = ctx
        .query(
            "SELECT slot_name::text AS slot_name, slot_type, database::text AS database,
                    wal_status,
                    pg_wal_lsn_diff(
                        CASE WHEN pg_is_in_recovery()
                             THEN COALESCE(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())
                             ELSE pg_current_wal_lsn() END,
                        restart_lsn)::float8 AS retained,
                    GREATEST(age(xmin), age(catalog_xmin)) AS xmin_age
               FROM pg_replication_slots
              WHERE NOT active
              ORDER BY slot_name",
            &[],
        )
        .await?;
    let critical_bytes = t.slot_retained_critical_mb * 1024.0 * 1024.0;
    Ok(rows
        .iter()
        .map(|r| {
            let name: String = r.get("slot_name");
            let slot_type: String = r.get("slot_type");
            let database: Option<String> = r.get("database");
            let wal_status: Option<String> = r.get("wal_status");
            let retained: Option<f64> = r.get("retained");
            let xmin_age: Option<i32> = r.get("xmin_age");
            let lost = wal_status.as_deref() == Some("lost");
            let severity = if lost || retained.is_some_and(|b| b >= critical_bytes) {
                Severity::Critical
            } else {
                Severity::Warning
            };
            let mut detail = format!("inactive {slot_type} slot");
            if let Some(db) = &database {
                detail.push_str(&format!(" of database {db}"));
            }
            match retained {
                Some(b) => detail.push_str(&format!(" retains {:.1} MB of WAL", b / (1024.0 * 1024.0))),
                None => detail.push_str(" has no restart_lsn (it reserves no WAL yet)"),
            }
            if let Some(s) = &wal_status {
                detail.push_str(&format!(" (wal_status {s})"));
            }
            if let Some(age) = xmin_age {
                detail.push_str(&format!(" and holds back vacuum by {age} transactions"));
            }
            if lost {
                detail.push_str("; its WAL is already removed, its consumer cannot resume from it");
            }
            detail.push_str(&format!(
                "; critical at {} MB; drop it if its consumer is gone, otherwise reconnect the consumer",
                t.slot_retained_critical_mb
            ));
            Finding {
                check: "replication_slot".to_string(),
                severity,
                database: None,
                object: Some(name.clone()),
                detail,
                remediation: vec![format!("SELECT pg_drop_replication_slot({});", sql::literal(&name))],
                perfdata: Some(format!(
                    "retained={:.0}B;;{:.0}",
                    retained.unwrap_or(0.0),
                    critical_bytes
                )),
            }
        })
        .collect())
}
