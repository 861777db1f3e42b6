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
    // pg_monitor sees the same on the standby.
    let doc = status_json(&standby.dsn_for("watcher", "watchpw", "postgres"), 0);
    assert_eq!(doc["receiver"]["streaming"], true, "{doc}");
    assert_eq!(doc["receiver"]["sender"], r["sender"], "{doc}");

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
    assert_eq!(in_recovery(&standby), "t");

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
    assert_eq!(in_recovery(&standby), "f");
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

/// Stops the server in `dir` (a clone this test started) when dropped, pass or fail.
struct Stopper(std::path::PathBuf);

impl Drop for Stopper {
    fn drop(&mut self) {
        use pgw_cluster::pgw_node::{BinDir, Node, OsUser, StopOptions};
        if let Ok(node) = OsUser::detect().and_then(|u| Node::open(BinDir::from_env(), u, &self.0))
        {
            let _ = node.stop(&StopOptions::default());
        }
    }
}

#[test]
fn clone_checks_copies_starts_and_streams() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let primary = Cluster::start().expect("start a primary");
    let dir = primary.data_dir().parent().unwrap().join("clone1");
    let _stop = Stopper(dir.clone());
    let port = pgw_cluster::ports::reserve().expect("a free port");
    let o = clone(
        &primary,
        dir.to_str().unwrap(),
        &[
            "--slot",
            "clone1_slot",
            "--port",
            &port.to_string(),
            "--start",
            "--format",
            "json",
        ],
    );
    let doc = json(&o);
    assert_eq!(o.status.code(), Some(0), "{doc} {}", crate::stderr(&o));
    assert_eq!(doc["streaming"], true, "{doc}");
    assert_eq!(doc["slot"], "clone1_slot", "{doc}");
    assert_eq!(doc["application_name"], "clone1_slot", "{doc}");
    assert!(doc["hba_line"].as_i64().is_some(), "{doc}");
    assert!(doc["copied_kb"].as_u64().unwrap() > 1000, "{doc}");
    // Owned by the server's OS user, mode 0700, a standby.
    let meta = std::fs::metadata(&dir).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    let postgres = nix::unistd::User::from_name("postgres").unwrap().unwrap();
    assert_eq!(meta.uid(), postgres.uid.as_raw());
    assert!(dir.join("standby.signal").exists());
    // The primary sees it streaming through its slot.
    let doc = status_json(&primary.dsn(), 0);
    assert_eq!(
        doc["standbys"][0]["application_name"], "clone1_slot",
        "{doc}"
    );
    assert_eq!(doc["standbys"][0]["state"], "streaming", "{doc}");
    assert_eq!(doc["slots"][0]["name"], "clone1_slot", "{doc}");
    assert_eq!(doc["slots"][0]["active"], true, "{doc}");

    // A directory with files in it is refused before anything is asked of the primary.
    let o = clone(&primary, dir.to_str().unwrap(), &[]);
    assert_fails(&o, 2, "is not empty");
    // The slot is taken now: named with its fix, nothing made.
    let other = primary.data_dir().parent().unwrap().join("clone2");
    let o = clone(
        &primary,
        other.to_str().unwrap(),
        &["--slot", "clone1_slot"],
    );
    assert_fails(&o, 2, "clone1_slot already exists");
    assert!(!other.exists());
}

#[test]
fn clone_names_each_missing_prerequisite_and_leaves_nothing_behind() {
    // wal_level minimal (which needs max_wal_senders 0): both named, no directory made.
    let minimal = Cluster::builder()
        .setting("wal_level", "minimal")
        .setting("max_wal_senders", "0")
        .start()
        .expect("start a wal_level=minimal server");
    let dir = minimal.data_dir().parent().unwrap().join("clone");
    let o = clone(&minimal, dir.to_str().unwrap(), &[]);
    assert_fails(&o, 2, "wal_level is minimal");
    assert!(
        crate::stderr(&o).contains("max_wal_senders is 0"),
        "{}",
        crate::stderr(&o)
    );
    assert!(!dir.exists());

    // No pg_hba.conf line for replication: named, with the line to add.
    let primary = Cluster::start().expect("start a primary");
    let hba = primary.data_dir().join("pg_hba.conf");
    let kept: String = std::fs::read_to_string(&hba)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("replication"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&hba, kept).unwrap();
    primary.reload().unwrap();
    let dir = primary.data_dir().parent().unwrap().join("clone");
    let o = clone(&primary, dir.to_str().unwrap(), &[]);
    assert_fails(&o, 2, "no pg_hba.conf line admits a replication connection");
    assert!(
        crate::stderr(&o).contains("host replication postgres 127.0.0.1/32"),
        "{}",
        crate::stderr(&o)
    );
    assert!(!dir.exists());

    // pg_basebackup itself fails (a tablespace's directory cannot be written twice on one
    // host): the partial copy and the slot it created are gone.
    let primary = Cluster::start().expect("start a primary");
    let ts = primary.data_dir().parent().unwrap().join("ts");
    std::fs::create_dir(&ts).unwrap();
    let postgres = nix::unistd::User::from_name("postgres").unwrap().unwrap();
    nix::unistd::chown(&ts, Some(postgres.uid), Some(postgres.gid)).unwrap();
    primary
        .psql(
            "postgres",
            &format!("CREATE TABLESPACE extra LOCATION '{}'", ts.display()),
        )
        .unwrap();
    primary
        .psql(
            "postgres",
            "CREATE TABLE in_extra (x int) TABLESPACE extra; INSERT INTO in_extra VALUES (1)",
        )
        .unwrap();
    let o = clone(&primary, &dir_of(&primary, "clone"), &["--slot", "doomed"]);
    assert_fails(&o, 1, "pg_basebackup");
    assert!(!std::path::Path::new(&dir_of(&primary, "clone")).exists());
    assert_eq!(
        primary
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'doomed'"
            )
            .unwrap()
            .trim(),
        "0"
    );
}

/// `replica clone --from <c> --pgdata <dir> <extra...>`.
fn clone(c: &Cluster, dir: &str, extra: &[&str]) -> std::process::Output {
    let dsn = c.dsn();
    let mut args = vec!["replica", "clone", "--from", &dsn, "--pgdata", dir];
    args.extend_from_slice(extra);
    pgwarden(&args)
}

/// `replica rejoin --pgdata <old's data> --from <new> --yes`.
fn rejoin(old: &Cluster, new: &Cluster) -> std::process::Output {
    let (dir, from) = (old.data_dir().display().to_string(), new.dsn());
    pgwarden(&[
        "replica", "rejoin", "--pgdata", &dir, "--from", &from, "--yes",
    ])
}

/// `replica switchover --pgdata <dir> --to <to> <extra...>`.
fn switchover(dir: &str, to: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["replica", "switchover", "--pgdata", dir, "--to", to];
    args.extend_from_slice(extra);
    pgwarden(&args)
}

/// `pg_is_in_recovery()` on `c`: "t" or "f".
fn in_recovery(c: &Cluster) -> String {
    c.psql("postgres", "SELECT pg_is_in_recovery()")
        .unwrap()
        .trim()
        .to_string()
}

fn dir_of(c: &Cluster, name: &str) -> String {
    c.data_dir()
        .parent()
        .unwrap()
        .join(name)
        .display()
        .to_string()
}

/// Waits until `sql` on `c` prints `want`.
fn wait_for(c: &Cluster, sql: &str, want: &str) {
    let start = Instant::now();
    loop {
        if c.psql("postgres", sql)
            .map(|o| o.trim() == want)
            .unwrap_or(false)
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{sql} never gave {want}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn rejoin_rewinds_an_old_primary_into_a_standby_of_the_new_one() {
    // Keeping WAL is what lets pg_rewind find where the servers diverged once the old
    // primary has checkpointed past it (as an HA set-up configures it).
    let old = Cluster::builder()
        .data_checksums(true)
        .setting("wal_keep_size", "256MB")
        .start()
        .expect("start a primary with data checksums");
    old.psql(
        "postgres",
        "CREATE TABLE t (v text); INSERT INTO t VALUES ('before')",
    )
    .unwrap();
    let new = Cluster::builder()
        .standby_of(&old)
        .application_name("new")
        .start()
        .expect("start a standby");
    new.wait_streaming(Duration::from_secs(30)).unwrap();
    wait_for(&new, "SELECT count(*) FROM t", "1");
    let o = pgwarden(&["replica", "promote", "-d", &new.dsn(), "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", crate::stderr(&o));
    // Both take writes now: the old primary's is lost by the rejoin, the new one's kept.
    old.psql("postgres", "INSERT INTO t VALUES ('lost')")
        .unwrap();
    new.psql("postgres", "INSERT INTO t VALUES ('kept')")
        .unwrap();

    let args = [
        "replica",
        "rejoin",
        "--pgdata",
        old.data_dir().to_str().unwrap(),
    ];
    let from = new.dsn();
    // Not a terminal and no --yes: refused, the old primary still runs as it was.
    let mut no = args.to_vec();
    no.extend(["--from", &from]);
    assert_fails(&pgwarden(&no), 2, "--yes");
    assert_eq!(in_recovery(&old), "f");

    let mut yes = no.clone();
    yes.extend(["--slot", "old_slot", "--yes", "--format", "json"]);
    let o = pgwarden(&yes);
    let doc = json(&o);
    assert_eq!(o.status.code(), Some(0), "{doc} {}", crate::stderr(&o));
    assert_eq!(doc["stopped_first"], true, "{doc}");
    assert_eq!(doc["rewound"], true, "{doc}");
    assert_eq!(doc["streaming"], true, "{doc}");
    assert_eq!(in_recovery(&old), "t");
    new.psql("postgres", "INSERT INTO t VALUES ('after')")
        .unwrap();
    wait_for(
        &old,
        "SELECT string_agg(v, ',' ORDER BY v) FROM t",
        "after,before,kept",
    );
    let doc = status_json(&new.dsn(), 0);
    assert_eq!(doc["standbys"][0]["application_name"], "old_slot", "{doc}");
    assert_eq!(doc["slots"][0]["name"], "old_slot", "{doc}");
    assert_eq!(doc["slots"][0]["active"], true, "{doc}");
}

#[test]
fn rejoin_without_hint_bits_in_wal_is_refused_before_anything_stops() {
    let (primary, standby) = pair();
    let o = pgwarden(&["replica", "promote", "-d", &standby.dsn(), "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", crate::stderr(&o));
    let o = rejoin(&primary, &standby);
    assert_fails(&o, 2, "neither wal_log_hints nor data checksums");
    // Untouched: still running, still a primary.
    assert_eq!(in_recovery(&primary), "f");
    // --from must be a primary.
    let other = Cluster::builder()
        .standby_of(&standby)
        .start()
        .expect("a standby");
    let o = rejoin(&primary, &other);
    assert_fails(&o, 2, "must name the current primary");
}

#[test]
fn rejoin_without_the_wal_back_to_the_divergence_says_so_and_changes_nothing() {
    // No WAL kept: the old primary's clean stop recycles the segment where the servers'
    // histories last met, and pg_rewind cannot start from there.
    let old = Cluster::builder()
        .data_checksums(true)
        .start()
        .expect("start a primary with data checksums");
    old.psql("postgres", "CREATE TABLE t (v text)").unwrap();
    let new = Cluster::builder()
        .standby_of(&old)
        .start()
        .expect("start a standby");
    new.wait_streaming(Duration::from_secs(30)).unwrap();
    let o = pgwarden(&["replica", "promote", "-d", &new.dsn(), "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", crate::stderr(&o));
    old.psql("postgres", "INSERT INTO t VALUES ('diverged')")
        .unwrap();
    let o = rejoin(&old, &new);
    assert_fails(
        &o,
        1,
        "no longer has the WAL back to where the servers diverged",
    );
    assert!(
        crate::stderr(&o).contains("replica clone"),
        "{}",
        crate::stderr(&o)
    );
    assert!(!old.data_dir().join("standby.signal").exists());
}

#[test]
fn switchover_loses_no_commit_and_the_old_primary_follows() {
    let (primary, standby) = pair();
    // Commits up to the switch: every one is on the new primary.
    primary
        .psql(
            "postgres",
            "INSERT INTO ticks SELECT now() FROM generate_series(1, 1000)",
        )
        .unwrap();
    let dir = primary.data_dir().display().to_string();
    let to = standby.dsn();
    let o = switchover(&dir, &to, &[]);
    assert_fails(&o, 2, "--yes");
    let o = switchover(
        &dir,
        &to,
        &["--slot", "old_primary", "--yes", "--format", "json"],
    );
    let doc = json(&o);
    assert_eq!(o.status.code(), Some(0), "{doc} {}", crate::stderr(&o));
    assert_eq!(doc["timeline"], 2, "{doc}");
    assert_eq!(doc["streaming"], true, "{doc}");
    eprintln!("switchover: no writes for {} ms", doc["write_gap_ms"]);
    assert_eq!(in_recovery(&standby), "f");
    assert_eq!(
        standby
            .psql("postgres", "SELECT count(*) FROM ticks")
            .unwrap()
            .trim(),
        "1000"
    );
    assert_eq!(in_recovery(&primary), "t");
    // The old primary replays the new one's writes.
    standby
        .psql("postgres", "INSERT INTO ticks VALUES (now())")
        .unwrap();
    wait_for(&primary, "SELECT count(*) FROM ticks", "1001");
    let doc = status_json(&standby.dsn(), 0);
    assert_eq!(
        doc["standbys"][0]["application_name"], "old_primary",
        "{doc}"
    );

    // Now the old primary is a standby: switching from it again is refused, nothing changed.
    let o = switchover(&dir, &to, &["--yes"]);
    assert_fails(&o, 2, "is not a running primary");
}
