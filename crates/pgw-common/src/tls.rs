//! TLS for PostgreSQL connections with rustls, following libpq's `sslmode` semantics.
//!
//! | sslmode     | TLS used          | what is verified                                   |
//! |-------------|-------------------|----------------------------------------------------|
//! | disable     | never             | —                                                  |
//! | allow/prefer| if the server can | nothing                                            |
//! | require     | always            | the chain, if a root certificate file exists; else nothing (as libpq) |
//! | verify-ca   | always            | the chain against `sslrootcert`                    |
//! | verify-full | always            | the chain and that the name matches the host       |
//!
//! `sslrootcert=system` uses the operating system's trust store (as libpq 16 does).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::conninfo::{ConnParams, SslMode};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("read {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("root certificate file {0} holds no certificate")]
    NoRoots(PathBuf),
    #[error(
        "sslmode={0} needs a root certificate: set sslrootcert or create ~/.postgresql/root.crt"
    )]
    NoRootFile(SslMode),
    #[error("build TLS configuration")]
    Rustls(#[from] rustls::Error),
    #[error("load the system trust store: {0}")]
    System(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration `params` asks for.
pub fn client_config(params: &ConnParams) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;

    let roots = match params.sslmode {
        SslMode::Disable | SslMode::Allow | SslMode::Prefer => None,
        SslMode::Require => match &params.sslrootcert {
            Some(p) if p.exists() => Some(load_roots(p)?),
            _ => None,
        },
        SslMode::VerifyCa | SslMode::VerifyFull => match &params.sslrootcert {
            Some(p) => Some(load_roots(p)?),
            None => return Err(TlsError::NoRootFile(params.sslmode)),
        },
    };

    let verifier: Arc<dyn ServerCertVerifier> = match roots {
        None => Arc::new(AcceptAny(provider.clone())),
        Some(roots) => {
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
            if params.sslmode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&params.sslcert, &params.sslkey) {
        (Some(cert), Some(key)) if cert.exists() && key.exists() => {
            let certs = read_certs(cert, "client certificate")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Read {
                what: "client key",
                path: key.clone(),
                source,
            })?;
            builder.with_client_auth_cert(certs, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_err = |source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    CertificateDer::pem_file_iter(path)
        .map_err(read_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    if path == Path::new("system") {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            return Err(TlsError::System(
                found
                    .errors
                    .first()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "no certificates found".into()),
            ));
        }
        store.add_parsable_certificates(found.certs);
        return Ok(store);
    }
    let certs = read_certs(path, "root certificate file")?;
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::NoRoots(path.to_path_buf()));
    }
    Ok(store)
}

/// sslmode=prefer/require without a root certificate: encryption without
/// authentication, exactly what libpq does in those modes.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// sslmode=verify-ca: the chain must lead to a trusted root; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
