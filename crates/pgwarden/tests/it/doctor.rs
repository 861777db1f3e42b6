//! `pgwarden doctor`: formats, Nagios exit codes, pg_monitor, and failures to run.

use pgw_cluster::Cluster;

use crate::{assert_fails, json, pgwarden, stderr, stdout};

#[test]
fn list_shows_every_check_with_thresholds() {
    let o = pgwarden(&["doctor", "--list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for id in [
        "invalid_index",
        "dead_tuples",
        "idle_in_transaction",
        "config_audit",
    ] {
        assert!(text.contains(id), "{id} missing from --list: {text}");
    }
    assert!(
        text.contains("idle_in_transaction_warning_secs=60"),
        "{text}"
    );
    let o = pgwarden(&[
        "doctor",
        "--list",
        "--threshold",
        "idle_in_transaction_warning_secs=5",
    ]);
    assert!(stdout(&o).contains("idle_in_transaction_warning_secs=5"));
    // A config file sets thresholds; a flag overrides it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doctor.toml");
    std::fs::write(
        &file,
        "[thresholds]\nidle_in_transaction_warning_secs = 7\nlong_transaction_warning_secs = 99\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let o = pgwarden(&[
        "doctor",
        "--list",
        "--config",
        f,
        "--threshold",
        "long_transaction_warning_secs=11",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("idle_in_transaction_warning_secs=7"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("long_transaction_warning_secs=11"),
        "{}",
        stdout(&o)
    );
    std::fs::write(&file, "[thresholds]\nidle_in_transaction_warning = 7\n").unwrap();
    assert_fails(
        &pgwarden(&["doctor", "--list", "--config", f]),
        3,
        "idle_in_transaction_warning",
    );
    assert_fails(
        &pgwarden(&["doctor", "--list", "--config", "/nonexistent/doctor.toml"]),
        3,
        "read /nonexistent/doctor.toml",
    );
}

#[test]
fn failures_to_run_are_unknown() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dsn = format!("host=127.0.0.1 port={port} user=postgres connect_timeout=3");
    assert_fails(&pgwarden(&["doctor", "-d", &dsn]), 3, "connect to");
    assert_fails(&pgwarden(&["doctor", "--bogus"]), 3, "--bogus");
    assert_fails(
        &pgwarden(&["doctor", "--threshold", "nope=1"]),
        3,
        "unknown threshold",
    );
    assert_fails(
        &pgwarden(&["doctor", "-d", &dsn, "--check", "no_such_check"]),
        3,
        "unknown check",
    );
}

#[test]
fn a_healthy_database_exits_zero_and_pg_monitor_names_what_it_cannot_see() {
    let c = Cluster::start().expect("start a cluster");
    c.psql(
        "postgres",
        "CREATE TABLE customers (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL);
         CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                              customer_id bigint NOT NULL REFERENCES customers, total numeric NOT NULL);
         CREATE INDEX orders_customer_id_idx ON orders (customer_id);
         INSERT INTO customers (name) SELECT 'c' || g FROM generate_series(1, 20000) g;
         INSERT INTO orders (customer_id, total) SELECT 1 + g % 20000, g FROM generate_series(1, 50000) g;
         VACUUM ANALYZE;
         CREATE ROLE watcher LOGIN PASSWORD 'watchpw' IN ROLE pg_monitor;",
    )
    .unwrap();
    let o = pgwarden(&["doctor", "-d", &c.dsn(), "--format", "json"]);
    let doc = json(&o);
    assert_eq!(o.status.code(), Some(0), "{doc}");
    let above_info: Vec<&serde_json::Value> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] != "info")
        .collect();
    assert!(above_info.is_empty(), "{above_info:?}");
    assert!(doc["skipped"].as_array().unwrap().is_empty(), "{doc}");

    let o = pgwarden(&[
        "doctor",
        "-d",
        &c.dsn_for("watcher", "watchpw", "postgres"),
        "--format",
        "json",
    ]);
    let doc = json(&o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "pg_monitor runs every check: {doc}"
    );
    // pg_monitor cannot read the sequences' positions: each one is named, with the
    // grant that fixes it. (The tables are too small for table_bloat to judge, so
    // their column statistics, which pg_monitor cannot read either, are not needed.)
    let mut unseen: Vec<(String, String)> = doc["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            assert!(k["reason"].as_str().unwrap().len() > 10, "{k}");
            (
                k["check"].as_str().unwrap().to_string(),
                k["object"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    unseen.sort();
    let want: Vec<(String, String)> = [
        ("sequence_exhaustion", "public.customers_id_seq"),
        ("sequence_exhaustion", "public.orders_id_seq"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(unseen, want, "{doc}");
    // The remedy the reasons give: SELECT on the sequences.
    c.psql(
        "postgres",
        "GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO watcher;",
    )
    .unwrap();
    let o = pgwarden(&[
        "doctor",
        "-d",
        &c.dsn_for("watcher", "watchpw", "postgres"),
        "--format",
        "json",
    ]);
    let doc = json(&o);
    assert_eq!(o.status.code(), Some(0), "{doc}");
    assert!(doc["skipped"].as_array().unwrap().is_empty(), "{doc}");

    // The host of a remote server described by flags: config_audit advises for it.
    let o = pgwarden(&[
        "doctor",
        "-d",
        &c.dsn(),
        "--check",
        "config_audit",
        "--memory",
        "64GB",
        "--cpus",
        "16",
        "--format",
        "json",
    ]);
    let doc = json(&o);
    assert_eq!(o.status.code(), Some(0), "{doc}");
    assert!(
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["detail"]
                .as_str()
                .unwrap()
                .contains("for 64GB RAM, 16 CPUs")),
        "{doc}"
    );
    assert_fails(
        &pgwarden(&["doctor", "-d", &c.dsn(), "--memory", "lots"]),
        3,
        "--memory",
    );
}

#[test]
fn severities_map_to_nagios_exit_codes_and_lines() {
    let c = Cluster::builder()
        .setting("fsync", "off")
        .start()
        .expect("start a cluster");
    // fsync off is critical: exit 2, and the Nagios line says so.
    let o = pgwarden(&["doctor", "-d", &c.dsn(), "--format", "nagios"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(
        text.lines()
            .any(|l| l.starts_with("PGWARDEN_CONFIG_AUDIT CRITICAL:")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("PGWARDEN_INVALID_INDEX OK:")),
        "{text}"
    );
    // An invalid index alone is a warning: exit 1.
    c.psql(
        "postgres",
        "ALTER SYSTEM SET fsync = on; SELECT pg_reload_conf();",
    )
    .unwrap();
    c.psql(
        "postgres",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (1);",
    )
    .unwrap();
    let _ = c.psql("postgres", "CREATE UNIQUE INDEX CONCURRENTLY t_x ON t (x);");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let o = pgwarden(&["doctor", "-d", &c.dsn(), "--check", "invalid_index"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("t_x"), "{}", stdout(&o));
    let o = pgwarden(&[
        "doctor",
        "-d",
        &c.dsn(),
        "--check",
        "invalid_index",
        "--format",
        "json",
    ]);
    let doc = json(&o);
    let f = &doc["findings"][0];
    for key in [
        "check",
        "severity",
        "database",
        "object",
        "detail",
        "remediation",
    ] {
        assert!(f.get(key).is_some(), "finding lacks {key}: {f}");
    }
}
