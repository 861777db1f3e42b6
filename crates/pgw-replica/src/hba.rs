//! Whether a primary's pg_hba.conf admits a replication connection from us: a pure
//! function over the rules `pg_hba_file_rules` lists, so the matching is tested without a
//! server. pg_hba.conf is read top to bottom and the first matching line decides, `reject`
//! included; `all` in the database column does not match replication connections, only
//! the `replication` keyword does.

use std::net::IpAddr;

/// One line of pg_hba.conf, as `pg_hba_file_rules` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaRule {
    pub line: i32,
    /// local, host, hostssl, hostnossl, hostgssenc, hostnogssenc.
    pub kind: String,
    pub databases: Vec<String>,
    /// Role names, `all`, or `+group`.
    pub users: Vec<String>,
    /// An IP address, `all`, `samehost`, `samenet` or a host name; None for `local`.
    pub address: Option<String>,
    pub netmask: Option<String>,
    pub method: String,
}

/// What pg_hba.conf does with our replication connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HbaVerdict {
    /// Line `line` admits it with `method`.
    Admits { line: i32, method: String },
    /// Line `line` rejects it.
    Rejects { line: i32 },
    /// No line matches: the server refuses it.
    NoRule,
}

/// The first rule of `rules` (in line order) that matches a replication connection of
/// `user` (a member of the roles `member_of`) from `client` (None: over a Unix socket).
/// Rules on a host name, `samehost` or `samenet` are taken to match (they depend on DNS and
/// the server's interfaces), as are `hostssl`/`hostnossl` either way (whether the
/// connection uses TLS is the client's choice).
pub fn replication_rule(
    rules: &[HbaRule],
    user: &str,
    member_of: &[String],
    client: Option<IpAddr>,
) -> HbaVerdict {
    let mut sorted: Vec<&HbaRule> = rules.iter().collect();
    sorted.sort_by_key(|r| r.line);
    for r in sorted {
        let kind_ok = match client {
            None => r.kind == "local",
            Some(_) => r.kind.starts_with("host"),
        };
        if !kind_ok || !r.databases.iter().any(|d| d == "replication") {
            continue;
        }
        let user_ok = r.users.iter().any(|u| {
            u == "all"
                || u == user
                || u.strip_prefix('+')
                    .is_some_and(|g| member_of.iter().any(|m| m == g))
        });
        if !user_ok {
            continue;
        }
        if let Some(ip) = client {
            if !address_matches(r.address.as_deref(), r.netmask.as_deref(), ip) {
                continue;
            }
        }
        return if r.method == "reject" {
            HbaVerdict::Rejects { line: r.line }
        } else {
            HbaVerdict::Admits {
                line: r.line,
                method: r.method.clone(),
            }
        };
    }
    HbaVerdict::NoRule
}

/// Whether `ip` is within `address`/`netmask`.
fn address_matches(address: Option<&str>, netmask: Option<&str>, ip: IpAddr) -> bool {
    let Some(address) = address else {
        return false;
    };
    let Ok(net) = address.parse::<IpAddr>() else {
        // all, samehost, samenet, a host name.
        return true;
    };
    let Some(mask) = netmask.and_then(|m| m.parse::<IpAddr>().ok()) else {
        return net == ip;
    };
    match (net, mask, ip) {
        (IpAddr::V4(n), IpAddr::V4(m), IpAddr::V4(i)) => {
            u32::from(n) & u32::from(m) == u32::from(i) & u32::from(m)
        }
        (IpAddr::V6(n), IpAddr::V6(m), IpAddr::V6(i)) => {
            u128::from(n) & u128::from(m) == u128::from(i) & u128::from(m)
        }
        (IpAddr::V6(n), IpAddr::V6(m), IpAddr::V4(i)) => {
            let i = i.to_ipv6_mapped();
            u128::from(n) & u128::from(m) == u128::from(i) & u128::from(m)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        line: i32,
        kind: &str,
        db: &str,
        user: &str,
        addr: Option<(&str, &str)>,
        method: &str,
    ) -> HbaRule {
        HbaRule {
            line,
            kind: kind.into(),
            databases: vec![db.into()],
            users: vec![user.into()],
            address: addr.map(|a| a.0.into()),
            netmask: addr.map(|a| a.1.into()),
            method: method.into(),
        }
    }

    const LOOP: (&str, &str) = ("127.0.0.1", "255.255.255.255");
    const TEN: (&str, &str) = ("10.0.0.0", "255.0.0.0");

    #[test]
    fn first_matching_line_decides() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let cases: Vec<(Vec<HbaRule>, &str, Option<IpAddr>, HbaVerdict)> = vec![
            // "all" does not cover replication.
            (
                vec![rule(1, "host", "all", "all", Some(TEN), "scram-sha-256")],
                "rep",
                Some(ip),
                HbaVerdict::NoRule,
            ),
            (
                vec![rule(
                    3,
                    "host",
                    "replication",
                    "rep",
                    Some(TEN),
                    "scram-sha-256",
                )],
                "rep",
                Some(ip),
                HbaVerdict::Admits {
                    line: 3,
                    method: "scram-sha-256".into(),
                },
            ),
            // Another address.
            (
                vec![rule(3, "host", "replication", "rep", Some(LOOP), "trust")],
                "rep",
                Some(ip),
                HbaVerdict::NoRule,
            ),
            (
                vec![rule(3, "host", "replication", "rep", Some(LOOP), "trust")],
                "rep",
                Some(lo),
                HbaVerdict::Admits {
                    line: 3,
                    method: "trust".into(),
                },
            ),
            // Another user.
            (
                vec![rule(3, "host", "replication", "app", Some(TEN), "md5")],
                "rep",
                Some(ip),
                HbaVerdict::NoRule,
            ),
            // A reject line before the admitting one wins, wherever it sits in the list.
            (
                vec![
                    rule(9, "host", "replication", "all", Some(TEN), "md5"),
                    rule(2, "host", "replication", "rep", Some(TEN), "reject"),
                ],
                "rep",
                Some(ip),
                HbaVerdict::Rejects { line: 2 },
            ),
            // Over a socket only local lines count.
            (
                vec![rule(1, "host", "replication", "all", Some(LOOP), "trust")],
                "rep",
                None,
                HbaVerdict::NoRule,
            ),
            (
                vec![rule(1, "local", "replication", "all", None, "peer")],
                "rep",
                None,
                HbaVerdict::Admits {
                    line: 1,
                    method: "peer".into(),
                },
            ),
            // A group the user belongs to.
            (
                vec![rule(
                    4,
                    "hostssl",
                    "replication",
                    "+replicators",
                    Some(TEN),
                    "cert",
                )],
                "rep",
                Some(ip),
                HbaVerdict::Admits {
                    line: 4,
                    method: "cert".into(),
                },
            ),
            // A host name is taken to match.
            (
                vec![HbaRule {
                    address: Some("db2.example".into()),
                    netmask: None,
                    ..rule(5, "host", "replication", "all", None, "md5")
                }],
                "rep",
                Some(ip),
                HbaVerdict::Admits {
                    line: 5,
                    method: "md5".into(),
                },
            ),
        ];
        for (rules, user, client, want) in cases {
            let got = replication_rule(&rules, user, &["replicators".to_string()], client);
            assert_eq!(got, want, "{rules:?} {user} {client:?}");
        }
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let v6 = |a: &str, m: &str| address_matches(Some(a), Some(m), "::1".parse().unwrap());
        assert!(v6("::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
        assert!(!v6("::2", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
        assert!(address_matches(
            Some("::ffff:10.0.0.0"),
            Some("ffff:ffff:ffff:ffff:ffff:ffff:ff00:0"),
            "10.9.9.9".parse().unwrap()
        ));
        assert!(!address_matches(
            Some("10.0.0.0"),
            Some("255.0.0.0"),
            "::1".parse().unwrap()
        ));
    }
}
