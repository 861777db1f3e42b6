//! Bad input, refused before anything is written, each with one line on stderr: a
//! repository, data directory or WAL segment of another cluster, a restore into a non-empty
//! directory or to a target the repository cannot reach, a malformed target, a repository
//! or data directory that does not exist; a backup whose WAL is never archived; and a
//! damaged manifest, which restore names.

use pgw_cluster::Cluster;

use super::{assert_error, flip_byte, setup, Repo};

#[test]
fn refused_before_anything_is_written() {
    let (repo, a) = setup();
    let b = Cluster::start().expect("start another cluster");
    a.psql(
        "postgres",
        "create table t as select g from generate_series(1, 1000) g",
    )
    .expect("write on a");
    let full = repo.backup(&a, "full");
    let id = full["id"].as_str().expect("an id").to_string();
    a.psql("postgres", "insert into t values (0)")
        .expect("write on a");
    repo.switch_wal(&a);
    let before = repo.snapshot();

    // init again for the same cluster: found, nothing rewritten.
    let again = repo.init(&a);
    assert_eq!(again["created"], false, "{again:#}");
    assert_eq!(repo.snapshot(), before, "a second init wrote");

    // Another cluster's server, data directory, or WAL.
    let (b_dsn, b_data) = (b.dsn(), b.data_dir().display().to_string());
    let a_data = a.data_dir().display().to_string();
    for args in [
        vec!["backup", "run", "-d", &b_dsn, "--pgdata", &b_data],
        vec!["backup", "init", "-d", &b_dsn],
    ] {
        assert_error(&repo.cmd(&args), 2, "another cluster");
    }
    let a_dsn = a.dsn();
    assert_error(
        &repo.cmd(&["backup", "run", "-d", &a_dsn, "--pgdata", &b_data]),
        2,
        "not of the server",
    );
    let b_seg = b
        .psql("postgres", "select pg_walfile_name(pg_current_wal_lsn())")
        .expect("b's segment");
    let b_copy = repo.path(&b_seg);
    std::fs::copy(b.data_dir().join("pg_wal").join(&b_seg), &b_copy).expect("copy b's segment");
    assert_error(
        &repo.cmd(&["wal", "push", &b_copy.display().to_string()]),
        2,
        "cluster",
    );
    assert_eq!(repo.snapshot(), before, "a refused command wrote");

    // Restore into a directory that is not empty: its contents stay as they were.
    let full_dir = repo.path("full");
    std::fs::create_dir(&full_dir).expect("mkdir");
    std::fs::write(full_dir.join("keep.txt"), b"mine").expect("write keep.txt");
    let full_s = full_dir.display().to_string();
    assert_error(
        &repo.cmd(&["backup", "restore", "--pgdata", &full_s]),
        2,
        "not empty",
    );
    assert_eq!(
        super::files_under(&full_dir),
        [full_dir.join("keep.txt")],
        "the directory's contents changed"
    );
    assert_eq!(std::fs::read(full_dir.join("keep.txt")).unwrap(), b"mine");

    // Targets the repository cannot reach, and malformed ones: the directory is not made.
    let dest = repo.path("restored");
    let dest_s = dest.display().to_string();
    let future = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    for (args, needle) in [
        (
            vec!["--target-time", "2000-01-01 00:00:00+00"],
            "before the earliest backup",
        ),
        (
            vec!["--target-time", &future],
            "after the newest archived WAL",
        ),
        (
            vec!["--target-lsn", "FF/0"],
            "past the end of the archived WAL",
        ),
        (vec!["--target-lsn", "0/1"], "before the earliest backup"),
        (vec!["--target-time", "yesterday"], "--target-time"),
        (vec!["--target-time", "2026-12-06 14:30:00"], "zone"),
        (vec!["--target-lsn", "12345"], "--target-lsn"),
        (
            vec!["--target-time", "2026-12-06T14:30:00Z", "--latest"],
            "--latest",
        ),
        (vec!["--backup", "20000101-000000F"], "20000101-000000F"),
        (
            vec!["--backup", &id, "--target-time", "2000-01-01 00:00:00+00"],
            "after the target time",
        ),
    ] {
        let o = repo.cmd(&[&["backup", "restore", "--pgdata", &dest_s][..], &args[..]].concat());
        assert_error(&o, 2, needle);
        assert!(!dest.exists(), "{args:?} made {dest_s}");
    }

    // A directory to restore into whose parent does not exist, or a file.
    let deep = repo.path("no/such/dir").display().to_string();
    assert_error(
        &repo.cmd(&["backup", "restore", "--pgdata", &deep]),
        2,
        "does not exist",
    );
    assert!(!repo.path("no").exists());
    let file = repo.path("a-file");
    std::fs::write(&file, b"x").expect("write a file");
    assert_error(
        &repo.cmd(&["backup", "restore", "--pgdata", &file.display().to_string()]),
        2,
        "is a file",
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"x");

    // A repository that does not exist, or is not one.
    let nowhere = repo.path("nowhere").display().to_string();
    for args in [
        vec!["backup", "list"],
        vec!["backup", "restore", "--pgdata", &dest_s],
        vec!["backup", "run", "-d", &a_dsn, "--pgdata", &a_data],
        vec!["wal", "push", &b_copy.display().to_string()],
    ] {
        let o = crate::pgwarden(&[&args[..], &["--repo", &nowhere][..]].concat());
        assert_error(&o, 2, "no such directory");
    }
    assert!(!repo.path("nowhere").exists());
    let empty = repo.path("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let o = crate::pgwarden(&["backup", "list", "--repo", &empty.display().to_string()]);
    assert_error(&o, 2, "not a pgwarden repository");
    assert!(!dest.exists());

    // A cluster that does not archive at all: refused before the backup starts.
    let repo_b = Repo::new();
    repo_b.init(&b);
    let o = repo_b.cmd(&[
        "backup",
        "run",
        "-d",
        &b_dsn,
        "--pgdata",
        &b_data,
        "--archive-timeout",
        "2",
    ]);
    assert_error(&o, 2, "archive_mode = off");
    assert_eq!(repo_b.list()["backups"], serde_json::json!([]));
    assert_eq!(repo_b.list()["unfinished"], serde_json::json!([]));
}

/// `backup run --pgdata` naming a directory that does not exist is bad input (exit 2, as
/// for any object that does not exist), found before anything is written.
#[test]
fn a_missing_data_directory_is_bad_input() {
    let (repo, a) = setup();
    let a_dsn = a.dsn();
    let before = repo.snapshot();
    let missing = repo.path("no-pgdata").display().to_string();
    assert_error(
        &repo.cmd(&["backup", "run", "-d", &a_dsn, "--pgdata", &missing]),
        2,
        "no-pgdata",
    );
    assert_eq!(repo.snapshot(), before, "a refused backup wrote");
}

/// A damaged manifest: restore fails with one line naming it (not "no usable backup"), and
/// writes nothing.
#[test]
fn restore_names_a_damaged_manifest() {
    let (repo, a) = setup();
    a.psql(
        "postgres",
        "create table t as select g from generate_series(1, 100) g",
    )
    .expect("write");
    let full = repo.backup(&a, "full");
    let id = full["id"].as_str().expect("an id").to_string();
    repo.switch_wal(&a);
    let before = repo.snapshot();
    let dest = repo.path("restored");
    let dest_s = dest.display().to_string();
    let manifest = repo.dir.join(format!("backup/{id}/manifest.pgw"));
    let at = std::fs::metadata(&manifest).expect("manifest").len() as usize / 2;
    flip_byte(&manifest, at);
    let object = format!("backup/{id}/manifest.pgw");
    let mut said = Vec::new();
    for extra in [vec![], vec!["--backup", &id]] {
        let o = repo.cmd(&[&["backup", "restore", "--pgdata", &dest_s][..], &extra[..]].concat());
        assert!(!dest.exists());
        said.push((extra.join(" "), o));
    }
    flip_byte(&manifest, at);
    assert_eq!(repo.snapshot(), before);
    repo.assert_clean();
    for (extra, o) in &said {
        // Damage is "the work failed" (1); a refusal (2) would do as long as it names it.
        let code = o.status.code();
        assert!(
            matches!(code, Some(1 | 2)),
            "restore {extra} with a damaged manifest: exit {code:?}"
        );
        assert_error(o, code.unwrap_or(1), &object);
    }
}
