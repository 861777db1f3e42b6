//! The planner: from a set's config and the catalog's facts to the list of actions that
//! make the set what the config says. Pure; `ddl.rs` renders the actions, `create.rs` and
//! `maintain.rs` read the facts and execute them.

use serde::Serialize;

use crate::interval::{Interval, Value};
use crate::model::{Partition, RetentionMode, SetConfig};

/// The most partitions one plan may create: a wrong `--start` or a stray value in the
/// default partition must not make a million tables (pg_partman #705).
pub const MAX_NEW_PARTITIONS: usize = 5000;

/// One change to a set; each runs in its own short transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// A new range partition (nothing for it waits in the default partition).
    Create {
        name: String,
        #[serde(serialize_with = "show")]
        lower: Value,
        #[serde(serialize_with = "show")]
        upper: Value,
    },
    /// A new range partition for rows found in the default partition: made as a plain
    /// table, the rows moved into it, then attached, all in one transaction.
    Rescue {
        name: String,
        #[serde(serialize_with = "show")]
        lower: Value,
        #[serde(serialize_with = "show")]
        upper: Value,
        rows: i64,
    },
    CreateDefault {
        name: String,
    },
    CreateList {
        name: String,
        values: Vec<String>,
    },
    CreateHash {
        name: String,
        modulus: u32,
        remainder: u32,
    },
    /// Retention: detach or drop a partition entirely older than the retention period.
    Retire {
        schema: String,
        name: String,
        mode: RetentionMode,
        /// DETACH ... CONCURRENTLY (only without a default partition).
        concurrently: bool,
    },
    /// Finish a DETACH CONCURRENTLY that was interrupted.
    FinishDetach {
        schema: String,
        name: String,
    },
}

fn show<S: serde::Serializer>(v: &Value, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

impl Action {
    /// The partition the action is about.
    pub fn target(&self) -> &str {
        match self {
            Action::Create { name, .. }
            | Action::Rescue { name, .. }
            | Action::CreateDefault { name }
            | Action::CreateList { name, .. }
            | Action::CreateHash { name, .. }
            | Action::Retire { name, .. }
            | Action::FinishDetach { name, .. } => name,
        }
    }

    /// Whether the action destroys data (needs `--yes`).
    pub fn destroys(&self) -> bool {
        matches!(
            self,
            Action::Retire {
                mode: RetentionMode::Drop,
                ..
            }
        )
    }
}

/// What a plan will do, and what it noticed but leaves alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub warnings: Vec<String>,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the plan would create {0} partitions (the limit is {MAX_NEW_PARTITIONS}); give a later --start or a wider interval")]
    TooMany(usize),
    #[error("bounds leave the calendar or the integer range")]
    OutOfRange,
    #[error("this set has no range interval")]
    NoInterval,
}

/// The facts a maintenance plan needs.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The set's partitions, default included.
    pub partitions: Vec<Partition>,
    /// Time keys: now, as wall time in the set's zone. Integer keys: the highest value in
    /// the set outside the default partition (None when there is none).
    pub newest: Option<Value>,
    /// Grid cells (by lower bound) that hold rows of the default partition, with counts.
    pub default_rows: Vec<(Value, i64)>,
}

/// Whether `[lo, hi)` overlaps partition `p` (None bounds are infinite).
fn overlaps(p: &Partition, lo: Value, hi: Value) -> bool {
    if p.is_default {
        return false;
    }
    let below_hi = p.lower.is_none_or(|l| l < hi);
    let above_lo = p.upper.is_none_or(|u| u > lo);
    below_hi && above_lo
}

fn covered(parts: &[Partition], lo: Value, hi: Value) -> bool {
    parts.iter().any(|p| overlaps(p, lo, hi))
}

/// The partitions a new range set starts with: from `start` (default: `premake` intervals
/// before the current one, as pg_partman's create_parent does) to `premake` intervals after
/// the current one, and the default partition if the config wants one.
pub fn plan_create_range(
    cfg: &SetConfig,
    existing: &[Partition],
    current: Value,
    start: Option<Value>,
) -> Result<Plan, PlanError> {
    let iv = cfg.interval.ok_or(PlanError::NoInterval)?;
    let current = iv.align(current);
    let first = match start {
        Some(s) => iv.align(s),
        None => {
            let back = iv
                .step(current, -i64::from(cfg.premake))
                .ok_or(PlanError::OutOfRange)?;
            // Integer keys (ids) do not go below 0 unless the data does, as pg_partman's.
            match back {
                Value::Int(b) if b < 0 && current >= Value::Int(0) => Value::Int(0),
                b => b,
            }
        }
    };
    let last = iv
        .step(current, i64::from(cfg.premake))
        .ok_or(PlanError::OutOfRange)?;
    let mut plan = Plan::default();
    let mut lower = first;
    while lower <= last.max(first) {
        let upper = iv.step(lower, 1).ok_or(PlanError::OutOfRange)?;
        if !covered(existing, lower, upper) {
            plan.actions.push(Action::Create {
                name: cfg.partition_name(&iv.suffix(lower)),
                lower,
                upper,
            });
        }
        if plan.actions.len() > MAX_NEW_PARTITIONS {
            return Err(PlanError::TooMany(count_to(iv, first, last)));
        }
        lower = upper;
    }
    if cfg.default_partition && !existing.iter().any(|p| p.is_default) {
        plan.actions.push(Action::CreateDefault {
            name: cfg.default_name(),
        });
    }
    Ok(plan)
}

/// How many cells lie between `first` and `last`, for the error message.
fn count_to(iv: Interval, first: Value, last: Value) -> usize {
    let mut n = 0;
    let mut v = first;
    while v <= last && n < 10_000_000 {
        match iv.step(v, 1) {
            Some(next) => v = next,
            None => break,
        }
        n += 1;
    }
    n
}

/// Maintenance: finish interrupted detaches, make the partitions `premake` intervals ahead
/// of the newest value (now, for time keys), rescue rows from the default partition into
/// partitions of their own, and retire partitions past the retention period. Idempotent:
/// planning again after the actions ran gives an empty plan.
pub fn plan_maintain(cfg: &SetConfig, facts: &Facts) -> Result<Plan, PlanError> {
    let iv = cfg.interval.ok_or(PlanError::NoInterval)?;
    let mut plan = Plan::default();
    let parts = &facts.partitions;
    let has_default = parts.iter().any(|p| p.is_default);

    for p in parts.iter().filter(|p| p.detach_pending) {
        plan.actions.push(Action::FinishDetach {
            schema: p.schema.clone(),
            name: p.name.clone(),
        });
    }

    let cutoff = match (cfg.retention, facts.newest) {
        (Some(r), Some(newest)) => r.cutoff(newest),
        _ => None,
    };
    let retired_by = |upper: Value| cutoff.is_some_and(|c| upper <= c);
    let rows_in = |lower: Value| {
        facts
            .default_rows
            .iter()
            .find(|(l, _)| *l == lower)
            .map(|(_, n)| *n)
    };

    // Premake: the current cell and `premake` after it. With nothing to go by (an empty
    // integer set), the grid starts at 0, as pg_partman's does.
    let current = iv.align(facts.newest.unwrap_or(Value::Int(0)));
    let mut planned: Vec<Value> = Vec::new();
    for k in 0..=i64::from(cfg.premake) {
        let lower = iv.step(current, k).ok_or(PlanError::OutOfRange)?;
        let upper = iv.step(lower, 1).ok_or(PlanError::OutOfRange)?;
        if covered(parts, lower, upper) {
            continue;
        }
        let name = cfg.partition_name(&iv.suffix(lower));
        planned.push(lower);
        plan.actions.push(match rows_in(lower) {
            Some(rows) => Action::Rescue {
                name,
                lower,
                upper,
                rows,
            },
            None => Action::Create { name, lower, upper },
        });
    }

    // Default-partition rescue for the other cells that hold rows.
    let mut kept_old = 0i64;
    for &(lower, rows) in &facts.default_rows {
        if planned.contains(&lower) {
            continue;
        }
        let upper = iv.step(lower, 1).ok_or(PlanError::OutOfRange)?;
        if covered(parts, lower, upper) {
            plan.warnings.push(format!(
                "{rows} rows in the default partition between {lower} and {upper} overlap an \
                 existing partition whose bounds are off the set's grid; they stay in the default"
            ));
            continue;
        }
        if retired_by(upper) {
            kept_old += rows;
            continue;
        }
        plan.actions.push(Action::Rescue {
            name: cfg.partition_name(&iv.suffix(lower)),
            lower,
            upper,
            rows,
        });
    }
    if kept_old > 0 {
        plan.warnings.push(format!(
            "{kept_old} rows in the default partition are older than the retention period; \
             they stay there (no partition is made only to be retired)"
        ));
    }
    let new = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Create { .. } | Action::Rescue { .. }))
        .count();
    if new > MAX_NEW_PARTITIONS {
        return Err(PlanError::TooMany(new));
    }

    // Retention, oldest first; never the last partition.
    if cutoff.is_some() {
        let mut ranged: Vec<&Partition> = parts
            .iter()
            .filter(|p| !p.is_default && !p.detach_pending)
            .collect();
        ranged.sort_by_key(|p| p.lower);
        let mut remaining = ranged.len() + new;
        for p in ranged {
            let Some(upper) = p.upper else { continue };
            if !retired_by(upper) || remaining <= 1 {
                continue;
            }
            remaining -= 1;
            plan.actions.push(Action::Retire {
                schema: p.schema.clone(),
                name: p.name.clone(),
                mode: cfg.retention_mode,
                concurrently: cfg.retention_mode == RetentionMode::Detach && !has_default,
            });
        }
    }
    Ok(plan)
}

/// Gaps between a range set's partitions, from its lowest to its highest bound (rows there
/// go to the default partition, or fail without one).
pub fn gaps(parts: &[Partition]) -> Vec<(Option<Value>, Option<Value>)> {
    let mut ranged: Vec<&Partition> = parts.iter().filter(|p| !p.is_default).collect();
    ranged.sort_by_key(|p| p.lower);
    ranged
        .windows(2)
        .filter_map(|w| match (w[0].upper, w[1].lower) {
            (Some(u), Some(l)) if u < l => Some((Some(u), Some(l))),
            _ => None,
        })
        .collect()
}
