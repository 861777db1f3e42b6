//! Bad input: a one-line reason, a non-zero exit, no panic.

use crate::{assert_fails, pgwarden, shared};

#[test]
fn nonsense_flags_are_usage_errors() {
    assert_fails(&pgwarden(&["tune", "--memory", "-3GB"]), 2, "memory");
    assert_fails(&pgwarden(&["tune", "--memory", "8"]), 2, "memory");
    assert_fails(&pgwarden(&["tune", "--memory", "lots"]), 2, "memory");
    assert_fails(&pgwarden(&["tune", "--cpus", "0"]), 2, "cpus");
    assert_fails(&pgwarden(&["tune", "--cpus", "-1"]), 2, "cpus");
    assert_fails(&pgwarden(&["tune", "--connections", "0"]), 2, "connections");
    assert_fails(&pgwarden(&["tune", "--workload", "gaming"]), 2, "workload");
    assert_fails(&pgwarden(&["tune", "--pg-version", "9"]), 2, "pg-version");
    assert_fails(&pgwarden(&["tune", "--set", "nonsense"]), 2, "NAME=VALUE");
    assert_fails(&pgwarden(&["tune", "--bogus"]), 2, "--bogus");
    assert_fails(
        &pgwarden(&[
            "tune",
            "--memory",
            "8GB",
            "--diff",
            "--format",
            "conf",
            "-d",
            "host=127.0.0.1 port=1",
        ]),
        2,
        "--diff",
    );
}

#[test]
fn malformed_dsns_are_usage_errors() {
    assert_fails(
        &pgwarden(&["tune", "--diff", "-d", "host=a port"]),
        2,
        "missing \"=\"",
    );
    assert_fails(
        &pgwarden(&["tune", "--diff", "-d", "hots=localhost"]),
        2,
        "invalid connection option",
    );
    assert_fails(
        &pgwarden(&["tune", "--diff", "-d", "port=notaport"]),
        2,
        "port",
    );
    assert_fails(
        &pgwarden(&[
            "tune",
            "--diff",
            "-d",
            "postgresql://u@h/db?sslmode=sometimes",
        ]),
        2,
        "sslmode",
    );
    // TLS options that cannot work are input errors too, found before connecting.
    assert_fails(
        &pgwarden(&[
            "tune",
            "--diff",
            "-d",
            "host=127.0.0.1 port=1 sslmode=verify-full sslrootcert=/nonexistent/ca.pem",
        ]),
        2,
        "root certificate",
    );
}

#[test]
fn unreachable_server_fails_in_one_line() {
    // A port nothing listens on: bind one and close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dsn = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=3");
    let o = pgwarden(&["tune", "--diff", "-d", &dsn]);
    assert_fails(&o, 1, "connect to postgres@127.0.0.1");
}

#[test]
fn wrong_password_fails_in_one_line() {
    let c = shared();
    let dsn = c.dsn_for("postgres", "not-the-password", "postgres");
    let o = pgwarden(&["tune", "--diff", "-d", &dsn]);
    assert_fails(&o, 1, "password authentication failed");
}

#[test]
fn missing_database_fails_in_one_line() {
    let c = shared();
    let o = pgwarden(&[
        "tune",
        "--diff",
        "-d",
        &format!("{} dbname=no_such_db", c.dsn()),
    ]);
    assert_fails(&o, 1, "no_such_db");
}

#[test]
fn inputs_outside_pgtunes_range_are_input_errors() {
    assert_fails(&pgwarden(&["tune", "--memory", "100MB"]), 2, "memory");
    assert_fails(
        &pgwarden(&["tune", "--memory", "8GB", "--connections", "300000"]),
        2,
        "connections",
    );
}

/// Every flag is checked before anything connects: bad input against a dead host is bad
/// input (2), not a connection failure (1).
#[test]
fn flags_are_validated_before_connecting() {
    let dead = "host=127.0.0.1 port=1 connect_timeout=2";
    let create = |extra: &[&str]| {
        let mut a = vec![
            "partition",
            "create",
            "-d",
            dead,
            "--table",
            "t",
            "--column",
            "at",
        ];
        a.extend_from_slice(extra);
        pgwarden(&a)
    };
    assert_fails(
        &create(&["--range", "fortnightly"]),
        2,
        "'fortnightly' is not an interval",
    );
    assert_fails(
        &create(&["--range", "5 months"]),
        2,
        "does not divide a year",
    );
    assert_fails(
        &create(&["--range", "monthly", "--retention", "forever"]),
        2,
        "'forever'",
    );
    assert_fails(
        &create(&["--range", "monthly", "--start", "yesterday"]),
        2,
        "--start 'yesterday'",
    );
    assert_fails(
        &create(&["--range", "monthly", "--name-pattern", "{parent}_x"]),
        2,
        "{suffix}",
    );
    assert_fails(
        &create(&["--list", "a=1", "--list", "b=1"]),
        2,
        "cannot overlap",
    );
    assert_fails(
        &create(&["--range", "monthly", "--grant", "SELEKT TO x"]),
        2,
        "SELEKT",
    );
    assert_fails(
        &pgwarden(&[
            "partition",
            "adopt",
            "-d",
            dead,
            "--table",
            "t",
            "--range",
            "fortnightly",
        ]),
        2,
        "'fortnightly'",
    );
    assert_fails(
        &pgwarden(&["partition", "maintain", "-d", dead, "--table", "a.b.c"]),
        2,
        "a.b.c",
    );
    assert_fails(
        &create(&["--hash", "4", "--retention", "3 days"]),
        2,
        "--retention is for range sets only",
    );
    assert_fails(
        &create(&["--range", "monthly", "--retention", "10"]),
        2,
        "'10' is a number",
    );
    assert_fails(
        &create(&["--range", "10", "--start", "2024-01-01"]),
        2,
        "is not a number",
    );
    assert_fails(
        &create(&["--list", "a=US", "--list", "a=CA"]),
        2,
        "given twice",
    );
    assert_fails(
        &pgwarden(&[
            "partition",
            "create",
            "-d",
            dead,
            "--table",
            "t",
            "--column",
            "",
            "--range",
            "monthly",
        ]),
        2,
        "not a column name",
    );
    assert_fails(
        &pgwarden(&["partition", "abort", "-d", dead, "--table", "t"]),
        2,
        "--yes",
    );
    // The same command with good flags reaches the server and fails there: 1.
    assert_fails(&create(&["--range", "monthly"]), 1, "connect to");
}

/// doctor speaks Nagios whatever the cause and wherever the flags sit: UNKNOWN (3).
#[test]
fn doctor_failures_are_nagios_unknown() {
    assert_fails(&pgwarden(&["doctor", "--bogus"]), 3, "--bogus");
    assert_fails(
        &pgwarden(&["--log", "debug", "doctor", "--bogus"]),
        3,
        "--bogus",
    );
    assert_fails(
        &pgwarden(&["doctor", "--log", "info", "--bogus"]),
        3,
        "--bogus",
    );
    assert_fails(&pgwarden(&["--bogus", "doctor"]), 3, "--bogus");
    assert_fails(&pgwarden(&["doctor", "--format", "xml"]), 3, "xml");
    assert_fails(&pgwarden(&["doctor", "--threshold", "nope=1"]), 3, "nope");
    assert_fails(
        &pgwarden(&["doctor", "--check", "nope", "-d", "host=127.0.0.1 port=1"]),
        3,
        "unknown check",
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("doctor.toml");
    std::fs::write(&bad, "[thresholds]\nno_such = 1\n").unwrap();
    assert_fails(
        &pgwarden(&["doctor", "--config", bad.to_str().unwrap()]),
        3,
        "no_such",
    );
    assert_fails(
        &pgwarden(&["doctor", "-d", "host=127.0.0.1 port=1 connect_timeout=2"]),
        3,
        "connect to",
    );
    // Outside doctor the same bad flag is pgwarden's usage error (2).
    assert_fails(
        &pgwarden(&["--log", "debug", "tune", "--bogus"]),
        2,
        "--bogus",
    );
}
