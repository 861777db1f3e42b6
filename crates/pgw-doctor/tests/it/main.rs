//! pgw-doctor against real throwaway clusters. Every check's test plants the problem,
//! sees the finding, runs the remediation SQL the finding gave, and sees it gone.

mod activity_checks;
mod bloat_checks;
mod cluster_checks;
mod database_checks;
mod horizon;
mod index_bloat_checks;
mod index_safety;
mod object_checks;
mod planted;
mod replication_checks;
mod table_stats;
mod usage_checks;

use std::time::{Duration, Instant};

use pgw_cluster::Cluster;
use pgw_doctor::{Finding, Options, Report, Thresholds};

/// A cluster of the test's own: tests plant problems.
pub fn cluster() -> Cluster {
    Cluster::start().expect("start a throwaway PostgreSQL 15 cluster (is postgresql-15 installed?)")
}

/// Runs one check against `c` (all databases), with thresholds overridden by `name=value`.
pub async fn doctor(c: &Cluster, check: &str, thresholds: &[&str]) -> Report {
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
    let report = pgw_doctor::run(&opts).await.expect("doctor runs");
    assert!(
        report.skipped.is_empty(),
        "{check} skipped: {:?}",
        report.skipped
    );
    report
}

/// Runs one check over `dsn` (all databases) with thresholds `name=value`; unlike
/// [`doctor`], skipped objects are allowed (the caller looks at them).
pub async fn doctor_as(dsn: String, check: &str, thresholds: &[&str]) -> Report {
    let mut t = Thresholds::default();
    for a in thresholds {
        t.set(a).expect("valid threshold");
    }
    let opts = Options {
        dsn: Some(dsn),
        dbname: None,
        only: Some(check.to_string()),
        thresholds: t,
        host: Default::default(),
    };
    pgw_doctor::run(&opts).await.expect("doctor runs")
}

/// The findings of `check` about objects whose name contains `needle`.
pub fn found<'a>(r: &'a Report, check: &str, needle: &str) -> Vec<&'a Finding> {
    r.findings
        .iter()
        .filter(|f| f.check == check && f.object.as_deref().unwrap_or("").contains(needle))
        .collect()
}

/// Runs a finding's remediation SQL in its database, each statement as a query of its own
/// (as a tool sending them one by one would), in order. Fails on a finding without SQL.
pub fn remediate(c: &Cluster, f: &Finding) {
    let db = f.database.as_deref().unwrap_or("postgres");
    let statements: Vec<&str> = f.statements().collect();
    assert!(!statements.is_empty(), "no SQL to run in {f:?}");
    for sql in statements {
        assert!(sql.trim_end().ends_with(';'), "not one statement: {sql}");
        c.psql(db, sql)
            .unwrap_or_else(|e| panic!("remediation step failed: {sql}\n{e}"));
    }
}

/// How long a test waits for statistics: backends flush them at most once a second after
/// a transaction ends, and a reload or a terminated session takes a moment too.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Runs `check` until `done` holds for its report, or panics after [`DEADLINE`].
pub async fn until(
    c: &Cluster,
    check: &str,
    thresholds: &[&str],
    what: &str,
    done: impl Fn(&Report) -> bool,
) -> Report {
    let start = Instant::now();
    loop {
        let r = doctor(c, check, thresholds).await;
        if done(&r) {
            return r;
        }
        if start.elapsed() > DEADLINE {
            panic!(
                "{check}: {what} not seen within {DEADLINE:?}; findings: {:#?}",
                r.findings
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Runs `check` until a finding on `needle` is present (`want`) or absent (`!want`).
pub async fn poll(
    c: &Cluster,
    check: &str,
    thresholds: &[&str],
    needle: &str,
    want: bool,
) -> Report {
    let what = format!("a finding on {needle} present={want}");
    until(c, check, thresholds, &what, |r| {
        found(r, check, needle).is_empty() != want
    })
    .await
}
