//! Readiness: [`Node::wait_ready`] polls `pg_isready` until the server accepts connections,
//! with a deadline, and fails at once if the postmaster is gone.

use std::time::{Duration, Instant};

use crate::command::{combined, run};
use crate::error::one_line;
use crate::{Node, NodeError, Tool};

/// How often `pg_isready` is asked.
const POLL: Duration = Duration::from_millis(100);

/// How many lines of the server log go into a readiness error.
const LOG_LINES: usize = 12;

/// Where and how long to poll. Host and port default to what `postmaster.pid` says (the
/// first listen address, or the socket directory when the server listens on no TCP address
/// or on all of them).
#[derive(Debug, Clone)]
pub struct ReadyOptions {
    /// `-h`: a host, an IP address or a socket directory.
    pub host: Option<String>,
    /// `-p`.
    pub port: Option<u16>,
    /// `-U`: the role named in the probe (no authentication happens).
    pub user: String,
    /// `-d`.
    pub dbname: String,
    /// The deadline.
    pub timeout: Duration,
}

impl Default for ReadyOptions {
    /// From `postmaster.pid`, as `postgres` on `postgres`, 60 s.
    fn default() -> ReadyOptions {
        ReadyOptions {
            host: None,
            port: None,
            user: crate::DEFAULT_SERVER_USER.to_owned(),
            dbname: "postgres".to_owned(),
            timeout: Duration::from_secs(60),
        }
    }
}

impl ReadyOptions {
    /// Polls `host`:`port`.
    pub fn tcp(host: &str, port: u16) -> ReadyOptions {
        ReadyOptions {
            host: Some(host.to_owned()),
            port: Some(port),
            ..ReadyOptions::default()
        }
    }

    /// Sets the deadline.
    pub fn timeout(mut self, timeout: Duration) -> ReadyOptions {
        self.timeout = timeout;
        self
    }
}

impl Node {
    /// Waits until the server accepts connections. Fails with the log tail when the deadline
    /// passes, and at once when no live postmaster runs on the data directory.
    pub fn wait_ready(&self, options: &ReadyOptions) -> Result<(), NodeError> {
        self.bin.require(&[Tool::PgIsready])?;
        let deadline = Instant::now() + options.timeout;
        let log_start = self.log_len().saturating_sub(64 * 1024);
        loop {
            let Some(pid_file) = self.postmaster_pid().ok().flatten() else {
                return Err(self.died(log_start));
            };
            if !self.is_postmaster(pid_file.pid) {
                return Err(self.died(log_start));
            }
            let port = options.port.unwrap_or(pid_file.port);
            let host = match &options.host {
                Some(h) => h.clone(),
                None => default_host(&pid_file),
            };
            let mut cmd = self.bin.command(Tool::PgIsready);
            cmd.args(["-h", &host, "-p", &port.to_string()]).args([
                "-U",
                &options.user,
                "-d",
                &options.dbname,
                "-t",
                "2",
            ]);
            let out = run(&mut cmd, Tool::PgIsready)?;
            if out.status.success() {
                tracing::debug!(port, "server accepts connections");
                return Ok(());
            }
            if Instant::now() >= deadline {
                let answer = one_line(&combined(&out), 1);
                return Err(NodeError::NotReady {
                    port,
                    secs: options.timeout.as_secs(),
                    log: format!("{answer} | {}", self.log_tail_since(log_start, LOG_LINES)),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    fn died(&self, log_start: u64) -> NodeError {
        NodeError::PostmasterDied {
            data_dir: self.data_dir.clone(),
            log: self.log_tail_since(log_start, LOG_LINES),
        }
    }
}

/// The first listen address, else the socket directory, else `localhost`.
fn default_host(pid: &crate::PostmasterPid) -> String {
    match (&pid.listen_address, &pid.socket_dir) {
        (Some(addr), _) if addr != "*" => addr.clone(),
        (_, Some(dir)) => dir.to_string_lossy().into_owned(),
        _ => "localhost".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::PostmasterPid;

    fn pid(listen: Option<&str>, socket: Option<&str>) -> PostmasterPid {
        PostmasterPid {
            pid: 1,
            data_dir: PathBuf::from("/d"),
            start_time: 0,
            port: 5433,
            socket_dir: socket.map(PathBuf::from),
            listen_address: listen.map(str::to_owned),
            status: None,
        }
    }

    #[test]
    fn host_from_pid_file() {
        assert_eq!(
            default_host(&pid(Some("127.0.0.1"), Some("/s"))),
            "127.0.0.1"
        );
        assert_eq!(default_host(&pid(Some("*"), Some("/s"))), "/s");
        assert_eq!(default_host(&pid(None, Some("/s"))), "/s");
        assert_eq!(default_host(&pid(Some("*"), None)), "localhost");
    }
}
