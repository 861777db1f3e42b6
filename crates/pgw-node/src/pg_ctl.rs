//! Typed `pg_ctl` modes on a [`Node`]: start, stop (falling back to signalling the
//! postmaster), restart, reload, promote, status.
//!
//! pg_ctl runs as the server user in its own process group, so a Ctrl-C in our terminal does
//! not reach it; the server it starts runs in its own session (pg_ctl `setsid`s it).

use std::os::unix::process::CommandExt;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::command::{combined, run};
use crate::error::{one_line, PgCtlAction};
use crate::{process, Node, NodeError, Tool};

/// How many lines of pg_ctl output and server log go into an error.
const ERROR_LINES: usize = 12;

/// How long to wait after SIGQUIT before SIGKILL, when pg_ctl could not stop the server.
const SIGQUIT_GRACE: Duration = Duration::from_secs(5);

/// Options for [`Node::start`] and [`Node::restart`].
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// `-p`: the port, overriding postgresql.conf.
    pub port: Option<u16>,
    /// `-c name=value` server settings, overriding postgresql.conf.
    pub settings: Vec<(String, String)>,
    /// Further server arguments, each one word (quoted for pg_ctl's shell).
    pub args: Vec<String>,
    /// `-t`: how long pg_ctl waits for the server to accept connections (a standby: to reach
    /// a consistent state).
    pub timeout: Duration,
}

impl Default for StartOptions {
    /// No overrides; a 60 s deadline.
    fn default() -> StartOptions {
        StartOptions {
            port: None,
            settings: Vec::new(),
            args: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }
}

impl StartOptions {
    /// Sets the port.
    pub fn port(mut self, port: u16) -> StartOptions {
        self.port = Some(port);
        self
    }

    /// Adds a `-c name=value` setting.
    pub fn setting(mut self, name: &str, value: &str) -> StartOptions {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the deadline.
    pub fn timeout(mut self, timeout: Duration) -> StartOptions {
        self.timeout = timeout;
        self
    }

    /// The server's words, for `pg_ctl -o`.
    fn server_words(&self) -> Vec<String> {
        let mut words = Vec::new();
        if let Some(port) = self.port {
            words.extend(["-p".to_owned(), port.to_string()]);
        }
        for (name, value) in &self.settings {
            words.extend(["-c".to_owned(), format!("{name}={value}")]);
        }
        words.extend(self.args.iter().cloned());
        words
    }

    /// `pg_ctl -o`'s value: pg_ctl hands it to `/bin/sh`, so every word is shell-quoted.
    pub(crate) fn dash_o(&self) -> Result<Option<String>, NodeError> {
        let words = self.server_words();
        if words.is_empty() {
            return Ok(None);
        }
        shlex::try_join(words.iter().map(String::as_str))
            .map(Some)
            .map_err(|_| NodeError::InvalidOption {
                option: "server argument",
                value: words.join(" "),
                reason: "contains a NUL byte",
            })
    }
}

/// pg_ctl's shutdown modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// `smart`: wait for clients to disconnect.
    Smart,
    /// `fast`: roll back transactions, disconnect clients, checkpoint.
    Fast,
    /// `immediate`: quit at once; crash recovery on the next start.
    Immediate,
}

impl StopMode {
    /// The word pg_ctl takes.
    pub fn as_str(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// Options for [`Node::stop`].
#[derive(Debug, Clone, Copy)]
pub struct StopOptions {
    /// The shutdown mode.
    pub mode: StopMode,
    /// How long pg_ctl waits before we signal the postmaster ourselves.
    pub timeout: Duration,
}

impl Default for StopOptions {
    /// Fast, 60 s.
    fn default() -> StopOptions {
        StopOptions {
            mode: StopMode::Fast,
            timeout: Duration::from_secs(60),
        }
    }
}

impl StopOptions {
    /// `mode` with a `timeout`.
    pub fn new(mode: StopMode, timeout: Duration) -> StopOptions {
        StopOptions { mode, timeout }
    }
}

/// How [`Node::stop`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// No server was running.
    NotRunning,
    /// pg_ctl stopped it.
    Stopped,
    /// pg_ctl failed or timed out, and the postmaster was signalled (SIGQUIT, then SIGKILL
    /// if it did not exit).
    Signalled(Signal),
}

/// What `pg_ctl status` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStatus {
    /// A server runs with this postmaster pid.
    Running {
        /// The postmaster's pid.
        pid: u32,
    },
    /// No server runs on the data directory.
    Stopped,
}

impl Node {
    /// `pg_ctl start -w`: starts the server, logging to [`Node::log_file`], and waits until it
    /// accepts connections (or, as a standby, reached a consistent state) or the deadline
    /// passes. Refuses if a server already runs.
    pub fn start(&self, options: &StartOptions) -> Result<(), NodeError> {
        self.bin.require(&[Tool::PgCtl, Tool::Postgres])?;
        if let Some(pid) = self.running_pid() {
            return Err(NodeError::Running {
                pid,
                data_dir: self.data_dir.clone(),
            });
        }
        self.ensure_log_file()?;
        let log_start = self.log_len();
        let mut cmd = self.pg_ctl();
        cmd.arg("-l").arg(&self.log_file);
        if let Some(o) = options.dash_o()? {
            cmd.arg("-o").arg(o);
        }
        cmd.args(["-w", "-t", &secs(options.timeout).to_string(), "start"]);
        tracing::debug!(data_dir = %self.data_dir.display(), port = options.port, "start server");
        let out = run(&mut cmd, Tool::PgCtl)?;
        self.check_pg_ctl(PgCtlAction::Start, &out, log_start, options.timeout)
    }

    /// `pg_ctl stop`. If pg_ctl fails or its timeout passes while the postmaster lives, the
    /// postmaster gets SIGQUIT (immediate shutdown), then SIGKILL with its children.
    pub fn stop(&self, options: &StopOptions) -> Result<StopOutcome, NodeError> {
        let Some(pid) = self.running_pid() else {
            return Ok(StopOutcome::NotRunning);
        };
        let mut cmd = self.pg_ctl();
        cmd.args([
            "-m",
            options.mode.as_str(),
            "-w",
            "-t",
            &secs(options.timeout).to_string(),
            "stop",
        ]);
        tracing::debug!(pid, mode = options.mode.as_str(), "stop server");
        let ran = run(&mut cmd, Tool::PgCtl);
        // Gone, or (its pid reused meanwhile) no longer our postmaster: nothing to signal.
        if !self.is_postmaster(pid) {
            return Ok(StopOutcome::Stopped);
        }
        match &ran {
            Ok(out) => tracing::debug!(
                pid,
                output = %one_line(&combined(out), 4),
                "pg_ctl stop did not stop the postmaster; sending SIGQUIT"
            ),
            Err(e) => {
                tracing::debug!(pid, error = %e, "pg_ctl stop could not run; sending SIGQUIT")
            }
        }
        process::signal(pid, Signal::SIGQUIT);
        if process::wait_gone(&[pid], SIGQUIT_GRACE) {
            return Ok(StopOutcome::Signalled(Signal::SIGQUIT));
        }
        self.kill()?;
        Ok(StopOutcome::Signalled(Signal::SIGKILL))
    }

    /// `pg_ctl restart -w`: a stop in `stop_mode`, then a start with the options of the last
    /// start (pg_ctl keeps them in `postmaster.opts`) unless `options` give server arguments.
    /// [`NodeError::StalePidFile`] (nothing signalled) if `postmaster.pid` names a process
    /// that is not this directory's postmaster.
    pub fn restart(&self, stop_mode: StopMode, options: &StartOptions) -> Result<(), NodeError> {
        self.bin.require(&[Tool::PgCtl, Tool::Postgres])?;
        self.refuse_stale_pid_file()?;
        self.ensure_log_file()?;
        let log_start = self.log_len();
        let mut cmd = self.pg_ctl();
        cmd.arg("-l").arg(&self.log_file);
        if let Some(o) = options.dash_o()? {
            cmd.arg("-o").arg(o);
        }
        cmd.args([
            "-m",
            stop_mode.as_str(),
            "-w",
            "-t",
            &secs(options.timeout).to_string(),
            "restart",
        ]);
        tracing::debug!(data_dir = %self.data_dir.display(), mode = stop_mode.as_str(), "restart server");
        let out = run(&mut cmd, Tool::PgCtl)?;
        self.check_pg_ctl(PgCtlAction::Restart, &out, log_start, options.timeout)
    }

    /// `pg_ctl reload`: the server re-reads its configuration files (asynchronously).
    /// [`NodeError::StalePidFile`] (nothing signalled) if `postmaster.pid` names a process
    /// that is not this directory's postmaster.
    pub fn reload(&self) -> Result<(), NodeError> {
        self.refuse_stale_pid_file()?;
        let mut cmd = self.pg_ctl();
        cmd.arg("reload");
        tracing::debug!(data_dir = %self.data_dir.display(), "reload server");
        let out = run(&mut cmd, Tool::PgCtl)?;
        self.check_pg_ctl(PgCtlAction::Reload, &out, self.log_len(), Duration::ZERO)
    }

    /// `pg_ctl promote -w`: ends recovery on a standby and waits until it accepts writes or
    /// `timeout` passes. [`NodeError::StalePidFile`] (nothing signalled) if `postmaster.pid`
    /// names a process that is not this directory's postmaster.
    pub fn promote(&self, timeout: Duration) -> Result<(), NodeError> {
        self.refuse_stale_pid_file()?;
        let log_start = self.log_len();
        let mut cmd = self.pg_ctl();
        cmd.args(["-w", "-t", &secs(timeout).to_string(), "promote"]);
        tracing::debug!(data_dir = %self.data_dir.display(), "promote server");
        let out = run(&mut cmd, Tool::PgCtl)?;
        self.check_pg_ctl(PgCtlAction::Promote, &out, log_start, timeout)
    }

    /// `pg_ctl status`; a pid that is not this directory's postmaster (a stale
    /// `postmaster.pid` whose pid was reused) is [`ServerStatus::Stopped`].
    pub fn status(&self) -> Result<ServerStatus, NodeError> {
        let mut cmd = self.pg_ctl();
        cmd.arg("status");
        let out = run(&mut cmd, Tool::PgCtl)?;
        let text = combined(&out);
        match out.status.code() {
            Some(0) => match parse_status_pid(&text) {
                Some(pid) if self.is_postmaster(pid) => Ok(ServerStatus::Running { pid }),
                Some(_) => Ok(ServerStatus::Stopped),
                None => Err(NodeError::PgCtl {
                    action: PgCtlAction::Status,
                    output: one_line(&text, ERROR_LINES),
                }),
            },
            Some(3) => Ok(ServerStatus::Stopped),
            _ => Err(NodeError::PgCtl {
                action: PgCtlAction::Status,
                output: one_line(&text, ERROR_LINES),
            }),
        }
    }

    /// `pg_ctl -D <data>` as the server user, in its own process group.
    fn pg_ctl(&self) -> std::process::Command {
        let mut cmd = self.server_command(Tool::PgCtl);
        cmd.arg("-D").arg(&self.data_dir);
        cmd.process_group(0);
        cmd
    }

    /// Creates the log file for the server user if it is not there (pg_ctl opens it as that
    /// user, who may not be able to create files beside the data directory).
    fn ensure_log_file(&self) -> Result<(), NodeError> {
        if self.log_file.exists() {
            return Ok(());
        }
        self.user.write_file(&self.log_file, b"", 0o600)
    }

    fn check_pg_ctl(
        &self,
        action: PgCtlAction,
        out: &std::process::Output,
        log_start: u64,
        timeout: Duration,
    ) -> Result<(), NodeError> {
        if out.status.success() {
            return Ok(());
        }
        let output = combined(out);
        let log = self.log_since(log_start);
        if output.contains("did not start in time")
            || output.contains("did not promote in time")
            || output.contains("server did not shut down")
        {
            return Err(NodeError::Timeout {
                action,
                secs: secs(timeout),
                log: one_line(&log, ERROR_LINES),
            });
        }
        Err(NodeError::PgCtl {
            action,
            output: one_line(&format!("{output}\n{log}"), ERROR_LINES),
        })
    }
}

/// Whole seconds for pg_ctl's `-t`, at least 1.
fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

/// The pid in "pg_ctl: server is running (PID: 14178)".
fn parse_status_pid(text: &str) -> Option<u32> {
    let rest = &text[text.find("(PID: ")? + 6..];
    rest[..rest.find(')')?].trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_arguments_are_shell_quoted() {
        assert_eq!(StartOptions::default().dash_o().unwrap(), None);
        let o = StartOptions::default()
            .port(5433)
            .setting("unix_socket_directories", "/tmp/a dir")
            .setting("application_name", "it's");
        assert_eq!(
            o.dash_o().unwrap().unwrap(),
            r#"-p 5433 -c 'unix_socket_directories=/tmp/a dir' -c "application_name=it's""#
        );
        let nul = StartOptions::default().setting("x", "a\0b");
        assert!(matches!(nul.dash_o(), Err(NodeError::InvalidOption { .. })));
    }

    #[test]
    fn status_pid() {
        assert_eq!(
            parse_status_pid("pg_ctl: server is running (PID: 14178)\n/usr/lib/postgresql/15/bin/postgres \"-D\""),
            Some(14178)
        );
        assert_eq!(parse_status_pid("pg_ctl: no server running"), None);
    }

    #[test]
    fn deadlines_round_to_at_least_a_second() {
        assert_eq!(secs(Duration::from_millis(10)), 1);
        assert_eq!(secs(Duration::from_secs(30)), 30);
    }
}
