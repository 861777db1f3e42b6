//! [`Node::base_backup`]: `pg_basebackup` of a running server into a new data directory, with
//! typed [`BaseBackupOptions`] and a [`Progress`] callback fed from `--progress`.
//!
//! Host, port and user go on argv; the password goes in `PGPASSWORD`, never argv.

use std::path::PathBuf;

use crate::command::{combined, run_streaming};
use crate::error::one_line;
use crate::initdb::prepare_empty_dir;
use crate::{BinDir, Node, NodeError, OsUser, Password, Tool};

/// How the WAL needed to make the copy consistent gets into it (`-X`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalMethod {
    /// `stream`: a second connection streams WAL while the files are copied.
    Stream,
    /// `fetch`: WAL is fetched at the end (the primary must keep it that long).
    Fetch,
    /// `none`: no WAL (the copy needs an archive to start).
    None,
}

impl WalMethod {
    fn as_str(self) -> &'static str {
        match self {
            WalMethod::Stream => "stream",
            WalMethod::Fetch => "fetch",
            WalMethod::None => "none",
        }
    }
}

/// The checkpoint the backup starts with (`-c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    /// `fast`: at once, at the cost of an I/O burst on the source.
    Fast,
    /// `spread`: paced by `checkpoint_completion_target`.
    Spread,
}

/// The replication slot the copy streams from (`-S`, and `-C` to create it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The slot's name: lower-case letters, digits and `_`, at most 63.
    pub name: String,
    /// Whether pg_basebackup creates it (`-C`) or it already exists.
    pub create: bool,
}

/// The server to copy.
#[derive(Debug, Clone)]
pub struct Source {
    /// `-h`: host, IP address or socket directory.
    pub host: String,
    /// `-p`.
    pub port: u16,
    /// `-U`: a role with the REPLICATION attribute.
    pub user: String,
    /// Its password, passed in `PGPASSWORD`.
    pub password: Option<Password>,
}

/// Options for [`Node::base_backup`].
#[derive(Debug, Clone)]
pub struct BaseBackupOptions {
    /// The server to copy.
    pub source: Source,
    /// `-X`.
    pub wal_method: WalMethod,
    /// `-R`: write `standby.signal` and `primary_conninfo` (with the password) so the copy
    /// starts as a standby of the source.
    pub write_recovery_conf: bool,
    /// `-S`/`-C`: a replication slot.
    pub slot: Option<Slot>,
    /// `-c`.
    pub checkpoint: Checkpoint,
    /// `application_name` of the connection, which `-R` also writes into `primary_conninfo`
    /// (so the standby shows under this name in `pg_stat_replication`).
    pub application_name: Option<String>,
}

impl BaseBackupOptions {
    /// Stream WAL, write the recovery config, fast checkpoint, no slot.
    pub fn standby_of(source: Source) -> BaseBackupOptions {
        BaseBackupOptions {
            source,
            wal_method: WalMethod::Stream,
            write_recovery_conf: true,
            slot: None,
            checkpoint: Checkpoint::Fast,
            application_name: None,
        }
    }

    /// pg_basebackup's arguments after `-D <dir>`.
    pub(crate) fn args(&self, progress: bool) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "-h".into(),
            self.source.host.clone(),
            "-p".into(),
            self.source.port.to_string(),
            "-U".into(),
            self.source.user.clone(),
            "-X".into(),
            self.wal_method.as_str().into(),
            "-c".into(),
            match self.checkpoint {
                Checkpoint::Fast => "fast".into(),
                Checkpoint::Spread => "spread".into(),
            },
            "--no-password".into(),
        ];
        if self.write_recovery_conf {
            args.push("-R".into());
        }
        if let Some(slot) = &self.slot {
            if slot.create {
                args.push("-C".into());
            }
            args.extend(["-S".into(), slot.name.clone()]);
        }
        if progress {
            args.push("--progress".into());
        }
        args
    }
}

/// How far a base backup got, from `pg_basebackup --progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Kilobytes copied.
    pub done_kb: u64,
    /// Kilobytes estimated in all.
    pub total_kb: u64,
}

impl Progress {
    /// Parses a progress line ("  30529/30529 kB (100%), 1/1 tablespace").
    pub fn parse(line: &str) -> Option<Progress> {
        let (sizes, _) = line.split_once(" kB")?;
        let (done, total) = sizes.trim().split_once('/')?;
        Some(Progress {
            done_kb: done.trim().parse().ok()?,
            total_kb: total.trim().parse().ok()?,
        })
    }

    /// Percent done, 0 to 100.
    pub fn percent(&self) -> u8 {
        if self.total_kb == 0 {
            return 0;
        }
        u8::try_from((self.done_kb.min(self.total_kb) * 100) / self.total_kb).unwrap_or(100)
    }
}

impl Node {
    /// `pg_basebackup` of `options.source` into `data_dir`, which must not exist or be empty
    /// (it is created with mode 0700 for `user`). `progress` is called as the copy proceeds.
    /// On failure the partial copy is left for the caller to remove.
    pub fn base_backup(
        bin: BinDir,
        user: OsUser,
        data_dir: impl Into<PathBuf>,
        options: &BaseBackupOptions,
        mut progress: impl FnMut(Progress),
    ) -> Result<Node, NodeError> {
        let data_dir: PathBuf = data_dir.into();
        if let Some(slot) = &options.slot {
            check_slot_name(&slot.name)?;
        }
        bin.require(&[Tool::PgBasebackup])?;
        prepare_empty_dir(&user, &data_dir)?;
        let node = Node::unchecked(bin, user, data_dir);
        let mut cmd = node.server_command(Tool::PgBasebackup);
        cmd.arg("-D")
            .arg(&node.data_dir)
            .args(options.args(true))
            .env("PGCONNECT_TIMEOUT", "10");
        if let Some(pw) = &options.source.password {
            cmd.env("PGPASSWORD", pw.expose());
        }
        if let Some(name) = &options.application_name {
            cmd.env("PGAPPNAME", name);
        }
        tracing::debug!(
            source_port = options.source.port,
            data_dir = %node.data_dir.display(),
            slot = options.slot.as_ref().map(|s| s.name.as_str()),
            "pg_basebackup"
        );
        let out = run_streaming(&mut cmd, Tool::PgBasebackup, |line| {
            if let Some(p) = Progress::parse(line) {
                progress(p);
            }
        })?;
        if !out.status.success() {
            return Err(NodeError::ToolFailed {
                tool: Tool::PgBasebackup,
                status: out.status,
                output: one_line(&without_progress(&combined(&out)), 8),
            });
        }
        Ok(node)
    }
}

/// `text` without progress lines, which would crowd the error out of an error message.
fn without_progress(text: &str) -> String {
    text.split(['\n', '\r'])
        .filter(|l| Progress::parse(l).is_none())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Replication slot names: 1 to 63 of `a-z`, `0-9`, `_` (PostgreSQL's rule).
pub(crate) fn check_slot_name(name: &str) -> Result<(), NodeError> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > 63 {
        Some("must be at most 63 characters")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        Some("may contain only lower-case letters, digits and underscores")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(NodeError::InvalidOption {
            option: "replication slot name",
            value: name.to_owned(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        Source {
            host: "127.0.0.1".into(),
            port: 5433,
            user: "postgres".into(),
            password: Some(Password::new("secret")),
        }
    }

    #[test]
    fn standby_copy_arguments() {
        let options = BaseBackupOptions::standby_of(source());
        assert_eq!(
            options.args(false).join(" "),
            "-h 127.0.0.1 -p 5433 -U postgres -X stream -c fast --no-password -R"
        );
        let with_slot = BaseBackupOptions {
            slot: Some(Slot {
                name: "standby1".into(),
                create: true,
            }),
            write_recovery_conf: false,
            wal_method: WalMethod::Fetch,
            checkpoint: Checkpoint::Spread,
            ..options
        };
        let args = with_slot.args(true).join(" ");
        assert_eq!(
            args,
            "-h 127.0.0.1 -p 5433 -U postgres -X fetch -c spread --no-password -C -S standby1 --progress"
        );
        assert!(!args.contains("secret"));
        assert!(!format!("{with_slot:?}").contains("secret"));
    }

    #[test]
    fn progress_lines() {
        assert_eq!(
            Progress::parse("    0/30529 kB (0%), 0/1 tablespace"),
            Some(Progress {
                done_kb: 0,
                total_kb: 30529
            })
        );
        let done = Progress::parse("30537/30537 kB (100%), 1/1 tablespace").unwrap();
        assert_eq!(done.percent(), 100);
        assert_eq!(
            Progress {
                done_kb: 5,
                total_kb: 10
            }
            .percent(),
            50
        );
        assert_eq!(
            Progress::parse("pg_basebackup: error: connection refused"),
            None
        );
        assert_eq!(
            without_progress("1/2 kB (50%), 0/1 tablespace\rpg_basebackup: error: x\n"),
            "pg_basebackup: error: x\n"
        );
    }

    #[test]
    fn slot_names() {
        assert!(check_slot_name("standby_1").is_ok());
        for bad in ["", "Standby", "a-b", "a b", &"x".repeat(64)] {
            assert!(check_slot_name(bad).is_err(), "{bad:?}");
        }
    }
}
