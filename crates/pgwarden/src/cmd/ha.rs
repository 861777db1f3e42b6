//! `pgwarden ha`: automatic failover on etcd. `agent` runs one node's agent (a daemon:
//! SIGHUP reloads its config, SIGINT/SIGTERM stop it cleanly); `list`, `switchover`,
//! `failover`, `pause` and `resume` ask the agents through etcd.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use pgw_common::output::table;
use pgw_ha::ctl::{Listing, Plan, Switched};
use pgw_ha::{Config, Control};

use crate::args::OutputFormat;
use crate::exit::{Failure, OrFail, Outcome, HA_EXIT_CODES};
use crate::render::{json, out};
use crate::term;

#[derive(Debug, Subcommand)]
pub enum HaCmd {
    /// Run this node's agent: it owns the node's PostgreSQL (bootstrap, clone, start,
    /// promote, demote, rewind) and keeps one leader through etcd. SIGHUP reloads the
    /// config; SIGINT/SIGTERM stop PostgreSQL cleanly and hand the leader key over at once.
    #[command(after_help = HA_EXIT_CODES)]
    Agent(ConfigArg),
    /// Every member: role, state, timeline, lag (like patronictl list).
    #[command(after_help = HA_EXIT_CODES)]
    List(ListArgs),
    /// Planned switch to a streaming replica with no lost commit: the leader stops cleanly,
    /// waits until the target has its shutdown checkpoint, and hands over the key.
    #[command(after_help = HA_EXIT_CODES)]
    Switchover(SwitchArgs),
    /// Forced switch to a named member, whatever its lag (when the leader is unhealthy or
    /// gone). Acknowledged commits the target lacks are lost.
    #[command(after_help = HA_EXIT_CODES)]
    Failover(SwitchArgs),
    /// Maintenance mode: the agents take no automatic action (no failover, no restart).
    #[command(after_help = HA_EXIT_CODES)]
    Pause(ConfigArg),
    /// Leave maintenance mode.
    #[command(after_help = HA_EXIT_CODES)]
    Resume(ConfigArg),
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The node's config file (node.toml; see docs/ha.md). Any member's works for the
    /// cluster-wide commands.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Output: table (default) or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct SwitchArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The member to take over (switchover: default the healthiest streaming replica).
    #[arg(long, value_name = "NAME")]
    pub to: Option<String>,
    /// Print what would happen, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Go ahead without asking (needed when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
    /// How long to wait for the target to lead, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub wait: u64,
    /// Output: table (default) or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

fn load(path: &std::path::Path) -> Result<Config, Failure> {
    Config::load(path).or_fail("ha")
}

pub async fn run(cmd: HaCmd) -> Result<Outcome, Failure> {
    match cmd {
        HaCmd::Agent(a) => agent(a).await,
        HaCmd::List(a) => list(a).await,
        HaCmd::Switchover(a) => switch(a, false).await,
        HaCmd::Failover(a) => switch(a, true).await,
        HaCmd::Pause(a) => pause(a, true).await,
        HaCmd::Resume(a) => pause(a, false).await,
    }
}

async fn agent(a: ConfigArg) -> Result<Outcome, Failure> {
    use tokio::signal::unix::{signal, SignalKind};
    let config = load(&a.config)?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut signals = Vec::new();
    for (kind, control) in [
        (SignalKind::hangup(), true),
        (SignalKind::interrupt(), false),
        (SignalKind::terminate(), false),
    ] {
        let mut s = signal(kind).map_err(|e| Failure::new(pgw_common::ErrorClass::Failed, e))?;
        let tx = tx.clone();
        signals.push(tokio::spawn(async move {
            while s.recv().await.is_some() {
                let msg = if control {
                    Control::Reload
                } else {
                    Control::Stop
                };
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let result = pgw_ha::run(a.config.clone(), config, rx).await;
    for s in signals {
        s.abort();
    }
    result.or_fail("ha agent")?;
    Ok(Outcome::Done)
}

async fn list(a: ListArgs) -> Result<Outcome, Failure> {
    let config = load(&a.config.config)?;
    let listing = pgw_ha::ctl::list(&config).await.or_fail("ha list")?;
    match a.format {
        OutputFormat::Json => out(&json(&listing)),
        OutputFormat::Table => out(&render_list(&listing)),
    }
    Ok(Outcome::Done)
}

pub fn render_list(l: &Listing) -> String {
    let rows = l.members.iter().map(|m| {
        vec![
            m.member.clone(),
            m.host.clone(),
            m.role.clone(),
            m.state.clone(),
            m.timeline.map(|t| t.to_string()).unwrap_or_default(),
            m.lag_bytes.map(|b| b.to_string()).unwrap_or_default(),
            m.tags.join(","),
        ]
    });
    let mut text = format!(
        "cluster {} (system {}){}{}\n",
        l.scope,
        l.system_identifier.as_deref().unwrap_or("not initialized"),
        match &l.leader {
            Some(n) => format!(", leader {n}"),
            None => ", no leader".into(),
        },
        if l.paused { ", PAUSED" } else { "" }
    );
    text.push_str(&table(
        &["member", "host", "role", "state", "TL", "lag bytes", "tags"],
        rows,
    ));
    text.push('\n');
    text
}

async fn switch(a: SwitchArgs, forced: bool) -> Result<Outcome, Failure> {
    let what = if forced {
        "ha failover"
    } else {
        "ha switchover"
    };
    let config = load(&a.config.config)?;
    if forced && a.to.is_none() {
        return Err(Failure::from_classified(crate::exit::Usage(
            "ha failover needs --to NAME: a forced failover names the member that takes over",
        )));
    }
    let plan = pgw_ha::ctl::prepare(&config, a.to.as_deref(), forced)
        .await
        .or_fail(what)?;
    if a.dry_run {
        match a.format {
            OutputFormat::Json => out(&json(&plan)),
            OutputFormat::Table => out(&render_plan(&plan, true)),
        }
        return Ok(Outcome::Done);
    }
    let question = format!(
        "{} from {} to {}?",
        if forced { "Fail over" } else { "Switch over" },
        plan.from.as_deref().unwrap_or("(no leader)"),
        plan.to
    );
    let refusal =
        "refusing to switch the leader without confirmation: pass --yes (stdin is not a terminal)";
    if !term::go_ahead(a.yes, &question, refusal)? {
        return Ok(Outcome::NotConfirmed);
    }
    let done = pgw_ha::ctl::execute(&config, plan, Duration::from_secs(a.wait))
        .await
        .or_fail(what)?;
    match a.format {
        OutputFormat::Json => out(&json(&done)),
        OutputFormat::Table => out(&render_done(&done)),
    }
    Ok(Outcome::Done)
}

fn render_plan(p: &Plan, dry: bool) -> String {
    let mut text = format!(
        "{} {} {} -> {}\n",
        if dry { "would" } else { "did" },
        if p.forced { "fail over" } else { "switch over" },
        p.from.as_deref().unwrap_or("(no leader)"),
        p.to
    );
    if let Some(lag) = p.target_lag_bytes {
        text.push_str(&format!(
            "{} is {lag} bytes behind the leader's last position\n",
            p.to
        ));
    }
    for (i, s) in p.steps.iter().enumerate() {
        text.push_str(&format!("  {}. {s}\n", i + 1));
    }
    text
}

fn render_done(d: &Switched) -> String {
    format!(
        "{} now leads (was {}), {:.1} s after the request\n",
        d.plan.to,
        d.plan.from.as_deref().unwrap_or("no leader"),
        d.seconds
    )
}

async fn pause(a: ConfigArg, paused: bool) -> Result<Outcome, Failure> {
    let config = load(&a.config)?;
    pgw_ha::ctl::set_paused(&config, paused)
        .await
        .or_fail(if paused { "ha pause" } else { "ha resume" })?;
    out(if paused {
        "paused: the agents take no automatic action until `pgwarden ha resume`\n"
    } else {
        "resumed: automatic failover is on\n"
    });
    Ok(Outcome::Done)
}
