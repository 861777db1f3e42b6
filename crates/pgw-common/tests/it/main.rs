//! Connections against real throwaway clusters: passwords, TLS modes, errors.

mod sql;

use std::collections::HashMap;
use std::path::Path;

use pgw_cluster::Cluster;
use pgw_common::conninfo::{ConnParams, Env};
use pgw_common::{connect, report};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

struct NoEnv;
impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
    fn home(&self) -> Option<std::path::PathBuf> {
        None
    }
    fn os_user(&self) -> Option<String> {
        None
    }
}

/// Only the given environment variables.
struct Vars(HashMap<&'static str, String>);
impl Env for Vars {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
    fn home(&self) -> Option<std::path::PathBuf> {
        None
    }
    fn os_user(&self) -> Option<String> {
        None
    }
}

fn params(dsn: &str) -> ConnParams {
    ConnParams::resolve(Some(dsn), &NoEnv).expect("valid dsn")
}

async fn ssl_in_use(dsn: &str) -> Result<bool, String> {
    ssl_in_use_with(&params(dsn)).await
}

async fn ssl_in_use_with(params: &ConnParams) -> Result<bool, String> {
    let client = connect(params).await.map_err(|e| report(&e))?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| report(&e))?;
    Ok(row.get(0))
}

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki(names: &[&str]) -> Pki {
    pki_with_client(names, "unused").0
}

/// A CA, a server certificate for `names`, and a client certificate and key for the
/// database user `client_cn`, all signed by that CA.
fn pki_with_client(names: &[&str], client_cn: &str) -> (Pki, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "pgwarden test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client
        .distinguished_name
        .push(DnType::CommonName, client_cn);
    let client_cert = client.signed_by(&client_key, &ca_cert, &ca_key).unwrap();
    (
        Pki {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        },
        client_cert.pem(),
        client_key.serialize_pem(),
    )
}

fn tls_cluster(p: &Pki) -> Cluster {
    Cluster::builder()
        .file("server.crt", p.cert_pem.clone())
        .file("server.key", p.key_pem.clone())
        .setting("ssl", "on")
        .setting("ssl_cert_file", "server.crt")
        .setting("ssl_key_file", "server.key")
        .start()
        .expect("start a TLS cluster")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Writes a password file with mode 0600, as libpq demands.
fn write_passfile(dir: &Path, text: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = write(dir, "pgpass", text);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// A value for a password file field: `:` and `\` escaped.
fn passfile_field(s: &str) -> String {
    s.replace('\\', "\\\\").replace(':', "\\:")
}

/// A URI host: percent-encoded so a socket directory fits.
fn uri_host(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The address the client is connected to: `None` over a Unix socket.
async fn server_addr(params: &ConnParams) -> Result<Option<String>, String> {
    let client = connect(params).await.map_err(|e| report(&e))?;
    let row = client
        .query_one("SELECT inet_server_addr()::text", &[])
        .await
        .map_err(|e| report(&e))?;
    Ok(row.get(0))
}

#[tokio::test]
async fn tls_modes_follow_libpq() {
    let p = pki(&["localhost"]);
    let c = tls_cluster(&p);
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &p.ca_pem);
    let other_ca = write(dir.path(), "other.pem", &pki(&["localhost"]).ca_pem);
    let base = format!(
        "port={} user=postgres password={} dbname=postgres",
        c.port(),
        c.password()
    );

    assert_eq!(
        ssl_in_use(&format!("host=127.0.0.1 {base} sslmode=disable")).await,
        Ok(false)
    );
    assert_eq!(
        ssl_in_use(&format!("host=127.0.0.1 {base} sslmode=prefer")).await,
        Ok(true)
    );
    assert_eq!(
        ssl_in_use(&format!("host=127.0.0.1 {base} sslmode=require")).await,
        Ok(true)
    );
    // verify-ca checks the chain, not the name.
    assert_eq!(
        ssl_in_use(&format!(
            "host=127.0.0.1 {base} sslmode=verify-ca sslrootcert={ca}"
        ))
        .await,
        Ok(true)
    );
    // verify-full checks the name as well.
    assert_eq!(
        ssl_in_use(&format!(
            "host=localhost {base} sslmode=verify-full sslrootcert={ca}"
        ))
        .await,
        Ok(true)
    );
    let wrong_name = ssl_in_use(&format!(
        "host=127.0.0.1 {base} sslmode=verify-full sslrootcert={ca}"
    ))
    .await
    .unwrap_err();
    assert!(wrong_name.contains("connect to"), "{wrong_name}");
    assert!(!wrong_name.contains('\n'), "one line: {wrong_name}");
    let wrong_ca = ssl_in_use(&format!(
        "host=localhost {base} sslmode=verify-ca sslrootcert={other_ca}"
    ))
    .await
    .unwrap_err();
    assert!(
        wrong_ca.to_lowercase().contains("certificate"),
        "{wrong_ca}"
    );
    // verify-full without a root certificate is refused before connecting.
    let no_root = ssl_in_use(&format!("host=localhost {base} sslmode=verify-full"))
        .await
        .unwrap_err();
    assert!(no_root.contains("sslrootcert"), "{no_root}");
}

#[tokio::test]
async fn require_fails_against_a_server_without_tls() {
    let c = Cluster::start().expect("start a cluster");
    let dsn = format!(
        "host=127.0.0.1 port={} user=postgres password={} sslmode=require",
        c.port(),
        c.password()
    );
    let err = ssl_in_use(&dsn).await.unwrap_err();
    assert!(err.contains("connect to"), "{err}");
    // prefer falls back to plain text.
    let dsn = format!(
        "host=127.0.0.1 port={} user=postgres password={} sslmode=prefer",
        c.port(),
        c.password()
    );
    assert_eq!(ssl_in_use(&dsn).await, Ok(false));
}

#[tokio::test]
async fn uri_and_socket_connections() {
    let c = Cluster::start().expect("start a cluster");
    // The URI form.
    let client = connect(&params(&c.uri()))
        .await
        .map_err(|e| report(&e))
        .unwrap();
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    // A Unix socket directory as host (trust auth for local connections in the harness).
    let dsn = format!(
        "host={} port={} user=postgres dbname=postgres",
        c.socket_dir().display(),
        c.port()
    );
    let p = params(&dsn);
    assert!(p.is_local());
    let client = connect(&p).await.map_err(|e| report(&e)).unwrap();
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test]
async fn hostaddr_carries_the_connection_and_host_names_the_certificate() {
    let p = pki(&["localhost"]);
    let c = tls_cluster(&p);
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &p.ca_pem);
    let base = format!(
        "hostaddr=127.0.0.1 port={} user=postgres password={} dbname=postgres",
        c.port(),
        c.password()
    );
    // TCP goes to hostaddr; the certificate is checked against host.
    let dsn = format!("host=localhost {base} sslmode=verify-full sslrootcert={ca}");
    let ps = params(&dsn);
    assert_eq!(ps.hosts, vec!["localhost"]);
    assert_eq!(ssl_in_use_with(&ps).await, Ok(true));
    // The host name is never looked up: a name that does not resolve still connects.
    assert_eq!(
        ssl_in_use(&format!("host=db.invalid {base} sslmode=require")).await,
        Ok(true)
    );
    let wrong = ssl_in_use(&format!(
        "host=db.invalid {base} sslmode=verify-full sslrootcert={ca}"
    ))
    .await
    .unwrap_err();
    assert!(wrong.contains("connect to"), "{wrong}");
    assert!(wrong.to_lowercase().contains("certificate"), "{wrong}");
    assert!(!wrong.contains('\n'), "one line: {wrong}");

    // PGHOST from the environment names the host; the DSN's hostaddr still decides
    // where the connection goes.
    let env = Vars(HashMap::from([("PGHOST", "localhost".to_string())]));
    let ps = ConnParams::resolve(
        Some(&format!("{base} sslmode=verify-full sslrootcert={ca}")),
        &env,
    )
    .unwrap();
    assert_eq!(ps.hosts, vec!["localhost"]);
    assert_eq!(ssl_in_use_with(&ps).await, Ok(true));
    // Even a socket directory in PGHOST: hostaddr means TCP, as with libpq.
    let env = Vars(HashMap::from([(
        "PGHOST",
        c.socket_dir().display().to_string(),
    )]));
    let ps = ConnParams::resolve(Some(&format!("{base} sslmode=require")), &env).unwrap();
    assert_eq!(ssl_in_use_with(&ps).await, Ok(true));
    assert_eq!(server_addr(&ps).await, Ok(Some("127.0.0.1/32".to_string())));
}

#[tokio::test]
async fn uri_ports_belong_to_their_own_hosts() {
    let c = Cluster::start().expect("start a cluster");
    let sock = uri_host(&c.socket_dir().display().to_string());
    // The socket directory has no port, so it gets 5432, where this cluster has no
    // socket; the second host has the cluster's port and takes the connection (before
    // the fix the port went to the first host, which then connected over the socket).
    let uri = format!(
        "postgresql://postgres:{}@{sock},127.0.0.1:{}/postgres",
        c.password(),
        c.port()
    );
    let ps = params(&uri);
    assert_eq!(ps.ports, vec![5432, c.port()]);
    assert_eq!(server_addr(&ps).await, Ok(Some("127.0.0.1/32".to_string())));
    // The other way round: the first host has the port and is used, over the socket.
    let uri = format!(
        "postgresql://postgres:{}@{sock}:{},127.0.0.1/postgres",
        c.password(),
        c.port()
    );
    let ps = params(&uri);
    assert_eq!(ps.ports, vec![c.port(), 5432]);
    assert_eq!(server_addr(&ps).await, Ok(None));
    // Three hosts, the middle one on the default port.
    let ps = params(&format!(
        "postgresql://postgres:{}@{sock}:1,{sock},127.0.0.1:{}/postgres",
        c.password(),
        c.port()
    ));
    assert_eq!(ps.ports, vec![1, 5432, c.port()]);
    assert_eq!(server_addr(&ps).await, Ok(Some("127.0.0.1/32".to_string())));
}

#[tokio::test]
async fn passfile_matches_a_socket_directory_by_its_path() {
    // Password authentication over the socket, so the password file matters there.
    let c = Cluster::builder()
        .hba_line("local all all scram-sha-256")
        .start()
        .expect("start a cluster");
    let dir = tempfile::tempdir().unwrap();
    let sock = c.socket_dir().display().to_string();
    let dsn = |passfile: &str| {
        format!(
            "host={sock} port={} user=postgres dbname=postgres passfile={passfile}",
            c.port()
        )
    };
    // "localhost" stands only for libpq's default socket directory, not this one.
    let file = write_passfile(
        dir.path(),
        &format!("localhost:{}:*:*:{}\n", c.port(), c.password()),
    );
    let ps = params(&dsn(&file));
    assert_eq!(ps.password, None);
    let err = connect(&ps).await.map(|_| ()).map_err(|e| report(&e));
    assert!(err.is_err(), "connected without a password");
    // The directory written out matches.
    let file = write_passfile(
        dir.path(),
        &format!(
            "localhost:*:*:*:wrong\n{}:{}:postgres:postgres:{}\n",
            passfile_field(&sock),
            c.port(),
            c.password()
        ),
    );
    let ps = params(&dsn(&file));
    assert_eq!(ps.password.as_deref(), Some(c.password()));
    assert_eq!(server_addr(&ps).await, Ok(None));
}

#[tokio::test]
async fn client_certificates_need_their_keys() {
    let (p, client_cert, client_key) = pki_with_client(&["localhost"], "postgres");
    let c = Cluster::builder()
        .file("server.crt", p.cert_pem.clone())
        .file("server.key", p.key_pem.clone())
        .file("ca.crt", p.ca_pem.clone())
        .setting("ssl", "on")
        .setting("ssl_cert_file", "server.crt")
        .setting("ssl_key_file", "server.key")
        .setting("ssl_ca_file", "ca.crt")
        .hba_line("hostssl all all 127.0.0.1/32 cert")
        .start()
        .expect("start a TLS cluster");
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &p.ca_pem);
    let cert = write(dir.path(), "client.crt", &client_cert);
    let key = write(dir.path(), "client.key", &client_key);
    let base = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user=postgres dbname=postgres \
         sslmode=verify-full sslrootcert={ca}",
        c.port()
    );
    // Certificate authentication: no password, the key proves the certificate.
    assert_eq!(
        ssl_in_use(&format!("{base} sslcert={cert} sslkey={key}")).await,
        Ok(true)
    );
    // A certificate without its key is refused before connecting, in one line.
    let err = ssl_in_use(&format!("{base} sslcert={cert}"))
        .await
        .unwrap_err();
    assert!(
        err.starts_with("set up TLS for postgres@localhost(127.0.0.1)"),
        "{err}"
    );
    assert!(err.contains("given without its private key"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
    let err = ssl_in_use(&format!("{base} sslkey={key}"))
        .await
        .unwrap_err();
    assert!(err.contains("given without its certificate"), "{err}");
    // The server does insist on a certificate.
    let err = connect(&params(&format!(
        "host=localhost port={} sslmode=require",
        c.port()
    )))
    .await
    .map(|_| ())
    .map_err(|e| report(&e));
    assert!(err.is_err(), "cert auth without a certificate");
    // sslrootcert=system with verify-ca is refused as a DSN error, before any connection.
    let e = ConnParams::resolve(
        Some("host=localhost sslmode=verify-ca sslrootcert=system"),
        &NoEnv,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "weak sslmode \"verify-ca\" may not be used with sslrootcert=system (use \"verify-full\")"
    );
}
