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
        "CREATE TABLE watched (id bigint, at timestamptz NOT NULL, PRIMARY KEY (id, at));
         INSERT INTO watched VALUES (1, now());
         CREATE VIEW recent AS SELECT * FROM watched;
         CREATE PUBLICATION pub FOR TABLE watched;",
    );
    let cases = [
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

/// `metrics(id bigserial PRIMARY KEY, at, v)` (the issue's example: the key lacks the
/// partition column) and a log table with no key at all. Both are converted with writes
/// blocked: a writer's statements wait (and none fails), reads go on, and afterwards the
/// table holds exactly what the writer's shadow table holds.
const KEYLESS: &str = "
CREATE TABLE metrics (id bigserial PRIMARY KEY, at timestamptz NOT NULL, v int);
CREATE INDEX metrics_at ON metrics (at);
INSERT INTO metrics (at, v)
SELECT now() - (g % 400) * interval '1 day' - g * interval '1 second', g
  FROM generate_series(1, 60000) g;
CREATE TABLE metrics_shadow AS SELECT * FROM metrics;
CREATE TABLE logs (at timestamptz NOT NULL, msg text);
CREATE INDEX logs_msg ON logs (msg);
INSERT INTO logs SELECT now() - g * interval '1 minute', 'm' || (g % 10) FROM generate_series(1, 30000) g;
GRANT SELECT, INSERT, UPDATE, DELETE ON metrics TO PUBLIC;
ANALYZE;
";

const METRICS_SUM: &str =
    "SELECT count(*) || ' ' || md5(string_agg(id || '|' || at || '|' || coalesce(v, -1), ',' ORDER BY id))";

/// Inserts, updates and deletes on `metrics` and its shadow, in the same transactions,
/// until `stop`; every transaction must succeed (it may wait).
async fn metrics_writer(dsn: String, stop: Arc<AtomicBool>) -> u64 {
    let (client, _) = pgw_common::connect_dsn(Some(&dsn))
        .await
        .expect("writer connects");
    let mut n: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let k = (n * 7919) % 60_000 + 1;
        let tx = format!(
            "BEGIN;
             WITH i AS (INSERT INTO metrics (at, v) VALUES (now(), {n}) RETURNING *)
               INSERT INTO metrics_shadow SELECT * FROM i;
             UPDATE metrics SET v = -{n} WHERE id = {k};
             UPDATE metrics_shadow SET v = -{n} WHERE id = {k};
             DELETE FROM metrics WHERE id = {d};
             DELETE FROM metrics_shadow WHERE id = {d};
             COMMIT;",
            d = k + 1
        );
        client
            .batch_execute(&tx)
            .await
            .unwrap_or_else(|e| panic!("a write failed instead of waiting: {e}"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_without_a_key_that_includes_the_column_are_converted_with_writes_blocked() {
    let (db, dsn) = database(KEYLESS);
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(metrics_writer(dsn.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Without --yes the refusal says how writes will fare.
    let mut o = range(&dsn, "metrics", "at", "1 month");
    o.batch_rows = 2000;
    let err = pgw_partition::create(&o).await.unwrap_err();
    let line = pgw_common::report(&err);
    assert!(line.contains("writes to it wait"), "{line}");
    assert!(line.contains("primary key metrics_pkey (id)"), "{line}");

    // While the copy runs: a write waits on the lock, a read does not.
    let watcher = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let waiting = sql(
                    &db,
                    "SELECT count(*) FROM pg_stat_activity
                      WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO metrics%'",
                );
                if waiting != "0" {
                    // Reads continue (a SHARE lock lets them through).
                    return sql(
                        &db,
                        "SET statement_timeout = '10s'; SELECT count(*) > 0 FROM metrics",
                    );
                }
                if std::time::Instant::now() > deadline {
                    return "no write ever waited".to_string();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    o.yes = true;
    let r = pgw_partition::create(&o).await.expect("convert");
    assert_eq!(watcher.await.unwrap(), "t", "a read while writes waited");
    let c = r.conversion.expect("a conversion report");
    assert_eq!(c.plan.mode, pgw_partition::CopyMode::WritesBlocked);
    assert_eq!(c.plan.not_carried, ["primary key metrics_pkey (id)"]);
    assert!(!c.resumed && !c.restarted, "{c:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let writes = w.await.expect("writer");
    assert!(
        writes > 10,
        "the writer ran throughout ({writes} transactions)"
    );

    assert_eq!(
        sql(
            &db,
            "SELECT relkind FROM pg_class WHERE relname = 'metrics'"
        ),
        "p"
    );
    assert_eq!(
        sql(&db, &format!("{METRICS_SUM} FROM metrics")),
        sql(&db, &format!("{METRICS_SUM} FROM metrics_shadow")),
        "no row lost or duplicated"
    );
    // The advice names a key the rows satisfy; it works.
    let advice = c.advice.expect("a primary key to add");
    assert_eq!(
        advice,
        "ALTER TABLE \"public\".\"metrics\" ADD PRIMARY KEY (\"id\", \"at\")"
    );
    sql(&db, &advice);
    // The serial sequence moved along; the non-unique index came over under its name.
    let next: i64 = sql(&db, "INSERT INTO metrics (at) VALUES (now()) RETURNING id")
        .parse()
        .unwrap();
    let max_old: i64 = sql(&db, "SELECT max(id) FROM metrics_pgw_old")
        .parse()
        .unwrap();
    assert!(next > max_old);
    assert_eq!(
        sql(&db, "SELECT string_agg(indexrelid::regclass::text, ',' ORDER BY 1) FROM pg_index WHERE indrelid = 'metrics'::regclass"),
        "metrics_at,metrics_pkey"
    );
    assert_eq!(
        sql(
            &db,
            "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgwarden%'"
        ),
        "0"
    );
    assert_eq!(
        sql(
            &db,
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'pgwarden'::regnamespace"
        ),
        "0"
    );

    // A table with no key at all: converted too; there is no key to advise.
    let before = sql(
        &db,
        "SELECT count(*) || md5(string_agg(at || msg, ',' ORDER BY at, msg)) FROM logs",
    );
    let mut o = range(&dsn, "logs", "at", "1 month");
    o.yes = true;
    o.drop_old = true;
    let c = pgw_partition::create(&o)
        .await
        .expect("convert logs")
        .conversion
        .expect("a conversion");
    assert_eq!(c.plan.mode, pgw_partition::CopyMode::WritesBlocked);
    assert!(c.plan.not_carried.is_empty(), "{c:?}");
    assert_eq!(c.advice, None);
    assert_eq!(
        sql(
            &db,
            "SELECT count(*) || md5(string_agg(at || msg, ',' ORDER BY at, msg)) FROM logs"
        ),
        before
    );
    assert_eq!(
        sql(&db, "SELECT string_agg(indexrelid::regclass::text, ',') FROM pg_index WHERE indrelid = 'logs'::regclass"),
        "logs_msg"
    );
    assert_eq!(crate::steps(&crate::maintain(&dsn, false).await), 0);
}

/// A writes-blocked conversion cut off mid-copy: the rerun resumes from the saved position
/// when nothing was written meanwhile, and starts the copy over when something was; either
/// way every row ends up exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_conversion_cut_off_resumes_or_starts_over() {
    for written_meanwhile in [false, true] {
        let (db, dsn) = database(KEYLESS);
        let mut o = range(&dsn, "metrics", "at", "1 month");
        o.batch_rows = 300;
        o.yes = true;
        crate::cut_off(&db, &o).await;
        assert_eq!(
            sql(&db, "SELECT relkind::text || ' ' || (SELECT dirty FROM pgwarden.conversion) FROM pg_class WHERE relname = 'metrics'"),
            "r false",
            "not swapped, not written"
        );
        if written_meanwhile {
            sql(
                &db,
                "UPDATE metrics SET v = 0 WHERE id = 1; DELETE FROM metrics WHERE id = 2;
                      INSERT INTO metrics (at, v) VALUES (now(), 7)",
            );
            assert_eq!(sql(&db, "SELECT dirty FROM pgwarden.conversion"), "t");
        }
        let expected = sql(&db, &format!("{METRICS_SUM} FROM metrics"));
        let c = pgw_partition::create(&o)
            .await
            .expect("the rerun finishes")
            .conversion
            .expect("a conversion");
        assert!(c.resumed, "{c:?}");
        assert_eq!(c.restarted, written_meanwhile, "{c:?}");
        assert_eq!(
            sql(&db, &format!("{METRICS_SUM} FROM metrics")),
            expected,
            "no row lost or duplicated (written meanwhile: {written_meanwhile})"
        );
        assert_eq!(sql(&db, "SELECT count(*) FROM pgwarden.conversion"), "0");
    }
}
