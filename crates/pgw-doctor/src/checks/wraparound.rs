//! Transaction-ID wraparound: xid_wraparound. One query per database: the age of the
//! database's `datfrozenxid` and the oldest user tables (a table's TOAST table counted
//! with it), against the 2^31 wraparound limit and `autovacuum_freeze_max_age`.

use pgw_common::sql::{self, qualified, shown_qualified};

use super::{CheckInfo, Ctx, Outcome, Scope};
use crate::model::{Finding, Severity};

/// Transaction IDs a database can age before the server refuses new ones (2^31 - 1).
const WRAPAROUND_LIMIT: i64 = 2_147_483_647;

/// How many of the oldest tables the query looks at per database.
const OLDEST_TABLES: i64 = 5;

/// The checks of this module, in the order they run.
pub(super) const CHECKS: &[CheckInfo] = &[
    CheckInfo {
        id: "xid_wraparound",
        scope: Scope::Database,
        summary: "age of the database's datfrozenxid and of its oldest tables against the 2^31 \
                  wraparound limit (warning/critical at a share of it; info past \
                  autovacuum_freeze_max_age)",
        thresholds: &["xid_warning_share", "xid_critical_share"],
    },
    CheckInfo {
        id: "xid_age",
        scope: Scope::Cluster,
        summary: "age(datfrozenxid) and mxid_age(datminmxid) of every database, templates and \
                  databases that refuse connections included, against the 2^31 wraparound \
                  limit (warning/critical at a share of it)",
        thresholds: &["xid_warning_share", "xid_critical_share"],
    },
];

/// Runs check `id` if it is one of this module's.
pub(super) async fn run(id: &str, ctx: &Ctx<'_>) -> Option<Result<Outcome, tokio_postgres::Error>> {
    Some(match id {
        "xid_wraparound" => xid_wraparound(ctx).await.map(Outcome::from),
        "xid_age" => xid_age(ctx).await.map(Outcome::from),
        _ => return None,
    })
}

/// The severity of an age: critical from `xid_critical_share` of the limit, warning from
/// `xid_warning_share`.
fn severity(ctx: &Ctx<'_>, age: i64) -> Option<Severity> {
    let t = ctx.thresholds;
    Severity::grade(
        age as f64 / WRAPAROUND_LIMIT as f64,
        t.xid_warning_share,
        t.xid_critical_share,
    )
}

/// `xid_wraparound`, for the connected database only:
/// - the database: `age(datfrozenxid)` (which counts every table, system catalogs
///   included) at `xid_warning_share` / `xid_critical_share` of 2^31 is a warning /
///   critical; the remediation freezes the whole database (`VACUUM (FREEZE);`, or
///   `vacuumdb --freeze --all` for every database);
/// - the [`OLDEST_TABLES`] oldest tables and materialized views of user schemas (age the
///   greater of the table's and its TOAST table's): warning / critical at the same shares,
///   else info once past their `autovacuum_freeze_max_age` (the table's own setting if
///   lower), when an anti-wraparound autovacuum should be running on them. The remediation
///   is `VACUUM (FREEZE, VERBOSE)` of the table.
///
/// Other sessions' temporary tables are not looked at (only their session can vacuum them).
pub(super) async fn xid_wraparound(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let rows = ctx
        .query(
            "WITH lim AS (
               SELECT current_setting('autovacuum_freeze_max_age')::int8 AS fma
             ), db AS (
               SELECT age(datfrozenxid)::int8 AS age
                 FROM pg_database WHERE datname = current_database()
             ), rel AS (
               SELECT n.nspname::text AS nsp, c.relname::text AS rel,
                      GREATEST(age(c.relfrozenxid), COALESCE(age(t.relfrozenxid), 0))::int8 AS age,
                      COALESCE(age(t.relfrozenxid) > age(c.relfrozenxid), false) AS toast_older,
                      LEAST((SELECT fma FROM lim),
                            (SELECT o.option_value::int8
                               FROM pg_options_to_table(c.reloptions) o
                              WHERE o.option_name = 'autovacuum_freeze_max_age')) AS fma
                 FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
                WHERE c.relkind IN ('r', 'm')
                  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                  AND n.nspname !~ '^pg_(toast|temp_)'
                ORDER BY 3 DESC, 1, 2
                LIMIT $1
             )
             SELECT db.age, lim.fma, rel.nsp, rel.rel, rel.age, rel.toast_older, rel.fma
               FROM db CROSS JOIN lim LEFT JOIN rel ON true
              ORDER BY rel.age DESC NULLS LAST, rel.nsp, rel.rel",
            &[&OLDEST_TABLES],
        )
        .await?;
    let mut findings = Vec::new();
    let Some(first) = rows.first() else {
        return Ok(findings);
    };
    let db_age: i64 = first.get(0);
    let fma: i64 = first.get(1);
    let t = ctx.thresholds;
    let warn = (t.xid_warning_share * WRAPAROUND_LIMIT as f64).round() as i64;
    let crit = (t.xid_critical_share * WRAPAROUND_LIMIT as f64).round() as i64;
    let pct = |age: i64| age as f64 * 100.0 / WRAPAROUND_LIMIT as f64;

    if let Some(severity) = severity(ctx, db_age) {
        let oldest: Vec<String> = rows
            .iter()
            .filter_map(|r| {
                let nsp: Option<String> = r.get(2);
                let rel: Option<String> = r.get(3);
                let age: Option<i64> = r.get(4);
                Some(format!("{} ({})", shown_qualified(&nsp?, &rel?), age?))
            })
            .collect();
        let oldest = if oldest.is_empty() {
            String::new()
        } else {
            format!("; oldest user tables: {}", oldest.join(", "))
        };
        findings.push(Finding {
            check: "xid_wraparound".to_string(),
            severity,
            database: Some(ctx.database.to_string()),
            object: Some(sql::shown(ctx.database)),
            detail: format!(
                "database age(datfrozenxid) is {db_age} transactions ({:.2} % of the \
                 {WRAPAROUND_LIMIT} wraparound limit, {} remaining; autovacuum_freeze_max_age \
                 is {fma}){oldest}; system catalogs count too. Freeze the database (or run \
                 vacuumdb --freeze --all); if it does not advance, look for old transactions, \
                 prepared transactions or replication slots holding back xmin",
                pct(db_age),
                WRAPAROUND_LIMIT - db_age
            ),
            remediation: vec!["VACUUM (FREEZE);".to_string()],
            perfdata: Some(format!("{}_xid_age={db_age};{warn};{crit}", ctx.database)),
        });
    }

    for row in &rows {
        let (Some(nsp), Some(rel), Some(age)) = (
            row.get::<_, Option<String>>(2),
            row.get::<_, Option<String>>(3),
            row.get::<_, Option<i64>>(4),
        ) else {
            continue;
        };
        let toast_older: Option<bool> = row.get(5);
        let table_fma: Option<i64> = row.get(6);
        let table_fma = table_fma.unwrap_or(fma);
        let severity = match severity(ctx, age) {
            Some(s) => s,
            None if age > table_fma => Severity::Info,
            None => continue,
        };
        let object = shown_qualified(&nsp, &rel);
        let name = qualified(&nsp, &rel);
        let toast = if toast_older == Some(true) {
            " (its TOAST table is the older part)"
        } else {
            ""
        };
        let autovacuum = if age > table_fma {
            "past it, an anti-wraparound autovacuum should be running on it"
        } else {
            "not yet reached"
        };
        findings.push(Finding {
            check: "xid_wraparound".to_string(),
            severity,
            database: Some(ctx.database.to_string()),
            object: Some(object.clone()),
            detail: format!(
                "table age(relfrozenxid) is {age} transactions{toast} ({:.2} % of the \
                 {WRAPAROUND_LIMIT} wraparound limit, {} remaining); autovacuum_freeze_max_age \
                 {table_fma} {autovacuum}",
                pct(age),
                WRAPAROUND_LIMIT - age
            ),
            remediation: vec![format!("VACUUM (FREEZE, VERBOSE) {name};")],
            perfdata: Some(format!("{nsp}.{rel}_xid_age={age};{warn};{crit}")),
        });
    }
    Ok(findings)
}

/// `xid_age`, cluster-wide, from `pg_database` alone (readable by every role, so it needs no
/// connection to the databases judged): for every database, `template0` (which refuses
/// connections) and `template1` included, the greater share of the 2^31 limit of
/// `age(datfrozenxid)` and `mxid_age(datminmxid)` (multixact IDs wrap around at 2^31 too),
/// graded at `xid_warning_share` / `xid_critical_share`. One finding per database.
///
/// The remediation freezes the database: `VACUUM (FREEZE);` run in it. A database that
/// refuses connections (`datallowconn` false, as `template0`) is opened for the vacuum and
/// closed again: `ALTER DATABASE .. ALLOW_CONNECTIONS true;`, an action to connect to it,
/// `VACUUM (FREEZE);`, an action to go back, `ALTER DATABASE .. ALLOW_CONNECTIONS false;`.
pub(super) async fn xid_age(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let rows = ctx
        .query(
            "SELECT datname::text, age(datfrozenxid)::int8, mxid_age(datminmxid)::int8,
                    datallowconn, datistemplate
               FROM pg_database
              ORDER BY 2 DESC, 1",
            &[],
        )
        .await?;
    let t = ctx.thresholds;
    let warn = (t.xid_warning_share * WRAPAROUND_LIMIT as f64).round() as i64;
    let crit = (t.xid_critical_share * WRAPAROUND_LIMIT as f64).round() as i64;
    let pct = |age: i64| age as f64 * 100.0 / WRAPAROUND_LIMIT as f64;
    let mut findings = Vec::new();
    for row in &rows {
        let name: String = row.get(0);
        let xid: i64 = row.get(1);
        let mxid: i64 = row.get(2);
        let allow_conn: bool = row.get(3);
        let template: bool = row.get(4);
        let Some(severity) = severity(ctx, xid.max(mxid)) else {
            continue;
        };
        let shown = sql::shown(&name);
        let quoted = sql::ident(&name);
        let remediation = if allow_conn {
            vec!["VACUUM (FREEZE);".to_string()]
        } else {
            vec![
                format!("ALTER DATABASE {quoted} ALLOW_CONNECTIONS true;"),
                format!(
                    "action: connect to database {shown} (e.g. psql -d {shown}) and run the \
                     next statement there"
                ),
                "VACUUM (FREEZE);".to_string(),
                "action: connect back to another database (e.g. postgres) and run the next \
                 statement there"
                    .to_string(),
                format!("ALTER DATABASE {quoted} ALLOW_CONNECTIONS false;"),
            ]
        };
        let kind = match (template, allow_conn) {
            (true, false) => {
                "template database that refuses connections (autovacuum \
                              still freezes it, unless it is blocked); "
            }
            (false, false) => "database that refuses connections; ",
            (true, true) => "template database; ",
            (false, true) => "",
        };
        findings.push(Finding {
            check: "xid_age".to_string(),
            severity,
            database: Some(name.clone()),
            object: Some(shown.clone()),
            detail: format!(
                "{kind}age(datfrozenxid) is {xid} transactions ({:.2} % of the \
                 {WRAPAROUND_LIMIT} wraparound limit, {} remaining), mxid_age(datminmxid) is \
                 {mxid} multixacts ({:.2} %); freeze the database; if its age does not \
                 advance, look for old transactions, prepared transactions or replication \
                 slots holding back xmin",
                pct(xid),
                WRAPAROUND_LIMIT - xid,
                pct(mxid),
            ),
            remediation,
            perfdata: Some(format!("{name}_xid_age={xid};{warn};{crit}")),
        });
    }
    Ok(findings)
}
