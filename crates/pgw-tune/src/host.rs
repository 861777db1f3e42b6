//! Facts about the host a local server runs on: memory and cores (the lower of the
//! machine's and its cgroup's limits, as in a container) and the data directory's
//! storage class.
//!
//! The parsers are plain functions over file contents so they are tested without a
//! particular kernel; [`HostFacts::detect_for_server`] and [`HostFacts::detect_self`]
//! read the real files.

use std::path::{Path, PathBuf};

use crate::inputs::Storage;

const PROC_ROOT: &str = "/proc";
const SYS_ROOT: &str = "/sys";

/// Memory and cores available to the server, and where each figure came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    pub memory_kb: u64,
    pub memory_source: String,
    pub cpus: u32,
    pub cpus_source: String,
}

/// Whose view of the host is read: this process's or a server backend's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    This,
    Server(u32),
}

impl HostFacts {
    /// The host's facts as seen by the PostgreSQL backend `pid` (the server's
    /// `pg_backend_pid()` when the server is local), so its container's memory limit,
    /// CPU quota and CPU affinity count.
    ///
    /// `pid` is a pid in the *server's* PID namespace. When the server runs in a
    /// container with its own namespace (Docker `-p 5432:5432`), `/proc/<pid>` here is
    /// an unrelated process or missing; so unless `/proc/<pid>` is a PostgreSQL
    /// process whose own pid is `pid`, this returns `None` rather than facts that are
    /// not the server's, and the caller must ask for `--memory` / `--cpus`.
    pub fn detect_for_server(pid: u32) -> Option<HostFacts> {
        let proc_root = Path::new(PROC_ROOT);
        if !is_postgres_process(proc_root, pid) {
            return None;
        }
        detect_at(proc_root, Path::new(SYS_ROOT), Subject::Server(pid))
    }

    /// The host's facts as seen by this process (its cgroup and CPU affinity), for
    /// tuning a server that will run alongside it.
    pub fn detect_self() -> Option<HostFacts> {
        detect_at(Path::new(PROC_ROOT), Path::new(SYS_ROOT), Subject::This)
    }
}

/// Reads the facts under `proc_root` (normally /proc) and `sys_root` (normally /sys)
/// for `who`. For a server, its cgroup file must be readable: falling back to this
/// process's cgroup would silently drop the server container's limits.
fn detect_at(proc_root: &Path, sys_root: &Path, who: Subject) -> Option<HostFacts> {
    let meminfo = std::fs::read_to_string(proc_root.join("meminfo")).ok()?;
    let host_kb = parse_meminfo_total(&meminfo)?;
    let (pid_dir, affinity_label) = match who {
        Subject::This => (
            proc_root.join("self"),
            "this process's affinity (Cpus_allowed_list)",
        ),
        Subject::Server(p) => (
            proc_root.join(p.to_string()),
            "server process affinity (Cpus_allowed_list)",
        ),
    };
    let cgroups = match who {
        Subject::This => std::fs::read_to_string(pid_dir.join("cgroup")).unwrap_or_default(),
        Subject::Server(_) => std::fs::read_to_string(pid_dir.join("cgroup")).ok()?,
    };
    let limits = CgroupLimits::read(&cgroups, &sys_root.join("fs/cgroup"));

    let (memory_kb, memory_source) = match limits.memory_bytes {
        Some(b) if b / 1024 < host_kb => {
            (b / 1024, format!("cgroup limit ({})", limits.memory_file))
        }
        _ => (host_kb, "host (/proc/meminfo)".to_string()),
    };

    // The lowest of: the CPUs online, the process's affinity (which also carries a
    // cpuset cgroup, e.g. `docker --cpuset-cpus`), and the cgroup CPU quota. The first
    // strictly lowest names the source.
    let online = read_trim(&sys_root.join("devices/system/cpu/online"))
        .as_deref()
        .and_then(parse_cpu_list)
        .map(|n| (n, "host (online CPUs)".to_string()))
        .or_else(|| {
            std::thread::available_parallelism().ok().map(|n| {
                (
                    u32::try_from(n.get()).unwrap_or(u32::MAX),
                    "this process (available_parallelism; /sys/devices/system/cpu/online unreadable)"
                        .to_string(),
                )
            })
        })
        .unwrap_or_else(|| (1, "assumed 1 (online CPUs unreadable)".to_string()));
    let affinity = std::fs::read_to_string(pid_dir.join("status"))
        .ok()
        .as_deref()
        .and_then(parse_cpus_allowed_list)
        .map(|n| (n, affinity_label.to_string()));
    let quota = limits
        .cpus
        .map(|c| (c, format!("cgroup CPU quota ({})", limits.cpu_file)));
    let (cpus, cpus_source) = [affinity, quota]
        .into_iter()
        .flatten()
        .fold(online, |best, c| if c.0 < best.0 { c } else { best });

    Some(HostFacts {
        memory_kb,
        memory_source,
        cpus,
        cpus_source,
    })
}

/// Whether `<proc_root>/<pid>` is a PostgreSQL process whose pid in its own PID
/// namespace is `pid` (so it can be the backend that reported `pid`).
///
/// A backend rewrites its title to "postgres: user db host ..." (cmdline); its
/// `comm` and `exe` keep the executable's name. Any of them will do, since `exe` is
/// only readable by the server's owner or root. If `NSpid` shows the process's own
/// pid is not `pid`, it is some other namespace's process.
fn is_postgres_process(proc_root: &Path, pid: u32) -> bool {
    let dir = proc_root.join(pid.to_string());
    if let Ok(status) = std::fs::read_to_string(dir.join("status")) {
        if parse_nspid_innermost(&status).is_some_and(|own| own != pid) {
            return false;
        }
    }
    let by_title = std::fs::read(dir.join("cmdline"))
        .ok()
        .is_some_and(|raw| cmdline_is_postgres(&raw));
    let by_comm = read_trim(&dir.join("comm")).is_some_and(|c| is_postgres_name(&c));
    let by_exe = std::fs::read_link(dir.join("exe"))
        .ok()
        .is_some_and(|p| exe_is_postgres(&p));
    by_title || by_comm || by_exe
}

/// The executable names a PostgreSQL server runs under (`postmaster` was a symlink
/// to `postgres` before PostgreSQL 16).
fn is_postgres_name(name: &str) -> bool {
    name == "postgres" || name == "postmaster"
}

/// /proc/PID/cmdline (NUL-separated) of a PostgreSQL process: a rewritten title
/// "postgres: ..." or, not rewritten, argv[0] naming the postgres executable.
fn cmdline_is_postgres(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some(first) = text.split('\0').next() else {
        return false;
    };
    let first = first.trim();
    if first.starts_with("postgres:") {
        return true;
    }
    let arg0 = first.split_whitespace().next().unwrap_or("");
    Path::new(arg0)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(is_postgres_name)
}

/// The target of /proc/PID/exe, which reads "... (deleted)" after a package upgrade.
fn exe_is_postgres(target: &Path) -> bool {
    let text = target.to_string_lossy();
    let text = text.strip_suffix(" (deleted)").unwrap_or(&text);
    Path::new(text)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(is_postgres_name)
}

/// The process's pid in its own (innermost) PID namespace: the last figure of
/// `NSpid:` in /proc/PID/status. `None` when absent (kernels before 4.1) or odd.
fn parse_nspid_innermost(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|rest| rest.split_whitespace().last())
        .and_then(|n| n.parse().ok())
}

/// The highest CPU index accepted in a CPU list; kernels are built for at most 8192.
const MAX_CPU_INDEX: u32 = 65_535;

/// The number of CPUs in a kernel CPU list such as "0-3,6,8-9" (the format of
/// /sys/devices/system/cpu/online and `Cpus_allowed_list`). Overlaps count once.
/// `None` for an empty list, anything else than digits, '-' and ',', a reversed
/// range ("5-3") or an index beyond [`MAX_CPU_INDEX`].
pub fn parse_cpu_list(text: &str) -> Option<u32> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut ranges = Vec::new();
    for part in text.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (parse_cpu_index(a)?, parse_cpu_index(b)?),
            None => {
                let n = parse_cpu_index(part)?;
                (n, n)
            }
        };
        if lo > hi {
            return None;
        }
        ranges.push((lo, hi));
    }
    ranges.sort_unstable();
    let mut count: u32 = 0;
    let mut next_uncounted: u32 = 0;
    for (lo, hi) in ranges {
        let start = lo.max(next_uncounted);
        if start <= hi {
            count += hi - start + 1;
            next_uncounted = hi + 1;
        }
    }
    Some(count)
}

/// A CPU index: ASCII digits only (`u32::from_str` would take "+3"), at most
/// [`MAX_CPU_INDEX`].
fn parse_cpu_index(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&n| n <= MAX_CPU_INDEX)
}

/// The number of CPUs in `Cpus_allowed_list:` of /proc/PID/status (the process's
/// affinity).
pub fn parse_cpus_allowed_list(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .and_then(parse_cpu_list)
}

/// `MemTotal` from /proc/meminfo, in kB.
pub fn parse_meminfo_total(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The tightest memory and CPU limits found along a process's cgroup path.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    pub memory_bytes: Option<u64>,
    pub memory_file: String,
    pub cpus: Option<u32>,
    pub cpu_file: String,
}

impl CgroupLimits {
    /// `cgroups` is the text of /proc/PID/cgroup; `root` is where cgroupfs is mounted.
    /// Handles v2 (`0::/path`, memory.max, cpu.max) and v1 (memory.limit_in_bytes,
    /// cpu.cfs_quota_us / cpu.cfs_period_us), checking each directory from the
    /// process's own up to the mount root, since a parent's limit binds too.
    pub fn read(cgroups: &str, root: &Path) -> CgroupLimits {
        let mut out = CgroupLimits::default();
        for line in cgroups.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let path = path.trim_start_matches('/');
            if id == "0" && ctrls.is_empty() {
                // cgroup v2 (unified). On a v1 host this line exists too, pointing into
                // the (often empty) unified hierarchy; reading finds no files there.
                for dir in ancestors(&root.join(path), root) {
                    if let Some(v) = read_trim(&dir.join("memory.max")) {
                        if let Some(b) = parse_memory_limit(&v) {
                            out.take_memory(b, dir.join("memory.max"));
                        }
                    }
                    if let Some(v) = read_trim(&dir.join("cpu.max")) {
                        if let Some(c) = parse_cpu_max(&v) {
                            out.take_cpus(c, dir.join("cpu.max"));
                        }
                    }
                }
            }
            let ctrls: Vec<&str> = ctrls.split(',').collect();
            if ctrls.contains(&"memory") {
                let base = root.join("memory");
                for dir in ancestors(&base.join(path), &base) {
                    let f = dir.join("memory.limit_in_bytes");
                    if let Some(b) = read_trim(&f).as_deref().and_then(parse_memory_limit) {
                        out.take_memory(b, f);
                    }
                }
            }
            if ctrls.contains(&"cpu") {
                let base = root.join(ctrls.join(","));
                let base = if base.exists() {
                    base
                } else {
                    root.join("cpu")
                };
                for dir in ancestors(&base.join(path), &base) {
                    let q = read_trim(&dir.join("cpu.cfs_quota_us"));
                    let p = read_trim(&dir.join("cpu.cfs_period_us"));
                    if let (Some(q), Some(p)) = (q, p) {
                        if let Some(c) = parse_cfs(&q, &p) {
                            out.take_cpus(c, dir.join("cpu.cfs_quota_us"));
                        }
                    }
                }
            }
        }
        out
    }

    fn take_memory(&mut self, bytes: u64, file: PathBuf) {
        if self.memory_bytes.is_none_or(|m| bytes < m) {
            self.memory_bytes = Some(bytes);
            self.memory_file = file.display().to_string();
        }
    }

    fn take_cpus(&mut self, cpus: u32, file: PathBuf) {
        if self.cpus.is_none_or(|c| cpus < c) {
            self.cpus = Some(cpus);
            self.cpu_file = file.display().to_string();
        }
    }
}

fn ancestors(start: &Path, root: &Path) -> Vec<PathBuf> {
    start
        .ancestors()
        .take_while(|p| p.starts_with(root))
        .map(Path::to_path_buf)
        .collect()
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// A memory limit in bytes; "max" and v1's "unlimited" (a huge page-rounded number)
/// mean no limit.
pub fn parse_memory_limit(v: &str) -> Option<u64> {
    let b: u64 = v.trim().parse().ok()?;
    // v1 reports "no limit" as PAGE_COUNTER_MAX * page size, about 2^63.
    (b > 0 && b < (1u64 << 62)).then_some(b)
}

/// cgroup v2 `cpu.max`: "QUOTA PERIOD" or "max PERIOD"; whole CPUs, rounded up.
pub fn parse_cpu_max(v: &str) -> Option<u32> {
    let mut it = v.split_whitespace();
    let (q, p) = (it.next()?, it.next()?);
    parse_cfs(q, p)
}

/// A CFS quota and period in microseconds as whole CPUs, rounded up; -1/max = none.
pub fn parse_cfs(quota: &str, period: &str) -> Option<u32> {
    let q: i64 = quota.trim().parse().ok()?;
    let p: i64 = period.trim().parse().ok()?;
    let (q, p) = (u64::try_from(q).ok()?, u64::try_from(p).ok()?);
    if q == 0 || p == 0 {
        return None;
    }
    // A quota of more than u32::MAX CPUs limits nothing.
    u32::try_from(q.div_ceil(p)).ok()
}

/// The storage class of the block device holding `dir`, when the kernel says so
/// reliably: `rotational = 0` means SSD (NVMe by its name). Virtual disks (virtio,
/// Xen) report `rotational = 1` whatever backs them, so a rotational virtual disk
/// gives `None` (unknown) rather than a wrong "hdd".
pub fn storage_of(dir: &Path) -> Option<(Storage, String)> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).ok()?.dev();
    let (major, minor) = (nix_major(dev), nix_minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let real = std::fs::canonicalize(&sys).ok()?;
    // A partition's queue/ lives in its parent device's directory.
    let queue_dir = if real.join("queue").exists() {
        real.clone()
    } else {
        real.parent()?.to_path_buf()
    };
    let rotational = read_trim(&queue_dir.join("queue/rotational"))?;
    let name = queue_dir.file_name()?.to_string_lossy().to_string();
    let path = real.display().to_string();
    classify_device(&name, &path, &rotational).map(|s| {
        (
            s,
            format!("/sys/block/{name}/queue/rotational = {rotational}"),
        )
    })
}

/// Storage class from a block device's name, sysfs path and `rotational` flag.
pub fn classify_device(name: &str, sysfs_path: &str, rotational: &str) -> Option<Storage> {
    match rotational {
        "0" if name.starts_with("nvme") => Some(Storage::Nvme),
        "0" => Some(Storage::Ssd),
        "1" if sysfs_path.contains("/virtio")
            || name.starts_with("xvd")
            || name.starts_with("vd") =>
        {
            None
        }
        "1" => Some(Storage::Hdd),
        _ => None,
    }
}

// glibc's gnu_dev_major/minor encoding of dev_t.
fn nix_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)
}
fn nix_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)
}

#[cfg(test)]
#[path = "tests/host.rs"]
mod tests;
