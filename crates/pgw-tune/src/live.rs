//! Tuning against a live server: gather its facts, diff a recommendation against
//! `pg_settings`, and apply it with ALTER SYSTEM, all or nothing.
//!
//! Everything here is I/O around the pure parts ([`crate::recommend`], [`crate::units`]):
//! one query gathers the facts, one query reads every recommended setting, and apply
//! validates all values before it writes anything.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Client;

use crate::recommend::{Origin, Recommendation, Setting};
use crate::units::{display_setting, same_value, to_unit};

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
    #[error("the server rejected {name} = '{value}'; nothing was changed (the {reverted} setting(s) already written were put back)")]
    Rejected {
        name: String,
        value: String,
        reverted: usize,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("the server rejected {name} = '{value}', and putting back {failed} failed: check postgresql.auto.conf with `SELECT * FROM pg_file_settings` before reloading")]
    RevertFailed {
        name: String,
        value: String,
        failed: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn q(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> LiveError {
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
struct PgSetting {
    setting: String,
    unit: String,
    context: String,
    vartype: String,
    min_val: Option<String>,
    max_val: Option<String>,
    enumvals: Option<Vec<String>>,
    pending_restart: bool,
}

async fn pg_settings(
    client: &Client,
    names: &[String],
) -> Result<BTreeMap<String, PgSetting>, LiveError> {
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

fn needs_for(s: &PgSetting, recommended: &str) -> Needs {
    if same_value(recommended, &s.setting, &s.unit) {
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
                needs: needs_for(c, &s.value),
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

/// One change apply will make.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub name: String,
    pub current: String,
    pub new: String,
    pub needs: Needs,
    /// The value postgresql.auto.conf held before, to put back on failure.
    #[serde(skip)]
    previous_auto: Option<String>,
}

/// What apply will do, checked against the server; nothing has been written yet.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyPlan {
    pub changes: Vec<Change>,
    /// Settings the recommendation has but this server does not know (skipped).
    pub unknown: Vec<String>,
}

/// Checks every value against the server and the caller's privileges, and returns the
/// changes to make. Writes nothing. Every problem is reported at once.
pub async fn plan_apply(client: &Client, rec: &Recommendation) -> Result<ApplyPlan, LiveError> {
    let names: Vec<String> = rec.settings.iter().map(|s| s.name.clone()).collect();
    let current = pg_settings(client, &names).await?;
    let mut problems = Vec::new();
    let mut changes = Vec::new();
    let mut unknown = Vec::new();
    for s in &rec.settings {
        let Some(c) = current.get(&s.name) else {
            if s.origin == Origin::User {
                problems.push(format!(
                    "unrecognized configuration parameter \"{}\"",
                    s.name
                ));
            } else {
                unknown.push(s.name.clone());
            }
            continue;
        };
        if let Err(why) = check_value(&s.name, &s.value, c) {
            problems.push(why);
            continue;
        }
        let needs = needs_for(c, &s.value);
        if needs != Needs::Nothing {
            changes.push(Change {
                name: s.name.clone(),
                current: display_setting(&c.setting, &c.unit),
                new: s.value.clone(),
                needs,
                previous_auto: None,
            });
        }
    }
    if !problems.is_empty() {
        return Err(LiveError::Invalid(problems));
    }
    if changes.is_empty() {
        return Ok(ApplyPlan { changes, unknown });
    }
    check_privileges(client, &changes).await?;
    check_with_server(client, &changes, &current).await?;
    let previous = auto_conf_entries(client).await?;
    for c in &mut changes {
        c.previous_auto = previous.get(&c.name).cloned();
    }
    Ok(ApplyPlan { changes, unknown })
}

/// Type, range and enum checks from pg_settings' own metadata.
fn check_value(name: &str, value: &str, c: &PgSetting) -> Result<(), String> {
    let bad = |why: String| Err(format!("{name} = '{value}': {why}"));
    if c.context == "internal" {
        return bad("it is fixed when PostgreSQL is built".into());
    }
    match c.vartype.as_str() {
        "bool" => {
            let v = value.to_ascii_lowercase();
            if !["on", "off", "true", "false", "yes", "no", "1", "0"].contains(&v.as_str()) {
                return bad("expected on or off".into());
            }
        }
        "integer" | "real" => {
            let Some(n) = to_unit(value, &c.unit) else {
                let unit = if c.unit.is_empty() {
                    String::new()
                } else {
                    format!(" (unit {})", c.unit)
                };
                return bad(format!("not a valid {}{unit}", c.vartype));
            };
            let min = c.min_val.as_deref().and_then(|m| m.parse::<f64>().ok());
            let max = c.max_val.as_deref().and_then(|m| m.parse::<f64>().ok());
            if let (Some(min), Some(max)) = (min, max) {
                if n < min || n > max {
                    let show = |v: f64| display_setting(&format!("{v}"), &c.unit);
                    return bad(format!(
                        "outside the server's range {} .. {}",
                        show(min),
                        show(max)
                    ));
                }
            }
        }
        "enum" => {
            if let Some(vals) = &c.enumvals {
                if !vals.iter().any(|v| v.eq_ignore_ascii_case(value)) {
                    return bad(format!("this server accepts {}", vals.join(", ")));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// ALTER SYSTEM needs superuser, or (PostgreSQL 15+) a GRANT ALTER SYSTEM ON PARAMETER.
async fn check_privileges(client: &Client, changes: &[Change]) -> Result<(), LiveError> {
    let names: Vec<String> = changes.iter().map(|c| c.name.clone()).collect();
    let rows = client
        .query(
            "SELECT n FROM unnest($1::text[]) AS n \
              WHERE NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) \
                AND (current_setting('server_version_num')::int < 150000 \
                     OR NOT has_parameter_privilege(n, 'ALTER SYSTEM'))",
            &[&names],
        )
        .await
        .map_err(q("check privileges"))?;
    if rows.is_empty() {
        return Ok(());
    }
    let missing: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Err(LiveError::Permission(format!(
        "ALTER SYSTEM on {} needs superuser or GRANT ALTER SYSTEM ON PARAMETER",
        missing.join(", ")
    )))
}

/// Settings a session may set are tried with `set_config(.., is_local => true)` in a
/// transaction that is rolled back: this runs the server's own check hooks (time zones,
/// search paths, ...) without writing anything.
async fn check_with_server(
    client: &Client,
    changes: &[Change],
    current: &BTreeMap<String, PgSetting>,
) -> Result<(), LiveError> {
    let settable: Vec<&Change> = changes
        .iter()
        .filter(|c| {
            current
                .get(&c.name)
                .is_some_and(|s| s.context == "user" || s.context == "superuser")
        })
        .collect();
    if settable.is_empty() {
        return Ok(());
    }
    let mut problems = Vec::new();
    client
        .batch_execute("BEGIN")
        .await
        .map_err(q("begin validation"))?;
    for c in settable {
        client
            .batch_execute("SAVEPOINT pgwarden_check")
            .await
            .map_err(q("validate"))?;
        if let Err(e) = client
            .query_one("SELECT set_config($1, $2, true)", &[&c.name, &c.new])
            .await
        {
            // A permission error here is not about the value: ALTER SYSTEM may still be
            // allowed (checked separately), so only value errors count.
            let permission = e.code().is_some_and(|code| {
                code == &tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE
            });
            if !permission {
                problems.push(format!(
                    "{} = '{}': {}",
                    c.name,
                    c.new,
                    pgw_common::error_line(&e)
                ));
            }
            client
                .batch_execute("ROLLBACK TO SAVEPOINT pgwarden_check")
                .await
                .map_err(q("validate"))?;
        }
    }
    client
        .batch_execute("ROLLBACK")
        .await
        .map_err(q("end validation"))?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(LiveError::Invalid(problems))
    }
}

/// The entries postgresql.auto.conf holds now (the last one per name wins).
async fn auto_conf_entries(client: &Client) -> Result<BTreeMap<String, String>, LiveError> {
    let rows = client
        .query(
            "SELECT name, setting FROM pg_file_settings \
              WHERE sourcefile LIKE '%postgresql.auto.conf' ORDER BY seqno",
            &[],
        )
        .await
        .map_err(|source| LiveError::Query {
            what: "read postgresql.auto.conf through pg_file_settings (needed to undo a partial apply)",
            source,
        })?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect())
}

/// What apply did.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub applied: Vec<Change>,
    /// Settings whose new value waits for a restart (pg_settings.pending_restart),
    /// including any that were pending before.
    pub pending_restart: Vec<String>,
    /// Whether the configuration was reloaded.
    pub reloaded: bool,
}

/// Writes every change with ALTER SYSTEM; if the server rejects one, the ones already
/// written are put back and nothing is reloaded, so the server is as it was. Then
/// reloads and reports what still needs a restart.
pub async fn execute_apply(client: &Client, plan: &ApplyPlan) -> Result<ApplyReport, LiveError> {
    if plan.changes.is_empty() {
        return Ok(ApplyReport {
            applied: Vec::new(),
            pending_restart: Vec::new(),
            reloaded: false,
        });
    }
    for (i, c) in plan.changes.iter().enumerate() {
        if let Err(source) = alter_system(client, &c.name, Some(&c.new)).await {
            let mut failed = Vec::new();
            for done in plan.changes[..i].iter().rev() {
                if alter_system(client, &done.name, done.previous_auto.as_deref())
                    .await
                    .is_err()
                {
                    failed.push(done.name.clone());
                }
            }
            if !failed.is_empty() {
                return Err(LiveError::RevertFailed {
                    name: c.name.clone(),
                    value: c.new.clone(),
                    failed: failed.join(", "),
                    source,
                });
            }
            return Err(LiveError::Rejected {
                name: c.name.clone(),
                value: c.new.clone(),
                reverted: i,
                source,
            });
        }
    }
    client
        .query_one("SELECT pg_reload_conf()", &[])
        .await
        .map_err(q("reload the configuration"))?;
    let pending_restart = wait_for_reload(client, plan).await?;
    Ok(ApplyReport {
        applied: plan.changes.clone(),
        pending_restart,
        reloaded: true,
    })
}

/// `ALTER SYSTEM SET name = value`, or `RESET` when `value` is None. ALTER SYSTEM takes
/// no bind parameters, so the server itself quotes both parts with format(%I, %L).
async fn alter_system(
    client: &Client,
    name: &str,
    value: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    let row = match value {
        Some(v) => {
            client
                .query_one(
                    "SELECT format('ALTER SYSTEM SET %I = %L', $1::text, $2::text)",
                    &[&name, &v],
                )
                .await?
        }
        None => {
            client
                .query_one("SELECT format('ALTER SYSTEM RESET %I', $1::text)", &[&name])
                .await?
        }
    };
    let stmt: String = row.get(0);
    client.batch_execute(&stmt).await
}

/// pg_reload_conf() only signals the postmaster; wait (up to 10 s) until this session
/// sees the reload, then list what waits for a restart.
async fn wait_for_reload(client: &Client, plan: &ApplyPlan) -> Result<Vec<String>, LiveError> {
    let names: Vec<String> = plan.changes.iter().map(|c| c.name.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = pg_settings(client, &names).await?;
        let settled = plan.changes.iter().all(|c| match now.get(&c.name) {
            Some(s) if c.needs == Needs::Restart => s.pending_restart,
            Some(s) => same_value(&c.new, &s.setting, &s.unit),
            None => true,
        });
        if settled || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = client
        .query(
            "SELECT name FROM pg_settings WHERE pending_restart ORDER BY name",
            &[],
        )
        .await
        .map_err(q("read pending restarts"))?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}
