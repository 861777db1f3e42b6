//! `pgwarden demo`: the main job on the embedded default.
//!
//! Starts a throwaway cluster ([`pgw_cluster`]), loads a small realistic workload
//! (customers, products, orders with foreign keys, a time-series `events` table, then
//! churn: updates and deletes that leave dead rows), runs every capability that exists
//! on it, and returns one report. The cluster is stopped and removed when the demo
//! ends, fails, or is cancelled (dropping the future drops the cluster guard).
//!
//! pgw-cluster is synchronous: its calls that wait (start, restart, stop, and the stop in
//! its `Drop`) run on tokio's blocking pool, never on a runtime thread, so the runtime
//! stays free and a Ctrl-C that aborts the demo takes effect at once. The cluster value
//! moves into each blocking call and comes back from it: if the demo is cancelled
//! meanwhile, the call still runs to its end and the cluster it returns is dropped there,
//! which stops the server.
//!
//! Capabilities shown so far: `doctor` (with a handful of problems planted), `partition`
//! (a monthly time series `metrics` with premake, retention, and rows rescued from its
//! default partition) and `tune` (recommend, diff against the live server, apply with
//! ALTER SYSTEM, restart, and confirm every setting is in effect), then `ha` (`ha.rs`: a
//! throwaway etcd and two nodes under `pgwarden ha agent`, the primary node killed while a
//! probe writes, the failover's downtime, the old primary rejoining).
//!
//! Deliberately not here: printing (the binary renders [`DemoReport`]), and anything
//! that touches a server other than the throwaway one.
//!
//! Invariant: never leaves a server running; finishes in well under two minutes on a
//! 2-core machine at the default size.

use std::time::{Duration, Instant};

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde::Serialize;
use tokio_postgres::Client;

mod backup;
mod ha;
mod pool;

pub use backup::BackupDemo;
pub use ha::HaDemo;
pub use pool::{Churn, PoolDemo};

use pgw_cluster::{Cluster, ClusterError};
use pgw_tune::apply::ApplyReport;
use pgw_tune::live::Needs;
use pgw_tune::run::{Request, TuneError, TuneReport};

/// Progress callback: step number (1-based), step count, description.
pub type OnStep = Arc<dyn Fn(u64, u64, &str) + Send + Sync>;

/// How big a demo to run, and whom to tell about progress.
#[derive(Clone)]
pub struct Options {
    /// Rows in `orders` and `events`; `customers` gets a third of it.
    pub rows: u64,
    /// Called as each step starts, with its number (1-based), the step count and a
    /// description; the binary draws a progress bar from it.
    pub on_step: OnStep,
    /// The `pgwarden` program the demo starts for each HA node's agent (`pgwarden ha
    /// agent`) and for the pooler (`pgwarden pool`): the binary passes itself.
    pub agent_exe: std::path::PathBuf,
}

/// The number of steps [`run`] reports through [`Options::on_step`].
pub const STEPS: u64 = 14;

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("run the throwaway cluster")]
    Cluster(#[from] ClusterError),
    #[error("{what}")]
    Query {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("tune the demo cluster")]
    Tune(#[from] TuneError),
    #[error("run doctor on the demo cluster")]
    Doctor(#[from] pgw_doctor::DoctorError),
    #[error("the HA part: {0}")]
    Ha(String),
    #[error("the pooler part: {0}")]
    Pool(String),
    #[error("the backup part: {0}")]
    Backup(String),
    #[error("the demo lost hold of its cluster")]
    ClusterGone,
    #[error("partition the demo's time series")]
    Partition(#[from] pgw_partition::PartitionError),
    /// The runtime shut down before a blocking step could run.
    #[error("{what}: the runtime shut down first")]
    Blocking {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl pgw_common::Classify for DemoError {
    /// The demo takes no input beyond its flags, so whatever fails in it is a failure.
    fn class(&self) -> pgw_common::ErrorClass {
        pgw_common::ErrorClass::Failed
    }
}

/// Everything the demo did and found. This is the JSON of `pgwarden demo --format json`.
#[derive(Debug, Serialize)]
pub struct DemoReport {
    pub cluster: ClusterInfo,
    pub tables: Vec<TableInfo>,
    /// `pgwarden doctor` on the loaded cluster, with a handful of problems planted.
    pub doctor: pgw_doctor::Report,
    /// `pgwarden partition` on a monthly time series.
    pub partition: PartitionDemo,
    /// `pgwarden tune --diff` against the freshly loaded cluster.
    pub tune: TuneReport,
    /// `pgwarden tune apply --yes` on it.
    pub apply: ApplyReport,
    /// After a restart: recommended settings now in effect, and any that are not.
    pub after_restart: AfterRestart,
    /// `pgwarden pool`: pgbench -C direct and through the pooler, and SHOW POOLS.
    pub pool: PoolDemo,
    /// `pgwarden backup`: WAL archiving, a full and an incremental backup during the
    /// workload, and a drill to a point in time with its measured RTO.
    pub backup: BackupDemo,
    /// `pgwarden ha`: two nodes on etcd, the primary node lost, the failover, the rejoin.
    pub ha: HaDemo,
    pub elapsed_ms: u128,
}

/// The partition part of the demo: `create`, a `maintain` that has work to do, a second
/// `maintain` that has none, and `list`.
#[derive(Debug, Serialize)]
pub struct PartitionDemo {
    pub created: pgw_partition::CreateReport,
    /// Rows written after `create`, some of them beyond the premade partitions.
    pub rows_loaded: i64,
    pub maintain: pgw_partition::MaintainReport,
    /// Steps the second maintenance run took (0: idempotent).
    pub second_run_steps: usize,
    pub listing: Vec<pgw_partition::SetListing>,
}

#[derive(Debug, Serialize)]
pub struct ClusterInfo {
    pub version: String,
    pub port: u16,
    pub data_dir: String,
}

#[derive(Debug, Serialize)]
pub struct TableInfo {
    pub name: String,
    pub rows: i64,
    pub dead_rows: i64,
    pub bytes: i64,
}

#[derive(Debug, Serialize)]
pub struct AfterRestart {
    pub in_effect: usize,
    pub not_in_effect: Vec<String>,
}

pub(crate) fn q(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> DemoError {
    move |source| DemoError::Query { what, source }
}

/// Runs blocking `f` on tokio's blocking pool and returns what it returns. If the caller's
/// future is dropped first, `f` still runs to its end and its result is dropped on the pool
/// (a [`Cluster`] in it is stopped by its `Drop`). A panic in `f` goes on in the caller.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, DemoError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => Ok(value),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(source) => Err(DemoError::Blocking { what, source }),
    }
}

/// The demo's cluster while the async side owns it. Dropped there (a step failed, or the
/// demo's future was dropped), it hands the cluster to the blocking pool, whose thread
/// stops the server and removes its files (the runtime's shutdown waits for it; the
/// cluster's watchdog is the backstop). During a panic it is dropped in place, so that the
/// server log is printed.
struct Owned(Option<Cluster>);

impl Owned {
    fn new(cluster: Cluster) -> Owned {
        Owned(Some(cluster))
    }

    /// The cluster, to move into a blocking call (which gives it back or drops it).
    fn into_inner(mut self) -> Result<Cluster, DemoError> {
        self.0.take().ok_or(DemoError::ClusterGone)
    }

    fn get(&self) -> Result<&Cluster, DemoError> {
        self.0.as_ref().ok_or(DemoError::ClusterGone)
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let Some(cluster) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if !std::thread::panicking() => {
                // While the runtime shuts down, the pool drops the closure unrun, and the
                // cluster is stopped right here instead.
                drop(runtime.spawn_blocking(move || drop(cluster)));
            }
            _ => drop(cluster),
        }
    }
}

/// Runs the whole demo. Cancel-safe: dropping the future stops the cluster.
pub async fn run(opts: &Options) -> Result<DemoReport, DemoError> {
    let started = Instant::now();
    let step = |n: u64, what: &str| (opts.on_step)(n, STEPS, what);
    step(1, "starting a throwaway PostgreSQL 15 cluster");
    let started_cluster = blocking("start the throwaway cluster", Cluster::start).await??;
    // The cluster keeps its port, data dir and password across the restart.
    let (dsn, port, data_dir) = (
        started_cluster.dsn(),
        started_cluster.port(),
        started_cluster.data_dir().display().to_string(),
    );
    let mut cluster = Owned::new(started_cluster);

    let (client, _params) = pgw_common::connect_dsn(Some(&dsn))
        .await
        .map_err(|e| DemoError::Tune(TuneError::Connect(e)))?;
    let version: String = client
        .query_one("SELECT version()", &[])
        .await
        .map_err(q("read the server version"))?
        .get(0);

    step(
        2,
        &format!(
            "loading the workload ({} orders, {} events)",
            opts.rows, opts.rows
        ),
    );
    load(&client, opts.rows).await?;
    step(3, "churn: updates and deletes");
    churn(&client).await?;
    let tables = table_info(&client).await?;

    step(4, "doctor: planting problems, then checking every database");
    plant(&client).await?;
    let doctor = pgw_doctor::run(&pgw_doctor::Options {
        dsn: Some(dsn.clone()),
        ..pgw_doctor::Options::default()
    })
    .await?;

    step(
        5,
        "partition: a monthly time series with premake, retention and default-partition rescue",
    );
    let partition = partition(&client, &dsn).await?;

    step(6, "tune: recommend and diff against the live server");
    let req = Request {
        use_server: true,
        dsn: Some(dsn.clone()),
        ..Request::default()
    };
    let tune = pgw_tune::run::diff(&req).await?;

    step(7, "tune apply: ALTER SYSTEM and reload");
    let (_, plan, session) = pgw_tune::run::plan_apply(&req).await?;
    let apply = pgw_tune::run::execute_apply(&session, &plan, &AtomicBool::new(false)).await?;
    drop(session);

    // Archiving into a repository in a temp dir, in effect with the same restart.
    let backup_setup = backup::prepare(&client, &opts.agent_exe).await?;

    step(
        8,
        "restarting for the settings that need it (and WAL archiving)",
    );
    drop(client);
    let restarting = cluster.into_inner()?;
    cluster = Owned::new(
        blocking("restart the throwaway cluster", move || {
            restarting.restart().map(|()| restarting)
        })
        .await??,
    );
    step(9, "checking every recommended setting is in effect");
    let after = pgw_tune::run::diff(&req).await?;
    let rows = after.diff.unwrap_or_default();
    let not_in_effect: Vec<String> = rows
        .iter()
        .filter(|d| d.needs != Needs::Nothing)
        .map(|d| d.name.clone())
        .collect();

    step(
        10,
        "pool: pgbench -C straight to PostgreSQL and through `pgwarden pool`",
    );
    let pool = {
        let c = cluster.get()?;
        pool::run(
            &opts.agent_exe,
            pool::Server {
                port: c.port(),
                user: c.superuser(),
                password: c.password(),
                bin_dir: c.bin_dir(),
            },
        )
        .await?
    };

    step(
        11,
        "backup: a full and an incremental during writes, then a drill to a point in time",
    );
    let backup = {
        let c = cluster.get()?;
        let (client, _) = pgw_common::connect_dsn(Some(&dsn))
            .await
            .map_err(|e| DemoError::Tune(TuneError::Connect(e)))?;
        backup::run(
            &backup_setup,
            &client,
            c.data_dir(),
            c.bin_dir(),
            &opts.agent_exe,
        )
        .await?
    };

    let stopping = cluster.into_inner()?;
    blocking("stop the throwaway cluster", move || stopping.stop()).await??;
    drop(backup_setup);

    let ha = ha::run(&opts.agent_exe, step, 12).await?;

    let report = DemoReport {
        cluster: ClusterInfo {
            version,
            port,
            data_dir,
        },
        tables,
        doctor,
        partition,
        tune,
        apply,
        after_restart: AfterRestart {
            in_effect: rows.len() - not_in_effect.len(),
            not_in_effect,
        },
        pool,
        backup,
        ha,
        elapsed_ms: started.elapsed().as_millis(),
    };
    Ok(report)
}

/// Tables of some hundred thousand rows with keys and indexes, and a time series.
/// Sizes are bound parameters; every statement is fixed text.
async fn load(client: &Client, rows: u64) -> Result<(), DemoError> {
    let n = rows as i64;
    let customers = (n / 3).max(1);
    client
        .batch_execute(
            "CREATE TABLE customers (
                 id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 email text NOT NULL UNIQUE,
                 name text NOT NULL,
                 country text NOT NULL,
                 created_at timestamptz NOT NULL);
             CREATE TABLE products (
                 id int PRIMARY KEY,
                 name text NOT NULL,
                 price numeric(10,2) NOT NULL);
             CREATE TABLE orders (
                 id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 customer_id bigint NOT NULL REFERENCES customers,
                 product_id int NOT NULL REFERENCES products,
                 quantity int NOT NULL,
                 total numeric(12,2) NOT NULL,
                 status text NOT NULL,
                 created_at timestamptz NOT NULL);
             CREATE TABLE events (
                 ts timestamptz NOT NULL,
                 customer_id bigint,
                 kind text NOT NULL,
                 payload jsonb);",
        )
        .await
        .map_err(q("create the demo schema"))?;
    client
        .execute(
            "INSERT INTO customers (email, name, country, created_at)
             SELECT 'user' || g || '@example.com', 'Customer ' || g,
                    (ARRAY['US','CA','UK','DE','FR','JP','BR','IN'])[1 + g % 8],
                    now() - (g % 1000) * interval '1 day'
               FROM generate_series(1, $1::bigint) g",
            &[&customers],
        )
        .await
        .map_err(q("load customers"))?;
    client
        .execute(
            "INSERT INTO products SELECT g, 'Product ' || g, round((1 + random() * 500)::numeric, 2)
               FROM generate_series(1, 2000) g",
            &[],
        )
        .await
        .map_err(q("load products"))?;
    client
        .execute(
            "INSERT INTO orders (customer_id, product_id, quantity, total, status, created_at)
             SELECT 1 + (g * 7919) % $2::bigint, 1 + g % 2000, 1 + g % 5, (g % 997) + 0.99,
                    'new', now() - (g % 365) * interval '1 day' - (g % 86400) * interval '1 second'
               FROM generate_series(1, $1::bigint) g",
            &[&n, &customers],
        )
        .await
        .map_err(q("load orders"))?;
    client
        .execute(
            "INSERT INTO events (ts, customer_id, kind, payload)
             SELECT now() - (g % (30 * 86400)) * interval '1 second', 1 + g % $2::bigint,
                    (ARRAY['view','click','cart','buy'])[1 + g % 4],
                    jsonb_build_object('session', g % 5000, 'ms', g % 900)
               FROM generate_series(1, $1::bigint) g",
            &[&n, &customers],
        )
        .await
        .map_err(q("load events"))?;
    client
        .batch_execute(
            "CREATE INDEX orders_created_at_idx ON orders (created_at);
             CREATE INDEX events_ts_brin ON events USING brin (ts);
             ANALYZE;",
        )
        .await
        .map_err(q("index and analyze the demo tables"))?;
    Ok(())
}

/// Problems doctor should find, beside the ones the workload has by nature (foreign keys
/// without an index, dead rows from the churn): a duplicate index, an index left invalid
/// by a failed CREATE UNIQUE INDEX CONCURRENTLY, and a ticket sequence near its end.
async fn plant(client: &Client) -> Result<(), DemoError> {
    client
        .batch_execute(
            "CREATE INDEX orders_created_at_dup ON orders (created_at);
             CREATE SEQUENCE ticket_seq AS integer;
             SELECT setval('ticket_seq', 2000000000);",
        )
        .await
        .map_err(q("plant a duplicate index and a nearly exhausted sequence"))?;
    // Fails on the duplicate countries, and leaves the index behind, invalid.
    let _ = client
        .batch_execute(
            "CREATE UNIQUE INDEX CONCURRENTLY customers_country_key ON customers (country)",
        )
        .await;
    Ok(())
}

/// Updates and deletes that leave dead rows behind, as a live application does.
async fn churn(client: &Client) -> Result<(), DemoError> {
    client
        .batch_execute(
            "UPDATE orders SET status = 'shipped' WHERE id % 5 = 0;
             UPDATE customers SET name = name || ' (vip)' WHERE id % 50 = 0;
             DELETE FROM events WHERE ts < now() - interval '27 days';",
        )
        .await
        .map_err(q("churn the demo tables"))
}

async fn table_info(client: &Client) -> Result<Vec<TableInfo>, DemoError> {
    // The statistics of this session's own writes are flushed at transaction end,
    // at most once a second; wait that out so the dead-row counts are real.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rows = client
        .query(
            "SELECT c.relname::text, c.reltuples::bigint, coalesce(s.n_dead_tup, 0),
                    pg_total_relation_size(c.oid)
               FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
              WHERE n.nspname = 'public' AND c.relkind = 'r'
              ORDER BY c.relname",
            &[],
        )
        .await
        .map_err(q("read table statistics"))?;
    Ok(rows
        .into_iter()
        .map(|r| TableInfo {
            name: r.get(0),
            rows: r.get(1),
            dead_rows: r.get(2),
            bytes: r.get(3),
        })
        .collect())
}

/// `metrics`, partitioned by month from 14 months back with 3 months premade and 12 months
/// kept: rows for every day since, and some from 8 months ahead that land in the default
/// partition. Maintenance rescues those into a partition of their own and detaches the
/// months past retention; a second run has nothing to do.
async fn partition(client: &Client, dsn: &str) -> Result<PartitionDemo, DemoError> {
    client
        .batch_execute(
            "CREATE TABLE metrics (at timestamptz NOT NULL, host text NOT NULL, value float8)
               PARTITION BY RANGE (at)",
        )
        .await
        .map_err(q("create the metrics table"))?;
    let start: String = client
        .query_one(
            "SELECT to_char(date_trunc('month', now() AT TIME ZONE 'UTC') - interval '14 months', 'YYYY-MM-DD')",
            &[],
        )
        .await
        .map_err(q("compute the first month"))?
        .get(0);
    let created = pgw_partition::create(&pgw_partition::CreateOptions {
        dsn: Some(dsn.to_string()),
        table: "public.metrics".into(),
        column: "at".into(),
        layout: pgw_partition::Layout::Range("1 month".into()),
        premake: 3,
        start: Some(start),
        retention: Some("12 months".into()),
        retention_mode: pgw_partition::RetentionMode::Detach,
        default_partition: true,
        time_zone: "UTC".into(),
        name_pattern: None,
        template: pgw_partition::Template::default(),
        lock_timeout_ms: 2000,
        dry_run: false,
        yes: false,
        batch_rows: 50_000,
        drop_old: false,
    })
    .await?;
    let rows_loaded = client
        .execute(
            "INSERT INTO metrics (at, host, value)
             SELECT now() - g * interval '10 minutes', 'db' || (g % 4), random()
               FROM generate_series(0, 6 * 24 * 420) g
             UNION ALL
             SELECT now() + interval '8 months' + g * interval '1 minute', 'db0', random()
               FROM generate_series(1, 500) g",
            &[],
        )
        .await
        .map_err(q("load the metrics"))? as i64;
    let opts = pgw_partition::MaintainOptions {
        dsn: Some(dsn.to_string()),
        table: None,
        dry_run: false,
        lock_timeout_ms: 2000,
    };
    let maintain = pgw_partition::maintain(&opts, &|_, _| false).await?;
    let again = pgw_partition::maintain(&opts, &|_, _| false).await?;
    let second_run_steps = again.sets.iter().map(|s| s.steps.len()).sum();
    client
        .batch_execute("ANALYZE metrics")
        .await
        .map_err(q("analyze the metrics"))?;
    let listing = pgw_partition::list(Some(dsn), None).await?;
    Ok(PartitionDemo {
        created,
        rows_loaded,
        maintain,
        second_run_steps,
        listing,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// Polls `cond` every 50 ms until it holds or `limit` passes.
    async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while !cond() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cluster_dropped_on_the_async_side_is_stopped_and_removed() {
        let cluster = blocking("start", Cluster::start)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("a throwaway cluster is needed: {e}"));
        let data_dir = cluster.data_dir().to_owned();
        let pid_file = data_dir.join("postmaster.pid");
        assert!(pid_file.exists());
        // As when a step fails or the demo's future is dropped.
        drop(Owned::new(cluster));
        assert!(
            eventually(Duration::from_secs(30), || !data_dir.exists()).await,
            "{} is still there",
            data_dir.display()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocking_call_outlives_a_dropped_caller_and_its_result_is_dropped() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let flag = Flag(dropped.clone());
        let caller = tokio::spawn(blocking("hold", move || {
            started_tx.send(()).unwrap();
            let _ = go_rx.recv();
            flag
        }));
        started_rx.recv().unwrap();
        caller.abort();
        let _ = caller.await;
        assert!(!dropped.load(std::sync::atomic::Ordering::SeqCst));
        drop(go_tx);
        assert!(
            eventually(Duration::from_secs(30), || dropped
                .load(std::sync::atomic::Ordering::SeqCst))
            .await,
            "the blocking call's result was never dropped"
        );
    }
}
