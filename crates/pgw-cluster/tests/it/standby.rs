//! A streaming hot standby made with `standby_of`: it copies the primary, streams its changes,
//! is read-only, and is cleaned up like any other cluster.

use std::time::Duration;

use pgw_cluster::Cluster;

use crate::{eventually, start};

#[test]
fn standby_streams_from_its_primary() {
    let primary = start(Cluster::builder().setting("wal_keep_size", "64MB"));
    primary
        .psql(
            "postgres",
            "create table t(x int); insert into t values (1)",
        )
        .unwrap();
    let standby = start(
        Cluster::builder()
            .standby_of(&primary)
            .setting("hot_standby_feedback", "on"),
    );
    assert_ne!(standby.port(), primary.port());
    assert_eq!(standby.password(), primary.password());
    assert_eq!(
        standby
            .psql("postgres", "select pg_is_in_recovery()")
            .unwrap(),
        "t"
    );
    assert_eq!(
        standby
            .psql("postgres", "show hot_standby_feedback")
            .unwrap(),
        "on"
    );
    assert_eq!(
        standby.psql("postgres", "select count(*) from t").unwrap(),
        "1"
    );

    primary
        .psql("postgres", "insert into t select generate_series(2, 100)")
        .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || {
            standby.psql("postgres", "select count(*) from t").ok() == Some("100".into())
        }),
        "the standby never replayed the insert"
    );
    assert_eq!(
        primary
            .psql("postgres", "select state from pg_stat_replication")
            .unwrap(),
        "streaming"
    );
    let err = standby
        .psql("postgres", "insert into t values (0)")
        .unwrap_err()
        .to_string();
    assert!(err.contains("read-only transaction"), "{err}");

    let dir = standby.data_dir().to_owned();
    standby.stop().unwrap();
    assert!(!dir.exists());
}
