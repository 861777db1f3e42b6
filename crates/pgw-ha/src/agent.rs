//! The agent: one per node. Two tasks and the API:
//! - the **keeper** holds the lease: renews it every `loop_wait`, grants a new one when it
//!   expired, and **fences**: when this member leads and no renewal has succeeded for
//!   `ttl - loop_wait - 1` seconds, it stops PostgreSQL at once (immediate mode), before the
//!   key can expire and a replica can take over; so two writable primaries never overlap.
//!   With `failsafe_mode` it first asks every member over the REST API, and keeps the
//!   primary while all of them confirm that they cannot reach etcd either and follow it.
//! - the **loop** reads the cluster from etcd and this node's facts, calls
//!   [`decide`](crate::decide::decide), carries out the action, and publishes this member's
//!   state. It runs every `loop_wait`, and at once when the leader key changes (a watch).
//!
//! Control comes in as [`Control`] messages (the binary turns SIGHUP into `Reload`,
//! SIGINT/SIGTERM into `Stop`), so the agent holds no global state.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::api::Shared;
use crate::config::{Config, ConfigError};
use crate::dcs::{Dcs, DcsError, Lease};
use crate::decide::{
    decide, must_fence, sync_step, Action, Data, Local, Pg, Rules, SyncStep, View,
};
use crate::pg::{LocalPg, PgError};
use crate::state::{ClusterView, Dynamic, HistoryEntry, MemberState, Role, Switchover};

/// How long a query on the local server may take before the loop gives up on it.
const PG_TIMEOUT: Duration = Duration::from_secs(5);

/// What the agent is told from outside.
#[derive(Debug)]
pub enum Control {
    /// Re-read the config file (SIGHUP).
    Reload,
    /// Stop PostgreSQL cleanly, give up the lease, exit (SIGINT, SIGTERM).
    Stop,
}

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Dcs(#[from] DcsError),
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error("refusing to run: {0}")]
    Refused(String),
    #[error("the REST API cannot listen on {addr}: {source}")]
    Api {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

impl pgw_common::Classify for AgentError {
    fn class(&self) -> pgw_common::ErrorClass {
        match self {
            AgentError::Config(_) | AgentError::Refused(_) | AgentError::Api { .. } => {
                pgw_common::ErrorClass::Input
            }
            AgentError::Dcs(e) => e.class(),
            AgentError::Pg(e) => e.class(),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs the agent of `config` (read from `path`) until `Control::Stop`; an unreachable etcd
/// at start, a busy API address, or another cluster's data directory end it with an error.
pub async fn run(
    path: PathBuf,
    config: Config,
    mut control: mpsc::Receiver<Control>,
) -> Result<(), AgentError> {
    let dcs = Dcs::connect(&config.etcd, &config.scope).await?;
    // The first lease, before anything else: an etcd that cannot be reached is the first
    // thing to report.
    let lease = dcs.grant(config.ttl()).await?;
    let shared = Shared::new(&config.name, &config.scope, config.demote_after());
    shared.set_renewed(Instant::now());
    let api_addr = config.api_addr().map_err(|reason| {
        AgentError::Config(ConfigError::Invalid {
            path: path.clone(),
            key: "api",
            reason,
        })
    })?;
    let listener = tokio::net::TcpListener::bind(api_addr)
        .await
        .map_err(|source| AgentError::Api {
            addr: config.api.clone(),
            source,
        })?;
    let pg = LocalPg::new(config.clone())?;
    let (stop_api_tx, stop_api_rx) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(crate::api::serve(listener, Arc::clone(&shared), async {
        let _ = stop_api_rx.await;
    }));

    let lease_id = Arc::new(AtomicI64::new(lease.id));
    let keeper_cfg = Arc::new(std::sync::Mutex::new(config.clone()));
    let stop_keeper = Arc::new(AtomicBool::new(false));
    let keeper = tokio::spawn(keep(
        dcs.clone(),
        lease,
        Arc::clone(&lease_id),
        Arc::clone(&shared),
        pg.clone(),
        Arc::clone(&keeper_cfg),
        Arc::clone(&stop_keeper),
    ));
    tracing::info!(name = %config.name, scope = %config.scope, "agent started");

    let mut agent = Agent {
        cfg: config,
        path,
        dcs,
        pg,
        shared,
        lease_id,
        keeper_cfg,
        client: None,
        sysid: None,
        down_since: None,
        not_streaming_since: None,
        backoff: None,
    };
    let result = agent.main_loop(&mut control).await;
    // Clean stop: PostgreSQL first (a leader's last WAL reaches its replicas with the
    // shutdown checkpoint), then the lease, so the key goes at once and a replica takes over
    // without waiting for the TTL.
    stop_keeper.store(true, Ordering::SeqCst);
    let _ = keeper.await;
    // A refused data directory (another cluster's) is left exactly as it was.
    if !matches!(result, Err(AgentError::Refused(_))) {
        if let Err(e) = agent.pg.stop(false).await {
            tracing::warn!(error = %e, "stopping PostgreSQL failed");
        }
    }
    let _ = agent
        .dcs
        .revoke(agent.lease_id.load(Ordering::SeqCst))
        .await;
    let _ = stop_api_tx.send(());
    let _ = api.await;
    tracing::info!("agent stopped");
    result
}

struct Agent {
    cfg: Config,
    path: PathBuf,
    dcs: Dcs,
    pg: LocalPg,
    shared: Arc<Shared>,
    lease_id: Arc<AtomicI64>,
    keeper_cfg: Arc<std::sync::Mutex<Config>>,
    client: Option<tokio_postgres::Client>,
    sysid: Option<String>,
    down_since: Option<Instant>,
    not_streaming_since: Option<Instant>,
    backoff: Option<(Instant, String)>,
}

/// One loop's local facts.
struct Facts {
    local: Local,
    senders: Vec<crate::decide::Sender>,
    ssn: String,
}

impl Agent {
    async fn main_loop(&mut self, control: &mut mpsc::Receiver<Control>) -> Result<(), AgentError> {
        let mut watch = None;
        loop {
            let started = Instant::now();
            match self.iteration().await {
                Ok(()) => {}
                Err(AgentError::Refused(why)) => return Err(AgentError::Refused(why)),
                Err(e) => {
                    tracing::warn!(error = %e, "loop");
                    self.shared.update(|s| s.state = format!("error: {e}"));
                }
            }
            if watch.is_none() {
                watch = self.dcs.watch_leader().await.ok();
            }
            let next = started + self.cfg.loop_wait();
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                m = async {
                    match watch.as_mut() {
                        Some(w) => w.message().await,
                        None => std::future::pending().await,
                    }
                }, if watch.is_some() => {
                    match m {
                        Ok(Some(_)) => tracing::debug!("leader key changed"),
                        _ => watch = None,
                    }
                }
                c = control.recv() => match c {
                    Some(Control::Reload) => self.reload().await,
                    Some(Control::Stop) | None => return Ok(()),
                },
            }
        }
    }

    async fn reload(&mut self) {
        match Config::load(&self.path) {
            Err(e) => tracing::warn!(error = %e, "reload: config not changed"),
            Ok(new) => {
                let fixed = |c: &Config| {
                    (
                        c.scope.clone(),
                        c.name.clone(),
                        c.etcd.clone(),
                        c.data_dir.clone(),
                        c.bin_dir.clone(),
                        c.listen.clone(),
                        c.api.clone(),
                        c.superuser.clone(),
                        c.replication_user.clone(),
                        c.os_user.clone(),
                        c.ttl,
                    )
                };
                if fixed(&new) != fixed(&self.cfg) {
                    tracing::warn!(
                        "reload: a key that needs an agent restart changed; the others apply now"
                    );
                }
                let mut merged = new;
                (
                    merged.scope,
                    merged.name,
                    merged.etcd,
                    merged.data_dir,
                    merged.bin_dir,
                    merged.listen,
                    merged.api,
                    merged.superuser,
                    merged.replication_user,
                    merged.os_user,
                    merged.ttl,
                ) = fixed(&self.cfg);
                // ttl stays what the live lease was granted with; loop_wait must still fit it.
                if let Err((key, why)) = merged.check() {
                    tracing::warn!(key, %why, "reload: config not changed");
                    return;
                }
                self.cfg = merged.clone();
                self.pg.config = merged.clone();
                *self.keeper_cfg.lock().unwrap_or_else(|e| e.into_inner()) = merged.clone();
                *self
                    .shared
                    .demote_after
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = merged.demote_after();
                if self.pg.is_running() {
                    if let Err(e) = self.pg.write_settings(None).await {
                        tracing::warn!(error = %e, "reload: write settings");
                    } else if let Err(e) = self.pg.reload().await {
                        tracing::warn!(error = %e, "reload: reload PostgreSQL");
                    }
                }
                tracing::info!("config reloaded");
            }
        }
    }

    /// This member's published rules (the leader publishes them for everyone).
    fn own_dynamic(&self) -> Dynamic {
        Dynamic {
            synchronous_mode: self.cfg.synchronous_mode,
            maximum_lag_on_failover: self.cfg.maximum_lag_on_failover,
        }
    }

    /// The decision's rules: the cluster-wide ones the leader published, else our own.
    fn rules(&self, view: &ClusterView) -> Rules {
        let d = view.dynamic.unwrap_or_else(|| self.own_dynamic());
        Rules {
            name: self.cfg.name.clone(),
            nofailover: self.cfg.nofailover,
            synchronous_mode: d.synchronous_mode,
            maximum_lag_on_failover: d.maximum_lag_on_failover,
            restart_timeout: Duration::from_secs(self.cfg.restart_timeout),
            rejoin_after: self.cfg.ttl(),
            conn: self.cfg.listen.clone(),
        }
    }

    /// This node's facts now.
    async fn facts(&mut self) -> Result<Facts, AgentError> {
        let data = self.pg.data(self.sysid.as_deref()).await?;
        if let Data::Present {
            system_identifier, ..
        } = &data
        {
            self.sysid = Some(system_identifier.clone());
        } else {
            self.sysid = None;
        }
        let mut senders = Vec::new();
        let mut ssn = String::new();
        let pg = if self.pg.is_running() {
            if self.client.as_ref().is_none_or(|c| c.is_closed()) {
                self.client = self.pg.connect().await.ok();
            }
            match &self.client {
                Some(c) => match tokio::time::timeout(PG_TIMEOUT, self.pg.live(c))
                    .await
                    .unwrap_or_else(|_| {
                        Err(PgError::Other(format!(
                            "PostgreSQL did not answer within {} s",
                            PG_TIMEOUT.as_secs()
                        )))
                    }) {
                    Ok((live, s, n)) => {
                        senders = s;
                        ssn = n;
                        Pg::Running(live)
                    }
                    Err(e) => {
                        self.client = None;
                        return Err(e.into());
                    }
                },
                None => {
                    return Err(AgentError::Pg(PgError::Other(
                        "PostgreSQL runs but does not accept connections yet".into(),
                    )))
                }
            }
        } else {
            self.client = None;
            Pg::Stopped
        };
        let now = Instant::now();
        let not_streaming = matches!(&pg, Pg::Running(l) if l.in_recovery && !l.streaming);
        self.not_streaming_since = if not_streaming {
            Some(self.not_streaming_since.unwrap_or(now))
        } else {
            None
        };
        Ok(Facts {
            local: Local {
                data,
                pg,
                down_for: self.down_since.map(|t| now - t).unwrap_or_default(),
                not_streaming_for: self
                    .not_streaming_since
                    .map(|t| now - t)
                    .unwrap_or_default(),
            },
            senders,
            ssn,
        })
    }

    async fn iteration(&mut self) -> Result<(), AgentError> {
        let view = match self.dcs.read().await {
            Ok(v) => {
                // Reachable from now on: /failsafe must stop vouching for a leader before
                // this member acts on what it read.
                self.shared.update(|s| s.etcd_reachable = true);
                v
            }
            Err(e) => {
                self.shared.update(|s| {
                    s.etcd_reachable = false;
                    s.state = format!("etcd unreachable: {e}");
                });
                // Keep the API's view of PostgreSQL current; the keeper fences.
                if let Ok(f) = self.facts().await {
                    self.show(&f, &ClusterView::default(), "etcd unreachable");
                }
                return Ok(());
            }
        };
        let mut view = view;
        if let Some(s) = &view.switchover {
            if s.expires_ms < now_ms() {
                tracing::warn!("dropping an expired switchover request");
                if self.dcs.set_switchover(None).await.is_ok() {
                    view.switchover = None;
                }
            }
        }
        let mut facts = self.facts().await?;
        let holds = view.leader_name() == Some(self.cfg.name.as_str());
        self.down_since = if holds && matches!(facts.local.pg, Pg::Stopped) {
            Some(self.down_since.unwrap_or_else(Instant::now))
        } else {
            None
        };
        facts.local.down_for = self.down_since.map(|t| t.elapsed()).unwrap_or_default();
        let rules = self.rules(&view);
        let action = decide(View {
            me: &facts.local,
            rules: &rules,
            cluster: &view,
        });
        tracing::debug!(?action, "decided");
        let shown = match &action {
            Action::Idle { why } => why.clone(),
            other => serde_json::to_value(other)
                .ok()
                .and_then(|v| v.get("action").and_then(|a| a.as_str()).map(String::from))
                .unwrap_or_default(),
        };
        // After a failure the same action waits three loops (a clone or a rewind is not
        // retried in a tight loop); any other action, a demotion above all, goes ahead.
        if let Some((until, failed)) = &self.backoff {
            if Instant::now() < *until && *failed == shown {
                self.show(&facts, &view, &format!("{shown}: waiting to retry"));
                return Ok(());
            }
            self.backoff = None;
        }
        if !matches!(action, Action::Idle { .. } | Action::Lead) {
            tracing::info!(action = %shown, "acting");
        }
        let changed = !matches!(action, Action::Idle { .. } | Action::Lead);
        let acted = self.act(action, &view, &facts).await;
        if let Err(e) = &acted {
            if matches!(e, AgentError::Refused(_)) {
                return acted;
            }
            tracing::warn!(error = %e, "action failed");
            self.backoff = Some((Instant::now() + self.cfg.loop_wait() * 3, shown.clone()));
        }
        // Publish what is true after the action: read again only when it changed something.
        let (view, after) = if changed {
            let view = self.dcs.read().await.unwrap_or(view);
            let after = self.facts().await.unwrap_or(facts);
            (view, after)
        } else {
            (view, facts)
        };
        self.publish(&after, &view).await;
        self.show(&after, &view, &shown);
        if let Err(e) = acted {
            self.shared
                .update(|s| s.state = format!("{shown} failed: {e}"));
        }
        Ok(())
    }

    fn lease(&self) -> i64 {
        self.lease_id.load(Ordering::SeqCst)
    }

    fn member_conn(&self, view: &ClusterView, name: &str) -> Result<String, AgentError> {
        view.member(name).map(|m| m.conn.clone()).ok_or_else(|| {
            AgentError::Pg(PgError::Other(format!(
                "{name} has not published its address"
            )))
        })
    }

    async fn act(
        &mut self,
        action: Action,
        view: &ClusterView,
        facts: &Facts,
    ) -> Result<(), AgentError> {
        let me = self.cfg.name.clone();
        let slot = Config::slot_of(&me);
        match action {
            Action::Idle { .. } => {}
            Action::Refuse { why } => return Err(AgentError::Refused(why)),
            Action::Bootstrap => self.bootstrap().await?,
            Action::Clone { leader } => {
                let conn = self.member_conn(view, &leader)?;
                self.shared
                    .update(|s| s.state = format!("cloning from {leader}"));
                self.publish_state(Role::Uninitialized, "cloning", facts)
                    .await;
                self.pg.clone_from(&conn).await?;
                self.sysid = None;
                self.pg.write_settings(Some("")).await?;
                let primary = self.pg.replication_conninfo(&conn)?;
                self.pg.start(true, Some((primary, slot))).await?;
            }
            Action::StartReplica { leader } => {
                self.pg.write_settings(Some("")).await?;
                let primary = match leader {
                    Some(l) => {
                        let conn = self.member_conn(view, &l)?;
                        Some((self.pg.replication_conninfo(&conn)?, slot))
                    }
                    None => None,
                };
                self.pg.start(true, primary).await?;
            }
            Action::Follow { leader } => {
                let conn = self.member_conn(view, &leader)?;
                let primary = self.pg.replication_conninfo(&conn)?;
                self.pg.follow(primary, slot).await?;
            }
            Action::Rejoin { leader } => {
                let conn = self.member_conn(view, &leader)?;
                self.shared
                    .update(|s| s.state = format!("rewinding onto {leader}"));
                self.publish_state(Role::Stopped, "rewinding", facts).await;
                self.pg.rejoin(&conn).await?;
                self.sysid = None;
            }
            Action::Acquire => {
                if self
                    .shared
                    .answered_failsafe()
                    .is_some_and(|t| t.elapsed() < self.cfg.ttl())
                {
                    // We vouched for the old leader under failsafe a moment ago: it may still
                    // be writable. Wait until that vouching has run out.
                    return Ok(());
                }
                let Some(term) = self.dcs.acquire(&me, self.lease()).await? else {
                    return Ok(());
                };
                tracing::info!(term, "took the leader key");
                let was_replica = matches!(&facts.local.pg, Pg::Running(l) if l.in_recovery);
                if self.rules(view).synchronous_mode {
                    // Before the first commit on the new timeline: no member is recorded as
                    // having them all (the old record named this member).
                    self.dcs
                        .set_sync(&crate::state::SyncState {
                            leader: me.clone(),
                            sync_standby: None,
                        })
                        .await?;
                }
                if was_replica {
                    self.pg.promote().await?;
                    tracing::info!("promoted");
                }
                let reason = match &view.switchover {
                    Some(s) if s.forced => "failover requested",
                    Some(_) => "switchover",
                    None if was_replica => "failover: the leader's key expired",
                    None => "leader key free",
                };
                self.record(view, term, reason).await;
                if view.switchover.is_some() {
                    self.dcs.set_switchover(None).await?;
                }
            }
            Action::Promote => {
                if !self.fresh_leader().await? {
                    return Ok(());
                }
                self.pg.promote().await?;
            }
            Action::StartPrimary => {
                if !self.fresh_leader().await? {
                    return Ok(());
                }
                self.shared
                    .update(|s| s.state = "restarting PostgreSQL in place".into());
                // Keep its synchronous standby: commits wait for it from the first one.
                self.pg.write_settings(None).await?;
                self.pg.start(false, None).await?;
            }
            Action::Lead => {
                self.lead(view, facts).await?;
            }
            Action::Release => {
                tracing::warn!(
                    "PostgreSQL stayed down past restart_timeout: giving up the leader key"
                );
                self.pg.kill().await.ok();
                self.dcs.release(&me).await?;
            }
            Action::Demote { why } => {
                tracing::warn!(%why, "demoting");
                self.pg.stop(true).await?;
            }
            Action::StepDown { to, forced } => self.step_down(view, &to, forced).await?,
        }
        Ok(())
    }

    /// Whether this member holds the key right now: renewed within the fencing deadline and
    /// confirmed by etcd (the view the decision used may be older than a fence).
    async fn fresh_leader(&self) -> Result<bool, AgentError> {
        let renewed = self
            .shared
            .since_renewal()
            .is_some_and(|d| d < self.cfg.demote_after());
        Ok(renewed && self.dcs.still_leader(&self.cfg.name, self.lease()).await?)
    }

    async fn bootstrap(&mut self) -> Result<(), AgentError> {
        if !self.dcs.claim_initialize(self.lease()).await? {
            return Ok(());
        }
        tracing::info!("bootstrapping the cluster");
        let made = !self.pg.has_data();
        let result: Result<i64, AgentError> = async {
            if made {
                self.pg.initdb().await?;
            }
            self.pg.write_settings(Some("")).await?;
            if !self.pg.is_running() {
                self.pg.start(false, None).await?;
            }
            let client = self.pg.connect().await?;
            self.pg.create_replication_role(&client).await?;
            let sysid: String = client
                .query_one(
                    "SELECT system_identifier::text FROM pg_control_system()",
                    &[],
                )
                .await
                .map_err(|source| PgError::Query {
                    what: "read the system identifier",
                    source,
                })?
                .get(0);
            self.dcs.set_initialize(Some(&sysid)).await?;
            self.sysid = Some(sysid);
            match self.dcs.acquire(&self.cfg.name, self.lease()).await? {
                Some(term) => Ok(term),
                None => Err(AgentError::Pg(PgError::Other(
                    "another member took the leader key during bootstrap".into(),
                ))),
            }
        }
        .await;
        match result {
            Ok(term) => {
                let view = self.dcs.read().await.unwrap_or_default();
                self.record(&view, term, "bootstrap").await;
                Ok(())
            }
            Err(e) => {
                // Nothing half-made: give the claim back, and remove what initdb made.
                let _ = self.pg.stop(true).await;
                if made {
                    let _ = std::fs::remove_dir_all(self.pg.data_dir());
                }
                let _ = self.dcs.set_initialize(None).await;
                Err(e)
            }
        }
    }

    async fn lead(&mut self, view: &ClusterView, facts: &Facts) -> Result<(), AgentError> {
        let me = self.cfg.name.clone();
        if let (Some(c), Pg::Running(live)) = (&self.client, &facts.local.pg) {
            let others: Vec<String> = view
                .members
                .iter()
                .filter(|m| m.name != me)
                .map(|m| m.name.clone())
                .collect();
            tokio::time::timeout(PG_TIMEOUT, self.pg.ensure_slots(c, &others))
                .await
                .map_err(|_| PgError::Other("creating the members' slots hung".into()))??;
            if let Some(lsn) = live.wal_lsn {
                self.dcs.set_optime(lsn).await?;
            }
        }
        if let Some(s) = &view.switchover {
            if s.from.as_deref() != Some(me.as_str()) {
                self.dcs.set_switchover(None).await?;
            }
        }
        // etcd lost the cluster's identity (a new or restored etcd): the leader writes it back.
        if let (Some(own), true) = (
            &self.sysid,
            view.initialize.as_deref() != self.sysid.as_deref(),
        ) {
            tracing::warn!(system_identifier = %own, "recording the cluster's system identifier again");
            self.dcs.set_initialize(Some(own)).await?;
        }
        if !self.cfg.synchronous_mode
            && view.sync.as_ref().is_some_and(|s| s.sync_standby.is_some())
        {
            // A record left from synchronous mode must not make an asynchronous standby
            // eligible should synchronous mode come back.
            self.dcs
                .set_sync(&crate::state::SyncState {
                    leader: me.clone(),
                    sync_standby: None,
                })
                .await?;
        }
        // The leader's node.toml sets the rules every member decides by.
        if view.dynamic != Some(self.own_dynamic()) {
            tracing::info!(rules = ?self.own_dynamic(), "publishing the cluster's rules");
            self.dcs
                .set_config(view.config_revision, view.paused, Some(self.own_dynamic()))
                .await?;
        }
        let want_ssn = if self.cfg.synchronous_mode {
            let excluded: Vec<String> = view
                .members
                .iter()
                .filter(|m| m.nofailover)
                .map(|m| Config::slot_of(&m.name))
                .collect();
            // Sender names are slot names (application_name); the key holds member names.
            let key = view.sync.clone().map(|mut k| {
                k.sync_standby = k.sync_standby.map(|s| Config::slot_of(&s));
                k
            });
            match sync_step(&me, key.as_ref(), &facts.ssn, &facts.senders, &excluded) {
                SyncStep::Keep => None,
                SyncStep::SetStandbyNames(n) => Some(n),
                SyncStep::WriteKey(mut k) => {
                    k.sync_standby = k.sync_standby.map(|s| {
                        view.members
                            .iter()
                            .find(|m| Config::slot_of(&m.name) == s)
                            .map(|m| m.name.clone())
                            .unwrap_or(s)
                    });
                    tracing::info!(sync_standby = ?k.sync_standby, "recording the synchronous standby");
                    self.dcs.set_sync(&k).await?;
                    None
                }
            }
        } else if !facts.ssn.is_empty() {
            Some(String::new())
        } else {
            None
        };
        if let Some(ssn) = want_ssn {
            tracing::info!(synchronous_standby_names = %ssn, "setting the synchronous standby");
            self.pg.write_settings(Some(&ssn)).await?;
            self.pg.reload().await?;
        }
        Ok(())
    }

    async fn step_down(
        &mut self,
        view: &ClusterView,
        to: &str,
        forced: bool,
    ) -> Result<(), AgentError> {
        let me = self.cfg.name.clone();
        tracing::info!(%to, forced, "stepping down");
        // The key's request now names the target, so only it may take over.
        let request = Switchover {
            from: Some(me.clone()),
            to: Some(to.to_string()),
            forced,
            requested_ms: view
                .switchover
                .as_ref()
                .map(|s| s.requested_ms)
                .unwrap_or_else(now_ms),
            expires_ms: now_ms() + 120_000,
        };
        self.dcs.set_switchover(Some(&request)).await?;
        self.pg.stop(false).await?;
        if !forced {
            let lsn = self.pg.checkpoint_lsn().await?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let v = self.dcs.read().await?;
                let has = v
                    .member(to)
                    .and_then(|m| m.wal_position())
                    .is_some_and(|p| p > lsn);
                if has {
                    break;
                }
                if Instant::now() >= deadline {
                    tracing::warn!(%to, "the target did not receive the shutdown checkpoint: switchover abandoned");
                    self.dcs.set_switchover(None).await?;
                    self.pg.start(false, None).await?;
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        self.dcs.release(&me).await?;
        Ok(())
    }

    /// Appends a change of leader to the history.
    async fn record(&self, view: &ClusterView, term: i64, reason: &str) {
        let mut history = view.history.clone();
        let timeline = match &self.client {
            Some(c) => c
                .query_one(
                    "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8",
                    &[],
                )
                .await
                .ok()
                .map(|r| r.get::<_, i64>(0) as u32),
            None => None,
        };
        history.push(HistoryEntry {
            term,
            leader: self.cfg.name.clone(),
            timeline,
            at_ms: now_ms(),
            reason: reason.to_string(),
        });
        let keep = history.len().saturating_sub(100);
        if let Err(e) = self.dcs.set_history(&history[keep..]).await {
            tracing::warn!(error = %e, "record the history");
        }
    }

    fn member_state(&self, facts: &Facts, view: &ClusterView) -> MemberState {
        let (role, state, live) = match &facts.local.pg {
            Pg::Running(l) if l.in_recovery => (
                Role::Replica,
                if l.streaming { "streaming" } else { "running" },
                Some(l),
            ),
            Pg::Running(l) => (Role::Primary, "running", Some(l)),
            Pg::Stopped if facts.local.data == Data::Missing => {
                (Role::Uninitialized, "uninitialized", None)
            }
            Pg::Stopped => (Role::Stopped, "stopped", None),
        };
        let mut m = MemberState {
            name: self.cfg.name.clone(),
            role,
            state: state.to_string(),
            conn: self.cfg.listen.clone(),
            api_url: format!("http://{}", self.cfg.api),
            timeline: live.and_then(|l| l.timeline),
            wal_lsn: live.and_then(|l| l.wal_lsn),
            received_lsn: live.and_then(|l| l.received_lsn),
            replayed_lsn: live.and_then(|l| l.replayed_lsn),
            lag_bytes: None,
            streaming: live.is_some_and(|l| l.streaming),
            nofailover: self.cfg.nofailover,
            system_identifier: self.sysid.clone(),
            updated_ms: now_ms(),
        };
        if role == Role::Replica {
            if let (Some(o), Some(p)) = (view.optime, m.wal_position()) {
                m.lag_bytes = Some(o.saturating_sub(p));
            }
        }
        m
    }

    async fn publish(&self, facts: &Facts, view: &ClusterView) {
        let m = self.member_state(facts, view);
        if let Err(e) = self.dcs.publish(&m, self.lease()).await {
            tracing::debug!(error = %e, "publish");
        }
        if m.role == Role::Primary && view.leader_name() == Some(self.cfg.name.as_str()) {
            if let Some(lsn) = m.wal_lsn {
                let _ = self.dcs.set_optime(lsn).await;
            }
        }
    }

    async fn publish_state(&self, role: Role, state: &str, facts: &Facts) {
        let mut m = self.member_state(facts, &ClusterView::default());
        m.role = role;
        m.state = state.to_string();
        let _ = self.dcs.publish(&m, self.lease()).await;
    }

    fn show(&self, facts: &Facts, view: &ClusterView, action: &str) {
        let m = self.member_state(facts, view);
        let holds = view.leader_name() == Some(self.cfg.name.as_str());
        let leader = view
            .leader_name()
            .filter(|l| *l != self.cfg.name)
            .map(str::to_string);
        let reachable = !view.members.is_empty() || view.initialize.is_some();
        self.shared.update(|s| {
            s.role = m.role;
            s.state = m.state.clone();
            s.running = matches!(facts.local.pg, Pg::Running(_));
            s.writable = m.role == Role::Primary;
            s.streaming = m.streaming;
            if reachable {
                s.holds_leader = holds;
                s.leader = leader;
                s.cluster = view.clone();
                s.paused = view.paused;
            }
            s.etcd_reachable = reachable;
            s.timeline = m.timeline;
            s.lag_bytes = m.lag_bytes;
            s.action = action.to_string();
        });
    }
}

/// The keeper: renews the lease every `loop_wait` (and again after 200 ms when a renewal
/// failed, so one slow etcd answer does not cost a whole `loop_wait` of the fencing budget),
/// grants a new one when it expired, and fences (see the module docs). Fencing is a standing rule checked every 100 ms, whatever
/// the loop believes: a server that runs as a primary here while no renewal has succeeded
/// for `ttl - loop_wait - 1` seconds is stopped, unless failsafe holds. No etcd request is
/// waited on past that deadline.
async fn keep(
    dcs: Dcs,
    lease: Lease,
    lease_id: Arc<AtomicI64>,
    shared: Arc<Shared>,
    pg: LocalPg,
    config: Arc<std::sync::Mutex<Config>>,
    stop: Arc<AtomicBool>,
) {
    let mut lease = Some(lease);
    let mut last_try = Instant::now();
    let mut failsafe_asked: Option<Instant> = None;
    let tick = Duration::from_millis(100);
    let retry = Duration::from_millis(200);
    while !stop.load(Ordering::SeqCst) {
        let cfg = config.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let since = || shared.since_renewal().unwrap_or(Duration::MAX);
        let failing = since() > cfg.loop_wait() + retry;
        let wait = if failing { retry } else { cfg.loop_wait() };
        if last_try.elapsed() >= wait {
            last_try = Instant::now();
            let budget = cfg
                .demote_after()
                .saturating_sub(since())
                .clamp(Duration::from_millis(100), crate::dcs::REQUEST_TIMEOUT);
            match lease.as_mut() {
                None => match tokio::time::timeout(budget, dcs.grant(cfg.ttl())).await {
                    Ok(Ok(l)) => {
                        tracing::info!(lease = l.id, "new lease");
                        lease_id.store(l.id, Ordering::SeqCst);
                        shared.set_renewed(last_try);
                        lease = Some(l);
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "grant a lease"),
                    Err(_) => tracing::debug!("grant a lease: no answer in time"),
                },
                Some(l) => match tokio::time::timeout(budget, dcs.renew(l)).await {
                    Ok(Ok(true)) => shared.set_renewed(last_try),
                    Ok(Ok(false)) => {
                        tracing::warn!("the lease expired: a new one is granted");
                        lease = None;
                    }
                    failed => {
                        if let Ok(Err(e)) = failed {
                            tracing::debug!(error = %e, "renew");
                        }
                        if since() > cfg.ttl() {
                            // Past its TTL the lease is gone in etcd too: grant a new one.
                            lease = None;
                        } else {
                            // The keep-alive stream may be broken: open a new one.
                            let left = cfg
                                .demote_after()
                                .saturating_sub(since())
                                .clamp(Duration::from_millis(100), crate::dcs::REQUEST_TIMEOUT);
                            if let Ok(Ok(fresh)) =
                                tokio::time::timeout(left, dcs.reopen(l.id)).await
                            {
                                *l = fresh;
                            }
                        }
                    }
                },
            }
        }
        // Failsafe: ask from one loop_wait before the deadline, so that the answer is there
        // when the deadline comes; ask again every loop_wait.
        let held = if cfg.failsafe_mode && since() + cfg.loop_wait() >= cfg.demote_after() {
            if failsafe_asked.is_none_or(|t| t.elapsed() >= cfg.loop_wait()) {
                failsafe_asked = Some(Instant::now());
                let ok = failsafe_confirmed(&shared, &cfg).await;
                if ok != shared.failsafe_held() {
                    tracing::warn!(
                        held = ok,
                        "failsafe: asked every member whether it still follows this leader"
                    );
                }
                shared.set_failsafe_held(ok);
            }
            shared.failsafe_held()
        } else {
            if shared.failsafe_held() {
                shared.set_failsafe_held(false);
            }
            false
        };
        if must_fence(since(), cfg.demote_after(), held) && pg.running_as_primary() {
            tracing::warn!(
                since_ms = since().as_millis() as u64,
                "cannot renew the leader key: stopping PostgreSQL before the key expires"
            );
            shared.update(|s| {
                s.holds_leader = false;
                s.state = "fenced: etcd unreachable".into();
            });
            if let Err(e) = pg.stop(true).await {
                tracing::warn!(error = %e, "fencing stop failed: killing PostgreSQL");
                let _ = pg.kill().await;
            }
        }
        tokio::time::sleep(tick).await;
    }
}

/// Failsafe: every other member (from the last view) answers `POST /failsafe` with 200.
async fn failsafe_confirmed(shared: &Shared, cfg: &Config) -> bool {
    let s = shared.status();
    let urls: Vec<String> = s
        .cluster
        .members
        .iter()
        .filter(|m| m.name != cfg.name)
        .map(|m| format!("{}/failsafe", m.api_url))
        .collect();
    if urls.is_empty() {
        return false;
    }
    let me = cfg.name.clone();
    // One thread per member, all at once: the answer must be there within 400 ms.
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(400)))
            .http_status_as_error(false)
            .build()
            .into();
        std::thread::scope(|scope| {
            let asks: Vec<_> = urls
                .iter()
                .map(|u| {
                    let (agent, me) = (agent.clone(), me.clone());
                    scope.spawn(move || {
                        agent
                            .post(u)
                            .send_json(serde_json::json!({ "leader": me }))
                            .map(|r| r.status() == 200)
                            .unwrap_or(false)
                    })
                })
                .collect();
            asks.into_iter().all(|a| a.join().unwrap_or(false))
        })
    })
    .await
    .unwrap_or(false)
}
