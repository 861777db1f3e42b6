//! [`Proxy`]: an in-process TCP proxy on a free loopback port that forwards to a target
//! address and that a test can [`cut`](Proxy::cut) (close every connection, refuse new
//! ones), [`blackhole`](Proxy::blackhole) (a network partition: connections are accepted and
//! held, nothing is forwarded) and [`restore`](Proxy::restore).
//!
//! Plain std threads (one accept thread, two per connection), so it works the same from sync
//! and async tests. Written by hand: what it needs is the fault switches, which no proxy crate
//! offers, and the forwarding itself is a few lines of `read`/`write_all`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use pgw_cluster::ports;

use crate::TestkitError;

/// How long the proxy waits to connect to the target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    Cut,
    Blackhole,
}

/// Counts of what the proxy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProxyStats {
    /// Connections accepted since the start (refused ones included).
    pub accepted: u64,
    /// Connections closed at once because the proxy was cut.
    pub refused: u64,
    /// Connections open now (forwarding, or held by a blackhole).
    pub active: usize,
}

#[derive(Debug)]
struct State {
    mode: Mode,
    stopping: bool,
    next_id: u64,
    /// Forwarded connections: client side and target side.
    conns: HashMap<u64, (TcpStream, TcpStream)>,
    /// Connections accepted while blackholed, not yet connected to the target.
    held: Vec<TcpStream>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    target: SocketAddr,
    accepted: AtomicU64,
    refused: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running proxy; stopped (every connection closed) on drop.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards each connection to `target`.
    pub fn start(target: SocketAddr) -> Result<Proxy, TestkitError> {
        let listener = ports::bind()?;
        let addr = listener.local_addr().map_err(|source| TestkitError::Net {
            action: "read the address of",
            addr: target,
            source,
        })?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode: Mode::Forward,
                stopping: false,
                next_id: 0,
                conns: HashMap::new(),
                held: Vec::new(),
            }),
            changed: Condvar::new(),
            target,
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name(format!("pgw-proxy-{}", addr.port()))
            .spawn(move || accept_loop(&listener, &accept_shared))
            .map_err(|source| TestkitError::Net {
                action: "start the accept thread for",
                addr,
                source,
            })?;
        tracing::debug!(%addr, %target, "proxy started");
        Ok(Proxy {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// A proxy to `127.0.0.1:port` (a cluster's, PgBouncer's, etcd's).
    pub fn to_port(port: u16) -> Result<Proxy, TestkitError> {
        Proxy::start(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Where clients connect: `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where it forwards to.
    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// Closes every current connection and closes new ones at once, until
    /// [`restore`](Proxy::restore).
    pub fn cut(&self) {
        tracing::debug!(addr = %self.addr, "proxy cut");
        let mut state = self.shared.lock();
        state.mode = Mode::Cut;
        close_all(&mut state);
        self.shared.changed.notify_all();
    }

    /// A partition: connections stay open but nothing is forwarded either way; new ones are
    /// accepted and held. [`restore`](Proxy::restore) delivers what was held back.
    pub fn blackhole(&self) {
        tracing::debug!(addr = %self.addr, "proxy blackholed");
        self.shared.lock().mode = Mode::Blackhole;
        self.shared.changed.notify_all();
    }

    /// Forwards again; connections held by a blackhole are connected to the target now.
    pub fn restore(&self) {
        tracing::debug!(addr = %self.addr, "proxy restored");
        let held = {
            let mut state = self.shared.lock();
            state.mode = Mode::Forward;
            std::mem::take(&mut state.held)
        };
        self.shared.changed.notify_all();
        for client in held {
            forward(&self.shared, client);
        }
    }

    /// What it did so far.
    pub fn stats(&self) -> ProxyStats {
        let state = self.shared.lock();
        ProxyStats {
            accepted: self.shared.accepted.load(Ordering::Relaxed),
            refused: self.shared.refused.load(Ordering::Relaxed),
            active: state.conns.len() + state.held.len(),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.stopping = true;
            close_all(&mut state);
        }
        self.shared.changed.notify_all();
        // Wake the accept thread, blocked in accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        ports::release(self.addr.port());
        tracing::debug!(addr = %self.addr, "proxy stopped");
    }
}

fn close_all(state: &mut State) {
    for (_, (client, server)) in state.conns.drain() {
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
    }
    for client in state.held.drain(..) {
        let _ = client.shutdown(Shutdown::Both);
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let mode = {
            let state = shared.lock();
            if state.stopping {
                return;
            }
            state.mode
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        match mode {
            Mode::Cut => {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                let _ = client.shutdown(Shutdown::Both);
            }
            Mode::Blackhole => shared.lock().held.push(client),
            Mode::Forward => forward(shared, client),
        }
    }
}

/// Connects `client` to the target and starts its two pumps.
fn forward(shared: &Arc<Shared>, client: TcpStream) {
    let server = match TcpStream::connect_timeout(&shared.target, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(target = %shared.target, error = %e, "proxy could not reach its target");
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let id = {
        let mut state = shared.lock();
        if state.stopping || state.mode == Mode::Cut {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        let id = state.next_id;
        state.next_id += 1;
        state.conns.insert(id, (client, server));
        id
    };
    for (from, to) in [(c2, s2), (s3, c3)] {
        let pump_shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("pgw-proxy-pump".to_owned())
            .spawn(move || pump(from, to, id, &pump_shared));
        if spawned.is_err() {
            end(shared, id);
        }
    }
}

/// Copies `from` to `to` until either side closes or the proxy cuts the connection; while
/// blackholed, holds what it read.
fn pump(mut from: TcpStream, mut to: TcpStream, id: u64, shared: &Shared) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        {
            let mut state = shared.lock();
            while state.mode == Mode::Blackhole && !state.stopping && state.conns.contains_key(&id)
            {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
            if state.stopping || !state.conns.contains_key(&id) {
                break;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    end(shared, id);
}

/// Closes connection `id` both ways and forgets it.
fn end(shared: &Shared, id: u64) {
    if let Some((client, server)) = shared.lock().conns.remove(&id) {
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
    }
}
