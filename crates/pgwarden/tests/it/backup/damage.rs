//! Damage verify must find and name: one flipped byte in a pack, in a manifest, in an
//! archived WAL segment; a WAL segment gone from the middle of the archive. A clean
//! repository verifies with exit 0, before and after (each byte is put back).

use std::path::Path;

use super::{flip_byte, setup, Repo, Restored};

/// Verify (table and JSON) exits 1 and names `object` among its problems; returns what the
/// JSON says about it.
fn assert_named(repo: &Repo, object: &str) -> String {
    let o = repo.cmd(&["backup", "verify"]);
    let text = crate::stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}\n{}", crate::stderr(&o));
    assert!(
        text.contains(object),
        "the table should name {object}:\n{text}"
    );
    assert!(text.contains("problem"), "{text}");

    let (code, doc) = repo.verify();
    assert_eq!(code, Some(1), "{doc:#}");
    let problems = doc["problems"].as_array().expect("problems");
    let found = problems
        .iter()
        .find(|p| p["object"] == object)
        .unwrap_or_else(|| panic!("no problem names {object}: {doc:#}"));
    found["what"].as_str().unwrap_or_default().to_string()
}

fn rel(repo: &Repo, p: &Path) -> String {
    p.strip_prefix(&repo.dir)
        .expect("inside the repository")
        .display()
        .to_string()
}

#[test]
fn verify_names_each_damaged_or_missing_object() {
    let (repo, c) = setup();
    c.psql(
        "postgres",
        "create table d as select g, md5(g::text) as h from generate_series(1, 50000) g",
    )
    .expect("load d");
    let full = repo.backup(&c, "full");
    let id = full["id"].as_str().expect("an id").to_string();
    // Four more archived segments after the backup's.
    for round in 0..4 {
        c.psql(
            "postgres",
            &format!("insert into d select g, 'round {round}' from generate_series(1, 1000) g"),
        )
        .expect("write");
        repo.switch_wal(&c);
    }
    repo.assert_clean();
    let (_, doc) = repo.verify();
    assert_eq!(doc["backups"], 1, "{doc:#}");
    assert!(doc["pieces"].as_u64().is_some_and(|n| n > 0), "{doc:#}");

    // A byte in the middle of a pack.
    let packs = repo.packs(&id);
    assert!(!packs.is_empty(), "backup {id} has no pack");
    let pack = &packs[0];
    let len = std::fs::metadata(pack).expect("pack").len() as usize;
    flip_byte(pack, len / 2);
    let what = assert_named(&repo, &rel(&repo, pack));
    assert!(what.contains("damaged") || what.contains("piece"), "{what}");
    // Restore reads the damaged piece: it fails with one line naming the pack, and takes
    // away what it had written.
    let dest = repo.path("restored");
    let o = repo.cmd(&["backup", "restore", "--pgdata", &dest.display().to_string()]);
    super::assert_error(&o, 1, &rel(&repo, pack));
    assert!(!dest.exists(), "a failed restore left {}", dest.display());
    flip_byte(pack, len / 2);
    repo.assert_clean();

    // The pack gone.
    let aside = repo.path("aside.pgw");
    std::fs::rename(pack, &aside).expect("move the pack aside");
    let what = assert_named(&repo, &rel(&repo, pack));
    assert!(what.contains("missing"), "{what}");
    std::fs::rename(&aside, pack).expect("put the pack back");
    repo.assert_clean();

    // A byte of the manifest's body.
    let manifest = repo.dir.join(format!("backup/{id}/manifest.pgw"));
    let len = std::fs::metadata(&manifest).expect("manifest").len() as usize;
    flip_byte(&manifest, 68 + (len - 68) / 2);
    let what = assert_named(&repo, &format!("backup/{id}/manifest.pgw"));
    assert!(what.contains("damaged"), "{what}");
    flip_byte(&manifest, 68 + (len - 68) / 2);
    repo.assert_clean();

    // A byte of a WAL segment's body.
    let segments = repo.wal_segments();
    assert!(segments.len() >= 4, "{segments:?}");
    let middle = segments[segments.len() / 2].clone();
    let object = repo.wal_object(&middle);
    let len = std::fs::metadata(&object).expect("segment").len() as usize;
    flip_byte(&object, 68 + (len - 68) / 2);
    let what = assert_named(&repo, &rel(&repo, &object));
    assert!(what.contains("damaged"), "{what}");
    flip_byte(&object, 68 + (len - 68) / 2);
    repo.assert_clean();

    // The same segment gone: a gap in the archive, named by the segment.
    let aside = repo.path("aside.pgw");
    std::fs::rename(&object, &aside).expect("move the segment aside");
    let what = assert_named(&repo, &middle);
    assert!(what.contains("missing"), "{what}");
    std::fs::rename(&aside, &object).expect("put the segment back");
    repo.assert_clean();
}

/// A damaged WAL segment in the middle of what a restore replays: the restored server must
/// not end recovery early and promote without the commits after it (PostgreSQL takes any
/// restore_command exit status up to 125 for "no such file", which ends recovery there), and
/// the drill must not pass.
#[test]
fn a_damaged_wal_segment_is_not_taken_for_the_end_of_the_archive() {
    let (repo, c) = setup();
    c.psql("postgres", "create table t (n int)")
        .expect("make t");
    repo.backup(&c, "full");
    let mut segments = Vec::new();
    for n in 1..=3 {
        c.psql("postgres", &format!("insert into t values ({n})"))
            .expect("insert");
        segments.push(repo.switch_wal(&c));
    }
    let object = repo.wal_object(&segments[1]);
    let len = std::fs::metadata(&object).expect("segment").len() as usize;
    flip_byte(&object, 68 + (len - 68) / 2);

    // The fetch itself fails, naming the segment.
    let dest = repo.path("fetched");
    let o = repo.cmd(&["wal", "fetch", &segments[1], &dest.display().to_string()]);
    assert!(!o.status.success(), "{}", crate::stderr(&o));
    assert!(
        crate::stderr(&o).contains(&segments[1]),
        "{}",
        crate::stderr(&o)
    );
    assert!(!dest.exists());

    // A restore to the latest state: the server either stops at the damage or has every row.
    let pgdata = repo.path("restored");
    repo.restore(&pgdata, &[]);
    let (restored, started) = Restored::try_start(&pgdata, repo.scratch.path(), c.password());
    if started.is_ok() {
        assert_eq!(
            restored.psql("select string_agg(n::text, ',' order by n) from t"),
            "1,2,3",
            "the restored server promoted without the commits after the damaged segment {}",
            segments[1]
        );
    }
    drop(restored);

    let o = repo.cmd(&[
        "backup",
        "drill",
        "--check-query",
        "select count(*) from t",
        "--format",
        "json",
    ]);
    assert_ne!(
        o.status.code(),
        Some(0),
        "the drill passed on a repository with a damaged WAL segment: {}{}",
        crate::stdout(&o),
        crate::stderr(&o)
    );
}
