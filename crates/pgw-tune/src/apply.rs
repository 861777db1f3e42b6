//! `pgwarden tune apply`: validate everything, then ALTER SYSTEM + reload, all or nothing.
//!
//! Order of events, each step refusing before anything is written:
//! 1. every value against `pg_settings` (type, range, enum) and, for settings a session
//!    may set, against the server's own check hooks (`set_config` in a rolled-back
//!    transaction);
//! 2. cross-setting safety (`wal_level = minimal` with archiving, standbys or slots would
//!    stop the server from starting);
//! 3. privileges: ALTER SYSTEM on each parameter, `pg_reload_conf()`, and reading
//!    `pg_file_settings` (needed to put entries back);
//! 4. the configuration files parse (a reload of a broken file is ignored by the server).
//!
//! Then each entry is written; if the server rejects one, the connection is interrupted
//! by the user, or the reload fails, the entries already written are put back to what
//! postgresql.auto.conf held before, and nothing is reloaded.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Client;

use crate::live::{in_effect, needs_for, pg_settings, q, LiveError, Needs, PgSetting};
use crate::recommend::{Origin, Recommendation};
use crate::units::{as_bool, display_setting, to_unit};

/// One change apply will make.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub name: String,
    pub current: String,
    pub new: String,
    pub needs: Needs,
    /// pg_settings.context: when the new value takes effect (`backend` settings apply to
    /// new sessions only).
    pub context: String,
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
/// changes to make. Writes nothing. Every problem of a kind is reported at once.
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
        let needs = needs_for(&s.name, c, &s.value);
        if needs != Needs::Nothing {
            changes.push(Change {
                name: s.name.clone(),
                current: display_setting(&c.setting, &c.unit),
                new: s.value.clone(),
                needs,
                context: c.context.clone(),
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
    check_with_server(client, &changes).await?;
    check_safety(client, &changes).await?;
    check_privileges(client, &changes).await?;
    let previous = config_files(client).await?;
    for c in &mut changes {
        c.previous_auto = previous.get(&c.name).cloned();
    }
    Ok(ApplyPlan { changes, unknown })
}

/// Type, range and enum checks from pg_settings' own metadata. Spellings PostgreSQL
/// accepts beyond the listed ones (bool prefixes, hidden enum aliases such as `on` for
/// synchronous_commit) are left to the server's checks.
fn check_value(name: &str, value: &str, c: &PgSetting) -> Result<(), String> {
    let bad = |why: String| Err(format!("{name} = '{value}': {why}"));
    if c.context == "internal" {
        return bad("it is fixed when PostgreSQL is built".into());
    }
    match c.vartype.as_str() {
        "bool" if as_bool(value).is_none() => bad("expected on or off".into()),
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
            match (min, max) {
                (Some(min), Some(max)) if n < min || n > max => {
                    let show = |v: f64| display_setting(&format!("{v}"), &c.unit);
                    bad(format!(
                        "outside the server's range {} .. {}",
                        show(min),
                        show(max)
                    ))
                }
                _ => Ok(()),
            }
        }
        "enum" => match &c.enumvals {
            Some(vals)
                if !vals.iter().any(|v| v.eq_ignore_ascii_case(value))
                    && as_bool(value).is_none() =>
            {
                bad(format!("this server accepts {}", vals.join(", ")))
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Settings a session may set are tried with `set_config(.., is_local => true)` in a
/// transaction that is rolled back: this runs the server's own check hooks (time zones,
/// search paths, ...) without writing anything.
async fn check_with_server(client: &Client, changes: &[Change]) -> Result<(), LiveError> {
    let settable: Vec<&Change> = changes
        .iter()
        .filter(|c| c.context == "user" || c.context == "superuser")
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

/// Changes that each pass on their own but would stop the server at its next start.
async fn check_safety(client: &Client, changes: &[Change]) -> Result<(), LiveError> {
    let minimal = changes
        .iter()
        .any(|c| c.name == "wal_level" && c.new.eq_ignore_ascii_case("minimal"));
    if !minimal {
        return Ok(());
    }
    let row = client
        .query_one(
            "SELECT current_setting('archive_mode'), \
                    (SELECT count(*) FROM pg_replication_slots), \
                    (SELECT count(*) FROM pg_stat_replication)",
            &[],
        )
        .await
        .map_err(q("check what depends on wal_level"))?;
    let archive: String = row.get(0);
    let slots: i64 = row.get(1);
    let standbys: i64 = row.get(2);
    let mut why = Vec::new();
    if archive != "off" {
        why.push(format!("archive_mode is {archive}"));
    }
    if slots > 0 {
        why.push(format!("{slots} replication slot(s) exist"));
    }
    if standbys > 0 {
        why.push(format!("{standbys} standby(s) are streaming"));
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(LiveError::Unsafe(format!(
            "wal_level = minimal while {} (use a workload other than desktop, or --set wal_level=replica)",
            why.join(" and ")
        )))
    }
}

/// Before PostgreSQL 15 ALTER SYSTEM needs superuser; from 15 on, GRANT ALTER SYSTEM ON
/// PARAMETER suffices, plus EXECUTE on pg_reload_conf() and SELECT on pg_file_settings
/// (to be able to put entries back).
async fn check_privileges(client: &Client, changes: &[Change]) -> Result<(), LiveError> {
    let row = client
        .query_one(
            "SELECT rolsuper, current_setting('server_version_num')::int, \
                    has_function_privilege('pg_catalog.pg_reload_conf()', 'EXECUTE'), \
                    has_table_privilege('pg_catalog.pg_file_settings', 'SELECT') \
                    AND has_function_privilege('pg_catalog.pg_show_all_file_settings()', 'EXECUTE') \
               FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(q("check privileges"))?;
    let (superuser, version): (bool, i32) = (row.get(0), row.get(1));
    if superuser {
        return Ok(());
    }
    if version < 150000 {
        return Err(LiveError::Permission(
            "ALTER SYSTEM needs superuser before PostgreSQL 15".into(),
        ));
    }
    let mut missing = Vec::new();
    let names: Vec<String> = changes.iter().map(|c| c.name.clone()).collect();
    // has_parameter_privilege exists from PostgreSQL 15 on, checked above.
    let rows = client
        .query(
            "SELECT n FROM unnest($1::text[]) AS n \
              WHERE NOT has_parameter_privilege(n, 'ALTER SYSTEM')",
            &[&names],
        )
        .await
        .map_err(q("check privileges"))?;
    if !rows.is_empty() {
        let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        missing.push(format!(
            "ALTER SYSTEM on {} (GRANT ALTER SYSTEM ON PARAMETER)",
            names.join(", ")
        ));
    }
    if !row.get::<_, bool>(2) {
        missing.push("EXECUTE on pg_reload_conf()".into());
    }
    if !row.get::<_, bool>(3) {
        missing.push(
            "SELECT on pg_file_settings and EXECUTE on pg_show_all_file_settings() (to undo a partial apply)"
                .into(),
        );
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(LiveError::Permission(format!(
            "tune apply needs superuser or {}",
            missing.join(", ")
        )))
    }
}

/// Reads pg_file_settings: refuses if any configuration file has an error (the server
/// would ignore the reload), and returns what postgresql.auto.conf holds now (the last
/// entry per name wins).
async fn config_files(client: &Client) -> Result<BTreeMap<String, String>, LiveError> {
    let rows = client
        .query(
            "SELECT sourcefile, sourceline, name, setting, error FROM pg_file_settings \
              ORDER BY seqno",
            &[],
        )
        .await
        .map_err(q("read pg_file_settings"))?;
    let mut auto = BTreeMap::new();
    let mut errors = Vec::new();
    for r in rows {
        let file: Option<String> = r.get(0);
        let line: Option<i32> = r.get(1);
        let name: Option<String> = r.get(2);
        let setting: Option<String> = r.get(3);
        let error: Option<String> = r.get(4);
        if let Some(e) = error {
            errors.push(format!(
                "{}:{}: {e}",
                file.as_deref().unwrap_or("?"),
                line.unwrap_or(0)
            ));
            continue;
        }
        if let (Some(f), Some(n), Some(v)) = (file, name, setting) {
            if f.ends_with("postgresql.auto.conf") {
                auto.insert(n, v);
            }
        }
    }
    if errors.is_empty() {
        Ok(auto)
    } else {
        Err(LiveError::ConfigErrors(errors))
    }
}

/// What apply did.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub applied: Vec<Change>,
    /// Settings whose new value waits for a restart (pg_settings.pending_restart),
    /// including any that were pending before.
    pub pending_restart: Vec<String>,
    /// Written and reloaded, yet not in effect after 10 s: see the server log.
    pub not_in_effect: Vec<String>,
    /// Whether the configuration was reloaded.
    pub reloaded: bool,
}

/// Writes every change with ALTER SYSTEM; if the server rejects one, the reload fails,
/// or `interrupted()` turns true before the last write (it is asked before each), the entries already written are put
/// back and nothing is reloaded, so the server is as it was. Then reloads and reports
/// what still needs a restart.
pub async fn execute_apply(
    client: &Client,
    plan: &ApplyPlan,
    interrupted: &(dyn Fn() -> bool + Sync),
) -> Result<ApplyReport, LiveError> {
    if plan.changes.is_empty() {
        return Ok(ApplyReport {
            applied: Vec::new(),
            pending_restart: Vec::new(),
            not_in_effect: Vec::new(),
            reloaded: false,
        });
    }
    for (i, c) in plan.changes.iter().enumerate() {
        if interrupted() {
            tracing::info!(written = i, "interrupted; putting back what was written");
            return Err(match undo(client, &plan.changes[..i]).await {
                Ok(()) => LiveError::Interrupted { reverted: i },
                Err(failed) => LiveError::RevertFailed {
                    what: "interrupted".into(),
                    failed,
                    source: None,
                },
            });
        }
        if let Err(source) = alter_system(client, &c.name, Some(&c.new)).await {
            tracing::info!(setting = %c.name, value = %c.new, error = %pgw_common::error_line(&source), "rejected; putting back what was written");
            return Err(match undo(client, &plan.changes[..i]).await {
                Ok(()) => LiveError::Rejected {
                    name: c.name.clone(),
                    value: c.new.clone(),
                    reverted: i,
                    source,
                },
                Err(failed) => LiveError::RevertFailed {
                    what: format!("the server rejected {} = '{}'", c.name, c.new),
                    failed,
                    source: Some(source),
                },
            });
        }
    }
    tracing::info!(settings = plan.changes.len(), "written; reloading");
    if let Err(source) = client.query_one("SELECT pg_reload_conf()", &[]).await {
        return Err(match undo(client, &plan.changes).await {
            Ok(()) => LiveError::ReloadFailed {
                reverted: plan.changes.len(),
                source,
            },
            Err(failed) => LiveError::RevertFailed {
                what: "the reload failed".into(),
                failed,
                source: Some(source),
            },
        });
    }
    let not_in_effect = wait_for_reload(client, plan).await?;
    let rows = client
        .query(
            "SELECT name FROM pg_settings WHERE pending_restart ORDER BY name",
            &[],
        )
        .await
        .map_err(q("read pending restarts"))?;
    Ok(ApplyReport {
        applied: plan.changes.clone(),
        pending_restart: rows.into_iter().map(|r| r.get(0)).collect(),
        not_in_effect,
        reloaded: true,
    })
}

/// Puts the entries of `written` back to what postgresql.auto.conf held before; returns
/// the names that could not be put back (the caller's error carries them, and the binary
/// prints it once: each failure is only a debug event here).
async fn undo(client: &Client, written: &[Change]) -> Result<(), String> {
    let mut failed = Vec::new();
    for c in written.iter().rev() {
        if let Err(e) = alter_system(client, &c.name, c.previous_auto.as_deref()).await {
            tracing::debug!(setting = %c.name, error = %e, "could not put the entry back");
            failed.push(c.name.clone());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join(", "))
    }
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
    tracing::debug!(sql = %stmt, "alter system");
    client.batch_execute(&stmt).await
}

/// pg_reload_conf() only signals the postmaster; wait (up to 10 s) until this session
/// sees the reload. Returns the reload-context settings still not in effect. Settings of
/// context `backend` apply to new sessions only and are not waited for.
async fn wait_for_reload(client: &Client, plan: &ApplyPlan) -> Result<Vec<String>, LiveError> {
    let names: Vec<String> = plan.changes.iter().map(|c| c.name.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = pg_settings(client, &names).await?;
        let lagging: Vec<String> = plan
            .changes
            .iter()
            .filter(|c| !c.context.ends_with("backend"))
            .filter(|c| match now.get(&c.name) {
                Some(s) if c.needs == Needs::Restart => !s.pending_restart,
                Some(s) => !in_effect(&c.name, &c.new, s),
                None => false,
            })
            .map(|c| {
                let still = now
                    .get(&c.name)
                    .map(|s| display_setting(&s.setting, &s.unit))
                    .unwrap_or_default();
                format!("{} (still {still})", c.name)
            })
            .collect();
        if lagging.is_empty() || Instant::now() > deadline {
            return Ok(lagging);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
