//! Replication checks, cluster-wide.
//!
//! `replication_slot`: a slot nobody consumes keeps every WAL segment from its
//! `restart_lsn` on (and, with an xmin, holds back vacuum) until the disk fills. Any
//! inactive slot is a warning; one retaining `slot_retained_critical_mb` MB of WAL or more,
//! or whose WAL is already lost (`wal_status = 'lost'`), is critical.

use pgw_common::output::quote_literal;

use super::{CheckInfo, Ctx, Scope};
use crate::model::{Finding, Severity};

/// The checks of this module, in the order they run.
pub(super) const CHECKS: &[CheckInfo] = &[CheckInfo {
    id: "replication_slot",
    scope: Scope::Cluster,
    summary: "inactive replication slots and the WAL they retain",
    thresholds: &["slot_retained_critical_mb"],
}];

/// Runs check `id` if it is one of this module's.
pub(super) async fn run(
    id: &str,
    ctx: &Ctx<'_>,
) -> Option<Result<Vec<Finding>, tokio_postgres::Error>> {
    Some(match id {
        "replication_slot" => replication_slot(ctx).await,
        _ => return None,
    })
}

/// Inactive replication slots and the WAL they retain, measured from the current WAL
/// position (on a standby, the last WAL received, or replayed when nothing streams).
pub(super) async fn replication_slot(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let t = ctx.thresholds;
    // CASE evaluates lazily: pg_current_wal_lsn() would fail during recovery.
    let rows = ctx
        .client
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
                remediation: format!("SELECT pg_drop_replication_slot({});", quote_literal(&name)),
                perfdata: Some(format!(
                    "retained={:.0}B;;{:.0}",
                    retained.unwrap_or(0.0),
                    critical_bytes
                )),
            }
        })
        .collect())
}
