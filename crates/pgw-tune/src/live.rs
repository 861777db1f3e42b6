//! Reading a live server: its facts, and a recommendation diffed against `pg_settings`.
//! Applying lives in [`crate::apply`].
//!
//! One query gathers the facts; one query reads every recommended setting.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio_postgres::Client;

use crate::recommend::{Origin, Recommendation, Setting};
use crate::units::{display_setting, same_value};

/// Why a live operation failed. Each variant names what was being done.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("{what}")]
    Query {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("the server would reject {}: {}", plural(.0.len(), "value"), .0.join("; "))]
    Invalid(Vec<String>),
    #[error("permission denied: {0}")]
    Permission(String),
    #[error("the server's configuration files have errors, so a reload would be ignored; fix them first: {}", .0.join("; "))]
    ConfigErrors(Vec<String>),
    #[error("refusing a change the server could not restart with: {0}")]
    Unsafe(String),
    #[error("the server rejected {name} = '{value}'; nothing was changed (the {reverted} setting(s) already written were put back)")]
    Rejected {
        name: String,
        value: String,
        reverted: usize,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("the configuration could not be reloaded; nothing was changed (the {reverted} setting(s) written were put back)")]
    ReloadFailed {
        reverted: usize,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("interrupted; nothing was changed (the {reverted} setting(s) already written were put back)")]
    Interrupted { reverted: usize },
    #[error("{what}, and putting back {failed} failed: check postgresql.auto.conf with `SELECT * FROM pg_file_settings` before the next reload")]
    RevertFailed {
        what: String,
        failed: String,
        #[source]
        source: Option<tokio_postgres::Error>,
    },
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

pub(crate) fn q(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> LiveError {
    move |source| LiveError::Query { what, source }
}

/// What pgwarden reads from a server before recommending.
#[derive(Debug, Clone, Serialize)]
pub struct ServerFacts {
    pub version_num: u32,
    pub major: u32,
    pub max_connections: u32,
    pub data_checksums: bool,
    /// The backend's process id: on a local server, its cgroup is the server's.
    pub backend_pid: u32,
    /// Only readable with pg_read_all_settings or superuser.
    pub data_directory: Option<String>,
    /// The values this server's wal_compression accepts (an enum from PostgreSQL 15 on;
    /// lz4 and zstd appear only when the server was built with them).
    pub wal_compression_values: Vec<String>,
}

/// Reads version, max_connections, data checksums and (when allowed) the data directory.
pub async fn server_facts(client: &Client) -> Result<ServerFacts, LiveError> {
    tracing::debug!("read server facts (version, max_connections, checksums, data directory)");
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, \
                    current_setting('max_connections')::int, \
                    current_setting('data_checksums')::bool, \
                    pg_backend_pid(), \
                    CASE WHEN pg_has_role('pg_read_all_settings', 'MEMBER') \
                         THEN current_setting('data_directory') END, \
                    (SELECT coalesce(enumvals, '{}') FROM pg_settings WHERE name = 'wal_compression')",
            &[],
        )
        .await
        .map_err(q("read server facts"))?;
    let version_num: i32 = row.get(0);
    let max_connections: i32 = row.get(1);
    let pid: i32 = row.get(3);
    Ok(ServerFacts {
        version_num: version_num as u32,
        major: version_num as u32 / 10000,
        max_connections: max_connections as u32,
        data_checksums: row.get(2),
        backend_pid: pid as u32,
        data_directory: row.get(4),
        wal_compression_values: row.get::<_, Option<Vec<String>>>(5).unwrap_or_default(),
    })
}

/// What a server needs for a changed value to take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Needs {
    /// Already in effect.
    Nothing,
    /// `SELECT pg_reload_conf()` (or SIGHUP).
    Reload,
    /// A server restart (context `postmaster`).
    Restart,
    /// The server does not know this setting (another major version).
    Unknown,
}

/// One row of `tune --diff`.
#[derive(Debug, Clone, Serialize)]
pub struct DiffRow {
    pub name: String,
    /// The value in effect, as SHOW prints it; None if the server lacks the setting.
    pub current: Option<String>,
    pub recommended: String,
    pub needs: Needs,
    /// pg_settings.pending_restart: a change already written waits for a restart.
    pub pending_restart: bool,
    pub reason: String,
}

/// A row of pg_settings, as much as tuning needs.
#[derive(Debug, Clone)]
pub(crate) struct PgSetting {
    pub(crate) setting: String,
    pub(crate) unit: String,
    pub(crate) context: String,
    pub(crate) vartype: String,
    pub(crate) min_val: Option<String>,
    pub(crate) max_val: Option<String>,
    pub(crate) enumvals: Option<Vec<String>>,
    pub(crate) pending_restart: bool,
}

pub(crate) async fn pg_settings(
    client: &Client,
    names: &[String],
) -> Result<BTreeMap<String, PgSetting>, LiveError> {
    tracing::debug!(settings = names.len(), "read pg_settings");
    let rows = client
        .query(
            "SELECT name, setting, coalesce(unit, ''), context, vartype, min_val, max_val, \
                    enumvals, pending_restart \
               FROM pg_settings WHERE name = ANY($1)",
            &[&names],
        )
        .await
        .map_err(q("read pg_settings"))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                PgSetting {
                    setting: r.get(1),
                    unit: r.get(2),
                    context: r.get(3),
                    vartype: r.get(4),
                    min_val: r.get(5),
                    max_val: r.get(6),
                    enumvals: r.get(7),
                    pending_restart: r.get(8),
                },
            )
        })
        .collect())
}

/// The spelling the server stores for a value, where it differs from what postgresql.conf
/// accepts: `wal_compression = on` is stored as `pglz` from PostgreSQL 15 on.
pub(crate) fn canonical<'a>(
    name: &str,
    value: &'a str,
    s: &PgSetting,
) -> std::borrow::Cow<'a, str> {
    if name == "wal_compression" && s.vartype == "enum" {
        match crate::units::as_bool(value) {
            Some(true) => return "pglz".into(),
            Some(false) => return "off".into(),
            None => {}
        }
    }
    value.into()
}

/// Whether the server's value already equals `recommended`.
pub(crate) fn in_effect(name: &str, recommended: &str, s: &PgSetting) -> bool {
    same_value(&canonical(name, recommended, s), &s.setting, &s.unit)
}

pub(crate) fn needs_for(name: &str, s: &PgSetting, recommended: &str) -> Needs {
    if in_effect(name, recommended, s) {
        Needs::Nothing
    } else if s.context == "postmaster" {
        Needs::Restart
    } else {
        Needs::Reload
    }
}

/// Compares every recommended setting with the server's value, in one query.
pub async fn diff(client: &Client, rec: &Recommendation) -> Result<Vec<DiffRow>, LiveError> {
    let names: Vec<String> = rec.settings.iter().map(|s| s.name.clone()).collect();
    let current = pg_settings(client, &names).await?;
    Ok(rec
        .settings
        .iter()
        .map(|s| match current.get(&s.name) {
            Some(c) => DiffRow {
                name: s.name.clone(),
                current: Some(display_setting(&c.setting, &c.unit)),
                recommended: s.value.clone(),
                needs: needs_for(&s.name, c, &s.value),
                pending_restart: c.pending_restart,
                reason: s.reason.clone(),
            },
            None => DiffRow {
                name: s.name.clone(),
                current: None,
                recommended: s.value.clone(),
                needs: Needs::Unknown,
                pending_restart: false,
                reason: s.reason.clone(),
            },
        })
        .collect())
}

/// Replaces or adds settings given by the user as `name=value` (`--set`).
pub fn apply_overrides(rec: &mut Recommendation, overrides: &[(String, String)]) {
    for (name, value) in overrides {
        let reason = "set by --set".to_string();
        match rec.settings.iter_mut().find(|s| &s.name == name) {
            Some(s) => {
                s.value = value.clone();
                s.reason = reason;
                s.origin = Origin::User;
            }
            None => rec.settings.push(Setting {
                name: name.clone(),
                value: value.clone(),
                reason,
                origin: Origin::User,
            }),
        }
    }
}
