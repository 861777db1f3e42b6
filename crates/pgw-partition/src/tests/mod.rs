//! Unit tests of the pure parts: `interval`, `bound`, `model` naming, `plan`, `ddl`, `adopt`'s
//! interval inference, `session::parse_table`, and the pure parts of reading many sets at
//! once (`catalog`'s bound values, `session`'s probe SQL, `maintain`'s packing). Table-driven: one small `check` per feature.

mod adopt;
mod bound;
mod ddl;
mod facts;
mod interval;
mod plan;

use chrono::NaiveDateTime;

use crate::interval::{Interval, Value};
use crate::model::{Partition, RetentionMode, SetConfig, Strategy, Template, DEFAULT_NAME_PATTERN};

/// A wall time from `YYYY-MM-DD`, `YYYY-MM-DD HH:MM` or `YYYY-MM-DD HH:MM:SS`.
fn wall(text: &str) -> NaiveDateTime {
    for fmt in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, fmt) {
            return t;
        }
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .unwrap_or_else(|e| panic!("bad test time '{text}': {e}"))
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
}

/// A time bound value, as `wall` reads it.
fn t(text: &str) -> Value {
    Value::Time(wall(text))
}

/// An integer bound value.
fn i(n: i64) -> Value {
    Value::Int(n)
}

/// The set `public.events` ranged on `created_at` by `interval`, premake 4, with a default
/// partition, no retention, the default naming pattern, UTC.
fn config(interval: Interval) -> SetConfig {
    SetConfig {
        schema: "public".to_string(),
        table: "events".to_string(),
        column: "created_at".to_string(),
        strategy: Strategy::Range,
        interval: Some(interval),
        premake: 4,
        retention: None,
        retention_mode: RetentionMode::Detach,
        default_partition: true,
        name_pattern: DEFAULT_NAME_PATTERN.to_string(),
        time_zone: "UTC".to_string(),
        template: Template::default(),
    }
}

/// A range partition `[lower, upper)` of `public.events`.
fn part(name: &str, lower: Value, upper: Value) -> Partition {
    Partition {
        schema: "public".to_string(),
        name: name.to_string(),
        is_default: false,
        lower: Some(lower),
        upper: Some(upper),
        bound: format!("FOR VALUES FROM ('{lower}') TO ('{upper}')"),
        detach_pending: false,
    }
}

/// The default partition of `public.events`.
fn default_part() -> Partition {
    Partition {
        schema: "public".to_string(),
        name: "events_default".to_string(),
        is_default: true,
        lower: None,
        upper: None,
        bound: "DEFAULT".to_string(),
        detach_pending: false,
    }
}
