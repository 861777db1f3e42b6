//! The failover decision: pure functions over data, no I/O, no clock. The agent gathers the
//! facts ([`Local`] and the [`ClusterView`] read from etcd), calls [`decide`], and carries out
//! the [`Action`]; [`sync_step`] does the same for the synchronous standby and [`must_fence`]
//! for a leader that cannot renew its key.
//!
//! The rules that keep the cluster safe live here and are tested here:
//! - only the holder of the leader key promotes, and the key is taken only by the one
//!   healthiest eligible member ([`candidate`]), so at most one member promotes per term;
//! - a member whose WAL is more than `maximum_lag_on_failover` behind the leader's last
//!   published position is never eligible, nor a `nofailover` one, nor (in synchronous mode)
//!   any member but the recorded synchronous standby;
//! - a writable server that does not hold the key is demoted.

use std::time::Duration;

use serde::Serialize;

use crate::state::{ClusterView, MemberState, Role, SyncState};

/// This node's data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// No data directory (or an empty one).
    Missing,
    /// A data directory of the cluster with this system identifier; `standby` when it has
    /// `standby.signal` (it starts in recovery).
    Present {
        system_identifier: String,
        standby: bool,
    },
}

/// This node's PostgreSQL, read just now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pg {
    Stopped,
    Running(Live),
}

/// A running server's facts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Live {
    pub in_recovery: bool,
    pub timeline: Option<u32>,
    /// A primary's current WAL position.
    pub wal_lsn: Option<u64>,
    /// A replica's received and replayed positions.
    pub received_lsn: Option<u64>,
    pub replayed_lsn: Option<u64>,
    /// A replica's WAL receiver streams.
    pub streaming: bool,
    /// The `host:port` its primary_conninfo points at (a replica).
    pub following: Option<String>,
}

/// This node's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub data: Data,
    pub pg: Pg,
    /// How long PostgreSQL has been down while this node held the leader key (the agent
    /// counts from the first loop that found it down).
    pub down_for: Duration,
    /// How long a running replica has not been streaming.
    pub not_streaming_for: Duration,
}

impl Local {
    fn live(&self) -> Option<&Live> {
        match &self.pg {
            Pg::Running(l) => Some(l),
            Pg::Stopped => None,
        }
    }

    fn writable(&self) -> bool {
        self.live().is_some_and(|l| !l.in_recovery)
    }
}

/// The config the decision depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub name: String,
    pub nofailover: bool,
    pub synchronous_mode: bool,
    pub maximum_lag_on_failover: u64,
    /// A leader's PostgreSQL down this long: give up the key.
    pub restart_timeout: Duration,
    /// A replica not streaming this long while a leader is known: rewind and rejoin it.
    pub rejoin_after: Duration,
    /// This member's `host:port`.
    pub conn: String,
}

/// The facts of one decision.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub me: &'a Local,
    pub rules: &'a Rules,
    pub cluster: &'a ClusterView,
}

/// What the agent does next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Nothing; why.
    Idle { why: String },
    /// The data directory belongs to another cluster: the agent stops with this reason.
    Refuse { why: String },
    /// etcd has no cluster: race for the `initialize` key, initdb (or adopt the data
    /// directory there is), start, take the leader key.
    Bootstrap,
    /// Make the data directory as a copy of the leader.
    Clone { leader: String },
    /// Start in recovery, following `leader` (None: none known yet).
    StartReplica { leader: Option<String> },
    /// Point a running replica's primary_conninfo at `leader` and reload.
    Follow { leader: String },
    /// pg_rewind onto `leader` (an old primary, or a replica that forked off), then start as
    /// its replica.
    Rejoin { leader: String },
    /// Take the free leader key (an etcd transaction that succeeds only if it is absent).
    Acquire,
    /// Holding the key in recovery: promote.
    Promote,
    /// Holding the key with PostgreSQL down: start it as primary (crash recovery in place).
    StartPrimary,
    /// Holding the key and writable: renew, publish, keep the slots and the sync standby.
    Lead,
    /// Holding the key with PostgreSQL down for longer than `restart_timeout`: delete the key
    /// so that a replica takes over.
    Release,
    /// Writable without holding the key: stop accepting writes now.
    Demote { why: String },
    /// A switchover to `to`: stop cleanly, wait (unless forced) until `to` has the shutdown
    /// checkpoint, give up the key.
    StepDown { to: String, forced: bool },
}

fn idle(why: impl Into<String>) -> Action {
    Action::Idle { why: why.into() }
}

/// The decision.
pub fn decide(v: View<'_>) -> Action {
    let (me, rules, cluster) = (v.me, v.rules, v.cluster);
    let leader = cluster.leader_name();
    let holds = leader == Some(rules.name.as_str());
    let own_sysid = match &me.data {
        Data::Present {
            system_identifier, ..
        } => Some(system_identifier),
        Data::Missing => None,
    };
    // Only a node with no data bootstraps, and only into a scope with no cluster: a node
    // with data whose scope lost its `initialize` key (a new or restored etcd) goes through
    // the leader race like any other, and the leader writes the key back.
    let sysid = match (&cluster.initialize, own_sysid) {
        (Some(s), _) => s,
        (None, Some(own)) => own,
        (None, None) if leader.is_some() => {
            return idle("a leader exists but the cluster's system identifier is not recorded yet")
        }
        (None, None) if cluster.paused => return idle("paused: no bootstrap"),
        (None, None) => return Action::Bootstrap,
    };
    if sysid.is_empty() {
        return idle("the first node is still running initdb");
    }
    match &me.data {
        Data::Missing if holds => {
            return Action::Release;
        }
        Data::Missing => {
            return match leader {
                Some(l) => Action::Clone {
                    leader: l.to_string(),
                },
                None => idle("no leader to clone from yet"),
            }
        }
        Data::Present {
            system_identifier, ..
        } if system_identifier != sysid => {
            return Action::Refuse {
                why: format!(
                    "the data directory belongs to system {system_identifier}, but cluster {sysid} is \
                     the one in etcd: move it away (the agent clones a new one) or point data_dir elsewhere"
                ),
            };
        }
        Data::Present { .. } => {}
    }
    let standby_data = matches!(me.data, Data::Present { standby: true, .. });

    if cluster.paused {
        return if holds && me.writable() {
            Action::Lead
        } else {
            idle("paused: no automatic action")
        };
    }

    match leader {
        Some(_) if holds => match me.live() {
            Some(l) if !l.in_recovery => match step_down_target(v) {
                Some((to, forced)) => Action::StepDown { to, forced },
                None => Action::Lead,
            },
            Some(_) => Action::Promote,
            None if me.down_for >= rules.restart_timeout => Action::Release,
            None => Action::StartPrimary,
        },
        Some(l) => {
            let leader = l.to_string();
            match me.live() {
                Some(live) if !live.in_recovery => Action::Demote {
                    why: format!("{leader} holds the leader key"),
                },
                Some(live) => {
                    let leader_conn = cluster.member(&leader).map(|m| m.conn.as_str());
                    match leader_conn {
                        None => idle(format!(
                            "{leader} leads but has not published its address yet"
                        )),
                        Some(c) if live.following.as_deref() != Some(c) => {
                            Action::Follow { leader }
                        }
                        Some(_)
                            if !live.streaming && me.not_streaming_for >= rules.rejoin_after =>
                        {
                            Action::Rejoin { leader }
                        }
                        Some(_) if live.streaming => idle(format!("streaming from {leader}")),
                        Some(_) => idle(format!("connecting to {leader}")),
                    }
                }
                None if standby_data => Action::StartReplica {
                    leader: Some(leader),
                },
                None => Action::Rejoin { leader },
            }
        }
        None => match me.live() {
            None => Action::StartReplica { leader: None },
            Some(_) => match candidate(v) {
                Ok(best) if best == rules.name => Action::Acquire,
                Ok(best) if me.writable() => Action::Demote {
                    why: format!("no leader, and {best} is the healthiest candidate"),
                },
                Ok(best) => idle(format!("waiting for {best} to take over")),
                Err(why) if me.writable() => Action::Demote {
                    why: format!("no leader, and none may take over: {why}"),
                },
                Err(why) => idle(format!("no leader, and none may take over: {why}")),
            },
        },
    }
}

/// This member's published state as it is now (its own facts, not the last published
/// ones), for ranking.
fn me_now(v: View<'_>) -> Option<MemberState> {
    let live = v.me.live()?;
    let sysid = match &v.me.data {
        Data::Present {
            system_identifier, ..
        } => Some(system_identifier.clone()),
        Data::Missing => None,
    };
    Some(MemberState {
        name: v.rules.name.clone(),
        role: if live.in_recovery {
            Role::Replica
        } else {
            Role::Primary
        },
        state: String::new(),
        conn: v.rules.conn.clone(),
        api_url: String::new(),
        timeline: live.timeline,
        wal_lsn: live.wal_lsn,
        received_lsn: live.received_lsn,
        replayed_lsn: live.replayed_lsn,
        lag_bytes: None,
        streaming: live.streaming,
        nofailover: v.rules.nofailover,
        system_identifier: sysid,
        updated_ms: 0,
    })
}

/// Why `m` may not take the leader key, if it may not.
pub fn ineligible(m: &MemberState, v: View<'_>) -> Option<String> {
    let cluster = v.cluster;
    let forced_to_m = cluster
        .switchover
        .as_ref()
        .is_some_and(|s| s.forced && s.to.as_deref() == Some(m.name.as_str()));
    if let Some(s) = &cluster.switchover {
        if let Some(to) = &s.to {
            if to != &m.name {
                return Some(format!("a switchover goes to {to}"));
            }
        }
    }
    if m.nofailover {
        return Some("tagged nofailover".into());
    }
    if !matches!(m.role, Role::Replica | Role::Primary) {
        return Some(format!("PostgreSQL is {}", m.role.as_str()));
    }
    let cluster_sysid = cluster.initialize.as_deref().or(match &v.me.data {
        Data::Present {
            system_identifier, ..
        } => Some(system_identifier.as_str()),
        Data::Missing => None,
    });
    if m.system_identifier.as_deref() != cluster_sysid {
        return Some("its data belongs to another cluster".into());
    }
    if v.rules.synchronous_mode {
        let sync = cluster
            .sync
            .as_ref()
            .and_then(|s| s.sync_standby.as_deref());
        let was_leader = cluster.sync.as_ref().map(|s| s.leader.as_str());
        if sync != Some(m.name.as_str()) && was_leader != Some(m.name.as_str()) {
            return Some(match sync {
                Some(s) => format!("synchronous mode: only {s} has every acknowledged commit"),
                None => "synchronous mode: no synchronous standby was recorded".into(),
            });
        }
    }
    let position = m.wal_position();
    if let (Some(optime), false) = (cluster.optime, forced_to_m) {
        let behind = optime.saturating_sub(position.unwrap_or(0));
        if behind > v.rules.maximum_lag_on_failover {
            return Some(format!(
                "{behind} bytes behind the leader's last position, over maximum_lag_on_failover ({})",
                v.rules.maximum_lag_on_failover
            ));
        }
    }
    None
}

/// The member that should take the free leader key: the eligible one with the most WAL
/// received, then replayed, then the first name. Every member computes the same answer from
/// the same published states (this member's own entry is replaced by its fresh facts).
pub fn candidate(v: View<'_>) -> Result<String, String> {
    let mine = me_now(v);
    let mut members: Vec<MemberState> = v
        .cluster
        .members
        .iter()
        .filter(|m| m.name != v.rules.name)
        .cloned()
        .collect();
    members.extend(mine);
    let mut reasons = Vec::new();
    let mut best: Option<&MemberState> = None;
    for m in &members {
        if let Some(why) = ineligible(m, v) {
            reasons.push(format!("{}: {why}", m.name));
            continue;
        }
        let key = |m: &MemberState| {
            (
                m.wal_position().unwrap_or(0),
                m.replayed_lsn.or(m.wal_lsn).unwrap_or(0),
                std::cmp::Reverse(m.name.clone()),
            )
        };
        if best.is_none_or(|b| key(m) > key(b)) {
            best = Some(m);
        }
    }
    match best {
        Some(b) => Ok(b.name.clone()),
        None => {
            reasons.sort();
            Err(if reasons.is_empty() {
                "no member has published its state".into()
            } else {
                reasons.join("; ")
            })
        }
    }
}

/// A switchover the leader should carry out now: the target and whether it is forced.
/// Planned switchovers wait until the target streams and is within the lag limit.
fn step_down_target(v: View<'_>) -> Option<(String, bool)> {
    let s = v.cluster.switchover.as_ref()?;
    if s.from.as_deref().is_some_and(|f| f != v.rules.name) {
        return None;
    }
    let me_name = v.rules.name.as_str();
    let others = v
        .cluster
        .members
        .iter()
        .filter(|m| m.name != me_name && m.role == Role::Replica);
    let ready = |m: &MemberState| {
        (s.forced || m.streaming) && ineligible(m, v).is_none() && m.name != me_name
    };
    match &s.to {
        Some(to) => {
            let m = v.cluster.member(to)?;
            ready(m).then(|| (to.clone(), s.forced))
        }
        None => others
            .filter(|m| ready(m))
            .max_by_key(|m| {
                (
                    m.wal_position().unwrap_or(0),
                    std::cmp::Reverse(m.name.clone()),
                )
            })
            .map(|m| (m.name.clone(), s.forced)),
    }
}

/// Whether a leader that last renewed its key `since_renewal` ago must stop accepting
/// writes now: past `demote_after`, unless failsafe mode holds (every member confirmed it
/// still follows this leader and cannot reach etcd either).
pub fn must_fence(since_renewal: Duration, demote_after: Duration, failsafe_held: bool) -> bool {
    since_renewal >= demote_after && !failsafe_held
}

/// One row of the leader's `pg_stat_replication`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub application_name: String,
    /// `state = 'streaming'`.
    pub streaming: bool,
    /// `sync_state = 'sync'`.
    pub sync: bool,
    pub flush_lsn: u64,
}

/// One step towards the synchronous standby the leader wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStep {
    /// Record this in the `sync` key (first, when it takes a standby away: until then that
    /// standby keeps every acknowledged commit).
    WriteKey(SyncState),
    /// Set `synchronous_standby_names` to this member (empty: none) and reload.
    SetStandbyNames(String),
    /// Nothing to change.
    Keep,
}

/// The next synchronous-mode step for leader `me`, from the recorded key, the current
/// `synchronous_standby_names` member (`ssn`, empty for none), the WAL senders, and the
/// members that may not be synchronous (`nofailover`). The order keeps the invariant that
/// the member in the key has every acknowledged commit: a standby leaves the key before it
/// leaves `synchronous_standby_names`, and enters the key only once the server reports it
/// synchronous.
pub fn sync_step(
    me: &str,
    key: Option<&SyncState>,
    ssn: &str,
    senders: &[Sender],
    excluded: &[String],
) -> SyncStep {
    let recorded = key
        .filter(|k| k.leader == me)
        .and_then(|k| k.sync_standby.as_deref());
    if key.is_none_or(|k| k.leader != me) {
        return SyncStep::WriteKey(SyncState {
            leader: me.to_string(),
            sync_standby: None,
        });
    }
    let healthy = |n: &str| {
        senders
            .iter()
            .any(|s| s.application_name == n && s.streaming)
    };
    if let Some(x) = recorded {
        // Recorded, named and streaming: it has every acknowledged commit. Recorded but not
        // named (a restart, a reload): commits may have been acknowledged without it, so it
        // leaves the key before anything else.
        if healthy(x) && ssn == x {
            return SyncStep::Keep;
        }
        return SyncStep::WriteKey(SyncState {
            leader: me.to_string(),
            sync_standby: None,
        });
    }
    let best = senders
        .iter()
        .filter(|s| s.streaming && !excluded.contains(&s.application_name))
        .max_by_key(|s| (s.flush_lsn, std::cmp::Reverse(s.application_name.clone())));
    match best {
        None if ssn.is_empty() => SyncStep::Keep,
        None => SyncStep::SetStandbyNames(String::new()),
        Some(y) if ssn != y.application_name && !healthy(ssn) => {
            SyncStep::SetStandbyNames(y.application_name.clone())
        }
        Some(_) => {
            let current = senders.iter().find(|s| s.application_name == ssn);
            match current {
                Some(s) if s.sync && s.streaming => SyncStep::WriteKey(SyncState {
                    leader: me.to_string(),
                    sync_standby: Some(ssn.to_string()),
                }),
                _ => SyncStep::Keep,
            }
        }
    }
}

#[cfg(test)]
mod tests;
