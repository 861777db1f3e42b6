//! Page deltas against the parent chain. An incremental stores each changed page XORed with
//! the same page as the parent backup restores it: a page where one tuple changed becomes a
//! page of zeros but for a few bytes, which zstd stores in tens of bytes instead of the
//! page's kilobytes. Backup reads the parent's version of a chunk from the repository
//! ([`ParentChain::chunk`]); restore XORs the stored page onto the page the earlier layers
//! wrote ([`apply_pages`]).
//!
//! A piece with `xor` holds XORed pages for the pages the parent's copy of the file has
//! (page number below its size) and plain pages beyond.

use std::collections::HashMap;

use crate::envelope;
use crate::error::{BackupError, Result};
use crate::manifest::{pack_object, Manifest, Piece};
use crate::pgdata::PAGE;
use crate::repo::Repo;

/// One layer of the parent's chain: per file, its size, whether it is a delta, and its
/// pieces by file offset.
struct Layer {
    id: String,
    packs: Vec<String>,
    files: HashMap<String, (u64, bool, HashMap<u64, Piece>)>,
}

/// The parent backup's chain (its full first), indexed for reading chunks back.
pub struct ParentChain {
    layers: Vec<Layer>,
}

impl ParentChain {
    /// Indexes `chain` (full first, the parent last).
    pub fn new(chain: &[&Manifest]) -> ParentChain {
        let layers = chain
            .iter()
            .map(|m| Layer {
                id: m.id.clone(),
                packs: m.packs.iter().map(|p| p.name.clone()).collect(),
                files: m
                    .files
                    .iter()
                    .map(|f| {
                        let pieces = f
                            .pieces
                            .iter()
                            .map(|p| (p.file_offset, p.clone()))
                            .collect();
                        (f.path.clone(), (f.size, f.delta, pieces))
                    })
                    .collect(),
            })
            .collect();
        ParentChain { layers }
    }

    /// The parent's size of `path`, when it has the file.
    pub fn size(&self, path: &str) -> Option<u64> {
        self.layers.last()?.files.get(path).map(|(s, _, _)| *s)
    }

    /// The bytes `[offset, offset + len)` of `path` as the parent restores them (zeros where
    /// it has none), read from the repository; `None` when the parent has no such file.
    pub fn chunk(
        &self,
        repo: &Repo,
        handle: &tokio::runtime::Handle,
        path: &str,
        offset: u64,
        len: usize,
    ) -> Result<Option<Vec<u8>>> {
        let Some(top) = self.layers.len().checked_sub(1) else {
            return Ok(None);
        };
        // The layer the file starts from: the last one holding it whole.
        let mut start = top;
        loop {
            match self.layers[start].files.get(path) {
                None => return Ok(None),
                Some((_, false, _)) => break,
                Some((_, true, _)) if start == 0 => return Ok(None),
                Some((_, true, _)) => start -= 1,
            }
        }
        let mut buf = vec![0u8; len];
        for k in start..=top {
            let layer = &self.layers[k];
            let Some((_, _, pieces)) = layer.files.get(path) else {
                return Ok(None);
            };
            let Some(piece) = pieces.get(&offset) else {
                continue;
            };
            let below = if k == start {
                0
            } else {
                self.layers[k - 1].files.get(path).map_or(0, |(s, _, _)| *s)
            };
            let pack = layer.packs.get(piece.pack as usize).ok_or_else(|| {
                BackupError::Damaged(format!(
                    "backup {}: {path} names a pack it does not have",
                    layer.id
                ))
            })?;
            let object = pack_object(&layer.id, pack);
            let bytes = handle.block_on(repo.store.get_range(&object, piece.offset, piece.len))?;
            let (plain, _) = envelope::open(&bytes, repo.key.as_ref()).map_err(|e| {
                BackupError::Damaged(format!(
                    "backup {}: {object}: the piece of {path} at {}: {e} (run pgwarden backup verify)",
                    layer.id, piece.offset
                ))
            })?;
            match &piece.pages {
                None => {
                    let n = plain.len().min(len);
                    buf[..n].copy_from_slice(&plain[..n]);
                }
                Some(pages) => {
                    for (p, page) in pages.iter().zip(plain.chunks_exact(PAGE)) {
                        let at = (u64::from(*p) * PAGE as u64).checked_sub(offset);
                        let Some(at) = at.map(|a| a as usize).filter(|a| a + PAGE <= len) else {
                            continue;
                        };
                        let dst = &mut buf[at..at + PAGE];
                        if piece.xor && u64::from(*p) < below / PAGE as u64 {
                            dst.iter_mut().zip(page).for_each(|(d, s)| *d ^= s);
                        } else {
                            dst.copy_from_slice(page);
                        }
                    }
                }
            }
        }
        Ok(Some(buf))
    }
}

/// XORs `page` onto `base` in place.
pub fn xor_into(base: &mut [u8], page: &[u8]) {
    base.iter_mut().zip(page).for_each(|(b, p)| *b ^= p);
}

/// Writes a pages piece into `file`: plain pages as they are, XORed pages (those below
/// `below_pages`, when the piece is `xor`) onto what the file holds there.
pub fn apply_pages(
    file: &std::fs::File,
    pages: &[u32],
    plain: &[u8],
    xor: bool,
    below_pages: u64,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut cur = vec![0u8; PAGE];
    for (p, page) in pages.iter().zip(plain.chunks_exact(PAGE)) {
        let at = u64::from(*p) * PAGE as u64;
        if xor && u64::from(*p) < below_pages {
            cur.fill(0);
            let mut got = 0;
            while got < PAGE {
                match file.read_at(&mut cur[got..], at + got as u64)? {
                    0 => break,
                    n => got += n,
                }
            }
            xor_into(&mut cur, page);
            file.write_all_at(&cur, at)?;
        } else {
            file.write_all_at(page, at)?;
        }
    }
    Ok(())
}
