//! libpq-compatible connection parameters: conninfo strings, URIs, environment
//! variables and the password file.
//!
//! Written by hand because no maintained crate does all of it: `tokio_postgres::Config`
//! parses conninfo and URIs but does not read `PG*` environment variables or
//! `~/.pgpass`, and rejects `sslmode=verify-ca|verify-full` and `sslrootcert`, which
//! users of psql take for granted. The rules below follow the libpq documentation
//! ("Connection Strings", "Environment Variables", "The Password File").

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// An error in a connection string, named with the offending part.
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
    /// Host names, IP addresses or socket directories (absolute paths), in order.
    pub hosts: Vec<String>,
    /// One port per host (a single port applies to all).
    pub ports: Vec<u16>,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub sslcert: Option<PathBuf>,
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
    fn os_user(&self) -> Option<String> {
        std::env::var("USER")
            .ok()
            .or_else(|| std::env::var("LOGNAME").ok())
            .filter(|u| !u.is_empty())
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
        if explicit.contains_key("password") {
            password_source = PasswordSource::Dsn;
        } else if env.var("PGPASSWORD").is_some() {
            password_source = PasswordSource::Env;
        }

        let hosts: Vec<String> = match get("host").or_else(|| get("hostaddr")) {
            Some(h) => h.split(',').map(|s| s.trim().to_string()).collect(),
            None => vec![default_socket_dir()],
        };
        let ports: Vec<u16> = match get("port") {
            Some(p) => p
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or(DsnError::BadValue {
                            key: "port",
                            value: p.clone(),
                            why: "expected a number from 1 to 65535",
                        })
                })
                .collect::<Result<_, _>>()?,
            None => vec![5432],
        };
        if ports.len() != 1 && ports.len() != hosts.len() {
            return Err(DsnError::BadValue {
                key: "port",
                value: get("port").unwrap_or_default(),
                why: "give one port, or one per host",
            });
        }
        let user = get("user")
            .or_else(|| env.os_user())
            .unwrap_or_else(|| "postgres".to_string());
        let dbname = get("dbname").unwrap_or_else(|| user.clone());
        let sslmode = match get("sslmode") {
            Some(m) => SslMode::parse(&m)?,
            None => SslMode::Prefer,
        };
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
        let mut params = ConnParams {
            hosts,
            ports,
            user,
            password: get("password"),
            dbname,
            sslmode,
            sslrootcert: get("sslrootcert")
                .map(PathBuf::from)
                .or_else(|| home_file(".postgresql/root.crt").filter(|p| p.exists())),
            sslcert: get("sslcert")
                .map(PathBuf::from)
                .or_else(|| home_file(".postgresql/postgresql.crt").filter(|p| p.exists())),
            sslkey: get("sslkey")
                .map(PathBuf::from)
                .or_else(|| home_file(".postgresql/postgresql.key").filter(|p| p.exists())),
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
            let passfile = get("passfile")
                .map(PathBuf::from)
                .or_else(|| home_file(".pgpass"));
            if let Some(file) = passfile {
                if let Some(pw) = lookup_passfile(&file, &params) {
                    params.password = Some(pw);
                    params.password_source = PasswordSource::PassFile;
                }
            }
        }
        Ok(params)
    }

    /// The port for host number `i`.
    pub fn port_for(&self, i: usize) -> u16 {
        *self.ports.get(i).unwrap_or(&self.ports[0])
    }

    /// Whether the first host is this machine (a socket directory or a loopback
    /// address), so host facts such as memory and cores describe the server's host.
    pub fn is_local(&self) -> bool {
        self.hosts.iter().all(|h| {
            h.starts_with('/')
                || h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .map(|ip| ip.is_loopback())
                    .unwrap_or(false)
        })
    }

    /// A short, password-free description: `user@host:port/db`.
    pub fn target(&self) -> String {
        let hosts: Vec<String> = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| format!("{h}:{}", self.port_for(i)))
            .collect();
        format!("{}@{}/{}", self.user, hosts.join(","), self.dbname)
    }
}

/// libpq's compiled-in socket directory on Debian, else `/tmp`.
fn default_socket_dir() -> String {
    if Path::new("/var/run/postgresql").is_dir() {
        "/var/run/postgresql".to_string()
    } else {
        "/tmp".to_string()
    }
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

fn percent_decode(s: &str) -> Result<String, DsnError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| DsnError::Uri(format!("invalid percent-encoding in \"{s}\"")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| DsnError::Uri(format!("\"{s}\" is not valid UTF-8")))
}

/// `postgresql://[user[:password]@][host[:port][,...]][/dbname][?key=value&...]`
fn parse_uri(s: &str) -> Result<BTreeMap<String, String>, DsnError> {
    let rest = s
        .strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
        .ok_or_else(|| DsnError::Uri("expected postgresql:// or postgres://".into()))?;
    let mut out = BTreeMap::new();
    let (before_query, query) = match rest.split_once('?') {
        Some((a, b)) => (a, Some(b)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (before_query, None),
    };
    let hostlist = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                out.insert("user".into(), percent_decode(user)?);
            }
            if let Some(p) = password {
                out.insert("password".into(), percent_decode(p)?);
            }
            hosts
        }
        None => authority,
    };
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for part in hostlist.split(',').filter(|p| !p.is_empty()) {
        let (host, port) = if let Some(v6) = part.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| DsnError::Uri(format!("unterminated [ in host \"{part}\"")))?;
            (h.to_string(), after.strip_prefix(':').map(str::to_string))
        } else {
            match part.rsplit_once(':') {
                Some((h, p)) => (percent_decode(h)?, Some(p.to_string())),
                None => (percent_decode(part)?, None),
            }
        };
        hosts.push(host);
        if let Some(p) = port {
            ports.push(p);
        }
    }
    if !hosts.is_empty() && hosts.iter().any(|h| !h.is_empty()) {
        out.insert("host".into(), hosts.join(","));
    }
    if !ports.is_empty() {
        out.insert("port".into(), ports.join(","));
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        out.insert("dbname".into(), percent_decode(db)?);
    }
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| DsnError::Uri(format!("query parameter \"{pair}\" has no value")))?;
            let k = percent_decode(k)?;
            // libpq accepts `ssl=true` in URIs as a synonym for sslmode=require.
            if k == "ssl" && v == "true" {
                out.insert("sslmode".into(), "require".into());
            } else {
                out.insert(k, percent_decode(v)?);
            }
        }
    }
    Ok(out)
}

/// Finds the password for `params` in a libpq password file. libpq ignores a file
/// that group or others can read; so does this, with a warning.
fn lookup_passfile(file: &Path, params: &ConnParams) -> Option<String> {
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
    let host = params.hosts.first()?;
    // libpq matches socket connections against "localhost".
    let host = if host.starts_with('/') {
        "localhost"
    } else {
        host.as_str()
    };
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
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct FakeEnv(HashMap<&'static str, &'static str>, Option<PathBuf>);
    impl Env for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|s| s.to_string())
        }
        fn home(&self) -> Option<PathBuf> {
            self.1.clone()
        }
        fn os_user(&self) -> Option<String> {
            Some("osuser".into())
        }
    }
    /// Resolves a DSN that must be valid.
    fn ok(dsn: Option<&str>, e: &FakeEnv) -> ConnParams {
        ConnParams::resolve(dsn, e).expect("valid dsn")
    }

    fn env(vars: &[(&'static str, &'static str)]) -> FakeEnv {
        FakeEnv(vars.iter().cloned().collect(), None)
    }

    #[test]
    fn keyword_value_with_quotes_and_escapes() {
        let p = ok(
            Some("host=db.example port = 6432 user='a b' password='it\\'s' dbname=app sslmode=verify-full"),
            &env(&[]),
        );
        assert_eq!(p.hosts, vec!["db.example"]);
        assert_eq!(p.ports, vec![6432]);
        assert_eq!(p.user, "a b");
        assert_eq!(p.password.as_deref(), Some("it's"));
        assert_eq!(p.dbname, "app");
        assert_eq!(p.sslmode, SslMode::VerifyFull);
        assert_eq!(p.password_source, PasswordSource::Dsn);
    }

    #[test]
    fn uri_forms() {
        let p = ok(
            Some(
                "postgresql://al%40ice:p%3Aw@[::1]:5555/my%20db?sslmode=require&application_name=x",
            ),
            &env(&[]),
        );
        assert_eq!(p.user, "al@ice");
        assert_eq!(p.password.as_deref(), Some("p:w"));
        assert_eq!(p.hosts, vec!["::1"]);
        assert_eq!(p.ports, vec![5555]);
        assert_eq!(p.dbname, "my db");
        assert_eq!(p.sslmode, SslMode::Require);
        assert_eq!(p.application_name, "x");

        let p = ok(Some("postgres://h1:1,h2:2/db"), &env(&[]));
        assert_eq!(p.hosts, vec!["h1", "h2"]);
        assert_eq!(p.ports, vec![1, 2]);

        let p = ok(Some("postgresql://%2Ftmp%2Fsock/db"), &env(&[]));
        assert_eq!(p.hosts, vec!["/tmp/sock"]);
        assert!(p.is_local());
    }

    #[test]
    fn environment_fills_what_the_dsn_lacks() {
        let e = env(&[
            ("PGHOST", "envhost"),
            ("PGPORT", "7000"),
            ("PGUSER", "envuser"),
            ("PGDATABASE", "envdb"),
            ("PGPASSWORD", "envpw"),
            ("PGSSLMODE", "disable"),
        ]);
        let p = ok(None, &e);
        assert_eq!(p.hosts, vec!["envhost"]);
        assert_eq!(p.ports, vec![7000]);
        assert_eq!(p.user, "envuser");
        assert_eq!(p.dbname, "envdb");
        assert_eq!(p.password.as_deref(), Some("envpw"));
        assert_eq!(p.password_source, PasswordSource::Env);
        assert_eq!(p.sslmode, SslMode::Disable);
        // The DSN wins over the environment.
        let p = ok(Some("host=dsnhost user=u"), &e);
        assert_eq!(p.hosts, vec!["dsnhost"]);
        assert_eq!(p.user, "u");
        assert_eq!(p.dbname, "envdb");
    }

    #[test]
    fn defaults_follow_libpq() {
        let p = ok(None, &env(&[]));
        assert_eq!(p.user, "osuser");
        assert_eq!(p.dbname, "osuser");
        assert_eq!(p.ports, vec![5432]);
        assert_eq!(p.sslmode, SslMode::Prefer);
        assert!(p.hosts[0].starts_with('/'));
        // A bare word is a database name, as with psql -d.
        let p = ok(Some("sales"), &env(&[]));
        assert_eq!(p.dbname, "sales");
    }

    #[test]
    fn malformed_dsns_are_rejected_with_the_reason() {
        let e = env(&[]);
        let err = |s| ConnParams::resolve(Some(s), &e).unwrap_err().to_string();
        assert_eq!(
            err("host=a port"),
            "invalid connection string: missing \"=\" after \"port\""
        );
        assert_eq!(
            err("host='abc"),
            "invalid connection string: unterminated quoted value for \"host\""
        );
        assert_eq!(err("hots=a"), "invalid connection option \"hots\"");
        assert!(err("port=abc").contains("invalid port value"));
        assert!(err("port=70000").contains("invalid port value"));
        assert!(err("sslmode=maybe").contains("invalid sslmode value"));
        assert!(err("postgresql://h/db?x").contains("invalid URI"));
        assert!(err("postgresql://u@h/%zz").contains("percent-encoding"));
    }

    #[test]
    fn passfile_matching() {
        let text = "# comment\nother:5432:*:*:nope\nh\\:x:*:db:u:first\nh:5432:*:u:second\n*:*:*:*:fallback\n";
        assert_eq!(
            passfile_match(text, "h", "5432", "db", "u").as_deref(),
            Some("second")
        );
        assert_eq!(
            passfile_match(text, "h:x", "1", "db", "u").as_deref(),
            Some("first")
        );
        assert_eq!(
            passfile_match(text, "z", "1", "d", "v").as_deref(),
            Some("fallback")
        );
        assert_eq!(passfile_match("a:b:c", "a", "b", "c", "d"), None);
    }

    #[test]
    fn passfile_is_read_from_home_and_ignored_when_world_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".pgpass");
        std::fs::write(&file, "127.0.0.1:6000:app:bob:s3cret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = FakeEnv(HashMap::new(), Some(dir.path().to_path_buf()));
        let p = ok(Some("host=127.0.0.1 port=6000 dbname=app user=bob"), &e);
        assert_eq!(p.password.as_deref(), Some("s3cret"));
        assert_eq!(p.password_source, PasswordSource::PassFile);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let p = ok(Some("host=127.0.0.1 port=6000 dbname=app user=bob"), &e);
        assert_eq!(p.password, None);
    }
}
