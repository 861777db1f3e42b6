//! Converting a populated table: rows copied in batches while writes continue, then the
//! swap; a conversion cut off mid-copy is finished by the rerun. Checked by row count and
//! checksum against a shadow table that received the same writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::{database, partitions, range, sql};

/// 200k rows over the last two years, and a plain shadow copy of them.
const SETUP: &str = "
CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY, created_at timestamptz NOT NULL,
                     payload text, PRIMARY KEY (id, created_at));
CREATE INDEX events_payload ON events (payload);
INSERT INTO events (created_at, payload)
SELECT now() - (g % 700) * interval '1 day' - g * interval '1 second', 'p' || g
  FROM generate_series(1, 200000) g;
CREATE TABLE shadow AS SELECT * FROM events;
GRANT SELECT ON events TO PUBLIC;
ANALYZE events;
";

const CHECKSUM: &str = "SELECT count(*) || ' ' || md5(string_agg(id || '|' || created_at || '|' || coalesce(payload, ''), ',' ORDER BY id))";

fn checksum(db: &str, table: &str) -> String {
    sql(db, &format!("{CHECKSUM} FROM {table}"))
}

/// Writes to `events` and `shadow` in the same transactions until `stop`: inserts,
/// updates of old rows, and deletes. Returns how many transactions it committed.
async fn writer(dsn: String, stop: Arc<AtomicBool>) -> u64 {
    let (client, _) = pgw_common::connect_dsn(Some(&dsn))
        .await
        .expect("writer connects");
    let mut n: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let k = (n * 7919) % 200_000 + 1;
        let tx = format!(
            "BEGIN;
             WITH i AS (INSERT INTO events (created_at, payload) VALUES (now(), 'w{n}') RETURNING *)
               INSERT INTO shadow SELECT * FROM i;
             UPDATE events SET payload = 'u{n}' WHERE id = {k};
             UPDATE shadow SET payload = 'u{n}' WHERE id = {k};
             DELETE FROM events WHERE id = {d};
             DELETE FROM shadow WHERE id = {d};
             COMMIT;",
            d = k + 1
        );
        if let Err(e) = client.batch_execute(&tx).await {
            panic!(
                "the concurrent writer failed (writes must keep working during a conversion): {e}"
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_populated_table_is_converted_while_writes_continue() {
    let (db, dsn) = database(SETUP);
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(dsn.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut o = range(&dsn, "events", "created_at", "1 month");
    o.batch_rows = 5000;
    // Without --yes nothing happens.
    let err = pgw_partition::create(&o).await.unwrap_err();
    assert!(err.to_string().contains("holds rows"), "{err}");
    o.yes = true;
    let r = pgw_partition::create(&o).await.expect("convert");
    let c = r.conversion.expect("a conversion report");
    assert!(c.batches > 10, "{c:?}");
    assert!(!c.resumed);

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let writes = w.await.expect("writer");
    assert!(
        writes > 20,
        "the writer ran throughout ({writes} transactions)"
    );

    assert_eq!(
        sql(&db, "SELECT relkind FROM pg_class WHERE relname = 'events'"),
        "p"
    );
    assert_eq!(
        checksum(&db, "events"),
        checksum(&db, "shadow"),
        "no row lost or duplicated"
    );
    assert_eq!(sql(&db, "SELECT count(*) FROM events_default"), "0");
    // Every month from two years ago to four ahead, and the default.
    assert!(
        partitions(&db, "events").len() >= 28,
        "{:#?}",
        partitions(&db, "events")
    );
    // The identity continues where it stood; the old table is kept; grants came along.
    let next = sql(
        &db,
        "INSERT INTO events (created_at) VALUES (now()) RETURNING id",
    );
    let max_old = sql(&db, "SELECT max(id) FROM events_pgw_old");
    assert!(next.parse::<i64>().unwrap() > max_old.parse::<i64>().unwrap());
    assert!(sql(
        &db,
        "SELECT relacl::text FROM pg_class WHERE relname = 'events'"
    )
    .contains("=r/"));
    assert_eq!(sql(&db, "SELECT count(*) FROM pgwarden.partition_set"), "1");
    // The indexes and the primary key kept their names; the old table's are parked.
    assert_eq!(
        sql(&db, "SELECT string_agg(indexrelid::regclass::text, ',' ORDER BY 1) FROM pg_index WHERE indrelid = 'events'::regclass"),
        "events_pkey,events_payload"
    );
    assert_eq!(
        sql(&db, "SELECT conname FROM pg_constraint WHERE conrelid = 'events'::regclass AND contype = 'p'"),
        "events_pkey"
    );
    assert!(
        sql(
            &db,
            "SELECT reltuples FROM pg_class WHERE relname = 'events_default'"
        ) != "-1",
        "analyzed"
    );
    assert_eq!(
        sql(
            &db,
            "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgwarden%'"
        ),
        "0"
    );
    // Managed like any other set from now on.
    assert_eq!(crate::steps(&crate::maintain(&dsn, false).await), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversion_cut_off_mid_copy_is_finished_by_the_rerun() {
    let (db, dsn) = database(SETUP);
    let before = checksum(&db, "events");
    let mut o = range(&dsn, "events", "created_at", "1 month");
    o.batch_rows = 500;
    o.yes = true;
    o.drop_old = true;
    let first = {
        let o = o.clone();
        tokio::spawn(async move { pgw_partition::create(&o).await })
    };
    // Cut it off (as a crash would) once the copy is under way.
    let mut waited = 0;
    loop {
        let started = sql(&db, "SELECT to_regclass('pgwarden.conversion') IS NOT NULL") == "t"
            && sql(
                &db,
                "SELECT coalesce(max(next_block), 0) FROM pgwarden.conversion",
            )
            .parse::<i64>()
            .unwrap_or(0)
                > 0;
        if started {
            break;
        }
        waited += 1;
        assert!(waited < 600, "the copy never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.abort();
    let _ = first.await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sql(&db, "SELECT relkind FROM pg_class WHERE relname = 'events'"),
        "r",
        "not swapped yet"
    );
    let pos: i64 = sql(&db, "SELECT next_block FROM pgwarden.conversion")
        .parse()
        .unwrap();
    let total: i64 = sql(&db, "SELECT total_blocks FROM pgwarden.conversion")
        .parse()
        .unwrap();
    assert!(pos < total, "cut off mid-copy ({pos} of {total})");
    // Writes still work and are mirrored while the conversion waits.
    sql(
        &db,
        "UPDATE events SET payload = 'while-waiting' WHERE id = 5",
    );
    let expected = checksum(&db, "events");
    assert_ne!(before, expected);

    let r = pgw_partition::create(&o).await.expect("the rerun finishes");
    let c = r.conversion.expect("a conversion report");
    assert!(c.resumed, "{c:?}");
    assert!(c.old_dropped);
    assert_eq!(
        checksum(&db, "events"),
        expected,
        "no row lost or duplicated"
    );
    assert_eq!(
        sql(&db, "SELECT to_regclass('events_pgw_old') IS NULL"),
        "t"
    );
    assert_eq!(sql(&db, "SELECT count(*) FROM pgwarden.conversion"), "0");
}

#[tokio::test]
async fn a_table_that_cannot_be_swapped_is_refused_with_nothing_made() {
    let (db, dsn) = database(
        "CREATE TABLE nokey (at timestamptz NOT NULL, v int);
         INSERT INTO nokey VALUES (now(), 1);
         CREATE TABLE idkey (id bigint PRIMARY KEY, at timestamptz NOT NULL);
         INSERT INTO idkey VALUES (1, now());
         CREATE TABLE watched (id bigint, at timestamptz NOT NULL, PRIMARY KEY (id, at));
         INSERT INTO watched VALUES (1, now());
         CREATE VIEW recent AS SELECT * FROM watched;
         CREATE PUBLICATION pub FOR TABLE watched;",
    );
    let cases = [
        ("nokey", "needs a primary key that includes at"),
        ("idkey", "ADD PRIMARY KEY (\"id\", \"at\")"),
        ("watched", "views: recent"),
        ("watched", "publications listing it"),
    ];
    for (table, want) in cases {
        let mut o = range(&dsn, table, "at", "1 month");
        o.yes = true;
        let err = pgw_partition::create(&o).await.unwrap_err();
        let line = pgw_common::report(&err);
        assert!(line.contains(want), "{table}: {line}");
        assert!(
            pgw_common::Classify::class(&err) == pgw_common::ErrorClass::Input,
            "{line}"
        );
    }
    assert_eq!(
        sql(
            &db,
            "SELECT count(*) FROM pg_class WHERE relname LIKE '%pgw_new%' OR relkind = 'p'"
        ),
        "0"
    );
    assert_eq!(
        sql(
            &db,
            "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal"
        ),
        "0"
    );
}
