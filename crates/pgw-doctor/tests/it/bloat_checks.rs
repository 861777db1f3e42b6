//! table_bloat: the statistics-based estimate against pgstattuple's exact figures on
//! freshly loaded tables of several layouts (none reported), a 90 % deleted table
//! (reported, rebuilt, gone), and what a pg_monitor role sees of it (pgstattuple_approx's
//! figures, or the table named among the skipped, never nothing).

use pgw_cluster::Cluster;
use pgw_doctor::{Report, Severity};

use crate::{cluster, doctor, doctor_as, found, remediate};

/// This file's check over `dsn`, skipped objects allowed.
async fn bloat_as(dsn: String, thresholds: &[&str]) -> Report {
    doctor_as(dsn, "table_bloat", thresholds).await
}

/// The estimated wasted share of `table` (from the finding's perfdata, with every table
/// reported: warning at 0).
fn estimate(r: &Report, table: &str) -> f64 {
    let f = found(r, "table_bloat", table);
    assert_eq!(f.len(), 1, "{table}: {:#?}", r.findings);
    let perf = f[0].perfdata.as_deref().expect("perfdata");
    let value = perf.split('=').nth(1).and_then(|v| v.split(';').next());
    value.and_then(|v| v.parse().ok()).expect("a share")
}

/// pgstattuple's wasted share of `table`: free space beyond the fillfactor's reserve, plus
/// dead tuples.
fn exact(c: &Cluster, table: &str, fillfactor: f64) -> f64 {
    let out = c
        .psql(
            "postgres",
            &format!(
                "SELECT free_percent + dead_tuple_percent FROM pgstattuple('public.{table}');"
            ),
        )
        .unwrap();
    let pct: f64 = out.trim().parse().expect("pgstattuple's percent");
    ((pct - (100.0 - fillfactor)).max(0.0)) / 100.0
}

const LAYOUTS: &[(&str, f64)] = &[
    ("bool_int8", 100.0),
    ("texts", 100.0),
    ("nullable", 100.0),
    ("ff70", 70.0),
    ("wide", 100.0),
];

#[tokio::test]
async fn table_bloat_estimate_matches_pgstattuple_on_fresh_tables() {
    let c = cluster();
    c.psql(
        "postgres",
        r#"CREATE EXTENSION pgstattuple;
           CREATE TABLE public.bool_int8 (a bool, b int8, c bool, d int8, e bool, f int8)
             WITH (autovacuum_enabled = false);
           INSERT INTO public.bool_int8
                SELECT g % 2 = 0, g, g % 3 = 0, g * 2, g % 5 = 0, g * 3
                  FROM generate_series(1, 200000) g;
           CREATE TABLE public.texts (id int, name text, note text, n int2)
             WITH (autovacuum_enabled = false);
           INSERT INTO public.texts
                SELECT g, 'name ' || g, md5(g::text) || repeat('x', g % 40), (g % 100)::int2
                  FROM generate_series(1, 100000) g;
           CREATE TABLE public.nullable (id int8, a int4, b text, c int8, d bool, e timestamptz)
             WITH (autovacuum_enabled = false);
           INSERT INTO public.nullable
                SELECT g, CASE WHEN g % 5 = 0 THEN g END,
                       CASE WHEN g % 4 = 0 THEN md5(g::text) END,
                       CASE WHEN g % 10 = 0 THEN g END, NULL,
                       CASE WHEN g % 3 = 0 THEN now() END
                  FROM generate_series(1, 200000) g;
           CREATE TABLE public.ff70 (id int, pad text)
             WITH (fillfactor = 70, autovacuum_enabled = false);
           INSERT INTO public.ff70 SELECT g, md5(g::text) FROM generate_series(1, 100000) g;
           CREATE TABLE public.wide (id int8, body text) WITH (autovacuum_enabled = false);
           INSERT INTO public.wide
                SELECT g, (SELECT string_agg(md5((g * 1000 + i)::text), '')
                             FROM generate_series(1, 100) i)
                  FROM generate_series(1, 20000) g;
           ANALYZE;"#,
    )
    .unwrap();
    let all = [
        "bloat_min_mb=0",
        "bloat_warning_share=0",
        "bloat_critical_share=1",
    ];
    let report = doctor(&c, "table_bloat", &all).await;
    for (table, fillfactor) in LAYOUTS {
        let est = estimate(&report, table);
        let real = exact(&c, table, *fillfactor);
        assert!(
            (est - real).abs() < 0.05,
            "{table}: estimated {est:.4}, pgstattuple {real:.4}"
        );
    }
    // With the default shares none of them is reported, even with no minimum size.
    let report = doctor(&c, "table_bloat", &["bloat_min_mb=0"]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
}

#[tokio::test]
async fn table_bloat_found_and_rebuilt() {
    let c = cluster();
    c.psql(
        "postgres",
        r#"CREATE TABLE public."Bloated" (id int, pad text) WITH (autovacuum_enabled = false);
           INSERT INTO public."Bloated" SELECT g, md5(g::text) || md5(g::text)
             FROM generate_series(1, 200000) g;
           ANALYZE public."Bloated";
           DELETE FROM public."Bloated" WHERE id % 10 < 9;
           VACUUM public."Bloated";
           CREATE TABLE public.lean (a bool, b int8, c bool, d int8)
             WITH (autovacuum_enabled = false);
           INSERT INTO public.lean SELECT true, g, false, g FROM generate_series(1, 200000) g;
           VACUUM ANALYZE public.lean;"#,
    )
    .unwrap();
    let small = ["bloat_min_mb=1"];
    let report = doctor(&c, "table_bloat", &small).await;
    let f = found(&report, "table_bloat", "Bloated");
    assert_eq!(f.len(), 1, "{:#?}", report.findings);
    let f = f[0].clone();
    assert_eq!(f.severity, Severity::Critical, "{f:#?}");
    assert_eq!(f.object.as_deref(), Some("public.\"Bloated\""));
    assert!(f.detail.contains("pg_repack"), "{}", f.detail);
    assert_eq!(
        f.remediation,
        [
            "VACUUM FULL \"public\".\"Bloated\";",
            "ANALYZE \"public\".\"Bloated\";"
        ]
    );
    assert!(
        found(&report, "table_bloat", "lean").is_empty(),
        "{:#?}",
        report.findings
    );
    // Below a minimum waste of 20 MB: ignored.
    let report = doctor(&c, "table_bloat", &["bloat_min_mb=20"]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);

    remediate(&c, &f);
    let report = doctor(&c, "table_bloat", &["bloat_min_mb=0"]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
}

/// A pg_monitor role cannot read the columns' statistics: without pgstattuple the bloated
/// table is listed as skipped, with pgstattuple it is measured by pgstattuple_approx; a
/// never analyzed table is skipped as such.
#[tokio::test]
async fn table_bloat_as_pg_monitor_is_never_silent() {
    let c = cluster();
    c.psql(
        "postgres",
        r#"CREATE ROLE mon LOGIN PASSWORD 'mon-pw' IN ROLE pg_monitor;
           CREATE TABLE public."Bloated" (id int, pad text) WITH (autovacuum_enabled = false);
           INSERT INTO public."Bloated" SELECT g, md5(g::text) || md5(g::text)
             FROM generate_series(1, 200000) g;
           ANALYZE public."Bloated";
           DELETE FROM public."Bloated" WHERE id % 10 < 9;
           VACUUM public."Bloated";"#,
    )
    .unwrap();
    let small = ["bloat_min_mb=1"];
    // The superuser reads the statistics: a finding.
    let report = doctor(&c, "table_bloat", &small).await;
    assert_eq!(
        found(&report, "table_bloat", "Bloated").len(),
        1,
        "{:#?}",
        report.findings
    );

    // pg_monitor without pgstattuple: named among the skipped.
    let mon = || c.dsn_for("mon", "mon-pw", "postgres");
    let report = bloat_as(mon(), &small).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    let skipped: Vec<_> = report
        .skipped
        .iter()
        .filter(|s| s.object.as_deref() == Some("public.\"Bloated\""))
        .collect();
    assert_eq!(skipped.len(), 1, "{:#?}", report.skipped);
    assert_eq!(skipped[0].check, "table_bloat");
    assert!(
        skipped[0].reason.contains("no column statistics readable"),
        "{}",
        skipped[0].reason
    );

    // With pgstattuple, pgstattuple_approx (granted to pg_stat_scan_tables) measures it.
    c.psql("postgres", "CREATE EXTENSION pgstattuple;").unwrap();
    let report = bloat_as(mon(), &small).await;
    assert!(report.skipped.is_empty(), "{:#?}", report.skipped);
    let f = found(&report, "table_bloat", "Bloated");
    assert_eq!(f.len(), 1, "{:#?}", report.findings);
    assert_eq!(f[0].severity, Severity::Critical, "{:#?}", f[0]);
    assert!(
        f[0].detail.contains("pgstattuple_approx"),
        "{}",
        f[0].detail
    );
    let f = f[0].clone();
    remediate(&c, &f);
    let report = bloat_as(mon(), &["bloat_min_mb=0"]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert!(report.skipped.is_empty(), "{:#?}", report.skipped);

    // A never analyzed table, without pgstattuple: skipped as never analyzed, even for the
    // superuser.
    c.psql(
        "postgres",
        r#"DROP EXTENSION pgstattuple;
           CREATE TABLE public.fresh (id int, pad text) WITH (autovacuum_enabled = false);
           INSERT INTO public.fresh SELECT g, md5(g::text) FROM generate_series(1, 100000) g;"#,
    )
    .unwrap();
    let report = bloat_as(c.dsn(), &small).await;
    let skipped: Vec<_> = report
        .skipped
        .iter()
        .filter(|s| s.object.as_deref() == Some("public.fresh"))
        .collect();
    assert_eq!(skipped.len(), 1, "{:#?}", report.skipped);
    assert!(
        skipped[0].reason.starts_with("never analyzed"),
        "{}",
        skipped[0].reason
    );
}
