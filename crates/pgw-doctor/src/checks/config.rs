//! `config_audit`, cluster-wide: risky settings.
//!
//! - `fsync = off` or `full_page_writes = off`: a crash can corrupt the cluster (critical).
//! - `autovacuum = off`, or `track_counts = off` (autovacuum needs those statistics to
//!   know what to vacuum): bloat and, in the end, transaction ID wraparound (warning).
//!
//! The remediation is `ALTER SYSTEM` and a reload when the setting's context allows
//! (all four are `sighup` or `superuser`), a restart otherwise.

use super::{CheckInfo, Ctx, Scope};
use crate::model::{Finding, Severity};

/// The checks of this module, in the order they run.
pub(super) const CHECKS: &[CheckInfo] = &[CheckInfo {
    id: "config_audit",
    scope: Scope::Cluster,
    summary: "risky settings: fsync or full_page_writes off (critical), autovacuum off (warning)",
    thresholds: &[],
}];

/// Runs check `id` if it is one of this module's.
pub(super) async fn run(
    id: &str,
    ctx: &Ctx<'_>,
) -> Option<Result<Vec<Finding>, tokio_postgres::Error>> {
    Some(match id {
        "config_audit" => config_audit(ctx).await,
        _ => return None,
    })
}

/// The risky settings: name, severity when off, why.
const RISKY: &[(&str, Severity, &str)] = &[
    (
        "fsync",
        Severity::Critical,
        "a crash or power loss can corrupt the cluster beyond repair; after turning it back on, \
         flush what was written without it (sync, or initdb --sync-only on a stopped server)",
    ),
    (
        "full_page_writes",
        Severity::Critical,
        "a crash during a partial page write can leave torn pages that recovery cannot repair",
    ),
    (
        "autovacuum",
        Severity::Warning,
        "tables bloat, statistics go stale and only manual VACUUM prevents transaction ID wraparound \
         (anti-wraparound vacuums still run)",
    ),
    (
        "track_counts",
        Severity::Warning,
        "autovacuum needs these statistics to find the tables to vacuum and analyze",
    ),
];

/// Risky settings that are off.
pub(super) async fn config_audit(ctx: &Ctx<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let names: Vec<&str> = RISKY.iter().map(|(n, _, _)| *n).collect();
    let rows = ctx
        .client
        .query(
            "SELECT name, setting, context, source FROM pg_settings WHERE name = ANY($1) ORDER BY name",
            &[&names],
        )
        .await?;
    let mut findings = Vec::new();
    for r in &rows {
        let name: String = r.get("name");
        let setting: String = r.get("setting");
        let context: String = r.get("context");
        let source: Option<String> = r.get("source");
        if setting != "off" {
            continue;
        }
        let Some((_, severity, why)) = RISKY.iter().find(|(n, _, _)| *n == name) else {
            continue;
        };
        let apply = if context == "postmaster" {
            "-- then restart the server".to_string()
        } else {
            "SELECT pg_reload_conf();".to_string()
        };
        findings.push(Finding {
            check: "config_audit".to_string(),
            severity: *severity,
            database: None,
            object: Some(name.clone()),
            detail: format!(
                "{name} is off (set by {}): {why}",
                source.as_deref().unwrap_or("?")
            ),
            remediation: format!("ALTER SYSTEM SET {name} = on; {apply}"),
            perfdata: None,
        });
    }
    Ok(findings)
}
