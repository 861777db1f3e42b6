//! `backup restore`: picks the backup a target needs, refuses a target the repository cannot
//! reach before anything is written, restores the backup's chain (full, then each
//! incremental's pages) into an empty directory in parallel, and writes `backup_label`,
//! `recovery.signal` and the recovery settings, so that the cluster starts and replays to
//! the target.

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use pgw_node::{Lsn, OsUser};

use crate::error::{BackupError, Result};
use crate::manifest::{Catalog, Manifest};
use crate::repo::Repo;
use crate::wal::{self, ArchivedSegment};

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The end of the archived WAL.
    Latest,
    /// The last commit before this time.
    Time(chrono::DateTime<chrono::FixedOffset>),
    /// This WAL location.
    Lsn(Lsn),
    /// This transaction's commit.
    Xid(u64),
}

impl Target {
    /// Parses a `--target-time`: RFC 3339 or `YYYY-MM-DD HH:MM:SS[.frac]±TZ`; a time zone is
    /// required (the server would otherwise read it in its own).
    pub fn parse_time(s: &str) -> std::result::Result<Target, String> {
        let t = s.trim();
        chrono::DateTime::parse_from_rfc3339(t)
            .or_else(|_| chrono::DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%#z"))
            .or_else(|_| chrono::DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%#z"))
            .map(Target::Time)
            .map_err(|_| {
                format!("{s:?} is not a time with a zone (2026-12-06 14:30:00+00 or 2026-12-06T14:30:00Z)")
            })
    }

    /// How the target reads in a report.
    pub fn describe(&self) -> String {
        match self {
            Target::Latest => "latest".into(),
            Target::Time(t) => format!("time {}", t.to_rfc3339()),
            Target::Lsn(l) => format!("lsn {l}"),
            Target::Xid(x) => format!("xid {x}"),
        }
    }
}

/// What the server does at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetAction {
    Promote,
    Pause,
    Shutdown,
}

impl TargetAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetAction::Promote => "promote",
            TargetAction::Pause => "pause",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The directory to restore into: missing or empty.
    pub pgdata: PathBuf,
    /// The backup (default: the one the target needs, else the newest).
    pub backup: Option<String>,
    pub target: Target,
    pub action: TargetAction,
    pub jobs: usize,
    /// Keep the backup's archive settings (else archive_mode = off in the restored cluster).
    pub archive: bool,
    /// The restore_command to write.
    pub restore_command: String,
    /// Who owns the restored files (the server's user).
    pub user: OsUser,
    /// Set to stop (the restored files are removed).
    pub cancel: crate::error::Cancel,
}

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub backup: String,
    pub chain: Vec<String>,
    pub target: String,
    pub pgdata: String,
    pub files: usize,
    pub bytes: u64,
    pub seconds: f64,
}

/// The repository's state a restore is planned on.
pub struct Plan<'a> {
    pub chain: Vec<&'a Manifest>,
}

/// Chooses the backup for `target` (or checks the one asked for) and checks that the
/// repository's WAL can reach the target. Pure over the catalog and the segment list.
pub fn plan<'a>(
    catalog: &'a Catalog,
    segments: &[ArchivedSegment],
    seg_size: u64,
    backup: Option<&str>,
    target: &Target,
) -> Result<Plan<'a>> {
    let backups = &catalog.backups;
    let damaged = |id: &str| {
        catalog
            .unreadable
            .iter()
            .find(|(u, _)| u == id)
            .map(|(_, why)| BackupError::Damaged(why.clone()))
    };
    if let Some(e) = backup.and_then(damaged) {
        return Err(e);
    }
    if backups.is_empty() {
        if let Some((_, why)) = catalog.unreadable.last() {
            return Err(BackupError::Damaged(why.clone()));
        }
        return Err(BackupError::Refused(
            "the repository has no usable backup".into(),
        ));
    }
    let refuse = |s: String| Err(BackupError::Refused(s));
    let chosen: &Manifest = match (backup, target) {
        (Some(id), _) => catalog.get(id).ok_or_else(|| {
            BackupError::Input(format!("no usable backup {id} in the repository"))
        })?,
        (None, Target::Latest) => backups
            .last()
            .ok_or_else(|| BackupError::Refused("no backup".into()))?,
        (None, Target::Time(t)) => {
            let at = t.timestamp_millis() as f64 / 1000.0;
            match backups.iter().rev().find(|m| m.stop_epoch <= at) {
                Some(m) => m,
                None => {
                    return refuse(format!(
                    "target time {} is before the earliest backup was consistent ({}, backup {})",
                    t.to_rfc3339(),
                    backups[0].stop_time,
                    backups[0].id
                ))
                }
            }
        }
        (None, Target::Lsn(l)) => match backups.iter().rev().find(|m| m.stop() <= *l) {
            Some(m) => m,
            None => {
                return refuse(format!(
                    "target LSN {l} is before the earliest backup was consistent ({}, backup {})",
                    backups[0].stop_lsn, backups[0].id
                ))
            }
        },
        (None, Target::Xid(x)) => {
            let xid_of = |m: &Manifest| {
                m.next_xid
                    .rsplit(':')
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            match backups.iter().rev().find(|m| xid_of(m) <= *x) {
                Some(m) => m,
                None => {
                    return refuse(format!(
                        "target xid {x} is older than the earliest backup (its next xid was {})",
                        backups[0].next_xid
                    ))
                }
            }
        }
    };
    // A newer backup whose manifest cannot be read might have been the one to use: say so
    // rather than restore an older one quietly.
    if backup.is_none() {
        if let Some((_, why)) = catalog
            .unreadable
            .iter()
            .find(|(u, _)| u.get(..15) >= chosen.id.get(..15))
        {
            return Err(BackupError::Damaged(format!(
                "{why}; it is newer than backup {}: run pgwarden backup verify, or name a backup with --backup",
                chosen.id
            )));
        }
    }
    let chain = catalog.chain(&chosen.id)?;

    // The WAL the backup needs to be consistent.
    let (tli, first, last) = wal_range(chosen, seg_size)?;
    let have: std::collections::HashSet<(u32, u64)> =
        segments.iter().map(|s| (s.tli, s.segno)).collect();
    if let Some(missing) = (first..=last).find(|n| !have.contains(&(tli, *n))) {
        return refuse(format!(
            "WAL segment {}, which backup {} needs, is not in the repository",
            wal::segment_name(tli, missing, seg_size),
            chosen.id
        ));
    }
    // The end of the WAL that follows on from the backup without a gap (any later timeline
    // counts as following on).
    let mut end_segno = last;
    while have.contains(&(tli, end_segno + 1)) {
        end_segno += 1;
    }
    let newer_timelines = segments.iter().any(|s| s.tli > tli && s.segno >= first);
    match target {
        Target::Time(t) => {
            let at = t.timestamp_millis() as f64 / 1000.0;
            if let Some(m) = explicit_too_late(chosen, at) {
                return refuse(m);
            }
            let newest = segments
                .iter()
                .filter(|s| s.tli >= tli && s.segno >= first)
                .map(|s| s.object.modified)
                .max();
            match newest {
                Some(n) if (n.timestamp_millis() as f64 / 1000.0) >= at => {}
                Some(n) => {
                    return refuse(format!(
                        "target time {} is after the newest archived WAL (archived {}): it cannot be reached",
                        t.to_rfc3339(),
                        n.to_rfc3339()
                    ))
                }
                None => return refuse("the repository has no WAL after the backup".into()),
            }
        }
        Target::Lsn(l) => {
            if *l < chosen.stop() {
                return refuse(format!(
                    "target LSN {l} is before backup {} was consistent ({})",
                    chosen.id, chosen.stop_lsn
                ));
            }
            let end = Lsn((end_segno + 1) * seg_size);
            if *l > end && !newer_timelines {
                return refuse(format!(
                    "target LSN {l} is past the end of the archived WAL ({end}): it cannot be reached"
                ));
            }
        }
        Target::Latest | Target::Xid(_) => {}
    }
    Ok(Plan { chain })
}

fn explicit_too_late(m: &Manifest, at: f64) -> Option<String> {
    (m.stop_epoch > at).then(|| {
        format!(
            "backup {} was consistent only at {}, after the target time",
            m.id, m.stop_time
        )
    })
}

/// The timeline and first and last segment numbers a backup needs.
pub fn wal_range(m: &Manifest, seg_size: u64) -> Result<(u32, u64, u64)> {
    let parse = |name: &str| match wal::classify(name) {
        Some(wal::WalKind::Segment { tli, log, seg }) => Ok((tli, wal::segno(log, seg, seg_size))),
        _ => Err(BackupError::Damaged(format!(
            "backup {}: bad WAL name {name}",
            m.id
        ))),
    };
    let (tli, first) = parse(&m.start_wal)?;
    let (_, last) = parse(&m.stop_wal)?;
    Ok((tli, first, last.max(first)))
}

/// Whether `dir` is missing or an empty directory.
fn check_empty(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(BackupError::Refused(format!(
                    "{} is not empty: restore into a new or empty directory",
                    dir.display()
                )));
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(BackupError::Refused(
            format!("{} is a file, not a directory", dir.display()),
        )),
        Err(e) => Err(BackupError::io("read", dir, e)),
    }
}

/// Restores. On failure the directory is removed again (or emptied, when it existed).
pub async fn restore(
    repo: &Repo,
    opts: &RestoreOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<RestoreReport> {
    let began = Instant::now();
    let catalog = Catalog::load(repo).await?;
    let segments = wal::list_segments(repo).await?;
    let seg_size = repo.meta.wal_segment_size;
    let plan = plan(
        &catalog,
        &segments,
        seg_size,
        opts.backup.as_deref(),
        &opts.target,
    )?;
    let existed = check_empty(&opts.pgdata)?;
    if !existed {
        let parent = opts.pgdata.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(p) = parent {
            if !p.is_dir() {
                return Err(BackupError::Refused(format!(
                    "{} does not exist",
                    p.display()
                )));
            }
        }
        std::fs::create_dir(&opts.pgdata)
            .map_err(|e| BackupError::io("create", &opts.pgdata, e))?;
    }
    // Removes what was written if the restore fails or is dropped (Ctrl-C) before the end.
    let mut guard = Undo {
        dir: opts.pgdata.clone(),
        existed,
        armed: true,
    };
    let (files, bytes) = write_all(repo, opts, &plan, progress).await?;
    guard.armed = false;
    let target = plan.chain.last().map(|m| m.id.clone()).unwrap_or_default();
    Ok(RestoreReport {
        backup: target,
        chain: plan.chain.iter().map(|m| m.id.clone()).collect(),
        target: opts.target.describe(),
        pgdata: opts.pgdata.display().to_string(),
        files,
        bytes,
        seconds: began.elapsed().as_secs_f64(),
    })
}

/// The restore directory, emptied (or removed, when the restore made it) on drop while armed.
struct Undo {
    dir: PathBuf,
    existed: bool,
    armed: bool,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if self.armed {
            undo(&self.dir, self.existed);
        }
    }
}

fn undo(dir: &Path, existed: bool) {
    if existed {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

async fn write_all(
    repo: &Repo,
    opts: &RestoreOptions,
    plan: &Plan<'_>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(usize, u64)> {
    let target = *plan
        .chain
        .last()
        .ok_or_else(|| BackupError::Failed("empty chain".into()))?;
    let root = &opts.pgdata;
    let io = |what: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |e| BackupError::io(what, p, e)
    };
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
        .map_err(io("chmod", root))?;
    opts.user.chown(root)?;
    let mut dirs = target.dirs.clone();
    dirs.sort_by(|a, b| a.path.cmp(&b.path));
    for d in &dirs {
        let p = safe_join(root, &d.path)?;
        std::fs::create_dir_all(&p).map_err(io("create", &p))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(d.mode & 0o777 | 0o700))
            .map_err(io("chmod", &p))?;
        opts.user.chown(&p)?;
    }
    // Every file made (an empty one stays so), then each 8 MiB chunk of each file built in
    // memory from every layer of the chain (the full's bytes, each incremental's pages over
    // them) and written once, `jobs` chunks at a time.
    let mut work: Vec<(usize, u64, usize)> = Vec::new();
    for (i, f) in target.files.iter().enumerate() {
        let p = safe_join(root, &f.path)?;
        std::fs::File::create(&p).map_err(io("create", &p))?;
        let mut at = 0u64;
        while at < f.size {
            let len = (f.size - at).min(crate::run::PIECE) as usize;
            work.push((i, at, len));
            at += len as u64;
        }
    }
    let total: u64 = target.files.iter().map(|f| f.size).sum();
    let chain = crate::chain::Chain::new(&plan.chain);
    let handle = tokio::runtime::Handle::current();
    let next = std::sync::Mutex::new(0usize);
    let done = std::sync::atomic::AtomicU64::new(0);
    let failed: std::sync::Mutex<Option<BackupError>> = std::sync::Mutex::new(None);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let run = || -> Result<()> {
        let mut buf = vec![0u8; crate::run::PIECE as usize];
        loop {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(());
            }
            crate::error::check(&opts.cancel)?;
            let i = {
                let mut n = next
                    .lock()
                    .map_err(|_| BackupError::Failed("a restoring thread panicked".into()))?;
                *n += 1;
                *n - 1
            };
            let Some(&(fi, at, len)) = work.get(i) else {
                return Ok(());
            };
            let f = &target.files[fi];
            let chunk = &mut buf[..len];
            match chain.chunk_into(repo, &handle, &f.path, at, chunk)? {
                None => {
                    return Err(BackupError::Damaged(format!(
                        "backup {}: {} is incremental but no backup below it holds it whole",
                        target.id, f.path
                    )))
                }
                // No backup holds bytes here: left a hole (zeros) by the final length.
                Some(false) => {}
                Some(true) => {
                    let p = root.join(&f.path);
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&p)
                        .map_err(io("write", &p))?;
                    file.write_all_at(chunk, at).map_err(io("write", &p))?;
                    start_writeback(&file, at, len);
                }
            }
            let d = done.fetch_add(len as u64, std::sync::atomic::Ordering::SeqCst) + len as u64;
            progress(d.min(total), total);
        }
    };
    tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            for _ in 0..opts.jobs.max(1) {
                s.spawn(|| {
                    if let Err(e) = run() {
                        stop.store(true, std::sync::atomic::Ordering::SeqCst);
                        if let Ok(mut slot) = failed.lock() {
                            slot.get_or_insert(e);
                        }
                    }
                });
            }
        });
    });
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(e);
    }
    let bytes = total;
    for f in &target.files {
        let p = safe_join(root, &f.path)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .map_err(io("write", &p))?;
        file.set_len(f.size).map_err(io("write", &p))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(f.mode & 0o777 | 0o600))
            .map_err(io("chmod", &p))?;
        opts.user.chown(&p)?;
    }
    write_recovery(opts, target)?;
    // Flush what was written before saying it is restored (one syncfs for the file system
    // holding the directory, as PostgreSQL's recovery_init_sync_method = syncfs does).
    let dir = std::fs::File::open(root).map_err(io("sync", root))?;
    nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir))
        .map_err(|e| BackupError::io("sync", root, std::io::Error::from(e)))?;
    Ok((target.files.len(), bytes))
}

/// Starts writing `[offset, offset + len)` of `file` to disk without waiting for it
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so that the disk writes while the next chunks
/// are decompressed and the final flush has little left to wait for (measured: the flush at
/// the end was a third of a 2 GB restore). By hand because nix does not wrap it; a failure
/// only means the final flush does the work.
#[allow(unsafe_code)]
fn start_writeback(file: &std::fs::File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range takes an open descriptor (borrowed from `file`, which outlives
    // the call) and three integers; it touches no memory of this process.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// `root/rel`, refusing a manifest path that would leave `root`.
fn safe_join(root: &Path, rel: &str) -> Result<PathBuf> {
    let ok = !rel.is_empty()
        && !rel.starts_with('/')
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if !ok {
        return Err(BackupError::Damaged(format!(
            "the manifest names the path {rel:?}"
        )));
    }
    Ok(root.join(rel))
}

fn write_recovery(opts: &RestoreOptions, m: &Manifest) -> Result<()> {
    let root = &opts.pgdata;
    opts.user
        .write_file(&root.join("backup_label"), m.backup_label.as_bytes(), 0o600)?;
    opts.user
        .write_file(&root.join("recovery.signal"), b"", 0o600)?;
    let auto = root.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
    let set = |text: &mut String, name: &str, value: Option<&str>| {
        *text = pgw_node::auto_conf_set(text, name, value);
    };
    for name in [
        "recovery_target",
        "recovery_target_time",
        "recovery_target_lsn",
        "recovery_target_xid",
        "recovery_target_name",
        "recovery_target_inclusive",
    ] {
        set(&mut text, name, None);
    }
    set(&mut text, "restore_command", Some(&opts.restore_command));
    set(&mut text, "recovery_target_timeline", Some("latest"));
    match &opts.target {
        Target::Latest => set(&mut text, "recovery_target_action", None),
        t => {
            match t {
                Target::Time(t) => set(&mut text, "recovery_target_time", Some(&t.to_rfc3339())),
                Target::Lsn(l) => set(&mut text, "recovery_target_lsn", Some(&l.to_string())),
                Target::Xid(x) => set(&mut text, "recovery_target_xid", Some(&x.to_string())),
                Target::Latest => {}
            }
            set(
                &mut text,
                "recovery_target_action",
                Some(opts.action.as_str()),
            );
        }
    }
    if !opts.archive {
        set(&mut text, "archive_mode", Some("off"));
    }
    opts.user.write_file(&auto, text.as_bytes(), 0o600)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::testutil::{backup, SEG};
    use crate::manifest::Kind;
    use crate::repo::Listed;

    fn segs(range: std::ops::RangeInclusive<u64>, archived_at: i64) -> Vec<ArchivedSegment> {
        range
            .map(|s| ArchivedSegment {
                name: wal::segment_name(1, s, SEG),
                tli: 1,
                segno: s,
                object: Listed {
                    name: String::new(),
                    size: 1,
                    modified: chrono::DateTime::from_timestamp(archived_at, 0).unwrap_or_default(),
                },
            })
            .collect()
    }

    fn at(secs: i64) -> Target {
        Target::Time(
            chrono::DateTime::from_timestamp(secs, 0)
                .unwrap_or_default()
                .fixed_offset(),
        )
    }

    fn catalog() -> Catalog {
        Catalog {
            backups: vec![
                backup("a", Kind::Full, None, 2, 1000.0),
                backup("b", Kind::Incr, Some("a"), 5, 2000.0),
            ],
            ..Catalog::default()
        }
    }

    #[test]
    fn picks_the_newest_backup_before_the_target() {
        let c = catalog();
        let wal = segs(2..=9, 3000);
        let ids = |p: Plan| p.chain.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(plan(&c, &wal, SEG, None, &at(1500)).unwrap()), ["a"]);
        assert_eq!(
            ids(plan(&c, &wal, SEG, None, &at(2500)).unwrap()),
            ["a", "b"]
        );
        assert_eq!(
            ids(plan(&c, &wal, SEG, None, &Target::Latest).unwrap()),
            ["a", "b"]
        );
        assert_eq!(
            ids(plan(&c, &wal, SEG, Some("a"), &Target::Latest).unwrap()),
            ["a"]
        );
    }

    #[test]
    fn refuses_what_the_repository_cannot_reach() {
        let c = catalog();
        let wal = segs(2..=9, 3000);
        let refused = |r: Result<Plan>| match r {
            Err(BackupError::Refused(m)) => m,
            Err(e) => panic!("refused expected, got {e}"),
            Ok(_) => panic!("refused expected, got a plan"),
        };
        assert!(refused(plan(&c, &wal, SEG, None, &at(500))).contains("before the earliest backup"));
        assert!(
            refused(plan(&c, &wal, SEG, None, &at(4000))).contains("after the newest archived WAL")
        );
        assert!(
            refused(plan(&c, &wal, SEG, Some("b"), &at(1500))).contains("after the target time")
        );
        let past = Target::Lsn(Lsn(20 * SEG));
        assert!(
            refused(plan(&c, &wal, SEG, None, &past)).contains("past the end of the archived WAL")
        );
        // b's own segment (5) missing.
        let gap: Vec<_> = segs(2..=9, 3000)
            .into_iter()
            .filter(|s| s.segno != 5)
            .collect();
        assert!(
            refused(plan(&c, &gap, SEG, None, &Target::Latest)).contains("which backup b needs")
        );
        assert!(
            refused(plan(&Catalog::default(), &wal, SEG, None, &Target::Latest))
                .contains("no usable backup")
        );
    }

    #[test]
    fn target_times_need_a_zone() {
        assert!(Target::parse_time("2026-12-06 14:30:00+00").is_ok());
        assert!(Target::parse_time("2026-12-06T14:30:00.5Z").is_ok());
        assert!(Target::parse_time("2026-12-06 14:30:00").is_err());
        assert!(Target::parse_time("yesterday").is_err());
    }

    #[test]
    fn paths_stay_inside() {
        let root = Path::new("/r");
        assert!(safe_join(root, "base/1/2").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a"] {
            assert!(safe_join(root, bad).is_err(), "{bad}");
        }
    }
}
