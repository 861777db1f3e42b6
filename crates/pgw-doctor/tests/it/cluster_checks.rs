//! Cluster-wide checks: sessions, replication slots, risky settings. Each test plants the
//! problem on a cluster of its own, sees the finding, runs the finding's remediation and
//! sees it gone.

use std::time::Duration;

use pgw_cluster::Cluster;
use pgw_doctor::{Report, Severity};
use tokio_postgres::Client;

use crate::{cluster, doctor, found, remediate, until, DEADLINE};

/// A session of the test's own, and its backend pid.
async fn session(c: &Cluster) -> (Client, i32) {
    let (client, _) = pgw_common::connect_dsn(Some(&c.dsn()))
        .await
        .expect("connect a test session");
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("backend pid")
        .get(0);
    (client, pid)
}

fn severity_of(r: &Report, check: &str, object: &str) -> Option<Severity> {
    r.findings
        .iter()
        .find(|f| f.check == check && f.object.as_deref() == Some(object))
        .map(|f| f.severity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_cluster_has_no_cluster_findings() {
    let c = cluster();
    for check in [
        "long_transaction",
        "idle_in_transaction",
        "blocked_queries",
        "connection_saturation",
        "replication_lag",
        "replication_slot",
        "config_audit",
    ] {
        let r = doctor(&c, check, &[]).await;
        let above: Vec<_> = r
            .findings
            .iter()
            .filter(|f| f.severity > Severity::Info)
            .collect();
        assert!(above.is_empty(), "{check} on a fresh cluster: {above:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_in_transaction_found_and_terminated() {
    let c = cluster();
    let (s, pid) = session(&c).await;
    s.batch_execute("BEGIN; SELECT 1")
        .await
        .expect("open a transaction");
    let object = format!("pid {pid}");

    let warn = [
        "idle_in_transaction_warning_secs=1",
        "idle_in_transaction_critical_secs=3600",
    ];
    let r = until(&c, "idle_in_transaction", &warn, "a warning", |r| {
        severity_of(r, "idle_in_transaction", &object) == Some(Severity::Warning)
    })
    .await;
    let f = found(&r, "idle_in_transaction", &object)[0];
    assert_eq!(f.database.as_deref(), Some("postgres"));
    assert!(
        f.detail.contains("idle_in_transaction_session_timeout"),
        "{}",
        f.detail
    );
    assert!(f.detail.contains("SELECT 1"), "{}", f.detail);
    assert_eq!(
        f.remediation,
        [format!("SELECT pg_terminate_backend({pid});")]
    );

    // The doctor's own session and background workers are never reported.
    assert!(
        r.findings
            .iter()
            .all(|f| f.object.as_deref() == Some(object.as_str())),
        "{:#?}",
        r.findings
    );

    let crit = [
        "idle_in_transaction_warning_secs=0.5",
        "idle_in_transaction_critical_secs=1",
    ];
    let r = until(&c, "idle_in_transaction", &crit, "a critical", |r| {
        severity_of(r, "idle_in_transaction", &object) == Some(Severity::Critical)
    })
    .await;
    remediate(&c, found(&r, "idle_in_transaction", &object)[0]);
    until(&c, "idle_in_transaction", &crit, "the finding gone", |r| {
        found(r, "idle_in_transaction", &object).is_empty()
    })
    .await;
    assert!(
        s.simple_query("SELECT 1").await.is_err(),
        "the session was terminated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_transaction_found_and_terminated() {
    let c = cluster();
    let (s, pid) = session(&c).await;
    s.batch_execute("BEGIN; SELECT txid_current()")
        .await
        .expect("open a transaction");
    let object = format!("pid {pid}");

    // Under the default limits (5 minutes), nothing.
    let r = doctor(&c, "long_transaction", &[]).await;
    assert!(
        found(&r, "long_transaction", &object).is_empty(),
        "{:#?}",
        r.findings
    );

    let warn = [
        "long_transaction_warning_secs=1",
        "long_transaction_critical_secs=3600",
    ];
    let r = until(&c, "long_transaction", &warn, "a warning", |r| {
        severity_of(r, "long_transaction", &object) == Some(Severity::Warning)
    })
    .await;
    let f = found(&r, "long_transaction", &object)[0];
    assert!(f.detail.contains("pg_cancel_backend"), "{}", f.detail);
    assert!(f.detail.contains("txid_current"), "{}", f.detail);

    let crit = [
        "long_transaction_warning_secs=0.5",
        "long_transaction_critical_secs=1",
    ];
    let r = until(&c, "long_transaction", &crit, "a critical", |r| {
        severity_of(r, "long_transaction", &object) == Some(Severity::Critical)
    })
    .await;
    remediate(&c, found(&r, "long_transaction", &object)[0]);
    until(&c, "long_transaction", &crit, "the finding gone", |r| {
        found(r, "long_transaction", &object).is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_queries_show_the_chain_and_terminating_the_root_frees_it() {
    let c = cluster();
    c.psql(
        "postgres",
        "CREATE TABLE t1 (id int); CREATE TABLE t2 (id int);",
    )
    .expect("create tables");
    // A holds t1; B (one statement) takes t2 then waits for t1; C waits for t2, behind B.
    let (a, a_pid) = session(&c).await;
    a.batch_execute("BEGIN; LOCK TABLE t1 IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock t1");
    let (b, b_pid) = session(&c).await;
    let b_task =
        tokio::spawn(async move { b.simple_query("SELECT * FROM t2, t1").await.map(|_| ()) });
    let thresholds = [
        "blocked_query_warning_secs=0",
        "blocked_query_critical_secs=3600",
    ];
    let b_obj = format!("pid {b_pid}");
    until(&c, "blocked_queries", &thresholds, "B blocked", |r| {
        !found(r, "blocked_queries", &b_obj).is_empty()
    })
    .await;
    let (cs, c_pid) = session(&c).await;
    let c_task = tokio::spawn(async move {
        cs.simple_query("ALTER TABLE t2 ADD COLUMN x int")
            .await
            .map(|_| ())
    });
    let c_obj = format!("pid {c_pid}");
    let r = until(&c, "blocked_queries", &thresholds, "B and C blocked", |r| {
        !found(r, "blocked_queries", &b_obj).is_empty()
            && !found(r, "blocked_queries", &c_obj).is_empty()
    })
    .await;

    let fb = found(&r, "blocked_queries", &b_obj)[0];
    assert_eq!(fb.severity, Severity::Warning);
    assert_eq!(fb.database.as_deref(), Some("postgres"));
    assert!(
        fb.detail.contains(&format!("blocked by pid {a_pid}")),
        "{}",
        fb.detail
    );
    assert_eq!(
        fb.remediation,
        [format!("SELECT pg_terminate_backend({a_pid});")]
    );

    let fc = found(&r, "blocked_queries", &c_obj)[0];
    assert!(
        fc.detail.contains(&format!("blocked by pid {b_pid}")),
        "{}",
        fc.detail
    );
    assert!(
        fc.detail.contains(&format!("root blocker pid {a_pid}")),
        "{}",
        fc.detail
    );
    assert!(fc.detail.contains("ALTER TABLE t2"), "{}", fc.detail);
    assert_eq!(
        fc.remediation,
        [format!("SELECT pg_terminate_backend({a_pid});")]
    );

    // Critical past the critical limit.
    let crit = [
        "blocked_query_warning_secs=0",
        "blocked_query_critical_secs=0",
    ];
    let r = doctor(&c, "blocked_queries", &crit).await;
    assert_eq!(
        severity_of(&r, "blocked_queries", &c_obj),
        Some(Severity::Critical)
    );

    remediate(&c, fc);
    until(
        &c,
        "blocked_queries",
        &thresholds,
        "no blocked query",
        |r| r.findings.is_empty(),
    )
    .await;
    for (name, task) in [("B", b_task), ("C", c_task)] {
        let done = tokio::time::timeout(DEADLINE, task)
            .await
            .unwrap_or_else(|_| panic!("{name} still blocked"))
            .expect("join");
        assert!(done.is_ok(), "{name} failed: {done:?}");
    }
    assert!(
        a.simple_query("SELECT 1").await.is_err(),
        "A was terminated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_middle_session_that_keeps_its_locks_is_ended_with_the_root() {
    let c = cluster();
    c.psql(
        "postgres",
        "CREATE TABLE t1 (id int); CREATE TABLE t2 (id int);",
    )
    .expect("create tables");
    // A holds t1. B, inside a transaction, has taken t2 and now waits for t1: when A ends,
    // B's statement finishes but its transaction (and its lock on t2) stays. C waits for t2.
    let (a, a_pid) = session(&c).await;
    a.batch_execute("BEGIN; LOCK TABLE t1 IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock t1");
    let (b, b_pid) = session(&c).await;
    b.batch_execute("BEGIN; LOCK TABLE t2 IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock t2");
    let b = std::sync::Arc::new(b);
    let b2 = b.clone();
    let b_task = tokio::spawn(async move { b2.simple_query("SELECT * FROM t1").await.map(|_| ()) });
    let (cs, c_pid) = session(&c).await;
    let c_task = tokio::spawn(async move { cs.simple_query("SELECT * FROM t2").await.map(|_| ()) });
    let thresholds = [
        "blocked_query_warning_secs=0",
        "blocked_query_critical_secs=3600",
    ];
    let c_obj = format!("pid {c_pid}");
    let r = until(
        &c,
        "blocked_queries",
        &thresholds,
        "C blocked behind B",
        |r| {
            found(r, "blocked_queries", &c_obj)
                .first()
                .is_some_and(|f| f.detail.contains(&format!("root blocker pid {a_pid}")))
        },
    )
    .await;
    let fc = found(&r, "blocked_queries", &c_obj)[0];
    assert!(
        fc.detail.contains(&format!("chain: pid {b_pid}")),
        "{}",
        fc.detail
    );
    assert!(
        fc.detail.contains(&format!("waits for pid {a_pid}")),
        "{}",
        fc.detail
    );
    // Both A and B are to be ended: the root first, then B, which would keep t2.
    assert_eq!(
        fc.remediation,
        [
            format!("SELECT pg_terminate_backend({a_pid});"),
            format!("SELECT pg_terminate_backend({b_pid});"),
        ]
    );
    remediate(&c, fc);
    until(
        &c,
        "blocked_queries",
        &thresholds,
        "no blocked query",
        |r| r.findings.is_empty(),
    )
    .await;
    let done = tokio::time::timeout(DEADLINE, c_task)
        .await
        .expect("C still blocked")
        .expect("join");
    assert!(done.is_ok(), "C failed: {done:?}");
    let _ = tokio::time::timeout(DEADLINE, b_task).await;
    assert!(
        a.simple_query("SELECT 1").await.is_err(),
        "A was terminated"
    );
    assert!(
        b.simple_query("SELECT 1").await.is_err(),
        "B was terminated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_build_waiting_on_an_old_snapshot_names_its_holder() {
    let c = cluster();
    c.psql(
        "postgres",
        "CREATE TABLE big (id int); INSERT INTO big SELECT generate_series(1, 1000);
         CREATE TABLE other (id int);",
    )
    .expect("create tables");
    // H holds a snapshot (a repeatable-read transaction that has read something) and no
    // lock on big: CREATE INDEX CONCURRENTLY still waits for it to end.
    let (h, h_pid) = session(&c).await;
    h.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM other")
        .await
        .expect("hold a snapshot");
    let (i, i_pid) = session(&c).await;
    let i_task = tokio::spawn(async move {
        i.simple_query("CREATE INDEX CONCURRENTLY big_id ON big (id)")
            .await
            .map(|_| ())
    });
    let thresholds = [
        "blocked_query_warning_secs=0",
        "blocked_query_critical_secs=3600",
    ];
    let i_obj = format!("pid {i_pid}");
    let r = until(
        &c,
        "blocked_queries",
        &thresholds,
        "the index build waiting",
        |r| !found(r, "blocked_queries", &i_obj).is_empty(),
    )
    .await;
    let f = found(&r, "blocked_queries", &i_obj)[0];
    assert!(f.detail.contains("virtualxid"), "{}", f.detail);
    assert!(
        f.detail.contains(&format!("blocked by pid {h_pid}")),
        "{}",
        f.detail
    );
    assert_eq!(
        f.remediation,
        [format!("SELECT pg_terminate_backend({h_pid});")]
    );
    remediate(&c, f);
    let done = tokio::time::timeout(DEADLINE, i_task)
        .await
        .expect("index build still waiting")
        .expect("join");
    assert!(done.is_ok(), "index build failed: {done:?}");
    until(
        &c,
        "blocked_queries",
        &thresholds,
        "no blocked query",
        |r| r.findings.is_empty(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_saturation_found_and_idle_sessions_terminated() {
    let c = Cluster::builder()
        .setting("max_connections", "20")
        .start()
        .expect("start a cluster with max_connections 20");
    // 16 idle sessions + doctor's own = 17 of 20 = 85 %.
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(session(&c).await);
    }
    let r = until(&c, "connection_saturation", &[], "a warning", |r| {
        severity_of(r, "connection_saturation", "max_connections") == Some(Severity::Warning)
    })
    .await;
    let f = found(&r, "connection_saturation", "max_connections")[0];
    assert_eq!(f.database, None);
    assert!(
        f.detail.contains("17 of max_connections 20"),
        "{}",
        f.detail
    );
    assert!(f.detail.contains("reserved"), "{}", f.detail);
    assert!(f.detail.contains("pooler"), "{}", f.detail);

    let crit = ["connections_critical_share=0.84"];
    let r = until(&c, "connection_saturation", &crit, "a critical", |r| {
        severity_of(r, "connection_saturation", "max_connections") == Some(Severity::Critical)
    })
    .await;
    remediate(&c, found(&r, "connection_saturation", "max_connections")[0]);
    until(
        &c,
        "connection_saturation",
        &crit,
        "the finding gone",
        |r| found(r, "connection_saturation", "max_connections").is_empty(),
    )
    .await;
    for (s, _) in &idle {
        assert!(
            s.simple_query("SELECT 1").await.is_err(),
            "idle session terminated"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactive_replication_slot_found_and_dropped() {
    let c = cluster();
    c.psql(
        "postgres",
        "SELECT pg_create_physical_replication_slot('stale', true);",
    )
    .expect("create a slot");

    let r = doctor(&c, "replication_slot", &[]).await;
    let f = found(&r, "replication_slot", "stale");
    assert_eq!(f.len(), 1, "{:#?}", r.findings);
    assert_eq!(f[0].severity, Severity::Warning);
    assert_eq!(f[0].database, None);
    assert!(f[0].detail.contains("retains"), "{}", f[0].detail);
    assert_eq!(
        f[0].remediation,
        ["SELECT pg_drop_replication_slot('stale');"]
    );

    let crit = ["slot_retained_critical_mb=0"];
    let r = doctor(&c, "replication_slot", &crit).await;
    let f = found(&r, "replication_slot", "stale");
    assert_eq!(f[0].severity, Severity::Critical);

    remediate(&c, f[0]);
    let r = doctor(&c, "replication_slot", &crit).await;
    assert!(
        found(&r, "replication_slot", "stale").is_empty(),
        "{:#?}",
        r.findings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn risky_settings_found_and_fixed() {
    let c = Cluster::builder()
        .setting("fsync", "off")
        .setting("autovacuum", "off")
        .start()
        .expect("start a cluster with fsync and autovacuum off");
    let r = doctor(&c, "config_audit", &[]).await;
    assert_eq!(
        severity_of(&r, "config_audit", "fsync"),
        Some(Severity::Critical),
        "{:#?}",
        r.findings
    );
    assert_eq!(
        severity_of(&r, "config_audit", "autovacuum"),
        Some(Severity::Warning)
    );
    assert_eq!(severity_of(&r, "config_audit", "full_page_writes"), None);
    assert_eq!(severity_of(&r, "config_audit", "track_counts"), None);
    let f = found(&r, "config_audit", "fsync")[0];
    assert_eq!(
        f.remediation,
        [
            "ALTER SYSTEM SET \"fsync\" = on;",
            "SELECT pg_reload_conf();"
        ]
    );

    // The risky settings; the info findings are tuning advice, tested on their own.
    for f in r.findings.iter().filter(|f| f.severity > Severity::Info) {
        remediate(&c, f);
    }
    // pg_reload_conf only signals the postmaster: wait for the new values.
    until(&c, "config_audit", &[], "the settings fixed", |r| {
        r.findings.iter().all(|f| f.severity == Severity::Info)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_monitor_role_runs_every_cluster_check_and_sees_other_sessions() {
    let c = cluster();
    c.psql(
        "postgres",
        "CREATE ROLE watcher LOGIN PASSWORD 'watch' IN ROLE pg_monitor;
         SELECT pg_create_physical_replication_slot('stale', true);",
    )
    .expect("create a pg_monitor role and a slot");
    // A superuser's session, idle in a transaction.
    let (s, pid) = session(&c).await;
    s.batch_execute("BEGIN; SELECT 42 AS answer")
        .await
        .expect("open a transaction");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let mut t = pgw_doctor::Thresholds::default();
    t.set("idle_in_transaction_warning_secs=1")
        .expect("threshold");
    let opts = pgw_doctor::Options {
        dsn: Some(c.dsn_for("watcher", "watch", "postgres")),
        dbname: None,
        only: None,
        thresholds: t,
        host: Default::default(),
    };
    let r = pgw_doctor::run(&opts)
        .await
        .expect("doctor runs as pg_monitor");
    let mine = [
        "long_transaction",
        "idle_in_transaction",
        "blocked_queries",
        "connection_saturation",
        "replication_lag",
        "replication_slot",
        "config_audit",
    ];
    let skipped: Vec<_> = r
        .skipped
        .iter()
        .filter(|s| mine.contains(&s.check.as_str()))
        .collect();
    assert!(skipped.is_empty(), "{skipped:#?}");
    for check in mine {
        assert!(
            r.checks_run.iter().any(|c| c == check),
            "{check} did not run"
        );
    }
    let f = found(&r, "idle_in_transaction", &format!("pid {pid}"));
    assert_eq!(f.len(), 1, "{:#?}", r.findings);
    assert!(
        f[0].detail.contains("SELECT 42"),
        "query text visible: {}",
        f[0].detail
    );
    assert_eq!(found(&r, "replication_slot", "stale").len(), 1);
}

#[tokio::test]
async fn config_audit_gives_tuning_advice_as_info() {
    let c = cluster();
    // A fresh cluster keeps PostgreSQL's defaults: work_mem 4MB is far below what pgwarden
    // tune recommends for this host, so config_audit says so, as info.
    let r = doctor(&c, "config_audit", &[]).await;
    let work_mem = |r: &Report| {
        r.findings
            .iter()
            .find(|f| f.check == "config_audit" && f.object.as_deref() == Some("work_mem"))
            .cloned()
    };
    let f = work_mem(&r).expect("tuning advice for work_mem");
    assert_eq!(f.severity, Severity::Info);
    assert!(
        f.detail.contains("pgwarden tune recommends"),
        "{}",
        f.detail
    );
    assert!(
        f.remediation[0].starts_with("ALTER SYSTEM SET \"work_mem\" = '"),
        "{:?}",
        f.remediation
    );
    assert!(
        r.findings.iter().all(|f| f.severity == Severity::Info),
        "{:#?}",
        r.findings
    );
    remediate(&c, &f);
    until(&c, "config_audit", &[], "the work_mem advice gone", |r| {
        work_mem(r).is_none()
    })
    .await;
}

/// The host described by flags (as for a server on another machine) wins over this
/// machine's facts: the advice is for 64GB and 16 cores, the figures tune gives for them.
#[tokio::test]
async fn config_audit_advice_for_a_host_given_by_flags() {
    let c = cluster();
    let opts = pgw_doctor::Options {
        dsn: Some(c.dsn()),
        dbname: None,
        only: Some("config_audit".into()),
        thresholds: pgw_doctor::Thresholds::default(),
        host: pgw_tune::resolve::Given {
            memory_kb: Some(64 * 1024 * 1024),
            cpus: Some(16),
            workload: Some(pgw_tune::Workload::Web),
            ..Default::default()
        },
    };
    let r = pgw_doctor::run(&opts).await.expect("doctor runs");
    let advice = |name: &str| {
        r.findings
            .iter()
            .find(|f| f.object.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no advice for {name}: {:#?}", r.findings))
    };
    let sb = advice("shared_buffers");
    assert!(
        sb.detail.contains("for 64GB RAM, 16 CPUs, web workload"),
        "{}",
        sb.detail
    );
    assert_eq!(
        sb.remediation,
        [
            "ALTER SYSTEM SET \"shared_buffers\" = '16GB';",
            "action: restart the server (the setting needs a restart)"
        ]
    );
    assert!(advice("effective_cache_size")
        .detail
        .contains("recommends 48GB"));
}
