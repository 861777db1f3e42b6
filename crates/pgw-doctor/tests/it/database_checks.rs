//! Database-scoped checks: dead_tuples, invalid_index, duplicate_index, missing_fk_index,
//! sequence_exhaustion. Each test plants the problem, sees the finding, runs the
//! remediation the finding gave, and sees the finding gone.

use pgw_doctor::{Options, Severity, Thresholds};

use crate::{cluster, doctor, found, poll, remediate};

const DATABASE_CHECKS: &[&str] = &[
    "dead_tuples",
    "invalid_index",
    "duplicate_index",
    "missing_fk_index",
    "sequence_exhaustion",
];

#[tokio::test]
async fn dead_tuples_found_and_vacuumed() {
    let c = cluster();
    c.psql(
        "postgres",
        r#"CREATE SCHEMA "user";
           CREATE TABLE "user"."Dead" (id int) WITH (autovacuum_enabled = false);
           INSERT INTO "user"."Dead" SELECT generate_series(1, 20000);
           DELETE FROM "user"."Dead" WHERE id <= 10000;
           CREATE TABLE public.small (id int) WITH (autovacuum_enabled = false);
           INSERT INTO public.small SELECT generate_series(1, 100);
           DELETE FROM public.small;"#,
    )
    .unwrap();
    let report = poll(&c, "dead_tuples", &[], "Dead", true).await;
    let f = found(&report, "dead_tuples", "\"Dead\"");
    assert_eq!(f.len(), 1, "{:#?}", report.findings);
    let f = f[0];
    assert_eq!(f.severity, Severity::Critical, "{f:#?}");
    assert_eq!(f.database.as_deref(), Some("postgres"));
    assert_eq!(f.object.as_deref(), Some("\"user\".\"Dead\""));
    assert!(f.detail.contains("10000 dead"), "{}", f.detail);
    assert_eq!(f.remediation, ["VACUUM (ANALYZE) \"user\".\"Dead\";"]);
    assert!(
        f.perfdata
            .as_deref()
            .unwrap_or("")
            .starts_with("user.Dead_dead_ratio=1.0000;0.2;0.5"),
        "{:?}",
        f.perfdata
    );
    // Below dead_tuples_min_rows: ignored even with no live rows.
    assert!(
        found(&report, "dead_tuples", "small").is_empty(),
        "{:#?}",
        report.findings
    );
    // A warning-level share with a raised critical threshold.
    let report = doctor(&c, "dead_tuples", &["dead_tuples_critical_share=2"]).await;
    assert_eq!(
        found(&report, "dead_tuples", "Dead")[0].severity,
        Severity::Warning
    );

    let f = f.clone();
    remediate(&c, &f);
    poll(&c, "dead_tuples", &[], "Dead", false).await;
}

#[tokio::test]
async fn invalid_index_in_another_database() {
    let c = cluster();
    c.psql("postgres", "CREATE DATABASE \"Other db\";").unwrap();
    c.psql(
        "Other db",
        "CREATE TABLE public.dup (v int); INSERT INTO public.dup VALUES (1), (1), (2);",
    )
    .unwrap();
    let err = c.psql(
        "Other db",
        "CREATE UNIQUE INDEX CONCURRENTLY \"Dup \"\"v\"\" uq\" ON public.dup (v);",
    );
    assert!(err.is_err(), "the unique index on duplicates must fail");
    // A valid index is not reported.
    c.psql("Other db", "CREATE INDEX dup_v ON public.dup (v);")
        .unwrap();

    let report = doctor(&c, "invalid_index", &[]).await;
    let f = found(&report, "invalid_index", "Dup ");
    assert_eq!(f.len(), 1, "{:#?}", report.findings);
    let f = f[0].clone();
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.database.as_deref(), Some("Other db"));
    assert_eq!(f.object.as_deref(), Some("public.\"Dup \"\"v\"\" uq\""));
    assert!(f.detail.contains("CREATE UNIQUE INDEX"), "{}", f.detail);
    assert_eq!(
        f.remediation,
        ["DROP INDEX CONCURRENTLY \"public\".\"Dup \"\"v\"\" uq\";"]
    );
    assert!(found(&report, "invalid_index", "dup_v").is_empty());
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);

    remediate(&c, &f);
    let report = doctor(&c, "invalid_index", &[]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
}

#[tokio::test]
async fn duplicate_index_found_and_dropped() {
    let c = cluster();
    c.psql(
        "postgres",
        r#"CREATE TABLE public."T" (id int PRIMARY KEY, a int, b int, c text);
           CREATE INDEX t_id_plain ON public."T" (id);          -- duplicate of the primary key
           CREATE INDEX "T_a_b" ON public."T" (a, b);
           CREATE INDEX t_a_b_copy ON public."T" (a, b);        -- exact duplicate of "T_a_b"
           CREATE INDEX t_a ON public."T" (a);                  -- exact duplicate of u_a
           CREATE UNIQUE INDEX u_a ON public."T" (a);           -- prefix of "T_a_b", but unique
           CREATE INDEX t_b ON public."T" (b);                  -- distinct
           CREATE INDEX t_b_desc_a ON public."T" (b DESC, a);   -- b DESC is not a prefix of (b)
           CREATE INDEX p_a ON public."T" (a) WHERE b > 0;      -- other predicate
           CREATE INDEX e1 ON public."T" (lower(c));
           CREATE INDEX e2 ON public."T" (lower(c));            -- expression duplicate
           CREATE INDEX e_upper ON public."T" (upper(c));
           CREATE INDEX h_a ON public."T" USING hash (a);       -- other access method
           CREATE INDEX t_c_incl ON public."T" (c) INCLUDE (a);
           CREATE INDEX t_c ON public."T" (c);                  -- covered by t_c_incl
           CREATE TABLE public.other (a int);
           CREATE INDEX other_a ON public.other (a);            -- same columns, other table"#,
    )
    .unwrap();
    let report = doctor(&c, "duplicate_index", &[]).await;
    let flagged: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.check == "duplicate_index")
        .filter_map(|f| f.object.as_deref())
        .collect();
    let mut sorted = flagged.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![
            "public.e2",
            "public.t_a",
            "public.t_a_b_copy",
            "public.t_c",
            "public.t_id_plain"
        ],
        "{:#?}",
        report.findings
    );
    let f = found(&report, "duplicate_index", "t_id_plain")[0];
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.database.as_deref(), Some("postgres"));
    assert!(f.detail.contains("\"T_pkey\""), "{}", f.detail);
    assert_eq!(
        f.remediation,
        ["DROP INDEX CONCURRENTLY \"public\".\"t_id_plain\";"]
    );
    let f = found(&report, "duplicate_index", "t_a_b_copy")[0];
    assert!(f.detail.contains("public.\"T_a_b\""), "{}", f.detail);
    let f = found(&report, "duplicate_index", "t_a")
        .into_iter()
        .find(|f| f.object.as_deref() == Some("public.t_a"))
        .unwrap();
    assert!(f.detail.contains("public.u_a"), "{}", f.detail);

    for f in report.findings.clone() {
        remediate(&c, &f);
    }
    let report = doctor(&c, "duplicate_index", &[]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
}

#[tokio::test]
async fn duplicate_index_prefix() {
    let c = cluster();
    c.psql(
        "postgres",
        r#"CREATE TABLE public.p (a int, b int, c int);
           CREATE INDEX p_a ON public.p (a);                  -- prefix of p_a_b_c
           CREATE INDEX p_a_b_c ON public.p (a, b, c);
           CREATE INDEX p_b_part ON public.p (b) WHERE c > 0;
           CREATE INDEX p_b_c_part ON public.p (b, c) WHERE c > 0;  -- same predicate
           CREATE INDEX p_c ON public.p (c);
           CREATE INDEX p_c_a_part ON public.p (c, a) WHERE a > 0;  -- other predicate"#,
    )
    .unwrap();
    let report = doctor(&c, "duplicate_index", &[]).await;
    let mut flagged: Vec<&str> = report
        .findings
        .iter()
        .filter_map(|f| f.object.as_deref())
        .collect();
    flagged.sort();
    assert_eq!(
        flagged,
        vec!["public.p_a", "public.p_b_part"],
        "{:#?}",
        report.findings
    );
    let f = found(&report, "duplicate_index", "p_a")[0];
    assert!(f.detail.contains("public.p_a_b_c"), "{}", f.detail);
    for f in report.findings.clone() {
        remediate(&c, &f);
    }
    let report = doctor(&c, "duplicate_index", &[]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
}

#[tokio::test]
async fn missing_fk_index_found_and_created() {
    let c = cluster();
    c.psql(
        "postgres",
        r#"CREATE TABLE public.parent (id int PRIMARY KEY);
           CREATE TABLE public.pair (x int, y int, PRIMARY KEY (x, y));
           CREATE TABLE public."Child" (
               id int PRIMARY KEY,
               "Parent Id" int REFERENCES public.parent,
               indexed_parent int REFERENCES public.parent,
               x int, y int, z int,
               FOREIGN KEY (x, y) REFERENCES public.pair);
           CREATE INDEX ON public."Child" (indexed_parent);
           CREATE INDEX ON public."Child" (y, x, z);           -- covers (x, y) in any order
           CREATE SCHEMA "user";
           CREATE TABLE "user"."line item" ("order" int REFERENCES public.parent);
           CREATE TABLE public.partial_child (p int REFERENCES public.parent);
           CREATE INDEX ON public.partial_child (p) WHERE p > 0; -- partial: does not count"#,
    )
    .unwrap();
    let report = doctor(&c, "missing_fk_index", &[]).await;
    assert_eq!(report.findings.len(), 3, "{:#?}", report.findings);
    let f = found(&report, "missing_fk_index", "Child");
    assert_eq!(f.len(), 1, "{:#?}", report.findings);
    let f = f[0].clone();
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.database.as_deref(), Some("postgres"));
    assert_eq!(f.object.as_deref(), Some("public.\"Child\""));
    assert!(f.detail.contains("public.parent"), "{}", f.detail);
    assert_eq!(
        f.remediation,
        ["CREATE INDEX CONCURRENTLY ON \"public\".\"Child\" (\"Parent Id\");"]
    );
    let f = found(&report, "missing_fk_index", "line item");
    assert_eq!(f.len(), 1, "{:#?}", report.findings);
    assert_eq!(f[0].object.as_deref(), Some("\"user\".\"line item\""));
    assert!(f[0].detail.contains("(\"order\")"), "{}", f[0].detail);
    assert_eq!(
        f[0].remediation,
        ["CREATE INDEX CONCURRENTLY ON \"user\".\"line item\" (\"order\");"]
    );
    assert_eq!(found(&report, "missing_fk_index", "partial_child").len(), 1);

    for f in report.findings.clone() {
        remediate(&c, &f);
    }
    let report = doctor(&c, "missing_fk_index", &[]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
}

#[tokio::test]
async fn sequence_exhaustion_found_and_widened() {
    let c = cluster();
    c.psql("postgres", "CREATE DATABASE seqs;").unwrap();
    c.psql(
        "postgres",
        r#"CREATE TABLE public."Ser" (id serial PRIMARY KEY);
           SELECT setval('public."Ser_id_seq"', 2000000000);
           CREATE TABLE public.ident (id int GENERATED ALWAYS AS IDENTITY);
           SELECT setval(pg_get_serial_sequence('public.ident', 'id'), 1700000000);
           -- an old-style serial: a bigint sequence feeding an integer column
           CREATE SEQUENCE public.legacy_seq;
           CREATE TABLE public.legacy (id int DEFAULT nextval('public.legacy_seq'));
           ALTER SEQUENCE public.legacy_seq OWNED BY public.legacy.id;
           SELECT setval('public.legacy_seq', 2100000000);
           CREATE SEQUENCE public.down AS integer INCREMENT -1;
           SELECT setval('public.down', -2000000000);
           CREATE SEQUENCE public.fresh;
           SELECT nextval('public.fresh');
           CREATE SEQUENCE public.unused AS smallint;
           CREATE SEQUENCE public.cyc AS smallint CYCLE;
           SELECT setval('public.cyc', 32000);"#,
    )
    .unwrap();
    c.psql(
        "seqs",
        r#"CREATE SCHEMA "user";
           CREATE SEQUENCE "user"."Small ""q""" AS smallint;
           SELECT setval('"user"."Small ""q"""', 25000);"#,
    )
    .unwrap();

    let report = doctor(&c, "sequence_exhaustion", &[]).await;
    let get = |needle: &str| {
        let f = found(&report, "sequence_exhaustion", needle);
        assert_eq!(f.len(), 1, "{needle}: {:#?}", report.findings);
        f[0].clone()
    };
    let ser = get("Ser_id_seq");
    assert_eq!(ser.severity, Severity::Critical);
    assert_eq!(ser.database.as_deref(), Some("postgres"));
    assert_eq!(ser.object.as_deref(), Some("public.\"Ser_id_seq\""));
    assert_eq!(
        ser.remediation,
        [
            "ALTER TABLE \"public\".\"Ser\" ALTER COLUMN \"id\" TYPE bigint;",
            "ALTER SEQUENCE \"public\".\"Ser_id_seq\" AS bigint NO MAXVALUE;"
        ]
    );
    assert!(ser.detail.contains("ACCESS EXCLUSIVE"), "{}", ser.detail);
    let ident = get("ident_id_seq");
    assert_eq!(ident.severity, Severity::Warning, "{ident:#?}");
    let legacy = get("legacy_seq");
    assert_eq!(legacy.severity, Severity::Critical, "{legacy:#?}");
    assert!(legacy.detail.contains("column type"), "{}", legacy.detail);
    let down = get("down");
    assert_eq!(down.severity, Severity::Critical, "{down:#?}");
    assert_eq!(
        down.remediation,
        ["ALTER SEQUENCE \"public\".\"down\" AS bigint NO MINVALUE;"]
    );
    let small = get("Small");
    assert_eq!(small.severity, Severity::Warning, "{small:#?}");
    assert_eq!(small.database.as_deref(), Some("seqs"));
    assert_eq!(
        small.remediation,
        ["ALTER SEQUENCE \"user\".\"Small \"\"q\"\"\" AS bigint NO MAXVALUE;"]
    );
    for quiet in ["fresh", "unused", "cyc"] {
        assert!(
            found(&report, "sequence_exhaustion", quiet).is_empty(),
            "{quiet}"
        );
    }
    assert_eq!(report.findings.len(), 5, "{:#?}", report.findings);

    for f in report.findings.clone() {
        remediate(&c, &f);
    }
    let report = doctor(&c, "sequence_exhaustion", &[]).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    // The widened columns take values past the old limit.
    c.psql(
        "postgres",
        r#"SELECT setval('public."Ser_id_seq"', 3000000000);
           INSERT INTO public."Ser" DEFAULT VALUES;
           SELECT setval('public.legacy_seq', 3000000000);
           INSERT INTO public.legacy DEFAULT VALUES;
           INSERT INTO public.ident DEFAULT VALUES;"#,
    )
    .unwrap();
}

/// A `pg_monitor`-only role runs every database check without being skipped; each sequence
/// it cannot read is listed as skipped.
#[tokio::test]
async fn database_checks_run_as_pg_monitor() {
    let c = cluster();
    c.psql(
        "postgres",
        r#"CREATE ROLE mon LOGIN PASSWORD 'mon-pw' IN ROLE pg_monitor;
           CREATE TABLE public."Ser" (id serial PRIMARY KEY);
           SELECT setval('public."Ser_id_seq"', 2000000000);
           CREATE TABLE public.dup (v int); INSERT INTO public.dup VALUES (1), (1);
           CREATE INDEX d1 ON public.dup (v); CREATE INDEX d2 ON public.dup (v);"#,
    )
    .unwrap();
    let _ = c.psql(
        "postgres",
        "CREATE UNIQUE INDEX CONCURRENTLY dup_uq ON public.dup (v);",
    );
    for check in DATABASE_CHECKS {
        let opts = Options {
            dsn: Some(c.dsn_for("mon", "mon-pw", "postgres")),
            dbname: None,
            only: Some(check.to_string()),
            thresholds: Thresholds::default(),
            host: Default::default(),
        };
        let report = pgw_doctor::run(&opts).await.expect("doctor runs as mon");
        if *check != "sequence_exhaustion" {
            assert!(report.skipped.is_empty(), "{check}: {:?}", report.skipped);
        }
        match *check {
            "invalid_index" => assert_eq!(found(&report, check, "dup_uq").len(), 1),
            "duplicate_index" => assert_eq!(found(&report, check, "d2").len(), 1),
            "sequence_exhaustion" => {
                // The sequence it cannot read is skipped by name, not reported.
                assert!(
                    found(&report, check, "Ser_id_seq").is_empty(),
                    "{:#?}",
                    report.findings
                );
                let objects: Vec<_> = report.skipped.iter().map(|s| s.object.clone()).collect();
                assert_eq!(objects, [Some("public.\"Ser_id_seq\"".to_string())]);
                // Once granted, the role sees the sequence.
                c.psql(
                    "postgres",
                    "GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO mon;",
                )
                .unwrap();
                let report = pgw_doctor::run(&opts).await.expect("doctor runs as mon");
                assert!(report.skipped.is_empty(), "{:?}", report.skipped);
                let f = found(&report, check, "Ser_id_seq");
                assert_eq!(f.len(), 1, "{:#?}", report.findings);
                assert_eq!(f[0].severity, Severity::Critical);
            }
            _ => {}
        }
    }
}

/// A freshly loaded, vacuumed and analyzed schema: nothing above info.
#[tokio::test]
async fn healthy_database_has_no_findings() {
    let c = cluster();
    c.psql(
        "postgres",
        r#"CREATE TABLE public.customers (id bigserial PRIMARY KEY, name text NOT NULL);
           CREATE TABLE public.orders (
               id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
               customer_id bigint NOT NULL REFERENCES public.customers,
               total numeric);
           CREATE INDEX orders_customer_id ON public.orders (customer_id);
           CREATE UNIQUE INDEX customers_name ON public.customers (name);
           INSERT INTO public.customers (name) SELECT 'c' || g FROM generate_series(1, 20000) g;
           INSERT INTO public.orders (customer_id, total)
                SELECT 1 + g % 20000, g FROM generate_series(1, 30000) g;
           CREATE SEQUENCE public.tickets AS integer;
           SELECT nextval('public.tickets') FROM generate_series(1, 100);"#,
    )
    .unwrap();
    c.psql("postgres", "VACUUM ANALYZE;").unwrap();
    for check in DATABASE_CHECKS {
        let report = doctor(&c, check, &[]).await;
        let bad: Vec<_> = report
            .findings
            .iter()
            .filter(|f| f.severity > Severity::Info)
            .collect();
        assert!(bad.is_empty(), "{check}: {bad:#?}");
    }
}
