//! `backup expire`: three fulls and an incremental on the second; keeping one full removes
//! the older backups and the WAL before the newest full's start, keeps the newest full (which
//! still verifies and restores). A dry run and a run without --yes (stdin not a terminal)
//! change nothing.

use std::time::Duration;

use super::{assert_error, assert_ok, files_under, setup, table_sums, Restored};

/// Sleeps into the next wall-clock second: backup ids are made of the second they start in,
/// and backups of the same second can be ordered wrongly (see round_trip's
/// backups_taken_in_the_same_second_keep_their_order); this test is not about that.
fn next_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970");
    std::thread::sleep(Duration::from_millis(1010 - u64::from(now.subsec_millis())));
}

fn id(b: &serde_json::Value) -> String {
    b["id"].as_str().expect("an id").to_string()
}

#[test]
fn expire_keeps_the_newest_full_and_the_wal_it_needs() {
    let (repo, c) = setup();
    let write = |n: u32| {
        c.psql(
            "postgres",
            &format!(
                "insert into e select g + {n} * 1000, 'v' || g from generate_series(1, 1000) g"
            ),
        )
        .expect("write");
    };
    c.psql("postgres", "create table e (id int primary key, v text)")
        .expect("make e");
    write(0);
    let f1 = id(&repo.backup(&c, "full"));
    write(1);
    next_second();
    let f2 = id(&repo.backup(&c, "full"));
    write(2);
    next_second();
    let i2 = repo.backup(&c, "incr");
    assert_eq!(i2["parent"], f2.as_str(), "{i2:#}");
    let i2 = id(&i2);
    write(3);
    next_second();
    let f3 = repo.backup(&c, "full");
    let f3_start = f3["start_wal"].as_str().expect("start_wal").to_string();
    let f3 = id(&f3);
    write(4);
    repo.switch_wal(&c);
    let expected = table_sums(&c);

    let listed = |doc: &serde_json::Value| -> Vec<String> {
        doc["backups"]
            .as_array()
            .expect("backups")
            .iter()
            .map(id)
            .collect()
    };
    assert_eq!(
        listed(&repo.list()),
        [f1.clone(), f2.clone(), i2.clone(), f3.clone()]
    );
    let segments = repo.wal_segments();
    let (older, kept): (Vec<String>, Vec<String>) =
        segments.iter().cloned().partition(|s| *s < f3_start);
    assert!(
        !older.is_empty() && !kept.is_empty(),
        "WAL before and after {f3_start}: {segments:?}"
    );
    let before = repo.snapshot();

    // A dry run says what would go and removes nothing.
    let o = repo.cmd(&[
        "backup",
        "expire",
        "--retain-full",
        "1",
        "--dry-run",
        "--format",
        "json",
    ]);
    assert_ok(&o, "expire --dry-run");
    let plan = crate::json(&o);
    assert_eq!(plan["keep"], serde_json::json!([f3]), "{plan:#}");
    assert_eq!(plan["remove"], serde_json::json!([f1, f2, i2]), "{plan:#}");
    let remove_wal = plan["remove_wal"].as_array().expect("remove_wal");
    assert!(!remove_wal.is_empty(), "{plan:#}");
    for w in remove_wal {
        let name = w.as_str().and_then(|w| w.rsplit('/').next()).unwrap_or("");
        assert!(
            name[..24] < *f3_start,
            "{name} is not before {f3_start}: {plan:#}"
        );
    }
    let o = repo.cmd(&["backup", "expire", "--retain-full", "1", "--dry-run"]);
    assert_ok(&o, "expire --dry-run");
    assert!(
        crate::stdout(&o).contains("dry run"),
        "{}",
        crate::stdout(&o)
    );
    // Everything is within the last day: nothing to remove.
    let o = repo.cmd(&[
        "backup",
        "expire",
        "--retain-full",
        "1",
        "--retain-days",
        "1",
        "--dry-run",
        "--format",
        "json",
    ]);
    assert_ok(&o, "expire --retain-days 1 --dry-run");
    assert_eq!(crate::json(&o)["remove"], serde_json::json!([]));
    assert_eq!(repo.snapshot(), before, "a dry run changed the repository");

    // Without --yes, stdin not a terminal: refused, nothing removed.
    let o = repo.cmd(&["backup", "expire", "--retain-full", "1"]);
    assert_error(&o, 2, "--yes");
    assert_eq!(
        repo.snapshot(),
        before,
        "a refused expire changed the repository"
    );

    let o = repo.cmd(&[
        "backup",
        "expire",
        "--retain-full",
        "1",
        "--yes",
        "--format",
        "json",
    ]);
    assert_ok(&o, "expire --yes");
    assert_eq!(listed(&repo.list()), [f3.as_str()]);
    for gone in [&f1, &f2, &i2] {
        let left = files_under(&repo.dir.join("backup").join(gone));
        assert!(left.is_empty(), "backup {gone} left {left:?}");
    }
    assert_eq!(
        repo.wal_segments(),
        kept,
        "the WAL from {f3_start} on stays"
    );
    for f in files_under(&repo.dir.join("wal")) {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(
            name.len() < 24 || name[..24] >= *f3_start,
            "{name} is before the kept backup's start {f3_start}"
        );
    }
    repo.assert_clean();

    // Nothing more to do.
    let o = repo.cmd(&["backup", "expire", "--retain-full", "1", "--yes"]);
    assert_ok(&o, "expire again");
    assert!(
        crate::stdout(&o).contains("0 backups to remove"),
        "{}",
        crate::stdout(&o)
    );

    let dest = repo.path("restored");
    let r = repo.restore(&dest, &[]);
    assert_eq!(r["backup"], f3.as_str(), "{r:#}");
    let restored = Restored::start(&dest, repo.scratch.path(), c.password());
    assert_eq!(restored.table_sums(), expected);
}
