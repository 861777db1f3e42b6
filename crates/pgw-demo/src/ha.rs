//! The demo's HA part: a throwaway etcd (Debian's `etcd-server`) and a two-node cluster, each
//! node under its own `pgwarden ha agent` process; `ha list`, then the primary node lost
//! (agent and PostgreSQL SIGKILLed together) while a probe writes every 100 ms, the failover
//! with its measured downtime, and the old primary rejoining as a replica by itself.
//!
//! Everything runs on free loopback ports in one temp dir. [`HaGuard`] kills the agents,
//! their PostgreSQL and etcd when dropped (the demo ended, failed or was cancelled), and
//! pgw-cluster's watchdog does the same should this process die first.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use pgw_cluster::ports;
use pgw_cluster::watchdog::{Watchdog, Watched};
use pgw_ha::ctl::Listing;
use pgw_ha::dcs::Dcs;
use pgw_ha::state::Role;
use pgw_node::{BinDir, Node, OsUser};

use crate::DemoError;

const ETCD: &str = "/usr/bin/etcd";
const SCOPE: &str = "demo";

/// What the HA part showed.
#[derive(Debug, Serialize)]
pub struct HaDemo {
    /// `ha list` once both nodes run.
    pub before: Listing,
    /// The node whose agent and PostgreSQL were killed.
    pub killed: String,
    /// Kill to the first insert acknowledged by the new primary.
    pub downtime_ms: u128,
    pub new_leader: String,
    /// Inserts the old primary acknowledged, and how many of them the new primary has.
    pub acked_before: u64,
    pub present_after: u64,
    /// Agent restarted to the old primary streaming from the new one.
    pub rejoin_ms: u128,
    /// `ha list` after the rejoin.
    pub after: Listing,
}

fn failed(what: impl Into<String>) -> DemoError {
    DemoError::Ha(what.into())
}

struct HaNode {
    dir: PathBuf,
    config: PathBuf,
    pg_port: u16,
    agent: Option<Child>,
}

/// etcd, the agents and their servers; all killed on drop.
pub struct HaGuard {
    etcd: Option<Child>,
    nodes: Vec<HaNode>,
    user: OsUser,
    _watchdog: Option<Watchdog>,
    tmp: Option<tempfile::TempDir>,
    agent_exe: PathBuf,
}

impl HaGuard {
    fn start_agent(&mut self, i: usize) -> Result<(), DemoError> {
        let n = &mut self.nodes[i];
        let log = std::fs::File::create(n.dir.join("agent.log"))
            .map_err(|e| failed(format!("create the agent log: {e}")))?;
        let err = log
            .try_clone()
            .map_err(|e| failed(format!("agent log: {e}")))?;
        let child = Command::new(&self.agent_exe)
            .args(["--log", "info", "ha", "agent", "--config"])
            .arg(&n.config)
            .current_dir(&n.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| failed(format!("start `pgwarden ha agent`: {e}")))?;
        std::fs::write(n.dir.join("agent.pid"), format!("{}\n", child.id()))
            .map_err(|e| failed(format!("write the agent pid file: {e}")))?;
        n.agent = Some(child);
        Ok(())
    }

    /// Node loss: the agent and PostgreSQL (postmaster and children) SIGKILLed.
    fn kill_node(&mut self, i: usize) -> Result<(), DemoError> {
        if let Some(mut c) = self.nodes[i].agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Ok(node) = self.pg_node(i) {
            node.kill()
                .map_err(|e| failed(format!("kill PostgreSQL: {e}")))?;
        }
        Ok(())
    }

    fn pg_node(&self, i: usize) -> Result<Node, pgw_node::NodeError> {
        Node::open(
            BinDir::from_env(),
            self.user.clone(),
            self.nodes[i].dir.join("data"),
        )
    }

    fn tail(&self, i: usize) -> String {
        let log = std::fs::read_to_string(self.nodes[i].dir.join("agent.log")).unwrap_or_default();
        log.lines()
            .rev()
            .find(|l| l.contains("ERROR") || l.contains("error"))
            .unwrap_or("")
            .to_string()
    }
}

impl Drop for HaGuard {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.agent.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for i in 0..self.nodes.len() {
            if let Ok(node) = self.pg_node(i) {
                let _ = node.kill();
            }
        }
        if let Some(mut e) = self.etcd.take() {
            let _ = e.kill();
            let _ = e.wait();
        }
        if let Some(t) = self.tmp.take() {
            let _ = t.close();
        }
    }
}

/// Starts etcd and writes two nodes' configs (no agent yet).
fn prepare(agent_exe: &Path) -> Result<HaGuard, DemoError> {
    if !Path::new(ETCD).exists() {
        return Err(failed(format!(
            "{ETCD} is missing: install Debian's etcd-server (./run demo does)"
        )));
    }
    let tmp = tempfile::Builder::new()
        .prefix("pgwarden-demo-ha-")
        .tempdir()
        .map_err(|e| failed(format!("make a temp dir: {e}")))?;
    let root = tmp.path().to_owned();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| failed(format!("chmod {}: {e}", root.display())))?;
    let user = OsUser::detect().map_err(|e| failed(e.to_string()))?;
    let port = || ports::reserve().map_err(|e| failed(e.to_string()));
    let (client, peer) = (port()?, port()?);
    let etcd_dir = root.join("etcd");
    std::fs::create_dir(&etcd_dir).map_err(|e| failed(e.to_string()))?;
    let log = std::fs::File::create(root.join("etcd.log")).map_err(|e| failed(e.to_string()))?;
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let etcd = Command::new(ETCD)
        .args(["--name", "demo", "--data-dir"])
        .arg(etcd_dir.join("data"))
        .args([
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("demo={peer_url}")])
        .current_dir(&etcd_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| failed(format!("start etcd: {e}")))?;
    std::fs::write(etcd_dir.join("etcd.pid"), format!("{}\n", etcd.id()))
        .map_err(|e| failed(e.to_string()))?;

    let mut nodes = Vec::new();
    let mut watched = vec![];
    for i in 1..=2 {
        let name = format!("node{i}");
        let dir = root.join(&name);
        std::fs::create_dir(&dir).map_err(|e| failed(e.to_string()))?;
        user.chown(&dir).map_err(|e| failed(e.to_string()))?;
        let (pg_port, api_port) = (port()?, port()?);
        let config = dir.join("node.toml");
        let text = format!(
            "scope = {SCOPE:?}\nname = {name:?}\netcd = [{client_url:?}]\ndata_dir = {:?}\n\
             listen = \"127.0.0.1:{pg_port}\"\napi = \"127.0.0.1:{api_port}\"\n\
             [parameters]\nshared_buffers = \"32MB\"\nwal_keep_size = \"64MB\"\n",
            dir.join("data")
        );
        std::fs::write(&config, text).map_err(|e| failed(e.to_string()))?;
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
            dir,
            config,
            pg_port,
            agent: None,
        });
    }
    watched.push(Watched::new(
        etcd_dir.join("etcd.pid"),
        &etcd_dir,
        nix::sys::signal::Signal::SIGKILL,
        Duration::from_millis(100),
    ));
    let watchdog = Watchdog::spawn(&root, &watched).map_err(|e| failed(e.to_string()))?;
    Ok(HaGuard {
        etcd: Some(etcd),
        nodes,
        user,
        _watchdog: Some(watchdog),
        tmp: Some(tmp),
        agent_exe: agent_exe.to_owned(),
    })
}

async fn wait<F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<(), DemoError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        if Instant::now() > deadline {
            return Err(failed(format!(
                "timed out after {} s waiting for {what}",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn member_is(dcs: &Dcs, name: &str, leader: bool, state: &str) -> bool {
    match dcs.read().await {
        Ok(v) => {
            (!leader || v.leader_name() == Some(name))
                && v.member(name).is_some_and(|m| m.state == state)
        }
        Err(_) => false,
    }
}

async fn insert(port: u16, seq: i64) -> bool {
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(Duration::from_millis(500));
    let Ok(Ok((client, conn))) =
        tokio::time::timeout(Duration::from_secs(1), c.connect(tokio_postgres::NoTls)).await
    else {
        return false;
    };
    let task = tokio::spawn(conn);
    let ok = tokio::time::timeout(
        Duration::from_secs(1),
        client.execute("INSERT INTO probe(seq) VALUES ($1)", &[&seq]),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    drop(client);
    task.abort();
    ok
}

/// Runs the HA part. `step(n, what)` reports progress for steps `first`, `first + 1`, ...
pub async fn run(
    agent_exe: &Path,
    step: impl Fn(u64, &str),
    first: u64,
) -> Result<HaDemo, DemoError> {
    step(
        first,
        "ha: etcd and two nodes under `pgwarden ha agent` (bootstrap, then a clone)",
    );
    let mut g = prepare(agent_exe)?;
    let endpoint = pgw_ha::Config::load(&g.nodes[0].config)
        .map_err(|e| failed(e.to_string()))?
        .etcd;
    let dcs = Dcs::connect(&endpoint, SCOPE)
        .await
        .map_err(|e| failed(e.to_string()))?;
    wait("etcd to answer", Duration::from_secs(20), || async {
        dcs.read().await.is_ok()
    })
    .await?;
    g.start_agent(0)?;
    let tail0 = |g: &HaGuard| g.tail(0);
    if let Err(e) = wait(
        "node1 to bootstrap and lead",
        Duration::from_secs(60),
        || member_is(&dcs, "node1", true, "running"),
    )
    .await
    {
        return Err(failed(format!("{e}: {}", tail0(&g))));
    }
    g.start_agent(1)?;
    wait(
        "node2 to clone node1 and stream",
        Duration::from_secs(60),
        || member_is(&dcs, "node2", false, "streaming"),
    )
    .await?;
    let before = pgw_ha::ctl::listing(SCOPE, &dcs.read().await.map_err(|e| failed(e.to_string()))?);

    // A probe: one insert every 100 ms into whichever node etcd names as leader.
    let ports = [g.nodes[0].pg_port, g.nodes[1].pg_port];
    pgw_ha::pg::connect_to(&format!("127.0.0.1:{}", ports[0]), "postgres", None)
        .await
        .map_err(|e| failed(e.to_string()))?
        .batch_execute("CREATE TABLE probe(seq int8 PRIMARY KEY, at timestamptz DEFAULT now())")
        .await
        .map_err(|e| failed(format!("create the probe table: {e}")))?;
    let mut acked_before = 0u64;
    let mut seq = 0i64;
    let probe_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < probe_until {
        if insert(ports[0], seq).await {
            acked_before += 1;
        }
        seq += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    step(
        first + 1,
        "ha: killing node1 (agent and PostgreSQL), writes probed every 100 ms",
    );
    let killed_at = Instant::now();
    g.kill_node(0)?;
    let deadline = killed_at + Duration::from_secs(40);
    loop {
        if insert(ports[1], seq).await {
            break;
        }
        seq += 1;
        if Instant::now() > deadline {
            return Err(failed(format!(
                "node2 accepted no write within 40 s: {}",
                g.tail(1)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let downtime_ms = killed_at.elapsed().as_millis();
    let view = dcs.read().await.map_err(|e| failed(e.to_string()))?;
    let new_leader = view.leader_name().unwrap_or("").to_string();
    let present_after = {
        let c = pgw_ha::pg::connect_to(&format!("127.0.0.1:{}", ports[1]), "postgres", None)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let n: i64 = c
            .query_one("SELECT count(*) FROM probe", &[])
            .await
            .map_err(|e| failed(e.to_string()))?
            .get(0);
        // The first insert node2 acknowledged is among them.
        (n - 1).max(0) as u64
    };

    step(
        first + 2,
        "ha: node1's agent back: pg_rewind, then streaming from node2",
    );
    let rejoin_started = Instant::now();
    g.start_agent(0)?;
    wait(
        "node1 to rejoin as a replica",
        Duration::from_secs(60),
        || async {
            match dcs.read().await {
                Ok(v) => v
                    .member("node1")
                    .is_some_and(|m| m.role == Role::Replica && m.streaming),
                Err(_) => false,
            }
        },
    )
    .await?;
    let rejoin_ms = rejoin_started.elapsed().as_millis();
    let after = pgw_ha::ctl::listing(SCOPE, &dcs.read().await.map_err(|e| failed(e.to_string()))?);
    drop(g);
    Ok(HaDemo {
        before,
        killed: "node1".into(),
        downtime_ms,
        new_leader,
        acked_before,
        present_after,
        rejoin_ms,
        after,
    })
}
