//! Point-in-time recovery: batches committed a second apart, a restore to a time between two
//! of them holds exactly the batches committed before it; drills to an earlier time, to a
//! batch's transaction id and to the WAL location after a batch promote, pass pg_amcheck,
//! and their check query sees exactly the rows committed up to the target.

use std::time::Duration;

use super::{server_now, setup, Restored};

#[test]
fn restore_and_drill_to_a_time_between_batches() {
    let (repo, c) = setup();
    c.psql(
        "postgres",
        "create table t (batch int, n int, marker text, primary key (batch, n))",
    )
    .expect("make t");
    let full = repo.backup(&c, "full");
    let full_id = full["id"].as_str().expect("an id").to_string();

    // Batch b has 100 * b rows; a time is read one second after each commit, and the next
    // batch commits a second after that. Each batch's transaction id and the WAL location
    // after its commit are kept too.
    let (mut times, mut xids, mut lsns) = (Vec::new(), Vec::new(), Vec::new());
    for b in 1..=3 {
        std::thread::sleep(Duration::from_secs(1));
        let out = c
            .psql(
                "postgres",
                &format!(
                    "begin;
                     insert into t select {b}, g, 'batch-{b}' from generate_series(1, {}) g;
                     select txid_current();
                     commit;
                     select pg_current_wal_lsn();",
                    100 * b
                ),
            )
            .expect("insert a batch");
        let mut lines = out.lines();
        xids.push(lines.next().expect("the batch's xid").to_string());
        lsns.push(lines.next().expect("the LSN after it").to_string());
        std::thread::sleep(Duration::from_secs(1));
        times.push(server_now(&c));
    }
    repo.switch_wal(&c);

    // To the time between batches 2 and 3: batches 1 and 2, nothing of 3.
    let dest = repo.path("pitr");
    let r = repo.restore(
        &dest,
        &["--target-time", &times[1], "--target-action", "promote"],
    );
    assert_eq!(r["backup"], full_id.as_str(), "{r:#}");
    let auto = std::fs::read_to_string(dest.join("postgresql.auto.conf")).expect("auto.conf");
    assert!(auto.contains("recovery_target_time = '"), "{auto}");
    assert!(
        auto.contains("recovery_target_action = 'promote'"),
        "{auto}"
    );
    let restored = Restored::start(&dest, repo.scratch.path(), c.password());
    assert_eq!(
        restored.psql(
            "select count(*) || ' ' || string_agg(distinct marker, ',' order by marker) from t"
        ),
        "300 batch-1,batch-2"
    );
    assert_eq!(
        restored.psql("select count(*) from t where batch = 2"),
        "200"
    );
    // Promoted: it takes writes.
    restored.psql("insert into t values (9, 1, 'after the restore')");
    drop(restored);

    // The drill to the time between batches 1 and 2.
    let doc = drill(&repo, &["--target-time", &times[0]]);
    assert_eq!(doc["check_result"], "100", "{doc:#}");
    assert_eq!(doc["backup"], full_id.as_str(), "{doc:#}");
    assert!(
        doc["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("time ")),
        "{doc:#}"
    );

    // To batch 2's transaction (inclusive), and to the WAL location after batch 1.
    let doc = drill(&repo, &["--target-xid", &xids[1]]);
    assert_eq!(doc["check_result"], "300", "{doc:#}");
    assert_eq!(
        doc["target"],
        format!("xid {}", xids[1]).as_str(),
        "{doc:#}"
    );
    let doc = drill(&repo, &["--target-lsn", &lsns[0]]);
    assert_eq!(doc["check_result"], "100", "{doc:#}");
}

/// `backup drill` with `target` and `select count(*) from t` as its check, asserting that it
/// passed; its report.
fn drill(repo: &super::Repo, target: &[&str]) -> serde_json::Value {
    let query = "select count(*) from t";
    let o = repo.cmd(
        &[
            &[
                "backup",
                "drill",
                "--db-user",
                "postgres",
                "--check-query",
                query,
            ][..],
            target,
            &["--format", "json"][..],
        ]
        .concat(),
    );
    let doc = crate::json(&o);
    assert_eq!(o.status.code(), Some(0), "{doc:#}\n{}", crate::stderr(&o));
    assert_eq!(doc["ok"], true, "{doc:#}");
    assert_eq!(doc["amcheck_ok"], true, "{doc:#}");
    assert_eq!(doc["rto_met"], true, "{doc:#}");
    assert!(
        doc["rto_seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{doc:#}"
    );
    assert_eq!(doc["check_query"], query, "{doc:#}");
    doc
}
