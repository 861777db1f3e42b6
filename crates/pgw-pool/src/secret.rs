//! A user's stored secret, as PgBouncer's auth file and `pg_authid.rolpassword` hold it:
//! a plain password, an MD5 hash (`md5` + md5(password + user) in hex) or a SCRAM-SHA-256
//! secret (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, base64 parts).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// A parsed SCRAM-SHA-256 secret (RFC 5802 / PostgreSQL's `rolpassword` form).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// The salt (raw bytes).
    pub salt: Vec<u8>,
    /// H(ClientKey).
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 32],
}

/// One user's secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The password itself.
    Plain(String),
    /// `md5` followed by 32 lower-case hex digits.
    Md5(String),
    /// A SCRAM-SHA-256 secret.
    Scram(ScramSecret),
}

// Secrets never reach logs or error text.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Secret::Plain(_) => "Secret::Plain(..)",
            Secret::Md5(_) => "Secret::Md5(..)",
            Secret::Scram(_) => "Secret::Scram(..)",
        })
    }
}

impl std::fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScramSecret {{ iterations: {}, .. }}", self.iterations)
    }
}

impl Secret {
    /// Parses a stored secret. A string that starts like an MD5 or SCRAM secret but is
    /// malformed is an error (with a reason that does not repeat the secret), not a
    /// plain password.
    pub fn parse(s: &str) -> Result<Secret, String> {
        if let Some(rest) = s.strip_prefix("SCRAM-SHA-256$") {
            return parse_scram(rest).map(Secret::Scram);
        }
        if s.len() == 35 && s.starts_with("md5") && s[3..].bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Secret::Md5(s.to_ascii_lowercase()));
        }
        Ok(Secret::Plain(s.to_owned()))
    }

    /// The kind, for messages: `plain`, `md5` or `scram-sha-256`.
    pub fn kind(&self) -> &'static str {
        match self {
            Secret::Plain(_) => "plain",
            Secret::Md5(_) => "md5",
            Secret::Scram(_) => "scram-sha-256",
        }
    }
}

fn parse_scram(rest: &str) -> Result<ScramSecret, String> {
    let bad = |what: &str| format!("malformed SCRAM-SHA-256 secret: {what}");
    let (iter_salt, keys) = rest.split_once('$').ok_or_else(|| bad("no keys"))?;
    let (iter, salt) = iter_salt.split_once(':').ok_or_else(|| bad("no salt"))?;
    let iterations: u32 = iter.parse().map_err(|_| bad("iterations"))?;
    if iterations == 0 {
        return Err(bad("iterations"));
    }
    let salt = B64.decode(salt).map_err(|_| bad("salt"))?;
    let (stored, server) = keys.split_once(':').ok_or_else(|| bad("no server key"))?;
    let key = |k: &str, what: &str| -> Result<[u8; 32], String> {
        B64.decode(k)
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
            .ok_or_else(|| bad(what))
    };
    Ok(ScramSecret {
        iterations,
        salt,
        stored_key: key(stored, "stored key")?,
        server_key: key(server, "server key")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(
            Secret::parse("hunter2").unwrap(),
            Secret::Plain("hunter2".into())
        );
        let md5 = "md5a3556571e93b0d20722ba62be61e8c2d";
        assert_eq!(Secret::parse(md5).unwrap(), Secret::Md5(md5.into()));
        // From postgres-protocol's own generator.
        let scram = postgres_protocol::password::scram_sha_256(b"pw");
        match Secret::parse(&scram).unwrap() {
            Secret::Scram(s) => assert_eq!(s.iterations, 4096),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_scram_is_an_error_without_the_secret() {
        let e = Secret::parse("SCRAM-SHA-256$4096:c2FsdA==$bm90MzI=:bm90MzI=").unwrap_err();
        assert!(e.contains("stored key") && !e.contains("bm90"), "{e}");
        assert!(Secret::parse("SCRAM-SHA-256$x").is_err());
    }
}
