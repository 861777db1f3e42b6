//! A backup taken from a streaming standby of an archiving primary: the primary archives
//! the backup's last segment (switched from another thread while the backup waits), the
//! backup says it is from a standby, and its restore holds the primary's tables.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pgw_cluster::Cluster;

use super::{table_sums, Repo, Restored};

#[test]
fn a_backup_of_a_standby_restores_the_primary() {
    let repo = Repo::new();
    let primary = repo.cluster();
    repo.init(&primary);
    primary
        .psql(
            "postgres",
            "create table orders (id int primary key, item text);
             insert into orders select g, 'item ' || g from generate_series(1, 20000) g;
             create table ticks (n serial primary key, at timestamptz default now());",
        )
        .expect("load the primary");
    let standby = Cluster::builder()
        .standby_of(&primary)
        .start()
        .expect("start a standby");
    standby
        .wait_streaming(Duration::from_secs(30))
        .expect("the standby streams");
    let lsn = primary
        .psql("postgres", "select pg_current_wal_lsn()")
        .expect("lsn");
    standby
        .wait_replayed(&lsn, Duration::from_secs(30))
        .expect("the standby replayed the load");

    // The primary writes and switches segments while the backup runs, so that the segment
    // the backup ends in is archived.
    let stop = AtomicBool::new(false);
    let backup = std::thread::scope(|s| {
        let switcher = s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                primary
                    .psql(
                        "postgres",
                        "insert into ticks default values; select pg_switch_wal();",
                    )
                    .expect("switch WAL on the primary");
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        let b = repo.backup(&standby, "full");
        stop.store(true, Ordering::SeqCst);
        switcher.join().expect("the switching thread");
        b
    });
    assert_eq!(backup["from_standby"], true, "{backup:#}");
    assert_eq!(backup["kind"], "full", "{backup:#}");
    let id = backup["id"].as_str().expect("an id").to_string();
    let list = repo.list();
    assert_eq!(list["backups"][0]["id"], id.as_str(), "{list:#}");
    assert_eq!(list["backups"][0]["from_standby"], true, "{list:#}");
    assert_eq!(list["backups"][0]["restorable"], true, "{list:#}");

    primary
        .psql(
            "postgres",
            "update orders set item = item || ' (after the backup)' where id % 1000 = 0",
        )
        .expect("write after the backup");
    repo.switch_wal(&primary);
    repo.assert_clean();
    let expected = table_sums(&primary);

    let dest = repo.path("restored");
    let r = repo.restore(&dest, &[]);
    assert_eq!(r["backup"], id.as_str(), "{r:#}");
    assert!(!dest.join("standby.signal").exists());
    let restored = Restored::start(&dest, repo.scratch.path(), primary.password());
    assert_eq!(restored.table_sums(), expected);
}
