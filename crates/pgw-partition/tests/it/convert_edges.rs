//! Conversions under the conditions a review tried to break them with: two runs at once, a
//! rewrite of the table mid-copy or between runs, writes with triggers switched off for the
//! session (logical replication's apply), a deferrable key, a writer allowed to UPDATE but
//! not DELETE, a transaction that reads and then writes during the swap, a server that ends
//! idle transactions, keys and constraints a partitioned table handles differently, and
//! abandoning a conversion. Every one ends with each row exactly once.

use std::time::Duration;

use pgw_common::{Classify, ErrorClass};
use pgw_partition::{CopyMode, PartitionError};

use crate::{cut_off, database, range, sql};

/// `t(id, at, v)` with `rows` rows over the last year; `key` is its key clause.
fn setup(key: &str, rows: u32) -> String {
    format!(
        "CREATE TABLE t (id bigint NOT NULL, at timestamptz NOT NULL, v int{key});
         INSERT INTO t SELECT g, now() - (g % 365) * interval '1 day' - g * interval '1 second', g
           FROM generate_series(1, {rows}) g;
         ANALYZE t;"
    )
}

const SUM: &str =
    "SELECT count(*) || ' ' || md5(string_agg(id || '|' || at || '|' || coalesce(v, -1), ',' ORDER BY id, at))";

fn sum(db: &str) -> String {
    sql(db, &format!("{SUM} FROM t"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_copy_each_row_once() {
    for key in ["", ", PRIMARY KEY (id, at)"] {
        let (db, dsn) = database(&setup(key, 60_000));
        let before = sum(&db);
        let mut o = range(&dsn, "t", "at", "1 month");
        o.batch_rows = 300;
        o.yes = true;
        cut_off(&db, &o).await;
        let (a, b) = tokio::join!(pgw_partition::create(&o), pgw_partition::create(&o));
        let ok = [&a, &b].iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "one run finishes ({key:?}): {a:?} / {b:?}");
        for r in [&a, &b] {
            if let Err(e) = r {
                assert!(
                    matches!(
                        e,
                        PartitionError::ConversionBusy(_) | PartitionError::AlreadyManaged(_)
                    ),
                    "{e}"
                );
            }
        }
        assert_eq!(sum(&db), before, "every row once ({key:?})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_of_the_table_makes_the_copy_start_over() {
    // Writes blocked: VACUUM FULL between the crash and the rerun renumbers the blocks.
    let (db, dsn) = database(&setup("", 60_000));
    sql(&db, "DELETE FROM t WHERE id % 3 = 0");
    let before = sum(&db);
    let mut o = range(&dsn, "t", "at", "1 month");
    o.batch_rows = 300;
    o.yes = true;
    cut_off(&db, &o).await;
    sql(&db, "VACUUM FULL t");
    let c = pgw_partition::create(&o)
        .await
        .expect("rerun")
        .conversion
        .unwrap();
    assert!(c.restarted, "{c:?}");
    assert_eq!(sum(&db), before);

    // Online: VACUUM FULL while the copy runs.
    let (db, dsn) = database(&setup(", PRIMARY KEY (id, at)", 80_000));
    sql(&db, "DELETE FROM t WHERE id % 3 = 0");
    let before = sum(&db);
    let mut o = range(&dsn, "t", "at", "1 month");
    o.batch_rows = 200;
    o.yes = true;
    let run = {
        let o = o.clone();
        tokio::spawn(async move { pgw_partition::create(&o).await })
    };
    let mut waited = 0;
    while !(sql(&db, "SELECT to_regclass('pgwarden.conversion') IS NOT NULL") == "t"
        && sql(
            &db,
            "SELECT coalesce(max(next_block), 0) > 20 FROM pgwarden.conversion",
        ) == "t")
    {
        waited += 1;
        assert!(waited < 1500, "the copy never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sql(&db, "VACUUM FULL t");
    let c = run.await.unwrap().expect("converted").conversion.unwrap();
    assert!(c.restarted, "the copy went back to block 0: {c:?}");
    assert_eq!(sum(&db), before, "every row once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_with_triggers_off_for_the_session_are_still_mirrored() {
    let (db, dsn) = database(&setup(", PRIMARY KEY (id, at)", 40_000));
    let mut o = range(&dsn, "t", "at", "1 month");
    o.batch_rows = 300;
    o.yes = true;
    cut_off(&db, &o).await;
    // As a logical-replication apply worker writes: session_replication_role = replica.
    sql(
        &db,
        "SET session_replication_role = replica;
         UPDATE t SET v = -1 WHERE id = 1;
         DELETE FROM t WHERE id = 2;
         INSERT INTO t VALUES (0, now(), 0);",
    );
    let expected = sum(&db);
    pgw_partition::create(&o).await.expect("rerun");
    assert_eq!(sum(&db), expected);
    // A trigger disabled by hand: put back, and the copy starts over.
    let (db, dsn) = database(&setup(", PRIMARY KEY (id, at)", 40_000));
    let mut o = range(&dsn, "t", "at", "1 month");
    o.batch_rows = 300;
    o.yes = true;
    cut_off(&db, &o).await;
    sql(
        &db,
        "ALTER TABLE t DISABLE TRIGGER pgwarden_convert; UPDATE t SET v = -5 WHERE id = 3",
    );
    let expected = sum(&db);
    let c = pgw_partition::create(&o)
        .await
        .expect("rerun")
        .conversion
        .unwrap();
    assert!(c.restarted, "{c:?}");
    assert_eq!(sum(&db), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferrable_key_and_a_writer_without_delete_keep_working() {
    let (db, dsn) = database(&format!(
        "{}
         ALTER TABLE t ADD CONSTRAINT t_id_at_key UNIQUE (id, at) DEFERRABLE;
         CREATE ROLE upd_only LOGIN PASSWORD 'pw';
         GRANT SELECT, UPDATE ON t TO upd_only;",
        setup(", PRIMARY KEY (id, at)", 40_000)
    ));
    let mut o = range(&dsn, "t", "at", "1 month");
    o.batch_rows = 300;
    o.yes = true;
    cut_off(&db, &o).await;
    // The live table keeps working for the application while the conversion waits.
    sql(&db, "INSERT INTO t VALUES (0, now(), 0)");
    let c = crate::cluster();
    let writer = c.dsn_for("upd_only", "pw", &db);
    let (client, _) = pgw_common::connect_dsn(Some(&writer))
        .await
        .expect("connect");
    client
        .batch_execute("UPDATE t SET v = -7 WHERE id = 4")
        .await
        .expect("an UPDATE by a role without DELETE is mirrored");
    let expected = sum(&db);
    pgw_partition::create(&o).await.expect("rerun");
    assert_eq!(sum(&db), expected);
    sql(&db, "DROP OWNED BY upd_only; DROP ROLE upd_only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_then_writes_during_the_swap_is_cancelled_not_the_copy() {
    // Big enough that the copy outlasts the writer's own deadlock check (deadlock_timeout).
    let (db, dsn) = database(&setup("", 300_000));
    // The server ends idle transactions after 2 s: the conversion's lock must survive it.
    sql(
        &db,
        &format!("ALTER DATABASE {db} SET idle_in_transaction_session_timeout = '2s'"),
    );
    // A transaction reads t, then (while the copy holds its lock) tries to write it.
    let (client, _) = pgw_common::connect_dsn(Some(&dsn)).await.expect("connect");
    client
        .batch_execute("SET idle_in_transaction_session_timeout = 0; BEGIN; SELECT count(*) FROM t")
        .await
        .unwrap();
    let mut o = range(&dsn, "t", "at", "1 month");
    o.batch_rows = 5000;
    o.yes = true;
    let run = {
        let o = o.clone();
        tokio::spawn(async move { pgw_partition::create(&o).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let write = tokio::spawn(async move {
        let r = client
            .batch_execute("INSERT INTO t VALUES (0, now(), 0); COMMIT")
            .await;
        (r.map_err(|e| pgw_common::error_line(&e)), client)
    });
    let c = run
        .await
        .unwrap()
        .expect("converted despite the reader")
        .conversion
        .unwrap();
    let (result, _client) = write.await.unwrap();
    // The trapped transaction fails, not the conversion: cancelled by the swap, or (when its
    // own deadlock check came after the swap began waiting) the deadlock detector's victim.
    let err = result.expect_err("the trapped write failed");
    assert!(
        c.cancelled.len() == 1 || err.contains("deadlock"),
        "{c:?}: {err}"
    );
    assert_eq!(sql(&db, "SELECT count(*) FROM t"), "300000");
}

#[tokio::test]
async fn keys_and_constraints_a_partitioned_table_handles_differently() {
    // PK (id) beside UNIQUE (id, at): online by the unique key; the PK is named as not
    // carried and a primary key the rows satisfy is advised.
    let (db, dsn) = database(&format!(
        "{} ALTER TABLE t ADD CONSTRAINT t_id_at UNIQUE (id, at);
         CREATE UNIQUE INDEX t_code ON t (lower(v::text), at);
         ALTER TABLE t ADD CONSTRAINT v_pos CHECK (v > 100) NOT VALID;",
        setup(", PRIMARY KEY (id)", 5_000)
    ));
    let before = sum(&db);
    let mut o = range(&dsn, "t", "at", "1 month");
    o.yes = true;
    let err = pgw_partition::create(&pgw_partition::CreateOptions {
        yes: false,
        ..o.clone()
    })
    .await
    .unwrap_err();
    assert!(
        pgw_common::report(&err).contains("primary key t_pkey (id)"),
        "{err}"
    );
    let c = pgw_partition::create(&o)
        .await
        .expect("convert")
        .conversion
        .unwrap();
    assert_eq!(
        c.plan.mode,
        CopyMode::Online {
            key: vec!["id".into(), "at".into()]
        }
    );
    assert_eq!(
        c.plan.not_carried,
        ["primary key t_pkey (id)"],
        "the expression key is carried"
    );
    let advice = c.advice.expect("advice");
    sql(&db, &advice);
    assert_eq!(sum(&db), before);
    assert_eq!(
        sql(&db, "SELECT convalidated FROM pg_constraint WHERE conrelid = 't'::regclass AND conname = 'v_pos'"),
        "f",
        "NOT VALID stays NOT VALID"
    );
    assert_eq!(
        sql(
            &db,
            "SELECT count(*) FROM pg_index WHERE indrelid = 't'::regclass AND indexprs IS NOT NULL"
        ),
        "1"
    );

    // An exclusion constraint: refused before anything is made (PostgreSQL 15 partitioned
    // tables cannot have one).
    let (db, dsn) = database(
        "CREATE EXTENSION IF NOT EXISTS btree_gist;
         CREATE TABLE t (id bigint, at timestamptz NOT NULL, r int4range, EXCLUDE USING gist (r WITH &&));
         INSERT INTO t VALUES (1, now(), '[1,2)');",
    );
    let mut o = range(&dsn, "t", "at", "1 month");
    o.yes = true;
    let err = pgw_partition::create(&o).await.unwrap_err();
    assert!(
        pgw_common::report(&err).contains("exclusion constraints"),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Input);
    assert_eq!(
        sql(
            &db,
            "SELECT count(*) FROM pg_class WHERE relname LIKE '%pgw_new%'"
        ),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_conversion_leaves_the_table_as_it_was() {
    for key in ["", ", PRIMARY KEY (id, at)"] {
        let (db, dsn) = database(&setup(key, 40_000));
        let before = sum(&db);
        let mut o = range(&dsn, "t", "at", "1 month");
        o.batch_rows = 300;
        o.yes = true;
        cut_off(&db, &o).await;
        let a = pgw_partition::abort_conversion(Some(&dsn), "t", 2000)
            .await
            .expect("abort");
        assert!(a.blocks_copied > 0, "{a:?}");
        assert_eq!(sum(&db), before);
        assert_eq!(
            sql(
                &db,
                "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = 't'::regclass AND NOT tgisinternal)
                     || ' ' || (to_regclass('t_pgw_new') IS NULL)
                     || ' ' || (SELECT count(*) FROM pgwarden.conversion)
                     || ' ' || (SELECT count(*) FROM pg_proc WHERE pronamespace = 'pgwarden'::regnamespace)"
            ),
            "0 true 0 0"
        );
        let err = pgw_partition::abort_conversion(Some(&dsn), "t", 2000)
            .await
            .unwrap_err();
        assert_eq!(err.class(), ErrorClass::Input, "{err}");
        // And it can be converted afresh.
        pgw_partition::create(&o).await.expect("a fresh conversion");
        assert_eq!(sum(&db), before);
    }
}
