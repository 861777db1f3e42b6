//! `pgwarden pool` end to end: the pgwarden binary runs as a child process (`pool --config
//! pool.toml`, or `--pgbouncer-ini`) on a free loopback port in front of a real throwaway
//! PostgreSQL 15 cluster, and is driven by what talks to PgBouncer in the field: psql,
//! pgbench, tokio-postgres, psycopg 3, asyncpg, Debian's prometheus-pgbouncer-exporter, and
//! raw sockets for hostile bytes. Debian's PgBouncer 1.18 (pgw-testkit's fixture) is the
//! reference for the console's columns.
//!
//! [`PoolRig`] is the one harness: it writes pool.toml and userlist.txt into a temp dir,
//! starts the binary, waits until its port accepts a TCP connection (polling, never a
//! sleep), and stops it on drop (SIGTERM, a second SIGTERM, then SIGKILL), its log printed if
//! the test panicked; a watchdog kills it if the test process dies. Every test has its own
//! cluster and pooler, so tests share nothing mutable. Timeouts are generous upper bounds
//! for waiting, never assertions about speed.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use pgw_cluster::watchdog::{Watchdog, Watched};
use pgw_cluster::{panic_log, ports, Cluster, ClusterBuilder};
use pgw_testkit::{PgBouncer, Proxy};
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};

use crate::{assert_fails, stderr, stdout};

/// Upper bound for anything the tests wait for (a start, an answer, an exit).
const DEADLINE: Duration = Duration::from_secs(30);

/// Debian's interpreter, where python3-psycopg, python3-asyncpg and the exporter live (a
/// `python3` earlier on PATH, such as pyenv's, does not see Debian's packages).
const PYTHON: &str = "/usr/bin/python3";

/// Debian's exporter (package prometheus-pgbouncer-exporter).
const EXPORTER: &str = "/usr/bin/prometheus-pgbouncer-exporter";

/// libpq variables that must not leak from the environment into a client or the pooler.
const PG_VARS: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSSLMODE",
    "PGOPTIONS",
    "PGAPPNAME",
    "PGCONNECT_TIMEOUT",
];

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// A throwaway cluster tuned for tests (no fsync).
fn cluster() -> Cluster {
    cluster_with(|b| b)
}

fn cluster_with(f: impl FnOnce(ClusterBuilder) -> ClusterBuilder) -> Cluster {
    f(Cluster::builder()
        .setting("fsync", "off")
        .setting("synchronous_commit", "off")
        .setting("max_connections", "60"))
    .start()
    .expect("start a throwaway PostgreSQL 15 cluster (is postgresql-15 installed? run ./run test)")
}

/// Polls `f` every 20 ms until it returns Some, or panics after [`DEADLINE`] naming `what`.
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "gave up after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` (stdin closed) to completion, killing it and panicking if it takes longer
/// than `limit`.
fn run(cmd: &mut Command, limit: Duration, what: &str) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {what}: {e}"));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for a child") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let err = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
            panic!("{what} did not finish within {limit:?}; stderr: {err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// A long-running child process in its own temp dir (its working directory, log and pid
/// file), stopped on drop and by a watchdog when the test process dies.
struct Daemon {
    what: String,
    dir: PathBuf,
    program: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    watchdog: Option<Watchdog>,
    tmp: Option<tempfile::TempDir>,
}

impl Daemon {
    fn new(what: &str, program: impl Into<PathBuf>) -> Daemon {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("pgw-{what}-"))
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().to_owned();
        let watchdog = Watchdog::spawn(
            &dir,
            &[Watched::new(
                dir.join("daemon.pid"),
                &dir,
                Signal::SIGKILL,
                Duration::from_millis(200),
            )],
        )
        .expect("watchdog");
        Daemon {
            what: what.to_owned(),
            dir,
            program: program.into(),
            env: Vec::new(),
            child: None,
            watchdog: Some(watchdog),
            tmp: Some(tmp),
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    fn spawn(&mut self, args: &[String]) {
        assert!(self.child.is_none(), "{} already runs", self.what);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .expect("log file");
        let mut cmd = Command::new(&self.program);
        cmd.args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        for v in PG_VARS {
            cmd.env_remove(v);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.what));
        fs::write(self.dir.join("daemon.pid"), format!("{}\n", child.id())).expect("pid file");
        self.child = Some(child);
    }

    fn signal(&self, sig: Signal) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// The exit status, if it has exited (then it is no longer ours to stop).
    fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Waits up to `limit` for it to exit.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if self.child.is_none() || start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, after 3 s a second SIGTERM (the pooler stops at once), after 3 s SIGKILL.
    fn stop(&mut self) -> Option<ExitStatus> {
        self.child.as_ref()?;
        for _ in 0..2 {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            self.signal(Signal::SIGTERM);
            if let Some(s) = self.wait_exit(Duration::from_secs(3)) {
                return Some(s);
            }
        }
        let mut c = self.child.take()?;
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        panic_log::print_tail_if_panicking(&format!("the {} log", self.what), &self.log());
        self.stop();
        drop(self.watchdog.take());
        if let Some(t) = self.tmp.take() {
            let _ = t.close();
        }
    }
}

/// How a [`PoolRig`] is configured: `[pool]` settings (TOML values), databases, the auth
/// file. Defaults: 127.0.0.1 on a free port, no Unix socket, md5 auth from userlist.txt
/// holding the cluster's superuser, `postgres` as admin, one database `app` leading to the
/// server's `postgres`.
struct RigBuilder<'a> {
    cluster: &'a Cluster,
    settings: Vec<(String, String)>,
    databases: Vec<(String, Vec<(String, String)>)>,
    users: Vec<(String, String)>,
    metrics: bool,
}

/// A TOML string.
fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl<'a> RigBuilder<'a> {
    /// A `[pool]` setting as a TOML value (`"transaction"`, `3`, `["a"]`), replacing the
    /// default of that name.
    fn set(mut self, key: &str, value: &str) -> Self {
        match self.settings.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_owned(),
            None => self.settings.push((key.to_owned(), value.to_owned())),
        }
        self
    }

    fn mode(self, mode: &str) -> Self {
        self.set("pool_mode", &q(mode))
    }

    fn size(self, n: u32) -> Self {
        self.set("default_pool_size", &n.to_string())
    }

    /// Another `[databases.<name>]` entry leading to the server's `postgres`, with extra
    /// keys (TOML values) added or replacing `host`, `port`, `dbname`.
    fn database(mut self, name: &str, extra: &[(&str, &str)]) -> Self {
        self.databases.push((
            name.to_owned(),
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ));
        self
    }

    /// A line of the auth file.
    fn user(mut self, name: &str, secret: &str) -> Self {
        self.users.push((name.to_owned(), secret.to_owned()));
        self
    }

    /// Serve `--metrics` on a free port too.
    fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    fn userlist(&self) -> String {
        let quote = |s: &str| s.replace('"', "\"\"");
        std::iter::once(&(
            self.cluster.superuser().to_owned(),
            self.cluster.password().to_owned(),
        ))
        .chain(&self.users)
        .map(|(u, s)| format!("\"{}\" \"{}\"\n", quote(u), quote(s)))
        .collect()
    }

    fn render(&self, userlist: &Path, port: u16) -> String {
        let mut settings: Vec<(String, String)> = vec![
            ("listen_addr".into(), q("127.0.0.1")),
            ("listen_port".into(), port.to_string()),
            ("unix_socket_dir".into(), q("")),
            ("auth_type".into(), q("md5")),
            ("auth_file".into(), q(&userlist.display().to_string())),
            (
                "admin_users".into(),
                format!("[{}]", q(self.cluster.superuser())),
            ),
            ("server_login_retry".into(), "1".into()),
        ];
        for (k, v) in &self.settings {
            match settings.iter_mut().find(|(n, _)| n == k) {
                Some(slot) => slot.1 = v.clone(),
                None => settings.push((k.clone(), v.clone())),
            }
        }
        let mut text = String::from("# written by the pool tests\n[pool]\n");
        for (k, v) in settings {
            text.push_str(&format!("{k} = {v}\n"));
        }
        let mut dbs = vec![("app".to_owned(), Vec::new())];
        dbs.extend(self.databases.iter().cloned());
        for (name, extra) in dbs {
            let mut keys: Vec<(String, String)> = vec![
                ("host".into(), "[\"127.0.0.1\"]".into()),
                ("port".into(), self.cluster.port().to_string()),
                ("dbname".into(), q("postgres")),
            ];
            for (k, v) in extra {
                match keys.iter_mut().find(|(n, _)| *n == k) {
                    Some(slot) => slot.1 = v,
                    None => keys.push((k, v)),
                }
            }
            text.push_str(&format!("\n[databases.{}]\n", q(&name)));
            for (k, v) in keys {
                text.push_str(&format!("{k} = {v}\n"));
            }
        }
        text
    }

    fn start(self) -> PoolRig {
        let d = Daemon::new("pool", env!("CARGO_BIN_EXE_pgwarden"));
        let config = d.dir.join("pool.toml");
        let userlist = d.dir.join("userlist.txt");
        fs::write(&userlist, self.userlist()).expect("write userlist.txt");
        let (cluster, metrics) = (self.cluster, self.metrics);
        let cfg = config.clone();
        PoolRig::launch(d, cluster, metrics, move |port| {
            fs::write(&cfg, self.render(&userlist, port)).expect("write pool.toml");
            // Two workers whatever the machine: sessions and server connections then
            // move between threads, which one worker would never exercise.
            vec![
                "pool".into(),
                "--workers".into(),
                "2".into(),
                "--config".into(),
                cfg.display().to_string(),
            ]
        })
    }
}

/// A running `pgwarden pool`.
struct PoolRig {
    d: Daemon,
    port: u16,
    metrics_port: Option<u16>,
    config: PathBuf,
    bin: PathBuf,
    superuser: String,
    password: String,
}

impl PoolRig {
    fn builder(cluster: &Cluster) -> RigBuilder<'_> {
        RigBuilder {
            cluster,
            settings: Vec::new(),
            databases: Vec::new(),
            users: Vec::new(),
            metrics: false,
        }
    }

    /// Starts the binary with the arguments `write(port)` returns (after writing the
    /// configuration for that port), on another port if the first one was taken.
    fn launch(
        mut d: Daemon,
        cluster: &Cluster,
        metrics: bool,
        write: impl Fn(u16) -> Vec<String>,
    ) -> PoolRig {
        let config = d.dir.join("pool.toml");
        for attempt in 1..=3 {
            let port = ports::reserve().expect("a free port");
            let mport = metrics.then(|| ports::reserve().expect("a free port"));
            let mut args = vec!["--log".to_owned(), "info".to_owned()];
            args.extend(write(port));
            if let Some(m) = mport {
                args.extend(["--metrics".to_owned(), format!("127.0.0.1:{m}")]);
            }
            d.spawn(&args);
            let start = Instant::now();
            let ready = loop {
                if let Some(status) = d.exited() {
                    break Err(status);
                }
                let up = |p: u16| {
                    TcpStream::connect_timeout(
                        &SocketAddr::from(([127, 0, 0, 1], p)),
                        Duration::from_millis(500),
                    )
                    .is_ok()
                };
                if up(port) && mport.is_none_or(up) {
                    break Ok(());
                }
                assert!(
                    start.elapsed() < DEADLINE,
                    "pgwarden pool does not accept connections on {port} after {DEADLINE:?}:\n{}",
                    d.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            match ready {
                Ok(()) => {
                    return PoolRig {
                        d,
                        port,
                        metrics_port: mport,
                        config,
                        bin: cluster.bin_dir().to_owned(),
                        superuser: cluster.superuser().to_owned(),
                        password: cluster.password().to_owned(),
                    }
                }
                Err(status) => {
                    ports::release(port);
                    if let Some(m) = mport {
                        ports::release(m);
                    }
                    let log = d.log();
                    assert!(
                        attempt < 3 && log.contains("cannot listen"),
                        "pgwarden pool exited ({status}) before accepting connections:\n{log}"
                    );
                }
            }
        }
        unreachable!("the loop returns or panics")
    }

    fn log(&self) -> String {
        self.d.log()
    }

    /// tokio-postgres settings for a client of the pooler.
    fn cfg(&self, user: &str, password: &str, db: &str) -> Config {
        pg_cfg(self.port, user, password, db)
    }

    /// psql against the pooler: `-X -A -t -q`, stop on the first error.
    fn psql(&self, user: &str, password: &str, db: &str, sql: &str) -> Output {
        run(
            psql_cmd(&self.bin, self.port, user, password, db).args(["-A", "-t", "-c", sql]),
            DEADLINE,
            &format!("psql -U {user} -d {db} -c {sql:?}"),
        )
    }

    /// psql that must succeed; its output without the trailing newline.
    fn psql_ok(&self, user: &str, password: &str, db: &str, sql: &str) -> String {
        let o = self.psql(user, password, db, sql);
        assert!(
            o.status.success(),
            "psql -U {user} -d {db} -c {sql:?} through the pool failed: {}\npool log:\n{}",
            stderr(&o),
            self.log()
        );
        stdout(&o).trim_end().to_owned()
    }

    /// A console command as the admin; its output (`|` between columns).
    fn admin(&self, sql: &str) -> String {
        let (u, p) = (self.superuser.clone(), self.password.clone());
        self.psql_ok(&u, &p, "pgbouncer", sql)
    }

    /// A console SHOW as `user`: its column names and rows.
    fn table_as(&self, user: &str, password: &str, sql: &str) -> Table {
        let o = run(
            psql_cmd(&self.bin, self.port, user, password, "pgbouncer").args([
                "-A",
                "-F",
                "\u{1f}",
                "-P",
                "footer=off",
                "-c",
                sql,
            ]),
            DEADLINE,
            &format!("psql -d pgbouncer -c {sql:?}"),
        );
        assert!(
            o.status.success(),
            "{sql} on the console as {user}: {}",
            stderr(&o)
        );
        Table::parse(&stdout(&o))
    }

    fn show(&self, what: &str) -> Table {
        let (u, p) = (self.superuser.clone(), self.password.clone());
        self.table_as(&u, &p, &format!("SHOW {what}"))
    }
}

impl Drop for PoolRig {
    fn drop(&mut self) {
        self.d.stop();
        ports::release(self.port);
        if let Some(m) = self.metrics_port {
            ports::release(m);
        }
    }
}

/// psql with nothing from the environment, the password given, a connect timeout.
fn psql_cmd(bin: &Path, port: u16, user: &str, password: &str, db: &str) -> Command {
    let mut cmd = Command::new(bin.join("psql"));
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", user, "-d", db]);
    for v in PG_VARS {
        cmd.env_remove(v);
    }
    cmd.env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10");
    cmd
}

/// A console table as psql printed it.
struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn parse(text: &str) -> Table {
        let mut lines = text.lines().filter(|l| !l.is_empty());
        let split = |l: &str| l.split('\u{1f}').map(str::to_owned).collect::<Vec<_>>();
        let columns = lines.next().map(split).unwrap_or_default();
        Table {
            columns,
            rows: lines.map(split).collect(),
        }
    }

    /// The value of `col` in the first row whose `key` column is `key_value`.
    fn get(&self, key: &str, key_value: &str, col: &str) -> Option<String> {
        let k = self.columns.iter().position(|c| c == key)?;
        let c = self.columns.iter().position(|x| x == col)?;
        self.rows
            .iter()
            .find(|r| r.get(k).is_some_and(|v| v == key_value))
            .and_then(|r| r.get(c).cloned())
    }
}

fn pg_cfg(port: u16, user: &str, password: &str, db: &str) -> Config {
    let mut c = Config::new();
    c.host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname(db)
        .connect_timeout(Duration::from_secs(10));
    c
}

/// tokio-postgres straight to the server, as its superuser.
fn direct_cfg(c: &Cluster) -> Config {
    pg_cfg(c.port(), c.superuser(), c.password(), "postgres")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// `f`, or a panic naming `what` if it takes longer than [`DEADLINE`].
async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {DEADLINE:?}"),
    }
}

/// Connects and drives the connection on a task (abort it to drop the socket abruptly).
async fn connect(
    cfg: &Config,
) -> Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
    let (client, conn) = within("connect", cfg.connect(NoTls)).await?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((client, task))
}

/// As [`connect`], but the task's output is how the connection ended: the FATAL error the
/// pooler sent an idle client before closing it, say.
async fn connect_watched(
    cfg: &Config,
) -> Result<
    (
        Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ),
    tokio_postgres::Error,
> {
    let (client, conn) = within("connect", cfg.connect(NoTls)).await?;
    Ok((client, tokio::spawn(conn)))
}

/// The error a watched connection ended with; panics if it ended without one, or did not
/// end within [`DEADLINE`].
async fn closed_with(
    what: &str,
    conn: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) -> tokio_postgres::Error {
    match within(what, conn).await.expect("the connection task") {
        Ok(()) => panic!("{what}: the connection ended without an error"),
        Err(e) => e,
    }
}

/// The error of a connection attempt that must fail.
async fn refused(cfg: &Config, what: &str) -> tokio_postgres::Error {
    match connect(cfg).await {
        Ok(_) => panic!("{what}: let in"),
        Err(e) => e,
    }
}

/// The SQLSTATE of an error (or a text saying there is none).
fn code(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| format!("(no SQLSTATE: {})", msg(e)))
}

/// An error's whole text: the server's severity, code and message, or the driver's chain.
fn msg(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} {}: {}{}",
            db.severity(),
            db.code().code(),
            db.message(),
            db.detail()
                .map(|d| format!(" DETAIL: {d}"))
                .unwrap_or_default()
        ),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(x) = src {
                s.push_str(&format!(": {x}"));
                src = x.source();
            }
            s
        }
    }
}

/// The first column of the first row of a simple query (empty when no row).
async fn try_one(c: &Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    for m in within(sql, c.simple_query(sql)).await? {
        if let SimpleQueryMessage::Row(r) = m {
            return Ok(r.get(0).unwrap_or("NULL").to_owned());
        }
    }
    Ok(String::new())
}

/// Panics with a driver error's whole text; typed as whatever the caller needs.
fn fail<T>(what: &str, e: &tokio_postgres::Error) -> T {
    panic!("{what}: {}", msg(e))
}

async fn one(c: &Client, sql: &str) -> String {
    try_one(c, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", msg(&e)))
}

async fn exec(c: &Client, sql: &str) {
    within(sql, c.batch_execute(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", msg(&e)));
}

/// A v3 startup packet.
fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608i32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

fn raw_connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the pooler");
    s.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    s
}

/// One backend message, or None once the peer closed (EOF or reset). Panics if nothing
/// comes within [`DEADLINE`]: a pooler that neither answers nor closes hangs the client.
fn read_msg(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < 5 {
        match s.read(&mut head[got..]) {
            Ok(0) => return None,
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the pooler neither answered nor closed within {DEADLINE:?}")
            }
            Err(_) => return None,
        }
    }
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    assert!(
        (4..1 << 20).contains(&len),
        "a reply of length {len} (tag {:?})",
        head[0] as char
    );
    let mut body = vec![0; len as usize - 4];
    s.read_exact(&mut body).ok()?;
    Some((head[0], body))
}

/// Every message until the peer closes.
fn until_closed(s: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut v = Vec::new();
    while let Some(m) = read_msg(s) {
        v.push(m);
    }
    v
}

/// An ErrorResponse's fields by their code byte.
fn error_field(body: &[u8], field: u8) -> Option<String> {
    let mut rest = body;
    while let Some((&t, tail)) = rest.split_first() {
        if t == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        if t == field {
            return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
        }
        rest = &tail[end + 1..];
    }
    None
}

/// The authentication request the pooler answers a startup packet with (5 MD5, 10 SASL).
fn auth_request(port: u16, user: &str, db: &str) -> i32 {
    let mut s = raw_connect(port);
    s.write_all(&startup_packet(&[("user", user), ("database", db)]))
        .expect("send a startup packet");
    let (tag, body) = read_msg(&mut s).expect("an answer to the startup packet");
    assert_eq!(
        tag,
        b'R',
        "an authentication request expected for {user}, got {:?}: {}",
        tag as char,
        String::from_utf8_lossy(&body)
    );
    i32::from_be_bytes([body[0], body[1], body[2], body[3]])
}

fn pgbench(bin: &Path, port: u16, user: &str, password: &str, db: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin.join("pgbench"));
    cmd.args(["-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", user])
        .args(args)
        .arg(db);
    for v in PG_VARS {
        cmd.env_remove(v);
    }
    cmd.env("PGPASSWORD", password);
    run(&mut cmd, DEADLINE * 2, &format!("pgbench {args:?} {db}"))
}

/// pgbench ran, processed transactions and none failed.
fn assert_pgbench_ok(o: &Output, what: &str, log: &str) {
    let out = stdout(o);
    let err = stderr(o);
    assert!(
        o.status.success() && out.contains("number of failed transactions: 0 "),
        "pgbench {what}: {}\n{out}\n{err}\npool log:\n{log}",
        o.status
    );
    let processed: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(processed > 0, "pgbench {what} processed nothing:\n{out}");
    assert!(
        !err.contains("error"),
        "pgbench {what} reported errors:\n{err}"
    );
}

/// Python with Debian's psycopg 3 and asyncpg, or a loud failure saying how to get them.
fn require_python_drivers() {
    let o = run(
        Command::new(PYTHON).args(["-c", "import psycopg, asyncpg"]),
        DEADLINE,
        "python3 -c 'import psycopg, asyncpg'",
    );
    assert!(
        o.status.success(),
        "psycopg 3 and asyncpg are required by the pooler's tests and are missing from \
         {PYTHON}: install the Debian packages python3-psycopg and python3-asyncpg \
         (./run test does): {}",
        stderr(&o)
    );
}

fn python(script: &str, env: &[(&str, String)], what: &str) -> Output {
    let mut cmd = Command::new(PYTHON);
    cmd.args(["-c", script]);
    for v in PG_VARS {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd, DEADLINE * 2, what)
}

/// `rolpassword` of a role: its stored secret (SCRAM or md5).
fn stored_secret(c: &Cluster, role: &str) -> String {
    c.psql(
        "postgres",
        &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"),
    )
    .expect("read pg_authid")
}

/// Roles `app` (password `app-pw`) that may use table `t` if given.
fn app_role(c: &Cluster, tables: &[&str]) {
    let mut sql = String::from("CREATE ROLE app LOGIN PASSWORD 'app-pw';\n");
    for t in tables {
        sql.push_str(&format!("GRANT ALL ON {t} TO app;\n"));
    }
    c.psql("postgres", &sql).expect("create role app");
}

// ---------------------------------------------------------------------------------------
// 1. psql and pgbench in every pool mode
// ---------------------------------------------------------------------------------------

#[test]
fn psql_and_pgbench_work_in_session_transaction_and_statement_mode() {
    let c = cluster();
    let init = pgbench(
        c.bin_dir(),
        c.port(),
        c.superuser(),
        c.password(),
        "postgres",
        &["-i", "-I", "dtgp", "-s", "1", "-q"],
    );
    assert!(
        init.status.success(),
        "pgbench -i on the server: {}",
        stderr(&init)
    );
    let rig = PoolRig::builder(&c)
        .database("sess", &[("pool_mode", "\"session\""), ("pool_size", "4")])
        .database(
            "txn",
            &[("pool_mode", "\"transaction\""), ("pool_size", "2")],
        )
        .database(
            "stmt",
            &[("pool_mode", "\"statement\""), ("pool_size", "2")],
        )
        .start();
    let (user, pw) = (c.superuser(), c.password());
    for db in ["sess", "txn", "stmt"] {
        assert_eq!(rig.psql_ok(user, pw, db, "select 1"), "1", "{db}");
    }
    // Select-only, 4 clients, every query protocol; the three modes at once. In
    // transaction and statement mode 4 clients share 2 server connections, so `-M prepared`
    // there needs the pooler's named-statement tracking (PgBouncer 1.18 has none). One
    // thread per client (-j 4): pgbench prepares with a blocking PQprepare, so one thread
    // driving 4 clients would block on a client waiting for a server while the clients
    // holding both servers mid-transaction wait for that very thread (with any pooler).
    for proto in ["simple", "extended", "prepared"] {
        let runs: Vec<(&str, std::thread::JoinHandle<Output>)> = ["sess", "txn", "stmt"]
            .into_iter()
            .map(|db| {
                let (bin, port) = (rig.bin.clone(), rig.port);
                let (user, pw) = (user.to_owned(), pw.to_owned());
                let h = std::thread::spawn(move || {
                    pgbench(
                        &bin,
                        port,
                        &user,
                        &pw,
                        db,
                        &["-n", "-S", "-T", "2", "-c", "4", "-j", "4", "-M", proto],
                    )
                });
                (db, h)
            })
            .collect();
        for (db, h) in runs {
            let o = h.join().expect("pgbench thread");
            assert_pgbench_ok(&o, &format!("-S -M {proto} on {db}"), &rig.log());
        }
    }
    // TPC-B-like transactions (BEGIN; 3 UPDATEs, SELECT, INSERT; END) with prepared
    // statements: session and transaction mode.
    let runs: Vec<(&str, std::thread::JoinHandle<Output>)> = ["sess", "txn"]
        .into_iter()
        .map(|db| {
            let (bin, port) = (rig.bin.clone(), rig.port);
            let (user, pw) = (user.to_owned(), pw.to_owned());
            let h = std::thread::spawn(move || {
                pgbench(
                    &bin,
                    port,
                    &user,
                    &pw,
                    db,
                    &["-n", "-T", "2", "-c", "4", "-j", "4", "-M", "prepared"],
                )
            });
            (db, h)
        })
        .collect();
    for (db, h) in runs {
        let o = h.join().expect("pgbench thread");
        assert_pgbench_ok(&o, &format!("tpcb-like -M prepared on {db}"), &rig.log());
    }
    // Statement mode refuses a transaction block, as PgBouncer does.
    let o = rig.psql(user, pw, "stmt", "BEGIN");
    assert!(
        !o.status.success() && stderr(&o).contains("transaction blocks not allowed"),
        "BEGIN in statement mode: {} {}",
        stdout(&o),
        stderr(&o)
    );
    assert_eq!(rig.psql_ok(user, pw, "stmt", "select 2"), "2");
}

// ---------------------------------------------------------------------------------------
// 2. tokio-postgres: prepared statements across transactions on a shared pool
// ---------------------------------------------------------------------------------------

#[test]
fn tokio_postgres_prepared_statements_survive_transaction_pooling() {
    let c = cluster();
    c.psql(
        "postgres",
        "CREATE TABLE kv (k int PRIMARY KEY, v text);
         INSERT INTO kv SELECT g, 'v' || g FROM generate_series(1, 100) g;",
    )
    .expect("set up kv");
    app_role(&c, &["kv"]);
    let rig = PoolRig::builder(&c)
        .mode("transaction")
        .size(2)
        .user("app", "app-pw")
        .start();
    const CLIENTS: i32 = 6;
    const ROUNDS: i32 = 40;
    rt().block_on(async {
        let mut tasks = Vec::new();
        for i in 0..CLIENTS {
            let cfg = rig.cfg("app", "app-pw", "app");
            tasks.push(tokio::spawn(async move {
                let (mut client, _conn) = connect(&cfg)
                    .await
                    .unwrap_or_else(|e| panic!("client {i} connect: {}", msg(&e)));
                // tokio-postgres names statements s0, s1, s2 per connection: the same name
                // means different statements on odd and even clients.
                let mul = format!("select $1::int * {}", i + 2);
                let prep = |sql: String| {
                    let client = &client;
                    async move {
                        within("prepare", client.prepare(&sql))
                            .await
                            .unwrap_or_else(|e| panic!("client {i} prepare {sql}: {}", msg(&e)))
                    }
                };
                let (add, get, times) = if i % 2 == 0 {
                    let a = prep("select $1::int + 1000".into()).await;
                    let g = prep("select v from kv where k = $1".into()).await;
                    let m = prep(mul.clone()).await;
                    (a, g, m)
                } else {
                    let m = prep(mul.clone()).await;
                    let g = prep("select v from kv where k = $1".into()).await;
                    let a = prep("select $1::int + 1000".into()).await;
                    (a, g, m)
                };
                for j in 1..=ROUNDS {
                    let r: i32 = within("add", client.query_one(&add, &[&j]))
                        .await
                        .unwrap_or_else(|e| fail(&format!("client {i} round {j} add"), &e))
                        .get(0);
                    assert_eq!(r, j + 1000, "client {i} round {j}");
                    let t = within("begin", client.transaction())
                        .await
                        .unwrap_or_else(|e| fail(&format!("client {i} round {j} begin"), &e));
                    let v: String = within("get", t.query_one(&get, &[&j]))
                        .await
                        .unwrap_or_else(|e| fail(&format!("client {i} round {j} get"), &e))
                        .get(0);
                    assert_eq!(v, format!("v{j}"), "client {i} round {j}");
                    let r: i32 = within("times", t.query_one(&times, &[&j]))
                        .await
                        .unwrap_or_else(|e| fail(&format!("client {i} round {j} times"), &e))
                        .get(0);
                    assert_eq!(r, j * (i + 2), "client {i} round {j}: {mul}");
                    within("commit", t.commit())
                        .await
                        .unwrap_or_else(|e| fail(&format!("client {i} round {j} commit"), &e));
                }
            }));
        }
        for t in tasks {
            within("a client's transactions", t)
                .await
                .unwrap_or_else(|e| panic!("{e}\npool log:\n{}", rig.log()));
        }
    });
    let servers: i64 = c
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'",
        )
        .unwrap()
        .parse()
        .unwrap();
    assert!(servers <= 2, "{servers} server connections for a pool of 2");
    // Each distinct statement (add, get, 6 products) is parsed at most once per server
    // connection, however often clients prepare and execute it.
    let stats = rig.show("STATS");
    let stat = |col: &str| -> u64 {
        stats
            .get("database", "app", col)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("SHOW STATS {col} for app: {:?}", stats.rows))
    };
    assert_eq!(
        stat("total_client_parse_count"),
        3 * CLIENTS as u64,
        "{:?}",
        stats.rows
    );
    assert!(
        stat("total_server_parse_count") <= 2 * 8,
        "server parses: {:?}",
        stats.rows
    );
    assert!(
        stat("total_bind_count") >= (3 * CLIENTS * ROUNDS) as u64,
        "{:?}",
        stats.rows
    );
}

// ---------------------------------------------------------------------------------------
// 3. psycopg 3 and asyncpg with their statement caches
// ---------------------------------------------------------------------------------------

const PSYCOPG_SCRIPT: &str = r#"
import os, sys, threading
import psycopg

dsn = os.environ["DSN"]
errors = []

def work(k):
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.prepare_threshold == 5, conn.prepare_threshold
            # Each connection has its own query text under psycopg's names (_pg3_0, ...):
            # after 5 runs psycopg prepares it server-side and then only binds.
            for i in range(10):
                v = conn.execute("select %s::int + " + str(k), (i,)).fetchone()[0]
                assert v == i + k, (k, i, v)
            for i in range(10):
                with conn.transaction():
                    v = conn.execute("select %s::int * " + str(k + 1), (i,)).fetchone()[0]
                    assert v == i * (k + 1), (k, i, v)
    except Exception as e:
        errors.append("connection %d: %s: %s" % (k, type(e).__name__, e))

threads = [threading.Thread(target=work, args=(k,)) for k in range(5)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if errors:
    print("\n".join(errors))
    sys.exit(1)
print("psycopg ok")
"#;

const ASYNCPG_SCRIPT: &str = r#"
import asyncio, os, sys
import asyncpg

async def work(k):
    conn = await asyncpg.connect(host="127.0.0.1", port=int(os.environ["PORT"]),
                                 user="app", password="app-pw", database="app")
    try:
        # asyncpg's statement cache names statements __asyncpg_stmt_N__ per connection.
        for i in range(20):
            v = await conn.fetchval("select $1::int + " + str(k), i)
            assert v == i + k, (k, i, v)
            w = await conn.fetchval("select $1::text || $2::text", str(k), "x")
            assert w == str(k) + "x", (k, w)
    finally:
        await conn.close()

async def main():
    results = await asyncio.gather(*(work(k) for k in range(5)), return_exceptions=True)
    errors = ["connection %d: %s: %s" % (k, type(r).__name__, r)
              for k, r in enumerate(results) if isinstance(r, BaseException)]
    if errors:
        print("\n".join(errors))
        sys.exit(1)
    print("asyncpg ok")

asyncio.run(main())
"#;

#[test]
fn psycopg_and_asyncpg_statement_caches_work_in_transaction_mode() {
    require_python_drivers();
    let c = cluster();
    app_role(&c, &[]);
    let rig = PoolRig::builder(&c)
        .mode("transaction")
        .size(2)
        .user("app", "app-pw")
        .start();
    let dsn = format!(
        "host=127.0.0.1 port={} user=app password=app-pw dbname=app",
        rig.port
    );
    let port = rig.port.to_string();
    let (o1, o2) = std::thread::scope(|s| {
        let a = s.spawn(|| python(PSYCOPG_SCRIPT, &[("DSN", dsn.clone())], "psycopg"));
        let b = s.spawn(|| python(ASYNCPG_SCRIPT, &[("PORT", port.clone())], "asyncpg"));
        (a.join().unwrap(), b.join().unwrap())
    });
    for (o, what) in [(&o1, "psycopg"), (&o2, "asyncpg")] {
        assert!(
            o.status.success() && stdout(o).contains(&format!("{what} ok")),
            "{what} through the pool in transaction mode:\n{}{}\npool log:\n{}",
            stdout(o),
            stderr(o),
            rig.log()
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4. No session state leaks between clients
// ---------------------------------------------------------------------------------------

#[test]
fn transaction_mode_leaks_no_session_state_between_clients() {
    let c = cluster();
    c.psql("postgres", "CREATE TABLE leak (x int);")
        .expect("create leak");
    app_role(&c, &["leak"]);
    let rig = PoolRig::builder(&c)
        .mode("transaction")
        .size(1)
        .user("app", "app-pw")
        .start();
    let mut problems: Vec<String> = Vec::new();
    rt().block_on(async {
        let (a, a_conn) = connect(&rig.cfg("app", "app-pw", "app")).await.unwrap();
        exec(&a, "SET search_path = nowhere").await;
        exec(&a, "SET application_name = 'a'").await;
        exec(&a, "PREPARE p AS select 1").await;
        let a_pid = one(&a, "select pg_backend_pid()").await;
        // A temporary table cannot follow its client to the next server: refused.
        exec(&a, "BEGIN").await;
        match within(
            "temp table",
            a.batch_execute("CREATE TEMP TABLE tt (x int)"),
        )
        .await
        {
            Ok(()) => problems.push("CREATE TEMP TABLE was accepted in transaction mode".into()),
            Err(e) if code(&e) == "0A000" => {}
            Err(e) => problems.push(format!("CREATE TEMP TABLE: {}", msg(&e))),
        }
        exec(&a, "ROLLBACK").await;

        let mut bcfg = rig.cfg("app", "app-pw", "app");
        bcfg.application_name("b");
        let (b, _b_conn) = connect(&bcfg).await.unwrap();
        let b_pid = one(&b, "select pg_backend_pid()").await;
        assert_eq!(
            b_pid, a_pid,
            "pool_size 1: B must get A's server connection"
        );
        let check = |what: &str, got: String, want: &str, problems: &mut Vec<String>| {
            if got != want {
                problems.push(format!("{what}: got {got:?}, want {want:?}"));
            }
        };
        check(
            "B's search_path",
            one(&b, "show search_path").await,
            "\"$user\", public",
            &mut problems,
        );
        check(
            "B's application_name",
            one(&b, "select current_setting('application_name')").await,
            "b",
            &mut problems,
        );
        // PostgreSQL: ERROR 26000 prepared statement "p" does not exist (more on SQL
        // PREPARE: sql_prepare_does_not_follow_the_server_connection).
        match try_one(&b, "EXECUTE p").await {
            Ok(v) => problems.push(format!("B ran A's prepared statement p: {v:?}")),
            Err(e) if code(&e) == "26000" => {}
            Err(e) => problems.push(format!("B's EXECUTE p: {}", msg(&e))),
        }
        check(
            "temp table tt on B's server",
            one(&b, "select count(*) from pg_class where relname = 'tt'").await,
            "0",
            &mut problems,
        );

        // A's own state follows A to whichever server connection it gets.
        check(
            "A's search_path after B used the server",
            one(&a, "show search_path").await,
            "nowhere",
            &mut problems,
        );
        check(
            "A's application_name after B used the server",
            one(&a, "select current_setting('application_name')").await,
            "a",
            &mut problems,
        );
        match try_one(&a, "EXECUTE p").await {
            Ok(v) => check("A's EXECUTE p", v, "1", &mut problems),
            Err(e) => problems.push(format!("A's own EXECUTE p: {}", msg(&e))),
        }

        // A goes away in the middle of a transaction: its socket closes, no Terminate.
        exec(&a, "BEGIN; INSERT INTO public.leak VALUES (1)").await;
        a_conn.abort();
        let _ = a_conn.await;
        drop(a);
        check(
            "rows of A's unfinished transaction seen by B",
            one(&b, "select count(*) from public.leak").await,
            "0",
            &mut problems,
        );
        check(
            "B inside A's transaction (an xid assigned)",
            one(&b, "select pg_current_xact_id_if_assigned() is null").await,
            "t",
            &mut problems,
        );
        check(
            "B's search_path after A left",
            one(&b, "show search_path").await,
            "\"$user\", public",
            &mut problems,
        );
    });
    assert_eq!(
        c.psql("postgres", "SELECT count(*) FROM leak").unwrap(),
        "0",
        "A's unfinished insert was committed"
    );
    assert!(
        problems.is_empty(),
        "session state leaked in transaction mode:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn sql_prepare_does_not_follow_the_server_connection() {
    let c = cluster();
    app_role(&c, &[]);
    let rig = PoolRig::builder(&c)
        .mode("transaction")
        .size(1)
        .user("app", "app-pw")
        .start();
    rt().block_on(async {
        let (a, _ta) = connect(&rig.cfg("app", "app-pw", "app")).await.unwrap();
        exec(&a, "PREPARE p AS select 'from a'").await;
        let a_pid = one(&a, "select pg_backend_pid()").await;
        let (b, _tb) = connect(&rig.cfg("app", "app-pw", "app")).await.unwrap();
        assert_eq!(
            one(&b, "select pg_backend_pid()").await,
            a_pid,
            "pool_size 1"
        );
        // PostgreSQL: ERROR 26000 prepared statement "p" does not exist.
        match try_one(&b, "EXECUTE p").await {
            Ok(v) => panic!("B ran A's prepared statement p: EXECUTE p returned {v:?}"),
            Err(e) => assert_eq!(code(&e), "26000", "{}", msg(&e)),
        }
        // B's own PREPARE of the same name is B's, and A keeps its own.
        exec(&b, "PREPARE p AS select 'from b'").await;
        assert_eq!(one(&b, "EXECUTE p").await, "from b");
        assert_eq!(one(&a, "EXECUTE p").await, "from a");
        assert_eq!(one(&b, "EXECUTE p").await, "from b");
    });
}

#[test]
fn session_mode_discards_all_before_the_next_client() {
    let c = cluster();
    c.psql("postgres", "CREATE TABLE leak (x int);")
        .expect("create leak");
    app_role(&c, &["leak"]);
    let rig = PoolRig::builder(&c)
        .mode("session")
        .size(1)
        .user("app", "app-pw")
        .start();
    rt().block_on(async {
        let cfg = rig.cfg("app", "app-pw", "app");
        let (a, a_conn) = connect(&cfg).await.unwrap();
        exec(&a, "SET search_path = nowhere").await;
        exec(&a, "PREPARE p AS select 1").await;
        exec(&a, "CREATE TEMP TABLE tt (x int)").await;
        assert_eq!(one(&a, "EXECUTE p").await, "1");
        let a_pid = one(&a, "select pg_backend_pid()").await;
        drop(a);
        let _ = within("A's disconnect", a_conn).await;

        let (b, b_conn) = connect(&cfg).await.unwrap();
        assert_eq!(
            one(&b, "select pg_backend_pid()").await,
            a_pid,
            "pool_size 1: B must get A's server connection"
        );
        assert_eq!(one(&b, "show search_path").await, "\"$user\", public");
        let e = try_one(&b, "EXECUTE p")
            .await
            .expect_err("B must not see A's prepared statement");
        assert_eq!(code(&e), "26000", "{}", msg(&e));
        assert_eq!(
            one(&b, "select count(*) from pg_class where relname = 'tt'").await,
            "0",
            "A's temp table survived DISCARD ALL"
        );
        // B leaves in the middle of a transaction.
        exec(&b, "BEGIN; INSERT INTO leak VALUES (1)").await;
        b_conn.abort();
        let _ = b_conn.await;
        drop(b);

        let (d, _d_conn) = connect(&cfg).await.unwrap();
        assert_eq!(one(&d, "select count(*) from leak").await, "0");
        assert_eq!(
            one(&d, "select pg_current_xact_id_if_assigned() is null").await,
            "t",
            "the next client is inside B's transaction"
        );
    });
    assert_eq!(
        c.psql("postgres", "SELECT count(*) FROM leak").unwrap(),
        "0"
    );
}

// ---------------------------------------------------------------------------------------
// 5. Authentication
// ---------------------------------------------------------------------------------------

#[test]
fn md5_scram_pass_through_and_auth_query_authenticate_clients() {
    let c = cluster_with(|b| {
        b.hba_line("host all md5u 127.0.0.1/32 md5")
            .hba_line("host all scramu 127.0.0.1/32 scram-sha-256")
            .hba_line("host all plainu 127.0.0.1/32 scram-sha-256")
            .hba_line("host all aqu 127.0.0.1/32 scram-sha-256")
    });
    c.psql(
        "postgres",
        "CREATE ROLE plainu LOGIN PASSWORD 'plain-pw-1';
         CREATE ROLE scramu LOGIN PASSWORD 'scram-pw-3';
         CREATE ROLE aqu LOGIN PASSWORD 'aq-pw-4';
         CREATE ROLE srvbad LOGIN PASSWORD 'server-side-pw';
         SET password_encryption = 'md5';
         CREATE ROLE md5u LOGIN PASSWORD 'md5-pw-2';",
    )
    .expect("create roles");
    let scram = stored_secret(&c, "scramu");
    assert!(scram.starts_with("SCRAM-SHA-256$"), "{scram}");
    let md5 = stored_secret(&c, "md5u");
    assert!(md5.starts_with("md5"), "{md5}");
    let rig = PoolRig::builder(&c)
        .mode("transaction")
        .user("plainu", "plain-pw-1")
        .user("md5u", &md5)
        .user("scramu", &scram)
        .user("srvbad", "client-side-pw")
        .set("auth_user", &q(c.superuser()))
        .start();
    // The exchange asked for: MD5 for plain and md5 secrets, SASL for SCRAM secrets (the
    // auth file's, and auth_query's for a user missing from it).
    assert_eq!(auth_request(rig.port, "plainu", "app"), 5, "plainu");
    assert_eq!(auth_request(rig.port, "md5u", "app"), 5, "md5u");
    assert_eq!(auth_request(rig.port, "scramu", "app"), 10, "scramu");
    assert_eq!(
        auth_request(rig.port, "aqu", "app"),
        10,
        "aqu via auth_query"
    );
    let good = [
        ("plainu", "plain-pw-1"),
        ("md5u", "md5-pw-2"),
        ("scramu", "scram-pw-3"),
        ("aqu", "aq-pw-4"),
    ];
    for (user, pw) in good {
        for _ in 0..2 {
            assert_eq!(rig.psql_ok(user, pw, "app", "select current_user"), user);
        }
    }
    // New server logins (after RECONNECT) for scramu and aqu can only use the SCRAM keys
    // their clients proved: the pooler holds no password of theirs.
    rig.admin("RECONNECT");
    for (user, pw) in good {
        assert_eq!(rig.psql_ok(user, pw, "app", "select current_user"), user);
    }
    let secrets = [
        "plain-pw-1",
        "md5-pw-2",
        "scram-pw-3",
        "aq-pw-4",
        "server-side-pw",
        "client-side-pw",
        scram.as_str(),
        md5.as_str(),
        c.password(),
    ];
    let server_port = c.port().to_string();
    rt().block_on(async {
        let refuse =
            |user: &'static str, pw: &'static str, db: &'static str, want: &'static str| {
                let cfg = rig.cfg(user, pw, db);
                let secrets = &secrets;
                let server_port = &server_port;
                async move {
                    let e = refused(&cfg, &format!("{user}/{db} with password {pw:?}")).await;
                    let text = msg(&e);
                    assert_eq!(code(&e), want, "{user}/{db}: {text}");
                    assert_eq!(
                        e.as_db_error().map(|d| d.severity()),
                        Some("FATAL"),
                        "{user}/{db}: {text}"
                    );
                    assert!(
                        !text.contains(server_port.as_str()) && !text.contains("127.0.0.1"),
                        "{user}/{db}: the error names the server's address: {text}"
                    );
                    for s in secrets.iter() {
                        assert!(
                            !text.contains(*s),
                            "{user}/{db}: the error holds a secret: {text}"
                        );
                    }
                    text
                }
            };
        refuse("plainu", "wrong", "app", "28P01").await;
        refuse("md5u", "wrong", "app", "28P01").await;
        refuse("scramu", "wrong", "app", "28P01").await;
        refuse("aqu", "wrong", "app", "28P01").await;
        refuse("ghost", "whatever", "app", "28P01").await;
        refuse("plainu", "plain-pw-1", "nosuchdb", "3D000").await;
        // The pooler lets srvbad in, the server refuses the auth file's password: the
        // client hears the server's refusal, without the server's address (its words:
        // a_server_login_refusal_reaches_the_client_in_the_servers_words).
        refuse("srvbad", "client-side-pw", "app", "28P01").await;
    });
    // Refusals do not disturb anyone else.
    for (user, pw) in good {
        assert_eq!(rig.psql_ok(user, pw, "app", "select current_user"), user);
    }

    // auth_type = scram-sha-256: a plain secret is asked for SCRAM too; an md5 secret
    // cannot do SCRAM and is refused.
    let rig2 = PoolRig::builder(&c)
        .mode("transaction")
        .set("auth_type", &q("scram-sha-256"))
        .user("plainu", "plain-pw-1")
        .user("md5u", &md5)
        .start();
    assert_eq!(auth_request(rig2.port, "plainu", "app"), 10);
    assert_eq!(
        rig2.psql_ok("plainu", "plain-pw-1", "app", "select current_user"),
        "plainu"
    );
    let o = rig2.psql("md5u", "md5-pw-2", "app", "select 1");
    assert!(
        !o.status.success(),
        "md5 secret with auth_type scram-sha-256 let in"
    );
    assert!(
        !stderr(&o).contains(&md5),
        "the error shows the secret: {}",
        stderr(&o)
    );
}

#[test]
fn a_server_login_refusal_reaches_the_client_in_the_servers_words() {
    let c = cluster();
    c.psql(
        "postgres",
        "CREATE ROLE srvbad LOGIN PASSWORD 'server-side-pw';",
    )
    .expect("create srvbad");
    let rig = PoolRig::builder(&c)
        .mode("transaction")
        .user("srvbad", "client-side-pw")
        .start();
    rt().block_on(async {
        // Straight to the server: FATAL 28P01 password authentication failed for user "srvbad".
        let direct = refused(
            &pg_cfg(c.port(), "srvbad", "client-side-pw", "postgres"),
            "srvbad straight to the server",
        )
        .await;
        let want = direct
            .as_db_error()
            .expect("a server error")
            .message()
            .to_owned();
        assert!(want.contains("srvbad"), "{want}");
        let through = refused(
            &rig.cfg("srvbad", "client-side-pw", "app"),
            "srvbad through the pool",
        )
        .await;
        assert_eq!(code(&through), "28P01", "{}", msg(&through));
        let got = through.as_db_error().map(|d| d.message().to_owned());
        assert!(
            got.as_deref().is_some_and(|m| m.contains("srvbad")),
            "through the pool: {got:?}; straight to the server: {want:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------
// 6. A pgbouncer.ini as PgBouncer reads it
// ---------------------------------------------------------------------------------------

#[test]
fn a_pgbouncer_ini_with_include_and_a_scram_userlist_is_a_drop_in() {
    let c = cluster();
    c.psql(
        "postgres",
        "CREATE ROLE scramu LOGIN PASSWORD 'scram-pw-3';",
    )
    .expect("create scramu");
    let scram = stored_secret(&c, "scramu");
    let d = Daemon::new("pool-ini", env!("CARGO_BIN_EXE_pgwarden"));
    let dir = d.dir.clone();
    fs::write(
        dir.join("userlist.txt"),
        format!(
            ";; PgBouncer's auth file\n\"scramu\" \"{scram}\"\n\"{}\" \"{}\"\n",
            c.superuser(),
            c.password()
        ),
    )
    .unwrap();
    fs::write(
        dir.join("databases.ini"),
        format!(
            "[databases]\napp = host=127.0.0.1 port={} dbname=postgres\n",
            c.port()
        ),
    )
    .unwrap();
    let ini = dir.join("pgbouncer.ini");
    let write_ini = |port: u16| {
        fs::write(
            &ini,
            format!(
                ";; a PgBouncer configuration\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = scram-sha-256\n\
                 auth_file = {dir}/userlist.txt\n\
                 admin_users = {su}\n\
                 pool_mode = transaction\n\
                 so_reuseport = 1\n\
                 %include {dir}/databases.ini\n",
                dir = dir.display(),
                su = c.superuser()
            ),
        )
        .unwrap();
    };
    write_ini(6999); // --check binds nothing
    let ini_arg = ini.display().to_string();
    let check = crate::pgwarden(&["pool", "--check", "--pgbouncer-ini", &ini_arg]);
    let out = stdout(&check);
    assert_eq!(
        check.status.code(),
        Some(0),
        "--check: {out}{}",
        stderr(&check)
    );
    let notes: Vec<&str> = out.lines().filter(|l| l.contains("so_reuseport")).collect();
    assert_eq!(notes.len(), 1, "one note for so_reuseport: {out}");
    assert!(
        notes[0].contains("pgbouncer.ini:10") && notes[0].contains("not supported"),
        "{}",
        notes[0]
    );
    assert!(
        out.contains("1 databases") && out.contains("pool_mode transaction"),
        "the %include's [databases] is read: {out}"
    );

    let ini2 = ini.clone();
    let rig = PoolRig::launch(d, &c, false, move |port| {
        write_ini(port);
        vec![
            "pool".into(),
            "--pgbouncer-ini".into(),
            ini2.display().to_string(),
        ]
    });
    assert_eq!(
        rig.psql_ok("scramu", "scram-pw-3", "app", "select current_user"),
        "scramu"
    );
    assert_eq!(
        rig.show("DATABASES").get("name", "app", "port"),
        Some(c.port().to_string())
    );

    // An unknown key: exit 2 and one line naming file:line.
    let broken = rig.d.dir.join("broken.ini");
    fs::write(
        &broken,
        "[pgbouncer]\nlisten_port = 7000\nlisten_prot = 7001\n[databases]\n",
    )
    .unwrap();
    let b = broken.display().to_string();
    assert_fails(
        &crate::pgwarden(&["pool", "--check", "--pgbouncer-ini", &b]),
        2,
        "broken.ini:3",
    );
    assert_fails(
        &crate::pgwarden(&["pool", "--pgbouncer-ini", &b]),
        2,
        "listen_prot",
    );
}

// ---------------------------------------------------------------------------------------
// 7. The admin console
// ---------------------------------------------------------------------------------------

/// PgBouncer 1.25.0's columns (src/admin.c, src/stats.c).
const POOLS_1_25: &[&str] = &[
    "database",
    "user",
    "cl_active",
    "cl_waiting",
    "cl_active_cancel_req",
    "cl_waiting_cancel_req",
    "sv_active",
    "sv_active_cancel",
    "sv_being_canceled",
    "sv_idle",
    "sv_used",
    "sv_tested",
    "sv_login",
    "maxwait",
    "maxwait_us",
    "pool_mode",
    "load_balance_hosts",
];
const STATS_1_25: &[&str] = &[
    "database",
    "total_server_assignment_count",
    "total_xact_count",
    "total_query_count",
    "total_received",
    "total_sent",
    "total_xact_time",
    "total_query_time",
    "total_wait_time",
    "total_client_parse_count",
    "total_server_parse_count",
    "total_bind_count",
    "avg_server_assignment_count",
    "avg_xact_count",
    "avg_query_count",
    "avg_recv",
    "avg_sent",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
    "avg_client_parse_count",
    "avg_server_parse_count",
    "avg_bind_count",
];
const SOCKETS_1_25: &[&str] = &[
    "type",
    "user",
    "database",
    "replication",
    "state",
    "addr",
    "port",
    "local_addr",
    "local_port",
    "connect_time",
    "request_time",
    "wait",
    "wait_us",
    "close_needed",
    "ptr",
    "link",
    "remote_pid",
    "tls",
    "application_name",
    "prepared_statements",
    "id",
];
const DATABASES_1_25: &[&str] = &[
    "name",
    "host",
    "port",
    "database",
    "force_user",
    "pool_size",
    "min_pool_size",
    "reserve_pool_size",
    "server_lifetime",
    "pool_mode",
    "load_balance_hosts",
    "max_connections",
    "current_connections",
    "max_client_connections",
    "current_client_connections",
    "paused",
    "disabled",
];
const USERS_1_25: &[&str] = &[
    "name",
    "pool_size",
    "reserve_pool_size",
    "pool_mode",
    "max_user_connections",
    "current_connections",
    "max_user_client_connections",
    "current_client_connections",
];
const LISTS_1_25: &[&str] = &[
    "databases",
    "users",
    "peers",
    "pools",
    "peer_pools",
    "free_clients",
    "used_clients",
    "login_clients",
    "free_servers",
    "used_servers",
    "dns_names",
    "dns_zones",
    "dns_queries",
    "dns_pending",
];

/// A pooler with traffic on `app`: a pool, a server connection, statistics.
fn console_rig(c: &Cluster) -> PoolRig {
    let rig = PoolRig::builder(c).mode("transaction").size(3).start();
    rig.psql_ok(c.superuser(), c.password(), "app", "select 1");
    rig
}

#[test]
fn console_columns_are_pgbouncer_1_25s() {
    let c = cluster();
    let rig = console_rig(&c);
    let mut wrong = Vec::new();
    for (what, want) in [
        ("POOLS", POOLS_1_25),
        ("CLIENTS", SOCKETS_1_25),
        ("SERVERS", SOCKETS_1_25),
        ("DATABASES", DATABASES_1_25),
        ("USERS", USERS_1_25),
        ("CONFIG", &["key", "value", "default", "changeable"][..]),
        ("LISTS", &["list", "items"][..]),
        ("VERSION", &["version"][..]),
    ] {
        let got = rig.show(what).columns;
        if got != want {
            let extra: Vec<&String> = got.iter().filter(|c| !want.contains(&c.as_str())).collect();
            let missing: Vec<&&str> = want
                .iter()
                .filter(|w| !got.contains(&w.to_string()))
                .collect();
            wrong.push(format!(
                "SHOW {what}: extra {extra:?}, missing {missing:?}, got {got:?}"
            ));
        }
    }
    // SHOW STATS: every 1.25 column, in 1.25's order (that nothing else is there:
    // show_stats_columns_are_exactly_pgbouncer_1_25s).
    let stats = rig.show("STATS").columns;
    let mut rest = stats.iter();
    for want in STATS_1_25 {
        if !rest.any(|c| c == want) {
            wrong.push(format!(
                "SHOW STATS: {want} missing or out of order in {stats:?}"
            ));
            break;
        }
    }
    let lists: Vec<String> = rig
        .show("LISTS")
        .rows
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    if lists != LISTS_1_25 {
        wrong.push(format!("SHOW LISTS rows: {lists:?}"));
    }
    let version = rig.show("VERSION");
    assert!(
        version.rows[0][0].starts_with("PgBouncer 1.25"),
        "{:?}",
        version.rows
    );
    let pools = rig.show("POOLS");
    assert_eq!(
        pools.get("database", "app", "pool_mode").as_deref(),
        Some("transaction")
    );
    assert!(
        wrong.is_empty(),
        "console columns differ from PgBouncer 1.25's:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn show_stats_columns_are_exactly_pgbouncer_1_25s() {
    let c = cluster();
    let rig = console_rig(&c);
    assert_eq!(rig.show("STATS").columns, STATS_1_25);
}

#[test]
fn console_columns_include_every_pgbouncer_1_18_column() {
    let c = cluster();
    let rig = console_rig(&c);
    let bouncer = PgBouncer::builder(&c)
        .pool_mode(pgw_testkit::PoolMode::Transaction)
        .start()
        .expect("start PgBouncer 1.18 (is pgbouncer installed? run ./run test)");
    let theirs = |sql: &str| {
        let o = run(
            psql_cmd(
                c.bin_dir(),
                bouncer.port(),
                c.superuser(),
                c.password(),
                "pgbouncer",
            )
            .args(["-A", "-F", "\u{1f}", "-P", "footer=off", "-c", sql]),
            DEADLINE,
            sql,
        );
        assert!(o.status.success(), "{sql} on PgBouncer: {}", stderr(&o));
        Table::parse(&stdout(&o)).columns
    };
    for what in ["POOLS", "STATS"] {
        let ours: BTreeSet<String> = rig.show(what).columns.into_iter().collect();
        let missing: Vec<String> = theirs(&format!("SHOW {what}"))
            .into_iter()
            .filter(|c| !ours.contains(c))
            .collect();
        assert!(
            missing.is_empty(),
            "SHOW {what}: PgBouncer 1.18's columns {missing:?} are missing from ours {ours:?}"
        );
    }
}

#[test]
fn console_pause_resume_reconnect_kill_reload_and_who_may_use_it() {
    let c = cluster();
    app_role(&c, &[]);
    let rig = PoolRig::builder(&c)
        .mode("transaction")
        .size(1)
        .user("app", "app-pw")
        .user("watcher", "watch-pw")
        .set("stats_users", "[\"watcher\"]")
        .database("other", &[])
        .start();
    let pid = || rig.psql_ok("app", "app-pw", "app", "select pg_backend_pid()");
    let first = pid();
    assert_eq!(pid(), first, "pool_size 1 reuses its server connection");

    // (PAUSE and RESUME: console_pause_holds_new_queries_until_resume.)
    // RECONNECT: the server connection is replaced.
    rig.admin("RECONNECT");
    let second = pid();
    assert_ne!(second, first, "RECONNECT kept the server connection");
    poll("the old server connection to close", || {
        let n = c
            .psql(
                "postgres",
                &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {first}"),
            )
            .unwrap();
        (n == "0").then_some(())
    });

    // KILL app: app's clients are disconnected, other's are not.
    rt().block_on(async {
        let (on_app, _t1) = connect(&rig.cfg("app", "app-pw", "app")).await.unwrap();
        let (on_other, _t2) = connect(&rig.cfg("app", "app-pw", "other")).await.unwrap();
        assert_eq!(one(&on_app, "select 1").await, "1");
        assert_eq!(one(&on_other, "select 1").await, "1");
        rig.admin("KILL app");
        within("KILL app to close the app client", async {
            while !on_app.is_closed() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(try_one(&on_app, "select 1").await.is_err());
        assert_eq!(one(&on_other, "select 2").await, "2", "KILL app hit other");
    });

    // RELOAD after editing pool.toml.
    assert_eq!(
        rig.show("CONFIG")
            .get("key", "default_pool_size", "value")
            .as_deref(),
        Some("1")
    );
    let text = fs::read_to_string(&rig.config).unwrap();
    assert!(text.contains("default_pool_size = 1\n"), "{text}");
    fs::write(
        &rig.config,
        text.replace("default_pool_size = 1\n", "default_pool_size = 7\n"),
    )
    .unwrap();
    rig.admin("RELOAD");
    assert_eq!(
        rig.show("CONFIG")
            .get("key", "default_pool_size", "value")
            .as_deref(),
        Some("7")
    );
    assert_eq!(
        rig.show("DATABASES")
            .get("name", "app", "pool_size")
            .as_deref(),
        Some("7")
    );

    // A stats user may SHOW but not control.
    let t = rig.table_as("watcher", "watch-pw", "SHOW POOLS");
    assert_eq!(t.columns, POOLS_1_25);
    let o = rig.psql("watcher", "watch-pw", "pgbouncer", "PAUSE");
    assert!(!o.status.success(), "a stats user could PAUSE");
    assert!(stderr(&o).contains("admin"), "{}", stderr(&o));
    assert_eq!(
        rig.show("STATE").get("key", "paused", "value").as_deref(),
        Some("no")
    );
    // Neither admin nor stats user: no console at all.
    let o = rig.psql("app", "app-pw", "pgbouncer", "SHOW POOLS");
    assert!(!o.status.success(), "a plain user reached the console");
    assert!(stderr(&o).contains("not allowed"), "{}", stderr(&o));
    assert_eq!(rig.psql_ok("app", "app-pw", "app", "select 3"), "3");
}

#[test]
fn console_pause_holds_new_queries_until_resume() {
    let c = cluster();
    app_role(&c, &[]);
    let rig = PoolRig::builder(&c)
        .mode("transaction")
        .size(1)
        .user("app", "app-pw")
        .start();
    assert_eq!(rig.psql_ok("app", "app-pw", "app", "select 1"), "1");
    // PAUSE returns once no server is in use; a query issued meanwhile waits for RESUME.
    rig.admin("PAUSE");
    assert_eq!(
        rig.show("STATE").get("key", "paused", "value").as_deref(),
        Some("yes"),
        "SHOW STATE right after PAUSE"
    );
    let waiting = {
        let (bin, port) = (rig.bin.clone(), rig.port);
        std::thread::spawn(move || {
            run(
                psql_cmd(&bin, port, "app", "app-pw", "app").args(["-A", "-t", "-c", "select 42"]),
                DEADLINE,
                "a query while paused",
            )
        })
    };
    poll("the paused query to wait in SHOW CLIENTS", || {
        assert!(!waiting.is_finished(), "a query completed while paused");
        let t = rig.show("CLIENTS");
        let state = t.columns.iter().position(|c| c == "state")?;
        let db = t.columns.iter().position(|c| c == "database")?;
        t.rows
            .iter()
            .any(|r| r[db] == "app" && r[state] == "waiting")
            .then_some(())
    });
    assert!(!waiting.is_finished(), "a query completed while paused");
    rig.admin("RESUME");
    let o = waiting.join().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "42");
    assert_eq!(
        rig.show("STATE").get("key", "paused", "value").as_deref(),
        Some("no")
    );
}

// ---------------------------------------------------------------------------------------
// 8. Metrics: Debian's exporter on the console, and our own endpoint
// ---------------------------------------------------------------------------------------

/// Debian's prometheus-pgbouncer-exporter 1.7 (2016) as its `main` runs it (its own
/// connection helper, collectors and HTTP handler, from its installed package), with the
/// collectors whose columns every PgBouncer since 1.8 has: SHOW POOLS and SHOW LISTS. Its
/// SHOW STATS collector reads `total_requests` (gone since PgBouncer 1.8) and its SHOW
/// DATABASES collector `reserve_pool` (renamed `reserve_pool_size` by 1.25), so the
/// unmodified program dies with a KeyError against Debian's own PgBouncer 1.18 too.
const EXPORTER_SCRIPT: &str = r#"
import os, logging
from http.server import HTTPServer
from prometheus_client.core import REGISTRY
from prometheus_pgbouncer_exporter.utils import get_connection
from prometheus_pgbouncer_exporter.exposition import create_request_handler
from prometheus_pgbouncer_exporter.collectors import PoolsCollector, ListsCollector

logging.basicConfig(level=logging.DEBUG)
connection = get_connection(os.environ["PGBOUNCER_USER"], os.environ["PGBOUNCER_PORT"],
                            os.environ["PGBOUNCER_HOST"])
REGISTRY.register(PoolsCollector(connection=connection, databases=None))
REGISTRY.register(ListsCollector(connection=connection))
httpd = HTTPServer((os.environ["HOST"], int(os.environ["PORT"])), create_request_handler("/dev/null"))
httpd.serve_forever()
"#;

fn http_get(port: u16, path: &str) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let body = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("HTTP {status}: {body}"));
    }
    Ok(body)
}

/// Starts the exporter against the console on a free port and returns that port: Debian's
/// program itself with its config file (YAML form: `key: value`) when `script` is None,
/// else `python3 -c script` with the same settings in the environment.
fn start_exporter(d: &mut Daemon, rig: &PoolRig, script: Option<&str>) -> u16 {
    let port = ports::reserve().expect("a free port");
    let yml = d.dir.join("exporter.yml");
    fs::write(
        &yml,
        format!(
            "host: 127.0.0.1\nport: {port}\npgbouncer-host: 127.0.0.1\npgbouncer-port: {}\n\
             pgbouncer-user: {}\n",
            rig.port, rig.superuser
        ),
    )
    .unwrap();
    // psycopg2 (libpq) takes the console password from the environment.
    d.env = vec![("PGPASSWORD".into(), rig.password.clone())];
    let args = match script {
        None => vec!["-c".to_owned(), yml.display().to_string()],
        Some(script) => {
            d.env.extend([
                ("HOST".into(), "127.0.0.1".into()),
                ("PORT".into(), port.to_string()),
                ("PGBOUNCER_HOST".into(), "127.0.0.1".into()),
                ("PGBOUNCER_PORT".into(), rig.port.to_string()),
                ("PGBOUNCER_USER".into(), rig.superuser.clone()),
            ]);
            vec!["-c".to_owned(), script.to_owned()]
        }
    };
    d.spawn(&args);
    port
}

#[test]
fn prometheus_exporter_and_the_metrics_endpoint_see_the_pool() {
    require_python_drivers();
    let c = cluster();
    app_role(&c, &[]);
    let rig = PoolRig::builder(&c)
        .mode("transaction")
        .size(2)
        .user("app", "app-pw")
        .metrics()
        .start();
    for i in 0..5 {
        rig.psql_ok("app", "app-pw", "app", &format!("select {i}"));
    }
    rt().block_on(async {
        // One client stays connected while the exporters scrape.
        let (client, _conn) = connect(&rig.cfg("app", "app-pw", "app")).await.unwrap();
        exec(&client, "BEGIN; select 1; COMMIT").await;

        let mut sub = Daemon::new("exporter", PYTHON);
        let sub_port = start_exporter(&mut sub, &rig, Some(EXPORTER_SCRIPT));
        let body = tokio::task::block_in_place(|| {
            poll("the exporter's /metrics", || {
                if let Some(s) = sub.exited() {
                    panic!("the exporter exited ({s}):\n{}", sub.log());
                }
                http_get(sub_port, "/metrics").ok()
            })
        });
        ports::release(sub_port);
        let active = body
            .lines()
            .find(|l| {
                l.starts_with("pgbouncer_active_clients{")
                    && l.contains("database=\"app\"")
                    && l.contains("user=\"app\"")
            })
            .unwrap_or_else(|| panic!("no pgbouncer_active_clients for app:\n{body}"));
        let v: f64 = active.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(v >= 1.0, "{active}");
        assert!(
            body.lines()
                .any(|l| l.starts_with("pgbouncer_waiting_clients{")
                    && l.contains("database=\"app\"")),
            "{body}"
        );
        assert!(body.contains("\npgbouncer_pools "), "{body}");

        // The unmodified program: it serves metrics, or it fails on a column that PgBouncer
        // itself no longer has.
        let mut full = Daemon::new("exporter-full", EXPORTER);
        let full_port = start_exporter(&mut full, &rig, None);
        let outcome = tokio::task::block_in_place(|| {
            poll("the unmodified exporter to serve or exit", || {
                if let Some(s) = full.exited() {
                    return Some(Err(format!("exited ({s})")));
                }
                match http_get(full_port, "/metrics") {
                    Ok(b) => Some(Ok(b)),
                    Err(e) if e.contains("HTTP") => Some(Err(e)),
                    Err(_) => None,
                }
            })
        });
        ports::release(full_port);
        match outcome {
            Ok(b) => assert!(
                b.lines().any(|l| l.starts_with("pgbouncer_active_clients{")
                    && l.contains("database=\"app\"")),
                "{b}"
            ),
            Err(e) => {
                let log = full.log();
                let stats = rig.show("STATS").columns;
                let dbs = rig.show("DATABASES").columns;
                let stale = (log.contains("KeyError: 'total_requests'")
                    && !stats.contains(&"total_requests".to_owned()))
                    || (log.contains("KeyError: 'reserve_pool'")
                        && !dbs.contains(&"reserve_pool".to_owned()));
                assert!(
                    stale,
                    "the exporter failed ({e}) on something other than its pre-1.8 columns:\n{log}"
                );
            }
        }
        drop(client);
    });

    // Our own endpoint: latency histograms and counters per pool.
    let body = http_get(rig.metrics_port.unwrap(), "/metrics").expect("GET /metrics");
    let series = |name: &str| -> Vec<&str> {
        body.lines()
            .filter(|l| {
                l.starts_with(name) && l.contains("database=\"app\"") && l.contains("user=\"app\"")
            })
            .collect()
    };
    let buckets = series("pgwarden_pool_query_duration_seconds_bucket{");
    assert!(!buckets.is_empty(), "no query histogram for app:\n{body}");
    assert!(
        buckets.iter().any(|l| l.contains("le=\"+Inf\"")),
        "{buckets:?}"
    );
    let xacts = series("pgwarden_pool_transactions_total{");
    assert_eq!(xacts.len(), 1, "{body}");
    let n: f64 = xacts[0].rsplit(' ').next().unwrap().parse().unwrap();
    // 5 psql transactions and the one of the client kept connected (how exactly every
    // transaction is counted: statistics_count_every_transaction).
    assert!(n >= 6.0, "{}", xacts[0]);
}

#[test]
fn statistics_count_every_transaction() {
    let c = cluster();
    app_role(&c, &[]);
    let rig = PoolRig::builder(&c)
        .mode("transaction")
        .size(1)
        .user("app", "app-pw")
        .metrics()
        .start();
    let count = |col: &str| -> u64 {
        rig.show("STATS")
            .get("database", "app", col)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    rt().block_on(async {
        // Two clients with their own application_name take turns on one server connection.
        let mut one_cfg = rig.cfg("app", "app-pw", "app");
        one_cfg.application_name("one");
        let mut two_cfg = rig.cfg("app", "app-pw", "app");
        two_cfg.application_name("two");
        let (one_c, _t1) = connect(&one_cfg).await.unwrap();
        let (two_c, _t2) = connect(&two_cfg).await.unwrap();
        let (x0, q0) =
            tokio::task::block_in_place(|| (count("total_xact_count"), count("total_query_count")));
        for i in 0..10 {
            assert_eq!(one(&one_c, &format!("select {i}")).await, i.to_string());
            assert_eq!(one(&two_c, &format!("select {i}")).await, i.to_string());
        }
        let (x1, q1) =
            tokio::task::block_in_place(|| (count("total_xact_count"), count("total_query_count")));
        assert_eq!(
            (x1 - x0, q1 - q0),
            (20, 20),
            "SHOW STATS counted {} transactions and {} queries of 20",
            x1 - x0,
            q1 - q0
        );
    });
    let body = http_get(rig.metrics_port.unwrap(), "/metrics").expect("GET /metrics");
    let count_line = body
        .lines()
        .find(|l| {
            l.starts_with("pgwarden_pool_query_duration_seconds_count{")
                && l.contains("database=\"app\"")
        })
        .unwrap_or_else(|| panic!("no query histogram count:\n{body}"));
    let n: f64 = count_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 20.0, "{count_line}");
}

// ---------------------------------------------------------------------------------------
// 9. Reliability
// ---------------------------------------------------------------------------------------

#[test]
fn a_server_restart_or_a_cut_network_costs_at_most_one_clear_error() {
    let c = cluster();
    app_role(&c, &[]);
    let proxy = Proxy::to_port(c.port()).expect("start a proxy to the server");
    let rig = PoolRig::builder(&c)
        .mode("transaction")
        .size(1)
        .user("app", "app-pw")
        .database("viaproxy", &[("port", &proxy.port().to_string())])
        .start();
    let before = rig.psql_ok("app", "app-pw", "app", "select pg_backend_pid()");
    rig.psql_ok("app", "app-pw", "viaproxy", "select 1");
    let mut errors = Vec::new();
    rt().block_on(async {
        // A client connected across the restart, idle between transactions.
        let (long, _t) = connect(&rig.cfg("app", "app-pw", "app")).await.unwrap();
        assert_eq!(one(&long, "select 1").await, "1");
        tokio::task::block_in_place(|| c.restart().expect("restart the server"));
        match try_one(&long, "select pg_backend_pid()").await {
            Ok(pid) => assert_ne!(pid, before, "a server connection survived a restart?"),
            Err(e) => errors.push(msg(&e)),
        }
    });
    let o = rig.psql("app", "app-pw", "app", "select 1");
    if !o.status.success() {
        errors.push(stderr(&o));
    }
    assert!(
        errors.len() <= 1,
        "more than one error after a restart: {errors:?}\npool log:\n{}",
        rig.log()
    );
    for e in &errors {
        assert!(!e.trim().is_empty(), "an empty error");
    }
    assert_eq!(rig.psql_ok("app", "app-pw", "app", "select 1"), "1");

    // The network to the server cut: clear errors, no hang; restored: served again.
    proxy.cut();
    let o = rig.psql("app", "app-pw", "viaproxy", "select 1");
    assert!(
        !o.status.success(),
        "a query through a cut network succeeded"
    );
    assert!(!stderr(&o).trim().is_empty());
    let o = rig.psql("app", "app-pw", "viaproxy", "select 1");
    assert!(
        !o.status.success(),
        "a query through a cut network succeeded"
    );
    proxy.restore();
    poll("viaproxy to serve again after restore", || {
        rig.psql("app", "app-pw", "viaproxy", "select 1")
            .status
            .success()
            .then_some(())
    });
}

#[test]
fn query_wait_timeout_and_max_client_conn_refuse_instead_of_hanging() {
    let c = cluster();
    app_role(&c, &[]);
    let rig = PoolRig::builder(&c)
        .mode("transaction")
        .size(1)
        .set("query_wait_timeout", "1")
        .set("max_client_conn", "3")
        .user("app", "app-pw")
        .start();
    rt().block_on(async {
        let cfg = rig.cfg("app", "app-pw", "app");
        let (holder, _t1) = connect(&cfg).await.unwrap();
        exec(&holder, "BEGIN; select 1").await;
        // The only server connection is in holder's transaction: the second client gets
        // an error naming query_wait_timeout, not a hang.
        let (waiter, _t2) = connect(&cfg).await.unwrap();
        let e = try_one(&waiter, "select 1")
            .await
            .expect_err("a query with no server connection free succeeded");
        assert!(msg(&e).contains("query_wait_timeout"), "{}", msg(&e));
        exec(&holder, "COMMIT").await;
        assert_eq!(one(&holder, "select 2").await, "2");
        drop(waiter);

        // max_client_conn = 3: a fourth client is refused with 53300.
        let (c2, _t3) = connect(&cfg).await.unwrap();
        let (c3, _t4) = within("a third client", async {
            // waiter's slot is freed once the pooler sees it gone.
            loop {
                match connect(&cfg).await {
                    Ok(x) => break x,
                    Err(e) if code(&e) == "53300" => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(e) => panic!("third client: {}", msg(&e)),
                }
            }
        })
        .await;
        let e = refused(&cfg, "a fourth client with max_client_conn = 3").await;
        assert_eq!(code(&e), "53300", "{}", msg(&e));
        for (i, cl) in [&holder, &c2, &c3].into_iter().enumerate() {
            assert_eq!(one(cl, "select 5").await, "5", "client {i}");
        }
        drop(c3);
        within("a slot to free up", async {
            loop {
                match connect(&cfg).await {
                    Ok((cl, _t)) => break assert_eq!(one(&cl, "select 6").await, "6"),
                    Err(e) if code(&e) == "53300" => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(e) => panic!("{}", msg(&e)),
                }
            }
        })
        .await;
    });
}

#[test]
fn hostile_bytes_close_only_their_own_connection() {
    let c = cluster();
    app_role(&c, &[]);
    let rig = PoolRig::builder(&c)
        .mode("transaction")
        .set("auth_type", &q("trust"))
        .user("app", "app-pw")
        .start();
    let oversized = startup_packet(&[("user", "app"), ("application_name", &"a".repeat(20_000))]);
    let garbage = {
        let mut g = 16i32.to_be_bytes().to_vec();
        g.extend_from_slice(b"\x12\x34GARBAGE!\xff\xfe\x00");
        g
    };
    let cases: Vec<(&str, bool, Vec<u8>)> = vec![
        ("a length field of 0", false, vec![0, 0, 0, 0]),
        (
            "a length field of 2^31-1",
            false,
            vec![0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0],
        ),
        (
            "a negative length field",
            false,
            vec![0xff, 0xff, 0xff, 0xf0],
        ),
        ("a garbage startup packet", false, garbage),
        ("an oversized startup packet", false, oversized),
        (
            "after login, a message of length 2",
            true,
            b"Q\x00\x00\x00\x02".to_vec(),
        ),
        (
            "after login, a message of length 2^31-1",
            true,
            b"Q\x7f\xff\xff\xffselect 1".to_vec(),
        ),
        (
            "after login, an unknown message type",
            true,
            b"?\x00\x00\x00\x04".to_vec(),
        ),
    ];
    for (what, login, bytes) in cases {
        let mut s = raw_connect(rig.port);
        if login {
            s.write_all(&startup_packet(&[("user", "app"), ("database", "app")]))
                .unwrap();
            loop {
                let (tag, body) = read_msg(&mut s).unwrap_or_else(|| panic!("{what}: login"));
                assert_ne!(
                    tag,
                    b'E',
                    "{what}: login refused: {}",
                    String::from_utf8_lossy(&body)
                );
                if tag == b'Z' {
                    break;
                }
            }
        }
        // The pooler may close before reading everything: a write error is an answer too.
        let _ = s.write_all(&bytes);
        let got = until_closed(&mut s);
        for (tag, body) in &got {
            assert!(
                *tag == b'E' || *tag == b'N',
                "{what}: unexpected reply {:?} {}",
                *tag as char,
                String::from_utf8_lossy(body)
            );
        }
        if let Some((_, body)) = got.iter().find(|(t, _)| *t == b'E') {
            assert_eq!(
                error_field(body, b'S').as_deref(),
                Some("FATAL"),
                "{what}: {}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            rig.psql_ok("app", "app-pw", "app", "select 1"),
            "1",
            "after {what}"
        );
    }
    // Bytes sent after an SSLRequest, before its answer, are refused rather than read as
    // if they had come through TLS (CVE-2021-23214): a FATAL error, not 'N' and a login.
    let mut s = raw_connect(rig.port);
    let mut bytes = 8i32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&80877103i32.to_be_bytes());
    bytes.extend_from_slice(&startup_packet(&[("user", "app"), ("database", "app")]));
    s.write_all(&bytes).unwrap();
    let got = until_closed(&mut s);
    let err = got
        .iter()
        .find(|(t, _)| *t == b'E')
        .map(|(_, body)| String::from_utf8_lossy(body).into_owned())
        .unwrap_or_default();
    assert!(
        err.contains("unencrypted data after the encryption request"),
        "data after SSLRequest: {got:?}"
    );
    assert_eq!(rig.psql_ok("app", "app-pw", "app", "select 1"), "1");
}

#[test]
fn a_cancel_request_through_the_pool_cancels_only_its_own_query() {
    let c = cluster();
    app_role(&c, &[]);
    let rig = PoolRig::builder(&c)
        .mode("transaction")
        .size(3)
        .user("app", "app-pw")
        .start();
    rt().block_on(async {
        // A lock held directly on the server keeps the other client's query running.
        let (direct, _t0) = connect(&direct_cfg(&c)).await.unwrap();
        exec(&direct, "select pg_advisory_lock(4242)").await;
        let cfg = rig.cfg("app", "app-pw", "app");
        let (victim, _t1) = connect(&cfg).await.unwrap();
        let (bystander, _t2) = connect(&cfg).await.unwrap();
        let token = victim.cancel_token();
        let sleeping = tokio::spawn(async move {
            let r = victim.simple_query("select pg_sleep(30)").await;
            (r.map(|_| ()), victim)
        });
        let waiting = tokio::spawn(async move {
            let r = bystander
                .simple_query("select pg_advisory_xact_lock(4242), 7")
                .await;
            (r, bystander)
        });
        let active = |sql: &'static str, extra: &'static str| {
            let direct = &direct;
            async move {
                within(sql, async {
                    loop {
                        let n = one(
                            direct,
                            &format!(
                                "select count(*) from pg_stat_activity where usename = 'app' \
                                 and state = 'active' and query = '{sql}' {extra}"
                            ),
                        )
                        .await;
                        if n == "1" {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
                .await
            }
        };
        active("select pg_sleep(30)", "").await;
        active(
            "select pg_advisory_xact_lock(4242), 7",
            "and wait_event_type = 'Lock'",
        )
        .await;
        // The cancel key the pooler gave, sent to the pooler's address.
        within("cancel", token.cancel_query(NoTls))
            .await
            .expect("send the cancel request");
        let (r, _victim) = tokio::time::timeout(Duration::from_secs(15), sleeping)
            .await
            .expect("the cancelled query must end well before its 30 s")
            .unwrap();
        let e = r.expect_err("pg_sleep(30) was not cancelled");
        assert_eq!(code(&e), "57014", "{}", msg(&e));
        // The other client's query is still waiting for the lock, not cancelled.
        active(
            "select pg_advisory_xact_lock(4242), 7",
            "and wait_event_type = 'Lock'",
        )
        .await;
        assert!(!waiting.is_finished(), "the bystander's query ended");
        exec(&direct, "select pg_advisory_unlock(4242)").await;
        let (r, bystander) = within("the bystander's query", waiting).await.unwrap();
        let rows = r.unwrap_or_else(|e| panic!("the bystander's query failed: {}", msg(&e)));
        let v = rows.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(1).map(str::to_owned),
            _ => None,
        });
        assert_eq!(v.as_deref(), Some("7"));
        assert_eq!(one(&bystander, "select 8").await, "8");
    });
}

#[test]
fn sighup_with_a_broken_config_keeps_serving_and_sigterm_exits_0() {
    let c = cluster();
    app_role(&c, &[]);
    let mut rig = PoolRig::builder(&c)
        .mode("transaction")
        .size(3)
        .user("app", "app-pw")
        .start();
    let pool_size = |rig: &PoolRig| {
        rig.show("CONFIG")
            .get("key", "default_pool_size", "value")
            .unwrap_or_default()
    };
    assert_eq!(pool_size(&rig), "3");
    let good = fs::read_to_string(&rig.config).unwrap();
    fs::write(&rig.config, "[pool\nthis is not toml\n").unwrap();
    rig.d.signal(Signal::SIGHUP);
    poll("the failed reload in the log", || {
        rig.log().contains("reload failed").then_some(())
    });
    assert_eq!(rig.psql_ok("app", "app-pw", "app", "select 1"), "1");
    assert_eq!(pool_size(&rig), "3", "a broken config was applied");
    // A good edit and SIGHUP: applied.
    fs::write(
        &rig.config,
        good.replace("default_pool_size = 3\n", "default_pool_size = 5\n"),
    )
    .unwrap();
    rig.d.signal(Signal::SIGHUP);
    poll("SIGHUP to apply default_pool_size = 5", || {
        (pool_size(&rig) == "5").then_some(())
    });

    // SIGTERM with an idle client: the client is let go and the pooler exits 0.
    rt().block_on(async {
        let (client, _t) = connect(&rig.cfg("app", "app-pw", "app")).await.unwrap();
        assert_eq!(one(&client, "select 1").await, "1");
        rig.d.signal(Signal::SIGTERM);
        let status = tokio::task::block_in_place(|| rig.d.wait_exit(DEADLINE))
            .unwrap_or_else(|| panic!("no exit after SIGTERM:\n{}", rig.log()));
        assert_eq!(status.code(), Some(0), "{status}:\n{}", rig.log());
        within("the idle client to be closed", async {
            while !client.is_closed() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    });
}

// ---------------------------------------------------------------------------------------
// 10. Client-side timeouts and parked clients
// ---------------------------------------------------------------------------------------

#[test]
fn client_idle_timeout_closes_an_idle_client_and_spares_a_busy_one() {
    let c = cluster();
    app_role(&c, &[]);
    let rig = PoolRig::builder(&c)
        .mode("transaction")
        .size(2)
        .set("client_idle_timeout", "1")
        .user("app", "app-pw")
        .start();
    rt().block_on(async {
        let cfg = rig.cfg("app", "app-pw", "app");
        let (idle, idle_conn) = connect_watched(&cfg).await.unwrap();
        assert_eq!(one(&idle, "select 1").await, "1");
        // A client with a query every 200 ms, for over three times the timeout and until
        // the idle client is gone, keeps its connection.
        let (busy, busy_conn) = connect_watched(&cfg).await.unwrap();
        within(
            "the idle client to be closed while the busy one works",
            async {
                let mut i = 0;
                while i < 15 || !idle_conn.is_finished() {
                    match try_one(&busy, &format!("select {i}")).await {
                        Ok(v) => assert_eq!(v, i.to_string()),
                        Err(e) => panic!("the busy client's query {i}: {}", msg(&e)),
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        )
        .await;
        let e = closed_with("the idle client's connection", idle_conn).await;
        assert!(msg(&e).contains("client_idle_timeout"), "{}", msg(&e));
        assert!(
            idle.is_closed(),
            "the idle client's connection is still open"
        );
        assert!(
            try_one(&idle, "select 2").await.is_err(),
            "a query on a client closed by client_idle_timeout succeeded"
        );
        assert!(!busy.is_closed() && !busy_conn.is_finished());
        assert_eq!(one(&busy, "select 3").await, "3");
        // A new client is served.
        let (fresh, _t) = connect(&cfg).await.unwrap();
        assert_eq!(one(&fresh, "select 4").await, "4");
    });
}

#[test]
fn idle_transaction_timeout_rolls_back_and_frees_the_server_connection() {
    let c = cluster();
    c.psql("postgres", "CREATE TABLE itt (x int);")
        .expect("create itt");
    app_role(&c, &["itt"]);
    // One server connection: had the timed-out client's one leaked, the next client would
    // get query_wait_timeout.
    let rig = PoolRig::builder(&c)
        .mode("transaction")
        .size(1)
        .set("idle_transaction_timeout", "1")
        .set("query_wait_timeout", "10")
        .user("app", "app-pw")
        .start();
    rt().block_on(async {
        let cfg = rig.cfg("app", "app-pw", "app");
        // Idle between transactions all along: not this timeout's business.
        let (between, between_conn) = connect_watched(&cfg).await.unwrap();
        assert_eq!(one(&between, "select 1").await, "1");

        let (stuck, stuck_conn) = connect_watched(&cfg).await.unwrap();
        exec(&stuck, "BEGIN; INSERT INTO itt VALUES (1)").await;
        let e = closed_with("the client idle in its transaction", stuck_conn).await;
        assert!(msg(&e).contains("idle_transaction_timeout"), "{}", msg(&e));
        assert!(
            try_one(&stuck, "COMMIT").await.is_err(),
            "COMMIT on a client closed by idle_transaction_timeout succeeded"
        );
        tokio::task::block_in_place(|| {
            poll("no server connection left idle in a transaction", || {
                let n = c
                    .psql(
                        "postgres",
                        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' \
                         AND state LIKE 'idle in transaction%'",
                    )
                    .unwrap();
                (n == "0").then_some(())
            })
        });

        let (next, _t) = connect(&cfg).await.unwrap();
        assert_eq!(
            one(&next, "select count(*) from itt").await,
            "0",
            "the row of the timed-out transaction is visible"
        );
        assert_eq!(
            one(&next, "select pg_current_xact_id_if_assigned() is null").await,
            "t",
            "the next client is inside the timed-out transaction"
        );
        assert_eq!(one(&between, "select 2").await, "2");
        assert!(!between_conn.is_finished());

        // A transaction with a statement every 200 ms, for over three times the timeout,
        // is not cut.
        exec(&next, "BEGIN").await;
        for i in 0..15 {
            match try_one(&next, &format!("insert into itt values ({i}) returning x")).await {
                Ok(v) => assert_eq!(v, i.to_string()),
                Err(e) => panic!("statement {i} of a busy transaction: {}", msg(&e)),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        exec(&next, "COMMIT").await;
        assert_eq!(one(&between, "select count(*) from itt").await, "15");
    });
    assert_eq!(
        c.psql("postgres", "SELECT count(*) FROM itt").unwrap(),
        "15"
    );
}

#[test]
fn query_timeout_cancels_a_long_query_and_the_pool_serves_on() {
    let c = cluster();
    app_role(&c, &[]);
    let rig = PoolRig::builder(&c)
        .mode("transaction")
        .size(1)
        .set("query_timeout", "1")
        .set("query_wait_timeout", "10")
        .user("app", "app-pw")
        .start();
    rt().block_on(async {
        let cfg = rig.cfg("app", "app-pw", "app");
        let (slow, slow_conn) = connect_watched(&cfg).await.unwrap();
        // The limit is per query: short queries adding up to more than it are served.
        for i in 0..5 {
            assert_eq!(
                one(&slow, &format!("select {i} from pg_sleep(0.25)")).await,
                i.to_string()
            );
        }
        let r = tokio::time::timeout(
            Duration::from_secs(15),
            slow.simple_query("select pg_sleep(30)"),
        )
        .await
        .expect("query_timeout = 1 must end pg_sleep(30) well before its 30 s");
        let e = r.expect_err("pg_sleep(30) outlived query_timeout = 1");
        // The client is disconnected, as PgBouncer does; what it was told is the query's
        // error, or the connection's when it only saw the socket close.
        let said = match within("the timed-out client's connection", slow_conn)
            .await
            .expect("the connection task")
        {
            Ok(()) => msg(&e),
            Err(ce) => format!("{} / {}", msg(&e), msg(&ce)),
        };
        assert!(
            code(&e) == "57014" || said.contains("query_timeout"),
            "{said}"
        );
        assert!(slow.is_closed());
        // The query is cancelled on the server too, not left to sleep its 30 s.
        let (direct, _t0) = connect(&direct_cfg(&c)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(15), async {
            while one(
                &direct,
                "select count(*) from pg_stat_activity \
                 where query = 'select pg_sleep(30)' and state = 'active'",
            )
            .await
                != "0"
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("pg_sleep(30) still runs on the server after query_timeout");
        // The pool's one server slot is free: a new client is served.
        let (next, _t) = connect(&cfg).await.unwrap();
        assert_eq!(one(&next, "select 2").await, "2");
        assert_eq!(one(&next, "select 3 from pg_sleep(0.1)").await, "3");
    });
}

#[test]
fn a_parked_client_keeps_its_settings_and_prepared_statements() {
    let c = cluster();
    app_role(&c, &[]);
    let rig = PoolRig::builder(&c)
        .mode("transaction")
        .size(1)
        .user("app", "app-pw")
        .start();
    rt().block_on(async {
        let cfg = rig.cfg("app", "app-pw", "app");
        let (a, a_conn) = connect_watched(&cfg).await.unwrap();
        assert_eq!(one(&a, "select 1").await, "1");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(one(&a, "select 2").await, "2");
        exec(&a, "SET application_name = 'parked'").await;
        let plus = within("prepare", a.prepare("select $1::int + 40"))
            .await
            .unwrap_or_else(|e| fail("prepare select $1::int + 40", &e));
        let run = |n: i32| {
            let (a, plus) = (&a, &plus);
            async move {
                let r: i32 = within("execute", a.query_one(plus, &[&n]))
                    .await
                    .unwrap_or_else(|e| fail(&format!("the prepared statement with {n}"), &e))
                    .get(0);
                r
            }
        };
        assert_eq!(run(2).await, 42);
        assert_eq!(
            one(&a, "select current_setting('application_name')").await,
            "parked"
        );
        let pid = one(&a, "select pg_backend_pid()").await;

        // While A idles, another client uses the pool's only server connection (without
        // A's SET), which RECONNECT then replaces: A's statement and SET must follow A to
        // the new one. (B's own startup application_name against A's SET:
        // another_clients_set_does_not_undo_a_startup_application_name.)
        let (b, _tb) = connect(&cfg).await.unwrap();
        assert_ne!(
            one(&b, "select current_setting('application_name')").await,
            "parked",
            "A's SET reached B"
        );
        tokio::task::block_in_place(|| rig.admin("RECONNECT"));
        assert_eq!(one(&b, "select 3").await, "3");
        tokio::time::sleep(Duration::from_secs(1)).await;

        assert_eq!(run(5).await, 45);
        assert_eq!(
            one(&a, "select current_setting('application_name')").await,
            "parked"
        );
        assert_ne!(
            one(&a, "select pg_backend_pid()").await,
            pid,
            "RECONNECT kept the server connection"
        );
        for i in 0..5 {
            assert_eq!(one(&a, &format!("select {i}")).await, i.to_string());
            assert_eq!(run(i).await, i + 40);
        }
        assert!(
            !a.is_closed() && !a_conn.is_finished(),
            "the parked client's connection was closed"
        );
        assert_ne!(
            one(&b, "select current_setting('application_name')").await,
            "parked",
            "A's SET reached B"
        );
    });
}

#[test]
fn another_clients_set_does_not_undo_a_startup_application_name() {
    let c = cluster();
    app_role(&c, &[]);
    let rig = PoolRig::builder(&c)
        .mode("transaction")
        .size(1)
        .user("app", "app-pw")
        .start();
    rt().block_on(async {
        let cfg = rig.cfg("app", "app-pw", "app");
        let (a, _ta) = connect(&cfg).await.unwrap();
        exec(&a, "SET application_name = 'a'").await;
        // B's first transaction on the server connection A's SET was made on runs with
        // B's own application_name (from its startup packet), not A's, nor the server's
        // default.
        let mut bcfg = rig.cfg("app", "app-pw", "app");
        bcfg.application_name("b");
        let (b, _tb) = connect(&bcfg).await.unwrap();
        for i in 0..3 {
            assert_eq!(
                one(&b, "select current_setting('application_name')").await,
                "b",
                "B's transaction {i} after A's SET application_name"
            );
        }
        assert_eq!(
            one(&a, "select current_setting('application_name')").await,
            "a"
        );
    });
}

#[test]
fn query_timeout_counts_from_the_query_start_while_the_server_sends_notices() {
    let c = cluster();
    app_role(&c, &[]);
    let rig = PoolRig::builder(&c)
        .mode("transaction")
        .size(1)
        .set("query_timeout", "1")
        .set("query_wait_timeout", "10")
        .user("app", "app-pw")
        .start();
    rt().block_on(async {
        let cfg = rig.cfg("app", "app-pw", "app");
        let (chatty, _t1) = connect(&cfg).await.unwrap();
        // 20 s of work with a NOTICE every 250 ms: the messages from the server do not
        // make it a new query, the limit still applies (PgBouncer counts from the start).
        let sql = "DO $$ BEGIN FOR i IN 1..80 LOOP \
                   RAISE NOTICE 'tick %', i; PERFORM pg_sleep(0.25); \
                   END LOOP; END $$";
        let r = tokio::time::timeout(Duration::from_secs(15), chatty.simple_query(sql))
            .await
            .expect("query_timeout = 1 must end a 20 s query well before its end");
        let e = r.expect_err("a 20 s query sending notices outlived query_timeout = 1");
        assert!(
            code(&e) == "57014" || msg(&e).contains("query_timeout"),
            "{}",
            msg(&e)
        );
        let (next, _t2) = connect(&cfg).await.unwrap();
        assert_eq!(one(&next, "select 1").await, "1");
    });
}
