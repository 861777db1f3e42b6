//! The top level of the command line (first stage: syntax only, no I/O): the global
//! flags and one variant per command, whose flags live in that command's module.

use clap::{CommandFactory, Parser, Subcommand};

use crate::cmd::{backup, demo, doctor, ha, partition, pool, replica, tune};
use crate::exit::{Convention, EXIT_CODES};

/// pgwarden: what a senior PostgreSQL DBA does, measured rather than claimed.
#[derive(Debug, Parser)]
#[command(name = "pgwarden", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Log detail on stderr: error, warn, info, debug, trace (or a tracing filter such as
    /// pgw_partition=debug).
    #[arg(long, global = true, default_value = "warn", env = "PGWARDEN_LOG")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Base backups (full and page-level incremental) to a directory or S3: init, run,
    /// list, verify, restore (point in time), expire, drill (a measured restore).
    #[command(subcommand)]
    Backup(backup::BackupCmd),
    /// Start a throwaway cluster, load a workload, run every capability on it, stop it.
    Demo(demo::DemoArgs),
    /// Health checks on a live server: findings with severity and the SQL that fixes them.
    Doctor(doctor::DoctorArgs),
    /// Automatic failover on etcd: the node agent, and list / switchover / failover /
    /// pause / resume.
    #[command(subcommand)]
    Ha(ha::HaCmd),
    /// Partition sets managed from outside the database: create, maintain (premake,
    /// retention, default-partition rescue), list. What pg_partman does, without the extension.
    #[command(subcommand)]
    Partition(partition::PartitionCmd),
    /// A PgBouncer-compatible connection pooler, run in the foreground from a
    /// pgbouncer.ini or a pool.toml.
    Pool(pool::PoolArgs),
    /// Streaming replicas: status of standbys and slots against the 500 ms lag target, promote.
    #[command(subcommand)]
    Replica(replica::ReplicaCmd),
    /// Recommend postgresql.conf settings from hardware and workload; diff or apply them.
    Tune(tune::TuneCmd),
    /// WAL archiving: push (archive_command) and fetch (restore_command).
    #[command(subcommand)]
    Wal(backup::WalCmd),
}

impl Command {
    /// The command's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Backup(_) => "backup",
            Command::Demo(_) => "demo",
            Command::Doctor(_) => "doctor",
            Command::Ha(_) => "ha",
            Command::Partition(_) => "partition",
            Command::Pool(_) => "pool",
            Command::Replica(_) => "replica",
            Command::Tune(_) => "tune",
            Command::Wal(backup::WalCmd::Fetch(_)) => "wal fetch",
            Command::Wal(_) => "wal",
        }
    }
}

/// How the command named by `name` reports exit codes.
pub fn convention(name: Option<&str>) -> Convention {
    match name {
        Some("doctor") => Convention::Nagios,
        Some("wal fetch") => Convention::RestoreCommand,
        _ => Convention::Pgwarden,
    }
}

/// The command a command line names even when the rest of it does not parse (so that
/// `pgwarden --log debug doctor --bogus` is still a doctor usage error): clap's lenient
/// parse, which skips global flags and their values wherever they sit.
pub fn command_named(argv: &[std::ffi::OsString]) -> Option<String> {
    let lenient = Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(argv)
        .ok()
        .and_then(|m| match m.subcommand() {
            // restore_command's convention is wal fetch's own, also for a usage error.
            Some(("wal", sub)) if sub.subcommand_name() == Some("fetch") => {
                Some("wal fetch".to_string())
            }
            Some((name, _)) => Some(name.to_string()),
            None => None,
        });
    // An unknown flag before the command (`pgwarden --bogus doctor`) stops clap early: then
    // the first word that names a command is the command.
    lenient.or_else(|| {
        let names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        argv.iter()
            .skip(1)
            .filter_map(|a| a.to_str())
            .find(|a| names.iter().any(|n| n == a))
            .map(str::to_string)
    })
}
