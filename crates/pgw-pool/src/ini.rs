//! Reads a PgBouncer `pgbouncer.ini` (with its `%include`s) into the same [`Config`] a
//! `pool.toml` gives, following PgBouncer's own parser (libusual's `cfparser.c` and
//! `loader.c`) rather than a generic INI reader:
//!
//! - A line is a comment when its first non-blank character is `;` or `#`; there are no
//!   comments later in a line (`key = a ; b` sets `a ; b`).
//! - Section and setting names are case-sensitive, as in PgBouncer (`[PgBouncer]` and
//!   `Listen_Port` are refused, with a hint). An unknown section is an error, and so is a
//!   setting before the first section. A file without a `[pgbouncer]` section is refused.
//! - A name is `[A-Za-z0-9_.*-]+`, or quoted: `'…'` (PgBouncer 1.19+) or `"…"` with `""`
//!   for a `"` (what PgBouncer's documentation describes for database names).
//! - `%include <file>` at the start of a line reads that file at that point. A relative
//!   name is relative to the process's current directory, not to the including file
//!   (PgBouncer's documented rule). Includes nest at most 10 deep (PgBouncer's limit) and
//!   a file that includes itself, directly or not, is refused.
//! - As in PgBouncer, every `[pgbouncer]` header puts all `[pgbouncer]` settings back to
//!   their defaults, so a second such header (typically in an included file) undoes what
//!   came before it; that case adds a note.
//! - Integers are C `strtol` base 0 (`0x10` is 16, `010` is 8), booleans are integers
//!   (0 false, anything else true; `on`/`true` are refused, as PgBouncer does), times are
//!   seconds with fractions and no unit (`1.5`, not `1500ms`), lists (`admin_users`, …)
//!   are split on commas and blanks, an empty path means none.
//! - Settings PgBouncer knows and pgwarden does not use are no error: each adds a line
//!   to [`Loaded::unsupported`]. A setting PgBouncer does not know is an error.
//! - Defaults are `Settings`' except where an ini has PgBouncer's: `unix_socket_dir` is
//!   `/tmp` and `listen_addr` is empty (Unix socket only) when the file does not set them.
//!
//! Errors are one line. A parse error is [`ConfigError::Parse`] whose `path` is
//! `file:line`, so that it prints as `file:line: reason`. No error repeats a value from a
//! `[databases]` entry that sets a password, nor any unparsed line text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{
    AuthType, Config, ConfigError, Database, PoolMode, Settings, TargetSessionAttrs, TlsMode,
    UserSettings, ADMIN_DATABASES,
};

/// What [`load`] made of a `pgbouncer.ini`.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The settings, validated.
    pub config: Config,
    /// One line per setting (or `[databases]`/`[users]` parameter, or `[peers]` entry)
    /// that PgBouncer knows and pgwarden ignores, as `file:line: what; ignored`, and other
    /// notes about how the file was read; in file order. For the log.
    pub unsupported: Vec<String>,
    /// Every file read: the main file first, then the includes in the order they were
    /// met, each once, as it was named (relative names are relative to the current
    /// directory). For the reload watcher.
    pub files: Vec<PathBuf>,
}

/// Includes nest at most this deep (PgBouncer's `MAX_INCLUDE`).
const MAX_INCLUDE_DEPTH: usize = 10;

/// The `[pgbouncer]` settings pgwarden reads: `Settings`' fields.
const SETTINGS: &[&str] = &[
    "admin_users",
    "auth_dbname",
    "auth_file",
    "auth_hba_file",
    "auth_query",
    "auth_type",
    "auth_user",
    "client_idle_timeout",
    "client_login_timeout",
    "client_tls_ca_file",
    "client_tls_cert_file",
    "client_tls_key_file",
    "client_tls_sslmode",
    "default_pool_size",
    "health_check_period",
    "idle_transaction_timeout",
    "ignore_startup_parameters",
    "listen_addr",
    "listen_port",
    "max_client_conn",
    "max_db_connections",
    "max_prepared_statements",
    "max_user_connections",
    "metrics_addr",
    "min_pool_size",
    "pool_mode",
    "query_timeout",
    "query_wait_timeout",
    "reserve_pool_size",
    "reserve_pool_timeout",
    "server_check_delay",
    "server_check_query",
    "server_connect_timeout",
    "server_idle_timeout",
    "server_lifetime",
    "server_login_retry",
    "server_reset_query",
    "server_reset_query_always",
    "server_tls_ca_file",
    "server_tls_cert_file",
    "server_tls_key_file",
    "server_tls_sslmode",
    "stats_period",
    "stats_users",
    "tcp_defer_accept",
    "unix_socket_dir",
    "workers",
];

/// `[pgbouncer]` settings PgBouncer (up to 1.25) knows that `Settings` does not have.
const PGBOUNCER_ONLY: &[&str] = &[
    "application_name_add_host",
    "auth_ident_file",
    "auth_ldap_options",
    "autodb_idle_timeout",
    "cancel_wait_timeout",
    "client_tls13_ciphers",
    "client_tls_ciphers",
    "client_tls_dheparams",
    "client_tls_ecdhcurve",
    "client_tls_protocols",
    "conffile",
    "disable_pqexec",
    "dns_max_ttl",
    "dns_nxdomain_ttl",
    "dns_zone_check_period",
    "job_name",
    "listen_backlog",
    "log_connections",
    "log_disconnections",
    "log_pooler_errors",
    "log_stats",
    "logfile",
    "login_notify_message",
    "max_db_client_connections",
    "max_packet_size",
    "max_user_client_connections",
    "peer_id",
    "pidfile",
    "pkt_buf",
    "pool_idle_timeout",
    "query_wait_notify",
    "resolv_conf",
    "sbuf_loopcnt",
    "scram_iterations",
    "server_fast_close",
    "server_round_robin",
    "server_tls13_ciphers",
    "server_tls_ciphers",
    "server_tls_protocols",
    "service_name",
    "so_reuseport",
    "suspend_timeout",
    "syslog",
    "syslog_facility",
    "syslog_ident",
    "tcp_keepalive",
    "tcp_keepcnt",
    "tcp_keepidle",
    "tcp_keepintvl",
    "tcp_socket_buffer",
    "tcp_user_timeout",
    "track_extra_parameters",
    "transaction_timeout",
    "unix_socket_group",
    "unix_socket_mode",
    "user",
    "verbose",
];

/// `[databases]` parameters pgwarden reads.
const DATABASE_KEYS: &[&str] = &[
    "dbname",
    "host",
    "port",
    "user",
    "password",
    "auth_user",
    "pool_size",
    "min_pool_size",
    "reserve_pool",
    "reserve_pool_size",
    "connect_query",
    "pool_mode",
    "max_db_connections",
    "client_encoding",
    "datestyle",
    "timezone",
    "target_session_attrs",
    "ha_api",
];

/// `[databases]` parameters PgBouncer knows that pgwarden ignores.
const DATABASE_PGBOUNCER_ONLY: &[&str] = &[
    "auth_dbname",
    "auth_query",
    "application_name",
    "load_balance_hosts",
    "max_db_client_connections",
    "query_wait_timeout",
    "server_lifetime",
];

/// `[users]` parameters pgwarden reads.
const USER_KEYS: &[&str] = &["pool_mode", "max_user_connections", "query_timeout"];

/// `[users]` parameters PgBouncer knows that pgwarden ignores.
const USER_PGBOUNCER_ONLY: &[&str] = &[
    "pool_size",
    "reserve_pool_size",
    "transaction_timeout",
    "idle_transaction_timeout",
    "query_wait_timeout",
    "client_idle_timeout",
    "max_user_client_connections",
];

const SECTIONS: &[&str] = &["pgbouncer", "databases", "users", "peers"];

/// Reads `path` and its includes into a validated [`Config`].
///
/// A file that cannot be read is [`ConfigError::Read`] (for an include, the error text
/// names the `%include` line); a syntax error, an unknown setting or a value that does
/// not parse is [`ConfigError::Parse`] naming `file:line`; what [`Config::validate`]
/// refuses is [`ConfigError::Invalid`], prefixed with the line that set the value when
/// it is known.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let mut loader = Loader {
        config: Config {
            pool: ini_defaults(),
            databases: BTreeMap::new(),
            users: BTreeMap::new(),
        },
        notes: Vec::new(),
        files: Vec::new(),
        stack: Vec::new(),
        section: None,
        got_main: false,
        pool_locs: BTreeMap::new(),
        pool_first: None,
        db_locs: BTreeMap::new(),
    };
    loader.read_file(path, None, 0)?;
    if !loader.got_main {
        return Err(ConfigError::Parse {
            path: path.to_owned(),
            reason: "no [pgbouncer] section (PgBouncer requires one)".into(),
        });
    }
    if let Err(e) = loader.config.validate() {
        return Err(loader.locate(e, path));
    }
    Ok(Loaded {
        config: loader.config,
        unsupported: loader.notes,
        files: loader.files,
    })
}

/// `Settings::default()` with PgBouncer's defaults where an ini differs from `pool.toml`.
fn ini_defaults() -> Settings {
    Settings {
        unix_socket_dir: "/tmp".into(),
        listen_addr: String::new(),
        ..Settings::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Pgbouncer,
    Databases,
    Users,
    Peers,
}

struct Loader {
    config: Config,
    notes: Vec<String>,
    files: Vec<PathBuf>,
    /// Canonical paths of the files being read, outermost first (include loops).
    stack: Vec<PathBuf>,
    section: Option<Section>,
    got_main: bool,
    /// `[pgbouncer]` setting → where it was last set (since the last header).
    pool_locs: BTreeMap<String, String>,
    /// Where the first `[pgbouncer]` setting since the last header was made.
    pool_first: Option<String>,
    /// `[databases] name` → where it was defined.
    db_locs: BTreeMap<String, String>,
}

fn parse_err(at: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Parse {
        path: PathBuf::from(at),
        reason: reason.into(),
    }
}

impl Loader {
    fn read_file(
        &mut self,
        path: &Path,
        included_at: Option<&str>,
        depth: usize,
    ) -> Result<(), ConfigError> {
        let read_err = |e: std::io::Error| ConfigError::Read {
            path: path.to_owned(),
            source: match included_at {
                Some(at) => std::io::Error::new(e.kind(), format!("{e} (%include at {at})")),
                None => e,
            },
        };
        let canonical = std::fs::canonicalize(path).map_err(read_err)?;
        if self.stack.contains(&canonical) {
            let at = included_at.unwrap_or_default();
            return Err(parse_err(
                at,
                format!(
                    "%include loop: {} is already being read; refused",
                    path.display()
                ),
            ));
        }
        let bytes = std::fs::read(path).map_err(read_err)?;
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
                return Err(parse_err(
                    &format!("{}:{line}", path.display()),
                    "not valid UTF-8",
                ));
            }
        };
        if !self.files.contains(&path.to_path_buf()) {
            self.files.push(path.to_owned());
        }
        self.stack.push(canonical);
        for (i, line) in text.split('\n').enumerate() {
            let at = format!("{}:{}", path.display(), i + 1);
            self.line(&at, line, depth)?;
        }
        self.stack.pop();
        Ok(())
    }

    fn line(&mut self, at: &str, line: &str, depth: usize) -> Result<(), ConfigError> {
        let s = line.trim();
        if s.is_empty() || s.starts_with('#') || s.starts_with(';') {
            return Ok(());
        }
        if let Some(rest) = s.strip_prefix("%include") {
            if rest.is_empty() || rest.starts_with([' ', '\t']) {
                let name = rest.trim();
                if name.is_empty() {
                    return Err(parse_err(at, "%include needs a file name"));
                }
                if depth + 1 > MAX_INCLUDE_DEPTH {
                    return Err(parse_err(
                        at,
                        format!("%include nesting deeper than {MAX_INCLUDE_DEPTH} files; refused"),
                    ));
                }
                return self.read_file(Path::new(name), Some(at), depth + 1);
            }
        }
        if let Some(rest) = s.strip_prefix('[') {
            let Some(end) = rest.find(']') else {
                return Err(parse_err(at, "syntax error: `[` without `]`"));
            };
            self.section_header(at, &rest[..end])?;
            // As in PgBouncer, whatever follows `]` is read as a line of its own.
            return self.line(at, &rest[end + 1..], depth);
        }
        let (key, rest) = split_key(s).ok_or_else(|| {
            parse_err(
                at,
                "syntax error: expected `name = value`, a [section] or a comment",
            )
        })?;
        let Some(value) = rest.trim_start_matches([' ', '\t']).strip_prefix('=') else {
            return Err(parse_err(at, "syntax error: expected `=` after the name"));
        };
        let value = value.trim();
        match self.section {
            None => Err(parse_err(at, format!("{key} is set before any [section]"))),
            Some(Section::Pgbouncer) => self.setting(at, &key, value),
            Some(Section::Databases) => self.database(at, &key, value),
            Some(Section::Users) => self.user(at, &key, value),
            Some(Section::Peers) => {
                self.notes.push(format!(
                    "{at}: [peers] {key}: peering (forwarding cancel requests to other \
                     poolers) is not supported by pgwarden pool; ignored"
                ));
                Ok(())
            }
        }
    }

    fn section_header(&mut self, at: &str, name: &str) -> Result<(), ConfigError> {
        let section = match name {
            "pgbouncer" => Section::Pgbouncer,
            "databases" => Section::Databases,
            "users" => Section::Users,
            "peers" => Section::Peers,
            _ => {
                let lower = name.trim().to_ascii_lowercase();
                let hint = match SECTIONS.iter().find(|s| **s == lower) {
                    Some(s) => format!(" (section names are case-sensitive: [{s}])"),
                    None => " (PgBouncer's are [pgbouncer], [databases], [users], [peers])".into(),
                };
                return Err(parse_err(at, format!("unknown section [{name}]{hint}")));
            }
        };
        if section == Section::Pgbouncer {
            // PgBouncer fills in every default when the section starts.
            if let Some(first) = self.pool_first.take() {
                self.notes.push(format!(
                    "{at}: this [pgbouncer] header puts the {} [pgbouncer] settings made \
                     before it (from {first}) back to their defaults, as PgBouncer does",
                    self.pool_locs.len()
                ));
            }
            self.config.pool = ini_defaults();
            self.pool_locs.clear();
            self.got_main = true;
        }
        self.section = Some(section);
        Ok(())
    }

    fn setting(&mut self, at: &str, key: &str, v: &str) -> Result<(), ConfigError> {
        let s = &mut self.config.pool;
        let r: Result<(), String> = match key {
            "listen_addr" => {
                s.listen_addr = v.to_owned();
                Ok(())
            }
            "listen_port" => uint(v).map(|x| s.listen_port = x),
            "tcp_defer_accept" => flag(v).map(|x| s.tcp_defer_accept = x),
            "unix_socket_dir" => {
                s.unix_socket_dir = v.to_owned();
                Ok(())
            }
            "auth_type" => auth_type(v).map(|x| s.auth_type = x),
            "auth_file" => {
                s.auth_file = path(v);
                Ok(())
            }
            "auth_hba_file" => {
                s.auth_hba_file = path(v);
                Ok(())
            }
            "auth_user" => {
                s.auth_user = opt_string(v);
                Ok(())
            }
            "auth_query" => {
                s.auth_query = v.to_owned();
                Ok(())
            }
            "auth_dbname" => {
                s.auth_dbname = opt_string(v);
                Ok(())
            }
            "pool_mode" => pool_mode(v).map(|x| s.pool_mode = x),
            "max_client_conn" => uint(v).map(|x| s.max_client_conn = x),
            "default_pool_size" => uint(v).map(|x| s.default_pool_size = x),
            "min_pool_size" => uint(v).map(|x| s.min_pool_size = x),
            "reserve_pool_size" => uint(v).map(|x| s.reserve_pool_size = x),
            "reserve_pool_timeout" => seconds(v).map(|x| s.reserve_pool_timeout = x),
            "max_db_connections" => uint(v).map(|x| s.max_db_connections = x),
            "max_user_connections" => uint(v).map(|x| s.max_user_connections = x),
            "server_reset_query" => {
                s.server_reset_query = v.to_owned();
                Ok(())
            }
            "server_reset_query_always" => flag(v).map(|x| s.server_reset_query_always = x),
            "server_check_query" => {
                s.server_check_query = v.to_owned();
                Ok(())
            }
            "server_check_delay" => seconds(v).map(|x| s.server_check_delay = x),
            "server_idle_timeout" => seconds(v).map(|x| s.server_idle_timeout = x),
            "server_lifetime" => seconds(v).map(|x| s.server_lifetime = x),
            "server_connect_timeout" => seconds(v).map(|x| s.server_connect_timeout = x),
            "server_login_retry" => seconds(v).map(|x| s.server_login_retry = x),
            "query_timeout" => seconds(v).map(|x| s.query_timeout = x),
            "query_wait_timeout" => seconds(v).map(|x| s.query_wait_timeout = x),
            "client_idle_timeout" => seconds(v).map(|x| s.client_idle_timeout = x),
            "idle_transaction_timeout" => seconds(v).map(|x| s.idle_transaction_timeout = x),
            "client_login_timeout" => seconds(v).map(|x| s.client_login_timeout = x),
            "admin_users" => {
                s.admin_users = list(v);
                Ok(())
            }
            "stats_users" => {
                s.stats_users = list(v);
                Ok(())
            }
            "ignore_startup_parameters" => {
                s.ignore_startup_parameters = list(v);
                Ok(())
            }
            "max_prepared_statements" => uint(v).map(|x| s.max_prepared_statements = x),
            "client_tls_sslmode" => tls_mode(v).map(|x| s.client_tls_sslmode = x),
            "client_tls_key_file" => {
                s.client_tls_key_file = path(v);
                Ok(())
            }
            "client_tls_cert_file" => {
                s.client_tls_cert_file = path(v);
                Ok(())
            }
            "client_tls_ca_file" => {
                s.client_tls_ca_file = path(v);
                Ok(())
            }
            "server_tls_sslmode" => tls_mode(v).map(|x| s.server_tls_sslmode = x),
            "server_tls_ca_file" => {
                s.server_tls_ca_file = path(v);
                Ok(())
            }
            "server_tls_key_file" => {
                s.server_tls_key_file = path(v);
                Ok(())
            }
            "server_tls_cert_file" => {
                s.server_tls_cert_file = path(v);
                Ok(())
            }
            // An integer in PgBouncer.
            "stats_period" => uint::<u32>(v).map(|x| s.stats_period = f64::from(x)),
            // pgwarden's own.
            "metrics_addr" => {
                s.metrics_addr = v.to_owned();
                Ok(())
            }
            "workers" => uint(v).map(|x| s.workers = x),
            "health_check_period" => seconds(v).map(|x| s.health_check_period = x),
            _ if PGBOUNCER_ONLY.contains(&key) => {
                self.notes.push(format!(
                    "{at}: {key} is not supported by pgwarden pool; ignored"
                ));
                return Ok(());
            }
            _ => {
                let lower = key.to_ascii_lowercase();
                let known =
                    SETTINGS.contains(&lower.as_str()) || PGBOUNCER_ONLY.contains(&lower.as_str());
                let hint = if lower != key && known {
                    format!(" (setting names are case-sensitive: {lower})")
                } else {
                    String::new()
                };
                return Err(parse_err(at, format!("unknown setting {key}{hint}")));
            }
        };
        r.map_err(|reason| parse_err(at, format!("{key}: {reason}")))?;
        self.pool_locs.insert(key.to_owned(), at.to_owned());
        if self.pool_first.is_none() {
            self.pool_first = Some(at.to_owned());
        }
        Ok(())
    }

    fn database(&mut self, at: &str, name: &str, value: &str) -> Result<(), ConfigError> {
        if ADMIN_DATABASES.contains(&name) {
            return Err(parse_err(
                at,
                format!("[databases] {name}: the name is reserved for the admin console"),
            ));
        }
        // Nothing from an entry that sets a password is repeated in errors: a broken
        // quote can make any part of the password look like a name or a value.
        let redact = value.contains("password");
        let what = format!("[databases] {name}");
        let pairs =
            pairs(value).map_err(|e| parse_err(at, e.describe(&what, redact, DATABASE_KEYS)))?;
        let mut db = Database::default();
        for (n, (key, val)) in pairs.iter().enumerate() {
            let val = val.as_str();
            let r: Result<(), String> = match key.as_str() {
                "dbname" => {
                    db.dbname = Some(val.to_owned());
                    Ok(())
                }
                "host" => comma_list(val).map(|x| db.host = x),
                "port" => port(val).map(|x| db.port = Some(x)),
                "user" => {
                    db.user = Some(val.to_owned());
                    Ok(())
                }
                "password" => {
                    db.password = Some(val.to_owned());
                    Ok(())
                }
                "auth_user" => {
                    db.auth_user = Some(val.to_owned());
                    Ok(())
                }
                "pool_size" => unset_if_negative(val).map(|x| db.pool_size = x),
                "min_pool_size" => unset_if_negative(val).map(|x| db.min_pool_size = x),
                "reserve_pool" | "reserve_pool_size" => {
                    unset_if_negative(val).map(|x| db.reserve_pool_size = x)
                }
                "connect_query" => {
                    db.connect_query = Some(val.to_owned());
                    Ok(())
                }
                "pool_mode" => pool_mode(val).map(|x| db.pool_mode = Some(x)),
                // PgBouncer: 0 or less means the global max_db_connections.
                "max_db_connections" => {
                    unset_if_not_positive(val).map(|x| db.max_db_connections = x)
                }
                "client_encoding" => {
                    db.client_encoding = Some(val.to_owned());
                    Ok(())
                }
                "datestyle" => {
                    db.datestyle = Some(val.to_owned());
                    Ok(())
                }
                "timezone" => {
                    db.timezone = Some(val.to_owned());
                    Ok(())
                }
                "target_session_attrs" => TargetSessionAttrs::parse(val)
                    .map(|x| db.target_session_attrs = x)
                    .ok_or_else(|| {
                        "expected any, read-write, read-only or prefer-standby".to_owned()
                    }),
                "ha_api" => comma_list(val).map(|x| db.ha_api = x),
                k if DATABASE_PGBOUNCER_ONLY.contains(&k) => {
                    self.notes.push(format!(
                        "{at}: {what}: {k} is not supported by pgwarden pool; ignored"
                    ));
                    Ok(())
                }
                k => {
                    return Err(parse_err(
                        at,
                        if redact {
                            format!(
                                "{what}: unknown parameter in key=value pair {} (its name is \
                                 not shown as the entry sets a password)",
                                n + 1
                            )
                        } else {
                            format!("{what}: unknown parameter {k}")
                        },
                    ))
                }
            };
            r.map_err(|reason| {
                parse_err(
                    at,
                    if redact {
                        // The reasons above never contain the value.
                        format!("{what}: {key}: {reason}")
                    } else {
                        format!("{what}: {key}: {reason} (got {val:?})")
                    },
                )
            })?;
        }
        self.config.databases.insert(name.to_owned(), db);
        self.db_locs.insert(what, at.to_owned());
        Ok(())
    }

    fn user(&mut self, at: &str, name: &str, value: &str) -> Result<(), ConfigError> {
        let what = format!("[users] {name}");
        let pairs = pairs(value).map_err(|e| parse_err(at, e.describe(&what, false, USER_KEYS)))?;
        let mut user = UserSettings::default();
        for (key, val) in &pairs {
            let val = val.as_str();
            let r: Result<(), String> = match key.as_str() {
                "pool_mode" => pool_mode(val).map(|x| user.pool_mode = Some(x)),
                // PgBouncer: 0 or less means the global one.
                "max_user_connections" => {
                    unset_if_not_positive(val).map(|x| user.max_user_connections = x)
                }
                "query_timeout" => user_seconds(val).map(|x| user.query_timeout = x),
                k if USER_PGBOUNCER_ONLY.contains(&k) => {
                    self.notes.push(format!(
                        "{at}: {what}: {k} is not supported by pgwarden pool; ignored"
                    ));
                    Ok(())
                }
                k => return Err(parse_err(at, format!("{what}: unknown parameter {k}"))),
            };
            r.map_err(|reason| parse_err(at, format!("{what}: {key}: {reason} (got {val:?})")))?;
        }
        self.config.users.insert(name.to_owned(), user);
        Ok(())
    }

    /// Prefixes a validation error with the line that set the value it is about.
    fn locate(&self, e: ConfigError, main: &Path) -> ConfigError {
        let ConfigError::Invalid(msg) = e else {
            return e;
        };
        let about = |key: &str| {
            msg.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with([':', ' ']))
        };
        let at = self
            .pool_locs
            .iter()
            .chain(self.db_locs.iter())
            .find(|(key, _)| about(key))
            .map(|(_, at)| at.clone())
            .unwrap_or_else(|| main.display().to_string());
        ConfigError::Invalid(format!("{at}: {msg}"))
    }
}

/// The name at the start of a line, unquoted, and what follows it.
fn split_key(s: &str) -> Option<(String, &str)> {
    if let Some(rest) = s.strip_prefix('\'') {
        // PgBouncer 1.19+: '…', no escapes.
        let end = rest.find('\'')?;
        let key = &rest[..end];
        return (!key.is_empty()).then(|| (key.to_owned(), &rest[end + 1..]));
    }
    if let Some(rest) = s.strip_prefix('"') {
        // SQL identifier quoting, as PgBouncer's documentation describes.
        let mut key = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if rest[i + 1..].starts_with('"') {
                    key.push('"');
                    chars.next();
                } else {
                    return (!key.is_empty()).then(|| (key, &rest[i + 1..]));
                }
            } else {
                key.push(c);
            }
        }
        return None;
    }
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || "_.-*".contains(c)))
        .unwrap_or(s.len());
    (end > 0).then(|| (s[..end].to_owned(), &s[end..]))
}

/// Why a connection string (or `[users]` value) does not split into pairs.
struct PairError {
    /// 1-based.
    pair: usize,
    key: Option<String>,
    what: &'static str,
}

impl PairError {
    fn describe(&self, entry: &str, redact: bool, known: &[&str]) -> String {
        match &self.key {
            Some(k) if !redact || known.contains(&k.as_str()) => {
                format!(
                    "{entry}: syntax error in key=value pair {} ({k}): {}",
                    self.pair, self.what
                )
            }
            _ => format!(
                "{entry}: syntax error in key=value pair {}: {}",
                self.pair, self.what
            ),
        }
    }
}

/// Splits `key=value key='quoted value'` as PgBouncer does: blanks around `=` allowed,
/// a quoted value has `''` for `'`, empty values refused. Unlike PgBouncer a tab also
/// separates pairs, and text right after a closing quote is an error (PgBouncer drops
/// its first character).
fn pairs(s: &str) -> Result<Vec<(String, String)>, PairError> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(out);
        }
        let pair = out.len() + 1;
        let err = |key: Option<&str>, what| PairError {
            pair,
            key: key.map(str::to_owned),
            what,
        };
        let end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..end];
        if key.is_empty() {
            return Err(err(None, "a value without a name"));
        }
        rest = rest[end..].trim_start();
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| err(Some(key), "no `=` after the name"))?
            .trim_start();
        let value = if let Some(q) = rest.strip_prefix('\'') {
            let mut value = String::new();
            let mut chars = q.char_indices();
            loop {
                match chars.next() {
                    None => return Err(err(Some(key), "a quoted value without its closing quote")),
                    Some((i, '\'')) => {
                        if q[i + 1..].starts_with('\'') {
                            value.push('\'');
                            chars.next();
                        } else {
                            rest = &q[i + 1..];
                            break;
                        }
                    }
                    Some((_, c)) => value.push(c),
                }
            }
            if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
                return Err(err(Some(key), "text right after the closing quote"));
            }
            value
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let value = rest[..end].to_owned();
            rest = &rest[end..];
            value
        };
        if value.is_empty() {
            return Err(err(Some(key), "an empty value"));
        }
        out.push((key.to_owned(), value));
    }
}

/// C `strtol(s, &end, 0)` with the whole string consumed: optional sign, `0x` hex,
/// leading-`0` octal, else decimal.
fn c_int(s: &str) -> Option<i64> {
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, hex)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let v = i64::from_str_radix(digits, radix).ok()?;
    Some(if neg { -v } else { v })
}

fn uint<T: TryFrom<i64>>(s: &str) -> Result<T, String> {
    let v = c_int(s).ok_or_else(|| "expected an integer".to_owned())?;
    T::try_from(v).map_err(|_| {
        if v < 0 {
            "must not be negative".to_owned()
        } else {
            "is too large".to_owned()
        }
    })
}

fn flag(s: &str) -> Result<bool, String> {
    c_int(s)
        .map(|v| v != 0)
        .ok_or_else(|| "expected 0 or 1 (PgBouncer's booleans are integers)".to_owned())
}

/// Seconds, fractions allowed, no unit (PgBouncer's `cf_set_time_usec`).
fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err("expected a number of seconds (fractions allowed, no unit)".to_owned()),
    }
}

/// A `[users]` time: 0 or a negative number means the global setting (PgBouncer).
fn user_seconds(s: &str) -> Result<Option<f64>, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok((v > 0.0).then_some(v)),
        _ => Err("expected a number of seconds".to_owned()),
    }
}

fn decimal(s: &str) -> Result<i64, String> {
    s.parse::<i64>()
        .map_err(|_| "expected an integer".to_owned())
}

fn to_u32(v: i64) -> Result<u32, String> {
    u32::try_from(v).map_err(|_| format!("expected an integer from 0 to {}", u32::MAX))
}

/// PgBouncer's per-database and per-user integers use -1 for "not set".
fn unset_if_negative(s: &str) -> Result<Option<u32>, String> {
    let v = decimal(s)?;
    if v < 0 {
        Ok(None)
    } else {
        to_u32(v).map(Some)
    }
}

fn unset_if_not_positive(s: &str) -> Result<Option<u32>, String> {
    let v = decimal(s)?;
    if v <= 0 {
        Ok(None)
    } else {
        to_u32(v).map(Some)
    }
}

fn port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err("expected a port number from 1 to 65535".to_owned()),
    }
}

fn comma_list(s: &str) -> Result<Vec<String>, String> {
    let items: Vec<String> = s.split(',').map(|h| h.trim().to_owned()).collect();
    if items.iter().any(String::is_empty) {
        return Err("an empty item in the comma-separated list".to_owned());
    }
    Ok(items)
}

/// Names separated by commas and/or blanks (PgBouncer's `strlist_contains`).
fn list(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

fn path(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

fn opt_string(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn pool_mode(s: &str) -> Result<PoolMode, String> {
    PoolMode::parse(s).ok_or_else(|| "expected session, transaction or statement".to_owned())
}

fn tls_mode(s: &str) -> Result<TlsMode, String> {
    TlsMode::parse(s).ok_or_else(|| {
        "expected disable, allow, prefer, require, verify-ca or verify-full".to_owned()
    })
}

fn auth_type(s: &str) -> Result<AuthType, String> {
    if let Some(t) = AuthType::parse(s) {
        return Ok(t);
    }
    let lower = s.to_ascii_lowercase();
    if ["cert", "ldap", "pam"].contains(&lower.as_str()) {
        Err(format!("{lower} is not supported by pgwarden pool"))
    } else {
        Err(format!(
            "unknown auth type {s:?} (expected scram-sha-256, md5, plain, trust, any or hba)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new() -> Dir {
            Dir(tempfile::tempdir().unwrap())
        }

        /// Writes `name` and returns its (absolute, canonical) path.
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = std::fs::canonicalize(self.0.path()).unwrap().join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    /// `path` as a relative path from the current directory, without changing it.
    fn relative_to_cwd(path: &Path) -> PathBuf {
        let cwd = std::env::current_dir().unwrap();
        let mut rel = PathBuf::new();
        for _ in cwd.components().skip(1) {
            rel.push("..");
        }
        rel.join(path.strip_prefix("/").unwrap())
    }

    fn load_text(text: &str) -> Result<Loaded, ConfigError> {
        let dir = Dir::new();
        load(&dir.write("pgbouncer.ini", text))
    }

    fn err_text(text: &str) -> String {
        let e = load_text(text).unwrap_err().to_string();
        // Errors name the file by its full path; keep the name only.
        e.rsplit_once('/').map(|(_, t)| t.to_owned()).unwrap_or(e)
    }

    const MAIN: &str = "[pgbouncer]\n";

    #[test]
    fn realistic_file_with_includes() {
        let dir = Dir::new();
        let dbs = dir.write(
            "databases.ini",
            "[databases]\n\
             ; foodb over Unix socket\n\
             foodb =\n\
             ; redirect bardb to bazdb on localhost\n\
             bardb = host=localhost dbname=bazdb\n\
             ; access to destination database will go with single user\n\
             forcedb = host=localhost port=300 user=baz password=foo client_encoding=UNICODE datestyle=ISO\n\
             app = host=10.0.0.1,10.0.0.2 port=5433 dbname=app pool_size=50 min_pool_size=5 reserve_pool=3 \
             pool_mode=transaction max_db_connections=80 connect_query='SELECT 1' timezone=UTC \
             target_session_attrs=read-write ha_api=http://10.0.0.1:8008,http://10.0.0.2:8008 auth_user=pgb\n",
        );
        let users = dir.write(
            "users.ini",
            "[users]\n\
             user1 = pool_mode=session\n\
             batch = pool_mode=statement max_user_connections=5 query_timeout=3\n",
        );
        let main = dir.write(
            "pgbouncer.ini",
            &format!(
                ";; a PgBouncer configuration\n\
                 %include {}\n\
                 \n\
                 [pgbouncer]\n\
                 pool_mode = session\n\
                 listen_port = 6432\n\
                 listen_addr = localhost\n\
                 auth_type = md5\n\
                 auth_file = users.txt\n\
                 logfile = pgbouncer.log\n\
                 pidfile = pgbouncer.pid\n\
                 admin_users = someuser\n\
                 stats_users = stat_collector, monitor other\n\
                 ignore_startup_parameters = extra_float_digits,options\n\
                 max_client_conn = 500\n\
                 default_pool_size = 25\n\
                 server_tls_sslmode = require\n\
                 query_wait_timeout = 30.5\n\
                 server_reset_query_always = 1\n\
                 tcp_defer_accept = 0\n\
                 stats_period = 30\n\
                 \t%include {}\n",
                dbs.display(),
                relative_to_cwd(&users).display()
            ),
        );
        let loaded = load(&main).unwrap();
        let c = &loaded.config;
        assert_eq!(c.pool.listen_addr, "localhost");
        assert_eq!(c.pool.listen_port, 6432);
        assert!(!c.pool.tcp_defer_accept);
        assert_eq!(c.pool.unix_socket_dir, "/tmp");
        assert_eq!(c.pool.auth_type, AuthType::Md5);
        assert_eq!(c.pool.auth_file, Some(PathBuf::from("users.txt")));
        assert_eq!(c.pool.admin_users, vec!["someuser"]);
        assert_eq!(
            c.pool.stats_users,
            vec!["stat_collector", "monitor", "other"]
        );
        assert_eq!(
            c.pool.ignore_startup_parameters,
            vec!["extra_float_digits", "options"]
        );
        assert_eq!(c.pool.max_client_conn, 500);
        assert_eq!(c.pool.default_pool_size, 25);
        assert_eq!(c.pool.server_tls_sslmode, TlsMode::Require);
        assert_eq!(c.pool.query_wait_timeout, 30.5);
        assert!(c.pool.server_reset_query_always);
        assert_eq!(c.pool.stats_period, 30.0);

        assert_eq!(c.databases.len(), 4);
        assert_eq!(c.databases["foodb"], Database::default());
        let bar = &c.databases["bardb"];
        assert_eq!(bar.host, vec!["localhost"]);
        assert_eq!(bar.dbname.as_deref(), Some("bazdb"));
        let force = &c.databases["forcedb"];
        assert_eq!(force.port, Some(300));
        assert_eq!(force.user.as_deref(), Some("baz"));
        assert_eq!(force.password.as_deref(), Some("foo"));
        assert_eq!(force.client_encoding.as_deref(), Some("UNICODE"));
        assert_eq!(force.datestyle.as_deref(), Some("ISO"));
        let app = &c.databases["app"];
        assert_eq!(app.host, vec!["10.0.0.1", "10.0.0.2"]);
        assert_eq!(app.port, Some(5433));
        assert_eq!(app.pool_size, Some(50));
        assert_eq!(app.min_pool_size, Some(5));
        assert_eq!(app.reserve_pool_size, Some(3));
        assert_eq!(app.pool_mode, Some(PoolMode::Transaction));
        assert_eq!(app.max_db_connections, Some(80));
        assert_eq!(app.connect_query.as_deref(), Some("SELECT 1"));
        assert_eq!(app.timezone.as_deref(), Some("UTC"));
        assert_eq!(app.auth_user.as_deref(), Some("pgb"));
        assert_eq!(app.target_session_attrs, TargetSessionAttrs::ReadWrite);
        assert_eq!(
            app.ha_api,
            vec!["http://10.0.0.1:8008", "http://10.0.0.2:8008"]
        );

        assert_eq!(c.users["user1"].pool_mode, Some(PoolMode::Session));
        let batch = &c.users["batch"];
        assert_eq!(batch.pool_mode, Some(PoolMode::Statement));
        assert_eq!(batch.max_user_connections, Some(5));
        assert_eq!(batch.query_timeout, Some(3.0));

        assert_eq!(loaded.files.len(), 3);
        assert_eq!(loaded.files[0], main);
        assert_eq!(loaded.files[1], dbs);
        assert_eq!(loaded.files[2], relative_to_cwd(&users));
        assert_eq!(loaded.unsupported.len(), 2, "{:?}", loaded.unsupported);
        assert!(loaded.unsupported[0]
            .ends_with("pgbouncer.ini:10: logfile is not supported by pgwarden pool; ignored"));
        assert!(loaded.unsupported[1].contains("pgbouncer.ini:11: pidfile"));
    }

    #[test]
    fn relative_includes_are_relative_to_the_current_directory() {
        // PgBouncer's rule: not relative to the including file.
        let dir = Dir::new();
        dir.write("other.ini", "[users]\n");
        let e = load(&dir.write("pgbouncer.ini", "[pgbouncer]\n%include other.ini\n")).unwrap_err();
        match &e {
            ConfigError::Read { path, .. } => assert_eq!(path, Path::new("other.ini")),
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("(%include at "), "{e}");
        assert!(e.to_string().ends_with("pgbouncer.ini:2)"), "{e}");
    }

    #[test]
    fn connstring_quoting() {
        let l = load_text(
            "[databases]\n\
             a = dbname='my db' password='it''s a '' secret' connect_query='SET x = ''y'''\n\
             b = host = /var/run/postgresql   port= 5432 dbname =b\n\
             'odd name' = dbname=x\n\
             \"quoted \"\"db\"\"\" = dbname=y\n\
             my.db-2 = dbname=z\n\
             [pgbouncer]\n",
        )
        .unwrap();
        let a = &l.config.databases["a"];
        assert_eq!(a.dbname.as_deref(), Some("my db"));
        assert_eq!(a.password.as_deref(), Some("it's a ' secret"));
        assert_eq!(a.connect_query.as_deref(), Some("SET x = 'y'"));
        let b = &l.config.databases["b"];
        assert_eq!(b.host, vec!["/var/run/postgresql"]);
        assert_eq!(b.port, Some(5432));
        assert_eq!(b.dbname.as_deref(), Some("b"));
        assert!(l.config.databases.contains_key("odd name"));
        assert!(l.config.databases.contains_key("quoted \"db\""));
        assert!(l.config.databases.contains_key("my.db-2"));
    }

    #[test]
    fn star_is_the_fallback() {
        let l = load_text("[databases]\n* = host=10.0.0.9 port=6000\napp = host=a\n[pgbouncer]\n")
            .unwrap();
        let c = &l.config;
        assert_eq!(c.database("other").unwrap().host, vec!["10.0.0.9"]);
        assert_eq!(c.database("other").unwrap().port(), 6000);
        assert_eq!(c.database("app").unwrap().host, vec!["a"]);
        assert!(c.databases.contains_key("*"));
    }

    #[test]
    fn unknown_names_are_errors_with_file_and_line() {
        let cases = [
            (
                "[pgbouncer]\nlisten_port = 1\nlisten_prot = 2\n",
                "pgbouncer.ini:3: unknown setting listen_prot",
            ),
            (
                "[pgbouncer]\nListen_Port = 2\n",
                "pgbouncer.ini:2: unknown setting Listen_Port (setting names are case-sensitive: listen_port)",
            ),
            (
                "[PgBouncer]\n",
                "pgbouncer.ini:1: unknown section [PgBouncer] (section names are case-sensitive: [pgbouncer])",
            ),
            ("[pgbouncer]\n[extra]\n", "pgbouncer.ini:2: unknown section [extra]"),
            (
                "[pgbouncer]\n[databases]\napp = host=a colour=blue\n",
                "pgbouncer.ini:3: [databases] app: unknown parameter colour",
            ),
            (
                "[pgbouncer]\n[users]\nbob = pool_mode=session frobnicate=1\n",
                "pgbouncer.ini:3: [users] bob: unknown parameter frobnicate",
            ),
            ("listen_port = 1\n[pgbouncer]\n", "pgbouncer.ini:1: listen_port is set before any [section]"),
        ];
        for (text, want) in cases {
            let e = err_text(text);
            assert!(e.starts_with(want), "{text:?}\n got: {e}\nwant: {want}");
        }
    }

    #[test]
    fn syntax_errors() {
        let cases = [
            (
                "[pgbouncer]\nlisten_port 6432\n",
                "pgbouncer.ini:2: syntax error",
            ),
            ("[pgbouncer\n", "pgbouncer.ini:1: syntax error"),
            ("[pgbouncer]\n!x = 1\n", "pgbouncer.ini:2: syntax error"),
            (
                "[pgbouncer]\nlisten port = 1\n",
                "pgbouncer.ini:2: syntax error",
            ),
            (
                "[pgbouncer]\n%include\n",
                "pgbouncer.ini:2: %include needs a file name",
            ),
            (
                "[pgbouncer]\n%includex y\n",
                "pgbouncer.ini:2: syntax error",
            ),
            (
                "[databases]\napp = host\n[pgbouncer]\n",
                "pgbouncer.ini:2: [databases] app: syntax error",
            ),
            (
                "[databases]\napp = dbname=\n[pgbouncer]\n",
                "an empty value",
            ),
            (
                "[databases]\napp = dbname='x\n[pgbouncer]\n",
                "without its closing quote",
            ),
            (
                "[databases]\napp = dbname='x'y\n[pgbouncer]\n",
                "right after the closing quote",
            ),
            (
                "[databases]\napp = =x\n[pgbouncer]\n",
                "a value without a name",
            ),
            ("[pgbouncer]\nlisten_port = 1\n", ""),
        ];
        for (text, want) in cases {
            if want.is_empty() {
                load_text(text).unwrap();
                continue;
            }
            let e = err_text(text);
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn unsupported_settings_are_notes() {
        let l = load_text(
            "[pgbouncer]\nlogfile = /var/log/pgbouncer.log\nso_reuseport = 1\ntcp_keepalive = 1\n\
             [databases]\napp = host=a application_name=x load_balance_hosts=disable\n\
             [users]\nbob = pool_size=3\n\
             [peers]\n1 = host=/tmp/pgbouncer1\n",
        )
        .unwrap();
        let n = &l.unsupported;
        assert_eq!(n.len(), 7, "{n:?}");
        assert!(n[1]
            .ends_with("pgbouncer.ini:3: so_reuseport is not supported by pgwarden pool; ignored"));
        assert!(n[3].ends_with(
            "pgbouncer.ini:6: [databases] app: application_name is not supported by pgwarden pool; ignored"
        ));
        assert!(n[5].ends_with(
            "pgbouncer.ini:8: [users] bob: pool_size is not supported by pgwarden pool; ignored"
        ));
        assert!(n[6].contains("pgbouncer.ini:10: [peers] 1: peering"));
        // Every PgBouncer setting is known: none is an error.
        let all: String = PGBOUNCER_ONLY
            .iter()
            .map(|k| format!("{k} = 1\n"))
            .collect();
        let l = load_text(&format!("[pgbouncer]\n{all}")).unwrap();
        assert_eq!(l.unsupported.len(), PGBOUNCER_ONLY.len());
    }

    #[test]
    fn settings_list_matches_the_struct() {
        let f = || Some(PathBuf::from("f"));
        let s = Settings {
            auth_file: f(),
            auth_hba_file: f(),
            auth_user: Some("u".into()),
            auth_dbname: Some("d".into()),
            client_tls_key_file: f(),
            client_tls_cert_file: f(),
            client_tls_ca_file: f(),
            server_tls_ca_file: f(),
            server_tls_key_file: f(),
            server_tls_cert_file: f(),
            ..Settings::default()
        };
        let table = toml::Value::try_from(&s).unwrap();
        let mut fields: Vec<&str> = table
            .as_table()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(fields, SETTINGS);
        for k in SETTINGS {
            assert!(!PGBOUNCER_ONLY.contains(k), "{k}");
        }
    }

    #[test]
    fn include_loops_and_depth_are_refused() {
        let dir = Dir::new();
        let a = dir.0.path().join("a.ini");
        let b = dir.write("b.ini", &format!("[users]\n%include {}\n", a.display()));
        dir.write("a.ini", &format!("[pgbouncer]\n%include {}\n", b.display()));
        let e = load(&a).unwrap_err().to_string();
        assert!(e.contains("b.ini:2: %include loop"), "{e}");
        let own = dir.0.path().join("self.ini");
        dir.write(
            "self.ini",
            &format!("[pgbouncer]\n%include {}\n", own.display()),
        );
        let e = load(&own).unwrap_err().to_string();
        assert!(e.contains("self.ini:2: %include loop"), "{e}");

        // A chain of 10 includes is fine, 11 is not (PgBouncer's limit).
        let chain = |n: usize| {
            let d = Dir::new();
            for i in 0..n {
                let next = d.0.path().join(format!("{}.ini", i + 1));
                d.write(
                    &format!("{i}.ini"),
                    &format!("%include {}\n", next.display()),
                );
            }
            d.write(&format!("{n}.ini"), "[pgbouncer]\n");
            let r = load(&d.0.path().join("0.ini"));
            (d, r)
        };
        let (_d, ok) = chain(10);
        assert_eq!(ok.unwrap().files.len(), 11);
        let (_d, deep) = chain(11);
        let e = deep.unwrap_err().to_string();
        assert!(
            e.contains("/10.ini:1: %include nesting deeper than 10"),
            "{e}"
        );

        // The same file twice, not nested, is no loop.
        let d = Dir::new();
        let part = d.write("part.ini", "[users]\n");
        let main = d.write(
            "main.ini",
            &format!("[pgbouncer]\n%include {0}\n%include {0}\n", part.display()),
        );
        assert_eq!(load(&main).unwrap().files, vec![main, part]);
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cases = [
            (
                "listen_port = 70000",
                "pgbouncer.ini:2: listen_port: is too large",
            ),
            (
                "listen_port = abc",
                "pgbouncer.ini:2: listen_port: expected an integer",
            ),
            (
                "max_client_conn = -5",
                "max_client_conn: must not be negative",
            ),
            (
                "server_reset_query_always = on",
                "server_reset_query_always: expected 0 or 1",
            ),
            (
                "query_timeout = 5s",
                "query_timeout: expected a number of seconds",
            ),
            (
                "query_timeout = -1",
                "query_timeout: expected a number of seconds",
            ),
            (
                "query_timeout = inf",
                "query_timeout: expected a number of seconds",
            ),
            ("stats_period = 1.5", "stats_period: expected an integer"),
            (
                "pool_mode = sessions",
                "pool_mode: expected session, transaction or statement",
            ),
            (
                "auth_type = cert",
                "auth_type: cert is not supported by pgwarden pool",
            ),
            ("auth_type = kerberos", "auth_type: unknown auth type"),
            (
                "client_tls_sslmode = on",
                "client_tls_sslmode: expected disable",
            ),
        ];
        for (line, want) in cases {
            let e = err_text(&format!("{MAIN}{line}\n"));
            assert!(e.contains(want), "{line}: {e}");
        }
        let db_cases = [
            (
                "app = port=0",
                "[databases] app: port: expected a port number from 1 to 65535 (got \"0\")",
            ),
            (
                "app = pool_size=ten",
                "[databases] app: pool_size: expected an integer",
            ),
            (
                "app = pool_mode=fast",
                "[databases] app: pool_mode: expected session",
            ),
            ("app = host=a,,b", "[databases] app: host: an empty item"),
            (
                "app = target_session_attrs=primary-ish",
                "target_session_attrs: expected any",
            ),
            (
                "pgbouncer = host=a",
                "pgbouncer.ini:3: [databases] pgbouncer: the name is reserved",
            ),
            (
                "pgwarden = host=a",
                "[databases] pgwarden: the name is reserved",
            ),
        ];
        for (line, want) in db_cases {
            let e = err_text(&format!("{MAIN}[databases]\n{line}\n"));
            assert!(e.contains(want), "{line}: {e}");
        }
        let e = err_text(&format!("{MAIN}[users]\nbob = max_user_connections=many\n"));
        assert!(
            e.contains("pgbouncer.ini:3: [users] bob: max_user_connections: expected an integer"),
            "{e}"
        );
    }

    #[test]
    fn value_syntax_as_pgbouncer() {
        let l = load_text(
            "[pgbouncer]\n\
             listen_backlog = 0x10\n\
             max_client_conn = 0x20\n\
             default_pool_size = 010\n\
             min_pool_size = +3\n\
             server_reset_query_always = 2\n\
             server_idle_timeout = .5\n\
             server_lifetime = 1e3\n\
             server_reset_query = DISCARD ALL ; not a comment\n\
             admin_users =\n\
             auth_file =\n\
             [databases]\n\
             app = pool_size=-1 max_db_connections=0 min_pool_size=0\n\
             [users]\n\
             bob = max_user_connections=0 query_timeout=0\n\
             eve = query_timeout=1.5\n",
        )
        .unwrap();
        let p = &l.config.pool;
        assert_eq!(p.max_client_conn, 32);
        assert_eq!(p.default_pool_size, 8);
        assert_eq!(p.min_pool_size, 3);
        assert!(p.server_reset_query_always);
        assert_eq!(p.server_idle_timeout, 0.5);
        assert_eq!(p.server_lifetime, 1000.0);
        assert_eq!(p.server_reset_query, "DISCARD ALL ; not a comment");
        assert!(p.admin_users.is_empty());
        assert_eq!(p.auth_file, None);
        let app = &l.config.databases["app"];
        assert_eq!(app.pool_size, None);
        assert_eq!(app.max_db_connections, None);
        assert_eq!(app.min_pool_size, Some(0));
        assert_eq!(l.config.users["bob"], UserSettings::default());
        assert_eq!(l.config.users["eve"].query_timeout, Some(1.5));
        let e = err_text("[pgbouncer]\ndefault_pool_size = 08\n");
        assert!(e.contains("default_pool_size: expected an integer"), "{e}");
    }

    #[test]
    fn defaults_are_pgbouncers() {
        let l = load_text("[pgbouncer]\n").unwrap();
        assert_eq!(l.config.pool.unix_socket_dir, "/tmp");
        assert_eq!(l.config.pool.listen_addr, "");
        assert_eq!(l.config.pool.listen_port, 6432);
        assert_eq!(l.config.pool.auth_type, AuthType::Md5);
        assert!(l.unsupported.is_empty());
        assert!(l.config.databases.is_empty());
        let l = load_text("[pgbouncer]\nunix_socket_dir =\nlisten_addr = *\n").unwrap();
        assert_eq!(l.config.pool.unix_socket_dir, "");
        assert_eq!(l.config.pool.listen_addr, "*");
        let e = err_text("[databases]\napp = host=a\n");
        assert!(e.contains("no [pgbouncer] section"), "{e}");
    }

    #[test]
    fn a_second_pgbouncer_header_resets_as_in_pgbouncer() {
        let dir = Dir::new();
        let extra = dir.write("extra.ini", "[pgbouncer]\nmax_client_conn = 77\n");
        let main = dir.write(
            "main.ini",
            &format!(
                "[pgbouncer]\nlisten_port = 16432\npool_mode = transaction\n\
                 %include {}\n",
                extra.display()
            ),
        );
        let l = load(&main).unwrap();
        assert_eq!(l.config.pool.max_client_conn, 77);
        assert_eq!(l.config.pool.listen_port, 6432);
        assert_eq!(l.config.pool.pool_mode, PoolMode::Session);
        assert_eq!(l.unsupported.len(), 1);
        assert!(
            l.unsupported[0].contains("extra.ini:1: this [pgbouncer] header puts the 2")
                && l.unsupported[0].contains("main.ini:2"),
            "{:?}",
            l.unsupported
        );
    }

    #[test]
    fn sections_repeat_and_later_entries_win() {
        let l = load_text(
            "[databases] ; comment after a header\n\
             app = host=a\n\
             [pgbouncer] listen_port = 7000\n\
             [databases]\n\
             app = host=b\n\
             [users]\nbob = pool_mode=session\nbob = pool_mode=statement\n",
        )
        .unwrap();
        assert_eq!(l.config.pool.listen_port, 7000);
        assert_eq!(l.config.databases["app"].host, vec!["b"]);
        assert_eq!(l.config.users["bob"].pool_mode, Some(PoolMode::Statement));
    }

    #[test]
    fn validation_errors_point_at_the_line() {
        let e = err_text("[pgbouncer]\nlisten_port = 1\ndefault_pool_size = 0\n");
        assert_eq!(e, "pgbouncer.ini:3: default_pool_size: must be at least 1");
        let e = err_text("[pgbouncer]\n\nauth_type = hba\n");
        assert_eq!(e, "pgbouncer.ini:3: auth_type = hba needs auth_hba_file");
        let e = err_text("[pgbouncer]\n[databases]\napp = pool_size=0\n");
        assert!(
            e.starts_with("pgbouncer.ini:3: [databases] app: pool_size"),
            "{e}"
        );
        let e = err_text("[pgbouncer]\nserver_connect_timeout = 0\n");
        assert!(
            e.starts_with("pgbouncer.ini:2: server_connect_timeout"),
            "{e}"
        );
    }

    #[test]
    fn passwords_never_in_errors() {
        let secret = "Sup3rS3cretPw";
        let lines = [
            format!("app = host=a password={secret} colour=blue"),
            format!("app = host=a password='{secret} colour=blue"),
            format!("app = host=a password='x' {secret}=y"),
            format!("app = password='{secret}'{secret}"),
            format!("app = password='x {secret}=1'' {secret}=2"),
            format!("app = password={secret} port={secret}"),
            format!("app = password={secret} pool_size={secret}"),
            format!("app = password={secret} pool_mode={secret}"),
            format!("app = password={secret} target_session_attrs={secret}"),
            format!("app = password={secret} {secret}"),
            format!("app = password=x port=0{secret}"),
            format!("{secret} password = {secret}"),
            format!("app = password={secret} host=,{secret}"),
        ];
        for line in &lines {
            for text in [
                format!("[pgbouncer]\n[databases]\n{line}\n"),
                format!("[pgbouncer]\n{line}\n"),
            ] {
                let e = load_text(&text).unwrap_err().to_string();
                assert!(!e.contains(secret), "{line}: {e}");
                assert!(e.contains("pgbouncer.ini:"), "{line}: {e}");
            }
        }
        let e = load_text(&format!(
            "[pgbouncer]\nauth_type = hba\n[databases]\napp = password={secret}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(!e.contains(secret), "{e}");
    }

    #[test]
    fn unreadable_files() {
        let dir = Dir::new();
        let missing = dir.0.path().join("missing.ini");
        assert!(matches!(load(&missing), Err(ConfigError::Read { .. })));
        let bad = dir.0.path().join("bad.ini");
        std::fs::write(&bad, b"[pgbouncer]\nlisten_addr = \xff\n").unwrap();
        let e = load(&bad).unwrap_err().to_string();
        assert!(e.ends_with("bad.ini:2: not valid UTF-8"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(body in "\\PC{0,300}") {
            let _ = load_text(&format!("[pgbouncer]\n{body}"));
        }
    }
}
