//! An encrypted repository: the archiver pushes with the key file, no object holds a
//! plaintext that the data directory and the WAL do; verify and restore work with the key,
//! and every command refuses a wrong key or none with one line and exit 2.

use super::{assert_error, assert_ok, files_under, server_user, Repo, Restored};

const SECRET: &str = "correct horse battery staple";
const MARKER: &str = "PGWARDEN-PLAINTEXT-MARKER";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn an_encrypted_repository_holds_no_plaintext_and_needs_its_key() {
    let repo = Repo::encrypted(SECRET);
    assert!(repo.archive_command().contains("--encryption-key-file"));
    let c = repo.cluster();

    let init = repo.init(&c);
    assert_eq!(init["encrypted"], true, "{init:#}");
    c.psql(
        "postgres",
        &format!(
            "create table secrets (id int primary key, body text);
             insert into secrets select g, '{MARKER}-' || g from generate_series(1, 2000) g;"
        ),
    )
    .expect("load secrets");
    let full = repo.backup(&c, "full");
    let id = full["id"].as_str().expect("an id").to_string();
    c.psql(
        "postgres",
        &format!("insert into secrets values (2001, '{MARKER}-in-the-wal-only')"),
    )
    .expect("write after the backup");
    repo.switch_wal(&c);

    // The plaintext is in the data directory (the backup's checkpoint wrote it) ...
    let in_data = files_under(&c.data_dir().join("base"))
        .iter()
        .any(|f| contains(&std::fs::read(f).unwrap_or_default(), MARKER.as_bytes()));
    assert!(in_data, "the marker should be in the data directory");
    // ... and in no object of the repository, WAL included.
    let objects = files_under(&repo.dir);
    assert!(
        objects
            .iter()
            .any(|f| f.to_string_lossy().contains("/wal/"))
            && !repo.packs(&id).is_empty(),
        "{objects:?}"
    );
    for f in &objects {
        let bytes = std::fs::read(f).expect("read an object");
        assert!(
            !contains(&bytes, MARKER.as_bytes()),
            "{} holds the plaintext",
            f.display()
        );
        assert!(
            !contains(&bytes, SECRET.as_bytes()),
            "{} holds the secret",
            f.display()
        );
    }
    let listed = repo.list();
    assert_eq!(listed["encrypted"], true, "{listed:#}");
    repo.assert_clean();
    // The key from the environment instead of a file.
    let bare = ["--repo", repo.dir_str()];
    let o = crate::pgwarden_env(
        &[&["backup", "verify"], &bare[..]].concat(),
        &[("PGWARDEN_ENCRYPTION_KEY", SECRET)],
    );
    assert_ok(&o, "verify with the key in $PGWARDEN_ENCRYPTION_KEY");

    // A wrong key, or none: every command refuses at once, with one line and exit 2.
    let wrong = repo.path("wrong.key");
    server_user()
        .write_file(&wrong, b"not the key\n", 0o600)
        .expect("write a wrong key");
    let wrong_s = wrong.display().to_string();
    let seg = repo.wal_segments()[0].clone();
    let fetched = repo.path("fetched").display().to_string();
    let dest = repo.path("never").display().to_string();
    let dsn = c.dsn();
    let pgdata = c.data_dir().display().to_string();
    let seg_path = repo.path(&seg).display().to_string();
    let commands: Vec<Vec<&str>> = vec![
        vec!["backup", "list"],
        vec!["backup", "verify"],
        vec!["backup", "init", "-d", &dsn, "--encrypt"],
        vec!["backup", "run", "-d", &dsn, "--pgdata", &pgdata],
        vec!["backup", "restore", "--pgdata", &dest],
        vec!["backup", "expire", "--retain-full", "1", "--yes"],
        vec!["backup", "drill"],
        vec!["wal", "fetch", &seg, &fetched],
        vec!["wal", "push", &seg_path],
    ];
    let before = repo.snapshot();
    for cmd in &commands {
        // wal fetch is restore_command: every failure is 126, so that PostgreSQL stops
        // recovery instead of taking it for the end of the archive.
        let code = if cmd[..2] == ["wal", "fetch"] { 126 } else { 2 };
        let with_wrong = [
            &cmd[..],
            &bare[..],
            &["--encryption-key-file", &wrong_s][..],
        ]
        .concat();
        assert_error(&crate::pgwarden(&with_wrong), code, "not repository");
        let o = crate::pgwarden_env(
            &[&cmd[..], &bare[..]].concat(),
            &[("PGWARDEN_ENCRYPTION_KEY", "not the key")],
        );
        assert_error(&o, code, "not repository");
        let without = [&cmd[..], &bare[..]].concat();
        assert_error(&crate::pgwarden(&without), code, "encrypted");
    }
    assert_eq!(repo.snapshot(), before, "a refused command wrote");
    assert!(!repo.path("never").exists());
    assert!(!repo.path("fetched").exists());

    // With the key, the restored server fetches and decrypts its WAL itself.
    let dest = repo.path("restored");
    repo.restore(&dest, &[]);
    let auto = std::fs::read_to_string(dest.join("postgresql.auto.conf")).expect("auto.conf");
    assert!(auto.contains("--encryption-key-file"), "{auto}");
    let restored = Restored::start(&dest, repo.scratch.path(), c.password());
    assert_eq!(
        restored.psql("select count(*) from secrets"),
        "2001",
        "the rows of the backup and of the WAL after it"
    );
    drop(restored);

    // The drill with the key only in the environment hands it to its server in a file.
    let o = crate::pgwarden_env(
        &[
            &[
                "backup",
                "drill",
                "--check-query",
                "select count(*) from secrets",
            ][..],
            &["--format", "json"][..],
            &bare[..],
        ]
        .concat(),
        &[("PGWARDEN_ENCRYPTION_KEY", SECRET)],
    );
    let doc = crate::json(&o);
    assert_eq!(o.status.code(), Some(0), "{doc:#}\n{}", crate::stderr(&o));
    assert_eq!(doc["ok"], true, "{doc:#}");
    assert_eq!(doc["check_result"], "2001", "{doc:#}");
}

/// `backup init` refused for its key (`--encrypt` without one, one without `--encrypt`, a
/// key file that cannot be read) makes no repository directory.
#[test]
fn a_refused_init_makes_no_directory() {
    let repo = Repo::encrypted(SECRET);
    let c = pgw_cluster::Cluster::start().expect("start a cluster");
    // --encrypt without a key, or a key without --encrypt: refused, no directory made.
    let other = repo.path("other-repo");
    let other_s = other.display().to_string();
    let key_s = repo
        .key_file
        .as_ref()
        .expect("a key file")
        .display()
        .to_string();
    let dsn = c.dsn();
    for (args, needle) in [
        (vec!["--encrypt"], "--encrypt needs a key"),
        (vec!["--encryption-key-file", &key_s], "without --encrypt"),
        (
            vec!["--encrypt", "--encryption-key-file", "/nonexistent/key"],
            "/nonexistent/key",
        ),
    ] {
        let o = crate::pgwarden(
            &[
                &["backup", "init", "-d", &dsn, "--repo", &other_s][..],
                &args[..],
            ]
            .concat(),
        );
        assert_error(&o, 2, needle);
        assert!(!other.exists(), "a refused init {args:?} made {other_s}");
    }
}
