//! The connection pooler (`pgwarden pool`): a drop-in for PgBouncer's configuration, auth
//! file, console and clients, multi-threaded on tokio.
//!
//! - [`config`]: the settings as serde data (`pool.toml`); [`ini`]: a `pgbouncer.ini` read
//!   into the same settings; [`userlist`]: the auth file; [`hba`]: `auth_hba_file` rules.
//! - [`secret`]: stored secrets (plain, md5, SCRAM); [`auth`]: the SCRAM and MD5
//!   exchanges on both sides, pure functions.
//! - [`proto`]: framing and the client-side message decoder; [`stream`]: TCP, Unix and
//!   TLS streams; [`tls`]: rustls on both sides.
//! - [`server`]: one server connection and its login; [`pool`]: one pool per (database,
//!   user); [`routing`]: its decisions as pure functions; [`health`]: the primary from
//!   `pgwarden ha`'s REST API.
//! - [`client`]: one client connection (startup, auth, the proxy loop); [`prepared`] and
//!   [`sql`]: what transaction mode carries; [`admin`]: the console; [`stats`]: counters
//!   and latency histograms; [`metrics`]: the Prometheus endpoint.
//! - [`ctx`]: what every connection shares; this file: loading, the listeners, signals.

pub mod admin;
pub mod auth;
pub mod client;
pub mod config;
pub mod ctx;
pub mod hba;
pub mod health;
pub mod ini;
pub mod metrics;
pub mod pool;
pub mod prepared;
pub mod proto;
pub mod routing;
pub mod secret;
pub mod server;
pub mod sql;
pub mod stats;
pub mod stream;
pub mod tls;
pub mod userlist;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};

pub use config::Config;
pub use ctx::{Ctx, Runtime, Stopping};

/// Where the configuration comes from (re-read on RELOAD / SIGHUP).
#[derive(Debug, Clone)]
pub enum Source {
    /// A pgbouncer.ini.
    Ini(PathBuf),
    /// A native pool.toml.
    Toml(PathBuf),
}

/// Command-line settings that win over the file (kept across reloads).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen host:port`.
    pub listen: Option<(String, u16)>,
    /// `--metrics host:port`.
    pub metrics: Option<String>,
    /// `--workers N` (0: the config's `workers`, else half the cores, at least one).
    pub workers: usize,
}

/// Why the pooler cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The configuration or a file it names.
    #[error("{0}")]
    Config(String),
    /// A listening socket.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// Loads a configuration and every file it names.
pub fn load(source: &Source, over: &Overrides) -> Result<Runtime, String> {
    let (mut config, unsupported) = match source {
        Source::Ini(p) => {
            let l = ini::load(p).map_err(|e| e.to_string())?;
            (l.config, l.unsupported)
        }
        Source::Toml(p) => (Config::load(p).map_err(|e| e.to_string())?, Vec::new()),
    };
    if let Some((host, port)) = &over.listen {
        config.pool.listen_addr = host.clone();
        config.pool.listen_port = *port;
    }
    if let Some(m) = &over.metrics {
        config.pool.metrics_addr = m.clone();
    }
    config.validate().map_err(|e| e.to_string())?;
    let users = match &config.pool.auth_file {
        Some(p) => userlist::load(p).map_err(|e| e.to_string())?,
        None => Default::default(),
    };
    let hba = match &config.pool.auth_hba_file {
        Some(p) => Some(hba::Hba::load(p).map_err(|e| e.to_string())?),
        None => None,
    };
    let tls = tls::acceptor(&config.pool)?;
    let server_tls = tls::server_client_config(&config.pool)?;
    Ok(Runtime {
        config,
        users,
        hba,
        tls,
        server_tls,
        unsupported,
    })
}

/// RELOAD: reads the configuration again and applies it; on error the old one stays.
/// Settings marked "no reload" keep their old values until a restart.
pub fn reload(ctx: &Arc<Ctx>) -> Result<(), String> {
    let (source, over) = ctx.source.clone();
    let mut rt = load(&source, &over)?;
    let old = ctx.runtime();
    // No-reload settings keep their running values.
    let keep = &old.config.pool;
    let s = &mut rt.config.pool;
    s.listen_addr = keep.listen_addr.clone();
    s.listen_port = keep.listen_port;
    s.unix_socket_dir = keep.unix_socket_dir.clone();
    s.metrics_addr = keep.metrics_addr.clone();
    s.workers = keep.workers;
    ctx.replace(rt);
    tracing::info!("configuration reloaded");
    Ok(())
}

/// The worker threads: one single-threaded tokio runtime each, accepting from the same
/// listening sockets and running each client's session wholly on its thread. A
/// work-stealing runtime moves tasks between threads and wakes threads for one another
/// on every message; on shared cores that cost more than the proxying itself
/// (measured: 11.6k against 23.5k pgbench -S transactions per second on 2 cores). Pools
/// stay shared; a server connection is re-registered with the thread that borrows it
/// (see [`stream::Stream::rehome`]).
struct Workers {
    stop: tokio::sync::watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// `tcp` holds, per address, one socket for each of the `n` workers.
    fn start(
        n: usize,
        ctx: &Arc<Ctx>,
        tcp: Vec<Vec<std::net::TcpListener>>,
        unix: Option<&std::os::unix::net::UnixListener>,
    ) -> Result<Workers, PoolError> {
        let mut per_worker: Vec<Vec<std::net::TcpListener>> = (0..n).map(|_| Vec::new()).collect();
        for sockets in tcp {
            for (i, l) in sockets.into_iter().enumerate() {
                per_worker[i % n].push(l);
            }
        }
        let (stop, _) = tokio::sync::watch::channel(false);
        let mut threads = Vec::new();
        let clone_err = |source| PoolError::Listen {
            addr: "a listening socket".into(),
            source,
        };
        for (i, tcp) in per_worker.into_iter().enumerate() {
            let unix = unix.map(|l| l.try_clone()).transpose().map_err(clone_err)?;
            let ctx = ctx.clone();
            let mut stop_rx = stop.subscribe();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| PoolError::Config(format!("start a worker runtime: {e}")))?;
            let t = std::thread::Builder::new()
                .name(format!("pgwarden-pool-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let mut accepts = tokio::task::JoinSet::new();
                        for l in tcp {
                            match TcpListener::from_std(l) {
                                Ok(l) => {
                                    accepts.spawn(accept_tcp(l, ctx.clone()));
                                }
                                Err(e) => tracing::error!(error = %e, "register a listener"),
                            }
                        }
                        if let Some(l) = unix {
                            match UnixListener::from_std(l) {
                                Ok(l) => {
                                    accepts.spawn(accept_unix(l, ctx.clone()));
                                }
                                Err(e) => tracing::error!(error = %e, "register a listener"),
                            }
                        }
                        while !*stop_rx.borrow() {
                            if stop_rx.changed().await.is_err() {
                                break;
                            }
                        }
                    });
                    // Dropping the runtime drops what is left on this thread.
                    drop(runtime);
                })
                .map_err(|e| PoolError::Config(format!("start a worker thread: {e}")))?;
            threads.push(t);
        }
        Ok(Workers { stop, threads })
    }

    /// Stops every worker (their sessions end with their runtimes).
    fn stop(mut self) {
        let _ = self.stop.send_replace(true);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Dropped without stop() (the pooler's future was cancelled): the threads end on
        // their own, not joined here, which could block an async caller.
        let _ = self.stop.send_replace(true);
    }
}

/// Sets TCP_DEFER_ACCEPT on a listening socket (the seconds the kernel waits for a
/// connection's first bytes before handing it over anyway; PgBouncer uses 45).
///
/// By hand because no well-kept crate wraps this option (socket2, nix and rustix have
/// TCP_NODELAY, keepalives and the rest, not this one); the one `unsafe` of the workspace.
#[allow(unsafe_code)]
fn set_defer_accept(sock: &socket2::Socket, secs: libc::c_int) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is a live socket owned by `sock` for the whole call, and the value
    // pointer and length describe a c_int that outlives it.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::from_ref(&secs).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One listening socket per worker on `addr`, with SO_REUSEPORT so that the kernel spreads
/// new connections over the workers (one shared socket would wake every worker for each
/// connection, and all but one would find nothing to accept). Built with socket2: std's
/// TcpListener::bind cannot set SO_REUSEPORT before bind. Port 0 picks a port for the first
/// socket and binds the others to it.
fn bind_tcp(
    addr: &str,
    n: usize,
    defer_accept: bool,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Socket, Type};
    use std::net::ToSocketAddrs;
    let mut last = None;
    for mut a in addr.to_socket_addrs()? {
        let mut out = Vec::with_capacity(n);
        let r = (|| {
            if n > 1 {
                // SO_REUSEPORT would also let this pooler share a port with another
                // process of the same user: a plain bind first finds a port in use.
                let probe = Socket::new(Domain::for_address(a), Type::STREAM, None)?;
                probe.set_reuse_address(true)?;
                probe.bind(&a.into())?;
                if a.port() == 0 {
                    a = probe.local_addr()?.as_socket().unwrap_or(a);
                }
                drop(probe);
            }
            for _ in 0..n {
                let sock = Socket::new(Domain::for_address(a), Type::STREAM, None)?;
                sock.set_reuse_address(true)?;
                if n > 1 {
                    sock.set_reuse_port(true)?;
                }
                sock.set_nonblocking(true)?;
                sock.bind(&a.into())?;
                sock.listen(1024)?;
                if defer_accept {
                    set_defer_accept(&sock, 45)?;
                }
                let l: std::net::TcpListener = sock.into();
                a = l.local_addr()?;
                out.push(l);
            }
            Ok(())
        })();
        match r {
            Ok(()) => return Ok(out),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")
    }))
}

async fn accept_tcp(l: TcpListener, ctx: Arc<Ctx>) {
    loop {
        match l.accept().await {
            Ok((sock, addr)) => {
                let _ = sock.set_nodelay(true);
                tokio::spawn(client::serve(
                    stream::Stream::Tcp(sock),
                    client::Peer { addr: Some(addr) },
                    ctx.clone(),
                ));
            }
            Err(e) => {
                // Out of file descriptors and similar: wait rather than spin.
                tracing::warn!(error = %e, "accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn accept_unix(l: UnixListener, ctx: Arc<Ctx>) {
    loop {
        match l.accept().await {
            Ok((sock, _)) => {
                tokio::spawn(client::serve(
                    stream::Stream::Unix(sock),
                    client::Peer { addr: None },
                    ctx.clone(),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Where the pooler listens once started.
#[derive(Debug, Clone)]
pub struct Bound {
    /// TCP addresses.
    pub tcp: Vec<SocketAddr>,
    /// The Unix socket path, if any.
    pub unix: Option<PathBuf>,
    /// The metrics endpoint, if any.
    pub metrics: Option<SocketAddr>,
}

/// Runs the pooler until SHUTDOWN or a signal ends it. `bound` hears where it listens.
pub async fn run(
    source: Source,
    over: Overrides,
    bound: Option<tokio::sync::oneshot::Sender<Bound>>,
) -> Result<(), PoolError> {
    let rt = load(&source, &over).map_err(PoolError::Config)?;
    for line in &rt.unsupported {
        tracing::warn!("{line}");
    }
    let s = rt.config.pool.clone();
    let workers = over.workers;
    let ctx = Arc::new(Ctx::new(rt, (source, over)));
    serve(ctx, &s, workers, bound).await
}

async fn serve(
    ctx: Arc<Ctx>,
    s: &config::Settings,
    over_workers: usize,
    bound: Option<tokio::sync::oneshot::Sender<Bound>>,
) -> Result<(), PoolError> {
    let workers = match (over_workers, s.workers) {
        (0, 0) => std::thread::available_parallelism().map_or(1, |n| n.get() / 2),
        (0, w) => w,
        (w, _) => w,
    }
    .max(1);
    // Per address, one listening socket per worker.
    let mut tcp: Vec<Vec<std::net::TcpListener>> = Vec::new();
    for host in s
        .listen_addr
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
    {
        let host = if host == "*" { "0.0.0.0" } else { host };
        let addr = format!("{host}:{}", s.listen_port);
        let listen_err = |source| PoolError::Listen {
            addr: addr.clone(),
            source,
        };
        tcp.push(bind_tcp(&addr, workers, s.tcp_defer_accept).map_err(listen_err)?);
    }
    let mut unix = None;
    if !s.unix_socket_dir.is_empty() {
        let path = PathBuf::from(&s.unix_socket_dir).join(format!(".s.PGSQL.{}", s.listen_port));
        // A socket file left by a dead pooler is removed; a live one refuses the bind.
        if path.exists() && std::os::unix::net::UnixStream::connect(&path).is_err() {
            let _ = std::fs::remove_file(&path);
        }
        let listen_err = |source| PoolError::Listen {
            addr: path.display().to_string(),
            source,
        };
        let l = std::os::unix::net::UnixListener::bind(&path).map_err(listen_err)?;
        l.set_nonblocking(true).map_err(listen_err)?;
        unix = Some((l, path));
    }
    if tcp.is_empty() && unix.is_none() {
        return Err(PoolError::Config(
            "nothing to listen on: listen_addr and unix_socket_dir are both empty".into(),
        ));
    }
    let metrics = if s.metrics_addr.is_empty() {
        None
    } else {
        let l = TcpListener::bind(&s.metrics_addr)
            .await
            .map_err(|source| PoolError::Listen {
                addr: s.metrics_addr.clone(),
                source,
            })?;
        Some(l)
    };
    let info = Bound {
        tcp: tcp
            .iter()
            .filter_map(|l| l.first().and_then(|l| l.local_addr().ok()))
            .collect(),
        unix: unix.as_ref().map(|(_, p)| p.clone()),
        metrics: metrics.as_ref().and_then(|l| l.local_addr().ok()),
    };
    let unix_path = unix.as_ref().map(|(_, p)| p.clone());
    let pool_workers = Workers::start(workers, &ctx, tcp, unix.as_ref().map(|(l, _)| l))?;
    tracing::info!(tcp = ?info.tcp, unix = ?info.unix, metrics = ?info.metrics, workers, "pgwarden pool listening");
    if let Some(tx) = bound {
        let _ = tx.send(info.clone());
    }
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(l) = metrics {
        let ctx = ctx.clone();
        tasks.spawn(async move { metrics::serve(l, ctx).await });
    }
    {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let pools = ctx.pools();
                // A pool waiting on a shared limit gets room: another pool of the same
                // database or user gives up its longest-idle connection.
                for p in pools
                    .iter()
                    .filter(|p| p.limit_waiting.load(Ordering::Relaxed) > 0)
                {
                    let st = p.settings();
                    for sem in [&st.db_limit, &st.user_limit].into_iter().flatten() {
                        if sem.available_permits() > 0 {
                            continue;
                        }
                        for other in pools.iter().filter(|o| !Arc::ptr_eq(o, p)) {
                            let os = other.settings();
                            let shares = [&os.db_limit, &os.user_limit]
                                .into_iter()
                                .flatten()
                                .any(|x| Arc::ptr_eq(x, sem));
                            if shares && other.close_one_idle() {
                                break;
                            }
                        }
                    }
                }
                for p in pools {
                    let missing = p.sweep();
                    for _ in 0..missing {
                        let p = p.clone();
                        tokio::spawn(async move { p.prefill().await });
                    }
                }
            }
        });
    }
    let r = wait_for_stop(&ctx).await;
    tasks.abort_all();
    ctx.kill_clients(|_| true);
    for p in ctx.pools() {
        p.close_idle();
    }
    // Sessions see the kill and give their servers back; idle ones close.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while ctx.client_count.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for p in ctx.pools() {
        p.close_idle();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    pool_workers.stop();
    if let Some(path) = unix_path {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("pgwarden pool stopped");
    r
}

async fn wait_for_stop(ctx: &Arc<Ctx>) -> Result<(), PoolError> {
    use tokio::signal::unix::{signal, SignalKind};
    let sig = |k| signal(k).map_err(|e| PoolError::Config(format!("signal handler: {e}")));
    let mut hup = sig(SignalKind::hangup())?;
    let mut int = sig(SignalKind::interrupt())?;
    let mut term = sig(SignalKind::terminate())?;
    let mut stopping = ctx.stopping.subscribe();
    loop {
        let now = *stopping.borrow();
        let done = match now {
            Stopping::No => false,
            Stopping::Now => true,
            Stopping::WaitForServers => ctx.servers_in_use() == 0,
            Stopping::Drain => ctx.client_count.load(Ordering::SeqCst) == 0,
        };
        if done {
            return Ok(());
        }
        let escalate = |ctx: &Ctx, how: Stopping| {
            let cur = *ctx.stopping.borrow();
            let next = if cur == Stopping::No {
                how
            } else {
                Stopping::Now
            };
            tracing::info!(?next, "stopping");
            ctx.set_stopping(next);
        };
        tokio::select! {
            _ = hup.recv() => {
                if let Err(e) = reload(ctx) {
                    tracing::error!("reload failed, the old configuration stays: {e}");
                }
            }
            _ = int.recv() => escalate(ctx, Stopping::WaitForServers),
            _ = term.recv() => escalate(ctx, Stopping::Drain),
            _ = stopping.changed() => {}
            // Only while stopping: whether the servers or clients are done is looked at
            // every 50 ms (a running pooler is not woken for it).
            _ = tokio::time::sleep(Duration::from_millis(50)), if now != Stopping::No => {}
        }
    }
}

impl pgw_common::Classify for PoolError {
    fn class(&self) -> pgw_common::ErrorClass {
        match self {
            PoolError::Config(_) => pgw_common::ErrorClass::Input,
            PoolError::Listen { .. } => pgw_common::ErrorClass::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bind_tcp;

    #[test]
    fn one_listener_per_worker_on_one_port_and_a_taken_port_is_refused() {
        let ls = bind_tcp("127.0.0.1:0", 3, true).expect("bind");
        assert_eq!(ls.len(), 3);
        let port = ls[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(ls.iter().all(|l| l.local_addr().unwrap().port() == port));
        // SO_REUSEPORT must not let a second pooler (same user) share the port.
        let again = bind_tcp(&format!("127.0.0.1:{port}"), 2, true);
        assert!(
            again.is_err(),
            "a second set of listeners bound a taken port"
        );
        let single = bind_tcp(&format!("127.0.0.1:{port}"), 1, false);
        assert!(single.is_err(), "a single listener bound a taken port");
    }

    /// The first connection accepted from a listener, waiting up to 10 s.
    fn first_accepted(l: &std::net::TcpListener) -> std::net::SocketAddr {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match l.accept() {
                Ok((_, peer)) => return peer,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < end, "nothing accepted in 10 s");
                    std::thread::yield_now();
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    #[test]
    fn defer_accept_hands_over_a_connection_once_it_has_sent_something() {
        use std::io::Write;
        for defer in [true, false] {
            let ls = bind_tcp("127.0.0.1:0", 1, defer).expect("bind");
            let addr = ls[0].local_addr().unwrap();
            let silent = std::net::TcpStream::connect(addr).unwrap();
            let mut talking = std::net::TcpStream::connect(addr).unwrap();
            talking.write_all(b"\0\0\0\x08").unwrap();
            let first = first_accepted(&ls[0]);
            let expect = if defer { &talking } else { &silent };
            assert_eq!(
                first,
                expect.local_addr().unwrap(),
                "tcp_defer_accept = {defer}: the wrong connection came first"
            );
        }
    }
}
