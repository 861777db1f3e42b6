//! Memory and time units as PostgreSQL and PGTune write them.
//!
//! Memory units are 1024-based (B, kB, MB, GB, TB) and time units are us, ms, s, min, h
//! and d, as in postgresql.conf. Everything here is a pure function over strings, used for
//! the `--memory` flag, for printing recommendations and for comparing them with
//! `pg_settings`.

/// kB in one MB.
pub const KB_PER_MB: u64 = 1024;
/// kB in one GB.
pub const KB_PER_GB: u64 = 1024 * 1024;

/// Why a `--memory` value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("invalid memory size '{0}': must be a positive size like 8GB")]
    NotPositive(String),
    #[error("invalid memory size '{input}': add a unit: {number}GB")]
    MissingUnit { input: String, number: String },
    #[error("invalid memory size '{input}': unknown unit '{unit}' (use kB, MB, GB or TB)")]
    UnknownUnit { input: String, unit: String },
    #[error("invalid memory size '{0}': too large")]
    TooLarge(String),
}

/// Formats a kB count as PGTune does: `GB` when it divides exactly by 1048576, else `MB`
/// when it divides exactly by 1024, else `<n>kB`. Never prints decimals.
pub fn format_kb(kb: u64) -> String {
    if kb % KB_PER_GB == 0 {
        format!("{}GB", kb / KB_PER_GB)
    } else if kb % KB_PER_MB == 0 {
        format!("{}MB", kb / KB_PER_MB)
    } else {
        format!("{kb}kB")
    }
}

/// Bytes per memory unit, case-insensitive, with the binary (`GiB`) and one-letter (`G`)
/// spellings people type on command lines.
fn memory_unit_bytes(unit: &str) -> Option<u64> {
    let u = unit.to_ascii_lowercase();
    let bytes = match u.as_str() {
        "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    Some(bytes)
}

/// Parses a `--memory` value such as `8GB`, `8 GB`, `16G`, `16GiB`, `1.5GB` or `1TB` into
/// kB (1024-based units; a fraction of a kB is dropped). A unit is required.
pub fn parse_memory(s: &str) -> Result<u64, UnitError> {
    let input = s.trim();
    let not_positive = || UnitError::NotPositive(input.to_string());
    if input.starts_with('-') {
        return Err(not_positive());
    }
    let body = input.strip_prefix('+').unwrap_or(input);
    let num_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, rest) = body.split_at(num_end);
    let unit = rest.trim_start();
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if number.is_empty() || (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.')
    {
        return Err(not_positive());
    }
    if unit.is_empty() {
        return Err(UnitError::MissingUnit {
            input: input.to_string(),
            number: number.to_string(),
        });
    }
    let Some(unit_bytes) = memory_unit_bytes(unit) else {
        return Err(UnitError::UnknownUnit {
            input: input.to_string(),
            unit: unit.to_string(),
        });
    };
    // Exact decimal arithmetic: value = digits / 10^frac_len units.
    let too_large = || UnitError::TooLarge(input.to_string());
    if int_part.len() + frac_part.len() > 30 {
        return Err(too_large());
    }
    let digits: u128 = format!("{int_part}{frac_part}")
        .parse()
        .map_err(|_| not_positive())?;
    let scale = 10u128.pow(frac_part.len() as u32);
    let bytes = digits
        .checked_mul(u128::from(unit_bytes))
        .ok_or_else(too_large)?
        / scale;
    let kb = u64::try_from(bytes / 1024).map_err(|_| too_large())?;
    if kb == 0 {
        return Err(not_positive());
    }
    Ok(kb)
}

/// The quantity a unit measures, with its size in the base (bytes or microseconds).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Unit {
    Bytes(f64),
    Micros(f64),
}

/// Parses a unit suffix (`kB`, `MB`, `ms`, `min`, ...), case-insensitively.
fn parse_unit_suffix(unit: &str) -> Option<Unit> {
    let u = unit.to_ascii_lowercase();
    let unit = match u.as_str() {
        "b" => Unit::Bytes(1.0),
        "kb" => Unit::Bytes(1024.0),
        "mb" => Unit::Bytes(1024.0 * 1024.0),
        "gb" => Unit::Bytes(1024.0 * 1024.0 * 1024.0),
        "tb" => Unit::Bytes(1024.0 * 1024.0 * 1024.0 * 1024.0),
        "us" => Unit::Micros(1.0),
        "ms" => Unit::Micros(1_000.0),
        "s" => Unit::Micros(1_000_000.0),
        "min" => Unit::Micros(60_000_000.0),
        "h" => Unit::Micros(3_600_000_000.0),
        "d" => Unit::Micros(86_400_000_000.0),
        _ => return None,
    };
    Some(unit)
}

/// Parses a `pg_settings.unit` such as `8kB`, `kB`, `16MB`, `ms` or `s`: an optional
/// multiplier and a unit. `None` for `""` and for units this module does not know.
fn parse_setting_unit(unit: &str) -> Option<Unit> {
    let unit = unit.trim();
    let split = unit
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(unit.len());
    let (mult, name) = unit.split_at(split);
    let mult: f64 = if mult.is_empty() {
        1.0
    } else {
        mult.parse().ok()?
    };
    match parse_unit_suffix(name)? {
        Unit::Bytes(b) => Some(Unit::Bytes(b * mult)),
        Unit::Micros(m) => Some(Unit::Micros(m * mult)),
    }
}

/// Splits a value such as `10280kB`, `2 ms`, `-1`, `0.9` or `1e3` into its number and unit
/// suffix (no unit starts with `e`, so an exponent is never mistaken for one).
fn split_number(value: &str) -> Option<(f64, &str)> {
    let v = value.trim();
    let mut end = v
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || ((c == '-' || c == '+') && i == 0)))
        .map_or(v.len(), |(i, _)| i);
    let rest = &v.as_bytes()[end..];
    if matches!(rest.first(), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(rest.get(1), Some(b'+' | b'-')));
        let digits = rest[1 + sign..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits > 0 {
            end += 1 + sign + digits;
        }
    }
    let (number, suffix) = v.split_at(end);
    let n: f64 = number.parse().ok()?;
    n.is_finite().then_some((n, suffix.trim()))
}

/// The units postgresql.conf takes, spelled as the server wants them (case matters there).
const CONF_UNITS: [&str; 11] = [
    "B", "kB", "MB", "GB", "TB", "us", "ms", "s", "min", "h", "d",
];

/// Parses a postgresql.conf number as the server does for a setting whose `pg_settings.unit`
/// is `unit` (`kB`, `8kB`, `MB`, `ms`, `s`, or `""` for none): a number, a fraction allowed
/// (PostgreSQL 12+ rounds it), followed, for a setting that has a unit, by an optional unit
/// of the same kind written as the server writes it (`64MB`, `30s`, `2 ms`; `64mb` and `16G`
/// are refused, as the server refuses them). A bare number is in `unit` already. Returns the
/// value in `unit`, unrounded; `None` for text the server would refuse.
pub fn parse_conf_number(value: &str, unit: &str) -> Option<f64> {
    let (n, suffix) = split_number(value)?;
    if suffix.is_empty() {
        return Some(n);
    }
    if unit.is_empty() || !CONF_UNITS.contains(&suffix) {
        return None;
    }
    to_unit(value, unit)
}

/// Converts a postgresql.conf value (`2GB`, `10280kB`, `30s`, `1min`, `0.9`, `-1`) into a
/// number in `unit`, the `pg_settings.unit` (`8kB`, `kB`, `MB`, `B`, `ms`, `s`, `min`, or
/// `""`). A bare number is taken to be in `unit` already. `None` when the value is not
/// numeric, or its unit does not measure the same thing as `unit`.
pub fn to_unit(value: &str, unit: &str) -> Option<f64> {
    let (n, suffix) = split_number(value)?;
    if suffix.is_empty() {
        return Some(n);
    }
    let from = parse_unit_suffix(suffix)?;
    match (from, parse_setting_unit(unit)?) {
        (Unit::Bytes(f), Unit::Bytes(t)) | (Unit::Micros(f), Unit::Micros(t)) => Some(n * f / t),
        _ => None,
    }
}

/// Formats a number without a trailing `.0`.
fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// Pretty-prints a raw `pg_settings` (setting, unit) pair as `SHOW` does: positive memory
/// and time values in the largest unit that divides them exactly (`("16384", "8kB")` →
/// `128MB`, `("60", "s")` → `1min`); anything else (`-1`, `0`, `0.9`, `lz4`) unchanged.
pub fn display_setting(setting: &str, unit: &str) -> String {
    const MEMORY: [(&str, f64); 5] = [
        ("TB", 1_099_511_627_776.0),
        ("GB", 1_073_741_824.0),
        ("MB", 1_048_576.0),
        ("kB", 1024.0),
        ("B", 1.0),
    ];
    const TIME: [(&str, f64); 6] = [
        ("d", 86_400_000_000.0),
        ("h", 3_600_000_000.0),
        ("min", 60_000_000.0),
        ("s", 1_000_000.0),
        ("ms", 1_000.0),
        ("us", 1.0),
    ];
    let Ok(n) = setting.trim().parse::<f64>() else {
        return setting.to_string();
    };
    // SHOW only converts positive values: -1 and 0 keep their special meanings.
    if !(n > 0.0 && n.is_finite()) {
        return setting.to_string();
    }
    let (base, table): (f64, &[(&str, f64)]) = match parse_setting_unit(unit) {
        Some(Unit::Bytes(b)) => (n * b, &MEMORY),
        Some(Unit::Micros(m)) => (n * m, &TIME),
        None => return setting.to_string(),
    };
    for &(name, size) in table {
        let q = base / size;
        if q >= 1.0 && q.fract() == 0.0 {
            return format!("{}{name}", format_number(q));
        }
    }
    // Smaller than the smallest unit, or not a whole number of it.
    let &(name, size) = table.last().unwrap_or(&("", 1.0));
    format!("{}{name}", format_number(base / size))
}

/// Normalises a boolean spelling PostgreSQL accepts to `true`/`false`.
/// PostgreSQL's `parse_bool`: any unique prefix of true/false/yes/no, `on`, `of(f)`,
/// `1` and `0`, case-insensitively.
pub fn as_bool(s: &str) -> Option<bool> {
    let v = s.trim().to_ascii_lowercase();
    let prefix_of = |word: &str, min: usize| v.len() >= min && word.starts_with(v.as_str());
    if prefix_of("true", 1) || prefix_of("yes", 1) || v == "on" || v == "1" {
        Some(true)
    } else if prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || v == "0" {
        Some(false)
    } else {
        None
    }
}

/// Whether a recommended value equals a raw `pg_settings.setting` in `unit`.
///
/// Numbers are compared after converting both to `unit`, with a relative tolerance of
/// 1e-9; a memory value that is not a whole number of `unit` is rounded first, as the
/// server rounds it (`12345kB` is stored as 1543 8kB pages). Otherwise booleans compare by
/// meaning (`on` = `true` = `yes` = `1`) and other words case-insensitively.
pub fn same_value(recommended: &str, current_setting: &str, unit: &str) -> bool {
    if let (Some(a), Some(b)) = (to_unit(recommended, unit), to_unit(current_setting, unit)) {
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0);
        let memory = matches!(parse_setting_unit(unit), Some(Unit::Bytes(_)));
        // PostgreSQL rounds half to even (rint) when it converts to the setting's unit.
        return close(a, b) || (memory && close(a.round_ties_even(), b));
    }
    if let (Some(a), Some(b)) = (as_bool(recommended), as_bool(current_setting)) {
        return a == b;
    }
    recommended
        .trim()
        .eq_ignore_ascii_case(current_setting.trim())
}

#[cfg(test)]
#[path = "tests/units.rs"]
mod tests;
