//! `pgwarden doctor`: flags, flow and rendering (a table, JSON, or check_postgres-style
//! Nagios lines). Every failure to run is Nagios UNKNOWN (3), whatever its cause; the
//! worst finding decides 0, 1 or 2.

use clap::{Args, ValueEnum};

use pgw_common::output::table;

use crate::args::HostArgs;
use crate::exit::{Failure, Health, OrFail, Outcome, DOCTOR_EXIT_CODES};
use crate::render::{json, out};

#[derive(Debug, Args)]
#[command(after_help = DOCTOR_EXIT_CODES)]
pub struct DoctorArgs {
    /// Server to check: conninfo string or URI.
    #[arg(short = 'd', long)]
    pub dsn: Option<String>,
    /// Only this database (default: every database that allows connections).
    #[arg(long)]
    pub dbname: Option<String>,
    /// Run only this check (see --list).
    #[arg(long = "check", value_name = "ID")]
    pub check: Option<String>,
    /// List the checks with their thresholds and exit.
    #[arg(long)]
    pub list: bool,
    /// Thresholds from a TOML file with a [thresholds] table (flags override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Change a threshold: --threshold idle_in_transaction_warning_secs=30 (repeatable).
    #[arg(long = "threshold", value_name = "NAME=VALUE")]
    pub thresholds: Vec<String>,
    /// Output: table (default), json, or nagios (check_postgres-style lines).
    #[arg(long, value_enum, default_value_t = DoctorFormat::Table)]
    pub format: DoctorFormat,
    /// The server's host, for config_audit's tuning advice.
    #[command(flatten)]
    pub host: HostArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DoctorFormat {
    Table,
    Json,
    Nagios,
}

/// Runs `pgwarden doctor ...` (the binary maps failures with the Nagios convention).
pub async fn run(args: DoctorArgs) -> Result<Outcome, Failure> {
    let mut thresholds = match &args.config {
        Some(path) => pgw_doctor::Thresholds::from_file(path).or_fail("doctor --config")?,
        None => pgw_doctor::Thresholds::default(),
    };
    for t in &args.thresholds {
        thresholds.set(t).or_fail("doctor --threshold")?;
    }
    if args.list {
        out(&list(&thresholds));
        return Ok(Outcome::Done);
    }
    let opts = pgw_doctor::Options {
        dsn: args.dsn.clone(),
        dbname: args.dbname.clone(),
        only: args.check.clone(),
        thresholds,
        host: args.host.given(),
    };
    let report = pgw_doctor::run(&opts).await.or_fail("doctor")?;
    match args.format {
        DoctorFormat::Json => out(&json(&report)),
        DoctorFormat::Table => out(&findings(&report)),
        DoctorFormat::Nagios => out(&nagios(&report)),
    }
    Ok(Outcome::Health(match report.worst() {
        Some(pgw_doctor::Severity::Critical) => Health::Critical,
        Some(pgw_doctor::Severity::Warning) => Health::Warning,
        _ => Health::Ok,
    }))
}

/// `pgwarden doctor` as a table: findings worst first, then what was skipped.
pub(crate) fn findings(r: &pgw_doctor::Report) -> String {
    let mut findings: Vec<&pgw_doctor::Finding> = r.findings.iter().collect();
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.check.cmp(&b.check)));
    let mut s = String::new();
    if findings.is_empty() {
        s.push_str(&format!(
            "No findings from {} check(s).\n",
            r.checks_run.len()
        ));
    } else {
        let rows = findings.iter().map(|f| {
            vec![
                f.severity.to_string(),
                f.check.clone(),
                f.database.clone().unwrap_or_default(),
                f.object.clone().unwrap_or_default(),
                f.detail.clone(),
                f.remediation.join("\n"),
            ]
        });
        s.push_str(&table(
            &[
                "severity",
                "check",
                "database",
                "object",
                "detail",
                "remediation",
            ],
            rows,
        ));
        s.push('\n');
    }
    for k in &r.skipped {
        s.push_str(&format!(
            "{} {}{}{}: {}\n",
            if k.object.is_some() {
                "not checked by"
            } else {
                "skipped"
            },
            k.check,
            k.database
                .as_deref()
                .map(|d| format!(" in {d}"))
                .unwrap_or_default(),
            k.object
                .as_deref()
                .map(|o| format!(" {o}"))
                .unwrap_or_default(),
            k.reason
        ));
    }
    s
}

/// What a check could not look at, for its Nagios line: "not checked: a, b (+N more): reason".
fn not_checked(skipped: &[&pgw_doctor::Skipped]) -> String {
    let objects: Vec<&str> = skipped.iter().filter_map(|k| k.object.as_deref()).collect();
    if objects.is_empty() {
        return skipped
            .first()
            .map(|k| k.reason.clone())
            .unwrap_or_default();
    }
    let more = if objects.len() > 3 {
        format!(" (+{} more)", objects.len() - 3)
    } else {
        String::new()
    };
    format!(
        "{} object(s) not checked: {}{more}: {}",
        objects.len(),
        objects[..objects.len().min(3)].join(", "),
        skipped
            .iter()
            .find(|k| k.object.is_some())
            .map(|k| k.reason.as_str())
            .unwrap_or_default()
    )
}

/// `pgwarden doctor --format nagios`: one check_postgres-style line per check,
/// `PGWARDEN_<CHECK> <STATE>: <message> | <perfdata>`.
fn nagios(r: &pgw_doctor::Report) -> String {
    let mut s = String::new();
    for id in &r.checks_run {
        let mine: Vec<&pgw_doctor::Finding> =
            r.findings.iter().filter(|f| &f.check == id).collect();
        let worst = mine.iter().map(|f| f.severity).max();
        let skipped: Vec<&pgw_doctor::Skipped> =
            r.skipped.iter().filter(|k| &k.check == id).collect();
        let state = match worst {
            Some(sev) if sev > pgw_doctor::Severity::Info => sev.nagios(),
            _ if !skipped.is_empty() => "UNKNOWN",
            _ => "OK",
        };
        let message = if mine.is_empty() {
            if skipped.is_empty() {
                "no findings".to_string()
            } else {
                not_checked(&skipped)
            }
        } else {
            let first: Vec<String> = mine
                .iter()
                .take(3)
                .map(|f| match &f.object {
                    Some(o) => format!("{o}: {}", f.detail),
                    None => f.detail.clone(),
                })
                .collect();
            let more = if mine.len() > 3 {
                format!(" (+{} more)", mine.len() - 3)
            } else {
                String::new()
            };
            let unseen = if skipped.is_empty() {
                String::new()
            } else {
                format!("; {}", not_checked(&skipped))
            };
            format!(
                "{} finding(s): {}{more}{unseen}",
                mine.len(),
                first.join("; ")
            )
        };
        let perf: Vec<&str> = mine.iter().filter_map(|f| f.perfdata.as_deref()).collect();
        let message = message.replace('|', "/");
        if perf.is_empty() {
            s.push_str(&format!(
                "PGWARDEN_{} {state}: {message}\n",
                id.to_uppercase()
            ));
        } else {
            s.push_str(&format!(
                "PGWARDEN_{} {state}: {message} | {}\n",
                id.to_uppercase(),
                perf.join(" ")
            ));
        }
    }
    s
}

/// `pgwarden doctor --list`: every check, its scope and its thresholds with their values.
fn list(t: &pgw_doctor::Thresholds) -> String {
    let values = t.entries();
    let rows = pgw_doctor::checks::all().into_iter().map(|c| {
        let th: Vec<String> = c
            .thresholds
            .iter()
            .map(|name| {
                let v = values
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("?");
                format!("{name}={v}")
            })
            .collect();
        vec![
            c.id.to_string(),
            match c.scope {
                pgw_doctor::checks::Scope::Cluster => "server".to_string(),
                pgw_doctor::checks::Scope::Database => "each database".to_string(),
            },
            c.summary.to_string(),
            th.join(", "),
        ]
    });
    table(&["check", "scope", "finds", "thresholds"], rows) + "\n"
}
