//! `--log`: each command logs in its spans (command, check, set, conversion, apply) with
//! the SQL it runs at debug; the default level prints nothing on success.

use crate::{pgwarden, shared, stderr};

#[test]
fn debug_shows_what_each_command_did() {
    let c = shared();
    c.psql("postgres", "CREATE DATABASE log_cli").unwrap();
    c.psql(
        "log_cli",
        "CREATE TABLE t (at timestamptz NOT NULL) PARTITION BY RANGE (at);",
    )
    .unwrap();
    let dsn = c.dsn_for(c.superuser(), c.password(), "log_cli");

    let o = pgwarden(&["doctor", "-d", &dsn, "--check", "dead_tuples"]);
    assert!(o.status.code() == Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "the default level is quiet");

    let o = pgwarden(&[
        "--log",
        "debug",
        "doctor",
        "-d",
        &dsn,
        "--check",
        "dead_tuples",
    ]);
    let err = stderr(&o);
    for want in [
        "command{name=\"doctor\"}",
        "check{id=\"dead_tuples\"",
        "database=log_cli",
        "sql=SELECT",
        "connected",
        "checked",
    ] {
        assert!(err.contains(want), "{want:?} missing in:\n{err}");
    }
    // Dependencies stay at warn: no driver frames.
    assert!(!err.contains("executing statement"), "{err}");
    // The password never reaches the log.
    assert!(!err.contains(c.password()), "{err}");

    let o = pgwarden(&[
        "--log",
        "debug",
        "partition",
        "create",
        "-d",
        &dsn,
        "--table",
        "t",
        "--column",
        "at",
        "--range",
        "monthly",
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    for want in [
        "command{name=\"partition\"}",
        "create{table=t column=at}",
        "sql=CREATE TABLE \"public\".\"t_p",
        "set created",
    ] {
        assert!(err.contains(want), "{want:?} missing in:\n{err}");
    }

    // tune apply changes the server: a cluster of its own.
    let own = pgw_cluster::Cluster::start().expect("start a throwaway cluster");
    let own_dsn = own.dsn();
    let o = pgwarden(&[
        "--log",
        "debug",
        "tune",
        "apply",
        "-d",
        &own_dsn,
        "--yes",
        "--set",
        "work_mem=7MB",
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    for want in [
        "command{name=\"tune\"}",
        "apply{changes=",
        "alter system",
        "ALTER SYSTEM SET work_mem = '7MB'",
        "written; reloading",
    ] {
        assert!(err.contains(want), "{want:?} missing in:\n{err}");
    }
}
