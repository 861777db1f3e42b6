//! Unit tests of `adopt::infer_interval`: the interval most of a set's partitions have.

use super::{default_part, i, part, t};
use crate::adopt::infer_interval;
use crate::interval::{Interval, Value};
use crate::model::{KeyKind, Partition};

/// Partitions `[cells[k], cells[k+1])`.
fn chain(cells: &[Value]) -> Vec<Partition> {
    cells
        .windows(2)
        .enumerate()
        .map(|(k, w)| part(&format!("p{k}"), w[0], w[1]))
        .collect()
}

fn check(parts: &[Partition], kind: KeyKind, want: Option<(Interval, usize)>) {
    assert_eq!(infer_interval(parts, kind), want, "{parts:#?}");
}

#[test]
fn calendar_intervals() {
    let months = chain(&[
        t("2026-01-01"),
        t("2026-02-01"),
        t("2026-03-01"),
        t("2026-04-01"),
    ]);
    check(
        &months,
        KeyKind::Timestamptz,
        Some((Interval::Months(1), 3)),
    );
    let quarters = chain(&[t("2026-01-01"), t("2026-04-01"), t("2026-07-01")]);
    check(&quarters, KeyKind::Date, Some((Interval::Months(3), 2)));
    let days = chain(&[t("2026-11-22"), t("2026-11-23"), t("2026-11-24")]);
    check(&days, KeyKind::Timestamp, Some((Interval::Days(1), 2)));
    // ISO weeks start on Monday; 2026-11-23 is one.
    let weeks = chain(&[t("2026-11-23"), t("2026-11-30"), t("2026-12-07")]);
    check(&weeks, KeyKind::Timestamptz, Some((Interval::Days(7), 2)));
    let hours = chain(&[t("2026-11-24 10:00"), t("2026-11-24 11:00")]);
    check(
        &hours,
        KeyKind::Timestamptz,
        Some((Interval::Minutes(60), 1)),
    );
}

#[test]
fn the_default_and_a_minority_of_odd_partitions_do_not_decide() {
    let mut parts = chain(&[
        t("2026-01-01"),
        t("2026-02-01"),
        t("2026-03-01"),
        t("2026-04-01"),
    ]);
    parts.push(default_part());
    // One hand-made catch-all for old data, off the grid.
    parts.push(part("old", t("2019-05-17"), t("2026-01-01")));
    check(&parts, KeyKind::Timestamptz, Some((Interval::Months(1), 3)));
}

#[test]
fn no_majority_or_nothing_to_go_by() {
    let mixed = vec![
        part("a", t("2026-01-01"), t("2026-02-01")),
        part("b", t("2026-02-01"), t("2026-02-02")),
    ];
    check(&mixed, KeyKind::Timestamptz, None);
    check(&[default_part()], KeyKind::Timestamptz, None);
    check(&[], KeyKind::Integer, None);
    // Days that do not sit on the grid (a week starting on a Tuesday) are not weeks.
    let tuesday_weeks = chain(&[t("2026-11-24"), t("2026-12-01"), t("2026-12-08")]);
    check(&tuesday_weeks, KeyKind::Timestamptz, None);
}

#[test]
fn integer_widths() {
    let parts = chain(&[i(0), i(100), i(200), i(300)]);
    check(&parts, KeyKind::Integer, Some((Interval::Integer(100), 3)));
    let uneven = chain(&[i(0), i(100), i(150)]);
    check(&uneven, KeyKind::Integer, None);
    let mostly = chain(&[i(0), i(1000), i(2000), i(3000), i(3500)]);
    check(
        &mostly,
        KeyKind::Integer,
        Some((Interval::Integer(1000), 3)),
    );
}
