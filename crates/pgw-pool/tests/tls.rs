//! TLS on both sides of the pooler, against a real PostgreSQL 15 with `ssl = on`: a client
//! that verifies the pooler's certificate (verify-full) gets through, the pooler's server
//! connections are encrypted and checked against the CA (verify-full), a client without
//! TLS is refused when client_tls_sslmode = require. The pooler runs in this process
//! (`pgw_pool::run`) on a free loopback port.

use std::path::Path;
use std::time::Duration;

use pgw_cluster::Cluster;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// A CA and one certificate for `localhost` and 127.0.0.1, used by both the server and
/// the pooler.
fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "pgwarden pool test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_both_sides_and_plain_clients_refused_when_required() {
    let p = pki();
    let cluster = Cluster::builder()
        .file("server.crt", p.cert_pem.clone())
        .file("server.key", p.key_pem.clone())
        .setting("ssl", "on")
        .setting("ssl_cert_file", "server.crt")
        .setting("ssl_key_file", "server.key")
        .start()
        .expect("start a TLS cluster (PostgreSQL 15 must be installed: ./run test)");
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.crt", &p.ca_pem);
    let cert = write(dir.path(), "pool.crt", &p.cert_pem);
    let key = write(dir.path(), "pool.key", &p.key_pem);
    let users = write(
        dir.path(),
        "userlist.txt",
        &format!("\"{}\" \"{}\"\n", cluster.superuser(), cluster.password()),
    );
    let port = pgw_cluster::ports::reserve().unwrap();
    let config = write(
        dir.path(),
        "pool.toml",
        &format!(
            "[pool]\nlisten_port = {port}\nauth_type = \"scram-sha-256\"\nauth_file = \"{users}\"\n\
             pool_mode = \"transaction\"\nclient_tls_sslmode = \"require\"\n\
             client_tls_cert_file = \"{cert}\"\nclient_tls_key_file = \"{key}\"\n\
             server_tls_sslmode = \"verify-full\"\nserver_tls_ca_file = \"{ca}\"\n\n\
             [databases.postgres]\nhost = [\"localhost\"]\nport = {}\n",
            cluster.port()
        ),
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    let pooler = tokio::spawn(pgw_pool::run(
        pgw_pool::Source::Toml(config.into()),
        pgw_pool::Overrides::default(),
        Some(tx),
    ));
    let bound = tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .expect("the pooler listens")
        .expect("the pooler started");
    assert_eq!(bound.tcp[0].port(), port);

    // verify-full against the CA: the pooler presents a certificate for localhost.
    let dsn = format!(
        "host=localhost port={port} user={} password={} dbname=postgres sslmode=verify-full sslrootcert={ca}",
        cluster.superuser(),
        cluster.password()
    );
    let (client, _) = pgw_common::connect_dsn(Some(&dsn))
        .await
        .expect("a verify-full client connects through the pooler");
    let row = client
        .query_one(
            "SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    let server_side_tls: bool = row.get(0);
    assert!(
        server_side_tls,
        "the pooler's server connection is encrypted"
    );
    drop(client);

    // Without TLS: refused by client_tls_sslmode = require.
    let plain = format!(
        "host=127.0.0.1 port={port} user={} password={} dbname=postgres sslmode=disable",
        cluster.superuser(),
        cluster.password()
    );
    let Err(err) = pgw_common::connect_dsn(Some(&plain)).await else {
        panic!("a plain client is refused");
    };
    let text = pgw_common::report(&err);
    assert!(text.contains("SSL required"), "{text}");
    pooler.abort();
}
