//! Protocol-level prepared statements in transaction and statement mode, PgBouncer 1.21's
//! design: every distinct statement (query text and parameter types) gets one pooler-wide
//! name `PGW_<n>`; a client's own names map to those; a server connection prepares a
//! statement the first time a client's Bind or Describe needs it there, and keeps at most
//! `max_prepared_statements` (least recently used closed first).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// One distinct statement.
#[derive(Debug)]
pub struct Stmt {
    /// Its pooler-wide id.
    pub id: u64,
    /// `PGW_<id>`, the name it has on servers.
    pub name: Bytes,
    /// The Parse body after the name (query, parameter types).
    pub rest: Bytes,
    /// Why transaction pooling refuses it, if it does.
    pub refused: Option<&'static str>,
}

/// The pooler-wide registry (one lock, taken only when a client parses a statement it has
/// not parsed before; Bind and Execute never take it).
#[derive(Default)]
pub struct Registry {
    by_body: Mutex<HashMap<Bytes, Arc<Stmt>>>,
    next: AtomicU64,
}

impl Registry {
    /// The statement for a Parse body's `rest`, registered when new.
    pub fn intern(&self, rest: &[u8], query: &[u8]) -> Arc<Stmt> {
        let mut map = self.by_body.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(rest) {
            return s.clone();
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let refused = crate::sql::refusal(&String::from_utf8_lossy(query));
        let stmt = Arc::new(Stmt {
            id,
            name: Bytes::from(format!("PGW_{id}")),
            rest: Bytes::copy_from_slice(rest),
            refused,
        });
        map.insert(stmt.rest.clone(), stmt.clone());
        stmt
    }

    /// How many distinct statements are known.
    pub fn len(&self) -> usize {
        self.by_body.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether none is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The least recently used id among `prepared` (id -> last-use tick), other than `keep`.
pub fn lru_victim(prepared: &HashMap<u64, u64>, keep: u64) -> Option<u64> {
    prepared
        .iter()
        .filter(|(id, _)| **id != keep)
        .min_by_key(|(_, tick)| **tick)
        .map(|(id, _)| *id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_body_same_statement() {
        let r = Registry::default();
        let a = r.intern(b"select 1\0\0\0", b"select 1");
        let b = r.intern(b"select 1\0\0\0", b"select 1");
        let c = r.intern(b"select 2\0\0\0", b"select 2");
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_eq!(&a.name[..], format!("PGW_{}", a.id).as_bytes());
        assert_eq!(r.len(), 2);
        let l = r.intern(b"LISTEN x\0\0\0", b"LISTEN x");
        assert_eq!(l.refused, Some("LISTEN"));
    }

    #[test]
    fn victim_is_the_oldest_other() {
        let m: HashMap<u64, u64> = [(1, 5), (2, 3), (3, 9)].into();
        assert_eq!(lru_victim(&m, 0), Some(2));
        assert_eq!(lru_victim(&m, 2), Some(1));
        assert_eq!(lru_victim(&HashMap::new(), 0), None);
    }
}
