//! Unit tests of `host.rs`.

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
    assert_eq!(parse_cfs("0", "100000"), None);
    assert_eq!(parse_cfs("100000", "0"), None);
    assert_eq!(parse_cfs("9223372036854775807", "2"), None);
    assert_eq!(
        parse_cfs("9223372036854775807", "9223372036854775807"),
        Some(1)
    );
    assert_eq!(parse_cfs("99999999999999999999", "100000"), None);
    assert_eq!(parse_cpu_max("garbage"), None);
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
fn cpu_lists() {
    assert_eq!(parse_cpu_list("0"), Some(1));
    assert_eq!(parse_cpu_list("0-0"), Some(1));
    assert_eq!(parse_cpu_list("0-3"), Some(4));
    assert_eq!(parse_cpu_list("0-3,5"), Some(5));
    assert_eq!(parse_cpu_list("0-3,6,8-9\n"), Some(7));
    // Overlaps and duplicates count once, in any order.
    assert_eq!(parse_cpu_list("2-5,0-3"), Some(6));
    assert_eq!(parse_cpu_list("1,1,0-1"), Some(2));
    assert_eq!(parse_cpu_list("0-7,2-3"), Some(8));
    assert_eq!(parse_cpu_list("65535"), Some(1));
    assert_eq!(parse_cpu_list("0-65535"), Some(65_536));
    for bad in [
        "",
        "  \n",
        "garbage",
        "5-3",
        "0-3,",
        ",0",
        "0--3",
        "-3",
        "3-",
        "0-3:1/2",
        "+3",
        "0 - 3",
        "1.5",
        "65536",
        "0-99999999999999999999",
        "18446744073709551616",
    ] {
        assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
    }
}

#[test]
fn status_fields() {
    let status = "Name:\tpostgres\nNSpid:\t4242\t17\nCpus_allowed:\tf\n\
                  Cpus_allowed_list:\t0-1,3\nMems_allowed_list:\t0\n";
    assert_eq!(parse_cpus_allowed_list(status), Some(3));
    assert_eq!(parse_nspid_innermost(status), Some(17));
    assert_eq!(parse_nspid_innermost("NSpid:\t4242\n"), Some(4242));
    assert_eq!(parse_cpus_allowed_list("Name:\tx\n"), None);
    assert_eq!(parse_cpus_allowed_list("Cpus_allowed_list:\t7-2\n"), None);
    assert_eq!(parse_nspid_innermost("NSpid:\tx\n"), None);
}

/// A fake /proc/<pid> with the given files.
fn fake_proc(root: &Path, pid: u32, files: &[(&str, &[u8])]) {
    let dir = root.join(pid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
}

#[test]
fn postgres_process_check() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // A backend's rewritten title, padded with NULs.
    fake_proc(
        r,
        100,
        &[(
            "cmdline",
            b"postgres: alice shop 127.0.0.1(40000) idle\0\0\0\0",
        )],
    );
    // With cluster_name set.
    fake_proc(
        r,
        101,
        &[("cmdline", b"postgres: 16/main: alice shop [local] idle\0")],
    );
    // Not rewritten: argv[0] is the executable.
    fake_proc(
        r,
        102,
        &[(
            "cmdline",
            b"/usr/lib/postgresql/16/bin/postgres\0-D\0/data\0",
        )],
    );
    // Only comm readable.
    fake_proc(r, 103, &[("comm", b"postgres\n")]);
    fake_proc(r, 104, &[("comm", b"postmaster\n")]);
    // Unrelated processes.
    fake_proc(
        r,
        200,
        &[("cmdline", b"/usr/sbin/sshd\0-D\0"), ("comm", b"sshd\n")],
    );
    fake_proc(
        r,
        201,
        &[
            ("cmdline", b"/usr/bin/postgres_exporter\0"),
            ("comm", b"postgres_export\n"),
        ],
    );
    fake_proc(r, 202, &[("cmdline", b""), ("comm", b"")]);
    fake_proc(r, 203, &[("cmdline", b"\xff\xfe\0"), ("comm", b"\xff\n")]);
    // A postgres process whose own pid (innermost namespace) is another figure: it
    // belongs to a containerised server whose backends report other pids.
    fake_proc(
        r,
        300,
        &[
            ("cmdline", b"postgres: bob db [local] idle\0"),
            ("status", b"Name:\tpostgres\nNSpid:\t300\t57\n"),
        ],
    );
    // Same namespace: NSpid agrees.
    fake_proc(
        r,
        301,
        &[
            ("cmdline", b"postgres: bob db [local] idle\0"),
            ("status", b"Name:\tpostgres\nNSpid:\t301\n"),
        ],
    );
    for pid in [100, 101, 102, 103, 104, 301] {
        assert!(is_postgres_process(r, pid), "{pid}");
    }
    for pid in [200, 201, 202, 203, 300, 999] {
        assert!(!is_postgres_process(r, pid), "{pid}");
    }
}

#[test]
fn postgres_exe_link() {
    assert!(exe_is_postgres(Path::new(
        "/usr/lib/postgresql/16/bin/postgres"
    )));
    assert!(exe_is_postgres(Path::new(
        "/usr/lib/postgresql/16/bin/postgres (deleted)"
    )));
    assert!(!exe_is_postgres(Path::new("/usr/bin/postgres_exporter")));
    assert!(!exe_is_postgres(Path::new("/")));
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("55");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink("/opt/pg/bin/postgres", dir.join("exe")).unwrap();
    assert!(is_postgres_process(root.path(), 55));
}

/// A fake /proc and /sys: a 64 GB host with CPUs `online`.
fn fake_host(online: Option<&str>) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let proc_root = t.path().join("proc");
    let sys_root = t.path().join("sys");
    std::fs::create_dir_all(&proc_root).unwrap();
    std::fs::create_dir_all(sys_root.join("devices/system/cpu")).unwrap();
    std::fs::create_dir_all(sys_root.join("fs/cgroup")).unwrap();
    std::fs::write(proc_root.join("meminfo"), "MemTotal: 67108864 kB\n").unwrap();
    if let Some(o) = online {
        std::fs::write(sys_root.join("devices/system/cpu/online"), o).unwrap();
    }
    (t, proc_root, sys_root)
}

#[test]
fn server_facts_take_the_lowest_cpu_bound() {
    // Only the host's online CPUs.
    let (_t, p, s) = fake_host(Some("0-15\n"));
    fake_proc(
        &p,
        7,
        &[
            ("cgroup", b"0::/\n"),
            ("status", b"Cpus_allowed_list:\t0-15\n"),
        ],
    );
    let h = detect_at(&p, &s, Subject::Server(7)).unwrap();
    assert_eq!((h.cpus, h.cpus_source.as_str()), (16, "host (online CPUs)"));
    assert_eq!(h.memory_kb, 67_108_864);
    assert_eq!(h.memory_source, "host (/proc/meminfo)");

    // Affinity binds (e.g. docker --cpuset-cpus=2-5).
    fake_proc(
        &p,
        8,
        &[
            ("cgroup", b"0::/\n"),
            ("status", b"Cpus_allowed_list:\t2-5\n"),
        ],
    );
    let h = detect_at(&p, &s, Subject::Server(8)).unwrap();
    assert_eq!(
        (h.cpus, h.cpus_source.as_str()),
        (4, "server process affinity (Cpus_allowed_list)")
    );

    // The server's cgroup quota and memory limit bind, not this process's.
    let cg = s.join("fs/cgroup/docker/abc");
    std::fs::create_dir_all(&cg).unwrap();
    std::fs::write(cg.join("cpu.max"), "150000 100000\n").unwrap();
    std::fs::write(cg.join("memory.max"), "4294967296\n").unwrap();
    fake_proc(
        &p,
        9,
        &[
            ("cgroup", b"0::/docker/abc\n"),
            ("status", b"Cpus_allowed_list:\t2-5\n"),
        ],
    );
    let h = detect_at(&p, &s, Subject::Server(9)).unwrap();
    assert_eq!(h.cpus, 2);
    assert!(
        h.cpus_source.starts_with("cgroup CPU quota (") && h.cpus_source.ends_with("cpu.max)"),
        "{}",
        h.cpus_source
    );
    assert_eq!(h.memory_kb, 4 * 1024 * 1024);
    assert!(h.memory_source.starts_with("cgroup limit ("));

    // No cgroup file for the server: no facts rather than this process's.
    fake_proc(&p, 10, &[("status", b"Cpus_allowed_list:\t0\n")]);
    assert_eq!(detect_at(&p, &s, Subject::Server(10)), None);
}

#[test]
fn self_facts_and_odd_files() {
    // Unreadable online list: falls back to this process's parallelism; an odd
    // affinity line is ignored, never a panic.
    let (_t, p, s) = fake_host(None);
    std::fs::create_dir_all(p.join("self")).unwrap();
    std::fs::write(p.join("self/status"), "Cpus_allowed_list:\t9-1\n").unwrap();
    let h = detect_at(&p, &s, Subject::This).unwrap();
    assert!(h.cpus >= 1);
    assert!(
        h.cpus_source.contains("available_parallelism"),
        "{}",
        h.cpus_source
    );

    // A garbage online list is ignored too.
    let (_t, p, s) = fake_host(Some("0-99999999999\n"));
    let h = detect_at(&p, &s, Subject::This).unwrap();
    assert!(h.cpus >= 1);
    assert!(h.cpus_source.contains("available_parallelism"));

    let (_t, p, s) = fake_host(Some("0-3\n"));
    std::fs::create_dir_all(p.join("self")).unwrap();
    std::fs::write(p.join("self/status"), "Cpus_allowed_list:\t0\n").unwrap();
    let h = detect_at(&p, &s, Subject::This).unwrap();
    assert_eq!(
        (h.cpus, h.cpus_source.as_str()),
        (1, "this process's affinity (Cpus_allowed_list)")
    );

    // No meminfo: no facts.
    let t = tempfile::tempdir().unwrap();
    assert_eq!(detect_at(t.path(), t.path(), Subject::This), None);
}

#[test]
fn detect_on_this_machine_gives_sane_figures() {
    let h = HostFacts::detect_self().expect("read /proc/meminfo");
    assert!(h.memory_kb > 100 * 1024);
    assert!(h.cpus >= 1);
    // This test process is a postgres process by no name, so not a server.
    assert_eq!(HostFacts::detect_for_server(std::process::id()), None);
}
