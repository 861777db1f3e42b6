//! [`PgBouncer`]: Debian's PgBouncer (1.18) in front of a `pgw_cluster::Cluster`, configured in
//! a temp dir: `pgbouncer.ini` and `userlist.txt` written there, listening on a free loopback
//! port with its Unix socket in the temp dir, run as the `postgres` OS user when we are root
//! (PgBouncer refuses to run as root), ready once it accepts a TCP connection.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use pgw_cluster::watchdog::{Watchdog, Watched};
use pgw_cluster::{panic_log, ports, Cluster};
use pgw_node::{Conninfo, OsUser, Password};

use crate::daemon::{require_binary, temp_dir, Daemon, Spec};
use crate::TestkitError;

/// Where Debian's `pgbouncer` package installs it.
pub const DEFAULT_PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// How long PgBouncer may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often it is started again on another port if its port was taken.
const PORT_ATTEMPTS: u32 = 3;

/// How long PgBouncer gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// PgBouncer's `pool_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolMode {
    /// `session`: a server connection per client connection (PgBouncer's default).
    #[default]
    Session,
    /// `transaction`: a server connection per transaction.
    Transaction,
    /// `statement`: a server connection per statement.
    Statement,
}

impl PoolMode {
    /// The word pgbouncer.ini takes.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

/// Options for [`PgBouncer`]; [`PgBouncerBuilder::start`] writes the config and starts it.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .start() is called"]
pub struct PgBouncerBuilder {
    server_port: u16,
    superuser: String,
    password: String,
    pool_mode: PoolMode,
    settings: Vec<(String, String)>,
    users: Vec<(String, String)>,
    binary: PathBuf,
}

impl PgBouncerBuilder {
    /// `pool_mode` (default session).
    pub fn pool_mode(mut self, mode: PoolMode) -> Self {
        self.pool_mode = mode;
        self
    }

    /// A `[pgbouncer]` setting, written as given (`default_pool_size`, `3`); it replaces the
    /// fixture's own value of the same name (`auth_type`, `pool_mode`, `admin_users`, …).
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Another user in `userlist.txt` (the cluster's superuser is always there), with a
    /// clear-text password, which lets PgBouncer log in to the server as that user.
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.to_owned(), password.to_owned()));
        self
    }

    /// The pgbouncer binary (default `/usr/sbin/pgbouncer`).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = path.into();
        self
    }

    /// Writes `pgbouncer.ini` and `userlist.txt`, starts PgBouncer and waits until it accepts
    /// connections.
    pub fn start(self) -> Result<PgBouncer, TestkitError> {
        require_binary(&self.binary, "pgbouncer")?;
        let user = OsUser::detect()?;
        let tmp = temp_dir("pgw-pgbouncer-", &user)?;
        let root = tmp.path().to_owned();
        let pidfile = root.join("pgbouncer.pid");
        let watchdog = Watchdog::spawn(
            &root,
            // PgBouncer runs in `root` (its Spec's cwd, below).
            &[Watched::new(&pidfile, &root, Signal::SIGTERM, STOP_GRACE)],
        )?;
        let ini = root.join("pgbouncer.ini");
        user.write_file(
            &root.join("userlist.txt"),
            self.userlist().as_bytes(),
            0o600,
        )?;
        let spec = Spec {
            what: "pgbouncer".to_owned(),
            program: self.binary.clone(),
            args: vec![ini.clone().into_os_string()],
            clear_env_prefixes: vec!["PG"],
            user: user.is_other().then(|| user.clone()),
            cwd: root.clone(),
            log: root.join("pgbouncer.log"),
            pidfile,
        };
        let mut bouncer = PgBouncer {
            daemon: Daemon::new(spec),
            port: 0,
            superuser: self.superuser.clone(),
            password: self.password.clone(),
            watchdog: Some(watchdog),
            tmp: Some(tmp),
            root,
        };
        let mut last_log = String::new();
        for attempt in 1..=PORT_ATTEMPTS {
            bouncer.port = ports::reserve()?;
            user.write_file(
                &ini,
                self.ini(bouncer.port, &bouncer.root).as_bytes(),
                0o600,
            )?;
            let log_start = bouncer.daemon.log_len();
            bouncer.daemon.spawn()?;
            match bouncer.wait_ready(log_start) {
                Ok(()) => return Ok(bouncer),
                Err(TestkitError::Exited { log, .. }) if log.contains("Address already in use") => {
                    tracing::debug!(
                        attempt,
                        port = bouncer.port,
                        "pgbouncer port taken; retrying"
                    );
                    ports::release(bouncer.port);
                    bouncer.port = 0;
                    last_log = log;
                }
                Err(e) => return Err(e),
            }
        }
        Err(TestkitError::NoFreePort {
            what: "pgbouncer".to_owned(),
            attempts: PORT_ATTEMPTS,
            log: last_log,
        })
    }

    /// `userlist.txt`: `"user" "password"` lines, `"` doubled.
    fn userlist(&self) -> String {
        let mut out = String::new();
        let quote = |s: &str| s.replace('"', "\"\"");
        for (name, pw) in
            std::iter::once(&(self.superuser.clone(), self.password.clone())).chain(&self.users)
        {
            let _ = writeln!(out, "\"{}\" \"{}\"", quote(name), quote(pw));
        }
        out
    }

    /// `pgbouncer.ini` for `port`, with the socket in `dir`.
    pub(crate) fn ini(&self, port: u16, dir: &Path) -> String {
        let dir = dir.display().to_string();
        let mut settings: Vec<(String, String)> = [
            ("listen_addr", "127.0.0.1".to_owned()),
            ("listen_port", port.to_string()),
            ("unix_socket_dir", dir.clone()),
            ("auth_type", "scram-sha-256".to_owned()),
            ("auth_file", format!("{dir}/userlist.txt")),
            ("admin_users", self.superuser.clone()),
            ("stats_users", self.superuser.clone()),
            ("pool_mode", self.pool_mode.as_str().to_owned()),
            ("ignore_startup_parameters", "extra_float_digits".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (name, value) in &self.settings {
            match settings.iter_mut().find(|(k, _)| k == name) {
                Some(slot) => slot.1 = value.clone(),
                None => settings.push((name.clone(), value.clone())),
            }
        }
        let mut ini = format!(
            "; written by pgw-testkit\n[databases]\n* = host=127.0.0.1 port={}\n\n[pgbouncer]\n",
            self.server_port
        );
        for (k, v) in settings {
            let _ = writeln!(ini, "{k} = {v}");
        }
        ini
    }
}

/// A running PgBouncer in front of one cluster; stopped and removed on drop (its log printed
/// if the test panicked), and by a watchdog if the owning process dies.
#[derive(Debug)]
pub struct PgBouncer {
    daemon: Daemon,
    port: u16,
    superuser: String,
    password: String,
    watchdog: Option<Watchdog>,
    tmp: Option<tempfile::TempDir>,
    root: PathBuf,
}

impl PgBouncer {
    /// PgBouncer in session mode in front of `cluster`.
    pub fn start(cluster: &Cluster) -> Result<PgBouncer, TestkitError> {
        PgBouncer::builder(cluster).start()
    }

    /// A builder for PgBouncer in front of `cluster` (every database of it, as its superuser
    /// and any users added).
    pub fn builder(cluster: &Cluster) -> PgBouncerBuilder {
        PgBouncerBuilder {
            server_port: cluster.port(),
            superuser: cluster.superuser().to_owned(),
            password: cluster.password().to_owned(),
            pool_mode: PoolMode::Session,
            settings: Vec::new(),
            users: Vec::new(),
            binary: PathBuf::from(DEFAULT_PGBOUNCER),
        }
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of its Unix socket, config and log.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// A libpq conninfo string through PgBouncer: the cluster's superuser on `postgres`.
    pub fn dsn(&self) -> String {
        self.dsn_for(&self.superuser, &self.password, "postgres")
    }

    /// A libpq conninfo string through PgBouncer for `user`/`password` on `dbname`.
    pub fn dsn_for(&self, user: &str, password: &str, dbname: &str) -> String {
        Conninfo::tcp(self.host(), self.port, user)
            .with_password(Password::new(password))
            .with_dbname(dbname)
            .render()
    }

    /// The admin console (`dbname=pgbouncer`, simple query protocol only) as the superuser.
    pub fn admin_dsn(&self) -> String {
        self.dsn_for(&self.superuser, &self.password, "pgbouncer")
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// Its pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        self.daemon.is_running()
    }

    /// SIGHUP: re-read pgbouncer.ini and userlist.txt.
    pub fn reload(&self) -> Result<(), TestkitError> {
        if self.daemon.signal(Signal::SIGHUP) {
            Ok(())
        } else {
            Err(TestkitError::NotRunning {
                what: "pgbouncer".to_owned(),
            })
        }
    }

    /// SIGKILLs it (clients see their connections drop).
    pub fn kill(&self) {
        self.daemon.kill();
    }

    /// Starts it again on the same port after [`PgBouncer::kill`], waiting until it accepts
    /// connections.
    pub fn start_again(&self) -> Result<(), TestkitError> {
        let log_start = self.daemon.log_len();
        self.daemon.spawn()?;
        self.wait_ready(log_start)
    }

    fn wait_ready(&self, log_start: u64) -> Result<(), TestkitError> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        self.daemon.wait_ready(READY_TIMEOUT, log_start, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
        })
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        panic_log::print_tail_if_panicking(
            &format!("the pgbouncer log (port {})", self.port),
            &self.daemon.log(),
        );
        self.daemon.stop(Signal::SIGTERM, STOP_GRACE);
        drop(self.watchdog.take());
        if self.port != 0 {
            ports::release(self.port);
        }
        if let Some(tmp) = self.tmp.take() {
            let _ = tmp.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> PgBouncerBuilder {
        PgBouncerBuilder {
            server_port: 5999,
            superuser: "postgres".into(),
            password: "p\"w".into(),
            pool_mode: PoolMode::Transaction,
            settings: Vec::new(),
            users: vec![("alice".into(), "secret".into())],
            binary: PathBuf::from(DEFAULT_PGBOUNCER),
        }
    }

    #[test]
    fn ini_and_userlist() {
        let b = builder()
            .setting("default_pool_size", "3")
            .setting("auth_type", "md5");
        let ini = b.ini(6001, Path::new("/tmp/pgb"));
        assert!(
            ini.contains("[databases]\n* = host=127.0.0.1 port=5999\n"),
            "{ini}"
        );
        assert!(ini.contains("listen_port = 6001\n"));
        assert!(ini.contains("unix_socket_dir = /tmp/pgb\n"));
        assert!(ini.contains("auth_file = /tmp/pgb/userlist.txt\n"));
        assert!(ini.contains("pool_mode = transaction\n"));
        assert!(ini.contains("default_pool_size = 3\n"));
        assert!(
            ini.contains("auth_type = md5\n") && !ini.contains("scram"),
            "overridden: {ini}"
        );
        assert_eq!(
            b.userlist(),
            "\"postgres\" \"p\"\"w\"\n\"alice\" \"secret\"\n"
        );
    }
}
