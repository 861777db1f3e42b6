//! Unit tests of `ddl.rs` (actions as the exact SQL that runs) and of `session::parse_table`
//! (table names as the user types them).

use super::{config, i, t};
use pgw_common::sql::shown_qualified;

use crate::ddl::{check_template, Sql, Target, TemplateError};
use crate::interval::{Interval, Value};
use crate::model::{KeyKind, RetentionMode, SetConfig, Template};
use crate::plan::Action;
use crate::session::parse_table;
use crate::PartitionError;

const NO_GRANTS: &[(String, String)] = &[];

fn columns() -> Vec<String> {
    ["id", "created_at", "Payload"]
        .iter()
        .map(|c| c.to_string())
        .collect()
}

/// The SQL of `action` for `cfg` with key `kind`, owner `app`, no parent grants.
fn sql(cfg: &SetConfig, kind: KeyKind, action: &Action) -> Sql {
    let cols = columns();
    let target = Target {
        cfg,
        kind,
        owner: "app",
        grants: NO_GRANTS,
        columns: &cols,
    };
    target.sql(action).expect("sql")
}

fn check(cfg: &SetConfig, kind: KeyKind, action: Action, want: &[&str], transactional: bool) {
    let got = sql(cfg, kind, &action);
    assert_eq!(got.statements, want, "{action:?}");
    assert_eq!(got.transactional, transactional, "{action:?}");
}

fn create(name: &str, lower: Value, upper: Value) -> Action {
    Action::Create {
        name: name.to_string(),
        lower,
        upper,
    }
}

#[test]
fn create_bounds_by_key_type() {
    let monthly = config(Interval::Months(1));
    let jan = create("events_p2024_01", t("2024-01-01"), t("2024-02-01"));
    let owner = "ALTER TABLE \"public\".\"events_p2024_01\" OWNER TO \"app\"";
    check(
        &monthly,
        KeyKind::Timestamptz,
        jan.clone(),
        &[
            "CREATE TABLE \"public\".\"events_p2024_01\" PARTITION OF \"public\".\"events\" FOR VALUES FROM \
             (timezone('UTC', '2024-01-01'::timestamp)) TO (timezone('UTC', '2024-02-01'::timestamp))",
            owner,
        ],
        true,
    );
    check(
        &monthly,
        KeyKind::Timestamp,
        jan.clone(),
        &[
            "CREATE TABLE \"public\".\"events_p2024_01\" PARTITION OF \"public\".\"events\" FOR VALUES FROM \
             ('2024-01-01'::timestamp) TO ('2024-02-01'::timestamp)",
            owner,
        ],
        true,
    );
    check(
        &monthly,
        KeyKind::Date,
        jan,
        &[
            "CREATE TABLE \"public\".\"events_p2024_01\" PARTITION OF \"public\".\"events\" FOR VALUES FROM \
             ('2024-01-01'::date) TO ('2024-02-01'::date)",
            owner,
        ],
        true,
    );
    // The set's zone, and sub-day bounds.
    let mut berlin = config(Interval::Minutes(60));
    berlin.time_zone = "Europe/Berlin".to_string();
    check(
        &berlin,
        KeyKind::Timestamptz,
        create(
            "events_p2024_01_01_1300",
            t("2024-01-01 13:00"),
            t("2024-01-01 14:00"),
        ),
        &[
            "CREATE TABLE \"public\".\"events_p2024_01_01_1300\" PARTITION OF \"public\".\"events\" FOR VALUES \
             FROM (timezone('Europe/Berlin', '2024-01-01 13:00:00'::timestamp)) TO \
             (timezone('Europe/Berlin', '2024-01-01 14:00:00'::timestamp))",
            "ALTER TABLE \"public\".\"events_p2024_01_01_1300\" OWNER TO \"app\"",
        ],
        true,
    );
    // Integers, negative ones included.
    check(
        &config(Interval::Integer(10)),
        KeyKind::Integer,
        create("events_pm10", i(-10), i(0)),
        &[
            "CREATE TABLE \"public\".\"events_pm10\" PARTITION OF \"public\".\"events\" FOR VALUES FROM ('-10') TO ('0')",
            "ALTER TABLE \"public\".\"events_pm10\" OWNER TO \"app\"",
        ],
        true,
    );
}

#[test]
fn rescue_moves_rows_and_attaches() {
    check(
        &config(Interval::Months(1)),
        KeyKind::Timestamptz,
        Action::Rescue {
            name: "events_p2024_01".to_string(),
            lower: t("2024-01-01"),
            upper: t("2024-02-01"),
            rows: 12,
        },
        &[
            "CREATE TABLE \"public\".\"events_p2024_01\" (LIKE \"public\".\"events\" INCLUDING DEFAULTS \
             INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING GENERATED)",
            "WITH moved AS (DELETE FROM \"public\".\"events_default\" WHERE \"created_at\" >= \
             timezone('UTC', '2024-01-01'::timestamp) AND \"created_at\" < timezone('UTC', \
             '2024-02-01'::timestamp) RETURNING \"id\", \"created_at\", \"Payload\") INSERT INTO \
             \"public\".\"events_p2024_01\" (\"id\", \"created_at\", \"Payload\") SELECT \"id\", \"created_at\", \
             \"Payload\" FROM moved",
            "ALTER TABLE \"public\".\"events\" ATTACH PARTITION \"public\".\"events_p2024_01\" FOR VALUES FROM \
             (timezone('UTC', '2024-01-01'::timestamp)) TO (timezone('UTC', '2024-02-01'::timestamp))",
            "ALTER TABLE \"public\".\"events_p2024_01\" OWNER TO \"app\"",
        ],
        true,
    );
    // A key column that needs quotes.
    let mut cfg = config(Interval::Integer(100));
    cfg.column = "Order Id".to_string();
    check(
        &cfg,
        KeyKind::Integer,
        Action::Rescue {
            name: "events_p100".to_string(),
            lower: i(100),
            upper: i(200),
            rows: 1,
        },
        &[
            "CREATE TABLE \"public\".\"events_p100\" (LIKE \"public\".\"events\" INCLUDING DEFAULTS \
             INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING GENERATED)",
            "WITH moved AS (DELETE FROM \"public\".\"events_default\" WHERE \"Order Id\" >= '100' AND \
             \"Order Id\" < '200' RETURNING \"id\", \"created_at\", \"Payload\") INSERT INTO \
             \"public\".\"events_p100\" (\"id\", \"created_at\", \"Payload\") SELECT \"id\", \"created_at\", \
             \"Payload\" FROM moved",
            "ALTER TABLE \"public\".\"events\" ATTACH PARTITION \"public\".\"events_p100\" FOR VALUES FROM \
             ('100') TO ('200')",
            "ALTER TABLE \"public\".\"events_p100\" OWNER TO \"app\"",
        ],
        true,
    );
}

#[test]
fn default_list_and_hash() {
    let cfg = config(Interval::Months(1));
    check(
        &cfg,
        KeyKind::Timestamptz,
        Action::CreateDefault {
            name: "events_default".to_string(),
        },
        &[
            "CREATE TABLE \"public\".\"events_default\" PARTITION OF \"public\".\"events\" DEFAULT",
            "ALTER TABLE \"public\".\"events_default\" OWNER TO \"app\"",
        ],
        true,
    );
    check(
        &cfg,
        KeyKind::Other,
        Action::CreateList {
            name: "events_us".to_string(),
            values: vec!["US".to_string(), "it's".to_string(), "a\\b".to_string()],
        },
        &[
            "CREATE TABLE \"public\".\"events_us\" PARTITION OF \"public\".\"events\" FOR VALUES IN \
             ('US', 'it''s', E'a\\\\b')",
            "ALTER TABLE \"public\".\"events_us\" OWNER TO \"app\"",
        ],
        true,
    );
    check(
        &cfg,
        KeyKind::Other,
        Action::CreateHash {
            name: "events_h3".to_string(),
            modulus: 8,
            remainder: 3,
        },
        &[
            "CREATE TABLE \"public\".\"events_h3\" PARTITION OF \"public\".\"events\" FOR VALUES WITH \
             (MODULUS 8, REMAINDER 3)",
            "ALTER TABLE \"public\".\"events_h3\" OWNER TO \"app\"",
        ],
        true,
    );
}

#[test]
fn retire_and_finish() {
    let cfg = config(Interval::Months(1));
    let retire = |mode, concurrently| Action::Retire {
        schema: "archive".to_string(),
        name: "events_p2024_01".to_string(),
        mode,
        concurrently,
    };
    let cases = [
        (
            retire(RetentionMode::Drop, false),
            "DROP TABLE \"archive\".\"events_p2024_01\"",
            true,
        ),
        (
            retire(RetentionMode::Detach, false),
            "ALTER TABLE \"public\".\"events\" DETACH PARTITION \"archive\".\"events_p2024_01\"",
            true,
        ),
        (
            retire(RetentionMode::Detach, true),
            "ALTER TABLE \"public\".\"events\" DETACH PARTITION \"archive\".\"events_p2024_01\" CONCURRENTLY",
            false,
        ),
        (
            Action::FinishDetach {
                schema: "public".to_string(),
                name: "events_p2024_01".to_string(),
            },
            "ALTER TABLE \"public\".\"events\" DETACH PARTITION \"public\".\"events_p2024_01\" FINALIZE",
            false,
        ),
    ];
    for (action, want, transactional) in cases {
        check(&cfg, KeyKind::Timestamptz, action, &[want], transactional);
    }
}

#[test]
fn names_are_quoted_where_needed() {
    let mut cfg = config(Interval::Months(1));
    cfg.schema = "My Schema".to_string();
    cfg.table = "Events".to_string();
    let name = cfg.partition_name("2024_01");
    check(
        &cfg,
        KeyKind::Date,
        create(&name, t("2024-01-01"), t("2024-02-01")),
        &[
            "CREATE TABLE \"My Schema\".\"Events_p2024_01\" PARTITION OF \"My Schema\".\"Events\" \
             FOR VALUES FROM ('2024-01-01'::date) TO ('2024-02-01'::date)",
            "ALTER TABLE \"My Schema\".\"Events_p2024_01\" OWNER TO \"app\"",
        ],
        true,
    );
    let cases = [
        ("public", "events", "public.events"),
        ("public", "events_p2024_01", "public.events_p2024_01"),
        ("_s1", "t_2", "_s1.t_2"),
        ("public", "Events", "public.\"Events\""),
        ("public", "2024", "public.\"2024\""),
        ("public", "a\"b", "public.\"a\"\"b\""),
        ("my schema", "t", "\"my schema\".t"),
        ("public", "événements", "public.\"événements\""),
    ];
    for (schema, table, want) in cases {
        assert_eq!(shown_qualified(schema, table), want, "{schema}.{table}");
    }
}

#[test]
fn owner_grants_and_template() {
    let mut cfg = config(Interval::Months(1));
    cfg.template = Template {
        owner: Some("Mixed Role".to_string()),
        grants: vec![
            "select, insert to reporting".to_string(),
            "ALL TO public".to_string(),
            "ALL PRIVILEGES TO \"quoted\"".to_string(),
        ],
        reloptions: vec![
            "autovacuum_vacuum_scale_factor=0.01".to_string(),
            " fillfactor = 90 ".to_string(),
            "toast.autovacuum_enabled=off".to_string(),
        ],
        tablespace: Some("fast_ssd".to_string()),
    };
    assert_eq!(check_template(&cfg.template), Ok(()));
    let parent_grants = vec![
        ("SELECT".to_string(), "analyst".to_string()),
        ("UPDATE".to_string(), "PUBLIC".to_string()),
        ("DELETE".to_string(), "Ops Team".to_string()),
        // Not on the list of privileges this copies: left out.
        ("MAINTAIN".to_string(), "analyst".to_string()),
    ];
    let cols = columns();
    let target = Target {
        cfg: &cfg,
        kind: KeyKind::Date,
        owner: "app",
        grants: &parent_grants,
        columns: &cols,
    };
    let got = target
        .sql(&create("events_p2024_01", t("2024-01-01"), t("2024-02-01")))
        .expect("sql");
    let child = "\"public\".\"events_p2024_01\"";
    assert_eq!(
        got.statements,
        [
            format!(
                "CREATE TABLE {child} PARTITION OF \"public\".\"events\" FOR VALUES FROM \
                 ('2024-01-01'::date) TO ('2024-02-01'::date) WITH \
                 (autovacuum_vacuum_scale_factor = '0.01', fillfactor = '90', \
                 toast.autovacuum_enabled = 'off') TABLESPACE \"fast_ssd\""
            ),
            format!("ALTER TABLE {child} OWNER TO \"Mixed Role\""),
            format!("GRANT SELECT ON {child} TO \"analyst\""),
            format!("GRANT UPDATE ON {child} TO PUBLIC"),
            format!("GRANT DELETE ON {child} TO \"Ops Team\""),
            format!("GRANT SELECT, INSERT ON {child} TO \"reporting\""),
            format!("GRANT ALL ON {child} TO PUBLIC"),
            format!("GRANT ALL PRIVILEGES ON {child} TO \"\"\"quoted\"\"\""),
        ]
    );

    // The default partition and rescued tables get the storage options too.
    let got = target
        .sql(&Action::CreateDefault {
            name: "events_default".to_string(),
        })
        .expect("sql");
    assert_eq!(
        got.statements[0],
        "CREATE TABLE \"public\".\"events_default\" PARTITION OF \"public\".\"events\" DEFAULT WITH \
         (autovacuum_vacuum_scale_factor = '0.01', fillfactor = '90', \
         toast.autovacuum_enabled = 'off') TABLESPACE \"fast_ssd\""
    );
    let got = target
        .sql(&Action::Rescue {
            name: "events_p2024_01".to_string(),
            lower: t("2024-01-01"),
            upper: t("2024-02-01"),
            rows: 1,
        })
        .expect("sql");
    assert!(
        got.statements[0].ends_with(
            "INCLUDING GENERATED) WITH (autovacuum_vacuum_scale_factor = '0.01', \
             fillfactor = '90', toast.autovacuum_enabled = 'off') TABLESPACE \"fast_ssd\""
        ),
        "{}",
        got.statements[0]
    );
    // Retiring does not touch privileges.
    let got = target
        .sql(&Action::Retire {
            schema: "public".to_string(),
            name: "events_p2024_01".to_string(),
            mode: RetentionMode::Drop,
            concurrently: false,
        })
        .expect("sql");
    assert_eq!(
        got.statements,
        ["DROP TABLE \"public\".\"events_p2024_01\""]
    );
}

#[test]
fn tablespace_and_owner_quoting() {
    let mut cfg = config(Interval::Months(1));
    cfg.template.tablespace = Some("Fast SSD".to_string());
    cfg.template.owner = Some("owner_1".to_string());
    check(
        &cfg,
        KeyKind::Date,
        Action::CreateDefault {
            name: "events_default".to_string(),
        },
        &[
            "CREATE TABLE \"public\".\"events_default\" PARTITION OF \"public\".\"events\" DEFAULT TABLESPACE \"Fast SSD\"",
            "ALTER TABLE \"public\".\"events_default\" OWNER TO \"owner_1\"",
        ],
        true,
    );
}

#[test]
fn template_refusals() {
    fn check(grants: &[&str], reloptions: &[&str], want: TemplateError) {
        let template = Template {
            grants: grants.iter().map(|s| s.to_string()).collect(),
            reloptions: reloptions.iter().map(|s| s.to_string()).collect(),
            ..Template::default()
        };
        assert_eq!(
            check_template(&template),
            Err(want.clone()),
            "{grants:?} {reloptions:?}"
        );
        // And rendering refuses the same way.
        let cfg = SetConfig {
            template,
            ..config(Interval::Months(1))
        };
        let cols = columns();
        let target = Target {
            cfg: &cfg,
            kind: KeyKind::Date,
            owner: "app",
            grants: NO_GRANTS,
            columns: &cols,
        };
        let action = create("events_p2024_01", t("2024-01-01"), t("2024-02-01"));
        assert_eq!(target.sql(&action), Err(want), "{grants:?} {reloptions:?}");
    }
    let grant = |s: &str| TemplateError::Grant(s.to_string());
    let reloption = |s: &str| TemplateError::Reloption(s.to_string());
    let cases: [(&[&str], &[&str], TemplateError); 13] = [
        (&["SELEKT TO x"], &[], grant("SELEKT TO x")),
        (&["SELECT x"], &[], grant("SELECT x")),
        (&["SELECT TO"], &[], grant("SELECT TO")),
        (&["SELECT TO  "], &[], grant("SELECT TO  ")),
        (&[" TO x"], &[], grant(" TO x")),
        (&["SELECT, TO x"], &[], grant("SELECT, TO x")),
        (
            &["SELECT; DROP TABLE t TO x"],
            &[],
            grant("SELECT; DROP TABLE t TO x"),
        ),
        (&["SELECT TO ok", "USAGE TO x"], &[], grant("USAGE TO x")),
        (&[], &["fillfactor"], reloption("fillfactor")),
        (&[], &["a;b=1"], reloption("a;b=1")),
        (&[], &["=1"], reloption("=1")),
        (&[], &["FillFactor=90"], reloption("FillFactor=90")),
        (&[], &["fillfactor=90", "x y=1"], reloption("x y=1")),
    ];
    for (grants, reloptions, want) in cases {
        check(grants, reloptions, want);
    }
}

#[test]
fn template_accepts() {
    let cases: [(&[&str], &[&str]); 4] = [
        (&[], &[]),
        (
            &[
                "SELECT TO reporting",
                "select,update to x",
                "TRIGGER TO \"Mixed Role\"",
            ],
            &[],
        ),
        (
            &["REFERENCES, TRUNCATE, DELETE TO PUBLIC"],
            &["fillfactor=70"],
        ),
        (
            &[],
            &[
                "autovacuum_enabled=false",
                "toast.autovacuum_enabled = true",
                "a=b=c",
            ],
        ),
    ];
    for (grants, reloptions) in cases {
        let template = Template {
            grants: grants.iter().map(|s| s.to_string()).collect(),
            reloptions: reloptions.iter().map(|s| s.to_string()).collect(),
            ..Template::default()
        };
        assert_eq!(
            check_template(&template),
            Ok(()),
            "{grants:?} {reloptions:?}"
        );
    }
}

// ---------------------------------------------------------------- session::parse_table

#[test]
fn parse_table_accepts() {
    let cases = [
        ("events", ("public", "events")),
        ("Events", ("public", "events")),
        ("Public.Events", ("public", "events")),
        ("app.events", ("app", "events")),
        ("  app.events  ", ("app", "events")),
        ("\"My Schema\".\"My Table\"", ("My Schema", "My Table")),
        ("\"My Table\"", ("public", "My Table")),
        ("app.\"Events\"", ("app", "Events")),
        ("\"a\"\"b\"", ("public", "a\"b")),
        ("\"a.b\"", ("public", "a.b")),
        ("événements", ("public", "événements")),
    ];
    for (text, (schema, table)) in cases {
        match parse_table(text) {
            Ok(got) => assert_eq!(got, (schema.to_string(), table.to_string()), "{text:?}"),
            Err(e) => panic!("{text:?}: {e}"),
        }
    }
}

#[test]
fn parse_table_refusals() {
    let cases = [
        "bad name",
        "",
        "   ",
        "a.b.c",
        ".x",
        "x.",
        ".",
        "\"\"",
        "\"unterminated",
        "\"a\"b",
        "a\tb",
    ];
    for text in cases {
        match parse_table(text) {
            Err(PartitionError::TableName(t)) => assert_eq!(t, text),
            other => panic!("{text:?}: {other:?}"),
        }
    }
}
