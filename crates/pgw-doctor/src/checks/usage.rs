//! Index and table usage checks: unused_index, seq_scan_heavy. Both read the cumulative
//! statistics views (`pg_stat_user_indexes`, `pg_stat_user_tables`) in one query per
//! database; the counts cover this server only, since the last statistics reset.

use pgw_common::sql::{qualified, shown_qualified};

use super::{CheckInfo, Ctx, Outcome, Scope};
use crate::model::{Finding, Severity, Skipped};

/// seq_scan_heavy: tables read by fewer sequential scans than this are never reported
/// (a handful of scans after a restart or a reset says nothing).
const SEQ_SCAN_MIN_SCANS: i64 = 10;

/// The checks of this module, in the order they run.
pub(super) const CHECKS: &[CheckInfo] = &[
    CheckInfo {
        id: "unused_index",
        scope: Scope::Database,
        summary: "non-unique, non-constraint indexes of at least unused_index_min_mb never \
                  scanned since stats were reset, other than a foreign key's only covering \
                  index; younger ones skipped (warning)",
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
        "unused_index" => unused_index(ctx).await,
        "seq_scan_heavy" => seq_scan_heavy(ctx).await.map(Outcome::from),
        _ => return None,
    })
}

/// SQL that holds when index `y` (a `pg_index` row, with its `pg_am` row `am`) covers
/// foreign key `k` (a `pg_constraint` row) by the rule `missing_fk_index` uses: its leading
/// key columns are, in any order, the key's columns; valid, non-partial, btree, or hash for
/// a single column.
fn covers_fk(y: &str, am: &str) -> String {
    format!(
        "{y}.indrelid = k.conrelid
         AND {y}.indisvalid AND {y}.indpred IS NULL
         AND ({am}.amname = 'btree' OR ({am}.amname = 'hash' AND cardinality(k.conkey) = 1))
         AND {y}.indnkeyatts >= cardinality(k.conkey)
         AND ({y}.indkey::int2[])[0:cardinality(k.conkey) - 1] @> k.conkey
         AND ({y}.indkey::int2[])[0:cardinality(k.conkey) - 1] <@ k.conkey"
    )
}

/// `unused_index`: valid indexes with `idx_scan = 0` in `pg_stat_user_indexes` and at
/// least `unused_index_min_mb`, never advising to drop one that something needs:
/// - unique indexes (they enforce uniqueness with or without a constraint), indexes backing
///   a constraint (primary key, unique, exclusion: `pg_constraint.conindid`),
///   replica-identity indexes and partitions of a partitioned index (they cannot be dropped
///   on their own) are never candidates;
/// - an index that covers a foreign key (the rule of `missing_fk_index`) is reported only
///   if another covering index outranks it: one that is scanned, unique or backs a
///   constraint, or, among never-scanned ones, is smaller (then lower oid). So of several
///   unused covering indexes exactly one stays unreported, and dropping every reported one
///   leaves the foreign key covered.
///
/// `idx_scan = 0` only means something for an index older than the statistics window
/// (the database's `stats_reset`, else the server start). With `track_commit_timestamp` on,
/// the commit time of the index's `pg_class` row (its `xmin`, written at creation and at
/// any later non-in-place change, so never earlier than the creation) tells: written before
/// the window start, the index is old enough and is reported; written after it, the index
/// is listed as skipped with why. Without commit timestamps (or when the row's timestamp is
/// no longer kept) the age is unknown, and the finding says so instead of claiming no scan
/// since the window start. Scans on a replica are not counted here, and the detail says it.
pub(super) async fn unused_index(ctx: &Ctx<'_>) -> Result<Outcome, tokio_postgres::Error> {
    let min_bytes = (ctx.thresholds.unused_index_min_mb * 1024.0 * 1024.0).round() as i64;
    let sql = format!(
        "WITH w AS (
           SELECT COALESCE(d.stats_reset, pg_postmaster_start_time()) AS since,
                  COALESCE('the statistics reset at '
                             || to_char(d.stats_reset, 'YYYY-MM-DD HH24:MI:SS TZ'),
                           'the server started at '
                             || to_char(pg_postmaster_start_time(), 'YYYY-MM-DD HH24:MI:SS TZ'))
                    AS since_text,
                  current_setting('track_commit_timestamp')::bool AS track
             FROM (SELECT 1) one
             LEFT JOIN pg_stat_database d ON d.datname = current_database()
         )
         SELECT s.schemaname::text, s.indexrelname::text, s.relname::text,
                {size_s}, pg_size_pretty({size_s}),
                w.since_text,
                CASE WHEN w.track THEN pg_xact_commit_timestamp(ic.xmin) END AS written,
                to_char(CASE WHEN w.track THEN pg_xact_commit_timestamp(ic.xmin) END,
                        'YYYY-MM-DD HH24:MI:SS TZ'),
                CASE WHEN w.track THEN pg_xact_commit_timestamp(ic.xmin) END < w.since AS old,
                w.track
           FROM pg_stat_user_indexes s
           JOIN pg_index i ON i.indexrelid = s.indexrelid
           JOIN pg_class ic ON ic.oid = i.indexrelid
           JOIN pg_am am ON am.oid = ic.relam
           CROSS JOIN w
          WHERE s.idx_scan = 0
            AND i.indisvalid AND NOT i.indisunique AND NOT i.indisreplident
            AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
            AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)
            AND {size_s} >= $1
            -- every foreign key this index covers is also covered by an index that outranks it
            AND NOT EXISTS (
                  SELECT 1
                    FROM pg_constraint k
                   WHERE k.contype = 'f'
                     AND {this_covers}
                     AND NOT EXISTS (
                           SELECT 1
                             FROM pg_index y
                             JOIN pg_class yc ON yc.oid = y.indexrelid
                             JOIN pg_am yam ON yam.oid = yc.relam
                            WHERE y.indexrelid <> i.indexrelid
                              AND {other_covers}
                              AND (pg_stat_get_numscans(y.indexrelid) > 0
                                   OR y.indisunique
                                   OR EXISTS (SELECT 1 FROM pg_constraint yk
                                               WHERE yk.conindid = y.indexrelid)
                                   OR ({size_y}, y.indexrelid::int8)
                                      < ({size_i}, i.indexrelid::int8))))
          ORDER BY {size_s} DESC, s.schemaname, s.indexrelname",
        this_covers = covers_fk("i", "am"),
        other_covers = covers_fk("y", "yam"),
        size_s = super::size_sql("s.indexrelid"),
        size_y = super::size_sql("y.indexrelid"),
        size_i = super::size_sql("i.indexrelid"),
    );
    let rows = ctx.query(&sql, &[&min_bytes]).await?;
    let mut out = Outcome::default();
    for row in rows {
        let (schema, index, table): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let bytes: i64 = row.get(3);
        let size: String = row.get(4);
        let since: String = row.get(5);
        let written: Option<String> = row.get(7);
        let old: Option<bool> = row.get(8);
        let track: bool = row.get(9);
        let object = shown_qualified(&schema, &index);
        let unscanned = match (old, written) {
            (Some(false), Some(at)) => {
                out.skipped.push(Skipped {
                    check: "unused_index".to_string(),
                    database: Some(ctx.database.to_string()),
                    object: Some(object),
                    reason: format!(
                        "never scanned, but its catalog row was written at {at} (created or \
                         altered then), after {since} when the counts start: too young to judge"
                    ),
                });
                continue;
            }
            (Some(true), _) => format!("has not been scanned since {since}"),
            _ => format!(
                "has not been scanned since it was created or since {since}, whichever is \
                 later: its creation time is unknown ({}), so make sure it has existed for a \
                 representative period before dropping it",
                if track {
                    "track_commit_timestamp no longer holds it"
                } else {
                    "track_commit_timestamp is off"
                }
            ),
        };
        out.findings.push(Finding {
            check: "unused_index".to_string(),
            severity: Severity::Warning,
            database: Some(ctx.database.to_string()),
            object: Some(object),
            detail: format!(
                "index on {} ({size}) {unscanned}; every write still maintains it. Scans on \
                 replicas are not counted here: check them before dropping",
                shown_qualified(&schema, &table)
            ),
            remediation: vec![format!(
                "DROP INDEX CONCURRENTLY {};",
                qualified(&schema, &index)
            )],
            perfdata: Some(format!("{schema}.{index}_bytes={bytes}B")),
        });
    }
    Ok(out)
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
