//! [`Lsn`]: a WAL position, written `X/Y` in hex as PostgreSQL prints it.
//!
//! Written by hand: it is a u64 with a two-part hex notation, and a crate for that would be
//! larger than this file.

use std::fmt;
use std::str::FromStr;

/// A WAL location (log sequence number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// `s` is not an `X/Y` hex WAL location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a WAL location (expected X/Y in hex): {0:?}")]
pub struct LsnParseError(pub String);

impl FromStr for Lsn {
    type Err = LsnParseError;

    fn from_str(s: &str) -> Result<Lsn, LsnParseError> {
        let err = || LsnParseError(s.to_owned());
        let (hi, lo) = s.trim().split_once('/').ok_or_else(err)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let lsn: Lsn = "0/1500718".parse().unwrap();
        assert_eq!(lsn, Lsn(0x1500718));
        assert_eq!(lsn.to_string(), "0/1500718");
        let high: Lsn = "1A/FF".parse().unwrap();
        assert_eq!(high.0, (0x1A << 32) | 0xFF);
        assert_eq!(high.to_string(), "1A/FF");
        assert!(Lsn(1) < high);
        for bad in ["", "0", "0/", "x/1", "1/2/3", "100000000/0"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?}");
        }
    }
}
