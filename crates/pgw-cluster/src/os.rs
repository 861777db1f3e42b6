//! Operating-system plumbing of throwaway clusters: where their temp dirs go, and random
//! test passwords. (The server's OS user and the tools' commands are `pgw-node`'s.)

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use pgw_node::OsUser;

/// Whether every ancestor of `dir` can be traversed by other users (o+x), so that the server
/// user can reach a directory we create inside it.
pub(crate) fn world_traversable(dir: &Path) -> bool {
    dir.ancestors().all(|a| {
        a.as_os_str().is_empty()
            || fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
    })
}

/// The directory to create a fixture's temp dir in: `$TMPDIR`, or `/tmp` if `user` could not
/// reach `$TMPDIR` or a Unix socket path inside it would be too long.
pub fn temp_base(user: &OsUser) -> PathBuf {
    let base = std::env::temp_dir();
    // "<base>/pgw-cluster-XXXXXX/.s.PGSQL.65535" must fit in sun_path (104 bytes on macOS).
    let too_long = base.as_os_str().len() + "/pgw-cluster-XXXXXX/.s.PGSQL.65535".len() > 100;
    if too_long || (user.is_other() && !world_traversable(&base)) {
        PathBuf::from("/tmp")
    } else {
        base
    }
}

/// A random-enough password for a throwaway cluster: 32 hex digits from the process's random
/// hash seed, the time, the pid and a counter.
pub fn random_password() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let half = |salt: u64| {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u64(n);
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_differ_and_are_hex() {
        let a = random_password();
        let b = random_password();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn root_is_traversable() {
        assert!(world_traversable(Path::new("/")));
    }
}
