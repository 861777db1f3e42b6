//! What `pgwarden ha list / switchover / failover / pause / resume` do: read or write the
//! scope's keys in etcd and, for a switch, wait until the new leader holds the key. The
//! agents do the work; these only ask.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Config;
use crate::dcs::{Dcs, DcsError};
use crate::decide::{ineligible, Data, Local, Pg, Rules, View};
use crate::state::{ClusterView, MemberState, Role, Switchover};

/// Why a control command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error(transparent)]
    Dcs(#[from] DcsError),
    #[error("scope {0} has no leader: {1}")]
    NoLeader(String, &'static str),
    #[error("{0} is not a member of the cluster (members: {1})")]
    UnknownMember(String, String),
    #[error("{member} cannot take over: {why}")]
    NotEligible { member: String, why: String },
    #[error("{member} does not lead yet after {seconds} s; the request was withdrawn: see its agent's log")]
    Timeout { member: String, seconds: u64 },
    #[error("no replica can take over: {0}")]
    NoCandidate(String),
    #[error("the cluster config kept changing while it was being written: try again")]
    Contended,
}

impl pgw_common::Classify for CtlError {
    fn class(&self) -> pgw_common::ErrorClass {
        match self {
            CtlError::Dcs(e) => e.class(),
            CtlError::UnknownMember(..) | CtlError::NotEligible { .. } => {
                pgw_common::ErrorClass::Input
            }
            CtlError::NoLeader(..)
            | CtlError::Timeout { .. }
            | CtlError::NoCandidate(_)
            | CtlError::Contended => pgw_common::ErrorClass::Failed,
        }
    }
}

/// One row of `ha list`.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub member: String,
    pub host: String,
    /// `leader`, `sync standby`, `replica`, `stopped`, `uninitialized`.
    pub role: String,
    pub state: String,
    pub timeline: Option<u32>,
    /// Bytes behind the leader's last published position (replicas).
    pub lag_bytes: Option<u64>,
    pub tags: Vec<String>,
    pub api_url: String,
}

/// `ha list`.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub scope: String,
    pub leader: Option<String>,
    pub term: Option<i64>,
    pub paused: bool,
    /// The cluster-wide rules the leader published.
    pub rules: Option<crate::state::Dynamic>,
    pub system_identifier: Option<String>,
    pub members: Vec<Row>,
    pub switchover: Option<Switchover>,
}

pub async fn list(config: &Config) -> Result<Listing, CtlError> {
    let dcs = Dcs::connect(&config.etcd, &config.scope).await?;
    let view = dcs.read().await?;
    Ok(listing(&config.scope, &view))
}

/// The listing of `view` (pure).
pub fn listing(scope: &str, view: &ClusterView) -> Listing {
    let leader = view.leader_name();
    let sync = view.sync.as_ref().and_then(|s| s.sync_standby.as_deref());
    let members = view
        .members
        .iter()
        .map(|m| {
            let role = if Some(m.name.as_str()) == leader {
                "leader".to_string()
            } else if m.role == Role::Replica && Some(m.name.as_str()) == sync {
                "sync standby".to_string()
            } else {
                m.role.as_str().to_string()
            };
            let lag = match m.role {
                Role::Replica => view
                    .optime
                    .zip(m.wal_position())
                    .map(|(o, p)| o.saturating_sub(p)),
                _ => None,
            };
            let mut tags = Vec::new();
            if m.nofailover {
                tags.push("nofailover".to_string());
            }
            Row {
                member: m.name.clone(),
                host: m.conn.clone(),
                role,
                state: m.state.clone(),
                timeline: m.timeline,
                lag_bytes: lag,
                tags,
                api_url: m.api_url.clone(),
            }
        })
        .collect();
    Listing {
        scope: scope.to_string(),
        leader: leader.map(str::to_string),
        term: view.leader.as_ref().map(|l| l.term),
        paused: view.paused,
        rules: view.dynamic,
        system_identifier: view.initialize.clone(),
        members,
        switchover: view.switchover.clone(),
    }
}

/// `ha pause` / `ha resume`.
pub async fn set_paused(config: &Config, paused: bool) -> Result<(), CtlError> {
    let dcs = Dcs::connect(&config.etcd, &config.scope).await?;
    // Compare-and-set: a leader publishing the rules at the same moment is not overwritten.
    for _ in 0..5 {
        let view = dcs.read().await?;
        if dcs
            .set_config(view.config_revision, paused, view.dynamic)
            .await?
        {
            return Ok(());
        }
    }
    Err(CtlError::Contended)
}

/// A planned or forced switch: what it will do.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub from: Option<String>,
    pub to: String,
    pub forced: bool,
    /// The target's bytes behind the leader's last position.
    pub target_lag_bytes: Option<u64>,
    pub steps: Vec<String>,
}

/// A switch carried out.
#[derive(Debug, Clone, Serialize)]
pub struct Switched {
    pub plan: Plan,
    /// From the request until the target held the key and was writable.
    pub seconds: f64,
}

/// The rules a member is judged by: the cluster-wide ones the leader published, else this
/// node's own.
fn rules_for(config: &Config, view: &ClusterView, m: &MemberState) -> Rules {
    let d = view.dynamic.unwrap_or(crate::state::Dynamic {
        synchronous_mode: config.synchronous_mode,
        maximum_lag_on_failover: config.maximum_lag_on_failover,
    });
    Rules {
        name: m.name.clone(),
        nofailover: m.nofailover,
        synchronous_mode: d.synchronous_mode,
        maximum_lag_on_failover: d.maximum_lag_on_failover,
        restart_timeout: Duration::from_secs(config.restart_timeout),
        rejoin_after: config.ttl(),
        conn: m.conn.clone(),
    }
}

/// The plan of `switchover` (forced: `failover`) to `to` (None: the healthiest replica),
/// checked against the cluster as etcd has it (pure).
pub fn plan(
    config: &Config,
    view: &ClusterView,
    to: Option<&str>,
    forced: bool,
) -> Result<Plan, CtlError> {
    let leader = view.leader_name().map(str::to_string);
    if leader.is_none() && !forced {
        return Err(CtlError::NoLeader(
            config.scope.clone(),
            "a switchover moves the leader; use `ha failover --to NAME` to name one",
        ));
    }
    let names = || {
        view.members
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let check = |m: &MemberState| -> Result<(), String> {
        if Some(m.name.as_str()) == leader.as_deref() {
            return Err("it is the leader already".into());
        }
        if m.role != Role::Replica {
            return Err(format!("PostgreSQL is {}", m.role.as_str()));
        }
        if !forced && !m.streaming {
            return Err("it is not streaming from the leader".into());
        }
        let mut v = view.clone();
        v.switchover = Some(Switchover {
            from: leader.clone(),
            to: Some(m.name.clone()),
            forced,
            requested_ms: 0,
            expires_ms: u64::MAX,
        });
        let local = Local {
            data: Data::Missing,
            pg: Pg::Stopped,
            down_for: Duration::ZERO,
            not_streaming_for: Duration::ZERO,
        };
        let rules = rules_for(config, view, m);
        match ineligible(
            m,
            View {
                me: &local,
                rules: &rules,
                cluster: &v,
            },
        ) {
            Some(why) => Err(why),
            None => Ok(()),
        }
    };
    let target = match to {
        Some(name) => {
            let m = view
                .member(name)
                .ok_or_else(|| CtlError::UnknownMember(name.to_string(), names()))?;
            check(m).map_err(|why| CtlError::NotEligible {
                member: name.to_string(),
                why,
            })?;
            m
        }
        None => {
            let mut reasons = Vec::new();
            let best = view
                .members
                .iter()
                .filter(|m| match check(m) {
                    Ok(()) => true,
                    Err(why) => {
                        reasons.push(format!("{}: {why}", m.name));
                        false
                    }
                })
                .max_by_key(|m| (m.wal_position(), std::cmp::Reverse(m.name.clone())));
            best.ok_or_else(|| CtlError::NoCandidate(reasons.join("; ")))?
        }
    };
    let lag = view
        .optime
        .zip(target.wal_position())
        .map(|(o, p)| o.saturating_sub(p));
    let to = target.name.clone();
    let mut steps = Vec::new();
    match (&leader, forced) {
        (Some(l), false) => {
            steps.push(format!(
                "{l} stops PostgreSQL cleanly (fast shutdown, a shutdown checkpoint)"
            ));
            steps.push(format!(
                "{l} waits until {to} has received that checkpoint (up to 30 s; else {l} starts again as leader)"
            ));
            steps.push(format!(
                "{l} gives up the leader key; {to} takes it and promotes"
            ));
            steps.push(format!(
                "{l} rejoins as a replica of {to} (pg_rewind if needed)"
            ));
        }
        (Some(l), true) => {
            steps.push(format!(
                "{l} stops PostgreSQL and gives up the leader key at once"
            ));
            steps.push(format!("{to} takes the key and promotes, whatever its lag"));
            steps.push(format!("{l} rejoins as a replica of {to} (pg_rewind)"));
        }
        (None, _) => {
            steps.push(format!(
                "{to} takes the free leader key and promotes, whatever its lag"
            ));
        }
    }
    steps.push(format!(
        "the other replicas re-point primary_conninfo to {to}"
    ));
    Ok(Plan {
        from: leader,
        to,
        forced,
        target_lag_bytes: lag,
        steps,
    })
}

/// Reads the cluster and plans (for `--dry-run` and before asking for confirmation).
pub async fn prepare(config: &Config, to: Option<&str>, forced: bool) -> Result<Plan, CtlError> {
    let dcs = Dcs::connect(&config.etcd, &config.scope).await?;
    let view = dcs.read().await?;
    plan(config, &view, to, forced)
}

/// Requests the switch of `plan` and waits up to `wait` until its target leads and is
/// writable; withdraws the request when it does not.
pub async fn execute(config: &Config, plan: Plan, wait: Duration) -> Result<Switched, CtlError> {
    let dcs = Dcs::connect(&config.etcd, &config.scope).await?;
    let started = Instant::now();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    // The leader carries it out (stopping before it gives up the key, so two primaries
    // never overlap); with no live leader, the key expires and the target takes it. The
    // request expires by itself should this command die before withdrawing it.
    let request = Switchover {
        from: plan.from.clone(),
        to: Some(plan.to.clone()),
        forced: plan.forced,
        requested_ms: now,
        expires_ms: now + wait.as_millis() as u64,
    };
    dcs.set_switchover(Some(&request)).await?;
    let deadline = started + wait;
    loop {
        let view = match dcs.read().await {
            Ok(v) => v,
            Err(e) => {
                let _ = dcs.set_switchover(None).await;
                return Err(e.into());
            }
        };
        let leads = view.leader_name() == Some(plan.to.as_str())
            && view
                .member(&plan.to)
                .is_some_and(|m| m.role == Role::Primary);
        if leads {
            return Ok(Switched {
                plan,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        if Instant::now() >= deadline {
            let still = dcs.read().await?;
            if still.switchover.as_ref() == Some(&request)
                || still
                    .switchover
                    .as_ref()
                    .is_some_and(|s| s.to.as_deref() == Some(plan.to.as_str()))
            {
                dcs.set_switchover(None).await?;
            }
            return Err(CtlError::Timeout {
                member: plan.to,
                seconds: wait.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Leader;

    fn config() -> Config {
        Config::parse(
            r#"
scope = "s"
name = "a"
etcd = ["http://127.0.0.1:2379"]
data_dir = "/d"
listen = "127.0.0.1:5433"
api = "127.0.0.1:8008"
"#,
            std::path::Path::new("n.toml"),
        )
        .unwrap()
    }

    fn m(name: &str, role: Role, pos: u64, streaming: bool) -> MemberState {
        let mut m = crate::state::member_at(name, role, pos, "1");
        m.streaming = streaming;
        m
    }

    fn view() -> ClusterView {
        ClusterView {
            initialize: Some("1".into()),
            leader: Some(Leader {
                name: "a".into(),
                term: 3,
            }),
            members: vec![
                m("a", Role::Primary, 100, false),
                m("b", Role::Replica, 100, true),
                m("c", Role::Replica, 90, false),
            ],
            optime: Some(100),
            ..ClusterView::default()
        }
    }

    #[test]
    fn switchover_plans_name_a_streaming_target() {
        let p = plan(&config(), &view(), None, false).unwrap();
        assert_eq!((p.from.as_deref(), p.to.as_str()), (Some("a"), "b"));
        assert_eq!(p.target_lag_bytes, Some(0));
        let e = plan(&config(), &view(), Some("c"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("c cannot take over: it is not streaming"), "{e}");
        let e = plan(&config(), &view(), Some("a"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("leader already"), "{e}");
        let e = plan(&config(), &view(), Some("zz"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("members: a, b, c"), "{e}");
        let forced = plan(&config(), &view(), Some("c"), true).unwrap();
        assert!(forced.forced && forced.to == "c");
        let mut leaderless = view();
        leaderless.leader = None;
        assert!(plan(&config(), &leaderless, None, false).is_err());
    }

    #[test]
    fn listing_marks_leader_sync_and_lag() {
        let mut v = view();
        v.sync = Some(crate::state::SyncState {
            leader: "a".into(),
            sync_standby: Some("b".into()),
        });
        let l = listing("s", &v);
        let roles: Vec<&str> = l.members.iter().map(|r| r.role.as_str()).collect();
        assert_eq!(roles, ["leader", "sync standby", "replica"]);
        assert_eq!(l.members[2].lag_bytes, Some(10));
    }
}
