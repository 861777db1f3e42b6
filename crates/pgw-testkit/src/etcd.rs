//! [`Etcd`]: a throwaway etcd cluster (Debian's `etcd-server`, etcd 3.4) of one or more
//! members, each on its own free loopback client and peer ports, data in a temp dir.
//!
//! Readiness is `GET /health` answering `{"health":"true"}` on every member. [`Etcd::put`] and
//! [`Etcd::get`] use etcd's JSON gateway (`/v3/kv/put`, `/v3/kv/range`, keys and values in
//! base64), so tests need no etcdctl; the HA agent brings its own client.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use nix::sys::signal::Signal;
use pgw_cluster::watchdog::{Watchdog, Watched};
use pgw_cluster::{panic_log, ports};
use pgw_node::OsUser;

use crate::daemon::{memory_temp_dir, require_binary, Daemon, Spec};
use crate::TestkitError;

/// Where Debian's `etcd-server` installs etcd.
pub const DEFAULT_ETCD: &str = "/usr/bin/etcd";

/// How long a member may take to answer `/health`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the whole cluster is started again on fresh ports if a port was taken.
const PORT_ATTEMPTS: u32 = 3;

/// How long a member gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Options for [`Etcd`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .start() is called"]
pub struct EtcdBuilder {
    members: usize,
    binary: PathBuf,
}

impl Default for EtcdBuilder {
    fn default() -> EtcdBuilder {
        EtcdBuilder {
            members: 1,
            binary: PathBuf::from(DEFAULT_ETCD),
        }
    }
}

impl EtcdBuilder {
    /// How many members (default 1; 3 tolerates the loss of one).
    pub fn members(mut self, n: usize) -> Self {
        self.members = n.max(1);
        self
    }

    /// The etcd binary (default `/usr/bin/etcd`).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = path.into();
        self
    }

    /// Starts every member and waits until each answers `/health`.
    pub fn start(self) -> Result<Etcd, TestkitError> {
        require_binary(&self.binary, "etcd-server")?;
        let user = OsUser::current()?;
        let tmp = memory_temp_dir("pgw-etcd-", &user)?;
        let root = tmp.path().to_owned();
        let names: Vec<String> = (0..self.members).map(|i| format!("m{i}")).collect();
        let watched: Vec<Watched> = names
            .iter()
            // Every member runs in `root` (`member_spec`'s cwd).
            .map(|n| {
                Watched::new(
                    root.join(format!("{n}.pid")),
                    &root,
                    Signal::SIGTERM,
                    STOP_GRACE,
                )
            })
            .collect();
        let watchdog = Watchdog::spawn(&root, &watched)?;
        let mut etcd = Etcd {
            members: Vec::new(),
            watchdog: Some(watchdog),
            tmp: Some(tmp),
            root,
        };
        let token = format!("pgw-{}", pgw_cluster::os::random_password());
        let mut last_log = String::new();
        for attempt in 1..=PORT_ATTEMPTS {
            etcd.clear_members();
            let mut reserved = Vec::new();
            for name in &names {
                reserved.push((name.as_str(), ports::reserve()?, ports::reserve()?));
            }
            let initial: Vec<String> = reserved
                .iter()
                .map(|(name, _, peer)| format!("{name}=http://127.0.0.1:{peer}"))
                .collect();
            let initial = initial.join(",");
            let members: Vec<Member> = reserved
                .into_iter()
                .map(|(name, client, peer)| {
                    Member::new(
                        name,
                        client,
                        peer,
                        &self.binary,
                        &etcd.root,
                        &initial,
                        &token,
                    )
                })
                .collect();
            etcd.members = members;
            for m in &etcd.members {
                m.daemon().spawn()?;
            }
            match etcd.wait_all_ready() {
                Ok(()) => {
                    tracing::debug!(members = etcd.members.len(), endpoint = %etcd.endpoint(), "etcd ready");
                    return Ok(etcd);
                }
                Err(TestkitError::Exited { log, .. }) if log.contains("address already in use") => {
                    tracing::debug!(attempt, "etcd port taken; retrying on other ports");
                    last_log = log;
                }
                Err(e) => return Err(e),
            }
        }
        Err(TestkitError::NoFreePort {
            what: "etcd".to_owned(),
            attempts: PORT_ATTEMPTS,
            log: last_log,
        })
    }
}

/// One member: its name, ports and process.
#[derive(Debug)]
struct Member {
    client_port: u16,
    peer_port: u16,
    daemon: Daemon,
}

impl Member {
    fn new(
        name: &str,
        client_port: u16,
        peer_port: u16,
        binary: &Path,
        root: &Path,
        initial: &str,
        token: &str,
    ) -> Member {
        Member {
            client_port,
            peer_port,
            daemon: Daemon::new(member_spec(
                name,
                client_port,
                peer_port,
                binary,
                root,
                initial,
                token,
            )),
        }
    }

    fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn healthy(&self, agent: &ureq::Agent) -> bool {
        let url = format!("{}/health", self.client_url());
        match agent.get(&url).call() {
            Ok(mut resp) => resp
                .body_mut()
                .read_to_string()
                .is_ok_and(|b| b.replace(' ', "").contains("\"health\":\"true\"")),
            Err(_) => false,
        }
    }
}

/// How member `name` is started.
fn member_spec(
    name: &str,
    client_port: u16,
    peer_port: u16,
    binary: &Path,
    root: &Path,
    initial: &str,
    token: &str,
) -> Spec {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let data = root.join(format!("{name}.etcd"));
    let args: Vec<OsString> = [
        "--name",
        name,
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        initial,
        "--initial-cluster-state",
        "new",
        "--initial-cluster-token",
        token,
        "--logger",
        "zap",
        "--log-outputs",
        "stderr",
    ]
    .into_iter()
    .map(OsString::from)
    .chain([OsString::from("--data-dir"), data.into_os_string()])
    .collect();
    Spec {
        what: format!("etcd member {name}"),
        program: binary.to_owned(),
        args,
        // ETCD_* variables would override the flags.
        clear_env_prefixes: vec!["ETCD"],
        user: None,
        cwd: root.to_owned(),
        log: root.join(format!("{name}.log")),
        pidfile: root.join(format!("{name}.pid")),
    }
}

/// A running throwaway etcd cluster; stopped and removed on drop (each member's log printed
/// if the test panicked), and by a watchdog if the owning process dies.
#[derive(Debug)]
pub struct Etcd {
    members: Vec<Member>,
    watchdog: Option<Watchdog>,
    tmp: Option<tempfile::TempDir>,
    root: PathBuf,
}

impl Etcd {
    /// A single-member cluster.
    pub fn start() -> Result<Etcd, TestkitError> {
        EtcdBuilder::default().start()
    }

    /// A builder for more members or another binary.
    pub fn builder() -> EtcdBuilder {
        EtcdBuilder::default()
    }

    /// The first member's client URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        self.members[0].client_url()
    }

    /// Every member's client URL, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a cluster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The temp dir holding the members' data, logs and pid files.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Member `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        self.member(i).map(|m| m.daemon().log()).unwrap_or_default()
    }

    /// Member `i`'s pid, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.member(i).ok()?.daemon().pid()
    }

    /// Whether member `i` runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.pid(i).is_some()
    }

    /// SIGKILLs every member (the DCS is lost); data stays for [`Etcd::start_again`].
    pub fn kill(&self) {
        for m in &self.members {
            m.daemon().kill();
        }
    }

    /// SIGKILLs member `i`.
    pub fn kill_member(&self, i: usize) -> Result<(), TestkitError> {
        self.member(i)?.daemon().kill();
        Ok(())
    }

    /// Starts every stopped member again, on the same ports with the same data, and waits
    /// until all answer `/health`.
    pub fn start_again(&self) -> Result<(), TestkitError> {
        for m in &self.members {
            m.daemon().spawn()?;
        }
        self.wait_all_ready()
    }

    /// Starts member `i` again (if stopped) and waits until it answers `/health`.
    pub fn start_member_again(&self, i: usize) -> Result<(), TestkitError> {
        let m = self.member(i)?;
        let start = m.daemon().log_len();
        m.daemon().spawn()?;
        let agent = agent();
        m.daemon()
            .wait_ready(READY_TIMEOUT, start, || m.healthy(&agent))
    }

    /// Whether member `i` answers `/health` with `true`.
    pub fn healthy(&self, i: usize) -> bool {
        self.member(i).is_ok_and(|m| m.healthy(&agent()))
    }

    /// Writes `key` = `value` through member 0.
    pub fn put(&self, key: &str, value: &str) -> Result<(), TestkitError> {
        self.put_via(0, key, value)
    }

    /// Writes `key` = `value` through member `i`.
    pub fn put_via(&self, i: usize, key: &str, value: &str) -> Result<(), TestkitError> {
        let url = format!("{}/v3/kv/put", self.member(i)?.client_url());
        let body = serde_json::json!({ "key": B64.encode(key), "value": B64.encode(value) });
        tracing::debug!(%url, key, "etcd put");
        agent()
            .post(&url)
            .send_json(&body)
            .map_err(|e| http_err(&url, e))?;
        Ok(())
    }

    /// Reads `key` through member 0 (`None` if absent).
    pub fn get(&self, key: &str) -> Result<Option<String>, TestkitError> {
        self.get_via(0, key)
    }

    /// Reads `key` through member `i` (`None` if absent).
    pub fn get_via(&self, i: usize, key: &str) -> Result<Option<String>, TestkitError> {
        let url = format!("{}/v3/kv/range", self.member(i)?.client_url());
        let body = serde_json::json!({ "key": B64.encode(key) });
        let text = agent()
            .post(&url)
            .send_json(&body)
            .map_err(|e| http_err(&url, e))?
            .body_mut()
            .read_to_string()
            .map_err(|e| http_err(&url, e))?;
        let bad = || TestkitError::BadResponse {
            url: url.clone(),
            body: text.chars().take(200).collect(),
        };
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|_| bad())?;
        let Some(kv) = json.get("kvs").and_then(|k| k.get(0)) else {
            return Ok(None);
        };
        let value = kv.get("value").and_then(|v| v.as_str()).unwrap_or("");
        let bytes = B64.decode(value).map_err(|_| bad())?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn member(&self, i: usize) -> Result<&Member, TestkitError> {
        self.members.get(i).ok_or_else(|| TestkitError::NotRunning {
            what: format!("etcd member {i} (there are {})", self.members.len()),
        })
    }

    fn wait_all_ready(&self) -> Result<(), TestkitError> {
        let agent = agent();
        for m in &self.members {
            m.daemon()
                .wait_ready(READY_TIMEOUT, 0, || m.healthy(&agent))?;
        }
        Ok(())
    }

    /// Stops the members and gives their ports back (for a retry or the drop).
    fn clear_members(&mut self) {
        for m in self.members.drain(..) {
            m.daemon.stop(Signal::SIGTERM, STOP_GRACE);
            ports::release(m.client_port);
            ports::release(m.peer_port);
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for m in &self.members {
            let d = &m.daemon;
            panic_log::print_tail_if_panicking(&format!("the log of {}", d.spec.what), &d.log());
        }
        self.clear_members();
        drop(self.watchdog.take());
        if let Some(tmp) = self.tmp.take() {
            let _ = tmp.close();
        }
    }
}

/// An HTTP client with short timeouts, treating 4xx/5xx as errors.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(3)))
        .build()
        .into()
}

fn http_err(url: &str, e: ureq::Error) -> TestkitError {
    TestkitError::Http {
        url: url.to_owned(),
        source: Box::new(e),
    }
}
