//! `pgwarden backup` (init, run, list, verify, restore, expire, drill) and `pgwarden wal`
//! (push, fetch: archive_command and restore_command).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use pgw_backup::repo::RepoFile;
use pgw_backup::restore::{Target, TargetAction};
use pgw_backup::{Kind, Repo, RepoOptions};
use pgw_common::output::table;

use crate::args::OutputFormat;
use crate::exit::{Failure, OrFail, Outcome, Usage, BACKUP_EXIT_CODES, WAL_EXIT_CODES};
use crate::render::{json, out, size};
use crate::term;

/// Where the repository is: every backup and wal command takes these.
#[derive(Debug, Args, Clone)]
pub struct RepoArgs {
    /// The repository: a directory (/backups/pg1, file:///backups/pg1) or
    /// s3://bucket/prefix.
    #[arg(long, env = "PGWARDEN_REPO", value_name = "URL")]
    pub repo: Option<String>,
    /// A TOML file with the repository and its credentials (keys repo, s3_endpoint,
    /// s3_region, s3_access_key_id, s3_secret_access_key, encryption_key_file); flags
    /// override it. archive_command and restore_command should name one: they run without
    /// your environment.
    #[arg(long, env = "PGWARDEN_REPO_CONFIG", value_name = "FILE")]
    pub repo_config: Option<PathBuf>,
    /// S3 endpoint (MinIO, Ceph, ...); default AWS. http:// endpoints are allowed.
    #[arg(long, env = "PGWARDEN_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region (default $AWS_REGION, else us-east-1).
    #[arg(long, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// S3 access key id (default $AWS_ACCESS_KEY_ID).
    #[arg(long, value_name = "ID")]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key (default $AWS_SECRET_ACCESS_KEY; prefer the variable: flags
    /// show in ps).
    #[arg(long, value_name = "KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// The file holding the encryption secret of an encrypted repository (default
    /// $PGWARDEN_ENCRYPTION_KEY holds the secret itself).
    #[arg(long, env = "PGWARDEN_ENCRYPTION_KEY_FILE", value_name = "FILE")]
    pub encryption_key_file: Option<PathBuf>,
}

impl RepoArgs {
    /// The repository file (when given) with the flags over it.
    fn options(&self) -> Result<RepoOptions, Failure> {
        let abs = |f: &PathBuf| std::path::absolute(f).unwrap_or_else(|_| f.clone());
        let file = match &self.repo_config {
            Some(f) => RepoFile::read(f).or_fail("repository")?,
            None => RepoFile::default(),
        };
        let url = self.repo.clone().or(file.repo).ok_or_else(|| {
            Failure::from_classified(Usage(
                "no repository: give --repo URL, $PGWARDEN_REPO or --repo-config FILE",
            ))
        })?;
        Ok(RepoOptions {
            url,
            s3_endpoint: self.s3_endpoint.clone().or(file.s3_endpoint),
            s3_region: self.s3_region.clone().or(file.s3_region),
            s3_access_key_id: self.s3_access_key_id.clone().or(file.s3_access_key_id),
            s3_secret_access_key: self
                .s3_secret_access_key
                .clone()
                .or(file.s3_secret_access_key),
            key_file: self
                .encryption_key_file
                .as_ref()
                .or(file.encryption_key_file.as_ref())
                .map(abs),
            config_file: self.repo_config.as_ref().map(abs),
        })
    }

    async fn open(&self, what: &'static str) -> Result<Repo, Failure> {
        Repo::open(&self.options()?).await.or_fail(what)
    }
}

#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Make a repository for the cluster -d connects to (records its system identifier;
    /// the repository refuses any other cluster).
    #[command(after_help = BACKUP_EXIT_CODES)]
    Init(InitArgs),
    /// Take a base backup (full, or page-level incremental on the newest backup).
    #[command(after_help = BACKUP_EXIT_CODES)]
    Run(RunArgs),
    /// Every backup: type, times, LSNs, sizes, WAL range, and to which times it restores.
    #[command(after_help = BACKUP_EXIT_CODES)]
    List(ListArgs),
    /// Re-read every backup and WAL file, check every checksum and that the WAL has no gap.
    #[command(after_help = BACKUP_EXIT_CODES)]
    Verify(VerifyArgs),
    /// Restore a backup into an empty directory, with a recovery target.
    #[command(after_help = BACKUP_EXIT_CODES)]
    Restore(RestoreArgs),
    /// Remove old backups and the WAL no remaining backup needs.
    #[command(after_help = BACKUP_EXIT_CODES)]
    Expire(ExpireArgs),
    /// Restore into a throwaway cluster, replay, promote, run pg_amcheck and a check query,
    /// and report the measured recovery time against the one-hour target.
    #[command(after_help = BACKUP_EXIT_CODES)]
    Drill(DrillArgs),
}

#[derive(Debug, Subcommand)]
pub enum WalCmd {
    /// Archive one WAL file (archive_command = 'pgwarden wal push %p --repo URL').
    #[command(after_help = WAL_EXIT_CODES)]
    Push(PushArgs),
    /// Restore one WAL file (restore_command = 'pgwarden wal fetch %f %p --repo URL').
    #[command(after_help = WAL_EXIT_CODES)]
    Fetch(FetchArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The server: conninfo string or URI.
    #[arg(short = 'd', long)]
    pub dsn: Option<String>,
    /// Encrypt every object (AES-256-GCM) with the key from --encryption-key-file or
    /// $PGWARDEN_ENCRYPTION_KEY.
    #[arg(long)]
    pub encrypt: bool,
    /// Output: table (default) or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TypeArg {
    Full,
    Incr,
}

fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The server: conninfo string or URI (a primary or a standby; superuser or a role
    /// allowed pg_backup_start/pg_backup_stop).
    #[arg(short = 'd', long)]
    pub dsn: Option<String>,
    /// The server's data directory, on this machine.
    #[arg(long, value_name = "DIR")]
    pub pgdata: PathBuf,
    /// full, or incr: only the pages changed since the newest backup (a full when there is
    /// none).
    #[arg(long = "type", value_enum, default_value_t = TypeArg::Full)]
    pub kind: TypeArg,
    /// Reading and compressing threads (default: the cores).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub jobs: Option<u32>,
    /// zstd level, 1-19.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compress_level: i32,
    /// How long to wait for the backup's last WAL segment to be archived, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub archive_timeout: u64,
    /// Output: table (default) or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Output: table (default) or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Reading threads (default: the cores).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub jobs: Option<u32>,
    /// Output: table (default) or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

/// Where recovery stops: at most one of these (default: the end of the archived WAL).
#[derive(Debug, Args, Clone)]
#[group(multiple = false)]
pub struct TargetArgs {
    /// The last commit before this time (with a zone: 2026-12-06 14:30:00+00).
    #[arg(long, value_parser = Target::parse_time)]
    pub target_time: Option<Target>,
    /// This WAL location (X/Y).
    #[arg(long, value_parser = parse_lsn)]
    pub target_lsn: Option<pgw_node::Lsn>,
    /// This transaction's commit.
    #[arg(long)]
    pub target_xid: Option<u64>,
    /// The end of the archived WAL (the default).
    #[arg(long)]
    pub latest: bool,
}

fn parse_lsn(s: &str) -> Result<pgw_node::Lsn, String> {
    s.parse()
        .map_err(|e: pgw_node::LsnParseError| e.to_string())
}

impl TargetArgs {
    fn target(&self) -> Target {
        if let Some(t) = &self.target_time {
            t.clone()
        } else if let Some(l) = self.target_lsn {
            Target::Lsn(l)
        } else if let Some(x) = self.target_xid {
            Target::Xid(x)
        } else {
            Target::Latest
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ActionArg {
    Promote,
    Pause,
    Shutdown,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The directory to restore into (missing or empty).
    #[arg(long, value_name = "DIR")]
    pub pgdata: PathBuf,
    /// The backup to restore (default: the newest one the target can use).
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// What the server does at the target.
    #[arg(long, value_enum, default_value_t = ActionArg::Pause)]
    pub target_action: ActionArg,
    /// Writing threads (default: the cores).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub jobs: Option<u32>,
    /// Set archive_mode = off in the restored cluster (so that it does not archive into the
    /// repository).
    #[arg(long)]
    pub no_archive: bool,
    /// The OS user that will run the restored server (owner of its files; when root).
    #[arg(long, default_value = pgw_node::DEFAULT_SERVER_USER)]
    pub os_user: String,
    /// Output: table (default) or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ExpireArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Keep the newest N full backups and what depends on them.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub retain_full: u32,
    /// Also keep what restoring to any time in the last D days needs.
    #[arg(long, value_parser = parse_days)]
    pub retain_days: Option<f64>,
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove without asking (needed when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Output: table (default) or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

fn parse_days(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(d) if d.is_finite() && d >= 0.0 => Ok(d),
        _ => Err(format!("{s:?} is not a number of days")),
    }
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The backup to restore (default: the newest one the target can use).
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// The database role to connect to the restored cluster as (one of its superusers).
    #[arg(long, default_value = "postgres")]
    pub db_user: String,
    /// A query run on the restored cluster; its first value is reported.
    #[arg(long, value_name = "SQL")]
    pub check_query: Option<String>,
    /// Writing threads (default: the cores).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub jobs: Option<u32>,
    /// The longest the replay may take, in seconds.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub timeout: u64,
    /// PostgreSQL's programs (default $PGWARDEN_PG_BIN, else /usr/lib/postgresql/15/bin).
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Output: table (default) or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The WAL file (%p).
    pub path: PathBuf,
    #[command(flatten)]
    pub repo: RepoArgs,
    /// zstd level, 1-19.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compress_level: i32,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The WAL file's name (%f).
    pub name: String,
    /// Where to write it (%p).
    pub dest: PathBuf,
    #[command(flatten)]
    pub repo: RepoArgs,
}

fn jobs(j: Option<u32>) -> usize {
    j.map_or_else(default_jobs, |j| j as usize)
}

fn os_user(name: &str) -> Result<pgw_node::OsUser, Failure> {
    pgw_node::OsUser::detect_named(name)
        .map_err(pgw_backup::BackupError::from)
        .or_fail("backup")
}

/// Runs `pgwarden backup ...`.
pub async fn run(cmd: BackupCmd) -> Result<Outcome, Failure> {
    match cmd {
        BackupCmd::Init(a) => init(a).await,
        BackupCmd::Run(a) => run_backup(a).await,
        BackupCmd::List(a) => list(a).await,
        BackupCmd::Verify(a) => verify(a).await,
        BackupCmd::Restore(a) => restore(a).await,
        BackupCmd::Expire(a) => expire(a).await,
        BackupCmd::Drill(a) => drill(a).await,
    }
}

/// Runs `pgwarden wal ...`.
pub async fn run_wal(cmd: WalCmd) -> Result<Outcome, Failure> {
    match cmd {
        WalCmd::Push(a) => {
            let repo = a.repo.open("wal push").await?;
            let r = pgw_backup::wal::push(&repo, &a.path, a.compress_level)
                .await
                .or_fail("wal push")?;
            tracing::info!(?r, path = %a.path.display(), "pushed");
            Ok(Outcome::Done)
        }
        WalCmd::Fetch(a) => {
            let repo = a.repo.open("wal fetch").await?;
            match pgw_backup::wal::fetch(&repo, &a.name, &a.dest)
                .await
                .or_fail("wal fetch")?
            {
                pgw_backup::wal::Fetched::Written(_) => Ok(Outcome::Done),
                pgw_backup::wal::Fetched::Missing => {
                    // Normal at the end of the archive and when PostgreSQL probes for
                    // timeline history files: the exit code says it, the server log stays quiet.
                    tracing::info!(name = %a.name, "not in the repository");
                    Ok(Outcome::NotFound)
                }
            }
        }
    }
}

#[derive(serde::Serialize)]
struct InitReport<'a> {
    repo: &'a str,
    system_identifier: &'a str,
    pg_version: u32,
    encrypted: bool,
    created: bool,
}

async fn init(a: InitArgs) -> Result<Outcome, Failure> {
    let (client, _) = pgw_common::connect_dsn(a.dsn.as_deref())
        .await
        .or_fail("backup init")?;
    let row = client
        .query_one(
            "select (select system_identifier::text from pg_control_system()), current_setting('server_version_num')::int / 10000, \
             (select setting::bigint from pg_settings where name = 'wal_segment_size')",
            &[],
        )
        .await
        .map_err(pgw_backup::BackupError::sql("read the cluster's identity"))
        .or_fail("backup init")?;
    let sysid: String = row.get(0);
    let version: i32 = row.get(1);
    let seg: i64 = row.get(2);
    let owner = os_user(pgw_node::DEFAULT_SERVER_USER)?;
    let (repo, created) = Repo::init(
        &a.repo.options()?,
        &owner,
        &sysid,
        version as u32,
        seg as u64,
        a.encrypt,
    )
    .await
    .or_fail("backup init")?;
    let r = InitReport {
        repo: repo.store.url(),
        system_identifier: &repo.meta.system_identifier,
        pg_version: repo.meta.pg_version,
        encrypted: repo.meta.encrypted,
        created,
    };
    match a.format {
        OutputFormat::Json => out(&json(&r)),
        OutputFormat::Table => out(&format!(
            "{} repository {} for cluster {} (PostgreSQL {}{})\n\
             archive_command = '{} wal push %p --repo {}'\n",
            if created { "made" } else { "found the" },
            r.repo,
            r.system_identifier,
            r.pg_version,
            if r.encrypted { ", encrypted" } else { "" },
            exe_path().display(),
            repo.store.options.url
        )),
    }
    Ok(Outcome::Done)
}

/// A cancel flag that Ctrl-C sets: restore and drill stop at their next step and undo what
/// they did (a second Ctrl-C is taken the same way; the work ends as soon as it can).
fn cancel_on_ctrl_c() -> pgw_backup::error::Cancel {
    let cancel = pgw_backup::error::Cancel::default();
    let flag = cancel.clone();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    cancel
}

fn exe_path() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("pgwarden"))
}

#[derive(serde::Serialize)]
struct RunSummary<'a> {
    id: &'a str,
    kind: &'a str,
    parent: Option<&'a str>,
    became_full: bool,
    start_lsn: &'a str,
    stop_lsn: &'a str,
    start_wal: &'a str,
    stop_wal: &'a str,
    from_standby: bool,
    data_bytes: u64,
    copied_bytes: u64,
    stored_bytes: u64,
    files: usize,
    seconds: f64,
}

async fn run_backup(a: RunArgs) -> Result<Outcome, Failure> {
    let repo = a.repo.open("backup run").await?;
    let (client, _) = pgw_common::connect_dsn(a.dsn.as_deref())
        .await
        .or_fail("backup run")?;
    let opts = pgw_backup::RunOptions {
        pgdata: a.pgdata.clone(),
        kind: match a.kind {
            TypeArg::Full => Kind::Full,
            TypeArg::Incr => Kind::Incr,
        },
        jobs: jobs(a.jobs),
        level: a.compress_level,
        archive_timeout: Duration::from_secs(a.archive_timeout),
    };
    let bar = std::sync::Arc::new(term::counter("backing up", "bytes"));
    let progress: pgw_backup::Progress = bar.clone();
    let r = pgw_backup::run(&client, &repo, &opts, progress)
        .await
        .or_fail("backup run")?;
    let m = &r.manifest;
    let s = RunSummary {
        id: &m.id,
        kind: m.kind.as_str(),
        parent: m.parent.as_deref(),
        became_full: r.became_full,
        start_lsn: &m.start_lsn,
        stop_lsn: &m.stop_lsn,
        start_wal: &m.start_wal,
        stop_wal: &m.stop_wal,
        from_standby: m.from_standby,
        data_bytes: m.data_bytes,
        copied_bytes: m.copied_bytes,
        stored_bytes: m.stored_bytes,
        files: m.files.len(),
        seconds: m.seconds,
    };
    match a.format {
        OutputFormat::Json => out(&json(&s)),
        OutputFormat::Table => out(&format!(
            "backup {} ({}{}{}): {} of data, {} read, {} stored, {:.1} s; WAL {}..{}{}\n",
            s.id,
            s.kind,
            s.parent.map(|p| format!(" on {p}")).unwrap_or_default(),
            if s.from_standby {
                ", from a standby"
            } else {
                ""
            },
            size(s.data_bytes as i64),
            size(s.copied_bytes as i64),
            size(s.stored_bytes as i64),
            s.seconds,
            s.start_wal,
            s.stop_wal,
            if s.became_full {
                "\n(no earlier backup to build an incremental on: taken as a full)"
            } else {
                ""
            }
        )),
    }
    Ok(Outcome::Done)
}

async fn list(a: ListArgs) -> Result<Outcome, Failure> {
    let repo = a.repo.open("backup list").await?;
    let info = pgw_backup::info::info(&repo).await.or_fail("backup list")?;
    match a.format {
        OutputFormat::Json => out(&json(&info)),
        OutputFormat::Table => {
            let rows = info.backups.iter().map(|b| {
                vec![
                    b.id.clone(),
                    b.kind.to_string(),
                    short_time(&b.start_time),
                    short_time(&b.stop_time),
                    format!("{}..{}", b.start_lsn, b.stop_lsn),
                    size(b.data_bytes as i64),
                    size(b.stored_bytes as i64),
                    format!("{}..{}", b.wal_start, b.wal_stop),
                    match (&b.restorable, &b.pitr_to) {
                        (true, Some(to)) => {
                            format!("{} .. {}", short_time(&b.stop_time), short_time(to))
                        }
                        (true, None) => "to its end".into(),
                        (false, _) => "no: WAL missing".into(),
                    },
                ]
            });
            let mut text = format!(
                "repository {} (cluster {}{})\n",
                info.repo,
                info.system_identifier,
                if info.encrypted { ", encrypted" } else { "" }
            );
            if info.backups.is_empty() {
                text.push_str("no backups\n");
            } else {
                text.push_str(&table(
                    &[
                        "backup", "type", "start", "stop", "lsn", "data", "stored", "wal",
                        "pitr to",
                    ],
                    rows,
                ));
                text.push('\n');
            }
            text.push_str(&format!(
                "WAL: {} segments, {} stored{}\n",
                info.wal.segments,
                size(info.wal.bytes as i64),
                match (&info.wal.first, &info.wal.last, &info.wal.last_archived) {
                    (Some(f), Some(l), Some(t)) =>
                        format!(", {f}..{l}, last archived {}", short_time(t)),
                    _ => String::new(),
                }
            ));
            for u in &info.unfinished {
                text.push_str(&format!(
                    "unfinished (not usable; expire removes it): {u}\n"
                ));
            }
            out(&text);
        }
    }
    Ok(Outcome::Done)
}

fn short_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_string())
}

async fn verify(a: VerifyArgs) -> Result<Outcome, Failure> {
    let repo = a.repo.open("backup verify").await?;
    let bar = term::counter("verifying", "bytes");
    let r = pgw_backup::verify::verify(&repo, jobs(a.jobs), &bar)
        .await
        .or_fail("backup verify")?;
    match a.format {
        OutputFormat::Json => out(&json(&r)),
        OutputFormat::Table => {
            let mut text = format!(
                "{} backups ({} pieces) and {} WAL files, {} read in {:.1} s: {}\n",
                r.backups,
                r.pieces,
                r.wal_files,
                size(r.bytes as i64),
                r.seconds,
                if r.problems.is_empty() {
                    "no damage".to_string()
                } else {
                    format!("{} problems", r.problems.len())
                }
            );
            if !r.problems.is_empty() {
                text.push_str(&table(
                    &["object", "problem"],
                    r.problems
                        .iter()
                        .map(|p| vec![p.object.clone(), p.what.clone()]),
                ));
                text.push('\n');
            }
            for u in &r.unfinished {
                text.push_str(&format!("unfinished backup (not usable): {u}\n"));
            }
            out(&text);
        }
    }
    Ok(if r.problems.is_empty() {
        Outcome::Done
    } else {
        Outcome::DamageFound
    })
}

async fn restore(a: RestoreArgs) -> Result<Outcome, Failure> {
    let repo = a.repo.open("backup restore").await?;
    let user = os_user(&a.os_user)?;
    let flags = repo.store.options.flags();
    let o = &repo.store.options;
    if o.config_file.is_none()
        && repo.store.local_dir().is_none()
        && (o.s3_access_key_id.is_some() || std::env::var_os("AWS_ACCESS_KEY_ID").is_some())
    {
        eprintln!(
            "pgwarden: note: the restored server's restore_command gets no S3 credentials: \
             give it the AWS_* variables, or restore with --repo-config FILE"
        );
    }
    if repo.key.is_some() && repo.store.options.key_file.is_none() {
        eprintln!(
            "pgwarden: note: the restored server's restore_command needs ${} in its environment \
             (or restore with --encryption-key-file)",
            pgw_backup::repo::KEY_ENV
        );
    }
    let restore_command =
        pgw_backup::drill::restore_command(&exe_path(), &flags).or_fail("backup restore")?;
    let opts = pgw_backup::restore::RestoreOptions {
        pgdata: a.pgdata.clone(),
        backup: a.backup.clone(),
        target: a.target.target(),
        action: match a.target_action {
            ActionArg::Promote => TargetAction::Promote,
            ActionArg::Pause => TargetAction::Pause,
            ActionArg::Shutdown => TargetAction::Shutdown,
        },
        jobs: jobs(a.jobs),
        archive: !a.no_archive,
        restore_command,
        user,
        cancel: cancel_on_ctrl_c(),
    };
    let bar = term::counter("restoring", "bytes");
    let r = match pgw_backup::restore::restore(&repo, &opts, &bar).await {
        Err(pgw_backup::BackupError::Interrupted) => {
            eprintln!("pgwarden: interrupted; what the restore wrote was removed");
            return Ok(Outcome::Interrupted);
        }
        r => r.or_fail("backup restore")?,
    };
    match a.format {
        OutputFormat::Json => out(&json(&r)),
        OutputFormat::Table => out(&format!(
            "restored backup {} (chain {}) into {}: {} files, {} in {:.1} s; recovery target: {}\n\
             start it (pg_ctl -D {} start) and it replays the archived WAL to the target\n",
            r.backup,
            r.chain.join(" <- "),
            r.pgdata,
            r.files,
            size(r.bytes as i64),
            r.seconds,
            r.target,
            r.pgdata
        )),
    }
    Ok(Outcome::Done)
}

async fn expire(a: ExpireArgs) -> Result<Outcome, Failure> {
    let repo = a.repo.open("backup expire").await?;
    let (catalog, wal_objects) = pgw_backup::expire::load(&repo)
        .await
        .or_fail("backup expire")?;
    let retention = pgw_backup::expire::Retention {
        full: a.retain_full as usize,
        days: a.retain_days,
    };
    let now = pgw_backup::run::epoch(chrono::Utc::now());
    let plan = pgw_backup::expire::plan(
        &catalog,
        &wal_objects,
        repo.meta.wal_segment_size,
        retention,
        now,
    );
    let nothing =
        plan.remove.is_empty() && plan.remove_unfinished.is_empty() && plan.remove_wal.is_empty();
    let summary = format!(
        "{} backups to remove{}, {} kept; {} unfinished to remove; {} WAL files ({}) to remove",
        plan.remove.len(),
        if plan.remove.is_empty() {
            String::new()
        } else {
            format!(" ({})", plan.remove.join(", "))
        },
        plan.keep.len(),
        plan.remove_unfinished.len(),
        plan.remove_wal.len(),
        size(plan.wal_bytes as i64)
    );
    if a.dry_run || nothing {
        match a.format {
            OutputFormat::Json => out(&json(&plan)),
            OutputFormat::Table => out(&format!(
                "{}{summary}\n",
                if nothing { "" } else { "dry run: " }
            )),
        }
        return Ok(Outcome::Done);
    }
    let question = format!("Remove from {}: {summary}?", repo.store.url());
    if !term::go_ahead(
        a.yes,
        &question,
        "refusing to remove backups without confirmation: pass --yes (stdin is not a terminal)",
    )? {
        return Ok(Outcome::NotConfirmed);
    }
    pgw_backup::expire::execute(&repo, &plan)
        .await
        .or_fail("backup expire")?;
    match a.format {
        OutputFormat::Json => out(&json(&plan)),
        OutputFormat::Table => out(&format!("removed: {summary}\n")),
    }
    Ok(Outcome::Done)
}

async fn drill(a: DrillArgs) -> Result<Outcome, Failure> {
    let repo = a.repo.open("backup drill").await?;
    let user = os_user(pgw_node::DEFAULT_SERVER_USER)?;
    let bin = match &a.bin_dir {
        Some(d) => pgw_node::BinDir::new(d),
        None => pgw_node::BinDir::from_env(),
    };
    let opts = pgw_backup::drill::DrillOptions {
        backup: a.backup.clone(),
        target: a.target.target(),
        jobs: jobs(a.jobs),
        bin,
        user,
        db_user: a.db_user.clone(),
        check_query: a.check_query.clone(),
        exe: exe_path(),
        timeout: Duration::from_secs(a.timeout),
        cancel: cancel_on_ctrl_c(),
    };
    let bar = term::counter("restoring", "bytes");
    let r = match pgw_backup::drill::drill(&repo, &opts, &bar).await {
        Err(pgw_backup::BackupError::Interrupted) => {
            eprintln!(
                "pgwarden: interrupted; the drill's server was stopped and its files removed"
            );
            return Ok(Outcome::Interrupted);
        }
        r => r.or_fail("backup drill")?,
    };
    match a.format {
        OutputFormat::Json => out(&json(&r)),
        OutputFormat::Table => {
            let rows = vec![
                vec![
                    "backup".to_string(),
                    format!("{} (chain {})", r.backup, r.chain.join(" <- ")),
                ],
                vec!["target".into(), r.target.clone()],
                vec![
                    "restore".into(),
                    format!(
                        "{:.2} s ({})",
                        r.restore_seconds,
                        size(r.restored_bytes as i64)
                    ),
                ],
                vec!["start".into(), format!("{:.2} s", r.start_seconds)],
                vec![
                    "replay + promote".into(),
                    format!("{:.2} s", r.replay_seconds),
                ],
                vec![
                    "RTO (restore start to writable)".into(),
                    format!(
                        "{:.2} s, target < {:.0} s: {}",
                        r.rto_seconds,
                        r.rto_target_seconds,
                        if r.rto_met { "met" } else { "MISSED" }
                    ),
                ],
                vec![
                    "pg_amcheck --all".into(),
                    format!(
                        "{} ({:.1} s)",
                        if r.amcheck_ok {
                            "clean"
                        } else {
                            "CORRUPTION FOUND"
                        },
                        r.amcheck_seconds
                    ),
                ],
                vec![
                    "check query".into(),
                    format!("{} -> {}", r.check_query, r.check_result),
                ],
            ];
            let mut text = table(&["drill", "result"], rows);
            text.push('\n');
            if !r.amcheck_output.is_empty() {
                text.push_str(&r.amcheck_output);
                text.push('\n');
            }
            text.push_str(if r.ok {
                "drill passed\n"
            } else {
                "drill FAILED\n"
            });
            out(&text);
        }
    }
    Ok(if r.ok {
        Outcome::Done
    } else {
        Outcome::TargetMissed
    })
}
