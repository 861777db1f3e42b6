//! A full backup, writes, a page-level incremental on it, more writes carried only by the
//! archived WAL, and a restore of the latest state that starts and holds every table (and a
//! visibility map that agrees with it) as the source does; an incremental after DDL; and
//! backups taken within one second keeping their order.

use super::{pgbench_init, setup, table_sums, Restored};

#[test]
fn full_then_incremental_restores_every_table() {
    let (repo, c) = setup();
    pgbench_init(&c, 2);
    c.psql(
        "postgres",
        "create table notes (id int primary key, body text);
         insert into notes select g, 'note ' || g from generate_series(1, 5000) g;",
    )
    .expect("load notes");

    let full = repo.backup(&c, "full");
    assert_eq!(full["kind"], "full", "{full:#}");
    assert_eq!(full["parent"], serde_json::Value::Null, "{full:#}");
    assert_eq!(full["from_standby"], false, "{full:#}");
    let full_id = full["id"].as_str().expect("an id").to_string();

    // A few pages of the 26 MB pgbench_accounts change, and a few of notes.
    c.psql(
        "postgres",
        "update pgbench_accounts set abalance = abalance + 7 where aid <= 100;
         insert into notes values (5001, 'after the full');
         delete from notes where id <= 10;",
    )
    .expect("write after the full");
    let incr = repo.backup(&c, "incr");
    assert_eq!(incr["kind"], "incr", "{incr:#}");
    assert_eq!(incr["parent"], full_id.as_str(), "{incr:#}");
    assert_eq!(incr["became_full"], false, "{incr:#}");
    let incr_id = incr["id"].as_str().expect("an id").to_string();
    assert_ne!(incr_id, full_id);
    let stored = |b: &serde_json::Value| b["stored_bytes"].as_u64().expect("stored_bytes");
    assert!(
        stored(&incr) * 10 < stored(&full),
        "an incremental after 100 changed rows stores {} bytes, the full {}",
        stored(&incr),
        stored(&full)
    );
    // Both restore the whole data directory.
    let data = |b: &serde_json::Value| b["data_bytes"].as_u64().expect("data_bytes");
    assert!(data(&full) > 20 << 20, "{full:#}");
    assert!(data(&incr) * 10 > data(&full) * 9, "{incr:#} vs {full:#}");

    // Writes after the incremental, which only the WAL carries.
    c.psql(
        "postgres",
        "update notes set body = body || ' (after the incremental)' where id % 100 = 0;
         insert into pgbench_history values (1, 1, 1, 42, now(), 'x');",
    )
    .expect("write after the incremental");
    repo.switch_wal(&c);
    let expected = table_sums(&c);
    assert_eq!(expected.len(), 5, "{expected:?}");

    let list = repo.list();
    let backups = list["backups"].as_array().expect("backups");
    assert_eq!(backups.len(), 2, "{list:#}");
    assert_eq!(backups[0]["id"], full_id.as_str(), "{list:#}");
    assert_eq!(backups[0]["kind"], "full", "{list:#}");
    assert_eq!(backups[0]["parent"], serde_json::Value::Null, "{list:#}");
    assert_eq!(backups[1]["id"], incr_id.as_str(), "{list:#}");
    assert_eq!(backups[1]["kind"], "incr", "{list:#}");
    assert_eq!(backups[1]["parent"], full_id.as_str(), "{list:#}");
    for b in backups {
        assert_eq!(b["restorable"], true, "{list:#}");
        assert!(b["pitr_to"].is_string(), "{list:#}");
    }
    assert_eq!(
        backups[1]["chain_stored_bytes"].as_u64(),
        Some(stored(&full) + stored(&incr)),
        "{list:#}"
    );
    assert_eq!(list["unfinished"], serde_json::json!([]), "{list:#}");
    repo.assert_clean();

    let dest = repo.path("restored");
    let r = repo.restore(&dest, &["--latest"]);
    assert_eq!(r["backup"], incr_id.as_str(), "{r:#}");
    assert_eq!(r["chain"], serde_json::json!([full_id, incr_id]), "{r:#}");
    for f in [
        "backup_label",
        "recovery.signal",
        "PG_VERSION",
        "global/pg_control",
    ] {
        assert!(dest.join(f).is_file(), "{f} was not restored");
    }
    let auto = std::fs::read_to_string(dest.join("postgresql.auto.conf")).expect("auto.conf");
    assert!(
        auto.contains("restore_command") && auto.contains("wal fetch") && auto.contains("%f %p"),
        "{auto}"
    );
    assert!(auto.contains(repo.dir_str()), "{auto}");
    assert!(!auto.contains("recovery_target_time ="), "{auto}");

    let restored = Restored::start(&dest, repo.scratch.path(), c.password());
    assert_eq!(restored.table_sums(), expected);
    // Index-only scans count what the source counts: 100 rows, not their 100 dead
    // versions as well (the incremental's visibility map must agree with its heap pages).
    let by_index = "set enable_seqscan = off; set enable_bitmapscan = off; \
                    select count(*) from pgbench_accounts where aid <= 100";
    assert_eq!(
        c.psql("postgres", by_index).expect("count on the source"),
        "100"
    );
    assert_eq!(
        restored.psql(by_index),
        "100",
        "an index-only scan on the restored cluster"
    );
    restored.assert_visibility_map_agrees();
}

/// DDL between a full and an incremental (a new table, a dropped one, TRUNCATE and VACUUM
/// FULL giving tables new files, a DELETE and VACUUM shrinking a file, a new database):
/// the incremental alone (no WAL written after it) restores each table as it was.
#[test]
fn an_incremental_after_ddl_restores_every_table() {
    let (repo, c) = setup();
    c.psql(
        "postgres",
        "create table gone as select g as id from generate_series(1, 1000) g;
         create table truncated as select g as id, 'old' as v from generate_series(1, 1000) g;
         create table rewritten (id int primary key, v text);
         insert into rewritten select g, 'r' || g from generate_series(1, 3000) g;
         create table shrunk (id int primary key, v text);
         insert into shrunk select g, repeat('s', 200) from generate_series(1, 5000) g;
         vacuum;",
    )
    .expect("load");
    let full = repo.backup(&c, "full");
    c.psql(
        "postgres",
        "create table fresh as select g as id, 'fresh ' || g as v from generate_series(1, 2000) g;
         drop table gone;
         truncate truncated;
         insert into truncated select g, 'new' from generate_series(1, 500) g;
         update rewritten set v = v || '!' where id % 7 = 0;
         vacuum full rewritten;
         delete from shrunk where id > 100;
         vacuum shrunk;
         create database second;",
    )
    .expect("DDL");
    c.psql(
        "second",
        "create table s as select g from generate_series(1, 100) g",
    )
    .expect("write in the new database");
    let size = c
        .psql("postgres", "select pg_relation_size('shrunk') < 100 * 8192")
        .expect("size");
    assert_eq!(size, "t", "VACUUM shrank the file");
    let incr = repo.backup(&c, "incr");
    assert_eq!(incr["parent"], full["id"], "{incr:#}");
    let expected = table_sums(&c);
    let in_second = c
        .psql("second", "select count(*) from s")
        .expect("count in second");
    repo.switch_wal(&c);

    let dest = repo.path("restored");
    let r = repo.restore(&dest, &["--latest"]);
    assert_eq!(r["backup"], incr["id"], "{r:#}");
    let restored = Restored::start(&dest, repo.scratch.path(), c.password());
    assert_eq!(restored.table_sums(), expected);
    assert_eq!(restored.psql("select to_regclass('gone') is null"), "t");
    assert_eq!(
        restored.psql("select pg_relation_size('shrunk') < 100 * 8192"),
        "t"
    );
    assert_eq!(in_second, "100");
    assert_eq!(
        restored.try_psql_in("second", "select count(*) from s"),
        Ok(in_second)
    );
    restored.assert_visibility_map_agrees();
}

/// Backups of a small cluster take well under a second, so several share the second their
/// id is made of: the repository must still know which is the newest (an incremental builds
/// on the backup taken just before it, `list` shows them in the order they were taken).
#[test]
fn backups_taken_in_the_same_second_keep_their_order() {
    let (repo, c) = setup();
    c.psql("postgres", "create table ticks (n int)")
        .expect("make ticks");
    let mut taken: Vec<serde_json::Value> = vec![repo.backup(&c, "full")];
    // Alternate incremental and full backups, back to back, until an incremental and the
    // full after it got ids of the same second (or a few rounds passed without that).
    for round in 0..8 {
        c.psql("postgres", &format!("insert into ticks values ({round})"))
            .expect("write");
        let incr = repo.backup(&c, "incr");
        let prev = &taken[taken.len() - 1];
        assert_eq!(
            incr["parent"], prev["id"],
            "an incremental builds on the backup taken just before it: {incr:#}\nbefore it: {prev:#}"
        );
        taken.push(incr);
        let full = repo.backup(&c, "full");
        let same_second = |a: &serde_json::Value, b: &serde_json::Value| {
            a["id"].as_str().map(|s| &s[..15]) == b["id"].as_str().map(|s| &s[..15])
        };
        let collided = same_second(&taken[taken.len() - 1], &full);
        taken.push(full);
        if collided {
            break;
        }
    }
    // One more incremental: it must build on the full taken last.
    let last = repo.backup(&c, "incr");
    let prev = &taken[taken.len() - 1];
    assert_eq!(
        last["parent"], prev["id"],
        "an incremental builds on the newest backup: {last:#}\nthe newest: {prev:#}"
    );
    taken.push(last);

    let list = repo.list();
    let listed: Vec<&str> = list["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .map(|b| b["id"].as_str().unwrap_or(""))
        .collect();
    let in_order: Vec<&str> = taken
        .iter()
        .map(|b| b["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        listed, in_order,
        "list shows the backups in the order they were taken"
    );
}
