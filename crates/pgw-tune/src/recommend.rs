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
use pgw_common::output::{quote_ident, quote_literal};

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

/// A setting name for ALTER SYSTEM: each dot-separated part quoted when it needs it.
fn quote_name(name: &str) -> String {
    name.split('.')
        .map(quote_ident)
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
                quote_literal(&setting.value)
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
                quote_literal(&setting.value),
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
mod tests {
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
        let err =
            recommend(&inp(Workload::Web, 256 * MB, None, None, Storage::Ssd, 16)).unwrap_err();
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
        let defaults =
            recommend(&inp(Workload::Oltp, 8 * GIB, None, None, Storage::Ssd, 15)).unwrap();
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
            "\nALTER SYSTEM SET shared_buffers = '512MB'; -- ",
            "\nALTER SYSTEM SET max_wal_senders = '0'; -- ",
            "\nALTER SYSTEM SET wal_level = 'minimal'; -- ",
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
            sql.contains("ALTER SYSTEM SET \"My\".search_path = 'it''s'; -- two lines\n"),
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
}
