//! `auth_hba_file` rules for `auth_type = hba`: pg_hba.conf syntax, the subset PgBouncer
//! reads (its `src/hba.c`), minus what pgwarden cannot do.
//!
//! ```text
//! # TYPE     DATABASE        USER          ADDRESS                  METHOD
//! local      all             all                                    scram-sha-256
//! hostssl    app,"my db"     alice,bob     10.0.0.0/8               scram-sha-256
//! host       all             all           192.168.1.0 255.255.255.0 md5
//! hostnossl  all             all           ::1/128                  trust
//! host       all             all           all                      reject
//! ```
//!
//! - Record types `local`, `host`, `hostssl`, `hostnossl` (`hostgssenc`/`hostnogssenc`
//!   are refused).
//! - Database: `all`, `sameuser`, `replication` (matches no normal database; replication
//!   connections are not pooled), names, comma lists, double-quoted names with `""` for
//!   `"` (a quoted keyword is a plain name).
//! - User: `all`, names, comma lists, quoted names.
//! - Address: `all`, CIDR (`10.0.0.0/8`, `::1/128`) or an address followed by a netmask
//!   column. An IPv4 rule matches IPv4 clients only and an IPv6 rule IPv6 clients only;
//!   a client seen as an IPv4-mapped IPv6 address (`::ffff:10.1.2.3`, dual-stack
//!   listener) counts as IPv4.
//! - Methods: `trust`, `reject`, `md5`, `scram-sha-256`, `password` (clear text).
//! - `#` starts a comment anywhere outside quotes. Keywords are case-sensitive, as in
//!   PostgreSQL and PgBouncer.
//!
//! Refused with an error naming `file:line` and what is not supported
//! ([`ConfigError::Parse`], whose `path` is `file:line`): `peer` (PgBouncer supports it
//! on Unix sockets through the peer's uid and `auth_ident_file`; pgwarden pool does not
//! look up socket peers, so a `peer` line is an error rather than a line that silently
//! never matches), `cert`, `ldap` and the other methods, options after the method
//! (`map=`, …), `@file` (PgBouncer reads those; pgwarden does not), `+group`,
//! `samerole`/`samegroup`, `samehost`/`samenet`, host names and domain suffixes, and an
//! address with bits set outside its mask (PgBouncer only warns, and the line then
//! never matches). PgBouncer skips a line it cannot parse and reads on; here the whole
//! file is refused, since a skipped `reject` line would let clients in.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::config::ConfigError;

/// How a matching rule says the client must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HbaMethod {
    /// No password.
    Trust,
    /// Refused.
    Reject,
    /// MD5 (SCRAM when the user's stored secret is a SCRAM secret, as in PostgreSQL).
    Md5,
    /// SCRAM-SHA-256.
    ScramSha256,
    /// Clear-text password.
    Password,
}

impl HbaMethod {
    /// The pg_hba.conf spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HbaMethod::Trust => "trust",
            HbaMethod::Reject => "reject",
            HbaMethod::Md5 => "md5",
            HbaMethod::ScramSha256 => "scram-sha-256",
            HbaMethod::Password => "password",
        }
    }
}

/// How the client is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    /// Over the Unix socket.
    Local,
    /// Over TCP, from `addr`, with TLS or not.
    Host { tls: bool, addr: IpAddr },
}

/// The parsed rules, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hba {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    kind: Kind,
    databases: Names,
    users: Names,
    address: Address,
    method: HbaMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Local,
    Host,
    HostSsl,
    HostNoSsl,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Names {
    all: bool,
    /// Database field only: the database named like the user.
    sameuser: bool,
    names: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Address {
    /// `local` lines, and `all`.
    Any,
    V4 {
        net: u32,
        mask: u32,
    },
    V6 {
        net: u128,
        mask: u128,
    },
}

impl Hba {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Hba, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        match String::from_utf8(bytes) {
            Ok(text) => Hba::parse(&text, path),
            Err(e) => {
                let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
                Err(error(path, line, "not valid UTF-8".into()))
            }
        }
    }

    /// Parses pg_hba.conf text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Hba, ConfigError> {
        let mut rules = Vec::new();
        for (i, line) in text.split('\n').enumerate() {
            let tokens = tokenize(line).map_err(|r| error(origin, i + 1, r))?;
            if tokens.is_empty() {
                continue;
            }
            rules.push(parse_rule(&tokens).map_err(|r| error(origin, i + 1, r))?);
        }
        Ok(Hba { rules })
    }

    /// The first matching rule's method; None when no rule matches (the caller refuses).
    pub fn method(&self, conn: &Conn, database: &str, user: &str) -> Option<HbaMethod> {
        self.rules
            .iter()
            .find(|r| r.matches(conn, database, user))
            .map(|r| r.method)
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules (every connection is refused).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl Rule {
    fn matches(&self, conn: &Conn, database: &str, user: &str) -> bool {
        let addr_ok = match (*conn, self.kind) {
            (Conn::Local, Kind::Local) => true,
            (Conn::Local, _) | (Conn::Host { .. }, Kind::Local) => false,
            (Conn::Host { tls: false, .. }, Kind::HostSsl) => false,
            (Conn::Host { tls: true, .. }, Kind::HostNoSsl) => false,
            (Conn::Host { addr, .. }, _) => self.address.contains(addr),
        };
        addr_ok
            && (self.databases.all
                || (self.databases.sameuser && database == user)
                || self.databases.names.iter().any(|n| n == database))
            && (self.users.all || self.users.names.iter().any(|n| n == user))
    }
}

impl Address {
    fn contains(self, addr: IpAddr) -> bool {
        match (self, addr.to_canonical()) {
            (Address::Any, _) => true,
            (Address::V4 { net, mask }, IpAddr::V4(a)) => u32::from(a) & mask == net,
            (Address::V6 { net, mask }, IpAddr::V6(a)) => u128::from(a) & mask == net,
            _ => false,
        }
    }
}

fn error(origin: &Path, line: usize, reason: String) -> ConfigError {
    ConfigError::Parse {
        path: PathBuf::from(format!("{}:{line}", origin.display())),
        reason,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// Unquoted: keywords, names, addresses, methods.
    Word(String),
    /// Double-quoted, `""` unescaped.
    Quoted(String),
    Comma,
}

/// Splits a line as PgBouncer's `next_token` does: blanks separate, `,` is a token of
/// its own, `#` ends the line, `"…"` is one token.
fn tokenize(line: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut rest = line;
    loop {
        rest = rest.trim_start();
        let Some(c) = rest.chars().next() else {
            return Ok(out);
        };
        match c {
            '#' => return Ok(out),
            ',' => {
                out.push(Tok::Comma);
                rest = &rest[1..];
            }
            '"' => {
                let body = &rest[1..];
                let mut text = String::new();
                let mut chars = body.char_indices();
                loop {
                    match chars.next() {
                        None => return Err("a quoted name without its closing quote".into()),
                        Some((i, '"')) => {
                            if body[i + 1..].starts_with('"') {
                                text.push('"');
                                chars.next();
                            } else {
                                rest = &body[i + 1..];
                                break;
                            }
                        }
                        Some((_, c)) => text.push(c),
                    }
                }
                out.push(Tok::Quoted(text));
            }
            _ => {
                let end = rest
                    .find(|c: char| c == ',' || c == '#' || c == '"' || c.is_whitespace())
                    .unwrap_or(rest.len());
                out.push(Tok::Word(rest[..end].to_owned()));
                rest = &rest[end..];
            }
        }
    }
}

/// A cursor over one line's tokens.
struct Cursor<'a> {
    toks: &'a [Tok],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn next(&mut self) -> Option<&'a Tok> {
        let t = self.toks.get(self.pos);
        self.pos += 1;
        t
    }

    fn peek(&self) -> Option<&'a Tok> {
        self.toks.get(self.pos)
    }
}

fn parse_rule(toks: &[Tok]) -> Result<Rule, String> {
    let mut cur = Cursor { toks, pos: 0 };
    let kind = match cur.next() {
        Some(Tok::Word(w)) => match w.as_str() {
            "local" => Kind::Local,
            "host" => Kind::Host,
            "hostssl" => Kind::HostSsl,
            "hostnossl" => Kind::HostNoSsl,
            "hostgssenc" | "hostnogssenc" => {
                return Err(format!(
                    "record type {w} is not supported by pgwarden pool (no GSSAPI)"
                ))
            }
            _ => {
                return Err(format!(
                    "unknown record type {w:?} (expected local, host, hostssl or hostnossl)"
                ))
            }
        },
        _ => return Err("expected a record type (local, host, hostssl or hostnossl)".into()),
    };
    let databases = names(&mut cur, Field::Database)?;
    let users = names(&mut cur, Field::User)?;
    let address = if kind == Kind::Local {
        Address::Any
    } else {
        address(&mut cur)?
    };
    let method = match cur.next() {
        Some(Tok::Word(m)) => method(m)?,
        Some(Tok::Quoted(_)) => return Err("the method must not be quoted".into()),
        Some(Tok::Comma) => return Err("a `,` where the method should be".into()),
        None => return Err("missing method".into()),
    };
    if cur.peek().is_some() {
        return Err("options after the method (map=, …) are not supported by pgwarden pool".into());
    }
    Ok(Rule {
        kind,
        databases,
        users,
        address,
        method,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Database,
    User,
}

fn names(cur: &mut Cursor<'_>, field: Field) -> Result<Names, String> {
    let label = match field {
        Field::Database => "database",
        Field::User => "user",
    };
    let mut names = Names::default();
    loop {
        match cur.next() {
            None => return Err(format!("missing {label} field")),
            Some(Tok::Comma) => return Err(format!("an empty name in the {label} list")),
            Some(Tok::Quoted(n)) => names.names.push(n.clone()),
            Some(Tok::Word(w)) => match (w.as_str(), field) {
                ("all", _) => names.all = true,
                ("sameuser", Field::Database) => names.sameuser = true,
                // Replication connections are not pooled: the keyword matches nothing.
                ("replication", Field::Database) => {}
                ("samerole" | "samegroup", Field::Database) => {
                    return Err(format!(
                        "{w} is not supported by pgwarden pool (nor by PgBouncer)"
                    ))
                }
                _ if w.starts_with('@') => {
                    return Err(format!(
                        "{label} list from a file ({w}) is not supported by pgwarden pool"
                    ))
                }
                _ if w.starts_with('+') => {
                    return Err(format!(
                        "group membership ({w}) is not supported by pgwarden pool \
                         (nor by PgBouncer)"
                    ))
                }
                _ => names.names.push(w.clone()),
            },
        }
        if cur.peek() == Some(&Tok::Comma) {
            cur.next();
        } else {
            return Ok(names);
        }
    }
}

fn address(cur: &mut Cursor<'_>) -> Result<Address, String> {
    let word = match cur.next() {
        Some(Tok::Word(w)) => w,
        Some(Tok::Quoted(_)) => return Err("the address must not be quoted".into()),
        Some(Tok::Comma) => return Err("a `,` where the address should be".into()),
        None => return Err("missing address".into()),
    };
    match word.as_str() {
        "all" => return Ok(Address::Any),
        "samehost" | "samenet" => {
            return Err(format!(
                "{word} is not supported by pgwarden pool (nor by PgBouncer)"
            ))
        }
        _ => {}
    }
    let (addr_text, prefix) = match word.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (word.as_str(), None),
    };
    let addr: IpAddr = addr_text.parse().map_err(|_| not_an_address(addr_text))?;
    let mask = match prefix {
        Some(p) => {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            match p.parse::<u32>() {
                Ok(bits) if bits <= max && p.bytes().all(|b| b.is_ascii_digit()) => {
                    prefix_mask(addr, bits)
                }
                _ => return Err(format!("invalid mask /{p} (0 to {max} bits)")),
            }
        }
        None => match cur.next() {
            Some(Tok::Word(m)) => match m.parse::<IpAddr>() {
                Ok(mask) if mask.is_ipv4() == addr.is_ipv4() => mask,
                _ => {
                    return Err(format!(
                        "invalid netmask {m} (an address of the same family as {addr})"
                    ))
                }
            },
            _ => return Err(format!("missing netmask after {addr} (or use CIDR)")),
        },
    };
    let address = match (addr, mask) {
        (IpAddr::V4(a), IpAddr::V4(m)) => Address::V4 {
            net: u32::from(a),
            mask: u32::from(m),
        },
        (IpAddr::V6(a), IpAddr::V6(m)) => Address::V6 {
            net: u128::from(a),
            mask: u128::from(m),
        },
        _ => return Err("the netmask is not of the address's family".into()),
    };
    let host_bits = match address {
        Address::V4 { net, mask } => net & !mask != 0,
        Address::V6 { net, mask } => net & !mask != 0,
        Address::Any => false,
    };
    if host_bits {
        return Err(format!(
            "{word}: the address has bits set outside its mask, so it could never match"
        ));
    }
    Ok(address)
}

fn prefix_mask(addr: IpAddr, bits: u32) -> IpAddr {
    match addr {
        IpAddr::V4(_) => IpAddr::from(u32::MAX.checked_shl(32 - bits).unwrap_or(0).to_be_bytes()),
        IpAddr::V6(_) => IpAddr::from(u128::MAX.checked_shl(128 - bits).unwrap_or(0).to_be_bytes()),
    }
}

fn not_an_address(text: &str) -> String {
    if text.starts_with('.') {
        format!("domain suffixes ({text}) are not supported by pgwarden pool (nor by PgBouncer)")
    } else if !text.is_empty()
        && text.chars().any(|c| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        format!(
            "host names ({text}) are not supported by pgwarden pool (nor by PgBouncer); \
             use an address"
        )
    } else {
        format!("{text:?} is not an IP address")
    }
}

fn method(m: &str) -> Result<HbaMethod, String> {
    Ok(match m {
        "trust" => HbaMethod::Trust,
        "reject" => HbaMethod::Reject,
        "md5" => HbaMethod::Md5,
        "scram-sha-256" => HbaMethod::ScramSha256,
        "password" => HbaMethod::Password,
        // PgBouncer checks the Unix socket peer's uid; pgwarden pool does not.
        "peer" => {
            return Err(
                "method peer is not supported by pgwarden pool (it does not look up the \
                 Unix socket peer); use scram-sha-256, md5, password or trust"
                    .into(),
            )
        }
        "cert" | "ldap" | "pam" | "ident" | "gss" | "sspi" | "radius" | "bsd" | "oauth"
        | "krb5" | "crypt" => {
            return Err(format!("method {m} is not supported by pgwarden pool"));
        }
        _ => return Err(format!("unknown method {m:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hba(text: &str) -> Hba {
        Hba::parse(text, Path::new("pg_hba.conf")).unwrap()
    }

    fn err(text: &str) -> String {
        Hba::parse(text, Path::new("pg_hba.conf"))
            .unwrap_err()
            .to_string()
    }

    fn host(addr: &str, tls: bool) -> Conn {
        Conn::Host {
            tls,
            addr: addr.parse().unwrap(),
        }
    }

    const RULES: &str = r#"
# TYPE  DATABASE  USER  ADDRESS  METHOD
local     dbz        userz                       trust
local     all        all                         scram-sha-256
hostssl   all        all        10.0.0.0/8       scram-sha-256
hostnossl all        all        11.0.0.0/8       md5
host      all        all        127.0.0.0  255.255.255.0  password
host      db1        all        0.0.0.0/0        md5
host      all        user1      15.0.0.0/8       md5
host      tmp1,tmp2  user1,user2 , user3    16.0.0.0/8  trust   # comment
host      "q1""q2"   "a , b"    19.0.0.0/8       trust
host      "all"      u19        19.0.0.0/8       password
host      sameuser   all        20.0.0.0/8       trust
host      replication,rep admin  ::1/128         trust
host      mdb        muser      ::1/128          trust
host      mdb        muser      fd00::/8         scram-sha-256
host      mdb        muser      128.0.0.0/9      trust
host      mdb        muser      128.0.0.0/1      md5
host      all        all        all              reject
"#;

    #[test]
    fn first_match_wins() {
        use HbaMethod::*;
        let h = hba(RULES);
        assert_eq!(h.len(), 17);
        let cases: &[(Conn, &str, &str, Option<HbaMethod>)] = &[
            // local lines only match the Unix socket, in order.
            (Conn::Local, "dbz", "userz", Some(Trust)),
            (Conn::Local, "dbz", "other", Some(ScramSha256)),
            (Conn::Local, "x", "y", Some(ScramSha256)),
            // hostssl / hostnossl.
            (host("10.1.2.3", true), "x", "y", Some(ScramSha256)),
            (host("10.1.2.3", false), "x", "y", Some(Reject)),
            (host("11.1.2.3", false), "x", "y", Some(Md5)),
            (host("11.1.2.3", true), "x", "y", Some(Reject)),
            // address + netmask column; host matches with and without TLS.
            (host("127.0.0.9", false), "x", "y", Some(Password)),
            (host("127.0.0.9", true), "x", "y", Some(Password)),
            (host("127.0.1.9", false), "x", "y", Some(Reject)),
            // A named database before a broader rule.
            (host("8.8.8.8", false), "db1", "y", Some(Md5)),
            (host("15.0.0.1", false), "x", "user1", Some(Md5)),
            (host("15.0.0.1", false), "x", "user2", Some(Reject)),
            // Lists, with blanks around commas.
            (host("16.0.0.1", false), "tmp2", "user3", Some(Trust)),
            (host("16.0.0.1", false), "tmp3", "user3", Some(Reject)),
            (host("16.0.0.1", false), "tmp1", "user4", Some(Reject)),
            // Quoted names; a quoted keyword is a plain name.
            (host("19.0.0.1", false), "q1\"q2", "a , b", Some(Trust)),
            (host("19.0.0.1", false), "q1\"q2", "a", Some(Reject)),
            (host("19.0.0.1", false), "all", "u19", Some(Password)),
            (host("19.0.0.1", false), "other", "u19", Some(Reject)),
            // sameuser.
            (host("20.0.0.1", false), "bob", "bob", Some(Trust)),
            (host("20.0.0.1", false), "bob", "alice", Some(Reject)),
            // replication matches no normal database, rep does.
            (host("::1", false), "replication", "admin", Some(Reject)),
            (host("::1", false), "rep", "admin", Some(Trust)),
            // IPv6 CIDR.
            (host("::1", false), "mdb", "muser", Some(Trust)),
            (
                host("fd12:3456::1", false),
                "mdb",
                "muser",
                Some(ScramSha256),
            ),
            (host("fe80::1", false), "mdb", "muser", Some(Reject)),
            // Prefix lengths.
            (host("128.100.0.1", false), "mdb", "muser", Some(Trust)),
            (host("128.200.0.1", false), "mdb", "muser", Some(Md5)),
            (host("255.0.0.1", false), "mdb", "muser", Some(Md5)),
            // An IPv4-mapped client counts as IPv4; IPv4 rules never match IPv6.
            (host("::ffff:10.0.0.1", true), "x", "y", Some(ScramSha256)),
            (
                host("::ffff:128.100.0.1", false),
                "mdb",
                "muser",
                Some(Trust),
            ),
        ];
        for (conn, db, user, want) in cases {
            assert_eq!(h.method(conn, db, user), *want, "{conn:?} {db} {user}");
        }
    }

    #[test]
    fn no_match_is_none() {
        let h = hba("host all all 10.0.0.0/8 md5\nlocal app all trust\n");
        assert_eq!(h.method(&host("192.168.0.1", false), "x", "y"), None);
        assert_eq!(h.method(&Conn::Local, "other", "y"), None);
        assert_eq!(h.method(&host("fd00::1", false), "x", "y"), None);
        let empty = hba("# nothing\n\n   \t\n");
        assert!(empty.is_empty());
        assert_eq!(empty.method(&Conn::Local, "x", "y"), None);
    }

    #[test]
    fn whole_range_and_single_hosts() {
        let h = hba("host all all 0.0.0.0/0 md5\nhost all all ::/0 trust\n\
             host all all 192.168.7.7/32 reject\n");
        assert_eq!(
            h.method(&host("1.2.3.4", false), "x", "y"),
            Some(HbaMethod::Md5)
        );
        assert_eq!(
            h.method(&host("2001:db8::1", false), "x", "y"),
            Some(HbaMethod::Trust)
        );
        let h = hba("host all all 192.168.7.7/32 reject\nhost all all 192.168.7.0/24 md5\n");
        assert_eq!(
            h.method(&host("192.168.7.7", false), "x", "y"),
            Some(HbaMethod::Reject)
        );
        assert_eq!(
            h.method(&host("192.168.7.8", false), "x", "y"),
            Some(HbaMethod::Md5)
        );
        let h = hba("host all all ::1 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff trust\n");
        assert_eq!(
            h.method(&host("::1", false), "x", "y"),
            Some(HbaMethod::Trust)
        );
        assert_eq!(h.method(&host("::2", false), "x", "y"), None);
    }

    #[test]
    fn errors_name_file_line_and_what() {
        let cases = [
            ("local all all peer", "peer is not supported"),
            (
                "hostssl all all 10.0.0.0/8 cert",
                "method cert is not supported",
            ),
            (
                "host all all 10.0.0.0/8 ldap ldapserver=x",
                "method ldap is not supported",
            ),
            (
                "host all all 10.0.0.0/8 md5 map=foo",
                "options after the method",
            ),
            ("host @dbs.txt all 10.0.0.0/8 md5", "from a file (@dbs.txt)"),
            ("host all @users.txt 10.0.0.0/8 md5", "from a file"),
            (
                "host all +admins 10.0.0.0/8 md5",
                "group membership (+admins)",
            ),
            (
                "host samerole all 10.0.0.0/8 md5",
                "samerole is not supported",
            ),
            ("host all all samehost md5", "samehost is not supported"),
            ("host all all samenet md5", "samenet is not supported"),
            (
                "host all all db.example.com md5",
                "host names (db.example.com)",
            ),
            ("host all all .example.com md5", "domain suffixes"),
            ("host all all 10.0.0.0/33 md5", "invalid mask /33"),
            ("host all all ::1/129 md5", "invalid mask /129"),
            ("host all all 10.0.0.1/8 md5", "bits set outside its mask"),
            ("host all all 10.0.0.0 md5", "invalid netmask md5"),
            ("host all all 10.0.0.0", "missing netmask"),
            ("host all all 10.0.0.0 ffff:: md5", "invalid netmask"),
            ("host all all 10.0.0.0/8", "missing method"),
            ("host all all 10.0.0.0/8 md6", "unknown method \"md6\""),
            ("host all all 10.0.0.0/8 \"md5\"", "must not be quoted"),
            ("local all", "missing user field"),
            ("local", "missing database field"),
            ("local a,,b all trust", "empty name in the database list"),
            ("local \"a all trust", "without its closing quote"),
            (
                "hostgssenc all all 10.0.0.0/8 md5",
                "hostgssenc is not supported",
            ),
            (
                "Host all all 10.0.0.0/8 md5",
                "unknown record type \"Host\"",
            ),
            ("host all all 300.0.0.0/8 md5", "is not an IP address"),
            ("host all all all Trust", "unknown method \"Trust\""),
        ];
        for (line, want) in cases {
            let e = err(&format!("# header\nlocal all all trust\n{line}\n"));
            assert!(e.starts_with("pg_hba.conf:3: "), "{line}: {e}");
            assert!(e.contains(want), "{line}: {e}");
        }
    }

    #[test]
    fn load_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hba.conf");
        std::fs::write(
            &path,
            "host all all 10.0.0.0/8 md5\r\nlocal all all trust\r\n",
        )
        .unwrap();
        let h = Hba::load(&path).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h.method(&Conn::Local, "x", "y"), Some(HbaMethod::Trust));
        assert!(matches!(
            Hba::load(&dir.path().join("missing")),
            Err(ConfigError::Read { .. })
        ));
    }
}
