//! Index checks: invalid indexes, duplicate (and btree-prefix) indexes, foreign keys
//! without a supporting index. Each is one catalog query per database.

use pgw_common::sql::{self, qualified, shown_qualified};

use super::{CheckInfo, Ctx, Outcome, Scope};
use crate::model::{Finding, Severity};

/// The checks of this module, in the order they run.
pub(super) const CHECKS: &[CheckInfo] = &[
    CheckInfo {
        id: "invalid_index",
        scope: Scope::Database,
        summary: "indexes left invalid by a failed CREATE INDEX CONCURRENTLY (warning)",
        thresholds: &[],
    },
    CheckInfo {
        id: "duplicate_index",
        scope: Scope::Database,
        summary: "indexes with the same columns and predicate as another, or a btree prefix of one (warning)",
        thresholds: &[],
    },
    CheckInfo {
        id: "missing_fk_index",
        scope: Scope::Database,
        summary: "foreign keys whose referencing columns lead no index (warning)",
        thresholds: &[],
    },
];

/// Runs check `id` if it is one of this module's.
pub(super) async fn run(id: &str, ctx: &Ctx<'_>) -> Option<Result<Outcome, tokio_postgres::Error>> {
    Some(match id {
        "invalid_index" => invalid_index(ctx).await.map(Outcome::from),
        "duplicate_index" => duplicate_index(ctx).await.map(Outcome::from),
        "missing_fk_index" => missing_fk_index(ctx).await.map(Outcome::from),
        _ => return None,
    })
}

/// `invalid_index`: indexes left with `indisvalid = false` (a failed `CREATE INDEX
/// CONCURRENTLY` or `REINDEX CONCURRENTLY`), skipping any index a running `CREATE INDEX`
/// is still building. The remediation drops it; the definition to re-create it is in the
/// detail (re-creating it blindly would fail again, e.g. a unique index on duplicate data).
pub(super) async fn invalid_index(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let rows = ctx
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text, tn.nspname::text, t.relname::text,
                    pg_get_indexdef(i.indexrelid), pg_size_pretty({size_i_indexrelid}),
                    c.relkind = 'I' AS partitioned
               FROM pg_index i
               JOIN pg_class c ON c.oid = i.indexrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_class t ON t.oid = i.indrelid
               JOIN pg_namespace tn ON tn.oid = t.relnamespace
              WHERE NOT i.indisvalid
                AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname !~ '^pg_(toast|temp_)'
                AND NOT EXISTS (
                      SELECT 1 FROM pg_stat_progress_create_index p
                       WHERE p.index_relid = i.indexrelid
                          OR (p.relid = i.indrelid AND p.index_relid = 0))
              ORDER BY n.nspname, c.relname",
                size_i_indexrelid = super::size_sql("i.indexrelid")
            ),
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let (schema, index): (String, String) = (row.get(0), row.get(1));
            let (tschema, table): (String, String) = (row.get(2), row.get(3));
            let def: String = row.get(4);
            let size: String = row.get(5);
            let partitioned: bool = row.get(6);
            let object = shown_qualified(&schema, &index);
            let name = qualified(&schema, &index);
            // A partitioned index cannot be dropped concurrently.
            let remediation = if partitioned {
                format!("DROP INDEX {name};")
            } else {
                format!("DROP INDEX CONCURRENTLY {name};")
            };
            Finding {
                check: "invalid_index".to_string(),
                severity: Severity::Warning,
                database: Some(ctx.database.to_string()),
                object: Some(object),
                detail: format!(
                    "invalid index on {} ({size}): not used by queries but still maintained on \
                     every write; after dropping it, fix the cause and re-create it with: {def};",
                    shown_qualified(&tschema, &table)
                ),
                remediation: vec![remediation],
                perfdata: None,
            }
        })
        .collect())
}

/// `duplicate_index`: a valid index made redundant by another valid index on the same
/// table with the same access method and predicate, either
/// - an exact duplicate (same key columns or expressions, opclasses, collations, options
///   and INCLUDE columns): the one kept is the constraint-backing one, else the unique one,
///   else the older (smaller OID); or
/// - a btree whose key columns (no expressions, no INCLUDE) are a prefix of the other's
///   with the same opclasses, collations and options.
///
/// Never flags a constraint-backing, replica-identity or partition-child index, nor a
/// unique index as a prefix.
pub(super) async fn duplicate_index(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let rows = ctx
        .query(
            &format!(
                "WITH idx AS (
               SELECT i.indexrelid, i.indrelid, c.relname::text AS name, n.nspname::text AS nsp,
                      c.relkind, c.relam, i.indisunique, i.indisreplident,
                      i.indnkeyatts AS nkey, i.indnatts AS natts,
                      i.indkey::int2[] AS allkeys,
                      (i.indkey::int2[])[0:i.indnkeyatts - 1] AS keys,
                      (i.indclass::oid[])[0:i.indnkeyatts - 1] AS classes,
                      (i.indcollation::oid[])[0:i.indnkeyatts - 1] AS colls,
                      (i.indoption::int2[])[0:i.indnkeyatts - 1] AS opts,
                      pg_get_expr(i.indexprs, i.indrelid) AS exprs,
                      pg_get_expr(i.indpred, i.indrelid) AS pred,
                      EXISTS (SELECT 1 FROM pg_constraint k
                               WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid
                                 AND k.contype IN ('p', 'u', 'x')) AS backs_constraint,
                      EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)
                        AS is_child
                 FROM pg_index i
                 JOIN pg_class c ON c.oid = i.indexrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE i.indisvalid AND i.indisready AND i.indislive
                  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                  AND n.nspname !~ '^pg_(toast|temp_)'
             ), ranked AS (
               SELECT idx.*,
                      CASE WHEN backs_constraint THEN 2 WHEN indisunique THEN 1 ELSE 0 END AS rank
                 FROM idx
             )
             SELECT DISTINCT ON (a.indexrelid)
                    a.nsp, a.name, b.nsp, b.name, t.relname::text, tn.nspname::text,
                    a.allkeys = b.allkeys AND a.nkey = b.nkey AS exact,
                    pg_size_pretty({size_a_indexrelid}), {size_a_indexrelid},
                    a.relkind = 'I' AS partitioned
               FROM ranked a
               JOIN ranked b ON b.indrelid = a.indrelid AND b.indexrelid <> a.indexrelid
                            AND b.relam = a.relam
                            AND b.pred IS NOT DISTINCT FROM a.pred
               JOIN pg_class t ON t.oid = a.indrelid
               JOIN pg_namespace tn ON tn.oid = t.relnamespace
              WHERE NOT a.backs_constraint AND NOT a.indisreplident AND NOT a.is_child
                AND (
                  (a.allkeys = b.allkeys AND a.nkey = b.nkey
                   AND a.classes = b.classes AND a.colls = b.colls AND a.opts = b.opts
                   AND a.exprs IS NOT DISTINCT FROM b.exprs
                   AND (a.rank < b.rank OR (a.rank = b.rank AND a.indexrelid > b.indexrelid)))
                  OR
                  (a.relam = (SELECT oid FROM pg_am WHERE amname = 'btree')
                   AND NOT a.indisunique
                   AND a.exprs IS NULL AND b.exprs IS NULL
                   AND a.natts = a.nkey
                   AND (a.nkey < b.nkey OR (a.nkey = b.nkey AND b.natts > b.nkey))
                   AND a.keys = b.keys[1:a.nkey]
                   AND a.classes = b.classes[1:a.nkey]
                   AND a.colls = b.colls[1:a.nkey]
                   AND a.opts = b.opts[1:a.nkey]))
              ORDER BY a.indexrelid, (a.allkeys = b.allkeys AND a.nkey = b.nkey) DESC,
                       b.rank DESC, b.nkey, b.indexrelid",
                size_a_indexrelid = super::size_sql("a.indexrelid")
            ),
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let (schema, index): (String, String) = (row.get(0), row.get(1));
            let (kschema, kept): (String, String) = (row.get(2), row.get(3));
            let (table, tschema): (String, String) = (row.get(4), row.get(5));
            let exact: bool = row.get(6);
            let size: String = row.get(7);
            let bytes: i64 = row.get(8);
            let partitioned: bool = row.get(9);
            let object = shown_qualified(&schema, &index);
            let name = qualified(&schema, &index);
            let how = if exact {
                "is a duplicate of"
            } else {
                "is covered by (its columns lead)"
            };
            let remediation = if partitioned {
                format!("DROP INDEX {name};")
            } else {
                format!("DROP INDEX CONCURRENTLY {name};")
            };
            Finding {
                check: "duplicate_index".to_string(),
                severity: Severity::Warning,
                database: Some(ctx.database.to_string()),
                object: Some(object),
                detail: format!(
                    "index on {} {how} {} (same method and predicate); {size} that every \
                     write maintains for nothing",
                    shown_qualified(&tschema, &table),
                    shown_qualified(&kschema, &kept)
                ),
                remediation: vec![remediation],
                perfdata: Some(format!("{schema}.{index}_bytes={bytes}B")),
            }
        })
        .collect())
}

/// `missing_fk_index`: foreign keys whose referencing columns are not, in any order, the
/// leading key columns of a valid, non-partial btree index (or a hash index for a
/// single column) on the referencing table. Deletes and key updates on the referenced
/// table then scan the referencing table. Partition clones of a foreign key are skipped:
/// the finding is on the partitioned table.
pub(super) async fn missing_fk_index(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let rows = ctx
        .query(
            "SELECT n.nspname::text, t.relname::text, k.conname::text,
                    ARRAY(SELECT a.attname::text
                            FROM unnest(k.conkey) WITH ORDINALITY AS u(attnum, ord)
                            JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum
                           ORDER BY u.ord) AS cols,
                    rn.nspname::text, r.relname::text, t.relkind = 'p' AS partitioned,
                    t.reltuples::float8
               FROM pg_constraint k
               JOIN pg_class t ON t.oid = k.conrelid
               JOIN pg_namespace n ON n.oid = t.relnamespace
               JOIN pg_class r ON r.oid = k.confrelid
               JOIN pg_namespace rn ON rn.oid = r.relnamespace
              WHERE k.contype = 'f' AND k.conparentid = 0
                AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname !~ '^pg_(toast|temp_)'
                AND NOT EXISTS (
                      SELECT 1
                        FROM pg_index i
                        JOIN pg_class ic ON ic.oid = i.indexrelid
                        JOIN pg_am am ON am.oid = ic.relam
                       WHERE i.indrelid = k.conrelid
                         AND i.indisvalid AND i.indpred IS NULL
                         AND (am.amname = 'btree' OR (am.amname = 'hash' AND cardinality(k.conkey) = 1))
                         AND i.indnkeyatts >= cardinality(k.conkey)
                         AND (i.indkey::int2[])[0:cardinality(k.conkey) - 1] @> k.conkey
                         AND (i.indkey::int2[])[0:cardinality(k.conkey) - 1] <@ k.conkey)
              ORDER BY n.nspname, t.relname, k.conname",
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let (schema, table): (String, String) = (row.get(0), row.get(1));
            let conname: String = row.get(2);
            let cols: Vec<String> = row.get(3);
            let (rschema, rtable): (String, String) = (row.get(4), row.get(5));
            let partitioned: bool = row.get(6);
            let reltuples: f64 = row.get(7);
            let object = shown_qualified(&schema, &table);
            let name = qualified(&schema, &table);
            let shown_cols = cols
                .iter()
                .map(|c| sql::shown(c))
                .collect::<Vec<_>>()
                .join(", ");
            let collist = cols
                .iter()
                .map(|c| sql::ident(c))
                .collect::<Vec<_>>()
                .join(", ");
            // CREATE INDEX CONCURRENTLY does not work on a partitioned table.
            let create = if partitioned {
                "CREATE INDEX ON"
            } else {
                "CREATE INDEX CONCURRENTLY ON"
            };
            let rows_est = if reltuples >= 0.0 {
                format!("~{reltuples:.0} rows")
            } else {
                "never analyzed".to_string()
            };
            Finding {
                check: "missing_fk_index".to_string(),
                severity: Severity::Warning,
                database: Some(ctx.database.to_string()),
                object: Some(object.clone()),
                detail: format!(
                    "foreign key {} ({shown_cols}) references {} but no index leads with its \
                     columns: deletes and key updates there scan this table ({rows_est})",
                    sql::shown(&conname),
                    shown_qualified(&rschema, &rtable)
                ),
                remediation: vec![format!("{create} {name} ({collist});")],
                perfdata: None,
            }
        })
        .collect())
}
