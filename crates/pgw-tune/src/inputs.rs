//! What a recommendation is computed from: hardware, workload and PostgreSQL version.
//!
//! These mirror PGTune's form (DB version, DB type, total memory, CPUs, connections,
//! storage, DB size vs RAM). The OS is not an input: pgwarden only tunes Linux servers.
//! Memory is held in kB because every PGTune formula works in whole kB.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::units::format_kb;

/// Smallest total memory accepted, in kB: 512MB, PGTune's minimum.
pub const MIN_MEMORY_KB: u64 = 512 * 1024;

/// Largest total memory accepted, in kB: 16TB.
///
/// PostgreSQL caps `effective_cache_size` at INT_MAX 8kB pages (just under 16TB), and
/// PGTune's 3/4-of-RAM value passes that at about 21TB; 16TB is the round bound below it,
/// so every accepted input yields a configuration the server will start with.
pub const MAX_MEMORY_KB: u64 = 16 * 1024 * 1024 * 1024;

/// Largest CPU count accepted.
///
/// PGTune gives dw `max_parallel_workers_per_gather = ⌈CPUs/2⌉` uncapped, and PostgreSQL
/// rejects values above 1024 at startup; 2048 CPUs is the most that stays valid.
pub const MAX_CPUS: u32 = 2048;

/// Smallest `max_connections` accepted: PGTune's minimum.
///
/// PostgreSQL itself starts with as few as 4 (superuser_reserved_connections = 3 must be
/// below it), but PGTune's work_mem formula divides memory by connections, so below 20 it
/// hands each sort an outsized share of RAM, and inputs outside PGTune's range would have
/// no PGTune answer to be checked against.
pub const MIN_CONNECTIONS: u32 = 20;

/// Largest `max_connections` accepted.
///
/// PGTune allows 999999, but PostgreSQL refuses to start when max_connections plus
/// worker, autovacuum and WAL sender slots exceed MAX_BACKENDS (262143):
/// 262143 − 2048 (max_worker_processes at [`MAX_CPUS`]) − 16 (PG 18 autovacuum_worker_slots)
/// − 10 (max_wal_senders) − 2 (launcher, special workers) = 260067, rounded down.
pub const MAX_CONNECTIONS: u32 = 260_000;

/// Oldest and newest PostgreSQL major versions PGTune (and so pgwarden) tunes.
pub const MIN_PG_VERSION: u32 = 10;
/// See [`MIN_PG_VERSION`].
pub const MAX_PG_VERSION: u32 = 18;

/// What the database is used for (PGTune's "DB type").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Web application: many short queries, mostly reads.
    #[default]
    Web,
    /// Online transaction processing: many short writes.
    Oltp,
    /// Data warehouse: few large analytical queries.
    Dw,
    /// A developer machine shared with other programs.
    Desktop,
    /// A mix of short queries and reporting.
    Mixed,
}

impl Workload {
    /// Every workload, in PGTune's order.
    pub const ALL: [Workload; 5] = [
        Workload::Web,
        Workload::Oltp,
        Workload::Dw,
        Workload::Desktop,
        Workload::Mixed,
    ];

    /// The lowercase name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Web => "web",
            Workload::Oltp => "oltp",
            Workload::Dw => "dw",
            Workload::Desktop => "desktop",
            Workload::Mixed => "mixed",
        }
    }

    /// PGTune's `max_connections` when none is given.
    pub fn default_connections(self) -> u32 {
        match self {
            Workload::Web => 200,
            Workload::Oltp => 300,
            Workload::Dw => 40,
            Workload::Desktop => 20,
            Workload::Mixed => 100,
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Workload {
    type Err = InputError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Workload::ALL
            .into_iter()
            .find(|w| w.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| InputError::UnknownWorkload(s.to_string()))
    }
}

/// The kind of storage the data directory lives on (PGTune's "data storage").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// Local SATA/SAS solid-state drives.
    #[default]
    Ssd,
    /// Spinning disks.
    Hdd,
    /// Network storage: SAN, iSCSI, cloud block volumes.
    San,
    /// Local NVMe drives.
    Nvme,
}

impl Storage {
    /// Every storage class, in PGTune's order.
    pub const ALL: [Storage; 4] = [Storage::Ssd, Storage::Hdd, Storage::San, Storage::Nvme];

    /// The lowercase name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Storage::Ssd => "ssd",
            Storage::Hdd => "hdd",
            Storage::San => "san",
            Storage::Nvme => "nvme",
        }
    }
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Storage {
    type Err = InputError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Storage::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| InputError::UnknownStorage(s.to_string()))
    }
}

/// How large the database is compared with RAM (PGTune's "DB size", era C).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DbSize {
    /// The whole database fits in RAM.
    LessRam,
    /// One to three times RAM (PGTune's default).
    #[default]
    MidRam,
    /// More than three times RAM.
    GreaterRam,
}

impl DbSize {
    /// Every size class, smallest first.
    pub const ALL: [DbSize; 3] = [DbSize::LessRam, DbSize::MidRam, DbSize::GreaterRam];

    /// The snake_case name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DbSize::LessRam => "less_ram",
            DbSize::MidRam => "mid_ram",
            DbSize::GreaterRam => "greater_ram",
        }
    }
}

impl fmt::Display for DbSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DbSize {
    type Err = InputError;

    /// Accepts `less_ram` and also `less-ram` (flag style), in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().replace('-', "_");
        DbSize::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(&t))
            .ok_or_else(|| InputError::UnknownDbSize(s.to_string()))
    }
}

/// Everything a recommendation depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inputs {
    /// Total RAM available to PostgreSQL, in kB ([`MIN_MEMORY_KB`]..=[`MAX_MEMORY_KB`]).
    pub memory_kb: u64,
    /// CPU cores; `None` = unknown (no parallel settings are recommended then).
    pub cpus: Option<u32>,
    /// Wanted `max_connections`; `None` = the workload's default
    /// (web 200, oltp 300, dw 40, desktop 20, mixed 100).
    pub connections: Option<u32>,
    /// Storage class of the data directory.
    pub storage: Storage,
    /// What the database is used for.
    pub workload: Workload,
    /// PostgreSQL major version, 10..=18.
    pub pg_version: u32,
    /// Database size compared with RAM; default `mid_ram`.
    #[serde(default)]
    pub db_size: DbSize,
}

/// Why inputs were rejected; each message is one line naming the flag and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("--memory must be at least 512MB (got {})", format_kb(*.0))]
    MemoryTooSmall(u64),
    #[error("--memory must be at most 16TB (got {}): PostgreSQL caps effective_cache_size near 16TB", format_kb(*.0))]
    MemoryTooLarge(u64),
    #[error("--cpus must be at least 1 (got {0})")]
    CpusTooFew(u32),
    #[error("--cpus must be at most 2048 (got {0}): dw's max_parallel_workers_per_gather would pass PostgreSQL's limit of 1024")]
    CpusTooMany(u32),
    #[error("--connections must be between 20 (PGTune's minimum) and 260000 (below PostgreSQL's MAX_BACKENDS) (got {0})")]
    ConnectionsOutOfRange(u32),
    #[error("--pg-version must be between 10 and 18 (got {0})")]
    UnsupportedVersion(u32),
    #[error("unknown workload '{0}' (expected web, oltp, dw, desktop or mixed)")]
    UnknownWorkload(String),
    #[error("unknown storage '{0}' (expected ssd, hdd, san or nvme)")]
    UnknownStorage(String),
    #[error("unknown database size '{0}' (expected less_ram, mid_ram or greater_ram)")]
    UnknownDbSize(String),
    /// A `--set` value the setting's type does not take (checked offline, see [`crate::known`]).
    #[error("--set {name}={value}: {name} takes {expected}")]
    InvalidSetting {
        name: String,
        value: String,
        expected: crate::known::Kind,
    },
}

impl Inputs {
    /// Checks every field against the accepted ranges; returns the first problem found,
    /// in field order (memory, cpus, connections, pg_version).
    pub fn validate(&self) -> Result<(), InputError> {
        if self.memory_kb < MIN_MEMORY_KB {
            return Err(InputError::MemoryTooSmall(self.memory_kb));
        }
        if self.memory_kb > MAX_MEMORY_KB {
            return Err(InputError::MemoryTooLarge(self.memory_kb));
        }
        match self.cpus {
            Some(0) => return Err(InputError::CpusTooFew(0)),
            Some(c) if c > MAX_CPUS => return Err(InputError::CpusTooMany(c)),
            _ => {}
        }
        if let Some(c) = self.connections {
            if !(MIN_CONNECTIONS..=MAX_CONNECTIONS).contains(&c) {
                return Err(InputError::ConnectionsOutOfRange(c));
            }
        }
        if !(MIN_PG_VERSION..=MAX_PG_VERSION).contains(&self.pg_version) {
            return Err(InputError::UnsupportedVersion(self.pg_version));
        }
        Ok(())
    }

    /// `max_connections` to recommend: the given value or the workload's default.
    pub fn effective_connections(&self) -> u32 {
        self.connections
            .unwrap_or_else(|| self.workload.default_connections())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Inputs {
        Inputs {
            memory_kb: 8 * 1024 * 1024,
            cpus: Some(4),
            connections: None,
            storage: Storage::Ssd,
            workload: Workload::Web,
            pg_version: 18,
            db_size: DbSize::MidRam,
        }
    }

    #[test]
    fn enums_round_trip_through_strings() {
        for w in Workload::ALL {
            assert_eq!(w.to_string().parse::<Workload>(), Ok(w));
        }
        for s in Storage::ALL {
            assert_eq!(s.to_string().parse::<Storage>(), Ok(s));
        }
        for d in DbSize::ALL {
            assert_eq!(d.to_string().parse::<DbSize>(), Ok(d));
        }
        assert_eq!("OLTP".parse::<Workload>(), Ok(Workload::Oltp));
        assert_eq!(" nvme ".parse::<Storage>(), Ok(Storage::Nvme));
        assert_eq!("greater-ram".parse::<DbSize>(), Ok(DbSize::GreaterRam));
        assert_eq!(DbSize::default(), DbSize::MidRam);
    }

    #[test]
    fn unknown_names_are_rejected_with_the_choices() {
        let cases: &[(Result<(), InputError>, &str)] = &[
            (
                "olap".parse::<Workload>().map(|_| ()),
                "unknown workload 'olap' (expected web, oltp, dw, desktop or mixed)",
            ),
            (
                "tape".parse::<Storage>().map(|_| ()),
                "unknown storage 'tape' (expected ssd, hdd, san or nvme)",
            ),
            (
                "huge".parse::<DbSize>().map(|_| ()),
                "unknown database size 'huge' (expected less_ram, mid_ram or greater_ram)",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got.clone().unwrap_err().to_string(), *want);
        }
    }

    #[test]
    fn serde_uses_lowercase_names() {
        let json = serde_json::to_value(Inputs {
            db_size: DbSize::LessRam,
            ..base()
        })
        .unwrap();
        assert_eq!(json["workload"], "web");
        assert_eq!(json["storage"], "ssd");
        assert_eq!(json["db_size"], "less_ram");
        let back: Inputs = serde_json::from_value(json).unwrap();
        assert_eq!(back.db_size, DbSize::LessRam);
    }

    #[test]
    fn effective_connections_defaults_per_workload() {
        let cases = [
            (Workload::Web, 200),
            (Workload::Oltp, 300),
            (Workload::Dw, 40),
            (Workload::Desktop, 20),
            (Workload::Mixed, 100),
        ];
        for (workload, want) in cases {
            let i = Inputs { workload, ..base() };
            assert_eq!(i.effective_connections(), want, "{workload}");
        }
        let i = Inputs {
            connections: Some(55),
            ..base()
        };
        assert_eq!(i.effective_connections(), 55);
    }

    #[test]
    fn validate_table() {
        let ok: &[Inputs] = &[
            base(),
            Inputs {
                memory_kb: MIN_MEMORY_KB,
                ..base()
            },
            Inputs {
                memory_kb: MAX_MEMORY_KB,
                ..base()
            },
            Inputs {
                cpus: None,
                ..base()
            },
            Inputs {
                cpus: Some(1),
                ..base()
            },
            Inputs {
                cpus: Some(2048),
                ..base()
            },
            Inputs {
                connections: Some(20),
                ..base()
            },
            Inputs {
                connections: Some(260_000),
                ..base()
            },
            Inputs {
                pg_version: 10,
                ..base()
            },
        ];
        for i in ok {
            assert_eq!(i.validate(), Ok(()), "{i:?}");
        }
        let bad: &[(Inputs, &str)] = &[
            (
                Inputs { memory_kb: 256 * 1024, ..base() },
                "--memory must be at least 512MB (got 256MB)",
            ),
            (
                Inputs { memory_kb: 32 * 1024 * 1024 * 1024, ..base() },
                "--memory must be at most 16TB (got 32768GB): PostgreSQL caps effective_cache_size near 16TB",
            ),
            (Inputs { cpus: Some(0), ..base() }, "--cpus must be at least 1 (got 0)"),
            (
                Inputs { cpus: Some(4096), ..base() },
                "--cpus must be at most 2048 (got 4096): dw's max_parallel_workers_per_gather would pass PostgreSQL's limit of 1024",
            ),
            (
                Inputs { connections: Some(19), ..base() },
                "--connections must be between 20 (PGTune's minimum) and 260000 (below PostgreSQL's MAX_BACKENDS) (got 19)",
            ),
            (
                Inputs { connections: Some(999_999), ..base() },
                "--connections must be between 20 (PGTune's minimum) and 260000 (below PostgreSQL's MAX_BACKENDS) (got 999999)",
            ),
            (Inputs { pg_version: 9, ..base() }, "--pg-version must be between 10 and 18 (got 9)"),
            (Inputs { pg_version: 19, ..base() }, "--pg-version must be between 10 and 18 (got 19)"),
        ];
        for (i, want) in bad {
            assert_eq!(i.validate().unwrap_err().to_string(), *want);
        }
    }
}
