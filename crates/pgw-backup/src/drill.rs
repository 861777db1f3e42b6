//! `backup drill`: restores into a throwaway cluster on a free loopback port, replays to the
//! target, promotes, checks every table and index with `pg_amcheck`, runs a check query, and
//! reports the measured recovery time (restore start to a writable server) against the
//! one-hour target. A restore counts as good only when amcheck passes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pgw_node::{BinDir, Node, OsUser, StartOptions, StopMode, StopOptions, Tool};

use crate::error::{BackupError, Result};
use crate::repo::Repo;
use crate::restore::{restore, RestoreOptions, Target, TargetAction};

/// The service level: recovery in under an hour.
pub const RTO_TARGET: Duration = Duration::from_secs(3600);

/// How to drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub backup: Option<String>,
    pub target: Target,
    pub jobs: usize,
    pub bin: BinDir,
    /// The restored cluster's OS user.
    pub user: OsUser,
    /// The database role to connect as (a superuser of the backed-up cluster).
    pub db_user: String,
    /// A query whose first value is reported (default: the number of relations).
    pub check_query: Option<String>,
    /// pgwarden itself, for the restore_command.
    pub exe: PathBuf,
    /// The longest the replay may take.
    pub timeout: Duration,
    /// Set to stop: the server is stopped and every file removed.
    pub cancel: crate::error::Cancel,
}

/// What a drill measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrillReport {
    pub backup: String,
    pub chain: Vec<String>,
    pub target: String,
    pub restored_bytes: u64,
    pub restore_seconds: f64,
    /// Restore end to the server accepting connections.
    pub start_seconds: f64,
    /// Accepting connections to writable (replay and promotion).
    pub replay_seconds: f64,
    /// Restore start to a writable server.
    pub rto_seconds: f64,
    pub rto_target_seconds: f64,
    pub rto_met: bool,
    pub amcheck_ok: bool,
    pub amcheck_seconds: f64,
    /// What pg_amcheck said when it failed (its last lines).
    pub amcheck_output: String,
    pub check_query: String,
    pub check_result: String,
    /// Restored, writable, amcheck clean and within the RTO target.
    pub ok: bool,
}

/// Stops the throwaway server however the drill ends.
struct Running(Option<Node>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(node) = self.0.take() {
            let _ = node.stop(&StopOptions::new(
                StopMode::Immediate,
                Duration::from_secs(30),
            ));
        }
    }
}

/// Runs a drill.
pub async fn drill(
    repo: &Repo,
    opts: &DrillOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<DrillReport> {
    opts.bin
        .require(&[Tool::PgCtl, Tool::Postgres, Tool::PgAmcheck])?;
    let base = pgw_cluster::os::temp_base(&opts.user);
    let tmp = tempfile::Builder::new()
        .prefix("pgwarden-drill-")
        .tempdir_in(&base)
        .map_err(|e| BackupError::io("make a temporary directory in", &base, e))?;
    opts.user.chown(tmp.path())?;
    let pgdata = tmp.path().join("data");
    // The server's restore_command runs without our environment's PG* variables: a key
    // from $PGWARDEN_ENCRYPTION_KEY goes to a file only the server's user reads.
    let mut flags = repo.store.options.flags();
    if repo.key.is_some() && repo.store.options.key_file.is_none() {
        if let Some(secret) = repo.store.options.secret()? {
            let f = tmp.path().join("key");
            opts.user.write_file(&f, &secret, 0o600)?;
            flags.extend(["--encryption-key-file".to_string(), f.display().to_string()]);
        }
    }
    let restore_command = restore_command(&opts.exe, &flags)?;
    let began = Instant::now();
    let restored = restore(
        repo,
        &RestoreOptions {
            pgdata: pgdata.clone(),
            backup: opts.backup.clone(),
            target: opts.target.clone(),
            action: TargetAction::Promote,
            jobs: opts.jobs,
            archive: false,
            restore_command,
            user: opts.user.clone(),
            cancel: opts.cancel.clone(),
        },
        progress,
    )
    .await?;
    let restore_seconds = began.elapsed().as_secs_f64();
    crate::error::check(&opts.cancel)?;

    let hba = tmp.path().join("pg_hba.conf");
    opts.user.write_file(
        &hba,
        b"local all all trust\nhost all all 127.0.0.1/32 trust\n",
        0o600,
    )?;
    let node = Node::open(opts.bin.clone(), opts.user.clone(), &pgdata)?
        .with_log_file(tmp.path().join("server.log"));
    let port = pgw_cluster::ports::reserve()
        .map_err(|e| BackupError::Failed(format!("find a free port: {e}")))?;
    // The server binds it now; the reservation only keeps this process from handing it out.
    pgw_cluster::ports::release(port);
    let sock = tmp.path().display().to_string();
    let start = StartOptions::default()
        .port(port)
        .setting("listen_addresses", "127.0.0.1")
        .setting("unix_socket_directories", &sock)
        .setting("hba_file", &hba.display().to_string())
        .setting("archive_mode", "off")
        .setting("hot_standby", "on")
        .timeout(opts.timeout);
    // Guarded before it starts: however the drill ends from here, the server is stopped.
    let running = Running(Some(node.clone()));
    let node_for_start = node.clone();
    tokio::task::spawn_blocking(move || node_for_start.start(&start))
        .await
        .map_err(|e| BackupError::Failed(format!("start the restored cluster: {e}")))??;
    crate::error::check(&opts.cancel)?;
    let accepting = Instant::now();
    let start_seconds = accepting.duration_since(began).as_secs_f64() - restore_seconds;

    let conninfo = format!(
        "host=127.0.0.1 port={port} user={} dbname=postgres connect_timeout=10",
        pgw_node::conninfo_quote(&opts.db_user)
    );
    let deadline = accepting + opts.timeout;
    let client = loop {
        match tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                break client;
            }
            Err(e) => {
                crate::error::check(&opts.cancel)?;
                if node.running_pid().is_none() || Instant::now() > deadline {
                    return Err(server_gone(
                        &node,
                        &format!("connect to the restored cluster: {e}"),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    loop {
        let writable = client
            .query_one("select pg_current_xact_id()::text", &[])
            .await
            .is_ok();
        if writable {
            break;
        }
        crate::error::check(&opts.cancel)?;
        if node.running_pid().is_none() {
            return Err(server_gone(
                &node,
                "the restored cluster stopped during recovery",
            ));
        }
        if client.is_closed() {
            return Err(server_gone(
                &node,
                "the restored cluster closed the connection during recovery",
            ));
        }
        if Instant::now() > deadline {
            return Err(BackupError::Failed(format!(
                "the restored cluster was not writable within {} s",
                opts.timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rto = began.elapsed();
    let replay_seconds = rto.as_secs_f64() - restore_seconds - start_seconds;

    let check_query = opts
        .check_query
        .clone()
        .unwrap_or_else(|| "select count(*) from pg_class".to_string());
    let check_result = match client.simple_query(&check_query).await {
        Ok(msgs) => msgs
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some(r.get(0).unwrap_or("NULL").to_string())
                }
                _ => None,
            })
            .unwrap_or_default(),
        Err(e) => {
            return Err(BackupError::Failed(format!(
                "the check query failed on the restored cluster: {}",
                pgw_common::error_line(&e)
            )))
        }
    };

    let amcheck_began = Instant::now();
    let mut cmd = opts.bin.command(Tool::PgAmcheck);
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        &opts.db_user,
        "--install-missing",
        "--all",
    ]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| BackupError::Failed(format!("run pg_amcheck: {e}")))?
        .map_err(|e| BackupError::io("run", "pg_amcheck", e))?;
    let amcheck_ok = out.status.success();
    let amcheck_output = if amcheck_ok {
        String::new()
    } else {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    };
    let amcheck_seconds = amcheck_began.elapsed().as_secs_f64();
    drop(client);
    drop(running);
    let rto_met = rto < RTO_TARGET;
    Ok(DrillReport {
        backup: restored.backup,
        chain: restored.chain,
        target: restored.target,
        restored_bytes: restored.bytes,
        restore_seconds,
        start_seconds,
        replay_seconds,
        rto_seconds: rto.as_secs_f64(),
        rto_target_seconds: RTO_TARGET.as_secs_f64(),
        rto_met,
        amcheck_ok,
        amcheck_seconds,
        amcheck_output,
        check_query,
        check_result,
        ok: amcheck_ok && rto_met,
    })
}

/// The restored server's last FATAL or PANIC line, with `what`.
fn server_gone(node: &Node, what: &str) -> BackupError {
    let log = node.log();
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains("FATAL") || l.contains("PANIC"))
        .unwrap_or("")
        .trim();
    if last.is_empty() {
        BackupError::Failed(what.to_string())
    } else {
        BackupError::Failed(format!("{what}: {last}"))
    }
}

/// `restore_command` for pgwarden at `exe` with the repository's flags.
pub fn restore_command(exe: &std::path::Path, flags: &[String]) -> Result<String> {
    wal_command(exe, "fetch", flags, "%f %p")
}

/// `archive_command` for pgwarden at `exe` with the repository's flags.
pub fn archive_command(exe: &std::path::Path, flags: &[String]) -> Result<String> {
    wal_command(exe, "push", flags, "%p")
}

/// `<exe> wal <verb> <flags> <placeholders>`, quoted for the shell PostgreSQL runs it with.
fn wal_command(exe: &std::path::Path, verb: &str, flags: &[String], args: &str) -> Result<String> {
    let mut words = vec![exe.display().to_string(), "wal".into(), verb.into()];
    words.extend(flags.iter().cloned());
    let quoted = shlex::try_join(words.iter().map(String::as_str))
        .map_err(|_| BackupError::Input("a repository flag holds a NUL byte".into()))?;
    Ok(format!("{quoted} {args}"))
}
