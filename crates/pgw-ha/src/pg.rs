//! The agent's own PostgreSQL: reading its facts, writing its settings, and the steps the
//! decision asks for (bootstrap, clone, start, promote, demote, follow, rejoin). Every
//! blocking pgw-node call runs in `spawn_blocking`.

use std::path::Path;
use std::time::Duration;

use pgw_node::{
    AuthMethod, BinDir, Conninfo, InitdbOptions, Lsn, Node, NodeError, OsUser, Password,
    StartOptions, StopMode, StopOptions,
};
use tokio_postgres::{Client, NoTls};

use crate::config::Config;
use crate::decide::{Data, Live, Sender};

/// How long a start may take (crash recovery included).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a step on the local server failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Replica(#[from] pgw_replica::ReplicaError),
    #[error("{what}: {}", pgw_common::error_line(source))]
    Query {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl pgw_common::Classify for PgError {
    fn class(&self) -> pgw_common::ErrorClass {
        match self {
            PgError::Replica(e) => e.class(),
            _ => pgw_common::ErrorClass::Failed,
        }
    }
}

fn q(what: &'static str) -> impl Fn(tokio_postgres::Error) -> PgError {
    move |source| PgError::Query { what, source }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, PgError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PgError::Other(format!("a blocking step panicked: {e}")))?
        .map_err(PgError::from)
}

/// The local server as the agent drives it.
#[derive(Clone)]
pub struct LocalPg {
    pub config: Config,
    pub bin: BinDir,
    pub user: OsUser,
}

impl LocalPg {
    pub fn new(config: Config) -> Result<LocalPg, PgError> {
        let user = OsUser::detect_named(&config.os_user)?;
        Ok(LocalPg {
            bin: BinDir::new(&config.bin_dir),
            config,
            user,
        })
    }

    /// The data directory as pgw-node adopts it (checked: version, owner, mode).
    fn node(&self) -> Result<Node, PgError> {
        Ok(Node::open(
            self.bin.clone(),
            self.user.clone(),
            &self.config.data_dir,
        )?)
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// Whether a data directory is there (PG_VERSION present).
    pub fn has_data(&self) -> bool {
        self.config.data_dir.join("PG_VERSION").exists()
    }

    /// Beside the data directory while a clone runs: a directory found with it is a clone
    /// that never finished (the agent was killed), removed and made again.
    fn clone_marker(&self) -> std::path::PathBuf {
        let mut name = self.config.data_dir.as_os_str().to_owned();
        name.push(".pgwarden-cloning");
        name.into()
    }

    /// The data directory's system identifier (pg_controldata) and standby.signal.
    pub async fn data(&self, cached_sysid: Option<&str>) -> Result<Data, PgError> {
        let marker = self.clone_marker();
        if marker.exists() && !self.is_running() {
            tracing::warn!(data_dir = %self.config.data_dir.display(), "removing an unfinished clone");
            match std::fs::remove_dir_all(&self.config.data_dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(PgError::Other(format!(
                        "remove the unfinished clone {}: {e}",
                        self.config.data_dir.display()
                    )))
                }
            }
            let _ = std::fs::remove_file(&marker);
        }
        if !self.has_data() {
            return Ok(Data::Missing);
        }
        let node = self.node()?;
        let standby = node.is_standby();
        let system_identifier = match cached_sysid {
            Some(s) => s.to_string(),
            None => blocking(move || node.control_data())
                .await?
                .system_identifier
                .to_string(),
        };
        Ok(Data::Present {
            system_identifier,
            standby,
        })
    }

    /// A server runs here outside recovery (no standby.signal): what fencing stops.
    pub fn running_as_primary(&self) -> bool {
        self.is_running() && !self.config.data_dir.join("standby.signal").exists()
    }

    pub fn is_running(&self) -> bool {
        self.has_data() && self.node().is_ok_and(|n| n.is_running())
    }

    /// A superuser connection to the local server.
    pub async fn connect(&self) -> Result<Client, PgError> {
        connect_to(
            &self.config.listen,
            &self.config.superuser,
            self.config.superuser_password.as_deref(),
        )
        .await
    }

    /// The running server's facts, the WAL senders (on a primary) and its
    /// `synchronous_standby_names`.
    pub async fn live(&self, client: &Client) -> Result<(Live, Vec<Sender>, String), PgError> {
        let r = client
            .query_one(
                "SELECT pg_is_in_recovery(),
                        CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
                        pg_last_wal_receive_lsn()::text,
                        pg_last_wal_replay_lsn()::text,
                        coalesce((SELECT status = 'streaming' FROM pg_stat_wal_receiver), false),
                        CASE WHEN pg_is_in_recovery()
                             THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver),
                                           (SELECT timeline_id FROM pg_control_checkpoint()))::int8
                             ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8
                        END,
                        current_setting('synchronous_standby_names')",
                &[],
            )
            .await
            .map_err(q("read the server's state"))?;
        let lsn = |i: usize| {
            r.get::<_, Option<String>>(i)
                .and_then(|s| s.parse::<Lsn>().ok())
                .map(|l| l.0)
        };
        let in_recovery: bool = r.get(0);
        let following = if in_recovery {
            let node = self.node()?;
            blocking(move || node.auto_conf("primary_conninfo"))
                .await?
                .and_then(|c| conn_of(&c))
        } else {
            None
        };
        let live = Live {
            in_recovery,
            timeline: r.get::<_, Option<i64>>(5).map(|t| t as u32),
            wal_lsn: lsn(1),
            received_lsn: lsn(2),
            replayed_lsn: lsn(3),
            streaming: r.get(4),
            following,
        };
        let ssn: String = r.get(6);
        let senders = if in_recovery {
            Vec::new()
        } else {
            client
                .query(
                    "SELECT application_name, state = 'streaming', sync_state = 'sync',
                            coalesce(flush_lsn, '0/0')::text
                       FROM pg_stat_replication",
                    &[],
                )
                .await
                .map_err(q("read pg_stat_replication"))?
                .iter()
                .map(|r| Sender {
                    application_name: r.get(0),
                    streaming: r.get(1),
                    sync: r.get(2),
                    flush_lsn: r
                        .get::<_, String>(3)
                        .parse::<Lsn>()
                        .map(|l| l.0)
                        .unwrap_or(0),
                })
                .collect()
        };
        Ok((live, senders, unquote_names(&ssn)))
    }

    /// The agent's settings in postgresql.auto.conf (kept by pg_rewind, rewritten after a
    /// clone), `[parameters]` in pgwarden.conf (included from postgresql.conf), pg_hba.conf.
    /// `ssn`: the synchronous standby to name (empty: none); None keeps what the data
    /// directory has (a leader's restart or reload must not drop its synchronous standby).
    pub async fn write_settings(&self, ssn: Option<&str>) -> Result<(), PgError> {
        let me = self.clone();
        let ssn = ssn.map(str::to_string);
        let listen = self.config.listen().map_err(PgError::Other)?;
        let params = self.config.parameter_lines().map_err(PgError::Other)?;
        blocking(move || me.write_settings_now(ssn.as_deref(), &listen, params)).await
    }

    fn write_settings_now(
        &self,
        ssn: Option<&str>,
        listen: &crate::config::HostPort,
        params: Vec<(String, String)>,
    ) -> Result<(), NodeError> {
        let node = Node::open(self.bin.clone(), self.user.clone(), &self.config.data_dir)?;
        node.set_auto_conf("port", Some(&listen.port.to_string()))?;
        node.set_auto_conf("listen_addresses", Some(&listen.host))?;
        node.set_auto_conf("hot_standby", Some("on"))?;
        node.set_auto_conf("wal_log_hints", Some("on"))?;
        if let Some(ssn) = ssn {
            let quoted = if ssn.is_empty() {
                String::new()
            } else {
                format!("\"{}\"", ssn.replace('"', "\"\""))
            };
            node.set_auto_conf("synchronous_standby_names", Some(&quoted))?;
        }

        let dir = &self.config.data_dir;
        let mut text = String::from(
            "# Written by pgwarden ha agent from [parameters] in its config; edits here are lost.\n",
        );
        if !params.iter().any(|(k, _)| k == "unix_socket_directories") {
            text.push_str("unix_socket_directories = ''\n");
        }
        // Every member has a slot on the leader, and a member that is gone for good would
        // keep its WAL forever: bound what a slot may hold back unless told otherwise.
        if !params.iter().any(|(k, _)| k == "max_slot_wal_keep_size") {
            text.push_str("max_slot_wal_keep_size = '1GB'\n");
        }
        for (k, v) in params {
            text.push_str(&format!("{k} = {}\n", pgw_node::conf_quote(&v)));
        }
        self.user
            .write_file(&dir.join("pgwarden.conf"), text.as_bytes(), 0o600)?;
        let conf_path = dir.join("postgresql.conf");
        let conf = std::fs::read_to_string(&conf_path).unwrap_or_default();
        const INCLUDE: &str = "include_if_exists = 'pgwarden.conf'";
        if !conf.lines().any(|l| l.trim() == INCLUDE) {
            let mut conf = conf;
            if !conf.ends_with('\n') && !conf.is_empty() {
                conf.push('\n');
            }
            conf.push_str(INCLUDE);
            conf.push('\n');
            self.user.write_file(&conf_path, conf.as_bytes(), 0o600)?;
        }
        let mut hba = String::from("# Written by pgwarden ha agent from pg_hba in its config.\n");
        for line in &self.config.pg_hba {
            hba.push_str(line);
            hba.push('\n');
        }
        self.user
            .write_file(&dir.join("pg_hba.conf"), hba.as_bytes(), 0o600)?;
        Ok(())
    }

    /// initdb into the data directory (the bootstrap), with the superuser's password.
    pub async fn initdb(&self) -> Result<(), PgError> {
        let options = InitdbOptions {
            superuser: self.config.superuser.clone(),
            password: self.config.superuser_password.clone().map(Password::new),
            auth_local: Some(AuthMethod::Trust),
            auth_host: Some(AuthMethod::Trust),
            encoding: Some("UTF8".into()),
            locale: Some("C".into()),
            data_checksums: self.config.data_checksums,
            ..InitdbOptions::default()
        };
        let (bin, user, dir) = (
            self.bin.clone(),
            self.user.clone(),
            self.config.data_dir.clone(),
        );
        blocking(move || Node::initdb(bin, user, dir, &options)).await?;
        Ok(())
    }

    /// After the bootstrap start: the replication role.
    pub async fn create_replication_role(&self, client: &Client) -> Result<(), PgError> {
        let user = &self.config.replication_user;
        let exists: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
                &[&user],
            )
            .await
            .map_err(q("look up the replication role"))?
            .get(0);
        if !exists {
            let mut sql = format!(
                "CREATE ROLE {} LOGIN REPLICATION",
                pgw_common::sql::ident(user)
            );
            if let Some(p) = &self.config.replication_password {
                // CREATE ROLE takes no bind parameters: the password goes in as a quoted literal.
                sql.push_str(&format!(" PASSWORD {}", pgw_common::sql::literal(p)));
            }
            client
                .batch_execute(&sql)
                .await
                .map_err(q("create the replication role"))?;
        }
        Ok(())
    }

    /// Starts the server: in recovery following `primary` (conninfo, slot) when given,
    /// in recovery with no primary when `standby` without one, else as a primary.
    pub async fn start(
        &self,
        standby: bool,
        primary: Option<(Conninfo, String)>,
    ) -> Result<(), PgError> {
        let node = self.node()?;
        blocking(move || {
            if standby {
                match &primary {
                    Some((c, slot)) => node.configure_standby(c, Some(slot))?,
                    None => node.write_standby_signal()?,
                }
            } else {
                let signal = node.data_dir().join("standby.signal");
                if signal.exists() {
                    std::fs::remove_file(&signal).map_err(|source| NodeError::Io {
                        action: "remove",
                        path: signal.clone(),
                        source,
                    })?;
                }
            }
            node.start(&StartOptions::default().timeout(START_TIMEOUT))
        })
        .await
    }

    /// Points a running replica at `primary` and reloads (PostgreSQL 15 re-reads
    /// primary_conninfo on reload and reconnects its WAL receiver).
    pub async fn follow(&self, primary: Conninfo, slot: String) -> Result<(), PgError> {
        let node = self.node()?;
        blocking(move || {
            node.set_primary_conninfo(&primary)?;
            node.set_auto_conf("primary_slot_name", Some(&slot))?;
            node.reload()
        })
        .await
    }

    pub async fn reload(&self) -> Result<(), PgError> {
        let node = self.node()?;
        blocking(move || node.reload()).await
    }

    pub async fn promote(&self) -> Result<(), PgError> {
        let node = self.node()?;
        blocking(move || node.promote(Duration::from_secs(30))).await
    }

    /// Stops the server: `immediate` to stop writes at once (fencing), else fast (a clean
    /// shutdown checkpoint, for switchover and agent shutdown).
    pub async fn stop(&self, immediate: bool) -> Result<(), PgError> {
        if !self.has_data() {
            return Ok(());
        }
        let node = self.node()?;
        let mode = if immediate {
            StopMode::Immediate
        } else {
            StopMode::Fast
        };
        blocking(move || node.stop(&StopOptions::new(mode, Duration::from_secs(30)))).await?;
        Ok(())
    }

    /// pg_controldata's latest checkpoint location (after a clean stop: the shutdown checkpoint).
    pub async fn checkpoint_lsn(&self) -> Result<u64, PgError> {
        let node = self.node()?;
        Ok(blocking(move || node.control_data())
            .await?
            .checkpoint_lsn
            .0)
    }

    /// The replication conninfo to `conn` (`host:port`), as this member.
    pub fn replication_conninfo(&self, conn: &str) -> Result<Conninfo, PgError> {
        let hp = crate::config::HostPort::parse(conn).map_err(PgError::Other)?;
        let mut c = Conninfo::tcp(&hp.host, hp.port, &self.config.replication_user)
            .with_application_name(&Config::slot_of(&self.config.name));
        if let Some(p) = &self.config.replication_password {
            c = c.with_password(Password::new(p.clone()));
        }
        Ok(c)
    }

    /// Copies the leader at `conn` into the (missing) data directory, without starting it.
    pub async fn clone_from(&self, conn: &str) -> Result<(), PgError> {
        let user = self.config.replication_user.clone();
        let client = connect_to(conn, &user, self.config.replication_password.as_deref()).await?;
        let params = params_for(conn, &user, self.config.replication_password.as_deref())?;
        let opts = pgw_replica::CloneOptions {
            pgdata: self.config.data_dir.clone(),
            slot: None,
            port: Some(self.config.listen().map_err(PgError::Other)?.port),
            start: false,
            application_name: Some(Config::slot_of(&self.config.name)),
            bin: self.bin.clone(),
            stream_timeout: Duration::from_secs(60),
            user: Some(self.user.clone()),
        };
        let marker = self.clone_marker();
        std::fs::write(
            &marker,
            b"a pgwarden ha clone runs into the directory beside\n",
        )
        .map_err(|e| PgError::Other(format!("write {}: {e}", marker.display())))?;
        let cloned = pgw_replica::clone(&client, &params, &opts, |_| {}).await;
        if cloned.is_err() {
            // pgw-replica removed what it made.
            let _ = std::fs::remove_file(&marker);
        }
        cloned?;
        let _ = std::fs::remove_file(&marker);
        Ok(())
    }

    /// pg_rewind onto the leader at `conn`, then start streaming from it.
    pub async fn rejoin(&self, conn: &str) -> Result<(), PgError> {
        let su = self.config.superuser.clone();
        let pw = self.config.superuser_password.clone();
        let client = connect_to(conn, &su, pw.as_deref()).await?;
        let params = params_for(conn, &su, pw.as_deref())?;
        let name = Config::slot_of(&self.config.name);
        let opts = pgw_replica::RejoinOptions {
            pgdata: self.config.data_dir.clone(),
            slot: Some(name.clone()),
            application_name: Some(name.clone()),
            bin: self.bin.clone(),
            stream_timeout: Duration::from_secs(60),
            // Stream as the replication role (pg_rewind itself needs the superuser).
            stream_as: Some(self.replication_conninfo(conn)?),
            user: Some(self.user.clone()),
        };
        pgw_replica::rejoin(&client, &params, &opts).await?;
        Ok(())
    }

    /// Makes the physical slot of every other member on this (primary) server.
    pub async fn ensure_slots(&self, client: &Client, members: &[String]) -> Result<(), PgError> {
        for m in members {
            pgw_replica::ensure_slot(client, &Config::slot_of(m)).await?;
        }
        Ok(())
    }

    /// Kills the postmaster and its children (SIGKILL), for a server pg_ctl cannot stop.
    pub async fn kill(&self) -> Result<(), PgError> {
        let node = self.node()?;
        blocking(move || node.kill().map(|_| ())).await
    }
}

/// A connection to `conn` (`host:port`) as `user`, database postgres, 2 s to connect.
pub async fn connect_to(conn: &str, user: &str, password: Option<&str>) -> Result<Client, PgError> {
    let hp = crate::config::HostPort::parse(conn).map_err(PgError::Other)?;
    let mut c = tokio_postgres::Config::new();
    c.host(&hp.host)
        .port(hp.port)
        .user(user)
        .dbname("postgres")
        .application_name("pgwarden-ha")
        .connect_timeout(Duration::from_secs(2));
    if let Some(p) = password {
        c.password(p);
    }
    let (client, connection) = c.connect(NoTls).await.map_err(q("connect"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn params_for(
    conn: &str,
    user: &str,
    password: Option<&str>,
) -> Result<pgw_common::ConnParams, PgError> {
    let hp = crate::config::HostPort::parse(conn).map_err(PgError::Other)?;
    let mut dsn = format!(
        "host={} port={} user={} dbname=postgres",
        pgw_node::conninfo_quote(&hp.host),
        hp.port,
        pgw_node::conninfo_quote(user)
    );
    if let Some(p) = password {
        dsn.push_str(&format!(" password={}", pgw_node::conninfo_quote(p)));
    }
    pgw_common::ConnParams::resolve(Some(&dsn), &pgw_common::conninfo::ProcessEnv)
        .map_err(|e| PgError::Other(e.to_string()))
}

/// `host:port` of a primary_conninfo string (libpq keyword=value, values maybe quoted).
pub fn conn_of(conninfo: &str) -> Option<String> {
    let mut host = None;
    let mut port = None;
    let mut chars = conninfo.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_string();
        if key.is_empty() {
            break;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n)
                        }
                    }
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        match key.as_str() {
            "host" => host = Some(value),
            "port" => port = Some(value),
            _ => {}
        }
    }
    Some(format!(
        "{}:{}",
        host?,
        port.unwrap_or_else(|| "5432".into())
    ))
}

/// `"b"` or `b` (synchronous_standby_names with one member) as `b`.
fn unquote_names(ssn: &str) -> String {
    let s = ssn.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .map(|s| s.replace("\"\"", "\""))
        .unwrap_or_else(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_conninfo_names_host_and_port() {
        assert_eq!(
            conn_of("user=replicator host=127.0.0.1 port=5433 application_name=b").as_deref(),
            Some("127.0.0.1:5433")
        );
        assert_eq!(
            conn_of("host='127.0.0.1' port='6000' passfile='/x y'").as_deref(),
            Some("127.0.0.1:6000")
        );
        assert_eq!(conn_of("user=x"), None);
    }

    #[test]
    fn standby_names_unquoted() {
        assert_eq!(unquote_names("\"node_2\""), "node_2");
        assert_eq!(unquote_names("b"), "b");
        assert_eq!(unquote_names(""), "");
    }
}
