//! index_bloat: the statistics-based estimate against pgstatindex's figures on freshly
//! built btree indexes of several layouts (none reported), a 90 % deleted index (reported,
//! rebuilt with the REINDEX CONCURRENTLY given, gone), and what a pg_monitor role sees of
//! it (pgstatindex's figures, or the index named among the skipped, never nothing).

use pgw_cluster::Cluster;
use pgw_doctor::{Report, Severity};

use crate::{cluster, doctor, doctor_as, found, remediate};

/// This file's check over `dsn`, skipped objects allowed.
async fn bloat_as(dsn: String, thresholds: &[&str]) -> Report {
    doctor_as(dsn, "index_bloat", thresholds).await
}

/// The estimated wasted share of `index` (from the finding's perfdata, with every index
/// reported: warning at 0), and the estimated size over the real one (from the detail: a
/// wasted share of 0 alone would hide an estimate that is too large).
fn estimate(r: &Report, index: &str) -> (f64, f64) {
    let f: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.check == "index_bloat" && f.object.as_deref() == Some(index))
        .collect();
    assert_eq!(f.len(), 1, "{index}: {:#?}", r.findings);
    let perf = f[0].perfdata.as_deref().expect("perfdata");
    let value = perf.split('=').nth(1).and_then(|v| v.split(';').next());
    let share = value.and_then(|v| v.parse().ok()).expect("a share");
    let mb_after = |marker: &str| -> f64 {
        let d = &f[0].detail;
        let rest = &d[d.find(marker).expect(marker) + marker.len()..];
        rest.split(' ').next().unwrap().parse().expect("MB")
    };
    let (est, real) = (mb_after("should fit in about "), mb_after(" MB wasted of "));
    (share, est / real)
}

/// pgstatindex's wasted share of `index`: leaf space beyond the fillfactor's reserve, and
/// empty and deleted pages, over the index's size.
fn exact(c: &Cluster, index: &str, fillfactor: f64) -> f64 {
    let out = c
        .psql(
            "postgres",
            &format!(
                "SELECT leaf_pages, avg_leaf_density, empty_pages + deleted_pages,
                        index_size / current_setting('block_size')::int
                   FROM pgstatindex('{index}');"
            ),
        )
        .unwrap();
    let v: Vec<f64> = out
        .trim()
        .split('|')
        .map(|x| x.trim().parse().expect("a number"))
        .collect();
    let (leaves, density, empty, pages) = (v[0], v[1], v[2], v[3]);
    (leaves * (1.0 - density / fillfactor).max(0.0) + empty) / pages
}

/// Index, fillfactor: unique int8 (a primary key), int4 with 200 rows per value (btree
/// deduplicates), text, two columns, a half-null column, a fillfactor of 70 with an
/// INCLUDE column; and one from which every other row was deleted and vacuumed.
const LAYOUTS: &[(&str, f64)] = &[
    ("public.halved", 90.0),
    ("public.pk_int8", 90.0),
    ("public.dup_int4", 90.0),
    ("public.names_text", 90.0),
    ("public.pair_int4_int8", 90.0),
    ("public.half_null", 90.0),
    ("public.ff70_incl", 70.0),
];

#[tokio::test]
async fn index_bloat_estimate_matches_pgstatindex_on_fresh_indexes() {
    let c = cluster();
    c.psql(
        "postgres",
        r#"CREATE EXTENSION pgstattuple;
           CREATE TABLE public.rows (id int8, grp int4, name text, n int8, maybe int8)
             WITH (autovacuum_enabled = false);
           INSERT INTO public.rows
                SELECT g, g % 1000, 'customer ' || md5(g::text), g * 7,
                       CASE WHEN g % 2 = 0 THEN g END
                  FROM generate_series(1, 200000) g;
           ALTER TABLE public.rows ADD CONSTRAINT pk_int8 PRIMARY KEY (id);
           CREATE INDEX dup_int4 ON public.rows (grp);
           CREATE INDEX names_text ON public.rows (name);
           CREATE INDEX pair_int4_int8 ON public.rows (grp, n);
           CREATE INDEX half_null ON public.rows (maybe);
           CREATE INDEX ff70_incl ON public.rows (n) INCLUDE (grp) WITH (fillfactor = 70);
           ANALYZE public.rows;
           CREATE TABLE public.half (id int8) WITH (autovacuum_enabled = false);
           INSERT INTO public.half SELECT g FROM generate_series(1, 400000) g;
           CREATE INDEX halved ON public.half (id);
           DELETE FROM public.half WHERE id % 2 = 0;
           VACUUM ANALYZE public.half;"#,
    )
    .unwrap();
    let all = [
        "bloat_min_mb=0",
        "bloat_warning_share=0",
        "bloat_critical_share=1",
    ];
    let report = doctor(&c, "index_bloat", &all).await;
    let mut table = String::new();
    for (index, fillfactor) in LAYOUTS {
        let (est, size) = estimate(&report, index);
        let real = exact(&c, index, *fillfactor);
        table.push_str(&format!(
            "{index}: estimated {:.2} %, pgstatindex {:.2} %; estimated size / size {size:.3}\n",
            est * 100.0,
            real * 100.0
        ));
    }
    eprint!("{table}");
    for (index, fillfactor) in LAYOUTS {
        let ((est, size), real) = (estimate(&report, index), exact(&c, index, *fillfactor));
        assert!((est - real).abs() < 0.08, "{index}:\n{table}");
        // The fresh ones' estimated size is their size, within 10 %.
        if *index != "public.halved" {
            assert!((size - 1.0).abs() < 0.1, "{index}:\n{table}");
        }
    }
    // With the default shares only the halved one is reported, even with no minimum size.
    let report = doctor(&c, "index_bloat", &["bloat_min_mb=0"]).await;
    let names: Vec<_> = report.findings.iter().map(|f| f.object.clone()).collect();
    assert_eq!(
        names,
        [Some("public.halved".to_string())],
        "{:#?}",
        report.findings
    );
}

#[tokio::test]
async fn index_bloat_found_and_rebuilt() {
    let c = cluster();
    c.psql(
        "postgres",
        r#"CREATE EXTENSION pgstattuple;
           CREATE TABLE public."Orders" (id int8, customer int8) WITH (autovacuum_enabled = false);
           INSERT INTO public."Orders" SELECT g, g * 3 FROM generate_series(1, 400000) g;
           CREATE INDEX "Orders_customer" ON public."Orders" (customer);
           CREATE INDEX lean ON public."Orders" (id);
           DELETE FROM public."Orders" WHERE id % 10 < 9;
           VACUUM ANALYZE public."Orders";
           REINDEX INDEX lean;"#,
    )
    .unwrap();
    let small = ["bloat_min_mb=1"];
    let report = doctor(&c, "index_bloat", &small).await;
    let f = found(&report, "index_bloat", "Orders_customer");
    assert_eq!(f.len(), 1, "{:#?}", report.findings);
    let f = f[0].clone();
    assert_eq!(f.severity, Severity::Critical, "{f:#?}");
    assert_eq!(f.database.as_deref(), Some("postgres"));
    assert_eq!(f.object.as_deref(), Some("public.\"Orders_customer\""));
    assert_eq!(
        f.remediation,
        ["REINDEX INDEX CONCURRENTLY \"public\".\"Orders_customer\";"]
    );
    // pgstatindex agrees it is mostly empty.
    let real = exact(&c, "public.\"Orders_customer\"", 90.0);
    assert!(real > 0.6, "pgstatindex: {real}");
    assert!(
        found(&report, "index_bloat", "lean").is_empty(),
        "{:#?}",
        report.findings
    );
    // A minimum waste above the index's size: ignored.
    let report = doctor(&c, "index_bloat", &["bloat_min_mb=50"]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);

    remediate(&c, &f);
    c.psql("postgres", "ANALYZE public.\"Orders\";").unwrap();
    let report = doctor(&c, "index_bloat", &["bloat_min_mb=0"]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
}

/// A pg_monitor role cannot read the columns' statistics: without pgstattuple the bloated
/// index is listed as skipped, with it pgstatindex measures it; above index_scan_max_mb it
/// is skipped rather than read whole.
#[tokio::test]
async fn index_bloat_as_pg_monitor_is_never_silent() {
    let c = cluster();
    c.psql(
        "postgres",
        r#"CREATE ROLE mon LOGIN PASSWORD 'mon-pw' IN ROLE pg_monitor;
           CREATE TABLE public.events (id int8) WITH (autovacuum_enabled = false);
           INSERT INTO public.events SELECT g FROM generate_series(1, 400000) g;
           CREATE INDEX events_id ON public.events (id);
           DELETE FROM public.events WHERE id % 10 < 9;
           VACUUM ANALYZE public.events;"#,
    )
    .unwrap();
    let small = ["bloat_min_mb=1"];
    let mon = || c.dsn_for("mon", "mon-pw", "postgres");
    let report = bloat_as(mon(), &small).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    let skipped: Vec<_> = report
        .skipped
        .iter()
        .filter(|s| s.object.as_deref() == Some("public.events_id"))
        .collect();
    assert_eq!(skipped.len(), 1, "{:#?}", report.skipped);
    assert_eq!(skipped[0].check, "index_bloat");
    assert!(
        skipped[0].reason.contains("install pgstattuple"),
        "{}",
        skipped[0].reason
    );

    c.psql("postgres", "CREATE EXTENSION pgstattuple;").unwrap();
    let report = bloat_as(mon(), &small).await;
    assert!(report.skipped.is_empty(), "{:#?}", report.skipped);
    let f = found(&report, "index_bloat", "events_id");
    assert_eq!(f.len(), 1, "{:#?}", report.findings);
    assert_eq!(f[0].severity, Severity::Critical, "{:#?}", f[0]);
    assert!(f[0].detail.contains("pgstatindex"), "{}", f[0].detail);

    // An index larger than index_scan_max_mb is not read whole: skipped, with why.
    let report = bloat_as(mon(), &["bloat_min_mb=1", "index_scan_max_mb=1"]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert_eq!(report.skipped.len(), 1, "{:#?}", report.skipped);
    assert!(
        report.skipped[0].reason.contains("index_scan_max_mb"),
        "{}",
        report.skipped[0].reason
    );

    let f = f[0].clone();
    remediate(&c, &f);
    let report = bloat_as(mon(), &["bloat_min_mb=0"]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
}
