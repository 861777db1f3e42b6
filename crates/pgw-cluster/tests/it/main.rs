//! Integration tests for `pgw-cluster`, against real PostgreSQL 15 (never mocks).
//!
//! They fail, loudly, when PostgreSQL is missing: install `postgresql-15` or set
//! `PGWARDEN_PG_BIN`.

mod basic;
mod cleanup;
mod errors;
mod failover;
mod standby;
mod watchdog;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use pgw_cluster::{Cluster, ClusterBuilder};

/// Starts a cluster or fails the test with the one-line error.
pub fn start(builder: ClusterBuilder) -> Cluster {
    builder
        .start()
        .unwrap_or_else(|e| panic!("could not start a throwaway cluster: {e}"))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// Polls `cond` every 100 ms until it holds or `limit` passes; returns whether it held.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
