//! `config_audit`, cluster-wide: risky settings.
//!
//! - `fsync = off` or `full_page_writes = off`: a crash can corrupt the cluster (critical).
//! - `autovacuum = off`, or `track_counts = off` (autovacuum needs those statistics to
//!   know what to vacuum): bloat and, in the end, transaction ID wraparound (warning).
//!
//! - settings far from what `pgwarden tune` recommends for the server's host (info). The
//!   host's memory and cores come from doctor's `--memory`/`--cpus` (and `--storage`,
//!   `--workload`), else from this machine when the server runs on it.
//!
//! The remediation is `ALTER SYSTEM` and a reload when the setting's context allows
//! (all four are `sighup` or `superuser`), a restart otherwise.

use pgw_common::sql;

use super::{CheckInfo, Ctx, Outcome, Scope};
use crate::model::{Finding, Severity};

/// The checks of this module, in the order they run.
pub(super) const CHECKS: &[CheckInfo] = &[CheckInfo {
    id: "config_audit",
    scope: Scope::Cluster,
    summary: "risky settings: fsync or full_page_writes off (critical), autovacuum off (warning); settings far from pgwarden tune's advice for this host (info)",
    thresholds: &[],
}];

/// Runs check `id` if it is one of this module's.
pub(super) async fn run(id: &str, ctx: &Ctx<'_>) -> Option<Result<Outcome, tokio_postgres::Error>> {
    Some(match id {
        "config_audit" => config_audit(ctx).await.map(Outcome::from),
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
            "action: restart the server (the setting needs a restart)".to_string()
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
            remediation: vec![
                format!("ALTER SYSTEM SET {} = on;", sql::ident(&name)),
                apply,
            ],
            perfdata: None,
        });
    }
    findings.extend(tuning_advice(ctx).await);
    Ok(findings)
}

/// Info findings for settings far from what `pgwarden tune` recommends for this server's
/// host: a number more than twice or less than half the recommendation, or another word
/// for an enum or boolean. Needs the host's memory (and cores, else parallel settings are
/// left alone): given by flags, or read from this machine when the server is a verified
/// PostgreSQL backend in /proc here; with neither, one Info finding says how to get the
/// advice. Best effort: a failure to gather facts gives no advice, never an
/// error that would hide the risky-settings findings.
async fn tuning_advice(ctx: &Ctx<'_>) -> Vec<Finding> {
    use pgw_tune::host::{storage_of, HostFacts};
    use pgw_tune::live::{self, Needs};
    use pgw_tune::resolve::{resolve, Facts};

    let info = |object: Option<String>, detail: String, remediation: Vec<String>| Finding {
        check: "config_audit".to_string(),
        severity: Severity::Info,
        database: None,
        object,
        detail,
        remediation,
        perfdata: None,
    };
    let Ok(server) = live::server_facts(ctx.client).await else {
        return Vec::new();
    };
    let host = HostFacts::detect_for_server(server.backend_pid);
    if host.is_none() && ctx.host.memory_kb.is_none() {
        return vec![info(
            None,
            "tuning advice needs the server host's memory and cores, which cannot be read from \
             here: the server runs on another host"
                .to_string(),
            vec!["action: pgwarden doctor --check config_audit -d <this server> --memory <its RAM> --cpus <its cores>"
                .to_string()],
        )];
    }
    // The data directory's storage class only means something on this machine.
    let storage = host.as_ref().and_then(|_| {
        server
            .data_directory
            .as_deref()
            .and_then(|d| storage_of(std::path::Path::new(d)))
    });
    let facts = Facts {
        server: Some(server.clone()),
        host,
        storage,
    };
    let Ok((inputs, report)) = resolve(ctx.host, &facts) else {
        return Vec::new();
    };
    let Ok(mut rec) = pgw_tune::recommend(&inputs) else {
        return Vec::new();
    };
    pgw_tune::run::adapt_to_server(&mut rec, &server);
    let Ok(rows) = live::diff(ctx.client, &rec).await else {
        return Vec::new();
    };
    let basis = format!(
        "for {} RAM, {} CPUs, {} workload{}",
        report.memory,
        report
            .cpus
            .map(|c| c.to_string())
            .unwrap_or_else(|| "?".into()),
        report.workload,
        if report.assumed.contains(&"workload") {
            " (assumed)"
        } else {
            ""
        }
    );
    rows.into_iter()
        .filter(|r| matches!(r.needs, Needs::Reload | Needs::Restart))
        .filter(|r| r.current.as_deref().is_some_and(|c| far(c, &r.recommended)))
        .map(|r| {
            let current = r.current.clone().unwrap_or_default();
            let then = if r.needs == Needs::Restart {
                "action: restart the server (the setting needs a restart)".to_string()
            } else {
                "SELECT pg_reload_conf();".to_string()
            };
            info(
                Some(r.name.clone()),
                format!(
                    "{} is {current}; pgwarden tune recommends {} {basis}: {}",
                    r.name, r.recommended, r.reason
                ),
                vec![
                    format!(
                        "ALTER SYSTEM SET {} = {};",
                        sql::ident(&r.name),
                        sql::literal(&r.recommended)
                    ),
                    then,
                ],
            )
        })
        .collect()
}

/// Whether `current` is far from `recommended`: numbers (in a common unit) more than a
/// factor of two apart, or different words.
fn far(current: &str, recommended: &str) -> bool {
    use pgw_tune::units::to_unit;
    for unit in ["kB", "ms", ""] {
        if let (Some(a), Some(b)) = (to_unit(current, unit), to_unit(recommended, unit)) {
            if a <= 0.0 || b <= 0.0 {
                return (a - b).abs() > f64::EPSILON;
            }
            let ratio = a / b;
            return !(0.5..=2.0).contains(&ratio);
        }
    }
    !current.eq_ignore_ascii_case(recommended)
}
