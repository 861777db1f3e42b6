//! `pgwarden partition`: create, maintain and list through the binary; JSON; dry runs; the
//! documented exit codes (2 bad input, 3 steps skipped) and one-line errors.

use crate::{assert_fails, json, pgwarden, shared, stderr, stdout};

/// A database of its own on the shared cluster, with `setup` run in it.
fn database(name: &str, setup: &str) -> String {
    let c = shared();
    c.psql("postgres", &format!("CREATE DATABASE {name}"))
        .unwrap();
    c.psql(name, setup).unwrap();
    c.dsn_for(c.superuser(), c.password(), name)
}

#[test]
fn create_maintain_list_and_exit_codes() {
    let dsn = database(
        "part_cli",
        "CREATE TABLE events (id bigint, created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at);",
    );
    let create = [
        "partition",
        "create",
        "-d",
        &dsn,
        "--table",
        "public.events",
        "--column",
        "created_at",
        "--range",
        "1 month",
        "--premake",
        "2",
        "--retention",
        "1 month",
        "--retention-mode",
        "drop",
    ];
    // Dry run: the SQL, nothing made.
    let mut dry = create.to_vec();
    dry.push("--dry-run");
    let o = pgwarden(&dry);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("CREATE TABLE \"public\".\"events_p"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        shared()
            .psql("part_cli", "SELECT count(*) FROM pg_inherits")
            .unwrap(),
        "0"
    );

    let mut js = create.to_vec();
    js.extend(["--format", "json"]);
    let o = pgwarden(&js);
    let doc = json(&o);
    assert!(o.status.success(), "{doc}");
    assert_eq!(doc["applied"], true);
    assert_eq!(doc["actions"].as_array().unwrap().len(), 6, "{doc}");
    assert_eq!(doc["set"]["interval"], "1 month");

    // Asking for more ahead; the drop is not confirmed (stdin is not a terminal): exit 3.
    shared()
        .psql("part_cli", "UPDATE pgwarden.partition_set SET premake = 3")
        .unwrap();
    let o = pgwarden(&["partition", "maintain", "-d", &dsn]);
    assert_eq!(o.status.code(), Some(3), "{}\n{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("needs confirmation (--yes)"),
        "{}",
        stdout(&o)
    );
    let o = pgwarden(&[
        "partition",
        "maintain",
        "-d",
        &dsn,
        "--yes",
        "--format",
        "json",
    ]);
    let doc = json(&o);
    assert_eq!(o.status.code(), Some(0), "{doc}");
    assert_eq!(doc["sets"][0]["steps"][0]["status"], "done", "{doc}");
    let o = pgwarden(&["partition", "maintain", "-d", &dsn, "--yes"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("nothing to do"), "{}", stdout(&o));

    let o = pgwarden(&["partition", "list", "-d", &dsn, "--format", "json"]);
    let doc = json(&o);
    assert_eq!(doc[0]["table"], "public.events");
    assert_eq!(doc[0]["partitions"].as_array().unwrap().len(), 6, "{doc}");
    assert_eq!(doc[0]["default_rows"], 0);
    let o = pgwarden(&["partition", "list", "-d", &dsn]);
    assert!(
        stdout(&o).contains("default partition: 0 rows"),
        "{}",
        stdout(&o)
    );

    // A managed table dropped behind pgwarden's back: maintain says so and exits 1.
    shared().psql("part_cli", "DROP TABLE events").unwrap();
    let o = pgwarden(&["partition", "maintain", "-d", &dsn, "--yes"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("public.events does not exist"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("panicked"));
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let dsn = database(
        "part_bad",
        "CREATE TABLE t (id bigint, label text, at timestamptz) PARTITION BY RANGE (at);",
    );
    let base = ["partition", "create", "-d", dsn.as_str(), "--table"];
    let run = |rest: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(rest);
        pgwarden(&args)
    };
    assert_fails(
        &run(&["nope", "--column", "at", "--range", "1 month"]),
        2,
        "does not exist",
    );
    assert_fails(
        &run(&["t", "--column", "at", "--range", "5 months"]),
        2,
        "does not divide a year",
    );
    assert_fails(
        &run(&["t", "--column", "label", "--range", "1 month"]),
        2,
        "range partitioning needs",
    );
    assert_fails(&run(&["t", "--column", "at"]), 2, "--range");
    assert_fails(
        &run(&["t", "--column", "at", "--range", "1 month", "--hash", "4"]),
        2,
        "--hash",
    );
    assert_fails(
        &run(&["t", "--column", "at", "--list", "=x"]),
        2,
        "list name",
    );
    assert_fails(
        &run(&[
            "t",
            "--column",
            "at",
            "--range",
            "1 month",
            "--lock-timeout",
            "soon",
        ]),
        2,
        "duration",
    );
    assert_fails(
        &run(&[
            "t",
            "--column",
            "at",
            "--range",
            "1 month",
            "--grant",
            "SELEKT TO x",
        ]),
        2,
        "grant",
    );
    assert_fails(
        &pgwarden(&["partition", "maintain", "-d", &dsn, "--table", "t"]),
        2,
        "not managed",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone = format!("host=127.0.0.1 port={port} user=postgres connect_timeout=3");
    assert_fails(&pgwarden(&["partition", "list", "-d", &gone]), 1, "connect");
}

#[test]
fn adopt_a_hand_made_set() {
    let dsn = database(
        "part_adopt",
        "CREATE TABLE items (id bigint NOT NULL) PARTITION BY RANGE (id);
         CREATE TABLE items_a PARTITION OF items FOR VALUES FROM (0) TO (100);
         CREATE TABLE items_b PARTITION OF items FOR VALUES FROM (100) TO (200);
         INSERT INTO items SELECT generate_series(0, 150);",
    );
    let o = pgwarden(&[
        "partition",
        "adopt",
        "-d",
        &dsn,
        "--table",
        "items",
        "--premake",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("inferred from 2 partitions"),
        "{}",
        stdout(&o)
    );
    let o = pgwarden(&["partition", "maintain", "-d", &dsn, "--format", "json"]);
    let doc = json(&o);
    assert_eq!(o.status.code(), Some(0), "{doc}");
    let steps = doc["sets"][0]["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["items_p200", "items_p300"], "{doc}");
    assert_fails(
        &pgwarden(&["partition", "adopt", "-d", &dsn, "--table", "items"]),
        2,
        "already managed",
    );
}

/// The binary SIGKILLed mid-copy (a real crash), then run again: the conversion finishes
/// with every row exactly once. `setup` makes `events`; `meanwhile` runs between the kill
/// and the rerun. Returns the rerun's stdout and stderr.
fn kill_mid_copy_then_rerun(db: &str, setup: &str, meanwhile: &str) -> (String, String) {
    let dsn = database(db, setup);
    let c = shared();
    let sum =
        "SELECT count(*) || ' ' || md5(string_agg(id || '|' || at, ',' ORDER BY id)) FROM events";
    let args = [
        "partition",
        "create",
        "-d",
        &dsn,
        "--table",
        "events",
        "--column",
        "at",
        "--range",
        "1 day",
        "--yes",
        "--batch-size",
        "500",
    ];
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pgwarden"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let started = c
            .psql(db, "SELECT to_regclass('pgwarden.conversion') IS NOT NULL")
            .unwrap()
            == "t"
            && c.psql(
                db,
                "SELECT coalesce(max(next_block), 0) > 0 FROM pgwarden.conversion",
            )
            .unwrap()
                == "t";
        if started {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the conversion ended before it could be killed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the copy never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    assert_eq!(
        c.psql(db, "SELECT relkind FROM pg_class WHERE relname = 'events'")
            .unwrap(),
        "r",
        "killed before the swap"
    );
    if !meanwhile.is_empty() {
        // The killed run's lock goes with its session; then writes work again.
        c.psql(db, &format!("SET lock_timeout = '30s'; {meanwhile}"))
            .unwrap();
    }
    let before = c.psql(db, sum).unwrap();
    let o = pgwarden(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Finished converting"), "{}", stdout(&o));
    assert_eq!(
        c.psql(db, "SELECT relkind FROM pg_class WHERE relname = 'events'")
            .unwrap(),
        "p"
    );
    assert_eq!(c.psql(db, sum).unwrap(), before, "every row exactly once");
    (stdout(&o), stderr(&o))
}

#[test]
fn a_conversion_killed_mid_copy_is_finished_by_the_rerun() {
    let (out, err) = kill_mid_copy_then_rerun(
        "part_kill",
        "CREATE TABLE events (id bigint, at timestamptz NOT NULL, PRIMARY KEY (id, at));
         INSERT INTO events SELECT g, now() - g * interval '1 minute' FROM generate_series(1, 150000) g;
         ANALYZE events;",
        "",
    );
    assert!(!err.contains("writes to it wait"), "{err}");
    assert!(!out.contains("started over"), "{out}");
}

/// The same crash with a table whose key lacks the partition column: the copy blocks
/// writes, and the rerun says so before it resumes.
#[test]
fn a_keyless_conversion_killed_mid_copy_is_finished_by_the_rerun() {
    let setup = "CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz NOT NULL);
         INSERT INTO events SELECT g, now() - g * interval '1 minute' FROM generate_series(1, 150000) g;
         ANALYZE events;";
    let (out, err) = kill_mid_copy_then_rerun("part_kill_nokey", setup, "");
    assert!(err.contains("pgwarden: warning: converting"), "{err}");
    assert!(err.contains("writes to it wait"), "{err}");
    assert!(!out.contains("started over"), "{out}");
    assert!(
        out.contains("ADD PRIMARY KEY (\"id\", \"at\")"),
        "the advice: {out}"
    );
    // Written between the crash and the rerun: the copy starts over, nothing is lost.
    let (out, _) = kill_mid_copy_then_rerun(
        "part_kill_nokey_w",
        setup,
        "DELETE FROM events WHERE id = 10; INSERT INTO events VALUES (0, now())",
    );
    assert!(out.contains("started over"), "{out}");
}

/// The issue's own example: `--column order` (a reserved word) on a table in schema `user`.
#[test]
fn keyword_names_on_the_command_line() {
    let dsn = database(
        "part_cli_kw",
        r#"CREATE SCHEMA "user";
           CREATE TABLE "user"."Line Items" ("order" timestamptz NOT NULL, qty int);"#,
    );
    let o = pgwarden(&[
        "partition",
        "create",
        "-d",
        &dsn,
        "--table",
        r#""user"."Line Items""#,
        "--column",
        "order",
        "--range",
        "monthly",
        "--format",
        "json",
    ]);
    let doc = json(&o);
    assert!(o.status.success(), "{doc}");
    assert_eq!(doc["set"]["column"], "order");
    let o = pgwarden(&["partition", "maintain", "-d", &dsn]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = pgwarden(&["partition", "list", "-d", &dsn]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(r#""user"."Line Items": range by "order""#),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        shared()
            .psql(
                "part_cli_kw",
                r#"INSERT INTO "user"."Line Items" VALUES (now(), 1); SELECT count(*) FROM "user"."Line Items""#
            )
            .unwrap(),
        "1"
    );
}
