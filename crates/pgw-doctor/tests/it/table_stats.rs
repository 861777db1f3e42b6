//! Table statistics checks: vacuum_stale, analyze_stale, autovacuum_large_table,
//! cache_hit_ratio, and table_bloat on healthy tables (its own tests are in bloat_checks.rs). Each test plants the problem, sees the finding, runs the
//! remediation the finding gave (cache_hit_ratio's is an action, see its test), and sees
//! the finding gone.

use std::time::Duration;

use pgw_cluster::Cluster;
use pgw_doctor::Severity;

use crate::{cluster, doctor, found, poll, remediate, until};

const TABLE_STATS_CHECKS: &[&str] = &[
    "vacuum_stale",
    "analyze_stale",
    "autovacuum_large_table",
    "cache_hit_ratio",
    "table_bloat",
];

/// Waits for the sessions psql just closed to end: psql returns once it has disconnected,
/// and the backend flushes its statistics as it exits, a moment later.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1000)).await;
}

#[tokio::test]
async fn vacuum_stale_found_and_vacuumed() {
    let c = cluster();
    c.psql(
        "postgres",
        r#"CREATE TABLE public."Stale" (id int) WITH (autovacuum_enabled = false);
           INSERT INTO public."Stale" SELECT generate_series(1, 20000);
           VACUUM public."Stale";
           DELETE FROM public."Stale" WHERE id <= 8000;
           -- few dead rows relative to the table: below autovacuum's own trigger
           CREATE TABLE public.churn (id int) WITH (autovacuum_enabled = false);
           INSERT INTO public.churn SELECT generate_series(1, 20000);
           VACUUM public.churn;
           DELETE FROM public.churn WHERE id <= 100;"#,
    )
    .unwrap();
    let now = ["vacuum_stale_hours=0"];
    let report = poll(&c, "vacuum_stale", &now, "Stale", true).await;
    let f = found(&report, "vacuum_stale", "\"Stale\"");
    assert_eq!(f.len(), 1, "{:#?}", report.findings);
    let f = f[0].clone();
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.database.as_deref(), Some("postgres"));
    assert_eq!(f.object.as_deref(), Some("public.\"Stale\""));
    assert!(f.detail.contains("8000 dead rows"), "{}", f.detail);
    assert!(f.detail.contains("trigger of 4050"), "{}", f.detail);
    assert!(f.detail.contains("disabled for this table"), "{}", f.detail);
    assert_eq!(f.remediation, ["VACUUM (ANALYZE) \"public\".\"Stale\";"]);
    assert!(
        found(&report, "vacuum_stale", "churn").is_empty(),
        "{:#?}",
        report.findings
    );
    // Vacuumed moments ago: not stale with the default 24 hours.
    let report = doctor(&c, "vacuum_stale", &[]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);

    remediate(&c, &f);
    poll(&c, "vacuum_stale", &now, "Stale", false).await;
}

#[tokio::test]
async fn vacuum_stale_never_vacuumed_uses_table_settings() {
    let c = cluster();
    // A per-table threshold above the dead rows: autovacuum would not act, nor do we.
    c.psql(
        "postgres",
        r#"CREATE TABLE public.tuned (id int)
               WITH (autovacuum_enabled = false, autovacuum_vacuum_threshold = 50000);
           INSERT INTO public.tuned SELECT generate_series(1, 20000);
           DELETE FROM public.tuned WHERE id <= 10000;
           CREATE TABLE public.never (id int) WITH (autovacuum_enabled = false);
           INSERT INTO public.never SELECT generate_series(1, 20000);
           DELETE FROM public.never WHERE id <= 10000;"#,
    )
    .unwrap();
    // Never vacuumed: stale whatever the hours.
    let report = poll(&c, "vacuum_stale", &[], "never", true).await;
    let f = found(&report, "vacuum_stale", "never")[0].clone();
    assert!(f.detail.contains("last (auto)vacuum never"), "{}", f.detail);
    assert!(
        found(&report, "vacuum_stale", "tuned").is_empty(),
        "{:#?}",
        report.findings
    );
    remediate(&c, &f);
    poll(
        &c,
        "vacuum_stale",
        &["vacuum_stale_hours=0"],
        "never",
        false,
    )
    .await;
}

#[tokio::test]
async fn analyze_stale_found_and_analyzed() {
    let c = cluster();
    c.psql(
        "postgres",
        r#"CREATE TABLE public."Unanalyzed" (id int) WITH (autovacuum_enabled = false);
           INSERT INTO public."Unanalyzed" SELECT generate_series(1, 20000);
           CREATE TABLE public.changed (id int) WITH (autovacuum_enabled = false);
           INSERT INTO public.changed SELECT generate_series(1, 20000);
           CREATE TABLE public.calm (id int) WITH (autovacuum_enabled = false);
           INSERT INTO public.calm SELECT generate_series(1, 20000);"#,
    )
    .unwrap();
    // Each step in its own session: a backend's pending counts of the load must reach the
    // shared statistics before ANALYZE resets them, or they land after and count as changes.
    settle().await;
    c.psql("postgres", "ANALYZE public.changed; ANALYZE public.calm;")
        .unwrap();
    c.psql(
        "postgres",
        "UPDATE public.changed SET id = id + 1 WHERE id <= 6000;
         UPDATE public.calm SET id = id + 1 WHERE id <= 1000;",
    )
    .unwrap();
    let report = poll(&c, "analyze_stale", &[], "Unanalyzed", true).await;
    let f = found(&report, "analyze_stale", "Unanalyzed")[0].clone();
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.object.as_deref(), Some("public.\"Unanalyzed\""));
    assert!(f.detail.contains("20000 rows changed"), "{}", f.detail);
    assert!(f.detail.contains("never"), "{}", f.detail);
    assert_eq!(f.remediation, ["ANALYZE \"public\".\"Unanalyzed\";"]);
    // Analyzed moments ago: not stale with the default 24 hours ...
    assert!(
        found(&report, "analyze_stale", "changed").is_empty(),
        "{:#?}",
        report.findings
    );
    // ... but stale with 0 hours: 30 % changed, over the 20 % share; calm's 5 % is not.
    let now = ["analyze_stale_hours=0"];
    let report = poll(&c, "analyze_stale", &now, "changed", true).await;
    let g = found(&report, "analyze_stale", "changed")[0].clone();
    assert!(g.detail.contains("6000 rows changed"), "{}", g.detail);
    assert!(g.detail.contains("30 %"), "{}", g.detail);
    assert!(
        found(&report, "analyze_stale", "calm").is_empty(),
        "{:#?}",
        report.findings
    );

    remediate(&c, &f);
    remediate(&c, &g);
    poll(&c, "analyze_stale", &now, "Unanalyzed", false).await;
    poll(&c, "analyze_stale", &now, "changed", false).await;
}

#[tokio::test]
async fn autovacuum_large_table_found_and_tuned() {
    let c = cluster();
    c.psql(
        "postgres",
        r#"CREATE SCHEMA "order";
           CREATE TABLE "order"."Big ""one""" (id int);
           INSERT INTO "order"."Big ""one""" SELECT generate_series(1, 5000);
           CREATE TABLE public.big_tuned (id int) WITH (autovacuum_vacuum_scale_factor = 0.01);
           INSERT INTO public.big_tuned SELECT generate_series(1, 5000);
           CREATE TABLE public.big_quiet (id int);
           INSERT INTO public.big_quiet SELECT generate_series(1, 5000);
           CREATE TABLE public.small (id int);
           INSERT INTO public.small SELECT generate_series(1, 500);
           ANALYZE;
           -- churn: Big "one", big_tuned and small change; big_quiet does not
           UPDATE "order"."Big ""one""" SET id = id WHERE id <= 2000;
           UPDATE public.big_tuned SET id = id WHERE id <= 2000;
           UPDATE public.small SET id = id;"#,
    )
    .unwrap();
    let lowered = ["large_table_rows=1000"];
    let big = "\"order\".\"Big \"\"one\"\"\"";
    // The statistics reach the views within a second or so of the commit.
    let report = until(
        &c,
        "autovacuum_large_table",
        &lowered,
        "the churning large table",
        |r| !found(r, "autovacuum_large_table", "Big").is_empty(),
    )
    .await;
    let objects: Vec<_> = report
        .findings
        .iter()
        .filter_map(|f| f.object.as_deref())
        .collect();
    // big_quiet is as large but gains no dead rows; big_tuned has its own settings.
    assert_eq!(objects, vec![big], "{:#?}", report.findings);
    let f = report.findings[0].clone();
    assert_eq!(f.severity, Severity::Warning);
    assert!(f.detail.contains("about 5000 rows gaining"), "{}", f.detail);
    assert!(
        f.detail.contains("waits for 1050 dead rows"),
        "{}",
        f.detail
    );
    assert_eq!(
        f.remediation,
        [
            "ALTER TABLE \"order\".\"Big \"\"one\"\"\" SET (autovacuum_vacuum_scale_factor = 0, \
         autovacuum_vacuum_threshold = 10000, autovacuum_analyze_scale_factor = 0.01);"
        ]
    );
    // Not a large table with the default of a million rows.
    let report = doctor(&c, "autovacuum_large_table", &[]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    // A change rate above the limit is needed: 2,000 dead rows in seconds is far more than
    // this a day, so raise the limit past any rate the test can make.
    let strict = [
        "large_table_rows=1000",
        "large_table_dead_rows_per_day=1e12",
    ];
    let report = doctor(&c, "autovacuum_large_table", &strict).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);

    remediate(&c, &f);
    let report = doctor(&c, "autovacuum_large_table", &lowered).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
}

/// cache_hit_ratio's remediation is an action (memory, shared_buffers, the queries), not
/// SQL this test can run and then see the ratio recover: the ratio is cumulative since the
/// last statistics reset. So the test plants a genuinely low ratio (a table four times
/// shared_buffers, scanned three times through the bulk-read ring, with the counters reset
/// after the load), sees the findings, and sees
/// them go when the limits are relaxed.
#[tokio::test]
async fn cache_hit_ratio_low_on_table_larger_than_cache() {
    let c = Cluster::builder()
        .setting("shared_buffers", "16MB")
        .start()
        .expect("start a cluster with small shared_buffers");
    c.psql(
        "postgres",
        r#"CREATE TABLE public."Cold" (id int, pad text);
           INSERT INTO public."Cold" SELECT g, repeat('x', 100) FROM generate_series(1, 450000) g;
           CREATE TABLE public.hot (id int);
           INSERT INTO public.hot SELECT generate_series(1, 1000);"#,
    )
    .unwrap();
    // The load itself counts one buffer hit per row: start the counters afresh after it
    // (in a new session, once the load's counts are flushed), as a server whose workload is
    // reads would look.
    settle().await;
    c.psql("postgres", "SELECT pg_stat_reset();").unwrap();
    c.psql(
        "postgres",
        "SELECT count(*) FROM public.\"Cold\"; SELECT count(*) FROM public.\"Cold\";
         SELECT count(*) FROM public.\"Cold\"; SELECT count(*) FROM public.hot;",
    )
    .unwrap();
    let report = poll(&c, "cache_hit_ratio", &[], "Cold", true).await;
    let f = found(&report, "cache_hit_ratio", "\"Cold\"")[0].clone();
    assert_eq!(f.severity, Severity::Critical, "{f:#?}");
    assert_eq!(f.database.as_deref(), Some("postgres"));
    assert!(f.detail.contains("heap cache hit ratio"), "{}", f.detail);
    assert!(
        f.remediation.join(" ").starts_with("action: "),
        "{:?}",
        f.remediation
    );
    assert!(
        f.remediation.join(" ").contains("public.\"Cold\""),
        "{:?}",
        f.remediation
    );
    // Too few block requests on hot to judge.
    assert!(found(&report, "cache_hit_ratio", "hot").is_empty());
    // The database as a whole (object None) reads mostly from disk too.
    let db = report
        .findings
        .iter()
        .find(|f| f.object.is_none())
        .unwrap_or_else(|| panic!("no database finding: {:#?}", report.findings));
    assert!(
        db.detail.contains("database cache hit ratio"),
        "{}",
        db.detail
    );
    assert!(
        db.remediation.join(" ").contains("shared_buffers"),
        "{:?}",
        db.remediation
    );
    // Warning between the limits.
    let report = doctor(&c, "cache_hit_ratio", &["cache_hit_critical=0"]).await;
    assert_eq!(
        found(&report, "cache_hit_ratio", "Cold")[0].severity,
        Severity::Warning
    );
    // Relaxed limits: gone.
    let report = doctor(
        &c,
        "cache_hit_ratio",
        &["cache_hit_warning=0", "cache_hit_critical=0"],
    )
    .await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
}

#[tokio::test]
async fn healthy_tables_have_no_findings() {
    let c = cluster();
    c.psql(
        "postgres",
        r#"CREATE TABLE public.accounts (
               id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
               name text NOT NULL, note text, balance numeric, created timestamptz);
           INSERT INTO public.accounts (name, note, balance, created)
                SELECT 'a' || g, CASE WHEN g % 3 = 0 THEN NULL ELSE md5(g::text) END,
                       g * 1.5, now() FROM generate_series(1, 20000) g;
           CREATE TABLE public.events (id int, payload jsonb);
           INSERT INTO public.events
                SELECT g, jsonb_build_object('k', g, 'v', repeat('y', 50))
                  FROM generate_series(1, 20000) g;"#,
    )
    .unwrap();
    c.psql("postgres", "VACUUM ANALYZE;").unwrap();
    // Let the statistics of the load and of VACUUM ANALYZE reach the views.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for check in TABLE_STATS_CHECKS {
        let report = doctor(&c, check, &[]).await;
        let bad: Vec<_> = report
            .findings
            .iter()
            .filter(|f| f.severity > Severity::Info)
            .collect();
        assert!(bad.is_empty(), "{check}: {bad:#?}");
    }
    // The bloat estimate of freshly loaded tables is not pessimistic even with no minimum
    // size, and stale checks see freshly vacuumed and analyzed tables as clean at once.
    for (check, thresholds) in [
        ("table_bloat", "bloat_min_mb=0"),
        ("vacuum_stale", "vacuum_stale_hours=0"),
        ("analyze_stale", "analyze_stale_hours=0"),
    ] {
        let report = doctor(&c, check, &[thresholds]).await;
        assert!(
            report.findings.is_empty(),
            "{check}: {:#?}",
            report.findings
        );
    }
}

/// A bulk load (COPY reads each new page once and hits it hardly ever) and the VACUUM after
/// it make a table look cold when only upkeep has read it: neither counts, and a table is
/// judged only once queries scan it.
#[tokio::test]
async fn cache_hit_ratio_ignores_a_bulk_load_and_its_vacuum() {
    let c = Cluster::builder()
        .setting("shared_buffers", "16MB")
        .start()
        .expect("start a cluster with small shared_buffers");
    c.psql(
        "postgres",
        r#"CREATE TABLE public.loaded (id int PRIMARY KEY, pad text);
           COPY public.loaded (id) FROM PROGRAM 'seq 1 300000';
           VACUUM (ANALYZE) public.loaded;"#,
    )
    .unwrap();
    let low = ["cache_hit_min_blocks=100"];
    settle().await;
    // Not scanned by any query yet: not judged, however its counters read.
    let r = doctor(&c, "cache_hit_ratio", &low).await;
    assert!(
        found(&r, "cache_hit_ratio", "loaded").is_empty(),
        "{:#?}",
        r.findings
    );
    // A few index lookups: the table is in use, and its reads were the load's and vacuum's.
    c.psql(
        "postgres",
        "SELECT * FROM public.loaded WHERE id = 1; SELECT * FROM public.loaded WHERE id = 299999;",
    )
    .unwrap();
    settle().await;
    let r = doctor(&c, "cache_hit_ratio", &low).await;
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    // ... while its raw counters would have read as cold.
    let raw = c
        .psql(
            "postgres",
            "SELECT heap_blks_hit::float8 / (heap_blks_hit + heap_blks_read) < 0.95, heap_blks_hit, heap_blks_read FROM pg_statio_user_tables \
             WHERE relname = 'loaded';",
        )
        .unwrap();
    assert!(
        raw.trim().starts_with("t|"),
        "the load did not read as cold: {raw}"
    );
}
