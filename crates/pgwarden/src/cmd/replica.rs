//! `pgwarden replica`: streaming replication operated from outside: `status` (every
//! standby and slot of a primary, or a standby's own receiver and replay, each lag judged
//! against the 500 ms target) and `promote`.

use clap::{Args, Subcommand};

use pgw_common::output::table;
use pgw_replica::{Role, Status};

use crate::args::OutputFormat;
use crate::exit::{Failure, OrFail, Outcome, REPLICA_EXIT_CODES};
use crate::render::{json, out, size};
use crate::term;

#[derive(Debug, Subcommand)]
pub enum ReplicaCmd {
    /// Replication status: on a primary every standby (state, LSNs, lag in bytes and in
    /// time) and slot (active, WAL retained); on a standby its receiver and replay. Each
    /// lag against the target: exit 0 when all meet it, 1 when one misses it.
    #[command(after_help = REPLICA_EXIT_CODES)]
    Status(StatusArgs),
    /// Promote a standby to primary (pg_promote, waiting until it has left recovery).
    #[command(after_help = REPLICA_EXIT_CODES)]
    Promote(PromoteArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Server: conninfo string or URI (a primary or a standby).
    #[arg(short = 'd', long)]
    pub dsn: Option<String>,
    /// The replication-lag target in ms (the service level).
    #[arg(long, default_value_t = 500.0, value_parser = parse_target, allow_hyphen_values = true)]
    pub target_ms: f64,
    /// Output: table (default) or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The standby: conninfo string or URI.
    #[arg(short = 'd', long)]
    pub dsn: Option<String>,
    /// How long to wait for it to leave recovery, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(i32).range(1..=3600))]
    pub wait: i32,
    /// Promote without asking (needed when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Output: table (default) or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

fn parse_target(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of milliseconds")),
    }
}

/// Runs `pgwarden replica ...`.
pub async fn run(cmd: ReplicaCmd) -> Result<Outcome, Failure> {
    match cmd {
        ReplicaCmd::Status(a) => status(a).await,
        ReplicaCmd::Promote(a) => promote(a).await,
    }
}

async fn status(a: StatusArgs) -> Result<Outcome, Failure> {
    let (client, params) = pgw_common::connect_dsn(a.dsn.as_deref())
        .await
        .or_fail("replica status")?;
    let s = pgw_replica::status(&client, &params.target(), a.target_ms)
        .await
        .or_fail("replica status")?;
    match a.format {
        OutputFormat::Json => out(&json(&s)),
        OutputFormat::Table => out(&render_status(&s)),
    }
    Ok(if s.met {
        Outcome::Done
    } else {
        Outcome::TargetMissed
    })
}

async fn promote(a: PromoteArgs) -> Result<Outcome, Failure> {
    let (client, params) = pgw_common::connect_dsn(a.dsn.as_deref())
        .await
        .or_fail("replica promote")?;
    let target = params.target();
    let question = format!(
        "Promote the standby {target} to primary (it stops following its primary for good)?"
    );
    let refusal = "refusing to promote without confirmation: pass --yes (stdin is not a terminal)";
    if !term::go_ahead(a.yes, &question, refusal)? {
        return Ok(Outcome::NotConfirmed);
    }
    let p = pgw_replica::promote(&client, &target, a.wait)
        .await
        .or_fail("replica promote")?;
    match a.format {
        OutputFormat::Json => out(&json(&p)),
        OutputFormat::Table => out(&format!(
            "{} promoted: primary on timeline {}, at {}\n",
            p.server, p.timeline, p.lsn
        )),
    }
    Ok(Outcome::Done)
}

/// Milliseconds as people read them; "-" when unknown.
fn ms(v: Option<f64>) -> String {
    match v {
        None => "-".to_string(),
        Some(v) if v < 1000.0 => format!("{v:.1} ms"),
        Some(v) => format!("{:.2} s", v / 1000.0),
    }
}

fn met(m: bool) -> &'static str {
    if m {
        "met"
    } else {
        "MISSED"
    }
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".to_string())
}

fn render_status(s: &Status) -> String {
    let mut text = String::new();
    match s.role {
        Role::Primary => {
            text.push_str(&format!(
                "{}: primary, {} standby(s); replication lag target {} ms\n",
                s.server,
                s.standbys.len(),
                s.target_ms
            ));
            if !s.standbys.is_empty() {
                text.push_str(&table(
                    &[
                        "standby",
                        "address",
                        "state",
                        "sync",
                        "sent",
                        "write",
                        "flush",
                        "replay",
                        "lag",
                        "write lag",
                        "flush lag",
                        "replay lag",
                        "target",
                    ],
                    s.standbys.iter().map(|x| {
                        vec![
                            x.application_name.clone(),
                            opt(&x.client_addr),
                            opt(&x.state),
                            opt(&x.sync_state),
                            opt(&x.sent_lsn),
                            opt(&x.write_lsn),
                            opt(&x.flush_lsn),
                            opt(&x.replay_lsn),
                            x.lag_bytes.map(size).unwrap_or_else(|| "-".into()),
                            ms(x.write_lag_ms),
                            ms(x.flush_lag_ms),
                            ms(x.replay_lag_ms),
                            met(x.met).to_string(),
                        ]
                    }),
                ));
                text.push('\n');
            }
        }
        Role::Standby => {
            if let Some(r) = &s.receiver {
                text.push_str(&format!(
                    "{}: standby; replication lag target {} ms\n",
                    s.server, s.target_ms
                ));
                text.push_str(&table(
                    &[
                        "receiver",
                        "from",
                        "received",
                        "replayed",
                        "unreplayed",
                        "last replay age",
                        "delay",
                        "paused",
                        "target",
                    ],
                    [vec![
                        opt(&r.receiver_status),
                        opt(&r.sender),
                        opt(&r.receive_lsn),
                        opt(&r.replay_lsn),
                        size(r.unreplayed_bytes),
                        ms(r.last_replay_age_ms),
                        ms(Some(r.delay_ms)),
                        if r.replay_paused { "yes" } else { "no" }.to_string(),
                        met(r.met).to_string(),
                    ]],
                ));
                text.push('\n');
            }
        }
    }
    if !s.slots.is_empty() {
        text.push_str(&table(
            &["slot", "type", "active", "WAL retained", "wal status"],
            s.slots.iter().map(|x| {
                vec![
                    x.name.clone(),
                    x.slot_type.clone(),
                    if x.active { "yes" } else { "no" }.to_string(),
                    x.retained_bytes.map(size).unwrap_or_else(|| "-".into()),
                    opt(&x.wal_status),
                ]
            }),
        ));
        text.push('\n');
    }
    text
}
