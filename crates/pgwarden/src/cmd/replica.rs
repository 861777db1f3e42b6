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
    /// Make a new standby of a running primary: checks the primary's prerequisites (each
    /// missing one named with its fix), then pg_basebackup -R -X stream [-C -S slot], with a
    /// progress bar on a terminal; --start starts it and waits until it streams.
    #[command(after_help = REPLICA_EXIT_CODES)]
    Clone(CloneArgs),
    /// Replication status: on a primary every standby (state, LSNs, lag in bytes and in
    /// time) and slot (active, WAL retained); on a standby its receiver and replay. Each
    /// lag against the target: exit 0 when all meet it, 1 when one misses it.
    #[command(after_help = REPLICA_EXIT_CODES)]
    Status(StatusArgs),
    /// Turn an old primary (a local data directory) into a standby of the current primary:
    /// pg_rewind (checked possible first), standby.signal and primary_conninfo, start, wait
    /// until it streams.
    #[command(after_help = REPLICA_EXIT_CODES)]
    Rejoin(RejoinArgs),
    /// Planned switch with no data loss, for a primary whose data directory is here: stop it
    /// cleanly, wait until the target standby has its shutdown checkpoint, promote the
    /// target, restart the old primary as its standby.
    #[command(after_help = REPLICA_EXIT_CODES)]
    Switchover(SwitchoverArgs),
    /// Promote a standby to primary (pg_promote, waiting until it has left recovery).
    #[command(after_help = REPLICA_EXIT_CODES)]
    Promote(PromoteArgs),
}

/// How a standby follows its primary: clone, rejoin and switchover take these.
#[derive(Debug, Args)]
pub struct FollowArgs {
    /// Stream through this physical replication slot on the primary (created there when
    /// missing; clone refuses one that exists).
    #[arg(long, value_name = "NAME")]
    pub slot: Option<String>,
    /// Its name in the primary's pg_stat_replication (default: the slot, else pgwarden_replica).
    #[arg(long)]
    pub application_name: Option<String>,
    /// How long each wait may take (until it streams; for switchover also the shutdown
    /// checkpoint reaching the target), in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub wait: u64,
    /// PostgreSQL's programs (default $PGWARDEN_PG_BIN, else /usr/lib/postgresql/15/bin).
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<std::path::PathBuf>,
}

impl FollowArgs {
    /// The application_name: given, else the slot, else pgwarden_replica.
    fn name(&self) -> String {
        self.application_name
            .clone()
            .or_else(|| self.slot.clone())
            .unwrap_or_else(|| "pgwarden_replica".to_string())
    }

    fn bin(&self) -> pgw_node::BinDir {
        match &self.bin_dir {
            Some(d) => pgw_node::BinDir::new(d),
            None => pgw_node::BinDir::from_env(),
        }
    }
}

#[derive(Debug, Args)]
pub struct CloneArgs {
    /// The primary: conninfo string or URI, as a role with REPLICATION.
    #[arg(long, value_name = "DSN")]
    pub from: Option<String>,
    /// The new data directory (must not exist, or be empty).
    #[arg(long, value_name = "DIR")]
    pub pgdata: std::path::PathBuf,
    /// The port the new standby listens on (written to its postgresql.auto.conf).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Start it and wait until the primary shows it streaming.
    #[arg(long)]
    pub start: bool,
    #[command(flatten)]
    pub follow: FollowArgs,
    /// Output: table (default) or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct RejoinArgs {
    /// The data directory to rejoin (on this machine; a server running there is stopped).
    #[arg(long, value_name = "DIR")]
    pub pgdata: std::path::PathBuf,
    /// The current primary: conninfo string or URI (superuser, or the grants pg_rewind needs).
    #[arg(long, value_name = "DSN")]
    pub from: Option<String>,
    /// Rejoin without asking (needed when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub follow: FollowArgs,
    /// Output: table (default) or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct SwitchoverArgs {
    /// The running primary's data directory (on this machine).
    #[arg(long, value_name = "DIR")]
    pub pgdata: std::path::PathBuf,
    /// The standby to promote: conninfo string or URI (superuser or EXECUTE on pg_promote).
    #[arg(long, value_name = "DSN")]
    pub to: Option<String>,
    /// Switch without asking (needed when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub follow: FollowArgs,
    /// Output: table (default) or json.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
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
        ReplicaCmd::Clone(a) => clone(a).await,
        ReplicaCmd::Rejoin(a) => rejoin(a).await,
        ReplicaCmd::Switchover(a) => switchover(a).await,
        ReplicaCmd::Status(a) => status(a).await,
        ReplicaCmd::Promote(a) => promote(a).await,
    }
}

async fn clone(a: CloneArgs) -> Result<Outcome, Failure> {
    let (client, params) = pgw_common::connect_dsn(a.from.as_deref())
        .await
        .or_fail("replica clone")?;
    let opts = pgw_replica::CloneOptions {
        pgdata: a.pgdata.clone(),
        slot: a.follow.slot.clone(),
        port: a.port,
        start: a.start,
        application_name: a.follow.application_name.clone(),
        bin: a.follow.bin(),
        stream_timeout: std::time::Duration::from_secs(a.follow.wait),
        user: None,
    };
    let bar = term::counter("copying", "kB");
    let c = pgw_replica::clone(&client, &params, &opts, move |p| bar(p.done_kb, p.total_kb))
        .await
        .or_fail("replica clone")?;
    match a.format {
        OutputFormat::Json => out(&json(&c)),
        OutputFormat::Table => out(&format!(
            "{} cloned from {} ({} kB{}{}){}\n",
            c.pgdata.display(),
            c.primary,
            c.copied_kb,
            c.slot
                .as_deref()
                .map(|s| format!(", slot {s}"))
                .unwrap_or_default(),
            c.port.map(|p| format!(", port {p}")).unwrap_or_default(),
            if c.streaming {
                format!("; started, streaming as {}", c.application_name)
            } else {
                format!(
                    "; not started (start it with pg_ctl -D {})",
                    c.pgdata.display()
                )
            }
        )),
    }
    Ok(Outcome::Done)
}

async fn rejoin(a: RejoinArgs) -> Result<Outcome, Failure> {
    let (client, params) = pgw_common::connect_dsn(a.from.as_deref())
        .await
        .or_fail("replica rejoin")?;
    let question = format!(
        "Rewind {} onto {} and restart it as its standby (a server running there is stopped; \
         what it wrote that {} lacks is discarded)?",
        a.pgdata.display(),
        params.target(),
        params.target()
    );
    let refusal = "refusing to rewind without confirmation: pass --yes (stdin is not a terminal)";
    if !term::go_ahead(a.yes, &question, refusal)? {
        return Ok(Outcome::NotConfirmed);
    }
    let opts = pgw_replica::RejoinOptions {
        pgdata: a.pgdata.clone(),
        slot: a.follow.slot.clone(),
        application_name: a.follow.application_name.clone(),
        bin: a.follow.bin(),
        stream_timeout: std::time::Duration::from_secs(a.follow.wait),
        stream_as: None,
        user: None,
    };
    let r = pgw_replica::rejoin(&client, &params, &opts)
        .await
        .or_fail("replica rejoin")?;
    match a.format {
        OutputFormat::Json => out(&json(&r)),
        OutputFormat::Table => out(&format!(
            "{} rejoined as a standby of {}, streaming as {}{}{}\n",
            r.pgdata.display(),
            r.primary,
            r.application_name,
            if r.stopped_first {
                "; it was running and was stopped first"
            } else {
                ""
            },
            match (&r.rewound, &r.diverged_at) {
                (true, Some(at)) => format!("; rewound from {at}"),
                (true, None) => "; rewound".to_string(),
                (false, _) => "; no rewind was needed".to_string(),
            }
        )),
    }
    Ok(Outcome::Done)
}

async fn switchover(a: SwitchoverArgs) -> Result<Outcome, Failure> {
    let (client, params) = pgw_common::connect_dsn(a.to.as_deref())
        .await
        .or_fail("replica switchover")?;
    let question = format!(
        "Stop the primary in {}, promote {} and restart the old primary as its standby \
         (writes wait for a few seconds)?",
        a.pgdata.display(),
        params.target()
    );
    let refusal =
        "refusing to switch over without confirmation: pass --yes (stdin is not a terminal)";
    if !term::go_ahead(a.yes, &question, refusal)? {
        return Ok(Outcome::NotConfirmed);
    }
    let opts = pgw_replica::SwitchoverOptions {
        pgdata: a.pgdata.clone(),
        application_name: a.follow.name(),
        slot: a.follow.slot.clone(),
        bin: a.follow.bin(),
        timeout: std::time::Duration::from_secs(a.follow.wait),
    };
    let s = pgw_replica::switchover(&client, &params, &opts)
        .await
        .or_fail("replica switchover")?;
    match a.format {
        OutputFormat::Json => out(&json(&s)),
        OutputFormat::Table => out(&format!(
            "{} is the primary now (timeline {}); {} follows it as {}, streaming; no writes \
             for {} ms; the new primary had the shutdown checkpoint {}\n",
            s.new_primary,
            s.timeline,
            s.old_primary.display(),
            s.application_name,
            s.write_gap_ms,
            s.shutdown_checkpoint
        )),
    }
    Ok(Outcome::Done)
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
