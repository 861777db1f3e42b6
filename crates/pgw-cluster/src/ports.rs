//! Free loopback ports, reserved process-wide so that clusters started concurrently in one
//! process never pick the same one.
//!
//! The OS hands out a free port when we bind `127.0.0.1:0`; we drop the listener so the server
//! can bind it. Another process may grab it in between; the caller detects that from the
//! server log and asks for another port.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, MutexGuard};

use crate::ClusterError;

/// The port of system clusters, never used.
pub(crate) const SYSTEM_PORT: u16 = 5432;

/// Ports held by live clusters of this process.
static RESERVED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

fn reserved() -> MutexGuard<'static, BTreeSet<u16>> {
    // A panic while holding the lock cannot leave the set inconsistent.
    RESERVED.lock().unwrap_or_else(|e| e.into_inner())
}

/// A free loopback port, not 5432, not held by another cluster of this process; stays reserved
/// until [`release`].
pub(crate) fn reserve() -> Result<u16, ClusterError> {
    let mut held = reserved();
    let mut last_err = None;
    for _ in 0..64 {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
            Ok(addr) => {
                let port = addr.port();
                if port != SYSTEM_PORT && held.insert(port) {
                    tracing::debug!(port, "reserved port");
                    return Ok(port);
                }
            }
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
pub(crate) fn release(port: u16) {
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
        let unique: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
        assert!(!ports.contains(&SYSTEM_PORT));
        for p in ports {
            release(p);
        }
    }
}
