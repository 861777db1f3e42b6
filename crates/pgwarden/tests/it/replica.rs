//! `pgwarden replica status` and `replica promote` on a real primary and its streaming
//! standby: every standby and slot against the lag target, a standby's own receiver and
//! replay, exit 1 when one misses the target, promotion behind --yes.

use std::time::{Duration, Instant};

use pgw_cluster::Cluster;

use crate::{assert_fails, json, pgwarden, stdout};

/// A primary with a slot-fed standby named `replica1`, streaming.
fn pair() -> (Cluster, Cluster) {
    let primary = Cluster::builder()
        .setting("wal_sender_timeout", "5s")
        .start()
        .expect("start a primary");
    primary
        .psql(
            "postgres",
            "CREATE TABLE ticks (at timestamptz);
             CREATE ROLE watcher LOGIN PASSWORD 'watchpw' IN ROLE pg_monitor;",
        )
        .expect("set up the primary");
    let standby = Cluster::builder()
        .standby_of(&primary)
        .replication_slot("replica1_slot")
        .application_name("replica1")
        .setting("wal_receiver_status_interval", "1s")
        .start()
        .expect("start a standby");
    standby
        .wait_streaming(Duration::from_secs(30))
        .expect("the standby streams");
    (primary, standby)
}

/// `replica status -d dsn --format json`, asserting its exit code.
fn status_json(dsn: &str, code: i32) -> serde_json::Value {
    let o = pgwarden(&["replica", "status", "-d", dsn, "--format", "json"]);
    let doc = json(&o);
    assert_eq!(o.status.code(), Some(code), "{doc}");
    doc
}

fn tick(primary: &Cluster) {
    primary
        .psql("postgres", "INSERT INTO ticks VALUES (now())")
        .expect("write on the primary");
}

#[test]
fn status_of_a_primary_and_its_standby_and_a_missed_target() {
    let (primary, standby) = pair();
    tick(&primary);
    standby
        .wait_replayed(
            primary
                .psql("postgres", "SELECT pg_current_wal_lsn()")
                .unwrap()
                .trim(),
            Duration::from_secs(30),
        )
        .expect("replayed");

    // The primary, as a pg_monitor role: one standby streaming, its slot active, met.
    let o = pgwarden(&[
        "replica",
        "status",
        "-d",
        &primary.dsn_for("watcher", "watchpw", "postgres"),
        "--format",
        "json",
    ]);
    let doc = json(&o);
    assert_eq!(o.status.code(), Some(0), "{doc}");
    assert_eq!(doc["role"], "primary", "{doc}");
    assert_eq!(doc["target_ms"], 500.0, "{doc}");
    let standbys = doc["standbys"].as_array().unwrap();
    assert_eq!(standbys.len(), 1, "{doc}");
    let s = &standbys[0];
    assert_eq!(s["application_name"], "replica1", "{doc}");
    assert_eq!(s["client_addr"], "127.0.0.1", "{doc}");
    assert_eq!(s["state"], "streaming", "{doc}");
    assert_eq!(s["sync_state"], "async", "{doc}");
    assert!(s["replay_lsn"].is_string(), "{doc}");
    assert!(s["lag_bytes"].as_i64().unwrap() >= 0, "{doc}");
    assert_eq!(s["met"], true, "{doc}");
    assert_eq!(doc["met"], true, "{doc}");
    let slots = doc["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 1, "{doc}");
    assert_eq!(slots[0]["name"], "replica1_slot", "{doc}");
    assert_eq!(slots[0]["active"], true, "{doc}");
    assert!(slots[0]["retained_bytes"].as_i64().is_some(), "{doc}");

    // The same as a table.
    let o = pgwarden(&["replica", "status", "-d", &primary.dsn()]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    for needle in [
        "primary, 1 standby(s)",
        "replica1",
        "streaming",
        "met",
        "replica1_slot",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }

    // The standby: its receiver streams from the primary, nothing waits, met.
    let doc = status_json(&standby.dsn(), 0);
    assert_eq!(doc["role"], "standby", "{doc}");
    let r = &doc["receiver"];
    assert_eq!(r["streaming"], true, "{doc}");
    assert_eq!(r["receiver_status"], "streaming", "{doc}");
    assert_eq!(
        r["sender"],
        format!("127.0.0.1:{}", primary.port()).as_str(),
        "{doc}"
    );
    assert_eq!(r["replay_paused"], false, "{doc}");
    assert_eq!(r["met"], true, "{doc}");

    // Replay paused on the standby: it misses the target at once (exit 1), and the
    // primary sees its replay lag grow past a 100 ms target.
    standby
        .psql("postgres", "SELECT pg_wal_replay_pause()")
        .unwrap();
    tick(&primary);
    let doc = status_json(&standby.dsn(), 1);
    assert_eq!(doc["receiver"]["replay_paused"], true, "{doc}");
    assert_eq!(doc["met"], false, "{doc}");
    let o = pgwarden(&["replica", "status", "-d", &standby.dsn()]);
    assert!(stdout(&o).contains("MISSED"), "{}", stdout(&o));

    let start = Instant::now();
    loop {
        tick(&primary);
        let o = pgwarden(&[
            "replica",
            "status",
            "-d",
            &primary.dsn(),
            "--target-ms",
            "100",
            "--format",
            "json",
        ]);
        let doc = json(&o);
        if o.status.code() == Some(1) {
            let s = &doc["standbys"][0];
            assert_eq!(s["met"], false, "{doc}");
            assert!(s["replay_lag_ms"].as_f64().unwrap() > 100.0, "{doc}");
            break;
        }
        assert_eq!(o.status.code(), Some(0), "{doc}");
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the paused standby's replay lag never passed 100 ms: {doc}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    standby
        .psql("postgres", "SELECT pg_wal_replay_resume()")
        .unwrap();

    // Bad input and an unreachable server: one line each.
    assert_fails(
        &pgwarden(&[
            "replica",
            "status",
            "-d",
            &primary.dsn(),
            "--target-ms",
            "-5",
        ]),
        2,
        "--target-ms",
    );
    assert_fails(
        &pgwarden(&[
            "replica",
            "status",
            "-d",
            "host=127.0.0.1 port=1 connect_timeout=2",
        ]),
        1,
        "127.0.0.1",
    );
}

#[test]
fn promote_asks_then_promotes_and_refuses_a_primary() {
    let (primary, standby) = pair();
    // Not a terminal and no --yes: refused, nothing changed.
    let o = pgwarden(&["replica", "promote", "-d", &standby.dsn()]);
    assert_fails(&o, 2, "--yes");
    assert_eq!(
        standby
            .psql("postgres", "SELECT pg_is_in_recovery()")
            .unwrap()
            .trim(),
        "t"
    );

    let o = pgwarden(&[
        "replica",
        "promote",
        "-d",
        &standby.dsn(),
        "--yes",
        "--format",
        "json",
    ]);
    let doc = json(&o);
    assert_eq!(o.status.code(), Some(0), "{doc}");
    assert_eq!(doc["timeline"], 2, "{doc}");
    assert!(doc["lsn"].as_str().unwrap().contains('/'), "{doc}");
    assert_eq!(
        standby
            .psql("postgres", "SELECT pg_is_in_recovery()")
            .unwrap()
            .trim(),
        "f"
    );
    standby
        .psql("postgres", "CREATE TABLE written_after_promotion (x int)")
        .expect("the promoted server takes writes");
    // It reports as a primary now, with no standbys: met.
    let doc = status_json(&standby.dsn(), 0);
    assert_eq!(doc["role"], "primary", "{doc}");

    // A primary is not promoted.
    assert_fails(
        &pgwarden(&["replica", "promote", "-d", &primary.dsn(), "--yes"]),
        2,
        "is not a standby",
    );
}
