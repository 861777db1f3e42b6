//! Unit tests of `recommend.rs`.

use super::*;

const GIB: u64 = GB;

fn inp(
    workload: Workload,
    memory_kb: u64,
    cpus: Option<u32>,
    connections: Option<u32>,
    storage: Storage,
    pg_version: u32,
) -> Inputs {
    Inputs {
        memory_kb,
        cpus,
        connections,
        storage,
        workload,
        pg_version,
        db_size: DbSize::MidRam,
    }
}

/// Asserts each expected (name, value) is recommended, in this relative order, and
/// each name in `absent` is not.
fn check(inputs: Inputs, expected: &[(&str, &str)], absent: &[&str]) -> Recommendation {
    let rec = recommend(&inputs).unwrap_or_else(|e| panic!("{inputs:?}: {e}"));
    let mut last = None;
    for (name, value) in expected {
        let pos = rec.settings.iter().position(|s| s.name == *name);
        let Some(pos) = pos else {
            panic!("{name} missing for {inputs:?}\n{}", rec.to_conf());
        };
        assert_eq!(rec.settings[pos].value, *value, "{name} for {inputs:?}");
        if let Some(prev) = last {
            assert!(pos > prev, "{name} out of order for {inputs:?}");
        }
        last = Some(pos);
    }
    for name in absent {
        assert!(
            rec.get(name).is_none(),
            "{name} should be absent for {inputs:?}"
        );
    }
    for s in &rec.settings {
        assert!(
            !s.reason.is_empty() && !s.reason.contains('\n'),
            "{}",
            s.name
        );
        let beyond = s.reason.starts_with("(beyond PGTune)");
        assert_eq!(beyond, s.origin == Origin::Pgwarden, "{}", s.name);
    }
    rec
}

/// As [`check`], and the PGTune-origin settings are exactly `expected`, line for line.
fn check_full(inputs: Inputs, expected: &[(&str, &str)]) -> Recommendation {
    let rec = check(inputs, expected, &[]);
    let got: Vec<(&str, &str)> = rec
        .settings
        .iter()
        .filter(|s| s.origin == Origin::Pgtune)
        .map(|s| (s.name.as_str(), s.value.as_str()))
        .collect();
    assert_eq!(got, expected);
    rec
}

const PARALLEL: [&str; 4] = [
    "max_worker_processes",
    "max_parallel_workers_per_gather",
    "max_parallel_workers",
    "max_parallel_maintenance_workers",
];

// (a) web, 8GB, 4 CPUs, 200 connections, SSD, PG 15. R = 8,388,608; SB = R/4 =
// 2,097,152 (2GB); ECS = 3R/4 = 6,291,456 (6GB); MWM = R/16 = 524,288 (512MB);
// wal_buffers 3% of SB = 62,914 > 16MB cap; work_mem = 6,291,456 / ((200+4)*3 = 612)
// = 10,280.16 -> 10280kB; SB = 2GB exactly -> huge_pages try; g = ceil(4/2) = 2.
#[test]
fn reference_a_web_8gb() {
    let rec = check_full(
        inp(Workload::Web, 8 * GIB, Some(4), Some(200), Storage::Ssd, 15),
        &[
            ("max_connections", "200"),
            ("shared_buffers", "2GB"),
            ("effective_cache_size", "6GB"),
            ("maintenance_work_mem", "512MB"),
            ("checkpoint_completion_target", "0.9"),
            ("wal_buffers", "16MB"),
            ("default_statistics_target", "100"),
            ("random_page_cost", "1.1"),
            ("effective_io_concurrency", "200"),
            ("work_mem", "10280kB"),
            ("huge_pages", "try"),
            ("jit", "off"),
            ("wal_compression", "lz4"),
            ("min_wal_size", "1GB"),
            ("max_wal_size", "4GB"),
            ("max_worker_processes", "4"),
            ("max_parallel_workers_per_gather", "2"),
            ("max_parallel_workers", "4"),
            ("max_parallel_maintenance_workers", "2"),
        ],
    );
    // pgwarden's own, after PGTune's.
    let own: Vec<(&str, &str)> = rec
        .settings
        .iter()
        .skip_while(|s| s.origin == Origin::Pgtune)
        .map(|s| (s.name.as_str(), s.value.as_str()))
        .collect();
    assert_eq!(
        own,
        [
            ("autovacuum_naptime", "30s"),
            ("autovacuum_vacuum_scale_factor", "0.05"),
            ("autovacuum_analyze_scale_factor", "0.02"),
            ("autovacuum_vacuum_cost_delay", "2ms"),
            ("autovacuum_vacuum_cost_limit", "2000"),
        ]
    );
    // 2,097,152 x 1.03 / 2048 = 1054.7 -> 1055 pages.
    let huge = rec
        .get("huge_pages")
        .map(|s| s.reason.as_str())
        .unwrap_or("");
    assert!(
        huge.contains("vm.nr_hugepages to about 1055 2MB pages"),
        "{huge}"
    );
    assert_eq!(
        rec.warnings,
        ["wal_compression = lz4 requires PostgreSQL built with --with-lz4 (see pg_config --configure)"]
    );
}

// (b) oltp, 32GB, 8 CPUs, 300 connections, SSD, PG 15. R = 33,554,432; SB = 8GB;
// ECS = 24GB; MWM = R/16 = 2,097,152 (2GB) -> autovacuum_work_mem 2GB;
// work_mem = 25,165,824 / (308*3 = 924) = 27,235.74 -> 27235kB; g = 4 (cap 4).
#[test]
fn reference_b_oltp_32gb() {
    let rec = check_full(
        inp(
            Workload::Oltp,
            32 * GIB,
            Some(8),
            Some(300),
            Storage::Ssd,
            15,
        ),
        &[
            ("max_connections", "300"),
            ("shared_buffers", "8GB"),
            ("effective_cache_size", "24GB"),
            ("maintenance_work_mem", "2GB"),
            ("checkpoint_completion_target", "0.9"),
            ("wal_buffers", "16MB"),
            ("default_statistics_target", "100"),
            ("random_page_cost", "1.1"),
            ("effective_io_concurrency", "200"),
            ("work_mem", "27235kB"),
            ("huge_pages", "try"),
            ("jit", "off"),
            ("wal_compression", "lz4"),
            ("autovacuum_work_mem", "2GB"),
            ("min_wal_size", "2GB"),
            ("max_wal_size", "8GB"),
            ("max_worker_processes", "8"),
            ("max_parallel_workers_per_gather", "4"),
            ("max_parallel_workers", "8"),
            ("max_parallel_maintenance_workers", "4"),
        ],
    );
    // 300 > 200: pooler advice in the reason and a warning, listed last.
    let mc = rec
        .get("max_connections")
        .map(|s| s.reason.clone())
        .unwrap_or_default();
    assert!(mc.contains("pgwarden pool or PgBouncer"), "{mc}");
    assert_eq!(rec.warnings.len(), 2);
    assert!(rec.warnings[1].starts_with("max_connections = 300 is above 200"));
    // 8GB x 1.03 / 2MB = 4218.9 -> 4219.
    assert!(rec
        .get("huge_pages")
        .is_some_and(|s| s.reason.contains("about 4219 2MB pages")));
}

// (c) dw, 64GB, 16 CPUs, 40 connections, HDD, PG 15. R = 67,108,864; SB = 16GB;
// ECS = 48GB; MWM = R/8 = 8,388,608 = the 8GB cap exactly; work_mem = 50,331,648 /
// (56*3 = 168) = 299,593.14, /2 = 149,796.57 -> 149796kB; g = 8 (dw uncapped);
// maintenance workers min(4, 8) = 4; autovacuum_max_workers 4 (16 CPUs); no jit (dw).
#[test]
fn reference_c_dw_64gb() {
    let rec = check_full(
        inp(Workload::Dw, 64 * GIB, Some(16), Some(40), Storage::Hdd, 15),
        &[
            ("max_connections", "40"),
            ("shared_buffers", "16GB"),
            ("effective_cache_size", "48GB"),
            ("maintenance_work_mem", "8GB"),
            ("checkpoint_completion_target", "0.9"),
            ("wal_buffers", "16MB"),
            ("default_statistics_target", "500"),
            ("random_page_cost", "4"),
            ("effective_io_concurrency", "2"),
            ("work_mem", "149796kB"),
            ("huge_pages", "try"),
            ("wal_compression", "lz4"),
            ("autovacuum_max_workers", "4"),
            ("autovacuum_work_mem", "2GB"),
            ("min_wal_size", "4GB"),
            ("max_wal_size", "16GB"),
            ("max_worker_processes", "16"),
            ("max_parallel_workers_per_gather", "8"),
            ("max_parallel_workers", "16"),
            ("max_parallel_maintenance_workers", "4"),
        ],
    );
    check(
        inp(Workload::Dw, 64 * GIB, Some(16), Some(40), Storage::Hdd, 15),
        &[
            ("autovacuum_vacuum_scale_factor", "0.1"),
            ("autovacuum_analyze_scale_factor", "0.05"),
            ("autovacuum_vacuum_cost_delay", "2ms"),
            ("autovacuum_vacuum_cost_limit", "400"),
        ],
        &["jit", "autovacuum_naptime", "io_method", "wal_level"],
    );
    assert!(rec
        .get("maintenance_work_mem")
        .is_some_and(|s| s.reason.contains("capped at 8GB")));
    // HDD: no dw cost warning.
    assert_eq!(rec.warnings.len(), 1);
}

// (d) mixed, 2GB, 1 CPU, 100 connections, SAN, PG 15. R = 2,097,152; SB = 512MB;
// ECS = 1,572,864 = 1536MB; MWM = 131,072 (128MB); wal_buffers 3% of 524,288 = 15,728,
// strictly between 14MB and 16MB -> 16MB; no parallel (1 < 4) so W = 8; work_mem =
// 1,572,864 / (108*3 = 324) = 4854.5, /2 = 2427 -> below 4MB -> 4MB.
#[test]
fn reference_d_mixed_2gb() {
    let rec = check_full(
        inp(
            Workload::Mixed,
            2 * GIB,
            Some(1),
            Some(100),
            Storage::San,
            15,
        ),
        &[
            ("max_connections", "100"),
            ("shared_buffers", "512MB"),
            ("effective_cache_size", "1536MB"),
            ("maintenance_work_mem", "128MB"),
            ("checkpoint_completion_target", "0.9"),
            ("wal_buffers", "16MB"),
            ("default_statistics_target", "100"),
            ("random_page_cost", "1.1"),
            ("effective_io_concurrency", "300"),
            ("work_mem", "4MB"),
            ("huge_pages", "off"),
            ("jit", "off"),
            ("wal_compression", "lz4"),
            ("min_wal_size", "1GB"),
            ("max_wal_size", "4GB"),
        ],
    );
    check(
        inp(
            Workload::Mixed,
            2 * GIB,
            Some(1),
            Some(100),
            Storage::San,
            15,
        ),
        &[("autovacuum_vacuum_cost_limit", "1000")],
        &PARALLEL,
    );
    assert!(rec
        .get("work_mem")
        .is_some_and(|s| s.reason.contains("4MB floor")));
    assert!(rec
        .get("wal_buffers")
        .is_some_and(|s| s.reason.contains("rounded up")));
}

// Desktop, 32GB, CPUs unknown, default connections (20), HDD, PG 16.
// R = 33,554,432; SB = R/16 = 2,097,152 = 2GB exactly -> huge_pages try; ECS = R/4 = 8GB;
// MWM = R/16 = 2GB -> autovacuum_work_mem 2GB; wal_buffers 62,914 -> 16MB; W = 8;
// work_mem = 31,457,280 / ((20+8)*3 = 84) / 6 = 31,457,280 / 504 = 62,415.2 -> 62415kB;
// no jit (desktop); wal_level minimal and max_wal_senders 0 last.
#[test]
fn desktop_32gb_unknown_cpus() {
    check_full(
        inp(Workload::Desktop, 32 * GIB, None, None, Storage::Hdd, 16),
        &[
            ("max_connections", "20"),
            ("shared_buffers", "2GB"),
            ("effective_cache_size", "8GB"),
            ("maintenance_work_mem", "2GB"),
            ("checkpoint_completion_target", "0.9"),
            ("wal_buffers", "16MB"),
            ("default_statistics_target", "100"),
            ("random_page_cost", "4"),
            ("effective_io_concurrency", "2"),
            ("work_mem", "62415kB"),
            ("huge_pages", "try"),
            ("wal_compression", "lz4"),
            ("autovacuum_work_mem", "2GB"),
            ("min_wal_size", "100MB"),
            ("max_wal_size", "2GB"),
            ("wal_level", "minimal"),
            ("max_wal_senders", "0"),
        ],
    );
    // Desktop keeps PostgreSQL's autovacuum defaults.
    check(
        inp(Workload::Desktop, 32 * GIB, None, None, Storage::Hdd, 16),
        &[],
        &[
            "autovacuum_naptime",
            "autovacuum_vacuum_scale_factor",
            "autovacuum_analyze_scale_factor",
            "autovacuum_vacuum_cost_delay",
            "autovacuum_vacuum_cost_limit",
            "jit",
        ],
    );
}

// dw, 128GB, 32 CPUs, default connections (40), NVMe, PG 17. R = 134,217,728;
// SB = 32GB; ECS = 96GB; MWM = R/8 = 16GB -> above the cap -> 8GB; dst 500;
// random_page_cost 4 (dw, mid_ram); eio 1000; work_mem = 100,663,296 / ((40+32)*3 = 216)
// / 2 = 100,663,296 / 432 = 233,016.9 -> 233016kB; autovacuum_max_workers 5 (32 CPUs);
// g = ceil(32/2) = 16, uncapped for dw; maintenance workers 4; no io_method (PG 17).
#[test]
fn dw_128gb_32_cpus_nvme() {
    let rec = check_full(
        inp(Workload::Dw, 128 * GIB, Some(32), None, Storage::Nvme, 17),
        &[
            ("max_connections", "40"),
            ("shared_buffers", "32GB"),
            ("effective_cache_size", "96GB"),
            ("maintenance_work_mem", "8GB"),
            ("checkpoint_completion_target", "0.9"),
            ("wal_buffers", "16MB"),
            ("default_statistics_target", "500"),
            ("random_page_cost", "4"),
            ("effective_io_concurrency", "1000"),
            ("work_mem", "233016kB"),
            ("huge_pages", "try"),
            ("wal_compression", "lz4"),
            ("autovacuum_max_workers", "5"),
            ("autovacuum_work_mem", "2GB"),
            ("min_wal_size", "4GB"),
            ("max_wal_size", "16GB"),
            ("max_worker_processes", "32"),
            ("max_parallel_workers_per_gather", "16"),
            ("max_parallel_workers", "32"),
            ("max_parallel_maintenance_workers", "4"),
        ],
    );
    // 128GB > 100GB, lz4, and the dw-on-NVMe cost note.
    assert_eq!(rec.warnings.len(), 3, "{:?}", rec.warnings);
    assert!(rec.warnings[0].starts_with("total memory above 100GB"));
    assert!(rec.warnings[2].contains("data warehouse on NVMe drives"));
    assert!(rec
        .get("autovacuum_work_mem")
        .is_none_or(|s| !s.reason.contains("1GB")));
}

// huge_pages just below the line: web, 8191MB. R = 8,387,584; SB = 2,096,896 (not a
// whole MB: 2047.75MB) -> off; ECS = 6,290,688 (6143.25MB); MWM = 524,224 (511.94MB);
// work_mem = 6,290,688 / 612 = 10,278.9 -> 10278kB.
#[test]
fn huge_pages_just_below_2gb_shared_buffers() {
    check(
        inp(Workload::Web, 8191 * MB, Some(4), None, Storage::Ssd, 16),
        &[
            ("shared_buffers", "2096896kB"),
            ("effective_cache_size", "6290688kB"),
            ("maintenance_work_mem", "524224kB"),
            ("wal_buffers", "16MB"),
            ("work_mem", "10278kB"),
            ("huge_pages", "off"),
        ],
        &["autovacuum_work_mem"],
    );
    // Desktop, 31GB: SB = 32,505,856 / 16 = 2,031,616 (1984MB) -> off; MWM 1984MB < 2GB.
    check(
        inp(Workload::Desktop, 31 * GIB, None, None, Storage::Ssd, 16),
        &[("shared_buffers", "1984MB"), ("huge_pages", "off")],
        &["autovacuum_work_mem"],
    );
}

// maintenance_work_mem: web 128GB -> R/16 = 8,388,608 = 8GB exactly (the cap);
// dw 63GB -> 66,060,288 / 8 = 8,257,536 = 8064MB (below). Web 128GB, 16 CPUs:
// work_mem = 100,663,296 / ((200+16)*3 = 648) = 155,344.6 -> 155344kB; g capped at 4;
// autovacuum_max_workers 4 (16 CPUs).
#[test]
fn maintenance_work_mem_cap() {
    check(
        inp(Workload::Web, 128 * GIB, Some(16), None, Storage::Ssd, 16),
        &[
            ("maintenance_work_mem", "8GB"),
            ("work_mem", "155344kB"),
            ("autovacuum_max_workers", "4"),
            ("autovacuum_work_mem", "2GB"),
            ("max_parallel_workers_per_gather", "4"),
            ("max_parallel_maintenance_workers", "4"),
        ],
        &[],
    );
    check(
        inp(Workload::Dw, 63 * GIB, Some(8), None, Storage::Hdd, 16),
        &[
            ("maintenance_work_mem", "8064MB"),
            ("autovacuum_work_mem", "2GB"),
        ],
        &["autovacuum_max_workers"],
    );
    // 256GB web: R/16 = 16GB, capped.
    check(
        inp(Workload::Web, 256 * GIB, Some(64), None, Storage::Ssd, 16),
        &[
            ("maintenance_work_mem", "8GB"),
            ("autovacuum_max_workers", "5"),
        ],
        &[],
    );
}

// wal_buffers around the 14MB snap point (web: SB = R/4):
// R = 1,911,468 -> SB = 477,867 -> 3% = 1,433,601/100 = 14,336 = 14MB exactly, not
// strictly above 14MB -> stays 14MB. R = 1,911,600 -> SB = 477,900 -> 14,337 -> snaps
// to 16MB. Desktop 4GB -> SB = 262,144 -> 7,864 -> 7864kB.
#[test]
fn wal_buffers_snap() {
    check(
        inp(Workload::Web, 1_911_468, Some(2), None, Storage::Ssd, 16),
        &[("wal_buffers", "14MB")],
        &[],
    );
    check(
        inp(Workload::Web, 1_911_600, Some(2), None, Storage::Ssd, 16),
        &[("wal_buffers", "16MB")],
        &[],
    );
    check(
        inp(Workload::Desktop, 4 * GIB, None, None, Storage::Ssd, 16),
        &[("shared_buffers", "256MB"), ("wal_buffers", "7864kB")],
        &[],
    );
}

// No parallel settings below 4 CPUs or with CPUs unknown; W = 8 then.
// web 16GB, 3 CPUs: 12,582,912 / ((200+8)*3 = 624) = 20,164.9 -> 20164kB.
// oltp 16GB, unknown: 12,582,912 / ((300+8)*3 = 924) = 13,617.9 -> 13617kB.
// web 16GB, 4 CPUs (parallel, W = 4): 12,582,912 / (204*3 = 612) = 20,560.3 -> 20560kB.
#[test]
fn parallel_needs_four_known_cpus() {
    check(
        inp(Workload::Web, 16 * GIB, Some(3), None, Storage::Ssd, 16),
        &[("work_mem", "20164kB")],
        &PARALLEL,
    );
    check(
        inp(Workload::Oltp, 16 * GIB, None, None, Storage::Ssd, 16),
        &[("work_mem", "13617kB")],
        &[
            "max_worker_processes",
            "max_parallel_workers_per_gather",
            "max_parallel_workers",
            "max_parallel_maintenance_workers",
            "autovacuum_max_workers",
        ],
    );
    check(
        inp(Workload::Web, 16 * GIB, Some(4), None, Storage::Ssd, 16),
        &[("work_mem", "20560kB"), ("max_worker_processes", "4")],
        &[],
    );
}

// PG 18: io_method = io_uring (Linux), never io_workers (PGTune skips it with io_uring).
#[test]
fn pg18_io_method() {
    let rec = check(
        inp(Workload::Web, 16 * GIB, Some(64), None, Storage::Nvme, 18),
        &[
            ("wal_compression", "lz4"),
            ("autovacuum_max_workers", "5"),
            ("io_method", "io_uring"),
            ("min_wal_size", "1GB"),
            ("autovacuum_vacuum_cost_limit", "3000"),
        ],
        &["io_workers"],
    );
    assert!(rec
        .warnings
        .iter()
        .any(|w| w.starts_with("io_method = io_uring requires")));
    check(
        inp(Workload::Web, 16 * GIB, Some(64), None, Storage::Nvme, 17),
        &[],
        &["io_method", "io_workers"],
    );
}

// wal_compression = on for PG 10-14; jit from PG 12; maintenance workers from PG 11.
#[test]
fn older_versions() {
    for pg in [12, 14] {
        let rec = check(
            inp(Workload::Web, 8 * GIB, Some(4), None, Storage::Ssd, pg),
            &[
                ("jit", "off"),
                ("wal_compression", "on"),
                ("max_parallel_maintenance_workers", "2"),
            ],
            &["io_method"],
        );
        assert!(rec.warnings.is_empty(), "{pg}: {:?}", rec.warnings);
    }
    check(
        inp(Workload::Web, 8 * GIB, Some(4), None, Storage::Ssd, 11),
        &[
            ("wal_compression", "on"),
            ("max_parallel_maintenance_workers", "2"),
        ],
        &["jit"],
    );
    let rec = check(
        inp(
            Workload::Oltp,
            8 * GIB,
            Some(4),
            Some(100),
            Storage::Ssd,
            10,
        ),
        &[
            ("wal_compression", "on"),
            ("max_parallel_workers", "4"),
            ("autovacuum_vacuum_cost_delay", "2ms"),
        ],
        &["jit", "max_parallel_maintenance_workers"],
    );
    assert!(rec
        .get("autovacuum_vacuum_cost_delay")
        .is_some_and(|s| s.reason.contains("pre-PG 12 default 20ms")));
}

// autovacuum_max_workers: 15 CPUs none, 16 -> 4, 31 -> 4, 32 -> 5.
#[test]
fn autovacuum_max_workers_steps() {
    let base = |c| inp(Workload::Oltp, 64 * GIB, Some(c), None, Storage::Ssd, 17);
    check(base(15), &[], &["autovacuum_max_workers"]);
    check(base(16), &[("autovacuum_max_workers", "4")], &[]);
    check(base(31), &[("autovacuum_max_workers", "4")], &[]);
    check(base(32), &[("autovacuum_max_workers", "5")], &[]);
}

// dbSize (era C): web 8GB 4 CPUs -> 10280kB base. less_ram: floor(10280 x 1.3) =
// 13364kB and random_page_cost 1.1 even on HDD; greater_ram: floor(10280 x 0.9) = 9252kB.
// dw on SSD less_ram: random_page_cost 1.1 and no cost warning.
#[test]
fn db_size_factors() {
    let with = |db_size, storage, workload| Inputs {
        db_size,
        ..inp(workload, 8 * GIB, Some(4), Some(200), storage, 16)
    };
    check(
        with(DbSize::LessRam, Storage::Hdd, Workload::Web),
        &[("random_page_cost", "1.1"), ("work_mem", "13364kB")],
        &[],
    );
    check(
        with(DbSize::GreaterRam, Storage::Ssd, Workload::Web),
        &[("random_page_cost", "1.1"), ("work_mem", "9252kB")],
        &[],
    );
    let rec = check(
        with(DbSize::LessRam, Storage::Ssd, Workload::Dw),
        &[("random_page_cost", "1.1")],
        &[],
    );
    assert!(!rec.warnings.iter().any(|w| w.contains("data warehouse")));
    let rec = check(
        with(DbSize::MidRam, Storage::San, Workload::Dw),
        &[("random_page_cost", "4")],
        &[],
    );
    assert!(rec
        .warnings
        .iter()
        .any(|w| w.contains("data warehouse on SAN storage")));
}

#[test]
fn pooler_threshold_is_200() {
    let at = recommend(&inp(
        Workload::Web,
        8 * GIB,
        Some(4),
        Some(200),
        Storage::Ssd,
        16,
    ))
    .unwrap();
    assert!(!at.warnings.iter().any(|w| w.contains("pooler")));
    let over = recommend(&inp(
        Workload::Web,
        8 * GIB,
        Some(4),
        Some(201),
        Storage::Ssd,
        16,
    ))
    .unwrap();
    assert!(over.warnings.iter().any(|w| w.contains("pooler")));
    assert!(over
        .get("max_connections")
        .is_some_and(|s| s.reason.contains("pooler")));
}

#[test]
fn recommend_validates_first() {
    let err = recommend(&inp(Workload::Web, 256 * MB, None, None, Storage::Ssd, 16)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--memory must be at least 512MB (got 256MB)"
    );
}

#[test]
fn to_conf_lines() {
    let rec = recommend(&inp(
        Workload::Web,
        8 * GIB,
        Some(4),
        Some(200),
        Storage::Ssd,
        15,
    ))
    .unwrap();
    let conf = rec.to_conf();
    for want in [
        "# WARNING: wal_compression = lz4 requires PostgreSQL built with --with-lz4",
        "# DB Version: 15\n# OS Type: linux\n# DB Type: web\n# Total Memory (RAM): 8GB\n# CPUs num: 4\n\
         # Connections num: 200\n# Data Storage: ssd\n# DB Size: mid_ram\n\nmax_connections = 200  # ",
        "\nshared_buffers = 2GB  # PostgreSQL's own page cache",
        "\nwork_mem = 10280kB  # memory per sort",
        "\ncheckpoint_completion_target = 0.9  # ",
        "\nautovacuum_vacuum_cost_delay = 2ms  # (beyond PGTune)",
    ] {
        assert!(conf.contains(want), "missing {want:?} in\n{conf}");
    }
    assert_eq!(
        conf.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count(),
        rec.settings.len()
    );
    let defaults = recommend(&inp(Workload::Oltp, 8 * GIB, None, None, Storage::Ssd, 15)).unwrap();
    let conf = defaults.to_conf();
    assert!(
        conf.contains("# CPUs num: unknown\n# Connections num: 300 (default for oltp)\n"),
        "{conf}"
    );
}

#[test]
fn to_sql_lines_and_quoting() {
    let mut rec = recommend(&inp(
        Workload::Desktop,
        8 * GIB,
        None,
        None,
        Storage::Ssd,
        15,
    ))
    .unwrap();
    let sql = rec.to_sql();
    for want in [
        "-- WARNING: wal_compression",
        "-- DB Type: desktop\n",
        "\nALTER SYSTEM SET \"shared_buffers\" = '512MB'; -- ",
        "\nALTER SYSTEM SET \"max_wal_senders\" = '0'; -- ",
        "\nALTER SYSTEM SET \"wal_level\" = 'minimal'; -- ",
        "pg_reload_conf()",
    ] {
        assert!(sql.contains(want), "missing {want:?} in\n{sql}");
    }
    rec.settings.push(Setting {
        name: "My.search_path".into(),
        value: "it's".into(),
        reason: "two\nlines".into(),
        origin: Origin::Pgwarden,
    });
    let sql = rec.to_sql();
    assert!(
        sql.contains("ALTER SYSTEM SET \"My\".\"search_path\" = 'it''s'; -- two lines\n"),
        "{sql}"
    );
    let conf = rec.to_conf();
    assert!(
        conf.contains("My.search_path = 'it''s'  # two lines\n"),
        "{conf}"
    );
}

#[test]
fn conf_values_quoted_only_when_needed() {
    let cases = [
        ("2GB", true),
        ("10280kB", true),
        ("0.9", true),
        ("-1", true),
        ("lz4", true),
        ("io_uring", true),
        ("it's", false),
        ("a b", false),
        ("", false),
        ("1.2.3", false),
        ("$user, public", false),
    ];
    for (v, bare) in cases {
        assert_eq!(conf_bare(v), bare, "{v}");
    }
}

#[test]
fn serializes_plain_data() {
    let rec = recommend(&inp(
        Workload::Mixed,
        2 * GIB,
        Some(1),
        None,
        Storage::San,
        15,
    ))
    .unwrap();
    let json = serde_json::to_value(&rec).unwrap();
    assert_eq!(json["inputs"]["workload"], "mixed");
    assert_eq!(json["settings"][0]["name"], "max_connections");
    assert_eq!(json["settings"][0]["origin"], "pgtune");
    let last = rec.settings.len() - 1;
    assert_eq!(json["settings"][last]["origin"], "pgwarden");
}
