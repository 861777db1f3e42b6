//! Free loopback ports, reserved process-wide so that fixtures started concurrently in one
//! process (clusters, etcd, PgBouncer, proxies) never pick the same one.
//!
//! The OS hands out a free port when we bind `127.0.0.1:0`; [`reserve`] drops the listener so
//! the server can bind it. Another process may grab it in between; the caller detects that
//! from the server's log and asks for another port. [`bind`] keeps the listener instead, for
//! in-process servers.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, MutexGuard};

use crate::ClusterError;

/// The port of system clusters, never used.
pub const SYSTEM_PORT: u16 = 5432;

/// Ports held by live fixtures of this process.
static RESERVED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

fn reserved() -> MutexGuard<'static, BTreeSet<u16>> {
    // A panic while holding the lock cannot leave the set inconsistent.
    RESERVED.lock().unwrap_or_else(|e| e.into_inner())
}

/// A free loopback port, not 5432, not held by another fixture of this process; stays
/// reserved until [`release`].
pub fn reserve() -> Result<u16, ClusterError> {
    let listener = bind()?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| ClusterError::Io {
            action: "read the address of",
            path: "127.0.0.1:0".into(),
            source,
        })
}

/// A listener on a free loopback port (not 5432, not held by another fixture of this
/// process); the port stays reserved until [`release`], also after the listener is dropped.
pub fn bind() -> Result<TcpListener, ClusterError> {
    let mut held = reserved();
    let mut last_err = None;
    for _ in 0..64 {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) {
            Ok(listener) => match listener.local_addr() {
                Ok(addr) if addr.port() != SYSTEM_PORT && held.insert(addr.port()) => {
                    tracing::debug!(port = addr.port(), "reserved port");
                    return Ok(listener);
                }
                Ok(_) => {}
                Err(e) => last_err = Some(e),
            },
            Err(e) => last_err = Some(e),
        }
    }
    Err(ClusterError::Io {
        action: "bind a free port on",
        path: "127.0.0.1:0".into(),
        source: last_err.unwrap_or_else(|| std::io::Error::other("no unreserved port found")),
    })
}

/// Gives `port` back.
pub fn release(port: u16) {
    if reserved().remove(&port) {
        tracing::debug!(port, "released port");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_are_distinct() {
        let ports: Vec<u16> = (0..20).map(|_| reserve().unwrap()).collect();
        let listener = bind().unwrap();
        let bound = listener.local_addr().unwrap().port();
        let unique: BTreeSet<u16> = ports.iter().copied().chain([bound]).collect();
        assert_eq!(unique.len(), ports.len() + 1);
        assert!(!ports.contains(&SYSTEM_PORT));
        for p in ports.into_iter().chain([bound]) {
            release(p);
        }
    }
}
