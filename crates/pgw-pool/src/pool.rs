//! One pool per (database, user): a semaphore of `pool_size` permits (FIFO, so waiting
//! clients are served in order), a LIFO stack of idle server connections behind a short
//! lock, the reserve pool, and the counters SHOW POOLS and SHOW STATS report. Server
//! selection for multi-host databases (`target_session_attrs`, `ha_api`) happens at
//! connect time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{PoolMode, TargetSessionAttrs};
use crate::routing::{self, Verdict};
use crate::server::{Credential, Server, ServerError, Target};
use crate::stats::Stats;

/// What a pool needs to know, from the config (replaced on reload).
#[derive(Clone)]
pub struct PoolSettings {
    pub mode: PoolMode,
    pub size: u32,
    pub min_size: u32,
    pub reserve_size: u32,
    pub reserve_timeout: Option<Duration>,
    pub targets: Vec<Target>,
    pub tsa: TargetSessionAttrs,
    pub ha_api: Vec<String>,
    pub lifetime: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub check_delay: Option<Duration>,
    pub check_query: String,
    pub connect_query: Option<String>,
    pub login_retry: Duration,
    pub max_prepared: u32,
    /// max_db_connections of the database, shared with its other pools.
    pub db_limit: Option<Arc<Semaphore>>,
    /// max_user_connections of the user, shared with its other pools.
    pub user_limit: Option<Arc<Semaphore>>,
}

/// Why a client gets no server connection.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    /// query_wait_timeout passed.
    #[error("query_wait_timeout: no server connection became free in {0:.1} s")]
    Timeout(f64),
    /// Logging in failed (recently, within server_login_retry): SQLSTATE and message.
    #[error("{1}")]
    Server(String, String),
    /// The pooler is shutting down or the pool was removed.
    #[error("the pooler is shutting down")]
    Closed,
}

impl AcquireError {
    /// SQLSTATE for the client.
    pub fn sqlstate(&self) -> &str {
        match self {
            AcquireError::Timeout(_) => "57014",
            AcquireError::Server(code, _) => code,
            AcquireError::Closed => "57P01",
        }
    }
}

/// A pool.
pub struct Pool {
    /// The client-side database name.
    pub db: String,
    /// The client-side user name.
    pub user: String,
    settings: Mutex<Arc<PoolSettings>>,
    sem: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    // Boxed servers (clippy's vec_box): a Lease holds the Box, which moves between this
    // list and a session without copying the connection's state.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<Server>>>,
    /// Counters.
    pub stats: Stats,
    /// Server connections handed to clients now.
    pub sv_active: AtomicUsize,
    /// Server connections logging in now.
    pub sv_login: AtomicUsize,
    /// Clients linked to this pool.
    pub cl_active: AtomicUsize,
    /// Clients waiting for a server.
    pub cl_waiting: AtomicUsize,
    /// Microseconds since the epoch at which the longest-waiting client started (0: none).
    pub oldest_wait_us: AtomicI64,
    /// Connections of older generations are closed when released (RECONNECT, reload).
    generation: AtomicU64,
    /// The last login failure and until when to answer with it (server_login_retry).
    failure: Mutex<Option<(Instant, String, String)>>,
    /// Parameters servers of this pool reported (for a new client's ParameterStatus).
    pub server_params: Mutex<BTreeMap<String, String>>,
    /// The tracked ones among them, shared by the clients that did not set their own.
    pub server_tracked: Mutex<crate::ctx::Tracked>,
    /// The credential for servers; SCRAM pass-through stores the keys here once a client
    /// has proved them.
    pub credential: Mutex<Credential>,
    /// Which host index connected last (multi-host).
    last_host: AtomicUsize,
    /// Total permits handed out, to grow or shrink the semaphore on reload.
    size_now: AtomicUsize,
    /// Clients waiting on max_db_connections / max_user_connections.
    pub limit_waiting: AtomicUsize,
}

/// A server connection lent to a client, with its permit.
pub struct Lease {
    /// Boxed: it moves between the idle list and sessions on every transaction, and a
    /// session should hold a pointer, not the connection's whole state.
    pub server: Box<Server>,
    permit: OwnedSemaphorePermit,
}

impl Pool {
    /// A new, empty pool.
    pub fn new(db: &str, user: &str, settings: PoolSettings) -> Pool {
        let size = settings.size as usize;
        let reserve = settings.reserve_size as usize;
        let credential = settings
            .targets
            .first()
            .map(|t| t.credential.clone())
            .unwrap_or(Credential::None);
        Pool {
            db: db.to_owned(),
            user: user.to_owned(),
            settings: Mutex::new(Arc::new(settings)),
            sem: Arc::new(Semaphore::new(size)),
            reserve: Arc::new(Semaphore::new(reserve)),
            idle: Mutex::new(Vec::new()),
            stats: Stats::default(),
            sv_active: AtomicUsize::new(0),
            sv_login: AtomicUsize::new(0),
            cl_active: AtomicUsize::new(0),
            cl_waiting: AtomicUsize::new(0),
            oldest_wait_us: AtomicI64::new(0),
            generation: AtomicU64::new(0),
            failure: Mutex::new(None),
            server_params: Mutex::new(BTreeMap::new()),
            server_tracked: Mutex::new(crate::ctx::Tracked::default()),
            credential: Mutex::new(credential),
            last_host: AtomicUsize::new(0),
            size_now: AtomicUsize::new(size),
            limit_waiting: AtomicUsize::new(0),
        }
    }

    /// The current settings.
    pub fn settings(&self) -> Arc<PoolSettings> {
        self.settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies new settings (RELOAD): the size grows at once and shrinks as connections
    /// come back; when the servers it points at changed, every connection is replaced.
    pub fn update(&self, new: PoolSettings) {
        let old = self.settings();
        let size = new.size as usize;
        let now = self.size_now.swap(size, Ordering::SeqCst);
        if size > now {
            self.sem.add_permits(size - now);
        } else if size < now {
            self.sem.forget_permits(now - size);
        }
        let changed = old.targets.iter().map(|t| t.addr()).collect::<Vec<_>>()
            != new.targets.iter().map(|t| t.addr()).collect::<Vec<_>>()
            || old.targets.first().map(|t| (&t.dbname, &t.user))
                != new.targets.first().map(|t| (&t.dbname, &t.user));
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
        if changed {
            self.reconnect();
        }
    }

    /// RECONNECT: every server connection is closed when next released; idle ones now.
    pub fn reconnect(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let idle: Vec<Box<Server>> =
            std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        for s in idle {
            tokio::spawn(s.close());
        }
    }

    fn current(&self, s: &Server) -> bool {
        s.generation == self.generation.load(Ordering::SeqCst)
    }

    /// Idle server connections now.
    pub fn sv_idle(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// A snapshot of idle connections for SHOW SERVERS: (id, addr, pid, created, last used).
    pub fn idle_servers(&self) -> Vec<(u64, String, i32, Instant, Instant)> {
        self.idle
            .lock()
            .map(|v| {
                v.iter()
                    .map(|s| (s.id, s.addr.clone(), s.pid, s.created, s.last_used))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits for a permit (FIFO) and returns an idle connection or a new one.
    pub async fn acquire(&self, wait: Option<Duration>) -> Result<Lease, AcquireError> {
        let started = Instant::now();
        // The waits, the checks and the connect are boxed: a future holds room for its
        // largest await, and every idle client's task holds this one's.
        let permit = match self.sem.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => Box::pin(self.permit(wait)).await?,
        };
        self.stats.add_wait(started.elapsed());
        let settings = self.settings();
        let here = std::thread::current().id();
        loop {
            let popped = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                // The most recently used connection of this thread, else the most recent.
                match idle.iter().rposition(|s| s.home == here) {
                    Some(i) => Some(idle.remove(i)),
                    None => idle.pop(),
                }
            };
            let Some(mut s) = popped else { break };
            let expired = settings.lifetime.is_some_and(|l| s.created.elapsed() >= l);
            // A server that closed or spoke while idle (a restart, a terminated backend)
            // is dead: found here, not by the client's next query.
            if expired || !self.current(&s) || s.broken || s.io.closed_or_talking() {
                tokio::spawn(s.close());
                continue;
            }
            if s.home != here {
                if s.io.rehome().is_err() {
                    tokio::spawn(s.close());
                    continue;
                }
                s.home = here;
            }
            if let Some(delay) = settings.check_delay {
                if s.last_used.elapsed() >= delay
                    && !settings.check_query.is_empty()
                    && (Box::pin(s.run(&settings.check_query)).await.is_err()
                        || s.txn_status != b'I')
                {
                    tokio::spawn(s.close());
                    continue;
                }
            }
            self.sv_active.fetch_add(1, Ordering::Relaxed);
            self.stats.server_assignment();
            return Ok(Lease { server: s, permit });
        }
        let left = wait.map(|w| w.saturating_sub(started.elapsed()));
        let s = Box::pin(self.connect(&settings, left)).await?;
        self.sv_active.fetch_add(1, Ordering::Relaxed);
        self.stats.server_assignment();
        Ok(Lease {
            server: Box::new(s),
            permit,
        })
    }

    /// Waits for a permit (the caller tried for a free one first).
    async fn permit(&self, wait: Option<Duration>) -> Result<OwnedSemaphorePermit, AcquireError> {
        self.cl_waiting.fetch_add(1, Ordering::Relaxed);
        let now_us = crate::stats::now_us();
        let _ = self
            .oldest_wait_us
            .compare_exchange(0, now_us, Ordering::SeqCst, Ordering::SeqCst);
        let settings = self.settings();
        let main = self.sem.clone().acquire_owned();
        let result = async {
            let main_or_reserve = async {
                match settings.reserve_timeout.filter(|_| settings.reserve_size > 0) {
                    None => main.await.map_err(|_| AcquireError::Closed),
                    Some(after) => {
                        tokio::pin!(main);
                        tokio::select! {
                            p = &mut main => p.map_err(|_| AcquireError::Closed),
                            _ = tokio::time::sleep(after) => {
                                tokio::select! {
                                    p = &mut main => p.map_err(|_| AcquireError::Closed),
                                    p = self.reserve.clone().acquire_owned() => p.map_err(|_| AcquireError::Closed),
                                }
                            }
                        }
                    }
                }
            };
            match wait {
                Some(w) => tokio::time::timeout(w, main_or_reserve)
                    .await
                    .map_err(|_| AcquireError::Timeout(w.as_secs_f64()))?,
                None => main_or_reserve.await,
            }
        }
        .await;
        if self.cl_waiting.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.oldest_wait_us.store(0, Ordering::SeqCst);
        }
        result
    }

    /// Permits of max_db_connections and max_user_connections for one more server
    /// connection, waiting up to `wait` (None: forever; zero: not at all).
    async fn limits(
        &self,
        settings: &PoolSettings,
        wait: Option<Duration>,
    ) -> Result<Vec<OwnedSemaphorePermit>, AcquireError> {
        let mut held = Vec::new();
        for (sem, what) in [
            (&settings.db_limit, "max_db_connections"),
            (&settings.user_limit, "max_user_connections"),
        ] {
            let Some(sem) = sem else { continue };
            if let Ok(p) = sem.clone().try_acquire_owned() {
                held.push(p);
                continue;
            }
            self.limit_waiting.fetch_add(1, Ordering::Relaxed);
            let got = match wait {
                Some(w) => tokio::time::timeout(w, sem.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok),
                None => sem.clone().acquire_owned().await.ok(),
            };
            self.limit_waiting.fetch_sub(1, Ordering::Relaxed);
            match got {
                Some(p) => held.push(p),
                None => {
                    return Err(AcquireError::Server(
                        "53300".into(),
                        format!("{what} reached: no server connection became free in time"),
                    ))
                }
            }
        }
        Ok(held)
    }

    async fn connect(
        &self,
        settings: &PoolSettings,
        wait: Option<Duration>,
    ) -> Result<Server, AcquireError> {
        if let Some((until, code, msg)) = self
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            if Instant::now() < until {
                return Err(AcquireError::Server(code, msg));
            }
        }
        let permits = self.limits(settings, wait).await?;
        self.sv_login.fetch_add(1, Ordering::Relaxed);
        let r = self.connect_any(settings).await;
        self.sv_login.fetch_sub(1, Ordering::Relaxed);
        match r {
            Ok(mut s) => {
                s.limit_permits = permits;
                *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
                if let Some(q) = &settings.connect_query {
                    if let Err(e) = s.run(q).await {
                        tracing::warn!(pool = %self.name(), error = %e, "connect_query failed");
                    }
                }
                {
                    let mut p = self.server_params.lock().unwrap_or_else(|e| e.into_inner());
                    if p.is_empty() {
                        *p = s.params.clone();
                        let mut t = crate::ctx::Tracked::default();
                        for (k, v) in p.iter() {
                            t.set(k, v);
                        }
                        *self
                            .server_tracked
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = t;
                    }
                }
                s.generation = self.generation.load(Ordering::SeqCst);
                Ok(s)
            }
            Err(e) => {
                tracing::warn!(pool = %self.name(), error = %e, "server login failed");
                let (code, msg) = (e.sqlstate().to_owned(), client_text(&e));
                // Only a refused login is remembered; a connection failure retries at once
                // (the next host may be up).
                if matches!(e, ServerError::Login { .. } | ServerError::Auth(_)) {
                    *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some((
                        Instant::now() + settings.login_retry,
                        code.clone(),
                        msg.clone(),
                    ));
                }
                Err(AcquireError::Server(code, msg))
            }
        }
    }

    async fn connect_any(&self, settings: &PoolSettings) -> Result<Server, ServerError> {
        let credential = self
            .credential
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let n = settings.targets.len();
        let ha = if settings.tsa == TargetSessionAttrs::ReadWrite && !settings.ha_api.is_empty() {
            crate::health::ha_primary(&settings.ha_api, &settings.targets).await
        } else {
            None
        };
        let order =
            routing::host_order(settings.tsa, n, self.last_host.load(Ordering::Relaxed), ha);
        let mut last_err = None;
        let mut fallback: Option<(usize, Server)> = None;
        for i in order {
            let mut t = settings.targets[i].clone();
            t.credential = credential.clone();
            let mut s = match Server::connect(&t).await {
                Ok(s) => s,
                Err(e) => {
                    last_err = Some(e);
                    continue;
                }
            };
            let verdict = match settings.tsa {
                TargetSessionAttrs::Any => Verdict::Take,
                tsa => match s.ask_recovery().await {
                    Ok(rec) => routing::verdict(tsa, rec),
                    Err(e) => {
                        last_err = Some(e);
                        Verdict::Skip
                    }
                },
            };
            match verdict {
                Verdict::Take => {
                    self.last_host.store(i, Ordering::Relaxed);
                    if let Some((_, f)) = fallback {
                        tokio::spawn(f.close());
                    }
                    return Ok(s);
                }
                Verdict::Fallback if fallback.is_none() => fallback = Some((i, s)),
                _ => {
                    tokio::spawn(s.close());
                }
            }
        }
        if let Some((i, s)) = fallback {
            self.last_host.store(i, Ordering::Relaxed);
            return Ok(s);
        }
        Err(last_err.unwrap_or_else(|| {
            ServerError::Io(format!(
                "no host of {} is {}",
                settings
                    .targets
                    .iter()
                    .map(|t| t.addr())
                    .collect::<Vec<_>>()
                    .join(","),
                settings.tsa.as_str()
            ))
        }))
    }

    /// Gives a server connection back: to the idle stack, or closed when broken, of an
    /// older generation, past its lifetime, or not idle in a transaction-less state.
    pub fn release(&self, lease: Lease) {
        let Lease { mut server, permit } = lease;
        self.sv_active.fetch_sub(1, Ordering::Relaxed);
        let settings = self.settings();
        let expired = settings
            .lifetime
            .is_some_and(|l| server.created.elapsed() >= l);
        if server.broken || server.txn_status != b'I' || expired || !self.current(&server) {
            tokio::spawn(server.close());
        } else {
            server.last_used = Instant::now();
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(server);
        }
        drop(permit);
    }

    /// Closes idle connections past server_idle_timeout (above min_pool_size) or their
    /// lifetime; returns how many connections to open to reach min_pool_size.
    pub fn sweep(&self) -> usize {
        let settings = self.settings();
        let mut closing = Vec::new();
        {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            // The bottom of the LIFO stack is the longest idle.
            let seen: Vec<routing::Idle> = idle
                .iter()
                .map(|s| routing::Idle {
                    age: s.created.elapsed(),
                    idle: s.last_used.elapsed(),
                    current: self.current(s),
                })
                .collect();
            let plan = routing::sweep(
                &seen,
                self.sv_active.load(Ordering::Relaxed),
                settings.min_size as usize,
                settings.lifetime,
                settings.idle_timeout,
            );
            let mut kept = Vec::with_capacity(idle.len());
            for (s, close) in idle.drain(..).zip(plan) {
                if close {
                    closing.push(s);
                } else {
                    kept.push(s);
                }
            }
            *idle = kept;
        }
        for s in closing {
            tokio::spawn(s.close());
        }
        let total = self.sv_idle() + self.sv_active.load(Ordering::Relaxed);
        (settings.min_size as usize).saturating_sub(total)
    }

    /// Opens one idle connection (for min_pool_size), if a permit is free.
    pub async fn prefill(&self) {
        let Ok(permit) = self.sem.clone().try_acquire_owned() else {
            return;
        };
        let settings = self.settings();
        if let Ok(s) = self.connect(&settings, Some(Duration::ZERO)).await {
            self.sv_active.fetch_add(1, Ordering::Relaxed);
            self.release(Lease {
                server: Box::new(s),
                permit,
            });
        }
    }

    /// Closes the longest-idle connection, if any (to make room under a shared limit).
    pub fn close_one_idle(&self) -> bool {
        let s = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.is_empty() {
                return false;
            }
            idle.remove(0)
        };
        tokio::spawn(s.close());
        true
    }

    /// Closes every idle connection (shutdown, KILL).
    pub fn close_idle(&self) {
        let idle: Vec<Box<Server>> =
            std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        for s in idle {
            tokio::spawn(s.close());
        }
    }

    /// `db/user` for logs.
    pub fn name(&self) -> String {
        format!("{}/{}", self.db, self.user)
    }
}

/// What a client is told when the pooler cannot reach its server: the server's own
/// refusal is passed on; connection details (addresses) stay in the pooler's log.
pub fn client_text(e: &ServerError) -> String {
    match e {
        ServerError::Login { message, .. } => message.clone(),
        ServerError::Auth(m) => format!("pooler cannot log in to the server: {m}"),
        ServerError::Connect { .. } | ServerError::Timeout { .. } | ServerError::Io(_) => {
            "pooler cannot connect to the server".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(size: u32, reserve: u32) -> PoolSettings {
        PoolSettings {
            mode: PoolMode::Transaction,
            size,
            min_size: 0,
            reserve_size: reserve,
            reserve_timeout: Some(Duration::from_secs(5)),
            targets: Vec::new(),
            tsa: TargetSessionAttrs::Any,
            ha_api: Vec::new(),
            lifetime: None,
            idle_timeout: None,
            check_delay: None,
            check_query: String::new(),
            connect_query: None,
            login_retry: Duration::ZERO,
            max_prepared: 0,
            db_limit: None,
            user_limit: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn query_wait_timeout_ends_the_wait_with_its_own_error() {
        let pool = Pool::new("db", "u", settings(1, 0));
        let _held = pool.sem.clone().try_acquire_owned().unwrap();
        let started = tokio::time::Instant::now();
        let e = pool
            .permit(Some(Duration::from_secs(2)))
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert!(e.unwrap().contains("query_wait_timeout"));
        assert_eq!(pool.cl_waiting.load(Ordering::Relaxed), 0);
        assert_eq!(pool.oldest_wait_us.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_reserve_pool_opens_after_reserve_pool_timeout() {
        let pool = Pool::new("db", "u", settings(1, 1));
        let _held = pool.sem.clone().try_acquire_owned().unwrap();
        let started = tokio::time::Instant::now();
        let p = pool.permit(Some(Duration::from_secs(60))).await;
        assert!(p.is_ok());
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_permit_goes_to_the_first_waiter() {
        let pool = Arc::new(Pool::new("db", "u", settings(1, 0)));
        let held = pool.sem.clone().try_acquire_owned().unwrap();
        let first = tokio::spawn({
            let pool = pool.clone();
            async move { pool.permit(None).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.permit(Some(Duration::from_secs(1)))
                    .await
                    .map(|_| "second")
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(pool.cl_waiting.load(Ordering::Relaxed), 2);
        drop(held);
        let _kept = first
            .await
            .unwrap()
            .expect("the first waiter gets the permit");
        assert!(
            second.await.unwrap().is_err(),
            "FIFO: the second waiter times out"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reload_grows_and_shrinks_the_pool() {
        let pool = Pool::new("db", "u", settings(2, 0));
        pool.update(settings(4, 0));
        assert_eq!(pool.sem.available_permits(), 4);
        pool.update(settings(1, 0));
        assert_eq!(pool.sem.available_permits(), 1);
    }
}
