//! Unit tests of `conninfo.rs`.

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
        Some("postgresql://al%40ice:p%3Aw@[::1]:5555/my%20db?sslmode=require&application_name=x"),
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
    let text =
        "# comment\nother:5432:*:*:nope\nh\\:x:*:db:u:first\nh:5432:*:u:second\n*:*:*:*:fallback\n";
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

fn err(dsn: &str, e: &FakeEnv) -> String {
    let msg = ConnParams::resolve(Some(dsn), e)
        .expect_err("invalid dsn")
        .to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    msg
}

#[test]
fn uri_ports_line_up_with_their_hosts() {
    let e = env(&[("PGPORT", "7000")]);
    let p = ok(Some("postgres://h1,h2:6000"), &e);
    assert_eq!(p.hosts, vec!["h1", "h2"]);
    assert_eq!(p.ports, vec![5432, 6000]);
    assert_eq!((p.port_for(0), p.port_for(1)), (5432, 6000));
    assert_eq!(p.target(), "osuser@h1:5432,h2:6000/osuser");

    let p = ok(Some("postgresql://h1:1,h2,h3:3/db"), &e);
    assert_eq!(p.hosts, vec!["h1", "h2", "h3"]);
    assert_eq!(p.ports, vec![1, 5432, 3]);
    assert_eq!(p.dbname, "db");

    // One host without a port leaves the port to PGPORT, as libpq does; several
    // hosts without ports each get the default (libpq stores "port=,").
    assert_eq!(ok(Some("postgresql://h1/db"), &e).ports, vec![7000]);
    assert_eq!(ok(Some("postgresql://h1/db"), &env(&[])).ports, vec![5432]);
    assert_eq!(ok(Some("postgres://h1,h2"), &e).ports, vec![5432, 5432]);

    let p = ok(
        Some("postgresql://[::1],[fe80::1]:6000,h3?sslmode=disable"),
        &e,
    );
    assert_eq!(p.hosts, vec!["::1", "fe80::1", "h3"]);
    assert_eq!(p.ports, vec![5432, 6000, 5432]);
    assert_eq!(p.sslmode, SslMode::Disable);

    assert_eq!(
        err("postgresql://h1:1,h2:2/db?port=1,2,3", &e),
        "could not match 3 port numbers to 2 hosts"
    );
}

#[test]
fn keyword_port_lists_follow_libpq() {
    let e = env(&[("PGPORT", "7000")]);
    let ports = |dsn: &str| ok(Some(dsn), &e).ports;
    assert_eq!(ports("host=h1,h2 port=5432,"), vec![5432, 5432]);
    assert_eq!(ports("host=h1,h2 port=,6000"), vec![5432, 6000]);
    assert_eq!(ports("host=h1,h2 port=6000"), vec![6000, 6000]);
    assert_eq!(ports("host=h1,h2"), vec![7000, 7000]);
    // An empty port in the DSN is the default port and beats PGPORT.
    assert_eq!(ports("host=h1 port="), vec![5432]);
    assert_eq!(
        err("host=h1 port=5432,", &e),
        "could not match 2 port numbers to 1 hosts"
    );
    assert_eq!(
        err("host=h1,h2,h3 port=1,2", &e),
        "could not match 2 port numbers to 3 hosts"
    );
    assert_eq!(
        err("host=h1,h2 port=1,x", &e),
        "invalid port value \"x\": expected a number from 1 to 65535"
    );
    // The same rules for PGPORT.
    let e = env(&[("PGHOST", "a,b"), ("PGPORT", ",6000")]);
    assert_eq!(ok(None, &e).ports, vec![5432, 6000]);
}

#[test]
fn hostaddr_is_kept_next_to_host() {
    let ip = |s: &str| Some(s.parse::<IpAddr>().expect("an IP"));
    let p = ok(
        Some("host=db.example hostaddr=10.0.0.5 port=6000"),
        &env(&[]),
    );
    assert_eq!(p.hosts, vec!["db.example"]);
    assert_eq!(p.hostaddrs, vec![ip("10.0.0.5")]);
    assert!(!p.is_local());
    assert_eq!(p.target(), "osuser@db.example(10.0.0.5):6000/osuser");

    // Per key: PGHOST no longer displaces the DSN's hostaddr; it names the host.
    let e = env(&[("PGHOST", "envhost"), ("PGHOSTADDR", "10.9.9.9")]);
    let p = ok(Some("hostaddr=127.0.0.1"), &e);
    assert_eq!(p.hosts, vec!["envhost"]);
    assert_eq!(p.hostaddrs, vec![ip("127.0.0.1")]);
    assert!(p.is_local(), "the address connected to is loopback");
    let p = ok(Some("host=dsnhost"), &e);
    assert_eq!(p.hosts, vec!["dsnhost"]);
    assert_eq!(p.hostaddrs, vec![ip("10.9.9.9")]);
    let p = ok(Some("postgresql://db.example/app?hostaddr=10.0.0.5"), &e);
    assert_eq!(p.hosts, vec!["db.example"]);
    assert_eq!(p.hostaddrs, vec![ip("10.0.0.5")]);

    // hostaddr alone: the address also stands for the host (password file, TLS name).
    let p = ok(Some("hostaddr=::1"), &env(&[]));
    assert_eq!(p.hosts, vec!["::1"]);
    assert_eq!(p.hostaddrs, vec![ip("::1")]);
    assert!(p.is_local());

    // Lists pair up by position; an empty hostaddr entry means "look the name up".
    let p = ok(Some("host=a,b hostaddr=10.0.0.1, port=1,2"), &env(&[]));
    assert_eq!(p.hosts, vec!["a", "b"]);
    assert_eq!(p.hostaddrs, vec![ip("10.0.0.1"), None]);
    assert_eq!(p.ports, vec![1, 2]);
    let p = ok(Some("hostaddr=10.0.0.1,10.0.0.2"), &env(&[]));
    assert_eq!(p.hosts, vec!["10.0.0.1", "10.0.0.2"]);
    assert_eq!(p.ports, vec![5432, 5432]);

    let e = env(&[]);
    assert_eq!(
        err("host=a hostaddr=10.0.0.1,10.0.0.2", &e),
        "could not match 1 host names to 2 hostaddr values"
    );
    assert_eq!(
        err("hostaddr=db.example", &e),
        "invalid hostaddr value \"db.example\": expected a numeric IPv4 or IPv6 address"
    );
}

#[test]
fn passfile_maps_only_the_default_socket_dir_to_localhost() {
    use std::os::unix::fs::PermissionsExt;
    let debian = "/var/run/postgresql";
    assert_eq!(passfile_host(debian, debian), "localhost");
    assert_eq!(passfile_host("", debian), "localhost");
    assert_eq!(passfile_host("/tmp", debian), "/tmp");
    assert_eq!(passfile_host("/srv/pg", debian), "/srv/pg");
    assert_eq!(passfile_host("/tmp", "/tmp"), "localhost");
    assert_eq!(passfile_host("db.example", debian), "db.example");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgpass");
    std::fs::write(
        &file,
        "localhost:5432:*:*:for-localhost\n/srv/pg\\:x:5432:*:*:for-srv\n",
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let passfile = file.display().to_string();
    let password = |host: &str| {
        ok(
            Some(&format!("host='{host}' passfile='{passfile}'")),
            &env(&[]),
        )
        .password
    };
    // Through resolve, against whatever this machine's default directory is.
    let default_dir = default_socket_dir();
    assert_eq!(password(&default_dir).as_deref(), Some("for-localhost"));
    assert_eq!(
        ok(Some(&format!("passfile='{passfile}'")), &env(&[]))
            .password
            .as_deref(),
        Some("for-localhost"),
        "no host is the default socket directory"
    );
    assert_eq!(password("/srv/pg:x").as_deref(), Some("for-srv"));
    assert_eq!(password("/some/other/dir"), None);
    assert_eq!(password("localhost").as_deref(), Some("for-localhost"));
    // And directly, with Debian's default when this machine's differs.
    let p = ok(Some("host=/tmp"), &env(&[]));
    assert_eq!(lookup_passfile(&file, &p, debian), None);
    let p = ok(Some(&format!("host={debian}")), &env(&[]));
    assert_eq!(
        lookup_passfile(&file, &p, debian).as_deref(),
        Some("for-localhost")
    );
}

/// Run in a child process whose $USER and $LOGNAME name someone else.
const OS_USER_CHILD: &str = "PGW_COMMON_OS_USER_CHILD";
const NOT_THE_USER: &str = "pgw-not-the-os-user";

#[test]
fn os_user_is_the_effective_uid_not_dollar_user() {
    let euid_name = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .map(|u| u.name);
    assert_eq!(ProcessEnv.os_user(), euid_name);
    if std::env::var_os(OS_USER_CHILD).is_some() {
        assert_ne!(ProcessEnv.os_user().as_deref(), Some(NOT_THE_USER));
        return;
    }
    // `id -un` prints the effective user's name independently of nix.
    if let Ok(out) = std::process::Command::new("id").arg("-un").output() {
        if out.status.success() {
            let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert_eq!(ProcessEnv.os_user(), Some(id));
        }
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "conninfo::tests::os_user_is_the_effective_uid_not_dollar_user",
            "--test-threads=1",
        ])
        .env(OS_USER_CHILD, "1")
        .env("USER", NOT_THE_USER)
        .env("LOGNAME", NOT_THE_USER)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn malformed_ipv6_uris_are_rejected_and_empty_ports_mean_default() {
    let e = env(&[]);
    assert_eq!(
        err("postgresql://[::1]junk:5/db", &e),
        "invalid URI: unexpected \"j\" after IPv6 host address [::1] \
         (expected \":\", \"/\", \"?\" or \",\")"
    );
    assert!(err("postgresql://[::1/db", &e).contains("missing \"]\""));
    assert!(err("postgresql://[]:5/db", &e).contains("may not be empty"));
    assert!(err("postgresql://h:x/db", &e).contains("invalid port value \"x\""));

    let p = ok(Some("postgresql://h:/db"), &e);
    assert_eq!(
        (p.hosts.clone(), p.ports.clone()),
        (vec!["h".into()], vec![5432])
    );
    assert_eq!(p.dbname, "db");
    assert_eq!(ok(Some("postgresql://[::1]:/db"), &e).ports, vec![5432]);
    assert_eq!(
        ok(Some("postgresql://h1:,h2:6000"), &e).ports,
        vec![5432, 6000]
    );
    // As libpq, a lone empty port is not set, so PGPORT still applies.
    let e = env(&[("PGPORT", "7000")]);
    assert_eq!(ok(Some("postgresql://h:/db"), &e).ports, vec![7000]);
}

#[test]
fn uri_errors_never_show_the_password() {
    let e = env(&[]);
    for (uri, expected) in [
        (
            "postgresql://app:S3cr%t!pw@db/app",
            "invalid URI: invalid percent-encoding in the password",
        ),
        (
            "postgresql://app:S3cr%ff!pw@db/app",
            "invalid URI: the password is not valid UTF-8",
        ),
        (
            "postgresql://app:S3cr%00pw@db/app",
            "invalid URI: forbidden value %00 in the password",
        ),
        (
            "postgresql://db/app?password=S3cr%t!pw",
            "invalid URI: invalid percent-encoding in the value of \"password\"",
        ),
    ] {
        let msg = err(uri, &e);
        assert_eq!(msg, expected);
        assert!(!msg.contains("S3cr"), "{msg}");
    }
    // A raw "@" in the password still parses, and a good password is decoded.
    let p = ok(Some("postgresql://app:S3cr@t%21@db/app"), &e);
    assert_eq!(p.password.as_deref(), Some("S3cr@t!"));
    assert_eq!(p.hosts, vec!["db"]);
    // So does a raw "?" (libpq looks for the "@" up to the first "/"), instead of
    // splitting the password into a query string.
    let p = ok(Some("postgresql://app:S3c?r=t@db/app?sslmode=require"), &e);
    assert_eq!(p.password.as_deref(), Some("S3c?r=t"));
    assert_eq!((p.hosts[0].as_str(), p.dbname.as_str()), ("db", "app"));
    assert_eq!(p.sslmode, SslMode::Require);
    // The user name is not secret and is named.
    assert!(err("postgresql://b%zd:pw@db", &e).contains("\"b%zd\""));
}

#[test]
fn sslrootcert_system_requires_verify_full() {
    let e = env(&[]);
    let p = ok(Some("host=db.example sslrootcert=system"), &e);
    assert_eq!(
        p.sslmode,
        SslMode::VerifyFull,
        "libpq's default with system roots"
    );
    assert_eq!(p.sslrootcert.as_deref(), Some(Path::new("system")));
    let p = ok(None, &env(&[("PGSSLROOTCERT", "system")]));
    assert_eq!(p.sslmode, SslMode::VerifyFull);
    assert_eq!(
        ok(Some("sslrootcert=system sslmode=verify-full"), &e).sslmode,
        SslMode::VerifyFull
    );
    assert_eq!(
        err("sslrootcert=system sslmode=verify-ca", &e),
        "weak sslmode \"verify-ca\" may not be used with sslrootcert=system (use \"verify-full\")"
    );
    for mode in ["disable", "allow", "prefer", "require"] {
        let msg = err(&format!("sslrootcert=system sslmode={mode}"), &e);
        assert!(
            msg.starts_with(&format!("weak sslmode \"{mode}\"")),
            "{msg}"
        );
    }
    // PGSSLMODE counts as given.
    let msg = err("sslrootcert=system", &env(&[("PGSSLMODE", "require")]));
    assert!(msg.contains("\"require\""), "{msg}");
}

#[test]
fn client_certificate_defaults_need_both_files() {
    let home = tempfile::tempdir().unwrap();
    let dot = home.path().join(".postgresql");
    std::fs::create_dir(&dot).unwrap();
    let e = FakeEnv(HashMap::new(), Some(home.path().to_path_buf()));
    let crt = dot.join("postgresql.crt");
    let key = dot.join("postgresql.key");

    std::fs::write(&crt, "cert").unwrap();
    let p = ok(None, &e);
    assert_eq!(
        (p.sslcert, p.sslkey),
        (None, None),
        "a default cert alone is ignored"
    );
    // An explicit key takes the default certificate, an explicit certificate needs a key.
    let p = ok(Some("sslkey=/x/client.key"), &e);
    assert_eq!(p.sslcert.as_deref(), Some(crt.as_path()));
    assert_eq!(p.sslkey.as_deref(), Some(Path::new("/x/client.key")));
    let p = ok(Some("sslcert=/x/client.crt"), &e);
    assert_eq!(p.sslcert.as_deref(), Some(Path::new("/x/client.crt")));
    assert_eq!(p.sslkey, None, "refused when TLS is set up");

    std::fs::write(&key, "key").unwrap();
    let p = ok(None, &e);
    assert_eq!(p.sslcert.as_deref(), Some(crt.as_path()));
    assert_eq!(p.sslkey.as_deref(), Some(key.as_path()));
    let p = ok(Some("sslcert=/x/client.crt"), &e);
    assert_eq!(p.sslkey.as_deref(), Some(key.as_path()));

    std::fs::remove_file(&crt).unwrap();
    let p = ok(None, &e);
    assert_eq!(
        (p.sslcert, p.sslkey),
        (None, None),
        "a default key alone is ignored"
    );
    let p = ok(Some("sslkey=/x/client.key"), &e);
    assert_eq!(p.sslcert, None, "refused when TLS is set up");
}
