//! One client connection from its first byte to its last: TLS negotiation, cancel
//! requests, startup parameters, authentication, then the proxy loop.
//!
//! The proxy loop forwards client messages to the server connection the client holds
//! (taken from the pool on the first message and given back at the end of the
//! transaction, statement or session, by pool mode) and server messages back. In
//! transaction and statement mode it also rewrites named prepared statements
//! ([`crate::prepared`]), replays tracked SET/PREPARE state on whichever server the client
//! gets, and refuses session state it cannot carry. A queue of what each forwarded message
//! expects back (see [`Expect`]) lets the loop answer messages it did not forward (a Parse
//! of a statement the server already has) in the order the client expects, and drop the
//! answers to messages the pooler added.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::{self, ScramServer};
use crate::config::{secs, AuthType, PoolMode, ADMIN_DATABASES};
use crate::ctx::{ClientInfo, Ctx, Pause, Stopping, Tracked, TRACKED_PARAMS};
use crate::hba::{Conn, HbaMethod};
use crate::pool::{Lease, Pool};
use crate::prepared::{lru_victim, Stmt};
use crate::proto::{self, Frame, Startup};
use crate::secret::Secret;
use crate::server::Credential;
use crate::sql::{self, Kind};
use crate::stream::Stream;

/// The largest message accepted from a client.
pub const MAX_CLIENT_MESSAGE: usize = 1 << 30;

/// How a client connected.
pub struct Peer {
    /// The address (None for a Unix socket).
    pub addr: Option<SocketAddr>,
}

/// Why a client's connection ended early; the text goes to the client as FATAL.
struct Fatal {
    code: &'static str,
    message: String,
}

/// A buffer keeps at most this much room once it is empty, during a transaction: a
/// session costs the room its messages need, not what its largest result once took.
const KEEP_BUFFER: usize = 16 * 1024;

/// Gives an empty buffer's room back when it has grown past `keep`.
fn shrink(buf: &mut BytesMut, keep: usize) {
    if buf.is_empty() && buf.capacity() > keep {
        *buf = BytesMut::new();
    }
}

/// Room made for each read from a client: a whole query or Bind/Execute/Sync in one call
/// (and a short read tells the runtime the socket is drained, saving a read that would
/// block).
const READ_CHUNK: usize = 1024;

/// Reads what the client has sent: waits for readiness first with no buffer, so that a
/// client that idles holds none.
async fn read_more(client: &mut Stream, cbuf: &mut BytesMut) -> std::io::Result<usize> {
    client.readable().await?;
    cbuf.reserve(READ_CHUNK);
    client.read_buf(cbuf).await
}

fn fatal(code: &'static str, message: impl Into<String>) -> Fatal {
    Fatal {
        code,
        message: message.into(),
    }
}

/// Serves one client until it disconnects.
///
/// A plain function that boxes the login at once: an async fn keeps room for its arguments
/// for as long as it runs, and every idle client would carry them.
pub fn serve(
    io: Stream,
    peer: Peer,
    ctx: Arc<Ctx>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    // The login (and an admin console connection) runs boxed and is freed before the
    // session loop starts: a task holds room for its future's largest state, and an idle
    // client should cost the idle loop, not the login.
    let login = Box::pin(open(io, peer, ctx));
    async move {
        let Some(mut session) = login.await else {
            return;
        };
        // The proxy loop runs boxed too, and only while the client has something going:
        // between transactions (no server held, nothing pending) the session parks, and a
        // parked client holds its session, its socket and one small wait, which is what an
        // idle client costs.
        let r = loop {
            let step = Box::pin(session.run()).await;
            let more = match step {
                Ok(Step::Park) => session.park().await,
                Ok(Step::Done) => Ok(false),
                Err(e) => Err(e),
            };
            match more {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        Box::pin(session.end(r)).await;
    }
}

/// Startup, authentication and the startup answer; an admin console connection is served
/// here to its end. Some(session) when a pooled session is ready to run.
async fn open(mut io: Stream, peer: Peer, ctx: Arc<Ctx>) -> Option<Box<Session>> {
    let login_timeout = secs(ctx.runtime().config.pool.client_login_timeout);
    let r = match login_timeout {
        Some(t) => tokio::time::timeout(t, startup(&mut io, &peer, &ctx))
            .await
            .unwrap_or_else(|_| Err(fatal("08P01", "client_login_timeout"))),
        None => startup(&mut io, &peer, &ctx).await,
    };
    let mut login = match r {
        Ok(None) => return None,
        Ok(Some(login)) => login,
        Err(e) => {
            let _ = io
                .write_all(&proto::error_response("FATAL", e.code, &e.message))
                .await;
            let _ = io.shutdown().await;
            return None;
        }
    };
    let info = login.info.clone();
    let r = if login.admin {
        let r = match io.write_all(&proto::authentication(0, &[])).await {
            Ok(()) => crate::admin::serve(&mut io, &mut login.cbuf, &ctx, &login.info).await,
            Err(_) => Err("connection lost".to_owned()),
        };
        let _ = io.shutdown().await;
        r.map_err(|m| fatal("08006", m))
    } else if let Some(pool) = login.pool.clone() {
        pool.cl_active.fetch_add(1, Ordering::Relaxed);
        let mut s = Box::new(Session::new(io, pool, login, ctx.clone()));
        match s.start().await {
            Ok(()) => return Some(s),
            Err(e) => s.finish(Err(e)).await,
        }
    } else {
        Err(fatal("3D000", "no pool"))
    };
    client_gone(&ctx, &info, r);
    None
}

/// The bookkeeping when a logged-in client has gone.
fn client_gone(ctx: &Ctx, info: &Arc<ClientInfo>, r: Result<(), Fatal>) {
    ctx.remove_client(info);
    ctx.client_count.fetch_sub(1, Ordering::SeqCst);
    if let Err(e) = r {
        tracing::debug!(client = info.id, error = %e.message, "client closed");
    }
}

/// A logged-in client.
struct Login {
    info: Arc<ClientInfo>,
    pool: Option<Arc<Pool>>,
    admin: bool,
    params: Tracked,
    sets: BTreeMap<String, String>,
    cbuf: BytesMut,
    io_tls: bool,
}

/// The part before the proxy loop; Ok(None) for a cancel request or GSS refusal end.
async fn startup(io: &mut Stream, peer: &Peer, ctx: &Arc<Ctx>) -> Result<Option<Login>, Fatal> {
    let rt = ctx.runtime();
    let mut tls_done = false;
    // Read in as few calls as the client allows (a startup packet usually comes whole);
    // what follows it stays here for the password exchange and then the session.
    let mut sbuf = BytesMut::with_capacity(512);
    let params = loop {
        let n = loop {
            if sbuf.len() >= 4 {
                let len = i32::from_be_bytes([sbuf[0], sbuf[1], sbuf[2], sbuf[3]]);
                let n = proto::startup_len(len)
                    .map_err(|e| fatal("08P01", format!("invalid startup packet: {e}")))?;
                if sbuf.len() >= 4 + n {
                    break n;
                }
                sbuf.reserve(4 + n - sbuf.len());
            }
            match io.read_buf(&mut sbuf).await {
                Ok(0) | Err(_) if sbuf.len() < 4 => return Ok(None),
                Ok(0) | Err(_) => return Err(fatal("08P01", "incomplete startup packet")),
                Ok(_) => {}
            }
        };
        let packet = sbuf.split_to(4 + n);
        let startup =
            proto::parse_startup(&packet[4..]).map_err(|e| fatal("08P01", e.to_string()))?;
        if matches!(startup, Startup::Ssl | Startup::GssEnc) && !sbuf.is_empty() {
            // Bytes sent before the answer to an encryption request would be taken as
            // if they came through the encrypted channel (CVE-2021-23214).
            return Err(fatal(
                "08P01",
                "received unencrypted data after the encryption request",
            ));
        }
        match startup {
            Startup::Ssl if !tls_done => match (&rt.tls, peer.addr.is_some()) {
                (Some(acceptor), true) => {
                    io.write_all(b"S")
                        .await
                        .map_err(|_| fatal("08006", "eof"))?;
                    let Stream::Tcp(tcp) = std::mem::replace(io, Stream::Gone) else {
                        return Err(fatal("08P01", "TLS over this socket"));
                    };
                    let tls = acceptor
                        .accept(tcp)
                        .await
                        .map_err(|e| fatal("08P01", format!("TLS handshake: {e}")))?;
                    *io = Stream::TlsServer(Box::new(tls));
                    tls_done = true;
                }
                _ => {
                    io.write_all(b"N")
                        .await
                        .map_err(|_| fatal("08006", "eof"))?;
                }
            },
            Startup::Ssl => return Err(fatal("08P01", "SSLRequest after TLS")),
            Startup::GssEnc => {
                io.write_all(b"N")
                    .await
                    .map_err(|_| fatal("08006", "eof"))?;
            }
            Startup::Cancel { pid, key } => {
                forward_cancel(ctx, pid, key).await;
                return Ok(None);
            }
            Startup::Params(p) => break p,
        }
    };
    let s = &rt.config.pool;
    if matches!(
        s.client_tls_sslmode,
        crate::config::TlsMode::Require
            | crate::config::TlsMode::VerifyCa
            | crate::config::TlsMode::VerifyFull
    ) && !io.is_tls()
        && peer.addr.is_some()
    {
        return Err(fatal("28000", "SSL required"));
    }
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let user = get("user").ok_or_else(|| fatal("08P01", "no user name in the startup packet"))?;
    let db = get("database").unwrap_or_else(|| user.clone());
    if get("replication").is_some_and(|v| v != "false" && v != "0" && v != "off") {
        return Err(fatal(
            "08P01",
            "replication connections are not supported through pgwarden pool",
        ));
    }
    // Startup parameters: the tracked ones become the client's values; other settings
    // (and `options=-c name=value`) are carried as SETs; ignore_startup_parameters dropped.
    let mut cparams = Tracked::default();
    let mut sets = BTreeMap::new();
    for (k, v) in &params {
        if k == "user" || k == "database" {
            continue;
        }
        if s.ignore_startup_parameters.iter().any(|i| i == k) {
            continue;
        }
        if let Some(t) = TRACKED_PARAMS.iter().find(|t| t.eq_ignore_ascii_case(k)) {
            cparams.set(t, v);
        } else if k == "options" {
            for (name, value) in parse_options(v).map_err(|m| fatal("08P01", m))? {
                sets.insert(name.to_ascii_lowercase(), set_statement(&name, &value));
            }
        } else if is_identifier(k) {
            sets.insert(k.to_ascii_lowercase(), set_statement(k, v));
        } else {
            return Err(fatal(
                "08P01",
                format!("unsupported startup parameter: {k}"),
            ));
        }
    }
    if ctx.client_count.load(Ordering::SeqCst) >= s.max_client_conn as usize {
        return Err(fatal(
            "53300",
            "no more connections allowed (max_client_conn)",
        ));
    }
    if *ctx.stopping.borrow() != Stopping::No {
        return Err(fatal("57P01", "the pooler is shutting down"));
    }
    let admin = ADMIN_DATABASES.contains(&db.as_str());
    if admin {
        let allowed = s
            .admin_users
            .iter()
            .chain(&s.stats_users)
            .any(|u| *u == user);
        if !allowed {
            return Err(fatal(
                "28000",
                format!("not allowed to connect to the console as \"{user}\""),
            ));
        }
    } else if rt.config.database(&db).is_none() {
        return Err(fatal("3D000", format!("no such database: {db}")));
    }
    let (addr, port) = match peer.addr {
        Some(a) => (Some(a.ip()), a.port()),
        None => (None, 0),
    };
    ctx.client_count.fetch_add(1, Ordering::SeqCst);
    let app = cparams
        .get("application_name")
        .unwrap_or_default()
        .to_owned();
    let info = ctx.add_client(&user, &db, addr, port, io.is_tls(), &app);
    let mut login = Login {
        info: info.clone(),
        pool: None,
        admin,
        params: cparams,
        sets,
        cbuf: BytesMut::new(),
        io_tls: io.is_tls(),
    };
    let r = authenticate(io, peer, ctx, &login, &user, &db, &mut sbuf).await;
    if !sbuf.is_empty() {
        login.cbuf = sbuf;
    }
    let proved = match r {
        Ok(p) => p,
        Err(e) => {
            ctx.remove_client(&info);
            ctx.client_count.fetch_sub(1, Ordering::SeqCst);
            return Err(e);
        }
    };
    if !admin {
        // The pool is made only for a client that proved who it is, so that user names
        // tried without a password cannot grow the pooler's memory.
        let Some(pool) = ctx.pool(&db, &user) else {
            ctx.remove_client(&info);
            ctx.client_count.fetch_sub(1, Ordering::SeqCst);
            return Err(fatal("3D000", format!("no such database: {db}")));
        };
        pool.stats.login_count.fetch_add(1, Ordering::Relaxed);
        let forced = rt.config.database(&db).is_some_and(|d| d.user.is_some());
        if !forced {
            let mut c = pool.credential.lock().unwrap_or_else(|e| e.into_inner());
            match proved {
                // SCRAM pass-through: the keys the client proved log in to the server,
                // if it holds the same secret.
                Proved::Keys(k) if matches!(*c, Credential::None | Credential::ScramKeys(_)) => {
                    *c = Credential::ScramKeys(k)
                }
                // A clear-text password makes a SCRAM secret usable towards the server.
                Proved::Password(p) if matches!(*c, Credential::None) => {
                    *c = Credential::Password(p)
                }
                _ => {}
            }
        }
        login.pool = Some(pool);
    }
    Ok(Some(login))
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() < 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// `SET name TO 'value'` with the value quoted as a literal and the name as an identifier
/// path (so no startup value can inject SQL).
fn set_statement(name: &str, value: &str) -> String {
    format!(
        "SET {} TO '{}'",
        quote_path(name),
        value.replace('\'', "''")
    )
}

/// A setting name (`a` or `ext.a`) as quoted identifiers.
fn quote_path(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// `-c name=value` pairs of the `options` startup parameter (backslash escapes spaces).
fn parse_options(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let kv = if w == "-c" {
            it.next().ok_or("options: -c without a setting")?
        } else if let Some(rest) = w.strip_prefix("-c") {
            rest.to_owned()
        } else if let Some(rest) = w.strip_prefix("--") {
            rest.to_owned()
        } else {
            return Err(format!("options: only -c name=value is supported, not {w}"));
        };
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("options: {kv} is not name=value"))?;
        let k = k.replace('-', "_");
        if !is_identifier(&k) {
            return Err(format!("options: {k} is not a setting name"));
        }
        out.push((k, v.to_owned()));
    }
    Ok(out)
}

async fn forward_cancel(ctx: &Ctx, pid: i32, key: i32) {
    let Some(client) = ctx.by_cancel_key(pid, key) else {
        return;
    };
    let target = client
        .cancel_target
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some((t, spid, skey)) = target {
        if let Err(e) = crate::server::cancel(&t, spid, skey).await {
            tracing::debug!(error = %e, "cancel request");
        }
    }
}

async fn read_message(io: &mut Stream, buf: &mut BytesMut) -> Result<Frame, Fatal> {
    loop {
        if let Some(f) = proto::next_frame(buf, 64 * 1024)
            .map_err(|e| fatal("08P01", format!("invalid message: {e}")))?
        {
            return Ok(f);
        }
        let n = io
            .read_buf(buf)
            .await
            .map_err(|_| fatal("08006", "connection lost"))?;
        if n == 0 {
            return Err(fatal("08006", "connection lost"));
        }
    }
}

/// The secret for `user`: the auth file, else auth_query.
async fn lookup_secret(ctx: &Ctx, db: &str, user: &str) -> Result<Option<Secret>, Fatal> {
    let rt = ctx.runtime();
    if let Some(s) = rt.users.get(user) {
        return Ok(Some(s.clone()));
    }
    let s = &rt.config.pool;
    let Some(auth_user) = rt
        .config
        .database(db)
        .and_then(|d| d.auth_user.clone())
        .or_else(|| s.auth_user.clone())
    else {
        return Ok(None);
    };
    let auth_db = s.auth_dbname.clone().unwrap_or_else(|| db.to_owned());
    let pool = ctx
        .pool(&auth_db, &auth_user)
        .ok_or_else(|| fatal("28000", "auth_query: its database is not configured"))?;
    let mut lease = pool
        .acquire(secs(s.query_wait_timeout))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "auth_query: no server connection");
            fatal("28000", "authentication lookup failed")
        })?;
    let r = lease.server.query_secret(&s.auth_query, user).await;
    pool.release(lease);
    match r {
        Ok(Some(text)) => Secret::parse(&text).map(Some).map_err(|e| {
            tracing::warn!(user, error = %e, "auth_query returned a malformed secret");
            fatal("28000", "authentication lookup failed")
        }),
        Ok(None) => Ok(None),
        Err(e) => {
            tracing::warn!(error = %e, "auth_query failed");
            Err(fatal("28000", "authentication lookup failed"))
        }
    }
}

async fn authenticate(
    io: &mut Stream,
    peer: &Peer,
    ctx: &Ctx,
    login: &Login,
    user: &str,
    db: &str,
    buf: &mut BytesMut,
) -> Result<Proved, Fatal> {
    let rt = ctx.runtime();
    let mut proved = Proved::Nothing;
    let s = &rt.config.pool;
    let failed = || {
        fatal(
            "28P01",
            format!("password authentication failed for user \"{user}\""),
        )
    };
    let method = match s.auth_type {
        AuthType::Hba => {
            let conn = match peer.addr {
                Some(a) => Conn::Host {
                    tls: login.io_tls,
                    addr: a.ip(),
                },
                None => Conn::Local,
            };
            let hba = rt
                .hba
                .as_ref()
                .ok_or_else(|| fatal("28000", "no auth_hba_file loaded"))?;
            match hba.method(&conn, db, user) {
                None | Some(HbaMethod::Reject) => {
                    return Err(fatal(
                        "28000",
                        format!("no pg_hba rule admits user \"{user}\" to database \"{db}\""),
                    ))
                }
                Some(HbaMethod::Trust) => AuthType::Trust,
                Some(HbaMethod::Md5) => AuthType::Md5,
                Some(HbaMethod::ScramSha256) => AuthType::ScramSha256,
                Some(HbaMethod::Password) => AuthType::Plain,
            }
        }
        other => other,
    };
    let secret = match method {
        AuthType::Any => None,
        _ => lookup_secret(ctx, db, user).await?,
    };
    match (method, &secret) {
        (AuthType::Any, _) => {}
        (AuthType::Trust, Some(_)) => {}
        (AuthType::Trust, None) => return Err(failed()),
        (_, None) => {
            // Ask for a password anyway so that a missing user looks like a wrong password.
            let salt = auth::random_salt();
            let _ = io.write_all(&proto::authentication(5, &salt)).await;
            let _ = read_message(io, buf).await;
            return Err(failed());
        }
        (AuthType::Plain, Some(sec)) => {
            io.write_all(&proto::authentication(3, &[]))
                .await
                .map_err(|_| fatal("08006", "eof"))?;
            let m = read_message(io, buf).await?;
            if m.tag != b'p' {
                return Err(fatal("08P01", "expected a password message"));
            }
            let pw = proto::parse_password(m.body()).map_err(|e| fatal("08P01", e.to_string()))?;
            if !auth::password_check(sec, user, pw) {
                return Err(failed());
            }
            if let Secret::Scram(_) = sec {
                proved = Proved::Password(String::from_utf8_lossy(pw).into_owned());
            }
        }
        (AuthType::Md5, Some(sec @ (Secret::Plain(_) | Secret::Md5(_)))) => {
            let salt = auth::random_salt();
            io.write_all(&proto::authentication(5, &salt))
                .await
                .map_err(|_| fatal("08006", "eof"))?;
            let m = read_message(io, buf).await?;
            if m.tag != b'p' {
                return Err(fatal("08P01", "expected a password message"));
            }
            let resp =
                proto::parse_password(m.body()).map_err(|e| fatal("08P01", e.to_string()))?;
            if !auth::md5_check(sec, user, salt, resp) {
                return Err(failed());
            }
        }
        (AuthType::Md5 | AuthType::ScramSha256, Some(sec)) => {
            let mut server = ScramServer::new(sec).map_err(|_| {
                fatal(
                    "28000",
                    format!("user \"{user}\" has an MD5 secret, which cannot do SCRAM"),
                )
            })?;
            io.write_all(&proto::authentication(10, b"SCRAM-SHA-256\0\0"))
                .await
                .map_err(|_| fatal("08006", "eof"))?;
            let m = read_message(io, buf).await?;
            if m.tag != b'p' {
                return Err(fatal("08P01", "expected a SASL message"));
            }
            let (mech, data) =
                proto::parse_sasl_initial(m.body()).map_err(|e| fatal("08P01", e.to_string()))?;
            if mech != "SCRAM-SHA-256" {
                return Err(fatal(
                    "28000",
                    format!("SASL mechanism {mech} is not supported"),
                ));
            }
            let first = server
                .server_first(data)
                .map_err(|e| fatal("08P01", e.to_string()))?;
            io.write_all(&proto::authentication(11, &first))
                .await
                .map_err(|_| fatal("08006", "eof"))?;
            let m = read_message(io, buf).await?;
            if m.tag != b'p' {
                return Err(fatal("08P01", "expected a SASL response"));
            }
            let (last, keys) = match server.server_final(m.body()) {
                Ok(x) => x,
                Err(auth::AuthError::WrongPassword) => return Err(failed()),
                Err(e) => return Err(fatal("08P01", e.to_string())),
            };
            io.write_all(&proto::authentication(12, &last))
                .await
                .map_err(|_| fatal("08006", "eof"))?;
            if let Secret::Scram(_) = sec {
                proved = Proved::Keys(keys);
            }
        }
        (AuthType::Hba, _) => return Err(failed()),
    }
    // AuthenticationOk goes out with the startup answer, in one write.
    Ok(proved)
}

/// What a client proved at login that can log the pooler in to the server for it.
enum Proved {
    Nothing,
    Keys(crate::auth::ClientKeys),
    Password(String),
}

/// What a forwarded (or answered) message expects back from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// ParseComplete; the statement id when the pooler named it (0 otherwise).
    Parse(u64),
    Bind,
    Close,
    /// ParameterDescription, then RowDescription or NoData.
    DescribeStmt,
    /// RowDescription or NoData.
    DescribePortal,
    /// CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// ReadyForQuery, after a simple query (with what to record when it succeeds), a
    /// Sync or a function call.
    Ready(Track),
}

/// Session state a simple query changes, recorded when it succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Track {
    None,
    Set(String, String),
    Reset(String),
    ResetAll,
    Prepare(String, String),
    Deallocate(String),
    DeallocateAll,
    Discard,
}

#[derive(Debug)]
enum Expect {
    /// Forward the server's answer.
    Fwd(End),
    /// Swallow the server's answer (to a message the pooler added).
    Drop(End),
    /// Send this to the client when it reaches the front (an answer the pooler makes).
    Synth(Bytes),
}

/// A session's SETs and its server's settings when a transaction began, to go back to on
/// ROLLBACK. Boxed, and not made at all when both are empty (most transactions): a session
/// carries it whether it is in a transaction or not.
enum Snapshot {
    None,
    Empty,
    Saved(Box<(BTreeMap<String, String>, BTreeMap<String, String>)>),
}

impl Snapshot {
    fn of(sets: &BTreeMap<String, String>, settings: &BTreeMap<String, String>) -> Snapshot {
        if sets.is_empty() && settings.is_empty() {
            Snapshot::Empty
        } else {
            Snapshot::Saved(Box::new((sets.clone(), settings.clone())))
        }
    }

    /// The saved (sets, settings), if any; leaves None.
    fn take(&mut self) -> Option<(BTreeMap<String, String>, BTreeMap<String, String>)> {
        match std::mem::replace(self, Snapshot::None) {
            Snapshot::None => None,
            Snapshot::Empty => Some(Default::default()),
            Snapshot::Saved(b) => Some(*b),
        }
    }
}

/// A moment as nanoseconds since the first one taken in this process, 0 for none: half
/// the size of an `Option<Instant>`, and a session carries two.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp(u64);

impl Stamp {
    const NONE: Stamp = Stamp(0);

    fn base() -> Instant {
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(Instant::now)
    }

    fn now() -> Stamp {
        let ns = Self::base().elapsed().as_nanos();
        Stamp(u64::try_from(ns).unwrap_or(u64::MAX).max(1))
    }

    fn is_none(self) -> bool {
        self == Self::NONE
    }

    /// The time since this moment (None for none).
    fn elapsed(self) -> Option<Duration> {
        (!self.is_none()).then(|| {
            let now = Self::now().0;
            Duration::from_nanos(now.saturating_sub(self.0))
        })
    }

    /// The time since this moment, leaving none.
    fn take(&mut self) -> Option<Duration> {
        let d = self.elapsed();
        *self = Self::NONE;
        d
    }
}

/// How the proxy loop stopped.
enum Step {
    /// Idle between transactions: park until the client sends more.
    Park,
    /// The client ended the session (Terminate or a clean close).
    Done,
}

/// The session's timeouts in whole milliseconds, 0 for none (three `Option<Duration>`s
/// would take 48 bytes of every session), read again after a RELOAD (`gen` is the reload
/// count they were read at), so a reload applies to running sessions from their next wait.
#[derive(Clone, Copy)]
struct Timeouts {
    /// client_idle_timeout (no server held).
    idle: u32,
    /// idle_transaction_timeout.
    idle_txn: u32,
    /// query_timeout (the user's own, else the pool's).
    query: u32,
    gen: u32,
}

impl Timeouts {
    fn read(ctx: &Ctx, user: &str) -> Timeouts {
        // The count first: a reload in between makes the next look read again.
        let gen = ctx.reloads.load(Ordering::Acquire) as u32;
        let rt = ctx.runtime_now();
        let s = &rt.config.pool;
        let query = rt
            .config
            .users
            .get(user)
            .and_then(|u| u.query_timeout)
            .and_then(secs)
            .or_else(|| secs(s.query_timeout));
        Timeouts {
            idle: Self::ms(secs(s.client_idle_timeout)),
            idle_txn: Self::ms(secs(s.idle_transaction_timeout)),
            query: Self::ms(query),
            gen,
        }
    }

    /// Reads them again if the configuration was reloaded since.
    fn refresh(&mut self, ctx: &Ctx, user: &str) {
        if ctx.reloads.load(Ordering::Acquire) as u32 != self.gen {
            *self = Self::read(ctx, user);
        }
    }

    fn ms(d: Option<Duration>) -> u32 {
        d.map_or(0, |d| {
            u32::try_from(d.as_millis().max(1)).unwrap_or(u32::MAX)
        })
    }

    fn get(ms: u32) -> Option<Duration> {
        (ms > 0).then(|| Duration::from_millis(u64::from(ms)))
    }
}

struct Session {
    client: Stream,
    timeouts: Timeouts,
    cbuf: BytesMut,
    cout: BytesMut,
    sout: BytesMut,
    ctx: Arc<Ctx>,
    pool: Arc<Pool>,
    info: Arc<ClientInfo>,
    lease: Option<Lease>,
    queue: VecDeque<Expect>,
    mode: PoolMode,
    max_prepared: u32,
    /// Client statement name -> statement (transaction/statement mode).
    /// Boxed and made at the first Parse: most clients never name a statement, and an
    /// empty map would still take 48 bytes of every session.
    #[allow(clippy::box_collection)]
    stmts: Option<Box<HashMap<Bytes, Arc<Stmt>>>>,
    /// Tracked parameter values the client believes in.
    params: Tracked,
    /// SETs to replay: lower-case name -> statement.
    sets: BTreeMap<String, String>,
    /// SQL PREPAREs: name -> statement.
    sql_prepared: BTreeMap<String, String>,
    /// (sets, server settings) when the transaction began, for ROLLBACK.
    snapshot: Snapshot,
    /// Skip client messages until Sync (after the pooler refused one).
    skip_to_sync: bool,
    group_error: bool,
    /// The last CommandComplete was a ROLLBACK.
    last_rollback: bool,
    query_start: Stamp,
    xact_start: Stamp,
    at_ready: bool,
    /// Bytes from the client not yet counted in the pool's stats.
    received: u32,
}

impl Session {
    fn new(client: Stream, pool: Arc<Pool>, login: Login, ctx: Arc<Ctx>) -> Session {
        let settings = pool.settings();
        let timeouts = Timeouts::read(&ctx, &login.info.user);
        Session {
            client,
            timeouts,
            cbuf: login.cbuf,
            cout: BytesMut::new(),
            sout: BytesMut::new(),
            ctx,
            pool,
            info: login.info,
            lease: None,
            queue: VecDeque::new(),
            mode: settings.mode,
            max_prepared: settings.max_prepared,
            stmts: None,
            params: login.params,
            sets: login.sets,
            sql_prepared: BTreeMap::new(),
            snapshot: Snapshot::None,
            skip_to_sync: false,
            group_error: false,
            last_rollback: false,
            query_start: Stamp::NONE,
            xact_start: Stamp::NONE,
            at_ready: true,
            received: 0,
        }
    }

    /// The session's end and its bookkeeping.
    async fn end(mut self: Box<Self>, r: Result<(), Fatal>) {
        let r = self.finish(r).await;
        client_gone(&self.ctx, &self.info, r);
    }

    /// Waits for an idle client's next message (or a wake-up: KILL, shutdown), holding
    /// no buffer. Ok(true) to go on (with what was read in `cbuf`), Ok(false) when the
    /// client has closed.
    async fn park(&mut self) -> Result<bool, Fatal> {
        for b in [&mut self.cbuf, &mut self.cout, &mut self.sout] {
            if b.is_empty() && b.capacity() > 0 {
                *b = BytesMut::new();
            }
        }
        self.timeouts.refresh(&self.ctx, &self.info.user);
        // Made only when a client_idle_timeout is set: a sleep is most of a parked wait.
        let mut deadline =
            Timeouts::get(self.timeouts.idle).map(|d| Box::pin(tokio::time::sleep(d)));
        let expired = async {
            match deadline.as_mut() {
                Some(d) => d.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            r = read_more(&mut self.client, &mut self.cbuf) => Ok(matches!(r, Ok(n) if n > 0)),
            _ = self.info.kill.notified() => Ok(true),
            _ = expired => Err(fatal("08P01", "client_idle_timeout")),
        }
    }

    /// The end of a session: the error to the client (unless the connection is what
    /// failed), the server connection handed back, the socket closed.
    async fn finish(&mut self, r: Result<(), Fatal>) -> Result<(), Fatal> {
        if let Err(e) = &r {
            if e.code != "08006" {
                let _ = self
                    .client
                    .write_all(&proto::error_response("FATAL", e.code, &e.message))
                    .await;
            }
        }
        self.detach_on_exit().await;
        if self.client.is_tls() {
            // close_notify; a plain socket's close sends its FIN by itself.
            let _ = self.client.shutdown().await;
        }
        self.pool.cl_active.fetch_sub(1, Ordering::Relaxed);
        r
    }

    fn tracking(&self) -> bool {
        self.mode != PoolMode::Session
    }

    /// Sends the startup answer: ParameterStatus (from a server of the pool, connecting
    /// one first if the pool has never had one), BackendKeyData, ReadyForQuery.
    async fn start(&mut self) -> Result<(), Fatal> {
        let known = !self
            .pool
            .server_params
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        if self.mode == PoolMode::Session {
            // Session mode takes its server now, as PgBouncer does: a refused server
            // login is the client's login error.
            self.attach().await?;
        } else if !known {
            // The first client of a pool: one server login teaches the parameters (and
            // tells this client at once when the server refuses the pool's credential).
            self.attach_with(false).await?;
            self.maybe_release().await;
        }
        let mut out = BytesMut::with_capacity(512);
        out.extend_from_slice(&proto::authentication(0, &[]));
        {
            let server_params = self
                .pool
                .server_params
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (k, v) in server_params.iter() {
                let v = self.params.get(k).unwrap_or(v);
                proto::put_parameter_status(&mut out, k, v);
            }
            for (k, v) in self.params.iter() {
                if !server_params.contains_key(k) {
                    proto::put_parameter_status(&mut out, k, v);
                }
            }
            // The client now believes in the server's values of what it did not set.
            self.params.fill_unset(
                &self
                    .pool
                    .server_tracked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            );
        }
        out.extend_from_slice(&proto::backend_key_data(self.info.pid, self.info.key));
        out.extend_from_slice(&proto::ready_for_query(b'I'));
        self.client
            .write_all(&out)
            .await
            .map_err(|_| fatal("08006", "connection lost"))?;
        Ok(())
    }

    /// The proxy loop: until the client ends the session (Done), or is idle between
    /// transactions with nothing pending (Park).
    async fn run(&mut self) -> Result<Step, Fatal> {
        self.timeouts.refresh(&self.ctx, &self.info.user);
        let idle_txn_timeout = Timeouts::get(self.timeouts.idle_txn);
        let query_timeout = Timeouts::get(self.timeouts.query);
        // KILL and the stopping states wake the session through `kill` (made once per run
        // and re-armed when it fires: making it for every wait would take its lock twice
        // per message).
        let kill_info = self.info.clone();
        let kill = kill_info.kill.notified();
        tokio::pin!(kill);
        loop {
            // Client messages already read.
            while let Some(frame) = proto::next_frame(&mut self.cbuf, MAX_CLIENT_MESSAGE)
                .map_err(|e| fatal("08P01", format!("invalid message from the client: {e}")))?
            {
                if frame.tag == b'X' {
                    return Ok(Step::Done);
                }
                let n = u32::try_from(frame.raw.len()).unwrap_or(u32::MAX);
                self.received = match self.received.checked_add(n) {
                    Some(v) => v,
                    None => {
                        self.pool.stats.bytes(self.received as usize, 0);
                        n
                    }
                };
                if self.lease.is_none() {
                    Box::pin(self.attach()).await?;
                }
                self.client_frame(frame)?;
            }
            self.flush_server().await?;
            self.drain_synth();
            self.flush_client().await?;
            if self.info.killed.load(Ordering::SeqCst) {
                return Err(fatal("57P01", "client killed by the admin console"));
            }
            let stop = *self.ctx.stopping.borrow();
            if stop == Stopping::Now
                || (stop == Stopping::Drain && self.lease.is_none())
                || (stop == Stopping::WaitForServers && self.lease.is_none())
            {
                return Err(fatal("57P01", "the pooler is shutting down"));
            }
            let in_txn = self
                .lease
                .as_ref()
                .is_some_and(|l| l.server.txn_status != b'I');
            let busy = !self.queue.is_empty();
            let limit = if busy {
                // From the query's start, not from the last message either side sent.
                query_timeout
                    .map(|d| d.saturating_sub(self.query_start.elapsed().unwrap_or(Duration::ZERO)))
            } else if in_txn {
                idle_txn_timeout
            } else {
                None
            };
            let deadline = async {
                match limit {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            let Session {
                client,
                cbuf,
                lease,
                ..
            } = self;
            match lease.as_mut() {
                Some(l) => {
                    let srv = &mut l.server;
                    tokio::select! {
                        // In order (no random start): every branch is cheap to poll.
                        biased;
                        r = read_more(client, cbuf) => match r {
                            Ok(0) | Err(_) => return Err(fatal("08006", "client disconnected")),
                            Ok(_) => {}
                        },
                        r = srv.io.read_buf(&mut srv.rbuf) => match r {
                            Ok(0) | Err(_) => {
                                srv.broken = true;
                                return Err(fatal("08006", "server connection lost"));
                            }
                            Ok(_) => {
                                self.server_frames().await?;
                            }
                        },
                        _ = &mut kill => kill.set(kill_info.kill.notified()),
                        _ = deadline => {
                            return Err(if busy {
                                Box::pin(self.cancel_running()).await;
                                fatal("57014", "query_timeout")
                            } else {
                                fatal("08P01", "idle_transaction_timeout")
                            });
                        }
                    }
                }
                None => return Ok(Step::Park),
            }
        }
    }

    async fn cancel_running(&mut self) {
        if let Some(l) = &mut self.lease {
            let _ = crate::server::cancel(&l.server.target, l.server.pid, l.server.key).await;
            l.server.broken = true;
        }
    }

    /// Takes a server connection (waiting for RESUME and for a free one) and brings it in
    /// line with the client: tracked parameters and SETs.
    async fn attach(&mut self) -> Result<(), Fatal> {
        self.attach_with(true).await
    }

    async fn attach_with(&mut self, prelude: bool) -> Result<(), Fatal> {
        let mut pause = self.ctx.pause.subscribe();
        while *pause.borrow() == Pause::Paused {
            self.info.set_waiting(true);
            if pause.changed().await.is_err() {
                break;
            }
        }
        self.info.set_waiting(true);
        let wait = secs(self.ctx.runtime_now().config.pool.query_wait_timeout);
        let lease = self.pool.acquire(wait).await;
        self.info.set_waiting(false);
        let mut lease = lease.map_err(|e| {
            let code: &'static str = match e.sqlstate() {
                "57014" => "57014",
                "28P01" => "28P01",
                "28000" => "28000",
                "3D000" => "3D000",
                "57P01" => "57P01",
                _ => "08006",
            };
            Fatal {
                code,
                message: e.to_string(),
            }
        })?;
        *self
            .info
            .cancel_target
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((
            lease.server.target.clone(),
            lease.server.pid,
            lease.server.key,
        ));
        self.info.link.store(lease.server.id, Ordering::Relaxed);
        let prelude = if prelude {
            self.prelude(&mut lease)
        } else {
            String::new()
        };
        if !prelude.is_empty() {
            tracing::debug!(client = self.info.id, server = lease.server.id, %prelude, "prelude");
            self.sout.extend_from_slice(&proto::query_message(&prelude));
            self.queue.push_back(Expect::Drop(End::Ready(Track::None)));
        }
        self.lease = Some(lease);
        self.at_ready = true;
        Ok(())
    }

    /// The SQL that makes a server connection match this client: tracked parameters that
    /// differ, SETs it lacks, settings of earlier clients it must drop.
    fn prelude(&self, lease: &mut Lease) -> String {
        let srv = &mut lease.server;
        let mut sql = Vec::new();
        // Earlier clients' settings go first: a RESET after this client's own value of the
        // same parameter (application_name set by one, given at startup by the other)
        // would undo it.
        if self.tracking() {
            let stale: Vec<String> = srv
                .settings
                .keys()
                .filter(|k| !self.sets.contains_key(*k))
                .cloned()
                .collect();
            for k in stale {
                sql.push(format!("RESET {}", quote_path(&k)));
                srv.settings.remove(&k);
            }
        }
        for (name, want) in self.params.differing(&srv.tracked) {
            sql.push(set_statement(name, want));
        }
        for (k, stmt) in &self.sets {
            if srv.settings.get(k) != Some(stmt) {
                sql.push(stmt.clone());
                if self.tracking() {
                    srv.settings.insert(k.clone(), stmt.clone());
                }
            }
        }
        sql.join("; ")
    }

    fn push_server(&mut self, raw: &[u8], expect: Option<Expect>) {
        if self.query_start.is_none() {
            self.query_start = Stamp::now();
            if self.xact_start.is_none() {
                self.xact_start = self.query_start;
            }
            self.info
                .request_us
                .store(crate::stats::now_us(), Ordering::Relaxed);
        }
        self.sout.extend_from_slice(raw);
        if let Some(e) = expect {
            self.queue.push_back(e);
        }
        self.at_ready = false;
    }

    fn refuse(&mut self, what: &str, simple: bool) {
        let msg = format!(
            "pgwarden pool: {what} is session state, which {} pooling cannot carry to the next transaction; use pool_mode = session for this database",
            self.mode.as_str()
        );
        self.queue
            .push_back(Expect::Synth(proto::error_response("ERROR", "0A000", &msg)));
        if simple {
            let status = self
                .lease
                .as_ref()
                .map(|l| l.server.txn_status)
                .unwrap_or(b'I');
            self.queue
                .push_back(Expect::Synth(proto::ready_for_query(status)));
        } else {
            self.skip_to_sync = true;
        }
    }

    /// Handles one client message: forwards it (rewritten when needed) and records what it
    /// expects back.
    fn client_frame(&mut self, f: Frame) -> Result<(), Fatal> {
        let bad =
            |e: proto::ProtoError| fatal("08P01", format!("invalid message from the client: {e}"));
        if self.skip_to_sync && f.tag != b'S' {
            return Ok(());
        }
        match f.tag {
            b'Q' => {
                let mut track = Track::None;
                if self.tracking() {
                    let q = String::from_utf8_lossy(proto::parse_query(f.body()).map_err(bad)?);
                    match sql::classify(&q) {
                        Kind::Refused(what) => {
                            self.refuse(what, true);
                            return Ok(());
                        }
                        Kind::Set { name } => {
                            track = Track::Set(name, q.trim().trim_end_matches(';').to_owned())
                        }
                        Kind::Reset { name } => track = Track::Reset(name),
                        Kind::ResetAll => track = Track::ResetAll,
                        Kind::Prepare { name } => {
                            self.clear_sql_name(&name);
                            track = Track::Prepare(name, q.trim().trim_end_matches(';').to_owned())
                        }
                        Kind::Execute { name } => self.ensure_sql_prepared(&name),
                        Kind::Deallocate { name } => {
                            self.ensure_sql_prepared(&name);
                            track = Track::Deallocate(name)
                        }
                        Kind::DeallocateAll => track = Track::DeallocateAll,
                        Kind::Discard => track = Track::Discard,
                        Kind::Other => {}
                    }
                }
                self.push_server(&f.raw, Some(Expect::Fwd(End::Ready(track))));
            }
            b'P' => {
                self.pool
                    .stats
                    .client_parse_count
                    .fetch_add(1, Ordering::Relaxed);
                let p = proto::parse_parse(f.body()).map_err(bad)?;
                if self.tracking() {
                    if let Some(what) = sql::refusal(&String::from_utf8_lossy(p.query)) {
                        self.refuse(what, false);
                        return Ok(());
                    }
                }
                if !self.tracking() || self.max_prepared == 0 || p.name.is_empty() {
                    self.pool
                        .stats
                        .server_parse_count
                        .fetch_add(1, Ordering::Relaxed);
                    self.push_server(&f.raw, Some(Expect::Fwd(End::Parse(0))));
                    return Ok(());
                }
                let stmt = self.ctx.registry.intern(p.rest, p.query);
                self.stmts
                    .get_or_insert_with(Default::default)
                    .insert(Bytes::copy_from_slice(p.name), stmt.clone());
                let has = self.lease.as_ref().is_some_and(|l| {
                    l.server.prepared.contains_key(&stmt.id) || l.server.pending.contains(&stmt.id)
                });
                if has {
                    self.touch(stmt.id);
                    self.queue.push_back(Expect::Synth(proto::empty(b'1')));
                } else {
                    self.prepare_on_server(&stmt, true);
                }
            }
            b'B' => {
                self.pool.stats.bind_count.fetch_add(1, Ordering::Relaxed);
                let (portal, name, rest) = proto::parse_bind(f.body()).map_err(bad)?;
                match self.mapped(name) {
                    Some(stmt) => {
                        self.ensure_prepared(&stmt);
                        let m = proto::bind_message(portal, &stmt.name, rest);
                        self.push_server(&m, Some(Expect::Fwd(End::Bind)));
                    }
                    None => self.push_server(&f.raw, Some(Expect::Fwd(End::Bind))),
                }
            }
            b'D' => {
                let (kind, name) = proto::parse_target(f.body(), "Describe").map_err(bad)?;
                let end = if kind == b'S' {
                    End::DescribeStmt
                } else {
                    End::DescribePortal
                };
                match (kind, self.mapped(name)) {
                    (b'S', Some(stmt)) => {
                        self.ensure_prepared(&stmt);
                        let m = proto::target_message(b'D', b'S', &stmt.name);
                        self.push_server(&m, Some(Expect::Fwd(end)));
                    }
                    _ => self.push_server(&f.raw, Some(Expect::Fwd(end))),
                }
            }
            b'C' => {
                let (kind, name) = proto::parse_target(f.body(), "Close").map_err(bad)?;
                if kind == b'S' && self.mapped(name).is_some() {
                    // The server keeps it for other clients; the client's name goes.
                    if let Some(m) = &mut self.stmts {
                        m.remove(name);
                    }
                    self.queue.push_back(Expect::Synth(proto::empty(b'3')));
                } else {
                    self.push_server(&f.raw, Some(Expect::Fwd(End::Close)));
                }
            }
            b'E' => self.push_server(&f.raw, Some(Expect::Fwd(End::Execute))),
            b'S' => {
                self.skip_to_sync = false;
                self.push_server(&f.raw, Some(Expect::Fwd(End::Ready(Track::None))));
            }
            b'F' => self.push_server(&f.raw, Some(Expect::Fwd(End::Ready(Track::None)))),
            // Flush and COPY data expect nothing of their own.
            b'H' | b'd' | b'c' | b'f' => self.push_server(&f.raw, None),
            b'p' => return Err(fatal("08P01", "unexpected password message")),
            other => {
                return Err(fatal(
                    "08P01",
                    format!("invalid frontend message type {}", other as char),
                ))
            }
        }
        Ok(())
    }

    fn mapped(&self, name: &[u8]) -> Option<Arc<Stmt>> {
        if !self.tracking() || self.max_prepared == 0 || name.is_empty() {
            return None;
        }
        self.stmts.as_ref()?.get(name).cloned()
    }

    fn touch(&mut self, id: u64) {
        if let Some(l) = &mut self.lease {
            l.server.tick += 1;
            let t = l.server.tick;
            if let Some(e) = l.server.prepared.get_mut(&id) {
                *e = t;
            }
        }
    }

    /// Makes sure the server has `stmt` before a Bind or Describe uses it.
    fn ensure_prepared(&mut self, stmt: &Arc<Stmt>) {
        let has = self.lease.as_ref().is_some_and(|l| {
            l.server.prepared.contains_key(&stmt.id) || l.server.pending.contains(&stmt.id)
        });
        if has {
            self.touch(stmt.id);
        } else {
            self.prepare_on_server(stmt, false);
        }
    }

    /// Sends Parse for `stmt` under its pooler-wide name, closing the least recently used
    /// statement first when the server holds max_prepared_statements.
    fn prepare_on_server(&mut self, stmt: &Arc<Stmt>, client_asked: bool) {
        let max = self.max_prepared as usize;
        let mut victim = None;
        if let Some(l) = &mut self.lease {
            if l.server.prepared.len() >= max {
                victim = lru_victim(&l.server.prepared, stmt.id);
                if let Some(v) = victim {
                    l.server.prepared.remove(&v);
                }
            }
            l.server.pending.insert(stmt.id);
        }
        if let Some(v) = victim {
            let name = format!("PGW_{v}");
            let m = proto::target_message(b'C', b'S', name.as_bytes());
            self.push_server(&m, Some(Expect::Drop(End::Close)));
        }
        self.pool
            .stats
            .server_parse_count
            .fetch_add(1, Ordering::Relaxed);
        let m = proto::parse_message(&stmt.name, &stmt.rest);
        let e = if client_asked {
            Expect::Fwd(End::Parse(stmt.id))
        } else {
            Expect::Drop(End::Parse(stmt.id))
        };
        self.push_server(&m, Some(e));
    }

    /// Before EXECUTE or DEALLOCATE of a SQL-prepared statement: the server has the
    /// client's version of it.
    fn ensure_sql_prepared(&mut self, name: &str) {
        let Some(want) = self.sql_prepared.get(name).cloned() else {
            // Not the client's: another client's statement of that name on this server
            // goes first, so that the client gets the error a server of its own gives.
            self.clear_sql_name(name);
            return;
        };
        let Some(l) = &mut self.lease else { return };
        if l.server.sql_prepared.get(name) == Some(&want) {
            return;
        }
        let mut sql = String::new();
        if l.server.sql_prepared.remove(name).is_some() {
            sql.push_str(&format!("DEALLOCATE \"{}\"; ", name.replace('"', "\"\"")));
        }
        sql.push_str(&want);
        l.server.sql_prepared.insert(name.to_owned(), want);
        let m = proto::query_message(&sql);
        self.push_server(&m, Some(Expect::Drop(End::Ready(Track::None))));
    }

    /// Before the client's PREPARE name: another client's statement of that name goes.
    fn clear_sql_name(&mut self, name: &str) {
        let Some(l) = &mut self.lease else { return };
        if l.server.sql_prepared.remove(name).is_some() {
            let m = proto::query_message(&format!("DEALLOCATE \"{}\"", name.replace('"', "\"\"")));
            self.push_server(&m, Some(Expect::Drop(End::Ready(Track::None))));
        }
    }

    /// Answers the pooler made that are now at the front of the queue go to the client.
    fn drain_synth(&mut self) {
        while let Some(Expect::Synth(_)) = self.queue.front() {
            if let Some(Expect::Synth(b)) = self.queue.pop_front() {
                self.cout.extend_from_slice(&b);
            }
        }
    }

    async fn flush_server(&mut self) -> Result<(), Fatal> {
        if self.sout.is_empty() {
            return Ok(());
        }
        let Some(l) = &mut self.lease else {
            self.sout.clear();
            return Ok(());
        };
        if l.server.io.write_all(&self.sout).await.is_err() {
            l.server.broken = true;
            self.sout.clear();
            return Err(fatal("08006", "server connection lost"));
        }
        self.sout.clear();
        shrink(&mut self.sout, KEEP_BUFFER);
        Ok(())
    }

    async fn flush_client(&mut self) -> Result<(), Fatal> {
        if self.cout.is_empty() {
            return Ok(());
        }
        let sent = self.cout.len();
        let r = self.client.write_all(&self.cout).await;
        self.cout.clear();
        shrink(&mut self.cout, KEEP_BUFFER);
        self.pool
            .stats
            .bytes(std::mem::take(&mut self.received) as usize, sent);
        r.map_err(|_| fatal("08006", "client disconnected"))
    }

    /// Handles every whole message the server has sent, then releases the server when the
    /// pool mode says so.
    async fn server_frames(&mut self) -> Result<(), Fatal> {
        loop {
            let frame = {
                let Some(l) = &mut self.lease else { break };
                match proto::next_frame(&mut l.server.rbuf, crate::server::MAX_SERVER_MESSAGE) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(_) => {
                        l.server.broken = true;
                        return Err(fatal("08006", "server sent an invalid message"));
                    }
                }
            };
            self.server_frame(frame)?;
        }
        self.drain_synth();
        let release = self.release_due()?;
        if release {
            self.maybe_release().await;
        }
        self.flush_client().await
    }

    fn server_frame(&mut self, f: Frame) -> Result<(), Fatal> {
        self.drain_synth();
        let Some(l) = &mut self.lease else {
            return Ok(());
        };
        let srv = &mut l.server;
        let forwarding = !matches!(self.queue.front(), Some(Expect::Drop(_)));
        match f.tag {
            b'S' => {
                if let Ok((k, v)) = proto::parse_parameter_status(f.body()) {
                    if forwarding && self.params.set(&k, &v) && k == "application_name" {
                        *self
                            .info
                            .application_name
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = v.clone();
                    }
                    srv.tracked.set(&k, &v);
                    srv.params.insert(k, v);
                }
                if forwarding {
                    self.cout.extend_from_slice(&f.raw);
                }
                return Ok(());
            }
            b'N' => {
                if forwarding {
                    self.cout.extend_from_slice(&f.raw);
                }
                return Ok(());
            }
            b'A' => {
                self.cout.extend_from_slice(&f.raw);
                return Ok(());
            }
            _ => {}
        }
        let Some(front) = self.queue.front() else {
            // Nothing asked: a server going away (FATAL) tells the client.
            if f.tag == b'E' {
                srv.broken = true;
                self.cout.extend_from_slice(&f.raw);
            }
            return Ok(());
        };
        let (fwd, end) = match front {
            Expect::Fwd(e) => (true, e.clone()),
            Expect::Drop(e) => (false, e.clone()),
            Expect::Synth(_) => return Ok(()),
        };
        if fwd {
            self.cout.extend_from_slice(&f.raw);
        }
        match f.tag {
            b'E' => {
                let e = proto::parse_error(f.body());
                if e.severity == "FATAL" || e.severity == "PANIC" {
                    srv.broken = true;
                }
                if !fwd {
                    tracing::warn!(pool = %self.pool.name(), error = %e.message, "a statement the pooler sent failed");
                }
                self.group_error = true;
                if !matches!(end, End::Ready(_)) {
                    // Extended protocol: the server skips to the next Sync; so do we.
                    self.queue.pop_front();
                    while let Some(x) = self.queue.front() {
                        match x {
                            Expect::Fwd(End::Ready(_)) | Expect::Drop(End::Ready(_)) => break,
                            Expect::Fwd(End::Parse(id)) | Expect::Drop(End::Parse(id)) => {
                                srv.pending.remove(id);
                                self.queue.pop_front();
                            }
                            _ => {
                                self.queue.pop_front();
                            }
                        }
                    }
                    if let End::Parse(id) = end {
                        srv.pending.remove(&id);
                    }
                }
            }
            b'1' => {
                if let End::Parse(id) = end {
                    if id != 0 {
                        srv.pending.remove(&id);
                        srv.tick += 1;
                        srv.prepared.insert(id, srv.tick);
                    }
                    self.queue.pop_front();
                }
            }
            b'2' if end == End::Bind => {
                self.queue.pop_front();
            }
            b'3' if end == End::Close => {
                self.queue.pop_front();
            }
            b'T' | b'n' if matches!(end, End::DescribeStmt | End::DescribePortal) => {
                self.queue.pop_front();
            }
            b'C' | b'I' | b's' => {
                if f.tag == b'C' {
                    self.last_rollback =
                        proto::parse_command_tag(f.body()).starts_with(b"ROLLBACK");
                }
                if end == End::Execute {
                    self.queue.pop_front();
                }
            }
            b'Z' => {
                if let End::Ready(track) = end {
                    self.queue.pop_front();
                    let before = srv.txn_status;
                    let status = f.body().first().copied().unwrap_or(b'I');
                    srv.txn_status = status;
                    let ok = !self.group_error;
                    self.group_error = false;
                    if fwd {
                        self.ready(before, status, track, ok);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A ReadyForQuery reached the client: statistics, tracked state, transaction edges.
    fn ready(&mut self, before: u8, status: u8, track: Track, ok: bool) {
        if let Some(t) = self.query_start.take() {
            self.pool.stats.query(t);
        }
        self.info.request_us.store(0, Ordering::Relaxed);
        let Some(l) = &mut self.lease else { return };
        let srv = &mut l.server;
        if ok && self.mode != PoolMode::Session {
            match track {
                Track::None => {}
                Track::Set(name, stmt) => {
                    self.sets.insert(name.clone(), stmt.clone());
                    srv.settings.insert(name, stmt);
                }
                Track::Reset(name) => {
                    self.sets.remove(&name);
                    srv.settings.remove(&name);
                }
                Track::ResetAll => {
                    self.sets.clear();
                    srv.settings.clear();
                }
                Track::Prepare(name, stmt) => {
                    self.sql_prepared.insert(name.clone(), stmt.clone());
                    srv.sql_prepared.insert(name, stmt);
                }
                Track::Deallocate(name) => {
                    self.sql_prepared.remove(&name);
                    srv.sql_prepared.remove(&name);
                }
                Track::DeallocateAll => {
                    self.sql_prepared.clear();
                    srv.sql_prepared.clear();
                }
                Track::Discard => {
                    self.sets.clear();
                    self.sql_prepared.clear();
                    self.stmts = None;
                    srv.settings.clear();
                    srv.sql_prepared.clear();
                    srv.prepared.clear();
                }
            }
        }
        if before == b'I' && status != b'I' {
            self.snapshot = Snapshot::of(&self.sets, &srv.settings);
        }
        if status == b'I' {
            if before != b'I' && self.last_rollback {
                if let Some((sets, settings)) = self.snapshot.take() {
                    self.sets = sets;
                    srv.settings = settings;
                }
            }
            self.snapshot = Snapshot::None;
            if let Some(t) = self.xact_start.take() {
                self.pool.stats.xact(t);
            }
        }
        self.at_ready = true;
    }

    /// Whether the server goes back now (transaction and statement mode, at a boundary).
    fn release_due(&mut self) -> Result<bool, Fatal> {
        let Some(l) = &self.lease else {
            return Ok(false);
        };
        if self.mode == PoolMode::Session || !self.queue.is_empty() || !self.at_ready {
            return Ok(false);
        }
        if !self.cbuf.is_empty()
            && self.mode == PoolMode::Transaction
            && l.server.txn_status != b'I'
        {
            return Ok(false);
        }
        match (self.mode, l.server.txn_status) {
            (_, b'I') => Ok(true),
            (PoolMode::Statement, _) => Err(fatal(
                "25000",
                "transaction blocks not allowed in statement pool mode",
            )),
            _ => Ok(false),
        }
    }

    /// Gives the server back (resetting it in session mode).
    async fn maybe_release(&mut self) {
        let Some(mut lease) = self.lease.take() else {
            return;
        };
        if !self.queue.is_empty() || !self.sout.is_empty() {
            // Answers still owed: the connection's state is unknown.
            lease.server.broken = true;
            self.queue.clear();
            self.sout.clear();
        }
        *self
            .info
            .cancel_target
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        self.info.link.store(0, Ordering::Relaxed);
        let reset = {
            let rt = self.ctx.runtime_now();
            let s = &rt.config.pool;
            (self.mode == PoolMode::Session || s.server_reset_query_always)
                && !s.server_reset_query.is_empty()
                && !lease.server.broken
        };
        if reset {
            // Held across the reset's await: an Arc, not the lock-free look.
            let rt = self.ctx.runtime();
            if Box::pin(lease.server.run(&rt.config.pool.server_reset_query))
                .await
                .is_err()
            {
                lease.server.broken = true;
            }
            lease.server.prepared.clear();
            lease.server.sql_prepared.clear();
            lease.server.settings.clear();
        }
        self.pool.release(lease);
    }

    /// The client is gone: a server in the middle of something is closed; one inside a
    /// transaction is rolled back; then it goes back.
    async fn detach_on_exit(&mut self) {
        let Some(l) = &mut self.lease else { return };
        if !self.queue.is_empty() || !self.at_ready {
            l.server.broken = true;
        } else if l.server.txn_status != b'I' && !l.server.broken {
            if l.server.run("ROLLBACK").await.is_err() {
                l.server.broken = true;
            }
            if let Some((_, settings)) = self.snapshot.take() {
                l.server.settings = settings;
            }
        }
        self.queue.clear();
        self.maybe_release().await;
    }
}
