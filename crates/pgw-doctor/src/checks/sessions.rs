//! Session checks, cluster-wide from `pg_stat_activity`: long transactions, sessions idle
//! inside a transaction, queries blocked on locks (with the blocking chain), and the share
//! of `max_connections` in use.
//!
//! Each is one query. Only client backends count (autovacuum, WAL senders and other
//! background workers are left out), and pgwarden's own backend is never reported. With
//! `pg_monitor` (through `pg_read_all_stats`) pg_stat_activity shows other users' states
//! and queries; without it those columns are NULL and the sessions are skipped rather than
//! misreported.

use std::collections::{HashMap, HashSet, VecDeque};

use tokio_postgres::Row;

use pgw_common::sql;

use super::{CheckInfo, Ctx, Outcome, Scope};
use crate::model::{Finding, Severity};

/// The checks of this module, in the order they run.
pub(super) const CHECKS: &[CheckInfo] = &[
    CheckInfo {
        id: "long_transaction",
        scope: Scope::Cluster,
        summary: "transactions open longer than the limit",
        thresholds: &[
            "long_transaction_warning_secs",
            "long_transaction_critical_secs",
        ],
    },
    CheckInfo {
        id: "idle_in_transaction",
        scope: Scope::Cluster,
        summary: "sessions idle inside an open transaction longer than the limit",
        thresholds: &[
            "idle_in_transaction_warning_secs",
            "idle_in_transaction_critical_secs",
        ],
    },
    CheckInfo {
        id: "blocked_queries",
        scope: Scope::Cluster,
        summary: "queries waiting on a lock longer than the limit, with the blocking chain",
        thresholds: &["blocked_query_warning_secs", "blocked_query_critical_secs"],
    },
    CheckInfo {
        id: "connection_saturation",
        scope: Scope::Cluster,
        summary: "share of max_connections in use",
        thresholds: &["connections_warning_share", "connections_critical_share"],
    },
    CheckInfo {
        id: "prepared_transactions",
        scope: Scope::Cluster,
        summary: "prepared (two-phase) transactions left open longer than the limit",
        thresholds: &["prepared_xact_warning_secs", "prepared_xact_critical_secs"],
    },
];

/// Runs check `id` if it is one of this module's.
pub(super) async fn run(id: &str, ctx: &Ctx<'_>) -> Option<Result<Outcome, tokio_postgres::Error>> {
    Some(match id {
        "long_transaction" => long_transaction(ctx).await.map(Outcome::from),
        "idle_in_transaction" => idle_in_transaction(ctx).await.map(Outcome::from),
        "blocked_queries" => blocked_queries(ctx).await.map(Outcome::from),
        "connection_saturation" => connection_saturation(ctx).await.map(Outcome::from),
        "prepared_transactions" => prepared_transactions(ctx).await.map(Outcome::from),
        _ => return None,
    })
}

/// How much of a query a detail line shows.
const QUERY_CHARS: usize = 80;

/// A query's text on one line, cut to [`QUERY_CHARS`] characters.
fn snippet(query: Option<&str>) -> String {
    let q = query.unwrap_or("");
    let one_line = q.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > QUERY_CHARS {
        let cut: String = one_line.chars().take(QUERY_CHARS).collect();
        format!("{cut}...")
    } else {
        one_line
    }
}

/// `Critical` at or past `critical`, otherwise `Warning` (the query already filtered on
/// the warning limit).
fn grade(value: f64, critical: f64) -> Severity {
    if value >= critical {
        Severity::Critical
    } else {
        Severity::Warning
    }
}

/// A session as pg_stat_activity describes it.
struct Session {
    pid: i32,
    datname: Option<String>,
    usename: Option<String>,
    application_name: Option<String>,
    state: Option<String>,
    query: Option<String>,
}

impl Session {
    fn from_row(r: &Row) -> Session {
        Session {
            pid: r.get("pid"),
            datname: r.get("datname"),
            usename: r.get("usename"),
            application_name: r.get("application_name"),
            state: r.get("state"),
            query: r.get("query"),
        }
    }

    /// `user alice, application psql, state idle in transaction`
    fn who(&self) -> String {
        let app = match self.application_name.as_deref() {
            None | Some("") => "-",
            Some(a) => a,
        };
        format!(
            "user {}, application {}, database {}, state {}",
            self.usename.as_deref().unwrap_or("?"),
            app,
            self.datname.as_deref().unwrap_or("-"),
            self.state.as_deref().unwrap_or("?"),
        )
    }
}

const ACTIVITY_COLUMNS: &str =
    "pid, datname, usename::text AS usename, application_name, state, query";

/// Transactions open longer than `long_transaction_warning_secs` (warning) or
/// `long_transaction_critical_secs` (critical). A long transaction holds back vacuum's
/// horizon for the whole cluster and keeps its locks.
pub(super) async fn long_transaction(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let t = ctx.thresholds;
    let sql = format!(
        "SELECT {ACTIVITY_COLUMNS}, EXTRACT(EPOCH FROM now() - xact_start)::float8 AS age
           FROM pg_stat_activity
          WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
            AND xact_start IS NOT NULL
            AND now() - xact_start >= make_interval(secs => $1)
          ORDER BY age DESC, pid"
    );
    let rows = ctx.query(&sql, &[&t.long_transaction_warning_secs]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let s = Session::from_row(r);
            let age: f64 = r.get("age");
            Finding {
                check: "long_transaction".to_string(),
                severity: grade(age, t.long_transaction_critical_secs),
                database: s.datname.clone(),
                object: Some(format!("pid {}", s.pid)),
                detail: format!(
                    "transaction open {age:.0}s ({}): {}; it holds its locks and vacuum's horizon; \
                     pg_cancel_backend({}) cancels only the running query and leaves the transaction open, \
                     so end it in the application or terminate the session",
                    s.who(),
                    snippet(s.query.as_deref()),
                    s.pid,
                ),
                remediation: vec![format!("SELECT pg_terminate_backend({});", s.pid)],
                perfdata: Some(format!(
                    "age={age:.0}s;{};{}",
                    t.long_transaction_warning_secs, t.long_transaction_critical_secs
                )),
            }
        })
        .collect())
}

/// Sessions idle inside an open transaction longer than
/// `idle_in_transaction_warning_secs` (warning) or `idle_in_transaction_critical_secs`
/// (critical), measured from their last state change.
pub(super) async fn idle_in_transaction(
    ctx: &Ctx<'_>,
) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let t = ctx.thresholds;
    let sql = format!(
        "SELECT {ACTIVITY_COLUMNS}, EXTRACT(EPOCH FROM now() - state_change)::float8 AS idle
           FROM pg_stat_activity
          WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
            AND state IN ('idle in transaction', 'idle in transaction (aborted)')
            AND state_change IS NOT NULL
            AND now() - state_change >= make_interval(secs => $1)
          ORDER BY idle DESC, pid"
    );
    let rows = ctx
        .query(&sql, &[&t.idle_in_transaction_warning_secs])
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let s = Session::from_row(r);
            let idle: f64 = r.get("idle");
            Finding {
                check: "idle_in_transaction".to_string(),
                severity: grade(idle, t.idle_in_transaction_critical_secs),
                database: s.datname.clone(),
                object: Some(format!("pid {}", s.pid)),
                detail: format!(
                    "idle in transaction for {idle:.0}s ({}), last query: {}; it holds its locks and \
                     vacuum's horizon; fix the application, and let the server end such sessions with \
                     idle_in_transaction_session_timeout (ALTER SYSTEM SET \"idle_in_transaction_session_timeout\" = '5min')",
                    s.who(),
                    snippet(s.query.as_deref()),
                ),
                remediation: vec![format!("SELECT pg_terminate_backend({});", s.pid)],
                perfdata: Some(format!(
                    "idle={idle:.0}s;{};{}",
                    t.idle_in_transaction_warning_secs, t.idle_in_transaction_critical_secs
                )),
            }
        })
        .collect())
}

/// Queries waiting on a lock longer than `blocked_query_warning_secs` (warning) or
/// `blocked_query_critical_secs` (critical), with the whole blocking chain
/// (`pg_blocking_pids`, followed to the end) and the sessions to end so that the waiter
/// runs: the roots of the chain (blockers not waiting themselves), then every session in
/// the chain whose transaction began before its current statement. Such a session keeps
/// the locks it has taken when its statement finishes, so ending the root alone would
/// leave the waiter blocked by it; a single-statement session ends its transaction, and
/// its locks, when the root lets it finish.
pub(super) async fn blocked_queries(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let t = ctx.thresholds;
    // Every backend but ours (a blocker can be any backend), with its blockers when it waits
    // on a lock: pg_blocking_pids is only called for those, as it takes the lock manager's
    // locks briefly.
    let sql = format!(
        "SELECT {ACTIVITY_COLUMNS}, backend_type, wait_event,
                EXTRACT(EPOCH FROM now() - COALESCE(query_start, state_change))::float8 AS waited,
                COALESCE(xact_start < query_start, false) AS keeps_locks,
                CASE WHEN wait_event_type = 'Lock' THEN pg_blocking_pids(pid) END AS blockers
           FROM pg_stat_activity
          WHERE pid <> pg_backend_pid()
          ORDER BY pid"
    );
    let rows = ctx.query(&sql, &[]).await?;

    let mut sessions: HashMap<i32, Session> = HashMap::new();
    let mut blockers_of: HashMap<i32, Vec<i32>> = HashMap::new();
    let mut keeps_locks: HashSet<i32> = HashSet::new();
    let mut waiting: Vec<(i32, f64, Option<String>)> = Vec::new();
    for r in &rows {
        let s = Session::from_row(r);
        let blockers: Option<Vec<i32>> = r.get("blockers");
        let backend_type: Option<String> = r.get("backend_type");
        let waited: Option<f64> = r.get("waited");
        if r.get::<_, bool>("keeps_locks") {
            keeps_locks.insert(s.pid);
        }
        if let Some(b) = blockers.filter(|b| !b.is_empty()) {
            if backend_type.as_deref() == Some("client backend") {
                if let Some(w) = waited.filter(|w| *w >= t.blocked_query_warning_secs) {
                    waiting.push((s.pid, w, r.get("wait_event")));
                }
            }
            blockers_of.insert(s.pid, b);
        }
        sessions.insert(s.pid, s);
    }
    // A prepared transaction (pid 0) keeps its locks until COMMIT/ROLLBACK PREPARED.
    keeps_locks.insert(0);

    let describe = |pid: i32| -> String {
        match sessions.get(&pid) {
            _ if pid == 0 => "pid 0 (a prepared transaction: see pg_prepared_xacts)".to_string(),
            Some(s) => format!("pid {} ({}: {})", pid, s.who(), snippet(s.query.as_deref())),
            None => format!("pid {pid}"),
        }
    };
    let pids = |list: &[i32]| {
        list.iter()
            .map(|p| format!("pid {p}"))
            .collect::<Vec<_>>()
            .join(", ")
    };

    let mut findings = Vec::new();
    for (pid, waited, wait_event) in waiting {
        let Some(s) = sessions.get(&pid) else {
            continue;
        };
        let direct = blockers_of.get(&pid).cloned().unwrap_or_default();
        let root = root_blocker(pid, &blockers_of);
        let direct_text = direct
            .iter()
            .map(|b| describe(*b))
            .collect::<Vec<_>>()
            .join(", ");
        let mut detail = format!(
            "pid {pid} ({}) waits {waited:.0}s on a {} lock: {}; blocked by {direct_text}",
            s.who(),
            wait_event.as_deref().unwrap_or("?"),
            snippet(s.query.as_deref()),
        );
        if wait_event.as_deref() == Some("virtualxid") {
            detail.push_str(
                " (a virtualxid wait: CREATE INDEX CONCURRENTLY, REINDEX CONCURRENTLY and similar \
                 wait for every transaction that is older than their snapshot or holds a lock on the \
                 table to end, whatever it is doing; the pids named are those transactions)",
            );
        }
        // The chain beyond the direct blockers, one link per blocked member.
        let chain = chain_of(pid, &blockers_of);
        let links: Vec<String> = chain
            .iter()
            .filter_map(|m| {
                blockers_of
                    .get(m)
                    .map(|b| format!("{} waits for {}", describe(*m), pids(b)))
            })
            .collect();
        if !links.is_empty() {
            detail.push_str(&format!("; chain: {}", links.join("; ")));
        }
        if let Some(root) = root.filter(|r| !direct.contains(r)) {
            detail.push_str(&format!("; root blocker {}", describe(root)));
        }
        let ends = sessions_to_end(pid, &blockers_of, &keeps_locks);
        let kept: Vec<i32> = ends
            .iter()
            .copied()
            .filter(|m| blockers_of.contains_key(m))
            .collect();
        if !kept.is_empty() {
            detail.push_str(&format!(
                "; {} also in the chain, in a transaction begun before its current statement, keeps \
                 its locks after the root ends, so it is ended too",
                pids(&kept)
            ));
        }
        let remediation = if ends.is_empty() {
            vec![format!("SELECT pg_cancel_backend({pid});")]
        } else {
            ends.iter()
                .map(|&e| {
                    if e == 0 {
                        "action: a prepared transaction blocks it: COMMIT PREPARED or ROLLBACK PREPARED \
                         its gid (SELECT gid FROM pg_prepared_xacts; the prepared_transactions check \
                         names it)"
                            .to_string()
                    } else {
                        format!("SELECT pg_terminate_backend({e});")
                    }
                })
                .collect()
        };
        findings.push(Finding {
            check: "blocked_queries".to_string(),
            severity: grade(waited, t.blocked_query_critical_secs),
            database: s.datname.clone(),
            object: Some(format!("pid {pid}")),
            detail,
            remediation,
            perfdata: Some(format!(
                "waited={waited:.0}s;{};{}",
                t.blocked_query_warning_secs, t.blocked_query_critical_secs
            )),
        });
    }
    Ok(findings)
}

/// Everyone in `pid`'s blocking chain (its blockers, theirs, and so on; `pid` itself left
/// out), breadth first: nearest first.
fn chain_of(pid: i32, blockers_of: &HashMap<i32, Vec<i32>>) -> Vec<i32> {
    let mut seen: HashSet<i32> = HashSet::from([pid]);
    let mut order = Vec::new();
    let mut queue: VecDeque<i32> = blockers_of
        .get(&pid)
        .into_iter()
        .flatten()
        .copied()
        .collect();
    while let Some(b) = queue.pop_front() {
        if !seen.insert(b) {
            continue;
        }
        order.push(b);
        if let Some(next) = blockers_of.get(&b) {
            queue.extend(next.iter().copied());
        }
    }
    order
}

/// The sessions to end so that `pid` runs: every root of its chain (a member not itself
/// waiting), then each waiting member whose transaction keeps its locks after its statement
/// (`keeps_locks`: begun before the statement, or a prepared transaction), nearest the root
/// first. A chain without a root (a cycle the deadlock detector has not broken yet) gives
/// the first direct blocker. Empty when `pid` waits for nobody.
fn sessions_to_end(
    pid: i32,
    blockers_of: &HashMap<i32, Vec<i32>>,
    keeps_locks: &HashSet<i32>,
) -> Vec<i32> {
    let chain = chain_of(pid, blockers_of);
    let mut ends: Vec<i32> = chain
        .iter()
        .copied()
        .filter(|m| blockers_of.get(m).is_none_or(|b| b.is_empty()))
        .collect();
    if ends.is_empty() {
        return blockers_of
            .get(&pid)
            .and_then(|d| d.first().copied())
            .into_iter()
            .collect();
    }
    ends.extend(
        chain.iter().rev().copied().filter(|m| {
            blockers_of.get(m).is_some_and(|b| !b.is_empty()) && keeps_locks.contains(m)
        }),
    );
    ends
}

/// The root of `pid`'s blocking chain: breadth first through the blockers, the first one
/// that is not itself blocked. When every blocker is blocked (a cycle the deadlock
/// detector has not broken yet), the first direct blocker.
fn root_blocker(pid: i32, blockers_of: &HashMap<i32, Vec<i32>>) -> Option<i32> {
    let direct = blockers_of.get(&pid)?;
    let mut seen: HashSet<i32> = HashSet::from([pid]);
    let mut queue: VecDeque<i32> = direct.iter().copied().collect();
    while let Some(b) = queue.pop_front() {
        if !seen.insert(b) {
            continue;
        }
        match blockers_of.get(&b) {
            Some(next) if !next.is_empty() => queue.extend(next.iter().copied()),
            _ => return Some(b),
        }
    }
    direct.first().copied()
}

/// Client backends (ours included: it takes a slot too) as a share of `max_connections`:
/// warning at `connections_warning_share`, critical at `connections_critical_share`.
pub(super) async fn connection_saturation(
    ctx: &Ctx<'_>,
) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let t = ctx.thresholds;
    let row = ctx
        .query_one(
            "SELECT count(*) FILTER (WHERE backend_type = 'client backend') AS used,
                    count(*) FILTER (WHERE backend_type = 'client backend' AND state = 'idle') AS idle,
                    current_setting('max_connections')::int8 AS max,
                    current_setting('superuser_reserved_connections')::int8 AS reserved
               FROM pg_stat_activity",
            &[],
        )
        .await?;
    let used: i64 = row.get("used");
    let idle: i64 = row.get("idle");
    let max: i64 = row.get("max");
    let reserved: i64 = row.get("reserved");
    if max <= 0 {
        return Ok(Vec::new());
    }
    let share = used as f64 / max as f64;
    if share < t.connections_warning_share {
        return Ok(Vec::new());
    }
    Ok(vec![Finding {
        check: "connection_saturation".to_string(),
        severity: grade(share, t.connections_critical_share),
        database: None,
        object: Some("max_connections".to_string()),
        detail: format!(
            "{used} of max_connections {max} in use ({:.0} %), {idle} of them idle; {reserved} slots are \
             reserved for superusers, so other roles are refused at {}; the lasting fix is a connection \
             pooler (PgBouncer) in front, or a higher max_connections (needs a restart); the remediation \
             frees slots now by terminating every idle client session",
            share * 100.0,
            (max - reserved).max(0),
        ),
        remediation: vec!["SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE state = 'idle' \
                      AND backend_type = 'client backend' AND pid <> pg_backend_pid();"
            .to_string()],
        perfdata: Some(format!(
            "connections={used};{:.0};{:.0};0;{max}",
            t.connections_warning_share * max as f64,
            t.connections_critical_share * max as f64,
        )),
    }])
}

/// Prepared (two-phase) transactions from `pg_prepared_xacts` older than
/// `prepared_xact_warning_secs` (warning) or `prepared_xact_critical_secs` (critical). A
/// prepared transaction outlives its session and restarts: it keeps its locks and holds back
/// vacuum's horizon until a transaction manager commits or rolls it back. The view is
/// readable by every role. The remediation rolls it back, and must run in the transaction's
/// own database.
pub(super) async fn prepared_transactions(
    ctx: &Ctx<'_>,
) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let t = ctx.thresholds;
    let rows = ctx
        .query(
            "SELECT gid, owner::text AS owner, database::text AS database, transaction::text AS xid,
                    EXTRACT(EPOCH FROM now() - prepared)::float8 AS age
               FROM pg_prepared_xacts
              WHERE now() - prepared >= make_interval(secs => $1)
              ORDER BY age DESC, gid",
            &[&t.prepared_xact_warning_secs],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let gid: String = r.get("gid");
            let owner: String = r.get("owner");
            let database: String = r.get("database");
            let xid: String = r.get("xid");
            let age: f64 = r.get("age");
            Finding {
                check: "prepared_transactions".to_string(),
                severity: grade(age, t.prepared_xact_critical_secs),
                database: Some(database.clone()),
                object: Some(format!("prepared transaction {}", sql::literal(&gid))),
                detail: format!(
                    "transaction {xid} prepared {age:.0}s ago (gid {}, owner {owner}, database {}) \
                     is still neither committed nor rolled back; it holds its locks and vacuum's horizon \
                     across restarts; if its transaction manager is gone, roll it back (or COMMIT \
                     PREPARED if it must be kept), connected to database {}",
                    sql::literal(&gid),
                    sql::shown(&database),
                    sql::shown(&database),
                ),
                remediation: vec![format!("ROLLBACK PREPARED {};", sql::literal(&gid))],
                perfdata: Some(format!(
                    "age={age:.0}s;{};{}",
                    t.prepared_xact_warning_secs, t.prepared_xact_critical_secs
                )),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_one_short_line() {
        assert_eq!(snippet(Some("SELECT 1\n  FROM t")), "SELECT 1 FROM t");
        assert_eq!(snippet(None), "");
        let long = "x".repeat(200);
        assert_eq!(snippet(Some(&long)).chars().count(), QUERY_CHARS + 3);
    }

    #[test]
    fn root_of_a_chain() {
        // 3 waits on 2, 2 waits on 1, 1 runs.
        let m: HashMap<i32, Vec<i32>> = HashMap::from([(3, vec![2]), (2, vec![1])]);
        assert_eq!(root_blocker(3, &m), Some(1));
        assert_eq!(root_blocker(2, &m), Some(1));
        assert_eq!(root_blocker(1, &m), None);
        // a cycle: the first direct blocker
        let c: HashMap<i32, Vec<i32>> = HashMap::from([(1, vec![2]), (2, vec![1])]);
        assert_eq!(root_blocker(1, &c), Some(2));
    }

    #[test]
    fn sessions_to_end_a_chain() {
        // 4 waits on 3, 3 on 2, 2 on 1; 1 runs.
        let m: HashMap<i32, Vec<i32>> = HashMap::from([(4, vec![3]), (3, vec![2]), (2, vec![1])]);
        let none = HashSet::new();
        // single-statement members finish once the root ends
        assert_eq!(sessions_to_end(4, &m, &none), vec![1]);
        assert_eq!(chain_of(4, &m), vec![3, 2, 1]);
        // 3's transaction keeps its locks: end it too; 2's does as well, nearer the root first
        assert_eq!(sessions_to_end(4, &m, &HashSet::from([3])), vec![1, 3]);
        assert_eq!(
            sessions_to_end(4, &m, &HashSet::from([2, 3])),
            vec![1, 2, 3]
        );
        // the root itself is always ended, whatever its transaction
        assert_eq!(sessions_to_end(2, &m, &HashSet::from([1])), vec![1]);
        // two roots
        let two: HashMap<i32, Vec<i32>> = HashMap::from([(3, vec![1, 2])]);
        assert_eq!(sessions_to_end(3, &two, &none), vec![1, 2]);
        // a cycle: the first direct blocker
        let c: HashMap<i32, Vec<i32>> = HashMap::from([(1, vec![2]), (2, vec![1])]);
        assert_eq!(sessions_to_end(1, &c, &none), vec![2]);
        assert!(sessions_to_end(9, &m, &none).is_empty());
    }
}
