//! `create`: range (time and integer), list and hash sets; dry runs; bad input.

use pgw_partition::{Layout, PartitionError};

use crate::{database, maintain, partitions, range, sql, steps};

#[tokio::test]
async fn monthly_set_has_four_behind_the_current_month_and_four_ahead() {
    let (db, dsn) = database(
        "CREATE TABLE events (id bigint, created_at timestamptz NOT NULL, payload text)
           PARTITION BY RANGE (created_at);",
    );
    let report = pgw_partition::create(&range(&dsn, "public.events", "created_at", "1 month"))
        .await
        .expect("create");
    assert!(report.applied);
    let parts = partitions(&db, "events");
    assert_eq!(parts.len(), 10, "{parts:#?}");
    assert!(
        parts.iter().any(|p| p == "events_default|DEFAULT"),
        "{parts:#?}"
    );
    let this_month = sql(&db, "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')");
    let first = sql(&db, "SELECT to_char(date_trunc('month', now() AT TIME ZONE 'UTC') - interval '4 months', 'YYYY-MM-DD')");
    assert!(
        parts
            .iter()
            .any(|p| p.starts_with(&format!("events_p{this_month}|"))),
        "{parts:#?}"
    );
    assert!(
        parts
            .iter()
            .any(|p| p.contains(&format!("FROM ('{first} 00:00:00+00')"))),
        "{parts:#?}"
    );
    // Rows land where they belong; maintenance right after has nothing to do.
    sql(&db, "INSERT INTO events SELECT g, now() - g * interval '1 day', 'x' FROM generate_series(1, 100) g");
    assert_eq!(sql(&db, "SELECT count(*) FROM ONLY events_default"), "0");
    let r = maintain(&dsn, false).await;
    assert_eq!(steps(&r), 0, "{r:#?}");
    // The config is stored in the database itself.
    assert_eq!(
        sql(&db, "SELECT control || ' ' || range_interval || ' ' || premake || ' ' || time_zone FROM pgwarden.partition_set"),
        "created_at 1 month 4 UTC"
    );
    let err = pgw_partition::create(&range(&dsn, "public.events", "created_at", "1 month"))
        .await
        .unwrap_err();
    assert!(matches!(err, PartitionError::AlreadyManaged(_)), "{err}");
}

#[tokio::test]
async fn daily_set_in_another_time_zone_has_local_midnight_bounds() {
    let (db, dsn) = database(
        "CREATE TABLE metrics (at timestamptz NOT NULL, v float8) PARTITION BY RANGE (at);",
    );
    sql(
        "postgres",
        &format!("ALTER DATABASE {db} SET timezone = 'Asia/Tokyo'"),
    );
    let mut o = range(&dsn, "metrics", "at", "daily");
    o.time_zone = "America/New_York".into();
    o.premake = 2;
    o.default_partition = false;
    pgw_partition::create(&o).await.expect("create");
    let bounds = sql(
        &db,
        "SET timezone = 'America/New_York';
         SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'metrics'::regclass",
    );
    assert_eq!(bounds.lines().count(), 5, "{bounds}");
    for b in bounds.lines() {
        assert!(
            b.contains("00:00:00-05') TO") || b.contains("00:00:00-04') TO"),
            "not New York midnight: {b}"
        );
    }
    // Maintenance from a session in yet another zone sees nothing to do.
    let r = maintain(&dsn, false).await;
    assert_eq!(steps(&r), 0, "{r:#?}");
}

#[tokio::test]
async fn integer_set_on_an_empty_plain_table_is_recreated_partitioned() {
    let (db, dsn) = database(
        "CREATE TABLE items (id bigserial, sku text NOT NULL, PRIMARY KEY (id));
         GRANT SELECT ON items TO PUBLIC;",
    );
    let mut o = range(&dsn, "items", "id", "1000");
    o.premake = 2;
    pgw_partition::create(&o).await.expect("create");
    assert_eq!(
        sql(&db, "SELECT relkind FROM pg_class WHERE relname = 'items'"),
        "p"
    );
    let parts = partitions(&db, "items");
    assert_eq!(
        parts,
        [
            "items_default|DEFAULT",
            "items_p0|FOR VALUES FROM ('0') TO ('1000')",
            "items_p1000|FOR VALUES FROM ('1000') TO ('2000')",
            "items_p2000|FOR VALUES FROM ('2000') TO ('3000')",
        ]
    );
    // The serial sequence survived and now belongs to the new table; grants came along.
    sql(
        &db,
        "INSERT INTO items (sku) SELECT 's' || g FROM generate_series(1, 2500) g",
    );
    assert_eq!(sql(&db, "SELECT max(id) FROM items"), "2500");
    assert!(sql(
        &db,
        "SELECT relacl::text FROM pg_class WHERE relname = 'items_p0'"
    )
    .contains("=r/"));
    // Premake follows the highest id: 2500 lies in 2000-3000, so 3000-4000 and 4000-5000.
    let r = maintain(&dsn, false).await;
    assert_eq!(steps(&r), 2, "{r:#?}");
    assert!(partitions(&db, "items")
        .iter()
        .any(|p| p.starts_with("items_p4000|")));
    assert_eq!(steps(&maintain(&dsn, false).await), 0);
    // Integer retention: ids more than 1500 below the highest (2500) retire, so 0-1000 goes.
    sql(
        &db,
        "UPDATE pgwarden.partition_set SET retention = '1500', retention_mode = 'drop'",
    );
    let r = maintain(&dsn, false).await;
    assert_eq!(steps(&r), 1, "{r:#?}");
    assert!(!partitions(&db, "items")
        .iter()
        .any(|p| p.starts_with("items_p0|")));
    assert_eq!(sql(&db, "SELECT min(id) FROM items"), "1000");
    assert_eq!(steps(&maintain(&dsn, false).await), 0);
}

#[tokio::test]
async fn list_and_hash_sets() {
    let (db, dsn) = database(
        "CREATE TABLE orders (id bigint, region text NOT NULL) PARTITION BY LIST (region);
         CREATE TABLE sessions (user_id bigint NOT NULL, started timestamptz) PARTITION BY HASH (user_id);",
    );
    let mut o = range(&dsn, "public.orders", "region", "");
    o.layout = Layout::List(vec![
        ("us".into(), vec!["US".into(), "CA".into()]),
        ("eu".into(), vec!["UK".into(), "DE".into(), "FR".into()]),
    ]);
    pgw_partition::create(&o).await.expect("create list set");
    assert_eq!(
        partitions(&db, "orders"),
        [
            "orders_default|DEFAULT",
            "orders_eu|FOR VALUES IN ('UK', 'DE', 'FR')",
            "orders_us|FOR VALUES IN ('US', 'CA')",
        ]
    );
    let mut o = range(&dsn, "public.sessions", "user_id", "");
    o.layout = Layout::Hash(4);
    pgw_partition::create(&o).await.expect("create hash set");
    let parts = partitions(&db, "sessions");
    assert_eq!(parts.len(), 4, "no default for hash: {parts:#?}");
    assert_eq!(
        parts[3],
        "sessions_p3|FOR VALUES WITH (modulus 4, remainder 3)"
    );
    sql(
        &db,
        "INSERT INTO sessions SELECT g, now() FROM generate_series(1, 1000) g",
    );
    assert_ne!(sql(&db, "SELECT count(*) FROM sessions_p0"), "0");
    assert_eq!(steps(&maintain(&dsn, false).await), 0);
}

#[tokio::test]
async fn dry_run_changes_nothing_and_prints_the_ddl() {
    let (db, dsn) =
        database("CREATE TABLE events (created_at date NOT NULL) PARTITION BY RANGE (created_at);");
    let mut o = range(&dsn, "events", "created_at", "weekly");
    o.dry_run = true;
    o.start = Some("2024-01-03".into());
    o.premake = 1;
    let r = pgw_partition::create(&o).await.expect("dry run");
    assert!(!r.applied);
    assert!(
        r.sql[0].starts_with(
            "CREATE TABLE \"public\".\"events_p2024w01\" PARTITION OF \"public\".\"events\" FOR VALUES FROM ('2024-01-01'::date) TO ('2024-01-08'::date)"
        ) || r.sql[0].starts_with("CREATE TABLE public.events_p2024w01 PARTITION OF public.events FOR VALUES FROM ('2024-01-01'::date) TO ('2024-01-08'::date)"),
        "{:#?}",
        r.sql
    );
    assert!(partitions(&db, "events").is_empty());
    assert_eq!(
        sql(&db, "SELECT to_regclass('pgwarden.partition_set') IS NULL"),
        "t"
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_nothing_made() {
    let (db, dsn) = database(
        "CREATE TABLE t (id bigint, label text, at timestamptz) PARTITION BY RANGE (at);
         CREATE TABLE full_table (id int, at timestamptz); INSERT INTO full_table VALUES (1, now());",
    );
    let cases = [
        (
            range(&dsn, "public.nope", "at", "1 month"),
            "does not exist",
        ),
        (
            range(&dsn, "t", "nope", "1 month"),
            "column nope does not exist",
        ),
        (range(&dsn, "t", "at", "5 months"), "does not divide a year"),
        (range(&dsn, "t", "at", "7 hours"), "does not divide a day"),
        (range(&dsn, "t", "at", "1000"), "is a number"),
        (
            range(&dsn, "t", "label", "1 month"),
            "range partitioning needs",
        ),
        (range(&dsn, "t", "id", "1 month"), "is a time interval"),
        (range(&dsn, "t", "id", "100"), "partitioned by range (at)"),
        (range(&dsn, "full_table", "at", "1 month"), "holds rows"),
        (range(&dsn, "bad name", "at", "1 month"), "not a table name"),
    ];
    for (o, want) in cases {
        let err = pgw_partition::create(&o).await.unwrap_err();
        let line = pgw_common::report(&err);
        assert!(line.contains(want), "{}: got {line}", o.table);
        assert!(
            pgw_common::Classify::class(&err) == pgw_common::ErrorClass::Input,
            "{line}"
        );
    }
    let mut o = range(&dsn, "t", "label", "");
    o.layout = Layout::List(vec![
        ("a".into(), vec!["US".into()]),
        ("b".into(), vec!["CA".into(), "US".into()]),
    ]);
    let err = pgw_partition::create(&o).await.unwrap_err();
    assert!(
        err.to_string().contains("cannot overlap")
            && pgw_common::Classify::class(&err) == pgw_common::ErrorClass::Input,
        "{err}"
    );
    let mut o = range(&dsn, "t", "at", "1 month");
    o.time_zone = "Mars/Olympus".into();
    let err = pgw_partition::create(&o).await.unwrap_err();
    assert!(err.to_string().contains("Mars/Olympus"), "{err}");
    assert!(partitions(&db, "t").is_empty());
    assert_eq!(
        sql(
            &db,
            "SELECT count(*) FROM pg_class WHERE relname LIKE 't_p%'"
        ),
        "0"
    );
}

#[tokio::test]
async fn template_owner_grants_reloptions_quoted_names_and_a_pg_monitor_list() {
    let (db, dsn) = database(
        r#"DO $$ BEGIN
             CREATE ROLE part_app; CREATE ROLE part_reporting;
             CREATE ROLE part_mon LOGIN PASSWORD 'mon-pw' IN ROLE pg_monitor;
           EXCEPTION WHEN duplicate_object THEN NULL; END $$;
           CREATE TABLE "Events" (at timestamptz NOT NULL) PARTITION BY RANGE (at);
           ALTER TABLE "Events" OWNER TO part_app;
           GRANT SELECT ON "Events" TO PUBLIC;"#,
    );
    let mut o = range(&dsn, r#"public."Events""#, "at", "1 month");
    o.premake = 1;
    o.template.grants = vec!["SELECT, INSERT TO part_reporting".into()];
    o.template.reloptions = vec!["autovacuum_vacuum_scale_factor=0.01".into()];
    pgw_partition::create(&o).await.expect("create");
    let this_month = sql(&db, "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')");
    let name = format!("Events_p{this_month}");
    let facts = sql(
        &db,
        &format!(
            "SELECT pg_get_userbyid(relowner) || ' ' || relacl::text || ' ' || reloptions::text
               FROM pg_class WHERE relname = '{name}'"
        ),
    );
    assert!(
        facts.starts_with("part_app "),
        "owner from the parent: {facts}"
    );
    assert!(
        facts.contains("=r/part_app"),
        "the parent's grants: {facts}"
    );
    assert!(
        facts.contains("part_reporting=ar/part_app"),
        "the template's grant: {facts}"
    );
    assert!(
        facts.contains("autovacuum_vacuum_scale_factor=0.01"),
        "{facts}"
    );
    assert_eq!(partitions(&db, r#""Events""#).len(), 4);

    // A pg_monitor role can list the set; the default partition's count is then an estimate.
    let mon = crate::cluster().dsn_for("part_mon", "mon-pw", &db);
    let sets = pgw_partition::list(Some(&mon), None)
        .await
        .expect("list as pg_monitor");
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].table, r#"public."Events""#);
    assert_eq!(sets[0].partitions.len(), 4, "{sets:#?}");
    assert!(
        sets[0].default_rows_exact,
        "PUBLIC may read it, as the parent's grant says"
    );
    assert!(sets[0].error.is_none(), "{sets:#?}");
    sql(&db, r#"REVOKE SELECT ON "Events_default" FROM PUBLIC"#);
    let sets = pgw_partition::list(Some(&mon), None)
        .await
        .expect("list as pg_monitor");
    assert!(!sets[0].default_rows_exact, "{sets:#?}");
    assert_eq!(sets[0].default_rows, Some(0));
}

/// Names SQL needs quoted everywhere: a reserved-keyword schema and column, a table with
/// capitals, spaces and embedded quotes. Create (an empty table re-created partitioned),
/// maintain (default-partition rescue, retention), list, and a populated conversion.
#[tokio::test]
async fn keyword_mixed_case_space_and_quote_names_work_end_to_end() {
    let (db, dsn) = database(
        r#"CREATE SCHEMA "user";
           CREATE TABLE "user"."Order ""Items"" 2024" (
               "order" timestamptz NOT NULL, "select" int, "Group By" text);
           CREATE TABLE "user"."from" (
               id bigint, "order" timestamptz NOT NULL, v int, PRIMARY KEY (id, "order"));
           INSERT INTO "user"."from"
                SELECT g, now() - g * interval '1 day', g FROM generate_series(1, 400) g;"#,
    );
    let table = r#""user"."Order ""Items"" 2024""#;
    let start = sql(
        &db,
        "SELECT to_char(now() AT TIME ZONE 'UTC' - interval '6 months', 'YYYY-MM-01')",
    );
    let mut o = range(&dsn, table, "order", "1 month");
    o.premake = 2;
    o.start = Some(start);
    o.retention = Some("2 months".into());
    let created = pgw_partition::create(&o).await.expect("create");
    assert!(created.applied);
    assert_eq!(created.set.schema, "user");
    assert_eq!(created.set.table, "Order \"Items\" 2024");
    // A row now, and one five months ahead (past premake: the default partition).
    sql(
        &db,
        r#"INSERT INTO "user"."Order ""Items"" 2024" ("order", "select", "Group By")
           VALUES (now(), 1, 'a'), (now() + interval '5 months', 2, 'b')"#,
    );
    let before = partitions(&db, table).len();
    let report = maintain(&dsn, false).await;
    assert!(!report.failed() && !report.skipped(), "{report:#?}");
    let done: Vec<String> = report.sets[0]
        .steps
        .iter()
        .map(|s| format!("{:?}", s.action))
        .collect();
    assert!(done.iter().any(|a| a.starts_with("Rescue")), "{done:?}");
    assert!(done.iter().any(|a| a.starts_with("Retire")), "{done:?}");
    assert_eq!(report.sets[0].table, r#""user"."Order ""Items"" 2024""#);
    assert_eq!(
        sql(
            &db,
            r#"SELECT count(*) FROM "user"."Order ""Items"" 2024_default""#
        ),
        "0"
    );
    assert_eq!(
        sql(&db, r#"SELECT count(*) FROM "user"."Order ""Items"" 2024""#),
        "2"
    );
    assert_ne!(partitions(&db, table).len(), before);
    assert_eq!(
        steps(&maintain(&dsn, false).await),
        0,
        "a second run plans nothing"
    );

    // A populated table with a keyword name and key column, converted.
    let mut o = range(&dsn, r#""user"."from""#, "order", "1 month");
    o.yes = true;
    let converted = pgw_partition::create(&o).await.expect("convert");
    let c = converted.conversion.expect("a conversion");
    assert_eq!(c.rows, 400);
    assert_eq!(c.old_table, r#""user".from_pgw_old"#);
    assert_eq!(
        sql(
            &db,
            r#"SELECT count(*) FROM ONLY "user"."from"; SELECT count(*) FROM "user"."from""#
        ),
        "0\n400"
    );

    let sets = pgw_partition::list(Some(&dsn), None).await.expect("list");
    let names: Vec<&str> = sets.iter().map(|s| s.table.as_str()).collect();
    assert_eq!(
        names,
        [r#""user"."Order ""Items"" 2024""#, r#""user"."from""#],
        "{sets:#?}"
    );
    assert!(sets.iter().all(|s| s.error.is_none()), "{sets:#?}");
}
