//! [`Node::initdb`] with typed [`InitdbOptions`]: the superuser's password goes through a
//! temporary pwfile (mode 0600, removed afterwards), never argv.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::command::{combined, run};
use crate::error::one_line;
use crate::{BinDir, Node, NodeError, OsUser, Password, Tool};

/// A pg_hba authentication method, for initdb's `--auth-local` and `--auth-host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// `trust`: no password.
    Trust,
    /// `peer`: the OS user name must match (local connections only).
    Peer,
    /// `scram-sha-256`.
    ScramSha256,
    /// `md5` (accepts SCRAM too).
    Md5,
    /// `password`: clear text.
    Password,
    /// `reject`.
    Reject,
}

impl AuthMethod {
    /// The word pg_hba.conf uses.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Trust => "trust",
            AuthMethod::Peer => "peer",
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Md5 => "md5",
            AuthMethod::Password => "password",
            AuthMethod::Reject => "reject",
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `initdb` should make. `Default` is initdb's own defaults with superuser `postgres`.
#[derive(Debug, Clone)]
pub struct InitdbOptions {
    /// `-U`: the bootstrap superuser.
    pub superuser: String,
    /// `--pwfile`: its password (written to a temporary file).
    pub password: Option<Password>,
    /// `--auth-local`: the method for Unix-socket connections.
    pub auth_local: Option<AuthMethod>,
    /// `--auth-host`: the method for TCP connections.
    pub auth_host: Option<AuthMethod>,
    /// `-E`: the template databases' encoding (`UTF8`).
    pub encoding: Option<String>,
    /// `--locale`: the locale (`C`, `en_US.UTF-8`).
    pub locale: Option<String>,
    /// `--data-checksums`.
    pub data_checksums: bool,
    /// `-N`: do not fsync the new files (faster; for throwaway clusters only).
    pub no_sync: bool,
}

impl Default for InitdbOptions {
    fn default() -> InitdbOptions {
        InitdbOptions {
            superuser: crate::DEFAULT_SERVER_USER.to_owned(),
            password: None,
            auth_local: None,
            auth_host: None,
            encoding: None,
            locale: None,
            data_checksums: false,
            no_sync: false,
        }
    }
}

impl InitdbOptions {
    /// initdb's arguments after `-D <dir>`, with the pwfile at `pwfile` when there is a
    /// password.
    pub(crate) fn args(&self, pwfile: Option<&Path>) -> Vec<String> {
        let mut args = vec!["-U".to_owned(), self.superuser.clone()];
        if let Some(pwfile) = pwfile {
            args.push(format!("--pwfile={}", pwfile.display()));
        }
        if let Some(m) = self.auth_local {
            args.push(format!("--auth-local={m}"));
        }
        if let Some(m) = self.auth_host {
            args.push(format!("--auth-host={m}"));
        }
        if let Some(e) = &self.encoding {
            args.extend(["-E".to_owned(), e.clone()]);
        }
        if let Some(l) = &self.locale {
            args.push(format!("--locale={l}"));
        }
        if self.data_checksums {
            args.push("--data-checksums".to_owned());
        }
        if self.no_sync {
            args.push("-N".to_owned());
        }
        args
    }

    fn validate(&self) -> Result<(), NodeError> {
        if self.superuser.is_empty() {
            return Err(NodeError::InvalidOption {
                option: "superuser name",
                value: String::new(),
                reason: "must not be empty",
            });
        }
        if let Some(pw) = &self.password {
            // initdb reads the first line of the file.
            if pw.expose().contains(['\n', '\r']) {
                return Err(NodeError::InvalidOption {
                    option: "superuser password",
                    value: "***".to_owned(),
                    reason: "must not contain a line break",
                });
            }
        }
        Ok(())
    }
}

impl Node {
    /// Runs `initdb` into `data_dir`, which must not exist or be empty; it is created with mode
    /// 0700 and given to `user` first (its parent must exist).
    pub fn initdb(
        bin: BinDir,
        user: OsUser,
        data_dir: impl Into<PathBuf>,
        options: &InitdbOptions,
    ) -> Result<Node, NodeError> {
        let data_dir: PathBuf = data_dir.into();
        options.validate()?;
        bin.require(&[Tool::Initdb, Tool::Postgres])?;
        prepare_empty_dir(&user, &data_dir)?;
        let node = Node::unchecked(bin, user, data_dir);

        // The pwfile sits beside the data directory: a place the server user can reach.
        let pwfile = match &options.password {
            Some(password) => Some(node.pwfile(password)?),
            None => None,
        };
        let mut cmd = node.server_command(Tool::Initdb);
        cmd.arg("-D")
            .arg(&node.data_dir)
            .args(options.args(pwfile.as_ref().map(|f| f.path())));
        tracing::debug!(data_dir = %node.data_dir.display(), "initdb");
        let out = run(&mut cmd, Tool::Initdb)?;
        drop(pwfile);
        if !out.status.success() {
            return Err(NodeError::ToolFailed {
                tool: Tool::Initdb,
                status: out.status,
                output: one_line(&combined(&out), 8),
            });
        }
        Ok(node)
    }

    /// A temporary file beside the data directory holding `password`, readable only by the
    /// server user; removed when dropped.
    fn pwfile(&self, password: &Password) -> Result<tempfile::NamedTempFile, NodeError> {
        let parent = parent_of(&self.data_dir);
        let io = |action, source| NodeError::Io {
            action,
            path: parent.to_owned(),
            source,
        };
        let mut file = tempfile::Builder::new()
            .prefix(".pgw-pwfile-")
            .tempfile_in(parent)
            .map_err(|e| io("create password file in", e))?;
        file.write_all(format!("{}\n", password.expose()).as_bytes())
            .and_then(|()| file.flush())
            .map_err(|e| io("write password file in", e))?;
        self.user.chown(file.path())?;
        Ok(file)
    }
}

/// Creates `dir` (mode 0700, owned by `user`) or checks that it is an empty directory.
pub(crate) fn prepare_empty_dir(user: &OsUser, dir: &Path) -> Result<(), NodeError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(NodeError::NotEmpty {
                    path: dir.to_owned(),
                });
            }
            user.chown(dir)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => user.create_dir(dir, 0o700),
        Err(source) => Err(NodeError::Io {
            action: "read directory",
            path: dir.to_owned(),
            source,
        }),
    }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_give_the_superuser_only() {
        assert_eq!(InitdbOptions::default().args(None), ["-U", "postgres"]);
    }

    #[test]
    fn every_option_becomes_an_argument() {
        let options = InitdbOptions {
            superuser: "admin".into(),
            password: Some(Password::new("hunter2")),
            auth_local: Some(AuthMethod::Peer),
            auth_host: Some(AuthMethod::ScramSha256),
            encoding: Some("UTF8".into()),
            locale: Some("C".into()),
            data_checksums: true,
            no_sync: true,
        };
        assert_eq!(
            options.args(Some(Path::new("/d/.pw"))),
            [
                "-U",
                "admin",
                "--pwfile=/d/.pw",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--data-checksums",
                "-N"
            ]
        );
        let joined = options.args(Some(Path::new("/d/.pw"))).join(" ");
        assert!(!joined.contains("hunter2"), "no password in argv: {joined}");
    }

    #[test]
    fn bad_options_are_refused_before_running_anything() {
        let bin = BinDir::new("/nonexistent");
        let user = OsUser::current().unwrap();
        let options = InitdbOptions {
            password: Some(Password::new("a\nb")),
            ..InitdbOptions::default()
        };
        let err = Node::initdb(bin.clone(), user.clone(), "/nonexistent/d", &options).unwrap_err();
        assert!(matches!(err, NodeError::InvalidOption { .. }), "{err:?}");
        assert!(!err.to_string().contains("a\nb"));
        let err = Node::initdb(bin, user, "/nonexistent/d", &InitdbOptions::default()).unwrap_err();
        assert!(
            matches!(
                err,
                NodeError::MissingBinary {
                    tool: Tool::Initdb,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_non_empty_target_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("x"), "").unwrap();
        let err = prepare_empty_dir(&OsUser::current().unwrap(), dir.path()).unwrap_err();
        assert!(matches!(err, NodeError::NotEmpty { .. }), "{err:?}");
        let empty = dir.path().join("new");
        prepare_empty_dir(&OsUser::current().unwrap(), &empty).unwrap();
        assert!(empty.is_dir());
    }
}
