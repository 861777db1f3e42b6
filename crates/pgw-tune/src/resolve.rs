//! Turning what the user gave, what the server says and what the host shows into
//! [`Inputs`], recording where each input came from and which were assumed.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::host::HostFacts;
use crate::inputs::{DbSize, Inputs, Storage, Workload, MAX_CONNECTIONS, MIN_CONNECTIONS};
use crate::live::ServerFacts;
use crate::units::format_kb;

/// Inputs given by flags; `None` means "not given".
#[derive(Debug, Clone, Default)]
pub struct Given {
    pub memory_kb: Option<u64>,
    pub cpus: Option<u32>,
    pub connections: Option<u32>,
    pub storage: Option<Storage>,
    pub workload: Option<Workload>,
    pub pg_version: Option<u32>,
    pub db_size: Option<DbSize>,
}

/// The inputs used, for reports: values plus where each came from.
#[derive(Debug, Clone, Serialize)]
pub struct InputReport {
    /// Total memory as postgresql.conf writes sizes, e.g. "24GB" or "24105MB".
    pub memory: String,
    pub memory_kb: u64,
    /// None: unknown, so parallel settings keep PostgreSQL's defaults.
    pub cpus: Option<u32>,
    pub connections: u32,
    pub storage: Storage,
    pub workload: Workload,
    pub pg_version: u32,
    pub db_size: DbSize,
    /// From the server, when one was read.
    pub data_checksums: Option<bool>,
    /// Input name -> where its value came from ("--memory", "server", "host (...)", "assumed ...").
    pub sources: BTreeMap<&'static str, String>,
    /// The inputs nobody gave nor could read: defaults were assumed.
    pub assumed: Vec<&'static str>,
}

/// Why inputs could not be settled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("cannot tell this server's memory (it is on another host, or in a container with its own process namespace): give --memory, e.g. --memory 16GB")]
    NoMemory,
}

/// What is known about the server and its host, gathered by the caller.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub server: Option<ServerFacts>,
    pub host: Option<HostFacts>,
    /// Storage class of the data directory's device, with how it was told.
    pub storage: Option<(Storage, String)>,
}

/// Settles every input: a flag wins, then what the server and host say, then a default
/// that is recorded as assumed.
pub fn resolve(given: &Given, facts: &Facts) -> Result<(Inputs, InputReport), ResolveError> {
    let mut sources = BTreeMap::new();
    let mut assumed = Vec::new();

    let memory_kb = match (given.memory_kb, &facts.host) {
        (Some(m), _) => {
            sources.insert("memory", "--memory".to_string());
            m
        }
        (None, Some(h)) => {
            sources.insert("memory", h.memory_source.clone());
            h.memory_kb
        }
        (None, None) => return Err(ResolveError::NoMemory),
    };
    let cpus = match (given.cpus, &facts.host) {
        (Some(c), _) => {
            sources.insert("cpus", "--cpus".to_string());
            Some(c)
        }
        (None, Some(h)) => {
            sources.insert("cpus", h.cpus_source.clone());
            Some(h.cpus)
        }
        (None, None) => {
            sources.insert(
                "cpus",
                "unknown: parallel settings keep their defaults".to_string(),
            );
            assumed.push("cpus");
            None
        }
    };
    let workload = match given.workload {
        Some(w) => {
            sources.insert("workload", "--workload".to_string());
            w
        }
        None => {
            sources.insert(
                "workload",
                "assumed web (PGTune's default); give --workload".to_string(),
            );
            assumed.push("workload");
            Workload::Web
        }
    };
    let (connections, connections_given) = match (given.connections, &facts.server) {
        (Some(c), _) => {
            sources.insert("connections", "--connections".to_string());
            (c, Some(c))
        }
        (None, Some(s)) => {
            // PGTune's formulas are defined from 20 connections up; a server set lower
            // is tuned as if for 20, and the report says so.
            let c = s.max_connections.clamp(MIN_CONNECTIONS, MAX_CONNECTIONS);
            if c == s.max_connections {
                sources.insert("connections", "server (max_connections)".to_string());
            } else {
                sources.insert(
                    "connections",
                    format!("server has max_connections = {}; tuned for {c}, the nearest pgwarden accepts", s.max_connections),
                );
            }
            (c, Some(c))
        }
        (None, None) => {
            let probe = Inputs {
                memory_kb,
                cpus,
                connections: None,
                storage: Storage::Ssd,
                workload,
                pg_version: 15,
                db_size: DbSize::MidRam,
            };
            let d = probe.effective_connections();
            sources.insert(
                "connections",
                format!("assumed {d} (the {workload} default)"),
            );
            assumed.push("connections");
            (d, None)
        }
    };
    let storage = match (given.storage, &facts.storage) {
        (Some(s), _) => {
            sources.insert("storage", "--storage".to_string());
            s
        }
        (None, Some((s, how))) => {
            sources.insert("storage", how.clone());
            *s
        }
        (None, None) => {
            sources.insert("storage", "assumed ssd; give --storage".to_string());
            assumed.push("storage");
            Storage::Ssd
        }
    };
    let pg_version = match (given.pg_version, &facts.server) {
        (Some(v), _) => {
            sources.insert("pg_version", "--pg-version".to_string());
            v
        }
        (None, Some(s)) => {
            sources.insert("pg_version", "server (server_version_num)".to_string());
            s.major
        }
        (None, None) => {
            sources.insert("pg_version", "assumed 15".to_string());
            assumed.push("pg_version");
            15
        }
    };
    let db_size = match given.db_size {
        Some(d) => {
            sources.insert("db_size", "--db-size".to_string());
            d
        }
        None => {
            sources.insert(
                "db_size",
                "assumed mid_ram (1-3x RAM, PGTune's default)".to_string(),
            );
            assumed.push("db_size");
            DbSize::MidRam
        }
    };
    let inputs = Inputs {
        memory_kb,
        cpus,
        connections: connections_given,
        storage,
        workload,
        pg_version,
        db_size,
    };
    let report = InputReport {
        memory: format_kb(memory_kb),
        memory_kb,
        cpus,
        connections,
        storage,
        workload,
        pg_version,
        db_size,
        data_checksums: facts.server.as_ref().map(|s| s.data_checksums),
        sources,
        assumed,
    };
    Ok((inputs, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ServerFacts {
        ServerFacts {
            version_num: 150004,
            major: 15,
            max_connections: 120,
            data_checksums: true,
            backend_pid: 1,
            data_directory: None,
            wal_compression_values: vec!["pglz".into(), "lz4".into()],
        }
    }

    #[test]
    fn flags_win_over_facts() {
        let given = Given {
            memory_kb: Some(8 << 20),
            cpus: Some(4),
            connections: Some(200),
            storage: Some(Storage::Hdd),
            workload: Some(Workload::Oltp),
            pg_version: Some(14),
            db_size: Some(DbSize::LessRam),
        };
        let facts = Facts {
            server: Some(server()),
            host: Some(HostFacts {
                memory_kb: 1 << 20,
                memory_source: "host".into(),
                cpus: 2,
                cpus_source: "host".into(),
            }),
            storage: Some((Storage::Ssd, "sysfs".into())),
        };
        let (i, r) = resolve(&given, &facts).unwrap();
        assert_eq!(i.memory_kb, 8 << 20);
        assert_eq!(i.cpus, Some(4));
        assert_eq!(i.connections, Some(200));
        assert_eq!(i.storage, Storage::Hdd);
        assert_eq!(i.pg_version, 14);
        assert!(r.assumed.is_empty());
        assert_eq!(r.data_checksums, Some(true));
    }

    #[test]
    fn server_and_host_fill_in_and_the_rest_is_assumed() {
        let facts = Facts {
            server: Some(server()),
            host: Some(HostFacts {
                memory_kb: 4 << 20,
                memory_source: "cgroup limit (x)".into(),
                cpus: 2,
                cpus_source: "host (online CPUs)".into(),
            }),
            storage: None,
        };
        let (i, r) = resolve(&Given::default(), &facts).unwrap();
        assert_eq!(i.memory_kb, 4 << 20);
        assert_eq!(r.sources["memory"], "cgroup limit (x)");
        assert_eq!(i.connections, Some(120));
        assert_eq!(i.pg_version, 15);
        assert_eq!(r.assumed, vec!["workload", "storage", "db_size"]);
    }

    #[test]
    fn remote_server_without_memory_is_an_error() {
        let facts = Facts {
            server: Some(server()),
            ..Facts::default()
        };
        assert_eq!(
            resolve(&Given::default(), &facts).unwrap_err(),
            ResolveError::NoMemory
        );
        let given = Given {
            memory_kb: Some(2 << 20),
            ..Given::default()
        };
        let (i, r) = resolve(&given, &facts).unwrap();
        assert_eq!(i.cpus, None);
        assert!(r.assumed.contains(&"cpus"));
    }
}
