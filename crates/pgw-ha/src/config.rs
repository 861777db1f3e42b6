//! The agent's config file (`node.toml`): plain serde data, unknown keys refused, every key
//! with its default and unit below. Loaded once and passed in; a SIGHUP reloads it (only the
//! keys marked *reload* take effect without a restart of the agent).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings the agent manages itself; `[parameters]` may not set them.
pub const MANAGED_PARAMETERS: &[&str] = &[
    "port",
    "listen_addresses",
    "hot_standby",
    "primary_conninfo",
    "primary_slot_name",
    "synchronous_standby_names",
    "wal_log_hints",
];

/// One node's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The cluster's name: every key lives under `/pgwarden/<scope>/` in etcd. Required;
    /// letters, digits, `-` and `_`. No reload.
    pub scope: String,
    /// This member's name, unique in the scope; also its replication slot's name (lower-cased,
    /// `-` as `_`). Required; letters, digits, `-` and `_`, at most 63. No reload.
    pub name: String,
    /// etcd v3 client URLs (`http://127.0.0.1:2379`). Required, at least one. No reload.
    pub etcd: Vec<String>,
    /// The PostgreSQL data directory the agent owns (made by initdb or a clone when
    /// missing). Required. No reload.
    pub data_dir: PathBuf,
    /// PostgreSQL's programs. Default `/usr/lib/postgresql/15/bin`. No reload.
    #[serde(default = "default_bin_dir")]
    pub bin_dir: PathBuf,
    /// PostgreSQL's `host:port`: it listens there and the other members connect there.
    /// Required. No reload.
    pub listen: String,
    /// The REST API's `host:port` (`/primary`, `/replica`, `/health`, `/cluster`). Required.
    /// No reload.
    pub api: String,
    /// Seconds the leader key lives without a renewal: the upper bound of the time until a
    /// replica takes over from a lost leader. Default 5; at least `2 * loop_wait + 2`.
    /// Reload: applies from the next lease.
    #[serde(default = "default_ttl")]
    pub ttl: u64,
    /// Seconds between two runs of the agent's loop (and lease renewals). Default 1, at
    /// least 1. Reload.
    #[serde(default = "default_loop_wait")]
    pub loop_wait: u64,
    /// Keep every acknowledged commit on the member that may be promoted: the leader names
    /// one streaming replica in `synchronous_standby_names`, and only that one may take
    /// over. Default false. Reload.
    #[serde(default)]
    pub synchronous_mode: bool,
    /// Bytes of WAL a replica may be behind the leader's last published position and still
    /// be promoted. Default 1048576 (1 MiB). Reload.
    #[serde(default = "default_max_lag")]
    pub maximum_lag_on_failover: u64,
    /// postgresql.conf settings written to `pgwarden.conf` in the data directory (values as
    /// strings, numbers or booleans). Not the managed ones ([`MANAGED_PARAMETERS`]).
    /// Default none. Reload: written and the server reloaded (a setting that needs a restart
    /// applies at the next one).
    #[serde(default)]
    pub parameters: BTreeMap<String, toml::Value>,
    /// pg_hba.conf, line by line, written at every start. Default: trust on loopback for
    /// every database and for replication. Reload.
    #[serde(default = "default_pg_hba")]
    pub pg_hba: Vec<String>,
    /// The superuser the agent connects as (bootstrap makes it). Default `postgres`. No reload.
    #[serde(default = "default_superuser")]
    pub superuser: String,
    /// Its password, if pg_hba asks for one. Default none. No reload.
    #[serde(default)]
    pub superuser_password: Option<String>,
    /// The role replicas stream and clone as (bootstrap makes it, with REPLICATION).
    /// Default `replicator`. No reload.
    #[serde(default = "default_replication_user")]
    pub replication_user: String,
    /// Its password, if pg_hba asks for one. Default none. No reload.
    #[serde(default)]
    pub replication_password: Option<String>,
    /// The OS user PostgreSQL runs as when the agent runs as root. Default `postgres`. No reload.
    #[serde(default = "default_os_user")]
    pub os_user: String,
    /// Never promote this member (a tag published in etcd). Default false. Reload.
    #[serde(default)]
    pub nofailover: bool,
    /// Seconds the agent tries to restart a crashed leader's PostgreSQL in place before it
    /// gives up the leader key so that a replica takes over. Default 30. Reload.
    #[serde(default = "default_restart_timeout")]
    pub restart_timeout: u64,
    /// Keep a healthy primary writable through an etcd outage while every member confirms
    /// over the REST API that it cannot reach etcd either and still follows it. Default
    /// false. Reload.
    #[serde(default)]
    pub failsafe_mode: bool,
    /// Make the first node's cluster with data checksums (pg_rewind needs them, or
    /// wal_log_hints, which the agent sets anyway). Default true. Bootstrap only.
    #[serde(default = "default_true")]
    pub data_checksums: bool,
}

fn default_bin_dir() -> PathBuf {
    PathBuf::from(pgw_node::DEFAULT_BIN_DIR)
}
fn default_ttl() -> u64 {
    5
}
fn default_loop_wait() -> u64 {
    1
}
fn default_max_lag() -> u64 {
    1_048_576
}
fn default_pg_hba() -> Vec<String> {
    vec![
        "local all all trust".to_string(),
        "host all all 127.0.0.1/32 trust".to_string(),
        "host replication all 127.0.0.1/32 trust".to_string(),
    ]
}
fn default_superuser() -> String {
    "postgres".to_string()
}
fn default_replication_user() -> String {
    "replicator".to_string()
}
fn default_os_user() -> String {
    pgw_node::DEFAULT_SERVER_USER.to_string()
}
fn default_restart_timeout() -> u64 {
    30
}
fn default_true() -> bool {
    true
}

/// Why a config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("{}: {key}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
}

impl pgw_common::Classify for ConfigError {
    fn class(&self) -> pgw_common::ErrorClass {
        pgw_common::ErrorClass::Input
    }
}

/// `host:port` split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    pub fn parse(text: &str) -> Result<HostPort, String> {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?} is not host:port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{text:?} has no host"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{text:?}: port {port:?} is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(format!("{text:?}: port 0 is not a port"));
        }
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and checks `text` (read from `path`, named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            reason: one_line(&e.to_string()),
        })?;
        config
            .check()
            .map_err(|(key, reason)| ConfigError::Invalid {
                path: path.to_owned(),
                key,
                reason,
            })?;
        Ok(config)
    }

    /// Every rule a parsed config must also meet: the key and the reason of the first broken.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        check_name(&self.scope).map_err(|r| ("scope", r))?;
        check_name(&self.name).map_err(|r| ("name", r))?;
        if self.name.len() > 63 {
            return Err(("name", "must be at most 63 characters".into()));
        }
        if self.etcd.is_empty() {
            return Err(("etcd", "needs at least one endpoint URL".into()));
        }
        for url in &self.etcd {
            let rest = url
                .strip_prefix("http://")
                .ok_or_else(|| ("etcd", format!("{url:?} must start with http://")))?;
            HostPort::parse(rest.trim_end_matches('/')).map_err(|r| ("etcd", r))?;
        }
        if !self.data_dir.is_absolute() {
            return Err(("data_dir", "must be an absolute path".into()));
        }
        HostPort::parse(&self.listen).map_err(|r| ("listen", r))?;
        self.api
            .parse::<SocketAddr>()
            .map_err(|_| ("api", format!("{:?} is not an IP address:port", self.api)))?;
        if self.loop_wait < 1 || self.loop_wait > 300 {
            return Err(("loop_wait", "must be from 1 to 300 seconds".into()));
        }
        if self.ttl < 2 * self.loop_wait + 2 {
            return Err((
                "ttl",
                format!(
                    "{} s is too short for loop_wait = {} s: the leader must be able to miss a renewal \
                     and still demote itself a second before its key expires, so ttl must be at \
                     least 2 * loop_wait + 2 = {} s",
                    self.ttl,
                    self.loop_wait,
                    2 * self.loop_wait + 2
                ),
            ));
        }
        if self.ttl > 3600 {
            return Err(("ttl", "must be at most 3600 seconds".into()));
        }
        if self.restart_timeout < 1 {
            return Err(("restart_timeout", "must be at least 1 second".into()));
        }
        for name in self.parameters.keys() {
            if MANAGED_PARAMETERS.contains(&name.as_str()) {
                return Err((
                    "parameters",
                    format!("{name} is managed by the agent: remove it from [parameters]"),
                ));
            }
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                return Err(("parameters", format!("{name:?} is not a setting name")));
            }
        }
        for (name, value) in &self.parameters {
            parameter_text(value).map_err(|r| ("parameters", format!("{name}: {r}")))?;
        }
        for line in &self.pg_hba {
            if line.contains('\n') {
                return Err(("pg_hba", "one line per entry".into()));
            }
        }
        for (key, user) in [
            ("superuser", &self.superuser),
            ("replication_user", &self.replication_user),
        ] {
            if user.is_empty() {
                return Err((key, "must not be empty".into()));
            }
        }
        Ok(())
    }

    /// How long the leader may go without a successful renewal before it demotes itself:
    /// `ttl - loop_wait - 1` seconds, so the demotion ends before the key can expire.
    pub fn demote_after(&self) -> Duration {
        Duration::from_secs(self.ttl - self.loop_wait - 1)
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl)
    }

    pub fn loop_wait(&self) -> Duration {
        Duration::from_secs(self.loop_wait)
    }

    /// PostgreSQL's address (checked at load; a config made by hand gets the reason).
    pub fn listen(&self) -> Result<HostPort, String> {
        HostPort::parse(&self.listen).map_err(|r| format!("listen: {r}"))
    }

    /// The REST API's address.
    pub fn api_addr(&self) -> Result<SocketAddr, String> {
        self.api
            .parse()
            .map_err(|_| format!("api: {:?} is not an IP address:port", self.api))
    }

    /// The replication slot of member `name` on the leader.
    pub fn slot_of(name: &str) -> String {
        name.to_ascii_lowercase().replace('-', "_")
    }

    /// `[parameters]` as postgresql.conf text values.
    pub fn parameter_lines(&self) -> Result<Vec<(String, String)>, String> {
        self.parameters
            .iter()
            .map(|(k, v)| {
                parameter_text(v)
                    .map(|t| (k.clone(), t))
                    .map_err(|r| format!("parameters: {k}: {r}"))
            })
            .collect()
    }
}

/// A `[parameters]` value as postgresql.conf text.
fn parameter_text(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(if *b { "on" } else { "off" }.to_string()),
        _ => Err("must be a string, a number or a boolean".to_string()),
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "{name:?} may contain only letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

/// toml's messages span lines (a caret under the spot); one line for users.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| "|^ ".contains(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
scope = "main"
name = "node1"
etcd = ["http://127.0.0.1:2379"]
data_dir = "/var/lib/pgwarden/node1"
listen = "127.0.0.1:5433"
api = "127.0.0.1:8008"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("node.toml"))
    }

    #[test]
    fn minimal_config_takes_the_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!((c.ttl, c.loop_wait), (5, 1));
        assert_eq!(c.demote_after(), Duration::from_secs(3));
        assert_eq!(c.maximum_lag_on_failover, 1_048_576);
        assert_eq!(c.bin_dir, PathBuf::from("/usr/lib/postgresql/15/bin"));
        assert_eq!(c.listen().unwrap().port, 5433);
        assert!(!c.synchronous_mode && !c.nofailover && c.data_checksums);
    }

    #[test]
    fn bad_configs_name_the_key_and_the_reason() {
        let cases: &[(&str, &str)] = &[
            ("bogus = 1", "unknown field `bogus`"),
            ("ttl = 3", "ttl: 3 s is too short for loop_wait = 1 s"),
            (
                "ttl = 9\nloop_wait = 4",
                "at least 2 * loop_wait + 2 = 10 s",
            ),
            ("loop_wait = 0", "loop_wait: must be from 1"),
            ("[parameters]\nport = 5", "port is managed by the agent"),
            (
                "[parameters]\nshared_buffers = [1]",
                "shared_buffers: must be a string",
            ),
        ];
        for (extra, want) in cases {
            let e = parse(&format!("{MINIMAL}{extra}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{extra}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let bad_name = MINIMAL.replace("node1", "node 1");
        assert!(parse(&bad_name).unwrap_err().to_string().contains("name:"));
        let bad_etcd = MINIMAL.replace("http://127.0.0.1:2379", "127.0.0.1:2379");
        assert!(parse(&bad_etcd)
            .unwrap_err()
            .to_string()
            .contains("http://"));
        let bad_api = MINIMAL.replace("127.0.0.1:8008", "localhost");
        assert!(parse(&bad_api).unwrap_err().to_string().contains("api:"));
        let relative = MINIMAL.replace("/var/lib/pgwarden/node1", "data");
        assert!(parse(&relative)
            .unwrap_err()
            .to_string()
            .contains("absolute"));
    }

    #[test]
    fn parameters_become_conf_text() {
        let c = parse(&format!(
            "{MINIMAL}[parameters]\nshared_buffers = \"128MB\"\nmax_connections = 50\nfsync = false\n"
        ))
        .unwrap();
        assert_eq!(
            c.parameter_lines().unwrap(),
            vec![
                ("fsync".to_string(), "off".to_string()),
                ("max_connections".to_string(), "50".to_string()),
                ("shared_buffers".to_string(), "128MB".to_string()),
            ]
        );
    }

    #[test]
    fn slot_names_are_what_postgres_accepts() {
        assert_eq!(Config::slot_of("Node-2"), "node_2");
    }
}
