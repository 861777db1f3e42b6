//! postgresql.conf recommendations: PGTune's current (era C) formulas, then pgwarden's own.
//!
//! Every setting PGTune covers is computed exactly as PGTune does (integer kB arithmetic,
//! the same floors and caps, the same unit formatting), for Linux: pgwarden only tunes
//! Linux servers, so PGTune's Windows and macOS branches (the 2GB maintenance_work_mem
//! limit, no effective_io_concurrency, io_method = worker, huge_pages = off on macOS) are
//! left out on purpose. Settings PGTune does not cover carry [`Origin::Pgwarden`] and say
//! "(beyond PGTune)" in their reason.

use serde::Serialize;

use crate::inputs::{DbSize, InputError, Inputs, Storage, Workload};
use pgw_common::sql;

use crate::units::format_kb;

const MB: u64 = 1024;
const GB: u64 = 1024 * 1024;

/// Above this many connections pgwarden advises a pooler.
///
/// An absolute number rather than a per-CPU ratio: max_connections bounds sessions, most of
/// them idle, while the per-core rule of thumb applies to *active* sessions, which is what
/// a pooler's pool size controls. 200 is PGTune's web default, the largest of its ordinary
/// defaults; beyond it per-backend memory (PGTune divides work_mem by connections) and
/// snapshot/lock costs make a pooler the better answer.
pub const POOLER_THRESHOLD: u32 = 200;

/// Whether a value follows PGTune's formula or is pgwarden's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The value is exactly what PGTune (era C) gives for the same inputs.
    Pgtune,
    /// pgwarden's own setting, beyond PGTune.
    Pgwarden,
    /// Given by the user (`--set name=value`), over the recommendation.
    User,
}

/// One recommended setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    /// The GUC name, as in `pg_settings.name`.
    pub name: String,
    /// The value as postgresql.conf accepts it: `2GB`, `10280kB`, `0.9`, `lz4`, `try`.
    pub value: String,
    /// One line: what the setting does and why this value.
    pub reason: String,
    /// Where the value comes from.
    pub origin: Origin,
}

/// The recommended settings for one set of inputs, in PGTune's order, pgwarden's own last.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// The inputs the settings were computed from.
    pub inputs: Inputs,
    /// The settings, in output order.
    pub settings: Vec<Setting>,
    /// One-line notes for the operator (build requirements, limits of the formulas).
    pub warnings: Vec<String>,
}

/// Collects settings in order.
struct Out(Vec<Setting>);

impl Out {
    fn push(
        &mut self,
        origin: Origin,
        name: &str,
        value: impl ToString,
        reason: impl Into<String>,
    ) {
        self.0.push(Setting {
            name: name.to_string(),
            value: value.to_string(),
            reason: reason.into(),
            origin,
        });
    }
    fn pgtune(&mut self, name: &str, value: impl ToString, reason: impl Into<String>) {
        self.push(Origin::Pgtune, name, value, reason);
    }
    fn own(&mut self, name: &str, value: impl ToString, reason: impl Into<String>) {
        self.push(Origin::Pgwarden, name, value, reason);
    }
}

/// PGTune's parallel settings, present only when the CPU count is known and at least 4.
struct Parallel {
    cpus: u64,
    per_gather: u64,
    maintenance: u64,
}

fn parallel(inputs: &Inputs) -> Option<Parallel> {
    let cpus = u64::from(inputs.cpus?);
    if cpus < 4 {
        return None;
    }
    let half = cpus.div_ceil(2);
    let per_gather = if inputs.workload == Workload::Dw {
        half
    } else {
        half.min(4)
    };
    Some(Parallel {
        cpus,
        per_gather,
        maintenance: half.min(4),
    })
}

/// Computes the recommendation; validates the inputs first.
pub fn recommend(inputs: &Inputs) -> Result<Recommendation, InputError> {
    inputs.validate()?;
    let r = inputs.memory_kb;
    let workload = inputs.workload;
    let desktop = workload == Workload::Desktop;
    let dw = workload == Workload::Dw;
    let pg = inputs.pg_version;
    let conns = inputs.effective_connections();
    let par = parallel(inputs);
    let mut out = Out(Vec::new());
    let mut warnings = Vec::new();

    // max_connections
    let mut reason = match inputs.connections {
        Some(_) => "connection slots, as given".to_string(),
        None => format!("connection slots: PGTune's default for {workload}"),
    };
    let mut pooler_warning = None;
    if conns > POOLER_THRESHOLD {
        reason.push_str(&format!(
            "; above {POOLER_THRESHOLD}, put a pooler (pgwarden pool or PgBouncer) in front and lower this"
        ));
        pooler_warning = Some(format!(
            "max_connections = {conns} is above {POOLER_THRESHOLD}: put a connection pooler \
             (pgwarden pool or PgBouncer) in front, size its pool at a few connections per CPU core, \
             and lower max_connections"
        ));
    }
    out.pgtune("max_connections", conns, reason);

    // shared_buffers: 1/4 of RAM, 1/16 for desktop.
    let sb = if desktop { r / 16 } else { r / 4 };
    out.pgtune(
        "shared_buffers",
        format_kb(sb),
        if desktop {
            "PostgreSQL's own page cache: 1/16 of RAM, as a desktop shares the machine with other programs"
        } else {
            "PostgreSQL's own page cache: 25% of RAM, leaving the rest to the OS cache and query memory"
        },
    );

    // effective_cache_size: 3/4 of RAM, 1/4 for desktop.
    let ecs = if desktop { r / 4 } else { r * 3 / 4 };
    out.pgtune(
        "effective_cache_size",
        format_kb(ecs),
        format!(
            "planner's estimate of memory caching data (shared_buffers + OS cache): {} of RAM; allocates nothing",
            if desktop { "25%" } else { "75%" }
        ),
    );

    // maintenance_work_mem: 1/16 of RAM, 1/8 for dw, capped at 8GB (Linux; PGTune's 2GB
    // Windows cap does not apply).
    let mwm_cap = 8 * GB;
    let mwm_raw = if dw { r / 8 } else { r / 16 };
    let mwm = mwm_raw.min(mwm_cap);
    out.pgtune(
        "maintenance_work_mem",
        format_kb(mwm),
        format!(
            "memory for each VACUUM, CREATE INDEX and ADD FOREIGN KEY: {} of RAM, {}",
            if dw { "1/8" } else { "1/16" },
            if mwm_raw >= mwm_cap {
                "capped at 8GB"
            } else {
                "at most 8GB"
            }
        ),
    );

    out.pgtune(
        "checkpoint_completion_target",
        "0.9",
        "spread checkpoint writes over 90% of the checkpoint interval to avoid I/O spikes (the PG 14+ default)",
    );

    // wal_buffers: 3% of shared_buffers, capped at 16MB, snapped up to 16MB when strictly
    // between 14MB and 16MB, at least 32kB.
    let mut wal_buffers = 3 * sb / 100;
    let mut wal_note = "3% of shared_buffers";
    if wal_buffers > 16 * MB {
        wal_buffers = 16 * MB;
        wal_note = "3% of shared_buffers, capped at 16MB (one WAL segment)";
    }
    if wal_buffers > 14 * MB && wal_buffers < 16 * MB {
        wal_buffers = 16 * MB;
        wal_note = "3% of shared_buffers is just under 16MB, so rounded up to one WAL segment";
    }
    if wal_buffers < 32 {
        wal_buffers = 32;
        wal_note = "3% of shared_buffers, raised to the 32kB minimum";
    }
    out.pgtune(
        "wal_buffers",
        format_kb(wal_buffers),
        format!("WAL held in shared memory before it is written: {wal_note}"),
    );

    out.pgtune(
        "default_statistics_target",
        if dw { 500 } else { 100 },
        if dw {
            "ANALYZE sample size per column: 500 gives better estimates for large analytical joins, at a slower ANALYZE"
        } else {
            "ANALYZE sample size per column: the default 100 suits short queries"
        },
    );

    // random_page_cost (era C): 1.1 when the database fits in RAM; else 4 for hdd and for
    // dw on any storage; else 1.1.
    let (rpc, rpc_reason) = if inputs.db_size == DbSize::LessRam {
        (
            "1.1",
            "1.1 because the database fits in RAM, so reads rarely reach storage".to_string(),
        )
    } else if inputs.storage == Storage::Hdd {
        (
            "4",
            "4 (the default) because spinning disks pay a seek for each random read".to_string(),
        )
    } else if dw {
        (
            "4",
            "4 (the default) for a data warehouse larger than RAM, so large reads stay sequential scans"
                .to_string(),
        )
    } else {
        (
            "1.1",
            format!(
                "1.1 because random reads on {} cost little more than sequential ones",
                inputs.storage
            ),
        )
    };
    out.pgtune(
        "random_page_cost",
        rpc,
        format!("planner's cost of a random page read relative to a sequential one: {rpc_reason}"),
    );

    // effective_io_concurrency: PGTune emits it on Linux only (macOS and Windows lack
    // posix_fadvise); pgwarden targets Linux, so it is always emitted.
    let eio = match inputs.storage {
        Storage::Hdd => 2,
        Storage::Ssd => 200,
        Storage::San => 300,
        Storage::Nvme => 1000,
    };
    out.pgtune(
        "effective_io_concurrency",
        eio,
        format!("concurrent prefetch reads (bitmap heap scans, PG 18 read streams): {eio} suits {} storage", inputs.storage),
    );

    // work_mem (era C): base = (R - SB) / ((max_connections + W) * 3), W = CPUs when the
    // parallel settings are emitted, else 8. Type factor, dbSize factor, 4MB floor, each
    // with PGTune's floor. Integer division gives the same floors as PGTune's doubles:
    // ⌊⌊x⌋/n⌋ = ⌊x/n⌋, and ×1.3 / ×0.9 of an integer n is ⌊13n/10⌋ / ⌊9n/10⌋.
    let w = par.as_ref().map_or(8, |p| p.cpus);
    let den = (u64::from(conns) + w) * 3;
    let divisor = match workload {
        Workload::Web | Workload::Oltp => 1,
        Workload::Dw | Workload::Mixed => 2,
        Workload::Desktop => 6,
    };
    let mut work_mem = (r - sb) / (den * divisor);
    let mut wm_reason = format!(
        "memory per sort or hash before it spills to disk: (RAM - shared_buffers) / ((max_connections + {w} worker processes) x 3)"
    );
    if divisor > 1 {
        wm_reason.push_str(&format!(" / {divisor}"));
    }
    match inputs.db_size {
        DbSize::LessRam => {
            work_mem = work_mem * 13 / 10;
            wm_reason.push_str(" x 1.3 (database fits in RAM)");
        }
        DbSize::GreaterRam => {
            work_mem = work_mem * 9 / 10;
            wm_reason.push_str(" x 0.9 (database over 3x RAM)");
        }
        DbSize::MidRam => {}
    }
    if work_mem < 4 * MB {
        work_mem = 4 * MB;
        wm_reason.push_str(", raised to the 4MB floor");
    }
    out.pgtune("work_mem", format_kb(work_mem), wm_reason);

    // huge_pages (era C): try when shared_buffers >= 2GB (macOS's `off` does not apply).
    if sb >= 2 * GB {
        // shared_buffers plus ~3% for the rest of shared memory, in 2MB pages, rounded up.
        let pages = (sb * 103).div_ceil(100 * 2 * MB);
        out.pgtune(
            "huge_pages",
            "try",
            format!(
                "use huge pages for shared memory when the host has them (shared_buffers >= 2GB); \
                 on the host set vm.nr_hugepages to about {pages} 2MB pages (shared_buffers + ~3%; \
                 on PG 15+ `postgres -C shared_memory_size_in_huge_pages` gives the exact count)"
            ),
        );
    } else {
        out.pgtune(
            "huge_pages",
            "off",
            "shared_buffers below 2GB gains little from huge pages, so use normal pages",
        );
    }

    // Era C group.
    if pg >= 12 && matches!(workload, Workload::Web | Workload::Oltp | Workload::Mixed) {
        out.pgtune(
            "jit",
            "off",
            "JIT compilation pays off only for long analytical queries; on short queries it adds latency",
        );
    }
    let lz4 = pg >= 15;
    out.pgtune(
        "wal_compression",
        if lz4 { "lz4" } else { "on" },
        format!(
            "compress full-page writes in WAL{}: trades some CPU for less WAL; helps most after checkpoints, especially with data checksums on",
            if lz4 { " with lz4" } else { " (pglz; lz4 needs PG 15)" }
        ),
    );
    if lz4 {
        warnings.push(
            "wal_compression = lz4 requires PostgreSQL built with --with-lz4 (see pg_config --configure)"
                .to_string(),
        );
    }
    if let Some(cpus) = inputs.cpus {
        let workers = if cpus >= 32 {
            Some(5)
        } else if cpus >= 16 {
            Some(4)
        } else {
            None
        };
        if let Some(n) = workers {
            out.pgtune(
                "autovacuum_max_workers",
                n,
                format!("autovacuum workers running at once: {n} instead of 3 on a {cpus}-CPU host, so big tables do not hold up the rest"),
            );
        }
    }
    if mwm >= 2 * GB {
        let old_cap = if pg <= 16 {
            "; PG 16 and older use at most 1GB of it for dead tuples"
        } else {
            ""
        };
        let reason = if mwm > 2 * GB {
            format!(
                "cap each autovacuum worker at 2GB instead of maintenance_work_mem ({}) per worker{old_cap}",
                format_kb(mwm)
            )
        } else {
            format!(
                "2GB per autovacuum worker, set apart from maintenance_work_mem so raising that later does not multiply across workers{old_cap}"
            )
        };
        out.pgtune("autovacuum_work_mem", format_kb(2 * GB), reason);
    }
    if pg >= 18 {
        out.pgtune(
            "io_method",
            "io_uring",
            "PG 18 asynchronous I/O through Linux io_uring; use worker if the build lacks liburing or a container blocks io_uring",
        );
        warnings.push(
            "io_method = io_uring requires PostgreSQL built with --with-liburing and io_uring allowed \
             by the kernel and container; otherwise set io_method = worker"
                .to_string(),
        );
        // io_workers: PGTune emits it only with io_method = worker, which it picks on
        // macOS and Windows only; on Linux it is never emitted.
    }

    // WAL sizes per workload.
    let (min_wal, max_wal) = match workload {
        Workload::Web | Workload::Mixed => (GB, 4 * GB),
        Workload::Oltp => (2 * GB, 8 * GB),
        Workload::Dw => (4 * GB, 16 * GB),
        Workload::Desktop => (100 * MB, 2 * GB),
    };
    out.pgtune(
        "min_wal_size",
        format_kb(min_wal),
        format!("WAL kept for reuse between checkpoints: PGTune's size for {workload}"),
    );
    out.pgtune(
        "max_wal_size",
        format_kb(max_wal),
        format!(
            "WAL written between automatic checkpoints: PGTune's size for {workload}; larger means fewer checkpoints, longer crash recovery"
        ),
    );

    // Parallel settings (CPUs known and >= 4).
    if let Some(p) = &par {
        out.pgtune(
            "max_worker_processes",
            p.cpus,
            "background worker slots (parallel queries, extensions): one per CPU",
        );
        out.pgtune(
            "max_parallel_workers_per_gather",
            p.per_gather,
            if dw {
                "workers one query step may use: half the CPUs, uncapped for a data warehouse"
            } else {
                "workers one query step may use: half the CPUs, at most 4"
            },
        );
        // PG >= 10 always holds for pgwarden's inputs.
        out.pgtune(
            "max_parallel_workers",
            p.cpus,
            "parallel query workers across all sessions: one per CPU",
        );
        if pg >= 11 {
            out.pgtune(
                "max_parallel_maintenance_workers",
                p.maintenance,
                "workers for parallel CREATE INDEX and VACUUM: half the CPUs, at most 4",
            );
        }
    }

    if desktop {
        out.pgtune(
            "wal_level",
            "minimal",
            "desktop: write only the WAL crash recovery needs (no replication or archiving)",
        );
        // PGTune emits the string "0" so its falsy filter keeps it.
        out.pgtune(
            "max_wal_senders",
            "0",
            "wal_level = minimal requires no WAL senders",
        );
    }

    // PGTune's warnings (the < 256MB one cannot fire: pgwarden requires 512MB).
    if r > 100 * GB {
        warnings.insert(
            0,
            "total memory above 100GB: PGTune's formulas are not tuned for very high memory systems; review shared_buffers and work_mem"
                .to_string(),
        );
    }
    if dw && inputs.storage != Storage::Hdd && inputs.db_size != DbSize::LessRam {
        let drive = match inputs.storage {
            Storage::Nvme => "NVMe drives",
            Storage::San => "SAN storage",
            _ => "SSDs",
        };
        warnings.push(format!(
            "cost parameters for a data warehouse on {drive} are left at their defaults to avoid disastrous \
             index scan choices; watch query plans and lower random_page_cost if needed"
        ));
    }

    pgwarden_autovacuum(inputs, &mut out);

    // The pooler warning is pgwarden's own; listed after PGTune's.
    warnings.extend(pooler_warning);

    Ok(Recommendation {
        inputs: inputs.clone(),
        settings: out.0,
        warnings,
    })
}

/// pgwarden's autovacuum settings, beyond PGTune. A desktop keeps PostgreSQL's defaults:
/// its databases are small and it shares the machine with other programs.
fn pgwarden_autovacuum(inputs: &Inputs, out: &mut Out) {
    let workload = inputs.workload;
    if workload == Workload::Desktop {
        return;
    }
    if matches!(workload, Workload::Web | Workload::Oltp) {
        out.own(
            "autovacuum_naptime",
            "30s",
            format!("(beyond PGTune) look for tables to vacuum every 30s instead of 1min, so hot tables of a busy {workload} database are picked up sooner"),
        );
    }
    let (vacuum, analyze) = if workload == Workload::Dw {
        ("0.1", "0.05")
    } else {
        ("0.05", "0.02")
    };
    out.own(
        "autovacuum_vacuum_scale_factor",
        vacuum,
        if workload == Workload::Dw {
            "(beyond PGTune) vacuum a table once 10% of its rows are dead instead of 20%; dw tables are mostly appended, so half the default is enough"
        } else {
            "(beyond PGTune) vacuum a table once 5% of its rows are dead instead of 20%, so large tables are cleaned before bloat builds up"
        },
    );
    out.own(
        "autovacuum_analyze_scale_factor",
        analyze,
        format!(
            "(beyond PGTune) re-analyze a table after {} of its rows change instead of 10%, keeping planner statistics fresh on large tables",
            if workload == Workload::Dw { "5%" } else { "2%" }
        ),
    );
    out.own(
        "autovacuum_vacuum_cost_delay",
        "2ms",
        if inputs.pg_version >= 12 {
            "(beyond PGTune) autovacuum sleeps 2ms after each cost-limit budget: the PG 12+ default, stated so the cost limit has a known rate"
        } else {
            "(beyond PGTune) autovacuum sleeps 2ms after each cost-limit budget instead of the pre-PG 12 default 20ms (the PG 12+ value), so vacuum keeps up"
        },
    );
    // A budget of L per 2ms round lets vacuum dirty L/20 pages (vacuum_cost_page_dirty = 20)
    // 500 times a second: L x 200 kB/s, shared by all autovacuum workers.
    let (limit, why) = match inputs.storage {
        Storage::Hdd => (400, "a modest raise that spinning disks absorb"),
        Storage::Ssd => (2000, "which SSDs sustain alongside queries"),
        Storage::San => (
            1000,
            "half the SSD value, as network storage is shared and often throughput-capped",
        ),
        Storage::Nvme => (3000, "well within NVMe bandwidth"),
    };
    out.own(
        "autovacuum_vacuum_cost_limit",
        limit,
        format!(
            "(beyond PGTune) I/O budget all autovacuum workers share per 2ms round: {limit} instead of 200 lets vacuum dirty up to ~{}MB/s, {why}",
            limit * 200 / 1024
        ),
    );
}

/// Whether a postgresql.conf value can be written without quotes: a number with an
/// optional unit (`10280kB`, `0.9`, `-1`) or a plain word (`lz4`, `try`).
fn conf_bare(value: &str) -> bool {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let num_end = digits
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(digits.len());
    let (number, unit) = digits.split_at(num_end);
    let numeric = !number.is_empty()
        && number.starts_with(|c: char| c.is_ascii_digit())
        && number.matches('.').count() <= 1
        && unit.chars().all(|c| c.is_ascii_alphabetic());
    let word = value.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    numeric || word
}

/// A setting name for ALTER SYSTEM: each dot-separated part quoted (`"work_mem"`,
/// `"pg_stat_statements"."max"`).
fn quote_name(name: &str) -> String {
    name.split('.')
        .map(sql::ident)
        .collect::<Vec<_>>()
        .join(".")
}

/// Keeps generated comments on one line.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

impl Recommendation {
    /// The setting named `name`, if recommended.
    pub fn get(&self, name: &str) -> Option<&Setting> {
        self.settings.iter().find(|s| s.name == name)
    }

    /// The header lines (without comment markers): warnings, a blank, then the inputs
    /// with PGTune's labels.
    fn header(&self) -> Vec<String> {
        let i = &self.inputs;
        let mut lines = vec![
            "pgwarden tune: PGTune (current formulas) settings, then pgwarden's own marked (beyond PGTune)".to_string(),
            String::new(),
        ];
        for w in &self.warnings {
            lines.push(format!("WARNING: {}", one_line(w)));
        }
        if !self.warnings.is_empty() {
            lines.push(String::new());
        }
        lines.push(format!("DB Version: {}", i.pg_version));
        lines.push("OS Type: linux".to_string());
        lines.push(format!("DB Type: {}", i.workload));
        lines.push(format!("Total Memory (RAM): {}", format_kb(i.memory_kb)));
        lines.push(match i.cpus {
            Some(c) => format!("CPUs num: {c}"),
            None => "CPUs num: unknown".to_string(),
        });
        lines.push(match i.connections {
            Some(c) => format!("Connections num: {c}"),
            None => format!(
                "Connections num: {} (default for {})",
                i.effective_connections(),
                i.workload
            ),
        });
        lines.push(format!("Data Storage: {}", i.storage));
        lines.push(format!("DB Size: {}", i.db_size));
        lines
    }

    fn comment_block(&self, marker: &str) -> String {
        let mut s = String::new();
        for line in self.header() {
            if line.is_empty() {
                s.push_str(marker);
            } else {
                s.push_str(&format!("{marker} {line}"));
            }
            s.push('\n');
        }
        s.push('\n');
        s
    }

    /// A postgresql.conf snippet: the header comment block, then `name = value  # reason`.
    pub fn to_conf(&self) -> String {
        let mut s = self.comment_block("#");
        for setting in &self.settings {
            let value = if conf_bare(&setting.value) {
                setting.value.clone()
            } else {
                sql::literal(&setting.value)
            };
            s.push_str(&format!(
                "{} = {}  # {}\n",
                setting.name,
                value,
                one_line(&setting.reason)
            ));
        }
        s
    }

    /// `ALTER SYSTEM SET name = 'value';` statements with `--` comments.
    pub fn to_sql(&self) -> String {
        let mut s = self.comment_block("--");
        for setting in &self.settings {
            s.push_str(&format!(
                "ALTER SYSTEM SET {} = {}; -- {}\n",
                quote_name(&setting.name),
                sql::literal(&setting.value),
                one_line(&setting.reason)
            ));
        }
        s.push_str(
            "-- Then run SELECT pg_reload_conf(); settings whose pg_settings.context is 'postmaster' need a restart.\n",
        );
        s
    }
}

#[cfg(test)]
#[path = "tests/recommend.rs"]
mod tests;
