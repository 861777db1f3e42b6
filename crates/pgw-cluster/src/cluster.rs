//! [`Cluster`]: a running throwaway server, its operations (psql, restart, a crash and the
//! start after it, promotion, rejoining as a standby), and its cleanup on drop.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use pgw_node::{
    one_line, Conninfo, Node, Password, ReadyOptions, RewindOptions, StartOptions, StopMode,
    StopOptions, Tool,
};

use crate::watchdog::Watchdog;
use crate::{panic_log, ports, ClusterBuilder, ClusterError};

/// The address the server listens on.
pub(crate) const HOST: &str = "127.0.0.1";
/// The bootstrap superuser created by initdb.
pub(crate) const SUPERUSER: &str = "postgres";
/// How long a start, restart or promotion may take before we give up.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How many lines of the server log go into an error message.
const ERROR_LOG_LINES: usize = 12;
/// The configuration files [`Cluster::rejoin`] keeps across pg_rewind.
const CONF_FILES: [&str; 4] = [
    "postgresql.conf",
    "postgresql.auto.conf",
    "pg_hba.conf",
    "pg_ident.conf",
];

/// A running throwaway PostgreSQL server in its own temp dir, on a free loopback port.
///
/// Dropping it stops the server (immediate mode) and removes all its files; if the thread is
/// panicking, the tail of the server log is printed to stderr first. [`Cluster::stop`] does the
/// same gracefully and reports errors. See the crate docs for the watchdog that cleans up if
/// the `Cluster` is never dropped.
pub struct Cluster {
    /// The temp dir: holds `data/`, `server.log` and the Unix socket. `None` once removed.
    pub(crate) tmp: Option<tempfile::TempDir>,
    pub(crate) root: PathBuf,
    pub(crate) node: Node,
    /// 0 until a port is reserved.
    pub(crate) port: u16,
    pub(crate) password: String,
    /// The `application_name` it streams with as a standby.
    pub(crate) application_name: Option<String>,
    pub(crate) watchdog: Option<Watchdog>,
    /// Set once the server is stopped and the files removed (or that was attempted).
    pub(crate) torn_down: bool,
}

impl Cluster {
    /// Starts a cluster with the [`ClusterBuilder`] defaults.
    pub fn start() -> Result<Cluster, ClusterError> {
        ClusterBuilder::new().start()
    }

    /// A builder for a cluster with settings, files, pg_hba lines or another bin dir.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::new()
    }

    /// The address the server listens on: always `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The TCP port (never 5432). It stays the same across [`Cluster::restart`],
    /// [`Cluster::kill`] and [`Cluster::start_again`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's name: `postgres`.
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// The superuser's password, random per cluster (SCRAM over TCP; Unix-socket connections
    /// are trusted). A standby has its primary's.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A libpq conninfo string for the superuser on database `postgres`.
    pub fn dsn(&self) -> String {
        self.dsn_for(SUPERUSER, &self.password, "postgres")
    }

    /// A libpq conninfo string for `user`/`password` on `dbname`, over TCP.
    pub fn dsn_for(&self, user: &str, password: &str, dbname: &str) -> String {
        Conninfo::tcp(HOST, self.port, user)
            .with_password(Password::new(password))
            .with_dbname(dbname)
            .render()
    }

    /// A `postgresql://` URI for the superuser on database `postgres`.
    pub fn uri(&self) -> String {
        format!(
            "postgresql://{SUPERUSER}:{}@{HOST}:{}/postgres",
            self.password, self.port
        )
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        self.node.data_dir()
    }

    /// The directory of the server's Unix socket (the cluster's temp dir).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// The directory of the PostgreSQL binaries in use.
    pub fn bin_dir(&self) -> &Path {
        self.node.bin().dir()
    }

    /// The [`pgw_node::Node`] under the cluster: pg_controldata, postmaster.pid, signals,
    /// postgresql.auto.conf.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The whole server log so far (empty if it cannot be read).
    pub fn log(&self) -> String {
        self.node.log()
    }

    /// The postmaster's pid, if a server is running.
    pub fn postmaster_pid(&self) -> Option<u32> {
        self.node.running_pid()
    }

    /// Whether the server is running (a live postmaster on the data directory).
    pub fn is_running(&self) -> bool {
        self.node.is_running()
    }

    /// Runs `sql` (one or more statements, fed to `psql` on stdin) on `dbname` as the
    /// superuser over TCP, with `psql -X -A -t -q -v ON_ERROR_STOP=1`, and returns its stdout
    /// without the trailing newline: unaligned, tuples only, `|` between columns.
    pub fn psql(&self, dbname: &str, sql: &str) -> Result<String, ClusterError> {
        let port = self.port.to_string();
        let mut cmd = self.node.bin().command(Tool::Psql);
        cmd.current_dir(&self.root)
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h", HOST, "-p", &port, "-U", SUPERUSER, "-d", dbname, "-f", "-",
            ])
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGAPPNAME", "pgw-cluster")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        tracing::debug!(port = self.port, dbname, sql, "psql");
        let spawn_err = |source| ClusterError::Spawn {
            program: "psql".to_owned(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        // Feed stdin from a thread so a large script cannot deadlock against a full stdout.
        let writer = child.stdin.take().map(|mut stdin| {
            let sql = sql.to_owned();
            std::thread::spawn(move || {
                // A write error means psql exited early; its stderr says why.
                let _ = stdin.write_all(sql.as_bytes());
            })
        });
        let out = child.wait_with_output().map_err(spawn_err)?;
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(ClusterError::Psql {
                dbname: dbname.to_owned(),
                stderr: one_line(&stderr, 6),
            });
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        Ok(stdout.trim_end_matches(['\n', '\r']).to_owned())
    }

    /// Restarts the server (`pg_ctl restart -m fast -w`) and waits until it accepts
    /// connections; settings of context `postmaster` take effect.
    pub fn restart(&self) -> Result<(), ClusterError> {
        tracing::debug!(port = self.port, "restart");
        self.node.restart(
            StopMode::Fast,
            &StartOptions::default().timeout(READY_TIMEOUT),
        )?;
        self.wait_ready()
    }

    /// Makes the server re-read its configuration files (`pg_ctl reload`).
    pub fn reload(&self) -> Result<(), ClusterError> {
        tracing::debug!(port = self.port, "reload");
        Ok(self.node.reload()?)
    }

    /// Stops the server gracefully (`pg_ctl stop -m fast`) and removes its files, reporting
    /// what went wrong (dropping does the same in immediate mode and cannot report).
    pub fn stop(mut self) -> Result<(), ClusterError> {
        self.teardown(StopMode::Fast)
    }

    /// Crashes the server: SIGKILL to the postmaster and its children, as when the machine is
    /// lost. The data directory stays; [`Cluster::start_again`] brings it back on the same
    /// port (with crash recovery). Does nothing if the server is not running.
    pub fn kill(&self) -> Result<(), ClusterError> {
        tracing::debug!(port = self.port, "kill");
        self.node.kill()?;
        Ok(())
    }

    /// Stops the server gracefully (`pg_ctl stop -m fast`) and keeps the data directory;
    /// [`Cluster::start_again`] starts it on the same port.
    pub fn stop_keep_data(&self) -> Result<(), ClusterError> {
        tracing::debug!(port = self.port, "stop, keeping the data");
        self.node
            .stop(&StopOptions::new(StopMode::Fast, READY_TIMEOUT))?;
        Ok(())
    }

    /// Starts the server again after [`Cluster::kill`] or [`Cluster::stop_keep_data`], on the
    /// same port, and waits until it accepts connections (a standby: until it accepts
    /// read-only ones). Fails if it is running.
    pub fn start_again(&self) -> Result<(), ClusterError> {
        tracing::debug!(port = self.port, "start again");
        self.node
            .start(&StartOptions::default().timeout(READY_TIMEOUT))?;
        self.wait_ready()
    }

    /// Promotes a standby (`pg_ctl promote -w`) and waits until it accepts writes.
    pub fn promote(&self) -> Result<(), ClusterError> {
        tracing::debug!(port = self.port, "promote");
        self.node.promote(READY_TIMEOUT)?;
        self.wait_ready()
    }

    /// Waits until this standby streams from its primary (`pg_stat_wal_receiver.status =
    /// 'streaming'`) or `timeout` passes.
    pub fn wait_streaming(&self, timeout: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        let query = "select coalesce((select status from pg_stat_wal_receiver), 'none')";
        loop {
            let status = match self.psql("postgres", query) {
                Ok(status) => status,
                Err(e) => format!("({e})"),
            };
            if status == "streaming" {
                tracing::debug!(port = self.port, "standby is streaming");
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::NotStreaming {
                    port: self.port,
                    secs: timeout.as_secs(),
                    status,
                    log: one_line(&self.log(), ERROR_LOG_LINES),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until this standby has replayed WAL up to `lsn` (as `pg_current_wal_lsn()`
    /// prints it on the primary) or `timeout` passes.
    pub fn wait_replayed(&self, lsn: &str, timeout: Duration) -> Result<(), ClusterError> {
        let lsn: pgw_node::Lsn = lsn.parse().map_err(|_| ClusterError::Psql {
            dbname: "postgres".to_owned(),
            stderr: format!("not a WAL location: {lsn:?}"),
        })?;
        let deadline = Instant::now() + timeout;
        loop {
            let replayed = self
                .psql(
                    "postgres",
                    "select coalesce(pg_last_wal_replay_lsn(), '0/0')",
                )
                .unwrap_or_default();
            if replayed.parse::<pgw_node::Lsn>().is_ok_and(|r| r >= lsn) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::NotCaughtUp {
                    port: self.port,
                    secs: timeout.as_secs(),
                    lsn: lsn.to_string(),
                    replayed,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Makes this cluster (an old primary after a failover, or any diverged copy) a standby
    /// of `primary` again: stops it if it runs, `pg_rewind`s it onto `primary`, keeps its own
    /// configuration files (pg_rewind copies the primary's, port included), points
    /// `primary_conninfo` at `primary` (streaming through `slot` if given, which must exist
    /// there; under the builder's [`application_name`](ClusterBuilder::application_name)), and
    /// starts it again on the same port. Needs `wal_log_hints = on` or data checksums, and
    /// `primary` must still have the WAL back to where the two diverged.
    pub fn rejoin(&self, primary: &Cluster, slot: Option<&str>) -> Result<(), ClusterError> {
        tracing::debug!(port = self.port, primary_port = primary.port, "rejoin");
        self.stop_keep_data()?;
        let data = self.node.data_dir();
        let mut kept = Vec::new();
        for name in CONF_FILES {
            let path = data.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => kept.push((path, bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ClusterError::Io {
                        action: "read",
                        path,
                        source,
                    })
                }
            }
        }
        let source = Conninfo::tcp(HOST, primary.port, SUPERUSER)
            .with_password(Password::new(primary.password.clone()))
            .with_dbname("postgres");
        // pg_rewind reads the source's timeline from its pg_control, which a just-promoted
        // primary updates only at its next checkpoint.
        primary.psql("postgres", "checkpoint")?;
        self.node.rewind(&RewindOptions::onto(source.clone()))?;
        for (path, bytes) in &kept {
            self.node.user().write_file(path, bytes, 0o600)?;
        }
        let conninfo = Conninfo {
            dbname: None,
            application_name: self.application_name.clone(),
            ..source
        };
        self.node.configure_standby(&conninfo, slot)?;
        self.start_again()
    }

    /// Polls `pg_isready` until the server accepts connections, or fails after
    /// [`READY_TIMEOUT`] (or at once if the postmaster is gone) with the log tail.
    pub(crate) fn wait_ready(&self) -> Result<(), ClusterError> {
        self.node
            .wait_ready(&ReadyOptions::tcp(HOST, self.port).timeout(READY_TIMEOUT))?;
        Ok(())
    }

    /// Stops the server if it runs, kills the watchdog, releases the port and removes the temp
    /// dir; runs once. Every step is attempted; the first error is returned.
    pub(crate) fn teardown(&mut self, mode: StopMode) -> Result<(), ClusterError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut first_err = None;

        // pgw-node falls back to SIGQUIT, then SIGKILL, if pg_ctl cannot stop it in time.
        if let Err(e) = self
            .node
            .stop(&StopOptions::new(mode, Duration::from_secs(30)))
        {
            first_err = Some(ClusterError::from(e));
        }

        drop(self.watchdog.take());

        if self.port != 0 {
            ports::release(self.port);
        }

        if let Some(tmp) = self.tmp.take() {
            tracing::debug!(dir = %self.root.display(), "remove temp dir");
            if let Err(source) = tmp.close() {
                // Files the server was still writing may have raced the removal: try once more.
                if std::fs::remove_dir_all(&self.root).is_err() && self.root.exists() {
                    first_err.get_or_insert(ClusterError::Io {
                        action: "remove",
                        path: self.root.clone(),
                        source,
                    });
                }
            }
        }

        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.torn_down {
            panic_log::print_tail_if_panicking(
                &format!(
                    "the server log (port {}, {})",
                    self.port,
                    self.node.data_dir().display()
                ),
                &self.log(),
            );
        }
        if let Err(e) = self.teardown(StopMode::Immediate) {
            // Drop cannot return it: said once, on stderr (no tracing event as well).
            let _ = writeln!(
                std::io::stderr(),
                "pgw-cluster: cleanup of the cluster on port {} failed: {e}",
                self.port
            );
        }
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("host", &HOST)
            .field("port", &self.port)
            .field("data_dir", &self.node.data_dir())
            .field("bin_dir", &self.node.bin().dir())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Cluster>();
    }
}
