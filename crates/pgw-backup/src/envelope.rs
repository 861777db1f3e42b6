//! The envelope: how every object of a repository is stored (a WAL segment, a piece of a
//! data file, a manifest). A fixed header, then the body: the plain bytes compressed with
//! zstd and, in an encrypted repository, sealed with AES-256-GCM.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "PGWB"
//!      4     1  format version (1)
//!      5     1  flags: 1 = zstd, 2 = AES-256-GCM
//!      6     2  reserved (0)
//!      8     8  plain length (LE)
//!     16     8  body length (LE)
//!     24    32  checksum of the plain bytes: XXH3-128 (zero-padded), or in an encrypted
//!               repository BLAKE3 keyed with its MAC key
//!     56    12  AES-GCM nonce (zero when not encrypted)
//!     68     …  body
//! ```
//!
//! The checksum is of the plain bytes so that `wal push` can tell an identical segment from a
//! different one by reading 68 bytes. Encrypted, it is keyed, so it says nothing about the
//! contents to someone without the key; the header is the AEAD's associated data, so a changed
//! header fails to open. Envelopes are self-delimiting: a pack is envelopes one after another.
//!
//! Written by hand because it is a 68-byte header around two crates' calls (zstd, aes-gcm);
//! a container format crate would be larger than this file.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

/// The first bytes of every envelope.
pub const MAGIC: [u8; 4] = *b"PGWB";
/// The header's length.
pub const HEADER_LEN: usize = 68;
const VERSION: u8 = 1;
const FLAG_ZSTD: u8 = 1;
const FLAG_AES: u8 = 2;
/// The largest plain length an envelope may claim (PostgreSQL's largest WAL segment); a
/// header claiming more is damage, not an allocation to try.
pub const MAX_PLAIN: u64 = 1 << 30;

/// A repository's keys, derived from its secret and its id.
#[derive(Clone)]
pub struct Key {
    cipher: Aes256Gcm,
    mac: [u8; 32],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// The keys for `secret` (the passphrase or key file's bytes) in the repository `repo_id`:
    /// BLAKE3's key derivation, one context for the cipher key and one for the MAC key.
    pub fn derive(secret: &[u8], repo_id: &str) -> Key {
        let mut material = secret.to_vec();
        material.extend_from_slice(repo_id.as_bytes());
        let cipher_key = blake3::derive_key("pgwarden 2026 repository cipher key", &material);
        let mac = blake3::derive_key("pgwarden 2026 repository checksum key", &material);
        Key {
            cipher: Aes256Gcm::new(&cipher_key.into()),
            mac,
        }
    }
}

/// What an envelope's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub compressed: bool,
    pub encrypted: bool,
    pub plain_len: u64,
    pub body_len: u64,
    pub checksum: [u8; 32],
    nonce: [u8; 12],
}

impl Header {
    /// The envelope's whole length.
    pub fn total_len(&self) -> u64 {
        HEADER_LEN as u64 + self.body_len
    }

    /// The checksum as hex.
    pub fn checksum_hex(&self) -> String {
        hex(&self.checksum)
    }

    fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC);
        h[4] = VERSION;
        h[5] = (if self.compressed { FLAG_ZSTD } else { 0 })
            | (if self.encrypted { FLAG_AES } else { 0 });
        h[8..16].copy_from_slice(&self.plain_len.to_le_bytes());
        h[16..24].copy_from_slice(&self.body_len.to_le_bytes());
        h[24..56].copy_from_slice(&self.checksum);
        h[56..68].copy_from_slice(&self.nonce);
        h
    }

    /// Reads a header from the first [`HEADER_LEN`] bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Header, EnvelopeError> {
        if bytes.len() < HEADER_LEN {
            return Err(EnvelopeError::Truncated);
        }
        if bytes[0..4] != MAGIC {
            return Err(EnvelopeError::NotAnEnvelope);
        }
        if bytes[4] != VERSION {
            return Err(EnvelopeError::Version(bytes[4]));
        }
        let flags = bytes[5];
        if flags & !(FLAG_ZSTD | FLAG_AES) != 0 || bytes[6] != 0 || bytes[7] != 0 {
            return Err(EnvelopeError::Header("unknown flags"));
        }
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let plain_len = u64_at(8);
        let body_len = u64_at(16);
        if plain_len > MAX_PLAIN || body_len > MAX_PLAIN + (MAX_PLAIN >> 4) + 4096 {
            return Err(EnvelopeError::Header("impossible length"));
        }
        let mut checksum = [0u8; 32];
        checksum.copy_from_slice(&bytes[24..56]);
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&bytes[56..68]);
        if flags & FLAG_AES == 0 && nonce != [0u8; 12] {
            return Err(EnvelopeError::Header("a nonce without encryption"));
        }
        Ok(Header {
            compressed: flags & FLAG_ZSTD != 0,
            encrypted: flags & FLAG_AES != 0,
            plain_len,
            body_len,
            checksum,
            nonce,
        })
    }
}

/// Why bytes are not a good envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("truncated")]
    Truncated,
    #[error("not a pgwarden object (bad magic)")]
    NotAnEnvelope,
    #[error("format version {0} is not known to this pgwarden")]
    Version(u8),
    #[error("damaged header ({0})")]
    Header(&'static str),
    #[error("encrypted, and no encryption key was given")]
    NoKey,
    #[error("not encrypted, in an encrypted repository")]
    NotEncrypted,
    #[error("cannot be decrypted (wrong key, or damaged)")]
    Decrypt,
    #[error("damaged (zstd: {0})")]
    Decompress(String),
    #[error("damaged (length {got}, header says {want})")]
    Length { got: u64, want: u64 },
    #[error("damaged (checksum mismatch)")]
    Checksum,
}

thread_local! {
    /// Each thread's zstd contexts, kept from piece to piece (a context costs megabytes of
    /// tables to set up at level 3).
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// zstd at `level` with this thread's context; `None` if zstd fails (allocation).
fn compress(plain: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut slot = c.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, z) = slot.as_mut()?;
        z.compress(plain).ok()
    })
}

/// Decompresses `body` into `out` with this thread's context.
fn decompress(body: &[u8], out: &mut [u8]) -> std::io::Result<usize> {
    DECOMPRESSOR.with(|d| {
        let mut slot = d.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(z) => z.decompress_to_buffer(body, out),
            None => Err(std::io::Error::other("no zstd context")),
        }
    })
}

/// The checksum of `plain`. Unencrypted: XXH3-128, a checksum for damage (a flipped bit,
/// a torn or swapped object), at memory speed: BLAKE3 cost a quarter of a restore's CPU.
/// Encrypted: BLAKE3 keyed with the MAC key, so that it says nothing about the contents to
/// someone without the key (AES-GCM authenticates the stored bytes besides).
pub fn checksum(plain: &[u8], key: Option<&Key>) -> [u8; 32] {
    match key {
        Some(k) => *blake3::keyed_hash(&k.mac, plain).as_bytes(),
        None => {
            let mut out = [0u8; 32];
            out[..16].copy_from_slice(&xxhash_rust::xxh3::xxh3_128(plain).to_le_bytes());
            out
        }
    }
}

/// Seals `plain`: zstd at `level` (0 stores it as it is), then AES-256-GCM with `key`.
pub fn seal(plain: &[u8], level: i32, key: Option<&Key>) -> Vec<u8> {
    seal_with_checksum(plain, checksum(plain, key), level, key)
}

/// [`seal`] with the checksum already computed.
pub fn seal_with_checksum(plain: &[u8], sum: [u8; 32], level: i32, key: Option<&Key>) -> Vec<u8> {
    // zstd on a slice in memory fails only on allocation failure; stored as it is then.
    let packed = if level != 0 {
        compress(plain, level)
    } else {
        None
    };
    let compressed = packed.is_some();
    let body: Vec<u8> = packed.unwrap_or_else(|| plain.to_vec());
    let mut header = Header {
        compressed,
        encrypted: key.is_some(),
        plain_len: plain.len() as u64,
        body_len: body.len() as u64,
        checksum: sum,
        nonce: [0u8; 12],
    };
    let body = match key {
        None => body,
        Some(k) => {
            let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
            header.nonce.copy_from_slice(&nonce);
            header.body_len = body.len() as u64 + 16;
            let aad = header.to_bytes();
            // AES-GCM encryption of an in-memory buffer fails only for messages over 64 GiB.
            k.cipher
                .encrypt(
                    &nonce,
                    Payload {
                        msg: &body,
                        aad: &aad,
                    },
                )
                .unwrap_or_default()
        }
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(&body);
    out
}

/// [`seal_with_checksum`] appended to `out`, compressing straight into it when the
/// repository is not encrypted (no copy of the compressed bytes: a backup's pack buffer).
/// Returns the envelope's length.
pub fn seal_into(
    plain: &[u8],
    sum: [u8; 32],
    level: i32,
    key: Option<&Key>,
    out: &mut Vec<u8>,
) -> usize {
    if key.is_none() && level != 0 {
        let start = out.len();
        out.extend_from_slice(&[0u8; HEADER_LEN]);
        let body_at = out.len();
        out.reserve(zstd::zstd_safe::compress_bound(plain.len()));
        let written = COMPRESSOR.with(|c| {
            let mut slot = c.borrow_mut();
            if slot.as_ref().is_none_or(|(l, _)| *l != level) {
                *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
            }
            let (_, z) = slot.as_mut()?;
            let mut cursor = std::io::Cursor::new(&mut *out);
            cursor.set_position(body_at as u64);
            z.compress_to_buffer(plain, &mut cursor).ok()
        });
        if let Some(n) = written.filter(|n| out.len() == body_at + n) {
            let header = Header {
                compressed: true,
                encrypted: false,
                plain_len: plain.len() as u64,
                body_len: n as u64,
                checksum: sum,
                nonce: [0u8; 12],
            };
            out[start..body_at].copy_from_slice(&header.to_bytes());
            return HEADER_LEN + n;
        }
        out.truncate(start);
    }
    let sealed = seal_with_checksum(plain, sum, level, key);
    out.extend_from_slice(&sealed);
    sealed.len()
}

/// Opens the envelope at the start of `bytes`: checks the header, decrypts, decompresses and
/// checks the checksum. Returns the plain bytes and the envelope's length.
pub fn open(bytes: &[u8], key: Option<&Key>) -> Result<(Vec<u8>, usize), EnvelopeError> {
    let header = Header::parse(bytes)?;
    let mut plain = vec![0u8; header.plain_len as usize];
    let (n, used) = open_into(bytes, key, &mut plain)?;
    plain.truncate(n);
    Ok((plain, used))
}

/// [`open`] into `out` (at least the plain length long): returns the plain length and the
/// envelope's length. Saves a copy where the caller has the buffer (restore's chunks).
pub fn open_into(
    bytes: &[u8],
    key: Option<&Key>,
    out: &mut [u8],
) -> Result<(usize, usize), EnvelopeError> {
    let header = Header::parse(bytes)?;
    let total = header.total_len();
    if (bytes.len() as u64) < total {
        return Err(EnvelopeError::Truncated);
    }
    let total = total as usize;
    let want = header.plain_len as usize;
    if out.len() < want {
        return Err(EnvelopeError::Header("plain length larger than its place"));
    }
    let body = &bytes[HEADER_LEN..total];
    let decrypted;
    let body = match (header.encrypted, key) {
        (true, None) => return Err(EnvelopeError::NoKey),
        (false, Some(_)) => return Err(EnvelopeError::NotEncrypted),
        (false, None) => body,
        (true, Some(k)) => {
            let aad = header.to_bytes();
            decrypted = k
                .cipher
                .decrypt(
                    Nonce::from_slice(&header.nonce),
                    Payload {
                        msg: body,
                        aad: &aad,
                    },
                )
                .map_err(|_| EnvelopeError::Decrypt)?;
            &decrypted[..]
        }
    };
    let n = if header.compressed {
        decompress(body, &mut out[..want]).map_err(|e| EnvelopeError::Decompress(e.to_string()))?
    } else {
        if body.len() != want {
            return Err(EnvelopeError::Length {
                got: body.len() as u64,
                want: want as u64,
            });
        }
        out[..want].copy_from_slice(body);
        want
    };
    if n != want {
        return Err(EnvelopeError::Length {
            got: n as u64,
            want: want as u64,
        });
    }
    if checksum(&out[..n], key) != header.checksum {
        return Err(EnvelopeError::Checksum);
    }
    Ok((n, total))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_plain_and_encrypted() {
        let data = b"0123456789".repeat(1000);
        let key = Key::derive(b"secret", "repo1");
        for (level, key) in [(0, None), (3, None), (3, Some(&key)), (0, Some(&key))] {
            let sealed = seal(&data, level, key);
            let (plain, used) = open(&sealed, key).unwrap();
            assert_eq!(plain, data);
            assert_eq!(used, sealed.len());
        }
        let sealed = seal(&data, 3, None);
        assert!(sealed.len() < data.len() / 10, "compressed");
    }

    #[test]
    fn wrong_or_missing_key() {
        let k1 = Key::derive(b"secret", "repo1");
        let k2 = Key::derive(b"other", "repo1");
        let k3 = Key::derive(b"secret", "repo2");
        let sealed = seal(b"hello", 3, Some(&k1));
        assert_eq!(
            open(&sealed, Some(&k2)).unwrap_err(),
            EnvelopeError::Decrypt
        );
        assert_eq!(
            open(&sealed, Some(&k3)).unwrap_err(),
            EnvelopeError::Decrypt
        );
        assert_eq!(open(&sealed, None).unwrap_err(), EnvelopeError::NoKey);
        let plain = seal(b"hello", 3, None);
        assert_eq!(
            open(&plain, Some(&k1)).unwrap_err(),
            EnvelopeError::NotEncrypted
        );
    }

    #[test]
    fn every_flipped_byte_is_found() {
        let data = b"some WAL-like data ".repeat(200);
        let key = Key::derive(b"k", "r");
        for key in [None, Some(&key)] {
            let sealed = seal(&data, 3, key);
            for i in 0..sealed.len() {
                let mut bad = sealed.clone();
                bad[i] ^= 0x01;
                assert!(
                    open(&bad, key).is_err(),
                    "flip at {i} of {} not found",
                    sealed.len()
                );
            }
        }
    }

    #[test]
    fn sealed_into_a_buffer_is_the_same_envelope() {
        let data = b"pages and pages ".repeat(3000);
        let key = Key::derive(b"k", "r");
        for key in [None, Some(&key)] {
            let mut pack = b"earlier".to_vec();
            let sum = checksum(&data, key);
            let n = seal_into(&data, sum, 3, key, &mut pack);
            assert_eq!(pack.len(), 7 + n);
            let (plain, used) = open(&pack[7..], key).unwrap();
            assert_eq!((plain, used), (data.clone(), n));
        }
    }

    #[test]
    fn envelopes_follow_each_other() {
        let mut pack = seal(b"first", 3, None);
        pack.extend(seal(b"second", 3, None));
        let (a, n) = open(&pack, None).unwrap();
        let (b, m) = open(&pack[n..], None).unwrap();
        assert_eq!(
            (a.as_slice(), b.as_slice()),
            (&b"first"[..], &b"second"[..])
        );
        assert_eq!(n + m, pack.len());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = open(&bytes, None);
            let _ = Header::parse(&bytes);
        }

        #[test]
        fn round_trips(data in proptest::collection::vec(any::<u8>(), 0..5000), level in 0i32..5) {
            let sealed = seal(&data, level, None);
            let (plain, used) = open(&sealed, None).unwrap();
            prop_assert_eq!(plain, data);
            prop_assert_eq!(used, sealed.len());
        }
    }
}
