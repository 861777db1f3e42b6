//! `replica rejoin`: an old primary (or a standby that diverged) becomes a standby of the
//! current primary. pg_rewind needs hint bits in WAL (`wal_log_hints` or data checksums),
//! which is checked from pg_control before anything is stopped; then the server is stopped
//! if it runs, rewound onto the primary (its own configuration files kept: pg_rewind would
//! copy the primary's), given `standby.signal` and `primary_conninfo`, started, and waited
//! on until the primary shows it streaming.

use std::path::PathBuf;
use std::time::Duration;

use pgw_common::ConnParams;
use pgw_node::{BinDir, Conninfo, Node, OsUser, RewindOptions, StartOptions, StopOptions};
use serde::Serialize;
use tokio_postgres::Client;

use crate::blocking;
use crate::clone::wait_streaming;
use crate::{query, ReplicaError};

/// The files of the data directory that stay this server's own through pg_rewind.
const OWN_FILES: [&str; 4] = [
    "postgresql.conf",
    "postgresql.auto.conf",
    "pg_hba.conf",
    "pg_ident.conf",
];

/// What to rejoin, and how.
#[derive(Debug, Clone)]
pub struct RejoinOptions {
    /// The data directory of the server to turn into a standby (on this machine).
    pub pgdata: PathBuf,
    /// Stream through this physical slot on the primary (created there when missing).
    pub slot: Option<String>,
    /// Its name in the primary's `pg_stat_replication` (default: the slot, else
    /// `pgwarden_replica`).
    pub application_name: Option<String>,
    /// PostgreSQL's programs.
    pub bin: BinDir,
    /// How long to wait for streaming once started.
    pub stream_timeout: Duration,
    /// The connection the standby streams with (default: the `--from` connection, as
    /// pg_rewind used it). The HA agent streams as its replication role, not the superuser
    /// pg_rewind needs.
    pub stream_as: Option<Conninfo>,
    /// The OS user that owns the data directory (default: `postgres` when we are root, else
    /// ourselves).
    pub user: Option<OsUser>,
}

/// A rejoin done.
#[derive(Debug, Clone, Serialize)]
pub struct Rejoined {
    pub pgdata: PathBuf,
    pub primary: String,
    /// The server was running and was stopped first.
    pub stopped_first: bool,
    /// pg_rewind changed files (false: "no rewind required").
    pub rewound: bool,
    /// Where its history left the primary's, as pg_rewind reported it.
    pub diverged_at: Option<String>,
    pub slot: Option<String>,
    pub application_name: String,
    pub streaming: bool,
}

/// Why pg_rewind cannot work on `pgdata`, if it cannot (pure over pg_control's flags).
pub fn rewind_impossible(wal_log_hints: bool, data_checksums: bool) -> Option<&'static str> {
    if wal_log_hints || data_checksums {
        None
    } else {
        Some(
            "neither wal_log_hints nor data checksums were on, so pg_rewind cannot tell which \
             pages changed: make it a standby with `pgwarden replica clone` into an empty \
             directory instead, and set wal_log_hints = on on every node for next time",
        )
    }
}

/// Rejoins `opts.pgdata` as a standby of the primary `client` is connected to (`params`).
pub async fn rejoin(
    client: &Client,
    params: &ConnParams,
    opts: &RejoinOptions,
) -> Result<Rejoined, ReplicaError> {
    let node = {
        let (bin, dir, user) = (opts.bin.clone(), opts.pgdata.clone(), opts.user.clone());
        blocking(move || {
            let user = match user {
                Some(u) => u,
                None => OsUser::detect()?,
            };
            Node::open(bin, user, dir)
        })
        .await?
    };
    let in_recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(query("ask whether --from is a primary"))?
        .get(0);
    if in_recovery {
        return Err(ReplicaError::FromNotPrimary(params.target()));
    }
    let check = {
        let n = node.clone();
        blocking(move || n.rewind_precheck()).await?
    };
    if let Some(why) = rewind_impossible(check.wal_log_hints, check.data_checksums) {
        return Err(ReplicaError::RewindImpossible {
            pgdata: opts.pgdata.clone(),
            why,
        });
    }
    if let Some(slot) = &opts.slot {
        crate::ensure_slot(client, slot).await?;
    }
    // pg_rewind reads the primary's timeline from its pg_control, which a just-promoted
    // server updates only at its next checkpoint.
    client.batch_execute("CHECKPOINT").await.map_err(query(
        "checkpoint the primary (pg_rewind reads its timeline from pg_control)",
    ))?;

    let application_name = opts
        .application_name
        .clone()
        .or_else(|| opts.slot.clone())
        .unwrap_or_else(|| "pgwarden_replica".to_string());
    let source = crate::conninfo_of(params).with_dbname(&params.dbname);
    let stopped_first = check.running;
    let rewound = {
        let (n, source, slot) = (node.clone(), source.clone(), opts.slot.clone());
        let stream_as = opts.stream_as.clone();
        let name = application_name.clone();
        blocking(move || {
            if stopped_first {
                n.stop(&StopOptions::default())?;
            }
            let dir = n.data_dir().to_owned();
            let mut kept = Vec::new();
            for f in OWN_FILES {
                if let Ok(bytes) = std::fs::read(dir.join(f)) {
                    kept.push((dir.join(f), bytes));
                }
            }
            let report = n.rewind(&RewindOptions::onto(source.clone()))?;
            for (path, bytes) in &kept {
                n.user().write_file(path, bytes, 0o600)?;
            }
            let conninfo = match stream_as {
                Some(c) => Conninfo {
                    application_name: Some(name),
                    ..c
                },
                None => Conninfo {
                    dbname: None,
                    application_name: Some(name),
                    ..source
                },
            };
            n.configure_standby(&conninfo, slot.as_deref())?;
            n.start(&StartOptions::default())?;
            Ok(report)
        })
        .await
    };
    let report = match rewound {
        Err(ReplicaError::Node(pgw_node::NodeError::ToolFailed { tool, output, .. }))
            if tool == pgw_node::Tool::PgRewind
                && output.contains("could not find previous WAL record") =>
        {
            return Err(ReplicaError::RewindWalGone {
                pgdata: opts.pgdata.clone(),
                output,
            })
        }
        r => r?,
    };
    wait_streaming(client, &application_name, opts.stream_timeout).await?;
    Ok(Rejoined {
        pgdata: opts.pgdata.clone(),
        primary: params.target(),
        stopped_first,
        rewound: report.rewound,
        diverged_at: report.diverged_at.map(|l| l.to_string()),
        slot: opts.slot.clone(),
        application_name,
        streaming: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewind_needs_hint_bits_in_wal() {
        assert!(rewind_impossible(true, false).is_none());
        assert!(rewind_impossible(false, true).is_none());
        let why = rewind_impossible(false, false).unwrap();
        assert!(
            why.contains("wal_log_hints") && why.contains("replica clone"),
            "{why}"
        );
    }
}
