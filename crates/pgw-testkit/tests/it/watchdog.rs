//! The watchdog stops etcd and PgBouncer and removes their temp dirs when the owning process
//! is SIGKILLed without dropping them.
//!
//! Each test runs this test binary as a child, selecting an `#[ignore]`d helper that starts a
//! fixture and prints `PORT=<n> PID=<pid> DIR=<path>`; the helpers do nothing unless
//! [`HELPER_ENV`] is set, so `cargo test -- --ignored` stays harmless.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pgw_testkit::{Etcd, PgBouncer};

use crate::{accepts, eventually, process_alive};

const HELPER_ENV: &str = "PGW_TESTKIT_WATCHDOG_HELPER";

struct Seen {
    port: u16,
    pid: u32,
    dir: PathBuf,
}

fn spawn_helper(name: &str) -> (Child, Seen) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            name,
            "--nocapture",
            "--ignored",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(line) = lines.next() {
        let line = line.unwrap();
        if let Some((_, rest)) = line.split_once("PORT=") {
            let (port, rest) = rest.split_once(" PID=").unwrap();
            let (pid, dir) = rest.split_once(" DIR=").unwrap();
            std::thread::spawn(move || lines.for_each(drop));
            let seen = Seen {
                port: port.parse().unwrap(),
                pid: pid.parse().unwrap(),
                dir: PathBuf::from(dir),
            };
            return (child, seen);
        }
    }
    let status = child.wait().unwrap();
    panic!("helper {name} exited ({status}) without printing PORT=; see its stderr above");
}

fn announce(port: u16, pid: Option<u32>, dir: &Path) {
    println!("PORT={port} PID={} DIR={}", pid.unwrap(), dir.display());
}

fn kill_owner_and_check(name: &str) {
    let (mut child, seen) = spawn_helper(name);
    assert!(accepts(seen.port) && process_alive(seen.pid) && seen.dir.is_dir());
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(15), || !process_alive(seen.pid)
            && !accepts(seen.port)
            && !seen.dir.exists()),
        "15 s after the owner died: pid {} alive={}, port {} accepts={}, {} exists={}",
        seen.pid,
        process_alive(seen.pid),
        seen.port,
        accepts(seen.port),
        seen.dir.display(),
        seen.dir.exists()
    );
}

#[test]
fn sigkilled_owner_of_etcd_is_cleaned_up() {
    kill_owner_and_check("watchdog::helper_hold_etcd");
}

#[test]
fn sigkilled_owner_of_pgbouncer_is_cleaned_up() {
    kill_owner_and_check("watchdog::helper_hold_pgbouncer");
}

#[test]
#[ignore = "helper for sigkilled_owner_of_etcd_is_cleaned_up; runs only in its child process"]
fn helper_hold_etcd() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let etcd = Etcd::start().unwrap_or_else(|e| panic!("{e}"));
    let port: u16 = etcd.endpoint().rsplit(':').next().unwrap().parse().unwrap();
    announce(port, etcd.pid(0), etcd.dir());
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
#[ignore = "helper for sigkilled_owner_of_pgbouncer_is_cleaned_up; runs only in its child process"]
fn helper_hold_pgbouncer() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let cluster = crate::cluster();
    let bouncer = PgBouncer::start(&cluster).unwrap_or_else(|e| panic!("{e}"));
    announce(bouncer.port(), bouncer.pid(), bouncer.dir());
    std::thread::sleep(Duration::from_secs(120));
}
