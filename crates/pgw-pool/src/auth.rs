//! The password exchanges, both sides, as pure functions over message payloads (no I/O,
//! no async): the pooler's connection code feeds in what a client or server sent and
//! writes out what comes back.
//!
//! - SCRAM-SHA-256 (RFC 5802, RFC 7677, as PostgreSQL's `auth-scram.c` speaks it):
//!   [`ScramServer`] checks a client against a stored [`Secret`]; [`ScramClient`] logs in
//!   to PostgreSQL with a password or with the [`ClientKeys`] recovered from a client's
//!   proof (SCRAM pass-through, as PgBouncer does since 1.14: the pooler never learns the
//!   password, yet can log in to a server holding the same secret).
//! - MD5 (`md5` + md5(md5(password + user) + salt)): [`md5_response_from_password`],
//!   [`md5_response_from_secret`], [`md5_check`].
//! - Clear-text passwords against any kind of secret: [`password_check`].
//!
//! Why hand-written: `postgres_protocol::authentication::sasl::ScramSha256` is a client
//! that only takes a password. The pooler also needs the server side of SCRAM, and a
//! client that works from ClientKey/ServerKey instead of a password.
//!
//! Limitation: no SASLprep. Passwords are used as raw bytes. PostgreSQL applies SASLprep
//! to passwords that are valid for it and falls back to the raw bytes otherwise; for
//! ASCII passwords SASLprep is the identity, so they always agree. A non-ASCII password
//! that SASLprep would change (NFKC normalisation, mapped spaces, removed characters)
//! gives different keys here than in PostgreSQL or libpq.
//!
//! Errors ([`AuthError`]) are one line and never contain passwords, keys, proofs or
//! client-supplied text.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use rand::rngs::SysRng;
use rand::{Rng, TryRng};
use sha2::{Digest, Sha256};

use crate::secret::{ScramSecret, Secret};

/// PBKDF2 iterations for a SCRAM secret derived from a plain password (PostgreSQL's
/// default).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Salt length for a SCRAM secret derived from a plain password (PostgreSQL's).
pub const DEFAULT_SALT_LEN: usize = 16;
/// The most PBKDF2 iterations [`ScramClient`] accepts from a server; more is treated as
/// hostile (a cheap way to make the pooler burn CPU).
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Random bytes in a nonce before base64 (PostgreSQL uses 18).
const NONCE_BYTES: usize = 18;

/// Why an exchange failed. The text is one line, safe to log and to show a client.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The message does not follow the SCRAM grammar; says which part.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client requires channel binding (`p=` gs2 flag); the pooler offers none.
    #[error("client requires SCRAM channel binding, but it is not supported")]
    ChannelBindingUnsupported,
    /// A SCRAM feature PostgreSQL refuses too (authorization identity, mandatory
    /// extensions).
    #[error("unsupported SCRAM feature: {0}")]
    Unsupported(&'static str),
    /// The nonce in a later message is not the one agreed.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// The client's proof does not match the stored secret.
    #[error("password authentication failed (SCRAM proof does not match)")]
    WrongPassword,
    /// The server's signature does not match: it does not know the secret.
    #[error("SCRAM server signature does not match")]
    ServerSignature,
    /// The server ended the exchange with `e=<reason>` (printable ASCII only, truncated).
    #[error("SCRAM error from server: {0}")]
    Server(String),
    /// The server asked for an iteration count outside 1..=[`MAX_ITERATIONS`].
    #[error("SCRAM iteration count {0} out of range")]
    Iterations(u64),
    /// The secret is an md5 hash, which cannot do SCRAM.
    #[error("an md5 secret cannot be used for SCRAM authentication")]
    Md5Secret,
    /// A step called out of order, or again after the exchange ended.
    #[error("SCRAM exchange step out of order")]
    OutOfOrder,
}

/// Keys recovered from a client's successful SCRAM proof (or derived from a password).
/// With them [`ScramClient`] can log in to a server whose secret has the same salt and
/// iterations (the same `SCRAM-SHA-256$...` string).
#[derive(Clone)]
pub struct ClientKeys {
    /// HMAC(SaltedPassword, "Client Key").
    pub client_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKeys(..)")
    }
}

impl ClientKeys {
    /// Derives the keys from a password (raw bytes, no SASLprep) with PBKDF2.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> ClientKeys {
        keys_from_password(password.as_bytes(), salt, iterations)
    }

    /// H(ClientKey), as a secret stores it.
    pub fn stored_key(&self) -> [u8; 32] {
        sha256(&self.client_key)
    }
}

/// Derives a SCRAM-SHA-256 secret from a password (raw bytes, no SASLprep; see the
/// module doc). An iteration count of 0 is taken as 1.
pub fn scram_secret_from_password(password: &str, salt: &[u8], iterations: u32) -> ScramSecret {
    let iterations = iterations.max(1);
    let keys = keys_from_password(password.as_bytes(), salt, iterations);
    ScramSecret {
        iterations,
        salt: salt.to_vec(),
        stored_key: keys.stored_key(),
        server_key: keys.server_key,
    }
}

// ---------------------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------------------

/// Server side of SCRAM-SHA-256: the pooler checks a client. One exchange per value.
pub struct ScramServer {
    secret: ScramSecret,
    state: ServerState,
}

enum ServerState {
    Start,
    SentFirst {
        /// `n,,` or `y,,`, as the client sent it.
        gs2_header: Vec<u8>,
        client_first_bare: Vec<u8>,
        server_first: Vec<u8>,
        /// Client nonce followed by ours.
        nonce: Vec<u8>,
    },
    Done,
}

impl std::fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramServer(..)")
    }
}

impl ScramServer {
    /// From a stored SCRAM secret, or from a plain password (then a secret is derived
    /// with a random 16-byte salt and 4096 iterations, as PostgreSQL does; keys recovered
    /// from such an exchange only fit a server with that same fresh secret, so they are
    /// no use for pass-through). An md5 secret is [`AuthError::Md5Secret`].
    pub fn new(secret: &Secret) -> Result<ScramServer, AuthError> {
        let secret = match secret {
            Secret::Scram(s) => s.clone(),
            Secret::Plain(password) => {
                let mut salt = [0u8; DEFAULT_SALT_LEN];
                os_random(&mut salt);
                scram_secret_from_password(password, &salt, DEFAULT_ITERATIONS)
            }
            Secret::Md5(_) => return Err(AuthError::Md5Secret),
        };
        Ok(ScramServer {
            secret,
            state: ServerState::Start,
        })
    }

    /// Takes SASLInitialResponse's data (the client-first-message; the caller has
    /// already checked the mechanism is `SCRAM-SHA-256`) and returns the
    /// server-first-message for AuthenticationSASLContinue.
    pub fn server_first(&mut self, client_first: &[u8]) -> Result<Vec<u8>, AuthError> {
        // Any failure ends the exchange: the state only advances on success.
        if !matches!(
            std::mem::replace(&mut self.state, ServerState::Done),
            ServerState::Start
        ) {
            return Err(AuthError::OutOfOrder);
        }
        check_message(client_first)?;

        // gs2-header = gs2-cbind-flag "," [ authzid ] ","
        match client_first.first() {
            Some(b'n' | b'y') => {} // "y" is fine: we advertise no -PLUS mechanism.
            Some(b'p') => return Err(AuthError::ChannelBindingUnsupported),
            _ => return Err(AuthError::Malformed("channel-binding flag")),
        }
        if client_first.get(1) != Some(&b',') {
            return Err(AuthError::Malformed("comma after channel-binding flag"));
        }
        match client_first.get(2) {
            Some(b',') => {}
            // PostgreSQL refuses an authzid too.
            Some(b'a') => return Err(AuthError::Unsupported("authorization identity")),
            _ => return Err(AuthError::Malformed("gs2 header")),
        }
        let (gs2_header, bare) = client_first.split_at(3);

        // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
        if bare.first() == Some(&b'm') {
            return Err(AuthError::Unsupported("mandatory extension"));
        }
        let mut attrs = Attrs::new(bare);
        // The user name is ignored, as PostgreSQL does (the startup packet's counts).
        attrs.require(b'n', "user name attribute expected")?;
        let client_nonce = attrs.require(b'r', "nonce attribute expected")?;
        if client_nonce.is_empty() || !client_nonce.iter().all(|&b| is_printable(b)) {
            return Err(AuthError::Malformed("nonce"));
        }
        // Optional extensions: checked for syntax, ignored.
        while attrs.next_attr()?.is_some() {}

        let mut nonce = client_nonce.to_vec();
        nonce.extend_from_slice(new_nonce().as_bytes());
        let mut server_first = b"r=".to_vec();
        server_first.extend_from_slice(&nonce);
        server_first.extend_from_slice(
            format!(
                ",s={},i={}",
                B64.encode(&self.secret.salt),
                self.secret.iterations
            )
            .as_bytes(),
        );

        self.state = ServerState::SentFirst {
            gs2_header: gs2_header.to_vec(),
            client_first_bare: bare.to_vec(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first)
    }

    /// Takes SASLResponse's data (the client-final-message) and returns the
    /// server-final-message for AuthenticationSASLFinal, with the client's keys for
    /// pass-through. A wrong proof is [`AuthError::WrongPassword`] (the caller then sends
    /// an ErrorResponse, as PostgreSQL does).
    pub fn server_final(
        &mut self,
        client_final: &[u8],
    ) -> Result<(Vec<u8>, ClientKeys), AuthError> {
        let ServerState::SentFirst {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, ServerState::Done)
        else {
            return Err(AuthError::OutOfOrder);
        };
        check_message(client_final)?;

        // client-final-message-without-proof = channel-binding "," nonce ["," extensions]
        // client-final-message = client-final-message-without-proof "," proof
        let mut attrs = Attrs::new(client_final);
        let cbind = attrs.require(b'c', "channel-binding attribute expected")?;
        if cbind != B64.encode(&gs2_header).as_bytes() {
            return Err(AuthError::Malformed("channel-binding attribute"));
        }
        let final_nonce = attrs.require(b'r', "nonce attribute expected")?;
        if final_nonce != nonce.as_slice() {
            return Err(AuthError::NonceMismatch);
        }
        let (proof_start, proof) = loop {
            let start = attrs.pos;
            match attrs.next_attr()? {
                Some((b'p', value)) => break (start, value),
                Some(_) => {} // extensions: ignored
                None => return Err(AuthError::Malformed("proof attribute expected")),
            }
        };
        if !attrs.is_done() {
            return Err(AuthError::Malformed("data after the proof"));
        }
        let proof = decode_key(proof).ok_or(AuthError::Malformed("proof"))?;
        // Without the "," before "p=".
        let without_proof = client_final
            .get(..proof_start.saturating_sub(1))
            .ok_or(AuthError::Malformed("proof"))?;

        let auth_message = auth_message(&client_first_bare, &server_first, without_proof);
        let client_signature = hmac(&self.secret.stored_key, &auth_message);
        let client_key = xor(&proof, &client_signature);
        if !ct_eq(&sha256(&client_key), &self.secret.stored_key) {
            return Err(AuthError::WrongPassword);
        }
        let server_signature = hmac(&self.secret.server_key, &auth_message);
        let server_final = format!("v={}", B64.encode(server_signature)).into_bytes();
        Ok((
            server_final,
            ClientKeys {
                client_key,
                server_key: self.secret.server_key,
            },
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------

/// What [`ScramClient`] logs in with.
#[derive(Clone)]
pub enum ScramCredential {
    /// A password (raw bytes, no SASLprep).
    Password(String),
    /// Keys recovered from a client's proof (pass-through) or derived beforehand.
    Keys(ClientKeys),
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScramCredential::Password(_) => "ScramCredential::Password(..)",
            ScramCredential::Keys(_) => "ScramCredential::Keys(..)",
        })
    }
}

/// Client side of SCRAM-SHA-256 (without channel binding): the pooler logs in to
/// PostgreSQL. One exchange per value.
pub struct ScramClient {
    cred: ScramCredential,
    nonce: String,
    state: ClientState,
}

enum ClientState {
    Start,
    /// The server signature we expect in the server-final-message.
    SentFinal {
        server_signature: [u8; 32],
    },
    Done,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramClient(..)")
    }
}

impl ScramClient {
    /// A client with a fresh random nonce.
    pub fn new(cred: ScramCredential) -> ScramClient {
        ScramClient {
            cred,
            nonce: new_nonce(),
            state: ClientState::Start,
        }
    }

    /// The client-first-message for SASLInitialResponse: `n,,n=,r=<nonce>`. The user name
    /// is empty, as libpq sends it (PostgreSQL ignores it).
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare()).into_bytes()
    }

    fn client_first_bare(&self) -> String {
        format!("n=,r={}", self.nonce)
    }

    /// Takes AuthenticationSASLContinue's data (the server-first-message) and returns the
    /// client-final-message for SASLResponse.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(
            std::mem::replace(&mut self.state, ClientState::Done),
            ClientState::Start
        ) {
            return Err(AuthError::OutOfOrder);
        }
        check_message(server_first)?;

        // server-first-message = [reserved-mext ","] nonce "," salt "," iteration-count
        //                        ["," extensions]
        if server_first.first() == Some(&b'm') {
            return Err(AuthError::Unsupported("mandatory extension"));
        }
        let mut attrs = Attrs::new(server_first);
        let nonce = attrs.require(b'r', "nonce attribute expected")?;
        // The server's nonce must extend ours with something of its own.
        if nonce.len() <= self.nonce.len() || !nonce.starts_with(self.nonce.as_bytes()) {
            return Err(AuthError::NonceMismatch);
        }
        if !nonce.iter().all(|&b| is_printable(b)) {
            return Err(AuthError::Malformed("nonce"));
        }
        let salt = attrs.require(b's', "salt attribute expected")?;
        let salt = B64.decode(salt).map_err(|_| AuthError::Malformed("salt"))?;
        let iterations = attrs.require(b'i', "iteration count attribute expected")?;
        let iterations = parse_iterations(iterations)?;
        while attrs.next_attr()?.is_some() {}

        let keys = match &self.cred {
            ScramCredential::Password(p) => keys_from_password(p.as_bytes(), &salt, iterations),
            ScramCredential::Keys(k) => k.clone(),
        };

        let mut without_proof = b"c=biws,r=".to_vec(); // biws = base64("n,,")
        without_proof.extend_from_slice(nonce);
        let auth_message = auth_message(
            self.client_first_bare().as_bytes(),
            server_first,
            &without_proof,
        );
        let client_signature = hmac(&keys.stored_key(), &auth_message);
        let proof = xor(&keys.client_key, &client_signature);

        self.state = ClientState::SentFinal {
            server_signature: hmac(&keys.server_key, &auth_message),
        };
        let mut client_final = without_proof;
        client_final.extend_from_slice(format!(",p={}", B64.encode(proof)).as_bytes());
        Ok(client_final)
    }

    /// Checks AuthenticationSASLFinal's data (the server-final-message): `v=` must carry
    /// the server signature we expect; `e=<reason>` is [`AuthError::Server`].
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), AuthError> {
        let ClientState::SentFinal { server_signature } = &self.state else {
            return Err(AuthError::OutOfOrder);
        };
        check_message(server_final)?;
        let mut attrs = Attrs::new(server_final);
        let verifier = match attrs.next_attr()? {
            Some((b'v', value)) => value,
            Some((b'e', reason)) => return Err(AuthError::Server(sanitize(reason))),
            _ => return Err(AuthError::Malformed("verifier attribute expected")),
        };
        while attrs.next_attr()?.is_some() {}
        let verifier = decode_key(verifier).ok_or(AuthError::Malformed("verifier"))?;
        if !ct_eq(&verifier, server_signature) {
            return Err(AuthError::ServerSignature);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// MD5 and clear text
// ---------------------------------------------------------------------------------------

/// The client's answer to AuthenticationMD5Password, from a plain password:
/// `md5` + md5(md5(password + user) + salt), in lower-case hex.
pub fn md5_response_from_password(user: &str, password: &str, salt: [u8; 4]) -> String {
    md5_response_from_secret(&md5_secret(user, password.as_bytes()), salt)
}

/// The same from a stored md5 secret (`md5` + 32 hex digits; the prefix may be left
/// off).
pub fn md5_response_from_secret(md5_secret: &str, salt: [u8; 4]) -> String {
    let hex = md5_secret.strip_prefix("md5").unwrap_or(md5_secret);
    let hex = hex.to_ascii_lowercase();
    let mut h = Md5::new();
    h.update(hex.as_bytes());
    h.update(salt);
    format!("md5{}", to_hex(&h.finalize()))
}

/// Checks a client's md5 response (PasswordMessage's payload; one trailing NUL is
/// ignored) against a Plain or Md5 secret, in constant time. False for SCRAM secrets,
/// which cannot answer an md5 challenge.
pub fn md5_check(secret: &Secret, user: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let response = strip_nul(response);
    let expected = match secret {
        Secret::Plain(p) => md5_response_from_password(user, p, salt),
        Secret::Md5(s) => md5_response_from_secret(s, salt),
        Secret::Scram(_) => return false,
    };
    ct_eq(expected.as_bytes(), response)
}

/// Checks a clear-text password (PasswordMessage's payload for `auth_type = plain`; one
/// trailing NUL is ignored) against any kind of secret, in constant time: Plain: equal;
/// Md5: hashed with the user name and compared; Scram: derived with the secret's salt
/// and iterations and StoredKey compared.
pub fn password_check(secret: &Secret, user: &str, password: &[u8]) -> bool {
    let password = strip_nul(password);
    match secret {
        // Compare digests so that the time does not depend on the lengths either.
        Secret::Plain(p) => ct_eq(&sha256(p.as_bytes()), &sha256(password)),
        Secret::Md5(s) => ct_eq(
            md5_secret(user, password).as_bytes(),
            s.to_ascii_lowercase().as_bytes(),
        ),
        Secret::Scram(s) => {
            let keys = keys_from_password(password, &s.salt, s.iterations);
            ct_eq(&keys.stored_key(), &s.stored_key)
        }
    }
}

/// A random salt for AuthenticationMD5Password.
pub fn random_salt() -> [u8; 4] {
    let mut salt = [0u8; 4];
    os_random(&mut salt);
    salt
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

type HmacSha256 = Hmac<Sha256>;

/// A keyed HMAC-SHA-256. HMAC takes keys of any length (RFC 2104: longer than a block,
/// hashed first; shorter, zero-padded to a block). Doing that here lets us use the
/// infallible `new` rather than `new_from_slice`, whose error never happens.
fn hmac_keyed(key: &[u8]) -> HmacSha256 {
    let mut block = hmac::digest::Key::<HmacSha256>::default();
    if key.len() > block.len() {
        let digest = sha256(key);
        block[..digest.len()].copy_from_slice(&digest);
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    HmacSha256::new(&block)
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = hmac_keyed(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Hi() of RFC 5802, i.e. PBKDF2-HMAC-SHA-256 with one 32-byte block. Done by hand (a
/// dozen lines over hmac) rather than adding the pbkdf2 crate.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let keyed = hmac_keyed(password);
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = mac.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations.max(1) {
        let mut mac = keyed.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        out = xor(&out, &u);
    }
    out
}

fn keys_from_password(password: &[u8], salt: &[u8], iterations: u32) -> ClientKeys {
    let salted = salted_password(password, salt, iterations);
    ClientKeys {
        client_key: hmac(&salted, b"Client Key"),
        server_key: hmac(&salted, b"Server Key"),
    }
}

/// client-first-message-bare "," server-first-message "," client-final-message-without-proof
fn auth_message(client_first_bare: &[u8], server_first: &[u8], without_proof: &[u8]) -> Vec<u8> {
    let mut m =
        Vec::with_capacity(client_first_bare.len() + server_first.len() + without_proof.len() + 2);
    m.extend_from_slice(client_first_bare);
    m.push(b',');
    m.extend_from_slice(server_first);
    m.push(b',');
    m.extend_from_slice(without_proof);
    m
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x ^ y;
    }
    out
}

/// Equality whose time depends only on the lengths.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn decode_key(b64: &[u8]) -> Option<[u8; 32]> {
    let v = B64.decode(b64).ok()?;
    <[u8; 32]>::try_from(v.as_slice()).ok()
}

/// `md5` + md5(password + user) in hex: the stored md5 secret.
fn md5_secret(user: &str, password: &[u8]) -> String {
    let mut h = Md5::new();
    h.update(password);
    h.update(user.as_bytes());
    format!("md5{}", to_hex(&h.finalize()))
}

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

fn strip_nul(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\0").unwrap_or(b)
}

/// RFC 5802 `printable`: %x21-2B / %x2D-7E (printable ASCII except ",").
fn is_printable(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b','
}

/// Non-empty and no NUL (PostgreSQL checks the length agrees with strlen()).
fn check_message(msg: &[u8]) -> Result<(), AuthError> {
    if msg.is_empty() {
        return Err(AuthError::Malformed("empty message"));
    }
    if msg.contains(&0) {
        return Err(AuthError::Malformed("NUL byte in message"));
    }
    Ok(())
}

fn parse_iterations(digits: &[u8]) -> Result<u32, AuthError> {
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(AuthError::Malformed("iteration count"));
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    if n == 0 || n > u64::from(MAX_ITERATIONS) {
        return Err(AuthError::Iterations(n));
    }
    u32::try_from(n).map_err(|_| AuthError::Iterations(n))
}

/// A server's `e=` reason, made safe for one line of text.
fn sanitize(reason: &[u8]) -> String {
    reason
        .iter()
        .take(64)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

/// base64 of 18 random bytes: 24 printable characters, no ",".
fn new_nonce() -> String {
    let mut raw = [0u8; NONCE_BYTES];
    os_random(&mut raw);
    B64.encode(raw)
}

/// Fills `buf` from the OS's CSPRNG. Should that fail, falls back to rand's thread RNG
/// (also a CSPRNG, seeded from the OS; it panics only if the OS has no randomness at all,
/// which no input can cause).
fn os_random(buf: &mut [u8]) {
    if SysRng.try_fill_bytes(buf).is_err() {
        rand::rng().fill_bytes(buf);
    }
}

/// Reads `attr=value` pairs separated by ",". `pos` is where the next one starts.
struct Attrs<'a> {
    msg: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Attrs<'a> {
    fn new(msg: &'a [u8]) -> Attrs<'a> {
        Attrs {
            msg,
            pos: 0,
            done: false,
        }
    }

    fn is_done(&self) -> bool {
        self.done
    }

    /// The next `ALPHA "=" value`, or None at the end. A trailing "," is malformed.
    fn next_attr(&mut self) -> Result<Option<(u8, &'a [u8])>, AuthError> {
        if self.done {
            return Ok(None);
        }
        let rest = self.msg.get(self.pos..).unwrap_or_default();
        let (attr, value) = match rest {
            [attr, b'=', value @ ..] if attr.is_ascii_alphabetic() => (*attr, value),
            _ => return Err(AuthError::Malformed("attribute expected")),
        };
        match value.iter().position(|&b| b == b',') {
            Some(i) => {
                self.pos += 2 + i + 1;
                Ok(Some((attr, value.get(..i).unwrap_or_default())))
            }
            None => {
                self.pos = self.msg.len();
                self.done = true;
                Ok(Some((attr, value)))
            }
        }
    }

    /// The next attribute, which must be `attr`.
    fn require(&mut self, attr: u8, what: &'static str) -> Result<&'a [u8], AuthError> {
        match self.next_attr()? {
            Some((a, value)) if a == attr => Ok(value),
            _ => Err(AuthError::Malformed(what)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    use proptest::prelude::*;

    /// Which error a malformed message must give.
    type Check = fn(&AuthError) -> bool;

    fn secret(password: &str) -> Secret {
        Secret::parse(&postgres_protocol::password::scram_sha_256(
            password.as_bytes(),
        ))
        .unwrap()
    }

    /// A cheap secret for tests that run many exchanges.
    fn cheap_secret(password: &str) -> Secret {
        Secret::Scram(scram_secret_from_password(password, b"saltsaltsaltsalt", 2))
    }

    /// Runs our client against our server; the client's result of the last step.
    fn exchange(server: &mut ScramServer, cred: ScramCredential) -> Result<ClientKeys, AuthError> {
        let mut client = ScramClient::new(cred);
        let first = server.server_first(&client.client_first())?;
        let fin = client.client_final(&first)?;
        let (server_final, keys) = server.server_final(&fin)?;
        client.verify_server_final(&server_final)?;
        Ok(keys)
    }

    #[test]
    fn server_against_postgres_protocol_client() {
        let secret = secret("hunter2");
        let mut server = ScramServer::new(&secret).unwrap();
        let mut client = ScramSha256::new(b"hunter2", ChannelBinding::unsupported());
        let first = server.server_first(client.message()).unwrap();
        client.update(&first).unwrap();
        let (fin, keys) = server.server_final(client.message()).unwrap();
        client.finish(&fin).unwrap();
        let Secret::Scram(s) = &secret else { panic!() };
        assert_eq!(keys.stored_key(), s.stored_key);
        assert_eq!(keys.server_key, s.server_key);
    }

    #[test]
    fn server_rejects_wrong_password_from_postgres_protocol_client() {
        let mut server = ScramServer::new(&secret("hunter2")).unwrap();
        let mut client = ScramSha256::new(b"hunter3", ChannelBinding::unsupported());
        let first = server.server_first(client.message()).unwrap();
        client.update(&first).unwrap();
        let err = server.server_final(client.message()).unwrap_err();
        assert!(matches!(err, AuthError::WrongPassword), "{err}");
        // The exchange is over.
        assert!(matches!(
            server.server_final(client.message()),
            Err(AuthError::OutOfOrder)
        ));
    }

    #[test]
    fn server_accepts_y_flag_client() {
        // ChannelBinding::unrequested() sends "y,,".
        let mut server = ScramServer::new(&secret("pw")).unwrap();
        let mut client = ScramSha256::new(b"pw", ChannelBinding::unrequested());
        assert!(client.message().starts_with(b"y,,"));
        let first = server.server_first(client.message()).unwrap();
        client.update(&first).unwrap();
        let (fin, _) = server.server_final(client.message()).unwrap();
        client.finish(&fin).unwrap();
    }

    #[test]
    fn our_client_against_our_server() {
        let mut server = ScramServer::new(&secret("s3cret")).unwrap();
        exchange(&mut server, ScramCredential::Password("s3cret".into())).unwrap();

        let mut server = ScramServer::new(&secret("s3cret")).unwrap();
        let err = exchange(&mut server, ScramCredential::Password("nope".into())).unwrap_err();
        assert!(matches!(err, AuthError::WrongPassword), "{err}");
    }

    #[test]
    fn plain_secret_server() {
        let plain = Secret::Plain("pw".into());
        let mut server = ScramServer::new(&plain).unwrap();
        exchange(&mut server, ScramCredential::Password("pw".into())).unwrap();
        let mut server = ScramServer::new(&plain).unwrap();
        assert!(exchange(&mut server, ScramCredential::Password("px".into())).is_err());
        assert!(matches!(
            ScramServer::new(&Secret::Md5("md5a3556571e93b0d20722ba62be61e8c2d".into())),
            Err(AuthError::Md5Secret)
        ));
    }

    #[test]
    fn pass_through() {
        let secret = secret("passthru");
        let mut front = ScramServer::new(&secret).unwrap();
        let mut client = ScramSha256::new(b"passthru", ChannelBinding::unsupported());
        let first = front.server_first(client.message()).unwrap();
        client.update(&first).unwrap();
        let (fin, keys) = front.server_final(client.message()).unwrap();
        client.finish(&fin).unwrap();

        // The pooler logs in to a "backend" with the same secret, without the password.
        let mut backend = ScramServer::new(&secret).unwrap();
        exchange(&mut backend, ScramCredential::Keys(keys.clone())).unwrap();

        // Against a different secret the keys are refused.
        let mut other = ScramServer::new(&cheap_secret("passthru")).unwrap();
        assert!(matches!(
            exchange(&mut other, ScramCredential::Keys(keys)),
            Err(AuthError::WrongPassword)
        ));
    }

    #[test]
    fn client_keys_from_password_match_secret() {
        let s = scram_secret_from_password("pw", b"0123456789abcdef", 16);
        let keys = ClientKeys::from_password("pw", b"0123456789abcdef", 16);
        assert_eq!(keys.stored_key(), s.stored_key);
        assert_eq!(keys.server_key, s.server_key);
        assert_eq!(format!("{keys:?}"), "ClientKeys(..)");
    }

    #[test]
    fn secret_matches_postgres_protocol() {
        // postgres-protocol's secret, re-derived from its salt and iterations.
        let Secret::Scram(theirs) = secret("correct horse") else {
            panic!()
        };
        let ours = scram_secret_from_password("correct horse", &theirs.salt, theirs.iterations);
        assert!(ours == theirs);
    }

    #[test]
    fn hmac_keyed_matches_new_from_slice() {
        for len in [0, 1, 31, 32, 63, 64, 65, 200] {
            let key = vec![0x5au8; len];
            let mut a = HmacSha256::new_from_slice(&key).unwrap();
            a.update(b"data");
            assert_eq!(
                hmac(&key, b"data"),
                <[u8; 32]>::from(a.finalize().into_bytes())
            );
        }
    }

    #[test]
    fn pbkdf2_rfc7914_vector() {
        // RFC 7914 section 11: PBKDF2-HMAC-SHA256 (P="passwd", S="salt", c=1), first 32 bytes.
        let out = salted_password(b"passwd", b"salt", 1);
        assert_eq!(
            to_hex(&out),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
        // RFC 7914: P="Password", S="NaCl", c=80000.
        let out = salted_password(b"Password", b"NaCl", 80000);
        assert_eq!(
            to_hex(&out),
            "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56"
        );
    }

    /// A server that has received a valid client-first; returns it and its nonce.
    fn server_after_first(client_first: &[u8]) -> (ScramServer, String) {
        let mut server = ScramServer::new(&cheap_secret("pw")).unwrap();
        let first = server.server_first(client_first).unwrap();
        let first = String::from_utf8(first).unwrap();
        let nonce = first
            .strip_prefix("r=")
            .and_then(|r| r.split(',').next())
            .unwrap()
            .to_owned();
        (server, nonce)
    }

    #[test]
    fn malformed_client_first() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"x,,n=,r=abc", "flag"),
            (b"n", "flag alone"),
            (b"n,", "short header"),
            (b"n,,", "no bare"),
            (b"n,x,n=,r=abc", "bad authzid"),
            (b"n,,r=abc", "no user name"),
            (b"n,,n=", "no nonce"),
            (b"n,,n=,r=", "empty nonce"),
            (b"n,,n=,r=a b", "space in nonce"),
            (b"n,,n=,r=a\x80b", "non-ascii nonce"),
            (b"n,,n=,r=abc,", "trailing comma"),
            (b"n,,n=,r=abc,1=x", "bad extension"),
            (b"n,,n=,r=abc,x", "extension without ="),
            (b"n,,n=,r=a\0bc", "NUL"),
        ];
        for (msg, what) in cases {
            let mut server = ScramServer::new(&cheap_secret("pw")).unwrap();
            let err = server.server_first(msg).unwrap_err();
            assert!(matches!(err, AuthError::Malformed(_)), "{what}: {err}");
        }
        let refused: &[(&[u8], Check)] = &[
            (b"p=tls-server-end-point,,n=,r=abc", |e| {
                matches!(e, AuthError::ChannelBindingUnsupported)
            }),
            (b"n,a=bob,n=,r=abc", |e| {
                matches!(e, AuthError::Unsupported(_))
            }),
            (b"n,,m=ext,n=,r=abc", |e| {
                matches!(e, AuthError::Unsupported(_))
            }),
        ];
        for (msg, ok) in refused {
            let mut server = ScramServer::new(&cheap_secret("pw")).unwrap();
            let err = server.server_first(msg).unwrap_err();
            assert!(ok(&err), "{err}");
        }
        // The user name is ignored; extensions after the nonce are ignored.
        let (_, nonce) = server_after_first(b"n,,n=someone,r=abc,x=ext");
        assert!(nonce.starts_with("abc") && nonce.len() > 3);
        // Twice is out of order.
        let (mut server, _) = server_after_first(b"n,,n=,r=abc");
        assert!(matches!(
            server.server_first(b"n,,n=,r=abc"),
            Err(AuthError::OutOfOrder)
        ));
    }

    #[test]
    fn malformed_client_final() {
        let proof = B64.encode([0u8; 32]);
        let cases: Vec<(String, &str, Check)> = vec![
            ("".into(), "empty", |e| matches!(e, AuthError::Malformed(_))),
            (format!("r=N,p={proof}"), "no c", |e| {
                matches!(e, AuthError::Malformed(_))
            }),
            (
                format!("c=eSws,r=N,p={proof}"),
                "c for y,, after n,,",
                |e| matches!(e, AuthError::Malformed(_)),
            ),
            (format!("c=biws,p={proof}"), "no r", |e| {
                matches!(e, AuthError::Malformed(_))
            }),
            (format!("c=biws,r=Nx,p={proof}"), "nonce", |e| {
                matches!(e, AuthError::NonceMismatch)
            }),
            (
                format!("c=biws,r=abc,p={proof}"),
                "client nonce only",
                |e| matches!(e, AuthError::NonceMismatch),
            ),
            ("c=biws,r=N".into(), "no proof", |e| {
                matches!(e, AuthError::Malformed(_))
            }),
            ("c=biws,r=N,p=AAAA".into(), "short proof", |e| {
                matches!(e, AuthError::Malformed(_))
            }),
            ("c=biws,r=N,p=!!!!".into(), "bad base64", |e| {
                matches!(e, AuthError::Malformed(_))
            }),
            (format!("c=biws,r=N,p={proof},x=1"), "after proof", |e| {
                matches!(e, AuthError::Malformed(_))
            }),
            (format!("c=biws,r=N,p={proof},"), "trailing comma", |e| {
                matches!(e, AuthError::Malformed(_))
            }),
            (
                format!("c=biws,r=N,x=ext,p={proof}"),
                "extension, wrong proof",
                |e| matches!(e, AuthError::WrongPassword),
            ),
            (format!("c=biws,r=N,p={proof}"), "zero proof", |e| {
                matches!(e, AuthError::WrongPassword)
            }),
        ];
        for (msg, what, ok) in cases {
            let (mut server, nonce) = server_after_first(b"n,,n=,r=abc");
            let msg = msg.replace("r=N", &format!("r={nonce}"));
            let err = server.server_final(msg.as_bytes()).unwrap_err();
            assert!(ok(&err), "{what}: {err}");
            assert!(!err.to_string().contains(&proof) && !err.to_string().contains('\n'));
        }
        // "y,," must be answered with c=eSws.
        let (mut server, nonce) = server_after_first(b"y,,n=,r=abc");
        let err = server
            .server_final(format!("c=biws,r={nonce},p={proof}").as_bytes())
            .unwrap_err();
        assert!(matches!(err, AuthError::Malformed(_)), "{err}");
        // Final before first.
        let mut server = ScramServer::new(&cheap_secret("pw")).unwrap();
        assert!(matches!(
            server.server_final(b"c=biws,r=x,p=y"),
            Err(AuthError::OutOfOrder)
        ));
    }

    /// A server-first-message a server could send to `client`.
    fn server_first_for(client: &ScramClient, rest: &str) -> Vec<u8> {
        format!("r={}SRV{rest}", client.nonce).into_bytes()
    }

    #[test]
    fn malformed_server_first() {
        let cases: &[(&str, Check)] = &[
            (",s=c2FsdA==,i=1", |_| true), // valid, checked below
            (",s=c2FsdA==", |e| matches!(e, AuthError::Malformed(_))),
            (",i=1,s=c2FsdA==", |e| matches!(e, AuthError::Malformed(_))),
            (",s=!!,i=1", |e| matches!(e, AuthError::Malformed(_))),
            (",s=c2FsdA==,i=0", |e| matches!(e, AuthError::Iterations(0))),
            (",s=c2FsdA==,i=10000001", |e| {
                matches!(e, AuthError::Iterations(_))
            }),
            (",s=c2FsdA==,i=99999999999", |e| {
                matches!(e, AuthError::Malformed(_))
            }),
            (",s=c2FsdA==,i=-1", |e| matches!(e, AuthError::Malformed(_))),
            (",s=c2FsdA==,i=", |e| matches!(e, AuthError::Malformed(_))),
            (",s=c2FsdA==,i=1,", |e| matches!(e, AuthError::Malformed(_))),
            (" x,s=c2FsdA==,i=1", |e| {
                matches!(e, AuthError::Malformed(_))
            }),
        ];
        for (i, (rest, ok)) in cases.iter().enumerate() {
            let mut client = ScramClient::new(ScramCredential::Password("pw".into()));
            let msg = server_first_for(&client, rest);
            match client.client_final(&msg) {
                Ok(_) => assert_eq!(i, 0),
                Err(e) => assert!(i != 0 && ok(&e), "{rest}: {e}"),
            }
        }
        // Nonces that do not extend ours.
        let mut client = ScramClient::new(ScramCredential::Password("pw".into()));
        let echo = format!("r={},s=c2FsdA==,i=1", client.nonce);
        assert!(matches!(
            client.client_final(echo.as_bytes()),
            Err(AuthError::NonceMismatch)
        ));
        let mut client = ScramClient::new(ScramCredential::Password("pw".into()));
        assert!(matches!(
            client.client_final(b"r=someoneelse,s=c2FsdA==,i=1"),
            Err(AuthError::NonceMismatch)
        ));
        let mut client = ScramClient::new(ScramCredential::Password("pw".into()));
        assert!(matches!(
            client.client_final(b"m=x,r=a,s=c2FsdA==,i=1"),
            Err(AuthError::Unsupported(_))
        ));
        let client = ScramClient::new(ScramCredential::Password("pw".into()));
        assert!(matches!(
            client.verify_server_final(b"v=x"),
            Err(AuthError::OutOfOrder)
        ));
    }

    #[test]
    fn client_first_shape() {
        let client = ScramClient::new(ScramCredential::Password("pw".into()));
        let first = String::from_utf8(client.client_first()).unwrap();
        let nonce = first.strip_prefix("n,,n=,r=").unwrap();
        assert!(nonce.len() >= 24 && nonce.bytes().all(is_printable));
        let other = ScramClient::new(ScramCredential::Password("pw".into()));
        assert_ne!(client.client_first(), other.client_first());
    }

    #[test]
    fn server_final_checks() {
        let mut server = ScramServer::new(&cheap_secret("pw")).unwrap();
        let mut client = ScramClient::new(ScramCredential::Password("pw".into()));
        let first = server.server_first(&client.client_first()).unwrap();
        let fin = client.client_final(&first).unwrap();
        let (good, _) = server.server_final(&fin).unwrap();

        assert!(matches!(
            client.verify_server_final(b"e=invalid-proof"),
            Err(AuthError::Server(r)) if r == "invalid-proof"
        ));
        let e = client.verify_server_final(b"e=bad\nline\x01").unwrap_err();
        assert!(!e.to_string().contains('\n'), "{e}");
        let wrong = format!("v={}", B64.encode([7u8; 32]));
        assert!(matches!(
            client.verify_server_final(wrong.as_bytes()),
            Err(AuthError::ServerSignature)
        ));
        for bad in [&b"v=AAAA"[..], b"x=1", b"v", b"", b"v=!!"] {
            assert!(matches!(
                client.verify_server_final(bad),
                Err(AuthError::Malformed(_))
            ));
        }
        client.verify_server_final(&good).unwrap();
        // Extensions after the verifier are allowed.
        let mut ext = good.clone();
        ext.extend_from_slice(b",x=1");
        client.verify_server_final(&ext).unwrap();
    }

    #[test]
    fn md5_against_postgres_protocol() {
        use postgres_protocol::authentication::md5_hash;
        let salt = [1, 2, 3, 4];
        let expected = md5_hash(b"alice", b"wonderland", salt);
        assert_eq!(
            md5_response_from_password("alice", "wonderland", salt),
            expected
        );
        let stored = postgres_protocol::password::md5(b"wonderland", "alice");
        assert_eq!(md5_response_from_secret(&stored, salt), expected);
        assert_eq!(
            md5_response_from_secret(&stored.to_ascii_uppercase()[3..], salt),
            expected
        );

        let plain = Secret::Plain("wonderland".into());
        let md5 = Secret::parse(&stored).unwrap();
        for s in [&plain, &md5] {
            assert!(md5_check(s, "alice", salt, expected.as_bytes()));
            assert!(md5_check(
                s,
                "alice",
                salt,
                format!("{expected}\0").as_bytes()
            ));
            assert!(!md5_check(s, "alice", [4, 3, 2, 1], expected.as_bytes()));
            assert!(!md5_check(s, "alice", salt, b""));
            assert!(!md5_check(s, "alice", salt, &expected.as_bytes()[..34]));
        }
        // From a plain password the user name salts the hash; an md5 secret has it built in.
        assert!(!md5_check(&plain, "bob", salt, expected.as_bytes()));
        assert!(md5_check(&md5, "bob", salt, expected.as_bytes()));
        assert!(!md5_check(
            &secret("wonderland"),
            "alice",
            salt,
            expected.as_bytes()
        ));
    }

    #[test]
    fn password_check_all_kinds() {
        let plain = Secret::Plain("pw1".into());
        let md5 = Secret::parse(&postgres_protocol::password::md5(b"pw1", "carol")).unwrap();
        let scram = secret("pw1");
        for s in [&plain, &md5, &scram] {
            assert!(password_check(s, "carol", b"pw1"), "{s:?}");
            assert!(password_check(s, "carol", b"pw1\0"), "{s:?}");
            assert!(!password_check(s, "carol", b"pw2"), "{s:?}");
            assert!(!password_check(s, "carol", b""), "{s:?}");
            assert!(!password_check(s, "carol", b"pw1x"), "{s:?}");
        }
        // The md5 secret is salted with the user name.
        assert!(!password_check(&md5, "dave", b"pw1"));
    }

    #[test]
    fn random_salts_differ() {
        let salts: Vec<_> = (0..8).map(|_| random_salt()).collect();
        assert!(salts.iter().any(|s| *s != salts[0]));
    }

    #[test]
    fn errors_are_one_line() {
        let all = [
            AuthError::Malformed("x"),
            AuthError::ChannelBindingUnsupported,
            AuthError::Unsupported("x"),
            AuthError::NonceMismatch,
            AuthError::WrongPassword,
            AuthError::ServerSignature,
            AuthError::Server("x".into()),
            AuthError::Iterations(0),
            AuthError::Md5Secret,
            AuthError::OutOfOrder,
        ];
        for e in all {
            assert!(!e.to_string().contains('\n'));
        }
    }

    proptest! {
        #[test]
        fn server_first_never_panics(msg in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut server = ScramServer::new(&cheap_secret("pw")).unwrap();
            let _ = server.server_first(&msg);
        }

        #[test]
        fn server_first_never_panics_near_valid(tail in "[a-z=,]{0,24}") {
            let mut server = ScramServer::new(&cheap_secret("pw")).unwrap();
            let _ = server.server_first(format!("n,,n=,r=abc{tail}").as_bytes());
        }

        #[test]
        fn server_final_never_panics(msg in proptest::collection::vec(any::<u8>(), 0..160)) {
            let (mut server, _) = server_after_first(b"n,,n=,r=abc");
            let _ = server.server_final(&msg);
        }

        #[test]
        fn server_final_never_panics_near_valid(tail in "[a-zA-Z0-9+/=,]{0,64}") {
            let (mut server, nonce) = server_after_first(b"n,,n=,r=abc");
            let _ = server.server_final(format!("c=biws,r={nonce}{tail}").as_bytes());
        }

        #[test]
        fn client_final_never_panics(msg in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut client = ScramClient::new(ScramCredential::Password("pw".into()));
            let _ = client.client_final(&msg);
            let _ = client.verify_server_final(&msg);
        }

        #[test]
        fn client_final_never_panics_near_valid(tail in "[a-zA-Z0-9+/=,]{0,40}") {
            let mut client = ScramClient::new(ScramCredential::Password("pw".into()));
            let msg = server_first_for(&client, &tail);
            let _ = client.client_final(&msg);
        }

        #[test]
        fn verify_server_final_never_panics(msg in proptest::collection::vec(any::<u8>(), 0..96)) {
            let mut server = ScramServer::new(&cheap_secret("pw")).unwrap();
            let mut client = ScramClient::new(ScramCredential::Password("pw".into()));
            let first = server.server_first(&client.client_first()).unwrap();
            client.client_final(&first).unwrap();
            let _ = client.verify_server_final(&msg);
        }
    }
}
