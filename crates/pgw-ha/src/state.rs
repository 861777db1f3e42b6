//! What the members share through etcd: each member's published state, the leader key, and
//! the cluster-wide keys (initialization, the leader's last WAL position, pause, the
//! synchronous standby, a requested switchover, the history of leaders). Plain data; the
//! etcd layout is in `dcs.rs`.

use serde::{Deserialize, Serialize};

/// What a member's PostgreSQL is, as its agent last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Running and writable.
    Primary,
    /// Running in recovery.
    Replica,
    /// Not running.
    Stopped,
    /// No data directory yet (about to be made by initdb or a clone).
    Uninitialized,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Stopped => "stopped",
            Role::Uninitialized => "uninitialized",
        }
    }
}

/// One member's published state (`members/<name>`, under the member's lease: it vanishes
/// `ttl` seconds after its agent stops renewing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberState {
    pub name: String,
    pub role: Role,
    /// What the agent is doing ("streaming", "running", "starting", "cloning", "rewinding",
    /// "demoted", "crashed", ...).
    pub state: String,
    /// PostgreSQL's `host:port`.
    pub conn: String,
    /// The REST API's base URL.
    pub api_url: String,
    /// The timeline it is on.
    pub timeline: Option<u32>,
    /// A primary's current WAL position (`pg_current_wal_lsn`).
    pub wal_lsn: Option<u64>,
    /// A replica's last received (flushed) WAL position.
    pub received_lsn: Option<u64>,
    /// A replica's last replayed WAL position.
    pub replayed_lsn: Option<u64>,
    /// A replica: bytes behind the leader's last published position.
    pub lag_bytes: Option<u64>,
    /// A replica's WAL receiver streams.
    pub streaming: bool,
    /// Never promote this member.
    pub nofailover: bool,
    /// pg_control's system identifier.
    pub system_identifier: Option<String>,
    /// The agent's clock when it published this (Unix ms).
    pub updated_ms: u64,
}

impl MemberState {
    /// The newest WAL this member has: a primary's current position, a replica's received
    /// or replayed position, whichever is further.
    pub fn wal_position(&self) -> Option<u64> {
        match self.role {
            Role::Primary => self.wal_lsn,
            _ => match (self.received_lsn, self.replayed_lsn) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// The leader key: who leads, and the revision it was taken at (the leader's term: each
/// take makes a new one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    pub name: String,
    pub term: i64,
}

/// The synchronous standby as the leader recorded it (`sync`): only `sync_standby` may be
/// promoted in synchronous mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    pub leader: String,
    pub sync_standby: Option<String>,
}

/// A requested switchover or failover (`switchover`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switchover {
    /// The leader it moves away from (None: whichever leads).
    pub from: Option<String>,
    /// The member it moves to (None: the healthiest).
    pub to: Option<String>,
    /// A failover: no waiting for the target to catch up, and the lag limit does not apply.
    pub forced: bool,
    pub requested_ms: u64,
    /// After this (Unix ms) the agents drop the request, so that one left behind by a
    /// command that died cannot block failover.
    pub expires_ms: u64,
}

/// One change of leader (`history`, newest last).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub term: i64,
    pub leader: String,
    pub timeline: Option<u32>,
    pub at_ms: u64,
    pub reason: String,
}

/// The cluster-wide rules the leader publishes in `config` from its node.toml, so that every
/// member decides by the same ones (a member's own values apply only until the first leader
/// has published them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dynamic {
    pub synchronous_mode: bool,
    pub maximum_lag_on_failover: u64,
}

/// Everything under the scope's prefix, read in one request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    /// The system identifier of the cluster the first node made (`initialize`); an empty
    /// string while that node is still running initdb.
    pub initialize: Option<String>,
    pub leader: Option<Leader>,
    pub members: Vec<MemberState>,
    /// The leader's last published WAL position (`optime`, kept when the leader goes).
    pub optime: Option<u64>,
    /// Maintenance mode: no automatic action.
    pub paused: bool,
    /// The rules the leader published (`config`).
    pub dynamic: Option<Dynamic>,
    /// The `config` key's revision (0: absent), for compare-and-set.
    pub config_revision: i64,
    pub sync: Option<SyncState>,
    pub switchover: Option<Switchover>,
    pub history: Vec<HistoryEntry>,
}

impl ClusterView {
    pub fn member(&self, name: &str) -> Option<&MemberState> {
        self.members.iter().find(|m| m.name == name)
    }

    pub fn leader_name(&self) -> Option<&str> {
        self.leader.as_ref().map(|l| l.name.as_str())
    }
}

/// A member as a test fixture: running in `role` at WAL position `pos`, streaming when a
/// replica, of system `sysid`, listening on a port derived from its name.
#[cfg(test)]
pub(crate) fn member_at(name: &str, role: Role, pos: u64, sysid: &str) -> MemberState {
    MemberState {
        name: name.to_string(),
        role,
        state: "running".into(),
        conn: format!("127.0.0.1:{}", 5000 + u32::from(name.as_bytes()[0])),
        api_url: String::new(),
        timeline: Some(1),
        wal_lsn: (role == Role::Primary).then_some(pos),
        received_lsn: (role == Role::Replica).then_some(pos),
        replayed_lsn: (role == Role::Replica).then_some(pos),
        lag_bytes: None,
        streaming: role == Role::Replica,
        nofailover: false,
        system_identifier: Some(sysid.to_string()),
        updated_ms: 0,
    }
}
