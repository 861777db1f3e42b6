//! pgw-tune against real throwaway clusters: the apply engine's undo paths, and the offline
//! check of `--set` values agreeing with the server's own.

use std::sync::atomic::{AtomicUsize, Ordering};

use pgw_cluster::Cluster;
use pgw_tune::apply::{execute_apply, plan_apply};
use pgw_tune::inputs::{DbSize, Inputs, Storage, Workload};
use pgw_tune::known::{check_overrides, kind_of};
use pgw_tune::live::LiveError;
use pgw_tune::recommend;
use pgw_tune::run::{recommend_for, Request, TuneError};
use pgw_tune::InputError;

fn inputs() -> Inputs {
    Inputs {
        memory_kb: 2 << 20,
        cpus: Some(4),
        connections: None,
        storage: Storage::Ssd,
        workload: Workload::Oltp,
        pg_version: 15,
        db_size: DbSize::MidRam,
    }
}

fn auto_conf(c: &Cluster) -> String {
    std::fs::read_to_string(c.data_dir().join("postgresql.auto.conf")).expect("read auto.conf")
}

#[tokio::test]
async fn an_apply_interrupted_midway_puts_back_what_it_wrote() {
    let c = Cluster::start().expect("start a throwaway PostgreSQL 15 cluster");
    c.psql("postgres", "ALTER SYSTEM SET work_mem = '8MB'")
        .unwrap();
    let (client, _) = pgw_common::connect_dsn(Some(&c.dsn()))
        .await
        .expect("connect");
    let rec = recommend(&inputs()).expect("recommend");
    let plan = plan_apply(&client, &rec).await.expect("plan");
    assert!(plan.changes.len() > 5, "{plan:?}");
    let before = auto_conf(&c);
    let settings_before = c
        .psql(
            "postgres",
            "SELECT string_agg(name || '=' || setting, ',' ORDER BY name) FROM pg_settings",
        )
        .unwrap();

    // Ctrl-C arrives after four entries were written.
    let asked = AtomicUsize::new(0);
    let interrupted = || asked.fetch_add(1, Ordering::SeqCst) >= 4;
    let err = execute_apply(&client, &plan, &interrupted)
        .await
        .unwrap_err();
    assert!(
        matches!(err, LiveError::Interrupted { reverted: 4 }),
        "{err:?}"
    );
    assert_eq!(auto_conf(&c), before, "postgresql.auto.conf is as it was");
    let settings_after = c
        .psql(
            "postgres",
            "SELECT string_agg(name || '=' || setting, ',' ORDER BY name) FROM pg_settings",
        )
        .unwrap();
    assert_eq!(settings_after, settings_before, "nothing was reloaded");

    // Not interrupted: everything is written and reloaded.
    let report = execute_apply(&client, &plan, &|| false)
        .await
        .expect("apply");
    assert!(report.reloaded);
    assert!(report.not_in_effect.is_empty(), "{report:?}");
    assert!(report
        .pending_restart
        .contains(&"shared_buffers".to_string()));
}

/// Values for every kind of setting pgwarden knows, valid and not, near the edges.
const SET_CASES: &[(&str, &[&str])] = &[
    (
        "work_mem",
        &[
            "64MB",
            "64 MB",
            "1.5GB",
            "4096",
            "64kB",
            "63kB",
            "2147483647kB",
            "2TB",
            "abc",
            "64mb",
            "16G",
            "30s",
            "-1",
            "",
            "1e3",
            " 8MB ",
        ],
    ),
    (
        "shared_buffers",
        &["16384", "128kB", "120kB", "8GB", "1.5", "-1"],
    ),
    ("wal_buffers", &["-1", "0", "16MB", "2GB", "3GB", "-2"]),
    ("autovacuum_work_mem", &["-1", "1GB", "512kB", "-1MB"]),
    ("min_wal_size", &["1GB", "80", "1MB", "32MB"]),
    (
        "autovacuum_naptime",
        &[
            "30s", "1min", "30", "1h", "1500ms", "400ms", "0", "30S", "30sec", "25d",
        ],
    ),
    (
        "autovacuum_vacuum_cost_delay",
        &["2ms", "0.5", "-1", "100ms", "500us", "1s", "-2", "2 msec"],
    ),
    // 262143 is in range, but the server's check hook also counts the other backend
    // slots: that cross-setting check is the server's, with --diff and apply.
    (
        "max_connections",
        &[
            "100", "99.6", "0", "260000", "262144", "many", "100MB", "-5", "+50",
        ],
    ),
    (
        "checkpoint_completion_target",
        &["0.9", "1", "1.5", "-0.1", ".5"],
    ),
    ("random_page_cost", &["1.1", "1000", "-1", "0"]),
    (
        "autovacuum_vacuum_cost_limit",
        &["-1", "10000", "20000", "-2"],
    ),
    ("effective_io_concurrency", &["0", "1000", "1001"]),
    ("jit", &["on", "OFF", "true", "y", "0", "o", "maybe", "2"]),
    ("huge_pages", &["try", "ON", "off", "true", "tr", "1"]),
    ("wal_compression", &["lz4", "pglz", "on", "gzip", "no"]),
    ("wal_level", &["logical", "replica", "hot_standby", "full"]),
];

#[tokio::test]
async fn set_values_are_judged_as_the_server_judges_them() {
    let c = Cluster::start().expect("start a throwaway PostgreSQL 15 cluster");
    let (client, _) = pgw_common::connect_dsn(Some(&c.dsn()))
        .await
        .expect("connect");
    let mut disagree = Vec::new();
    for (name, values) in SET_CASES {
        assert!(kind_of(name).is_some(), "{name}");
        for value in *values {
            let offline = check_overrides(&[(name.to_string(), value.to_string())]).is_ok();
            // ALTER SYSTEM parses and range-checks the value, whatever the setting's context.
            let sql: String = client
                .query_one(
                    "SELECT format('ALTER SYSTEM SET %I = %L', $1::text, $2::text)",
                    &[name, value],
                )
                .await
                .unwrap()
                .get(0);
            let server = client.batch_execute(&sql).await.is_ok();
            client
                .batch_execute(&format!("ALTER SYSTEM RESET {name}"))
                .await
                .unwrap();
            if offline != server {
                disagree.push(format!(
                    "{name} = {value:?}: offline {offline}, server {server}"
                ));
            }
        }
    }
    assert!(disagree.is_empty(), "{disagree:#?}");
}

#[tokio::test]
async fn a_bad_set_value_is_an_input_error_before_connecting() {
    let req = Request {
        use_server: true,
        // Nothing listens there: the check must come first.
        dsn: Some("host=127.0.0.1 port=1 connect_timeout=2".into()),
        overrides: vec![("work_mem".into(), "abc".into())],
        ..Request::default()
    };
    let err = recommend_for(&req).await.err().expect("refused");
    assert!(
        matches!(
            &err,
            TuneError::Input(InputError::InvalidSetting { name, .. }) if name == "work_mem"
        ),
        "{err:?}"
    );
    assert_eq!(
        pgw_common::Classify::class(&err),
        pgw_common::ErrorClass::Input
    );

    // An unknown name is let through, with a warning in the report.
    let req = Request {
        given: pgw_tune::resolve::Given {
            memory_kb: Some(4 << 20),
            ..Default::default()
        },
        overrides: vec![
            ("statement_timeout".into(), "5s".into()),
            ("work_mem".into(), "64MB".into()),
        ],
        ..Request::default()
    };
    let (report, _) = recommend_for(&req).await.expect("recommend");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("statement_timeout")
                && w.contains("not a setting pgwarden knows; the server checks it")),
        "{:?}",
        report.warnings
    );
    assert!(!report.warnings.iter().any(|w| w.contains("work_mem")));
    let set = |name: &str| {
        report
            .settings
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.value.clone())
    };
    assert_eq!(set("work_mem").as_deref(), Some("64MB"));
    assert_eq!(set("statement_timeout").as_deref(), Some("5s"));
}
