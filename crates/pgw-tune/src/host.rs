//! Facts about the host a local server runs on: memory and cores (the lower of the
//! machine's and its cgroup's limits, as in a container) and the data directory's
//! storage class.
//!
//! The parsers are plain functions over file contents so they are tested without a
//! particular kernel; [`HostFacts::detect`] reads the real files.

use std::path::{Path, PathBuf};

use crate::inputs::Storage;

/// Memory and cores available to the server, and where each figure came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    pub memory_kb: u64,
    pub memory_source: String,
    pub cpus: u32,
    pub cpus_source: String,
}

impl HostFacts {
    /// Reads the host's facts as seen by process `pid` (the server's backend when the
    /// server is local, so its container's limits count), or by this process.
    pub fn detect(pid: Option<u32>) -> Option<HostFacts> {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let host_kb = parse_meminfo_total(&meminfo)?;
        let cgroup_file = pid
            .map(|p| PathBuf::from(format!("/proc/{p}/cgroup")))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("/proc/self/cgroup"));
        let cgroups = std::fs::read_to_string(&cgroup_file).unwrap_or_default();
        let root = Path::new("/sys/fs/cgroup");
        let limits = CgroupLimits::read(&cgroups, root);

        let (memory_kb, memory_source) = match limits.memory_bytes {
            Some(b) if b / 1024 < host_kb => {
                (b / 1024, format!("cgroup limit ({})", limits.memory_file))
            }
            _ => (host_kb, "host (/proc/meminfo)".to_string()),
        };
        let host_cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let (cpus, cpus_source) = match limits.cpus {
            Some(c) if c < host_cpus => (c, format!("cgroup CPU quota ({})", limits.cpu_file)),
            _ => (host_cpus, "host (online CPUs)".to_string()),
        };
        Some(HostFacts {
            memory_kb,
            memory_source,
            cpus,
            cpus_source,
        })
    }
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
    if q <= 0 || p <= 0 {
        return None;
    }
    Some(((q + p - 1) / p).max(1) as u32)
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
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        assert_eq!(
            parse_meminfo_total("MemTotal:       24684096 kB\nMemFree: 1 kB\n"),
            Some(24_684_096)
        );
        assert_eq!(parse_meminfo_total("nothing"), None);
    }

    #[test]
    fn limits_parse() {
        assert_eq!(parse_memory_limit("max"), None);
        assert_eq!(parse_memory_limit("9223372036854771712"), None);
        assert_eq!(parse_memory_limit("1073741824"), Some(1 << 30));
        assert_eq!(parse_cpu_max("max 100000"), None);
        assert_eq!(parse_cpu_max("150000 100000"), Some(2));
        assert_eq!(parse_cpu_max("100000 100000"), Some(1));
        assert_eq!(parse_cfs("-1", "100000"), None);
        assert_eq!(parse_cfs("50000", "100000"), Some(1));
    }

    #[test]
    fn cgroup_v2_limits_along_the_path() {
        let root = tempfile::tempdir().unwrap();
        let leaf = root.path().join("kubepods/pod1");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(root.path().join("kubepods/memory.max"), "2147483648\n").unwrap();
        std::fs::write(leaf.join("memory.max"), "max\n").unwrap();
        std::fs::write(leaf.join("cpu.max"), "200000 100000\n").unwrap();
        let l = CgroupLimits::read("0::/kubepods/pod1\n", root.path());
        assert_eq!(l.memory_bytes, Some(2 << 30));
        assert!(l.memory_file.ends_with("kubepods/memory.max"));
        assert_eq!(l.cpus, Some(2));
    }

    #[test]
    fn cgroup_v1_limits() {
        let root = tempfile::tempdir().unwrap();
        let mem = root.path().join("memory/docker/abc");
        let cpu = root.path().join("cpu,cpuacct/docker/abc");
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::create_dir_all(&cpu).unwrap();
        std::fs::write(mem.join("memory.limit_in_bytes"), "1073741824\n").unwrap();
        std::fs::write(cpu.join("cpu.cfs_quota_us"), "100000\n").unwrap();
        std::fs::write(cpu.join("cpu.cfs_period_us"), "100000\n").unwrap();
        let l = CgroupLimits::read(
            "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/\n",
            root.path(),
        );
        assert_eq!(l.memory_bytes, Some(1 << 30));
        assert_eq!(l.cpus, Some(1));
        // No files at all: no limits.
        let l = CgroupLimits::read("0::/\n", Path::new("/nonexistent"));
        assert_eq!(l, CgroupLimits::default());
    }

    #[test]
    fn device_classes() {
        assert_eq!(
            classify_device("nvme0n1", "/devices/pci/nvme/nvme0n1", "0"),
            Some(Storage::Nvme)
        );
        assert_eq!(
            classify_device("sda", "/devices/pci/ata1/sda", "0"),
            Some(Storage::Ssd)
        );
        assert_eq!(
            classify_device("sda", "/devices/pci/ata1/sda", "1"),
            Some(Storage::Hdd)
        );
        assert_eq!(
            classify_device("vda", "/devices/pci0000:00/virtio1/block/vda", "1"),
            None
        );
    }

    #[test]
    fn detect_on_this_machine_gives_sane_figures() {
        let h = HostFacts::detect(None).expect("read /proc/meminfo");
        assert!(h.memory_kb > 100 * 1024);
        assert!(h.cpus >= 1);
    }
}
