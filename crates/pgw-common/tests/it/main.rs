//! Connections against real throwaway clusters: passwords, TLS modes, errors.

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

fn params(dsn: &str) -> ConnParams {
    ConnParams::resolve(Some(dsn), &NoEnv).expect("valid dsn")
}

async fn ssl_in_use(dsn: &str) -> Result<bool, String> {
    let client = connect(&params(dsn)).await.map_err(|e| report(&e))?;
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
    Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
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
