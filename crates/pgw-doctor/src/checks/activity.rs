//! Cluster-wide activity checks, from the statistics views every role can read.
//!
//! `commit_ratio`: per database, the share of transactions that rolled back
//! (`pg_stat_database.xact_rollback` over `xact_commit + xact_rollback`, counted since the
//! statistics were last reset). A database with fewer than `rollback_min_xacts` transactions
//! is not judged, so an idle one never fires. Warning from `rollback_warning_share`, critical
//! from `rollback_critical_share`. Rollbacks are an application's doing: the remediation is
//! actions (find the failing statements), not SQL; resetting the counters fixes nothing.
//!
//! `checkpoint_pressure`: the share of checkpoints that were requested
//! (`pg_stat_bgwriter.checkpoints_req`: WAL reached `max_wal_size`, or an explicit
//! `CHECKPOINT`) rather than timed, once at least `checkpoint_min_count` checkpoints were
//! counted. Warning from `checkpoint_req_warning_share`, critical from
//! `checkpoint_req_critical_share`; the remediation doubles `max_wal_size` (`ALTER SYSTEM`,
//! then a reload).
//!
//! `wal_files`: the WAL segment files in `pg_wal` (`pg_ls_waldir()`, which pg_monitor may
//! run) against `max_wal_size`. Warning from `wal_files_warning_ratio` times it, critical
//! from `wal_files_critical_ratio`. WAL beyond max_wal_size is kept by something: the
//! finding names the replication slots retaining WAL (`restart_lsn`) and the archiver's
//! failures (`pg_stat_archiver`), and `wal_keep_size`; the remediation is actions for each.

use pgw_common::sql;

use super::{CheckInfo, Ctx, Outcome, Scope};
use crate::model::{Finding, Severity};

/// The checks of this module, in the order they run.
pub(super) const CHECKS: &[CheckInfo] = &[
    CheckInfo {
        id: "commit_ratio",
        scope: Scope::Cluster,
        summary: "per database, the share of transactions rolled back since the statistics \
                  reset (warning/critical at a share, databases with few transactions ignored)",
        thresholds: &[
            "rollback_warning_share",
            "rollback_critical_share",
            "rollback_min_xacts",
        ],
    },
    CheckInfo {
        id: "checkpoint_pressure",
        scope: Scope::Cluster,
        summary: "share of requested (not timed) checkpoints since the bgwriter statistics \
                  reset: max_wal_size too small (warning/critical at a share)",
        thresholds: &[
            "checkpoint_req_warning_share",
            "checkpoint_req_critical_share",
            "checkpoint_min_count",
        ],
    },
    CheckInfo {
        id: "wal_files",
        scope: Scope::Cluster,
        summary: "WAL in pg_wal against max_wal_size (warning/critical at a multiple of it), \
                  naming what retains it: replication slots, a failing archive_command, \
                  wal_keep_size",
        thresholds: &["wal_files_warning_ratio", "wal_files_critical_ratio"],
    },
];

/// Runs check `id` if it is one of this module's.
pub(super) async fn run(id: &str, ctx: &Ctx<'_>) -> Option<Result<Outcome, tokio_postgres::Error>> {
    Some(match id {
        "commit_ratio" => commit_ratio(ctx).await.map(Outcome::from),
        "checkpoint_pressure" => checkpoint_pressure(ctx).await.map(Outcome::from),
        "wal_files" => wal_files(ctx).await.map(Outcome::from),
        _ => return None,
    })
}

/// `commit_ratio`: one finding per database whose rollback share is at or past
/// `rollback_warning_share`, among those with at least `rollback_min_xacts` transactions.
pub(super) async fn commit_ratio(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let t = ctx.thresholds;
    let rows = ctx
        .query(
            "SELECT datname::text, xact_commit::int8, xact_rollback::int8,
                    stats_reset::text
               FROM pg_stat_database
              WHERE datname IS NOT NULL
                AND xact_commit + xact_rollback >= $1
              ORDER BY xact_rollback::float8 / (xact_commit + xact_rollback) DESC, 1",
            &[&t.rollback_min_xacts],
        )
        .await?;
    let mut findings = Vec::new();
    for row in &rows {
        let name: String = row.get(0);
        let commits: i64 = row.get(1);
        let rollbacks: i64 = row.get(2);
        let reset: Option<String> = row.get(3);
        let total = commits + rollbacks;
        if total <= 0 {
            continue;
        }
        let share = rollbacks as f64 / total as f64;
        let Some(severity) =
            Severity::grade(share, t.rollback_warning_share, t.rollback_critical_share)
        else {
            continue;
        };
        let since = match reset {
            Some(r) => format!("since the statistics reset at {r}"),
            None => "since the statistics were last reset".to_string(),
        };
        let shown = sql::shown(&name);
        findings.push(Finding {
            check: "commit_ratio".to_string(),
            severity,
            database: Some(name.clone()),
            object: Some(shown.clone()),
            detail: format!(
                "{rollbacks} of {total} transactions rolled back ({:.1} %) {since}: \
                 statements failing (errors, deadlocks, serialization failures, timeouts) or \
                 an application rolling back on purpose",
                share * 100.0
            ),
            remediation: vec![
                format!(
                    "action: find the failing statements in database {shown}: the server log \
                     (log_min_error_statement = error logs each failing statement), and \
                     pg_stat_statements for statements with many calls and few rows"
                ),
                "action: look at the application's error handling and retries (a retry \
                 loop on a failing statement rolls back each time); count deadlocks and \
                 conflicts in pg_stat_database (deadlocks, conflicts)"
                    .to_string(),
            ],
            perfdata: Some(format!(
                "{name}_rollback_share={share:.4};{};{}",
                t.rollback_warning_share, t.rollback_critical_share
            )),
        });
    }
    Ok(findings)
}

/// `checkpoint_pressure`: one cluster-wide finding when requested checkpoints are at least
/// `checkpoint_req_warning_share` of all, with at least `checkpoint_min_count` counted.
pub(super) async fn checkpoint_pressure(
    ctx: &Ctx<'_>,
) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let t = ctx.thresholds;
    let row = ctx
        .query_one(
            "SELECT checkpoints_timed::int8, checkpoints_req::int8, stats_reset::text,
                    (SELECT setting::int8 FROM pg_settings WHERE name = 'max_wal_size'),
                    (SELECT setting FROM pg_settings WHERE name = 'checkpoint_timeout')
               FROM pg_stat_bgwriter",
            &[],
        )
        .await?;
    let timed: i64 = row.get(0);
    let requested: i64 = row.get(1);
    let reset: Option<String> = row.get(2);
    let max_wal_mb: i64 = row.get(3);
    let timeout: String = row.get(4);
    let total = timed + requested;
    if total < t.checkpoint_min_count.max(1) {
        return Ok(Vec::new());
    }
    let share = requested as f64 / total as f64;
    let Some(severity) = Severity::grade(
        share,
        t.checkpoint_req_warning_share,
        t.checkpoint_req_critical_share,
    ) else {
        return Ok(Vec::new());
    };
    let since = match reset {
        Some(r) => format!("since the statistics reset at {r}"),
        None => "since the statistics were last reset".to_string(),
    };
    let target = format!("{}MB", max_wal_mb.saturating_mul(2));
    Ok(vec![Finding {
        check: "checkpoint_pressure".to_string(),
        severity,
        database: None,
        object: Some("max_wal_size".to_string()),
        detail: format!(
            "{requested} of {total} checkpoints were requested ({:.1} %) {since}, not timed \
             (checkpoint_timeout {timeout}s): WAL reaches max_wal_size ({max_wal_mb}MB) \
             between timed checkpoints, or CHECKPOINT is run by hand; raise max_wal_size \
             (to {target}), then reset the counters with pg_stat_reset_shared('bgwriter') to \
             judge afresh",
            share * 100.0
        ),
        remediation: vec![
            format!(
                "ALTER SYSTEM SET {} = {};",
                sql::ident("max_wal_size"),
                sql::literal(&target)
            ),
            "SELECT pg_reload_conf();".to_string(),
        ],
        perfdata: Some(format!(
            "checkpoints_req_share={share:.4};{};{}",
            t.checkpoint_req_warning_share, t.checkpoint_req_critical_share
        )),
    }])
}

/// `wal_files`: one cluster-wide finding when the WAL segment files in `pg_wal` add up to at
/// least `wal_files_warning_ratio` times `max_wal_size`. On a standby (recovery) nothing is
/// judged: the current LSN is not known there the same way.
pub(super) async fn wal_files(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let t = ctx.thresholds;
    let row = ctx
        .query_one(
            "SELECT count(*)::int8, COALESCE(sum(size), 0)::int8,
                    (SELECT setting::int8 FROM pg_settings WHERE name = 'max_wal_size'),
                    (SELECT setting::int8 FROM pg_settings WHERE name = 'wal_segment_size'),
                    (SELECT setting::int8 FROM pg_settings WHERE name = 'wal_keep_size'),
                    pg_is_in_recovery()
               FROM pg_ls_waldir()
              WHERE name ~ '^[0-9A-F]{24}$'",
            &[],
        )
        .await?;
    let files: i64 = row.get(0);
    let bytes: i64 = row.get(1);
    let max_wal_mb: i64 = row.get(2);
    let segment: i64 = row.get(3);
    let keep_mb: i64 = row.get(4);
    let recovery: bool = row.get(5);
    if recovery || max_wal_mb <= 0 {
        return Ok(Vec::new());
    }
    let ratio = bytes as f64 / (max_wal_mb as f64 * 1024.0 * 1024.0);
    let Some(severity) =
        Severity::grade(ratio, t.wal_files_warning_ratio, t.wal_files_critical_ratio)
    else {
        return Ok(Vec::new());
    };
    let slots = ctx
        .query(
            "SELECT slot_name::text, slot_type, active,
                    (pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) / 1048576)::int8
               FROM pg_replication_slots
              WHERE restart_lsn IS NOT NULL
              ORDER BY restart_lsn, slot_name",
            &[],
        )
        .await?;
    let archiver = ctx
        .query_one(
            "SELECT current_setting('archive_mode'), failed_count::int8,
                    last_failed_wal, last_failed_time::text, last_archived_time::text
               FROM pg_stat_archiver",
            &[],
        )
        .await?;
    let mut causes = Vec::new();
    let mut remediation = Vec::new();
    for s in &slots {
        let name: String = s.get(0);
        let kind: String = s.get(1);
        let active: bool = s.get(2);
        let mb: i64 = s.get(3);
        let state = if active { "active" } else { "inactive" };
        causes.push(format!(
            "{state} {kind} slot {} retains {mb} MB",
            sql::shown(&name)
        ));
        if mb >= max_wal_mb {
            remediation.push(if active {
                format!(
                    "action: replication slot {} ({kind}, active) retains {mb} MB: its \
                     consumer is behind; look at it (pg_stat_replication)",
                    sql::shown(&name)
                )
            } else {
                format!(
                    "action: replication slot {} ({kind}, inactive) retains {mb} MB: if its \
                     consumer is gone, drop it (SELECT pg_drop_replication_slot({});), else \
                     restart the consumer; the next CHECKPOINT removes the WAL",
                    sql::shown(&name),
                    sql::literal(&name)
                )
            });
        }
    }
    let archive_mode: String = archiver.get(0);
    let failed: i64 = archiver.get(1);
    let last_failed_wal: Option<String> = archiver.get(2);
    let last_failed: Option<String> = archiver.get(3);
    let last_archived: Option<String> = archiver.get(4);
    let archive_failing = archive_mode != "off"
        && failed > 0
        && last_failed.is_some()
        && last_failed >= last_archived;
    if archive_mode != "off" && failed > 0 {
        causes.push(format!(
            "archive_command failed {failed} times (last on {}, at {})",
            last_failed_wal.as_deref().unwrap_or("?"),
            last_failed.as_deref().unwrap_or("?")
        ));
    }
    if archive_failing {
        remediation.push(
            "action: archive_command is failing (pg_stat_archiver.last_failed_wal): WAL stays \
             until it is archived; fix the command or its destination (see the server log)"
                .to_string(),
        );
    }
    if keep_mb >= max_wal_mb {
        causes.push(format!("wal_keep_size is {keep_mb} MB"));
        remediation.push(format!(
            "action: wal_keep_size ({keep_mb} MB) keeps that much WAL by design; lower it \
             if standbys use slots"
        ));
    }
    if remediation.is_empty() {
        remediation.push(
            "action: look for what retains WAL: pg_replication_slots (restart_lsn), \
             pg_stat_archiver (failed_count), wal_keep_size, a checkpoint that cannot \
             complete (server log)"
                .to_string(),
        );
    }
    let causes = if causes.is_empty() {
        "no slot, archiver failure or wal_keep_size explains it".to_string()
    } else {
        causes.join("; ")
    };
    let mb = bytes / (1024 * 1024);
    Ok(vec![Finding {
        check: "wal_files".to_string(),
        severity,
        database: None,
        object: Some("pg_wal".to_string()),
        detail: format!(
            "pg_wal holds {files} segments of {} MB ({mb} MB), {ratio:.1} x max_wal_size \
             ({max_wal_mb} MB): {causes}",
            segment / (1024 * 1024)
        ),
        remediation,
        perfdata: Some(format!(
            "pg_wal_mb={mb};{};{}",
            (t.wal_files_warning_ratio * max_wal_mb as f64).round() as i64,
            (t.wal_files_critical_ratio * max_wal_mb as f64).round() as i64
        )),
    }])
}
