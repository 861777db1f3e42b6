//! `maintain`: premake, retention (detach and drop), default-partition rescue, the
//! lock-timeout skip, idempotence.

use pgw_partition::Status;

use crate::{database, maintain, partitions, range, sql, steps};

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
