//! Cluster-wide activity checks: xid_age (every database's frozen-XID and multixact age,
//! template0 included). Each test plants the problem, sees the finding, runs the
//! remediation the finding gave, and sees it gone.

use pgw_cluster::Cluster;
use pgw_doctor::{Report, Severity, Thresholds};

use crate::{cluster, doctor, found, remediate, until, DEADLINE};

/// Runs one check as the login role `user` (password `password`), over all databases.
async fn doctor_as(c: &Cluster, user: &str, password: &str, check: &str, t: &[&str]) -> Report {
    let mut thresholds = Thresholds::default();
    for a in t {
        thresholds.set(a).expect("valid threshold");
    }
    let opts = pgw_doctor::Options {
        dsn: Some(c.dsn_for(user, password, "postgres")),
        dbname: None,
        only: Some(check.to_string()),
        thresholds,
        host: Default::default(),
    };
    let r = pgw_doctor::run(&opts).await.expect("doctor runs");
    assert!(r.skipped.is_empty(), "{check} skipped: {:?}", r.skipped);
    r
}

/// The finding of `check` whose object is exactly `object`.
fn finding<'a>(r: &'a Report, check: &str, object: &str) -> Option<&'a pgw_doctor::Finding> {
    r.findings
        .iter()
        .find(|f| f.check == check && f.object.as_deref() == Some(object))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xid_age_judges_every_database_template0_included() {
    let c = cluster();
    c.psql(
        "postgres",
        "CREATE ROLE watcher LOGIN PASSWORD 'watch' IN ROLE pg_monitor;",
    )
    .unwrap();
    // A few hundred transactions, each taking an xid: every database ages.
    c.psql("postgres", &"SELECT txid_current();\n".repeat(400))
        .unwrap();
    // 0.0000001 of 2^31 is 215 transactions.
    let t = ["xid_warning_share=0.0000001", "xid_critical_share=0.5"];
    let r = doctor(&c, "xid_age", &t).await;
    for db in ["template0", "template1", "postgres"] {
        let f = finding(&r, "xid_age", db).unwrap_or_else(|| panic!("{db}: {:#?}", r.findings));
        assert_eq!(f.severity, Severity::Warning, "{f:#?}");
        assert_eq!(f.database.as_deref(), Some(db));
        assert!(f.detail.contains("mxid_age(datminmxid)"), "{}", f.detail);
    }
    let t0 = finding(&r, "xid_age", "template0").unwrap().clone();
    assert!(t0.detail.contains("refuses connections"), "{}", t0.detail);
    assert_eq!(t0.remediation.len(), 5, "{:#?}", t0.remediation);
    assert_eq!(
        t0.remediation[0],
        "ALTER DATABASE \"template0\" ALLOW_CONNECTIONS true;"
    );
    assert!(t0.remediation[1].starts_with("action: connect to database template0"));
    assert_eq!(t0.remediation[2], "VACUUM (FREEZE);");
    assert!(t0.remediation[3].starts_with("action:"));
    assert_eq!(
        t0.remediation[4],
        "ALTER DATABASE \"template0\" ALLOW_CONNECTIONS false;"
    );
    let t1 = finding(&r, "xid_age", "template1").unwrap();
    assert_eq!(t1.remediation, ["VACUUM (FREEZE);"]);

    // Critical past the critical share; nothing at the defaults.
    let crit = [
        "xid_warning_share=0.0000001",
        "xid_critical_share=0.0000001",
    ];
    let r = doctor(&c, "xid_age", &crit).await;
    assert_eq!(
        finding(&r, "xid_age", "template0").map(|f| f.severity),
        Some(Severity::Critical)
    );
    let r = doctor(&c, "xid_age", &[]).await;
    assert!(r.findings.is_empty(), "{:#?}", r.findings);

    // A pg_monitor role sees template0 too (pg_database is readable by everyone).
    let r = doctor_as(&c, "watcher", "watch", "xid_age", &t).await;
    assert_eq!(
        found(&r, "xid_age", "template0").len(),
        1,
        "{:#?}",
        r.findings
    );

    // The remediation, step by step: the statements in postgres, the vacuum in template0
    // (connectable between the two ALTER DATABASE steps).
    c.psql("postgres", &t0.remediation[0]).unwrap();
    c.psql("template0", &t0.remediation[2]).unwrap();
    c.psql("postgres", &t0.remediation[4]).unwrap();
    let r = doctor(&c, "xid_age", &t).await;
    assert!(
        finding(&r, "xid_age", "template0").is_none(),
        "{:#?}",
        r.findings
    );
    // template0 refuses connections again.
    assert!(c.psql("template0", "SELECT 1;").is_err());
    // The others are still old until frozen in their own database.
    let t1 = finding(&r, "xid_age", "template1").unwrap().clone();
    remediate(&c, &t1);
    let r = doctor(&c, "xid_age", &t).await;
    assert!(
        finding(&r, "xid_age", "template1").is_none(),
        "{:#?}",
        r.findings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_ratio_finds_a_database_that_rolls_back() {
    let c = cluster();
    c.psql(
        "postgres",
        "CREATE DATABASE \"Rolls back\"; CREATE DATABASE commits;
         CREATE ROLE watcher LOGIN PASSWORD 'watch' IN ROLE pg_monitor;",
    )
    .unwrap();
    c.psql("Rolls back", &"BEGIN; SELECT 1; ROLLBACK;\n".repeat(300))
        .unwrap();
    c.psql("commits", &"BEGIN; SELECT 1; COMMIT;\n".repeat(300))
        .unwrap();
    let t = ["rollback_min_xacts=200"];
    let r = until(&c, "commit_ratio", &t, "the rollbacks counted", |r| {
        !found(r, "commit_ratio", "Rolls back").is_empty()
    })
    .await;
    let f = found(&r, "commit_ratio", "\"Rolls back\"");
    assert_eq!(f.len(), 1, "{:#?}", r.findings);
    let f = f[0];
    assert_eq!(f.severity, Severity::Critical, "{f:#?}");
    assert_eq!(f.database.as_deref(), Some("Rolls back"));
    assert!(f.detail.contains("rolled back"), "{}", f.detail);
    assert!(!f.remediation.is_empty());
    assert!(
        f.remediation.iter().all(|s| s.starts_with("action:")),
        "{:#?}",
        f.remediation
    );
    // Warning with a raised critical share.
    let r = doctor(
        &c,
        "commit_ratio",
        &["rollback_min_xacts=200", "rollback_critical_share=1.1"],
    )
    .await;
    assert_eq!(
        found(&r, "commit_ratio", "Rolls back")[0].severity,
        Severity::Warning
    );
    // A database with only commits, and the idle ones (below the minimum), are not reported.
    assert!(
        found(&r, "commit_ratio", "commits").is_empty(),
        "{:#?}",
        r.findings
    );
    let r = doctor(&c, "commit_ratio", &[]).await;
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    // pg_monitor sees it too.
    let r = doctor_as(&c, "watcher", "watch", "commit_ratio", &t).await;
    assert_eq!(found(&r, "commit_ratio", "Rolls back").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_pressure_found_and_max_wal_size_raised() {
    let c = cluster();
    c.psql("postgres", "SELECT pg_stat_reset_shared('bgwriter');")
        .unwrap();
    let mb: i64 = c
        .psql(
            "postgres",
            "SELECT setting FROM pg_settings WHERE name = 'max_wal_size';",
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // An explicit CHECKPOINT counts as requested, as one forced by max_wal_size does.
    c.psql("postgres", &"CHECKPOINT;\n".repeat(12)).unwrap();
    let r = until(
        &c,
        "checkpoint_pressure",
        &[],
        "requested checkpoints",
        |r| !r.findings.is_empty(),
    )
    .await;
    let f = found(&r, "checkpoint_pressure", "max_wal_size");
    assert_eq!(f.len(), 1, "{:#?}", r.findings);
    let f = f[0].clone();
    assert_eq!(f.severity, Severity::Critical, "{f:#?}");
    assert_eq!(f.database, None);
    assert!(f.detail.contains("requested"), "{}", f.detail);
    assert_eq!(
        f.remediation,
        [
            format!("ALTER SYSTEM SET \"max_wal_size\" = '{}MB';", mb * 2),
            "SELECT pg_reload_conf();".to_string(),
        ]
    );
    // Too few checkpoints to judge.
    let r = doctor(&c, "checkpoint_pressure", &["checkpoint_min_count=100"]).await;
    assert!(r.findings.is_empty(), "{:#?}", r.findings);

    remediate(&c, &f);
    let want = (mb * 2).to_string();
    let start = std::time::Instant::now();
    loop {
        let now = c
            .psql(
                "postgres",
                "SELECT setting FROM pg_settings WHERE name = 'max_wal_size';",
            )
            .unwrap();
        if now.trim() == want {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "max_wal_size still {now}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The counters say what happened before the fix until they are reset.
    c.psql("postgres", "SELECT pg_stat_reset_shared('bgwriter');")
        .unwrap();
    until(&c, "checkpoint_pressure", &[], "the finding gone", |r| {
        r.findings.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_files_names_the_slot_retaining_wal() {
    let c = Cluster::builder()
        .setting("max_wal_size", "32MB")
        .setting("min_wal_size", "32MB")
        .start()
        .expect("start a cluster with a small max_wal_size");
    c.psql(
        "postgres",
        "CREATE ROLE watcher LOGIN PASSWORD 'watch' IN ROLE pg_monitor;
         SELECT pg_create_physical_replication_slot('holder', true);
         CREATE TABLE public.w (v int);",
    )
    .unwrap();
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT has_function_privilege('pg_monitor', 'pg_ls_waldir()', 'EXECUTE');"
        )
        .unwrap()
        .trim(),
        "t"
    );
    // 12 segments of 16 MB, each switched after a write: 6 x max_wal_size.
    c.psql(
        "postgres",
        &"INSERT INTO public.w VALUES (1);\nSELECT pg_switch_wal();\n".repeat(12),
    )
    .unwrap();
    c.psql("postgres", "CHECKPOINT;").unwrap();
    let t = ["wal_files_warning_ratio=3", "wal_files_critical_ratio=100"];
    let r = doctor(&c, "wal_files", &t).await;
    let f = found(&r, "wal_files", "pg_wal");
    assert_eq!(f.len(), 1, "{:#?}", r.findings);
    let f = f[0];
    assert_eq!(f.severity, Severity::Warning, "{f:#?}");
    assert!(
        f.detail.contains("inactive physical slot holder"),
        "{}",
        f.detail
    );
    assert!(
        f.remediation.iter().any(|s| s.starts_with("action:")
            && s.contains("SELECT pg_drop_replication_slot('holder');")),
        "{:#?}",
        f.remediation
    );
    // pg_monitor may list pg_wal.
    let r = doctor_as(&c, "watcher", "watch", "wal_files", &t).await;
    assert_eq!(
        found(&r, "wal_files", "pg_wal").len(),
        1,
        "{:#?}",
        r.findings
    );

    // The slot's consumer is gone: drop it, and a checkpoint removes the WAL.
    c.psql("postgres", "SELECT pg_drop_replication_slot('holder');")
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        c.psql("postgres", "CHECKPOINT;").unwrap();
        let r = doctor(&c, "wal_files", &t).await;
        if r.findings.is_empty() {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "{:#?}", r.findings);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}
