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
//! `sslrootcert=system` uses the operating system's trust store (as libpq 16 does), and
//! only with `verify-full`: any publicly trusted certificate would pass a chain check.
//!
//! A client certificate needs its key and a key its certificate: `sslcert` and `sslkey`
//! either both resolve to files or TLS is not set up (libpq: "certificate present, but
//! not private key file").

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
    #[error("weak sslmode \"{0}\" may not be used with sslrootcert=system (use \"verify-full\")")]
    WeakSystemRoots(SslMode),
    #[error("client certificate {0} given without its private key: set sslkey")]
    CertWithoutKey(PathBuf),
    #[error("client key {0} given without its certificate: set sslcert")]
    KeyWithoutCert(PathBuf),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration `params` asks for.
pub fn client_config(params: &ConnParams) -> Result<ClientConfig, TlsError> {
    client_config_from(&TlsFiles {
        sslmode: params.sslmode,
        sslrootcert: params.sslrootcert.clone(),
        sslcert: params.sslcert.clone(),
        sslkey: params.sslkey.clone(),
    })
}

/// The TLS part of a connection's parameters (for callers without a whole [`ConnParams`],
/// such as the pooler's server side).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
}

/// The rustls client configuration for `params`' sslmode and files.
pub fn client_config_from(params: &TlsFiles) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;

    // Checked again here (ConnParams::resolve refuses it too) because the fields are public.
    if params.sslrootcert.as_deref() == Some(Path::new("system"))
        && params.sslmode != SslMode::VerifyFull
    {
        return Err(TlsError::WeakSystemRoots(params.sslmode));
    }

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
        // No TLS, so no client certificate to present.
        _ if params.sslmode == SslMode::Disable => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let certs = read_certs(cert, "client certificate")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Read {
                what: "client key",
                path: key.clone(),
                source,
            })?;
            builder.with_client_auth_cert(certs, key)?
        }
        (Some(cert), None) => return Err(TlsError::CertWithoutKey(cert.clone())),
        (None, Some(key)) => return Err(TlsError::KeyWithoutCert(key.clone())),
        (None, None) => builder.with_no_client_auth(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conninfo::Env;

    struct NoEnv;
    impl Env for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
        fn home(&self) -> Option<PathBuf> {
            None
        }
        fn os_user(&self) -> Option<String> {
            None
        }
    }

    fn params(dsn: &str) -> ConnParams {
        ConnParams::resolve(Some(dsn), &NoEnv).expect("valid dsn")
    }

    fn refused(p: &ConnParams) -> String {
        let msg = client_config(p).expect_err("refused").to_string();
        assert!(!msg.contains('\n'), "one line: {msg}");
        msg
    }

    #[test]
    fn client_certificate_and_key_go_together() {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["client".to_string()]).unwrap();
        let cert = dir.path().join("client.crt");
        let key = dir.path().join("client.key");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
        let (cert, key) = (cert.display(), key.display());

        let msg = refused(&params(&format!("sslmode=require sslcert={cert}")));
        assert_eq!(
            msg,
            format!("client certificate {cert} given without its private key: set sslkey")
        );
        let msg = refused(&params(&format!("sslmode=prefer sslkey={key}")));
        assert_eq!(
            msg,
            format!("client key {key} given without its certificate: set sslcert")
        );
        // A named file that is missing is an error too, not silently skipped.
        let msg = refused(&params(&format!(
            "sslmode=require sslcert={cert}.missing sslkey={key}"
        )));
        assert!(
            msg.starts_with(&format!("read client certificate {cert}.missing")),
            "{msg}"
        );
        let config = client_config(&params(&format!(
            "sslmode=require sslcert={cert} sslkey={key}"
        )))
        .unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
        // Without TLS nothing is presented, so nothing is checked.
        let config = client_config(&params(&format!("sslmode=disable sslcert={cert}"))).unwrap();
        assert!(!config.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn system_roots_only_with_verify_full() {
        // ConnParams::resolve refuses this; params built or changed by hand are checked too.
        let mut p = params("host=db.example sslrootcert=system");
        assert_eq!(p.sslmode, SslMode::VerifyFull);
        for mode in [SslMode::Require, SslMode::VerifyCa, SslMode::Prefer] {
            p.sslmode = mode;
            assert_eq!(
                refused(&p),
                format!(
                    "weak sslmode \"{mode}\" may not be used with sslrootcert=system (use \"verify-full\")"
                )
            );
        }
    }
}
