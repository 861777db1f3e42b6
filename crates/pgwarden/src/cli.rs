//! Flag definitions (first stage: syntax only, no I/O).

use clap::{Args, Parser, Subcommand, ValueEnum};

use pgw_tune::inputs::{DbSize, Storage, Workload};

pub const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    the work failed: server unreachable, authentication or permission refused,
       the server rejected a value (nothing was changed), or a change was not confirmed
  2    invalid usage or input: unknown flags, bad values, malformed DSN
  130  interrupted (Ctrl-C); throwaway clusters are stopped first, and tune apply
       puts back any entry it had written

Connections follow libpq: -d/--dsn takes a conninfo string (\"host=db port=5432 user=me\")
or a URI (postgresql://me@db/app); PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD,
PGSSLMODE, PGSSLROOTCERT and ~/.pgpass are honoured.";

/// pgwarden: what a senior PostgreSQL DBA does, measured rather than claimed.
#[derive(Debug, Parser)]
#[command(name = "pgwarden", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Log detail on stderr: error, warn, info, debug, trace.
    #[arg(long, global = true, default_value = "warn", env = "PGWARDEN_LOG")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a throwaway cluster, load a workload, run every capability on it, stop it.
    #[command(after_help = EXIT_CODES)]
    Demo(DemoArgs),
    /// Health checks on a live server: findings with severity and the SQL that fixes them.
    #[command(after_help = DOCTOR_EXIT_CODES)]
    Doctor(DoctorArgs),
    /// Partition sets managed from outside the database: create, maintain (premake,
    /// retention, default-partition rescue), list. What pg_partman does, without the extension.
    #[command(subcommand)]
    Partition(PartitionCmd),
    /// Recommend postgresql.conf settings from hardware and workload; diff or apply them.
    #[command(after_help = EXIT_CODES, args_conflicts_with_subcommands = true)]
    Tune(TuneCmd),
}

pub const DOCTOR_EXIT_CODES: &str = "\
Exit codes (the Nagios convention check_postgres users script against):
  0  nothing above info
  1  at least one warning
  2  at least one critical finding
  3  could not run: server unreachable, authentication refused, bad flags

Checks that need more privilege than the role has are listed under \"skipped\" with
the reason; the others still run. pg_monitor is enough for every check.";

pub const PARTITION_EXIT_CODES: &str = "\
Exit codes:
  0  success (or nothing to do)
  1  the work failed: server unreachable, permission refused, a step failed (that step and
     the rest of its set were rolled back or not run; other sets still ran)
  2  invalid usage or input: unknown flags, a table or column that does not exist, a
     column of the wrong type, an interval that does not divide, a malformed DSN
  3  maintain only: done, but some steps were skipped (a lock was busy within
     --lock-timeout, or dropping partitions was not confirmed); run it again later

Every step runs in its own short transaction with lock_timeout; --dry-run prints the SQL
and changes nothing. Set settings live in the managed database (pgwarden.partition_set).";

#[derive(Debug, Subcommand)]
pub enum PartitionCmd {
    /// Set up a partition set: a partitioned table (or an empty plain one, re-created
    /// partitioned), its first partitions, and its stored settings; all in one transaction.
    #[command(after_help = PARTITION_EXIT_CODES)]
    Create(Box<PartitionCreateArgs>),
    /// Make partitions ahead, rescue rows from the default partition, apply retention.
    #[command(after_help = PARTITION_EXIT_CODES)]
    Maintain(PartitionMaintainArgs),
    /// Show each managed set: partitions, bounds, rows, sizes, gaps, default-partition rows.
    #[command(after_help = PARTITION_EXIT_CODES)]
    List(PartitionListArgs),
    /// Take an existing partitioned table (made by hand or by pg_partman) under management,
    /// renaming nothing; pg_partman's own maintenance of it is switched off.
    #[command(after_help = PARTITION_EXIT_CODES)]
    Adopt(Box<PartitionAdoptArgs>),
}

#[derive(Debug, Args)]
pub struct PartitionAdoptArgs {
    /// Database to manage: conninfo string or URI.
    #[arg(short = 'd', long)]
    pub dsn: Option<String>,
    /// The partitioned table, schema-qualified (default schema: public).
    #[arg(long)]
    pub table: String,
    /// Range sets: the interval (default: read from the partitions' bounds).
    #[arg(long, value_name = "INTERVAL")]
    pub range: Option<String>,
    /// Partitions kept ahead (default: pg_partman's setting for the set, else 4).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub premake: Option<u32>,
    /// Retire partitions entirely older than this (default: pg_partman's setting, else none).
    #[arg(long)]
    pub retention: Option<String>,
    /// What retention does (default: pg_partman's retention_keep_table, else detach).
    #[arg(long, value_enum)]
    pub retention_mode: Option<RetentionModeArg>,
    #[command(flatten)]
    pub new_partitions: NewPartitionArgs,
    /// Show what would be registered and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("layout").required(true).args(["range", "list", "hash"])))]
pub struct PartitionCreateArgs {
    /// Database to manage: conninfo string or URI.
    #[arg(short = 'd', long)]
    pub dsn: Option<String>,
    /// The table, schema-qualified (default schema: public).
    #[arg(long)]
    pub table: String,
    /// The partition key column.
    #[arg(long)]
    pub column: String,
    /// Range partitions of this width: daily, weekly, monthly, quarterly, yearly, hourly,
    /// '1 month', '7 days', '6 hours', or a number for integer keys.
    #[arg(long, value_name = "INTERVAL")]
    pub range: Option<String>,
    /// A list partition: NAME=VALUE,VALUE (repeatable), e.g. --list us=US,CA makes <table>_us.
    #[arg(long = "list", value_name = "NAME=VALUES", value_parser = parse_list)]
    pub list: Vec<(String, Vec<String>)>,
    /// Hash partitions: the modulus (that many partitions).
    #[arg(long, value_name = "MODULUS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub hash: Option<u32>,
    /// Range sets: partitions kept ahead of the current one (and made behind it at create).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub premake: u32,
    /// Range sets: the first partition's start (YYYY-MM-DD[ HH:MM], or a number).
    #[arg(long)]
    pub start: Option<String>,
    /// Range sets: retire partitions entirely older than this ('12 months', '90 days', or a number).
    #[arg(long)]
    pub retention: Option<String>,
    /// What retention does: detach (keep the table; CONCURRENTLY where allowed) or drop.
    #[arg(long, value_enum, default_value_t = RetentionModeArg::Detach)]
    pub retention_mode: RetentionModeArg,
    /// No default partition (rows outside every partition are then refused).
    #[arg(long)]
    pub no_default: bool,
    #[command(flatten)]
    pub new_partitions: NewPartitionArgs,
    /// Convert a table that holds rows without asking (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Converting a populated table: rows copied per batch (each batch one transaction).
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub batch_size: u64,
    /// Converting a populated table: drop the old table once the new one has taken its name
    /// (default: keep it as <table>_pgw_old).
    #[arg(long)]
    pub drop_old: bool,
    #[command(flatten)]
    pub run: PartitionRunArgs,
}

#[derive(Debug, Args)]
pub struct PartitionMaintainArgs {
    /// Database to manage: conninfo string or URI.
    #[arg(short = 'd', long)]
    pub dsn: Option<String>,
    /// Only this set (default: every set in the database).
    #[arg(long)]
    pub table: Option<String>,
    /// Drop partitions past retention without asking (sets with --retention-mode drop).
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub run: PartitionRunArgs,
}

#[derive(Debug, Args)]
pub struct PartitionRunArgs {
    /// Print the SQL plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long a step may wait for a lock before it is skipped: 500ms, 2s, 1min.
    #[arg(long, default_value = "2s", value_parser = parse_duration_ms)]
    pub lock_timeout: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct PartitionListArgs {
    /// Database to read: conninfo string or URI.
    #[arg(short = 'd', long)]
    pub dsn: Option<String>,
    /// Only this set.
    #[arg(long)]
    pub table: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum RetentionModeArg {
    Detach,
    Drop,
}

impl From<RetentionModeArg> for pgw_partition::RetentionMode {
    fn from(m: RetentionModeArg) -> Self {
        match m {
            RetentionModeArg::Detach => pgw_partition::RetentionMode::Detach,
            RetentionModeArg::Drop => pgw_partition::RetentionMode::Drop,
        }
    }
}

/// What a set's future partitions look like: `create` and `adopt` take the same flags.
#[derive(Debug, Args, Clone)]
pub struct NewPartitionArgs {
    /// Time zone that the set's time bounds are computed in.
    #[arg(long, default_value = "UTC")]
    pub time_zone: String,
    /// New partitions' names, with {parent} and {suffix} (default: {parent}_p{suffix}).
    #[arg(long)]
    pub name_pattern: Option<String>,
    /// Owner of new partitions (default: the parent's owner).
    #[arg(long)]
    pub owner: Option<String>,
    /// Extra grant on new partitions: 'SELECT TO reporting' (repeatable; the parent's grants
    /// are always copied).
    #[arg(long = "grant", value_name = "PRIVILEGES TO ROLE")]
    pub grants: Vec<String>,
    /// Storage parameter for new partitions: autovacuum_vacuum_scale_factor=0.01 (repeatable).
    #[arg(long = "reloption", value_name = "NAME=VALUE")]
    pub reloptions: Vec<String>,
    /// Tablespace of new partitions.
    #[arg(long)]
    pub tablespace: Option<String>,
}

impl NewPartitionArgs {
    /// The set's template for new partitions.
    pub fn template(&self) -> pgw_partition::Template {
        pgw_partition::Template {
            owner: self.owner.clone(),
            grants: self.grants.clone(),
            reloptions: self.reloptions.clone(),
            tablespace: self.tablespace.clone(),
        }
    }
}

/// `us=US,CA` -> ("us", ["US", "CA"]).
fn parse_list(s: &str) -> Result<(String, Vec<String>), String> {
    let (name, values) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not NAME=VALUE,VALUE"))?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("list name '{name}' must be letters, digits and _"));
    }
    let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
    if values.iter().any(String::is_empty) {
        return Err(format!("'{s}' has an empty value"));
    }
    Ok((name.to_lowercase(), values))
}

/// `500ms`, `2s`, `1min`, or a bare number of milliseconds.
fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a duration such as 500ms, 2s or 1min"))?;
    let ms = match t[digits.len()..].trim() {
        "" | "ms" => n,
        "s" => n.saturating_mul(1000),
        "min" => n.saturating_mul(60_000),
        _ => return Err(format!("'{s}' is not a duration such as 500ms, 2s or 1min")),
    };
    if ms == 0 || ms > 3_600_000 {
        return Err(format!("'{s}' must be between 1ms and 1 hour"));
    }
    Ok(ms)
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Server to check: conninfo string or URI.
    #[arg(short = 'd', long)]
    pub dsn: Option<String>,
    /// Only this database (default: every database that allows connections).
    #[arg(long)]
    pub dbname: Option<String>,
    /// Run only this check (see --list).
    #[arg(long = "check", value_name = "ID")]
    pub check: Option<String>,
    /// List the checks with their thresholds and exit.
    #[arg(long)]
    pub list: bool,
    /// Thresholds from a TOML file with a [thresholds] table (flags override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Change a threshold: --threshold idle_in_transaction_warning_secs=30 (repeatable).
    #[arg(long = "threshold", value_name = "NAME=VALUE")]
    pub thresholds: Vec<String>,
    /// Output: table (default), json, or nagios (check_postgres-style lines).
    #[arg(long, value_enum, default_value_t = DoctorFormat::Table)]
    pub format: DoctorFormat,
    /// The server's host, for config_audit's tuning advice.
    #[command(flatten)]
    pub host: HostArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DoctorFormat {
    Table,
    Json,
    Nagios,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Rows in the largest table (the demo scales the others from it).
    #[arg(long, default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1000..=50_000_000))]
    pub rows: u64,
}

#[derive(Debug, Args)]
pub struct TuneCmd {
    #[command(flatten)]
    pub args: TuneArgs,
    /// Compare the recommendation with the live server's settings (needs a server).
    #[arg(long)]
    pub diff: bool,
    /// Output: table (default), json, conf (a postgresql.conf snippet) or sql (ALTER SYSTEM).
    #[arg(long, value_enum, default_value_t = TuneFormat::Table)]
    pub format: TuneFormat,
    #[command(subcommand)]
    pub action: Option<TuneAction>,
}

#[derive(Debug, Subcommand)]
pub enum TuneAction {
    /// Validate every value against the server, then ALTER SYSTEM + reload, all or nothing.
    #[command(after_help = EXIT_CODES)]
    Apply(ApplyArgs),
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub args: TuneArgs,
    /// Apply without asking (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args, Clone)]
pub struct TuneArgs {
    /// Server to read (and for apply, change): conninfo string or URI.
    #[arg(short = 'd', long)]
    pub dsn: Option<String>,
    #[command(flatten)]
    pub host: HostArgs,
    /// Expected max_connections (default: the server's, else the workload's default).
    #[arg(long, value_parser = parse_connections, allow_hyphen_values = true)]
    pub connections: Option<u32>,
    /// PostgreSQL major version, 10 to 18 (default: the server's, else 15).
    #[arg(long, value_parser = clap::value_parser!(u32).range(10..=18))]
    pub pg_version: Option<u32>,
    /// Database size against RAM: less-ram, mid-ram (1-3x, default), greater-ram.
    #[arg(long, value_enum)]
    pub db_size: Option<DbSizeArg>,
    /// Override or add a setting: --set work_mem=64MB (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, String)>,
}

/// The PostgreSQL host as tune and doctor's config_audit take it.
#[derive(Debug, Args, Clone)]
pub struct HostArgs {
    /// Total memory of PostgreSQL's host, e.g. 16GB, 512MB (default: read from this machine
    /// when the server runs on it).
    #[arg(long, value_parser = parse_memory, allow_hyphen_values = true)]
    pub memory: Option<u64>,
    /// CPU cores (default: read from this machine; unknown leaves parallel settings alone).
    #[arg(long, value_parser = parse_cpus, allow_hyphen_values = true)]
    pub cpus: Option<u32>,
    /// Data storage (default: detected from the data directory's disk, else ssd).
    #[arg(long, value_enum)]
    pub storage: Option<StorageArg>,
    /// Workload: web, oltp, dw (data warehouse), desktop, mixed (default).
    #[arg(long, value_enum)]
    pub workload: Option<WorkloadArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TuneFormat {
    Table,
    Json,
    Conf,
    Sql,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StorageArg {
    Ssd,
    Hdd,
    San,
    Nvme,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum WorkloadArg {
    Web,
    Oltp,
    Dw,
    Desktop,
    Mixed,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[allow(clippy::enum_variant_names)] // the variant names are the flag values
pub enum DbSizeArg {
    LessRam,
    MidRam,
    GreaterRam,
}

impl From<StorageArg> for Storage {
    fn from(s: StorageArg) -> Self {
        match s {
            StorageArg::Ssd => Storage::Ssd,
            StorageArg::Hdd => Storage::Hdd,
            StorageArg::San => Storage::San,
            StorageArg::Nvme => Storage::Nvme,
        }
    }
}

impl From<WorkloadArg> for Workload {
    fn from(w: WorkloadArg) -> Self {
        match w {
            WorkloadArg::Web => Workload::Web,
            WorkloadArg::Oltp => Workload::Oltp,
            WorkloadArg::Dw => Workload::Dw,
            WorkloadArg::Desktop => Workload::Desktop,
            WorkloadArg::Mixed => Workload::Mixed,
        }
    }
}

impl From<DbSizeArg> for DbSize {
    fn from(d: DbSizeArg) -> Self {
        match d {
            DbSizeArg::LessRam => DbSize::LessRam,
            DbSizeArg::MidRam => DbSize::MidRam,
            DbSizeArg::GreaterRam => DbSize::GreaterRam,
        }
    }
}

fn parse_memory(s: &str) -> Result<u64, String> {
    pgw_tune::units::parse_memory(s).map_err(|e| e.to_string())
}

fn parse_cpus(s: &str) -> Result<u32, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n as u32),
        Ok(n) => Err(format!(
            "must be a whole number of cores from 1 to 100000 (got {n})"
        )),
        Err(_) => Err(format!("'{s}' is not a whole number of cores")),
    }
}

fn parse_connections(s: &str) -> Result<u32, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if (1..=999_999).contains(&n) => Ok(n as u32),
        Ok(n) => Err(format!("must be from 1 to 999999 (got {n})")),
        Err(_) => Err(format!("'{s}' is not a whole number")),
    }
}

fn parse_set(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not NAME=VALUE"))?;
    let name = name.trim();
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !valid {
        return Err(format!("'{name}' is not a setting name"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("the value of {name} contains a control character"));
    }
    Ok((name.to_ascii_lowercase(), value.trim().to_string()))
}
