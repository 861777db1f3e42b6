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
