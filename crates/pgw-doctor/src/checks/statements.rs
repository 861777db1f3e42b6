//! Statement statistics from pg_stat_statements: slow_queries. pg_stat_statements counts
//! for the whole server, so the check runs once, in the database doctor connects to; the
//! extension must be installed there (and its library preloaded) for the view to exist.

use pgw_common::sql;

use super::{CheckInfo, Ctx, Outcome, Scope};
use crate::model::{Finding, Severity};

/// The library (and extension) name.
const PGSS: &str = "pg_stat_statements";

/// At most this many slow statements are reported, by total time.
const MAX_SLOW: i64 = 50;

/// A statement that touches fewer blocks (shared, local and temporary, hit, read or
/// written) per millisecond of its mean execution time spends its time waiting — on a lock,
/// in `pg_sleep`, on the client — or computing in functions, not reading data: no index or
/// plan change helps it, so it gets no EXPLAIN advice. A sequential scan or a join touches
/// tens to thousands of blocks per ms; a statement blocked on a lock a handful in all.
const WAIT_MAX_BLOCKS_PER_MS: f64 = 1.0;

/// Query text in a finding is cut to this many characters.
const QUERY_CHARS: usize = 120;

/// The checks of this module, in the order they run.
pub(super) const CHECKS: &[CheckInfo] = &[CheckInfo {
    id: "slow_queries",
    scope: Scope::Cluster,
    summary: "pg_stat_statements: statements whose mean time exceeds slow_query_ms with \
              slow_query_min_calls calls (warning), the top_statements by total time (info); \
              statements that touch few blocks for their time get lock-wait advice, and those \
              in pg_sleep are info; info with how to enable it when missing",
    thresholds: &["slow_query_ms", "slow_query_min_calls", "top_statements"],
}];

/// Runs check `id` if it is one of this module's.
pub(super) async fn run(id: &str, ctx: &Ctx<'_>) -> Option<Result<Outcome, tokio_postgres::Error>> {
    Some(match id {
        "slow_queries" => slow_queries(ctx).await.map(Outcome::from),
        _ => return None,
    })
}

/// The entries of a list setting as the server shows it (`a, "b c"`), unquoted.
fn parse_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(std::mem::take(&mut cur));
            }
            c if !quoted && c.is_whitespace() => {}
            c => cur.push(c),
        }
    }
    items.push(cur);
    items.into_iter().filter(|s| !s.is_empty()).collect()
}

/// Whether a `shared_preload_libraries` entry names pg_stat_statements
/// (`pg_stat_statements`, `$libdir/pg_stat_statements`, `pg_stat_statements.so`).
fn is_pgss(entry: &str) -> bool {
    let base = entry.rsplit('/').next().unwrap_or(entry);
    base.strip_suffix(".so").unwrap_or(base) == PGSS
}

/// `ALTER SYSTEM` that adds pg_stat_statements to `current` (the running
/// `shared_preload_libraries`), keeping every library already there: each entry is its own
/// literal, since the setting quotes a list element that contains a comma.
fn preload_sql(current: &[String]) -> String {
    let values: Vec<String> = current
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(PGSS))
        .map(sql::literal)
        .collect();
    format!(
        "ALTER SYSTEM SET \"shared_preload_libraries\" = {};",
        values.join(", ")
    )
}

/// Query text on one line (whitespace runs collapsed), cut to [`QUERY_CHARS`]. Utility
/// statements are not normalized by pg_stat_statements, so text from the word `PASSWORD` on
/// (`CREATE ROLE ... PASSWORD '...'`) is cut.
fn one_line(query: &str) -> String {
    let mut flat = query.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(at) = flat.to_ascii_lowercase().find("password") {
        flat.truncate(at + "password".len());
        flat.push_str(" <cut>");
    }
    if flat.chars().count() > QUERY_CHARS {
        let cut: String = flat.chars().take(QUERY_CHARS).collect();
        format!("{cut}...")
    } else {
        flat
    }
}

/// `slow_queries`:
/// - library not in `shared_preload_libraries`: one info finding whose remediation adds
///   it (keeping the other libraries); the detail says to restart and create the extension;
/// - library loaded but the extension not created in the connected database: one info
///   finding, `CREATE EXTENSION pg_stat_statements;`;
/// - otherwise statements with `mean_exec_time > slow_query_ms` and
///   `calls >= slow_query_min_calls` are warnings (at most [`MAX_SLOW`], by total time), and
///   the other statements among the `top_statements` by total time are info. Their
///   remediation is an action: which index or rewrite helps depends on the plan;
/// - but a statement that touches fewer than [`WAIT_MAX_BLOCKS_PER_MS`] blocks per ms of its
///   mean time is not slow at reading data: with `pg_sleep` in its text it is info (it
///   sleeps by design), otherwise its advice is to find and shorten what blocks it (the
///   detail counts the sessions of it waiting on a lock right now), never EXPLAIN or an
///   index.
///
/// Two round trips: where the extension lives, then the statistics.
pub(super) async fn slow_queries(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let probe = ctx
        .query_one(
            "SELECT current_setting('shared_preload_libraries'),
                    (SELECT n.nspname::text FROM pg_extension e
                       JOIN pg_namespace n ON n.oid = e.extnamespace
                      WHERE e.extname = 'pg_stat_statements')",
            &[],
        )
        .await?;
    let preload: String = probe.get(0);
    let schema: Option<String> = probe.get(1);
    let libs = parse_list(&preload);
    if !libs.iter().any(|l| is_pgss(l)) {
        return Ok(vec![Finding {
            check: "slow_queries".to_string(),
            severity: Severity::Info,
            database: None,
            object: Some("shared_preload_libraries".to_string()),
            detail: format!(
                "pg_stat_statements is not loaded (shared_preload_libraries = '{preload}'), so \
                 slow statements cannot be found: add it, restart the server, then run \
                 CREATE EXTENSION pg_stat_statements; in database {}",
                sql::shown(ctx.database)
            ),
            remediation: vec![preload_sql(&libs)],
            perfdata: None,
        }]);
    }
    let Some(schema) = schema else {
        return Ok(vec![Finding {
            check: "slow_queries".to_string(),
            severity: Severity::Info,
            database: Some(ctx.database.to_string()),
            object: Some(PGSS.to_string()),
            detail: format!(
                "pg_stat_statements is loaded but the extension is not created in database {}, \
                 where doctor reads it",
                sql::shown(ctx.database)
            ),
            remediation: vec!["CREATE EXTENSION pg_stat_statements;".to_string()],
            perfdata: None,
        }]);
    };

    let t = ctx.thresholds;
    let sql = format!(
        "WITH s AS (
           SELECT queryid, query, calls, mean_exec_time, total_exec_time, dbid, userid,
                  (shared_blks_hit + shared_blks_read + shared_blks_dirtied
                     + shared_blks_written + local_blks_hit + local_blks_read
                     + local_blks_dirtied + local_blks_written + temp_blks_read
                     + temp_blks_written)::float8 / GREATEST(calls, 1) AS blocks,
                  mean_exec_time > $1 AND calls >= $2 AS slow,
                  row_number() OVER (ORDER BY total_exec_time DESC) AS rank
             FROM {}.pg_stat_statements
         )
         SELECT s.queryid, s.query, s.calls, s.mean_exec_time, s.total_exec_time,
                d.datname::text, r.rolname::text, s.slow, s.rank, s.blocks,
                (SELECT count(*) FROM pg_stat_activity a
                  WHERE a.query_id = s.queryid AND a.wait_event_type = 'Lock') AS lock_waiting
           FROM s
           LEFT JOIN pg_database d ON d.oid = s.dbid
           LEFT JOIN pg_roles r ON r.oid = s.userid
          WHERE s.slow OR s.rank <= $3
          ORDER BY s.slow DESC, s.total_exec_time DESC
          LIMIT $4",
        sql::ident(&schema)
    );
    let limit = MAX_SLOW + t.top_statements.max(0);
    let rows = ctx
        .query(
            &sql,
            &[
                &t.slow_query_ms,
                &t.slow_query_min_calls,
                &t.top_statements,
                &limit,
            ],
        )
        .await?;
    let mut findings = Vec::new();
    let mut slow_count = 0;
    for row in rows {
        let queryid: Option<i64> = row.get(0);
        let query: Option<String> = row.get(1);
        let calls: i64 = row.get(2);
        let mean: f64 = row.get(3);
        let total: f64 = row.get(4);
        let datname: Option<String> = row.get(5);
        let rolname: Option<String> = row.get(6);
        let slow: bool = row.get(7);
        let rank: i64 = row.get(8);
        let blocks: f64 = row.get(9);
        let lock_waiting: i64 = row.get(10);
        if slow {
            if slow_count >= MAX_SLOW {
                continue;
            }
            slow_count += 1;
        }
        let object = match queryid {
            Some(id) => format!("queryid {id}"),
            None => "queryid unknown".to_string(),
        };
        let text = one_line(query.as_deref().unwrap_or("<query text not available>"));
        let who = format!(
            "in {} as {}",
            datname.as_deref().map_or("?".to_string(), sql::shown),
            rolname.as_deref().map_or("?".to_string(), sql::shown)
        );
        let waits = mean > 0.0 && blocks / mean < WAIT_MAX_BLOCKS_PER_MS;
        let sleeps = waits && text.to_ascii_lowercase().contains("pg_sleep");
        let what = if slow {
            format!("mean {mean:.1} ms > {} ms", t.slow_query_ms)
        } else {
            format!("#{rank} by total time, mean {mean:.1} ms")
        };
        let (severity, what, remediation) = if sleeps {
            (
                Severity::Info,
                format!("{what}, spent in pg_sleep ({blocks:.0} blocks per call)"),
                "action: its time is spent in pg_sleep, by design: no plan or index change \
                 helps; remove the sleep from the application if it is not wanted"
                    .to_string(),
            )
        } else if waits {
            (
                if slow {
                    Severity::Warning
                } else {
                    Severity::Info
                },
                format!(
                    "{what} while touching only {blocks:.0} blocks per call: it waits (most \
                     likely on locks; {lock_waiting} of its sessions wait on a lock now) rather \
                     than reads"
                ),
                "action: find what blocks it while it runs (the blocked_queries check, \
                 pg_blocking_pids()) and shorten the transactions holding those locks or take \
                 the locks in one order; set lock_timeout to bound the wait; a faster plan \
                 will not help a statement that waits"
                    .to_string(),
            )
        } else if slow {
            (
                Severity::Warning,
                what,
                "action: EXPLAIN (ANALYZE, BUFFERS) the statement with typical parameters and index \
                 the columns it filters, joins or sorts on (CREATE INDEX CONCURRENTLY), or \
                 rewrite it"
                    .to_string(),
            )
        } else {
            (
                Severity::Info,
                what,
                "action: EXPLAIN (ANALYZE, BUFFERS) the statement: it is among the biggest consumers \
                 of server time"
                    .to_string(),
            )
        };
        findings.push(Finding {
            check: "slow_queries".to_string(),
            severity,
            database: datname,
            object: Some(object),
            detail: format!("{what}, {calls} calls, {total:.0} ms total ({who}): {text}"),
            remediation: vec![remediation],
            perfdata: Some(format!(
                "{}_mean_ms={mean:.3}ms;{}",
                queryid.map_or("unknown".to_string(), |q| format!("queryid_{q}")),
                t.slow_query_ms
            )),
        });
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_list() {
        assert_eq!(parse_list(""), Vec::<String>::new());
        assert_eq!(
            parse_list("auto_explain, \"my, \"\"lib\"\"\",$libdir/x"),
            ["auto_explain", "my, \"lib\"", "$libdir/x"]
        );
        assert!(is_pgss("pg_stat_statements"));
        assert!(is_pgss("$libdir/pg_stat_statements.so"));
        assert!(!is_pgss("pg_stat_kcache"));
        assert_eq!(
            preload_sql(&[]),
            "ALTER SYSTEM SET \"shared_preload_libraries\" = 'pg_stat_statements';"
        );
        assert_eq!(
            preload_sql(&parse_list("auto_explain, \"it's\"")),
            "ALTER SYSTEM SET \"shared_preload_libraries\" = 'auto_explain', 'it''s', \
             'pg_stat_statements';"
        );
    }

    #[test]
    fn query_text() {
        assert_eq!(one_line("SELECT\n  1,\t2"), "SELECT 1, 2");
        assert_eq!(
            one_line("CREATE ROLE a LOGIN Password 'secret'"),
            "CREATE ROLE a LOGIN Password <cut>"
        );
        let long = one_line(&"é".repeat(300));
        assert_eq!(long.chars().count(), QUERY_CHARS + 3);
    }
}
