//! [`Node::rewind`]: `pg_rewind` of a stopped data directory onto the server it diverged from,
//! and [`Node::rewind_precheck`], which reads pg_control to say whether that can work.
//!
//! The source's password goes in `PGPASSWORD`; the `--source-server` string on argv has none.

use crate::command::{combined, run};
use crate::error::one_line;
use crate::{Conninfo, Lsn, Node, NodeError, Tool};

/// Options for [`Node::rewind`].
#[derive(Debug, Clone)]
pub struct RewindOptions {
    /// `--source-server`: the server to resynchronise with (the new primary). A role that is a
    /// superuser or has the grants pg_rewind documents.
    pub source: Conninfo,
    /// `--write-recovery-conf`: write `standby.signal` and `primary_conninfo` (with the
    /// password) so the rewound directory starts as a standby of the source.
    pub write_recovery_conf: bool,
    /// `--dry-run`: do everything except changing the target.
    pub dry_run: bool,
}

impl RewindOptions {
    /// A real rewind onto `source` that writes the recovery config.
    pub fn onto(source: Conninfo) -> RewindOptions {
        RewindOptions {
            source,
            write_recovery_conf: true,
            dry_run: false,
        }
    }

    /// pg_rewind's arguments after `-D <dir>`.
    pub(crate) fn args(&self) -> Vec<String> {
        let mut args = vec![format!(
            "--source-server={}",
            self.source.render_without_password()
        )];
        if self.write_recovery_conf {
            args.push("--write-recovery-conf".into());
        }
        if self.dry_run {
            args.push("--dry-run".into());
        }
        args
    }
}

/// What pg_control says about rewinding this data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewindPrecheck {
    /// `wal_log_hints` was on.
    pub wal_log_hints: bool,
    /// Data checksums are on.
    pub data_checksums: bool,
    /// The server was stopped cleanly; if not, pg_rewind first runs crash recovery in
    /// single-user mode itself.
    pub clean_shutdown: bool,
    /// A server runs on the directory (pg_rewind needs it stopped).
    pub running: bool,
}

impl RewindPrecheck {
    /// Whether pg_rewind can work: hint bits are WAL-logged (`wal_log_hints` or checksums)
    /// and the server is stopped.
    pub fn possible(&self) -> bool {
        (self.wal_log_hints || self.data_checksums) && !self.running
    }
}

/// What pg_rewind did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewindReport {
    /// False when pg_rewind found nothing to do ("no rewind required").
    pub rewound: bool,
    /// Where the timelines diverged, if pg_rewind said.
    pub diverged_at: Option<Lsn>,
    /// The timeline on which they diverged.
    pub diverged_timeline: Option<u32>,
    /// Whether it was a dry run (nothing changed).
    pub dry_run: bool,
}

impl RewindReport {
    /// Reads pg_rewind's output.
    pub fn parse(output: &str, dry_run: bool) -> RewindReport {
        let mut report = RewindReport {
            rewound: !output.contains("no rewind required"),
            diverged_at: None,
            diverged_timeline: None,
            dry_run,
        };
        // "pg_rewind: servers diverged at WAL location 0/3000060 on timeline 1"
        if let Some(i) = output.find("diverged at WAL location ") {
            let mut words = output[i + "diverged at WAL location ".len()..].split_whitespace();
            report.diverged_at = words.next().and_then(|w| w.parse().ok());
            if words.next() == Some("on") && words.next() == Some("timeline") {
                report.diverged_timeline = words.next().and_then(|w| w.parse().ok());
            }
        }
        report
    }
}

impl Node {
    /// Whether pg_rewind can work on this directory, from pg_control and `postmaster.pid`.
    pub fn rewind_precheck(&self) -> Result<RewindPrecheck, NodeError> {
        let control = self.control_data()?;
        Ok(RewindPrecheck {
            wal_log_hints: control.wal_log_hints,
            data_checksums: control.data_checksums(),
            clean_shutdown: control.state.is_clean_shutdown(),
            running: self.is_running(),
        })
    }

    /// `pg_rewind` of this (stopped) directory onto `options.source`. Checks first that a
    /// server is not running and that `wal_log_hints` or checksums are on.
    ///
    /// The source must have checkpointed since it was promoted (run `CHECKPOINT` on it
    /// first): pg_rewind reads the source's timeline from its pg_control, and until that
    /// checkpoint it may still show the old one and report "no rewind required".
    ///
    /// pg_rewind copies the source's configuration files, postgresql.auto.conf included: a
    /// `primary_slot_name` the source had as a standby comes along. Set this node's own with
    /// [`Node::configure_standby`] before starting it.
    pub fn rewind(&self, options: &RewindOptions) -> Result<RewindReport, NodeError> {
        self.bin.require(&[Tool::PgRewind, Tool::Postgres])?;
        if let Some(pid) = self.running_pid() {
            return Err(NodeError::Running {
                pid,
                data_dir: self.data_dir.clone(),
            });
        }
        if !self.rewind_precheck()?.possible() {
            return Err(NodeError::RewindImpossible {
                data_dir: self.data_dir.clone(),
            });
        }
        let mut cmd = self.server_command(Tool::PgRewind);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(options.args())
            .env("PGCONNECT_TIMEOUT", "10");
        if let Some(pw) = &options.source.password {
            cmd.env("PGPASSWORD", pw.expose());
        }
        tracing::debug!(data_dir = %self.data_dir.display(), source = ?options.source, dry_run = options.dry_run, "pg_rewind");
        let out = run(&mut cmd, Tool::PgRewind)?;
        let text = combined(&out);
        if !out.status.success() {
            return Err(NodeError::ToolFailed {
                tool: Tool::PgRewind,
                status: out.status,
                output: one_line(&text, 8),
            });
        }
        Ok(RewindReport::parse(&text, options.dry_run))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Password;

    #[test]
    fn arguments_carry_no_password() {
        let source = Conninfo::tcp("127.0.0.1", 5433, "postgres")
            .with_dbname("postgres")
            .with_password(Password::new("secret"));
        let mut options = RewindOptions::onto(source);
        assert_eq!(
            options.args(),
            [
                "--source-server=host=127.0.0.1 port=5433 user=postgres dbname=postgres",
                "--write-recovery-conf"
            ]
        );
        options.write_recovery_conf = false;
        options.dry_run = true;
        assert_eq!(options.args()[1], "--dry-run");
    }

    #[test]
    fn reports() {
        let out = "pg_rewind: servers diverged at WAL location 0/3000060 on timeline 1\npg_rewind: rewinding from last common checkpoint at 0/2000060 on timeline 1\npg_rewind: Done!\n";
        assert_eq!(
            RewindReport::parse(out, false),
            RewindReport {
                rewound: true,
                diverged_at: Some(Lsn(0x3000060)),
                diverged_timeline: Some(1),
                dry_run: false
            }
        );
        let none = RewindReport::parse(
            "pg_rewind: source and target cluster are on the same timeline\npg_rewind: no rewind required\n",
            true,
        );
        assert!(!none.rewound);
        assert_eq!(none.diverged_at, None);
    }

    #[test]
    fn precheck() {
        let mut p = RewindPrecheck {
            wal_log_hints: false,
            data_checksums: false,
            clean_shutdown: true,
            running: false,
        };
        assert!(!p.possible());
        p.data_checksums = true;
        assert!(p.possible());
        p.running = true;
        assert!(!p.possible());
        p.running = false;
        p.data_checksums = false;
        p.wal_log_hints = true;
        assert!(p.possible());
    }
}
