//! The settings pgwarden recommends, with their PostgreSQL types and ranges, and the offline
//! check of `--set name=value` against them.
//!
//! A `--set` value goes into the conf and SQL output as it is, so a value the server would
//! refuse (`work_mem = abc`) must be caught here, before anything is printed or connected
//! to: [`check_overrides`] reads each value as the server would (units spelled as it
//! spells them, fractions rounded, the same ranges as PostgreSQL 15's `pg_settings`).
//! Names pgwarden does not recommend are let through with a warning: the server checks
//! them with `--diff` and `apply`. Pure: no I/O.

use std::fmt;

use crate::inputs::InputError;
use crate::units::{as_bool, format_kb, parse_conf_number};

/// The largest value of an integer setting (`INT_MAX`).
const INT_MAX: i64 = 2_147_483_647;

/// The largest number of backend slots (`MAX_BACKENDS`).
const MAX_BACKENDS: i64 = 262_143;

/// The other spellings PostgreSQL's boolean-like enums (huge_pages, wal_compression) take.
const BOOL_SPELLINGS: &[&str] = &["true", "false", "yes", "no", "1", "0"];

/// What values a setting takes: its `pg_settings.vartype`, unit and range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An integer amount of memory in `unit` (`kB`, `8kB` or `MB`), from `min` to `max` of
    /// them: a bare number of `unit`s or a size with a memory unit.
    Memory {
        unit: &'static str,
        min: i64,
        max: i64,
    },
    /// A time in `unit` (`ms` or `s`), from `min` to `max` of them: a bare number or a time
    /// with a unit. `real`: a fraction is kept (else rounded to a whole `unit`).
    Time {
        unit: &'static str,
        min: i64,
        max: i64,
        real: bool,
    },
    /// An integer without a unit (a fraction is rounded, as the server does).
    Integer { min: i64, max: i64 },
    /// A real number without a unit; `max` None: no upper bound short of `DBL_MAX`.
    Real { min: i64, max: Option<i64> },
    /// A boolean (PostgreSQL's `parse_bool`: on, off, true, false, yes, no, 1, 0 and
    /// unique prefixes).
    Bool,
    /// One of `values` (case does not matter); `aliases` are accepted too but not shown.
    Enum {
        values: &'static [&'static str],
        aliases: &'static [&'static str],
    },
}

/// The kind of every setting [`recommend`](crate::recommend()) may write, by name.
pub fn kind_of(name: &str) -> Option<Kind> {
    use Kind::*;
    let memory = |unit, min, max| Memory { unit, min, max };
    let time = |unit, min, max, real| Time {
        unit,
        min,
        max,
        real,
    };
    let kind = match name {
        "max_connections" => Integer {
            min: 1,
            max: MAX_BACKENDS,
        },
        "shared_buffers" => memory("8kB", 16, 1_073_741_823),
        "effective_cache_size" => memory("8kB", 1, INT_MAX),
        "maintenance_work_mem" => memory("kB", 1024, INT_MAX),
        "work_mem" => memory("kB", 64, INT_MAX),
        "autovacuum_work_mem" => memory("kB", -1, INT_MAX),
        "wal_buffers" => memory("8kB", -1, 262_143),
        "min_wal_size" | "max_wal_size" => memory("MB", 2, INT_MAX),
        "checkpoint_completion_target" => Real {
            min: 0,
            max: Some(1),
        },
        "random_page_cost" => Real { min: 0, max: None },
        "autovacuum_vacuum_scale_factor" | "autovacuum_analyze_scale_factor" => Real {
            min: 0,
            max: Some(100),
        },
        "default_statistics_target" => Integer {
            min: 1,
            max: 10_000,
        },
        "effective_io_concurrency" => Integer { min: 0, max: 1000 },
        "autovacuum_max_workers" => Integer {
            min: 1,
            max: MAX_BACKENDS,
        },
        "max_worker_processes" | "max_wal_senders" => Integer {
            min: 0,
            max: MAX_BACKENDS,
        },
        "max_parallel_workers_per_gather"
        | "max_parallel_workers"
        | "max_parallel_maintenance_workers" => Integer { min: 0, max: 1024 },
        "autovacuum_vacuum_cost_limit" => Integer {
            min: -1,
            max: 10_000,
        },
        "autovacuum_naptime" => time("s", 1, INT_MAX / 1000, false),
        "autovacuum_vacuum_cost_delay" => time("ms", -1, 100, true),
        "jit" => Bool,
        "huge_pages" => Enum {
            values: &["off", "on", "try"],
            aliases: BOOL_SPELLINGS,
        },
        // PG 15's values; before 15 it is a boolean, whose spellings are among them.
        "wal_compression" => Enum {
            values: &["off", "on", "pglz", "lz4", "zstd"],
            aliases: BOOL_SPELLINGS,
        },
        "wal_level" => Enum {
            values: &["minimal", "replica", "logical"],
            aliases: &["archive", "hot_standby"],
        },
        "io_method" => Enum {
            values: &["sync", "worker", "io_uring"],
            aliases: &[],
        },
        _ => return None,
    };
    Some(kind)
}

impl Kind {
    /// Whether the server would take `value` for a setting of this kind.
    pub fn accepts(&self, value: &str) -> bool {
        let in_range = |n: f64, min: i64, max: Option<i64>| {
            n >= min as f64 && max.is_none_or(|max| n <= max as f64)
        };
        match *self {
            Kind::Memory { unit, min, max } => parse_conf_number(value, unit)
                .is_some_and(|n| in_range(n.round_ties_even(), min, Some(max))),
            Kind::Time {
                unit,
                min,
                max,
                real,
            } => parse_conf_number(value, unit).is_some_and(|n| {
                let n = if real { n } else { n.round_ties_even() };
                in_range(n, min, Some(max))
            }),
            Kind::Integer { min, max } => parse_conf_number(value, "")
                .is_some_and(|n| in_range(n.round_ties_even(), min, Some(max))),
            Kind::Real { min, max } => {
                parse_conf_number(value, "").is_some_and(|n| in_range(n, min, max))
            }
            Kind::Bool => as_bool(value).is_some(),
            Kind::Enum { values, aliases } => {
                let v = value.trim();
                values
                    .iter()
                    .chain(aliases)
                    .any(|known| known.eq_ignore_ascii_case(v))
            }
        }
    }
}

/// `n` of a memory `unit` as postgresql.conf writes sizes (`64kB`, `8TB`).
fn memory_text(n: i64, unit: &str) -> String {
    let per: i64 = match unit {
        "8kB" => 8,
        "MB" => 1024,
        _ => 1,
    };
    match n.saturating_mul(per).unsigned_abs() {
        0 => "0kB".to_owned(),
        kb => format_kb(kb),
    }
}

/// What a setting of this kind takes, to follow "<name> takes ".
impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // "-1, or …" where -1 is allowed (a special value), then the range of the rest.
        let special = |min: i64| if min == -1 { "-1, or " } else { "" };
        match *self {
            Kind::Memory { unit, min, max } => {
                let what = match unit {
                    "8kB" => "8kB pages",
                    other => other,
                };
                write!(
                    f,
                    "{}a memory size such as 64MB (B, kB, MB, GB or TB, case as shown) or a number of {what}, from {} to {}",
                    special(min),
                    memory_text(min.max(0), unit),
                    memory_text(max, unit)
                )
            }
            Kind::Time { unit, min, max, .. } => {
                let what = if unit == "s" {
                    "seconds"
                } else {
                    "milliseconds"
                };
                write!(
                    f,
                    "{}a time such as 30s (us, ms, s, min, h or d) or a number of {what}, from {}{unit} to {max}{unit}",
                    special(min),
                    min.max(0)
                )
            }
            Kind::Integer { min, max } => write!(f, "a whole number from {min} to {max}"),
            Kind::Real {
                min,
                max: Some(max),
            } => write!(f, "a number from {min} to {max}"),
            Kind::Real { min, max: None } => write!(f, "a number of at least {min}"),
            Kind::Bool => f.write_str("on or off (or true/false, yes/no, 1/0)"),
            Kind::Enum { values, .. } => write!(f, "one of {}", values.join(", ")),
        }
    }
}

/// The warning for a `--set` name pgwarden does not know.
pub fn unknown_setting_warning(name: &str) -> String {
    format!(
        "--set {name}: not a setting pgwarden knows; the server checks it (with --diff or apply)"
    )
}

/// Checks every `--set name=value` offline: a setting pgwarden recommends must have a value
/// its type takes ([`InputError::InvalidSetting`], naming the setting and what it takes);
/// any other name is let through with a warning (returned, one per name, in order).
pub fn check_overrides(overrides: &[(String, String)]) -> Result<Vec<String>, InputError> {
    let mut warnings = Vec::new();
    for (name, value) in overrides {
        match kind_of(name) {
            Some(kind) if kind.accepts(value) => {}
            Some(kind) => {
                return Err(InputError::InvalidSetting {
                    name: name.clone(),
                    value: value.clone(),
                    expected: kind,
                })
            }
            None => {
                let warning = unknown_setting_warning(name);
                if !warnings.contains(&warning) {
                    warnings.push(warning);
                }
            }
        }
    }
    Ok(warnings)
}

#[cfg(test)]
#[path = "tests/known.rs"]
mod tests;
