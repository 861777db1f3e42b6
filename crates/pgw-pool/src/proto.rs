//! The wire protocol as the pooler sees it: the untyped startup packet, framing of typed
//! messages out of a byte buffer, and the few fields it reads from them.
//!
//! What postgres-protocol covers goes through it: frontend messages the pooler sends to
//! servers (startup, Query, password and SASL, CancelRequest) are written by
//! `postgres_protocol::message::frontend`, and a server's login replies are parsed by
//! `postgres_protocol::message::backend` (in [`crate::server`]). Hand-written where it
//! stops: it has no parser for what a client sends (startup, Parse, Bind, Describe, Close,
//! Query) and no writer for backend messages (errors, auth requests, ParameterStatus,
//! rows for the console); a pooler needs both. Raw framing ([`next_frame`]) is by hand so
//! that forwarded messages are sliced out of the read buffer without a copy.
//!
//! Every function here is total: any byte sequence yields a value or a [`ProtoError`],
//! never a panic (a proptest over random bytes checks it).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::message::frontend;

/// Protocol 3.0.
pub const PROTOCOL_3: i32 = 196_608;
/// SSLRequest's code.
pub const SSL_REQUEST: i32 = 80_877_103;
/// GSSENCRequest's code.
pub const GSSENC_REQUEST: i32 = 80_877_104;
/// CancelRequest's code.
pub const CANCEL_REQUEST: i32 = 80_877_102;
/// The largest startup packet accepted (PostgreSQL's own limit).
pub const MAX_STARTUP: usize = 10_000;

/// Why bytes from a peer are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// A length field below its minimum or above the limit.
    #[error("invalid message length {0}")]
    Length(i64),
    /// A startup packet with an unknown code or protocol version.
    #[error("unsupported protocol version {}.{}", .0 >> 16, .0 & 0xffff)]
    Version(i32),
    /// A field runs past the end, a string lacks its terminator, or similar.
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

/// What a client's first packet asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    /// SSLRequest: the client wants TLS.
    Ssl,
    /// GSSENCRequest: refused with 'N'.
    GssEnc,
    /// CancelRequest for the backend key the pooler gave out.
    Cancel {
        /// The process id of BackendKeyData.
        pid: i32,
        /// The secret key of BackendKeyData.
        key: i32,
    },
    /// A StartupMessage with its parameters, in order.
    Params(Vec<(String, String)>),
}

/// Parses a startup packet's body (after the 4-byte length).
pub fn parse_startup(mut body: &[u8]) -> Result<Startup, ProtoError> {
    if body.len() < 4 {
        return Err(ProtoError::Malformed("startup"));
    }
    let code = body.get_i32();
    match code {
        SSL_REQUEST if body.is_empty() => Ok(Startup::Ssl),
        GSSENC_REQUEST if body.is_empty() => Ok(Startup::GssEnc),
        CANCEL_REQUEST if body.len() == 8 => {
            let pid = body.get_i32();
            let key = body.get_i32();
            Ok(Startup::Cancel { pid, key })
        }
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => Err(ProtoError::Malformed("startup")),
        PROTOCOL_3 => {
            let mut params = Vec::new();
            loop {
                let name = cstr(&mut body, "startup")?;
                if name.is_empty() {
                    break;
                }
                let value = cstr(&mut body, "startup")?;
                params.push((name, value));
            }
            if !body.is_empty() {
                return Err(ProtoError::Malformed("startup"));
            }
            Ok(Startup::Params(params))
        }
        other => Err(ProtoError::Version(other)),
    }
}

/// Checks a startup packet's length field; the body length to read next.
pub fn startup_len(len: i32) -> Result<usize, ProtoError> {
    if !(8..=MAX_STARTUP as i32).contains(&len) {
        return Err(ProtoError::Length(len.into()));
    }
    Ok(len as usize - 4)
}

/// One typed message cut out of a buffer: tag and the whole message (tag, length, body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The message type byte.
    pub tag: u8,
    /// The whole message as it came, ready to forward.
    pub raw: Bytes,
}

impl Frame {
    /// The body (after the tag and the length).
    pub fn body(&self) -> &[u8] {
        &self.raw[5..]
    }
}

/// Cuts the next whole message off the front of `buf`: Ok(None) when more bytes are
/// needed. A length below 4 or above `max` is an error.
pub fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, ProtoError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 || len as usize > max {
        return Err(ProtoError::Length(len.into()));
    }
    let total = len as usize + 1;
    if buf.len() < total {
        // Room for the rest, but not more than 1 MiB ahead: a length field alone must not
        // make the pooler allocate what a hostile client claims.
        buf.reserve((total - buf.len()).min(1 << 20));
        return Ok(None);
    }
    let raw = buf.split_to(total).freeze();
    Ok(Some(Frame { tag: raw[0], raw }))
}

/// Reads a NUL-terminated string, advancing `b`.
fn cstr(b: &mut &[u8], what: &'static str) -> Result<String, ProtoError> {
    let end = b
        .iter()
        .position(|&c| c == 0)
        .ok_or(ProtoError::Malformed(what))?;
    let s = String::from_utf8_lossy(&b[..end]).into_owned();
    *b = &b[end + 1..];
    Ok(s)
}

/// Reads a NUL-terminated string as bytes, advancing `b`.
fn cbytes<'a>(b: &mut &'a [u8], what: &'static str) -> Result<&'a [u8], ProtoError> {
    let end = b
        .iter()
        .position(|&c| c == 0)
        .ok_or(ProtoError::Malformed(what))?;
    let s = &b[..end];
    *b = &b[end + 1..];
    Ok(s)
}

/// A Parse message's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse<'a> {
    /// The statement name ("" = unnamed).
    pub name: &'a [u8],
    /// The query text.
    pub query: &'a [u8],
    /// Everything after the name: query, parameter count and types (the statement's
    /// identity, whatever the client calls it).
    pub rest: &'a [u8],
}

/// Reads a Parse body.
pub fn parse_parse(body: &[u8]) -> Result<Parse<'_>, ProtoError> {
    let mut b = body;
    let name = cbytes(&mut b, "Parse")?;
    let rest = b;
    let query = cbytes(&mut b, "Parse")?;
    if b.len() < 2 {
        return Err(ProtoError::Malformed("Parse"));
    }
    let n = b.get_i16();
    if n < 0 || b.len() != n as usize * 4 {
        return Err(ProtoError::Malformed("Parse"));
    }
    Ok(Parse { name, query, rest })
}

/// A Bind's portal name, statement name, and the rest of its body.
pub type Bind<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// A Bind's portal and statement names, and the rest of the body.
pub fn parse_bind(body: &[u8]) -> Result<Bind<'_>, ProtoError> {
    let mut b = body;
    let portal = cbytes(&mut b, "Bind")?;
    let stmt = cbytes(&mut b, "Bind")?;
    Ok((portal, stmt, b))
}

/// A Describe's or Close's kind (`S` or `P`) and name.
pub fn parse_target<'a>(body: &'a [u8], what: &'static str) -> Result<(u8, &'a [u8]), ProtoError> {
    let (&kind, mut b) = body.split_first().ok_or(ProtoError::Malformed(what))?;
    if kind != b'S' && kind != b'P' {
        return Err(ProtoError::Malformed(what));
    }
    let name = cbytes(&mut b, what)?;
    if !b.is_empty() {
        return Err(ProtoError::Malformed(what));
    }
    Ok((kind, name))
}

/// A simple Query's text.
pub fn parse_query(body: &[u8]) -> Result<&[u8], ProtoError> {
    let mut b = body;
    let q = cbytes(&mut b, "Query")?;
    if !b.is_empty() {
        return Err(ProtoError::Malformed("Query"));
    }
    Ok(q)
}

/// A CommandComplete's tag.
pub fn parse_command_tag(body: &[u8]) -> &[u8] {
    let end = body.iter().position(|&c| c == 0).unwrap_or(body.len());
    &body[..end]
}

/// A ParameterStatus' name and value.
pub fn parse_parameter_status(body: &[u8]) -> Result<(String, String), ProtoError> {
    let mut b = body;
    let name = cstr(&mut b, "ParameterStatus")?;
    let value = cstr(&mut b, "ParameterStatus")?;
    Ok((name, value))
}

/// The fields of an ErrorResponse or NoticeResponse that the pooler reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// `S`: ERROR, FATAL, ...
    pub severity: String,
    /// `C`: the SQLSTATE.
    pub code: String,
    /// `M`: the message.
    pub message: String,
}

/// Reads an ErrorResponse body.
pub fn parse_error(body: &[u8]) -> ErrorFields {
    let mut f = ErrorFields::default();
    let mut b = body;
    while let Some((&t, rest)) = b.split_first() {
        if t == 0 {
            break;
        }
        b = rest;
        let Ok(v) = cstr(&mut b, "ErrorResponse") else {
            break;
        };
        match t {
            b'S' => f.severity = v,
            b'C' => f.code = v,
            b'M' => f.message = v,
            _ => {}
        }
    }
    f
}

// ---- messages the pooler writes -------------------------------------------------------

fn typed(tag: u8, body: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    put_typed(&mut b, tag, body);
    b.freeze()
}

/// Appends one message to `b` (no allocation of its own).
fn put_typed(b: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    let start = b.len();
    b.put_u8(tag);
    b.put_i32(0);
    body(b);
    let len = (b.len() - start - 1) as i32;
    b[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

/// Appends a ParameterStatus to `b`.
pub fn put_parameter_status(b: &mut BytesMut, name: &str, value: &str) {
    put_typed(b, b'S', |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, value.as_bytes());
    })
}

fn put_cstr(b: &mut BytesMut, s: &[u8]) {
    // A NUL inside would end the string early on the other side: cut it there.
    let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
    b.put_slice(&s[..end]);
    b.put_u8(0);
}

/// ErrorResponse with severity, SQLSTATE and message.
pub fn error_response(severity: &str, code: &str, message: &str) -> Bytes {
    typed(b'E', |b| {
        for (t, v) in [
            (b'S', severity),
            (b'V', severity),
            (b'C', code),
            (b'M', message),
        ] {
            b.put_u8(t);
            put_cstr(b, v.as_bytes());
        }
        b.put_u8(0);
    })
}

/// NoticeResponse (severity NOTICE or WARNING).
pub fn notice_response(severity: &str, message: &str) -> Bytes {
    typed(b'N', |b| {
        for (t, v) in [
            (b'S', severity),
            (b'V', severity),
            (b'C', "00000"),
            (b'M', message),
        ] {
            b.put_u8(t);
            put_cstr(b, v.as_bytes());
        }
        b.put_u8(0);
    })
}

/// An Authentication message: code plus data (0 = Ok, 3 = cleartext, 5 = MD5 with salt,
/// 10 = SASL with mechanism list, 11 = SASLContinue, 12 = SASLFinal).
pub fn authentication(code: i32, data: &[u8]) -> Bytes {
    typed(b'R', |b| {
        b.put_i32(code);
        b.put_slice(data);
    })
}

/// ParameterStatus.
pub fn parameter_status(name: &str, value: &str) -> Bytes {
    typed(b'S', |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, value.as_bytes());
    })
}

/// BackendKeyData.
pub fn backend_key_data(pid: i32, key: i32) -> Bytes {
    typed(b'K', |b| {
        b.put_i32(pid);
        b.put_i32(key);
    })
}

/// ReadyForQuery with a transaction status (`I`, `T` or `E`).
pub fn ready_for_query(status: u8) -> Bytes {
    typed(b'Z', |b| b.put_u8(status))
}

/// A message with no body (ParseComplete `1`, CloseComplete `3`, ...).
pub fn empty(tag: u8) -> Bytes {
    typed(tag, |_| {})
}

/// A console column type, as PgBouncer declares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    /// text (PgBouncer's `s` and `T`).
    Text,
    /// int4 (`i`).
    Int4,
    /// int8 (`q`).
    Int8,
    /// numeric (`N`).
    Numeric,
}

/// RowDescription of text-format columns.
pub fn row_description(columns: &[(&str, ColType)]) -> Bytes {
    typed(b'T', |b| {
        b.put_i16(columns.len() as i16);
        for (name, ty) in columns {
            let (oid, size): (u32, i16) = match ty {
                ColType::Text => (25, -1),
                ColType::Int4 => (23, 4),
                ColType::Int8 => (20, 8),
                ColType::Numeric => (1700, -1),
            };
            put_cstr(b, name.as_bytes());
            b.put_i32(0);
            b.put_i16(0);
            b.put_u32(oid);
            b.put_i16(size);
            b.put_i32(-1);
            b.put_i16(0);
        }
    })
}

/// DataRow of text values (None = NULL).
pub fn data_row(values: &[Option<String>]) -> Bytes {
    typed(b'D', |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    })
}

/// CommandComplete.
pub fn command_complete(tag: &str) -> Bytes {
    typed(b'C', |b| put_cstr(b, tag.as_bytes()))
}

/// A Parse message (for statements the pooler prepares on a server itself).
pub fn parse_message(name: &[u8], rest: &[u8]) -> Bytes {
    typed(b'P', |b| {
        put_cstr(b, name);
        b.put_slice(rest);
    })
}

/// A Bind message with another statement name.
pub fn bind_message(portal: &[u8], stmt: &[u8], rest: &[u8]) -> Bytes {
    typed(b'B', |b| {
        put_cstr(b, portal);
        put_cstr(b, stmt);
        b.put_slice(rest);
    })
}

/// A Describe or Close (`tag`) of kind `S`/`P` and a name.
pub fn target_message(tag: u8, kind: u8, name: &[u8]) -> Bytes {
    typed(tag, |b| {
        b.put_u8(kind);
        put_cstr(b, name);
    })
}

/// A simple Query (a NUL in `sql` cuts it there).
pub fn query_message(sql: &str) -> Bytes {
    let end = sql.find('\0').unwrap_or(sql.len());
    let mut b = BytesMut::new();
    match frontend::query(&sql[..end], &mut b) {
        Ok(()) => b.freeze(),
        Err(_) => typed(b'Q', |b| put_cstr(b, sql.as_bytes())),
    }
}

/// A StartupMessage with parameters (a NUL inside a name or value cuts it there).
pub fn startup_message(params: &[(&str, &str)]) -> Bytes {
    let cut = |s: &str| s.split('\0').next().unwrap_or("").to_owned();
    let owned: Vec<(String, String)> = params.iter().map(|(k, v)| (cut(k), cut(v))).collect();
    let mut b = BytesMut::new();
    // Only a NUL inside a string or a packet over 2 GiB fails; neither can happen here.
    let _ = frontend::startup_message(owned.iter().map(|(k, v)| (k.as_str(), v.as_str())), &mut b);
    b.freeze()
}

/// A CancelRequest packet.
pub fn cancel_request(pid: i32, key: i32) -> Bytes {
    let mut b = BytesMut::with_capacity(16);
    frontend::cancel_request(pid, key, &mut b);
    b.freeze()
}

/// A SASLResponse (or any raw-data PasswordMessage) from the pooler to a server.
pub fn sasl_response(data: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    match frontend::sasl_response(data, &mut b) {
        Ok(()) => b.freeze(),
        Err(_) => typed(b'p', |b| b.put_slice(data)),
    }
}

/// A clear-text or MD5 PasswordMessage (NUL-terminated).
pub fn password_message(password: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    match frontend::password_message(password, &mut b) {
        Ok(()) => b.freeze(),
        Err(_) => typed(b'p', |b| put_cstr(b, password)),
    }
}

/// A SASLInitialResponse.
pub fn sasl_initial(mechanism: &str, data: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    match frontend::sasl_initial_response(mechanism, data, &mut b) {
        Ok(()) => b.freeze(),
        Err(_) => typed(b'p', |b| {
            put_cstr(b, mechanism.as_bytes());
            b.put_i32(data.len() as i32);
            b.put_slice(data);
        }),
    }
}

/// A Terminate message.
pub fn terminate() -> Bytes {
    let mut b = BytesMut::new();
    frontend::terminate(&mut b);
    b.freeze()
}

/// Reads a client's SASLInitialResponse body: mechanism and data.
pub fn parse_sasl_initial(body: &[u8]) -> Result<(String, &[u8]), ProtoError> {
    let mut b = body;
    let mech = cstr(&mut b, "SASLInitialResponse")?;
    if b.len() < 4 {
        return Err(ProtoError::Malformed("SASLInitialResponse"));
    }
    let n = b.get_i32();
    if n < 0 || b.len() != n as usize {
        return Err(ProtoError::Malformed("SASLInitialResponse"));
    }
    Ok((mech, b))
}

/// Reads a PasswordMessage body (a NUL-terminated password).
pub fn parse_password(body: &[u8]) -> Result<&[u8], ProtoError> {
    let mut b = body;
    let p = cbytes(&mut b, "PasswordMessage")?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn startup_kinds() {
        let mut b = BytesMut::new();
        b.put_i32(SSL_REQUEST);
        assert_eq!(parse_startup(&b).unwrap(), Startup::Ssl);
        let m = startup_message(&[("user", "u"), ("database", "d")]);
        let body = &m[4..];
        assert_eq!(
            parse_startup(body).unwrap(),
            Startup::Params(vec![
                ("user".into(), "u".into()),
                ("database".into(), "d".into())
            ])
        );
        let c = cancel_request(7, 9);
        assert_eq!(
            parse_startup(&c[4..]).unwrap(),
            Startup::Cancel { pid: 7, key: 9 }
        );
        let mut v2 = BytesMut::new();
        v2.put_i32(131_072);
        assert!(matches!(parse_startup(&v2), Err(ProtoError::Version(_))));
        assert!(startup_len(3).is_err() && startup_len(100_000).is_err());
    }

    #[test]
    fn frames_are_cut_only_when_whole() {
        let q = query_message("select 1");
        let mut buf = BytesMut::from(&q[..3]);
        assert_eq!(next_frame(&mut buf, 1 << 20).unwrap(), None);
        buf.extend_from_slice(&q[3..]);
        buf.extend_from_slice(&q[..2]);
        let f = next_frame(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(f.tag, b'Q');
        assert_eq!(parse_query(f.body()).unwrap(), b"select 1");
        assert_eq!(buf.len(), 2);
        let mut bad = BytesMut::from(&[b'Q', 0, 0, 0, 2][..]);
        assert!(next_frame(&mut bad, 1 << 20).is_err());
        let mut big = BytesMut::from(&[b'Q', 0x7f, 0, 0, 0][..]);
        assert!(next_frame(&mut big, 1 << 20).is_err());
    }

    #[test]
    fn parse_and_bind_fields() {
        let mut body = BytesMut::new();
        put_cstr(&mut body, b"s1");
        put_cstr(&mut body, b"select $1");
        body.put_i16(1);
        body.put_u32(23);
        let p = parse_parse(&body).unwrap();
        assert_eq!((p.name, p.query), (&b"s1"[..], &b"select $1"[..]));
        let m = parse_message(b"PGW_1", p.rest);
        let again = parse_parse(&m[5..]).unwrap();
        assert_eq!((again.name, again.rest), (&b"PGW_1"[..], p.rest));
        let b = bind_message(b"", b"PGW_1", b"\0\0\0\0\0\0");
        let (portal, stmt, rest) = parse_bind(&b[5..]).unwrap();
        assert_eq!((portal, stmt, rest.len()), (&b""[..], &b"PGW_1"[..], 6));
        let d = target_message(b'D', b'S', b"x");
        assert_eq!(
            parse_target(&d[5..], "Describe").unwrap(),
            (b'S', &b"x"[..])
        );
    }

    #[test]
    fn error_fields() {
        let e = error_response("FATAL", "28P01", "password authentication failed");
        let f = parse_error(&e[5..]);
        assert_eq!(f.code, "28P01");
        assert_eq!(f.severity, "FATAL");
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_startup(&bytes);
            let _ = parse_parse(&bytes);
            let _ = parse_bind(&bytes);
            let _ = parse_target(&bytes, "Describe");
            let _ = parse_query(&bytes);
            let _ = parse_error(&bytes);
            let _ = parse_parameter_status(&bytes);
            let _ = parse_sasl_initial(&bytes);
            let _ = parse_password(&bytes);
            let _ = parse_command_tag(&bytes);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(f)) = next_frame(&mut buf, 1 << 16) {
                prop_assert!(f.raw.len() >= 5);
            }
        }
    }
}
