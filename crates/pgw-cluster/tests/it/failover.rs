//! What HA tests do to clusters: crash one and start it again on the same port, stop it and
//! keep its data, a primary with standbys in one call, promotion, and the old primary
//! rejoining the new one with pg_rewind.

use std::time::Duration;

use pgw_cluster::{Cluster, ClusterError, Replicated};

use crate::{accepts, start};

#[test]
fn kill_then_start_again_on_the_same_port() {
    let cluster = start(Cluster::builder());
    cluster
        .psql(
            "postgres",
            "create table t(x int); insert into t values (1)",
        )
        .unwrap();
    let (port, pid) = (cluster.port(), cluster.postmaster_pid().unwrap());
    assert!(cluster.is_running());

    cluster.kill().unwrap();
    assert!(!cluster.is_running());
    assert_eq!(cluster.postmaster_pid(), None);
    assert!(!accepts(port));
    assert!(
        cluster.data_dir().join("PG_VERSION").is_file(),
        "the data stays"
    );
    cluster.kill().unwrap(); // nothing left to kill: not an error

    cluster.start_again().unwrap();
    assert_eq!(cluster.port(), port);
    assert_ne!(cluster.postmaster_pid(), Some(pid));
    assert_eq!(
        cluster.psql("postgres", "select count(*) from t").unwrap(),
        "1"
    );
    assert!(
        cluster.log().contains("not properly shut down"),
        "crash recovery ran"
    );

    let err = cluster.start_again().unwrap_err();
    assert!(
        err.to_string().contains("is running"),
        "a running cluster is not started twice: {err}"
    );
}

#[test]
fn stop_keep_data_then_start_again() {
    let cluster = start(Cluster::builder().setting("work_mem", "3MB"));
    cluster
        .psql(
            "postgres",
            "create table t(x int); insert into t values (7)",
        )
        .unwrap();
    cluster.stop_keep_data().unwrap();
    assert!(!cluster.is_running());
    assert!(!accepts(cluster.port()));
    assert!(cluster.log().contains("database system is shut down"));
    cluster.stop_keep_data().unwrap(); // already stopped: fine
    cluster.start_again().unwrap();
    assert_eq!(cluster.psql("postgres", "select x from t").unwrap(), "7");
    assert_eq!(cluster.psql("postgres", "show work_mem").unwrap(), "3MB");
}

#[test]
fn a_primary_is_not_streaming() {
    let cluster = start(Cluster::builder());
    let err = cluster
        .wait_streaming(Duration::from_millis(300))
        .unwrap_err();
    assert!(
        matches!(&err, ClusterError::NotStreaming { status, .. } if status == "none"),
        "{err:?}"
    );
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn failover_promote_and_rejoin() {
    let replicated = Replicated::builder()
        .standbys(2)
        .setting("wal_keep_size", "128MB")
        .start()
        .unwrap_or_else(|e| panic!("could not start a primary with two standbys: {e}"));
    let primary = replicated.primary();
    assert_eq!(replicated.standbys().len(), 2);
    assert!(replicated.standby(3).is_none() && replicated.standby(0).is_none());
    assert_eq!(
        primary
            .psql(
                "postgres",
                "select string_agg(application_name || ':' || state, ',' order by application_name) from pg_stat_replication"
            )
            .unwrap(),
        "standby1:streaming,standby2:streaming"
    );
    assert_eq!(
        primary
            .psql(
                "postgres",
                "select string_agg(slot_name || ':' || active, ',' order by slot_name) from pg_replication_slots"
            )
            .unwrap(),
        "standby1:true,standby2:true"
    );
    primary
        .psql(
            "postgres",
            "create table t(x int); insert into t values (1)",
        )
        .unwrap();
    // Both standbys have everything: neither is ahead of the one promoted.
    replicated.wait_caught_up(Duration::from_secs(30)).unwrap();
    assert_eq!(
        replicated
            .standby(2)
            .unwrap()
            .psql("postgres", "select count(*) from t")
            .unwrap(),
        "1"
    );

    let (old_primary, standbys) = replicated.into_parts();
    let [s1, s2]: [Cluster; 2] = standbys.try_into().unwrap();
    // The primary is lost; standby1 takes over.
    old_primary.kill().unwrap();
    s1.promote().unwrap();
    assert_eq!(
        s1.psql("postgres", "select pg_is_in_recovery()").unwrap(),
        "f"
    );
    s1.psql(
        "postgres",
        "insert into t values (2); select 1 from pg_create_physical_replication_slot('standby2'); select 1 from pg_create_physical_replication_slot('primary')",
    )
    .unwrap();

    // standby2 follows the new primary; the crashed primary rejoins it with pg_rewind.
    s2.rejoin(&s1, Some("standby2")).unwrap();
    old_primary.rejoin(&s1, Some("primary")).unwrap();
    for standby in [&s2, &old_primary] {
        standby.wait_streaming(Duration::from_secs(60)).unwrap();
        assert_eq!(
            standby
                .psql("postgres", "select pg_is_in_recovery()")
                .unwrap(),
            "t"
        );
    }
    s1.psql("postgres", "insert into t values (3)").unwrap();
    for standby in [&s2, &old_primary] {
        assert!(
            crate::eventually(Duration::from_secs(30), || {
                standby
                    .psql(
                        "postgres",
                        "select string_agg(x::text, ',' order by x) from t",
                    )
                    .ok()
                    .as_deref()
                    == Some("1,2,3")
            }),
            "port {} never replayed the new primary's rows",
            standby.port()
        );
    }
    assert_eq!(
        s1.psql(
            "postgres",
            "select string_agg(application_name, ',' order by application_name) from pg_stat_replication"
        )
        .unwrap(),
        "primary,standby2"
    );
}
