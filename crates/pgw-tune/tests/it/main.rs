//! pgw-tune against real throwaway clusters: the apply engine's undo paths.

use std::sync::atomic::{AtomicUsize, Ordering};

use pgw_cluster::Cluster;
use pgw_tune::apply::{execute_apply, plan_apply};
use pgw_tune::inputs::{DbSize, Inputs, Storage, Workload};
use pgw_tune::live::LiveError;
use pgw_tune::recommend;

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
