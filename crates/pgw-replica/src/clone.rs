//! `replica clone`: a new standby from a running primary, in one command. Before anything
//! is copied the primary's prerequisites are checked and each one missing is named with
//! the line that fixes it; then `pg_basebackup -R -X stream [-C -S slot]` (through
//! pgw-node) copies it, and with `start` the copy starts and is waited on until the
//! primary shows it streaming. A clone that fails leaves nothing behind: the data
//! directory it made (or filled) is removed and a slot it created is dropped.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgw_common::ConnParams;
use pgw_node::{BaseBackupOptions, BinDir, Node, OsUser, Password, Progress, Source, StartOptions};
use serde::Serialize;
use tokio_postgres::Client;

use crate::hba::{replication_rule, HbaRule, HbaVerdict};
use crate::{query, ReplicaError};

/// What to clone, where, and how.
#[derive(Debug, Clone)]
pub struct CloneOptions {
    /// The new data directory: must not exist or be empty.
    pub pgdata: PathBuf,
    /// Stream through this physical slot, created on the primary (`-C -S`).
    pub slot: Option<String>,
    /// The port the copy listens on (written to its postgresql.auto.conf).
    pub port: Option<u16>,
    /// Start the copy and wait until it streams.
    pub start: bool,
    /// Its name in the primary's `pg_stat_replication` (default: the slot's name, else
    /// `pgwarden_replica`).
    pub application_name: Option<String>,
    /// PostgreSQL's programs.
    pub bin: BinDir,
    /// How long `start` waits for streaming.
    pub stream_timeout: Duration,
    /// The OS user to own the copy (default: `postgres` when we are root, else ourselves).
    pub user: Option<OsUser>,
}

/// A clone done.
#[derive(Debug, Clone, Serialize)]
pub struct Cloned {
    pub pgdata: PathBuf,
    pub primary: String,
    pub slot: Option<String>,
    pub application_name: String,
    pub port: Option<u16>,
    /// The pg_hba.conf line that admits the replication connection; None when this role
    /// may not read `pg_hba_file_rules` (then pg_basebackup's own connection decided).
    pub hba_line: Option<i32>,
    /// Kilobytes copied.
    pub copied_kb: u64,
    pub started: bool,
    /// The primary shows it streaming (with `start`).
    pub streaming: bool,
}

/// The primary's facts the prerequisites are judged on.
#[derive(Debug, Clone)]
pub struct PrimaryFacts {
    pub wal_level: String,
    pub in_recovery: bool,
    pub max_wal_senders: i32,
    pub wal_senders: i32,
    pub max_replication_slots: i32,
    pub slots: i32,
    pub can_replicate: bool,
    pub user: String,
    pub slot_taken: bool,
    /// The pg_hba.conf verdict; None when the rules are unreadable.
    pub hba: Option<HbaVerdict>,
    pub client: Option<IpAddr>,
}

/// Each missing prerequisite, with the line that fixes it (pure: tested without a server).
pub fn problems(f: &PrimaryFacts, slot: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    if f.wal_level == "minimal" {
        out.push(
            "wal_level is minimal, which cannot feed a standby: ALTER SYSTEM SET wal_level = \
             'replica'; then restart the primary"
                .to_string(),
        );
    }
    // pg_basebackup -X stream uses two WAL senders: the copy and the WAL stream.
    if f.max_wal_senders - f.wal_senders < 2 {
        out.push(format!(
            "max_wal_senders is {} with {} in use; the copy needs 2 free: ALTER SYSTEM SET \
             max_wal_senders = {}; then restart the primary",
            f.max_wal_senders,
            f.wal_senders,
            f.wal_senders + 2 + 8
        ));
    }
    if let Some(slot) = slot {
        if f.slots >= f.max_replication_slots {
            out.push(format!(
                "max_replication_slots is {} and all are used: ALTER SYSTEM SET \
                 max_replication_slots = {}; then restart the primary (or drop an unused slot)",
                f.max_replication_slots,
                f.slots + 10
            ));
        }
        if f.slot_taken {
            out.push(format!(
                "replication slot {slot} already exists on the primary: choose another --slot, \
                 or drop it if nothing uses it: SELECT pg_drop_replication_slot('{slot}');"
            ));
        }
    }
    if !f.can_replicate {
        out.push(format!(
            "role {} has no REPLICATION attribute: ALTER ROLE \"{}\" REPLICATION;",
            f.user,
            f.user.replace('"', "\"\"")
        ));
    }
    let from = f
        .client
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "the Unix socket".to_string());
    let host_line = match f.client {
        Some(IpAddr::V4(ip)) => format!("host replication {} {ip}/32 scram-sha-256", f.user),
        Some(IpAddr::V6(ip)) => format!("host replication {} {ip}/128 scram-sha-256", f.user),
        None => format!("local replication {} peer", f.user),
    };
    match &f.hba {
        Some(HbaVerdict::NoRule) => out.push(format!(
            "no pg_hba.conf line admits a replication connection of {} from {from}: add \
             `{host_line}` before the other lines, then SELECT pg_reload_conf();",
            f.user
        )),
        Some(HbaVerdict::Rejects { line }) => out.push(format!(
            "pg_hba.conf line {line} rejects a replication connection of {} from {from}: put \
             `{host_line}` above it, then SELECT pg_reload_conf();",
            f.user
        )),
        _ => {}
    }
    out
}

/// Reads the facts [`problems`] judges.
pub async fn primary_facts(
    client: &Client,
    slot: Option<&str>,
) -> Result<PrimaryFacts, ReplicaError> {
    let slot_name = slot.unwrap_or("");
    let r = client
        .query_one(
            "SELECT current_setting('wal_level'), pg_is_in_recovery(),
                    current_setting('max_wal_senders')::int4,
                    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender')::int4,
                    current_setting('max_replication_slots')::int4,
                    (SELECT count(*) FROM pg_replication_slots)::int4,
                    (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user),
                    current_user::text,
                    EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1),
                    host(inet_client_addr()),
                    ARRAY(SELECT rolname::text FROM pg_roles
                           WHERE pg_has_role(current_user, oid, 'MEMBER'))",
            &[&slot_name],
        )
        .await
        .map_err(query("read the primary's replication settings"))?;
    let client_addr: Option<String> = r.get(9);
    let client_ip = client_addr.and_then(|a| a.parse().ok());
    let user: String = r.get(7);
    let member_of: Vec<String> = r.get(10);
    // pg_hba_file_rules is readable by superusers (and roles granted it) only.
    let hba = match client
        .query(
            "SELECT line_number, type, database, user_name, address, netmask, auth_method
               FROM pg_hba_file_rules
              WHERE error IS NULL
              ORDER BY line_number",
            &[],
        )
        .await
    {
        Ok(rows) => {
            let rules: Vec<HbaRule> = rows
                .iter()
                .map(|row| HbaRule {
                    line: row.get(0),
                    kind: row.get(1),
                    databases: row.get::<_, Option<Vec<String>>>(2).unwrap_or_default(),
                    users: row.get::<_, Option<Vec<String>>>(3).unwrap_or_default(),
                    address: row.get(4),
                    netmask: row.get(5),
                    method: row.get(6),
                })
                .collect();
            Some(replication_rule(&rules, &user, &member_of, client_ip))
        }
        Err(e) => {
            tracing::info!(error = %e, "pg_hba_file_rules unreadable; pg_basebackup's connection will tell");
            None
        }
    };
    Ok(PrimaryFacts {
        wal_level: r.get(0),
        in_recovery: r.get(1),
        max_wal_senders: r.get(2),
        wal_senders: r.get(3),
        max_replication_slots: r.get(4),
        slots: r.get(5),
        can_replicate: r.get::<_, Option<bool>>(6).unwrap_or(false),
        user,
        slot_taken: r.get(8),
        hba,
        client: client_ip,
    })
}

/// Clones the primary `client` is connected to (with `params`) into `opts.pgdata`.
/// `progress` is called as the copy proceeds.
pub async fn clone(
    client: &Client,
    params: &ConnParams,
    opts: &CloneOptions,
    progress: impl FnMut(Progress) + Send + 'static,
) -> Result<Cloned, ReplicaError> {
    // The data directory first: nothing is asked of the primary for a directory we would
    // refuse.
    let existed = match std::fs::read_dir(&opts.pgdata) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ReplicaError::NotEmpty(opts.pgdata.clone()));
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(source) => {
            return Err(ReplicaError::Io {
                path: opts.pgdata.clone(),
                source,
            })
        }
    };
    let facts = primary_facts(client, opts.slot.as_deref()).await?;
    let missing = problems(&facts, opts.slot.as_deref());
    if !missing.is_empty() {
        return Err(ReplicaError::Prerequisites {
            primary: params.target(),
            problems: missing,
        });
    }
    let application_name = opts
        .application_name
        .clone()
        .or_else(|| opts.slot.clone())
        .unwrap_or_else(|| "pgwarden_replica".to_string());
    let mut bb = BaseBackupOptions::standby_of(Source {
        host: params
            .hosts
            .first()
            .cloned()
            .unwrap_or_else(|| "localhost".into()),
        port: params.port_for(0),
        user: params.user.clone(),
        password: params.password.clone().map(Password::new),
    });
    bb.slot = opts
        .slot
        .clone()
        .map(|name| pgw_node::Slot { name, create: true });
    bb.application_name = Some(application_name.clone());

    let copied = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let made = {
        let (bin, pgdata, copied) = (opts.bin.clone(), opts.pgdata.clone(), copied.clone());
        let (port, user) = (opts.port, opts.user.clone());
        let mut progress = progress;
        crate::blocking(move || {
            let user = match user {
                Some(u) => u,
                None => OsUser::detect()?,
            };
            let node = Node::base_backup(bin, user, pgdata, &bb, |p| {
                copied.store(p.done_kb, std::sync::atomic::Ordering::Relaxed);
                progress(p);
            })?;
            if let Some(port) = port {
                node.set_auto_conf("port", Some(&port.to_string()))?;
            }
            Ok(node)
        })
        .await
    };
    let node = match made {
        Ok(node) => node,
        Err(e) => {
            undo(
                client,
                &opts.pgdata,
                existed,
                opts.slot.as_deref(),
                facts.slot_taken,
            )
            .await;
            return Err(e);
        }
    };
    let mut cloned = Cloned {
        pgdata: opts.pgdata.clone(),
        primary: params.target(),
        slot: opts.slot.clone(),
        application_name: application_name.clone(),
        port: opts.port,
        hba_line: match facts.hba {
            Some(HbaVerdict::Admits { line, .. }) => Some(line),
            _ => None,
        },
        copied_kb: copied.load(std::sync::atomic::Ordering::Relaxed),
        started: false,
        streaming: false,
    };
    if opts.start {
        let n = node.clone();
        let port = opts.port;
        crate::blocking(move || {
            n.start(&StartOptions {
                port,
                ..StartOptions::default()
            })
        })
        .await?;
        cloned.started = true;
        wait_streaming(client, &application_name, opts.stream_timeout).await?;
        cloned.streaming = true;
    }
    Ok(cloned)
}

/// Waits until the primary shows a standby named `name` streaming.
pub(crate) async fn wait_streaming(
    client: &Client,
    name: &str,
    timeout: Duration,
) -> Result<(), ReplicaError> {
    let deadline = Instant::now() + timeout;
    loop {
        let streaming: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_replication
                                 WHERE application_name = $1 AND state = 'streaming')",
                &[&name],
            )
            .await
            .map_err(query("watch pg_stat_replication"))?
            .get(0);
        if streaming {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ReplicaError::NotStreaming {
                name: name.to_string(),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Puts back what a failed clone made: the data directory (removed if it did not exist,
/// emptied if it did), and the slot pg_basebackup created (if it did not exist before).
async fn undo(
    client: &Client,
    pgdata: &Path,
    existed: bool,
    slot: Option<&str>,
    slot_existed: bool,
) {
    let cleared = if existed {
        std::fs::read_dir(pgdata).and_then(|entries| {
            for e in entries {
                let p = e?.path();
                if p.is_dir() {
                    std::fs::remove_dir_all(&p)?;
                } else {
                    std::fs::remove_file(&p)?;
                }
            }
            Ok(())
        })
    } else {
        match std::fs::remove_dir_all(pgdata) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    };
    if let Err(e) = cleared {
        tracing::warn!(path = %pgdata.display(), error = %e, "could not remove the failed copy");
    }
    if let (Some(slot), false) = (slot, slot_existed) {
        let r = client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                  WHERE slot_name = $1 AND NOT active",
                &[&slot],
            )
            .await;
        if let Err(e) = r {
            tracing::warn!(slot, error = %e, "could not drop the slot of the failed copy");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> PrimaryFacts {
        PrimaryFacts {
            wal_level: "replica".into(),
            in_recovery: false,
            max_wal_senders: 10,
            wal_senders: 0,
            max_replication_slots: 10,
            slots: 0,
            can_replicate: true,
            user: "rep".into(),
            slot_taken: false,
            hba: Some(HbaVerdict::Admits {
                line: 3,
                method: "scram-sha-256".into(),
            }),
            client: Some("10.0.0.7".parse().unwrap()),
        }
    }

    #[test]
    fn a_ready_primary_has_no_problems() {
        assert!(problems(&ready(), Some("s1")).is_empty());
        let mut f = ready();
        f.hba = None;
        assert!(
            problems(&f, None).is_empty(),
            "unreadable rules are not a problem"
        );
    }

    #[test]
    fn each_missing_prerequisite_is_named_with_its_fix() {
        type Spoil = fn(&mut PrimaryFacts);
        let cases: &[(Spoil, &str)] = &[
            (|f| f.wal_level = "minimal".into(), "wal_level = 'replica'"),
            (|f| f.wal_senders = 9, "max_wal_senders = 19"),
            (|f| f.slots = 10, "max_replication_slots = 20"),
            (|f| f.slot_taken = true, "pg_drop_replication_slot('s1')"),
            (
                |f| f.can_replicate = false,
                "ALTER ROLE \"rep\" REPLICATION;",
            ),
            (
                |f| f.hba = Some(HbaVerdict::NoRule),
                "host replication rep 10.0.0.7/32 scram-sha-256",
            ),
            (
                |f| f.hba = Some(HbaVerdict::Rejects { line: 2 }),
                "line 2 rejects",
            ),
        ];
        for (spoil, needle) in cases {
            let mut f = ready();
            spoil(&mut f);
            let p = problems(&f, Some("s1"));
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(p[0].contains(needle), "{needle}: {p:?}");
        }
        // Without a slot, slot limits do not matter.
        let mut f = ready();
        f.slots = 10;
        assert!(problems(&f, None).is_empty());
    }
}
