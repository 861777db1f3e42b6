//! The pooler's settings as plain serde data: the native `pool.toml`, and what
//! [`crate::ini`] makes of a `pgbouncer.ini`. Field names are PgBouncer's, so that its
//! documentation applies; every field says its default, its unit and whether RELOAD (or
//! SIGHUP) applies it. Times are seconds (fractions allowed) as in PgBouncer; 0 means off.
//!
//! ```toml
//! [pool]
//! listen_port = 6432
//! auth_type = "scram-sha-256"
//! auth_file = "/etc/pgwarden/userlist.txt"
//! pool_mode = "transaction"
//!
//! [databases.app]
//! host = ["10.0.0.1", "10.0.0.2"]
//! dbname = "app"
//! target_session_attrs = "read-write"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The name clients connect to for the admin console (PgBouncer's); `pgwarden` is an alias.
pub const ADMIN_DATABASES: &[&str] = &["pgbouncer", "pgwarden"];

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Global settings (PgBouncer's `[pgbouncer]` section).
    #[serde(default)]
    pub pool: Settings,
    /// The databases clients may connect to, by the name clients use. `*` is the fallback
    /// for any other name (connects to the database of that name). Reload: added, changed
    /// and removed entries apply to new server connections.
    #[serde(default)]
    pub databases: BTreeMap<String, Database>,
    /// Per-user overrides (PgBouncer's `[users]`). Reload.
    #[serde(default)]
    pub users: BTreeMap<String, UserSettings>,
}

/// How long a server connection stays with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// Until the client disconnects (PgBouncer's default).
    #[default]
    Session,
    /// Until the transaction ends; the server connection then serves other clients.
    Transaction,
    /// Until the statement ends; multi-statement transactions are refused.
    Statement,
}

impl PoolMode {
    /// PgBouncer's spelling (`session`, `transaction`, `statement`).
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }

    /// Parses PgBouncer's spelling (case-insensitive).
    pub fn parse(s: &str) -> Option<PoolMode> {
        match s.to_ascii_lowercase().as_str() {
            "session" => Some(PoolMode::Session),
            "transaction" => Some(PoolMode::Transaction),
            "statement" => Some(PoolMode::Statement),
            _ => None,
        }
    }
}

/// How clients prove who they are (`auth_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum AuthType {
    /// SCRAM-SHA-256 against the auth file's or auth_query's secret.
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// MD5 (PgBouncer's default); a user whose secret is a SCRAM secret is asked for SCRAM.
    #[default]
    #[serde(rename = "md5")]
    Md5,
    /// Clear-text password (over TLS only, if at all).
    #[serde(rename = "plain")]
    Plain,
    /// No password; the user must still be known (auth file, or any user with `any`).
    #[serde(rename = "trust")]
    Trust,
    /// No password and any user name.
    #[serde(rename = "any")]
    Any,
    /// Per-connection rules from `auth_hba_file` (pg_hba.conf syntax).
    #[serde(rename = "hba")]
    Hba,
}

impl AuthType {
    /// PgBouncer's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::ScramSha256 => "scram-sha-256",
            AuthType::Md5 => "md5",
            AuthType::Plain => "plain",
            AuthType::Trust => "trust",
            AuthType::Any => "any",
            AuthType::Hba => "hba",
        }
    }

    /// Parses PgBouncer's spelling (case-insensitive); `cert`, `ldap`, `pam` are not here.
    pub fn parse(s: &str) -> Option<AuthType> {
        match s.to_ascii_lowercase().as_str() {
            "scram-sha-256" => Some(AuthType::ScramSha256),
            "md5" => Some(AuthType::Md5),
            "plain" => Some(AuthType::Plain),
            "trust" => Some(AuthType::Trust),
            "any" => Some(AuthType::Any),
            "hba" => Some(AuthType::Hba),
            _ => None,
        }
    }
}

/// TLS use on one side (libpq's and PgBouncer's sslmode names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Never.
    #[default]
    Disable,
    /// Clients: accepted when asked. Servers: tried only if plain is refused.
    Allow,
    /// Clients: accepted when asked. Servers: tried first.
    Prefer,
    /// Required; certificates not checked.
    Require,
    /// Required; the peer's certificate must chain to the CA file.
    VerifyCa,
    /// As verify-ca, and the server's name must match its certificate.
    VerifyFull,
}

impl TlsMode {
    /// The sslmode name.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Allow => "allow",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }

    /// Parses an sslmode name.
    pub fn parse(s: &str) -> Option<TlsMode> {
        match s.to_ascii_lowercase().as_str() {
            "disable" => Some(TlsMode::Disable),
            "allow" => Some(TlsMode::Allow),
            "prefer" => Some(TlsMode::Prefer),
            "require" => Some(TlsMode::Require),
            "verify-ca" => Some(TlsMode::VerifyCa),
            "verify-full" => Some(TlsMode::VerifyFull),
            _ => None,
        }
    }
}

/// Which host of a database's list a server connection goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TargetSessionAttrs {
    /// Any host that accepts connections, in list order (PgBouncer's behaviour).
    #[default]
    Any,
    /// Only the host that is not in recovery (the primary).
    ReadWrite,
    /// Only hosts in recovery (replicas).
    ReadOnly,
    /// A replica when one is up, else the primary.
    PreferStandby,
}

impl TargetSessionAttrs {
    /// libpq's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::ReadOnly => "read-only",
            TargetSessionAttrs::PreferStandby => "prefer-standby",
        }
    }

    /// Parses libpq's spelling (`primary` and `standby` as aliases).
    pub fn parse(s: &str) -> Option<TargetSessionAttrs> {
        match s.to_ascii_lowercase().as_str() {
            "any" => Some(TargetSessionAttrs::Any),
            "read-write" | "primary" => Some(TargetSessionAttrs::ReadWrite),
            "read-only" | "standby" => Some(TargetSessionAttrs::ReadOnly),
            "prefer-standby" => Some(TargetSessionAttrs::PreferStandby),
            _ => None,
        }
    }
}

/// Global settings. Defaults are PgBouncer 1.25's unless a field says otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Addresses to listen on, comma-separated; `*` for all IPv4, empty for none (Unix
    /// socket only). Default `127.0.0.1` (PgBouncer has no default). No reload.
    pub listen_addr: String,
    /// TCP port, also the Unix socket's name (`.s.PGSQL.<port>`). Default 6432. No reload.
    pub listen_port: u16,
    /// TCP_DEFER_ACCEPT on the TCP listening sockets (Linux): the kernel hands a connection
    /// over once its first bytes (the startup packet) have arrived, so a login costs one
    /// wake-up instead of two. PgBouncer's setting of the same name, on by default on Linux
    /// as there. Default true. No reload.
    pub tcp_defer_accept: bool,
    /// Directory of the Unix socket; empty for none. Default empty (PgBouncer: `/tmp`;
    /// a pgbouncer.ini without the key gets `/tmp`). No reload.
    pub unix_socket_dir: String,
    /// How clients authenticate. Default `md5`. Reload.
    pub auth_type: AuthType,
    /// The auth file (`"user" "secret"` per line: plain, `md5…` or `SCRAM-SHA-256$…`).
    /// Default none. Reload (re-read).
    pub auth_file: Option<PathBuf>,
    /// pg_hba.conf-style rules for `auth_type = hba`. Default none. Reload (re-read).
    pub auth_hba_file: Option<PathBuf>,
    /// The user that runs `auth_query` for users missing from the auth file. Default none
    /// (no auth_query). Reload.
    pub auth_user: Option<String>,
    /// Returns (usename, passwd) for `$1`. Default PgBouncer 1.25's, which refuses expired
    /// passwords. Reload.
    pub auth_query: String,
    /// Database auth_query runs in. Default: the one the client asked for. Reload.
    pub auth_dbname: Option<String>,
    /// Default pool mode. Default `session`. Reload (new server assignments).
    pub pool_mode: PoolMode,
    /// Most client connections at once; more are refused with an error. Default 100. Reload.
    pub max_client_conn: u32,
    /// Server connections per (database, user) pool. Default 20. Reload.
    pub default_pool_size: u32,
    /// Server connections kept open per pool even when idle. Default 0. Reload.
    pub min_pool_size: u32,
    /// Extra server connections a pool may open when a client has waited
    /// `reserve_pool_timeout`. Default 0. Reload.
    pub reserve_pool_size: u32,
    /// Seconds a client waits before the reserve pool is used. Default 5. Reload.
    pub reserve_pool_timeout: f64,
    /// Most server connections per database, all users together; 0 = no limit. Default 0.
    /// Reload.
    pub max_db_connections: u32,
    /// Most server connections per user, all databases together; 0 = no limit. Default 0.
    /// Reload.
    pub max_user_connections: u32,
    /// Run when a server connection goes back to the pool in session mode (and in every
    /// mode with `server_reset_query_always`). Default `DISCARD ALL`. Reload.
    pub server_reset_query: String,
    /// Run the reset query in transaction and statement mode too. Default false. Reload.
    pub server_reset_query_always: bool,
    /// Run on a server connection idle longer than `server_check_delay` before it is given
    /// out; empty sends nothing. Default `select 1`. Reload.
    pub server_check_query: String,
    /// Seconds of idleness after which a server connection is checked. Default 30. Reload.
    pub server_check_delay: f64,
    /// Seconds an idle server connection is kept (above min_pool_size). Default 600. Reload.
    pub server_idle_timeout: f64,
    /// Seconds after which a server connection is closed when next released. Default 3600.
    /// Reload.
    pub server_lifetime: f64,
    /// Seconds to connect to and log in to a server. Default 15. Reload.
    pub server_connect_timeout: f64,
    /// Seconds to wait after a failed server login before trying that pool again.
    /// Default 15. Reload.
    pub server_login_retry: f64,
    /// Seconds a query may run before it is cancelled and the client disconnected;
    /// 0 = no limit. Default 0. Reload.
    pub query_timeout: f64,
    /// Seconds a client may wait for a server connection before it gets an error;
    /// 0 = forever. Default 120. Reload.
    pub query_wait_timeout: f64,
    /// Seconds an idle client (outside a transaction) is kept; 0 = forever. Default 0.
    /// Reload.
    pub client_idle_timeout: f64,
    /// Seconds a client may sit idle inside a transaction; 0 = forever. Default 0. Reload.
    pub idle_transaction_timeout: f64,
    /// Seconds a client has to log in. Default 60. Reload.
    pub client_login_timeout: f64,
    /// Users who may run every console command. Default none. Reload.
    pub admin_users: Vec<String>,
    /// Users who may run the console's SHOW commands. Default none. Reload.
    pub stats_users: Vec<String>,
    /// Startup parameters accepted from clients and not passed on (e.g. `extra_float_digits`).
    /// Default none. Reload.
    pub ignore_startup_parameters: Vec<String>,
    /// Protocol-level named prepared statements carried per client in transaction and
    /// statement mode (an LRU this long per server connection); 0 turns tracking off.
    /// Default 200 (as PgBouncer 1.24+). Reload.
    pub max_prepared_statements: u32,
    /// TLS towards clients. Default `disable`. No reload.
    pub client_tls_sslmode: TlsMode,
    /// PEM private key for client TLS. Default none. No reload.
    pub client_tls_key_file: Option<PathBuf>,
    /// PEM certificate chain for client TLS. Default none. No reload.
    pub client_tls_cert_file: Option<PathBuf>,
    /// CA that client certificates must chain to (verify-ca/verify-full). Default none.
    /// No reload.
    pub client_tls_ca_file: Option<PathBuf>,
    /// TLS towards servers. Default `disable` (PgBouncer 1.18's; 1.20+ says `prefer`).
    /// No reload.
    pub server_tls_sslmode: TlsMode,
    /// CA that server certificates must chain to. Default: none. No reload.
    pub server_tls_ca_file: Option<PathBuf>,
    /// PEM private key presented to servers. Default none. No reload.
    pub server_tls_key_file: Option<PathBuf>,
    /// PEM certificate presented to servers. Default none. No reload.
    pub server_tls_cert_file: Option<PathBuf>,
    /// Seconds between two refreshes of SHOW STATS' averages. Default 60. Reload.
    pub stats_period: f64,
    /// pgwarden: `host:port` of the Prometheus endpoint (`/metrics`); empty for none.
    /// Default empty; `--metrics` sets it. No reload.
    pub metrics_addr: String,
    /// pgwarden: worker threads; 0 = half the cores (at least one): the pooler usually
    /// shares its host with PostgreSQL or the application, and on 2 shared cores one
    /// worker did the same throughput for less CPU per transaction than two (docs/pool.md).
    /// Default 0. No reload.
    pub workers: usize,
    /// pgwarden: seconds between health checks of multi-host databases' hosts. Default 1.
    /// Reload.
    pub health_check_period: f64,
}

/// PgBouncer 1.25's default `auth_query`.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_catalog.pg_authid WHERE rolname = $1 AND rolcanlogin";

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen_addr: "127.0.0.1".into(),
            listen_port: 6432,
            tcp_defer_accept: true,
            unix_socket_dir: String::new(),
            auth_type: AuthType::Md5,
            auth_file: None,
            auth_hba_file: None,
            auth_user: None,
            auth_query: DEFAULT_AUTH_QUERY.into(),
            auth_dbname: None,
            pool_mode: PoolMode::Session,
            max_client_conn: 100,
            default_pool_size: 20,
            min_pool_size: 0,
            reserve_pool_size: 0,
            reserve_pool_timeout: 5.0,
            max_db_connections: 0,
            max_user_connections: 0,
            server_reset_query: "DISCARD ALL".into(),
            server_reset_query_always: false,
            server_check_query: "select 1".into(),
            server_check_delay: 30.0,
            server_idle_timeout: 600.0,
            server_lifetime: 3600.0,
            server_connect_timeout: 15.0,
            server_login_retry: 15.0,
            query_timeout: 0.0,
            query_wait_timeout: 120.0,
            client_idle_timeout: 0.0,
            idle_transaction_timeout: 0.0,
            client_login_timeout: 60.0,
            admin_users: Vec::new(),
            stats_users: Vec::new(),
            ignore_startup_parameters: Vec::new(),
            max_prepared_statements: 200,
            client_tls_sslmode: TlsMode::Disable,
            client_tls_key_file: None,
            client_tls_cert_file: None,
            client_tls_ca_file: None,
            server_tls_sslmode: TlsMode::Disable,
            server_tls_ca_file: None,
            server_tls_key_file: None,
            server_tls_cert_file: None,
            stats_period: 60.0,
            metrics_addr: String::new(),
            workers: 0,
            health_check_period: 1.0,
        }
    }
}

/// One `[databases]` entry: where a client's database name leads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// Server hosts, tried in order (a name starting with `/` is a Unix socket directory;
    /// `host:port` or `[v6]:port` gives one host its own port). Default `127.0.0.1`. Reload.
    pub host: Vec<String>,
    /// Server port. Default 5432. Reload.
    pub port: Option<u16>,
    /// The server database. Default: the client's database name. Reload.
    pub dbname: Option<String>,
    /// Log in to the server as this user, whoever the client is (a forced user).
    /// Default: the client's user. Reload.
    pub user: Option<String>,
    /// Password for the forced user. Default: from the auth file. Reload.
    pub password: Option<String>,
    /// auth_user for this database. Default: the global one. Reload.
    pub auth_user: Option<String>,
    /// Pool size for this database. Default: `default_pool_size`. Reload.
    pub pool_size: Option<u32>,
    /// min_pool_size for this database. Default: the global one. Reload.
    pub min_pool_size: Option<u32>,
    /// reserve_pool_size for this database. Default: the global one. Reload.
    pub reserve_pool_size: Option<u32>,
    /// Pool mode for this database. Default: the global one. Reload.
    pub pool_mode: Option<PoolMode>,
    /// max_db_connections for this database. Default: the global one. Reload.
    pub max_db_connections: Option<u32>,
    /// Run once on every new server connection. Default none. Reload.
    pub connect_query: Option<String>,
    /// `client_encoding` set on new server connections. Default: the server's. Reload.
    pub client_encoding: Option<String>,
    /// `DateStyle` set on new server connections. Default: the server's. Reload.
    pub datestyle: Option<String>,
    /// `TimeZone` set on new server connections. Default: the server's. Reload.
    pub timezone: Option<String>,
    /// pgwarden: which host of `host` server connections go to. Default `any`. Reload.
    pub target_session_attrs: TargetSessionAttrs,
    /// pgwarden: `pgwarden ha` REST API URLs (`http://10.0.0.1:8008`); when set, the primary
    /// is the host whose API answers 200 on `/primary`, matched by address. Default none.
    /// Reload.
    pub ha_api: Vec<String>,
}

/// One `[users]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct UserSettings {
    /// Pool mode for this user's pools. Default: the database's, else the global one. Reload.
    pub pool_mode: Option<PoolMode>,
    /// max_user_connections for this user. Default: the global one. Reload.
    pub max_user_connections: Option<u32>,
    /// query_timeout for this user, seconds. Default: the global one. Reload.
    pub query_timeout: Option<f64>,
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// TOML syntax, a wrong type or an unknown key.
    #[error("{}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    /// A value out of range or settings that contradict each other.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads a `pool.toml`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            reason: e.message().to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what serde cannot: ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.pool;
        let times = [
            ("reserve_pool_timeout", s.reserve_pool_timeout),
            ("server_check_delay", s.server_check_delay),
            ("server_idle_timeout", s.server_idle_timeout),
            ("server_lifetime", s.server_lifetime),
            ("server_connect_timeout", s.server_connect_timeout),
            ("server_login_retry", s.server_login_retry),
            ("query_timeout", s.query_timeout),
            ("query_wait_timeout", s.query_wait_timeout),
            ("client_idle_timeout", s.client_idle_timeout),
            ("idle_transaction_timeout", s.idle_transaction_timeout),
            ("client_login_timeout", s.client_login_timeout),
            ("stats_period", s.stats_period),
            ("health_check_period", s.health_check_period),
        ];
        for (name, v) in times {
            if !v.is_finite() || !(0.0..=1e9).contains(&v) {
                return Err(ConfigError::Invalid(format!(
                    "{name}: {v} is not a number of seconds between 0 and 1e9"
                )));
            }
        }
        if s.server_connect_timeout == 0.0 {
            return Err(ConfigError::Invalid(
                "server_connect_timeout: must be more than 0 seconds".into(),
            ));
        }
        if s.default_pool_size == 0 {
            return Err(ConfigError::Invalid(
                "default_pool_size: must be at least 1".into(),
            ));
        }
        if s.max_client_conn == 0 {
            return Err(ConfigError::Invalid(
                "max_client_conn: must be at least 1".into(),
            ));
        }
        if s.auth_type == AuthType::Hba && s.auth_hba_file.is_none() {
            return Err(ConfigError::Invalid(
                "auth_type = hba needs auth_hba_file".into(),
            ));
        }
        let tls_files = s.client_tls_key_file.is_some() && s.client_tls_cert_file.is_some();
        if s.client_tls_sslmode != TlsMode::Disable && !tls_files {
            return Err(ConfigError::Invalid(format!(
                "client_tls_sslmode = {} needs client_tls_key_file and client_tls_cert_file",
                s.client_tls_sslmode.as_str()
            )));
        }
        if matches!(
            s.server_tls_sslmode,
            TlsMode::VerifyCa | TlsMode::VerifyFull
        ) && s.server_tls_ca_file.is_none()
        {
            return Err(ConfigError::Invalid(format!(
                "server_tls_sslmode = {} needs server_tls_ca_file",
                s.server_tls_sslmode.as_str()
            )));
        }
        for (name, db) in &self.databases {
            if ADMIN_DATABASES.contains(&name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "[databases] {name}: the name is reserved for the admin console"
                )));
            }
            if db.pool_size == Some(0) {
                return Err(ConfigError::Invalid(format!(
                    "[databases] {name}: pool_size must be at least 1"
                )));
            }
        }
        Ok(())
    }

    /// The entry for the database name a client asked for (`*` as the fallback).
    pub fn database(&self, name: &str) -> Option<&Database> {
        self.databases.get(name).or_else(|| self.databases.get("*"))
    }
}

impl Database {
    /// The host list, `127.0.0.1` when empty.
    pub fn hosts(&self) -> Vec<String> {
        if self.host.is_empty() {
            vec!["127.0.0.1".into()]
        } else {
            self.host.clone()
        }
    }

    /// The port, 5432 when unset.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(5432)
    }
}

/// Seconds as a [`Duration`]; `None` for 0 (off).
pub fn secs(v: f64) -> Option<Duration> {
    (v > 0.0).then(|| Duration::from_secs_f64(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_pgbouncer_defaults() {
        let cfg: Config = toml::from_str("").unwrap();
        assert_eq!(cfg.pool.listen_port, 6432);
        assert_eq!(cfg.pool.pool_mode, PoolMode::Session);
        assert_eq!(cfg.pool.query_wait_timeout, 120.0);
        cfg.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<Config>("[pool]\nlisten_prot = 1\n").unwrap_err();
        assert!(e.message().contains("listen_prot"), "{e}");
    }

    #[test]
    fn native_example_parses() {
        let cfg: Config = toml::from_str(
            "[pool]\npool_mode = \"transaction\"\nauth_type = \"scram-sha-256\"\n\
             [databases.app]\nhost = [\"a\", \"b\"]\ntarget_session_attrs = \"read-write\"\n",
        )
        .unwrap();
        cfg.validate().unwrap();
        let db = cfg.database("app").unwrap();
        assert_eq!(db.hosts(), vec!["a", "b"]);
        assert_eq!(db.target_session_attrs, TargetSessionAttrs::ReadWrite);
        assert!(cfg.database("other").is_none());
    }

    #[test]
    fn invalid_values_are_named() {
        let cfg: Config = toml::from_str("[pool]\nquery_wait_timeout = -1\n").unwrap();
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("query_wait_timeout"), "{e}");
        let cfg: Config = toml::from_str("[databases.pgbouncer]\n").unwrap();
        assert!(cfg.validate().unwrap_err().to_string().contains("reserved"));
    }
}
