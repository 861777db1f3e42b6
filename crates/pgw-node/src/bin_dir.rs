//! [`BinDir`]: where PostgreSQL's programs are, checking that an operation's [`Tool`]s are there,
//! and building commands for them with a clean environment.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::one_line;
use crate::NodeError;

/// The environment variable that overrides [`DEFAULT_BIN_DIR`].
pub const BIN_DIR_ENV: &str = "PGWARDEN_PG_BIN";

/// Where PostgreSQL 15's programs live on Debian and Ubuntu.
pub const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL program that pgw-node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Tool {
    /// `initdb`: creates a data directory.
    Initdb,
    /// `pg_ctl`: starts, stops, promotes and signals the server.
    PgCtl,
    /// `postgres`: the server itself (pg_ctl and pg_rewind run it).
    Postgres,
    /// `psql`: the interactive client.
    Psql,
    /// `pg_isready`: asks whether a server accepts connections.
    PgIsready,
    /// `pg_basebackup`: copies a running server.
    PgBasebackup,
    /// `pg_rewind`: resynchronises a data directory with a server it diverged from.
    PgRewind,
    /// `pg_controldata`: prints `global/pg_control`.
    PgControldata,
    /// `pg_amcheck`: checks tables and indexes for corruption (amcheck).
    PgAmcheck,
}

impl Tool {
    /// Every tool.
    pub const ALL: [Tool; 9] = [
        Tool::Initdb,
        Tool::PgCtl,
        Tool::Postgres,
        Tool::Psql,
        Tool::PgIsready,
        Tool::PgBasebackup,
        Tool::PgRewind,
        Tool::PgControldata,
        Tool::PgAmcheck,
    ];

    /// The program's file name.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Initdb => "initdb",
            Tool::PgCtl => "pg_ctl",
            Tool::Postgres => "postgres",
            Tool::Psql => "psql",
            Tool::PgIsready => "pg_isready",
            Tool::PgBasebackup => "pg_basebackup",
            Tool::PgRewind => "pg_rewind",
            Tool::PgControldata => "pg_controldata",
            Tool::PgAmcheck => "pg_amcheck",
        }
    }

    /// The Debian package that ships it for PostgreSQL 15.
    pub fn package(self) -> &'static str {
        match self {
            Tool::Psql | Tool::PgIsready | Tool::PgBasebackup | Tool::PgAmcheck => {
                "postgresql-client-15"
            }
            Tool::Initdb | Tool::PgCtl | Tool::Postgres | Tool::PgRewind | Tool::PgControldata => {
                "postgresql-15"
            }
        }
    }

    /// Whether it works on a data directory and so must run as the server's OS user.
    pub fn runs_as_server_user(self) -> bool {
        !matches!(self, Tool::Psql | Tool::PgIsready | Tool::PgAmcheck)
    }
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The directory holding PostgreSQL's programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinDir {
    dir: PathBuf,
}

impl BinDir {
    /// The programs in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> BinDir {
        BinDir { dir: dir.into() }
    }

    /// `$PGWARDEN_PG_BIN` if set and not empty, else [`DEFAULT_BIN_DIR`].
    pub fn from_env() -> BinDir {
        match std::env::var_os(BIN_DIR_ENV) {
            Some(dir) if !dir.is_empty() => BinDir::new(dir),
            _ => BinDir::new(DEFAULT_BIN_DIR),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of `tool` (whether or not it exists).
    pub fn path(&self, tool: Tool) -> PathBuf {
        self.dir.join(tool.name())
    }

    /// The first of `tools` that is not a file in the directory.
    pub fn first_missing(&self, tools: &[Tool]) -> Option<Tool> {
        tools.iter().copied().find(|t| !self.path(*t).is_file())
    }

    /// Checks that all of `tools` are there; the error names the first missing one and the
    /// Debian package that ships it.
    pub fn require(&self, tools: &[Tool]) -> Result<(), NodeError> {
        match self.first_missing(tools) {
            None => Ok(()),
            Some(tool) => Err(NodeError::MissingBinary {
                dir: self.dir.clone(),
                tool,
                package: tool.package(),
            }),
        }
    }

    /// The major version of the binaries, from `pg_ctl --version` ("pg_ctl (PostgreSQL) 15.4
    /// (Debian 15.4-1)" gives 15).
    pub fn major_version(&self) -> Result<u32, NodeError> {
        self.require(&[Tool::PgCtl])?;
        let out = crate::command::run(self.command(Tool::PgCtl).arg("--version"), Tool::PgCtl)?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse_major_version(&text).ok_or_else(|| NodeError::BinaryVersion {
            dir: self.dir.clone(),
            output: one_line(&text, 2),
        })
    }

    /// A command for `tool` as the current user: the `PG*` variables of our environment
    /// removed (so that a stray `PGHOST` or `PGPASSWORD` cannot redirect it), messages in
    /// English (so that pgw-node can read them; the other locale categories are kept), stdin
    /// from `/dev/null`. Run it as the server user with [`OsUser::apply`](crate::OsUser::apply).
    pub fn command(&self, tool: Tool) -> Command {
        let mut cmd = Command::new(self.path(tool));
        clean_env(&mut cmd);
        cmd.stdin(Stdio::null());
        cmd
    }
}

impl Default for BinDir {
    /// [`BinDir::from_env`].
    fn default() -> BinDir {
        BinDir::from_env()
    }
}

/// Removes `PG*` variables and makes messages English without changing the other locale
/// categories: `LC_ALL` would override `LC_MESSAGES`, so its value moves to each other category.
fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&key);
        }
    }
    if let Some(all) = std::env::var_os("LC_ALL").filter(|v| !v.is_empty()) {
        cmd.env_remove("LC_ALL");
        for category in [
            "LC_CTYPE",
            "LC_COLLATE",
            "LC_NUMERIC",
            "LC_TIME",
            "LC_MONETARY",
        ] {
            cmd.env(category, &all);
        }
    }
    cmd.env("LC_MESSAGES", "C").env_remove("LANGUAGE");
}

/// The major version in `pg_ctl --version` output: the word after `(PostgreSQL)`.
fn parse_major_version(text: &str) -> Option<u32> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == "(PostgreSQL)")?;
    let version = words.next()?;
    let major: String = version.chars().take_while(char::is_ascii_digit).collect();
    major.parse().ok()
}

/// Whether the environment of `cmd` sets `key` (for tests of [`clean_env`]).
#[cfg(test)]
fn env_of<'a>(cmd: &'a Command, key: &str) -> Option<Option<&'a std::ffi::OsStr>> {
    cmd.get_envs().find(|(k, _)| *k == key).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_major_version("pg_ctl (PostgreSQL) 15.4\n"), Some(15));
        assert_eq!(
            parse_major_version("pg_ctl (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(parse_major_version("pg_ctl (PostgreSQL) 17beta1"), Some(17));
        assert_eq!(parse_major_version(""), None);
        assert_eq!(parse_major_version("pg_ctl 15.4"), None);
    }

    #[test]
    fn paths_and_missing_tools() {
        let bin = BinDir::new("/nonexistent/pg/bin");
        assert_eq!(
            bin.path(Tool::PgCtl),
            PathBuf::from("/nonexistent/pg/bin/pg_ctl")
        );
        assert_eq!(bin.first_missing(&[Tool::Initdb]), Some(Tool::Initdb));
        assert_eq!(bin.first_missing(&[]), None);
        let err = bin.require(&[Tool::PgBasebackup]).unwrap_err();
        assert!(err.to_string().contains("postgresql-client-15"), "{err}");
    }

    #[test]
    fn commands_get_english_messages_and_no_pg_variables() {
        let cmd = BinDir::new("/x").command(Tool::Psql);
        assert_eq!(
            env_of(&cmd, "LC_MESSAGES"),
            Some(Some(std::ffi::OsStr::new("C")))
        );
        assert_eq!(env_of(&cmd, "LANGUAGE"), Some(None));
    }
}
