//! The backup part of the demo: a repository in a temp dir, the demo cluster archiving its
//! WAL into it (`pgwarden wal push`, set before the tune restart so that one restart does
//! both), a full backup, writes, a page-level incremental, more writes around a recorded
//! time, and `backup drill` to that time: the restored cluster must hold exactly the orders
//! committed before it, pass pg_amcheck, and its measured RTO is reported.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Client;

use pgw_backup::drill::{DrillOptions, DrillReport};
use pgw_backup::restore::Target;
use pgw_backup::{Kind, Repo, RepoOptions, RunOptions};

use crate::DemoError;

fn failed(msg: impl std::fmt::Display) -> DemoError {
    DemoError::Backup(msg.to_string())
}

/// A repository the demo cluster archives into; removed on drop.
pub struct Setup {
    repo: Repo,
    _dir: tempfile::TempDir,
}

/// One backup the demo took.
#[derive(Debug, Serialize)]
pub struct Taken {
    pub id: String,
    pub data_bytes: u64,
    pub stored_bytes: u64,
    pub seconds: f64,
}

/// What the backup part did and measured.
#[derive(Debug, Serialize)]
pub struct BackupDemo {
    pub repo: String,
    pub full: Taken,
    pub incr: Taken,
    /// The point in time the drill restored to, and the orders committed by then.
    pub target_time: String,
    pub orders_at_target: i64,
    pub orders_now: i64,
    pub drill: DrillReport,
    /// The restored cluster held exactly the orders committed before the target.
    pub matches: bool,
}

/// Makes the repository and sets the server to archive into it (in effect at its next
/// restart).
pub async fn prepare(client: &Client, exe: &Path) -> Result<Setup, DemoError> {
    let user = pgw_node::OsUser::detect().map_err(failed)?;
    let dir = tempfile::Builder::new()
        .prefix("pgwarden-demo-repo-")
        .tempdir_in(pgw_cluster::os::temp_base(&user))
        .map_err(|e| failed(format!("make the repository's directory: {e}")))?;
    let repo_dir = dir.path().join("repo");
    let row = client
        .query_one(
            "select (select system_identifier::text from pg_control_system()),
                    current_setting('server_version_num')::int / 10000,
                    (select setting::bigint from pg_settings where name = 'wal_segment_size')",
            &[],
        )
        .await
        .map_err(crate::q("read the cluster's identity"))?;
    let (sysid, version, seg): (String, i32, i64) = (row.get(0), row.get(1), row.get(2));
    // The server's archiver (the postgres user) must reach the repository.
    user.chown(dir.path()).map_err(failed)?;
    let options = RepoOptions {
        url: repo_dir.display().to_string(),
        ..RepoOptions::default()
    };
    let (repo, _) = Repo::init(&options, &user, &sysid, version as u32, seg as u64, false)
        .await
        .map_err(failed)?;
    let command = pgw_backup::drill::archive_command(exe, &options.flags()).map_err(failed)?;
    // ALTER SYSTEM takes no bind parameters: the value is a quoted literal.
    for statement in [
        "ALTER SYSTEM SET archive_mode = 'on'".to_string(),
        format!(
            "ALTER SYSTEM SET archive_command = {}",
            pgw_common::sql::literal(&command)
        ),
    ] {
        client
            .batch_execute(&statement)
            .await
            .map_err(crate::q("set archive_command"))?;
    }
    Ok(Setup { repo, _dir: dir })
}

async fn orders(client: &Client) -> Result<i64, DemoError> {
    Ok(client
        .query_one("select count(*) from orders", &[])
        .await
        .map_err(crate::q("count orders"))?
        .get(0))
}

async fn more_orders(client: &Client, n: i64) -> Result<(), DemoError> {
    client
        .execute(
            "INSERT INTO orders (customer_id, product_id, quantity, total, status, created_at)
             SELECT c.id, 1 + g % 2000, 1, 9.99, 'new', now()
               FROM generate_series(1, $1::bigint) g,
                    (SELECT min(id) AS id FROM customers) c",
            &[&n],
        )
        .await
        .map_err(crate::q("write orders"))?;
    Ok(())
}

async fn take(client: &Client, repo: &Repo, pgdata: &Path, kind: Kind) -> Result<Taken, DemoError> {
    let opts = RunOptions {
        pgdata: pgdata.to_path_buf(),
        kind,
        jobs: 2,
        level: 3,
        archive_timeout: Duration::from_secs(60),
    };
    let r = pgw_backup::run(client, repo, &opts, Arc::new(|_, _| {}))
        .await
        .map_err(failed)?;
    Ok(Taken {
        id: r.manifest.id.clone(),
        data_bytes: r.manifest.data_bytes,
        stored_bytes: r.manifest.stored_bytes,
        seconds: r.manifest.seconds,
    })
}

/// Runs the backup part on the running, archiving demo cluster.
pub async fn run(
    setup: &Setup,
    client: &Client,
    pgdata: &Path,
    bin_dir: &Path,
    exe: &Path,
) -> Result<BackupDemo, DemoError> {
    let repo = &setup.repo;
    let full = take(client, repo, pgdata, Kind::Full).await?;
    more_orders(client, 5000).await?;
    let incr = take(client, repo, pgdata, Kind::Incr).await?;
    more_orders(client, 2000).await?;
    let orders_at_target = orders(client).await?;
    // The target: a moment after the last commit above, before the next.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let target = chrono::Utc::now().fixed_offset();
    tokio::time::sleep(Duration::from_millis(300)).await;
    more_orders(client, 3000).await?;
    let orders_now = orders(client).await?;
    // Close the segment holding the last commits and wait until it is archived.
    let switched: String = client
        .query_one("select pg_walfile_name(pg_switch_wal())", &[])
        .await
        .map_err(crate::q("switch WAL"))?
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last: Option<String> = client
            .query_one("select last_archived_wal from pg_stat_archiver", &[])
            .await
            .map_err(crate::q("read pg_stat_archiver"))?
            .get(0);
        if last.is_some_and(|l| l.as_str() >= switched.as_str()) {
            break;
        }
        if Instant::now() > deadline {
            return Err(failed(format!("{switched} was not archived within 60 s")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drill = pgw_backup::drill::drill(
        repo,
        &DrillOptions {
            backup: None,
            target: Target::Time(target),
            jobs: 2,
            bin: pgw_node::BinDir::new(bin_dir),
            user: pgw_node::OsUser::detect().map_err(failed)?,
            db_user: "postgres".into(),
            check_query: Some("select count(*) from orders".into()),
            exe: PathBuf::from(exe),
            timeout: Duration::from_secs(120),
            cancel: Default::default(),
        },
        &|_, _| {},
    )
    .await
    .map_err(failed)?;
    let matches = drill.check_result == orders_at_target.to_string();
    Ok(BackupDemo {
        repo: repo.store.url().to_string(),
        full,
        incr,
        target_time: target.to_rfc3339(),
        orders_at_target,
        orders_now,
        drill,
        matches,
    })
}
