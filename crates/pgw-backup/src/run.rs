//! `backup run`: a base backup between pg_backup_start and pg_backup_stop, the data
//! directory read by `jobs` threads in 8 MiB pieces, each compressed (zstd) and checksummed,
//! packed into objects of about 64 MiB; incrementals keep only the pages whose LSN is at or
//! after the parent backup's start. The manifest is written last, after the WAL the backup
//! needs is in the repository.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::envelope;
use crate::error::{BackupError, Result};
use crate::manifest::{self, Catalog, Dir, FileEntry, Kind, Manifest, Pack, Piece};
use crate::pgdata::{self, SourceFile, PAGE};
use crate::repo::Repo;
use crate::wal;

/// A piece of a file read at once.
pub const PIECE: u64 = 8 << 20;
/// A pack is written out once it holds this much.
const PACK_TARGET: usize = 64 << 20;

/// How to take the backup.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub pgdata: PathBuf,
    pub kind: Kind,
    /// Reading and compressing threads.
    pub jobs: usize,
    /// zstd level (1-19).
    pub level: i32,
    /// How long to wait for the backup's last WAL segment to reach the repository.
    pub archive_timeout: Duration,
}

/// What a backup did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub manifest: Manifest,
    /// An incremental was asked for and there was no backup to build on: a full was taken.
    pub became_full: bool,
}

/// Progress: bytes read of bytes to read.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

fn read_control_sysid(pgdata: &Path) -> Result<u64> {
    let path = pgdata.join("global/pg_control");
    let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => {
            BackupError::Input(format!(
                "--pgdata {}: not a data directory (no global/pg_control)",
                pgdata.display()
            ))
        }
        _ => BackupError::io("read (is --pgdata this server's data directory?)", &path, e),
    })?;
    if bytes.len() < 8 {
        return Err(BackupError::Input(format!(
            "{} is too short",
            path.display()
        )));
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    Ok(u64::from_ne_bytes(b))
}

/// A line of the label file: `START TIMELINE: 1` → `1`.
fn label_field<'a>(label: &'a str, key: &str) -> Option<&'a str> {
    label
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
}

/// The id for a new backup: its UTC start time and its kind, unique in `catalog`.
fn new_id(catalog: &Catalog, kind: Kind, now: chrono::DateTime<chrono::Utc>) -> String {
    let base = format!(
        "{}{}",
        now.format("%Y%m%d-%H%M%S"),
        if kind == Kind::Full { "F" } else { "I" }
    );
    let taken = |id: &str| {
        catalog.backups.iter().any(|m| m.id == id) || catalog.unfinished.iter().any(|u| u == id)
    };
    if !taken(&base) {
        return base;
    }
    (1..)
        .map(|n| format!("{base}{n}"))
        .find(|id| !taken(id))
        .unwrap_or(base)
}

/// Takes a backup of the server `client` is connected to, whose data directory is
/// `opts.pgdata` on this machine.
pub async fn run(
    client: &Client,
    repo: &Repo,
    opts: &RunOptions,
    progress: Progress,
) -> Result<RunReport> {
    let began = Instant::now();
    let sysid: String = client
        .query_one(
            "select system_identifier::text from pg_control_system()",
            &[],
        )
        .await
        .map_err(BackupError::sql("read the system identifier"))?
        .get(0);
    repo.check_cluster(&sysid)?;
    let on_disk = read_control_sysid(&opts.pgdata)?;
    if on_disk.to_string() != sysid {
        return Err(BackupError::Input(format!(
            "{} is the data directory of cluster {on_disk}, not of the server -d names ({sysid})",
            opts.pgdata.display()
        )));
    }
    let row = client
        .query_one(
            "select pg_is_in_recovery(), current_setting('server_version_num')::int / 10000,
                    current_setting('archive_mode')",
            &[],
        )
        .await
        .map_err(BackupError::sql("read the server's state"))?;
    let from_standby: bool = row.get(0);
    let pg_version: i32 = row.get(1);
    let archive_mode: String = row.get(2);
    if !from_standby && archive_mode == "off" {
        return Err(BackupError::Refused(format!(
            "the server does not archive WAL (archive_mode = off), so no backup of it can be \
             restored: set archive_mode = on and archive_command = 'pgwarden wal push %p --repo {}', \
             then restart it",
            repo.store.url()
        )));
    }
    if pg_version as u32 != repo.meta.pg_version {
        return Err(BackupError::Refused(format!(
            "the server is PostgreSQL {pg_version}; repository {} holds PostgreSQL {}",
            repo.store.url(),
            repo.meta.pg_version
        )));
    }
    // Refuse tablespaces before the backup starts.
    if let Ok(mut rd) = std::fs::read_dir(opts.pgdata.join("pg_tblspc")) {
        if rd.next().is_some() {
            pgdata::walk(&opts.pgdata)?;
        }
    }

    let catalog = Catalog::load(repo).await?;
    let parent = match opts.kind {
        Kind::Full => None,
        Kind::Incr => catalog.backups.last().cloned(),
    };
    let kind = if parent.is_some() {
        Kind::Incr
    } else {
        Kind::Full
    };
    let now = chrono::Utc::now();
    let id = new_id(&catalog, kind, now);
    let label = format!("pgwarden {id}");

    let start_lsn: String = client
        .query_one("select pg_backup_start($1, true)::text", &[&label])
        .await
        .map_err(BackupError::sql("start the backup (pg_backup_start)"))?
        .get(0);
    let next_xid: String = client
        .query_one("select next_xid from pg_control_checkpoint()", &[])
        .await
        .map_err(BackupError::sql("read the next transaction id"))?
        .get(0);
    let start_time = chrono::Utc::now();
    tracing::info!(%id, %start_lsn, ?kind, "backup started");

    // Walk after the start: a file made before the start is copied, one made after it is
    // made again by WAL replay.
    let pgdata_dir = opts.pgdata.clone();
    let tree = tokio::task::spawn_blocking(move || pgdata::walk(&pgdata_dir))
        .await
        .map_err(|e| BackupError::Failed(format!("walk the data directory: {e}")))??;

    let since = parent.as_ref().map(|p| p.start().0);
    let parent_chain = match &parent {
        Some(p) => Some(crate::chain::Chain::new(&catalog.chain(&p.id)?)),
        None => None,
    };
    let copier = Copier {
        parent_chain,
        repo: repo.clone(),
        id: id.clone(),
        pgdata: opts.pgdata.clone(),
        level: opts.level,
        since,
        handle: tokio::runtime::Handle::current(),
        progress,
    };
    let jobs = opts.jobs.max(1);
    let copied = tokio::task::spawn_blocking(move || copier.copy_all(tree, jobs))
        .await
        .map_err(|e| BackupError::Failed(format!("copy the data directory: {e}")))??;

    let row = client
        .query_one(
            "select lsn::text, labelfile, coalesce(spcmapfile, '') from pg_backup_stop(false)",
            &[],
        )
        .await
        .map_err(BackupError::sql("stop the backup (pg_backup_stop)"))?;
    let stop_lsn: String = row.get(0);
    let backup_label: String = row.get(1);
    let stop_time = chrono::Utc::now();
    let timeline: u32 = label_field(&backup_label, "START TIMELINE")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| {
            BackupError::Failed("pg_backup_stop's label has no START TIMELINE".into())
        })?;
    let start_wal = label_field(&backup_label, "START WAL LOCATION")
        .and_then(|s| s.split("(file ").nth(1))
        .map(|s| s.trim_end_matches(')').to_string())
        .ok_or_else(|| {
            BackupError::Failed("pg_backup_stop's label has no START WAL LOCATION".into())
        })?;
    let seg_size = repo.meta.wal_segment_size;
    let stop: pgw_node::Lsn = stop_lsn
        .parse()
        .map_err(|e| BackupError::Failed(format!("pg_backup_stop's LSN: {e}")))?;
    let stop_wal = wal::segment_name(timeline, wal::prev_segno_of(stop, seg_size), seg_size);
    wait_for_wal(
        repo,
        &start_wal,
        &stop_wal,
        opts.archive_timeout,
        from_standby,
    )
    .await?;

    let mut files = copied.files;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let data_bytes = files.iter().map(|f| f.size).sum();
    let manifest = Manifest {
        format: crate::repo::FORMAT,
        id,
        kind,
        parent: parent.map(|p| p.id),
        system_identifier: sysid,
        pg_version: pg_version as u32,
        timeline,
        start_lsn,
        stop_lsn,
        start_wal,
        stop_wal,
        start_time: start_time.to_rfc3339(),
        stop_time: stop_time.to_rfc3339(),
        start_epoch: epoch(start_time),
        stop_epoch: epoch(stop_time),
        next_xid,
        from_standby,
        compress_level: opts.level,
        encrypted: repo.key.is_some(),
        backup_label,
        data_bytes,
        copied_bytes: copied.read,
        stored_bytes: copied.packs.iter().map(|p| p.size).sum(),
        seconds: began.elapsed().as_secs_f64(),
        packs: copied.packs,
        dirs: copied.dirs,
        files,
    };
    manifest.store(repo).await?;
    tracing::info!(id = %manifest.id, "backup finished");
    Ok(RunReport {
        manifest,
        became_full: opts.kind == Kind::Incr && kind == Kind::Full,
    })
}

/// Unix seconds of a time.
pub fn epoch(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// Waits until every segment from `start` to `stop` (same timeline) is in the repository.
async fn wait_for_wal(
    repo: &Repo,
    start: &str,
    stop: &str,
    timeout: Duration,
    standby: bool,
) -> Result<()> {
    let seg_size = repo.meta.wal_segment_size;
    let parse = |name: &str| match wal::classify(name) {
        Some(wal::WalKind::Segment { tli, log, seg }) => {
            Some((tli, wal::segno(log, seg, seg_size)))
        }
        _ => None,
    };
    let (Some((tli, first)), Some((_, last))) = (parse(start), parse(stop)) else {
        return Err(BackupError::Failed(format!(
            "bad WAL range {start}..{stop}"
        )));
    };
    let deadline = Instant::now() + timeout;
    let mut next = first;
    while next <= last.max(first) {
        let name = wal::segment_name(tli, next, seg_size);
        if repo.store.head(&wal::object_name(&name)?).await?.is_some() {
            next += 1;
            continue;
        }
        if Instant::now() >= deadline {
            let hint = if standby {
                "on a standby the primary archives it: check its archive_command, or run \
                 SELECT pg_switch_wal() on the primary"
            } else {
                "is archive_command set to pgwarden wal push for this repository?"
            };
            return Err(BackupError::Failed(format!(
                "WAL segment {name}, which the backup needs, did not reach the repository in {} s \
                 ({hint}); the backup was not recorded",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

struct Copier {
    repo: Repo,
    id: String,
    pgdata: PathBuf,
    level: i32,
    /// For an incremental: the parent's start LSN.
    since: Option<u64>,
    /// For an incremental: the parent's chain, to read its pages back for the XOR.
    parent_chain: Option<crate::chain::Chain>,
    handle: tokio::runtime::Handle,
    progress: Progress,
}

struct Copied {
    files: Vec<FileEntry>,
    dirs: Vec<Dir>,
    packs: Vec<Pack>,
    read: u64,
}

/// A piece before its pack has an index.
struct Draft {
    file: usize,
    pack: String,
    offset: u64,
    len: u64,
    plain: u64,
    file_offset: u64,
    pages: Option<Vec<u32>>,
    xor: bool,
    checksum: String,
}

struct PackWriter {
    name: String,
    buf: Vec<u8>,
}

struct Shared {
    next: Mutex<usize>,
    drafts: Mutex<Vec<Draft>>,
    packs: Mutex<Vec<Pack>>,
    /// Per file: the end of what was read (its size as copied), and whether it vanished.
    ends: Vec<AtomicU64>,
    vanished: Vec<AtomicBool>,
    read: AtomicU64,
    failed: AtomicBool,
    error: Mutex<Option<BackupError>>,
}

impl Copier {
    fn copy_all(self, tree: pgdata::Tree, jobs: usize) -> Result<Copied> {
        // pg_control is copied last, as pg_basebackup does.
        let (mut files, control): (Vec<SourceFile>, Vec<SourceFile>) = tree
            .files
            .into_iter()
            .partition(|f| f.path != "global/pg_control");
        let first_control = files.len();
        files.extend(control);
        let works: Vec<(usize, u64)> = files[..first_control]
            .iter()
            .enumerate()
            .flat_map(|(i, f)| {
                let n = f.size.div_ceil(PIECE).max(1);
                (0..n).map(move |k| (i, k * PIECE))
            })
            .collect();
        let total: u64 = files.iter().map(|f| f.size).sum();
        let shared = Shared {
            next: Mutex::new(0),
            drafts: Mutex::new(Vec::new()),
            packs: Mutex::new(Vec::new()),
            ends: files.iter().map(|_| AtomicU64::new(0)).collect(),
            vanished: files.iter().map(|_| AtomicBool::new(false)).collect(),
            read: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
        };
        let this = &self;
        std::thread::scope(|s| {
            // Full packs go to one writer thread, so that a reading thread goes on compressing
            // while its last pack is written and synced (at most one waits in the queue).
            let (tx, rx) = std::sync::mpsc::sync_channel::<PackWriter>(1);
            let shared_w = &shared;
            s.spawn(move || {
                for pack in rx {
                    if shared_w.failed.load(Ordering::SeqCst) {
                        continue;
                    }
                    if let Err(e) = this.flush(pack, shared_w) {
                        shared_w.failed.store(true, Ordering::SeqCst);
                        if let Ok(mut slot) = shared_w.error.lock() {
                            slot.get_or_insert(e);
                        }
                    }
                }
            });
            for w in 0..jobs {
                let (shared, files, works) = (&shared, &files, &works);
                let tx = tx.clone();
                s.spawn(move || {
                    let r = this.worker(w, files, works, shared, total, Some(&tx));
                    if let Err(e) = r {
                        shared.failed.store(true, Ordering::SeqCst);
                        if let Ok(mut slot) = shared.error.lock() {
                            slot.get_or_insert(e);
                        }
                    }
                });
            }
            drop(tx);
        });
        if let Some(e) = shared.error.lock().ok().and_then(|mut e| e.take()) {
            return Err(e);
        }
        // pg_control, after everything else, in this thread.
        let tail: Vec<(usize, u64)> = (first_control..files.len()).map(|i| (i, 0)).collect();
        self.worker(jobs, &files, &tail, &shared, total, None)?;

        let packs = shared.packs.into_inner().unwrap_or_default();
        let index: HashMap<&str, u32> = packs
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i as u32))
            .collect();
        let mut per_file: Vec<Vec<Piece>> = files.iter().map(|_| Vec::new()).collect();
        for d in shared.drafts.into_inner().unwrap_or_default() {
            per_file[d.file].push(Piece {
                pack: index.get(d.pack.as_str()).copied().unwrap_or(u32::MAX),
                offset: d.offset,
                len: d.len,
                plain: d.plain,
                file_offset: d.file_offset,
                pages: d.pages,
                xor: d.xor,
                checksum: d.checksum,
            });
        }
        let mut out = Vec::with_capacity(files.len());
        for (i, (f, mut pieces)) in files.iter().zip(per_file).enumerate() {
            if shared.vanished[i].load(Ordering::SeqCst) {
                continue;
            }
            pieces.sort_by_key(|p| p.file_offset);
            out.push(FileEntry {
                path: f.path.clone(),
                size: shared.ends[i].load(Ordering::SeqCst),
                mode: f.mode,
                delta: self.is_delta(&f.path),
                pieces,
            });
        }
        Ok(Copied {
            files: out,
            dirs: tree
                .dirs
                .into_iter()
                .map(|(path, mode)| Dir { path, mode })
                .collect(),
            packs,
            read: shared.read.load(Ordering::SeqCst),
        })
    }

    /// Whether only `path`'s changed pages are copied: a relation's main fork that the
    /// parent has.
    fn is_delta(&self, path: &str) -> bool {
        pgdata::is_paged(path)
            && self
                .parent_chain
                .as_ref()
                .is_some_and(|c| c.size(path).is_some())
    }

    fn worker(
        &self,
        w: usize,
        files: &[SourceFile],
        works: &[(usize, u64)],
        shared: &Shared,
        total: u64,
        writer: Option<&std::sync::mpsc::SyncSender<PackWriter>>,
    ) -> Result<()> {
        // Without a writer thread (the tail: pg_control), this thread takes its own list.
        let own_queue = writer.is_none();
        let send = |pack: PackWriter| -> Result<()> {
            match writer {
                Some(tx) => tx
                    .send(pack)
                    .map_err(|_| BackupError::Failed("the pack writer stopped".into())),
                None => self.flush(pack, shared),
            }
        };
        let mut pack_no = 0u32;
        let new_pack = |n: u32| PackWriter {
            name: format!("p{w}-{n:05}"),
            // Room for the last piece's worst case, so that compressing into the buffer never
            // moves it.
            buf: Vec::with_capacity(
                PACK_TARGET
                    + zstd::zstd_safe::compress_bound(PIECE as usize)
                    + envelope::HEADER_LEN,
            ),
        };
        let mut pack = new_pack(pack_no);
        let mut open: Option<(usize, std::fs::File)> = None;
        let mut buf = vec![0u8; PIECE as usize];
        let mut local_next = 0usize;
        loop {
            if shared.failed.load(Ordering::SeqCst) {
                return Ok(());
            }
            let idx = if own_queue {
                local_next += 1;
                local_next - 1
            } else {
                let mut n = shared
                    .next
                    .lock()
                    .map_err(|_| BackupError::Failed("a copying thread panicked".into()))?;
                *n += 1;
                *n - 1
            };
            let Some(&(fi, offset)) = works.get(idx) else {
                break;
            };
            let f = &files[fi];
            let path = self.pgdata.join(&f.path);
            if open.as_ref().map(|(i, _)| *i) != Some(fi) {
                match std::fs::File::open(&path) {
                    Ok(file) => open = Some((fi, file)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        shared.vanished[fi].store(true, Ordering::SeqCst);
                        open = None;
                        continue;
                    }
                    Err(e) => return Err(BackupError::io("read", &path, e)),
                }
            }
            let Some((_, file)) = open.as_ref() else {
                continue;
            };
            let want = (f.size.saturating_sub(offset)).min(PIECE) as usize;
            let got = read_full(file, &mut buf[..want], offset)
                .map_err(|e| BackupError::io("read", &path, e))?;
            let data = &buf[..got];
            shared.ends[fi].fetch_max(offset + got as u64, Ordering::SeqCst);
            let done = shared.read.fetch_add(got as u64, Ordering::SeqCst) + got as u64;
            (self.progress)(done.min(total), total);
            if got == 0 {
                continue;
            }
            let delta = self.is_delta(&f.path) && got % PAGE == 0;
            let mut xor = false;
            let (plain, pages): (std::borrow::Cow<[u8]>, Option<Vec<u32>>) = if delta {
                let since = self.since.unwrap_or(0);
                let first = (offset / PAGE as u64) as u32;
                let changed: Vec<u32> = data
                    .chunks_exact(PAGE)
                    .enumerate()
                    .filter(|(_, p)| pgdata::page_changed(p, since))
                    .map(|(k, _)| first + k as u32)
                    .collect();
                if changed.is_empty() {
                    continue;
                }
                // The parent's version of this chunk, to store each changed page as its
                // difference from it.
                let base = match &self.parent_chain {
                    Some(chain) => chain.chunk(&self.repo, &self.handle, &f.path, offset, got)?,
                    None => None,
                };
                let below_pages = self
                    .parent_chain
                    .as_ref()
                    .and_then(|c| c.size(&f.path))
                    .unwrap_or(0)
                    / PAGE as u64;
                let mut v = Vec::with_capacity(changed.len() * PAGE);
                for b in &changed {
                    let at = (*b - first) as usize * PAGE;
                    let page = &data[at..at + PAGE];
                    match &base {
                        Some(base) if u64::from(*b) < below_pages => {
                            let mut d = base[at..at + PAGE].to_vec();
                            crate::chain::xor_into(&mut d, page);
                            v.extend_from_slice(&d);
                        }
                        _ => v.extend_from_slice(page),
                    }
                }
                xor = base.is_some();
                (std::borrow::Cow::Owned(v), Some(changed))
            } else {
                (std::borrow::Cow::Borrowed(data), None)
            };
            let sum = envelope::checksum(&plain, self.repo.key.as_ref());
            let at = pack.buf.len() as u64;
            let len = envelope::seal_into(
                &plain,
                sum,
                self.level,
                self.repo.key.as_ref(),
                &mut pack.buf,
            );
            let draft = Draft {
                file: fi,
                pack: pack.name.clone(),
                offset: at,
                len: len as u64,
                plain: plain.len() as u64,
                file_offset: offset,
                pages,
                xor,
                checksum: envelope::hex(&sum),
            };
            shared
                .drafts
                .lock()
                .map_err(|_| BackupError::Failed("a copying thread panicked".into()))?
                .push(draft);
            if pack.buf.len() >= PACK_TARGET {
                pack_no += 1;
                let full = std::mem::replace(&mut pack, new_pack(pack_no));
                send(full)?;
            }
        }
        if !pack.buf.is_empty() {
            send(pack)?;
        }
        Ok(())
    }

    fn flush(&self, pack: PackWriter, shared: &Shared) -> Result<()> {
        let size = pack.buf.len() as u64;
        let object = manifest::pack_object(&self.id, &pack.name);
        self.handle
            .block_on(self.repo.store.put(&object, pack.buf))?;
        shared
            .packs
            .lock()
            .map_err(|_| BackupError::Failed("a copying thread panicked".into()))?
            .push(Pack {
                name: pack.name,
                size,
            });
        Ok(())
    }
}

/// Reads up to `buf.len()` bytes at `offset` (less only at the end of the file).
fn read_full(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_fields() {
        let label = "START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\nCHECKPOINT LOCATION: 0/5000060\nSTART TIMELINE: 1\n";
        assert_eq!(label_field(label, "START TIMELINE"), Some("1"));
        assert_eq!(
            label_field(label, "START WAL LOCATION").and_then(|s| s.split("(file ").nth(1)),
            Some("000000010000000000000005)")
        );
    }
}
