//! `backup verify`: re-reads every backup's packs and every archived WAL file, checks every
//! checksum against the envelope and the manifest, and that the WAL runs without a gap from
//! each backup to the newest segment. Names every damaged or missing object.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use crate::envelope;
use crate::error::Result;
use crate::manifest::{pack_object, Catalog, Piece};
use crate::packs::{for_each_piece, PackJob, PieceProblem, Readers};
use crate::repo::Repo;
use crate::restore::wal_range;
use crate::wal;

/// One damaged or missing object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The object (relative to the repository), or the missing segment's name.
    pub object: String,
    pub what: String,
}

/// What verify found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    pub backups: usize,
    pub pieces: u64,
    pub wal_files: usize,
    pub bytes: u64,
    pub unfinished: Vec<String>,
    pub problems: Vec<Problem>,
    pub seconds: f64,
}

/// Verifies the whole repository with `jobs` readers.
pub async fn verify(
    repo: &Repo,
    jobs: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<VerifyReport> {
    let began = std::time::Instant::now();
    let catalog = Catalog::load(repo).await?;
    let problems: Mutex<Vec<Problem>> = Mutex::new(Vec::new());
    let push = |object: String, what: String| {
        if let Ok(mut p) = problems.lock() {
            p.push(Problem { object, what });
        }
    };
    for (id, why) in &catalog.unreadable {
        push(crate::manifest::manifest_object(id), why.clone());
    }
    let mut report = VerifyReport {
        backups: catalog.backups.len(),
        unfinished: catalog.unfinished.clone(),
        ..VerifyReport::default()
    };
    // Every backup's chain.
    for m in &catalog.backups {
        if let Err(e) = catalog.chain(&m.id) {
            push(crate::manifest::manifest_object(&m.id), e.to_string());
        }
    }
    // Every pack of every backup.
    let mut work: Vec<PackJob<String>> = Vec::new();
    for m in &catalog.backups {
        let mut by_pack: Vec<Vec<(Piece, String)>> = m.packs.iter().map(|_| Vec::new()).collect();
        for f in &m.files {
            for p in &f.pieces {
                match by_pack.get_mut(p.pack as usize) {
                    Some(v) => v.push((p.clone(), f.path.clone())),
                    None => push(
                        crate::manifest::manifest_object(&m.id),
                        format!(
                            "{} names pack {}, which the manifest does not list",
                            f.path, p.pack
                        ),
                    ),
                }
            }
        }
        for (p, mut pieces) in m.packs.iter().zip(by_pack) {
            pieces.sort_by_key(|(pc, _)| pc.offset);
            report.pieces += pieces.len() as u64;
            work.push(PackJob {
                object: pack_object(&m.id, &p.name),
                size: p.size,
                pieces,
            });
        }
    }
    // Every WAL file, as one-piece jobs.
    let listed = repo.store.list("wal").await?;
    let mut wal_jobs: Vec<PackJob<String>> = Vec::new();
    for o in &listed {
        wal_jobs.push(PackJob {
            object: o.name.clone(),
            size: o.size,
            pieces: Vec::new(),
        });
    }
    report.wal_files = wal_jobs.len();
    report.bytes =
        work.iter().map(|j| j.size).sum::<u64>() + listed.iter().map(|o| o.size).sum::<u64>();

    let handle = tokio::runtime::Handle::current();
    let noop = |_: &[u8], _: &Piece, _: &String| Ok(());
    let on_problem = |p: PieceProblem| -> Result<()> {
        push(p.object, p.what);
        Ok(())
    };
    let repo2 = repo.clone();
    tokio::task::block_in_place(|| {
        for_each_piece(
            &Readers {
                repo: &repo2,
                handle: &handle,
                jobs,
                cancel: &crate::error::Cancel::default(),
            },
            &work,
            &noop,
            &on_problem,
            progress,
        )
    })?;
    // WAL objects are whole envelopes: check each by opening it.
    let wal_problems: Mutex<Vec<Problem>> = Mutex::new(Vec::new());
    tokio::task::block_in_place(|| {
        let next = Mutex::new(0usize);
        std::thread::scope(|s| {
            for _ in 0..jobs.max(1) {
                s.spawn(|| loop {
                    let i = match next.lock() {
                        Ok(mut n) => {
                            *n += 1;
                            *n - 1
                        }
                        Err(_) => return,
                    };
                    let Some(job) = wal_jobs.get(i) else { return };
                    let what = match handle.block_on(repo2.store.get(&job.object)) {
                        Ok(None) => Some("missing (listed, then gone)".to_string()),
                        Err(e) => Some(pgw_common::report(&e)),
                        Ok(Some(b)) => match envelope::open(&b, repo2.key.as_ref()) {
                            Ok((_, used)) if used == b.len() => None,
                            Ok(_) => Some("damaged (bytes after the envelope)".into()),
                            Err(e) => Some(e.to_string()),
                        },
                    };
                    if let (Some(what), Ok(mut p)) = (what, wal_problems.lock()) {
                        p.push(Problem {
                            object: job.object.clone(),
                            what,
                        });
                    }
                });
            }
        });
    });
    let mut problems = problems.into_inner().unwrap_or_default();
    problems.extend(wal_problems.into_inner().unwrap_or_default());

    // Continuity: no gap within a timeline, and each backup's own range present.
    let seg_size = repo.meta.wal_segment_size;
    let segments = wal::list_segments(repo).await?;
    let have: HashSet<(u32, u64)> = segments.iter().map(|s| (s.tli, s.segno)).collect();
    let mut by_tli: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for s in &segments {
        by_tli.entry(s.tli).or_default().push(s.segno);
    }
    for (tli, mut nos) in by_tli {
        nos.sort_unstable();
        for w in nos.windows(2) {
            if w[1] > w[0] + 1 {
                let from = wal::segment_name(tli, w[0] + 1, seg_size);
                let to = wal::segment_name(tli, w[1] - 1, seg_size);
                let what = if from == to {
                    "missing: the WAL has a gap here".to_string()
                } else {
                    format!("missing, and every segment up to {to}: the WAL has a gap here")
                };
                problems.push(Problem { object: from, what });
            }
        }
    }
    for m in &catalog.backups {
        if let Ok((tli, first, last)) = wal_range(m, seg_size) {
            for n in first..=last {
                if !have.contains(&(tli, n)) {
                    let name = wal::segment_name(tli, n, seg_size);
                    if !problems.iter().any(|p| p.object == name) {
                        problems.push(Problem {
                            object: name,
                            what: format!("missing: backup {} needs it to be consistent", m.id),
                        });
                    }
                }
            }
        }
    }
    problems.sort_by(|a, b| a.object.cmp(&b.object));
    problems.dedup();
    report.problems = problems;
    report.seconds = began.elapsed().as_secs_f64();
    Ok(report)
}
