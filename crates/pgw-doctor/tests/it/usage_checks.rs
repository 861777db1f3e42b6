//! Usage and statistics checks: unused_index, seq_scan_heavy, xid_wraparound,
//! slow_queries. Each test plants the problem on a cluster of its own, sees the finding,
//! and where the remediation is SQL runs it and sees the finding gone; seq_scan_heavy's and
//! the slow statements' remediations are actions, so their tests take the action by hand.

use std::time::{Duration, Instant};

use pgw_cluster::Cluster;
use pgw_doctor::{Options, Severity, Thresholds};

use crate::{cluster, doctor, found, remediate, until};

#[tokio::test]
async fn unused_index_found_and_dropped() {
    let c = cluster();
    c.psql(
        "postgres",
        r#"CREATE SCHEMA "user";
           CREATE TABLE "user"."Items" (id int PRIMARY KEY, a int, b int, u int);
           INSERT INTO "user"."Items" SELECT g, g % 100, g, g FROM generate_series(1, 5000) g;
           CREATE INDEX "Items_a" ON "user"."Items" (a);       -- never scanned
           CREATE INDEX items_b ON "user"."Items" (b);         -- scanned below
           CREATE UNIQUE INDEX items_u ON "user"."Items" (u);  -- unique: never reported
           ANALYZE "user"."Items";"#,
    )
    .unwrap();
    c.psql(
        "postgres",
        "SET enable_seqscan = off; SET enable_bitmapscan = off;
         SELECT count(*) FROM \"user\".\"Items\" WHERE b = 42;",
    )
    .unwrap();
    let t = ["unused_index_min_mb=0"];
    let r = until(&c, "unused_index", &t, "items_b scanned", |r| {
        !found(r, "unused_index", "Items_a").is_empty()
            && found(r, "unused_index", "items_b").is_empty()
    })
    .await;
    let flagged: Vec<&str> = r
        .findings
        .iter()
        .filter_map(|f| f.object.as_deref())
        .collect();
    // The primary key, the unique index and the scanned index are not reported.
    assert_eq!(flagged, ["\"user\".\"Items_a\""], "{:#?}", r.findings);
    let f = found(&r, "unused_index", "Items_a")[0].clone();
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.database.as_deref(), Some("postgres"));
    assert!(
        f.detail.contains("since the server started"),
        "{}",
        f.detail
    );
    assert!(f.detail.contains("replica"), "{}", f.detail);
    assert!(f.detail.contains("kB"), "{}", f.detail);
    assert_eq!(
        f.remediation,
        ["DROP INDEX CONCURRENTLY \"user\".\"Items_a\";"]
    );

    // At the default 10 MB minimum a small index is not reported.
    let r = doctor(&c, "unused_index", &[]).await;
    assert!(r.findings.is_empty(), "{:#?}", r.findings);

    remediate(&c, &f);
    let r = doctor(&c, "unused_index", &t).await;
    assert!(
        found(&r, "unused_index", "Items_a").is_empty(),
        "{:#?}",
        r.findings
    );

    // After a statistics reset the detail says since when.
    c.psql("postgres", "SELECT pg_stat_reset();").unwrap();
    let r = until(&c, "unused_index", &t, "items_b after reset", |r| {
        !found(r, "unused_index", "items_b").is_empty()
    })
    .await;
    let f = found(&r, "unused_index", "items_b")[0];
    assert!(
        f.detail.contains("since the statistics reset at"),
        "{}",
        f.detail
    );
}

#[tokio::test]
async fn seq_scan_heavy_found_and_indexed() {
    let c = cluster();
    c.psql(
        "postgres",
        r#"CREATE TABLE public."Scanned" (id int, v int);
           INSERT INTO public."Scanned" SELECT g, g FROM generate_series(1, 2000) g;
           CREATE TABLE public.tiny (id int);
           INSERT INTO public.tiny SELECT generate_series(1, 10);
           ANALYZE public."Scanned", public.tiny;"#,
    )
    .unwrap();
    let scans = "SELECT count(*) FROM public.\"Scanned\" WHERE v = 7;\n\
                 SELECT count(*) FROM public.tiny;\n"
        .repeat(12);
    c.psql("postgres", &scans).unwrap();
    let t = ["seq_scan_min_rows=1000"];
    let r = until(&c, "seq_scan_heavy", &t, "the finding", |r| {
        !found(r, "seq_scan_heavy", "Scanned").is_empty()
    })
    .await;
    let f = found(&r, "seq_scan_heavy", "Scanned")[0];
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.object.as_deref(), Some("public.\"Scanned\""));
    assert!(f.detail.contains("0 index scans"), "{}", f.detail);
    assert!(
        f.remediation.join(" ").contains("pg_stat_statements"),
        "{:?}",
        f.remediation
    );
    // Below seq_scan_min_rows.
    assert!(
        found(&r, "seq_scan_heavy", "tiny").is_empty(),
        "{:#?}",
        r.findings
    );
    // At the default 100000 rows the table is too small.
    let r = doctor(&c, "seq_scan_heavy", &[]).await;
    assert!(r.findings.is_empty(), "{:#?}", r.findings);

    // The remediation is an action: index the filtered column and let queries use it.
    c.psql(
        "postgres",
        &format!(
            "CREATE INDEX CONCURRENTLY scanned_v ON public.\"Scanned\" (v);\n{}",
            "SELECT count(*) FROM public.\"Scanned\" WHERE v = 7;\n".repeat(5)
        ),
    )
    .unwrap();
    until(&c, "seq_scan_heavy", &t, "the finding gone", |r| {
        found(r, "seq_scan_heavy", "Scanned").is_empty()
    })
    .await;
}

#[tokio::test]
async fn xid_wraparound_found_and_frozen() {
    let c = cluster();
    c.psql(
        "postgres",
        r#"CREATE TABLE public."Old" (id int, t text) WITH (autovacuum_enabled = false);
           INSERT INTO public."Old" VALUES (1, repeat('x', 10000));"#,
    )
    .unwrap();
    // A few hundred transactions, each taking an xid.
    c.psql("postgres", &"SELECT txid_current();\n".repeat(400))
        .unwrap();
    // 0.0000001 of 2^31 is 215 transactions.
    let t = ["xid_warning_share=0.0000001", "xid_critical_share=0.5"];
    let r = doctor(&c, "xid_wraparound", &t).await;
    let f = found(&r, "xid_wraparound", "\"Old\"");
    assert_eq!(f.len(), 1, "{:#?}", r.findings);
    let f = f[0].clone();
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.database.as_deref(), Some("postgres"));
    assert!(
        f.detail.contains("autovacuum_freeze_max_age"),
        "{}",
        f.detail
    );
    assert!(f.detail.contains("remaining"), "{}", f.detail);
    assert_eq!(
        f.remediation,
        ["VACUUM (FREEZE, VERBOSE) \"public\".\"Old\";"]
    );
    let db: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.object.as_deref() == Some("postgres"))
        .collect();
    assert_eq!(db.len(), 1, "{:#?}", r.findings);
    let db = db[0].clone();
    assert_eq!(db.severity, Severity::Warning);
    assert!(db.detail.contains("public.\"Old\""), "{}", db.detail);
    assert_eq!(db.remediation, ["VACUUM (FREEZE);"]);
    // Critical past the critical share.
    let crit = [
        "xid_warning_share=0.0000001",
        "xid_critical_share=0.0000001",
    ];
    let r = doctor(&c, "xid_wraparound", &crit).await;
    assert_eq!(
        found(&r, "xid_wraparound", "Old")[0].severity,
        Severity::Critical
    );
    // Nothing at the defaults.
    let r = doctor(&c, "xid_wraparound", &[]).await;
    assert!(r.findings.is_empty(), "{:#?}", r.findings);

    // Freezing the table clears its finding; the database's age is still held back by the
    // system catalogs until the whole database is frozen.
    remediate(&c, &f);
    let r = doctor(&c, "xid_wraparound", &t).await;
    assert!(
        found(&r, "xid_wraparound", "Old").is_empty(),
        "{:#?}",
        r.findings
    );
    remediate(&c, &db);
    let r = doctor(&c, "xid_wraparound", &t).await;
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[tokio::test]
async fn slow_queries_found() {
    let c = Cluster::builder()
        .setting("shared_preload_libraries", "pg_stat_statements")
        .start()
        .expect("start a cluster with pg_stat_statements preloaded");
    // Loaded but not created: the finding creates it.
    let r = doctor(&c, "slow_queries", &[]).await;
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    let f = r.findings[0].clone();
    assert_eq!(f.severity, Severity::Info);
    assert_eq!(f.remediation, ["CREATE EXTENSION pg_stat_statements;"]);
    remediate(&c, &f);

    // Genuinely slow: a hash join of two sequential scans over generated rows.
    c.psql(
        "postgres",
        "CREATE TABLE big AS SELECT g AS id, g % 1000 AS k FROM generate_series(1, 200000) g;
         ANALYZE big;",
    )
    .unwrap();
    c.psql(
        "postgres",
        &"SELECT count(*) FROM big a JOIN big b ON a.id = b.id + 1 WHERE a.k <> b.k;\n\
          SELECT count(*) FROM generate_series(1, 1000);\n"
            .repeat(11),
    )
    .unwrap();
    // The join takes tens of ms at least, the small series a fraction of one.
    let r = doctor(&c, "slow_queries", &["slow_query_ms=10"]).await;
    let slow: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .collect();
    assert_eq!(slow.len(), 1, "{:#?}", r.findings);
    let f = slow[0];
    assert!(f.detail.contains("JOIN big b"), "{}", f.detail);
    assert!(f.detail.contains("11 calls"), "{}", f.detail);
    assert!(
        f.object.as_deref().unwrap_or("").starts_with("queryid "),
        "{f:#?}"
    );
    assert_eq!(f.database.as_deref(), Some("postgres"));
    assert!(
        f.remediation
            .join(" ")
            .starts_with("action: EXPLAIN (ANALYZE, BUFFERS)"),
        "{:?}",
        f.remediation
    );
    // The fast statement is among the top statements, as info.
    assert!(
        r.findings
            .iter()
            .any(|f| f.severity == Severity::Info && f.detail.contains("generate_series")),
        "{:#?}",
        r.findings
    );
    assert!(r.findings.len() <= 1 + 5, "{:#?}", r.findings);
    // More calls needed than it has: no warning; top 1 only.
    let r = doctor(
        &c,
        "slow_queries",
        &["slow_query_min_calls=12", "top_statements=1"],
    )
    .await;
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    assert_eq!(r.findings[0].severity, Severity::Info);
    // A higher limit in ms: no warning.
    let r = doctor(&c, "slow_queries", &["slow_query_ms=1000000"]).await;
    assert!(
        r.findings.iter().all(|f| f.severity == Severity::Info),
        "{:#?}",
        r.findings
    );
}

#[tokio::test]
async fn slow_queries_missing_library_enabled() {
    let c = Cluster::builder()
        .setting("shared_preload_libraries", "auto_explain")
        .start()
        .expect("start a cluster with auto_explain preloaded");
    let r = doctor(&c, "slow_queries", &[]).await;
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    let f = r.findings[0].clone();
    assert_eq!(f.severity, Severity::Info);
    assert_eq!(f.object.as_deref(), Some("shared_preload_libraries"));
    // The other preloaded library is kept.
    assert_eq!(
        f.remediation,
        ["ALTER SYSTEM SET \"shared_preload_libraries\" = 'auto_explain', 'pg_stat_statements';"]
    );
    assert!(f.detail.contains("restart"), "{}", f.detail);
    assert!(
        f.detail.contains("CREATE EXTENSION pg_stat_statements;"),
        "{}",
        f.detail
    );
    remediate(&c, &f);
    c.restart().unwrap();
    assert_eq!(
        c.psql("postgres", "SHOW shared_preload_libraries;")
            .unwrap(),
        "auto_explain, pg_stat_statements"
    );
    // Now loaded: the next step is the extension.
    let r = doctor(&c, "slow_queries", &[]).await;
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    let f = r.findings[0].clone();
    assert_eq!(f.remediation, ["CREATE EXTENSION pg_stat_statements;"]);
    remediate(&c, &f);
    let r = doctor(&c, "slow_queries", &[]).await;
    assert!(
        r.findings
            .iter()
            .all(|f| f.object.as_deref() != Some("shared_preload_libraries")
                && f.object.as_deref() != Some("pg_stat_statements")),
        "{:#?}",
        r.findings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xid_wraparound_info_past_autovacuum_freeze_max_age() {
    let c = Cluster::builder()
        .setting("autovacuum_freeze_max_age", "100000")
        .start()
        .expect("start a cluster with a low autovacuum_freeze_max_age");
    c.psql(
        "postgres",
        r#"CREATE TABLE public."Aging" (id int) WITH (autovacuum_enabled = false);
           INSERT INTO public."Aging" VALUES (1);"#,
    )
    .unwrap();
    // An open snapshot keeps any vacuum, the anti-wraparound autovacuum included, from
    // freezing past it.
    let (holder, _) = pgw_common::connect_dsn(Some(&c.dsn()))
        .await
        .expect("connect a test session");
    holder
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
        .await
        .expect("take a snapshot");
    c.psql(
        "postgres",
        "SET synchronous_commit = off;
         DO $$ BEGIN
           FOR i IN 1..100500 LOOP PERFORM txid_current(); COMMIT; END LOOP;
         END $$;",
    )
    .unwrap();
    let r = doctor(&c, "xid_wraparound", &[]).await;
    let f = found(&r, "xid_wraparound", "Aging");
    assert_eq!(f.len(), 1, "{:#?}", r.findings);
    let f = f[0].clone();
    assert_eq!(f.severity, Severity::Info);
    assert!(
        f.detail
            .contains("autovacuum_freeze_max_age 100000 past it"),
        "{}",
        f.detail
    );
    // Below the warning share: no database finding, nothing above info.
    assert!(
        r.findings.iter().all(|f| f.severity == Severity::Info),
        "{:#?}",
        r.findings
    );

    holder.batch_execute("COMMIT").await.expect("release");
    remediate(&c, &f);
    let r = doctor(&c, "xid_wraparound", &[]).await;
    assert!(
        found(&r, "xid_wraparound", "Aging").is_empty(),
        "{:#?}",
        r.findings
    );
}

/// A `pg_monitor`-only role runs the four checks without being skipped, and sees the
/// superuser's statements' text in pg_stat_statements.
#[tokio::test]
async fn usage_checks_run_as_pg_monitor() {
    let c = Cluster::builder()
        .setting("shared_preload_libraries", "pg_stat_statements")
        .start()
        .expect("start a cluster with pg_stat_statements preloaded");
    c.psql(
        "postgres",
        r#"CREATE EXTENSION pg_stat_statements;
           CREATE ROLE mon LOGIN PASSWORD 'mon-pw' IN ROLE pg_monitor;
           CREATE TABLE public.t (id int, v int);
           INSERT INTO public.t SELECT g, g FROM generate_series(1, 2000) g;
           CREATE INDEX t_v ON public.t (v);
           ANALYZE public.t;"#,
    )
    .unwrap();
    c.psql(
        "postgres",
        &"SELECT pg_sleep(0.06), 'by the superuser';\nSELECT count(*) FROM public.t;\n\
          SELECT txid_current();\nSELECT txid_current();\nSELECT txid_current();\n"
            .repeat(11),
    )
    .unwrap();
    let mut t = Thresholds::default();
    for a in [
        "unused_index_min_mb=0",
        "seq_scan_min_rows=1000",
        "xid_warning_share=0.00000001",
    ] {
        t.set(a).unwrap();
    }
    for check in [
        "unused_index",
        "seq_scan_heavy",
        "xid_wraparound",
        "slow_queries",
    ] {
        let opts = Options {
            dsn: Some(c.dsn_for("mon", "mon-pw", "postgres")),
            dbname: None,
            only: Some(check.to_string()),
            thresholds: t.clone(),
            host: Default::default(),
        };
        let start = Instant::now();
        loop {
            let report = pgw_doctor::run(&opts).await.expect("doctor runs as mon");
            assert!(report.skipped.is_empty(), "{check}: {:?}", report.skipped);
            let seen = match check {
                "unused_index" => !found(&report, check, "t_v").is_empty(),
                "seq_scan_heavy" => !found(&report, check, "public.t").is_empty(),
                "xid_wraparound" => !found(&report, check, "public.t").is_empty(),
                "slow_queries" => {
                    // Utility statements are not normalized: a password is cut.
                    let role = report
                        .findings
                        .iter()
                        .find(|f| f.detail.contains("CREATE ROLE mon"));
                    assert!(
                        role.is_none_or(|f| !f.detail.contains("mon-pw")
                            && f.detail.ends_with("PASSWORD <cut>")),
                        "{role:#?}"
                    );
                    report
                        .findings
                        .iter()
                        .any(|f| f.detail.contains("as postgres): SELECT pg_sleep($1), $2"))
                }
                _ => unreachable!("{check}"),
            };
            if seen {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{check} as mon: {:#?}",
                report.findings
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}
