//! Integration tests for `pgw-testkit`: each fixture started for real (etcd-server,
//! pgbouncer, PostgreSQL 15), used, dropped, and cleaned up by its watchdog when its owner is
//! SIGKILLed; and the tidy rule that keeps the crate out of the binary.
//!
//! They fail, loudly, when a program is missing: `./run test` installs `etcd-server` and
//! `pgbouncer`.

mod etcd;
mod pgbouncer;
mod proxy;
mod s3;
mod tidy;
mod watchdog;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use pgw_cluster::Cluster;
use pgw_node::{BinDir, Tool};

/// Starts a cluster or fails the test with the one-line error.
pub fn cluster() -> Cluster {
    Cluster::start().unwrap_or_else(|e| panic!("could not start a throwaway cluster: {e}"))
}

/// Runs `sql` through psql on the conninfo `dsn`; stdout trimmed, or stderr.
pub fn psql(dsn: &str, sql: &str) -> Result<String, String> {
    let dsn = format!("{dsn} connect_timeout=3");
    let out = BinDir::from_env()
        .command(Tool::Psql)
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
            &dsn,
        ])
        .stderr(Stdio::piped())
        .output()
        .expect("run psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
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

/// Whether a process with this pid exists (zombies excluded).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}
