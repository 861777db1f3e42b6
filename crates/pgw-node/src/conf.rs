//! Pure text handling: [`Password`] (never printed), libpq [`Conninfo`] strings, quoting for
//! postgresql.conf, and editing `postgresql.auto.conf` the way `ALTER SYSTEM` writes it.

use std::fmt;

/// A password: kept out of `Debug` output, argv and `tracing` events.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps `secret`.
    pub fn new(secret: impl Into<String>) -> Password {
        Password(secret.into())
    }

    /// The secret itself, for the environment variable or file it goes into.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

impl From<&str> for Password {
    fn from(s: &str) -> Password {
        Password::new(s)
    }
}

impl From<String> for Password {
    fn from(s: String) -> Password {
        Password(s)
    }
}

/// A libpq connection string (`host=… port=… user=…`), built from typed parts.
///
/// [`Conninfo::render`] includes the password (for `primary_conninfo`);
/// [`Conninfo::render_without_password`] leaves it out (for argv, where the password goes in
/// `PGPASSWORD` instead). `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Conninfo {
    /// `host`: a host name, an IP address, or a Unix socket directory.
    pub host: Option<String>,
    /// `port`.
    pub port: Option<u16>,
    /// `user`: the database role.
    pub user: Option<String>,
    /// `password`.
    pub password: Option<Password>,
    /// `dbname`.
    pub dbname: Option<String>,
    /// `application_name`: how the connection shows in `pg_stat_activity` and
    /// `pg_stat_replication` (a standby's name there).
    pub application_name: Option<String>,
    /// Other keywords (`sslmode`, `connect_timeout`, …), in order.
    pub extra: Vec<(String, String)>,
}

impl Conninfo {
    /// TCP to `host`:`port` as `user`, no password, no database.
    pub fn tcp(host: &str, port: u16, user: &str) -> Conninfo {
        Conninfo {
            host: Some(host.to_owned()),
            port: Some(port),
            user: Some(user.to_owned()),
            ..Conninfo::default()
        }
    }

    /// Sets the password.
    pub fn with_password(mut self, password: Password) -> Conninfo {
        self.password = Some(password);
        self
    }

    /// Sets `dbname`.
    pub fn with_dbname(mut self, dbname: &str) -> Conninfo {
        self.dbname = Some(dbname.to_owned());
        self
    }

    /// Sets `application_name`.
    pub fn with_application_name(mut self, name: &str) -> Conninfo {
        self.application_name = Some(name.to_owned());
        self
    }

    /// Adds `keyword=value`.
    pub fn with(mut self, keyword: &str, value: &str) -> Conninfo {
        self.extra.push((keyword.to_owned(), value.to_owned()));
        self
    }

    /// The connection string with the password.
    pub fn render(&self) -> String {
        self.render_inner(true)
    }

    /// The connection string without the password.
    pub fn render_without_password(&self) -> String {
        self.render_inner(false)
    }

    fn render_inner(&self, password: bool) -> String {
        let port = self.port.map(|p| p.to_string());
        let pw = self
            .password
            .as_ref()
            .filter(|_| password)
            .map(Password::expose);
        let parts: Vec<(&str, &str)> = [
            ("host", self.host.as_deref()),
            ("port", port.as_deref()),
            ("user", self.user.as_deref()),
            ("password", pw),
            ("dbname", self.dbname.as_deref()),
            ("application_name", self.application_name.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
        let mut out: Vec<String> = parts
            .into_iter()
            .map(|(k, v)| format!("{k}={}", conninfo_quote(v)))
            .collect();
        out.extend(
            self.extra
                .iter()
                .map(|(k, v)| format!("{k}={}", conninfo_quote(v))),
        );
        out.join(" ")
    }
}

impl fmt::Debug for Conninfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render_without_password())?;
        if self.password.is_some() {
            f.write_str(" password=***")?;
        }
        Ok(())
    }
}

/// Quotes a libpq conninfo value when it needs it (empty, whitespace, `'` or `\`): in single
/// quotes with `'` and `\` backslash-escaped.
pub fn conninfo_quote(value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\');
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// Quotes a value for postgresql.conf as `ALTER SYSTEM` does: in single quotes, `'` and `\`
/// doubled.
pub fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// The value of a postgresql.conf line's right-hand side: a quoted string (with `''`, `\'`
/// and `\\` undone) or a bare word; `None` if a quote is not closed.
pub fn conf_unquote(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let Some(body) = raw.strip_prefix('\'') else {
        // A bare word ends at whitespace or a comment.
        let word = raw.split(['#', ' ', '\t']).next().unwrap_or("");
        return Some(word.to_owned());
    };
    let mut out = String::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' if chars.peek() == Some(&'\'') => {
                chars.next();
                out.push('\'');
            }
            '\'' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// The header `ALTER SYSTEM` writes at the top of postgresql.auto.conf.
pub const AUTO_CONF_HEADER: &str =
    "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n";

/// `text` (postgresql.auto.conf) with every `name = …` line removed and, when `value` is
/// given, `name = 'value'` appended; other lines are kept as they are. Names match without
/// regard to case, as PostgreSQL's do.
pub fn auto_conf_set(text: &str, name: &str, value: Option<&str>) -> String {
    let mut out = String::new();
    if text.trim().is_empty() {
        out.push_str(AUTO_CONF_HEADER);
    }
    for line in text.lines() {
        if conf_line_name(line).is_some_and(|n| n.eq_ignore_ascii_case(name)) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(value) = value {
        out.push_str(&format!("{name} = {}\n", conf_quote(value)));
    }
    out
}

/// The value of the last `name = …` line of `text` (the one PostgreSQL uses), unquoted.
pub fn auto_conf_get(text: &str, name: &str) -> Option<String> {
    text.lines()
        .rev()
        .filter(|line| conf_line_name(line).is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .filter_map(|line| {
            let (_, rest) = line.split_once('=').or_else(|| {
                let t = line.trim_start();
                let end = t.find(char::is_whitespace)?;
                Some((&t[..end], &t[end..]))
            })?;
            conf_unquote(rest)
        })
        .next()
}

/// The setting name of a postgresql.conf line, `None` for comments and blank lines.
fn conf_line_name(line: &str) -> Option<&str> {
    let t = line.trim_start();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let end = t
        .find(|c: char| c == '=' || c.is_whitespace())
        .unwrap_or(t.len());
    Some(&t[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_quoting() {
        assert_eq!(conninfo_quote("postgres"), "postgres");
        assert_eq!(conninfo_quote(""), "''");
        assert_eq!(conninfo_quote("a b"), "'a b'");
        assert_eq!(conninfo_quote(r"it's\"), r"'it\'s\\'");
    }

    #[test]
    fn conninfo_renders_with_and_without_password() {
        let c = Conninfo::tcp("127.0.0.1", 5433, "repl user")
            .with_password(Password::new("s3cr'et"))
            .with_application_name("standby1")
            .with("sslmode", "disable");
        assert_eq!(
            c.render(),
            r"host=127.0.0.1 port=5433 user='repl user' password='s3cr\'et' application_name=standby1 sslmode=disable"
        );
        assert_eq!(
            c.render_without_password(),
            "host=127.0.0.1 port=5433 user='repl user' application_name=standby1 sslmode=disable"
        );
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cr"), "{debug}");
        assert!(debug.ends_with("password=***"), "{debug}");
        assert_eq!(format!("{:?}", Password::new("x")), "Password(***)");
    }

    #[test]
    fn conf_quoting_round_trips() {
        assert_eq!(conf_quote("12MB"), "'12MB'");
        assert_eq!(conf_quote("it's"), "'it''s'");
        assert_eq!(conf_quote(r"a\b"), r"'a\\b'");
        for v in [
            "",
            "plain",
            "it's",
            r"back\slash",
            r"host=h password='p\'w'",
        ] {
            assert_eq!(conf_unquote(&conf_quote(v)).as_deref(), Some(v), "{v:?}");
        }
        assert_eq!(conf_unquote(r"'it\'s'").as_deref(), Some("it's"));
        assert_eq!(conf_unquote("on  # comment").as_deref(), Some("on"));
        assert_eq!(conf_unquote("'open"), None);
    }

    #[test]
    fn auto_conf_editing() {
        let empty = auto_conf_set("", "primary_conninfo", Some("host=a port=1"));
        assert_eq!(
            empty,
            format!("{AUTO_CONF_HEADER}primary_conninfo = 'host=a port=1'\n")
        );
        let text = "# Do not edit this file manually!\nwork_mem = '4MB'\nprimary_conninfo = 'old'\nPRIMARY_CONNINFO='older'\n";
        let new = auto_conf_set(text, "primary_conninfo", Some("user='x y'"));
        assert_eq!(
            new,
            "# Do not edit this file manually!\nwork_mem = '4MB'\nprimary_conninfo = 'user=''x y'''\n"
        );
        assert_eq!(
            auto_conf_get(&new, "primary_conninfo").as_deref(),
            Some("user='x y'")
        );
        assert_eq!(auto_conf_get(&new, "work_mem").as_deref(), Some("4MB"));
        assert_eq!(
            auto_conf_get(text, "primary_conninfo").as_deref(),
            Some("older")
        );
        let removed = auto_conf_set(&new, "primary_conninfo", None);
        assert_eq!(auto_conf_get(&removed, "primary_conninfo"), None);
        assert!(removed.contains("work_mem"));
        assert_eq!(
            auto_conf_get("# primary_conninfo = 'x'\n", "primary_conninfo"),
            None
        );
    }
}
