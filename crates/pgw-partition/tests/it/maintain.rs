//! `maintain`: premake, retention (detach and drop), default-partition rescue, the
//! lock-timeout skip, idempotence; and what reading every set's facts at once could break:
//! many sets of every kind in one database, one set's table dropped, locked or in an unknown
//! zone while the others are maintained, rows in some default partitions only.

use std::collections::BTreeMap;

use pgw_partition::plan::Action;
use pgw_partition::{Layout, MaintainOptions, MaintainReport, Status};

use crate::{database, maintain, partitions, range, sql, steps};

/// Per set: its steps as `action partition: status`, or `error: ...` / `skipped: ...`.
fn outcome(r: &MaintainReport) -> BTreeMap<String, Vec<String>> {
    r.sets
        .iter()
        .map(|s| {
            let mut lines: Vec<String> = s
                .steps
                .iter()
                .map(|st| {
                    let what = match &st.action {
                        Action::Create { .. } => "create",
                        Action::Rescue { .. } => "rescue",
                        Action::Retire { .. } => "retire",
                        _ => "other",
                    };
                    let status = match &st.status {
                        Status::Planned => "planned".to_string(),
                        Status::Done => "done".to_string(),
                        Status::Skipped(w) => format!("skipped: {w}"),
                        Status::Failed(w) => format!("failed: {w}"),
                    };
                    format!("{what} {}: {status}", st.action.target())
                })
                .collect();
            lines.extend(s.error.iter().map(|e| format!("error: {e}")));
            lines.extend(s.skipped.iter().map(|e| format!("skipped: {e}")));
            (s.table.clone(), lines)
        })
        .collect()
}

/// Maintenance of every set, or of `table` only, with `lock_timeout_ms`.
async fn maintain_with(
    dsn: &str,
    table: Option<&str>,
    dry_run: bool,
    lock_timeout_ms: u64,
) -> MaintainReport {
    let opts = MaintainOptions {
        dsn: Some(dsn.to_string()),
        table: table.map(str::to_string),
        dry_run,
        lock_timeout_ms,
    };
    pgw_partition::maintain(&opts, &|_, _| true)
        .await
        .expect("maintenance runs")
}

/// The range sets `names` on `at timestamptz`, monthly, premake 1, then premake 3 in the
/// config: each has 2 partitions to make.
async fn monthly_sets(db: &str, dsn: &str, names: &[&str]) {
    for n in names {
        sql(
            db,
            &format!("CREATE TABLE {n} (at timestamptz NOT NULL) PARTITION BY RANGE (at)"),
        );
        let mut o = range(dsn, n, "at", "monthly");
        o.premake = 1;
        pgw_partition::create(&o).await.expect("create");
    }
    sql(db, "UPDATE pgwarden.partition_set SET premake = 3");
}

#[tokio::test]
async fn premake_follows_the_config() {
    let (db, dsn) = database(
        "CREATE TABLE events (created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at);",
    );
    let mut o = range(&dsn, "events", "created_at", "monthly");
    o.premake = 1;
    pgw_partition::create(&o).await.expect("create");
    assert_eq!(partitions(&db, "events").len(), 4);
    sql(&db, "UPDATE pgwarden.partition_set SET premake = 4");
    let dry = maintain(&dsn, true).await;
    assert_eq!(steps(&dry), 3, "{dry:#?}");
    assert!(dry.sets[0]
        .steps
        .iter()
        .all(|s| s.status == Status::Planned));
    assert_eq!(
        partitions(&db, "events").len(),
        4,
        "dry run changed nothing"
    );
    let r = maintain(&dsn, false).await;
    assert_eq!(steps(&r), 3, "{r:#?}");
    assert!(
        r.sets[0].steps.iter().all(|s| s.status == Status::Done),
        "{r:#?}"
    );
    assert_eq!(partitions(&db, "events").len(), 7);
    assert_eq!(
        steps(&maintain(&dsn, false).await),
        0,
        "second run does nothing"
    );
}

#[tokio::test]
async fn retention_detaches_or_drops_the_oldest() {
    let (db, dsn) = database(
        "CREATE TABLE keep (at timestamptz NOT NULL) PARTITION BY RANGE (at);
         CREATE TABLE gone (at timestamptz NOT NULL) PARTITION BY RANGE (at);",
    );
    for (t, mode) in [
        ("keep", pgw_partition::RetentionMode::Detach),
        ("gone", pgw_partition::RetentionMode::Drop),
    ] {
        let mut o = range(&dsn, t, "at", "1 month");
        o.premake = 2;
        o.retention = Some("1 month".into());
        o.retention_mode = mode;
        o.default_partition = t == "gone";
        pgw_partition::create(&o).await.expect("create");
    }
    // 2 behind, current, 2 ahead: the oldest ends on the first of last month, which is at or
    // before now minus 1 month, so it retires; last month's ends after that and stays.
    let r = maintain(&dsn, false).await;
    let retired: Vec<_> = r.sets.iter().flat_map(|s| &s.steps).collect();
    assert_eq!(retired.len(), 2, "{r:#?}");
    assert_eq!(partitions(&db, "keep").len(), 4);
    assert_eq!(partitions(&db, "gone").len(), 5, "4 ranges and the default");
    // Detached concurrently (keep has no default partition), the table is still there.
    let detached = sql(
        &db,
        "SELECT count(*) FROM pg_class c WHERE c.relname LIKE 'keep_p%' AND NOT c.relispartition",
    );
    assert_eq!(detached, "1");
    assert_eq!(
        sql(
            &db,
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'gone_p%'"
        ),
        "4"
    );
    assert_eq!(steps(&maintain(&dsn, false).await), 0);
}

#[tokio::test]
async fn drops_wait_for_confirmation() {
    let (db, dsn) =
        database("CREATE TABLE gone (at timestamptz NOT NULL) PARTITION BY RANGE (at);");
    let mut o = range(&dsn, "gone", "at", "1 month");
    o.premake = 2;
    o.retention = Some("1 month".into());
    o.retention_mode = pgw_partition::RetentionMode::Drop;
    pgw_partition::create(&o).await.expect("create");
    let before = partitions(&db, "gone");
    let opts = pgw_partition::MaintainOptions {
        dsn: Some(dsn.clone()),
        table: Some("gone".into()),
        dry_run: false,
        lock_timeout_ms: 2000,
    };
    let r = pgw_partition::maintain(&opts, &|_, drops| {
        assert!(!drops.is_empty());
        false
    })
    .await
    .unwrap();
    assert!(r.skipped(), "{r:#?}");
    assert_eq!(partitions(&db, "gone"), before, "nothing dropped");
}

#[tokio::test]
async fn rows_in_the_default_partition_are_rescued_into_their_own() {
    let (db, dsn) = database(
        "CREATE TABLE events (id bigint NOT NULL, created_at timestamptz NOT NULL, PRIMARY KEY (id, created_at))
           PARTITION BY RANGE (created_at);",
    );
    let mut o = range(&dsn, "events", "created_at", "1 month");
    o.premake = 1;
    pgw_partition::create(&o).await.expect("create");
    // Rows from far in the future and the past land in the default partition.
    sql(
        &db,
        "INSERT INTO events SELECT g, timestamptz '2031-03-10' + g * interval '1 hour' FROM generate_series(1, 500) g;
         INSERT INTO events SELECT 1000 + g, timestamptz '2019-07-01' + g * interval '1 minute' FROM generate_series(1, 300) g;
         INSERT INTO events SELECT 5000 + g, now() FROM generate_series(1, 50) g;",
    );
    let before = sql(&db, "SELECT count(*), sum(id), md5(string_agg(id::text || created_at::text, ',' ORDER BY id)) FROM events");
    assert_eq!(sql(&db, "SELECT count(*) FROM events_default"), "800");
    let r = maintain(&dsn, false).await;
    let rescued: Vec<_> = r.sets[0]
        .steps
        .iter()
        .filter(|s| matches!(s.action, pgw_partition::plan::Action::Rescue { .. }))
        .collect();
    assert_eq!(rescued.len(), 2, "{r:#?}");
    assert!(rescued.iter().all(|s| s.status == Status::Done), "{r:#?}");
    assert_eq!(sql(&db, "SELECT count(*) FROM events_default"), "0");
    assert_eq!(sql(&db, "SELECT count(*) FROM events_p2031_03"), "500");
    assert_eq!(sql(&db, "SELECT count(*) FROM events_p2019_07"), "300");
    let after = sql(&db, "SELECT count(*), sum(id), md5(string_agg(id::text || created_at::text, ',' ORDER BY id)) FROM events");
    assert_eq!(before, after, "no row lost or duplicated");
    assert_eq!(steps(&maintain(&dsn, false).await), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_table_is_skipped_not_waited_on() {
    let (db, dsn) =
        database("CREATE TABLE events (at timestamptz NOT NULL) PARTITION BY RANGE (at);");
    let mut o = range(&dsn, "events", "at", "1 month");
    o.premake = 1;
    pgw_partition::create(&o).await.expect("create");
    sql(&db, "UPDATE pgwarden.partition_set SET premake = 3");
    let (holder, _) = pgw_common::connect_dsn(Some(&dsn)).await.expect("connect");
    holder
        .batch_execute("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let opts = pgw_partition::MaintainOptions {
        dsn: Some(dsn.clone()),
        table: None,
        dry_run: false,
        lock_timeout_ms: 200,
    };
    let r = pgw_partition::maintain(&opts, &|_, _| true).await.unwrap();
    assert!(r.skipped(), "{r:#?}");
    assert!(!r.failed(), "{r:#?}");
    let why = r.sets[0].skipped.clone().unwrap_or_default();
    assert!(why.contains("lock_timeout"), "{r:#?}");
    holder.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        partitions(&db, "events").len(),
        4,
        "nothing made while locked"
    );
    let r = maintain(&dsn, false).await;
    assert_eq!(steps(&r), 2, "{r:#?}");
    assert!(!r.skipped());
}

#[tokio::test]
async fn many_sets_of_every_kind_at_once() {
    let (db, dsn) = database(
        "CREATE TABLE m_utc (at timestamptz NOT NULL) PARTITION BY RANGE (at);
         CREATE TABLE d_ny (at timestamptz NOT NULL) PARTITION BY RANGE (at);
         CREATE TABLE d_kolkata (at timestamptz NOT NULL) PARTITION BY RANGE (at);
         CREATE TABLE m_ts (at timestamp NOT NULL) PARTITION BY RANGE (at);
         CREATE TABLE w_date (d date NOT NULL) PARTITION BY RANGE (d);
         CREATE TABLE ids (id bigint NOT NULL) PARTITION BY RANGE (id);
         CREATE TABLE deep (id bigint NOT NULL) PARTITION BY RANGE (id);
         CREATE TABLE regions (id bigint, region text NOT NULL) PARTITION BY LIST (region);
         CREATE TABLE buckets (id bigint NOT NULL) PARTITION BY HASH (id);",
    );
    // The session's zone must not matter (pgwarden fixes its own, bounds are the set's).
    sql(
        "postgres",
        &format!("ALTER DATABASE {db} SET timezone = 'Asia/Tokyo'"),
    );
    for (table, column, interval, zone, premake) in [
        ("m_utc", "at", "monthly", "UTC", 1),
        ("d_ny", "at", "daily", "America/New_York", 2),
        ("d_kolkata", "at", "daily", "Asia/Kolkata", 2),
        ("m_ts", "at", "monthly", "UTC", 1),
        ("w_date", "d", "weekly", "UTC", 1),
        ("ids", "id", "100", "UTC", 2),
        // 13 partitions 0..130: the highest key is below more empty partitions than the
        // probe statement looks in.
        ("deep", "id", "10", "UTC", 12),
    ] {
        let mut o = range(&dsn, table, column, interval);
        o.time_zone = zone.into();
        o.premake = premake;
        pgw_partition::create(&o).await.expect("create");
    }
    let mut o = range(&dsn, "regions", "region", "");
    o.layout = Layout::List(vec![("us".into(), vec!["US".into()])]);
    pgw_partition::create(&o).await.expect("create list set");
    let mut o = range(&dsn, "buckets", "id", "");
    o.layout = Layout::Hash(2);
    pgw_partition::create(&o).await.expect("create hash set");
    sql(
        &db,
        "INSERT INTO ids SELECT g FROM generate_series(0, 250) g;
         INSERT INTO deep VALUES (15);
         UPDATE pgwarden.partition_set SET premake = premake + 2
          WHERE parent_table IN ('m_utc', 'd_ny', 'd_kolkata', 'm_ts', 'w_date', 'ids');
         UPDATE pgwarden.partition_set SET premake = 13 WHERE parent_table = 'deep';",
    );

    // All sets at once plan exactly what each set planned alone.
    let all = maintain_with(&dsn, None, true, 2000).await;
    assert_eq!(all.sets.len(), 9, "{all:#?}");
    for set in &all.sets {
        let alone = maintain_with(&dsn, Some(&set.table), true, 2000).await;
        let sql_of = |s: &pgw_partition::maintain::SetRun| {
            s.steps.iter().map(|st| st.sql.clone()).collect::<Vec<_>>()
        };
        assert_eq!(sql_of(set), sql_of(&alone.sets[0]), "{}", set.table);
    }

    let r = maintain(&dsn, false).await;
    let got = outcome(&r);
    let creates = |t: &str| {
        got[t]
            .iter()
            .filter(|l| l.starts_with("create ") && l.ends_with(": done"))
            .count()
    };
    for t in [
        "public.m_utc",
        "public.d_ny",
        "public.d_kolkata",
        "public.m_ts",
        "public.w_date",
    ] {
        assert_eq!(creates(t), 2, "{t}: {got:#?}");
    }
    // ids: made 0..200 while empty; the highest id is 250, so the grid stands at 200 and
    // premake 4 reaches 600.
    assert_eq!(creates("public.ids"), 4, "{got:#?}");
    assert!(
        got["public.ids"].iter().any(|l| l.contains("ids_p600")),
        "{got:#?}"
    );
    // deep: the highest id (15) is found below 11 empty partitions: premake 13 from 10
    // reaches 140 (from 0, as if the set were empty, it would reach 130 only).
    assert_eq!(got["public.deep"].len(), 2, "{got:#?}");
    assert!(
        got["public.deep"].iter().any(|l| l.contains("deep_p140")),
        "{got:#?}"
    );
    assert!(got["public.regions"].is_empty() && got["public.buckets"].is_empty());
    assert!(!r.failed() && !r.skipped(), "{r:#?}");

    // Every time bound is midnight in its own set's zone.
    for (t, zone, n) in [
        ("d_ny", "America/New_York", 7),
        ("d_kolkata", "Asia/Kolkata", 7),
    ] {
        let off = sql(
            &db,
            &format!(
                "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                  WHERE i.inhparent = '{t}'::regclass AND c.relname NOT LIKE '%default'
                    AND timezone('{zone}', (regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                 'FROM \\(''([^'']+)''\\)'))[1]::timestamptz)::time <> '00:00'"
            ),
        );
        assert_eq!(off, "0", "{t}: bounds off local midnight");
        assert_eq!(partitions(&db, t).len(), n + 1, "{t}");
    }
    let r = maintain(&dsn, false).await;
    assert_eq!(steps(&r), 0, "second run: {:#?}", outcome(&r));
}

#[tokio::test]
async fn a_dropped_table_or_an_unknown_zone_fails_only_its_set() {
    let (db, dsn) = database("");
    monthly_sets(&db, &dsn, &["a", "b", "c", "d"]).await;
    sql(
        &db,
        "DROP TABLE b;
         UPDATE pgwarden.partition_set SET time_zone = 'Mars/Olympus_Mons' WHERE parent_table = 'c'",
    );
    let r = maintain(&dsn, false).await;
    let got = outcome(&r);
    assert!(r.failed(), "{got:#?}");
    assert_eq!(
        got["public.b"],
        ["error: table public.b does not exist"],
        "{got:#?}"
    );
    assert_eq!(
        got["public.c"],
        ["error: time zone 'Mars/Olympus_Mons' is not known to the server"],
        "{got:#?}"
    );
    for t in ["public.a", "public.d"] {
        assert_eq!(got[t].len(), 2, "{got:#?}");
        assert!(got[t].iter().all(|l| l.ends_with(": done")), "{got:#?}");
    }
    assert_eq!(
        partitions(&db, "c").len(),
        4,
        "nothing made in an unknown zone"
    );
    let got = outcome(&maintain(&dsn, false).await);
    assert_eq!(got["public.a"], Vec::<String>::new());
    assert_eq!(got["public.b"].len(), 1, "{got:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_default_partition_skips_only_its_set() {
    let (db, dsn) = database(
        "CREATE TABLE n (id bigint NOT NULL) PARTITION BY RANGE (id);
         CREATE TABLE n2 (id bigint NOT NULL) PARTITION BY RANGE (id);",
    );
    monthly_sets(&db, &dsn, &["a", "b", "c"]).await;
    for t in ["n", "n2"] {
        let mut o = range(&dsn, t, "id", "100");
        o.premake = 2;
        pgw_partition::create(&o).await.expect("create");
    }
    sql(
        &db,
        "INSERT INTO n VALUES (250); INSERT INTO n2 VALUES (250);
         UPDATE pgwarden.partition_set SET premake = 3 WHERE parent_table IN ('n', 'n2')",
    );
    // Made 0..200 while empty; the rows land in p200. Another session holds b's default
    // partition, n's p200 (where its highest key is found) and n2's p0 (below its highest
    // key: never read).
    let (holder, _) = pgw_common::connect_dsn(Some(&dsn)).await.expect("connect");
    holder
        .batch_execute("BEGIN; LOCK TABLE b_default, n_p200, n2_p0 IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let r = maintain_with(&dsn, None, false, 200).await;
    let got = outcome(&r);
    assert!(!r.failed(), "{got:#?}");
    for t in ["public.b", "public.n"] {
        assert_eq!(got[t].len(), 1, "{got:#?}");
        assert!(
            got[t][0].starts_with("skipped: ") && got[t][0].contains("lock_timeout"),
            "{got:#?}"
        );
    }
    for t in ["public.a", "public.c"] {
        assert_eq!(got[t].len(), 2, "{got:#?}");
        assert!(got[t].iter().all(|l| l.ends_with(": done")), "{got:#?}");
    }
    assert_eq!(
        got["public.n2"],
        [
            "create n2_p300: done",
            "create n2_p400: done",
            "create n2_p500: done"
        ],
        "{got:#?}"
    );
    holder.batch_execute("ROLLBACK").await.expect("unlock");
    let got = outcome(&maintain(&dsn, false).await);
    assert_eq!(got["public.b"].len(), 2, "{got:#?}");
    assert_eq!(got["public.n"].len(), 3, "{got:#?}");
    assert_eq!(steps(&maintain(&dsn, false).await), 0);
}

#[tokio::test]
async fn rows_in_some_default_partitions_only() {
    let (db, dsn) = database(
        "CREATE TABLE t1 (at timestamptz NOT NULL) PARTITION BY RANGE (at);
         CREATE TABLE t2 (at timestamptz NOT NULL) PARTITION BY RANGE (at);
         CREATE TABLE i1 (id bigint NOT NULL) PARTITION BY RANGE (id);
         CREATE TABLE i2 (id bigint NOT NULL) PARTITION BY RANGE (id);",
    );
    for (t, column, interval) in [
        ("t1", "at", "monthly"),
        ("t2", "at", "monthly"),
        ("i1", "id", "100"),
        ("i2", "id", "100"),
    ] {
        let mut o = range(&dsn, t, column, interval);
        o.premake = 1;
        pgw_partition::create(&o).await.expect("create");
    }
    sql(
        &db,
        "INSERT INTO t1 SELECT timestamptz '2040-06-10' + g * interval '1 hour' FROM generate_series(1, 30) g;
         INSERT INTO t2 VALUES (now());
         INSERT INTO i1 SELECT -1000 + g FROM generate_series(0, 19) g;
         INSERT INTO i1 VALUES (50);
         INSERT INTO i2 VALUES (50);",
    );
    assert_eq!(sql(&db, "SELECT count(*) FROM t1_default"), "30");
    assert_eq!(sql(&db, "SELECT count(*) FROM i1_default"), "20");
    let r = maintain(&dsn, false).await;
    let got = outcome(&r);
    assert_eq!(got["public.t1"], ["rescue t1_p2040_06: done"], "{got:#?}");
    assert_eq!(got["public.i1"].len(), 1, "{got:#?}");
    assert!(
        got["public.i1"][0].starts_with("rescue ") && got["public.i1"][0].ends_with(": done"),
        "{got:#?}"
    );
    assert!(
        got["public.t2"].is_empty() && got["public.i2"].is_empty(),
        "{got:#?}"
    );
    let rescued = r
        .sets
        .iter()
        .flat_map(|s| &s.steps)
        .filter_map(|st| match st.action {
            Action::Rescue { rows, .. } => Some(rows),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert_eq!(rescued, [20, 30], "i1, then t1");
    assert_eq!(sql(&db, "SELECT count(*) FROM t1_default"), "0");
    assert_eq!(sql(&db, "SELECT count(*) FROM i1_default"), "0");
    assert_eq!(
        sql(
            &db,
            "SELECT (SELECT count(*) FROM t1) + (SELECT count(*) FROM i1)"
        ),
        "51",
        "no row lost or duplicated"
    );
    let again = maintain(&dsn, false).await;
    assert_eq!(steps(&again), 0, "{:#?}", outcome(&again));
}
