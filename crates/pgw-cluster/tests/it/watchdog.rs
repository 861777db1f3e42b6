//! The watchdog stops the server and removes its files when the owner dies without dropping
//! the `Cluster`: SIGKILL, or a `static` that is never dropped. It never signals a process a
//! stale pid file names.
//!
//! Each test runs this same test binary as a child, selecting an `#[ignore]`d helper that
//! starts a cluster and prints `PORT=<n> DIR=<path>`; the helpers do nothing unless
//! [`HELPER_ENV`] is set, so `cargo test -- --ignored` stays harmless.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::Signal;
use pgw_cluster::watchdog::{Watchdog, Watched};
use pgw_cluster::Cluster;

use crate::{accepts, eventually, start};

const HELPER_ENV: &str = "PGW_CLUSTER_WATCHDOG_HELPER";

/// Runs the helper test `name` in a child process and reads its `PORT=.. DIR=..` line.
fn spawn_helper(name: &str) -> (Child, u16, PathBuf) {
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
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next() {
        let line = line.unwrap();
        // libtest prints "test <name> ... " on the same line first.
        if let Some((_, rest)) = line.split_once("PORT=") {
            let (port, dir) = rest.split_once(" DIR=").unwrap();
            // Keep draining, so the helper's later output does not hit a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return (child, port.parse().unwrap(), PathBuf::from(dir));
        }
    }
    let status = child.wait().unwrap();
    panic!("helper {name} exited ({status}) without printing PORT=; see its stderr above");
}

fn announce(cluster: &Cluster) {
    println!(
        "PORT={} DIR={}",
        cluster.port(),
        cluster.socket_dir().display()
    );
}

fn assert_cleaned_up(port: u16, dir: &Path) {
    assert!(
        eventually(Duration::from_secs(10), || !accepts(port) && !dir.exists()),
        "10 s after the owner died: port {port} accepts={}, {} exists={}",
        accepts(port),
        dir.display(),
        dir.exists()
    );
}

#[test]
fn sigkilled_owner_is_cleaned_up() {
    let (mut child, port, dir) = spawn_helper("watchdog::helper_hold_cluster_until_killed");
    assert!(accepts(port), "the helper's cluster is up");
    assert!(dir.is_dir());

    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();

    assert_cleaned_up(port, &dir);
}

#[test]
fn static_cluster_is_cleaned_up_at_exit() {
    let (mut child, port, dir) = spawn_helper("watchdog::helper_static_cluster");
    let status = child.wait().unwrap();
    assert!(status.success(), "helper failed: {status}");

    assert_cleaned_up(port, &dir);
}

fn sleeper(cwd: &Path) -> Child {
    Command::new("sleep")
        .arg("60")
        .current_dir(cwd)
        .spawn()
        .expect("spawn sleep")
}

#[test]
fn stale_pid_files_are_not_signalled() {
    // The watchdog wakes when its fixture's temp dir is gone (as when its owner dies), and
    // works through the pid files in order: the last one names the process really meant.
    let fixture = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut stranger = sleeper(Path::new("/"));
    let mut meant = sleeper(home.path());
    let grace = Duration::from_millis(200);
    let mut watched = Vec::new();
    for (name, pid) in [
        ("zero", "0".to_owned()),
        ("one", "1".to_owned()),
        ("stranger", stranger.id().to_string()),
        ("meant", meant.id().to_string()),
    ] {
        let pidfile = files.path().join(format!("{name}.pid"));
        std::fs::write(&pidfile, format!("{pid}\n")).unwrap();
        watched.push(Watched::new(pidfile, home.path(), Signal::SIGTERM, grace));
    }
    let watchdog = Watchdog::spawn(fixture.path(), &watched).unwrap();
    fixture.close().unwrap();

    assert!(
        eventually(Duration::from_secs(15), || meant
            .try_wait()
            .unwrap()
            .is_some()),
        "the watchdog (pid {}) did not stop the process its pid file meant",
        watchdog.pid()
    );
    assert_eq!(
        stranger.try_wait().unwrap(),
        None,
        "a process working elsewhere was signalled"
    );
    drop(watchdog);
    stranger.kill().unwrap();
    stranger.wait().unwrap();
}

#[test]
#[ignore = "helper for sigkilled_owner_is_cleaned_up; runs only in its child process"]
fn helper_hold_cluster_until_killed() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let cluster = start(Cluster::builder());
    announce(&cluster);
    // The parent SIGKILLs us; the bound keeps an orphaned helper from living forever.
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
#[ignore = "helper for static_cluster_is_cleaned_up_at_exit; runs only in its child process"]
fn helper_static_cluster() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    let cluster = CLUSTER.get_or_init(|| start(Cluster::builder()));
    assert_eq!(cluster.psql("postgres", "select 1").unwrap(), "1");
    announce(cluster);
    // Returning ends the test binary; the static is never dropped.
}
