//! unused_index never advises dropping what something needs (a constraint's index, a unique
//! index, the only index covering a foreign key) nor judges an index younger than the
//! statistics window; slow_queries does not send lock waits and sleeps to EXPLAIN.

use pgw_cluster::Cluster;
use pgw_doctor::{Options, Report, Thresholds};

use crate::{cluster, doctor, found, remediate, DEADLINE};

/// Runs `check` against `c` like [`crate::doctor`], but keeps the skipped objects.
async fn doctor_with_skipped(c: &Cluster, check: &str, thresholds: &[&str]) -> Report {
    let mut t = Thresholds::default();
    for a in thresholds {
        t.set(a).expect("valid threshold");
    }
    let opts = Options {
        dsn: Some(c.dsn()),
        dbname: None,
        only: Some(check.to_string()),
        thresholds: t,
        host: Default::default(),
    };
    pgw_doctor::run(&opts).await.expect("doctor runs")
}

#[tokio::test]
async fn unused_index_spares_the_only_fk_index() {
    let c = cluster();
    c.psql(
        "postgres",
        "CREATE TABLE parent (id int PRIMARY KEY);
         CREATE TABLE child (id int PRIMARY KEY, p int REFERENCES parent, pad text);
         INSERT INTO parent SELECT generate_series(1, 100);
         INSERT INTO child SELECT g, g % 100 + 1, 'x' FROM generate_series(1, 5000) g;
         CREATE INDEX child_p ON child (p);
         ANALYZE parent, child;",
    )
    .unwrap();
    let t = ["unused_index_min_mb=0"];
    // The only index covering the foreign key, never scanned: not advised for dropping.
    let r = doctor(&c, "unused_index", &t).await;
    assert!(r.findings.is_empty(), "{:#?}", r.findings);

    // A second covering index (the key's column leads): one of the two may go, the
    // larger one, and only that one.
    c.psql("postgres", "CREATE INDEX child_p_id ON child (p, id);")
        .unwrap();
    let r = doctor(&c, "unused_index", &t).await;
    let flagged: Vec<&str> = r
        .findings
        .iter()
        .filter_map(|f| f.object.as_deref())
        .collect();
    assert_eq!(flagged, ["public.child_p_id"], "{:#?}", r.findings);
    let f = r.findings[0].clone();
    // The cluster runs without commit timestamps: the index's age is unknown, and the
    // detail says so rather than claiming no scan since the server started.
    assert!(
        f.detail.contains("creation time is unknown"),
        "{}",
        f.detail
    );
    assert!(
        f.detail
            .contains("since it was created or since the server started"),
        "{}",
        f.detail
    );
    remediate(&c, &f);
    let r = doctor(&c, "unused_index", &t).await;
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    c.psql("postgres", "SELECT 'child_p'::regclass;").unwrap();
}

#[tokio::test]
async fn unused_index_waits_for_a_young_index() {
    let c = Cluster::builder()
        .setting("track_commit_timestamp", "on")
        .start()
        .expect("start a cluster with commit timestamps");
    c.psql(
        "postgres",
        "CREATE TABLE events (id int, kind int);
         INSERT INTO events SELECT g, g % 7 FROM generate_series(1, 5000) g;
         CREATE INDEX events_kind ON events (kind);
         ANALYZE events;",
    )
    .unwrap();
    let t = ["unused_index_min_mb=0"];
    // Created after the server started: never scanned means nothing yet.
    let r = doctor_with_skipped(&c, "unused_index", &t).await;
    assert!(
        found(&r, "unused_index", "events_kind").is_empty(),
        "{:#?}",
        r.findings
    );
    let skipped: Vec<_> = r
        .skipped
        .iter()
        .filter(|s| s.object.as_deref() == Some("public.events_kind"))
        .collect();
    assert_eq!(skipped.len(), 1, "{:#?}", r.skipped);
    assert!(skipped[0].reason.contains("too young"), "{:?}", skipped[0]);

    // Once the statistics window starts after its creation, it is judged, without qualification.
    c.psql("postgres", "SELECT pg_stat_reset();").unwrap();
    let start = std::time::Instant::now();
    let f = loop {
        let r = doctor_with_skipped(&c, "unused_index", &t).await;
        if let Some(f) = found(&r, "unused_index", "events_kind").first() {
            assert!(r.skipped.is_empty(), "{:#?}", r.skipped);
            break (*f).clone();
        }
        assert!(start.elapsed() < DEADLINE, "{:#?}", r);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    assert!(
        f.detail
            .contains("has not been scanned since the statistics reset at"),
        "{}",
        f.detail
    );
    assert!(!f.detail.contains("unknown"), "{}", f.detail);
    remediate(&c, &f);
    let r = doctor(&c, "unused_index", &t).await;
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_queries_waiting_statements_get_no_explain_advice() {
    let c = Cluster::builder()
        .setting("shared_preload_libraries", "pg_stat_statements")
        .start()
        .expect("start a cluster with pg_stat_statements preloaded");
    c.psql(
        "postgres",
        "CREATE EXTENSION pg_stat_statements;
         CREATE TABLE counter (id int PRIMARY KEY, v int);
         INSERT INTO counter VALUES (1, 0);",
    )
    .unwrap();
    // A statement that sleeps.
    c.psql("postgres", &"SELECT pg_sleep(0.06), 'nap';\n".repeat(11))
        .unwrap();
    // A statement blocked on a row lock each time (a table lock would be waited for at
    // parse time, which pg_stat_statements does not count): the holder keeps the row
    // locked until the updater is seen waiting, and a moment longer.
    let (holder, _) = pgw_common::connect_dsn(Some(&c.dsn())).await.unwrap();
    let (updater, _) = pgw_common::connect_dsn(Some(&c.dsn())).await.unwrap();
    let updater = std::sync::Arc::new(updater);
    let pid: i32 = updater
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    for _ in 0..11 {
        holder
            .batch_execute("BEGIN; UPDATE counter SET v = v WHERE id = 1;")
            .await
            .unwrap();
        let u = updater.clone();
        let update = tokio::spawn(async move {
            u.execute("UPDATE counter SET v = v + 1 WHERE id = 1", &[])
                .await
        });
        let start = std::time::Instant::now();
        loop {
            let waiting: bool = holder
                .query_one(
                    "SELECT wait_event_type IS NOT DISTINCT FROM 'Lock'
                       FROM pg_stat_activity WHERE pid = $1",
                    &[&pid],
                )
                .await
                .unwrap()
                .get(0);
            if waiting {
                break;
            }
            assert!(start.elapsed() < DEADLINE, "the update never waited");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        holder.batch_execute("COMMIT;").await.unwrap();
        update.await.unwrap().unwrap();
    }

    // The updates waited at least 100 ms each: far above this limit.
    let t = ["slow_query_ms=20"];
    let start = std::time::Instant::now();
    let r = loop {
        let r = doctor(&c, "slow_queries", &t).await;
        let has = |needle: &str| r.findings.iter().any(|f| f.detail.contains(needle));
        if has("UPDATE counter") && has("pg_sleep") {
            break r;
        }
        assert!(start.elapsed() < DEADLINE, "{:#?}", r.findings);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    let of = |needle: &str| {
        r.findings
            .iter()
            .find(|f| f.detail.contains(needle))
            .unwrap()
            .clone()
    };
    let update = of("UPDATE counter");
    assert_eq!(
        update.severity,
        pgw_doctor::Severity::Warning,
        "{update:#?}"
    );
    assert!(update.detail.contains("waits"), "{}", update.detail);
    let sleep = of("pg_sleep");
    assert_eq!(sleep.severity, pgw_doctor::Severity::Info, "{sleep:#?}");
    for f in [&update, &sleep] {
        let advice = f.remediation.join(" ");
        assert!(
            !advice.contains("EXPLAIN") && !advice.contains("CREATE INDEX"),
            "{f:#?}"
        );
        assert!(advice.starts_with("action: "), "{f:#?}");
    }
    assert!(update.remediation[0].contains("blocks it"), "{update:#?}");
    assert!(sleep.remediation[0].contains("pg_sleep"), "{sleep:#?}");
}
