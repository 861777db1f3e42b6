//! `adopt`: a set made by pg_partman or by hand comes under management as it is: nothing
//! renamed, the interval read from its partitions, pg_partman's settings taken over and its
//! own maintenance of the set switched off.

use pgw_partition::{AdoptOptions, PartitionError, RetentionMode};

use crate::{database, maintain, partitions, sql, steps};

fn adopt_opts(dsn: &str, table: &str) -> AdoptOptions {
    AdoptOptions {
        dsn: Some(dsn.to_string()),
        table: table.to_string(),
        time_zone: "UTC".into(),
        ..AdoptOptions::default()
    }
}

#[tokio::test]
async fn a_pg_partman_set_is_taken_over() {
    let (db, dsn) = database(
        "CREATE SCHEMA partman;
         CREATE EXTENSION pg_partman SCHEMA partman;
         CREATE TABLE public.events (id bigint, created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at);
         SET timezone = 'UTC';
         SELECT partman.create_parent('public.events', 'created_at', 'native', 'monthly', p_premake := 4);
         UPDATE partman.part_config SET retention = '6 months', retention_keep_table = false;",
    );
    let before = partitions(&db, "events");
    let r = pgw_partition::adopt(&adopt_opts(&dsn, "public.events"))
        .await
        .expect("adopt (needs postgresql-15-partman, which ./run test installs)");
    assert!(r.applied && r.partman_disabled, "{r:?}");
    assert_eq!(
        r.set.interval.map(|i| i.to_string()).as_deref(),
        Some("1 month")
    );
    assert_eq!(r.set.premake, 4);
    assert_eq!(
        r.set.retention.map(|x| x.to_string()).as_deref(),
        Some("6 months")
    );
    assert_eq!(r.set.retention_mode, RetentionMode::Drop);
    assert!(r.set.default_partition);
    assert_eq!(
        sql(&db, "SELECT automatic_maintenance FROM partman.part_config"),
        "off"
    );
    assert_eq!(partitions(&db, "events"), before, "nothing renamed or made");
    assert_eq!(
        steps(&maintain(&dsn, true).await),
        0,
        "pg_partman left it complete"
    );

    // pgwarden's own partitions continue pg_partman's names.
    sql(&db, "UPDATE pgwarden.partition_set SET premake = 6");
    let r = maintain(&dsn, false).await;
    assert_eq!(steps(&r), 2, "{r:#?}");
    let names: Vec<String> = partitions(&db, "events");
    let six_ahead = sql(
        &db,
        "SELECT to_char(now() AT TIME ZONE 'UTC' + interval '6 months', 'YYYY_MM')",
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with(&format!("events_p{six_ahead}|"))),
        "{names:#?}"
    );
    let err = pgw_partition::adopt(&adopt_opts(&dsn, "public.events"))
        .await
        .unwrap_err();
    assert!(matches!(err, PartitionError::AlreadyManaged(_)), "{err}");
}

#[tokio::test]
async fn a_hand_made_set_keeps_its_names_and_gets_the_interval_from_its_bounds() {
    let (db, dsn) = database(
        "CREATE TABLE metrics (at timestamptz NOT NULL, v float8) PARTITION BY RANGE (at);
         DO $$ DECLARE d date := (now() AT TIME ZONE 'UTC')::date - 2; BEGIN
           FOR k IN 0..3 LOOP
             EXECUTE format('CREATE TABLE %I PARTITION OF metrics FOR VALUES FROM (%L) TO (%L)',
                            'm' || to_char(d + k, 'YYYYMMDD'),
                            (d + k)::timestamp AT TIME ZONE 'UTC', (d + k + 1)::timestamp AT TIME ZONE 'UTC');
           END LOOP; END $$;
         CREATE TABLE plain (id int);",
    );
    let mut o = adopt_opts(&dsn, "metrics");
    o.premake = Some(3);
    o.dry_run = true;
    let r = pgw_partition::adopt(&o).await.expect("dry run");
    assert!(!r.applied);
    assert_eq!(
        sql(&db, "SELECT to_regclass('pgwarden.partition_set') IS NULL"),
        "t"
    );
    o.dry_run = false;
    let r = pgw_partition::adopt(&o).await.expect("adopt");
    assert_eq!(
        r.set.interval.map(|i| i.to_string()).as_deref(),
        Some("1 day")
    );
    assert!(
        r.sources
            .iter()
            .any(|(k, v)| k == "interval" && v.contains("inferred from 4")),
        "{r:?}"
    );
    assert!(!r.set.default_partition);
    // Today is the third of four; premake 3 wants two more, in pgwarden's naming.
    let m = maintain(&dsn, false).await;
    assert_eq!(steps(&m), 2, "{m:#?}");
    let names = partitions(&db, "metrics");
    assert_eq!(
        names.iter().filter(|n| n.starts_with('m')).count(),
        6,
        "{names:#?}"
    );
    assert_eq!(
        names.iter().filter(|n| n.starts_with("metrics_p")).count(),
        2,
        "{names:#?}"
    );

    let err = pgw_partition::adopt(&adopt_opts(&dsn, "plain"))
        .await
        .unwrap_err();
    assert!(matches!(err, PartitionError::NotPartitioned(_)), "{err}");
    let err = pgw_partition::adopt(&adopt_opts(&dsn, "nope"))
        .await
        .unwrap_err();
    assert!(matches!(err, PartitionError::NoTable(_)), "{err}");
}
