//! [`ClusterBuilder`]: what a throwaway cluster should look like before it starts.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::{Cluster, ClusterError};

/// Options for a [`Cluster`]; [`ClusterBuilder::start`] runs `initdb` and starts the server.
///
/// ```no_run
/// let cluster = pgw_cluster::Cluster::builder()
///     .setting("work_mem", "12MB")
///     .hba_line("host all alice 127.0.0.1/32 md5")
///     .start()?;
/// assert_eq!(cluster.psql("postgres", "show work_mem")?, "12MB");
/// # Ok::<(), pgw_cluster::ClusterError>(())
/// ```
#[derive(Default, Clone)]
#[must_use = "a builder does nothing until .start() is called"]
pub struct ClusterBuilder {
    pub(crate) settings: Vec<(String, String)>,
    pub(crate) bin_dir: Option<PathBuf>,
    pub(crate) data_checksums: bool,
    pub(crate) files: Vec<(String, Vec<u8>)>,
    pub(crate) hba_lines: Vec<String>,
    pub(crate) standby_of: Option<Primary>,
    pub(crate) slot: Option<String>,
    pub(crate) application_name: Option<String>,
}

/// What a standby needs to know about its primary to copy it and stream from it.
#[derive(Clone, Debug)]
pub(crate) struct Primary {
    pub(crate) port: u16,
    pub(crate) password: String,
    pub(crate) bin_dir: PathBuf,
}

impl ClusterBuilder {
    /// A builder with the defaults: no extra settings, checksums off, bin dir from
    /// `$PGWARDEN_PG_BIN` or `/usr/lib/postgresql/15/bin`.
    pub fn new() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// Appends `name = 'value'` to postgresql.conf before the first start (the value is quoted
    /// for you). Settings come after the harness's own `listen_addresses`, `port` and
    /// `unix_socket_directories`, so overriding those is possible but breaks the harness.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The directory holding `initdb`, `pg_ctl`, `postgres`, `psql` and `pg_isready`.
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// Runs `initdb --data-checksums` when `on`.
    pub fn data_checksums(mut self, on: bool) -> Self {
        self.data_checksums = on;
        self
    }

    /// Writes `contents` to `relative` inside the data directory after `initdb` and before the
    /// first start, owned by the server user with mode 0600 (missing parent directories are
    /// created with mode 0700). For TLS certificates and keys, extra config includes, etc.
    /// `relative` must be relative and must not contain `..`; this is checked by `start`.
    pub fn file(mut self, relative: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((relative.to_owned(), contents.into()));
        self
    }

    /// Adds `line` to pg_hba.conf before initdb's own lines (so it takes precedence). Lines
    /// keep the order in which they were added.
    pub fn hba_line(mut self, line: &str) -> Self {
        self.hba_lines.push(line.to_owned());
        self
    }

    /// Makes this cluster a streaming hot standby of `primary`: instead of `initdb`, the data
    /// directory is a `pg_basebackup -X stream -R` copy of the primary (same superuser and
    /// password, `standby.signal` and `primary_conninfo` written), then it starts on its own port
    /// and streams from the primary. Settings, files and pg_hba lines apply on top of the copy;
    /// `data_checksums` is the primary's. The bin dir defaults to the primary's.
    pub fn standby_of(mut self, primary: &Cluster) -> Self {
        self.standby_of = Some(Primary {
            port: primary.port(),
            password: primary.password().to_owned(),
            bin_dir: primary.bin_dir().to_owned(),
        });
        self
    }

    /// With [`standby_of`](Self::standby_of): stream through the physical replication slot
    /// `name`, which pg_basebackup creates on the primary (`-C -S`); `primary_slot_name` is
    /// written too. The primary keeps the WAL the standby has not received, however far
    /// behind it falls.
    pub fn replication_slot(mut self, name: &str) -> Self {
        self.slot = Some(name.to_owned());
        self
    }

    /// The `application_name` the cluster connects with when it streams as a standby (made
    /// with [`standby_of`](Self::standby_of), or later by [`Cluster::rejoin`]): its name in
    /// the primary's `pg_stat_replication`, and what `synchronous_standby_names` lists.
    /// Without it, the name is `walreceiver`.
    pub fn application_name(mut self, name: &str) -> Self {
        self.application_name = Some(name.to_owned());
        self
    }

    /// Creates, configures and starts the cluster, waiting until it accepts connections.
    pub fn start(self) -> Result<Cluster, ClusterError> {
        Cluster::create(self)
    }

    /// The bin dir to use: the one set, else `$PGWARDEN_PG_BIN`, else the default.
    pub(crate) fn resolved_bin_dir(&self) -> PathBuf {
        if let Some(dir) = &self.bin_dir {
            return dir.clone();
        }
        if let Some(primary) = &self.standby_of {
            return primary.bin_dir.clone();
        }
        pgw_node::BinDir::from_env().dir().to_owned()
    }
}

impl fmt::Debug for ClusterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files: Vec<&str> = self.files.iter().map(|(p, _)| p.as_str()).collect();
        f.debug_struct("ClusterBuilder")
            .field("settings", &self.settings)
            .field("bin_dir", &self.bin_dir)
            .field("data_checksums", &self.data_checksums)
            .field("files", &files)
            .field("hba_lines", &self.hba_lines)
            .field("standby_of_port", &self.standby_of.as_ref().map(|p| p.port))
            .field("slot", &self.slot)
            .field("application_name", &self.application_name)
            .finish()
    }
}

/// Checks that `relative` stays inside the data directory.
pub(crate) fn check_relative(relative: &str) -> Result<&Path, ClusterError> {
    let path = Path::new(relative);
    let plain = path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if relative.is_empty() || !plain || path.file_name().is_none() {
        return Err(ClusterError::InvalidFilePath {
            relative: relative.to_owned(),
        });
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert!(check_relative("server.crt").is_ok());
        assert!(check_relative("certs/server.key").is_ok());
        assert!(check_relative("./conf.d/extra.conf").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a/..", "."] {
            assert!(check_relative(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bin_dir_set_explicitly_wins() {
        let b = ClusterBuilder::new().bin_dir("/opt/pg/bin");
        assert_eq!(b.resolved_bin_dir(), PathBuf::from("/opt/pg/bin"));
    }
}
