//! Opening a connection from resolved [`ConnParams`].

use std::time::Duration;

use tokio_postgres::config::{ChannelBinding, SslMode as PgSslMode, TargetSessionAttrs};
use tokio_postgres::Client;

use crate::conninfo::{ConnParams, DsnError, ProcessEnv, SslMode};
use crate::tls::{client_config, TlsError};

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Dsn(#[from] DsnError),
    #[error("set up TLS for {target}")]
    Tls {
        target: String,
        #[source]
        source: TlsError,
    },
    #[error("connect to {target}")]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// Resolves `dsn` against the process environment (PG* variables, ~/.pgpass) and connects.
pub async fn connect_dsn(dsn: Option<&str>) -> Result<(Client, ConnParams), ConnectError> {
    let params = ConnParams::resolve(dsn, &ProcessEnv)?;
    let client = connect(&params).await?;
    Ok((client, params))
}

/// Connects with `params`, trying each host in turn as libpq does (each with its own
/// port and, if given, `hostaddr`); the error is the last host's. The connection's driver
/// task is spawned on the current runtime and ends when the returned client is dropped.
pub async fn connect(params: &ConnParams) -> Result<Client, ConnectError> {
    let target = params.target();
    let mut config = tokio_postgres::Config::new();
    config
        .user(&params.user)
        .dbname(&params.dbname)
        .application_name(&params.application_name)
        .connect_timeout(Duration::from_secs(params.connect_timeout.max(1)))
        .ssl_mode(match params.sslmode {
            SslMode::Disable => PgSslMode::Disable,
            // tokio-postgres has no "allow" (try plain first); "prefer" is the nearest.
            SslMode::Allow | SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });
    if let Some(pw) = &params.password {
        config.password(pw);
    }
    if let Some(o) = &params.options {
        config.options(o);
    }
    if let Some(k) = params.keepalives {
        config.keepalives(k);
    }
    match params.target_session_attrs.as_deref() {
        Some("read-write") => {
            config.target_session_attrs(TargetSessionAttrs::ReadWrite);
        }
        Some("read-only") => {
            config.target_session_attrs(TargetSessionAttrs::ReadOnly);
        }
        Some("any") | None => {}
        Some(other) => {
            return Err(DsnError::BadValue {
                key: "target_session_attrs",
                value: other.to_string(),
                why: "expected any, read-write or read-only",
            }
            .into())
        }
    }
    match params.channel_binding.as_deref() {
        Some("disable") => {
            config.channel_binding(ChannelBinding::Disable);
        }
        Some("require") => {
            config.channel_binding(ChannelBinding::Require);
        }
        Some("prefer") | None => {}
        Some(other) => {
            return Err(DsnError::BadValue {
                key: "channel_binding",
                value: other.to_string(),
                why: "expected disable, prefer or require",
            }
            .into())
        }
    }
    let tls = client_config(params).map_err(|source| ConnectError::Tls {
        target: target.clone(),
        source,
    })?;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
    // One attempt per host rather than one multi-host Config: tokio-postgres wants a
    // hostaddr for every host or for none, and libpq allows them per host.
    let attempts = params.hosts.len().max(1);
    tracing::debug!(server = %target, sslmode = ?params.sslmode, hosts = attempts, "connect");
    let mut i = 0;
    let (client, connection) = loop {
        let mut attempt = config.clone();
        host_config(&mut attempt, params, i);
        match attempt.connect(tls.clone()).await {
            Ok(pair) => break pair,
            Err(e) if i + 1 < attempts => {
                tracing::debug!(
                    host = params.hosts.get(i).map(String::as_str).unwrap_or(""),
                    port = params.port_for(i),
                    error = %error_line(&e),
                    "connection attempt failed; trying the next host"
                );
                i += 1;
            }
            Err(source) => return Err(ConnectError::Connect { target, source }),
        }
    };
    tracing::debug!(server = %target, host = i, "connected");
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %error_line(&e), "connection closed with an error");
        }
    });
    Ok(client)
}

/// Points `config` at host number `i` of `params`: its port, and its `hostaddr` for the
/// TCP connection with the host name kept for the certificate check. A socket directory
/// paired with a `hostaddr` (say PGHOST=/var/run/postgresql and hostaddr=10.0.0.5) connects
/// over TCP, as libpq does; the address then stands in as the TLS name, since
/// tokio-postgres refuses TLS without one.
fn host_config(config: &mut tokio_postgres::Config, params: &ConnParams, i: usize) {
    let host = params.hosts.get(i);
    match (host, params.hostaddr_for(i)) {
        (Some(h), Some(ip)) if h.starts_with('/') => {
            config.host(ip.to_string()).hostaddr(ip);
        }
        (Some(h), Some(ip)) => {
            config.host(h).hostaddr(ip);
        }
        (Some(h), None) => {
            config.host(h);
        }
        (None, Some(ip)) => {
            config.host(ip.to_string()).hostaddr(ip);
        }
        // No host at all: tokio-postgres reports it.
        (None, None) => {}
    }
    config.port(params.port_for(i));
}

/// One line describing a driver error: the server's message for database errors
/// (with its hint), otherwise the chain of causes.
pub fn error_line(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = db.message().to_string();
        if let Some(detail) = db.detail() {
            s.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            s.push_str(&format!("; hint: {hint}"));
        }
        return s;
    }
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// One line for any error chain: each cause once, joined by ": ", with driver errors
/// summarised by [`error_line`]. This is what users see.
pub fn report(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(pg) = err.downcast_ref::<tokio_postgres::Error>() {
            parts.push(error_line(pg));
            break;
        }
        let text = err.to_string();
        if !text.is_empty() && !parts.last().is_some_and(|p| p.ends_with(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}
