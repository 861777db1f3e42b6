//! `pgwarden ha` on real etcd (pgw-testkit's Etcd) and real PostgreSQL: each test starts its
//! own etcd and agents (the pgwarden binary, one process per node) on free loopback ports.
//! Agents reach etcd through a pgw-testkit Proxy when a test partitions a node. Everything
//! is stopped on drop, and by a watchdog if the test process dies.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgw_cluster::ports;
use pgw_cluster::watchdog::{Watchdog, Watched};
use pgw_node::{BinDir, Node, OsUser};
use pgw_testkit::{Etcd, Proxy};

use crate::{pgwarden, stderr, stdout};

const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";

/// How a test's cluster is made.
pub struct HaBuilder {
    nodes: usize,
    etcd_members: usize,
    proxied: bool,
    extra: String,
}

impl HaBuilder {
    pub fn new(nodes: usize) -> HaBuilder {
        HaBuilder {
            nodes,
            etcd_members: 1,
            proxied: false,
            extra: String::new(),
        }
    }

    pub fn etcd_members(mut self, n: usize) -> Self {
        self.etcd_members = n;
        self
    }

    /// Every agent reaches etcd through its own proxy (to cut one node off).
    pub fn proxied(mut self) -> Self {
        self.proxied = true;
        self
    }

    /// Top-level config lines for every node.
    pub fn config(mut self, lines: &str) -> Self {
        self.extra.push_str(lines);
        self.extra.push('\n');
        self
    }

    /// Starts etcd and writes every node's config; starts no agent.
    pub fn build(self) -> Ha {
        let etcd = Etcd::builder()
            .members(self.etcd_members)
            .start()
            .expect("start etcd (is etcd-server installed? run ./run test)");
        let tmp = tempfile::Builder::new()
            .prefix("pgw-ha-")
            .tempdir()
            .expect("temp dir");
        let root = tmp.path().to_owned();
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod temp dir");
        let user = OsUser::detect().expect("server OS user");
        let scope = format!("t{}", std::process::id());
        let mut nodes = Vec::new();
        let mut watched = Vec::new();
        for i in 0..self.nodes {
            let name = format!("node{}", i + 1);
            let dir = root.join(&name);
            std::fs::create_dir(&dir).expect("node dir");
            user.chown(&dir).expect("chown node dir");
            let pg_port = ports::reserve().expect("port");
            let api_port = ports::reserve().expect("port");
            let proxy = self.proxied.then(|| {
                let target = etcd.endpoints()[0]
                    .trim_start_matches("http://")
                    .parse()
                    .expect("etcd address");
                Proxy::start(target).expect("start the etcd proxy")
            });
            let endpoints: Vec<String> = match &proxy {
                Some(p) => vec![format!("http://127.0.0.1:{}", p.port())],
                None => etcd.endpoints(),
            };
            let mut text = format!(
                "scope = {scope:?}\nname = {name:?}\netcd = {endpoints:?}\ndata_dir = {:?}\n\
                 listen = \"127.0.0.1:{pg_port}\"\napi = \"127.0.0.1:{api_port}\"\n{}",
                dir.join("data"),
                self.extra
            );
            text.push_str("[parameters]\nfsync = false\nshared_buffers = \"16MB\"\nwal_keep_size = \"128MB\"\n");
            let config = dir.join("node.toml");
            std::fs::write(&config, text).expect("write node.toml");
            watched.push(Watched::new(
                dir.join("agent.pid"),
                &dir,
                nix::sys::signal::Signal::SIGKILL,
                Duration::from_millis(100),
            ));
            watched.push(Watched::new(
                dir.join("data/postmaster.pid"),
                dir.join("data"),
                nix::sys::signal::Signal::SIGQUIT,
                Duration::from_secs(5),
            ));
            nodes.push(HaNode {
                name,
                dir,
                config,
                pg_port,
                api_port,
                agent: Mutex::new(None),
                proxy,
            });
        }
        let watchdog = Watchdog::spawn(&root, &watched).expect("watchdog");
        Ha {
            nodes,
            scope,
            etcd,
            user,
            watchdog: Some(watchdog),
            tmp: Some(tmp),
        }
    }
}

pub struct HaNode {
    pub name: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub pg_port: u16,
    pub api_port: u16,
    agent: Mutex<Option<Child>>,
    pub proxy: Option<Proxy>,
}

impl HaNode {
    pub fn config_arg(&self) -> &str {
        self.config.to_str().expect("utf-8 path")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }
}

/// A running test cluster: etcd, the nodes' configs, their agents.
pub struct Ha {
    pub nodes: Vec<HaNode>,
    pub scope: String,
    pub etcd: Etcd,
    user: OsUser,
    watchdog: Option<Watchdog>,
    tmp: Option<tempfile::TempDir>,
}

impl Ha {
    pub fn node(&self, i: usize) -> &HaNode {
        &self.nodes[i]
    }

    /// Starts node `i`'s agent (the pgwarden binary), logging to its agent.log.
    pub fn start_agent(&self, i: usize) {
        let n = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.dir.join("agent.log"))
            .expect("agent log");
        let child = Command::new(env!("CARGO_BIN_EXE_pgwarden"))
            .args(["--log", "info", "ha", "agent", "--config", n.config_arg()])
            .current_dir(&n.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the agent");
        std::fs::write(n.dir.join("agent.pid"), format!("{}\n", child.id())).expect("pid file");
        *n.agent.lock().unwrap() = Some(child);
    }

    /// SIGKILLs node `i`'s agent only.
    pub fn kill_agent(&self, i: usize) {
        if let Some(mut c) = self.nodes[i].agent.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERMs node `i`'s agent and waits for its exit status.
    pub fn stop_agent(&self, i: usize) -> Option<std::process::ExitStatus> {
        let mut c = self.nodes[i].agent.lock().unwrap().take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        c.wait().ok()
    }

    /// Sends SIGHUP to node `i`'s agent (reload its config).
    pub fn hup_agent(&self, i: usize) {
        let guard = self.nodes[i].agent.lock().unwrap();
        let c = guard.as_ref().expect("the agent runs");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    }

    /// The agent's exit status if it has exited.
    pub fn agent_exited(&self, i: usize) -> Option<std::process::ExitStatus> {
        let mut guard = self.nodes[i].agent.lock().unwrap();
        let status = guard.as_mut()?.try_wait().ok()??;
        guard.take();
        Some(status)
    }

    fn pg_node(&self, i: usize) -> Option<Node> {
        Node::open(
            BinDir::from_env(),
            self.user.clone(),
            self.nodes[i].data_dir(),
        )
        .ok()
    }

    /// SIGKILLs node `i`'s PostgreSQL (postmaster and children) only.
    pub fn kill_postgres(&self, i: usize) {
        if let Some(node) = self.pg_node(i) {
            node.kill().expect("kill PostgreSQL");
        }
    }

    /// Node loss: the agent and PostgreSQL SIGKILLed together.
    pub fn kill_node(&self, i: usize) {
        self.kill_agent(i);
        self.kill_postgres(i);
    }

    /// The leader key's holder, as etcd has it.
    pub fn leader(&self) -> Option<String> {
        self.etcd
            .get(&format!("/pgwarden/{}/leader", self.scope))
            .ok()
            .flatten()
    }

    pub fn index_of(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .expect("a node of this cluster")
    }

    /// The HTTP status of `GET path` on node `i`'s API (0 when it does not answer).
    pub fn api(&self, i: usize, path: &str) -> u16 {
        http_status(self.nodes[i].api_port, path)
    }

    /// `psql -Atc sql` on node `i`.
    pub fn sql(&self, i: usize, sql: &str) -> Result<String, String> {
        psql(self.nodes[i].pg_port, sql)
    }

    /// Whether node `i`'s PostgreSQL accepts writes.
    pub fn writable(&self, i: usize) -> bool {
        self.sql(i, "SELECT NOT pg_is_in_recovery()").as_deref() == Ok("t")
    }

    /// Whether node `i` is a replica whose WAL receiver streams.
    pub fn streaming(&self, i: usize) -> bool {
        self.sql(
            i,
            "SELECT pg_is_in_recovery() AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')",
        )
        .as_deref()
            == Ok("t")
    }

    /// `ha list --format json` through node `i`'s config.
    pub fn list(&self, i: usize) -> serde_json::Value {
        let o = pgwarden(&[
            "ha",
            "list",
            "--config",
            self.nodes[i].config_arg(),
            "--format",
            "json",
        ]);
        assert!(o.status.success(), "ha list: {}", stderr(&o));
        serde_json::from_str(&stdout(&o)).expect("ha list json")
    }

    /// Waits until `f` holds, panicking with `what` and every agent's log after `timeout`.
    pub fn wait(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !f() {
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts every agent and waits until node 1 leads and every other node streams.
    pub fn start_all(&self) -> &Self {
        self.start_agent(0);
        self.wait(
            "node1 to bootstrap and lead",
            Duration::from_secs(60),
            || self.api(0, "/primary") == 200,
        );
        for i in 1..self.nodes.len() {
            self.start_agent(i);
        }
        for i in 1..self.nodes.len() {
            self.wait(
                &format!("{} to stream", self.nodes[i].name),
                Duration::from_secs(90),
                || self.api(i, "/replica") == 200,
            );
        }
        self
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let log = n.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!(
                    "--- {} agent.log (last 40 lines) ---\n{}\n",
                    n.name,
                    tail.join("\n")
                )
            })
            .collect()
    }
}

impl Drop for Ha {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for i in 0..self.nodes.len() {
            self.kill_agent(i);
        }
        for i in 0..self.nodes.len() {
            if let Some(n) = self.pg_node(i) {
                let _ = n.kill();
            }
        }
        drop(self.watchdog.take());
        if let Some(t) = self.tmp.take() {
            let _ = t.close();
        }
    }
}

pub fn http_status(port: u16, path: &str) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(800)))
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

pub fn psql(port: u16, sql: &str) -> Result<String, String> {
    let o = Command::new(PSQL)
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-Atqc",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "2")
        .env("PGOPTIONS", "-c statement_timeout=3000")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
    }
}

/// A write probe: every 100 ms, one insert on whichever node's /primary answers 200;
/// records acknowledged rows and whether two nodes ever answered 200 or were writable at
/// the same moment.
pub struct Probe {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<ProbeResult>>,
}

#[derive(Debug, Default)]
pub struct ProbeResult {
    /// (seq, node index) of every acknowledged insert.
    pub acked: Vec<(u64, usize)>,
    /// Moments when more than one node was writable.
    pub two_writable: u64,
    /// The longest time between two acknowledged inserts.
    pub longest_gap: Duration,
}

impl Probe {
    pub fn start(ports: Vec<(u16, u16)>) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let seq = AtomicU64::new(0);
        let handle = std::thread::spawn(move || {
            let mut r = ProbeResult::default();
            let mut last_ack = Instant::now();
            while !s.load(Ordering::SeqCst) {
                let t = Instant::now();
                let primaries: Vec<usize> = ports
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, api))| http_status(*api, "/primary") == 200)
                    .map(|(i, _)| i)
                    .collect();
                let writable = ports
                    .iter()
                    .filter(|(pg, _)| {
                        psql(*pg, "SELECT NOT pg_is_in_recovery()").as_deref() == Ok("t")
                    })
                    .count();
                if writable > 1 {
                    r.two_writable += 1;
                }
                if let Some(&i) = primaries.first() {
                    let n = seq.fetch_add(1, Ordering::SeqCst);
                    let sql = format!("INSERT INTO probe(seq, node) VALUES ({n}, {i})");
                    if psql(ports[i].0, &sql).is_ok() {
                        r.acked.push((n, i));
                        r.longest_gap = r.longest_gap.max(last_ack.elapsed());
                        last_ack = Instant::now();
                    }
                }
                if let Some(rest) = Duration::from_millis(100).checked_sub(t.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            r
        });
        Probe {
            stop,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) -> ProbeResult {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .expect("once")
            .join()
            .expect("probe thread")
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn ports_of(ha: &Ha) -> Vec<(u16, u16)> {
    ha.nodes.iter().map(|n| (n.pg_port, n.api_port)).collect()
}

fn row_count(ha: &Ha, i: usize, sql: &str) -> u64 {
    ha.sql(i, sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}\n{}", ha.logs()))
        .parse()
        .expect("a count")
}

#[test]
fn two_nodes_bootstrap_fail_over_on_node_loss_and_rejoin() {
    let ha = HaBuilder::new(2).build();
    ha.start_all();
    assert_eq!(ha.leader().as_deref(), Some("node1"));
    assert_eq!(ha.api(0, "/primary"), 200);
    assert_eq!(ha.api(1, "/primary"), 503);
    assert_eq!(ha.api(0, "/replica"), 503);
    assert_eq!(ha.api(1, "/health"), 200);
    let list = ha.list(1);
    assert_eq!(list["leader"], "node1");
    let roles: Vec<&str> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["leader", "replica"]);
    let table = pgwarden(&["ha", "list", "--config", ha.node(0).config_arg()]);
    assert!(stdout(&table).contains("streaming"), "{}", stdout(&table));

    ha.sql(0, "CREATE TABLE probe(seq int8 PRIMARY KEY, node int)")
        .unwrap();
    let probe = Probe::start(ports_of(&ha));
    std::thread::sleep(Duration::from_secs(2));
    ha.kill_node(0);
    ha.wait(
        "node2 to lead and accept writes",
        Duration::from_secs(30),
        || ha.leader().as_deref() == Some("node2") && ha.writable(1),
    );
    std::thread::sleep(Duration::from_secs(1));
    let r = probe.finish();
    assert_eq!(r.two_writable, 0);
    let on_node1: Vec<u64> = r
        .acked
        .iter()
        .filter(|(_, i)| *i == 0)
        .map(|(s, _)| *s)
        .collect();
    assert!(
        !on_node1.is_empty() && r.acked.iter().any(|(_, i)| *i == 1),
        "{r:?}"
    );
    // Every insert node1 acknowledged (caught up: a quiet async replica) is on node2.
    let present = row_count(&ha, 1, "SELECT count(*) FROM probe WHERE node = 0");
    assert_eq!(
        present,
        on_node1.len() as u64,
        "acknowledged on node1 and lost"
    );

    // The old leader comes back and rejoins as a replica by itself (pg_rewind).
    ha.start_agent(0);
    ha.wait(
        "node1 to rejoin as a streaming replica",
        Duration::from_secs(60),
        || ha.api(0, "/replica") == 200,
    );
    ha.sql(1, "INSERT INTO probe VALUES (-1, 1)").unwrap();
    ha.wait("node1 to replay a new row", Duration::from_secs(20), || {
        ha.sql(0, "SELECT count(*) FROM probe WHERE seq = -1")
            .as_deref()
            == Ok("1")
    });
    let history = ha.list(0);
    assert_eq!(history["leader"], "node2");
    assert!(ha.node(0).log().contains("rejoin"), "{}", ha.logs());
}

#[test]
fn leader_cut_off_from_etcd_demotes_before_a_replica_takes_over() {
    let ha = HaBuilder::new(2).proxied().build();
    ha.start_all();
    ha.sql(0, "CREATE TABLE probe(seq int8 PRIMARY KEY, node int)")
        .unwrap();
    let probe = Probe::start(ports_of(&ha));
    std::thread::sleep(Duration::from_secs(2));
    ha.node(0).proxy.as_ref().unwrap().blackhole();
    ha.wait("node2 to lead", Duration::from_secs(30), || {
        ha.leader().as_deref() == Some("node2") && ha.writable(1)
    });
    assert!(!ha.writable(0), "node1 must have stopped accepting writes");
    std::thread::sleep(Duration::from_secs(1));
    let r = probe.finish();
    assert_eq!(r.two_writable, 0, "two writable primaries seen");
    assert!(
        ha.node(0).log().contains("cannot renew the leader key"),
        "{}",
        ha.logs()
    );
    let on_node1 = r.acked.iter().filter(|(_, i)| *i == 0).count() as u64;
    assert_eq!(
        row_count(&ha, 1, "SELECT count(*) FROM probe WHERE node = 0"),
        on_node1
    );

    // Back in touch: it rejoins as node2's replica.
    ha.node(0).proxy.as_ref().unwrap().restore();
    ha.wait("node1 to rejoin", Duration::from_secs(60), || {
        ha.api(0, "/replica") == 200
    });
}

#[test]
fn postgres_crash_with_the_agent_alive_restarts_in_place() {
    let ha = HaBuilder::new(2).build();
    ha.start_all();
    ha.kill_postgres(0);
    ha.wait(
        "node1 to be writable again",
        Duration::from_secs(30),
        || ha.writable(0),
    );
    assert_eq!(
        ha.leader().as_deref(),
        Some("node1"),
        "no failover: restarted in place"
    );
    assert!(ha.node(0).log().contains("start_primary"), "{}", ha.logs());
    ha.wait("node2 to stream again", Duration::from_secs(30), || {
        ha.streaming(1)
    });

    // SIGHUP reloads the config: a new [parameters] value reaches the running server.
    let path = &ha.node(0).config;
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(
        path,
        text.replace("[parameters]\n", "[parameters]\nwork_mem = \"7MB\"\n"),
    )
    .unwrap();
    ha.hup_agent(0);
    ha.wait(
        "work_mem = 7MB after SIGHUP",
        Duration::from_secs(10),
        || ha.sql(0, "SHOW work_mem").as_deref() == Ok("7MB"),
    );
    // A malformed config is refused on reload and the agent goes on as it was.
    std::fs::write(path, "bogus").unwrap();
    ha.hup_agent(0);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        ha.agent_exited(0).is_none(),
        "a bad reload must not stop the agent"
    );
    assert!(
        ha.node(0).log().contains("reload: config not changed"),
        "{}",
        ha.logs()
    );
    assert_eq!(ha.api(0, "/primary"), 200);
}

#[test]
fn paused_cluster_takes_no_action_until_resumed() {
    let ha = HaBuilder::new(2).build();
    ha.start_all();
    let o = pgwarden(&["ha", "pause", "--config", ha.node(1).config_arg()]);
    assert!(o.status.success(), "{}", stderr(&o));
    ha.wait(
        "the agents to see the pause",
        Duration::from_secs(10),
        || ha.list(0)["paused"] == true,
    );
    std::thread::sleep(Duration::from_secs(2));
    ha.kill_postgres(0);
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        !ha.writable(0) && !ha.writable(1),
        "paused: nothing restarted or promoted"
    );
    assert_eq!(ha.leader().as_deref(), Some("node1"));
    let o = pgwarden(&["ha", "resume", "--config", ha.node(1).config_arg()]);
    assert!(o.status.success(), "{}", stderr(&o));
    ha.wait(
        "node1 restarted after resume",
        Duration::from_secs(30),
        || ha.writable(0),
    );
}

#[test]
fn switchover_moves_the_leader_with_no_lost_commit() {
    let ha = HaBuilder::new(2).build();
    ha.start_all();
    ha.sql(0, "CREATE TABLE t(i int)").unwrap();
    ha.sql(0, "INSERT INTO t SELECT generate_series(1, 1000)")
        .unwrap();
    let dry = pgwarden(&[
        "ha",
        "switchover",
        "--config",
        ha.node(0).config_arg(),
        "--dry-run",
    ]);
    assert!(
        stdout(&dry).contains("would switch over node1 -> node2"),
        "{}",
        stdout(&dry)
    );
    assert_eq!(
        ha.leader().as_deref(),
        Some("node1"),
        "a dry run changes nothing"
    );
    let refused = pgwarden(&["ha", "switchover", "--config", ha.node(0).config_arg()]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    let o = pgwarden(&[
        "ha",
        "switchover",
        "--config",
        ha.node(0).config_arg(),
        "--to",
        "node2",
        "--yes",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), ha.logs());
    assert_eq!(ha.leader().as_deref(), Some("node2"));
    ha.wait("node2 writable", Duration::from_secs(10), || ha.writable(1));
    assert_eq!(row_count(&ha, 1, "SELECT count(*) FROM t"), 1000);
    ha.wait("node1 to follow node2", Duration::from_secs(60), || {
        ha.api(0, "/replica") == 200
    });
    let bad = pgwarden(&[
        "ha",
        "switchover",
        "--config",
        ha.node(0).config_arg(),
        "--to",
        "nodeX",
        "--yes",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("nodeX is not a member"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn bad_configs_and_unreachable_etcd_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    let base = "scope = \"s\"\nname = \"n1\"\netcd = [\"http://127.0.0.1:9\"]\ndata_dir = \"/tmp/pgw-ha-none\"\nlisten = \"127.0.0.1:1\"\napi = \"127.0.0.1:0\"\n";
    let run = |text: &str| {
        std::fs::write(&path, text).unwrap();
        pgwarden(&["ha", "agent", "--config", path.to_str().unwrap()])
    };
    let o = run(&format!("{base}bogus = 1\n"));
    crate::assert_fails(&o, 2, "unknown field `bogus`");
    let o = run(&format!("{base}ttl = 3\n"));
    crate::assert_fails(&o, 2, "ttl: 3 s is too short for loop_wait = 1 s");
    let o = run(base);
    crate::assert_fails(&o, 1, "etcd at http://127.0.0.1:9");
    assert!(!Path::new("/tmp/pgw-ha-none").exists(), "nothing made");
    let o = pgwarden(&["ha", "list", "--config", "/nonexistent/node.toml"]);
    crate::assert_fails(&o, 2, "/nonexistent/node.toml");
}

#[test]
fn data_directory_of_another_cluster_is_refused() {
    let ha = HaBuilder::new(2).build();
    ha.start_agent(0);
    ha.wait("node1 to lead", Duration::from_secs(60), || {
        ha.api(0, "/primary") == 200
    });
    // node2's data directory is made by a foreign initdb.
    let user = OsUser::detect().unwrap();
    Node::initdb(
        BinDir::from_env(),
        user,
        ha.node(1).data_dir(),
        &pgw_node::InitdbOptions::default(),
    )
    .unwrap();
    ha.start_agent(1);
    let mut status = None;
    ha.wait("node2's agent to refuse", Duration::from_secs(30), || {
        status = ha.agent_exited(1);
        status.is_some()
    });
    assert_eq!(status.unwrap().code(), Some(2));
    let log = ha.node(1).log();
    assert!(log.contains("belongs to system"), "{log}");
    assert!(
        ha.node(1).data_dir().join("PG_VERSION").exists(),
        "left as it was"
    );
}

#[test]
fn three_nodes_survive_the_loss_of_one_etcd_member_without_failover() {
    let ha = HaBuilder::new(3).etcd_members(3).build();
    ha.start_all();
    let before = ha.list(0);
    let (leader, term) = (before["leader"].clone(), before["term"].clone());
    assert_eq!(leader, "node1");
    ha.etcd.kill_member(0).unwrap();
    std::thread::sleep(Duration::from_secs(15));
    let after = ha.list(1);
    assert_eq!(
        (after["leader"].clone(), after["term"].clone()),
        (leader, term),
        "{}",
        ha.logs()
    );
    assert!(ha.writable(0), "{}", ha.logs());
    assert!(ha.streaming(1) && ha.streaming(2));
    assert!(!ha.node(0).log().contains("cannot renew"), "{}", ha.logs());
}

#[test]
fn clean_stop_hands_the_key_over_at_once_and_forced_failover_names_the_target() {
    let ha = HaBuilder::new(3).build();
    ha.start_all();
    // A forced failover to a named replica while the leader is alive.
    let o = pgwarden(&[
        "ha",
        "failover",
        "--config",
        ha.node(0).config_arg(),
        "--to",
        "node3",
        "--yes",
    ]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), ha.logs());
    assert_eq!(ha.leader().as_deref(), Some("node3"));
    ha.wait(
        "node1 and node2 to follow node3",
        Duration::from_secs(60),
        || ha.api(0, "/replica") == 200 && ha.api(1, "/replica") == 200,
    );
    let missing = pgwarden(&[
        "ha",
        "failover",
        "--config",
        ha.node(0).config_arg(),
        "--yes",
    ]);
    crate::assert_fails(&missing, 2, "--to NAME");
    // SIGTERM: PostgreSQL stops cleanly, the lease is revoked, a replica leads without
    // waiting for the TTL.
    let leader = ha.index_of("node3");
    let status = ha.stop_agent(leader).expect("the agent ran");
    assert!(status.success(), "{status:?}");
    assert!(!ha.writable(leader));
    ha.wait("a new leader", Duration::from_secs(4), || {
        ha.leader().is_some_and(|l| l != "node3")
    });
}

#[test]
fn replica_lagging_beyond_the_limit_is_not_promoted() {
    let ha = HaBuilder::new(2).build();
    ha.start_all();
    ha.sql(0, "CREATE TABLE big(t text)").unwrap();
    // Freeze node2's WAL receiver, then write 5 MB on node1: node2 falls 5 MB behind.
    let receiver: i32 = ha
        .sql(1, "SELECT pid FROM pg_stat_wal_receiver")
        .unwrap()
        .parse()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(receiver);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    ha.sql(
        0,
        "INSERT INTO big SELECT repeat('x', 1000) FROM generate_series(1, 5000)",
    )
    .unwrap();
    ha.wait(
        "node1 to publish its new position",
        Duration::from_secs(10),
        || ha.list(0)["members"][1]["lag_bytes"].as_u64().unwrap_or(0) > 1_048_576,
    );
    ha.kill_node(0);
    std::thread::sleep(Duration::from_secs(12));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
    assert_eq!(ha.leader(), None, "{}", ha.logs());
    assert!(!ha.writable(1));
    let status: serde_json::Value = serde_json::from_str(
        &ureq::get(&format!("http://127.0.0.1:{}/cluster", ha.node(1).api_port))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    assert!(status["leader"].is_null(), "{status}");
    let health = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .get(&format!("http://127.0.0.1:{}/health", ha.node(1).api_port))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(health.contains("over maximum_lag_on_failover"), "{health}");
}

#[test]
fn synchronous_mode_loses_no_acknowledged_commit_when_the_primary_dies_under_load() {
    let ha = HaBuilder::new(2).config("synchronous_mode = true").build();
    ha.start_all();
    ha.wait(
        "node2 recorded as the synchronous standby",
        Duration::from_secs(30),
        || ha.list(0)["members"][1]["role"] == "sync standby",
    );
    assert_eq!(
        ha.sql(0, "SELECT sync_state FROM pg_stat_replication")
            .as_deref(),
        Ok("sync")
    );
    assert_eq!(
        ha.list(1)["rules"]["synchronous_mode"],
        true,
        "the leader's rules, published"
    );
    ha.sql(
        0,
        "CREATE TABLE acked(n int8 PRIMARY KEY, w int); CREATE TABLE load(x int)",
    )
    .unwrap();
    // Background load: pgbench inserting as fast as it can.
    let script = ha.node(0).dir.join("load.sql");
    std::fs::write(&script, "INSERT INTO load VALUES (1);\n").unwrap();
    let mut pgbench = Command::new("/usr/lib/postgresql/15/bin/pgbench")
        .args([
            "-n",
            "-h",
            "127.0.0.1",
            "-p",
            &ha.node(0).pg_port.to_string(),
            "-U",
            "postgres",
            "-c",
            "2",
            "-T",
            "30",
            "-f",
        ])
        .arg(&script)
        .arg("postgres")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Writers: each acknowledged insert is recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let ports = ports_of(&ha);
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (stop, ports) = (Arc::clone(&stop), ports.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let target = ports
                        .iter()
                        .find(|(_, api)| http_status(*api, "/primary") == 200);
                    if let Some((pg, _)) = target {
                        let id = n * 2 + w;
                        if psql(*pg, &format!("INSERT INTO acked VALUES ({id}, {w})")).is_ok() {
                            acked.push(id);
                        }
                        n += 1;
                    } else {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    ha.kill_node(0);
    ha.wait("node2 to lead", Duration::from_secs(30), || {
        ha.leader().as_deref() == Some("node2") && ha.writable(1)
    });
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    let _ = pgbench.kill();
    let _ = pgbench.wait();
    let acked: Vec<u64> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(acked.len() > 10, "{} acknowledged", acked.len());
    let present: std::collections::HashSet<u64> = ha
        .sql(1, "SELECT n FROM acked")
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let lost: Vec<&u64> = acked.iter().filter(|n| !present.contains(n)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged commits lost: {lost:?}",
        lost.len(),
        acked.len()
    );
    eprintln!(
        "synchronous mode: {} acknowledged commits, 0 lost",
        acked.len()
    );
}

#[test]
fn failsafe_mode_keeps_the_primary_writable_through_an_etcd_outage() {
    let ha = HaBuilder::new(2).config("failsafe_mode = true").build();
    ha.start_all();
    let timeline = "SELECT timeline_id FROM pg_control_checkpoint()";
    let tl_before = ha.sql(0, timeline).unwrap();
    ha.etcd.kill();
    std::thread::sleep(Duration::from_secs(10));
    assert!(ha.writable(0), "failsafe: still writable\n{}", ha.logs());
    assert_eq!(ha.api(0, "/primary"), 200, "{}", ha.logs());
    assert!(ha.streaming(1));
    assert!(ha.node(0).log().contains("failsafe"), "{}", ha.logs());
    // etcd back: the same leader, without a failover.
    ha.etcd.start_again().unwrap();
    std::thread::sleep(Duration::from_secs(6));
    ha.wait(
        "node1 to lead again in etcd",
        Duration::from_secs(20),
        || ha.leader().as_deref() == Some("node1"),
    );
    // Looked at until it holds: on a loaded machine one psql can fail to connect, which
    // would read as "not writable" for a moment.
    ha.wait(
        "node1 writable and node2 read-only",
        Duration::from_secs(20),
        || ha.writable(0) && ha.sql(1, "SELECT pg_is_in_recovery()").as_deref() == Ok("t"),
    );
    assert_eq!(
        ha.sql(0, timeline).unwrap(),
        tl_before,
        "node1 changed timeline: there was a failover\n{}",
        ha.logs()
    );
}

#[test]
fn without_failsafe_an_etcd_outage_fences_the_primary() {
    let ha = HaBuilder::new(2).build();
    ha.start_all();
    ha.etcd.kill();
    ha.wait(
        "node1 to stop accepting writes",
        Duration::from_secs(10),
        || !ha.writable(0),
    );
    assert_eq!(ha.api(0, "/primary"), 503);
    assert!(!ha.writable(1), "no etcd: nobody promotes");
    ha.etcd.start_again().unwrap();
    ha.wait("a leader again", Duration::from_secs(40), || {
        (0..2).any(|i| ha.writable(i)) && ha.leader().is_some()
    });
}

#[test]
fn leader_that_cannot_restart_postgres_gives_up_the_key() {
    let ha = HaBuilder::new(2).config("restart_timeout = 3").build();
    ha.start_all();
    // A setting the server refuses at start: every restart in place fails.
    let conf = ha.node(0).data_dir().join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("no_such_setting_at_all = 1\n");
    std::fs::write(&conf, text).unwrap();
    ha.kill_postgres(0);
    ha.wait("node2 to take over", Duration::from_secs(40), || {
        ha.leader().as_deref() == Some("node2") && ha.writable(1)
    });
    assert!(
        ha.node(0).log().contains("giving up the leader key"),
        "{}",
        ha.logs()
    );
    assert!(!ha.writable(0));
}
