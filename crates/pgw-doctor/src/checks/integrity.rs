//! Integrity checks from the catalogs: constraints added `NOT VALID` and never validated,
//! and triggers disabled on user tables. Both read only `pg_constraint`, `pg_trigger` and
//! `pg_class`, which every role (pg_monitor included) can read.

use pgw_common::sql::{self, qualified, shown_qualified};

use super::{CheckInfo, Ctx, Outcome, Scope};
use crate::model::{Finding, Severity};

/// The checks of this module, in the order they run.
pub(super) const CHECKS: &[CheckInfo] = &[
    CheckInfo {
        id: "not_valid_constraints",
        scope: Scope::Database,
        summary: "foreign key and check constraints added NOT VALID and never validated (warning)",
        thresholds: &[],
    },
    CheckInfo {
        id: "disabled_triggers",
        scope: Scope::Database,
        summary: "user triggers disabled on user tables (warning)",
        thresholds: &[],
    },
];

/// Runs check `id` if it is one of this module's.
pub(super) async fn run(id: &str, ctx: &Ctx<'_>) -> Option<Result<Outcome, tokio_postgres::Error>> {
    Some(match id {
        "not_valid_constraints" => not_valid_constraints(ctx).await.map(Outcome::from),
        "disabled_triggers" => disabled_triggers(ctx).await.map(Outcome::from),
        _ => return None,
    })
}

/// Schemas no user object lives in.
const USER_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema')
                  AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'";

/// `not_valid_constraints`: foreign keys and check constraints with `convalidated` false.
/// New rows are checked, old ones never were: the planner cannot rely on the constraint,
/// and rows already there may break it. `VALIDATE CONSTRAINT` scans the table under a
/// SHARE UPDATE EXCLUSIVE lock (writes go on); it fails if a row breaks the constraint.
/// A constraint inherited from a partitioned parent is reported once, on the parent.
pub(super) async fn not_valid_constraints(
    ctx: &Ctx<'_>,
) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT n.nspname::text AS nsp, c.relname::text AS rel, con.conname::text AS con,
                con.contype::text AS kind, pg_get_constraintdef(con.oid) AS def
           FROM pg_constraint con
           JOIN pg_class c ON c.oid = con.conrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE NOT con.convalidated AND con.contype IN ('f', 'c')
            AND con.conparentid = 0
            AND {USER_SCHEMAS}
          ORDER BY nsp, rel, con"
    );
    let rows = ctx.query(&sql, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (schema, table, con): (String, String, String) =
                (r.get("nsp"), r.get("rel"), r.get("con"));
            let kind: String = r.get("kind");
            let def: String = r.get("def");
            let what = if kind == "f" { "foreign key" } else { "check" };
            let shown_table = shown_qualified(&schema, &table);
            Finding {
                check: "not_valid_constraints".to_string(),
                severity: Severity::Warning,
                database: Some(ctx.database.to_string()),
                object: Some(format!("{shown_table}.{}", sql::shown(&con))),
                detail: format!(
                    "{what} constraint {} on {shown_table} ({def}) was never validated: rows \
                     written before it may break it, and the planner cannot rely on it; \
                     VALIDATE scans the table under a SHARE UPDATE EXCLUSIVE lock and fails \
                     on the first row that breaks it (fix or delete those rows first)",
                    sql::shown(&con),
                ),
                remediation: vec![format!(
                    "ALTER TABLE {} VALIDATE CONSTRAINT {};",
                    qualified(&schema, &table),
                    sql::ident(&con)
                )],
                perfdata: None,
            }
        })
        .collect())
}

/// `disabled_triggers`: triggers with `tgenabled = 'D'` on user tables, leaving out
/// internal triggers (those behind foreign keys and deferrable constraints). `ENABLE
/// TRIGGER` alone is the remediation; triggers set to fire only on a replica or always
/// (`ENABLE REPLICA` / `ENABLE ALWAYS`) are not disabled and not reported.
pub(super) async fn disabled_triggers(
    ctx: &Ctx<'_>,
) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT n.nspname::text AS nsp, c.relname::text AS rel, t.tgname::text AS tg,
                pg_get_triggerdef(t.oid) AS def
           FROM pg_trigger t
           JOIN pg_class c ON c.oid = t.tgrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE t.tgenabled = 'D' AND NOT t.tgisinternal
            AND t.tgparentid = 0
            AND {USER_SCHEMAS}
          ORDER BY nsp, rel, tg"
    );
    let rows = ctx.query(&sql, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (schema, table, tg): (String, String, String) =
                (r.get("nsp"), r.get("rel"), r.get("tg"));
            let def: String = r.get("def");
            let shown_table = shown_qualified(&schema, &table);
            Finding {
                check: "disabled_triggers".to_string(),
                severity: Severity::Warning,
                database: Some(ctx.database.to_string()),
                object: Some(format!("{shown_table}.{}", sql::shown(&tg))),
                detail: format!(
                    "trigger {} on {shown_table} is disabled ({def}): whatever it enforces or \
                     maintains has not happened for the rows written since; re-enable it, and \
                     repair what it would have done for those rows",
                    sql::shown(&tg),
                ),
                remediation: vec![format!(
                    "ALTER TABLE {} ENABLE TRIGGER {};",
                    qualified(&schema, &table),
                    sql::ident(&tg)
                )],
                perfdata: None,
            }
        })
        .collect())
}
