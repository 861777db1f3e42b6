//! [`OsUser`]: the operating-system user that runs the server and owns its files.
//!
//! PostgreSQL refuses to run as root. When we are root, the server-side tools (`initdb`,
//! `pg_ctl`, `pg_basebackup`, `pg_rewind`, `pg_controldata`) run as another user, `postgres`
//! unless configured, switched to with `setuid`/`setgid` on the child only; files we create
//! for the server are given to that user. Otherwise everything runs as ourselves.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use nix::unistd::{Gid, Uid, User};

use crate::NodeError;

/// The OS user the server runs as when we are root, unless configured.
pub const DEFAULT_SERVER_USER: &str = "postgres";

/// Who runs the server-side tools and owns the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsUser {
    name: String,
    uid: Uid,
    gid: Gid,
    /// Whether it is another user than us (so commands switch to it and files are chowned).
    switch: bool,
}

impl OsUser {
    /// `postgres` when we are root, else ourselves.
    pub fn detect() -> Result<OsUser, NodeError> {
        OsUser::detect_named(DEFAULT_SERVER_USER)
    }

    /// `name` when we are root, else ourselves.
    pub fn detect_named(name: &str) -> Result<OsUser, NodeError> {
        if Uid::effective().is_root() {
            OsUser::named(name)
        } else {
            OsUser::current()
        }
    }

    /// The user we run as.
    pub fn current() -> Result<OsUser, NodeError> {
        let uid = Uid::effective();
        let name = User::from_uid(uid)
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |u| u.name);
        Ok(OsUser {
            name,
            uid,
            gid: Gid::effective(),
            switch: false,
        })
    }

    /// The user called `name`; commands switch to it unless it is us.
    pub fn named(name: &str) -> Result<OsUser, NodeError> {
        let user = User::from_name(name)
            .map_err(|source| NodeError::LookupUser {
                user: name.to_owned(),
                source,
            })?
            .ok_or_else(|| NodeError::UnknownOsUser {
                user: name.to_owned(),
            })?;
        Ok(OsUser {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
            switch: user.uid != Uid::effective(),
        })
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The user's uid.
    pub fn uid(&self) -> u32 {
        self.uid.as_raw()
    }

    /// The user's primary gid.
    pub fn gid(&self) -> u32 {
        self.gid.as_raw()
    }

    /// Whether it is another user than us: commands switch to it and files are chowned to it.
    pub fn is_other(&self) -> bool {
        self.switch
    }

    /// Makes `cmd` run as this user (no-op when it is us).
    pub fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        if self.switch {
            cmd.uid(self.uid.as_raw()).gid(self.gid.as_raw());
        }
        cmd
    }

    /// Gives `path` to this user (no-op when it is us).
    pub fn chown(&self, path: &Path) -> Result<(), NodeError> {
        if !self.switch {
            return Ok(());
        }
        tracing::debug!(path = %path.display(), user = %self.name, "chown");
        nix::unistd::chown(path, Some(self.uid), Some(self.gid)).map_err(|source| {
            NodeError::Chown {
                path: path.to_owned(),
                user: self.name.clone(),
                source,
            }
        })
    }

    /// Creates the directory `path` (its parent must exist) with `mode`, owned by this user.
    pub fn create_dir(&self, path: &Path, mode: u32) -> Result<(), NodeError> {
        tracing::debug!(path = %path.display(), mode = format_args!("{mode:04o}"), "create directory");
        fs::DirBuilder::new()
            .mode(mode)
            .create(path)
            .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(mode)))
            .map_err(|source| NodeError::Io {
                action: "create directory",
                path: path.to_owned(),
                source,
            })?;
        self.chown(path)
    }

    /// Writes `contents` to `path` (replacing it) with `mode`, owned by this user.
    pub fn write_file(&self, path: &Path, contents: &[u8], mode: u32) -> Result<(), NodeError> {
        let io = |source| NodeError::Io {
            action: "write",
            path: path.to_owned(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .map_err(io)?;
        file.write_all(contents).map_err(io)?;
        // The mode given to open() applies only when the file is created.
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io)?;
        self.chown(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_user_is_not_switched_to() {
        let me = OsUser::current().unwrap();
        assert!(!me.is_other());
        assert_eq!(me.uid(), Uid::effective().as_raw());
        let mut cmd = Command::new("true");
        me.apply(&mut cmd);
        me.chown(Path::new("/nonexistent")).unwrap();
    }

    #[test]
    fn unknown_user_is_an_error() {
        let err = OsUser::named("pgw-no-such-user").unwrap_err();
        assert!(matches!(err, NodeError::UnknownOsUser { .. }), "{err:?}");
    }
}
