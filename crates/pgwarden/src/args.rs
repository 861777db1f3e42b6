//! Flags more than one command takes (first stage: syntax only, no I/O): the output
//! format, the PostgreSQL host's description (tune and doctor's config_audit), and their
//! value parsers.

use clap::{Args, ValueEnum};

use pgw_tune::inputs::{Storage, Workload};

/// The formats every command offers.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
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

impl HostArgs {
    /// The host as tune's resolver takes it (what is not given is read or assumed later).
    pub fn given(&self) -> pgw_tune::resolve::Given {
        pgw_tune::resolve::Given {
            memory_kb: self.memory,
            cpus: self.cpus,
            storage: self.storage.map(Into::into),
            workload: self.workload.map(Into::into),
            ..Default::default()
        }
    }
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
