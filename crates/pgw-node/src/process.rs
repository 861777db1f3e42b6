//! Processes by pid: whether one is alive (a zombie is not), whether it is a data directory's
//! postmaster, signalling it, and its children (read from `/proc`, so Linux only; elsewhere a
//! postmaster's children are found by nobody and exit by themselves when they notice it died,
//! and no pid is taken for a postmaster, so nothing named by `postmaster.pid` is signalled).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Whether `pid` is a live process; an exited process nobody reaped yet (a zombie) is not.
pub(crate) fn alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if kill(Pid::from_raw(raw), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_state(&stat) != Some('Z'),
        Err(_) => true,
    }
}

/// Whether the live process `pid` is the postmaster of `data_dir`, and not some process that
/// got the pid of a stale `postmaster.pid`: it runs a program named `postgres` (or
/// `postmaster`), and its working directory is the data directory (the postmaster changes
/// into it before it writes `postmaster.pid`, and never leaves). Where the working directory
/// cannot be read, its command line must name the data directory with `-D`. Never true for
/// pid 0 or 1.
pub(crate) fn is_postmaster_of(pid: u32, data_dir: &Path) -> bool {
    if pid <= 1 || !alive(pid) {
        return false;
    }
    let Ok(want) = std::fs::canonicalize(data_dir) else {
        return false;
    };
    let named_postgres = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_comm(&s).map(str::to_owned))
        .is_some_and(|comm| comm == "postgres" || comm == "postmaster");
    if !named_postgres {
        return false;
    }
    match std::fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(cwd) => cwd == want,
        Err(_) => std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmdline| cmdline_names_data_dir(&cmdline, data_dir, &want)),
    }
}

/// Whether a NUL-separated `/proc/<pid>/cmdline` has `-D <dir>` (or `-D<dir>`) where `<dir>`
/// is `data_dir` as given or resolves to `canonical`.
fn cmdline_names_data_dir(cmdline: &[u8], data_dir: &Path, canonical: &Path) -> bool {
    let args: Vec<&OsStr> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(OsStr::from_bytes)
        .collect();
    let names = |dir: &OsStr| {
        let dir = Path::new(dir);
        dir == data_dir || std::fs::canonicalize(dir).is_ok_and(|d| d == canonical)
    };
    args.iter().enumerate().any(|(i, arg)| {
        let bytes = arg.as_bytes();
        if bytes == b"-D" {
            args.get(i + 1).is_some_and(|dir| names(dir))
        } else if let Some(rest) = bytes.strip_prefix(b"-D") {
            names(OsStr::from_bytes(rest))
        } else {
            false
        }
    })
}

/// Whether `pid` names a process at all, a zombie included (what PostgreSQL's own check of a
/// stale `postmaster.pid` sees).
pub(crate) fn exists(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|raw| kill(Pid::from_raw(raw), None).is_ok())
}

/// Waits until none of `pids` exists, zombies included, or `limit` passes; returns whether
/// they are all gone. A zombie lasts until its parent (for a postmaster, init) reaps it.
pub(crate) fn wait_reaped(pids: &[u32], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if !pids.iter().any(|p| exists(*p)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` to `pid`; false if it could not be sent (the process is gone).
pub(crate) fn signal(pid: u32, signal: Signal) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    tracing::debug!(pid, ?signal, "signal process");
    kill(Pid::from_raw(raw), signal).is_ok()
}

/// The pids whose parent is `pid`.
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| stat_ppid(&s))
                == Some(pid)
        })
        .collect()
}

/// Waits until none of `pids` is alive or `limit` passes; returns whether they are all gone.
pub(crate) fn wait_gone(pids: &[u32], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if !pids.iter().any(|p| alive(*p)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The state letter of a `/proc/<pid>/stat` line ("123 (postgres) S 1 ..."); the command name
/// may hold spaces and parentheses, so the fields start after the last `)`.
fn stat_state(stat: &str) -> Option<char> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next()?.chars().next()
}

/// The command name (`comm`) of a `/proc/<pid>/stat` line: between the first `(` and the
/// last `)`.
fn stat_comm(stat: &str) -> Option<&str> {
    stat.get(stat.find('(')? + 1..stat.rfind(')')?)
}

/// The parent pid of a `/proc/<pid>/stat` line.
fn stat_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields() {
        let stat = "4242 (postgres: a) b) S 4200 4242 4242 0 -1";
        assert_eq!(stat_state(stat), Some('S'));
        assert_eq!(stat_ppid(stat), Some(4200));
        assert_eq!(stat_comm(stat), Some("postgres: a) b"));
        assert_eq!(stat_state("garbage"), None);
        assert_eq!(stat_comm("garbage"), None);
    }

    #[test]
    fn command_line_naming_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let canonical = std::fs::canonicalize(&data).unwrap();
        let check = |cmdline: String| cmdline_names_data_dir(cmdline.as_bytes(), &data, &canonical);
        let d = data.display();
        assert!(check(format!(
            "/usr/lib/postgresql/15/bin/postgres\0-D\0{d}\0"
        )));
        assert!(check(format!("postgres\0-c\0port=5433\0-D{d}\0")));
        assert!(check(format!("postgres\0-D\0{d}/.\0")), "resolved");
        assert!(!check(format!("postgres\0-D\0{d}x\0")));
        assert!(!check(format!("postgres\0{d}\0")), "no -D");
        assert!(!check("postgres\0-D\0".to_owned()), "-D without a value");
    }

    #[test]
    fn pid_0_1_and_others_are_no_postmaster() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_postmaster_of(0, dir.path()));
        assert!(!is_postmaster_of(1, dir.path()));
        // A live process whose working directory is the directory, but not postgres.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(dir.path())
            .spawn()
            .unwrap();
        assert!(alive(child.id()));
        assert!(!is_postmaster_of(child.id(), dir.path()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!is_postmaster_of(std::process::id(), dir.path()));
    }

    #[test]
    fn we_are_alive_and_a_zombie_is_not() {
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: once it exits it is a zombie, which counts as gone.
        assert!(wait_gone(&[pid], Duration::from_secs(10)));
        child.wait().unwrap();
        assert!(!alive(pid));
    }

    #[test]
    fn children_are_found() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(children(std::process::id()).contains(&child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
