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
    // An unfinished backup that wrote nothing since the newest finished backup ended is
    // dead (killed); one still running writes or waits for its WAL after it. (One backup at
    // a time per repository: a second one running beside it is not told apart.)
    if let Some(newest) = catalog.backups.last() {
        out.remove_unfinished = catalog
            .unfinished
            .iter()
            .filter(|u| {
                catalog
                    .unfinished_written
                    .get(*u)
                    .is_none_or(|w| *w <= newest.stop_epoch)
            })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::testutil::{backup, SEG};
    use proptest::prelude::*;

    fn segments(n: u64) -> Vec<Listed> {
        (1..=n)
            .map(|s| {
                let name = wal::segment_name(1, s, SEG);
                Listed {
                    name: format!("wal/{}/{name}.pgw", &name[..16]),
                    size: 100,
                    modified: chrono::Utc::now(),
                }
            })
            .collect()
    }

    /// A catalog from a sequence of kinds: each incr builds on the backup before it.
    fn catalog(kinds: &[bool], unfinished: &[usize]) -> Catalog {
        let mut c = Catalog::default();
        for (i, full) in kinds.iter().enumerate() {
            let id = format!("2026{i:04}");
            let parent = if *full || i == 0 {
                None
            } else {
                Some(format!("2026{:04}", i - 1))
            };
            let kind = if *full || i == 0 {
                Kind::Full
            } else {
                Kind::Incr
            };
            c.backups.push(backup(
                &id,
                kind,
                parent.as_deref(),
                2 + 3 * i as u64,
                1000.0 * i as f64,
            ));
        }
        c.unfinished = unfinished.iter().map(|u| format!("2026{u:04}x")).collect();
        for u in unfinished {
            c.unfinished_written
                .insert(format!("2026{u:04}x"), 1000.0 * *u as f64 + 10.0);
        }
        c
    }

    #[test]
    fn keeps_the_newest_fulls_and_what_hangs_on_them() {
        // F I F I I F
        let c = catalog(&[true, false, true, false, false, true], &[0, 9]);
        let wal = segments(20);
        let p = plan(
            &c,
            &wal,
            SEG,
            Retention {
                full: 2,
                days: None,
            },
            10_000.0,
        );
        assert_eq!(p.remove, ["20260000", "20260001"]);
        assert_eq!(p.keep, ["20260002", "20260003", "20260004", "20260005"]);
        // The unfinished one older than the newest finished backup goes; a newer one (a
        // backup running now) stays.
        assert_eq!(p.remove_unfinished, ["20260000x"]);
        // WAL before the oldest kept backup's start segment (2 + 3*2 = 8) goes.
        assert_eq!(p.remove_wal.len(), 7);
        assert!(p
            .remove_wal
            .iter()
            .all(|n| !n.contains(&wal::segment_name(1, 8, SEG))));
    }

    #[test]
    fn retain_days_keeps_the_full_before_the_window() {
        let c = catalog(&[true, true, true, true], &[]);
        // now = 3500, 1 day = 86400 s: a window of 0.01 day (864 s) reaches back to 2636:
        // fulls at 3000 are in it, the newest before it (2000) is kept too.
        let p = plan(
            &c,
            &segments(20),
            SEG,
            Retention {
                full: 1,
                days: Some(0.01),
            },
            3500.0,
        );
        assert_eq!(p.keep, ["20260002", "20260003"]);
        assert_eq!(p.remove, ["20260000", "20260001"]);
    }

    proptest! {
        #[test]
        fn never_loses_what_a_kept_backup_needs(
            kinds in proptest::collection::vec(any::<bool>(), 1..12),
            full in 1usize..4,
            days in proptest::option::of(0.0f64..0.2),
        ) {
            let c = catalog(&kinds, &[]);
            let wal = segments(60);
            let p = plan(&c, &wal, SEG, Retention { full, days }, 12_000.0);
            // Everything is either kept or removed, once.
            prop_assert_eq!(p.keep.len() + p.remove.len(), c.backups.len());
            // The newest full is kept.
            let newest_full = c.backups.iter().rev().find(|m| m.kind == Kind::Full).map(|m| m.id.clone());
            prop_assert!(newest_full.is_none_or(|f| p.keep.contains(&f)));
            // At least min(full, fulls) fulls are kept.
            let fulls = c.backups.iter().filter(|m| m.kind == Kind::Full).count();
            let kept_fulls = c.backups.iter().filter(|m| m.kind == Kind::Full && p.keep.contains(&m.id)).count();
            prop_assert!(kept_fulls >= full.min(fulls));
            // Every kept backup's whole chain is kept, and so is its WAL.
            for id in &p.keep {
                for link in c.chain(id).unwrap() {
                    prop_assert!(p.keep.contains(&link.id));
                    let (_, first, last) = wal_range(link, SEG).unwrap();
                    for s in first..=last {
                        let name = wal::segment_name(1, s, SEG);
                        prop_assert!(!p.remove_wal.iter().any(|w| w.contains(&name)));
                    }
                }
            }
        }
    }
}
