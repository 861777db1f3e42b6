//! `backup expire`: which backups and WAL a retention policy lets go ([`plan`], pure), and
//! removing them ([`execute`]): manifests first, so that a backup stops being usable before
//! any of its data goes.

use std::collections::HashSet;

use crate::error::Result;
use crate::manifest::{manifest_object, Catalog, Kind, Manifest};
use crate::repo::{Listed, Repo};
use crate::restore::wal_range;
use crate::wal::{self, WalKind};

/// What to keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention {
    /// Keep the newest N full backups (at least 1) and what depends on them.
    pub full: usize,
    /// Also keep what restoring to any time in the last D days needs.
    pub days: Option<f64>,
}

/// What expire removes.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ExpirePlan {
    pub keep: Vec<String>,
    pub remove: Vec<String>,
    /// Backups that never finished (older than the newest finished one).
    pub remove_unfinished: Vec<String>,
    /// WAL objects no kept backup needs.
    pub remove_wal: Vec<String>,
    pub wal_bytes: u64,
}

/// The root full of each backup (itself for a full); `None` when its chain is broken.
fn root_of<'a>(catalog: &'a Catalog, m: &'a Manifest) -> Option<&'a str> {
    catalog
        .chain(&m.id)
        .ok()
        .and_then(|c| c.first().map(|f| f.id.as_str()))
}

/// Decides what `retention` removes, at Unix time `now`. Never the newest full, nothing a
/// kept backup depends on, no WAL at or after the oldest kept backup's start; a backup whose
/// chain is broken is kept (verify reports it).
pub fn plan(
    catalog: &Catalog,
    wal_objects: &[Listed],
    seg_size: u64,
    retention: Retention,
    now: f64,
) -> ExpirePlan {
    let fulls: Vec<&Manifest> = catalog
        .backups
        .iter()
        .filter(|m| m.kind == Kind::Full)
        .collect();
    let mut kept_fulls: HashSet<&str> = fulls
        .iter()
        .rev()
        .take(retention.full.max(1))
        .map(|m| m.id.as_str())
        .collect();
    if let Some(days) = retention.days {
        let cutoff = now - days * 86_400.0;
        for m in &fulls {
            if m.stop_epoch >= cutoff {
                kept_fulls.insert(&m.id);
            }
        }
        // The newest full before the window restores to its first moments.
        if let Some(m) = fulls.iter().rev().find(|m| m.stop_epoch < cutoff) {
            kept_fulls.insert(&m.id);
        }
    }
    let mut out = ExpirePlan::default();
    for m in &catalog.backups {
        match root_of(catalog, m) {
            Some(root) if !kept_fulls.contains(root) => out.remove.push(m.id.clone()),
            _ => out.keep.push(m.id.clone()),
        }
    }
    if let Some(newest) = catalog.backups.last() {
        out.remove_unfinished = catalog
            .unfinished
            .iter()
            .filter(|u| u.as_str() < newest.id.as_str())
            .cloned()
            .collect();
    }
    // WAL before the oldest kept backup's start.
    let oldest_start = catalog
        .backups
        .iter()
        .filter(|m| out.keep.contains(&m.id))
        .filter_map(|m| wal_range(m, seg_size).ok().map(|(_, first, _)| first))
        .min();
    if let Some(first) = oldest_start {
        for o in wal_objects {
            let Some(file) = wal::file_of(&o.name) else {
                continue;
            };
            let segno = match wal::classify(file) {
                Some(WalKind::Segment { log, seg, .. }) => wal::segno(log, seg, seg_size),
                Some(WalKind::Other) => match wal::classify(&file[..24]) {
                    Some(WalKind::Segment { log, seg, .. }) => wal::segno(log, seg, seg_size),
                    _ => continue,
                },
                // History files are small and every later timeline needs them.
                Some(WalKind::History { .. }) | None => continue,
            };
            if segno < first {
                out.remove_wal.push(o.name.clone());
                out.wal_bytes += o.size;
            }
        }
    }
    out
}

/// Reads what [`plan`] needs.
pub async fn load(repo: &Repo) -> Result<(Catalog, Vec<Listed>)> {
    Ok((Catalog::load(repo).await?, repo.store.list("wal").await?))
}

/// Removes what `plan` says: each backup's manifest, then its other objects; then the WAL.
pub async fn execute(repo: &Repo, plan: &ExpirePlan) -> Result<()> {
    for id in plan.remove.iter().chain(&plan.remove_unfinished) {
        repo.store.delete(&manifest_object(id)).await?;
        for o in repo.store.list(&format!("backup/{id}")).await? {
            repo.store.delete(&o.name).await?;
        }
    }
    for name in &plan.remove_wal {
        repo.store.delete(name).await?;
    }
    Ok(())
}
