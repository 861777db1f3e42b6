//! replication_lag on a real primary and streaming standby: quiet when in sync, a paused
//! replay seen from both sides and fixed by the remediation the standby's finding gives, a
//! standby that lost its primary, and a pg_monitor role on the standby.

use pgw_cluster::Cluster;
use pgw_doctor::{Options, Report, Severity, Thresholds};

use crate::{doctor, found, remediate, until};

/// A primary and a standby streaming from it. The standby reports its replay position
/// every second, so the primary forgets a caught-up lag within about a second.
fn pair() -> (Cluster, Cluster) {
    let primary = Cluster::builder()
        .setting("wal_keep_size", "64MB")
        .start()
        .expect("start a primary");
    primary
        .psql(
            "postgres",
            "CREATE TABLE ticks(at timestamptz);
             CREATE ROLE mon LOGIN PASSWORD 'mon-pw' IN ROLE pg_monitor;",
        )
        .expect("set up the primary");
    let standby = Cluster::builder()
        .standby_of(&primary)
        .setting("wal_receiver_status_interval", "1s")
        .start()
        .expect("start a standby");
    (primary, standby)
}

/// Commits a row on the primary, so there is WAL to replay.
fn tick(primary: &Cluster) {
    primary
        .psql("postgres", "INSERT INTO ticks VALUES (now())")
        .expect("write on the primary");
}

fn lag_findings(r: &Report) -> Vec<&pgw_doctor::Finding> {
    r.findings
        .iter()
        .filter(|f| f.check == "replication_lag")
        .collect()
}

/// Runs replication_lag on `c`, writing on `primary` between attempts, until `done` holds.
async fn until_ticking(
    c: &Cluster,
    primary: &Cluster,
    what: &str,
    done: impl Fn(&Report) -> bool,
) -> Report {
    until(c, "replication_lag", &[], what, |r| {
        tick(primary);
        done(r)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_lag_paused_replay_found_on_both_sides_and_resumed() {
    let (primary, standby) = pair();
    tick(&primary);

    // In sync: nothing on either side.
    until_ticking(&primary, &primary, "no lag on the primary", |r| {
        lag_findings(r).is_empty()
    })
    .await;
    until_ticking(&standby, &primary, "no lag on the standby", |r| {
        lag_findings(r).is_empty()
    })
    .await;

    standby
        .psql("postgres", "SELECT pg_wal_replay_pause()")
        .expect("pause replay");
    let r = until_ticking(&standby, &primary, "paused replay past 500 ms", |r| {
        found(r, "replication_lag", "this standby")
            .first()
            .is_some_and(|f| {
                f.perfdata
                    .as_deref()
                    .is_some_and(|p| !p.starts_with("lag=0ms"))
            })
    })
    .await;
    let f = found(&r, "replication_lag", "this standby")[0].clone();
    assert!(f.detail.contains("paused"), "{}", f.detail);
    assert!(f.severity >= Severity::Warning);
    assert_eq!(f.remediation, ["SELECT pg_wal_replay_resume();"]);
    assert_eq!(f.database, None);

    // The primary sees the same standby falling behind.
    let r = until_ticking(
        &primary,
        &primary,
        "the standby's lag on the primary",
        |r| {
            lag_findings(r)
                .iter()
                .any(|f| f.severity >= Severity::Warning)
        },
    )
    .await;
    let seen = lag_findings(&r);
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert!(seen[0].detail.contains("127.0.0.1"), "{}", seen[0].detail);
    assert!(seen[0].detail.contains("behind"), "{}", seen[0].detail);

    remediate(&standby, &f);
    until(&standby, "replication_lag", &[], "replay resumed", |r| {
        lag_findings(r).is_empty()
    })
    .await;
    tick(&primary);
    until(
        &primary,
        "replication_lag",
        &[],
        "the standby caught up",
        |r| lag_findings(r).is_empty(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_lag_standby_without_its_primary_and_as_pg_monitor() {
    let (primary, standby) = pair();
    tick(&primary);

    // pg_monitor on a standby: every cluster-wide check runs, none is skipped.
    let opts = Options {
        dsn: Some(standby.dsn_for("mon", "mon-pw", "postgres")),
        dbname: None,
        only: Some("replication_lag".into()),
        thresholds: Thresholds::default(),
        host: Default::default(),
    };
    let r = pgw_doctor::run(&opts).await.expect("doctor as pg_monitor");
    assert!(r.skipped.is_empty(), "{:#?}", r.skipped);
    assert_eq!(r.checks_run, ["replication_lag"]);

    primary.stop().expect("stop the primary");
    let r = until(&standby, "replication_lag", &[], "the lost primary", |r| {
        !found(r, "replication_lag", "this standby").is_empty()
    })
    .await;
    let f = found(&r, "replication_lag", "this standby")[0];
    assert_eq!(f.severity, Severity::Warning);
    assert!(f.detail.contains("WAL receiver"), "{}", f.detail);
    assert!(
        f.remediation.join(" ").contains("primary_conninfo"),
        "{:?}",
        f.remediation
    );
    // The other replication check still runs on a standby that lost its primary.
    let r = doctor(&standby, "replication_slot", &[]).await;
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}
