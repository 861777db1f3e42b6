//! One connection from the pooler to a PostgreSQL server: connect (TCP or Unix socket,
//! TLS when configured), log in (trust, clear-text, MD5, SCRAM-SHA-256 from a password or
//! from keys passed through from the client), and what the pooler remembers about it
//! (reported parameters, backend key, prepared statements, tracked settings).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::auth::{self, ClientKeys, ScramClient, ScramCredential};
use crate::config::TlsMode;
use crate::proto;
use crate::stream::Stream;

/// How the pooler proves itself to a server.
#[derive(Clone)]
pub enum Credential {
    /// No password (trust, or the server asks for none).
    None,
    /// A clear-text password: answers clear-text, MD5 and SCRAM requests.
    Password(String),
    /// A stored MD5 secret: answers MD5 requests only.
    Md5(String),
    /// Keys recovered from the client's SCRAM proof: answers SCRAM requests only.
    ScramKeys(ClientKeys),
}

/// Where and as whom to connect.
#[derive(Clone)]
pub struct Target {
    /// Host name, IP address, or a Unix socket directory (starts with `/`).
    pub host: String,
    /// Port (also the socket's name).
    pub port: u16,
    /// Server database.
    pub dbname: String,
    /// Server user.
    pub user: String,
    /// The credential.
    pub credential: Credential,
    /// Extra startup parameters (application_name, client_encoding, ...).
    pub params: Vec<(String, String)>,
    /// Connect and login deadline.
    pub connect_timeout: Duration,
    /// TLS towards the server.
    pub tls_mode: TlsMode,
    /// The TLS client config when `tls_mode` is not disable.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Target {
    /// `host:port` for messages and SHOW SERVERS.
    pub fn addr(&self) -> String {
        if self.host.starts_with('/') {
            format!("{}/.s.PGSQL.{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Why a server connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// TCP or socket level.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("{addr}: no answer within {secs} s")]
    Timeout { addr: String, secs: f64 },
    /// The server refused the login (its message, SQLSTATE).
    #[error("server login failed: {message}")]
    Login { code: String, message: String },
    /// The server asked for something the pooler cannot answer.
    #[error("server login failed: {0}")]
    Auth(String),
    /// The connection broke or the server sent something unexpected.
    #[error("server connection: {0}")]
    Io(String),
}

impl ServerError {
    /// The SQLSTATE to give a client for this failure.
    pub fn sqlstate(&self) -> &str {
        match self {
            ServerError::Login { code, .. } => code,
            ServerError::Auth(_) => "28000",
            _ => "08006",
        }
    }
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A logged-in server connection.
pub struct Server {
    /// The stream.
    pub io: Stream,
    /// Bytes read from the server and not yet handled.
    pub rbuf: BytesMut,
    /// A process-wide id (SHOW SERVERS' `ptr`).
    pub id: u64,
    /// `host:port`.
    pub addr: String,
    /// Where it is connected (for cancel requests and SHOW SERVERS).
    pub target: Arc<Target>,
    /// Backend process id and cancel key.
    pub pid: i32,
    pub key: i32,
    /// Parameters the server reported (ParameterStatus), latest value each.
    pub params: BTreeMap<String, String>,
    /// The tracked ones among them, for the per-transaction comparison with a client.
    pub tracked: crate::ctx::Tracked,
    /// When it logged in.
    pub created: Instant,
    /// When it was last handed back to the pool.
    pub last_used: Instant,
    /// Statements prepared on it by the pooler (ids of [`crate::prepared::Stmt`]), with
    /// the tick of their last use, for the LRU.
    pub prepared: HashMap<u64, u64>,
    /// SQL-level prepared statements on it: name -> the PREPARE text.
    pub sql_prepared: HashMap<String, String>,
    /// Session settings a client made on it with SET and the pooler tracks: name -> SET text.
    pub settings: BTreeMap<String, String>,
    /// Parse has been sent for these and no answer yet.
    pub pending: std::collections::HashSet<u64>,
    /// Use counter for the LRU.
    pub tick: u64,
    /// The last ReadyForQuery status (`I`, `T`, `E`).
    pub txn_status: u8,
    /// Not to be reused (broken, protocol out of sync, lifetime over).
    pub broken: bool,
    /// Whether the server is in recovery (asked on multi-host pools), when known.
    pub in_recovery: Option<bool>,
    /// The pool's generation when it was made (RECONNECT closes older ones).
    pub generation: u64,
    /// The thread whose runtime its stream is registered with.
    pub home: std::thread::ThreadId,
    /// max_db_connections / max_user_connections permits, given back when it closes.
    pub limit_permits: Vec<tokio::sync::OwnedSemaphorePermit>,
}

impl Server {
    /// Connects and logs in.
    pub async fn connect(t: &Target) -> Result<Server, ServerError> {
        let addr = t.addr();
        let secs = t.connect_timeout.as_secs_f64();
        match tokio::time::timeout(t.connect_timeout, Self::connect_inner(t)).await {
            Ok(r) => r,
            Err(_) => Err(ServerError::Timeout { addr, secs }),
        }
    }

    async fn connect_inner(t: &Target) -> Result<Server, ServerError> {
        let addr = t.addr();
        let io_err = |source| ServerError::Connect {
            addr: addr.clone(),
            source,
        };
        let mut io = if t.host.starts_with('/') {
            Stream::Unix(UnixStream::connect(&addr).await.map_err(io_err)?)
        } else {
            let tcp = TcpStream::connect((t.host.as_str(), t.port))
                .await
                .map_err(io_err)?;
            let _ = tcp.set_nodelay(true);
            if t.tls_mode == TlsMode::Disable {
                Stream::Tcp(tcp)
            } else {
                crate::tls::connect(tcp, t).await?
            }
        };
        let mut startup: Vec<(&str, &str)> = vec![("user", &t.user), ("database", &t.dbname)];
        for (k, v) in &t.params {
            startup.push((k, v));
        }
        io.write_all(&proto::startup_message(&startup))
            .await
            .map_err(|e| ServerError::Io(e.to_string()))?;
        let mut server = Server {
            io,
            rbuf: BytesMut::with_capacity(16 * 1024),
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            addr,
            target: Arc::new(t.clone()),
            pid: 0,
            key: 0,
            params: BTreeMap::new(),
            tracked: Default::default(),
            created: Instant::now(),
            last_used: Instant::now(),
            prepared: HashMap::new(),
            sql_prepared: HashMap::new(),
            settings: BTreeMap::new(),
            pending: Default::default(),
            tick: 0,
            txn_status: b'I',
            broken: false,
            in_recovery: None,
            generation: 0,
            limit_permits: Vec::new(),
            home: std::thread::current().id(),
        };
        server.login(t).await?;
        Ok(server)
    }

    async fn next_message(&mut self) -> Result<Message, ServerError> {
        loop {
            match Message::parse(&mut self.rbuf) {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {}
                Err(e) => return Err(ServerError::Io(format!("bad message: {e}"))),
            }
            let n = self
                .io
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|e| ServerError::Io(e.to_string()))?;
            if n == 0 {
                return Err(ServerError::Io("the server closed the connection".into()));
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), ServerError> {
        self.io
            .write_all(bytes)
            .await
            .map_err(|e| ServerError::Io(e.to_string()))
    }

    async fn login(&mut self, t: &Target) -> Result<(), ServerError> {
        let mut scram: Option<ScramClient> = None;
        loop {
            match self.next_message().await? {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => match &t.credential {
                    Credential::Password(p) => {
                        self.send(&proto::password_message(p.as_bytes())).await?
                    }
                    _ => {
                        return Err(ServerError::Auth(
                            "the server asks for a clear-text password and none is configured"
                                .into(),
                        ))
                    }
                },
                Message::AuthenticationMd5Password(body) => {
                    let salt = body.salt();
                    let answer = match &t.credential {
                        Credential::Password(p) => {
                            auth::md5_response_from_password(&t.user, p, salt)
                        }
                        Credential::Md5(s) => auth::md5_response_from_secret(s, salt),
                        _ => return Err(ServerError::Auth(
                            "the server asks for MD5 and no password or MD5 secret is configured"
                                .into(),
                        )),
                    };
                    self.send(&proto::password_message(answer.as_bytes()))
                        .await?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechs = body.mechanisms();
                    let mut scram_ok = false;
                    while let Ok(Some(m)) = fallible_next(&mut mechs) {
                        scram_ok |= m == "SCRAM-SHA-256";
                    }
                    if !scram_ok {
                        return Err(ServerError::Auth(
                            "the server offers no SASL mechanism the pooler knows".into(),
                        ));
                    }
                    let cred = match &t.credential {
                        Credential::Password(p) => ScramCredential::Password(p.clone()),
                        Credential::ScramKeys(k) => ScramCredential::Keys(k.clone()),
                        Credential::Md5(_) => {
                            return Err(ServerError::Auth(
                                "the server asks for SCRAM and the configured secret is MD5".into(),
                            ))
                        }
                        Credential::None => {
                            return Err(ServerError::Auth(
                                "the server asks for a password and none is configured (SCRAM pass-through needs the client to log in with SCRAM)"
                                    .into(),
                            ))
                        }
                    };
                    let c = ScramClient::new(cred);
                    self.send(&proto::sasl_initial("SCRAM-SHA-256", &c.client_first()))
                        .await?;
                    scram = Some(c);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let c = scram
                        .as_mut()
                        .ok_or_else(|| ServerError::Io("SASL continue out of order".into()))?;
                    let reply = c
                        .client_final(body.data())
                        .map_err(|e| ServerError::Auth(e.to_string()))?;
                    self.send(&proto::sasl_response(&reply)).await?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let c = scram
                        .as_ref()
                        .ok_or_else(|| ServerError::Io("SASL final out of order".into()))?;
                    c.verify_server_final(body.data())
                        .map_err(|e| ServerError::Auth(e.to_string()))?;
                }
                Message::ParameterStatus(body) => {
                    if let (Ok(k), Ok(v)) = (body.name(), body.value()) {
                        self.tracked.set(k, v);
                        self.params.insert(k.to_owned(), v.to_owned());
                    }
                }
                Message::BackendKeyData(body) => {
                    self.pid = body.process_id();
                    self.key = body.secret_key();
                }
                Message::ReadyForQuery(_) => return Ok(()),
                Message::NoticeResponse(_) => {}
                Message::ErrorResponse(body) => {
                    let mut code = String::new();
                    let mut message = String::new();
                    let mut fields = body.fields();
                    while let Ok(Some(f)) = fallible_next(&mut fields) {
                        match f.type_() {
                            b'C' => code = String::from_utf8_lossy(f.value_bytes()).into_owned(),
                            b'M' => message = String::from_utf8_lossy(f.value_bytes()).into_owned(),
                            _ => {}
                        }
                    }
                    return Err(ServerError::Login { code, message });
                }
                _ => {
                    return Err(ServerError::Auth(
                        "the server asks for an authentication method the pooler does not support"
                            .into(),
                    ))
                }
            }
        }
    }

    /// Runs one simple query and waits for its ReadyForQuery, dropping the results;
    /// Err with the server's message when it failed. Used for reset, check and
    /// connect queries, never with client data.
    pub async fn run(&mut self, sql: &str) -> Result<(), ServerError> {
        self.send(&proto::query_message(sql)).await?;
        let mut failure = None;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag {
                b'E' => {
                    let f = proto::parse_error(frame.body());
                    failure = Some(ServerError::Login {
                        code: f.code,
                        message: f.message,
                    });
                }
                b'S' => {
                    if let Ok((k, v)) = proto::parse_parameter_status(frame.body()) {
                        self.tracked.set(&k, &v);
                        self.params.insert(k, v);
                    }
                }
                b'Z' => {
                    self.txn_status = frame.body().first().copied().unwrap_or(b'I');
                    return match failure {
                        Some(e) => Err(e),
                        None => Ok(()),
                    };
                }
                // COPY cannot come from the pooler's own queries; refuse to go on.
                b'G' | b'H' | b'W' => {
                    self.broken = true;
                    return Err(ServerError::Io("unexpected COPY".into()));
                }
                _ => {}
            }
        }
    }

    /// Runs auth_query with the user name bound as `$1` (extended protocol, never
    /// formatted into the SQL): the second column of the first row, None when no row or
    /// a NULL secret.
    pub async fn query_secret(
        &mut self,
        sql: &str,
        user: &str,
    ) -> Result<Option<String>, ServerError> {
        use bytes::BufMut;
        let mut m = BytesMut::new();
        let mut parse = BytesMut::new();
        parse.put_slice(sql.split('\0').next().unwrap_or("").as_bytes());
        parse.put_u8(0);
        parse.put_i16(0);
        m.extend_from_slice(&proto::parse_message(b"", &parse));
        let mut bind = BytesMut::new();
        bind.put_i16(0);
        bind.put_i16(1);
        bind.put_i32(user.len() as i32);
        bind.put_slice(user.as_bytes());
        bind.put_i16(0);
        m.extend_from_slice(&proto::bind_message(b"", b"", &bind));
        m.extend_from_slice(&proto::target_message(b'D', b'P', b""));
        let mut exec = BytesMut::new();
        exec.put_u8(b'E');
        exec.put_i32(9);
        exec.put_u8(0);
        exec.put_i32(0);
        m.extend_from_slice(&exec);
        m.extend_from_slice(&[b'S', 0, 0, 0, 4]);
        self.send(&m).await?;
        let mut value: Option<Option<String>> = None;
        let mut failure = None;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag {
                b'D' if value.is_none() => value = Some(second_column(frame.body())),
                b'E' => failure = Some(proto::parse_error(frame.body()).message),
                b'Z' => {
                    self.txn_status = frame.body().first().copied().unwrap_or(b'I');
                    return match failure {
                        Some(m) => Err(ServerError::Io(format!("auth_query: {m}"))),
                        None => Ok(value.flatten()),
                    };
                }
                _ => {}
            }
        }
    }

    /// Asks `pg_is_in_recovery()`.
    pub async fn ask_recovery(&mut self) -> Result<bool, ServerError> {
        self.send(&proto::query_message(
            "SELECT pg_catalog.pg_is_in_recovery()",
        ))
        .await?;
        let mut value = None;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag {
                b'D' => {
                    let b = frame.body();
                    // One column: i16 count, i32 length, the text.
                    if b.len() >= 7 {
                        value = Some(b[6] == b't');
                    }
                }
                b'E' => {
                    let f = proto::parse_error(frame.body());
                    return Err(ServerError::Io(f.message));
                }
                b'Z' => {
                    let v = value.ok_or_else(|| ServerError::Io("no recovery state".into()))?;
                    self.in_recovery = Some(v);
                    return Ok(v);
                }
                _ => {}
            }
        }
    }

    /// Reads one whole message.
    pub async fn read_frame(&mut self) -> Result<proto::Frame, ServerError> {
        loop {
            match proto::next_frame(&mut self.rbuf, MAX_SERVER_MESSAGE) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(ServerError::Io(e.to_string()));
                }
            }
            let n = self
                .io
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|e| ServerError::Io(e.to_string()))?;
            if n == 0 {
                self.broken = true;
                return Err(ServerError::Io("the server closed the connection".into()));
            }
        }
    }

    /// Closes politely (Terminate), ignoring errors.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            let _ = self.io.write_all(&proto::terminate()).await;
            let _ = self.io.shutdown().await;
        })
        .await;
    }
}

/// The second text column of a DataRow, None when NULL or absent.
fn second_column(mut b: &[u8]) -> Option<String> {
    use bytes::Buf;
    if b.len() < 2 || b.get_i16() < 2 {
        return None;
    }
    for i in 0..2 {
        if b.len() < 4 {
            return None;
        }
        let n = b.get_i32();
        if n < 0 {
            if i == 1 {
                return None;
            }
            continue;
        }
        let n = n as usize;
        if b.len() < n {
            return None;
        }
        if i == 1 {
            return Some(String::from_utf8_lossy(&b[..n]).into_owned());
        }
        b = &b[n..];
    }
    None
}

/// The largest message accepted from a server (PostgreSQL's own limit is 1 GiB per field).
pub const MAX_SERVER_MESSAGE: usize = 1 << 30;

fn fallible_next<I: FallibleIterator<Error = std::io::Error>>(
    it: &mut I,
) -> Result<Option<I::Item>, std::io::Error> {
    it.next()
}

/// Sends a CancelRequest for (`pid`, `key`) to the server at `t` (a new connection, as
/// the protocol wants).
pub async fn cancel(t: &Target, pid: i32, key: i32) -> Result<(), ServerError> {
    let addr = t.addr();
    let io_err = |source| ServerError::Connect {
        addr: addr.clone(),
        source,
    };
    let fut = async {
        let bytes = proto::cancel_request(pid, key);
        if t.host.starts_with('/') {
            let mut s = UnixStream::connect(&addr).await.map_err(io_err)?;
            s.write_all(&bytes).await.map_err(io_err)?;
            let _ = s.read(&mut [0u8; 1]).await;
        } else {
            let mut s = TcpStream::connect((t.host.as_str(), t.port))
                .await
                .map_err(io_err)?;
            s.write_all(&bytes).await.map_err(io_err)?;
            let _ = s.read(&mut [0u8; 1]).await;
        }
        Ok(())
    };
    tokio::time::timeout(t.connect_timeout, fut)
        .await
        .map_err(|_| ServerError::Timeout {
            addr: t.addr(),
            secs: t.connect_timeout.as_secs_f64(),
        })?
}
