//! `pgwarden demo`: runs end to end, and leaves no server behind, even on Ctrl-C.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{json, stderr};

/// No process mentions `dir` any more (the cluster's postmaster and watchdog are gone).
fn wait_no_process_mentions(dir: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let out = Command::new("pgrep")
            .args(["-f", dir])
            .output()
            .expect("pgrep");
        if out.stdout.is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn dir_is_empty(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[test]
fn demo_runs_and_cleans_up() {
    let tmp = tempfile::Builder::new()
        .prefix("pgwdemo")
        .tempdir_in("/tmp")
        .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_pgwarden"))
        .args(["demo", "--rows", "20000", "--format", "json"])
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "demo failed: {}", stderr(&o));
    let doc = json(&o);
    let tables: Vec<&str> = doc["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tables, ["customers", "events", "orders", "products"]);
    assert!(
        doc["tables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["dead_rows"].as_i64().unwrap() > 0),
        "churn left dead rows: {doc}"
    );
    assert!(!doc["tune"]["diff"].as_array().unwrap().is_empty());
    // partition: the rows beyond the premade months were rescued from the default
    // partition, months past retention detached, and a second run had nothing to do.
    let steps = doc["partition"]["maintain"]["sets"][0]["steps"]
        .as_array()
        .unwrap();
    let done = |action: &str| {
        steps
            .iter()
            .filter(|s| s["action"] == action && s["status"] == "done")
            .count()
    };
    assert_eq!(done("rescue"), 1, "{steps:#?}");
    assert!(done("retire") >= 1, "{steps:#?}");
    assert_eq!(doc["partition"]["second_run_steps"], 0);
    assert_eq!(doc["partition"]["listing"][0]["default_rows"], 0);
    // doctor finds what the demo planted.
    let checks: Vec<&str> = doc["doctor"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    for planted in [
        "duplicate_index",
        "invalid_index",
        "sequence_exhaustion",
        "missing_fk_index",
    ] {
        assert!(
            checks.contains(&planted),
            "doctor missed {planted}: {checks:?}"
        );
    }
    assert!(doc["apply"]["applied"].as_array().unwrap().len() > 3);
    assert_eq!(
        doc["after_restart"]["not_in_effect"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "{doc}"
    );
    let pool = &doc["pool"];
    for side in ["direct", "pooled"] {
        assert!(pool[side]["tps"].as_f64().unwrap() > 0.0, "{pool}");
        assert!(pool[side]["connect_ms"].as_f64().unwrap() > 0.0, "{pool}");
    }
    let pools = pool["show_pools"].as_array().unwrap();
    assert!(
        pools
            .iter()
            .any(|r| r["database"] == "postgres" && r["pool_mode"] == "transaction"),
        "{pool}"
    );
    let backup = &doc["backup"];
    assert_eq!(backup["matches"], true, "{backup}");
    assert_eq!(backup["drill"]["ok"], true, "{backup}");
    assert_eq!(backup["drill"]["amcheck_ok"], true, "{backup}");
    assert!(
        backup["drill"]["rto_seconds"].as_f64().unwrap() > 0.0,
        "{backup}"
    );
    assert!(
        backup["incr"]["stored_bytes"].as_u64().unwrap() * 5
            < backup["full"]["stored_bytes"].as_u64().unwrap(),
        "an incremental after a few thousand inserts is a small part of a full: {backup}"
    );
    let ha = &doc["ha"];
    assert_eq!(ha["before"]["leader"], "node1", "{ha}");
    assert_eq!(ha["new_leader"], "node2", "{ha}");
    assert!(ha["acked_before"].as_u64().unwrap() > 0, "{ha}");
    assert_eq!(
        ha["present_after"], ha["acked_before"],
        "acknowledged writes lost: {ha}"
    );
    assert!(ha["downtime_ms"].as_u64().unwrap() > 0, "{ha}");
    let after: Vec<(&str, &str)> = ha["after"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        after,
        [("replica", "streaming"), ("leader", "running")],
        "{ha}"
    );
    assert!(
        wait_no_process_mentions(tmp.path().to_str().unwrap()),
        "a server outlived the demo"
    );
    assert!(dir_is_empty(tmp.path()), "the demo left files behind");
    // The human report, too.
    let o = Command::new(env!("CARGO_BIN_EXE_pgwarden"))
        .args(["demo", "--rows", "5000"])
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "demo failed: {}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("pgwarden tune --diff")
            && text.contains("shared_buffers")
            && text.contains("writes accepted again on node2 after"),
        "{text}"
    );
}

/// Runs the demo in a temp dir, sends SIGINT once `marker` (a path below one of the
/// demo's temp dirs) exists plus `settle`, and checks the demo exits 130 leaving no process
/// and no file behind.
fn interrupt_demo(prefix: &str, rows: &str, marker: &str, settle: Duration, what: &str) {
    let tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgwarden"))
        .args(["demo", "--rows", rows])
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "the demo never reached {what}");
        let started = std::fs::read_dir(tmp.path())
            .map(|d| d.flatten().any(|e| e.path().join(marker).exists()))
            .unwrap_or(false);
        if started {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(settle);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "exit code after Ctrl-C; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        wait_no_process_mentions(tmp.path().to_str().unwrap()),
        "a process outlived the demo interrupted during {what}"
    );
    assert!(
        dir_is_empty(tmp.path()),
        "the demo interrupted during {what} left files behind"
    );
}

#[test]
fn demo_interrupted_with_ctrl_c_stops_its_cluster() {
    // The cluster's server is up (its postmaster.pid exists; the watchdog alone already
    // mentions the dir); the load gets a moment.
    interrupt_demo(
        "pgwint",
        "2000000",
        "data/postmaster.pid",
        Duration::from_secs(2),
        "its load",
    );
}

#[test]
fn demo_interrupted_during_its_ha_part_stops_etcd_agents_and_servers() {
    interrupt_demo(
        "pgwhaint",
        "2000",
        "node2/data/postmaster.pid",
        Duration::ZERO,
        "its HA part",
    );
}
