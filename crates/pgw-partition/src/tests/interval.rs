//! Unit tests of `interval.rs`: parsing `--range` and `--retention`, the grid (`align`,
//! `step`), partition name suffixes and the text form the config table stores.

use super::{i, t};
use crate::interval::{Interval, IntervalError, Retention, Value};

#[test]
fn parse_time_keywords() {
    let cases = [
        ("daily", Interval::Days(1)),
        ("weekly", Interval::Days(7)),
        ("monthly", Interval::Months(1)),
        ("quarterly", Interval::Months(3)),
        ("yearly", Interval::Months(12)),
        ("hourly", Interval::Minutes(60)),
        ("half-hour", Interval::Minutes(30)),
        ("quarter-hour", Interval::Minutes(15)),
        ("  Monthly ", Interval::Months(1)),
        ("DAILY", Interval::Days(1)),
    ];
    for (text, want) in cases {
        assert_eq!(Interval::parse_time(text), Ok(want), "{text:?}");
    }
}

#[test]
fn parse_time_count_and_unit() {
    let cases = [
        ("1 month", Interval::Months(1)),
        ("3 months", Interval::Months(3)),
        ("2 months", Interval::Months(2)),
        ("4 months", Interval::Months(4)),
        ("6 months", Interval::Months(6)),
        ("12 months", Interval::Months(12)),
        ("24 months", Interval::Months(24)),
        ("1 year", Interval::Months(12)),
        ("2 years", Interval::Months(24)),
        ("1mon", Interval::Months(1)),
        ("3mons", Interval::Months(3)),
        ("1 MONTH", Interval::Months(1)),
        ("1 day", Interval::Days(1)),
        ("7 days", Interval::Days(7)),
        ("3d", Interval::Days(3)),
        ("1 week", Interval::Days(7)),
        ("2 weeks", Interval::Days(14)),
        ("6 hours", Interval::Minutes(360)),
        ("1 hour", Interval::Minutes(60)),
        ("12h", Interval::Minutes(720)),
        ("30 minutes", Interval::Minutes(30)),
        ("15 min", Interval::Minutes(15)),
        ("1 minute", Interval::Minutes(1)),
        ("24 hours", Interval::Days(1)),
        ("48 hours", Interval::Days(2)),
        ("1440 minutes", Interval::Days(1)),
    ];
    for (text, want) in cases {
        assert_eq!(Interval::parse_time(text), Ok(want), "{text:?}");
    }
}

#[test]
fn parse_time_refusals() {
    let syntax = |s: &str| IntervalError::Syntax(s.to_string());
    let cases = [
        (
            "5 months",
            IntervalError::MonthsDoNotDivide("5 months".into()),
        ),
        (
            "13 months",
            IntervalError::MonthsDoNotDivide("13 months".into()),
        ),
        (
            "18 months",
            IntervalError::MonthsDoNotDivide("18 months".into()),
        ),
        (
            "7 hours",
            IntervalError::MinutesDoNotDivide("7 hours".into()),
        ),
        (
            "7 minutes",
            IntervalError::MinutesDoNotDivide("7 minutes".into()),
        ),
        ("12", IntervalError::IntegerForTime("12".into())),
        ("1000", IntervalError::IntegerForTime("1000".into())),
        ("0 days", syntax("0 days")),
        ("0 months", syntax("0 months")),
        ("foo", syntax("foo")),
        ("", syntax("")),
        ("   ", syntax("   ")),
        ("month", syntax("month")),
        ("-1 month", syntax("-1 month")),
        ("1.5 hours", syntax("1.5 hours")),
        ("1 fortnight", syntax("1 fortnight")),
        ("1 month 2 days", syntax("1 month 2 days")),
        ("100000 days", syntax("100000 days")),
        ("99999 years", syntax("99999 years")),
    ];
    for (text, want) in cases {
        assert_eq!(Interval::parse_time(text), Err(want), "{text:?}");
    }
}

#[test]
fn parse_integer_table() {
    let cases = [
        ("1000", Ok(Interval::Integer(1000))),
        (" 42 ", Ok(Interval::Integer(42))),
        ("1", Ok(Interval::Integer(1))),
        ("0", Err(IntervalError::Integer("0".into()))),
        ("-5", Err(IntervalError::Integer("-5".into()))),
        ("abc", Err(IntervalError::Integer("abc".into()))),
        ("", Err(IntervalError::Integer("".into()))),
        (
            "1 month",
            Err(IntervalError::TimeForInteger("1 month".into())),
        ),
        (
            "monthly",
            Err(IntervalError::TimeForInteger("monthly".into())),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(Interval::parse_integer(text), want, "{text:?}");
    }
}

#[test]
fn is_integer() {
    assert!(Interval::Integer(10).is_integer());
    assert!(!Interval::Months(1).is_integer());
    assert!(!Interval::Days(1).is_integer());
    assert!(!Interval::Minutes(60).is_integer());
}

#[test]
fn align_table() {
    fn check(iv: Interval, v: Value, want: Value) {
        assert_eq!(iv.align(v), want, "{iv:?} align {v}");
        // Aligning is idempotent: a cell's start is its own cell's start.
        assert_eq!(iv.align(want), want, "{iv:?} align {want} (again)");
    }
    let now = t("2026-11-24 10:15");
    let cases = [
        // Months: anchored to the calendar year.
        (Interval::Months(1), now, t("2026-11-01")),
        (Interval::Months(2), now, t("2026-11-01")),
        (Interval::Months(3), now, t("2026-10-01")),
        (Interval::Months(4), now, t("2026-09-01")),
        (Interval::Months(6), now, t("2026-07-01")),
        (Interval::Months(12), now, t("2026-01-01")),
        (Interval::Months(24), now, t("2026-01-01")),
        (Interval::Months(24), t("2027-05-05"), t("2026-01-01")),
        (Interval::Months(24), t("2025-12-31 23:59"), t("2024-01-01")),
        (Interval::Months(1), t("2026-11-01"), t("2026-11-01")),
        (
            Interval::Months(3),
            t("2026-03-31 23:59:59"),
            t("2026-01-01"),
        ),
        (Interval::Months(1), t("1969-12-31 23:00"), t("1969-12-01")),
        // Days: 1 day is midnight.
        (Interval::Days(1), now, t("2026-11-24")),
        (Interval::Days(1), t("2024-02-29 23:59:59"), t("2024-02-29")),
        // Weeks start on Monday (2026-11-24 is a Tuesday).
        (Interval::Days(7), now, t("2026-11-23")),
        (Interval::Days(7), t("2026-11-23"), t("2026-11-23")),
        (Interval::Days(7), t("2026-11-29 23:59"), t("2026-11-23")),
        (Interval::Days(7), t("2026-11-30"), t("2026-11-30")),
        (Interval::Days(7), t("1970-01-01"), t("1969-12-29")),
        (Interval::Days(14), t("2026-11-30"), t("2026-11-23")),
        (Interval::Days(14), t("2026-12-07"), t("2026-12-07")),
        // Other day counts: anchored at 1970-01-01 (2026-11-24 is day 20781).
        (Interval::Days(2), now, t("2026-11-23")),
        (Interval::Days(2), t("2026-11-25 08:00"), t("2026-11-25")),
        (Interval::Days(2), t("1970-01-02"), t("1970-01-01")),
        (Interval::Days(2), t("1969-12-31"), t("1969-12-30")),
        (Interval::Days(3), now, t("2026-11-24")),
        // Minutes: anchored at midnight.
        (Interval::Minutes(60), now, t("2026-11-24 10:00")),
        (Interval::Minutes(15), now, t("2026-11-24 10:15")),
        (
            Interval::Minutes(15),
            t("2026-11-24 10:29:59"),
            t("2026-11-24 10:15"),
        ),
        (
            Interval::Minutes(30),
            t("2026-11-24 10:59"),
            t("2026-11-24 10:30"),
        ),
        (
            Interval::Minutes(360),
            t("2026-11-24 13:00"),
            t("2026-11-24 12:00"),
        ),
        (
            Interval::Minutes(480),
            t("2026-11-24 23:59"),
            t("2026-11-24 16:00"),
        ),
        (
            Interval::Minutes(60),
            t("2026-11-24 00:00"),
            t("2026-11-24 00:00"),
        ),
        // Integers: floor, negatives included.
        (Interval::Integer(10), i(-1), i(-10)),
        (Interval::Integer(10), i(-10), i(-10)),
        (Interval::Integer(10), i(-11), i(-20)),
        (Interval::Integer(10), i(0), i(0)),
        (Interval::Integer(10), i(9), i(0)),
        (Interval::Integer(10), i(10), i(10)),
        (Interval::Integer(1000), i(123_456), i(123_000)),
        (Interval::Integer(1), i(-7), i(-7)),
    ];
    for (iv, v, want) in cases {
        check(iv, v, want);
    }
}

#[test]
fn align_leaves_mismatched_values_alone() {
    assert_eq!(Interval::Months(1).align(i(17)), i(17));
    assert_eq!(
        Interval::Integer(10).align(t("2026-11-24 10:15")),
        t("2026-11-24 10:15")
    );
}

#[test]
fn step_table() {
    fn check(iv: Interval, v: Value, k: i64, want: Option<Value>) {
        assert_eq!(iv.step(v, k), want, "{iv:?} step {v} by {k}");
    }
    let cases = [
        (
            Interval::Months(1),
            t("2026-11-01"),
            0,
            Some(t("2026-11-01")),
        ),
        (
            Interval::Months(1),
            t("2026-11-01"),
            1,
            Some(t("2026-12-01")),
        ),
        (
            Interval::Months(1),
            t("2026-11-01"),
            2,
            Some(t("2027-01-01")),
        ),
        (
            Interval::Months(1),
            t("2026-11-01"),
            -11,
            Some(t("2025-12-01")),
        ),
        (
            Interval::Months(3),
            t("2026-10-01"),
            -4,
            Some(t("2025-10-01")),
        ),
        (
            Interval::Months(12),
            t("2026-01-01"),
            3,
            Some(t("2029-01-01")),
        ),
        (
            Interval::Months(24),
            t("2026-01-01"),
            -1,
            Some(t("2024-01-01")),
        ),
        // Month ends clamp; leap years count.
        (
            Interval::Months(1),
            t("2024-01-31"),
            1,
            Some(t("2024-02-29")),
        ),
        (
            Interval::Months(1),
            t("2023-01-31"),
            1,
            Some(t("2023-02-28")),
        ),
        (
            Interval::Months(1),
            t("2024-03-31"),
            -1,
            Some(t("2024-02-29")),
        ),
        (
            Interval::Months(12),
            t("2024-02-29"),
            1,
            Some(t("2025-02-28")),
        ),
        (Interval::Days(1), t("2024-02-28"), 1, Some(t("2024-02-29"))),
        (Interval::Days(1), t("2023-02-28"), 1, Some(t("2023-03-01"))),
        (
            Interval::Days(1),
            t("2024-03-01"),
            -1,
            Some(t("2024-02-29")),
        ),
        (Interval::Days(1), t("2026-12-31"), 1, Some(t("2027-01-01"))),
        (Interval::Days(7), t("2026-12-28"), 1, Some(t("2027-01-04"))),
        (
            Interval::Days(7),
            t("2026-11-23"),
            -4,
            Some(t("2026-10-26")),
        ),
        (
            Interval::Minutes(15),
            t("2026-12-31 23:45"),
            1,
            Some(t("2027-01-01")),
        ),
        (
            Interval::Minutes(60),
            t("2026-01-01"),
            -1,
            Some(t("2025-12-31 23:00")),
        ),
        (
            Interval::Minutes(360),
            t("2026-11-24 12:00"),
            3,
            Some(t("2026-11-25 06:00")),
        ),
        (Interval::Integer(10), i(0), -1, Some(i(-10))),
        (Interval::Integer(10), i(120), 4, Some(i(160))),
        // Off the calendar or i64: None.
        (Interval::Integer(i64::MAX), i(1), 1, None),
        (Interval::Integer(10), i(i64::MIN), -1, None),
        (Interval::Months(12), t("2026-01-01"), 1_000_000, None),
        (Interval::Days(1), t("2026-01-01"), i64::MAX, None),
        (Interval::Minutes(60), t("2026-01-01"), i64::MIN, None),
        // Mismatched kinds: None.
        (Interval::Months(1), i(0), 1, None),
        (Interval::Integer(10), t("2026-01-01"), 1, None),
    ];
    for (iv, v, k, want) in cases {
        check(iv, v, k, want);
    }
}

#[test]
fn suffix_table() {
    fn check(iv: Interval, lower: Value, want: &str) {
        assert_eq!(iv.suffix(lower), want, "{iv:?} suffix of {lower}");
    }
    let cases = [
        (Interval::Months(12), t("2026-01-01"), "2026"),
        (Interval::Months(24), t("2026-01-01"), "2026"),
        (Interval::Months(3), t("2026-10-01"), "2026q4"),
        (Interval::Months(3), t("2026-01-01"), "2026q1"),
        (Interval::Months(3), t("2026-04-01"), "2026q2"),
        (Interval::Months(1), t("2026-11-01"), "2026_11"),
        (Interval::Months(1), t("2026-01-01"), "2026_01"),
        (Interval::Months(6), t("2026-07-01"), "2026_07"),
        // ISO weeks, and the ISO year at the turn of the year.
        (Interval::Days(7), t("2026-11-23"), "2026w48"),
        (Interval::Days(7), t("2024-12-30"), "2025w01"),
        (Interval::Days(7), t("2026-12-28"), "2026w53"),
        (Interval::Days(7), t("2027-01-04"), "2027w01"),
        (Interval::Days(1), t("2026-11-24"), "2026_11_24"),
        (Interval::Days(2), t("2026-11-23"), "2026_11_23"),
        (Interval::Days(14), t("2026-11-23"), "2026_11_23"),
        (
            Interval::Minutes(60),
            t("2026-11-24 13:00"),
            "2026_11_24_1300",
        ),
        (
            Interval::Minutes(15),
            t("2026-11-24 00:45"),
            "2026_11_24_0045",
        ),
        (Interval::Integer(1000), i(1000), "1000"),
        (Interval::Integer(1000), i(0), "0"),
        (Interval::Integer(10), i(-10), "m10"),
        (Interval::Integer(10), i(i64::MIN), "m9223372036854775808"),
    ];
    for (iv, lower, want) in cases {
        check(iv, lower, want);
    }
}

#[test]
fn display_table() {
    let cases = [
        (Interval::Months(1), "1 month"),
        (Interval::Months(3), "3 months"),
        (Interval::Months(12), "1 year"),
        (Interval::Months(24), "2 years"),
        (Interval::Days(1), "1 day"),
        (Interval::Days(7), "7 days"),
        (Interval::Minutes(1), "1 minute"),
        (Interval::Minutes(60), "60 minutes"),
        (Interval::Integer(1000), "1000"),
    ];
    for (iv, want) in cases {
        assert_eq!(iv.to_string(), want, "{iv:?}");
    }
}

#[test]
fn display_round_trips() {
    let time = [
        "daily",
        "weekly",
        "monthly",
        "quarterly",
        "yearly",
        "hourly",
        "half-hour",
        "quarter-hour",
        "2 months",
        "4 months",
        "6 months",
        "2 years",
        "10 years",
        "2 weeks",
        "3 days",
        "2 hours",
        "8 hours",
        "12 hours",
        "48 hours",
        "5 minutes",
        "1 minute",
    ];
    for text in time {
        let iv = Interval::parse_time(text).expect(text);
        assert_eq!(
            Interval::parse_time(&iv.to_string()),
            Ok(iv),
            "{text} -> {iv}"
        );
    }
    for text in ["1", "10", "100000"] {
        let iv = Interval::parse_integer(text).expect(text);
        assert_eq!(
            Interval::parse_integer(&iv.to_string()),
            Ok(iv),
            "{text} -> {iv}"
        );
    }
}

#[test]
fn value_display() {
    let cases = [
        (t("2026-11-24"), "2026-11-24"),
        (t("2026-11-24 13:05"), "2026-11-24 13:05:00"),
        (t("2026-11-24 00:00:01"), "2026-11-24 00:00:01"),
        (i(-42), "-42"),
        (i(0), "0"),
    ];
    for (v, want) in cases {
        assert_eq!(v.to_string(), want, "{v:?}");
    }
}

#[test]
fn retention_parse_table() {
    let days = |n: i64| Retention::Time {
        months: 0,
        minutes: n * 1440,
    };
    let months = |n: u32| Retention::Time {
        months: n,
        minutes: 0,
    };
    let cases = [
        ("12 months", false, Ok(months(12))),
        ("1 month", false, Ok(months(1))),
        ("5 months", false, Ok(months(5))),
        ("1 year", false, Ok(months(12))),
        ("2 years", false, Ok(months(24))),
        ("90 days", false, Ok(days(90))),
        ("2 weeks", false, Ok(days(14))),
        (
            "6 hours",
            false,
            Ok(Retention::Time {
                months: 0,
                minutes: 360,
            }),
        ),
        (
            "7 hours",
            false,
            Ok(Retention::Time {
                months: 0,
                minutes: 420,
            }),
        ),
        (
            "45 min",
            false,
            Ok(Retention::Time {
                months: 0,
                minutes: 45,
            }),
        ),
        (" 3 DAYS ", false, Ok(days(3))),
        ("12", false, Err(IntervalError::IntegerForTime("12".into()))),
        ("0 days", false, Err(IntervalError::Syntax("0 days".into()))),
        ("foo", false, Err(IntervalError::Syntax("foo".into()))),
        ("", false, Err(IntervalError::Syntax("".into()))),
        (
            "100001 days",
            false,
            Err(IntervalError::Syntax("100001 days".into())),
        ),
        ("1000", true, Ok(Retention::Integer(1000))),
        ("0", true, Err(IntervalError::Integer("0".into()))),
        ("-3", true, Err(IntervalError::Integer("-3".into()))),
        (
            "1 month",
            true,
            Err(IntervalError::TimeForInteger("1 month".into())),
        ),
    ];
    for (text, integer, want) in cases {
        assert_eq!(
            Retention::parse(text, integer),
            want,
            "{text:?} integer={integer}"
        );
    }
}

#[test]
fn retention_cutoff_table() {
    fn check(text: &str, integer: bool, newest: Value, want: Option<Value>) {
        let r = Retention::parse(text, integer).expect(text);
        assert_eq!(r.cutoff(newest), want, "{text} before {newest}");
    }
    let cases = [
        (
            "12 months",
            false,
            t("2026-11-24 10:15"),
            Some(t("2025-11-24 10:15")),
        ),
        ("1 month", false, t("2024-03-31"), Some(t("2024-02-29"))),
        ("1 year", false, t("2024-02-29"), Some(t("2023-02-28"))),
        ("90 days", false, t("2026-03-01"), Some(t("2025-12-01"))),
        ("1 day", false, t("2024-03-01"), Some(t("2024-02-29"))),
        (
            "6 hours",
            false,
            t("2026-11-24 03:00"),
            Some(t("2026-11-23 21:00")),
        ),
        ("1000", true, i(5000), Some(i(4000))),
        ("1000", true, i(-5000), Some(i(-6000))),
        ("1", true, i(i64::MIN), None),
        // Mismatched kinds.
        ("1000", true, t("2026-01-01"), None),
        ("1 month", false, i(5000), None),
    ];
    for (text, integer, newest, want) in cases {
        check(text, integer, newest, want);
    }
}

#[test]
fn retention_display_round_trips() {
    let cases = [
        ("12 months", false, "12 months"),
        ("1 year", false, "12 months"),
        ("90 days", false, "90 days"),
        ("2 weeks", false, "14 days"),
        ("6 hours", false, "360 minutes"),
        ("1000", true, "1000"),
    ];
    for (text, integer, want) in cases {
        let r = Retention::parse(text, integer).expect(text);
        assert_eq!(r.to_string(), want, "{text}");
        assert_eq!(Retention::parse(&r.to_string(), integer), Ok(r), "{text}");
    }
}

#[test]
fn serialize_as_text() {
    let iv = serde_json::to_string(&Interval::Months(3)).expect("serialize");
    assert_eq!(iv, "\"3 months\"");
    let r = serde_json::to_string(&Retention::Integer(5)).expect("serialize");
    assert_eq!(r, "\"5\"");
}

/// Found by review: a huge hour count became a day count the config table could not read
/// back, and stepping by i64::MIN panicked instead of giving None.
#[test]
fn extreme_counts_are_refused_or_none() {
    assert!(Interval::parse_time("878424 hours").is_err());
    assert_eq!(
        Interval::parse_time("48 hours"),
        Ok(Interval::Days(2)),
        "whole days in hours"
    );
    assert_eq!(
        Interval::Months(1).step(t("2026-11-24 00:00"), i64::MIN),
        None
    );
    assert_eq!(
        Interval::Days(1).step(t("2026-11-24 00:00"), i64::MIN),
        None
    );
    assert_eq!(Interval::Integer(10).step(i(0), i64::MIN), None);
}
