//! Index and table usage checks: unused_index, seq_scan_heavy. Both read the cumulative
//! statistics views (`pg_stat_user_indexes`, `pg_stat_user_tables`) in one query per
//! database; the counts cover this server only, since the last statistics reset.

use pgw_common::sql::{qualified, shown_qualified};

use super::{CheckInfo, Ctx, Outcome, Scope};
use crate::model::{Finding, Severity};

/// seq_scan_heavy: tables read by fewer sequential scans than this are never reported
/// (a handful of scans after a restart or a reset says nothing).
const SEQ_SCAN_MIN_SCANS: i64 = 10;

/// The checks of this module, in the order they run.
pub(super) const CHECKS: &[CheckInfo] = &[
    CheckInfo {
        id: "unused_index",
        scope: Scope::Database,
        summary: "non-unique, non-constraint indexes never scanned since stats were reset, \
                  at least unused_index_min_mb (warning)",
        thresholds: &["unused_index_min_mb"],
    },
    CheckInfo {
        id: "seq_scan_heavy",
        scope: Scope::Database,
        summary: "tables of seq_scan_min_rows or more read by sequential scans for more than \
                  seq_scan_share of their scans (warning)",
        thresholds: &["seq_scan_min_rows", "seq_scan_share"],
    },
];

/// Runs check `id` if it is one of this module's.
pub(super) async fn run(id: &str, ctx: &Ctx<'_>) -> Option<Result<Outcome, tokio_postgres::Error>> {
    Some(match id {
        "unused_index" => unused_index(ctx).await.map(Outcome::from),
        "seq_scan_heavy" => seq_scan_heavy(ctx).await.map(Outcome::from),
        _ => return None,
    })
}

/// `unused_index`: valid indexes with `idx_scan = 0` in `pg_stat_user_indexes` and at
/// least `unused_index_min_mb`, skipping unique indexes, indexes backing a constraint
/// (primary key, unique, exclusion), replica-identity indexes and partitions of a
/// partitioned index (they cannot be dropped on their own). The detail says since when the
/// counts run (the database's `stats_reset`, else the server start) and that scans on a
/// replica are not counted here.
pub(super) async fn unused_index(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let min_bytes = (ctx.thresholds.unused_index_min_mb * 1024.0 * 1024.0).round() as i64;
    let rows = ctx
        .query(
            "SELECT s.schemaname::text, s.indexrelname::text, s.relname::text,
                    pg_relation_size(s.indexrelid), pg_size_pretty(pg_relation_size(s.indexrelid)),
                    COALESCE('since the statistics reset at '
                               || to_char(d.stats_reset, 'YYYY-MM-DD HH24:MI:SS TZ'),
                             'since the server started at '
                               || to_char(pg_postmaster_start_time(), 'YYYY-MM-DD HH24:MI:SS TZ'))
               FROM pg_stat_user_indexes s
               JOIN pg_index i ON i.indexrelid = s.indexrelid
               LEFT JOIN pg_stat_database d ON d.datname = current_database()
              WHERE s.idx_scan = 0
                AND i.indisvalid AND NOT i.indisunique AND NOT i.indisreplident
                AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
                AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)
                AND pg_relation_size(s.indexrelid) >= $1
              ORDER BY pg_relation_size(s.indexrelid) DESC, s.schemaname, s.indexrelname",
            &[&min_bytes],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let (schema, index, table): (String, String, String) =
                (row.get(0), row.get(1), row.get(2));
            let bytes: i64 = row.get(3);
            let size: String = row.get(4);
            let since: String = row.get(5);
            let object = shown_qualified(&schema, &index);
            Finding {
                check: "unused_index".to_string(),
                severity: Severity::Warning,
                database: Some(ctx.database.to_string()),
                object: Some(object.clone()),
                detail: format!(
                    "index on {} ({size}) has not been scanned {since}; every write still \
                     maintains it. Scans on replicas are not counted here: check them before \
                     dropping",
                    shown_qualified(&schema, &table)
                ),
                remediation: vec![format!(
                    "DROP INDEX CONCURRENTLY {};",
                    qualified(&schema, &index)
                )],
                perfdata: Some(format!("{schema}.{index}_bytes={bytes}B")),
            }
        })
        .collect())
}

/// `seq_scan_heavy`: tables with at least `seq_scan_min_rows` (planner estimate,
/// `reltuples`) and at least [`SEQ_SCAN_MIN_SCANS`] sequential scans, whose sequential
/// scans are more than `seq_scan_share` of all their scans. No SQL provably fixes this
/// (which columns to index depends on the queries), so the remediation is an action.
pub(super) async fn seq_scan_heavy(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let t = ctx.thresholds;
    let min_rows = t.seq_scan_min_rows as f64;
    let rows = ctx
        .query(
            "SELECT s.schemaname::text, s.relname::text, c.reltuples::float8,
                    s.seq_scan, COALESCE(s.idx_scan, 0), s.seq_tup_read,
                    s.seq_scan::float8 / (s.seq_scan + COALESCE(s.idx_scan, 0)) AS share
               FROM pg_stat_user_tables s
               JOIN pg_class c ON c.oid = s.relid
              WHERE c.reltuples::float8 >= $1::float8
                AND s.seq_scan >= $2
                AND s.seq_scan::float8 / (s.seq_scan + COALESCE(s.idx_scan, 0)) > $3
              ORDER BY s.seq_tup_read DESC, s.schemaname, s.relname",
            &[&min_rows, &SEQ_SCAN_MIN_SCANS, &t.seq_scan_share],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let (schema, table): (String, String) = (row.get(0), row.get(1));
            let reltuples: f64 = row.get(2);
            let seq: i64 = row.get(3);
            let idx: i64 = row.get(4);
            let tup_read: i64 = row.get(5);
            let share: f64 = row.get(6);
            let object = shown_qualified(&schema, &table);
            Finding {
                check: "seq_scan_heavy".to_string(),
                severity: Severity::Warning,
                database: Some(ctx.database.to_string()),
                object: Some(object.clone()),
                detail: format!(
                    "~{reltuples:.0} rows, {seq} sequential scans vs {idx} index scans \
                     ({:.1} % sequential, limit {:.1} %), {tup_read} rows read sequentially",
                    share * 100.0,
                    t.seq_scan_share * 100.0
                ),
                remediation: vec![format!(
                    "find the queries that scan {object} (pg_stat_statements, EXPLAIN) and \
                     index the columns they filter or join on with CREATE INDEX CONCURRENTLY"
                )],
                perfdata: Some(format!(
                    "{schema}.{table}_seq_share={share:.4};{}",
                    t.seq_scan_share
                )),
            }
        })
        .collect())
}
