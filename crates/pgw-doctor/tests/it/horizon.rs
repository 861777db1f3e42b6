//! dead_tuples names what holds the xmin horizon when a vacuum could not remove dead rows:
//! plant the holder, delete, vacuum, see the holder named with its remedy, run the
//! remediation (end the holder, then vacuum) and see the finding gone.

use pgw_cluster::Cluster;
use pgw_doctor::Report;

use crate::{doctor, found, remediate, until};

const THRESHOLDS: [&str; 1] = ["dead_tuples_min_rows=100"];

/// t with 10,000 rows in database postgres.
fn table(c: &Cluster) {
    c.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, pad text);
         INSERT INTO t SELECT g, repeat('x', 50) FROM generate_series(1, 10000) g;
         CREATE TABLE other (id int);",
    )
    .expect("create t");
}

/// Deletes most of t and vacuums it; the held horizon keeps the dead rows.
fn delete_and_vacuum(c: &Cluster) {
    c.psql("postgres", "DELETE FROM t WHERE id > 1000;")
        .expect("delete");
    c.psql("postgres", "VACUUM t;").expect("vacuum");
}

async fn held(c: &Cluster, needle: &str) -> Report {
    until(
        c,
        "dead_tuples",
        &THRESHOLDS,
        "dead rows kept, holder named",
        |r| {
            found(r, "dead_tuples", "t")
                .first()
                .is_some_and(|f| f.detail.contains(needle))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_transaction_holding_the_horizon_is_named_and_ended() {
    let c = crate::cluster();
    table(&c);
    let (holder, _) = pgw_common::connect_dsn(Some(&c.dsn()))
        .await
        .expect("connect");
    holder
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM other")
        .await
        .expect("hold a snapshot");
    let pid: i32 = {
        let (probe, _) = pgw_common::connect_dsn(Some(&c.dsn()))
            .await
            .expect("connect");
        probe
            .query_one(
                "SELECT pid FROM pg_stat_activity WHERE backend_xmin IS NOT NULL \
                 AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                &[],
            )
            .await
            .expect("the holder's pid")
            .get(0)
    };
    delete_and_vacuum(&c);
    let r = held(&c, &format!("held by pid {pid}")).await;
    let f = found(&r, "dead_tuples", "t")[0];
    assert!(f.detail.contains("transaction open"), "{}", f.detail);
    assert_eq!(
        f.remediation,
        [
            format!("SELECT pg_terminate_backend({pid});"),
            "VACUUM (ANALYZE) \"public\".\"t\";".to_string(),
        ]
    );
    remediate(&c, f);
    until(&c, "dead_tuples", &THRESHOLDS, "the dead rows gone", |r| {
        found(r, "dead_tuples", "t").is_empty()
    })
    .await;
    assert!(holder.simple_query("SELECT 1").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_transaction_holding_the_horizon_is_named_and_rolled_back() {
    let c = Cluster::builder()
        .setting("max_prepared_transactions", "5")
        .start()
        .expect("start a cluster with prepared transactions");
    table(&c);
    c.psql(
        "postgres",
        "BEGIN; INSERT INTO other VALUES (1); PREPARE TRANSACTION 'forgotten';",
    )
    .expect("prepare a transaction");
    delete_and_vacuum(&c);
    let r = held(&c, "prepared transaction 'forgotten'").await;
    let f = found(&r, "dead_tuples", "t")[0];
    assert_eq!(
        f.remediation,
        [
            "ROLLBACK PREPARED 'forgotten';".to_string(),
            "VACUUM (ANALYZE) \"public\".\"t\";".to_string(),
        ]
    );
    remediate(&c, f);
    until(&c, "dead_tuples", &THRESHOLDS, "the dead rows gone", |r| {
        found(r, "dead_tuples", "t").is_empty()
    })
    .await;
    let left = c
        .psql("postgres", "SELECT count(*) FROM pg_prepared_xacts;")
        .expect("count prepared");
    assert_eq!(left.trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_rows_with_no_holder_get_only_a_vacuum() {
    let c = crate::cluster();
    table(&c);
    // No holder: VACUUM then removes everything; delete again after it so dead rows stay.
    c.psql("postgres", "VACUUM t; DELETE FROM t WHERE id > 1000;")
        .expect("plant");
    let r = until(&c, "dead_tuples", &THRESHOLDS, "dead rows", |r| {
        !found(r, "dead_tuples", "t").is_empty()
    })
    .await;
    let f = found(&r, "dead_tuples", "t")[0];
    assert!(!f.detail.contains("held by"), "{}", f.detail);
    assert_eq!(f.remediation, ["VACUUM (ANALYZE) \"public\".\"t\";"]);
    let _ = doctor(&c, "dead_tuples", &THRESHOLDS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_holding_the_horizon_through_feedback_is_named() {
    let primary = crate::cluster();
    // The builder creates the slot as it clones the primary.
    let standby = Cluster::builder()
        .standby_of(&primary)
        .replication_slot("feedback_slot")
        .setting("hot_standby_feedback", "on")
        .setting("wal_receiver_status_interval", "1s")
        .start()
        .expect("start a standby");
    table(&primary);
    // Wait for the table to reach the standby, then hold a snapshot there.
    let lsn = primary
        .psql("postgres", "SELECT pg_current_wal_lsn();")
        .expect("lsn");
    standby
        .wait_replayed(lsn.trim(), crate::DEADLINE)
        .expect("standby replays");
    let (reader, _) = pgw_common::connect_dsn(Some(&standby.dsn()))
        .await
        .expect("connect the standby");
    reader
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM t")
        .await
        .expect("hold a snapshot on the standby");
    // The feedback reaches the primary within a status interval.
    wait_for(
        &primary,
        "SELECT xmin IS NOT NULL FROM pg_replication_slots WHERE slot_name = 'feedback_slot';",
    )
    .await;
    delete_and_vacuum(&primary);
    let r = held(&primary, "replication slot feedback_slot (active").await;
    let f = found(&r, "dead_tuples", "t")[0];
    assert!(
        f.remediation[0].starts_with("action: the standby streaming from slot feedback_slot"),
        "{:?}",
        f.remediation
    );
    // The action: end the standby's long transaction; then the statements.
    reader.batch_execute("COMMIT").await.expect("end it");
    // ... and wait for the standby's feedback to move the slot's xmin past the delete.
    let next = primary
        .psql("postgres", "SELECT txid_current();")
        .expect("a new xid");
    wait_for(
        &primary,
        &format!(
            "SELECT xmin::text::int8 >= {} FROM pg_replication_slots WHERE slot_name = 'feedback_slot';",
            next.trim()
        ),
    )
    .await;
    remediate(&primary, f);
    until(
        &primary,
        "dead_tuples",
        &THRESHOLDS,
        "the dead rows gone",
        |r| found(r, "dead_tuples", "t").is_empty(),
    )
    .await;
}

/// Polls `sql` (one boolean) on `c` until it is true, for at most DEADLINE.
async fn wait_for(c: &Cluster, sql: &str) {
    let deadline = std::time::Instant::now() + crate::DEADLINE;
    loop {
        if c.psql("postgres", sql).expect("poll").trim() == "t" {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not true in time: {sql}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
