//! `pgwarden tune`: flags, formats, diff and apply against live servers.

use pgw_cluster::Cluster;

use crate::{
    assert_fails, auto_conf, json, pgwarden, pgwarden_env, settings, shared, stderr, stdout,
};

fn value<'a>(doc: &'a serde_json::Value, name: &str) -> &'a str {
    doc["settings"]
        .as_array()
        .expect("settings array")
        .iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["value"].as_str())
        .unwrap_or_else(|| panic!("no setting {name} in {doc}"))
}

#[test]
fn flags_give_pgtunes_reference_output_as_json() {
    // tune.md reference case (a): web, 8 GB, 4 CPUs, 200 connections, SSD, PG 15.
    let o = pgwarden(&[
        "tune",
        "--memory",
        "8GB",
        "--cpus",
        "4",
        "--connections",
        "200",
        "--storage",
        "ssd",
        "--workload",
        "web",
        "--pg-version",
        "15",
        "--db-size",
        "mid-ram",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc = json(&o);
    assert_eq!(value(&doc, "shared_buffers"), "2GB");
    assert_eq!(value(&doc, "effective_cache_size"), "6GB");
    assert_eq!(value(&doc, "maintenance_work_mem"), "512MB");
    assert_eq!(value(&doc, "work_mem"), "10280kB");
    assert_eq!(value(&doc, "huge_pages"), "try");
    assert_eq!(value(&doc, "max_parallel_workers_per_gather"), "2");
    assert_eq!(doc["inputs"]["memory"], "8GB");
    assert_eq!(doc["inputs"]["cpus"], 4);
    assert!(
        doc["inputs"]["assumed"].as_array().unwrap().is_empty(),
        "{doc}"
    );
    for s in doc["settings"].as_array().unwrap() {
        assert!(
            !s["reason"].as_str().unwrap().is_empty(),
            "every setting has a reason: {s}"
        );
    }
}

#[test]
fn conf_and_sql_formats() {
    let base = [
        "tune",
        "--memory",
        "2GB",
        "--cpus",
        "1",
        "--connections",
        "100",
        "--storage",
        "san",
        "--workload",
        "mixed",
    ];
    let o = pgwarden(&[&base[..], &["--format", "conf"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let conf = stdout(&o);
    assert!(conf.contains("effective_cache_size = 1536MB"), "{conf}");
    assert!(conf.contains("wal_buffers = 16MB"), "{conf}");
    assert!(conf.contains("work_mem = 4MB"), "{conf}");
    let o = pgwarden(&[&base[..], &["--format", "sql"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let sql = stdout(&o);
    assert!(
        sql.contains("ALTER SYSTEM SET \"shared_buffers\" = '512MB';"),
        "{sql}"
    );
    let o = pgwarden(&[&base[..], &["--format", "table"]].concat());
    assert!(o.status.success());
    assert!(stdout(&o).contains("effective_io_concurrency"));
}

#[test]
fn no_flags_reads_this_host_and_says_what_it_assumed() {
    let o = pgwarden(&["tune", "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc = json(&o);
    let src = doc["inputs"]["sources"]["memory"].as_str().unwrap();
    assert!(src.contains("host") || src.contains("cgroup"), "{src}");
    let assumed: Vec<&str> = doc["inputs"]["assumed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        assumed.contains(&"workload") && assumed.contains(&"storage"),
        "{assumed:?}"
    );
}

#[test]
fn diff_against_a_live_server_reads_its_facts() {
    let c = shared();
    let o = pgwarden(&[
        "tune",
        "-d",
        &c.dsn(),
        "--diff",
        "--format",
        "json",
        "--memory",
        "4GB",
        "--cpus",
        "4",
        "--workload",
        "oltp",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc = json(&o);
    assert_eq!(doc["inputs"]["pg_version"], 15);
    assert_eq!(
        doc["inputs"]["connections"], 120,
        "max_connections read from the server"
    );
    assert_eq!(
        doc["inputs"]["sources"]["connections"],
        "server (max_connections)"
    );
    assert_eq!(doc["inputs"]["data_checksums"], false);
    // This server was built with lz4, so the build-dependency warning is dropped.
    let warnings = doc["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .all(|w| !w.as_str().unwrap().contains("lz4")),
        "{warnings:?}"
    );
    let diff = doc["diff"].as_array().expect("diff rows");
    let row = |n: &str| {
        diff.iter()
            .find(|r| r["name"] == n)
            .unwrap_or_else(|| panic!("no {n}: {doc}"))
    };
    // shared_buffers: 8kB pages on the server, 1GB recommended, needs a restart.
    assert_eq!(row("shared_buffers")["current"], "128MB");
    assert_eq!(row("shared_buffers")["recommended"], "1GB");
    assert_eq!(row("shared_buffers")["needs"], "restart");
    // work_mem: kB on the server, a reload suffices.
    assert_eq!(row("work_mem")["current"], "4MB");
    assert_eq!(row("work_mem")["needs"], "reload");
    // checkpoint_completion_target is already 0.9 on PostgreSQL 15.
    assert_eq!(row("checkpoint_completion_target")["needs"], "nothing");
    // max_connections was read from the server, so it already matches.
    assert_eq!(row("max_connections")["needs"], "nothing");
    // autovacuum_naptime is in seconds on the server.
    assert_eq!(row("autovacuum_naptime")["current"], "1min");
    assert_eq!(row("autovacuum_naptime")["recommended"], "30s");
    // The table form has the same rows.
    let o = pgwarden(&["tune", "-d", &c.dsn(), "--diff", "--memory", "4GB"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("restart"), "{}", stdout(&o));
}

#[test]
fn diff_with_only_a_dsn_reads_server_and_local_host() {
    let c = shared();
    let o = pgwarden(&["tune", "--dsn", &c.uri(), "--diff", "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc = json(&o);
    let src = doc["inputs"]["sources"]["memory"].as_str().unwrap();
    assert!(
        src.contains("host") || src.contains("cgroup"),
        "local server: memory from the host, got {src}"
    );
    assert!(doc["inputs"]["cpus"].as_u64().unwrap() >= 1);
    assert_eq!(
        doc["inputs"]["sources"]["pg_version"],
        "server (server_version_num)"
    );
}

#[test]
fn environment_variables_and_pgpass_are_honoured() {
    let c = shared();
    let port = c.port().to_string();
    // PGPASSWORD and friends.
    let o = pgwarden_env(
        &["tune", "--diff", "--memory", "4GB", "--format", "json"],
        &[
            ("PGHOST", "127.0.0.1"),
            ("PGPORT", &port),
            ("PGUSER", "postgres"),
            ("PGDATABASE", "postgres"),
            ("PGPASSWORD", c.password()),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // ~/.pgpass, found through HOME, with the required 0600 mode.
    let home = tempfile::tempdir().unwrap();
    let pgpass = home.path().join(".pgpass");
    std::fs::write(
        &pgpass,
        format!("127.0.0.1:{port}:*:postgres:{}\n", c.password()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = pgwarden_env(
        &[
            "tune",
            "--diff",
            "--memory",
            "4GB",
            "--format",
            "json",
            "-d",
            &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
        ],
        &[("HOME", home.path().to_str().unwrap())],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A cluster of its own: apply changes its configuration.
fn own_cluster() -> Cluster {
    Cluster::start().expect("start a throwaway PostgreSQL 15 cluster")
}

#[test]
fn apply_writes_reloads_and_reports_pending_restart() {
    let c = own_cluster();
    let o = pgwarden(&[
        "tune",
        "apply",
        "-d",
        &c.dsn(),
        "--memory",
        "2GB",
        "--cpus",
        "4",
        "--workload",
        "oltp",
        "--yes",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc = json(&o);
    assert_eq!(doc["reloaded"], true);
    let pending: Vec<&str> = doc["pending_restart"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(pending.contains(&"shared_buffers"), "{doc}");
    // A reload-context setting is live at once; a restart-context one is pending.
    let now = settings(&c, &["work_mem", "shared_buffers", "random_page_cost"]);
    assert!(
        now.iter()
            .any(|l| l.starts_with("shared_buffers=16384 pending=true")),
        "{now:?}"
    );
    assert!(
        now.iter()
            .any(|l| l.starts_with("random_page_cost=1.1 pending=false")),
        "{now:?}"
    );
    assert!(
        auto_conf(&c).contains("shared_buffers = '512MB'"),
        "{}",
        auto_conf(&c)
    );
    // After a restart everything recommended is in effect, and a second apply has nothing to do.
    c.restart().expect("restart");
    let o = pgwarden(&[
        "tune",
        "-d",
        &c.dsn(),
        "--diff",
        "--memory",
        "2GB",
        "--cpus",
        "4",
        "--workload",
        "oltp",
        "--format",
        "json",
    ]);
    let doc = json(&o);
    for row in doc["diff"].as_array().unwrap() {
        assert_eq!(row["needs"], "nothing", "{row}");
    }
    let o = pgwarden(&[
        "tune",
        "apply",
        "-d",
        &c.dsn(),
        "--memory",
        "2GB",
        "--cpus",
        "4",
        "--workload",
        "oltp",
        "--yes",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("nothing to apply"), "{}", stdout(&o));
}

#[test]
fn apply_is_all_or_nothing_when_the_server_rejects_a_value() {
    let c = own_cluster();
    let names = [
        "shared_buffers",
        "work_mem",
        "random_page_cost",
        "log_timezone",
        "max_connections",
    ];
    let before_settings = settings(&c, &names);
    let before_auto = auto_conf(&c);
    // log_timezone is reload-context, so only ALTER SYSTEM itself can reject it: the
    // settings written before it must be put back and nothing reloaded.
    let o = pgwarden(&[
        "tune",
        "apply",
        "-d",
        &c.dsn(),
        "--memory",
        "2GB",
        "--yes",
        "--set",
        "log_timezone=Mars/Olympus_Mons",
    ]);
    assert_fails(&o, 1, "log_timezone");
    assert!(stderr(&o).contains("nothing was changed"), "{}", stderr(&o));
    assert_eq!(
        auto_conf(&c),
        before_auto,
        "postgresql.auto.conf is as it was"
    );
    assert_eq!(settings(&c, &names), before_settings);
    // A value outside the setting's range is caught offline, before connecting (input: 2).
    let o = pgwarden(&[
        "tune",
        "apply",
        "-d",
        &c.dsn(),
        "--memory",
        "2GB",
        "--set",
        "max_connections=300000",
        "--yes",
    ]);
    assert_fails(
        &o,
        2,
        "max_connections takes a whole number from 1 to 262143",
    );
    assert_eq!(auto_conf(&c), before_auto);
    // A user-context value the server's check hook refuses is caught before writing too.
    let o = pgwarden(&[
        "tune",
        "apply",
        "-d",
        &c.dsn(),
        "--memory",
        "2GB",
        "--yes",
        "--set",
        "timezone=Nowhere/Bogus",
    ]);
    assert_fails(&o, 1, "timezone");
    assert_eq!(auto_conf(&c), before_auto);
    // An unknown parameter (the server refuses it), and a value of the wrong type (refused
    // offline: input).
    let o = pgwarden(&[
        "tune",
        "apply",
        "-d",
        &c.dsn(),
        "--memory",
        "2GB",
        "--yes",
        "--set",
        "no_such_setting=1",
    ]);
    assert_fails(&o, 1, "no_such_setting");
    let o = pgwarden(&[
        "tune",
        "apply",
        "-d",
        &c.dsn(),
        "--memory",
        "2GB",
        "--yes",
        "--set",
        "work_mem=banana",
    ]);
    assert_fails(&o, 2, "--set work_mem=banana: work_mem takes a memory size");
    assert_eq!(auto_conf(&c), before_auto);
    assert_eq!(settings(&c, &names), before_settings);
}

#[test]
fn apply_needs_confirmation_or_yes() {
    let c = own_cluster();
    let before = auto_conf(&c);
    let o = pgwarden(&["tune", "apply", "-d", &c.dsn(), "--memory", "2GB"]);
    assert_fails(&o, 2, "--yes");
    assert_eq!(auto_conf(&c), before);
}

#[test]
fn a_pg_monitor_role_can_diff_but_not_apply() {
    let c = own_cluster();
    c.psql(
        "postgres",
        "CREATE ROLE watcher LOGIN PASSWORD 'watchpw' IN ROLE pg_monitor",
    )
    .unwrap();
    let dsn = c.dsn_for("watcher", "watchpw", "postgres");
    let o = pgwarden(&["tune", "-d", &dsn, "--diff", "--format", "json"]);
    assert!(
        o.status.success(),
        "pg_monitor suffices for --diff: {}",
        stderr(&o)
    );
    let before = auto_conf(&c);
    let o = pgwarden(&["tune", "apply", "-d", &dsn, "--memory", "2GB", "--yes"]);
    assert_fails(&o, 1, "permission denied");
    assert_eq!(auto_conf(&c), before);
    // Without pg_monitor (no pg_read_all_settings) diff still works: pg_settings is public.
    c.psql("postgres", "CREATE ROLE nobody LOGIN PASSWORD 'nopw'")
        .unwrap();
    let o = pgwarden(&[
        "tune",
        "-d",
        &c.dsn_for("nobody", "nopw", "postgres"),
        "--diff",
        "--memory",
        "2GB",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_rejected_value_puts_back_what_auto_conf_held_before() {
    let c = own_cluster();
    // Entries that were already in postgresql.auto.conf must come back as they were.
    c.psql("postgres", "ALTER SYSTEM SET work_mem = '8MB'")
        .unwrap();
    c.psql("postgres", "ALTER SYSTEM SET random_page_cost = 2")
        .unwrap();
    let before = auto_conf(&c);
    let o = pgwarden(&[
        "tune",
        "apply",
        "-d",
        &c.dsn(),
        "--memory",
        "2GB",
        "--yes",
        "--set",
        "log_timezone=Mars/Olympus_Mons",
    ]);
    assert_fails(&o, 1, "log_timezone");
    assert_eq!(auto_conf(&c), before);
    assert!(
        before.contains("work_mem = '8MB'") && before.contains("random_page_cost = '2'"),
        "{before}"
    );
}

#[test]
fn apply_refuses_when_a_configuration_file_has_errors() {
    let c = own_cluster();
    // The server ignores a reload of a file it cannot parse, so apply must not pretend.
    let conf = c.data_dir().join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\nbogus = = 1\n");
    std::fs::write(&conf, text).unwrap();
    let before = auto_conf(&c);
    let o = pgwarden(&["tune", "apply", "-d", &c.dsn(), "--memory", "2GB", "--yes"]);
    assert_fails(&o, 1, "configuration files have errors");
    assert_eq!(auto_conf(&c), before);
}

#[test]
fn desktop_wal_level_minimal_is_refused_while_archiving() {
    let c = Cluster::builder()
        .setting("archive_mode", "on")
        .setting("archive_command", "/bin/true")
        .start()
        .expect("start a cluster");
    let before = auto_conf(&c);
    let o = pgwarden(&[
        "tune",
        "apply",
        "-d",
        &c.dsn(),
        "--memory",
        "2GB",
        "--workload",
        "desktop",
        "--yes",
    ]);
    assert_fails(&o, 1, "wal_level = minimal while archive_mode is on");
    assert_eq!(auto_conf(&c), before);
}

#[test]
fn a_role_with_the_pg15_grants_can_apply_without_superuser() {
    let c = own_cluster();
    let args = ["--memory", "2GB", "--cpus", "4", "--workload", "oltp"];
    let o = pgwarden(&[&["tune", "--format", "json"][..], &args[..]].concat());
    let names: Vec<String> = json(&o)["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    c.psql(
        "postgres",
        "CREATE ROLE tuner LOGIN PASSWORD 'tunerpw' IN ROLE pg_monitor",
    )
    .unwrap();
    let dsn = c.dsn_for("tuner", "tunerpw", "postgres");
    c.psql(
        "postgres",
        &format!(
            "GRANT ALTER SYSTEM ON PARAMETER {} TO tuner",
            names.join(", ")
        ),
    )
    .unwrap();
    // Without the right to reload, apply refuses before writing anything.
    let before = auto_conf(&c);
    let o = pgwarden(&[&["tune", "apply", "-d", &dsn, "--yes"][..], &args[..]].concat());
    assert_fails(&o, 1, "pg_reload_conf()");
    assert_eq!(auto_conf(&c), before);
    c.psql(
        "postgres",
        "GRANT EXECUTE ON FUNCTION pg_reload_conf() TO tuner; \
         GRANT SELECT ON pg_file_settings TO tuner; \
         GRANT EXECUTE ON FUNCTION pg_show_all_file_settings() TO tuner;",
    )
    .unwrap();
    let o = pgwarden(
        &[
            &["tune", "apply", "-d", &dsn, "--yes", "--format", "json"][..],
            &args[..],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        auto_conf(&c).contains("random_page_cost = '1.1'"),
        "{}",
        auto_conf(&c)
    );
}

#[test]
fn set_values_with_control_characters_are_refused() {
    let o = pgwarden(&[
        "tune",
        "--memory",
        "2GB",
        "--set",
        "work_mem=1MB\nshared_preload_libraries=evil",
        "--format",
        "conf",
    ]);
    assert_fails(&o, 2, "control character");
}
