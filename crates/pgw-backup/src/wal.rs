//! WAL archiving: `wal push` (PostgreSQL's archive_command) and `wal fetch` (its
//! restore_command), and the names and positions of WAL segments.

use std::path::Path;

use pgw_node::Lsn;

use crate::envelope::{self, Header, HEADER_LEN};
use crate::error::{BackupError, Result};
use crate::repo::{Listed, Repo};

/// What kind of file PostgreSQL archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalKind {
    /// A 24-hex-digit segment.
    Segment { tli: u32, log: u32, seg: u32 },
    /// `<tli>.history`.
    History { tli: u32 },
    /// Anything else PostgreSQL archives beside a segment: `<segment>.partial`,
    /// `<segment>.<offset>.backup`.
    Other,
}

/// Classifies an archived file's name; `None` for a name PostgreSQL does not archive.
pub fn classify(name: &str) -> Option<WalKind> {
    let hex8 = |s: &str| {
        (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u32::from_str_radix(s, 16).ok())
            .flatten()
    };
    if name.len() == 24 {
        return Some(WalKind::Segment {
            tli: hex8(&name[0..8])?,
            log: hex8(&name[8..16])?,
            seg: hex8(&name[16..24])?,
        });
    }
    if let Some(t) = name.strip_suffix(".history") {
        return Some(WalKind::History { tli: hex8(t)? });
    }
    if name.len() > 25 && name.is_char_boundary(24) && classify(&name[..24]).is_some() {
        let rest = &name[24..];
        if rest == ".partial"
            || (rest.ends_with(".backup")
                && rest.len() > 8
                && rest[1..rest.len() - 7]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit()))
        {
            return Some(WalKind::Other);
        }
    }
    None
}

/// The object holding the archived file `name`.
pub fn object_name(name: &str) -> Result<String> {
    match classify(name) {
        Some(WalKind::History { .. }) => Ok(format!("wal/history/{name}.pgw")),
        Some(_) => Ok(format!("wal/{}/{name}.pgw", &name[..16])),
        None => Err(BackupError::Input(format!(
            "{name:?} is not the name of a WAL segment, history or backup file"
        ))),
    }
}

/// The archived file's name of the WAL object `object` (`wal/…/<name>.pgw`).
pub fn file_of(object: &str) -> Option<&str> {
    object
        .rsplit('/')
        .next()
        .and_then(|f| f.strip_suffix(".pgw"))
}

/// Segments per "log" (the middle 8 hex digits) at `seg_size`.
fn per_log(seg_size: u64) -> u64 {
    0x1_0000_0000 / seg_size
}

/// The segment number of a segment's name parts.
pub fn segno(log: u32, seg: u32, seg_size: u64) -> u64 {
    u64::from(log) * per_log(seg_size) + u64::from(seg)
}

/// The name of segment `segno` on timeline `tli`.
pub fn segment_name(tli: u32, segno: u64, seg_size: u64) -> String {
    format!(
        "{tli:08X}{:08X}{:08X}",
        segno / per_log(seg_size),
        segno % per_log(seg_size)
    )
}

/// The segment that holds `lsn`.
pub fn segno_of(lsn: Lsn, seg_size: u64) -> u64 {
    lsn.0 / seg_size
}

/// The segment holding the byte before `lsn` (PostgreSQL's XLByteToPrevSeg: the last
/// segment a backup ending at `lsn` needs).
pub fn prev_segno_of(lsn: Lsn, seg_size: u64) -> u64 {
    lsn.0.saturating_sub(1) / seg_size
}

/// An archived segment in the repository.
#[derive(Debug, Clone)]
pub struct ArchivedSegment {
    pub name: String,
    pub tli: u32,
    pub segno: u64,
    pub object: Listed,
}

/// Every archived segment (not history or backup files), in name order.
pub async fn list_segments(repo: &Repo) -> Result<Vec<ArchivedSegment>> {
    let seg_size = repo.meta.wal_segment_size;
    let mut out = Vec::new();
    for o in repo.store.list("wal").await? {
        let Some(file) = file_of(&o.name) else {
            continue;
        };
        if let Some(WalKind::Segment { tli, log, seg }) = classify(file) {
            out.push(ArchivedSegment {
                name: file.to_string(),
                tli,
                segno: segno(log, seg, seg_size),
                object: o.clone(),
            });
        }
    }
    Ok(out)
}

/// What `wal push` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Stored: so many bytes in the repository.
    Stored(u64),
    /// The same file was there already.
    AlreadyThere,
}

/// The system identifier in a segment's first (long) page header, when it has one.
fn segment_sysid(data: &[u8]) -> Option<u64> {
    // XLogLongPageHeaderData: xlp_magic u16, xlp_info u16, xlp_tli u32, xlp_pageaddr u64,
    // xlp_rem_len u32 (+4 padding), then xlp_sysid u64 at byte 24. XLP_LONG_HEADER = 0x0002.
    if data.len() < 32 {
        return None;
    }
    let info = u16::from_ne_bytes([data[2], data[3]]);
    if info & 0x0002 == 0 {
        return None;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&data[24..32]);
    Some(u64::from_ne_bytes(b))
}

/// Archives the file at `path` (`%p`): checks it is this cluster's, compresses and
/// checksums it, and stores it unless the same file is there already. A different file of
/// the same name is an error, and nothing is written.
pub async fn push(repo: &Repo, path: &Path, level: i32) -> Result<Pushed> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| BackupError::Input(format!("{}: not a WAL file name", path.display())))?
        .to_string();
    let object = object_name(&name)?;
    let data = std::fs::read(path).map_err(|e| BackupError::io("read", path, e))?;
    if let Some(WalKind::Segment { .. }) = classify(&name) {
        if data.len() as u64 != repo.meta.wal_segment_size {
            return Err(BackupError::Input(format!(
                "{name}: {} bytes, but this cluster's WAL segments are {} bytes",
                data.len(),
                repo.meta.wal_segment_size
            )));
        }
        if let Some(sysid) = segment_sysid(&data) {
            if sysid.to_string() != repo.meta.system_identifier {
                return Err(BackupError::Refused(format!(
                    "{name} is of cluster {sysid}; repository {} belongs to cluster {}",
                    repo.store.url(),
                    repo.meta.system_identifier
                )));
            }
        }
    }
    let sum = envelope::checksum(&data, repo.key.as_ref());
    if let Some(head) = repo.store.get_head(&object, HEADER_LEN as u64).await? {
        return match Header::parse(&head) {
            Ok(h) if h.checksum == sum && h.plain_len == data.len() as u64 => {
                Ok(Pushed::AlreadyThere)
            }
            Ok(_) => Err(BackupError::Failed(format!(
                "a different {name} is already in repository {} (checksums differ): \
                 is another cluster archiving into it?",
                repo.store.url()
            ))),
            Err(e) => Err(BackupError::Damaged(format!(
                "{name} in repository {} is damaged ({e}): run pgwarden backup verify",
                repo.store.url()
            ))),
        };
    }
    let sealed = envelope::seal_with_checksum(&data, sum, level, repo.key.as_ref());
    let stored = sealed.len() as u64;
    repo.store.put(&object, sealed).await?;
    Ok(Pushed::Stored(stored))
}

/// What `wal fetch` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// Written to the destination.
    Written(u64),
    /// Not in the repository (normal at the end of the archive).
    Missing,
}

/// Restores the archived file `name` (`%f`) to `dest` (`%p`), checking its checksum. The
/// file appears whole or not at all.
pub async fn fetch(repo: &Repo, name: &str, dest: &Path) -> Result<Fetched> {
    let object = object_name(name)?;
    let Some(bytes) = repo.store.get(&object).await? else {
        return Ok(Fetched::Missing);
    };
    let (plain, _) = envelope::open(&bytes, repo.key.as_ref()).map_err(|e| {
        BackupError::Damaged(format!("{name} in repository {}: {e}", repo.store.url()))
    })?;
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| BackupError::io("write a temporary file in", dir, e))?;
    std::io::Write::write_all(&mut tmp, &plain).map_err(|e| BackupError::io("write", dest, e))?;
    tmp.persist(dest)
        .map_err(|e| BackupError::io("write", dest, e.error))?;
    Ok(Fetched::Written(plain.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            classify("000000010000000A000000FF"),
            Some(WalKind::Segment {
                tli: 1,
                log: 10,
                seg: 255
            })
        );
        assert_eq!(
            classify("00000002.history"),
            Some(WalKind::History { tli: 2 })
        );
        assert_eq!(
            classify("000000010000000000000003.00000028.backup"),
            Some(WalKind::Other)
        );
        assert_eq!(
            classify("000000010000000000000003.partial"),
            Some(WalKind::Other)
        );
        for bad in [
            "",
            "x",
            "00000001000000000000000G",
            "../../etc/passwd",
            "0000000100000000000000031",
            "00000001.history.x",
            "000000010000000000000003.x.backup",
        ] {
            assert_eq!(classify(bad), None, "{bad}");
        }
        assert_eq!(
            object_name("000000010000000000000003").unwrap(),
            "wal/0000000100000000/000000010000000000000003.pgw"
        );
        assert_eq!(
            object_name("00000002.history").unwrap(),
            "wal/history/00000002.history.pgw"
        );
    }

    #[test]
    fn positions() {
        let s = 16 * 1024 * 1024;
        assert_eq!(
            segment_name(1, segno(0, 3, s), s),
            "000000010000000000000003"
        );
        assert_eq!(segment_name(2, 256, s), "000000020000000100000000");
        assert_eq!(segno_of(Lsn(0x3000000), s), 3);
        assert_eq!(prev_segno_of(Lsn(0x3000000), s), 2);
        assert_eq!(prev_segno_of(Lsn(0x3000028), s), 3);
    }
}
