//! pgw-partition against real PostgreSQL 15: every test gets its own database on one shared
//! throwaway cluster.

mod adopt;
mod convert;
mod convert_edges;
mod maintain;
mod partman;
mod sets;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use pgw_cluster::Cluster;
use pgw_partition::{
    CreateOptions, Layout, MaintainOptions, MaintainReport, RetentionMode, Template,
};

/// The cluster all tests share (cleaned up by its watchdog when the test binary exits).
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        Cluster::start().unwrap_or_else(|e| panic!("start a throwaway PostgreSQL 15 cluster: {e}"))
    })
}

/// A fresh database with `setup` run in it; returns its name and DSN.
pub fn database(setup: &str) -> (String, String) {
    static N: AtomicU32 = AtomicU32::new(0);
    let c = cluster();
    let name = format!("part_{}", N.fetch_add(1, Ordering::SeqCst));
    c.psql("postgres", &format!("CREATE DATABASE {name}"))
        .expect("create a test database");
    if !setup.is_empty() {
        c.psql(&name, setup).expect("set up the test database");
    }
    let dsn = c.dsn_for(c.superuser(), c.password(), &name);
    (name, dsn)
}

/// psql in the test database, panicking with the error.
pub fn sql(db: &str, text: &str) -> String {
    cluster()
        .psql(db, text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Create options for a range set with pgwarden's defaults.
pub fn range(dsn: &str, table: &str, column: &str, interval: &str) -> CreateOptions {
    CreateOptions {
        dsn: Some(dsn.to_string()),
        table: table.to_string(),
        column: column.to_string(),
        layout: Layout::Range(interval.to_string()),
        premake: 4,
        start: None,
        retention: None,
        retention_mode: RetentionMode::Detach,
        default_partition: true,
        time_zone: "UTC".to_string(),
        name_pattern: None,
        template: Template::default(),
        lock_timeout_ms: 2000,
        dry_run: false,
        yes: false,
        batch_rows: 10_000,
        drop_old: false,
    }
}

/// Runs maintenance on `dsn` (drops confirmed), panicking if it cannot run at all.
pub async fn maintain(dsn: &str, dry_run: bool) -> MaintainReport {
    let opts = MaintainOptions {
        dsn: Some(dsn.to_string()),
        table: None,
        dry_run,
        lock_timeout_ms: 2000,
    };
    pgw_partition::maintain(&opts, &|_, _| true)
        .await
        .expect("maintenance runs")
}

/// The partitions of `parent` as `name|bound`, one per line, in name order.
pub fn partitions(db: &str, parent: &str) -> Vec<String> {
    let out = sql(
        db,
        &format!(
            "SELECT c.relname || '|' || pg_get_expr(c.relpartbound, c.oid)
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = '{parent}'::regclass ORDER BY c.relname"
        ),
    );
    out.lines().map(str::to_string).collect()
}

/// The number of actions a report ran or planned.
pub fn steps(r: &MaintainReport) -> usize {
    r.sets.iter().map(|s| s.steps.len()).sum()
}

/// Starts the conversion `o`, waits until its copy is under way, and cuts it off (as a crash
/// would): its sessions, and with them its locks, are gone when this returns.
pub async fn cut_off(db: &str, o: &pgw_partition::CreateOptions) {
    let first = {
        let o = o.clone();
        tokio::spawn(async move { pgw_partition::create(&o).await })
    };
    let mut waited = 0;
    while !(sql(db, "SELECT to_regclass('pgwarden.conversion') IS NOT NULL") == "t"
        && sql(
            db,
            "SELECT coalesce(max(next_block), 0) > 0 FROM pgwarden.conversion",
        ) == "t")
    {
        waited += 1;
        assert!(waited < 1500, "the copy never started");
        if first.is_finished() {
            panic!(
                "the conversion ended before it was cut off: {:?}",
                first.await
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.abort();
    let _ = first.await;
    // Its sessions (and their locks) are gone.
    let mut waited = 0;
    while sql(
        db,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
    ) != "0"
    {
        waited += 1;
        assert!(waited < 500, "the cut-off run's sessions stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        sql(
            db,
            &format!(
                "SELECT relkind FROM pg_class WHERE oid = '{}'::regclass",
                o.table
            )
        ),
        "r",
        "not swapped"
    );
}
