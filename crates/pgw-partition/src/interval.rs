//! The partition interval: parsing `--range` and `--retention`, the fixed grid partitions
//! sit on, and the name suffix of each partition. Pure.
//!
//! Time grids are in wall-clock time of the set's time zone (the server turns wall time into
//! instants, so its own time-zone database decides DST). Unlike pg_partman 4, whose grid for
//! an odd interval starts at whatever day `create_parent` ran, every grid here is anchored:
//! months to the calendar year, weeks to ISO Mondays, other day counts to 1970-01-01, and
//! sub-day intervals to midnight. So any host, any day, computes the same bounds.

use std::fmt;

use chrono::{Datelike, Months, NaiveDate, NaiveDateTime, TimeDelta, Timelike};

/// One partition's width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// Calendar months; divides a year (1, 2, 3, 4, 6) or is whole years.
    Months(u32),
    /// Whole days; multiples of 7 are weeks starting on Monday.
    Days(u32),
    /// Minutes within a day; divides a day.
    Minutes(u32),
    /// Integer keys: this many values per partition.
    Integer(i64),
}

/// A bound value on the grid: wall time for time keys, a number for integer keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    Time(NaiveDateTime),
    Int(i64),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Time(t) if t.time() == chrono::NaiveTime::MIN => {
                write!(f, "{}", t.format("%Y-%m-%d"))
            }
            Value::Time(t) => write!(f, "{}", t.format("%Y-%m-%d %H:%M:%S")),
            Value::Int(i) => write!(f, "{i}"),
        }
    }
}

/// Why an interval was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntervalError {
    #[error("'{0}' is not an interval: use daily, weekly, monthly, quarterly, yearly, hourly, or a number and a unit such as '1 month', '7 days', '6 hours'")]
    Syntax(String),
    #[error("'{0}' does not divide a year: use 1, 2, 3, 4, 6 or 12 months, or whole years")]
    MonthsDoNotDivide(String),
    #[error("'{0}' does not divide a day: use 1, 2, 3, 4, 6, 8 or 12 hours, or minutes that divide 1440")]
    MinutesDoNotDivide(String),
    #[error("'{0}' must be a positive whole number for an integer key")]
    Integer(String),
    #[error("'{0}' is a time interval, but the partition key is an integer: give a number")]
    TimeForInteger(String),
    #[error("'{0}' is a number, but the partition key is a date or time: give an interval such as '1 month'")]
    IntegerForTime(String),
}

/// The unit words accepted after a count, and what one of them is.
const UNITS: &[(&[&str], Unit)] = &[
    (&["year", "years", "yr", "yrs", "y"], Unit::Months(12)),
    (&["month", "months", "mon", "mons"], Unit::Months(1)),
    (&["week", "weeks", "w"], Unit::Days(7)),
    (&["day", "days", "d"], Unit::Days(1)),
    (&["hour", "hours", "hr", "hrs", "h"], Unit::Minutes(60)),
    (&["minute", "minutes", "min", "mins", "m"], Unit::Minutes(1)),
];

#[derive(Debug, Clone, Copy)]
enum Unit {
    Months(u32),
    Days(u32),
    Minutes(u32),
}

impl Interval {
    /// Parses a time interval: a keyword (`daily`, `weekly`, `monthly`, `quarterly`,
    /// `yearly`, `hourly`, `half-hour`, `quarter-hour`) or `<count> <unit>` (`1 month`,
    /// `2 weeks`, `6 hours`, `30 minutes`, also `1mon`, `3 months`).
    pub fn parse_time(text: &str) -> Result<Interval, IntervalError> {
        let t = text.trim().to_ascii_lowercase();
        let keyword = match t.as_str() {
            "yearly" => Some(Interval::Months(12)),
            "quarterly" => Some(Interval::Months(3)),
            "monthly" => Some(Interval::Months(1)),
            "weekly" => Some(Interval::Days(7)),
            "daily" => Some(Interval::Days(1)),
            "hourly" => Some(Interval::Minutes(60)),
            "half-hour" => Some(Interval::Minutes(30)),
            "quarter-hour" => Some(Interval::Minutes(15)),
            _ => None,
        };
        if let Some(k) = keyword {
            return Ok(k);
        }
        if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
            return Err(IntervalError::IntegerForTime(text.to_string()));
        }
        let digits: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
        let rest = t[digits.len()..].trim();
        let count: u32 = digits
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| IntervalError::Syntax(text.to_string()))?;
        let unit = UNITS
            .iter()
            .find(|(words, _)| words.contains(&rest))
            .map(|(_, u)| *u)
            .ok_or_else(|| IntervalError::Syntax(text.to_string()))?;
        let too_big = || IntervalError::Syntax(text.to_string());
        match unit {
            Unit::Months(m) => {
                let months = count
                    .checked_mul(m)
                    .filter(|n| *n <= 12 * 1000)
                    .ok_or_else(too_big)?;
                if 12 % months == 0 || months % 12 == 0 {
                    Ok(Interval::Months(months))
                } else {
                    Err(IntervalError::MonthsDoNotDivide(text.to_string()))
                }
            }
            Unit::Days(d) => {
                let days = count
                    .checked_mul(d)
                    .filter(|n| *n <= 366 * 100)
                    .ok_or_else(too_big)?;
                Ok(Interval::Days(days))
            }
            Unit::Minutes(m) => {
                let minutes = count.checked_mul(m).ok_or_else(too_big)?;
                if minutes % 1440 == 0 {
                    let days = Some(minutes / 1440)
                        .filter(|n| *n <= 366 * 100)
                        .ok_or_else(too_big)?;
                    Ok(Interval::Days(days))
                } else if 1440 % minutes == 0 {
                    Ok(Interval::Minutes(minutes))
                } else {
                    Err(IntervalError::MinutesDoNotDivide(text.to_string()))
                }
            }
        }
    }

    /// Parses an integer interval (`--range 100000`).
    pub fn parse_integer(text: &str) -> Result<Interval, IntervalError> {
        let t = text.trim();
        match t.parse::<i64>() {
            Ok(n) if n > 0 => Ok(Interval::Integer(n)),
            _ if Interval::parse_time(t).is_ok() => Err(IntervalError::TimeForInteger(t.into())),
            _ => Err(IntervalError::Integer(t.to_string())),
        }
    }

    /// Whether this interval is for integer keys.
    pub fn is_integer(self) -> bool {
        matches!(self, Interval::Integer(_))
    }

    /// The start of the grid cell holding `v` (floor).
    pub fn align(self, v: Value) -> Value {
        match (self, v) {
            (Interval::Integer(n), Value::Int(i)) => Value::Int(i.div_euclid(n) * n),
            (Interval::Months(n), Value::Time(t)) => {
                let total = i64::from(t.year()) * 12 + i64::from(t.month0());
                let start = total.div_euclid(i64::from(n)) * i64::from(n);
                let (year, month0) = (start.div_euclid(12), start.rem_euclid(12));
                Value::Time(midnight(year as i32, month0 as u32 + 1, 1))
            }
            (Interval::Days(n), Value::Time(t)) => {
                // Weeks start on Monday: 1970-01-05 was one.
                let anchor = if n % 7 == 0 {
                    midnight(1970, 1, 5)
                } else {
                    midnight(1970, 1, 1)
                };
                let days = (t.date() - anchor.date()).num_days();
                let start = days.div_euclid(i64::from(n)) * i64::from(n);
                Value::Time(anchor + TimeDelta::days(start))
            }
            (Interval::Minutes(n), Value::Time(t)) => {
                let minute = i64::from(t.hour() * 60 + t.minute());
                let start = minute - minute.rem_euclid(i64::from(n));
                Value::Time(t.date().and_hms_opt(0, 0, 0).unwrap_or(t) + TimeDelta::minutes(start))
            }
            // A mismatch cannot come from a validated set; leave the value as it is.
            (_, v) => v,
        }
    }

    /// `v` moved by `k` intervals (negative: back). None if it leaves the calendar or i64.
    pub fn step(self, v: Value, k: i64) -> Option<Value> {
        match (self, v) {
            (Interval::Integer(n), Value::Int(i)) => {
                n.checked_mul(k)?.checked_add(i).map(Value::Int)
            }
            (Interval::Months(n), Value::Time(t)) => {
                let months = u32::try_from(u64::from(n).checked_mul(k.unsigned_abs())?).ok()?;
                let moved = if k >= 0 {
                    t.checked_add_months(Months::new(months))
                } else {
                    t.checked_sub_months(Months::new(months))
                };
                moved.map(Value::Time)
            }
            (Interval::Days(n), Value::Time(t)) => t
                .checked_add_signed(TimeDelta::try_days(i64::from(n).checked_mul(k)?)?)
                .map(Value::Time),
            (Interval::Minutes(n), Value::Time(t)) => t
                .checked_add_signed(TimeDelta::try_minutes(i64::from(n).checked_mul(k)?)?)
                .map(Value::Time),
            _ => None,
        }
    }

    /// The suffix of the partition starting at `lower`, pg_partman's way: `2024` (whole
    /// years), `2024q1` (quarters), `2024_01` (months), `2024w01` (ISO weeks),
    /// `2024_01_31` (days), `2024_01_31_1300` (sub-day), and the lower bound for integers
    /// (`m` for a minus sign).
    pub fn suffix(self, lower: Value) -> String {
        match (self, lower) {
            (Interval::Integer(_), Value::Int(i)) if i < 0 => format!("m{}", i.unsigned_abs()),
            (Interval::Integer(_), Value::Int(i)) => i.to_string(),
            (Interval::Months(n), Value::Time(t)) if n % 12 == 0 => t.format("%Y").to_string(),
            (Interval::Months(3), Value::Time(t)) => {
                format!("{}q{}", t.format("%Y"), t.month0() / 3 + 1)
            }
            (Interval::Months(_), Value::Time(t)) => t.format("%Y_%m").to_string(),
            (Interval::Days(7), Value::Time(t)) => {
                let w = t.iso_week();
                format!("{:04}w{:02}", w.year(), w.week())
            }
            (Interval::Days(_), Value::Time(t)) => t.format("%Y_%m_%d").to_string(),
            (Interval::Minutes(_), Value::Time(t)) => t.format("%Y_%m_%d_%H%M").to_string(),
            (_, v) => v.to_string(),
        }
    }
}

impl fmt::Display for Interval {
    /// The form `--range` takes and the config table stores: `1 month`, `7 days`,
    /// `60 minutes`, `100000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = |n: u32| if n == 1 { "" } else { "s" };
        match *self {
            Interval::Months(n) if n % 12 == 0 => write!(f, "{} year{}", n / 12, plural(n / 12)),
            Interval::Months(n) => write!(f, "{n} month{}", plural(n)),
            Interval::Days(n) => write!(f, "{n} day{}", plural(n)),
            Interval::Minutes(n) => write!(f, "{n} minute{}", plural(n)),
            Interval::Integer(n) => write!(f, "{n}"),
        }
    }
}

fn midnight(year: i32, month: u32, day: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(year, month, day)
        .unwrap_or(NaiveDate::MIN)
        .and_hms_opt(0, 0, 0)
        .unwrap_or(NaiveDateTime::MIN)
}

/// A retention period: an interval of time (`12 months`, `90 days`) or, for integer keys, a
/// count of values. Partitions whose upper bound is at or before `newest - retention` retire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    Time { months: u32, minutes: i64 },
    Integer(i64),
}

impl Retention {
    /// Parses `--retention` for a key: time units for time keys, a number for integers.
    /// Any whole count of any unit is allowed (it need not divide anything).
    pub fn parse(text: &str, integer_key: bool) -> Result<Retention, IntervalError> {
        if integer_key {
            return match Interval::parse_integer(text)? {
                Interval::Integer(n) => Ok(Retention::Integer(n)),
                _ => Err(IntervalError::Integer(text.to_string())),
            };
        }
        let t = text.trim().to_ascii_lowercase();
        if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
            return Err(IntervalError::IntegerForTime(text.to_string()));
        }
        let digits: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
        let rest = t[digits.len()..].trim();
        let count: u32 = digits
            .parse()
            .ok()
            .filter(|n| *n > 0 && *n <= 100_000)
            .ok_or_else(|| IntervalError::Syntax(text.to_string()))?;
        let unit = UNITS
            .iter()
            .find(|(words, _)| words.contains(&rest))
            .map(|(_, u)| *u)
            .ok_or_else(|| IntervalError::Syntax(text.to_string()))?;
        Ok(match unit {
            Unit::Months(m) => Retention::Time {
                months: count * m,
                minutes: 0,
            },
            Unit::Days(d) => Retention::Time {
                months: 0,
                minutes: i64::from(count) * i64::from(d) * 1440,
            },
            Unit::Minutes(m) => Retention::Time {
                months: 0,
                minutes: i64::from(count) * i64::from(m),
            },
        })
    }

    /// The cutoff: `newest` minus the retention. None if it leaves the calendar.
    pub fn cutoff(self, newest: Value) -> Option<Value> {
        match (self, newest) {
            (Retention::Integer(n), Value::Int(i)) => i.checked_sub(n).map(Value::Int),
            (Retention::Time { months, minutes }, Value::Time(t)) => t
                .checked_sub_months(Months::new(months))?
                .checked_sub_signed(TimeDelta::try_minutes(minutes)?)
                .map(Value::Time),
            _ => None,
        }
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Retention::Integer(n) => write!(f, "{n}"),
            Retention::Time {
                months: 1,
                minutes: 0,
            } => write!(f, "1 month"),
            Retention::Time { months, minutes: 0 } => write!(f, "{months} months"),
            Retention::Time {
                months: 0,
                minutes: 1440,
            } => write!(f, "1 day"),
            Retention::Time { months: 0, minutes } if minutes % 1440 == 0 => {
                write!(f, "{} days", minutes / 1440)
            }
            Retention::Time {
                months: 0,
                minutes: 1,
            } => write!(f, "1 minute"),
            Retention::Time { months: 0, minutes } => write!(f, "{minutes} minutes"),
            Retention::Time { months, minutes } => write!(f, "{months} months {minutes} minutes"),
        }
    }
}

/// Both serialize as their text form (`1 month`, `12 months`), as the config table stores it.
impl serde::Serialize for Interval {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl serde::Serialize for Retention {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
