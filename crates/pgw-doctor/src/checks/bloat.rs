//! Bloat: the space a table holds beyond what its rows need, estimated from the statistics
//! (`pg_stats`, `pg_class`) so that no extension and no full scan is needed, or measured
//! by pgstattuple_approx where the statistics are unreadable.

use pgw_common::sql::{qualified, shown_qualified};

use super::{CheckInfo, Ctx, Outcome, Scope};
use crate::model::{Finding, Severity, Skipped};

/// The checks of this module, in the order they run.
pub(super) const CHECKS: &[CheckInfo] = &[CheckInfo {
    id: "table_bloat",
    scope: Scope::Database,
    summary: "tables whose size exceeds the statistics-based estimate of their data, or pgstattuple_approx's free space where statistics are unreadable (warning, critical; VACUUM FULL or pg_repack)",
    thresholds: &["bloat_warning_share", "bloat_critical_share", "bloat_min_mb"],
}];

/// Runs check `id` if it is one of this module's.
pub(super) async fn run(id: &str, ctx: &Ctx<'_>) -> Option<Result<Outcome, tokio_postgres::Error>> {
    Some(match id {
        "table_bloat" => table_bloat(ctx).await,
        _ => return None,
    })
}

/// One table's column, in column order, as the estimate needs it.
struct Column {
    /// `attlen`: > 0 fixed width, < 0 varlena (-1) or cstring (-2).
    len: i16,
    /// `attalign` as bytes: c=1, s=2, i=4, d=8.
    align: f64,
    null_frac: f64,
    /// `pg_stats.avg_width`; None when the role cannot read the column's statistics row.
    avg_width: Option<f64>,
}

/// A candidate table and its columns.
struct Table {
    oid: u32,
    schema: String,
    name: String,
    reltuples: f64,
    relpages: i64,
    bytes: i64,
    fillfactor: f64,
    /// All columns, dropped ones too (they keep their place in the null bitmap).
    natts: usize,
    columns: Vec<Column>,
    /// A column without statistics that the role may SELECT (so: not analyzed yet).
    unanalyzed_readable: bool,
    /// An ACCESS EXCLUSIVE lock is held or awaited on it: pgstattuple_approx would wait.
    locked: bool,
}

/// `x` rounded up to a multiple of `a`.
pub(super) fn align_up(x: f64, a: f64) -> f64 {
    (x / a).ceil() * a
}

/// How a column value is stored: (bytes, alignment) from `attlen`, `attalign` (as bytes)
/// and `pg_stats.avg_width`. Fixed-width values take `attlen` at their alignment; a short
/// varlena (1-byte header, up to 126 bytes) is stored unaligned.
pub(super) fn stored(len: i16, align: f64, avg_width: f64) -> (f64, f64) {
    if len > 0 {
        (f64::from(len), align)
    } else if avg_width <= 126.0 {
        (avg_width, 1.0)
    } else {
        (avg_width, align)
    }
}

/// SQL for `pg_attribute a`'s `attalign` in bytes.
pub(super) const ALIGN_BYTES_SQL: &str =
    "CASE a.attalign WHEN 'c' THEN 1 WHEN 's' THEN 2 WHEN 'i' THEN 4 ELSE 8 END::float8";

/// SQL for the fillfactor in `reloptions` (an SQL expression), else `default`.
pub(super) fn fillfactor_sql(reloptions: &str, default: u32) -> String {
    format!(
        "COALESCE(substring(array_to_string({reloptions}, ' ') FROM 'fillfactor=([0-9]+)')::float8, \
         {default})"
    )
}

/// The expected bytes of one heap tuple (header, null bitmap, columns with their alignment
/// padding in column order, the whole MAXALIGNed), without the line pointer; None when a
/// column's statistics are missing.
fn tuple_width(t: &Table) -> Option<f64> {
    const MAXALIGN: f64 = 8.0;
    let has_nulls = t.columns.iter().any(|c| c.null_frac > 0.0);
    let bitmap = if has_nulls {
        t.natts.div_ceil(8) as f64
    } else {
        0.0
    };
    let header = align_up(23.0 + bitmap, MAXALIGN);
    let mut off = 0.0_f64;
    for c in &t.columns {
        let (width, align) = stored(c.len, c.align, c.avg_width?);
        // A null column takes no space (nor padding): weigh by the share of non-null rows.
        let padded = align_up(off, align) - off + width;
        off += (1.0 - c.null_frac) * padded;
    }
    Some(align_up(header + off, MAXALIGN))
}

/// The pages `t`'s rows need when packed to its fillfactor: page header 24 bytes, a 4-byte
/// line pointer per tuple, at most MaxHeapTuplesPerPage tuples per page.
fn estimated_pages(t: &Table, tuple: f64, bs: f64) -> f64 {
    let max_per_page = ((bs - 24.0) / (24.0 + 4.0)).floor();
    let per_page = ((bs * t.fillfactor / 100.0 - 24.0) / (tuple + 4.0))
        .floor()
        .clamp(1.0, max_per_page);
    (t.reltuples / per_page).ceil()
}

/// `table_bloat`: how much of each table's heap is space its rows do not need.
///
/// Estimated from statistics, so that no extension and no full scan is needed (as in
/// check_postgres and ioguix's pgsql-bloat-estimation, rewritten): each row is its header
/// (23 bytes plus, if any column has nulls, a null bitmap of one bit per column, MAXALIGNed
/// to 8), then each column in column order at an offset rounded up to its alignment
/// (`attalign`; fixed-width columns at `attlen`, varlena ones at `pg_stats.avg_width`, short
/// ones unaligned), the whole MAXALIGNed, plus its 4-byte line pointer; pages hold the block
/// size times the fillfactor less the 24-byte page header. `reltuples` such rows make the
/// estimated pages, compared with `relpages` (the heap only: TOAST is not estimated).
///
/// A table whose columns' statistics the role cannot read (pg_stats only shows columns the
/// role may SELECT) or that was never analyzed is measured with `pgstattuple_approx` when
/// the pgstattuple extension is installed and the role may execute it (it is granted to
/// pg_stat_scan_tables, which pg_monitor includes): free space beyond the fillfactor's
/// reserve plus dead tuples. Otherwise it is listed as skipped with why, never dropped.
///
/// Tables under 10 pages or `bloat_min_mb` are ignored; waste of at least `bloat_min_mb`
/// and `bloat_warning_share` of the table is a warning, `bloat_critical_share` critical.
pub(super) async fn table_bloat(ctx: &Ctx<'_>) -> Result<Outcome, tokio_postgres::Error> {
    let t = ctx.thresholds;
    let bs: f64 = ctx
        .query_one("SELECT current_setting('block_size')::float8", &[])
        .await?
        .get(0);
    let sql = format!(
        "SELECT c.oid, n.nspname::text, c.relname::text, c.reltuples::float8,
                    c.relpages::int8, {size} AS bytes,
                    {fillfactor} AS fillfactor,
                    a.attnum::int4, a.attisdropped, a.attlen,
                    {align} AS align,
                    COALESCE(s.null_frac, 0)::float8, s.avg_width::float8,
                    has_column_privilege(c.oid, a.attnum, 'SELECT') AS readable,
                    {locked} AS locked
               FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
               LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname
                                   AND s.attname = a.attname AND NOT s.inherited
              WHERE c.relkind IN ('r', 'm')
                AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname !~ '^pg_(toast|temp_)'
                AND {size} >= GREATEST(10 * $2::float8, $1::float8 * 1048576)
              ORDER BY c.oid, a.attnum",
        size = super::size_sql("c.oid"),
        locked = super::locked_sql("c.oid"),
        fillfactor = fillfactor_sql("c.reloptions", 100),
        align = ALIGN_BYTES_SQL,
    );
    let rows = ctx.query(&sql, &[&t.bloat_min_mb, &bs]).await?;
    let mut tables: Vec<Table> = Vec::new();
    for r in &rows {
        let oid: u32 = r.get(0);
        if tables.last().map(|t| t.oid) != Some(oid) {
            tables.push(Table {
                oid,
                schema: r.get(1),
                name: r.get(2),
                reltuples: r.get(3),
                relpages: r.get(4),
                bytes: r.get(5),
                fillfactor: r.get(6),
                natts: 0,
                columns: Vec::new(),
                unanalyzed_readable: false,
                locked: r.get(14),
            });
        }
        let Some(table) = tables.last_mut() else {
            continue;
        };
        let _attnum: i32 = r.get(7);
        table.natts += 1;
        if r.get::<_, bool>(8) {
            continue;
        }
        let avg_width: Option<f64> = r.get(12);
        let readable: bool = r.get(13);
        table.unanalyzed_readable |= avg_width.is_none() && readable;
        table.columns.push(Column {
            len: r.get(9),
            align: r.get(10),
            null_frac: r.get(11),
            avg_width,
        });
    }

    let approx = extension_function(ctx, "pgstattuple_approx").await?;
    let mut out = Outcome::default();
    let mut ranked: Vec<(f64, Finding)> = Vec::new();
    for table in &tables {
        let object = shown_qualified(&table.schema, &table.name);
        let estimate = if table.reltuples < 0.0 || table.columns.is_empty() {
            None
        } else {
            tuple_width(table).map(|w| (w, estimated_pages(table, w, bs)))
        };
        let measured = match (estimate, &approx) {
            (Some((width, est)), _) => {
                let pages = table.relpages.max(1) as f64;
                let waste = (pages - est).max(0.0) * bs;
                Measure {
                    share: waste / (pages * bs),
                    waste,
                    size: pages * bs,
                    how: format!(
                        "estimated from the statistics: {:.0} rows of about {width:.0} bytes \
                         should fit in about {:.1} MB at fillfactor {}",
                        table.reltuples,
                        est * bs / 1_048_576.0,
                        table.fillfactor
                    ),
                }
            }
            (None, Some(_)) if table.locked => {
                out.skipped.push(Skipped {
                    check: "table_bloat".to_string(),
                    database: Some(ctx.database.to_string()),
                    object: Some(object),
                    reason: "no column statistics readable by this role, and an ACCESS \
                             EXCLUSIVE lock is held or awaited on it, so pgstattuple_approx \
                             would wait: run doctor again once the lock is gone"
                        .to_string(),
                });
                continue;
            }
            (None, Some(func)) => {
                let r = ctx
                    .query_one(
                        &format!(
                            "SELECT table_len::float8, approx_free_percent::float8,
                                    dead_tuple_percent::float8
                               FROM {func}($1::oid::regclass)"
                        ),
                        &[&table.oid],
                    )
                    .await?;
                let (len, free, dead): (f64, f64, f64) = (r.get(0), r.get(1), r.get(2));
                let reserve = 100.0 - table.fillfactor;
                let share = ((free - reserve).max(0.0) + dead) / 100.0;
                Measure {
                    share,
                    waste: share * len,
                    size: len,
                    how: format!(
                        "measured by pgstattuple_approx: {free:.1} % free ({reserve:.0} % of it \
                         kept free by fillfactor {}), {dead:.1} % dead tuples",
                        table.fillfactor
                    ),
                }
            }
            (None, None) => {
                let reason = if table.reltuples < 0.0 || table.unanalyzed_readable {
                    "never analyzed: ANALYZE it, or install pgstattuple (pgstattuple_approx is \
                     granted to pg_stat_scan_tables)"
                } else {
                    "no column statistics readable by this role: ANALYZE it, or install \
                     pgstattuple (pgstattuple_approx is granted to pg_stat_scan_tables)"
                };
                out.skipped.push(Skipped {
                    check: "table_bloat".to_string(),
                    database: Some(ctx.database.to_string()),
                    object: Some(object),
                    reason: format!("{reason} ({:.1} MB)", table.bytes as f64 / 1_048_576.0),
                });
                continue;
            }
        };
        let Some(severity) = measured.severity(t) else {
            continue;
        };
        let mb = |b: f64| b / 1_048_576.0;
        let name = qualified(&table.schema, &table.name);
        let (schema, tname) = (&table.schema, &table.name);
        ranked.push((
            measured.waste,
            Finding {
                check: "table_bloat".to_string(),
                severity,
                database: Some(ctx.database.to_string()),
                object: Some(object),
                detail: format!(
                    "{:.1} MB wasted of {:.1} MB ({:.0} %; {}; warning at {:.0} %, critical at \
                 {:.0} %); plain VACUUM makes the space reusable but does not shrink the file; \
                 VACUUM FULL rewrites the table under an ACCESS EXCLUSIVE lock (reads and \
                 writes wait), so for a large or busy table rebuild it online with pg_repack \
                 instead",
                    mb(measured.waste),
                    mb(measured.size),
                    measured.share * 100.0,
                    measured.how,
                    t.bloat_warning_share * 100.0,
                    t.bloat_critical_share * 100.0
                ),
                remediation: vec![format!("VACUUM FULL {name};"), format!("ANALYZE {name};")],
                perfdata: Some(format!(
                    "{schema}.{tname}_bloat_share={:.4};{};{}",
                    measured.share, t.bloat_warning_share, t.bloat_critical_share
                )),
            },
        ));
    }
    // The largest waste first.
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    out.findings = ranked.into_iter().map(|(_, f)| f).collect();
    Ok(out)
}

/// One table's or index's waste: its share of the relation, in bytes, and how it was found.
pub(super) struct Measure {
    pub(super) share: f64,
    pub(super) waste: f64,
    pub(super) size: f64,
    pub(super) how: String,
}

impl Measure {
    /// The severity of this waste (table_bloat's and index_bloat's rule): None below
    /// `bloat_min_mb` or the warning share.
    pub(super) fn severity(&self, t: &crate::Thresholds) -> Option<Severity> {
        if self.waste < t.bloat_min_mb * 1_048_576.0 {
            return None;
        }
        Severity::grade(self.share, t.bloat_warning_share, t.bloat_critical_share)
    }
}

/// Function `name(regclass)` (pgstattuple's `pgstattuple_approx`, `pgstatindex`) quoted
/// with its schema, when the extension is installed and the role may execute it.
pub(super) async fn extension_function(
    ctx: &Ctx<'_>,
    name: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    let rows = ctx
        .query(
            "SELECT n.nspname::text
               FROM pg_proc p
               JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE p.proname = $1
                AND p.pronargs = 1 AND p.proargtypes[0] = 'regclass'::regtype
                AND has_function_privilege(p.oid, 'EXECUTE')
              ORDER BY n.nspname
              LIMIT 1",
            &[&name],
        )
        .await?;
    Ok(rows
        .first()
        .map(|r| qualified(&r.get::<_, String>(0), name)))
}
