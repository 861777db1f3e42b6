//! A backup killed (SIGKILL) after it stored packs and before its manifest: it is not a
//! usable backup (list shows it as unfinished), the next backup succeeds and verifies, and
//! expire removes the leftover.
//!
//! To kill it at a known point rather than racing the copy, the archiver is kept from
//! writing into the repository (its WAL directory made read-only for the server's user):
//! the backup stores its packs, then waits for its last WAL segment, and is killed there.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{files_under, setup, EXE};

#[test]
fn a_killed_backup_is_not_usable_and_the_next_one_is() {
    let (repo, c) = setup();
    c.psql(
        "postgres",
        "create table big as select g, repeat(md5(g::text), 4) as body from generate_series(1, 100000) g",
    )
    .expect("load big");
    let first = repo.switch_wal(&c);
    let wal_dir = repo.wal_object(&first);
    let wal_dir = wal_dir.parent().expect("the WAL directory");
    let mode = std::fs::metadata(wal_dir).expect("wal dir").permissions();
    std::fs::set_permissions(wal_dir, std::fs::Permissions::from_mode(0o555))
        .expect("make the WAL directory read-only");

    let dsn = c.dsn();
    let pgdata = c.data_dir().display().to_string();
    let mut child = Command::new(EXE)
        .args([
            "backup", "run", "-d", &dsn, "--pgdata", &pgdata, "--jobs", "2",
        ])
        .args(["--archive-timeout", "120", "--format", "json"])
        .args(repo.flags())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start backup run");
    // Wait for the first pack of the backup (the others follow; the backup then waits for
    // its WAL, which cannot be archived into the read-only directory).
    let deadline = Instant::now() + Duration::from_secs(60);
    let pack = loop {
        // A finished pack (a .pgw object), not the temporary file it is written through.
        let finished = files_under(&repo.dir.join("backup"))
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "pgw"));
        if let Some(p) = finished {
            break p;
        }
        if let Some(status) = child.try_wait().expect("poll backup run") {
            let out = child.wait_with_output().expect("collect its output");
            panic!(
                "backup run ended ({status}) before it was killed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "no pack appeared under backup/");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().expect("SIGKILL backup run");
    let status = child.wait().expect("reap backup run");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{status}"
    );
    std::fs::set_permissions(wal_dir, mode).expect("give the WAL directory back");

    let killed = pack
        .parent()
        .and_then(|d| d.file_name())
        .and_then(|n| n.to_str())
        .expect("the backup's directory")
        .to_string();
    assert!(
        !repo
            .dir
            .join(format!("backup/{killed}/manifest.pgw"))
            .exists(),
        "the killed backup has a manifest"
    );
    let list = repo.list();
    assert_eq!(list["backups"], serde_json::json!([]), "{list:#}");
    assert_eq!(list["unfinished"], serde_json::json!([killed]), "{list:#}");
    let (code, doc) = repo.verify();
    assert_eq!(code, Some(0), "an unfinished backup is not damage: {doc:#}");
    assert_eq!(doc["unfinished"], serde_json::json!([killed]), "{doc:#}");
    // Restore has nothing to restore, and says so.
    let dest = repo.path("never");
    let o = repo.cmd(&["backup", "restore", "--pgdata", &dest.display().to_string()]);
    super::assert_error(&o, 2, "no usable backup");
    assert!(!dest.exists());

    // The next backup: the server is not stuck in the killed one's backup mode.
    let next = repo.backup(&c, "full");
    let next_id = next["id"].as_str().expect("an id").to_string();
    assert_ne!(next_id, killed);
    let list = repo.list();
    let ids: Vec<&str> = list["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(ids, [next_id.as_str()], "{list:#}");
    assert_eq!(list["backups"][0]["restorable"], true, "{list:#}");
    assert_eq!(list["unfinished"], serde_json::json!([killed]), "{list:#}");
    repo.assert_clean();

    // Expire removes the leftover (older than the newest finished backup).
    let o = repo.cmd(&["backup", "expire", "--retain-full", "1", "--yes"]);
    super::assert_ok(&o, "expire");
    assert_eq!(repo.list()["unfinished"], serde_json::json!([]));
    assert!(files_under(&repo.dir.join("backup").join(&killed)).is_empty());
    repo.assert_clean();
}
