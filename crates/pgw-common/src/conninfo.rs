//! libpq-compatible connection parameters: conninfo strings, URIs, environment
//! variables and the password file.
//!
//! Written by hand because no maintained crate does all of it: `tokio_postgres::Config`
//! parses conninfo and URIs but does not read `PG*` environment variables or
//! `~/.pgpass`, and rejects `sslmode=verify-ca|verify-full` and `sslrootcert`, which
//! users of psql take for granted. The rules below follow the libpq documentation
//! ("Connection Strings", "Environment Variables", "The Password File", "SSL Support")
//! and, where the documentation is silent, libpq's `fe-connect.c`:
//!
//! - Each key is taken from the connection string if it is there (even empty), else from
//!   its environment variable, else from the default; keys never shadow one another.
//! - `hostaddr` (numeric IPs) decides where the TCP connection goes; `host` names the
//!   server for certificate checks and the password file. Given both, they pair up by
//!   position and must have the same number of entries.
//! - `port` is one port for all hosts or one per host; an empty entry is the default
//!   port, 5432.
//! - `sslrootcert=system` makes `verify-full` the default `sslmode` and refuses any other.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The port libpq uses when none is given (`DEF_PGPORT`).
pub const DEFAULT_PORT: u16 = 5432;

/// An error in a connection string, named with the offending part. Never contains a
/// password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DsnError {
    #[error("invalid connection string: missing \"=\" after \"{0}\"")]
    MissingEquals(String),
    #[error("invalid connection string: unterminated quoted value for \"{0}\"")]
    Unterminated(String),
    #[error("invalid connection option \"{0}\"")]
    UnknownOption(String),
    #[error("invalid URI: {0}")]
    Uri(String),
    #[error("invalid {key} value \"{value}\": {why}")]
    BadValue {
        key: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("could not match {ports} port numbers to {hosts} hosts")]
    PortCount { ports: usize, hosts: usize },
    #[error("could not match {hosts} host names to {hostaddrs} hostaddr values")]
    HostCount { hosts: usize, hostaddrs: usize },
    #[error("weak sslmode \"{0}\" may not be used with sslrootcert=system (use \"verify-full\")")]
    WeakSslMode(SslMode),
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    Allow,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<Self, DsnError> {
        Ok(match s {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => {
                return Err(DsnError::BadValue {
                    key: "sslmode",
                    value: s.to_string(),
                    why: "expected disable, allow, prefer, require, verify-ca or verify-full",
                })
            }
        })
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        })
    }
}

/// The options pgwarden understands, with the environment variable that supplies each
/// when the connection string does not. Anything else is rejected, as libpq does.
const OPTIONS: &[(&str, Option<&str>)] = &[
    ("host", Some("PGHOST")),
    ("hostaddr", Some("PGHOSTADDR")),
    ("port", Some("PGPORT")),
    ("user", Some("PGUSER")),
    ("password", Some("PGPASSWORD")),
    ("passfile", Some("PGPASSFILE")),
    ("dbname", Some("PGDATABASE")),
    ("sslmode", Some("PGSSLMODE")),
    ("sslrootcert", Some("PGSSLROOTCERT")),
    ("sslcert", Some("PGSSLCERT")),
    ("sslkey", Some("PGSSLKEY")),
    ("connect_timeout", Some("PGCONNECT_TIMEOUT")),
    ("application_name", Some("PGAPPNAME")),
    ("options", Some("PGOPTIONS")),
    ("target_session_attrs", Some("PGTARGETSESSIONATTRS")),
    ("channel_binding", Some("PGCHANNELBINDING")),
    ("keepalives", None),
    ("keepalives_idle", None),
    ("keepalives_interval", None),
    ("keepalives_count", None),
    ("fallback_application_name", None),
    ("client_encoding", Some("PGCLIENTENCODING")),
];

/// Connection parameters after the DSN, the environment and the defaults were merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnParams {
    /// Host names, IP addresses or socket directories (absolute paths), in order: the
    /// `host` entries, or for an entry without one its `hostaddr`, else the default
    /// socket directory. Used for certificate name checks and the password file.
    pub hosts: Vec<String>,
    /// The `hostaddr` for each host, if any: where the TCP connection goes instead of
    /// looking the host name up. Same length as `hosts`.
    pub hostaddrs: Vec<Option<IpAddr>>,
    /// The port for each host (same length as `hosts`).
    pub ports: Vec<u16>,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    /// The client certificate: `sslcert`, else `~/.postgresql/postgresql.crt` when
    /// `sslkey` was given or both default files exist.
    pub sslcert: Option<PathBuf>,
    /// The client key: `sslkey`, else `~/.postgresql/postgresql.key` when `sslcert` was
    /// given or both default files exist. One without the other is refused when TLS
    /// is set up.
    pub sslkey: Option<PathBuf>,
    /// Seconds; libpq waits forever by default, pgwarden waits 10 s so a dead host
    /// gives an error instead of a hang.
    pub connect_timeout: u64,
    pub application_name: String,
    pub options: Option<String>,
    pub target_session_attrs: Option<String>,
    pub channel_binding: Option<String>,
    pub keepalives: Option<bool>,
    /// Where the password came from, for messages ("password from ~/.pgpass").
    pub password_source: PasswordSource,
}

/// Where a password came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSource {
    None,
    Dsn,
    Env,
    PassFile,
}

/// What the process environment offers; injected so tests need not mutate the real one.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
    fn home(&self) -> Option<PathBuf>;
    /// The name of the operating-system user the connection runs as (libpq's default
    /// user name).
    fn os_user(&self) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
    fn home(&self) -> Option<PathBuf> {
        std::env::var_os("HOME").map(PathBuf::from)
    }
    /// The effective uid's user name, as libpq's `pg_fe_getauthname` (not `$USER`, which
    /// is wrong under `sudo -u`, `su` without `-` or setuid).
    fn os_user(&self) -> Option<String> {
        let uid = nix::unistd::geteuid();
        match nix::unistd::User::from_uid(uid) {
            Ok(Some(user)) if !user.name.is_empty() => Some(user.name),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(%uid, error = %e, "look up the effective user");
                None
            }
        }
    }
}

impl ConnParams {
    /// Parses `dsn` (a conninfo string, a `postgres://` URI, or a bare database name,
    /// as psql's `-d` takes) and fills what it lacks from `env`, then from libpq's defaults.
    pub fn resolve(dsn: Option<&str>, env: &dyn Env) -> Result<Self, DsnError> {
        let explicit = match dsn.map(str::trim) {
            None | Some("") => BTreeMap::new(),
            Some(s) if s.starts_with("postgresql://") || s.starts_with("postgres://") => {
                parse_uri(s)?
            }
            Some(s) if s.contains('=') => parse_keyword_value(s)?,
            Some(s) => BTreeMap::from([("dbname".to_string(), s.to_string())]),
        };
        for key in explicit.keys() {
            if !OPTIONS.iter().any(|(k, _)| k == key) {
                return Err(DsnError::UnknownOption(key.clone()));
            }
        }
        let mut password_source = PasswordSource::None;
        // Per key: the DSN (even an empty value), else the environment.
        let get = |key: &str| -> Option<String> {
            if let Some(v) = explicit.get(key) {
                return Some(v.clone());
            }
            let var = OPTIONS
                .iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, v)| *v)?;
            env.var(var)
        };
        // Options whose empty value means "not given" (libpq tests `val[0] != '\0'`).
        let get_nonempty = |key: &str| get(key).filter(|v| !v.is_empty());
        if explicit.contains_key("password") {
            password_source = PasswordSource::Dsn;
        } else if env.var("PGPASSWORD").is_some() {
            password_source = PasswordSource::Env;
        }

        let default_dir = default_socket_dir();
        let (hosts, hostaddrs) = resolve_hosts(
            &get("host").unwrap_or_default(),
            &get("hostaddr").unwrap_or_default(),
            &default_dir,
        )?;
        let ports = resolve_ports(&get("port").unwrap_or_default(), hosts.len())?;
        let user = get_nonempty("user")
            .or_else(|| env.os_user())
            .unwrap_or_else(|| "postgres".to_string());
        let dbname = get_nonempty("dbname").unwrap_or_else(|| user.clone());
        let sslrootcert = get_nonempty("sslrootcert");
        let system_roots = sslrootcert.as_deref() == Some("system");
        let sslmode = match get("sslmode") {
            Some(m) => SslMode::parse(&m)?,
            // libpq 16: "sslrootcert=system ... the default sslmode is verify-full".
            None if system_roots => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        if system_roots && sslmode != SslMode::VerifyFull {
            // Any publicly trusted certificate would pass a chain-only check.
            return Err(DsnError::WeakSslMode(sslmode));
        }
        let connect_timeout = match get("connect_timeout") {
            Some(t) => t.trim().parse::<u64>().map_err(|_| DsnError::BadValue {
                key: "connect_timeout",
                value: t.clone(),
                why: "expected whole seconds",
            })?,
            None => 10,
        };
        let keepalives = get("keepalives").map(|v| v.trim() != "0");
        let home_file = |rel: &str| env.home().map(|h| h.join(rel));
        let existing = |rel: &str| home_file(rel).filter(|p| p.exists());
        let (sslcert, sslkey) = match (
            get_nonempty("sslcert").map(PathBuf::from),
            get_nonempty("sslkey").map(PathBuf::from),
        ) {
            (Some(cert), Some(key)) => (Some(cert), Some(key)),
            // One given: its partner defaults to the file in ~/.postgresql, if there.
            (Some(cert), None) => (Some(cert), existing(".postgresql/postgresql.key")),
            (None, Some(key)) => (existing(".postgresql/postgresql.crt"), Some(key)),
            // Neither: the default pair, only when both files exist.
            (None, None) => match (
                existing(".postgresql/postgresql.crt"),
                existing(".postgresql/postgresql.key"),
            ) {
                (Some(cert), Some(key)) => (Some(cert), Some(key)),
                _ => (None, None),
            },
        };
        let mut params = ConnParams {
            hosts,
            hostaddrs,
            ports,
            user,
            password: get("password"),
            dbname,
            sslmode,
            sslrootcert: sslrootcert
                .map(PathBuf::from)
                .or_else(|| existing(".postgresql/root.crt")),
            sslcert,
            sslkey,
            connect_timeout,
            application_name: get("application_name")
                .or_else(|| get("fallback_application_name"))
                .unwrap_or_else(|| "pgwarden".to_string()),
            options: get("options"),
            target_session_attrs: get("target_session_attrs"),
            channel_binding: get("channel_binding"),
            keepalives,
            password_source,
        };
        if params.password.is_none() {
            let passfile = get_nonempty("passfile")
                .map(PathBuf::from)
                .or_else(|| home_file(".pgpass"));
            if let Some(file) = passfile {
                if let Some(pw) = lookup_passfile(&file, &params, &default_dir) {
                    params.password = Some(pw);
                    params.password_source = PasswordSource::PassFile;
                }
            }
        }
        Ok(params)
    }

    /// The port for host number `i`.
    pub fn port_for(&self, i: usize) -> u16 {
        self.ports
            .get(i)
            .or_else(|| self.ports.first())
            .copied()
            .unwrap_or(DEFAULT_PORT)
    }

    /// The `hostaddr` for host number `i`, if one was given.
    pub fn hostaddr_for(&self, i: usize) -> Option<IpAddr> {
        self.hostaddrs.get(i).copied().flatten()
    }

    /// Whether every host is this machine (a socket directory or a loopback address;
    /// with `hostaddr`, the address connected to), so host facts such as memory and
    /// cores describe the server's host.
    pub fn is_local(&self) -> bool {
        self.hosts
            .iter()
            .enumerate()
            .all(|(i, h)| match self.hostaddr_for(i) {
                Some(ip) => ip.is_loopback(),
                None => {
                    h.starts_with('/')
                        || h == "localhost"
                        || h.parse::<IpAddr>()
                            .map(|ip| ip.is_loopback())
                            .unwrap_or(false)
                }
            })
    }

    /// A short, password-free description: `user@host:port/db`, with the address in
    /// parentheses where `hostaddr` differs from the host (`user@db.example(10.0.0.5):5432/db`).
    pub fn target(&self) -> String {
        let hosts: Vec<String> = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| match self.hostaddr_for(i) {
                Some(ip) if ip.to_string() != *h => format!("{h}({ip}):{}", self.port_for(i)),
                _ => format!("{h}:{}", self.port_for(i)),
            })
            .collect();
        format!("{}@{}/{}", self.user, hosts.join(","), self.dbname)
    }
}

/// libpq's compiled-in socket directory (`DEFAULT_PGSOCKET_DIR`): Debian's when this
/// looks like a Debian-style installation, else upstream's `/tmp`.
fn default_socket_dir() -> String {
    if Path::new("/var/run/postgresql").is_dir() {
        "/var/run/postgresql".to_string()
    } else {
        "/tmp".to_string()
    }
}

/// Pairs the `host` and `hostaddr` lists as libpq's `pqConnectOptions2` does: the number
/// of hosts is the length of `hostaddr` if given, else of `host`, else one; a `host` list,
/// if given, must be as long. An entry with neither becomes `default_dir`.
fn resolve_hosts(
    host: &str,
    hostaddr: &str,
    default_dir: &str,
) -> Result<(Vec<String>, Vec<Option<IpAddr>>), DsnError> {
    let addrs: Vec<Option<IpAddr>> = if hostaddr.is_empty() {
        Vec::new()
    } else {
        hostaddr
            .split(',')
            .map(str::trim)
            .map(|a| {
                if a.is_empty() {
                    return Ok(None);
                }
                a.parse::<IpAddr>()
                    .map(Some)
                    .map_err(|_| DsnError::BadValue {
                        key: "hostaddr",
                        value: a.to_string(),
                        why: "expected a numeric IPv4 or IPv6 address",
                    })
            })
            .collect::<Result<_, _>>()?
    };
    let names: Vec<&str> = if host.is_empty() {
        Vec::new()
    } else {
        host.split(',').map(str::trim).collect()
    };
    let count = if !addrs.is_empty() {
        addrs.len()
    } else {
        names.len().max(1)
    };
    if !names.is_empty() && names.len() != count {
        return Err(DsnError::HostCount {
            hosts: names.len(),
            hostaddrs: count,
        });
    }
    let hostaddrs = if addrs.is_empty() {
        vec![None; count]
    } else {
        addrs
    };
    let hosts = (0..count)
        .map(
            |i| match (names.get(i).filter(|n| !n.is_empty()), hostaddrs[i]) {
                (Some(name), _) => (*name).to_string(),
                (None, Some(ip)) => ip.to_string(),
                (None, None) => default_dir.to_string(),
            },
        )
        .collect();
    Ok((hosts, hostaddrs))
}

/// One port per host from libpq's `port` list: one entry applies to every host, otherwise
/// there must be one per host; an empty entry (or an empty list) is [`DEFAULT_PORT`].
fn resolve_ports(spec: &str, hosts: usize) -> Result<Vec<u16>, DsnError> {
    if spec.is_empty() {
        return Ok(vec![DEFAULT_PORT; hosts]);
    }
    let items: Vec<&str> = spec.split(',').map(str::trim).collect();
    if items.len() != 1 && items.len() != hosts {
        return Err(DsnError::PortCount {
            ports: items.len(),
            hosts,
        });
    }
    let ports = items
        .iter()
        .map(|item| {
            if item.is_empty() {
                return Ok(DEFAULT_PORT);
            }
            item.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| DsnError::BadValue {
                    key: "port",
                    value: (*item).to_string(),
                    why: "expected a number from 1 to 65535",
                })
        })
        .collect::<Result<Vec<u16>, _>>()?;
    Ok(match ports.as_slice() {
        [one] => vec![*one; hosts],
        _ => ports,
    })
}

/// `key = value` pairs separated by white space; values may be single-quoted with
/// `\'` and `\\` escapes.
fn parse_keyword_value(s: &str) -> Result<BTreeMap<String, String>, DsnError> {
    let mut out = BTreeMap::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && chars[i] != '=' && !chars[i].is_whitespace() {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        skip_ws(&mut i);
        if i >= chars.len() || chars[i] != '=' {
            return Err(DsnError::MissingEquals(key));
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = String::new();
        if i < chars.len() && chars[i] == '\'' {
            i += 1;
            let mut closed = false;
            while i < chars.len() {
                match chars[i] {
                    '\\' if i + 1 < chars.len() => {
                        value.push(chars[i + 1]);
                        i += 2;
                    }
                    '\'' => {
                        closed = true;
                        i += 1;
                        break;
                    }
                    c => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
            if !closed {
                return Err(DsnError::Unterminated(key));
            }
        } else {
            while i < chars.len() && !chars[i].is_whitespace() {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    value.push(chars[i + 1]);
                    i += 2;
                } else {
                    value.push(chars[i]);
                    i += 1;
                }
            }
        }
        out.insert(key, value);
    }
    Ok(out)
}

/// Decodes `%xx` escapes. `what` names the part in errors ("the password", or the quoted
/// text itself where echoing it is harmless).
fn percent_decode(s: &str, what: &str) -> Result<String, DsnError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| DsnError::Uri(format!("invalid percent-encoding in {what}")))?;
            if hex == 0 {
                return Err(DsnError::Uri(format!("forbidden value %00 in {what}")));
            }
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| DsnError::Uri(format!("{what} is not valid UTF-8")))
}

/// [`percent_decode`] for parts that may be shown in errors.
fn decode_shown(s: &str) -> Result<String, DsnError> {
    percent_decode(s, &format!("\"{s}\""))
}

/// `postgresql://[user[:password]@][host[:port]][,...][/dbname][?key=value&...]`, split
/// as libpq's `conninfo_uri_parse_options` does: ports line up with their hosts (an
/// empty one is the default), an IPv6 address sits in brackets.
fn parse_uri(s: &str) -> Result<BTreeMap<String, String>, DsnError> {
    let rest = s
        .strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
        .ok_or_else(|| DsnError::Uri("expected postgresql:// or postgres://".into()))?;
    let mut out = BTreeMap::new();
    // The credentials end at an "@" before the first "/" (libpq looks no further); the
    // last such "@", so an unescaped "@" in a password still works.
    let netloc_end = rest.find('/').unwrap_or(rest.len());
    let mut cur = match rest[..netloc_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                out.insert("user".into(), decode_shown(user)?);
            }
            // Errors about the password never show it.
            if let Some(p) = password.filter(|p| !p.is_empty()) {
                out.insert("password".into(), percent_decode(p, "the password")?);
            }
            &rest[at + 1..]
        }
        None => rest,
    };

    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    loop {
        let after_host = if let Some(v6) = cur.strip_prefix('[') {
            let close = v6.find(']').ok_or_else(|| {
                DsnError::Uri("missing \"]\" after IPv6 host address".to_string())
            })?;
            let addr = &v6[..close];
            if addr.is_empty() {
                return Err(DsnError::Uri("IPv6 host address may not be empty".into()));
            }
            let after = &v6[close + 1..];
            if let Some(c) = after.chars().next().filter(|c| !":/?,".contains(*c)) {
                return Err(DsnError::Uri(format!(
                    "unexpected \"{c}\" after IPv6 host address [{addr}] (expected \":\", \"/\", \"?\" or \",\")"
                )));
            }
            hosts.push(decode_shown(addr)?);
            after
        } else {
            let end = cur.find([':', '/', '?', ',']).unwrap_or(cur.len());
            hosts.push(decode_shown(&cur[..end])?);
            &cur[end..]
        };
        let after_port = match after_host.strip_prefix(':') {
            Some(p) => {
                let end = p.find(['/', '?', ',']).unwrap_or(p.len());
                ports.push(decode_shown(&p[..end])?);
                &p[end..]
            }
            None => {
                ports.push(String::new());
                after_host
            }
        };
        match after_port.strip_prefix(',') {
            Some(next) => cur = next,
            None => {
                cur = after_port;
                break;
            }
        }
    }
    // As libpq: set only what is non-empty, so `postgresql://h/db` leaves the port to
    // PGPORT, while `postgresql://h1,h2:6000` gives "port=,6000" (h1 on the default port).
    let host = hosts.join(",");
    if !host.is_empty() {
        out.insert("host".into(), host);
    }
    let port = ports.join(",");
    if !port.is_empty() {
        out.insert("port".into(), port);
    }

    let (path, query) = match cur.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (cur, None),
    };
    if let Some(db) = path.strip_prefix('/').filter(|db| !db.is_empty()) {
        out.insert("dbname".into(), decode_shown(db)?);
    }
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                DsnError::Uri(format!(
                    "query parameter \"{}\" has no value",
                    pair.chars().take(40).collect::<String>()
                ))
            })?;
            let k = decode_shown(k)?;
            // Values are never shown: one may be a password.
            let v = percent_decode(v, &format!("the value of \"{k}\""))?;
            // libpq accepts `ssl=true` in URIs as a synonym for sslmode=require.
            if k == "ssl" && v == "true" {
                out.insert("sslmode".into(), "require".into());
            } else {
                out.insert(k, v);
            }
        }
    }
    Ok(out)
}

/// The host name libpq looks up in the password file for `host` (`passwordFromFile`):
/// "localhost" for the default socket directory `default_dir` (or no host), else the
/// host as given, so another socket directory must be written out in the file.
fn passfile_host<'a>(host: &'a str, default_dir: &str) -> &'a str {
    if host.is_empty() || host == default_dir {
        "localhost"
    } else {
        host
    }
}

/// Finds the password for `params` in a libpq password file. libpq ignores a file
/// that group or others can read; so does this, with a warning.
fn lookup_passfile(file: &Path, params: &ConnParams, default_dir: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            file = %file.display(),
            "password file has group or world access; permissions should be u=rw (0600) or less"
        );
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let host = passfile_host(params.hosts.first()?, default_dir);
    let port = params.port_for(0).to_string();
    passfile_match(&text, host, &port, &params.dbname, &params.user)
}

/// The first line of a password file whose fields match; `*` matches anything,
/// `\:` and `\\` are escapes.
pub fn passfile_match(text: &str, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            continue;
        }
        let ok = |pat: &str, v: &str| pat == "*" || pat == v;
        if ok(&fields[0], host)
            && ok(&fields[1], port)
            && ok(&fields[2], db)
            && ok(&fields[3], user)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

#[cfg(test)]
#[path = "tests/conninfo.rs"]
mod tests;
