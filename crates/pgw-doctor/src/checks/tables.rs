//! Table checks: dead tuples.

use pgw_common::output::quote_ident;

use super::{CheckInfo, Ctx, Scope};
use crate::model::{Finding, Severity};

/// The checks of this module, in the order they run.
pub(super) const CHECKS: &[CheckInfo] = &[CheckInfo {
    id: "dead_tuples",
    scope: Scope::Database,
    summary: "tables whose dead rows exceed a share of their live rows (VACUUM)",
    thresholds: &[
        "dead_tuples_warning_share",
        "dead_tuples_critical_share",
        "dead_tuples_min_rows",
    ],
}];

/// Runs check `id` if it is one of this module's.
pub(super) async fn run(
    id: &str,
    ctx: &Ctx<'_>,
) -> Option<Result<Vec<Finding>, tokio_postgres::Error>> {
    Some(match id {
        "dead_tuples" => dead_tuples(ctx).await,
        _ => return None,
    })
}

/// `dead_tuples`: tables of at least `dead_tuples_min_rows` (live + dead) whose dead rows
/// reach a share of their live rows (a table with no live rows and some dead ones counts as
/// an infinite share). One query over `pg_stat_user_tables`.
pub(super) async fn dead_tuples(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let t = ctx.thresholds;
    let rows = ctx
        .client
        .query(
            "SELECT schemaname::text, relname::text, n_live_tup, n_dead_tup,
                    last_vacuum IS NOT NULL OR last_autovacuum IS NOT NULL AS vacuumed
               FROM pg_stat_user_tables
              WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
                AND schemaname !~ '^pg_(toast|temp_)'
                AND n_dead_tup > 0
                AND n_live_tup + n_dead_tup >= $1::int8
                AND (n_live_tup = 0 OR n_dead_tup::float8 / n_live_tup >= $2::float8)
              ORDER BY n_dead_tup DESC, schemaname, relname",
            &[&t.dead_tuples_min_rows, &t.dead_tuples_warning_share],
        )
        .await?;
    let mut findings = Vec::with_capacity(rows.len());
    for row in rows {
        let schema: String = row.get(0);
        let table: String = row.get(1);
        let live: i64 = row.get(2);
        let dead: i64 = row.get(3);
        let vacuumed: bool = row.get(4);
        let ratio = if live > 0 {
            dead as f64 / live as f64
        } else {
            f64::INFINITY
        };
        let severity = if ratio >= t.dead_tuples_critical_share {
            Severity::Critical
        } else if ratio >= t.dead_tuples_warning_share {
            Severity::Warning
        } else {
            continue;
        };
        let object = format!("{}.{}", quote_ident(&schema), quote_ident(&table));
        let share = if live > 0 {
            format!("{:.0} % of live rows", ratio * 100.0)
        } else {
            "no live rows".to_string()
        };
        let detail = format!(
            "{dead} dead rows vs {live} live ({share}; warning at {:.0} %, critical at {:.0} %){}",
            t.dead_tuples_warning_share * 100.0,
            t.dead_tuples_critical_share * 100.0,
            if vacuumed { "" } else { "; never vacuumed" }
        );
        // Nagios perfdata wants a number: with no live rows, count them as one.
        let perf_ratio = dead as f64 / live.max(1) as f64;
        findings.push(Finding {
            check: "dead_tuples".to_string(),
            severity,
            database: Some(ctx.database.to_string()),
            object: Some(object.clone()),
            detail,
            remediation: format!("VACUUM (ANALYZE) {object};"),
            perfdata: Some(format!(
                "{schema}.{table}_dead_ratio={perf_ratio:.4};{};{}",
                t.dead_tuples_warning_share, t.dead_tuples_critical_share
            )),
        });
    }
    Ok(findings)
}
