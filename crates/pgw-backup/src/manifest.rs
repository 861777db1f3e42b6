//! A backup's manifest: every directory and file of the data directory as it was copied,
//! where each piece of each file is stored and its checksum, the WAL range the backup needs,
//! and its `backup_label`. Written last; a backup without one is not usable.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::envelope;
use crate::error::{BackupError, Result};
use crate::repo::Repo;

/// Full or incremental.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Full,
    Incr,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Incr => "incr",
        }
    }
}

/// One backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub kind: Kind,
    /// The backup an incremental's unchanged pages come from.
    pub parent: Option<String>,
    pub system_identifier: String,
    pub pg_version: u32,
    pub timeline: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
    /// The first and last WAL segment the backup needs to be consistent.
    pub start_wal: String,
    pub stop_wal: String,
    /// RFC 3339 times, and the same as Unix seconds.
    pub start_time: String,
    pub stop_time: String,
    pub start_epoch: f64,
    pub stop_epoch: f64,
    /// The next transaction id at the start ("epoch:xid" as pg_control_checkpoint() says).
    pub next_xid: String,
    /// Taken from a standby.
    pub from_standby: bool,
    pub compress_level: i32,
    pub encrypted: bool,
    /// The label file pg_backup_stop returned; restore writes it as `backup_label`.
    pub backup_label: String,
    /// The bytes of the data directory as restored from this backup.
    pub data_bytes: u64,
    /// The bytes this backup read and stored itself.
    pub copied_bytes: u64,
    pub stored_bytes: u64,
    /// Seconds the backup took.
    pub seconds: f64,
    pub packs: Vec<Pack>,
    pub dirs: Vec<Dir>,
    pub files: Vec<FileEntry>,
}

/// A stored object holding pieces.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pack {
    pub name: String,
    pub size: u64,
}

/// A directory of the data directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dir {
    pub path: String,
    pub mode: u32,
}

/// A file of the data directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub mode: u32,
    /// Only the pages that changed are here: the rest is the parent backup's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delta: bool,
    pub pieces: Vec<Piece>,
}

/// One envelope of a pack: a run of a file's bytes, or a set of its 8 kB pages.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Piece {
    /// Index into the manifest's packs.
    pub pack: u32,
    /// Where the envelope starts in the pack, and its length.
    pub offset: u64,
    pub len: u64,
    /// The plain length.
    pub plain: u64,
    /// Where the bytes go in the file (a run).
    pub file_offset: u64,
    /// The page numbers, when the piece is pages (then the bytes are those pages in order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<Vec<u32>>,
    /// The pages are XORed with the parent backup's (see `chain`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub xor: bool,
    /// The envelope's checksum (hex).
    pub checksum: String,
}

/// The object of a backup's manifest.
pub fn manifest_object(id: &str) -> String {
    format!("backup/{id}/manifest.pgw")
}

/// The object of one of a backup's packs.
pub fn pack_object(id: &str, pack: &str) -> String {
    format!("backup/{id}/{pack}.pgw")
}

impl Manifest {
    /// Stores the manifest (the last step of a backup).
    pub async fn store(&self, repo: &Repo) -> Result<()> {
        let text = serde_json::to_vec(self)
            .map_err(|e| BackupError::Failed(format!("write the manifest of {}: {e}", self.id)))?;
        let sealed = envelope::seal(&text, 3, repo.key.as_ref());
        repo.store.put(&manifest_object(&self.id), sealed).await
    }

    /// Reads backup `id`'s manifest; `None` when the backup has none (never finished).
    pub async fn load(repo: &Repo, id: &str) -> Result<Option<Manifest>> {
        let object = manifest_object(id);
        let Some(bytes) = repo.store.get(&object).await? else {
            return Ok(None);
        };
        let damaged = |why: String| BackupError::Damaged(format!("backup {id}: {object}: {why}"));
        let (plain, _) =
            envelope::open(&bytes, repo.key.as_ref()).map_err(|e| damaged(e.to_string()))?;
        let m: Manifest =
            serde_json::from_slice(&plain).map_err(|e| damaged(format!("damaged ({e})")))?;
        if m.id != id {
            return Err(damaged(format!("names backup {}", m.id)));
        }
        Ok(Some(m))
    }

    /// The stop LSN as a number.
    pub fn stop(&self) -> pgw_node::Lsn {
        self.stop_lsn.parse().unwrap_or_default()
    }

    /// The start LSN as a number.
    pub fn start(&self) -> pgw_node::Lsn {
        self.start_lsn.parse().unwrap_or_default()
    }
}

/// What a repository's backup directory holds: finished backups (with a manifest, oldest
/// first) and the ids of unfinished ones.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub backups: Vec<Manifest>,
    pub unfinished: Vec<String>,
    /// When each unfinished backup last wrote an object (Unix seconds).
    pub unfinished_written: HashMap<String, f64>,
    /// Backups whose manifest cannot be read (with why).
    pub unreadable: Vec<(String, String)>,
}

impl Catalog {
    /// Reads every manifest.
    pub async fn load(repo: &Repo) -> Result<Catalog> {
        let listed = repo.store.list("backup").await?;
        let mut written: HashMap<String, f64> = HashMap::new();
        let mut ids: Vec<String> = Vec::new();
        for o in &listed {
            let Some(id) = o
                .name
                .strip_prefix("backup/")
                .and_then(|r| r.split('/').next())
            else {
                continue;
            };
            if ids.last().map(String::as_str) != Some(id) {
                ids.push(id.to_string());
            }
            let at = o.modified.timestamp_millis() as f64 / 1000.0;
            let w = written.entry(id.to_string()).or_insert(at);
            *w = w.max(at);
        }
        let mut c = Catalog::default();
        for id in ids {
            match Manifest::load(repo, &id).await {
                Ok(Some(m)) => c.backups.push(m),
                Ok(None) => {
                    if let Some(w) = written.get(&id) {
                        c.unfinished_written.insert(id.clone(), *w);
                    }
                    c.unfinished.push(id)
                }
                Err(BackupError::Damaged(why)) => c.unreadable.push((id, why)),
                Err(e) => return Err(e),
            }
        }
        // In the order they were taken (ids of one second do not sort so).
        c.backups.sort_by(|a, b| {
            a.start_epoch
                .total_cmp(&b.start_epoch)
                .then(a.stop().cmp(&b.stop()))
                .then(a.id.cmp(&b.id))
        });
        Ok(c)
    }

    /// The backup `id`.
    pub fn get(&self, id: &str) -> Option<&Manifest> {
        self.backups.iter().find(|m| m.id == id)
    }

    /// The chain that restores backup `id`: its full first, `id` last. An error names the
    /// missing link.
    pub fn chain(&self, id: &str) -> Result<Vec<&Manifest>> {
        let mut chain = Vec::new();
        let mut cur = self.get(id).ok_or_else(|| {
            BackupError::Input(format!("no usable backup {id} in the repository"))
        })?;
        loop {
            chain.push(cur);
            match &cur.parent {
                None => break,
                Some(p) => {
                    cur = self.get(p).ok_or_else(|| {
                        BackupError::Damaged(format!(
                            "backup {id} needs backup {p}, which is missing or unreadable"
                        ))
                    })?;
                }
            }
            if chain.len() > 10_000 {
                return Err(BackupError::Damaged(format!(
                    "backup {id}: its chain loops"
                )));
            }
        }
        chain.reverse();
        Ok(chain)
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::{Kind, Manifest};
    use crate::wal;

    pub const SEG: u64 = 16 << 20;

    /// A backup on timeline 1 whose WAL is the one segment `start_seg`.
    pub fn backup(
        id: &str,
        kind: Kind,
        parent: Option<&str>,
        start_seg: u64,
        stop_epoch: f64,
    ) -> Manifest {
        let wal = wal::segment_name(1, start_seg, SEG);
        Manifest {
            format: 1,
            id: id.into(),
            kind,
            parent: parent.map(str::to_string),
            system_identifier: "1".into(),
            pg_version: 15,
            timeline: 1,
            start_lsn: format!("0/{:X}", start_seg * SEG + 40),
            stop_lsn: format!("0/{:X}", start_seg * SEG + 400),
            start_wal: wal.clone(),
            stop_wal: wal,
            start_time: String::new(),
            stop_time: String::new(),
            start_epoch: stop_epoch - 1.0,
            stop_epoch,
            next_xid: "0:1".into(),
            from_standby: false,
            compress_level: 3,
            encrypted: false,
            backup_label: String::new(),
            data_bytes: 0,
            copied_bytes: 0,
            stored_bytes: 0,
            seconds: 0.0,
            packs: vec![],
            dirs: vec![],
            files: vec![],
        }
    }
}
