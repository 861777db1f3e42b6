//! Bloat: the space a table holds beyond what its rows need, estimated from the statistics
//! (`pg_stats`, `pg_class`) so that no extension and no full scan is needed.

use pgw_common::sql::{qualified, shown_qualified};

use super::{CheckInfo, Ctx, Outcome, Scope};
use crate::model::{Finding, Severity};

/// The checks of this module, in the order they run.
pub(super) const CHECKS: &[CheckInfo] = &[
    CheckInfo {
        id: "table_bloat",
        scope: Scope::Database,
        summary: "tables whose size exceeds the statistics-based estimate of their data (warning, critical; VACUUM FULL or pg_repack)",
        thresholds: &[
            "bloat_warning_share",
            "bloat_critical_share",
            "bloat_min_mb",
        ],
    },
];

/// Runs check `id` if it is one of this module's.
pub(super) async fn run(id: &str, ctx: &Ctx<'_>) -> Option<Result<Outcome, tokio_postgres::Error>> {
    Some(match id {
        "table_bloat" => table_bloat(ctx).await.map(Outcome::from),
        _ => return None,
    })
}

/// `table_bloat`: the statistics-based estimate that needs no extension (as in
/// check_postgres and ioguix's pgsql-bloat-estimation, rewritten). From `pg_stats` (each
/// column's `avg_width` and `null_frac`), the row header (23 bytes plus the null bitmap,
/// aligned to 8 bytes as on 64-bit servers), the line pointer (4 bytes), the page header (24 bytes), the block size and the
/// table's fillfactor, it estimates how many pages `reltuples` rows need (TOAST rows counted
/// four to a page), and compares that with the pages the table and its TOAST table occupy.
/// Tables whose estimated waste is at least `bloat_min_mb` and `bloat_warning_share` of the
/// table are warnings, `bloat_critical_share` critical.
///
/// Tables without usable statistics are not estimated: never analyzed (`reltuples < 0`),
/// a column without a `pg_stats` row (pg_stats only shows columns the role may SELECT), or a
/// `name` column (whose avg_width is misleading); as are tables under 10 pages.
pub(super) async fn table_bloat(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let t = ctx.thresholds;
    let rows = ctx
        .query(
            "WITH cols AS (
               SELECT c.oid, n.nspname, c.relname, c.reltuples, c.relpages,
                      COALESCE(tc.relpages, 0) AS toastpages,
                      COALESCE(tc.reltuples, 0) AS toasttuples,
                      COALESCE(substring(array_to_string(c.reloptions, ' ')
                                         FROM 'fillfactor=([0-9]+)')::int, 100) AS fillfactor,
                      count(*) AS natts, count(s.attname) AS nstats,
                      bool_or(a.atttypid = 'pg_catalog.name'::regtype) AS has_name,
                      max(COALESCE(s.null_frac, 0)) > 0 AS has_nulls,
                      sum((1 - COALESCE(s.null_frac, 0)) * COALESCE(s.avg_width, 0)) AS data
                 FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                 LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname
                                     AND s.attname = a.attname AND NOT s.inherited
                 LEFT JOIN pg_class tc ON tc.oid = c.reltoastrelid
                WHERE c.relkind IN ('r', 'm')
                  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                  AND n.nspname !~ '^pg_(toast|temp_)'
                  AND c.reltuples >= 0
                  AND c.relpages >= 10
                GROUP BY c.oid, n.nspname, c.relname, c.reltuples, c.relpages, tc.relpages,
                         tc.reltuples, c.reloptions
             ), sized AS (
               SELECT cols.*, bs, ma,
                      -- row header (23 bytes + null bitmap), aligned to ma
                      ceil((23 + CASE WHEN has_nulls THEN (natts + 7) / 8 ELSE 0 END)::float8
                           / ma) * ma
                      -- data, aligned to ma
                      + ceil(data::float8 / ma) * ma AS tuple
                 FROM cols,
                      (SELECT current_setting('block_size')::float8 AS bs,
                              8::float8 AS ma) k
                WHERE natts = nstats AND NOT has_name
             ), est AS (
               SELECT sized.*,
                      relpages + toastpages AS pages,
                      ceil(reltuples / GREATEST(floor((bs - 24) * fillfactor / 100
                                                      / (tuple + 4)), 1))
                        + ceil(toasttuples / 4) AS est_pages
                 FROM sized
             )
             SELECT nspname::text, relname::text, pages::int8, est_pages::int8,
                    bs::int8, fillfactor, reltuples::float8
               FROM est
              WHERE (pages - est_pages) * bs >= $1::float8 * 1048576
                AND (pages - est_pages) / pages >= $2::float8
              ORDER BY (pages - est_pages) DESC, nspname, relname",
            &[&t.bloat_min_mb, &t.bloat_warning_share],
        )
        .await?;
    let mut findings = Vec::with_capacity(rows.len());
    for row in rows {
        let (schema, table): (String, String) = (row.get(0), row.get(1));
        let pages: i64 = row.get(2);
        let est: i64 = row.get(3);
        let bs: i64 = row.get(4);
        let fillfactor: i32 = row.get(5);
        let reltuples: f64 = row.get(6);
        let share = (pages - est) as f64 / pages.max(1) as f64;
        let Some(severity) = Severity::grade(share, t.bloat_warning_share, t.bloat_critical_share)
        else {
            continue;
        };
        let mb = |p: i64| p as f64 * bs as f64 / 1_048_576.0;
        let object = shown_qualified(&schema, &table);
        let name = qualified(&schema, &table);
        findings.push(Finding {
            check: "table_bloat".to_string(),
            severity,
            database: Some(ctx.database.to_string()),
            object: Some(object.clone()),
            detail: format!(
                "estimated {:.1} MB wasted of {:.1} MB ({:.0} %; {reltuples:.0} rows should fit \
                 in about {:.1} MB at fillfactor {fillfactor}; warning at {:.0} %, critical at \
                 {:.0} %); plain VACUUM makes the space reusable but does not shrink the file; \
                 VACUUM FULL rewrites the table under an ACCESS EXCLUSIVE lock (reads and \
                 writes wait), so for a large or busy table rebuild it online with pg_repack \
                 instead",
                mb(pages - est),
                mb(pages),
                share * 100.0,
                mb(est),
                t.bloat_warning_share * 100.0,
                t.bloat_critical_share * 100.0
            ),
            remediation: vec![format!("VACUUM FULL {name};"), format!("ANALYZE {name};")],
            perfdata: Some(format!(
                "{schema}.{table}_bloat_share={share:.4};{};{}",
                t.bloat_warning_share, t.bloat_critical_share
            )),
        });
    }
    Ok(findings)
}
