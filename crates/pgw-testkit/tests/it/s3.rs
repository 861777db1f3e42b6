//! The S3 server (moto): buckets made, objects written, read back and listed, the answers to
//! wrong requests, the test credentials, cleanup on drop, and the watchdog's cleanup when the
//! owner is SIGKILLed.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use pgw_testkit::{S3Server, TestkitError};

use crate::{accepts, eventually, process_alive};

const HELPER_ENV: &str = "PGW_TESTKIT_S3_HELPER";

fn server() -> S3Server {
    S3Server::start().unwrap_or_else(|e| panic!("start the S3 server: {e}"))
}

#[test]
fn buckets_and_objects_round_trip_and_drop_stops_it() {
    let s3 = server();
    let port = s3.port();
    assert_eq!(s3.endpoint(), format!("http://127.0.0.1:{port}"));
    assert!(accepts(port));

    s3.create_bucket("pgw-fixture").unwrap();
    s3.create_bucket("pgw-fixture")
        .expect("making a bucket that exists is no error");
    assert_eq!(s3.list("pgw-fixture", "").unwrap(), Vec::<String>::new());

    let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    s3.put_object("pgw-fixture", "a/b/blob.bin", &payload)
        .unwrap();
    s3.put_object("pgw-fixture", "a/odd name+&.txt", b"odd")
        .unwrap();
    s3.put_object("pgw-fixture", "z.txt", b"z").unwrap();
    assert_eq!(
        s3.get_object("pgw-fixture", "a/b/blob.bin").unwrap(),
        Some(payload),
        "binary bodies come back unchanged"
    );
    assert_eq!(
        s3.get_object("pgw-fixture", "a/odd name+&.txt").unwrap(),
        Some(b"odd".to_vec())
    );
    assert_eq!(s3.get_object("pgw-fixture", "missing").unwrap(), None);
    assert_eq!(
        s3.list("pgw-fixture", "").unwrap(),
        ["a/b/blob.bin", "a/odd name+&.txt", "z.txt"]
    );
    assert_eq!(
        s3.list("pgw-fixture", "a/").unwrap(),
        ["a/b/blob.bin", "a/odd name+&.txt"]
    );

    // moto's refusals come back as errors with its reason.
    let err = s3.list("no-such-bucket", "").unwrap_err();
    assert!(
        matches!(err, TestkitError::BadResponse { .. }) && err.to_string().contains("NoSuchBucket"),
        "{err}"
    );
    let err = s3.create_bucket("x").unwrap_err();
    assert!(err.to_string().contains("InvalidBucketName"), "{err}");

    // The log shows the requests it answered.
    assert!(s3.log().contains("PUT /pgw-fixture"), "{}", s3.log());

    let (pid, dir) = (s3.pid().expect("it runs"), s3.dir().to_owned());
    assert!(dir.join("moto.log").is_file());
    drop(s3);
    assert!(!process_alive(pid), "moto_server {pid} stopped on drop");
    assert!(!accepts(port));
    assert!(!dir.exists());
}

#[test]
fn credentials_and_env_for_a_child() {
    let s3 = server();
    let env = s3.env();
    let get = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{k} in {env:?}"))
    };
    assert_eq!(get("AWS_ACCESS_KEY_ID"), s3.access_key_id());
    assert_eq!(get("AWS_SECRET_ACCESS_KEY"), s3.secret_access_key());
    assert_eq!(get("AWS_REGION"), s3.region());
    assert_eq!(s3.region(), "us-east-1");
    assert_eq!(env.len(), 3);
    // Two servers at once are independent.
    let other = server();
    assert_ne!(other.port(), s3.port());
    other.create_bucket("only-here").unwrap();
    assert!(other.list("only-here", "").is_ok());
    assert!(s3.list("only-here", "").is_err());
}

#[test]
fn a_missing_binary_names_run_test() {
    let err = S3Server::start_binary(&PathBuf::from("/nonexistent/moto_server")).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("/nonexistent/moto_server"), "{text}");
    assert!(text.contains("./run test"), "{text}");
    assert!(text.contains("PGWARDEN_MOTO_SERVER"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[test]
fn a_server_that_exits_at_once_fails_with_its_log() {
    // Not moto: sh refuses moto's -H flag and exits at once, saying so.
    let err = S3Server::start_binary(&PathBuf::from("/bin/sh")).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, TestkitError::Exited { .. }) && text.contains("-H"),
        "{text}"
    );
}

#[test]
fn sigkilled_owner_of_s3_is_cleaned_up() {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "s3::helper_hold_s3",
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
    let seen = loop {
        let Some(line) = lines.next() else {
            let status = child.wait().unwrap();
            panic!("the helper exited ({status}) without printing PORT=; see its stderr above");
        };
        let line = line.unwrap();
        if let Some((_, rest)) = line.split_once("PORT=") {
            let (port, rest) = rest.split_once(" PID=").unwrap();
            let (pid, dir) = rest.split_once(" DIR=").unwrap();
            break (
                port.parse::<u16>().unwrap(),
                pid.parse::<u32>().unwrap(),
                PathBuf::from(dir),
            );
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let (port, pid, dir) = seen;
    assert!(accepts(port) && process_alive(pid) && dir.is_dir());
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(15), || !process_alive(pid)
            && !accepts(port)
            && !dir.exists()),
        "15 s after the owner died: pid {pid} alive={}, port {port} accepts={}, {} exists={}",
        process_alive(pid),
        accepts(port),
        dir.display(),
        dir.exists()
    );
}

#[test]
#[ignore = "helper for sigkilled_owner_of_s3_is_cleaned_up; runs only in its child process"]
fn helper_hold_s3() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let s3 = server();
    println!(
        "PORT={} PID={} DIR={}",
        s3.port(),
        s3.pid().unwrap(),
        s3.dir().display()
    );
    std::thread::sleep(Duration::from_secs(120));
}
