//! Processes by pid: whether one is alive (a zombie is not), signalling it, and its children
//! (read from `/proc`, so Linux only; elsewhere a postmaster's children are found by nobody
//! and exit by themselves when they notice it died).

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
        assert_eq!(stat_state("garbage"), None);
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
