//! Reading a data directory for a backup: what to copy (what pg_basebackup copies: not the
//! WAL, not the server's runtime files, not unlogged tables' data), and how to tell a
//! relation's data file and its pages' LSNs.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{BackupError, Result};

/// A page.
pub const PAGE: usize = 8192;

/// A file to copy.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Relative to the data directory, `/`-separated.
    pub path: String,
    pub size: u64,
    pub mode: u32,
}

/// What a walk of the data directory found.
#[derive(Debug, Default)]
pub struct Tree {
    pub dirs: Vec<(String, u32)>,
    pub files: Vec<SourceFile>,
}

/// Files never copied, wherever they are.
const SKIP_FILES: &[&str] = &["pg_internal.init"];
/// Top-level files never copied: the server's runtime state and recovery control (restore
/// writes its own backup_label and recovery.signal).
const SKIP_TOP: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
    "backup_manifest",
    "standby.signal",
    "recovery.signal",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
];
/// Directories copied empty.
const EMPTY_DIRS: &[&str] = &[
    "pg_wal",
    "pg_stat_tmp",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];

/// Walks `pgdata`. Tablespaces (entries in pg_tblspc) are refused: their directories live
/// outside the data directory and this version does not copy them.
pub fn walk(pgdata: &Path) -> Result<Tree> {
    let mut tree = Tree::default();
    let tblspc = pgdata.join("pg_tblspc");
    if let Ok(rd) = std::fs::read_dir(&tblspc) {
        if let Some(e) = rd.flatten().next() {
            return Err(BackupError::Refused(format!(
                "{} has a tablespace ({}): backups of clusters with tablespaces are not supported \
                 (move its tables to pg_default, or use pg_basebackup)",
                pgdata.display(),
                e.file_name().to_string_lossy()
            )));
        }
    }
    walk_dir(pgdata, "", &mut tree)?;
    skip_unlogged(&mut tree);
    tree.dirs.sort();
    Ok(tree)
}

fn walk_dir(root: &Path, rel: &str, tree: &mut Tree) -> Result<()> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        // A database dropped while we walk.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !rel.is_empty() => return Ok(()),
        Err(e) => return Err(BackupError::io("read the directory", &dir, e)),
    };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if SKIP_FILES.contains(&name.as_str()) || name.starts_with("pgsql_tmp") {
            continue;
        }
        if rel.is_empty() && SKIP_TOP.contains(&name.as_str()) {
            continue;
        }
        // Follow a symlinked pg_wal (initdb -X) as a directory.
        let meta = match std::fs::metadata(e.path()) {
            Ok(m) => m,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(BackupError::io("read", e.path(), err)),
        };
        if meta.is_dir() {
            tree.dirs.push((path.clone(), meta.mode() & 0o7777));
            if rel.is_empty() && EMPTY_DIRS.contains(&name.as_str()) {
                if name == "pg_wal" {
                    tree.dirs
                        .push(("pg_wal/archive_status".into(), meta.mode() & 0o7777));
                }
                continue;
            }
            walk_dir(root, &path, tree)?;
        } else if meta.is_file() {
            tree.files.push(SourceFile {
                path,
                size: meta.len(),
                mode: meta.mode() & 0o7777,
            });
        }
    }
    Ok(())
}

/// Drops the data of unlogged relations (those with an `_init` fork), as pg_basebackup does:
/// PostgreSQL resets them from the init fork at the end of recovery.
fn skip_unlogged(tree: &mut Tree) {
    let unlogged: HashSet<(String, String)> = tree
        .files
        .iter()
        .filter_map(|f| {
            let (dir, name) = f.path.rsplit_once('/')?;
            let node = name.strip_suffix("_init")?;
            (dir.starts_with("base/") && node.bytes().all(|b| b.is_ascii_digit()))
                .then(|| (dir.to_string(), node.to_string()))
        })
        .collect();
    if unlogged.is_empty() {
        return;
    }
    tree.files.retain(|f| {
        let Some((dir, name)) = f.path.rsplit_once('/') else {
            return true;
        };
        if name.ends_with("_init") {
            return true;
        }
        let node = name.split(['_', '.']).next().unwrap_or(name);
        !unlogged.contains(&(dir.to_string(), node.to_string()))
    });
}

/// Whether `path` is a relation's main fork (or a segment of one): a file of 8 kB pages
/// whose every change is WAL-logged with the page's LSN. The other forks are copied whole:
/// the free space map is not WAL-logged page by page, and clearing a visibility-map bit
/// (on every insert, update or delete of an all-visible page) does not set the map page's
/// LSN, so a map page can change with its LSN unchanged.
pub fn is_paged(path: &str) -> bool {
    let Some((dir, name)) = path.rsplit_once('/') else {
        return false;
    };
    let in_db = dir == "global"
        || dir
            .strip_prefix("base/")
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    if !in_db {
        return false;
    }
    let (stem, seg) = match name.split_once('.') {
        Some((s, n)) => (s, Some(n)),
        None => (name, None),
    };
    if seg.is_some_and(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit())
}

/// A page's LSN (pd_lsn: two native-endian u32s, high then low).
pub fn page_lsn(page: &[u8]) -> u64 {
    let hi = u32::from_ne_bytes([page[0], page[1], page[2], page[3]]);
    let lo = u32::from_ne_bytes([page[4], page[5], page[6], page[7]]);
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Whether a page must be copied into an incremental whose parent started at `since`: it
/// changed at or after `since`, or it is new (pd_upper 0: extended, not yet initialised, so
/// it carries no LSN to judge by; all zeros compress to nothing).
pub fn page_changed(page: &[u8], since: u64) -> bool {
    let pd_upper = u16::from_ne_bytes([page[14], page[15]]);
    pd_upper == 0 || page_lsn(page) >= since
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paged_files() {
        for yes in [
            "base/5/16384",
            "base/5/16384.1",
            "global/1262",
            "base/16401/2619.12",
        ] {
            assert!(is_paged(yes), "{yes}");
        }
        for no in [
            "base/5/16384_fsm",
            "base/5/16384_vm",
            "base/5/16384_init",
            "base/5/PG_VERSION",
            "global/pg_control",
            "pg_xact/0000",
            "base/5/pg_filenode.map",
            "base/x/1",
            "postgresql.conf",
            "base/5/1.",
            "base/5/1.a",
        ] {
            assert!(!is_paged(no), "{no}");
        }
    }

    #[test]
    fn page_rules() {
        let mut page = vec![0u8; PAGE];
        assert!(page_changed(&page, 100), "a new page is copied");
        page[14..16].copy_from_slice(&100u16.to_ne_bytes());
        page[4..8].copy_from_slice(&50u32.to_ne_bytes());
        assert!(!page_changed(&page, 100));
        assert!(page_changed(&page, 50));
        page[0..4].copy_from_slice(&1u32.to_ne_bytes());
        assert_eq!(page_lsn(&page), (1 << 32) | 50);
        assert!(page_changed(&page, 100));
    }

    #[test]
    fn unlogged_data_is_skipped() {
        let f = |p: &str| SourceFile {
            path: p.into(),
            size: 0,
            mode: 0o600,
        };
        let mut t = Tree {
            dirs: vec![],
            files: vec![
                f("base/5/100"),
                f("base/5/100_init"),
                f("base/5/100_fsm"),
                f("base/5/100.1"),
                f("base/5/1000"),
                f("base/5/200"),
            ],
        };
        skip_unlogged(&mut t);
        let left: Vec<&str> = t.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(left, ["base/5/100_init", "base/5/1000", "base/5/200"]);
    }
}
