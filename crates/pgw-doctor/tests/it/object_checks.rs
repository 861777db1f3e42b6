//! Checks on objects left in a bad state: prepared transactions left open, constraints
//! not validated, disabled triggers, and sequences judged against the columns they feed.
//! Each test plants the problem, sees the finding, runs the remediation the finding gave,
//! and sees the finding gone.

use pgw_cluster::Cluster;
use pgw_doctor::{Options, Severity, Thresholds};

use crate::{doctor, found, remediate};

#[tokio::test]
async fn prepared_transaction_found_and_rolled_back() {
    let c = Cluster::builder()
        .setting("max_prepared_transactions", "5")
        .start()
        .expect("start a cluster with max_prepared_transactions");
    c.psql("postgres", "CREATE DATABASE \"Two phase\";")
        .unwrap();
    c.psql(
        "Two phase",
        r#"CREATE ROLE mon LOGIN PASSWORD 'mon-pw' IN ROLE pg_monitor;
           CREATE TABLE public.t (id int);
           BEGIN; INSERT INTO public.t VALUES (1); PREPARE TRANSACTION 'it''s pending';"#,
    )
    .unwrap();
    // Not old enough under the default limit.
    let report = doctor(&c, "prepared_transactions", &[]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);

    let report = doctor(
        &c,
        "prepared_transactions",
        &["prepared_xact_warning_secs=0"],
    )
    .await;
    let f = found(&report, "prepared_transactions", "pending");
    assert_eq!(f.len(), 1, "{:#?}", report.findings);
    let f = f[0].clone();
    assert_eq!(f.severity, Severity::Warning, "{f:#?}");
    assert_eq!(f.database.as_deref(), Some("Two phase"));
    assert_eq!(
        f.object.as_deref(),
        Some("prepared transaction 'it''s pending'")
    );
    assert!(f.detail.contains("owner "), "{}", f.detail);
    assert!(f.detail.contains("\"Two phase\""), "{}", f.detail);
    assert_eq!(f.remediation, ["ROLLBACK PREPARED 'it''s pending';"]);
    let report = doctor(
        &c,
        "prepared_transactions",
        &[
            "prepared_xact_warning_secs=0",
            "prepared_xact_critical_secs=0",
        ],
    )
    .await;
    assert_eq!(
        found(&report, "prepared_transactions", "pending")[0].severity,
        Severity::Critical
    );
    // pg_prepared_xacts is readable by a pg_monitor role.
    let mut t = Thresholds::default();
    t.set("prepared_xact_warning_secs=0").unwrap();
    let opts = Options {
        dsn: Some(c.dsn_for("mon", "mon-pw", "postgres")),
        dbname: None,
        only: Some("prepared_transactions".to_string()),
        thresholds: t,
        host: Default::default(),
    };
    let report = pgw_doctor::run(&opts).await.expect("doctor runs as mon");
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(found(&report, "prepared_transactions", "pending").len(), 1);

    remediate(&c, &f);
    let report = doctor(
        &c,
        "prepared_transactions",
        &["prepared_xact_warning_secs=0"],
    )
    .await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert_eq!(
        c.psql("Two phase", "SELECT count(*) FROM public.t;")
            .unwrap()
            .trim(),
        "0"
    );
}
