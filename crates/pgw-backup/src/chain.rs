//! A chain of backups read back chunk by chunk, and the page deltas within it. An
//! incremental stores each changed page XORed with the same page as the parent backup
//! restores it: a page where one tuple changed becomes a page of zeros but for a few bytes,
//! which zstd stores in tens of bytes instead of the page's kilobytes. Backup reads the
//! parent's version of a chunk ([`Chain::chunk`]) to make the XOR; restore builds each chunk
//! of each file from every layer in memory ([`Chain::chunk_into`]) and writes it once.
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

/// A backup's chain (its full first), indexed for reading chunks back.
pub struct Chain {
    layers: Vec<Layer>,
}

impl Chain {
    /// Indexes `chain` (full first, the parent last).
    pub fn new(chain: &[&Manifest]) -> Chain {
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
        Chain { layers }
    }

    /// The size of `path` in the chain's last backup, when it has the file.
    pub fn size(&self, path: &str) -> Option<u64> {
        self.layers.last()?.files.get(path).map(|(s, _, _)| *s)
    }

    /// The bytes `[offset, offset + len)` of `path` as the chain's last backup restores
    /// them (zeros where it has none), read from the repository; `None` when it has no such
    /// file.
    pub fn chunk(
        &self,
        repo: &Repo,
        handle: &tokio::runtime::Handle,
        path: &str,
        offset: u64,
        len: usize,
    ) -> Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; len];
        Ok(self
            .chunk_into(repo, handle, path, offset, &mut buf)?
            .map(|_| buf))
    }

    /// [`Chain::chunk`] into `buf` (zeroed here unless the first piece covers it): `None`
    /// when the chain has no such file, else whether any backup of the chain holds bytes of
    /// this chunk (when not, `buf` is left as it was). Every piece's checksum is checked
    /// against the envelope and the manifest.
    pub fn chunk_into(
        &self,
        repo: &Repo,
        handle: &tokio::runtime::Handle,
        path: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<Option<bool>> {
        let len = buf.len();
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
        let mut any = false;
        // Whether every byte of `buf` was written (or zeroed) by now.
        let mut whole = false;
        for k in start..=top {
            let layer = &self.layers[k];
            let Some((_, _, pieces)) = layer.files.get(path) else {
                return Ok(None);
            };
            let Some(piece) = pieces.get(&offset) else {
                continue;
            };
            any = true;
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
            let damaged = |why: String| {
                BackupError::Damaged(format!(
                    "backup {}: {object}: the piece of {path} at {}: {why} (run pgwarden backup verify)",
                    layer.id, piece.offset
                ))
            };
            let named = envelope::Header::parse(&bytes)
                .map(|h| h.checksum_hex() == piece.checksum)
                .unwrap_or(false);
            if !named {
                return Err(damaged("not the piece the manifest names".into()));
            }
            match &piece.pages {
                // A run: straight into the buffer (at most the chunk, as backup made it).
                None => {
                    let plain_len = envelope::Header::parse(&bytes)
                        .map_err(|e| damaged(e.to_string()))?
                        .plain_len as usize;
                    if !whole && plain_len < len {
                        buf.fill(0);
                    }
                    whole = true;
                    if plain_len <= len {
                        envelope::open_into(&bytes, repo.key.as_ref(), buf)
                            .map_err(|e| damaged(e.to_string()))?;
                    } else {
                        // The file is shorter now than when this layer copied it.
                        let (plain, _) = envelope::open(&bytes, repo.key.as_ref())
                            .map_err(|e| damaged(e.to_string()))?;
                        buf.copy_from_slice(&plain[..len]);
                    }
                }
                Some(pages) => {
                    if !whole {
                        buf.fill(0);
                        whole = true;
                    }
                    let (plain, _) = envelope::open(&bytes, repo.key.as_ref())
                        .map_err(|e| damaged(e.to_string()))?;
                    if plain.len() != pages.len() * PAGE {
                        return Err(damaged("its pages do not match its length".into()));
                    }
                    for (p, page) in pages.iter().zip(plain.chunks_exact(PAGE)) {
                        let at = (u64::from(*p) * PAGE as u64).checked_sub(offset);
                        let Some(at) = at.map(|a| a as usize).filter(|a| a + PAGE <= len) else {
                            continue;
                        };
                        let dst = &mut buf[at..at + PAGE];
                        if piece.xor && u64::from(*p) < below / PAGE as u64 {
                            xor_into(dst, page);
                        } else {
                            dst.copy_from_slice(page);
                        }
                    }
                }
            }
        }
        Ok(Some(any))
    }
}

/// XORs `page` onto `base` in place.
pub fn xor_into(base: &mut [u8], page: &[u8]) {
    base.iter_mut().zip(page).for_each(|(b, p)| *b ^= p);
}
