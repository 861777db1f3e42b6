//! `pgwarden tune`: flags, flow and rendering. Recommends postgresql.conf settings from
//! hardware and workload (`pgw_tune::run::recommend_for`), diffs them against a live server
//! (`--diff`), or applies them (`tune apply`: validate everything, confirm, ALTER SYSTEM +
//! reload, all or nothing).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{Args, Subcommand, ValueEnum};
use tokio::signal::unix::{signal, SignalKind};

use pgw_common::output::table;
use pgw_tune::apply::{ApplyPlan, ApplyReport};
use pgw_tune::inputs::DbSize;
use pgw_tune::live::{DiffRow, Needs};
use pgw_tune::resolve::Given;
use pgw_tune::run::{Request, TuneReport};

use crate::args::{HostArgs, OutputFormat};
use crate::exit::{Failure, OrFail, Outcome, Usage, EXIT_CODES};
use crate::render::{json, out};
use crate::term;

/// `pgwarden tune [flags] [--diff]` or `pgwarden tune apply [flags]`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES, args_conflicts_with_subcommands = true)]
pub struct TuneCmd {
    #[command(flatten)]
    pub args: TuneArgs,
    /// Compare the recommendation with the live server's settings (needs a server).
    #[arg(long)]
    pub diff: bool,
    /// Output: table (default), json, conf (a postgresql.conf snippet) or sql (ALTER SYSTEM).
    #[arg(long, value_enum, default_value_t = TuneFormat::Table)]
    pub format: TuneFormat,
    #[command(subcommand)]
    pub action: Option<TuneAction>,
}

#[derive(Debug, Subcommand)]
pub enum TuneAction {
    /// Validate every value against the server, then ALTER SYSTEM + reload, all or nothing.
    #[command(after_help = EXIT_CODES)]
    Apply(ApplyArgs),
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub args: TuneArgs,
    /// Apply without asking (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args, Clone)]
pub struct TuneArgs {
    /// Server to read (and for apply, change): conninfo string or URI.
    #[arg(short = 'd', long)]
    pub dsn: Option<String>,
    #[command(flatten)]
    pub host: HostArgs,
    /// Expected max_connections (default: the server's, else the workload's default).
    #[arg(long, value_parser = parse_connections, allow_hyphen_values = true)]
    pub connections: Option<u32>,
    /// PostgreSQL major version, 10 to 18 (default: the server's, else 15).
    #[arg(long, value_parser = clap::value_parser!(u32).range(10..=18))]
    pub pg_version: Option<u32>,
    /// Database size against RAM: less-ram, mid-ram (1-3x, default), greater-ram.
    #[arg(long, value_enum)]
    pub db_size: Option<DbSizeArg>,
    /// Override or add a setting: --set work_mem=64MB (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TuneFormat {
    Table,
    Json,
    Conf,
    Sql,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[allow(clippy::enum_variant_names)] // the variant names are the flag values
pub enum DbSizeArg {
    LessRam,
    MidRam,
    GreaterRam,
}

impl From<DbSizeArg> for DbSize {
    fn from(d: DbSizeArg) -> Self {
        match d {
            DbSizeArg::LessRam => DbSize::LessRam,
            DbSizeArg::MidRam => DbSize::MidRam,
            DbSizeArg::GreaterRam => DbSize::GreaterRam,
        }
    }
}

fn parse_connections(s: &str) -> Result<u32, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if (1..=999_999).contains(&n) => Ok(n as u32),
        Ok(n) => Err(format!("must be from 1 to 999999 (got {n})")),
        Err(_) => Err(format!("'{s}' is not a whole number")),
    }
}

fn parse_set(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not NAME=VALUE"))?;
    let name = name.trim();
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !valid {
        return Err(format!("'{name}' is not a setting name"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("the value of {name} contains a control character"));
    }
    Ok((name.to_ascii_lowercase(), value.trim().to_string()))
}

/// Runs `pgwarden tune ...`.
pub async fn run(cmd: TuneCmd) -> Result<Outcome, Failure> {
    match cmd.action {
        Some(TuneAction::Apply(a)) => apply(&a.args, a.yes, a.format).await,
        None if cmd.diff => diff_cmd(&cmd.args, cmd.format).await,
        None => recommend(&cmd.args, cmd.format).await,
    }
}

fn request(args: &TuneArgs, use_server: bool) -> Request {
    Request {
        given: Given {
            connections: args.connections,
            pg_version: args.pg_version,
            db_size: args.db_size.map(Into::into),
            ..args.host.given()
        },
        use_server,
        dsn: args.dsn.clone(),
        overrides: args.set.clone(),
    }
}

async fn recommend(args: &TuneArgs, format: TuneFormat) -> Result<Outcome, Failure> {
    let req = request(args, args.dsn.is_some());
    let (report, _session) = pgw_tune::run::recommend_for(&req).await.or_fail("tune")?;
    out(&tune(&report, format));
    Ok(Outcome::Done)
}

async fn diff_cmd(args: &TuneArgs, format: TuneFormat) -> Result<Outcome, Failure> {
    if matches!(format, TuneFormat::Conf | TuneFormat::Sql) {
        return Err(Failure::from_classified(Usage(
            "--diff prints a table or json; use --format conf or sql without --diff",
        )));
    }
    let report = pgw_tune::run::diff(&request(args, true))
        .await
        .or_fail("tune --diff")?;
    match format {
        TuneFormat::Json => out(&json(&report)),
        _ => out(&diff(&report, report.diff.as_deref().unwrap_or(&[]))),
    }
    Ok(Outcome::Done)
}

async fn apply(args: &TuneArgs, yes: bool, format: OutputFormat) -> Result<Outcome, Failure> {
    let (report, plan, session) = pgw_tune::run::plan_apply(&request(args, true))
        .await
        .or_fail("tune apply")?;
    if plan.changes.is_empty() {
        match format {
            OutputFormat::Json => out(&json(&serde_json::json!({
                "inputs": report.inputs, "plan": plan, "applied": [], "pending_restart": [], "reloaded": false
            }))),
            OutputFormat::Table => out(&plan_table(&plan)),
        }
        return Ok(Outcome::Done);
    }
    if format == OutputFormat::Table {
        out(&format!("{}\n{}", inputs(&report), plan_table(&plan)));
    }
    let question = format!(
        "Write {} setting(s) to {} with ALTER SYSTEM and reload?",
        plan.changes.len(),
        session.params.target()
    );
    let refusal =
        "refusing to change the server without confirmation: pass --yes (stdin is not a terminal)";
    if !term::go_ahead(yes, &question, refusal)? {
        return Ok(Outcome::NotConfirmed);
    }
    // From here on Ctrl-C (or SIGTERM) must not kill the process between two ALTER
    // SYSTEMs: it sets a flag, and apply puts back what it wrote before it stops.
    let interrupted = Arc::new(AtomicBool::new(false));
    for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
        let mut sig = signal(kind)
            .map_err(|e| Failure::new(pgw_common::ErrorClass::Failed, e))
            .map_err(|f| f.context("install the Ctrl-C handler"))?;
        let flag = interrupted.clone();
        tokio::spawn(async move {
            if sig.recv().await.is_some() {
                flag.store(true, Ordering::SeqCst);
            }
        });
    }
    let applied = pgw_tune::run::execute_apply(&session, &plan, &interrupted)
        .await
        .or_fail("tune apply")?;
    match format {
        OutputFormat::Json => out(&json(&serde_json::json!({
            "inputs": report.inputs,
            "plan": plan,
            "applied": applied.applied,
            "pending_restart": applied.pending_restart,
            "not_in_effect": applied.not_in_effect,
            "reloaded": applied.reloaded,
        }))),
        OutputFormat::Table => out(&applied_text(&applied)),
    }
    if applied.not_in_effect.is_empty() {
        Ok(Outcome::Done)
    } else {
        Err(Failure::new(
            pgw_common::ErrorClass::Failed,
            NotInEffect(applied.not_in_effect.join(", ")),
        ))
    }
}

/// Settings written and reloaded that the server still does not run with.
#[derive(Debug, thiserror::Error)]
#[error("tune apply: written and reloaded, but not in effect: {0} (see the server log)")]
struct NotInEffect(String);

/// The inputs table: each input, its value, and where it came from.
pub(crate) fn inputs(r: &TuneReport) -> String {
    let i = &r.inputs;
    let src = |k: &str| i.sources.get(k).cloned().unwrap_or_default();
    let mut rows = vec![
        vec![
            "memory".to_string(),
            format!("{} ({:.1} GiB)", i.memory, i.memory_kb as f64 / 1048576.0),
            src("memory"),
        ],
        vec![
            "cpus".into(),
            i.cpus
                .map(|c| c.to_string())
                .unwrap_or_else(|| "unknown".into()),
            src("cpus"),
        ],
        vec![
            "connections".into(),
            i.connections.to_string(),
            src("connections"),
        ],
        vec!["storage".into(), i.storage.to_string(), src("storage")],
        vec!["workload".into(), i.workload.to_string(), src("workload")],
        vec![
            "pg_version".into(),
            i.pg_version.to_string(),
            src("pg_version"),
        ],
        vec!["db_size".into(), i.db_size.to_string(), src("db_size")],
    ];
    if let Some(c) = i.data_checksums {
        rows.push(vec![
            "data_checksums".into(),
            if c { "on" } else { "off" }.into(),
            "server".into(),
        ]);
    }
    table(&["input", "value", "source"], rows)
}

fn warnings(r: &TuneReport) -> String {
    r.warnings
        .iter()
        .map(|w| format!("warning: {w}\n"))
        .collect()
}

/// `pgwarden tune` without --diff, in each format.
fn tune(r: &TuneReport, format: TuneFormat) -> String {
    match format {
        TuneFormat::Json => json(r),
        TuneFormat::Conf => r.recommendation.to_conf(),
        TuneFormat::Sql => r.recommendation.to_sql(),
        TuneFormat::Table => {
            let rows = r
                .settings
                .iter()
                .map(|s| vec![s.name.clone(), s.value.clone(), s.reason.clone()]);
            format!(
                "{}\n{}\n{}",
                inputs(r),
                table(&["setting", "recommended", "reason"], rows),
                warnings(r)
            )
        }
    }
}

fn needs(n: Needs) -> &'static str {
    match n {
        Needs::Nothing => "in effect",
        Needs::Reload => "reload",
        Needs::Restart => "restart",
        Needs::Unknown => "not on this server",
    }
}

/// `pgwarden tune --diff` as a table.
pub(crate) fn diff(r: &TuneReport, rows: &[DiffRow]) -> String {
    let table_rows = rows.iter().map(|d| {
        let mut action = needs(d.needs).to_string();
        if d.pending_restart {
            action.push_str(" (a change already waits for a restart)");
        }
        vec![
            d.name.clone(),
            d.current.clone().unwrap_or_else(|| "-".into()),
            d.recommended.clone(),
            action,
        ]
    });
    let restart = rows.iter().filter(|d| d.needs == Needs::Restart).count();
    let reload = rows.iter().filter(|d| d.needs == Needs::Reload).count();
    let same = rows.iter().filter(|d| d.needs == Needs::Nothing).count();
    format!(
        "{}\n{}\n{} setting(s) differ: {restart} need a restart, {reload} a reload; {same} already in effect.\n{}",
        inputs(r),
        table(&["setting", "current", "recommended", "to take effect"], table_rows),
        restart + reload,
        warnings(r)
    )
}

/// What `tune apply` is about to do.
fn plan_table(p: &ApplyPlan) -> String {
    if p.changes.is_empty() {
        return "Every recommended setting is already in effect; nothing to apply.\n".into();
    }
    let rows = p.changes.iter().map(|c| {
        vec![
            c.name.clone(),
            c.current.clone(),
            c.new.clone(),
            needs(c.needs).to_string(),
        ]
    });
    let mut s = table(&["setting", "current", "new", "to take effect"], rows);
    s.push('\n');
    if !p.unknown.is_empty() {
        s.push_str(&format!(
            "skipped (this server does not have them): {}\n",
            p.unknown.join(", ")
        ));
    }
    s
}

/// What `tune apply` did.
pub(crate) fn applied_text(r: &ApplyReport) -> String {
    let mut s = format!(
        "Applied {} setting(s) with ALTER SYSTEM{}.\n",
        r.applied.len(),
        if r.reloaded {
            " and reloaded the configuration"
        } else {
            ""
        }
    );
    if !r.not_in_effect.is_empty() {
        s.push_str(&format!(
            "Not in effect after the reload: {}.\n",
            r.not_in_effect.join(", ")
        ));
    }
    if r.pending_restart.is_empty() {
        s.push_str("Nothing waits for a restart.\n");
    } else {
        s.push_str(&format!(
            "A restart is needed for: {} (pg_settings.pending_restart).\n",
            r.pending_restart.join(", ")
        ));
    }
    s
}
