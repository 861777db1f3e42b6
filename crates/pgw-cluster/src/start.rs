//! Bringing a cluster up: check the binaries, make the temp dir, start the watchdog, `initdb`,
//! write files and pg_hba lines, then start on a free port, retrying if another process took
//! the port first.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::builder::{check_relative, Primary};
use crate::cluster::{Cluster, HOST, READY_TIMEOUT, SUPERUSER};
use crate::error::one_line;
use crate::os::{self, conf_quote, ServerUser};
use crate::{ports, watchdog, ClusterBuilder, ClusterError};

/// The binaries the harness runs.
const BINARIES: [&str; 5] = ["initdb", "pg_ctl", "postgres", "psql", "pg_isready"];

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
        let bin_dir = builder.resolved_bin_dir();
        if let Some(missing) = BINARIES.into_iter().find(|b| !bin_dir.join(b).is_file()) {
            return Err(ClusterError::BinariesNotFound {
                dir: bin_dir,
                missing,
            });
        }
        for (relative, _) in &builder.files {
            check_relative(relative)?;
        }
        if builder.standby_of.is_some() && !bin_dir.join("pg_basebackup").is_file() {
            return Err(ClusterError::BinariesNotFound {
                dir: bin_dir,
                missing: "pg_basebackup",
            });
        }
        let user = ServerUser::detect()?;
        let base = os::temp_base(user);
        let tmp = tempfile::Builder::new()
            .prefix("pgw-cluster-")
            .tempdir_in(&base)
            .map_err(|source| ClusterError::Io {
                action: "create temp dir in",
                path: base.clone(),
                source,
            })?;
        let root = tmp.path().to_owned();
        tracing::debug!(dir = %root.display(), bin_dir = %bin_dir.display(), ?user, "new cluster");

        // From here on, dropping `cluster` (on any error) stops whatever was started and
        // removes the temp dir.
        let mut cluster = Cluster {
            tmp: Some(tmp),
            data_dir: root.join("data"),
            log_path: root.join("server.log"),
            root,
            bin_dir,
            port: 0,
            password: match &builder.standby_of {
                Some(primary) => primary.password.clone(),
                None => os::random_password(),
            },
            user,
            watchdog: None,
            torn_down: false,
        };
        user.chown(&cluster.root)?;
        cluster.watchdog = Some(watchdog::spawn(&cluster.root)?);

        match &builder.standby_of {
            Some(primary) => cluster.base_backup(primary)?,
            None => cluster.initdb(builder.data_checksums)?,
        }
        for (relative, contents) in &builder.files {
            cluster.write_data_file(relative, contents)?;
        }
        cluster.prepend_hba(&builder.hba_lines)?;
        cluster.start_on_free_port(&builder.settings, pick_port)?;
        tracing::debug!(port = cluster.port, "cluster started");
        Ok(cluster)
    }

    /// `initdb` with a password file for the superuser, removed afterwards.
    fn initdb(&self, data_checksums: bool) -> Result<(), ClusterError> {
        let pwfile = self.root.join("pwfile");
        os::write_private(
            self.user,
            &pwfile,
            format!("{}\n", self.password).as_bytes(),
        )?;
        let mut cmd = os::command(&self.bin_dir, "initdb", &self.root, Some(self.user));
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-U", SUPERUSER])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["-E", "UTF8", "--locale=C", "-N"]);
        if data_checksums {
            cmd.arg("--data-checksums");
        }
        tracing::debug!(data_dir = %self.data_dir.display(), "initdb");
        let result = os::run(&mut cmd);
        let removed = fs::remove_file(&pwfile).map_err(|source| ClusterError::Io {
            action: "remove",
            path: pwfile.clone(),
            source,
        });
        let out = result?;
        if !out.status.success() {
            return Err(ClusterError::InitdbFailed {
                output: one_line(&os::combined(&out), 8),
            });
        }
        removed
    }

    /// `pg_basebackup -X stream -R` from `primary` into the data dir, as the server user: the
    /// copy gets `standby.signal` and a `primary_conninfo` with the superuser's password.
    fn base_backup(&self, primary: &Primary) -> Result<(), ClusterError> {
        let port = primary.port.to_string();
        let mut cmd = os::command(&self.bin_dir, "pg_basebackup", &self.root, Some(self.user));
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-h", HOST, "-p", &port, "-U", SUPERUSER])
            .args(["-X", "stream", "-R", "-c", "fast", "--no-password"])
            .env("PGPASSWORD", &primary.password)
            .env("PGCONNECT_TIMEOUT", "10");
        tracing::debug!(primary_port = primary.port, data_dir = %self.data_dir.display(), "pg_basebackup");
        let out = os::run(&mut cmd)?;
        if !out.status.success() {
            return Err(ClusterError::BaseBackupFailed {
                output: one_line(&os::combined(&out), 8),
            });
        }
        Ok(())
    }

    /// Writes one [`ClusterBuilder::file`] into the data dir.
    fn write_data_file(&self, relative: &str, contents: &[u8]) -> Result<(), ClusterError> {
        let relative = check_relative(relative)?;
        let path = self.data_dir.join(relative);
        let mut dir = self.data_dir.clone();
        if let Some(parent) = relative.parent() {
            for component in parent.components() {
                dir.push(component);
                if !dir.is_dir() {
                    fs::create_dir(&dir)
                        .and_then(|()| fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)))
                        .map_err(|source| ClusterError::Io {
                            action: "create directory",
                            path: dir.clone(),
                            source,
                        })?;
                    self.user.chown(&dir)?;
                }
            }
        }
        tracing::debug!(path = %path.display(), "write data-dir file");
        os::write_private(self.user, &path, contents)
    }

    /// Puts `lines` at the top of pg_hba.conf.
    fn prepend_hba(&self, lines: &[String]) -> Result<(), ClusterError> {
        if lines.is_empty() {
            return Ok(());
        }
        let path = self.data_dir.join("pg_hba.conf");
        let old = read(&path)?;
        let mut new = String::from("# added by pgw-cluster\n");
        for line in lines {
            new.push_str(line);
            new.push('\n');
        }
        new.push('\n');
        new.push_str(&old);
        tracing::debug!(?lines, "prepend pg_hba.conf lines");
        os::write_private(self.user, &path, new.as_bytes())
    }

    /// Picks a free port, writes postgresql.conf and runs `pg_ctl start`; if the server could
    /// not bind the port (someone took it first), tries another one.
    fn start_on_free_port(
        &mut self,
        settings: &[(String, String)],
        mut pick_port: impl FnMut() -> Result<u16, ClusterError>,
    ) -> Result<(), ClusterError> {
        let conf_path = self.data_dir.join("postgresql.conf");
        let initdb_conf = read(&conf_path)?;
        let mut last_log = String::new();
        for attempt in 1..=PORT_ATTEMPTS {
            self.port = pick_port()?;
            let conf = self.conf(&initdb_conf, settings);
            os::write_private(self.user, &conf_path, conf.as_bytes())?;

            let log_start = self.log_len();
            let mut cmd = self.pg_ctl();
            cmd.arg("-l").arg(&self.log_path).args([
                "-w",
                "-t",
                &READY_TIMEOUT.as_secs().to_string(),
                "start",
            ]);
            os::own_process_group(&mut cmd);
            tracing::debug!(port = self.port, attempt, "start server");
            let out = os::run(&mut cmd)?;
            if out.status.success() {
                return self.wait_ready();
            }

            let output = os::combined(&out);
            let log = self.log_since(log_start);
            if output.contains("did not start in time") {
                return Err(ClusterError::NotReady {
                    secs: READY_TIMEOUT.as_secs(),
                    log: one_line(&log, 12),
                });
            }
            if !PORT_TAKEN.iter().any(|p| log.contains(p)) {
                return Err(ClusterError::StartFailed {
                    log: one_line(&format!("{output}\n{log}"), 12),
                });
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
        conf.push_str(&format!("listen_addresses = {}\n", conf_quote("127.0.0.1")));
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
