//! What every connection of one pooler shares: the loaded configuration (swapped whole on
//! RELOAD), the pools, the prepared-statement registry, the client registry (for SHOW
//! CLIENTS, KILL and cancel keys) and the pause / shutdown state.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::config::{secs, Config, PoolMode};
use crate::hba::Hba;
use crate::pool::{Pool, PoolSettings};
use crate::prepared::Registry;
use crate::secret::Secret;
use crate::server::{Credential, Target};

/// The configuration with everything read from its files.
pub struct Runtime {
    /// The settings.
    pub config: Config,
    /// The auth file's users.
    pub users: BTreeMap<String, Secret>,
    /// auth_hba_file's rules.
    pub hba: Option<Hba>,
    /// Client TLS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Server TLS.
    pub server_tls: Option<Arc<rustls::ClientConfig>>,
    /// The settings the pooler does not support, one line each (SHOW CONFIG notes them).
    pub unsupported: Vec<String>,
}

/// A connected client, as SHOW CLIENTS and cancel requests see it.
pub struct ClientInfo {
    pub id: u64,
    pub user: String,
    pub db: String,
    /// The client's address (None for a Unix socket).
    pub addr: Option<std::net::IpAddr>,
    pub port: u16,
    pub tls: bool,
    pub connect_time_us: i64,
    pub application_name: Mutex<String>,
    /// The cancel key given to the client.
    pub pid: i32,
    pub key: i32,
    /// Waiting for a server (SHOW CLIENTS' state `waiting`), else `active` (PgBouncer says
    /// active for idle clients too).
    waiting: std::sync::atomic::AtomicBool,
    /// The server running this client's request, for its cancel request.
    pub cancel_target: Mutex<Option<(Arc<Target>, i32, i32)>>,
    /// The server connection's id, if linked (SHOW CLIENTS' `link`).
    pub link: AtomicU64,
    /// Set by KILL or shutdown; `kill` wakes the session.
    pub killed: AtomicBool,
    pub kill: Notify,
    /// When the current request started (µs since the epoch), 0 when idle.
    pub request_us: std::sync::atomic::AtomicI64,
}

impl ClientInfo {
    /// SHOW CLIENTS' state.
    pub fn state(&self) -> &'static str {
        if self.waiting.load(Ordering::Relaxed) {
            "waiting"
        } else {
            "active"
        }
    }

    /// Marks the client waiting for a server (true) or not.
    pub fn set_waiting(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::Relaxed);
    }

    /// SHOW CLIENTS' addr: the IP address, or `unix`.
    pub fn addr_text(&self) -> String {
        self.addr
            .map_or_else(|| "unix".to_owned(), |a| a.to_string())
    }
}

/// Pause state (PAUSE / SUSPEND / RESUME).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    Running,
    Paused,
}

/// How the pooler is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopping {
    /// Not stopping.
    No,
    /// SIGINT / SHUTDOWN WAIT_FOR_SERVERS: no new clients; stop once no server is in use.
    WaitForServers,
    /// SIGTERM / SHUTDOWN WAIT_FOR_CLIENTS: clients are let go at transaction boundaries.
    Drain,
    /// SHUTDOWN / a second signal: now.
    Now,
}

/// A shared limit: its size and its semaphore.
type Limit = (u32, Arc<tokio::sync::Semaphore>);

/// The shared state.
pub struct Ctx {
    /// Swapped whole by RELOAD; read without a lock (sessions read it on every transaction).
    runtime: arc_swap::ArcSwap<Runtime>,
    pools: RwLock<HashMap<(String, String), Arc<Pool>>>,
    /// Protocol-level prepared statements.
    pub registry: Registry,
    clients: Mutex<HashMap<u64, Arc<ClientInfo>>>,
    cancel: Mutex<HashMap<(i32, i32), Arc<ClientInfo>>>,
    next_client: AtomicU64,
    next_pid: AtomicI32,
    /// Connected clients.
    pub client_count: AtomicUsize,
    /// PAUSE / RESUME.
    pub pause: watch::Sender<Pause>,
    /// Shutdown.
    pub stopping: watch::Sender<Stopping>,
    /// When the pooler started.
    pub started: Instant,
    /// How many SIGHUP/RELOADs were applied.
    pub reloads: AtomicU64,
    /// Where RELOAD reads the configuration again.
    pub source: (crate::Source, crate::Overrides),
    /// max_db_connections / max_user_connections: one semaphore per database or user
    /// (with its size), shared by every pool of it.
    limits: Mutex<HashMap<(bool, String), Limit>>,
}

impl Ctx {
    /// A new context for a loaded configuration.
    pub fn new(runtime: Runtime, source: (crate::Source, crate::Overrides)) -> Ctx {
        Ctx {
            runtime: arc_swap::ArcSwap::from_pointee(runtime),
            pools: RwLock::new(HashMap::new()),
            registry: Registry::default(),
            clients: Mutex::new(HashMap::new()),
            cancel: Mutex::new(HashMap::new()),
            next_client: AtomicU64::new(1),
            next_pid: AtomicI32::new(1),
            client_count: AtomicUsize::new(0),
            pause: watch::channel(Pause::Running).0,
            stopping: watch::channel(Stopping::No).0,
            started: Instant::now(),
            reloads: AtomicU64::new(0),
            source,
            limits: Mutex::new(HashMap::new()),
        }
    }

    /// The current configuration.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// The current configuration, for a short look that does not await: no reference
    /// count is touched (the hot path's form of [`Ctx::runtime`]).
    pub fn runtime_now(&self) -> arc_swap::Guard<Arc<Runtime>> {
        self.runtime.load()
    }

    /// Moves to a stopping state and wakes every client, so that idle ones notice at once
    /// (a session waits on its own `kill` wake-up only, not on a channel per client).
    pub fn set_stopping(&self, how: Stopping) {
        let _ = self.stopping.send_replace(how);
        for c in self.clients() {
            c.kill.notify_one();
        }
    }

    /// Replaces the configuration (RELOAD) and updates every pool's settings.
    pub fn replace(&self, rt: Runtime) {
        self.runtime.store(Arc::new(rt));
        let rt = self.runtime();
        let pools: Vec<Arc<Pool>> = self.pools();
        for p in pools {
            match self.pool_settings(&rt, &p.db, &p.user) {
                Some(s) => p.update(s),
                // The database is gone from the config: close what it holds.
                None => p.reconnect(),
            }
        }
        self.reloads.fetch_add(1, Ordering::Release);
    }

    /// Every pool.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        let mut v: Vec<Arc<Pool>> = self
            .pools
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| (&a.db, &a.user).cmp(&(&b.db, &b.user)));
        v
    }

    /// The pool for (database, user), made on first use; None when the config has no
    /// such database.
    pub fn pool(&self, db: &str, user: &str) -> Option<Arc<Pool>> {
        let key = (db.to_owned(), user.to_owned());
        if let Some(p) = self
            .pools
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Some(p.clone());
        }
        let rt = self.runtime();
        let settings = self.pool_settings(&rt, db, user)?;
        let mut pools = self.pools.write().unwrap_or_else(|e| e.into_inner());
        Some(
            pools
                .entry(key)
                .or_insert_with(|| Arc::new(Pool::new(db, user, settings)))
                .clone(),
        )
    }

    /// Registers a new client.
    #[allow(clippy::too_many_arguments)]
    pub fn add_client(
        &self,
        user: &str,
        db: &str,
        addr: Option<std::net::IpAddr>,
        port: u16,
        tls: bool,
        application_name: &str,
    ) -> Arc<ClientInfo> {
        let id = self.next_client.fetch_add(1, Ordering::Relaxed);
        let pid = self.next_pid.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
        let key: i32 = rand::random();
        let info = Arc::new(ClientInfo {
            id,
            user: user.to_owned(),
            db: db.to_owned(),
            addr,
            port,
            tls,
            connect_time_us: crate::stats::now_us(),
            application_name: Mutex::new(application_name.to_owned()),
            pid,
            key,
            waiting: std::sync::atomic::AtomicBool::new(false),
            cancel_target: Mutex::new(None),
            link: AtomicU64::new(0),
            killed: AtomicBool::new(false),
            kill: Notify::new(),
            request_us: std::sync::atomic::AtomicI64::new(0),
        });
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, info.clone());
        self.cancel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((pid, key), info.clone());
        info
    }

    /// Forgets a client.
    pub fn remove_client(&self, info: &ClientInfo) {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&info.id);
        self.cancel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(info.pid, info.key));
    }

    /// The client holding a cancel key.
    pub fn by_cancel_key(&self, pid: i32, key: i32) -> Option<Arc<ClientInfo>> {
        self.cancel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(pid, key))
            .cloned()
    }

    /// Every client (SHOW CLIENTS), oldest first.
    pub fn clients(&self) -> Vec<Arc<ClientInfo>> {
        let mut v: Vec<Arc<ClientInfo>> = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Disconnects the clients `filter` picks (KILL, shutdown).
    pub fn kill_clients(&self, filter: impl Fn(&ClientInfo) -> bool) -> usize {
        let mut n = 0;
        for c in self.clients() {
            if filter(&c) {
                c.killed.store(true, Ordering::SeqCst);
                c.kill.notify_one();
                n += 1;
            }
        }
        n
    }

    /// The pool settings for (database, user), with the shared limits attached.
    pub fn pool_settings(&self, rt: &Runtime, db: &str, user: &str) -> Option<PoolSettings> {
        let mut ps = pool_settings(rt, db, user)?;
        let cfg = &rt.config;
        let db_max = cfg
            .database(db)
            .and_then(|d| d.max_db_connections)
            .unwrap_or(cfg.pool.max_db_connections);
        let user_max = cfg
            .users
            .get(user)
            .and_then(|u| u.max_user_connections)
            .unwrap_or(cfg.pool.max_user_connections);
        ps.db_limit = self.limit(false, db, db_max);
        ps.user_limit = self.limit(true, user, user_max);
        Some(ps)
    }

    fn limit(&self, user: bool, name: &str, max: u32) -> Option<Arc<tokio::sync::Semaphore>> {
        if max == 0 {
            return None;
        }
        let mut m = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        let e = m
            .entry((user, name.to_owned()))
            .or_insert_with(|| (max, Arc::new(tokio::sync::Semaphore::new(max as usize))));
        if e.0 != max {
            // A new limit after RELOAD: the permits held under the old one stay with their
            // connections; the new semaphore counts from here.
            *e = (max, Arc::new(tokio::sync::Semaphore::new(max as usize)));
        }
        Some(e.1.clone())
    }

    /// Server connections in use, all pools.
    pub fn servers_in_use(&self) -> usize {
        self.pools()
            .iter()
            .map(|p| p.sv_active.load(Ordering::Relaxed))
            .sum()
    }
}

/// The parameters PgBouncer keeps in step between a client and the server connection it
/// is given.
pub const TRACKED_PARAMS: &[&str] = &[
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "standard_conforming_strings",
    "application_name",
    "IntervalStyle",
];

/// Values of [`TRACKED_PARAMS`] by position: what a client believes in, or what a server
/// connection last reported. A fixed array rather than a map: comparing a client with a
/// server is on every transaction's path. Values are shared (`Arc`): most of what a client
/// believes in is its pool's server values, held once for every client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracked([Option<Arc<str>>; 6]);

impl Tracked {
    fn index(name: &str) -> Option<usize> {
        TRACKED_PARAMS.iter().position(|t| *t == name)
    }

    /// The value of a tracked parameter (exact name as in [`TRACKED_PARAMS`]).
    pub fn get(&self, name: &str) -> Option<&str> {
        Self::index(name).and_then(|i| self.0[i].as_deref())
    }

    /// Records a value; a name that is not tracked is ignored (false).
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        match Self::index(name) {
            Some(i) => {
                if self.0[i].as_deref() != Some(value) {
                    self.0[i] = Some(value.into());
                }
                true
            }
            None => false,
        }
    }

    /// Takes `from`'s value of every parameter that has none here (sharing it).
    pub fn fill_unset(&mut self, from: &Tracked) {
        for (mine, theirs) in self.0.iter_mut().zip(&from.0) {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
    }

    /// Every (name, value) with a value.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        TRACKED_PARAMS
            .iter()
            .zip(&self.0)
            .filter_map(|(n, v)| v.as_deref().map(|v| (*n, v)))
    }

    /// The parameters whose value here differs from `have`'s (or that `have` lacks).
    pub fn differing<'a>(
        &'a self,
        have: &'a Tracked,
    ) -> impl Iterator<Item = (&'static str, &'a str)> {
        TRACKED_PARAMS
            .iter()
            .zip(self.0.iter().zip(&have.0))
            .filter_map(|(n, (want, has))| match want {
                Some(w) if has.as_deref() != Some(&**w) => Some((*n, &**w)),
                _ => None,
            })
    }
}

/// A `host` entry with its own port (`10.0.0.2:5433`, `[::1]:5433`), or the database's.
pub fn split_host_port(h: &str, default: u16) -> (String, u16) {
    if h.starts_with('/') {
        return (h.to_owned(), default);
    }
    if let Some(rest) = h.strip_prefix('[') {
        if let Some((addr, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
            return (addr.to_owned(), port.unwrap_or(default));
        }
    }
    match h.rsplit_once(':') {
        Some((host, p)) if !host.contains(':') => match p.parse() {
            Ok(port) => (host.to_owned(), port),
            Err(_) => (h.to_owned(), default),
        },
        _ => (h.to_owned(), default),
    }
}

/// The pool settings for (database, user), from the configuration.
pub fn pool_settings(rt: &Runtime, db: &str, user: &str) -> Option<PoolSettings> {
    let cfg = &rt.config;
    let s = &cfg.pool;
    let entry = cfg.database(db)?;
    let user_cfg = cfg.users.get(user);
    let mode = user_cfg
        .and_then(|u| u.pool_mode)
        .or(entry.pool_mode)
        .unwrap_or(s.pool_mode);
    let server_user = entry.user.clone().unwrap_or_else(|| user.to_owned());
    let credential = match (&entry.user, &entry.password) {
        (Some(_), Some(p)) => Credential::Password(p.clone()),
        _ => match rt.users.get(&server_user) {
            Some(Secret::Plain(p)) => Credential::Password(p.clone()),
            Some(Secret::Md5(m)) => Credential::Md5(m.clone()),
            // SCRAM secrets: the keys come from the client's login (pass-through).
            _ => Credential::None,
        },
    };
    let mut params = Vec::new();
    for (k, v) in [
        ("client_encoding", &entry.client_encoding),
        ("DateStyle", &entry.datestyle),
        ("TimeZone", &entry.timezone),
    ] {
        if let Some(v) = v {
            params.push((k.to_owned(), v.clone()));
        }
    }
    let dbname = entry.dbname.clone().unwrap_or_else(|| db.to_owned());
    let connect_timeout = secs(s.server_connect_timeout).unwrap_or(Duration::from_secs(15));
    let targets = entry
        .hosts()
        .into_iter()
        .map(|h| {
            let (host, port) = split_host_port(&h, entry.port());
            (host, port)
        })
        .map(|(host, port)| Target {
            host,
            port,
            dbname: dbname.clone(),
            user: server_user.clone(),
            credential: credential.clone(),
            params: params.clone(),
            connect_timeout,
            tls_mode: s.server_tls_sslmode,
            tls: rt.server_tls.clone(),
        })
        .collect();
    Some(PoolSettings {
        mode,
        size: entry.pool_size.unwrap_or(s.default_pool_size),
        min_size: entry.min_pool_size.unwrap_or(s.min_pool_size),
        reserve_size: entry.reserve_pool_size.unwrap_or(s.reserve_pool_size),
        reserve_timeout: secs(s.reserve_pool_timeout),
        targets,
        tsa: entry.target_session_attrs,
        ha_api: entry.ha_api.clone(),
        lifetime: secs(s.server_lifetime),
        idle_timeout: secs(s.server_idle_timeout),
        check_delay: secs(s.server_check_delay),
        check_query: s.server_check_query.clone(),
        connect_query: entry.connect_query.clone(),
        login_retry: secs(s.server_login_retry).unwrap_or(Duration::ZERO),
        db_limit: None,
        user_limit: None,
        max_prepared: if mode == PoolMode::Session {
            0
        } else {
            s.max_prepared_statements
        },
    })
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_entries_with_ports() {
        assert_eq!(split_host_port("db1", 5432), ("db1".into(), 5432));
        assert_eq!(split_host_port("db1:5433", 5432), ("db1".into(), 5433));
        assert_eq!(split_host_port("[::1]:6000", 5432), ("::1".into(), 6000));
        assert_eq!(split_host_port("::1", 5432), ("::1".into(), 5432));
        assert_eq!(split_host_port("/tmp", 5432), ("/tmp".into(), 5432));
    }
}
