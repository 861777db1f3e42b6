//! Bringing a cluster up: check the binaries, make the temp dir, start the watchdog, `initdb`,
//! write files and pg_hba lines, then start on a free port, retrying if another process took
//! the port first.

use std::fs;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use pgw_node::{
    conf_quote, one_line, AuthMethod, BaseBackupOptions, BinDir, InitdbOptions, Node, NodeError,
    OsUser, Password, PgCtlAction, Slot, Source, StartOptions, Tool,
};

use crate::builder::check_relative;
use crate::cluster::{Cluster, HOST, READY_TIMEOUT, SUPERUSER};
use crate::watchdog::{Watchdog, Watched};
use crate::{os, ports, ClusterBuilder, ClusterError};

/// The binaries the harness runs.
const BINARIES: [Tool; 5] = [
    Tool::Initdb,
    Tool::PgCtl,
    Tool::Postgres,
    Tool::Psql,
    Tool::PgIsready,
];

/// How many ports to try when the chosen one turns out to be taken.
const PORT_ATTEMPTS: u32 = 5;

/// Server log phrases that mean the port was taken between our pick and the server's bind.
const PORT_TAKEN: [&str; 3] = [
    "could not bind",
    "Address already in use",
    "could not create any TCP/IP sockets",
];

impl Cluster {
    /// See [`ClusterBuilder::start`].
    pub(crate) fn create(builder: ClusterBuilder) -> Result<Cluster, ClusterError> {
        Cluster::create_with(builder, ports::reserve)
    }

    /// [`Cluster::create`] with the port picker as a parameter, so tests can hand out a taken
    /// port first.
    fn create_with(
        builder: ClusterBuilder,
        pick_port: impl FnMut() -> Result<u16, ClusterError>,
    ) -> Result<Cluster, ClusterError> {
        let bin = BinDir::new(builder.resolved_bin_dir());
        let mut needed = BINARIES.to_vec();
        if builder.standby_of.is_some() {
            needed.push(Tool::PgBasebackup);
        }
        if let Some(missing) = bin.first_missing(&needed) {
            return Err(ClusterError::BinariesNotFound {
                dir: bin.dir().to_owned(),
                missing: missing.name(),
            });
        }
        for (relative, _) in &builder.files {
            check_relative(relative)?;
        }
        let user = OsUser::detect()?;
        let base = os::temp_base(&user);
        let tmp = tempfile::Builder::new()
            .prefix("pgw-cluster-")
            .tempdir_in(&base)
            .map_err(|source| ClusterError::Io {
                action: "create temp dir in",
                path: base.clone(),
                source,
            })?;
        let root = tmp.path().to_owned();
        tracing::debug!(dir = %root.display(), bin_dir = %bin.dir().display(), user = user.name(), "new cluster");
        user.chown(&root)?;
        let data_dir = root.join("data");
        // From here on, dropping `tmp` and `watchdog` (on any error) removes the temp dir;
        // once `cluster` exists, dropping it also stops whatever was started.
        let watchdog = Watchdog::spawn(
            &root,
            // SIGQUIT: immediate shutdown; the postmaster takes its children down with it.
            // The postmaster works in its data directory: a stale pid names someone else.
            &[Watched::new(
                data_dir.join("postmaster.pid"),
                &data_dir,
                Signal::SIGQUIT,
                Duration::from_secs(10),
            )],
        )?;

        let password = match &builder.standby_of {
            Some(primary) => primary.password.clone(),
            None => os::random_password(),
        };
        let node = match &builder.standby_of {
            Some(primary) => {
                let options = BaseBackupOptions {
                    slot: builder.slot.as_ref().map(|name| Slot {
                        name: name.clone(),
                        create: true,
                    }),
                    application_name: builder.application_name.clone(),
                    ..BaseBackupOptions::standby_of(Source {
                        host: HOST.to_owned(),
                        port: primary.port,
                        user: SUPERUSER.to_owned(),
                        password: Some(Password::new(password.clone())),
                    })
                };
                Node::base_backup(bin, user, &data_dir, &options, |_| {})?
            }
            None => {
                let options = InitdbOptions {
                    superuser: SUPERUSER.to_owned(),
                    password: Some(Password::new(password.clone())),
                    auth_local: Some(AuthMethod::Trust),
                    auth_host: Some(AuthMethod::ScramSha256),
                    encoding: Some("UTF8".to_owned()),
                    locale: Some("C".to_owned()),
                    data_checksums: builder.data_checksums,
                    no_sync: true,
                };
                Node::initdb(bin, user, &data_dir, &options)?
            }
        }
        .with_log_file(root.join("server.log"));

        let mut cluster = Cluster {
            tmp: Some(tmp),
            root,
            node,
            port: 0,
            password,
            application_name: builder.application_name.clone(),
            watchdog: Some(watchdog),
            torn_down: false,
        };
        for (relative, contents) in &builder.files {
            cluster.write_data_file(relative, contents)?;
        }
        cluster.prepend_hba(&builder.hba_lines)?;
        cluster.start_on_free_port(&builder.settings, pick_port)?;
        tracing::debug!(port = cluster.port, "cluster started");
        Ok(cluster)
    }

    /// Writes one [`ClusterBuilder::file`] into the data dir.
    fn write_data_file(&self, relative: &str, contents: &[u8]) -> Result<(), ClusterError> {
        let relative = check_relative(relative)?;
        let data_dir = self.node.data_dir();
        let path = data_dir.join(relative);
        let mut dir = data_dir.to_owned();
        if let Some(parent) = relative.parent() {
            for component in parent.components() {
                dir.push(component);
                if !dir.is_dir() {
                    self.node.user().create_dir(&dir, 0o700)?;
                }
            }
        }
        tracing::debug!(path = %path.display(), "write data-dir file");
        Ok(self.node.user().write_file(&path, contents, 0o600)?)
    }

    /// Puts `lines` at the top of pg_hba.conf.
    fn prepend_hba(&self, lines: &[String]) -> Result<(), ClusterError> {
        if lines.is_empty() {
            return Ok(());
        }
        let path = self.node.data_dir().join("pg_hba.conf");
        let old = read(&path)?;
        let mut new = String::from("# added by pgw-cluster\n");
        for line in lines {
            new.push_str(line);
            new.push('\n');
        }
        new.push('\n');
        new.push_str(&old);
        tracing::debug!(?lines, "prepend pg_hba.conf lines");
        Ok(self.node.user().write_file(&path, new.as_bytes(), 0o600)?)
    }

    /// Picks a free port, writes postgresql.conf and starts the server; if it could not bind
    /// the port (someone took it first), tries another one.
    fn start_on_free_port(
        &mut self,
        settings: &[(String, String)],
        mut pick_port: impl FnMut() -> Result<u16, ClusterError>,
    ) -> Result<(), ClusterError> {
        let conf_path = self.node.data_dir().join("postgresql.conf");
        let initdb_conf = read(&conf_path)?;
        let mut last_log = String::new();
        for attempt in 1..=PORT_ATTEMPTS {
            self.port = pick_port()?;
            let conf = self.conf(&initdb_conf, settings);
            self.node
                .user()
                .write_file(&conf_path, conf.as_bytes(), 0o600)?;

            let log_start = self.node.log_len();
            tracing::debug!(port = self.port, attempt, "start server");
            match self
                .node
                .start(&StartOptions::default().timeout(READY_TIMEOUT))
            {
                Ok(()) => return self.wait_ready(),
                Err(NodeError::PgCtl {
                    action: PgCtlAction::Start,
                    output,
                }) => {
                    let log = self.node.log_since(log_start);
                    if !PORT_TAKEN.iter().any(|p| log.contains(p)) {
                        return Err(NodeError::PgCtl {
                            action: PgCtlAction::Start,
                            output,
                        }
                        .into());
                    }
                    tracing::debug!(
                        port = self.port,
                        attempt,
                        "port taken by another process; retrying"
                    );
                    ports::release(self.port);
                    self.port = 0;
                    last_log = log;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ClusterError::NoFreePort {
            attempts: PORT_ATTEMPTS,
            log: one_line(&last_log, 6),
        })
    }

    /// initdb's postgresql.conf plus the harness's settings, then the user's.
    fn conf(&self, initdb_conf: &str, settings: &[(String, String)]) -> String {
        let mut conf = initdb_conf.to_owned();
        if !conf.ends_with('\n') {
            conf.push('\n');
        }
        conf.push_str("\n# pgw-cluster: loopback only, own port, own socket dir\n");
        conf.push_str(&format!("listen_addresses = {}\n", conf_quote(HOST)));
        conf.push_str(&format!("port = {}\n", self.port));
        conf.push_str(&format!(
            "unix_socket_directories = {}\n",
            conf_quote(&self.root.to_string_lossy())
        ));
        if !settings.is_empty() {
            conf.push_str("\n# pgw-cluster: settings passed to the builder\n");
            for (name, value) in settings {
                conf.push_str(&format!("{name} = {}\n", conf_quote(value)));
            }
        }
        conf
    }
}

fn read(path: &Path) -> Result<String, ClusterError> {
    fs::read_to_string(path).map_err(|source| ClusterError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener};

    use super::*;

    /// Needs real PostgreSQL, like the integration tests: the first port handed out is taken,
    /// so the server must fail to bind it and the harness must retry on another.
    #[test]
    fn taken_port_is_retried() {
        let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let taken = squatter.local_addr().unwrap().port();
        let mut first = true;
        let pick = || {
            if std::mem::take(&mut first) {
                Ok(taken)
            } else {
                ports::reserve()
            }
        };
        let cluster = Cluster::create_with(ClusterBuilder::new(), pick)
            .unwrap_or_else(|e| panic!("could not start a throwaway cluster: {e}"));
        assert_ne!(cluster.port(), taken);
        assert!(
            cluster.log().contains("could not bind"),
            "{}",
            cluster.log()
        );
        assert_eq!(cluster.psql("postgres", "select 1").unwrap(), "1");
    }
}
