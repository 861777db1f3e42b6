//! Unit tests of `plan.rs` (create and maintenance plans, gaps) and of the partition names
//! `model.rs` gives them.

use super::{config, default_part, i, part, t};
use crate::interval::{Interval, Retention, Value};
use crate::model::{Partition, RetentionMode, SetConfig, MAX_IDENT};
use crate::plan::{
    gaps, plan_create_range, plan_maintain, Action, Facts, Plan, PlanError, MAX_NEW_PARTITIONS,
};

/// One line per action, so expectations read as a list.
fn show(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .map(|a| match a {
            Action::Create { name, lower, upper } => format!("create {name} [{lower}, {upper})"),
            Action::Rescue {
                name,
                lower,
                upper,
                rows,
            } => format!("rescue {name} [{lower}, {upper}) {rows} rows"),
            Action::CreateDefault { name } => format!("default {name}"),
            Action::CreateList { name, values } => format!("list {name} {values:?}"),
            Action::CreateHash {
                name,
                modulus,
                remainder,
            } => format!("hash {name} {modulus}/{remainder}"),
            Action::Retire {
                schema,
                name,
                mode,
                concurrently,
            } => format!(
                "retire {schema}.{name} {}{}",
                mode.as_str(),
                if *concurrently { " concurrently" } else { "" }
            ),
            Action::FinishDetach { schema, name } => format!("finish {schema}.{name}"),
        })
        .collect()
}

/// The partitions a plan's actions leave behind, added to `before` (retired ones removed),
/// as `run` would after executing it.
fn apply(cfg: &SetConfig, before: &[Partition], plan: &Plan) -> Vec<Partition> {
    let mut parts = before.to_vec();
    for a in &plan.actions {
        match a {
            Action::Create { name, lower, upper }
            | Action::Rescue {
                name, lower, upper, ..
            } => parts.push(part(name, *lower, *upper)),
            Action::CreateDefault { name } => {
                assert_eq!(*name, cfg.default_name());
                parts.push(default_part());
            }
            Action::Retire { name, .. } | Action::FinishDetach { name, .. } => {
                parts.retain(|p| p.name != *name);
            }
            Action::CreateList { .. } | Action::CreateHash { .. } => {
                panic!("range plan made {a:?}")
            }
        }
    }
    parts
}

/// Monthly partitions `[from, to)` named the default way.
fn monthly(from: &str, to: &str) -> Vec<Partition> {
    let iv = Interval::Months(1);
    let (mut lower, end) = (t(from), t(to));
    let mut out = Vec::new();
    while lower < end {
        let upper = iv.step(lower, 1).expect("step");
        out.push(part(&format!("events_p{}", iv.suffix(lower)), lower, upper));
        lower = upper;
    }
    out
}

fn facts(partitions: Vec<Partition>, newest: Value, default_rows: Vec<(Value, i64)>) -> Facts {
    Facts {
        partitions,
        newest: Some(newest),
        default_rows,
    }
}

const NOW: &str = "2026-11-24 10:15";

// ---------------------------------------------------------------- names (model.rs)

#[test]
fn partition_names() {
    let cases: [(&str, &str, &str, &str); 5] = [
        ("events", "{parent}_p{suffix}", "2026_11", "events_p2026_11"),
        ("events", "{parent}_{suffix}", "2026w48", "events_2026w48"),
        ("Events", "{parent}_p{suffix}", "m10", "Events_pm10"),
        ("events", "p{suffix}_{parent}", "2026", "p2026_events"),
        // Exactly 63 bytes: left alone.
        (
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "{parent}_p{suffix}",
            "2026_11",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_p2026_11",
        ),
    ];
    for (table, pattern, suffix, want) in cases {
        let mut cfg = config(Interval::Months(1));
        cfg.table = table.to_string();
        cfg.name_pattern = pattern.to_string();
        assert_eq!(
            cfg.partition_name(suffix),
            want,
            "{table} {pattern} {suffix}"
        );
    }
    let cfg = config(Interval::Months(1));
    assert_eq!(cfg.default_name(), "events_default");
}

#[test]
fn long_names_keep_their_suffix() {
    let suffixes = ["2026_11", "2026_11_24_1300", "m9223372036854775808", ""];
    let parents = [
        "a".repeat(60),
        "a".repeat(63),
        "a".repeat(200),
        "é".repeat(40),
        format!("x{}", "é".repeat(40)),
        format!("{}日本語テーブル", "b".repeat(40)),
    ];
    for parent in &parents {
        let mut cfg = config(Interval::Months(1));
        cfg.table = parent.clone();
        for suffix in suffixes {
            let name = cfg.partition_name(suffix);
            let tail = format!("_p{suffix}");
            assert!(name.len() <= MAX_IDENT, "{name} is {} bytes", name.len());
            assert!(name.ends_with(&tail), "{name} lost {tail}");
            let kept = &name[..name.len() - tail.len()];
            assert!(
                parent.starts_with(kept),
                "{name}: {kept} is not a prefix of {parent}"
            );
            // Only as much is cut as needed (at most 3 more bytes for a character boundary).
            assert!(name.len() + 3 >= MAX_IDENT, "{name} cut too much");
        }
        let default = cfg.default_name();
        assert!(default.len() <= MAX_IDENT, "{default}");
        assert!(default.ends_with("_default"), "{default}");
        assert!(parent.starts_with(&default[..default.len() - "_default".len()]));
    }
}

#[test]
fn long_name_exact_cuts() {
    let mut cfg = config(Interval::Months(1));
    cfg.table = "a".repeat(60);
    assert_eq!(
        cfg.partition_name("2026_11"),
        format!("{}_p2026_11", "a".repeat(54))
    );
    assert_eq!(cfg.default_name(), format!("{}_default", "a".repeat(55)));
    // 'x' then 2-byte characters: 54 bytes would split one, so 53 are kept.
    cfg.table = format!("x{}", "é".repeat(30));
    assert_eq!(
        cfg.partition_name("2026_11"),
        format!("x{}_p2026_11", "é".repeat(26))
    );
}

// ---------------------------------------------------------------- plan_create_range

#[test]
fn create_monthly_without_start() {
    let cfg = config(Interval::Months(1));
    let plan = plan_create_range(&cfg, &[], t(NOW), None).expect("plan");
    assert_eq!(
        show(&plan),
        [
            "create events_p2026_07 [2026-07-01, 2026-08-01)",
            "create events_p2026_08 [2026-08-01, 2026-09-01)",
            "create events_p2026_09 [2026-09-01, 2026-10-01)",
            "create events_p2026_10 [2026-10-01, 2026-11-01)",
            "create events_p2026_11 [2026-11-01, 2026-12-01)",
            "create events_p2026_12 [2026-12-01, 2027-01-01)",
            "create events_p2027_01 [2027-01-01, 2027-02-01)",
            "create events_p2027_02 [2027-02-01, 2027-03-01)",
            "create events_p2027_03 [2027-03-01, 2027-04-01)",
            "default events_default",
        ]
    );
    assert!(plan.warnings.is_empty());
}

#[test]
fn create_plans_table() {
    fn check(
        cfg: &SetConfig,
        existing: &[Partition],
        current: Value,
        start: Option<Value>,
        want: &[&str],
    ) {
        let plan = plan_create_range(cfg, existing, current, start).expect("plan");
        assert_eq!(show(&plan), want, "current {current} start {start:?}");
    }
    let monthly_cfg = config(Interval::Months(1));
    // A start before the window: from its cell on.
    check(
        &monthly_cfg,
        &[],
        t(NOW),
        Some(t("2026-05-15 08:00")),
        &[
            "create events_p2026_05 [2026-05-01, 2026-06-01)",
            "create events_p2026_06 [2026-06-01, 2026-07-01)",
            "create events_p2026_07 [2026-07-01, 2026-08-01)",
            "create events_p2026_08 [2026-08-01, 2026-09-01)",
            "create events_p2026_09 [2026-09-01, 2026-10-01)",
            "create events_p2026_10 [2026-10-01, 2026-11-01)",
            "create events_p2026_11 [2026-11-01, 2026-12-01)",
            "create events_p2026_12 [2026-12-01, 2027-01-01)",
            "create events_p2027_01 [2027-01-01, 2027-02-01)",
            "create events_p2027_02 [2027-02-01, 2027-03-01)",
            "create events_p2027_03 [2027-03-01, 2027-04-01)",
            "default events_default",
        ],
    );
    // A start inside the window shortens it.
    check(
        &monthly_cfg,
        &[],
        t(NOW),
        Some(t("2026-12-01")),
        &[
            "create events_p2026_12 [2026-12-01, 2027-01-01)",
            "create events_p2027_01 [2027-01-01, 2027-02-01)",
            "create events_p2027_02 [2027-02-01, 2027-03-01)",
            "create events_p2027_03 [2027-03-01, 2027-04-01)",
            "default events_default",
        ],
    );
    // A start after now + premake: just its own partition.
    check(
        &monthly_cfg,
        &[],
        t(NOW),
        Some(t("2028-05-10")),
        &[
            "create events_p2028_05 [2028-05-01, 2028-06-01)",
            "default events_default",
        ],
    );
    // Existing partitions (and an existing default) are skipped.
    let mut existing = monthly("2026-10-01", "2027-01-01");
    existing.push(default_part());
    check(
        &monthly_cfg,
        &existing,
        t(NOW),
        None,
        &[
            "create events_p2026_07 [2026-07-01, 2026-08-01)",
            "create events_p2026_08 [2026-08-01, 2026-09-01)",
            "create events_p2026_09 [2026-09-01, 2026-10-01)",
            "create events_p2027_01 [2027-01-01, 2027-02-01)",
            "create events_p2027_02 [2027-02-01, 2027-03-01)",
            "create events_p2027_03 [2027-03-01, 2027-04-01)",
        ],
    );
    // An existing off-grid partition covers every cell it overlaps.
    check(
        &monthly_cfg,
        &[part("old", t("2026-06-15"), t("2026-08-15"))],
        t(NOW),
        Some(t("2026-07-01")),
        &[
            "create events_p2026_09 [2026-09-01, 2026-10-01)",
            "create events_p2026_10 [2026-10-01, 2026-11-01)",
            "create events_p2026_11 [2026-11-01, 2026-12-01)",
            "create events_p2026_12 [2026-12-01, 2027-01-01)",
            "create events_p2027_01 [2027-01-01, 2027-02-01)",
            "create events_p2027_02 [2027-02-01, 2027-03-01)",
            "create events_p2027_03 [2027-03-01, 2027-04-01)",
            "default events_default",
        ],
    );
    // No default partition wanted.
    let mut no_default = config(Interval::Months(12));
    no_default.default_partition = false;
    no_default.premake = 1;
    check(
        &no_default,
        &[],
        t(NOW),
        None,
        &[
            "create events_p2025 [2025-01-01, 2026-01-01)",
            "create events_p2026 [2026-01-01, 2027-01-01)",
            "create events_p2027 [2027-01-01, 2028-01-01)",
        ],
    );
    // Weekly and daily grids.
    let mut weekly = config(Interval::Days(7));
    weekly.premake = 1;
    check(
        &weekly,
        &[],
        t(NOW),
        None,
        &[
            "create events_p2026w47 [2026-11-16, 2026-11-23)",
            "create events_p2026w48 [2026-11-23, 2026-11-30)",
            "create events_p2026w49 [2026-11-30, 2026-12-07)",
            "default events_default",
        ],
    );
    let mut hourly = config(Interval::Minutes(60));
    hourly.premake = 1;
    check(
        &hourly,
        &[],
        t("2026-12-31 23:59"),
        None,
        &[
            "create events_p2026_12_31_2200 [2026-12-31 22:00:00, 2026-12-31 23:00:00)",
            "create events_p2026_12_31_2300 [2026-12-31 23:00:00, 2027-01-01)",
            "create events_p2027_01_01_0000 [2027-01-01, 2027-01-01 01:00:00)",
            "default events_default",
        ],
    );
    // Premake 0: the current cell only.
    let mut zero = config(Interval::Months(3));
    zero.premake = 0;
    check(
        &zero,
        &[],
        t(NOW),
        None,
        &[
            "create events_p2026q4 [2026-10-01, 2027-01-01)",
            "default events_default",
        ],
    );
}

#[test]
fn create_integer_plans() {
    fn check(current: i64, start: Option<i64>, want: &[&str]) {
        let mut cfg = config(Interval::Integer(10));
        cfg.default_partition = false;
        cfg.premake = 4;
        let plan = plan_create_range(&cfg, &[], i(current), start.map(i)).expect("plan");
        assert_eq!(show(&plan), want, "current {current} start {start:?}");
    }
    // Ids do not go below 0 while the data is not negative.
    check(
        15,
        None,
        &[
            "create events_p0 [0, 10)",
            "create events_p10 [10, 20)",
            "create events_p20 [20, 30)",
            "create events_p30 [30, 40)",
            "create events_p40 [40, 50)",
            "create events_p50 [50, 60)",
        ],
    );
    check(
        0,
        None,
        &[
            "create events_p0 [0, 10)",
            "create events_p10 [10, 20)",
            "create events_p20 [20, 30)",
            "create events_p30 [30, 40)",
            "create events_p40 [40, 50)",
        ],
    );
    check(
        100,
        None,
        &[
            "create events_p60 [60, 70)",
            "create events_p70 [70, 80)",
            "create events_p80 [80, 90)",
            "create events_p90 [90, 100)",
            "create events_p100 [100, 110)",
            "create events_p110 [110, 120)",
            "create events_p120 [120, 130)",
            "create events_p130 [130, 140)",
            "create events_p140 [140, 150)",
        ],
    );
    // Negative data: negative partitions.
    check(
        -15,
        None,
        &[
            "create events_pm60 [-60, -50)",
            "create events_pm50 [-50, -40)",
            "create events_pm40 [-40, -30)",
            "create events_pm30 [-30, -20)",
            "create events_pm20 [-20, -10)",
            "create events_pm10 [-10, 0)",
            "create events_p0 [0, 10)",
            "create events_p10 [10, 20)",
            "create events_p20 [20, 30)",
        ],
    );
    // An explicit negative start is honoured.
    check(
        5,
        Some(-25),
        &[
            "create events_pm30 [-30, -20)",
            "create events_pm20 [-20, -10)",
            "create events_pm10 [-10, 0)",
            "create events_p0 [0, 10)",
            "create events_p10 [10, 20)",
            "create events_p20 [20, 30)",
            "create events_p30 [30, 40)",
            "create events_p40 [40, 50)",
        ],
    );
}

#[test]
fn create_refusals() {
    // Daily from 1900: one partition per day up to now + 4 days.
    let cfg = config(Interval::Days(1));
    let got = plan_create_range(&cfg, &[], t(NOW), Some(t("1900-01-01")));
    assert_eq!(got, Err(PlanError::TooMany(46_353)));
    // Just under the limit is fine: 4995 days back, 4 ahead and the current one.
    let start = Interval::Days(1)
        .step(t("2026-11-24"), -(MAX_NEW_PARTITIONS as i64 - 5))
        .expect("step");
    let plan = plan_create_range(&cfg, &[], t(NOW), Some(start)).expect("plan");
    assert_eq!(plan.actions.len(), MAX_NEW_PARTITIONS + 1);
    // No interval, or a grid that leaves the integer range.
    let mut none = config(Interval::Months(1));
    none.interval = None;
    assert_eq!(
        plan_create_range(&none, &[], t(NOW), None),
        Err(PlanError::NoInterval)
    );
    let huge = config(Interval::Integer(i64::MAX / 2));
    assert_eq!(
        plan_create_range(&huge, &[], i(i64::MAX - 1), None),
        Err(PlanError::OutOfRange)
    );
}

#[test]
fn create_then_maintain_plans_nothing() {
    let cases = [
        (Interval::Months(1), t(NOW)),
        (Interval::Months(3), t(NOW)),
        (Interval::Months(12), t(NOW)),
        (Interval::Days(1), t(NOW)),
        (Interval::Days(7), t(NOW)),
        (Interval::Minutes(15), t(NOW)),
        (Interval::Integer(1000), i(4321)),
    ];
    for (iv, now) in cases {
        let cfg = config(iv);
        let created = plan_create_range(&cfg, &[], now, None).expect("plan");
        let parts = apply(&cfg, &[], &created);
        let again = plan_maintain(&cfg, &facts(parts, now, vec![])).expect("maintain");
        assert_eq!(again, Plan::default(), "{iv:?}");
    }
}

// ---------------------------------------------------------------- plan_maintain

#[test]
fn maintain_fills_premake_and_gaps() {
    fn check(parts: Vec<Partition>, rows: Vec<(Value, i64)>, want: &[&str]) {
        let cfg = config(Interval::Months(1));
        let plan = plan_maintain(&cfg, &facts(parts, t(NOW), rows)).expect("plan");
        assert_eq!(show(&plan), want);
    }
    let with_default = |mut v: Vec<Partition>| {
        v.push(default_part());
        v
    };
    // Everything there: nothing to do.
    check(
        with_default(monthly("2026-07-01", "2027-04-01")),
        vec![],
        &[],
    );
    // Premake runs out: the missing cells ahead.
    check(
        with_default(monthly("2026-07-01", "2027-02-01")),
        vec![],
        &[
            "create events_p2027_02 [2027-02-01, 2027-03-01)",
            "create events_p2027_03 [2027-03-01, 2027-04-01)",
        ],
    );
    // A hole inside the window.
    let mut holed = monthly("2026-07-01", "2027-04-01");
    holed.retain(|p| p.name != "events_p2026_12");
    check(
        with_default(holed),
        vec![],
        &["create events_p2026_12 [2026-12-01, 2027-01-01)"],
    );
    // Rows waiting in the default for a premake cell: rescue instead of create.
    check(
        with_default(monthly("2026-07-01", "2027-02-01")),
        vec![(t("2027-02-01"), 5)],
        &[
            "rescue events_p2027_02 [2027-02-01, 2027-03-01) 5 rows",
            "create events_p2027_03 [2027-03-01, 2027-04-01)",
        ],
    );
    // Rows in the default outside the window (past or far future): rescued too.
    check(
        with_default(monthly("2026-07-01", "2027-04-01")),
        vec![(t("2025-01-01"), 7), (t("2030-06-01"), 1)],
        &[
            "rescue events_p2025_01 [2025-01-01, 2025-02-01) 7 rows",
            "rescue events_p2030_06 [2030-06-01, 2030-07-01) 1 rows",
        ],
    );
    // Past the old partitions only the current cell and premake count: the past is left.
    check(
        with_default(monthly("2025-01-01", "2025-03-01")),
        vec![],
        &[
            "create events_p2026_11 [2026-11-01, 2026-12-01)",
            "create events_p2026_12 [2026-12-01, 2027-01-01)",
            "create events_p2027_01 [2027-01-01, 2027-02-01)",
            "create events_p2027_02 [2027-02-01, 2027-03-01)",
            "create events_p2027_03 [2027-03-01, 2027-04-01)",
        ],
    );
}

#[test]
fn maintain_default_rows_warnings() {
    let mut cfg = config(Interval::Months(1));
    cfg.retention = Some(Retention::parse("12 months", false).expect("retention"));
    let mut parts = monthly("2025-12-01", "2027-04-01");
    parts.push(default_part());
    // Rows older than the cutoff (2025-11-24 10:15) stay in the default, with a warning;
    // the cell holding the cutoff is still rescued.
    let rows = vec![
        (t("2024-03-01"), 3),
        (t("2025-10-01"), 2),
        (t("2025-11-01"), 4),
    ];
    let plan = plan_maintain(&cfg, &facts(parts.clone(), t(NOW), rows)).expect("plan");
    assert_eq!(
        show(&plan),
        ["rescue events_p2025_11 [2025-11-01, 2025-12-01) 4 rows"]
    );
    assert_eq!(
        plan.warnings,
        [
            "5 rows in the default partition are older than the retention period; they stay \
          there (no partition is made only to be retired)"
        ]
    );

    // Rows in a cell an off-grid partition overlaps stay, with a warning.
    let mut parts = monthly("2026-07-01", "2027-04-01");
    parts.push(part("events_adopted", t("2026-06-01"), t("2026-06-15")));
    parts.push(default_part());
    let plan = plan_maintain(
        &config(Interval::Months(1)),
        &facts(parts, t(NOW), vec![(t("2026-06-01"), 4)]),
    )
    .expect("plan");
    assert_eq!(show(&plan), Vec::<String>::new());
    assert_eq!(
        plan.warnings,
        [
            "4 rows in the default partition between 2026-06-01 and 2026-07-01 overlap an \
          existing partition whose bounds are off the set's grid; they stay in the default"
        ]
    );
}

#[test]
fn maintain_retention() {
    fn check(mode: RetentionMode, with_default: bool, how: &str) {
        let mut cfg = config(Interval::Months(1));
        cfg.retention = Some(Retention::parse("12 months", false).expect("retention"));
        cfg.retention_mode = mode;
        // Shuffled, so the plan must sort: oldest first.
        let mut parts = monthly("2025-08-01", "2027-04-01");
        parts.reverse();
        parts.swap(3, 15);
        if with_default {
            parts.push(default_part());
        }
        let plan = plan_maintain(&cfg, &facts(parts, t(NOW), vec![])).expect("plan");
        // Cutoff 2025-11-24 10:15: partitions ending by then retire; 2025-11 (ends 12-01)
        // stays.
        let want: Vec<String> = ["events_p2025_08", "events_p2025_09", "events_p2025_10"]
            .iter()
            .map(|n| format!("retire public.{n} {how}"))
            .collect();
        assert_eq!(show(&plan), want, "{mode:?} default={with_default}");
        assert!(plan.warnings.is_empty());
    }
    let cases = [
        // DETACH CONCURRENTLY cannot run while a default partition exists.
        (RetentionMode::Detach, true, "detach"),
        (RetentionMode::Detach, false, "detach concurrently"),
        (RetentionMode::Drop, true, "drop"),
        (RetentionMode::Drop, false, "drop"),
    ];
    for (mode, with_default, how) in cases {
        check(mode, with_default, how);
    }
}

#[test]
fn retention_keeps_the_last_partition() {
    // Integer set, 100 per cell, off-grid partitions [0, 40) and [40, 80) both past the
    // cutoff 95 - 10 = 85; the current cell [0, 100) overlaps them, so nothing is new.
    let mut cfg = config(Interval::Integer(100));
    cfg.premake = 0;
    cfg.default_partition = false;
    cfg.retention = Some(Retention::Integer(10));
    let parts = vec![
        part("events_b", i(40), i(80)),
        part("events_a", i(0), i(40)),
    ];
    let plan = plan_maintain(&cfg, &facts(parts, i(95), vec![])).expect("plan");
    assert_eq!(show(&plan), ["retire public.events_a detach concurrently"]);
}

#[test]
fn retention_counts_new_partitions() {
    // Every existing partition is past the cutoff, but the plan makes new ones: all retire.
    let mut cfg = config(Interval::Integer(10));
    cfg.premake = 1;
    cfg.default_partition = false;
    cfg.retention = Some(Retention::Integer(100));
    let parts = vec![
        part("events_p0", i(0), i(10)),
        part("events_p10", i(10), i(20)),
    ];
    let plan = plan_maintain(&cfg, &facts(parts, i(500), vec![])).expect("plan");
    assert_eq!(
        show(&plan),
        [
            "create events_p500 [500, 510)",
            "create events_p510 [510, 520)",
            "retire public.events_p0 detach concurrently",
            "retire public.events_p10 detach concurrently",
        ]
    );
}

#[test]
fn maintain_finishes_pending_detaches() {
    let mut cfg = config(Interval::Months(1));
    cfg.retention = Some(Retention::parse("12 months", false).expect("retention"));
    let mut parts = monthly("2025-10-01", "2027-04-01");
    parts[0].detach_pending = true;
    parts.push(default_part());
    let plan = plan_maintain(&cfg, &facts(parts, t(NOW), vec![])).expect("plan");
    // The pending one is finished, not retired again.
    assert_eq!(show(&plan), ["finish public.events_p2025_10"]);
}

#[test]
fn maintain_integer_sets() {
    fn check(newest: Option<i64>, parts: Vec<Partition>, want: &[&str]) {
        let mut cfg = config(Interval::Integer(10));
        cfg.premake = 2;
        cfg.default_partition = false;
        let f = Facts {
            partitions: parts,
            newest: newest.map(i),
            default_rows: vec![],
        };
        let plan = plan_maintain(&cfg, &f).expect("plan");
        assert_eq!(show(&plan), want, "newest {newest:?}");
    }
    // An empty set starts at 0.
    check(
        None,
        vec![],
        &[
            "create events_p0 [0, 10)",
            "create events_p10 [10, 20)",
            "create events_p20 [20, 30)",
        ],
    );
    check(
        Some(25),
        vec![
            part("events_p0", i(0), i(10)),
            part("events_p10", i(10), i(20)),
        ],
        &[
            "create events_p20 [20, 30)",
            "create events_p30 [30, 40)",
            "create events_p40 [40, 50)",
        ],
    );
    check(
        Some(-1),
        vec![],
        &[
            "create events_pm10 [-10, 0)",
            "create events_p0 [0, 10)",
            "create events_p10 [10, 20)",
        ],
    );
}

#[test]
fn maintain_refusals() {
    let mut none = config(Interval::Months(1));
    none.interval = None;
    assert_eq!(
        plan_maintain(&none, &facts(vec![], t(NOW), vec![])),
        Err(PlanError::NoInterval)
    );
    // A stray value per day for 6000 days in the default: too many partitions at once.
    let cfg = config(Interval::Days(1));
    let mut parts = vec![
        part("events_now", t("2026-11-01"), t("2026-12-31")),
        default_part(),
    ];
    parts.rotate_left(1);
    let rows: Vec<(Value, i64)> = (0..6000)
        .map(|d| (Interval::Days(1).step(t("2000-01-01"), d).expect("step"), 1))
        .collect();
    assert_eq!(
        plan_maintain(&cfg, &facts(parts, t(NOW), rows)),
        Err(PlanError::TooMany(6000))
    );
}

#[test]
fn actions_target_and_destroy() {
    let drop = Action::Retire {
        schema: "public".into(),
        name: "events_p2024_01".into(),
        mode: RetentionMode::Drop,
        concurrently: false,
    };
    let detach = Action::Retire {
        schema: "public".into(),
        name: "events_p2024_02".into(),
        mode: RetentionMode::Detach,
        concurrently: true,
    };
    let create = Action::Create {
        name: "events_p2024_03".into(),
        lower: t("2024-03-01"),
        upper: t("2024-04-01"),
    };
    assert!(drop.destroys());
    assert!(!detach.destroys());
    assert!(!create.destroys());
    assert_eq!(drop.target(), "events_p2024_01");
    assert_eq!(detach.target(), "events_p2024_02");
    assert_eq!(create.target(), "events_p2024_03");
    let json = serde_json::to_value(&create).expect("serialize");
    assert_eq!(
        json,
        serde_json::json!({
            "action": "create",
            "name": "events_p2024_03",
            "lower": "2024-03-01",
            "upper": "2024-04-01",
        })
    );
}

// ---------------------------------------------------------------- gaps

#[test]
fn gaps_table() {
    fn check(parts: Vec<Partition>, want: &[(Option<Value>, Option<Value>)]) {
        assert_eq!(gaps(&parts), want);
    }
    let p = |lo: &str, hi: &str| part("p", t(lo), t(hi));
    check(vec![], &[]);
    check(vec![default_part()], &[]);
    check(monthly("2026-01-01", "2026-06-01"), &[]);
    check(
        vec![
            p("2026-03-01", "2026-04-01"),
            default_part(),
            p("2026-01-01", "2026-02-01"),
        ],
        &[(Some(t("2026-02-01")), Some(t("2026-03-01")))],
    );
    check(
        vec![
            p("2026-01-01", "2026-02-01"),
            p("2026-02-15", "2026-03-01"),
            p("2026-05-01", "2026-06-01"),
        ],
        &[
            (Some(t("2026-02-01")), Some(t("2026-02-15"))),
            (Some(t("2026-03-01")), Some(t("2026-05-01"))),
        ],
    );
    // MINVALUE and MAXVALUE partitions.
    let mut min = p("2000-01-01", "2026-01-01");
    min.lower = None;
    let mut max = p("2026-06-01", "2100-01-01");
    max.upper = None;
    check(
        vec![max, p("2026-02-01", "2026-03-01"), min],
        &[
            (Some(t("2026-01-01")), Some(t("2026-02-01"))),
            (Some(t("2026-03-01")), Some(t("2026-06-01"))),
        ],
    );
    // Overlaps are not gaps.
    check(
        vec![p("2026-01-01", "2026-03-01"), p("2026-02-01", "2026-04-01")],
        &[],
    );
}
