//! pgwarden next to pg_partman 4.7.2 (Debian `postgresql-15-partman`) on the same server: the
//! same empty table set up by `partman.create_parent(…, 'native', …, p_premake := 4)` and by
//! `pgw_partition::create` (premake 4) must end with the same children, bound for bound and
//! name for name; after a row dated now() both maintenance runs leave those children as they
//! are.
//!
//! Each pair lives in one database: pg_partman's table in schema `pm`, pgwarden's in `public`,
//! both with the same name, so the children's names compare in full (the parent's name is
//! their prefix on both sides). pg_partman computes in the session time zone, so every
//! partman call and every read of the bounds runs with `SET timezone = 'UTC'`, the zone
//! pgwarden's sets use here. The expected children of the time sets are computed by the server
//! from its own now(); a run that crosses a UTC midnight is redone (see [`same_day`]).

use crate::{cluster, database, maintain, range, sql, steps};

const PARTMAN_CONTROL: &str = "/usr/share/postgresql/15/extension/pg_partman.control";

/// A fresh database with pg_partman 4.7.2 in schema `partman` and an empty table `name` in
/// both `pm` and `public` (`columns` and partition key as given); returns its name and DSN.
/// Panics, saying what is missing, if the extension cannot be created: these tests never skip.
fn pair(name: &str, columns: &str, key: &str) -> (String, String) {
    let (db, dsn) = database("");
    if let Err(e) = cluster().psql(
        &db,
        "CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman;",
    ) {
        panic!(
            "cannot create the pg_partman extension, which the pg_partman comparison tests need \
             (install the Debian package postgresql-15-partman: its control file is \
             {PARTMAN_CONTROL}; ./run installs it when missing): {e}"
        );
    }
    let version = sql(
        &db,
        "SELECT extversion FROM pg_extension WHERE extname = 'pg_partman'",
    );
    assert_eq!(
        version, "4.7.2",
        "these tests pin pg_partman 4.7.2's behaviour"
    );
    sql(
        &db,
        &format!(
            "CREATE SCHEMA pm;
             CREATE TABLE pm.{name} ({columns}) PARTITION BY RANGE ({key});
             CREATE TABLE public.{name} ({columns}) PARTITION BY RANGE ({key});"
        ),
    );
    (db, dsn)
}

/// `partman.create_parent` for `pm.<table>`, native, premake 4, in a UTC session.
fn partman_create(db: &str, table: &str, column: &str, interval: &str) {
    let ok = sql(
        db,
        &format!(
            "SET timezone = 'UTC';
             SELECT partman.create_parent('pm.{table}', '{column}', 'native', '{interval}',
                                          p_premake := 4)"
        ),
    );
    assert_eq!(ok, "t", "create_parent('pm.{table}', …, '{interval}')");
}

/// The children of `schema.table` as `name|bound`, bounds printed in UTC, sorted.
fn children(db: &str, schema: &str, table: &str) -> Vec<String> {
    let out = sql(
        db,
        &format!(
            "SET timezone = 'UTC';
             SELECT c.relname || '|' || pg_get_expr(c.relpartbound, c.oid)
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = '{schema}.{table}'::regclass"
        ),
    );
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// The bounds alone of [`children`], sorted.
fn bounds(children: &[String]) -> Vec<String> {
    let mut v: Vec<String> = children
        .iter()
        .map(|c| c.split_once('|').map_or(c.as_str(), |(_, b)| b).to_string())
        .collect();
    v.sort();
    v
}

/// The start of the server's current UTC day, each call in its own transaction.
fn today() -> String {
    sql(
        "postgres",
        "SET timezone = 'UTC'; SELECT date_trunc('day', now())",
    )
}

/// Runs `body` until one run starts and ends on the same UTC day (a run that straddles
/// midnight, or the first of a month, could see two different "now"s); at most three tries.
async fn same_day<T, F, Fut>(mut body: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    for _ in 0..3 {
        let before = today();
        let out = body().await;
        if today() == before {
            return out;
        }
    }
    panic!("three runs in a row straddled a UTC midnight");
}

/// What the server expects for a time set made now with premake 4: the child holding now(),
/// four before it and four after it (pg_partman's and pgwarden's rule alike), plus the default.
fn expected_time_children(table: &str, unit: &str, step: &str, suffix: &str) -> Vec<String> {
    let out = sql(
        "postgres",
        &format!(
            "SET timezone = 'UTC';
             SELECT '{table}_p' || to_char(d, '{suffix}') || '|FOR VALUES FROM (''' || d
                    || ''') TO (''' || (d + interval '{step}') || ''')'
               FROM generate_series(date_trunc('{unit}', now()) - 4 * interval '{step}',
                                    date_trunc('{unit}', now()) + 4 * interval '{step}',
                                    interval '{step}') d"
        ),
    );
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.push(format!("{table}_default|DEFAULT"));
    v.sort();
    v
}

/// Both tools' children of a fresh time set, and the server's expectation.
struct Compared {
    db: String,
    dsn: String,
    partman: Vec<String>,
    pgwarden: Vec<String>,
    expected: Vec<String>,
}

/// A `timestamptz` pair set up by both tools with the given intervals; `unit`, `step` and
/// `suffix` describe the expected grid (date_trunc unit, interval, to_char pattern).
async fn time_pair(
    partman_interval: &str,
    pgw_interval: &str,
    unit: &str,
    step: &str,
    suffix: &str,
) -> Compared {
    same_day(|| async {
        let (db, dsn) = pair(
            "events",
            "id bigint, created_at timestamptz NOT NULL, payload text",
            "created_at",
        );
        partman_create(&db, "events", "created_at", partman_interval);
        pgw_partition::create(&range(&dsn, "public.events", "created_at", pgw_interval))
            .await
            .expect("pgwarden create");
        let partman = children(&db, "pm", "events");
        let pgwarden = children(&db, "public", "events");
        let expected = expected_time_children("events", unit, step, suffix);
        Compared {
            db,
            dsn,
            partman,
            pgwarden,
            expected,
        }
    })
    .await
}

/// The assertions tests 1 and 2 share: pg_partman matches the server's expectation (so the
/// comparison is against a known-good picture), and pgwarden matches pg_partman.
fn assert_same(c: &Compared) {
    assert_eq!(c.partman, c.expected, "pg_partman's children");
    assert_eq!(
        bounds(&c.pgwarden),
        bounds(&c.partman),
        "bounds: pgwarden (left) vs pg_partman (right)"
    );
    assert_eq!(
        c.pgwarden, c.partman,
        "names and bounds: pgwarden (left) vs pg_partman (right)"
    );
}

#[tokio::test]
async fn monthly_set_matches_pg_partman() {
    let c = time_pair("monthly", "1 month", "month", "1 month", "YYYY_MM").await;
    assert_eq!(c.partman.len(), 10, "{:#?}", c.partman);
    assert_same(&c);
}

#[tokio::test]
async fn daily_set_matches_pg_partman() {
    let c = time_pair("daily", "daily", "day", "1 day", "YYYY_MM_DD").await;
    assert_eq!(c.partman.len(), 10, "{:#?}", c.partman);
    assert_same(&c);
}

#[tokio::test]
async fn integer_set_matches_pg_partman() {
    let (db, dsn) = pair("items", "id bigint NOT NULL, sku text", "id");
    partman_create(&db, "items", "id", "10");
    pgw_partition::create(&range(&dsn, "public.items", "id", "10"))
        .await
        .expect("pgwarden create");
    let partman = children(&db, "pm", "items");
    assert_eq!(
        partman,
        [
            "items_default|DEFAULT",
            "items_p0|FOR VALUES FROM ('0') TO ('10')",
            "items_p10|FOR VALUES FROM ('10') TO ('20')",
            "items_p20|FOR VALUES FROM ('20') TO ('30')",
            "items_p30|FOR VALUES FROM ('30') TO ('40')",
            "items_p40|FOR VALUES FROM ('40') TO ('50')",
        ],
        "pg_partman's children"
    );
    let pgwarden = children(&db, "public", "items");
    assert_eq!(
        bounds(&pgwarden),
        bounds(&partman),
        "bounds: pgwarden (left) vs pg_partman (right)"
    );
    assert_eq!(
        pgwarden, partman,
        "names and bounds: pgwarden (left) vs pg_partman (right)"
    );
}

/// pg_partman's maintenance follows the data (the child holding max(created_at)), pgwarden's
/// the clock; with one row dated now() in each set they agree: nothing to make.
#[tokio::test]
async fn maintenance_after_a_row_dated_now_changes_nothing_on_either_side() {
    for (partman_interval, pgw_interval, unit, step, suffix) in [
        ("monthly", "1 month", "month", "1 month", "YYYY_MM"),
        ("daily", "daily", "day", "1 day", "YYYY_MM_DD"),
    ] {
        let (c, partman_after, pgwarden_after, pgwarden_steps) = same_day(|| async {
            let c = time_pair(partman_interval, pgw_interval, unit, step, suffix).await;
            sql(
                &c.db,
                "INSERT INTO pm.events VALUES (1, now(), 'x');
                 INSERT INTO public.events VALUES (1, now(), 'x');",
            );
            sql(
                &c.db,
                "SET timezone = 'UTC'; SELECT partman.run_maintenance()",
            );
            let report = maintain(&c.dsn, false).await;
            let partman_after = children(&c.db, "pm", "events");
            let pgwarden_after = children(&c.db, "public", "events");
            (c, partman_after, pgwarden_after, steps(&report))
        })
        .await;
        assert_same(&c);
        // The row landed in the current child on both sides, not in the default.
        for schema in ["pm", "public"] {
            assert_eq!(
                sql(
                    &c.db,
                    &format!("SELECT count(*) FROM ONLY {schema}.events_default")
                ),
                "0",
                "{schema}.events_default ({partman_interval})"
            );
        }
        assert_eq!(
            partman_after, c.partman,
            "pg_partman's run_maintenance changed the {partman_interval} set"
        );
        assert_eq!(
            pgwarden_steps, 0,
            "pgwarden's maintain acted on the {pgw_interval} set"
        );
        assert_eq!(
            pgwarden_after, c.pgwarden,
            "pgwarden's maintain changed the {pgw_interval} set"
        );
        assert_eq!(
            bounds(&pgwarden_after),
            bounds(&partman_after),
            "bounds after maintenance ({pgw_interval}): pgwarden (left) vs pg_partman (right)"
        );
    }
}
