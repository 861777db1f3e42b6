//! `backup list`: every backup (type, times, LSNs, sizes, WAL range) and to which times each
//! can be restored, from the manifests and the archived WAL.

use std::collections::HashMap;

use crate::error::Result;
use crate::manifest::Catalog;
use crate::repo::Repo;
use crate::restore::wal_range;
use crate::wal;

/// One backup as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupInfo {
    pub id: String,
    pub kind: &'static str,
    pub parent: Option<String>,
    pub timeline: u32,
    pub start_time: String,
    pub stop_time: String,
    pub start_lsn: String,
    pub stop_lsn: String,
    pub from_standby: bool,
    /// The data directory's size as this backup restores it.
    pub data_bytes: u64,
    /// What this backup itself stored (an incremental: its changed pages).
    pub stored_bytes: u64,
    /// What restoring it reads: its chain's stored bytes.
    pub chain_stored_bytes: u64,
    pub seconds: f64,
    pub wal_start: String,
    pub wal_stop: String,
    /// Whether the WAL it needs to be consistent is all there.
    pub restorable: bool,
    /// Point-in-time recovery is possible from its stop time to this time (the newest
    /// segment archived after it without a gap), when restorable.
    pub pitr_to: Option<String>,
}

/// The archived WAL.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WalInfo {
    pub segments: usize,
    pub bytes: u64,
    pub first: Option<String>,
    pub last: Option<String>,
    pub last_archived: Option<String>,
}

/// The whole listing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Info {
    pub repo: String,
    pub system_identifier: String,
    pub encrypted: bool,
    pub backups: Vec<BackupInfo>,
    pub unfinished: Vec<String>,
    pub wal: WalInfo,
}

/// Lists the repository.
pub async fn info(repo: &Repo) -> Result<Info> {
    let catalog = Catalog::load(repo).await?;
    let segments = wal::list_segments(repo).await?;
    let seg_size = repo.meta.wal_segment_size;
    let by_pos: HashMap<(u32, u64), &wal::ArchivedSegment> =
        segments.iter().map(|s| ((s.tli, s.segno), s)).collect();
    let stored: HashMap<&str, u64> = catalog
        .backups
        .iter()
        .map(|m| (m.id.as_str(), m.stored_bytes))
        .collect();
    let mut backups = Vec::new();
    for m in &catalog.backups {
        let chain_stored = catalog
            .chain(&m.id)
            .map(|c| {
                c.iter()
                    .map(|b| stored.get(b.id.as_str()).copied().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0);
        let (restorable, pitr_to) = match wal_range(m, seg_size) {
            Ok((tli, first, last)) => {
                let complete = (first..=last).all(|n| by_pos.contains_key(&(tli, n)));
                let mut end = last;
                while by_pos.contains_key(&(tli, end + 1)) {
                    end += 1;
                }
                let to = by_pos
                    .get(&(tli, end))
                    .map(|s| s.object.modified.to_rfc3339());
                (
                    complete && catalog.chain(&m.id).is_ok(),
                    if complete { to } else { None },
                )
            }
            Err(_) => (false, None),
        };
        backups.push(BackupInfo {
            id: m.id.clone(),
            kind: m.kind.as_str(),
            parent: m.parent.clone(),
            timeline: m.timeline,
            start_time: m.start_time.clone(),
            stop_time: m.stop_time.clone(),
            start_lsn: m.start_lsn.clone(),
            stop_lsn: m.stop_lsn.clone(),
            from_standby: m.from_standby,
            data_bytes: m.data_bytes,
            stored_bytes: m.stored_bytes,
            chain_stored_bytes: chain_stored,
            seconds: m.seconds,
            wal_start: m.start_wal.clone(),
            wal_stop: m.stop_wal.clone(),
            restorable,
            pitr_to,
        });
    }
    let wal = WalInfo {
        segments: segments.len(),
        bytes: segments.iter().map(|s| s.object.size).sum(),
        first: segments.first().map(|s| s.name.clone()),
        last: segments
            .iter()
            .max_by_key(|s| (s.segno, s.tli))
            .map(|s| s.name.clone()),
        last_archived: segments
            .iter()
            .map(|s| s.object.modified)
            .max()
            .map(|t| t.to_rfc3339()),
    };
    Ok(Info {
        repo: repo.store.url().to_string(),
        system_identifier: repo.meta.system_identifier.clone(),
        encrypted: repo.meta.encrypted,
        backups,
        unfinished: catalog.unfinished,
        wal,
    })
}
