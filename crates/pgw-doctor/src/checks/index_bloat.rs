//! Index bloat: the pages a btree index holds beyond what its entries need, estimated from
//! the statistics (`pg_stats`, `pg_class`) so that no extension and no scan is needed, or
//! measured by pgstatindex where the statistics are unreadable.

use pgw_common::sql::{qualified, shown_qualified};

use super::bloat::{
    align_up, extension_function, fillfactor_sql, stored, Measure, ALIGN_BYTES_SQL,
};
use super::{CheckInfo, Ctx, Outcome, Scope};
use crate::model::{Finding, Skipped};

/// The checks of this module, in the order they run.
pub(super) const CHECKS: &[CheckInfo] = &[CheckInfo {
    id: "index_bloat",
    scope: Scope::Database,
    summary: "btree indexes whose size exceeds the statistics-based estimate of their \
              entries (deduplication included), or pgstatindex's leaf density where \
              statistics are unreadable (warning, critical; REINDEX CONCURRENTLY)",
    thresholds: &[
        "bloat_warning_share",
        "bloat_critical_share",
        "bloat_min_mb",
        "index_scan_max_mb",
    ],
}];

/// Runs check `id` if it is one of this module's.
pub(super) async fn run(id: &str, ctx: &Ctx<'_>) -> Option<Result<Outcome, tokio_postgres::Error>> {
    Some(match id {
        "index_bloat" => index_bloat(ctx).await,
        _ => return None,
    })
}

/// One index column (key or INCLUDE), in column order.
struct Column {
    /// `attlen`: > 0 fixed width, < 0 varlena or cstring.
    len: i16,
    /// `attalign` as bytes.
    align: f64,
    null_frac: f64,
    /// `pg_stats.avg_width`; None when the statistics are missing or unreadable.
    avg_width: Option<f64>,
    /// `pg_stats.n_distinct` (negative: a share of the rows); 1 for an INCLUDE column.
    n_distinct: Option<f64>,
}

/// A candidate index and its columns.
struct Index {
    oid: u32,
    schema: String,
    name: String,
    reltuples: f64,
    relpages: i64,
    bytes: i64,
    fillfactor: f64,
    /// Deduplication may apply: PostgreSQL 13+, not unique, no INCLUDE columns, not
    /// switched off with `deduplicate_items`, every key column dedup-safe.
    dedup: bool,
    columns: Vec<Column>,
    /// A column without statistics that the role may read (so: never analyzed).
    unanalyzed_readable: bool,
    /// An ACCESS EXCLUSIVE lock is held or awaited on it: pgstatindex would wait.
    locked: bool,
}

const MAXALIGN: f64 = 8.0;
/// The page header (24 bytes) and btree's special space (`BTPageOpaqueData`, 16 bytes).
const PAGE_OVERHEAD: f64 = 24.0 + 16.0;
/// The largest posting list deduplication builds: half of `BTMaxItemSize` on an 8 kB page.
const MAX_POSTING_BYTES: f64 = 1352.0;

/// The expected bytes of `ix`'s plain leaf tuples, without their line pointer: (all,
/// without nulls, with a null); None when a column's statistics are missing. A tuple is
/// `IndexTupleData`'s 8 bytes, plus a 4-byte null bitmap only if that tuple holds a null
/// (so 16 with MAXALIGN), then the columns at their alignment, the whole MAXALIGNed.
fn tuple_widths(ix: &Index) -> Option<(f64, f64, f64)> {
    let mut cols = Vec::with_capacity(ix.columns.len());
    for c in &ix.columns {
        let (width, align) = stored(c.len, c.align, c.avg_width?);
        cols.push((width, align, c.null_frac));
    }
    // The data of a tuple whose column i is present with probability present(i), each
    // present column at its alignment after the ones before it.
    let data = |present: &dyn Fn(f64) -> f64| {
        let mut off = 0.0_f64;
        for &(width, align, null_frac) in &cols {
            let padded = align_up(off, align) - off + width;
            off += present(null_frac) * padded;
        }
        off
    };
    let plain = align_up(8.0 + data(&|_| 1.0), MAXALIGN);
    let no_null: f64 = cols.iter().map(|c| 1.0 - c.2).product();
    let some_null = 1.0 - no_null;
    if some_null <= 0.0 {
        return Some((plain, plain, plain));
    }
    // In a tuple holding a null, column i is the null one with probability about
    // null_frac / some_null (exactly 1 when only one column has nulls).
    let nulled = align_up(16.0 + data(&|nf| 1.0 - (nf / some_null).min(1.0)), MAXALIGN);
    Some((no_null * plain + some_null * nulled, plain, nulled))
}

/// Bytes on leaf pages for `entries` entries of `tuple` bytes over `keys` distinct keys:
/// one tuple and line pointer each; where btree deduplicates and keys repeat, one posting
/// list tuple (at most [`MAX_POSTING_BYTES`]) per run of equal keys with 6 bytes per heap
/// pointer.
fn run_bytes(entries: f64, keys: f64, tuple: f64, dedup: bool) -> f64 {
    let plain = entries * (tuple + 4.0);
    let per_key = entries / keys.max(1.0);
    if !dedup || per_key < 2.0 {
        return plain;
    }
    let tids_per_posting = ((MAX_POSTING_BYTES - tuple) / 6.0).floor().max(1.0);
    let postings = (per_key / tids_per_posting).ceil();
    (keys * (postings * (tuple + 4.0) + per_key * 6.0)).min(plain)
}

/// The leaf bytes `ix`'s entries need. The distinct keys are `n_distinct` of a single key
/// column (its nulls are one more run of equal keys), the product over several (capped at
/// the entries).
fn leaf_bytes(ix: &Index) -> Option<f64> {
    let (all, plain, nulled) = tuple_widths(ix)?;
    let n = ix.reltuples;
    let distinct = |c: &Column| c.n_distinct.map(|d| if d < 0.0 { -d * n } else { d });
    if let [c] = ix.columns.as_slice() {
        if c.null_frac > 0.0 {
            let d = distinct(c).unwrap_or(n);
            return Some(
                run_bytes(n * c.null_frac, 1.0, nulled, ix.dedup)
                    + run_bytes(n * (1.0 - c.null_frac), d, plain, ix.dedup),
            );
        }
    }
    let mut d = 1.0_f64;
    for c in &ix.columns {
        d *= distinct(c).unwrap_or(n);
    }
    Some(run_bytes(n, d.clamp(1.0, n.max(1.0)), all, ix.dedup))
}

/// The pages `ix` needs when freshly built: leaf pages filled to the fillfactor (btree's
/// default 90), internal pages at 70 % (as CREATE INDEX leaves them), the metapage.
fn estimated_pages(ix: &Index, tuple: f64, bs: f64) -> Option<f64> {
    let usable = bs - PAGE_OVERHEAD;
    let leaf_room = (usable - bs * (100.0 - ix.fillfactor) / 100.0).max(tuple + 4.0);
    let leaves = (leaf_bytes(ix)? / leaf_room).ceil().max(1.0);
    let fanout = ((usable * 0.7) / (tuple + 4.0)).floor().max(2.0);
    let mut level = leaves;
    let mut pages = leaves + 1.0;
    while level > 1.0 {
        level = (level / fanout).ceil();
        pages += level;
    }
    Some(pages)
}

/// `index_bloat`: how much of each btree index is space its entries do not need.
///
/// Estimated from statistics, as pgsql-bloat-estimation does for btree (rewritten): each
/// leaf entry is its 8-byte header (16 with a null bitmap), the key and INCLUDE columns at
/// their alignment (the table column's `pg_stats` row, or the expression's row kept under
/// the index's name), MAXALIGNed, plus a 4-byte line pointer; where btree deduplicates
/// (PostgreSQL 13+), runs of equal keys (`n_distinct`) share one posting list tuple with 6
/// bytes per heap pointer. Leaf pages hold the page less its header and special space at
/// the index's fillfactor; the internal levels and the metapage are added. The estimate is
/// compared with `relpages` (both as of the last VACUUM, ANALYZE or CREATE INDEX).
///
/// An index whose columns' statistics the role cannot read (pg_monitor) is measured with
/// `pgstatindex` when pgstattuple is installed and the index is at most
/// `index_scan_max_mb` (it reads the whole index): leaf space beyond the fillfactor's
/// reserve, plus empty and deleted pages. Otherwise it is listed as skipped with why.
///
/// Only valid btree indexes of at least 10 pages and `bloat_min_mb` are judged; waste of at
/// least `bloat_min_mb` and `bloat_warning_share` of the index is a warning,
/// `bloat_critical_share` critical.
pub(super) async fn index_bloat(ctx: &Ctx<'_>) -> Result<Outcome, tokio_postgres::Error> {
    let t = ctx.thresholds;
    let facts = ctx
        .query_one(
            "SELECT current_setting('block_size')::float8,
                    current_setting('server_version_num')::int4 >= 130000",
            &[],
        )
        .await?;
    let (bs, dedup_server): (f64, bool) = (facts.get(0), facts.get(1));
    let sql = format!(
        "SELECT ic.oid, n.nspname::text, ic.relname::text, ic.reltuples::float8,
                ic.relpages::int8, {size} AS bytes,
                {fillfactor} AS fillfactor,
                NOT i.indisunique AND i.indnatts = i.indnkeyatts
                  AND NOT COALESCE(array_to_string(ic.reloptions, ' ')
                                     ~* 'deduplicate_items=(off|false|no|0)', false) AS dedup,
                a.attnum <= i.indnkeyatts AS is_key,
                a.attlen,
                {align} AS align,
                COALESCE(s.null_frac, 0)::float8, s.avg_width::float8, s.n_distinct::float8,
                CASE WHEN ta.attnum IS NOT NULL
                     THEN has_column_privilege(i.indrelid, ta.attnum, 'SELECT')
                     ELSE pg_has_role(ic.relowner, 'USAGE') END AS readable,
                EXISTS (SELECT 1 FROM pg_amproc p
                         WHERE p.amprocfamily = opc.opcfamily AND p.amprocnum = 4
                           AND p.amproclefttype = opc.opcintype)
                  AND COALESCE((SELECT co.collisdeterministic FROM pg_collation co
                                 WHERE co.oid = a.attcollation), true) AS dedup_safe,
                {locked} AS locked
           FROM pg_index i
           JOIN pg_class ic ON ic.oid = i.indexrelid
           JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'btree'
           JOIN pg_namespace n ON n.oid = ic.relnamespace
           JOIN pg_class t ON t.oid = i.indrelid
           JOIN pg_namespace tn ON tn.oid = t.relnamespace
           JOIN pg_attribute a ON a.attrelid = ic.oid AND a.attnum > 0
           LEFT JOIN pg_opclass opc ON opc.oid = i.indclass[a.attnum - 1]
           LEFT JOIN pg_attribute ta ON ta.attrelid = i.indrelid
                                    AND ta.attnum = i.indkey[a.attnum - 1]
                                    AND ta.attnum > 0
           LEFT JOIN pg_stats s
                  ON NOT s.inherited
                 AND CASE WHEN ta.attnum IS NOT NULL
                          THEN s.schemaname = tn.nspname AND s.tablename = t.relname
                               AND s.attname = ta.attname
                          ELSE s.schemaname = n.nspname AND s.tablename = ic.relname
                               AND s.attname = a.attname END
          WHERE ic.relkind = 'i' AND i.indisvalid AND i.indisready
            AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND n.nspname !~ '^pg_(toast|temp_)'
            AND ic.relpages >= 10
            AND {size} >= GREATEST(10 * $2::float8, $1::float8 * 1048576)
          ORDER BY ic.oid, a.attnum",
        size = super::size_sql("ic.oid"),
        locked = super::locked_sql("ic.oid"),
        fillfactor = fillfactor_sql("ic.reloptions", 90),
        align = ALIGN_BYTES_SQL,
    );
    let rows = ctx.query(&sql, &[&t.bloat_min_mb, &bs]).await?;
    let mut indexes: Vec<Index> = Vec::new();
    for r in &rows {
        let oid: u32 = r.get(0);
        if indexes.last().map(|x| x.oid) != Some(oid) {
            indexes.push(Index {
                oid,
                schema: r.get(1),
                name: r.get(2),
                reltuples: r.get(3),
                relpages: r.get(4),
                bytes: r.get(5),
                fillfactor: r.get(6),
                dedup: dedup_server && r.get::<_, bool>(7),
                columns: Vec::new(),
                unanalyzed_readable: false,
                locked: r.get(16),
            });
        }
        let Some(ix) = indexes.last_mut() else {
            continue;
        };
        let is_key: bool = r.get(8);
        let avg_width: Option<f64> = r.get(12);
        let readable: bool = r.get(14);
        // A key column whose equal values are always bitwise equal (its opclass has an
        // equalimage support function, its collation is deterministic) may be deduplicated.
        let dedup_safe: bool = r.get(15);
        ix.unanalyzed_readable |= avg_width.is_none() && readable;
        if is_key && !dedup_safe {
            ix.dedup = false;
        }
        ix.columns.push(Column {
            len: r.get(9),
            align: r.get(10),
            null_frac: r.get(11),
            avg_width,
            // Only key columns make runs of equal keys.
            n_distinct: if is_key { r.get(13) } else { Some(1.0) },
        });
    }

    let pgstatindex = extension_function(ctx, "pgstatindex").await?;
    let mut out = Outcome::default();
    let mut ranked: Vec<(f64, Finding)> = Vec::new();
    for ix in &indexes {
        let object = shown_qualified(&ix.schema, &ix.name);
        let mb = |b: f64| b / 1_048_576.0;
        let estimate = if ix.reltuples < 0.0 || ix.columns.is_empty() {
            None
        } else {
            tuple_widths(ix).and_then(|(w, _, _)| Some((w, estimated_pages(ix, w, bs)?)))
        };
        let skip = |out: &mut Outcome, reason: String| {
            out.skipped.push(Skipped {
                check: "index_bloat".to_string(),
                database: Some(ctx.database.to_string()),
                object: Some(object.clone()),
                reason: format!("{reason} ({:.1} MB)", mb(ix.bytes as f64)),
            });
        };
        let measured = match (estimate, &pgstatindex) {
            (Some((width, est)), _) => {
                let pages = ix.relpages.max(1) as f64;
                let waste = (pages - est).max(0.0) * bs;
                Measure {
                    share: waste / (pages * bs),
                    waste,
                    size: pages * bs,
                    how: format!(
                        "estimated from the statistics: {:.0} entries of about {width:.0} \
                         bytes{} should fit in about {:.1} MB at fillfactor {}",
                        ix.reltuples,
                        if ix.dedup { ", deduplicated" } else { "" },
                        mb(est * bs),
                        ix.fillfactor
                    ),
                }
            }
            (None, Some(_)) if ix.locked => {
                skip(
                    &mut out,
                    "no column statistics readable by this role, and an ACCESS EXCLUSIVE \
                     lock is held or awaited on it, so pgstatindex would wait: run doctor \
                     again once the lock is gone"
                        .to_string(),
                );
                continue;
            }
            (None, Some(_)) if mb(ix.bytes as f64) > t.index_scan_max_mb => {
                skip(
                    &mut out,
                    format!(
                        "no column statistics readable by this role, and pgstatindex would \
                         read the whole index, larger than index_scan_max_mb ({} MB): raise \
                         it, or run doctor as a role that may SELECT the table",
                        t.index_scan_max_mb
                    ),
                );
                continue;
            }
            (None, Some(func)) => {
                let r = ctx
                    .query_one(
                        &format!(
                            "SELECT index_size::float8, leaf_pages::float8,
                                    empty_pages::float8, deleted_pages::float8,
                                    avg_leaf_density::float8
                               FROM {func}($1::oid::regclass)"
                        ),
                        &[&ix.oid],
                    )
                    .await?;
                let (size, leaves, empty, deleted, density): (f64, f64, f64, f64, f64) =
                    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
                // avg_leaf_density is NaN for an index without leaf pages.
                let density = if density.is_nan() {
                    ix.fillfactor
                } else {
                    density
                };
                let waste =
                    (leaves * (1.0 - density / ix.fillfactor).max(0.0) + empty + deleted) * bs;
                Measure {
                    share: if size > 0.0 { waste / size } else { 0.0 },
                    waste,
                    size,
                    how: format!(
                        "measured by pgstatindex: leaf pages {density:.1} % full (fillfactor \
                         {}), {empty:.0} empty and {deleted:.0} deleted pages",
                        ix.fillfactor
                    ),
                }
            }
            (None, None) => {
                let reason = if ix.reltuples < 0.0 || ix.unanalyzed_readable {
                    "never analyzed: ANALYZE its table, or install pgstattuple (pgstatindex \
                     is granted to pg_stat_scan_tables)"
                } else {
                    "no column statistics readable by this role: install pgstattuple \
                     (pgstatindex is granted to pg_stat_scan_tables)"
                };
                skip(&mut out, reason.to_string());
                continue;
            }
        };
        let Some(severity) = measured.severity(t) else {
            continue;
        };
        let name = qualified(&ix.schema, &ix.name);
        ranked.push((
            measured.waste,
            Finding {
                check: "index_bloat".to_string(),
                severity,
                database: Some(ctx.database.to_string()),
                object: Some(object),
                detail: format!(
                    "{:.1} MB wasted of {:.1} MB ({:.0} %; {}; warning at {:.0} %, critical at \
                     {:.0} %); VACUUM does not return an index's half-empty pages. REINDEX \
                     CONCURRENTLY builds a fresh copy beside it (it needs the copy's disk \
                     space, and takes only a SHARE UPDATE EXCLUSIVE lock: reads and writes go \
                     on); if it fails it leaves an invalid index named …_ccnew to drop",
                    mb(measured.waste),
                    mb(measured.size),
                    measured.share * 100.0,
                    measured.how,
                    t.bloat_warning_share * 100.0,
                    t.bloat_critical_share * 100.0
                ),
                remediation: vec![format!("REINDEX INDEX CONCURRENTLY {name};")],
                perfdata: Some(format!(
                    "{}.{}_bloat_share={:.4};{};{}",
                    ix.schema,
                    ix.name,
                    measured.share,
                    t.bloat_warning_share,
                    t.bloat_critical_share
                )),
            },
        ));
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    out.findings = ranked.into_iter().map(|(_, f)| f).collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(reltuples: f64, dedup: bool, columns: Vec<Column>) -> Index {
        Index {
            oid: 1,
            schema: "public".into(),
            name: "i".into(),
            reltuples,
            relpages: 0,
            bytes: 0,
            fillfactor: 90.0,
            dedup,
            columns,
            unanalyzed_readable: false,
            locked: false,
        }
    }

    fn int8(n_distinct: f64) -> Column {
        Column {
            len: 8,
            align: 8.0,
            null_frac: 0.0,
            avg_width: Some(8.0),
            n_distinct: Some(n_distinct),
        }
    }

    #[test]
    fn a_unique_int8_index_is_16_byte_tuples() {
        let ix = index(1_000_000.0, false, vec![int8(-1.0)]);
        assert_eq!(tuple_widths(&ix), Some((16.0, 16.0, 16.0)));
        // 8152 - 819.2 usable bytes per leaf at fillfactor 90, 20 bytes per entry.
        let pages = estimated_pages(&ix, 16.0, 8192.0).unwrap();
        let leaves = (1_000_000.0_f64 * 20.0 / (8152.0 - 819.2)).ceil();
        assert!(pages > leaves && pages < leaves * 1.01 + 3.0, "{pages}");
    }

    #[test]
    fn only_tuples_holding_a_null_carry_the_bitmap() {
        let mut c = int8(-0.5);
        c.null_frac = 0.5;
        let ix = index(1000.0, false, vec![c]);
        // A value: 8 + 8 bytes. A null: 8 + 4 bytes of bitmap, MAXALIGNed, no data.
        assert_eq!(tuple_widths(&ix), Some((16.0, 16.0, 16.0)));
        let mut a = int8(-1.0);
        a.null_frac = 0.5;
        let ix = index(1000.0, false, vec![a, int8(-1.0)]);
        // Without nulls 8 + 16; with the first column null 16 + 8.
        assert_eq!(tuple_widths(&ix), Some((24.0, 24.0, 24.0)));
    }

    #[test]
    fn deduplication_shrinks_runs_of_equal_keys() {
        let plain = index(1_000_000.0, false, vec![int8(100.0)]);
        let dedup = index(1_000_000.0, true, vec![int8(100.0)]);
        let p = estimated_pages(&plain, 16.0, 8192.0).unwrap();
        let d = estimated_pages(&dedup, 16.0, 8192.0).unwrap();
        // Each heap pointer costs 6 bytes instead of 20.
        assert!(d < p * 0.4 && d > p * 0.25, "{d} vs {p}");
        // Distinct keys: nothing to deduplicate.
        let unique = index(1_000_000.0, true, vec![int8(-1.0)]);
        assert_eq!(estimated_pages(&unique, 16.0, 8192.0).unwrap(), p);
        // Half nulls, the rest distinct: the nulls are one run.
        let mut c = int8(-0.5);
        c.null_frac = 0.5;
        let half = index(1_000_000.0, true, vec![c]);
        let h = estimated_pages(&half, 16.0, 8192.0).unwrap();
        assert!(h > p * 0.6 && h < p * 0.7, "{h} vs {p}");
    }
}
