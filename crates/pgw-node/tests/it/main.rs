//! Integration tests for `pgw-node`, against real PostgreSQL 15 in temp dirs on free loopback
//! ports (never mocks, never port 5432).
//!
//! They fail, loudly, when PostgreSQL is missing: install `postgresql-15` or set
//! `PGWARDEN_PG_BIN`. Every server is stopped by a guard's `Drop`, also when a test fails.

mod adopt;
mod lifecycle;
mod replication;
mod stale_pid;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use pgw_node::{
    AuthMethod, BinDir, InitdbOptions, Node, OsUser, Password, ReadyOptions, StartOptions,
    StopMode, StopOptions, Tool,
};

/// The superuser password of every test server.
pub const PASSWORD: &str = "node-test-pw";

/// A temp dir the server user can reach; removed on drop, after the guards of its nodes.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Default for Scratch {
    fn default() -> Scratch {
        Scratch::new()
    }
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("pgw-node-")
            .tempdir_in("/tmp")
            .expect("create a temp dir");
        user()
            .chown(dir.path())
            .expect("give the temp dir to the server user");
        Scratch { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Stops its node's server (immediate) when dropped, so a failing test leaves nothing running;
/// prints the server log when the test panicked.
pub struct Guard(pub Node);

impl std::ops::Deref for Guard {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.0
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- server log of {} -----\n{}\n-----",
                self.0.data_dir().display(),
                self.0.log()
            );
        }
        let _ = self.0.stop(&StopOptions::new(
            StopMode::Immediate,
            Duration::from_secs(10),
        ));
    }
}

/// The bin dir, checked: a missing PostgreSQL fails the test with what to install.
pub fn bin() -> BinDir {
    let bin = BinDir::from_env();
    if let Err(e) = bin.require(&Tool::ALL) {
        panic!("PostgreSQL 15 is needed for these tests: {e}");
    }
    bin
}

pub fn user() -> OsUser {
    OsUser::detect().unwrap_or_else(|e| panic!("{e}"))
}

/// A free loopback port (not 5432).
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("bind a free port")
            .port();
        if port != 5432 {
            return port;
        }
    }
}

/// initdb options of the tests: password auth over TCP, trust on the socket, checksums.
pub fn initdb_options() -> InitdbOptions {
    InitdbOptions {
        password: Some(Password::new(PASSWORD)),
        auth_local: Some(AuthMethod::Trust),
        auth_host: Some(AuthMethod::ScramSha256),
        encoding: Some("UTF8".into()),
        locale: Some("C".into()),
        data_checksums: true,
        no_sync: true,
        ..InitdbOptions::default()
    }
}

/// Start options: `port`, loopback only, the socket in `socket_dir`.
pub fn start_options(port: u16, socket_dir: &Path) -> StartOptions {
    StartOptions::default()
        .port(port)
        .setting("listen_addresses", "127.0.0.1")
        .setting("unix_socket_directories", &socket_dir.to_string_lossy())
}

/// Starts `node` and waits until it accepts connections on `port`.
pub fn start(node: &Node, port: u16, socket_dir: &Path) {
    node.start(&start_options(port, socket_dir))
        .unwrap_or_else(|e| panic!("start: {e}"));
    node.wait_ready(&ReadyOptions::tcp("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("wait ready: {e}"));
}

/// Runs `sql` with psql as the superuser over TCP; stdout trimmed, or psql's stderr.
pub fn psql(port: u16, sql: &str) -> Result<String, String> {
    let out = bin()
        .command(Tool::Psql)
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .args([
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            sql,
        ])
        .env("PGPASSWORD", PASSWORD)
        .env("PGCONNECT_TIMEOUT", "5")
        .stderr(Stdio::piped())
        .output()
        .expect("run psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
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
