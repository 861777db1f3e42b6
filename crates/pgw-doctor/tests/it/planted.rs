//! Every problem at once: one cluster with the problems doctor looks for planted side by
//! side, as a DBA's database has them, and doctor run over it whole (every check) as a
//! superuser and as a role with only `pg_monitor`. The superuser sees every one. The
//! `pg_monitor` role sees each, or names it in `skipped` with why: never healthy by
//! omission. Thresholds are lowered to the test's scale (thousands of rows, seconds),
//! nothing else.
//!
//! Run with `--nocapture` to see the counts (the figure: planted, found as
//! superuser, found and named-as-skipped as pg_monitor).

use std::time::Duration;

use pgw_cluster::Cluster;
use pgw_doctor::{Finding, Options, Report, Thresholds};
use tokio_postgres::Client;

/// One planted problem: what it is, the check that must report it, and how to recognise
/// the finding (an object-name needle; an optional detail needle).
struct Planted {
    what: &'static str,
    check: &'static str,
    object: &'static str,
    detail: &'static str,
}

const fn p(
    what: &'static str,
    check: &'static str,
    object: &'static str,
    detail: &'static str,
) -> Planted {
    Planted {
        what,
        check,
        object,
        detail,
    }
}

const PLANTED: &[Planted] = &[
    p(
        "90 % dead rows, never vacuumed",
        "dead_tuples",
        "dead_rows",
        "",
    ),
    p("dead rows and no vacuum", "vacuum_stale", "dead_rows", ""),
    p(
        "changed and never analyzed",
        "analyze_stale",
        "unanalyzed",
        "",
    ),
    p(
        "large churning table on global autovacuum settings",
        "autovacuum_large_table",
        "churn",
        "",
    ),
    p("90 % bloated table", "table_bloat", "bloated", ""),
    p("90 % bloated index", "index_bloat", "emptied_id", ""),
    p(
        "invalid index from a failed CREATE INDEX CONCURRENTLY",
        "invalid_index",
        "dup_vals_v",
        "",
    ),
    p("duplicate index", "duplicate_index", "twice_a", ""),
    p(
        "foreign key without an index",
        "missing_fk_index",
        "child",
        "",
    ),
    p(
        "table read by sequential scans",
        "seq_scan_heavy",
        "scanned",
        "",
    ),
    p(
        "serial at 95 % of integer",
        "sequence_exhaustion",
        "ser_id_seq",
        "",
    ),
    p(
        "integer column fed by a plain DEFAULT nextval at 95 %",
        "sequence_exhaustion",
        "fed_seq",
        "",
    ),
    p("XID age (lowered limit)", "xid_wraparound", "", ""),
    p("long transaction", "long_transaction", "pid", ""),
    p("idle in transaction", "idle_in_transaction", "pid", ""),
    p("query blocked behind a lock", "blocked_queries", "pid", ""),
    p(
        "inactive replication slot",
        "replication_slot",
        "forgotten_slot",
        "",
    ),
    p(
        "full_page_writes off",
        "config_audit",
        "full_page_writes",
        "",
    ),
    p(
        "dead rows kept by a held xmin horizon",
        "dead_tuples",
        "held_rows",
        "held by",
    ),
    p(
        "prepared transaction holding the horizon",
        "dead_tuples",
        "held_rows",
        "prepared transaction",
    ),
    p(
        "template0's XID age (lowered limit)",
        "xid_age",
        "template0",
        "",
    ),
    p(
        "a database that rolls back",
        "commit_ratio",
        "rollbacks",
        "",
    ),
    p(
        "requested checkpoints",
        "checkpoint_pressure",
        "max_wal_size",
        "",
    ),
    p(
        "a forgotten prepared transaction",
        "prepared_transactions",
        "forgotten_gid",
        "",
    ),
    p(
        "a foreign key added NOT VALID",
        "not_valid_constraints",
        "child_late_fk",
        "",
    ),
    p(
        "a disabled trigger",
        "disabled_triggers",
        "child_trigger",
        "",
    ),
];

const THRESHOLDS: &[&str] = &[
    "dead_tuples_min_rows=1000",
    "stale_min_rows=1000",
    "vacuum_stale_hours=0",
    "analyze_stale_hours=0",
    "large_table_rows=10000",
    "bloat_min_mb=1",
    "seq_scan_min_rows=1000",
    "xid_warning_share=0.000000001",
    "long_transaction_warning_secs=0",
    "idle_in_transaction_warning_secs=0",
    "blocked_query_warning_secs=0",
    "rollback_min_xacts=100",
    "prepared_xact_warning_secs=0",
];

fn plant(c: &Cluster) {
    c.psql(
        "postgres",
        "CREATE ROLE watcher LOGIN PASSWORD 'watch' IN ROLE pg_monitor;
         CREATE TABLE dead_rows (id int, pad text) WITH (autovacuum_enabled = false);
         INSERT INTO dead_rows SELECT g, 'x' FROM generate_series(1, 20000) g;
         DELETE FROM dead_rows WHERE id > 2000;
         CREATE TABLE unanalyzed (id int) WITH (autovacuum_enabled = false);
         INSERT INTO unanalyzed SELECT generate_series(1, 20000);
         CREATE TABLE churn (id int) WITH (autovacuum_enabled = false);
         INSERT INTO churn SELECT generate_series(1, 20000);
         ANALYZE churn;
         UPDATE churn SET id = id WHERE id <= 5000;
         CREATE TABLE bloated (id int, pad text) WITH (autovacuum_enabled = false);
         INSERT INTO bloated SELECT g, repeat('x', 200) FROM generate_series(1, 50000) g;
         DELETE FROM bloated WHERE id % 10 <> 0;
         VACUUM (ANALYZE) bloated;
         CREATE TABLE emptied (id int8) WITH (autovacuum_enabled = false);
         INSERT INTO emptied SELECT generate_series(1, 200000);
         CREATE INDEX emptied_id ON emptied (id);
         DELETE FROM emptied WHERE id % 10 <> 0;
         VACUUM (ANALYZE) emptied;
         CREATE TABLE dup_vals (v int);
         INSERT INTO dup_vals VALUES (1), (1);
         CREATE TABLE twice (a int);
         CREATE INDEX twice_a1 ON twice (a);
         CREATE INDEX twice_a2 ON twice (a);
         CREATE TABLE parent (id int PRIMARY KEY);
         CREATE TABLE child (id int, parent_id int REFERENCES parent);
         CREATE TABLE scanned (id int);
         INSERT INTO scanned SELECT generate_series(1, 5000);
         ANALYZE scanned;
         DO $$ BEGIN FOR i IN 1..12 LOOP PERFORM count(*) FROM scanned; END LOOP; END $$;
         CREATE TABLE ser (id serial);
         SELECT setval('ser_id_seq', 2040109465);
         CREATE SEQUENCE fed_seq AS bigint;
         CREATE TABLE fed (id int DEFAULT nextval('fed_seq'));
         SELECT setval('fed_seq', 2040109465);
         SELECT pg_create_physical_replication_slot('forgotten_slot', true);
         ALTER SYSTEM SET full_page_writes = off;
         SELECT pg_reload_conf();
         CREATE TABLE held_rows (id int) WITH (autovacuum_enabled = false);
         INSERT INTO held_rows SELECT generate_series(1, 20000);
         CREATE TABLE locked (id int);
         ALTER TABLE child ADD CONSTRAINT child_late_fk FOREIGN KEY (id) REFERENCES parent NOT VALID;
         CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
         CREATE TRIGGER child_trigger BEFORE INSERT ON child FOR EACH ROW EXECUTE FUNCTION noop();
         ALTER TABLE child DISABLE TRIGGER child_trigger;",
    )
    .expect("plant the problems");
    c.psql("postgres", "CREATE DATABASE rollbacks;")
        .expect("create a database");
    c.psql(
        "rollbacks",
        "DO $$ BEGIN FOR i IN 1..200 LOOP BEGIN PERFORM 1 / 0; EXCEPTION WHEN OTHERS THEN NULL; END; END LOOP; END $$;",
    )
    .expect("warm up");
    let rollbacks = "BEGIN; SELECT 1; ROLLBACK;\n".repeat(200);
    c.psql("rollbacks", &rollbacks).expect("roll back");
    let checkpoints = "CHECKPOINT;\n".repeat(12);
    c.psql("postgres", &checkpoints).expect("checkpoints");
    // Fails, leaving the index invalid.
    let _ = c.psql(
        "postgres",
        "CREATE UNIQUE INDEX CONCURRENTLY dup_vals_v ON dup_vals (v);",
    );
    c.psql(
        "postgres",
        "BEGIN; INSERT INTO locked VALUES (0); PREPARE TRANSACTION 'forgotten_gid';",
    )
    .expect("a forgotten prepared transaction");
}

async fn session(c: &Cluster) -> Client {
    let (client, _) = pgw_common::connect_dsn(Some(&c.dsn()))
        .await
        .expect("connect a session");
    client
}

async fn run(dsn: String) -> Report {
    let mut t = Thresholds::default();
    for a in THRESHOLDS {
        t.set(a).expect("threshold");
    }
    let opts = Options {
        dsn: Some(dsn),
        dbname: None,
        only: None,
        thresholds: t,
        host: Default::default(),
    };
    pgw_doctor::run(&opts).await.expect("doctor runs")
}

fn matches(f: &Finding, p: &Planted) -> bool {
    f.check == p.check
        && f.object.as_deref().unwrap_or("").contains(p.object)
        && f.detail.contains(p.detail)
}

/// (found, named in skipped, missed) for the planted problems in `r`.
fn tally(r: &Report, who: &str) -> (usize, usize, Vec<&'static str>) {
    let (mut hit, mut skipped, mut missed) = (0, 0, Vec::new());
    for p in PLANTED {
        if r.findings.iter().any(|f| matches(f, p)) {
            hit += 1;
        } else if r
            .skipped
            .iter()
            .any(|k| k.check == p.check && k.object.as_deref().is_none_or(|o| o.contains(p.object)))
        {
            skipped += 1;
        } else {
            missed.push(p.what);
        }
    }
    eprintln!(
        "planted {}: {who} found {hit}, named as not checked {skipped}, missed {}: {missed:?}",
        PLANTED.len(),
        missed.len()
    );
    (hit, skipped, missed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_planted_problem_is_found_or_named() {
    let c = Cluster::builder()
        .setting("max_prepared_transactions", "5")
        .start()
        .expect("start a cluster");
    plant(&c);
    // A transaction holding the horizon (and idle in it), then dead rows vacuum cannot remove.
    let holder = session(&c).await;
    holder
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM parent")
        .await
        .expect("hold a snapshot");
    c.psql(
        "postgres",
        "DELETE FROM held_rows WHERE id > 2000; VACUUM held_rows;",
    )
    .expect("delete and vacuum");
    // A lock and a query waiting for it. doctor must not queue behind it either (it
    // reads sizes without opening a locked relation, and its statements give up on a
    // lock after two seconds): the whole run below finishes while the lock is held.
    let locker = session(&c).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE twice IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let waiter = session(&c).await;
    let _wait = tokio::spawn(async move { waiter.simple_query("SELECT * FROM twice").await });
    // Statistics reach the views within a second of each commit.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let su = run(c.dsn()).await;
    let (su_found, _, su_missed) = tally(&su, "superuser");
    let mon = run(c.dsn_for("watcher", "watch", "postgres")).await;
    let (mon_found, mon_skipped, mon_missed) = tally(&mon, "pg_monitor");
    assert!(
        su_missed.is_empty(),
        "the superuser missed {su_missed:?}; findings: {:#?}",
        su.findings
    );
    assert!(
        mon_missed.is_empty(),
        "pg_monitor missed {mon_missed:?} (neither found nor named in skipped); skipped: {:#?}",
        mon.skipped
    );
    assert_eq!(su_found, PLANTED.len());
    assert_eq!(mon_found + mon_skipped, PLANTED.len());

    // What the skipped reasons advise: pgstattuple, and SELECT on the sequences. Then the
    // pg_monitor role finds every one.
    c.psql(
        "postgres",
        "CREATE EXTENSION pgstattuple;
         GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO watcher;",
    )
    .expect("grant what the reasons name");
    let mon = run(c.dsn_for("watcher", "watch", "postgres")).await;
    let (found, _, missed) = tally(&mon, "pg_monitor with pgstattuple and SELECT on sequences");
    assert_eq!(
        found,
        PLANTED.len(),
        "missed {missed:?}; skipped: {:#?}",
        mon.skipped
    );
}
