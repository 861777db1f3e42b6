//! TLS on both sides with rustls: the acceptor for clients (`client_tls_*`) and the
//! SSLRequest handshake towards servers (`server_tls_*`, through pgw-common's libpq-style
//! verifiers so that verify-ca and verify-full mean what they mean in libpq).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{Settings, TlsMode};
use crate::server::{ServerError, Target};
use crate::stream::Stream;

/// Builds the acceptor for client TLS; None when `client_tls_sslmode` is disable.
pub fn acceptor(s: &Settings) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    if s.client_tls_sslmode == TlsMode::Disable {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&s.client_tls_cert_file, &s.client_tls_key_file) else {
        return Err("client TLS needs client_tls_cert_file and client_tls_key_file".into());
    };
    let certs = read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("client_tls_key_file {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match (&s.client_tls_ca_file, s.client_tls_sslmode) {
        (Some(ca), TlsMode::VerifyCa | TlsMode::VerifyFull) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca)? {
                roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("client TLS certificate and key: {e}"))?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect();
    let certs = certs.map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    Ok(certs)
}

/// The client config for server TLS; None when `server_tls_sslmode` is disable.
pub fn server_client_config(s: &Settings) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    use pgw_common::SslMode;
    let sslmode = match s.server_tls_sslmode {
        TlsMode::Disable => return Ok(None),
        TlsMode::Allow => SslMode::Allow,
        TlsMode::Prefer => SslMode::Prefer,
        TlsMode::Require => SslMode::Require,
        TlsMode::VerifyCa => SslMode::VerifyCa,
        TlsMode::VerifyFull => SslMode::VerifyFull,
    };
    let files = pgw_common::tls::TlsFiles {
        sslmode,
        sslrootcert: s.server_tls_ca_file.clone(),
        sslcert: s.server_tls_cert_file.clone(),
        sslkey: s.server_tls_key_file.clone(),
    };
    pgw_common::tls::client_config_from(&files)
        .map(|c| Some(Arc::new(c)))
        .map_err(|e| format!("server TLS: {e}"))
}

/// Asks a server for TLS (SSLRequest) and shakes hands; plain TCP when the server says
/// no and the mode allows it.
pub async fn connect(mut tcp: TcpStream, t: &Target) -> Result<Stream, ServerError> {
    let io = |e: std::io::Error| ServerError::Io(e.to_string());
    let mut req = [0u8; 8];
    req[..4].copy_from_slice(&8i32.to_be_bytes());
    req[4..].copy_from_slice(&crate::proto::SSL_REQUEST.to_be_bytes());
    tcp.write_all(&req).await.map_err(io)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(io)?;
    let required = matches!(
        t.tls_mode,
        TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull
    );
    match (answer[0], &t.tls) {
        (b'S', Some(config)) => {
            let name = ServerName::try_from(t.host.clone())
                .map_err(|_| ServerError::Auth(format!("{} is not a TLS server name", t.host)))?;
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| ServerError::Auth(format!("TLS with the server: {e}")))?;
            Ok(Stream::TlsClient(Box::new(tls)))
        }
        (b'N', _) if !required => Ok(Stream::Tcp(tcp)),
        (b'N', _) => Err(ServerError::Auth(format!(
            "server_tls_sslmode = {} and the server does not offer TLS",
            t.tls_mode.as_str()
        ))),
        _ => Err(ServerError::Io(
            "the server answered SSLRequest with neither S nor N".into(),
        )),
    }
}
