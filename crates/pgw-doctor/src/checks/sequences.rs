//! Sequence checks: sequences (serial and identity columns too) running out of range.

use pgw_common::sql::{self, qualified, shown_qualified};

use super::{CheckInfo, Ctx, Outcome, Scope};
use crate::model::{Finding, Severity, Skipped};

/// The checks of this module, in the order they run.
pub(super) const CHECKS: &[CheckInfo] = &[CheckInfo {
    id: "sequence_exhaustion",
    scope: Scope::Database,
    summary: "sequences (serial and identity columns too) past a share of their range",
    thresholds: &["sequence_warning_share", "sequence_critical_share"],
}];

/// Runs check `id` if it is one of this module's.
pub(super) async fn run(id: &str, ctx: &Ctx<'_>) -> Option<Result<Outcome, tokio_postgres::Error>> {
    Some(match id {
        "sequence_exhaustion" => sequence_exhaustion(ctx).await,
        _ => return None,
    })
}

/// `sequence_exhaustion`: the share of its range each non-cycling sequence has used, from
/// `pg_sequences`, measured against the sequence's own bounds and, when it feeds a
/// smallint or integer column, that column's type's bounds too, whichever is tighter. The
/// columns it feeds are those it is owned by (serial, identity, `OWNED BY`) and those whose
/// default calls it (a plain `DEFAULT nextval('seq')`, found through the default's
/// dependency on the sequence); of these the narrowest is judged, and widened by the
/// remediation. Descending sequences are measured from the top. Sequences never used are
/// left out; those this role cannot read (`pg_sequences` hides their value without USAGE or
/// SELECT, which `pg_monitor` does not grant) are each listed as skipped, with the grant
/// that lets doctor see them.
pub(super) async fn sequence_exhaustion(ctx: &Ctx<'_>) -> Result<Outcome, tokio_postgres::Error> {
    let t = ctx.thresholds;
    let rows = ctx
        .query(
            "WITH seq AS (
               SELECT s.schemaname::text AS nsp, s.sequencename::text AS name,
                      format_type(s.data_type, NULL) AS seqtype,
                      s.min_value::numeric AS smin, s.max_value::numeric AS smax,
                      s.increment_by, s.last_value::numeric AS last,
                      has_sequence_privilege(c.oid, 'SELECT,USAGE') AS readable,
                      tn.nspname::text AS tnsp, tc.relname::text AS tname, a.attname::text AS col,
                      format_type(a.atttypid, NULL) AS coltype,
                      CASE a.atttypid WHEN 'int2'::regtype THEN 32767::numeric
                                      WHEN 'int4'::regtype THEN 2147483647::numeric END AS cmax,
                      CASE a.atttypid WHEN 'int2'::regtype THEN -32768::numeric
                                      WHEN 'int4'::regtype THEN -2147483648::numeric END AS cmin
                 FROM pg_sequences s
                 JOIN pg_namespace n ON n.nspname = s.schemaname
                 JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.sequencename
                                 AND c.relkind = 'S'
                 LEFT JOIN LATERAL (
                   SELECT u.attrelid, u.attname, u.atttypid
                     FROM (SELECT a.attrelid, a.attname, a.atttypid
                             FROM pg_depend d
                             JOIN pg_attribute a ON a.attrelid = d.refobjid
                                                AND a.attnum = d.refobjsubid
                            WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                              AND d.refclassid = 'pg_class'::regclass
                              AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
                              AND NOT a.attisdropped
                           UNION ALL
                           SELECT a.attrelid, a.attname, a.atttypid
                             FROM pg_depend d
                             JOIN pg_attrdef ad ON ad.oid = d.objid
                             JOIN pg_attribute a ON a.attrelid = ad.adrelid
                                                AND a.attnum = ad.adnum
                            WHERE d.classid = 'pg_attrdef'::regclass
                              AND d.refclassid = 'pg_class'::regclass
                              AND d.refobjid = c.oid AND d.deptype = 'n'
                              AND NOT a.attisdropped) u
                    ORDER BY CASE u.atttypid WHEN 'int2'::regtype THEN 0
                                             WHEN 'int4'::regtype THEN 1 ELSE 2 END,
                             u.attrelid, u.attname
                    LIMIT 1
                 ) a ON true
                 LEFT JOIN pg_class tc ON tc.oid = a.attrelid
                 LEFT JOIN pg_namespace tn ON tn.oid = tc.relnamespace
                WHERE NOT s.cycle
                  AND s.schemaname NOT IN ('pg_catalog', 'information_schema')
                  AND s.schemaname !~ '^pg_(toast|temp_)'
             ), bounded AS (
               SELECT seq.*,
                      LEAST(smax, COALESCE(cmax, smax)) AS emax,
                      GREATEST(smin, COALESCE(cmin, smin)) AS emin
                 FROM seq
             )
             SELECT nsp, name, seqtype, tnsp, tname, col, coltype,
                    last::text, emin::text, emax::text, smax::text, smin::text,
                    increment_by > 0 AS ascending,
                    (CASE WHEN emax = emin THEN 1
                          WHEN increment_by > 0 THEN (last - emin) / (emax - emin)
                          ELSE (emax - last) / (emax - emin) END)::float8 AS used,
                    readable,
                    cmax IS NOT NULL AND (cmax < smax OR cmin > smin) AS column_tighter,
                    CASE WHEN increment_by > 0 THEN smax = 9223372036854775807
                         ELSE smin = -9223372036854775808 END AS at_bigint_limit
               FROM bounded
              WHERE NOT readable
                 OR (last IS NOT NULL
                     AND (CASE WHEN emax = emin THEN 1
                               WHEN increment_by > 0 THEN (last - emin) / (emax - emin)
                               ELSE (emax - last) / (emax - emin) END) >= $1::float8::numeric)
              ORDER BY used DESC NULLS LAST, nsp, name",
            &[&t.sequence_warning_share],
        )
        .await?;
    let mut findings = Vec::new();
    let mut skipped = Vec::new();
    for row in rows {
        let (schema, name): (String, String) = (row.get(0), row.get(1));
        let readable: bool = row.get(14);
        if !readable {
            skipped.push(Skipped {
                check: "sequence_exhaustion".to_string(),
                database: Some(ctx.database.to_string()),
                object: Some(shown_qualified(&schema, &name)),
                reason: format!(
                    "this role cannot read the sequence's value (pg_monitor does not grant it): \
                     GRANT SELECT ON SEQUENCE {} TO <this role>; lets doctor see it",
                    qualified(&schema, &name)
                ),
            });
            continue;
        }
        let seqtype: String = row.get(2);
        let tschema: Option<String> = row.get(3);
        let table: Option<String> = row.get(4);
        let col: Option<String> = row.get(5);
        let coltype: Option<String> = row.get(6);
        let last: String = row.get(7);
        let (emin, emax): (String, String) = (row.get(8), row.get(9));
        let ascending: bool = row.get(12);
        let used: f64 = row.get(13);
        let column_tighter: bool = row.get(15);
        let Some(severity) =
            Severity::grade(used, t.sequence_warning_share, t.sequence_critical_share)
        else {
            continue;
        };
        let object = shown_qualified(&schema, &name);
        let seq = qualified(&schema, &name);
        let limit = if ascending { &emax } else { &emin };
        let no_bound = if ascending {
            "NO MAXVALUE"
        } else {
            "NO MINVALUE"
        };
        let small_col = matches!(coltype.as_deref(), Some("smallint" | "integer"));
        // (the table and column in SQL, then as people read them)
        let owner = match (&tschema, &table, &col) {
            (Some(s), Some(tb), Some(c)) => Some((
                qualified(s, tb),
                sql::ident(c),
                format!("{}.{}", shown_qualified(s, tb), sql::shown(c)),
            )),
            _ => None,
        };
        let at_bigint_limit: bool = row.get(16);
        let (remediation, advice) = match &owner {
            Some((tbl, c, column)) if small_col => (
                vec![
                    format!("ALTER TABLE {tbl} ALTER COLUMN {c} TYPE bigint;"),
                    format!("ALTER SEQUENCE {seq} AS bigint {no_bound};"),
                ],
                format!(
                    "; widening {column} rewrites the table under an ACCESS EXCLUSIVE lock \
                     (plan a window, or migrate to a new bigint column)"
                ),
            ),
            _ if at_bigint_limit && !small_col => (
                vec![format!(
                    "action: the bigint range of {object} is nearly used up: plan a new key \
                     scheme (e.g. uuid) or, if old values are gone, ALTER SEQUENCE {seq} RESTART"
                )],
                String::new(),
            ),
            _ => (
                vec![format!("ALTER SEQUENCE {seq} AS bigint {no_bound};")],
                String::new(),
            ),
        };
        let feeds = match &owner {
            Some((_, _, column)) => {
                format!(" feeding {column} ({})", coltype.as_deref().unwrap_or("?"))
            }
            None => String::new(),
        };
        let bound_of = if column_tighter {
            "the column type's"
        } else {
            "its"
        };
        findings.push(Finding {
            check: "sequence_exhaustion".to_string(),
            severity,
            database: Some(ctx.database.to_string()),
            object: Some(object),
            detail: format!(
                "{seqtype} sequence{feeds} at {last}, {:.1} % of the way to {bound_of} limit \
                 {limit} (warning at {:.0} %, critical at {:.0} %){advice}",
                used * 100.0,
                t.sequence_warning_share * 100.0,
                t.sequence_critical_share * 100.0
            ),
            remediation,
            perfdata: Some(format!(
                "{schema}.{name}_used={used:.4};{};{}",
                t.sequence_warning_share, t.sequence_critical_share
            )),
        });
    }
    Ok(Outcome { findings, skipped })
}
