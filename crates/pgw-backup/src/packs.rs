//! Reading packs in parallel: `jobs` threads each take the next pack, read it whole and hand
//! every piece wanted from it to a function (restore writes them, verify checks them).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::envelope;
use crate::error::{BackupError, Result};
use crate::manifest::Piece;
use crate::repo::Repo;

/// A pack and what is wanted from it.
pub struct PackJob<T> {
    /// The pack's object.
    pub object: String,
    /// Its size as the manifest records it.
    pub size: u64,
    /// The pieces wanted, each with what the caller needs to place it.
    pub pieces: Vec<(Piece, T)>,
}

/// What is done with each piece's plain bytes.
pub type Each<'a, T> = &'a (dyn Fn(&[u8], &Piece, &T) -> Result<()> + Sync);

/// Why a piece could not be used.
#[derive(Debug, Clone)]
pub struct PieceProblem {
    pub object: String,
    pub what: String,
}

/// Runs `each(plain bytes, piece, tag)` for every wanted piece of every pack, `jobs` packs at
/// a time. A pack that is missing or a piece that is damaged goes to `on_problem`; when that
/// returns an error, everything stops with it. `progress` gets plain bytes done of total.
/// Who reads: the repository, the runtime its reads run on, how many threads, and the flag
/// that stops them.
pub struct Readers<'a> {
    pub repo: &'a Repo,
    pub handle: &'a tokio::runtime::Handle,
    pub jobs: usize,
    pub cancel: &'a crate::error::Cancel,
}

pub fn for_each_piece<T: Sync>(
    readers: &Readers<'_>,
    work: &[PackJob<T>],
    each: Each<'_, T>,
    on_problem: &(dyn Fn(PieceProblem) -> Result<()> + Sync),
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<()> {
    let Readers {
        repo,
        handle,
        jobs,
        cancel,
    } = *readers;
    let total: u64 = work
        .iter()
        .flat_map(|j| j.pieces.iter())
        .map(|(p, _)| p.plain)
        .sum();
    let next = Mutex::new(0usize);
    let done = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let error: Mutex<Option<BackupError>> = Mutex::new(None);
    let run = || -> Result<()> {
        loop {
            if failed.load(Ordering::SeqCst) {
                return Ok(());
            }
            let i = {
                let mut n = next
                    .lock()
                    .map_err(|_| BackupError::Failed("a reading thread panicked".into()))?;
                *n += 1;
                *n - 1
            };
            let Some(job) = work.get(i) else {
                return Ok(());
            };
            crate::error::check(cancel)?;
            let bytes = match handle.block_on(repo.store.get(&job.object))? {
                Some(b) => b,
                None => {
                    on_problem(PieceProblem {
                        object: job.object.clone(),
                        what: "missing".into(),
                    })?;
                    continue;
                }
            };
            if bytes.len() as u64 != job.size {
                on_problem(PieceProblem {
                    object: job.object.clone(),
                    what: format!("{} bytes, the manifest says {}", bytes.len(), job.size),
                })?;
            }
            for (piece, tag) in &job.pieces {
                let at = piece.offset as usize;
                let end = at.saturating_add(piece.len as usize);
                let opened = bytes
                    .get(at..end)
                    .ok_or(envelope::EnvelopeError::Truncated)
                    .and_then(|b| envelope::open(b, repo.key.as_ref()));
                match opened {
                    Ok((plain, used)) => {
                        // open checked the plain bytes against the header's checksum; the
                        // header's must be the manifest's.
                        let named = envelope::Header::parse(&bytes[at..])
                            .map(|h| h.checksum_hex() == piece.checksum)
                            .unwrap_or(false);
                        if used as u64 != piece.len || !named {
                            on_problem(PieceProblem {
                                object: job.object.clone(),
                                what: format!(
                                    "the piece at {at} is not the one the manifest names"
                                ),
                            })?;
                            continue;
                        }
                        each(&plain, piece, tag)?;
                    }
                    Err(e) => on_problem(PieceProblem {
                        object: job.object.clone(),
                        what: format!("the piece at {at}: {e}"),
                    })?,
                }
                let d = done.fetch_add(piece.plain, Ordering::SeqCst) + piece.plain;
                progress(d.min(total), total);
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                if let Err(e) = run() {
                    failed.store(true, Ordering::SeqCst);
                    if let Ok(mut slot) = error.lock() {
                        slot.get_or_insert(e);
                    }
                }
            });
        }
    });
    match error.into_inner().ok().flatten() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
