//! Cron schedules for scheduled backups (`spec.backup.schedule`).
//!
//! Supports the standard 5-field cron syntax accepted by Kubernetes CronJob
//! (`minute hour day-of-month month day-of-week`), the `@yearly`/`@annually`,
//! `@monthly`, `@weekly`, `@daily`/`@midnight` and `@hourly` macros, and is
//! always evaluated in UTC.

use k8s_openapi::jiff::{Timestamp, civil::Date, tz::TimeZone};

use std::fmt;
use std::str::FromStr;

/// One of the five cron fields, used in error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day-of-month",
            Field::Month => "month",
            Field::DayOfWeek => "day-of-week",
        })
    }
}

/// Why a schedule expression was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("empty schedule")]
    Empty,
    #[error(
        "time zone prefix \"{prefix}\" is not supported: the schedule is always evaluated in UTC"
    )]
    TimeZonePrefix { prefix: String },
    #[error("{name} is not supported: backups need a time-based schedule")]
    UnsupportedMacro { name: String },
    #[error(
        "unknown macro \"{name}\" (expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"
    )]
    UnknownMacro { name: String },
    #[error("expected 5 fields (minute hour day-of-month month day-of-week), got {got}")]
    FieldCount { got: usize },
    #[error("{field} field \"{text}\": empty list element")]
    EmptyElement { field: Field, text: String },
    #[error("{field} field \"{text}\": \"{value}\" is not a valid value")]
    InvalidValue {
        field: Field,
        text: String,
        value: String,
    },
    #[error("{field} field \"{text}\": {value} is out of range {min}-{max}")]
    OutOfRange {
        field: Field,
        text: String,
        value: String,
        min: u32,
        max: u32,
    },
    #[error(
        "{field} field \"{text}\": range {start}-{end} is reversed (start is greater than end)"
    )]
    ReversedRange {
        field: Field,
        text: String,
        start: u32,
        end: u32,
    },
    #[error("{field} field \"{text}\": step \"{step}\" is not a positive number")]
    InvalidStep {
        field: Field,
        text: String,
        step: String,
    },
    #[error("{field} field \"{text}\": step must be at least 1, got 0")]
    ZeroStep { field: Field, text: String },
}

/// A parsed cron schedule, evaluated in UTC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The expression as given (trimmed), for `Display`.
    source: String,
    /// Bit `n` set = minute `n` matches (0-59).
    minutes: u64,
    /// Bit `n` set = hour `n` matches (0-23).
    hours: u64,
    /// Bit `n` set = day of month `n` matches (1-31).
    days_of_month: u64,
    /// Bit `n` set = month `n` matches (1-12).
    months: u64,
    /// Bit `n` set = weekday `n` matches (0 = Sunday .. 6 = Saturday).
    days_of_week: u64,
    /// Day-of-month field is unrestricted (`*` or `?`).
    dom_any: bool,
    /// Day-of-week field is unrestricted (`*` or `?`).
    dow_any: bool,
}

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

struct FieldSpec {
    field: Field,
    min: u32,
    /// Largest value accepted when written explicitly.
    max: u32,
    /// Upper end used for `*` and `N/S` (differs from `max` only for
    /// day-of-week, where 7 is an alias of Sunday = 0).
    implicit_max: u32,
    /// Names for values `first_name_value..`, matched case-insensitively.
    names: &'static [&'static str],
    first_name_value: u32,
    allow_question: bool,
}

const MINUTE: FieldSpec = FieldSpec {
    field: Field::Minute,
    min: 0,
    max: 59,
    implicit_max: 59,
    names: &[],
    first_name_value: 0,
    allow_question: false,
};
const HOUR: FieldSpec = FieldSpec {
    field: Field::Hour,
    min: 0,
    max: 23,
    implicit_max: 23,
    names: &[],
    first_name_value: 0,
    allow_question: false,
};
const DAY_OF_MONTH: FieldSpec = FieldSpec {
    field: Field::DayOfMonth,
    min: 1,
    max: 31,
    implicit_max: 31,
    names: &[],
    first_name_value: 0,
    allow_question: true,
};
const MONTH: FieldSpec = FieldSpec {
    field: Field::Month,
    min: 1,
    max: 12,
    implicit_max: 12,
    names: &MONTH_NAMES,
    first_name_value: 1,
    allow_question: false,
};
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    field: Field::DayOfWeek,
    min: 0,
    max: 7,
    implicit_max: 6,
    names: &DAY_NAMES,
    first_name_value: 0,
    allow_question: true,
};

/// Result of parsing one field: the matching values as a bit mask, and
/// whether the field is unrestricted (`*`/`?` without a step > 1).
struct ParsedField {
    mask: u64,
    any: bool,
}

impl FieldSpec {
    fn parse(&self, text: &str) -> Result<ParsedField, ScheduleError> {
        let mut mask = 0u64;
        let mut any = false;
        for item in text.split(',') {
            if item.is_empty() {
                return Err(ScheduleError::EmptyElement {
                    field: self.field,
                    text: text.to_string(),
                });
            }
            let (range, step) = match item.split_once('/') {
                Some((range, step)) => (range, Some(self.parse_step(text, step)?)),
                None => (item, None),
            };
            let (start, end) = if range == "*" || (range == "?" && self.allow_question) {
                if step.unwrap_or(1) == 1 {
                    any = true;
                }
                (self.min, self.implicit_max)
            } else if let Some((a, b)) = range.split_once('-') {
                let start = self.parse_value(text, a)?;
                let end = self.parse_value(text, b)?;
                if start > end {
                    return Err(ScheduleError::ReversedRange {
                        field: self.field,
                        text: text.to_string(),
                        start,
                        end,
                    });
                }
                (start, end)
            } else {
                let value = self.parse_value(text, range)?;
                if step.is_some() {
                    // Vixie cron: "N/S" means "N-max/S".
                    (value, self.implicit_max.max(value))
                } else {
                    (value, value)
                }
            };
            let step = step.unwrap_or(1);
            let mut v = start;
            while v <= end {
                mask |= 1u64 << v;
                v = match v.checked_add(step) {
                    Some(next) => next,
                    None => break,
                };
            }
        }
        Ok(ParsedField { mask, any })
    }

    fn parse_step(&self, text: &str, step: &str) -> Result<u32, ScheduleError> {
        if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ScheduleError::InvalidStep {
                field: self.field,
                text: text.to_string(),
                step: step.to_string(),
            });
        }
        // A huge step just means "only the start"; saturate instead of failing.
        let step = step.parse::<u32>().unwrap_or(u32::MAX);
        if step == 0 {
            return Err(ScheduleError::ZeroStep {
                field: self.field,
                text: text.to_string(),
            });
        }
        Ok(step)
    }

    fn parse_value(&self, text: &str, value: &str) -> Result<u32, ScheduleError> {
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            let out_of_range = || ScheduleError::OutOfRange {
                field: self.field,
                text: text.to_string(),
                value: value.to_string(),
                min: self.min,
                max: self.max,
            };
            let n = value.parse::<u32>().map_err(|_| out_of_range())?;
            if n < self.min || n > self.max {
                return Err(out_of_range());
            }
            return Ok(n);
        }
        self.names
            .iter()
            .position(|name| name.eq_ignore_ascii_case(value))
            .map(|i| i as u32 + self.first_name_value)
            .ok_or_else(|| ScheduleError::InvalidValue {
                field: self.field,
                text: text.to_string(),
                value: value.to_string(),
            })
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let source = s.trim();
        if source.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let first = source.split_whitespace().next().unwrap_or_default();
        let upper = first.to_ascii_uppercase();
        if upper.starts_with("TZ=") || upper.starts_with("CRON_TZ=") {
            return Err(ScheduleError::TimeZonePrefix {
                prefix: first.to_string(),
            });
        }
        let expanded = if source.starts_with('@') {
            match source {
                "@yearly" | "@annually" => "0 0 1 1 *",
                "@monthly" => "0 0 1 * *",
                "@weekly" => "0 0 * * 0",
                "@daily" | "@midnight" => "0 0 * * *",
                "@hourly" => "0 * * * *",
                "@reboot" => {
                    return Err(ScheduleError::UnsupportedMacro {
                        name: source.to_string(),
                    });
                }
                _ => {
                    return Err(ScheduleError::UnknownMacro {
                        name: source.to_string(),
                    });
                }
            }
        } else {
            source
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(ScheduleError::FieldCount { got: fields.len() });
        };
        let minutes = MINUTE.parse(minute)?;
        let hours = HOUR.parse(hour)?;
        let dom = DAY_OF_MONTH.parse(dom)?;
        let months = MONTH.parse(month)?;
        let dow = DAY_OF_WEEK.parse(dow)?;
        // Day-of-week 7 is Sunday, like 0.
        let mut days_of_week = dow.mask & 0x7f;
        if dow.mask & (1 << 7) != 0 {
            days_of_week |= 1;
        }
        Ok(Schedule {
            source: source.to_string(),
            minutes: minutes.mask,
            hours: hours.mask,
            days_of_month: dom.mask,
            months: months.mask,
            days_of_week,
            dom_any: dom.any,
            dow_any: dow.any,
        })
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// The smallest set bit of `mask` that is `>= from`, if any.
fn next_set(mask: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = mask >> from;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

fn has(mask: u64, bit: u32) -> bool {
    mask & (1u64 << bit) != 0
}

impl Schedule {
    fn day_matches(&self, date: Date) -> bool {
        let dom = has(self.days_of_month, date.day() as u32);
        let dow = has(
            self.days_of_week,
            date.weekday().to_sunday_zero_offset() as u32,
        );
        if self.dom_any || self.dow_any {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first time strictly after `after` (UTC, whole minutes, seconds = 0)
    /// that matches; `None` if none within 5 years (e.g. `"0 0 30 2 *"`).
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let start = TimeZone::UTC.to_datetime(after);
        let limit = (
            start.year() as i32 + 5,
            start.month() as u32,
            start.day() as u32,
            start.hour() as u32,
            start.minute() as u32,
        );
        // First whole minute strictly after `after`.
        let mut date = start.date();
        let mut hour = start.hour() as u32;
        let mut minute = start.minute() as u32 + 1;
        loop {
            if minute > 59 {
                minute = 0;
                hour += 1;
            }
            if hour > 23 {
                hour = 0;
                minute = 0;
                date = date.tomorrow().ok()?;
            }
            let now = (
                date.year() as i32,
                date.month() as u32,
                date.day() as u32,
                hour,
                minute,
            );
            if now > limit {
                return None;
            }
            if !has(self.months, date.month() as u32) {
                date = date.last_of_month().tomorrow().ok()?;
                (hour, minute) = (0, 0);
                continue;
            }
            if !self.day_matches(date) {
                date = date.tomorrow().ok()?;
                (hour, minute) = (0, 0);
                continue;
            }
            match next_set(self.hours, hour) {
                Some(h) if h == hour => {}
                Some(h) => {
                    (hour, minute) = (h, 0);
                }
                None => {
                    (hour, minute) = (24, 0);
                    continue;
                }
            }
            match next_set(self.minutes, minute) {
                Some(m) => minute = m,
                None => {
                    minute = 60;
                    continue;
                }
            }
            let found = date.at(hour as i8, minute as i8, 0, 0);
            let ts = TimeZone::UTC.to_timestamp(found).ok()?;
            // Re-check the bound for the minute/hour jumps made above.
            let now = (
                date.year() as i32,
                date.month() as u32,
                date.day() as u32,
                hour,
                minute,
            );
            return (now <= limit).then_some(ts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(s: &str) -> Schedule {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("valid timestamp")
    }

    fn next(expr: &str, after: &str) -> Option<String> {
        sched(expr).next_after(ts(after)).map(|t| t.to_string())
    }

    fn err(expr: &str) -> String {
        match expr.parse::<Schedule>() {
            Ok(s) => panic!("{expr:?} should be rejected, parsed as {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn assert_err(expr: &str, needle: &str) {
        let msg = err(expr);
        assert!(
            msg.contains(needle),
            "error for {expr:?} was {msg:?}, expected it to contain {needle:?}"
        );
    }

    /// Successive matches starting after `after`.
    fn series(expr: &str, after: &str, n: usize) -> Vec<String> {
        let s = sched(expr);
        let mut t = ts(after);
        (0..n)
            .map(|_| {
                t = s.next_after(t).expect("schedule should have a next match");
                t.to_string()
            })
            .collect()
    }

    #[test]
    fn macros() {
        assert_eq!(
            next("@yearly", "2025-06-15T12:00:00Z").as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            next("@annually", "2025-01-01T00:00:00Z").as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            next("@monthly", "2025-01-31T23:59:59Z").as_deref(),
            Some("2025-02-01T00:00:00Z")
        );
        // 2025-06-15 is a Sunday; the next Sunday midnight is 2025-06-22.
        assert_eq!(
            next("@weekly", "2025-06-15T00:00:00Z").as_deref(),
            Some("2025-06-22T00:00:00Z")
        );
        assert_eq!(
            next("@daily", "2025-12-31T10:00:00Z").as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            next("@midnight", "2025-03-04T00:00:00Z").as_deref(),
            Some("2025-03-05T00:00:00Z")
        );
        assert_eq!(
            next("@hourly", "2025-03-04T23:00:01Z").as_deref(),
            Some("2025-03-05T00:00:00Z")
        );
        assert_eq!(sched("@daily"), {
            let mut s = sched("0 0 * * *");
            s.source = "@daily".into();
            s
        });
        assert_eq!(sched("@weekly").to_string(), "@weekly");
    }

    #[test]
    fn every_fifteen_minutes_is_strictly_after() {
        assert_eq!(
            next("*/15 * * * *", "2025-05-05T10:07:00Z").as_deref(),
            Some("2025-05-05T10:15:00Z")
        );
        assert_eq!(
            next("*/15 * * * *", "2025-05-05T10:15:00Z").as_deref(),
            Some("2025-05-05T10:30:00Z")
        );
        assert_eq!(
            next("*/15 * * * *", "2025-05-05T23:50:00Z").as_deref(),
            Some("2025-05-06T00:00:00Z")
        );
    }

    #[test]
    fn seconds_in_after_are_ignored() {
        assert_eq!(
            next("*/15 * * * *", "2025-05-05T10:07:30Z").as_deref(),
            Some("2025-05-05T10:15:00Z")
        );
        assert_eq!(
            next("* * * * *", "2025-05-05T10:07:30Z").as_deref(),
            Some("2025-05-05T10:08:00Z")
        );
        assert_eq!(
            next("* * * * *", "2025-05-05T10:07:00Z").as_deref(),
            Some("2025-05-05T10:08:00Z")
        );
        assert_eq!(
            next("8 10 * * *", "2025-05-05T10:07:59.999Z").as_deref(),
            Some("2025-05-05T10:08:00Z")
        );
        assert_eq!(
            next("7 10 * * *", "2025-05-05T10:07:30Z").as_deref(),
            Some("2025-05-06T10:07:00Z")
        );
    }

    #[test]
    fn daily_across_midnight_and_month_end() {
        assert_eq!(
            next("0 3 * * *", "2025-01-31T23:59:00Z").as_deref(),
            Some("2025-02-01T03:00:00Z")
        );
        assert_eq!(
            next("0 3 * * *", "2025-01-31T02:59:59Z").as_deref(),
            Some("2025-01-31T03:00:00Z")
        );
        assert_eq!(
            next("0 3 * * *", "2025-12-31T03:00:00Z").as_deref(),
            Some("2026-01-01T03:00:00Z")
        );
    }

    #[test]
    fn leap_day() {
        assert_eq!(
            next("0 0 29 2 *", "2027-03-01T00:00:00Z").as_deref(),
            Some("2028-02-29T00:00:00Z")
        );
        assert_eq!(
            next("0 0 29 2 *", "2028-02-29T00:00:00Z").as_deref(),
            Some("2032-02-29T00:00:00Z")
        );
        // 2100 is not a leap year: 2096 -> 2104 is 8 years, beyond the 5-year limit.
        assert_eq!(next("0 0 29 2 *", "2096-03-01T00:00:00Z"), None);
        assert_eq!(
            next("0 0 31 * *", "2025-04-01T00:00:00Z").as_deref(),
            Some("2025-05-31T00:00:00Z")
        );
    }

    #[test]
    fn impossible_date_is_none() {
        assert_eq!(next("0 0 30 2 *", "2025-01-01T00:00:00Z"), None);
        assert_eq!(next("0 0 31 4,6,9,11 *", "2025-01-01T00:00:00Z"), None);
    }

    #[test]
    fn five_year_limit() {
        // 2100 is not a leap year, so 2099-03-01 -> 2104-02-29 is just
        // under 5 years, while from 2099-02-28 it is just over.
        assert_eq!(
            next("0 0 29 2 *", "2099-03-01T00:00:00Z").as_deref(),
            Some("2104-02-29T00:00:00Z")
        );
        assert_eq!(next("0 0 29 2 *", "2099-02-28T00:00:00Z"), None);
        assert_eq!(next("0 0 29 2 *", "2096-02-29T00:00:00Z"), None);
    }

    #[test]
    fn dom_dow_or_rule() {
        // 2025-09-01 is a Monday; 2025-10-01 is a Wednesday.
        assert_eq!(
            series("0 0 1 * MON", "2025-09-20T00:00:00Z", 5),
            [
                "2025-09-22T00:00:00Z",
                "2025-09-29T00:00:00Z",
                "2025-10-01T00:00:00Z",
                "2025-10-06T00:00:00Z",
                "2025-10-13T00:00:00Z",
            ]
        );
        // With day-of-week `*`, only day-of-month restricts.
        assert_eq!(
            series("0 0 1 * *", "2025-09-20T00:00:00Z", 2),
            ["2025-10-01T00:00:00Z", "2025-11-01T00:00:00Z"]
        );
        // With day-of-month `*` (or `?`), only day-of-week restricts.
        assert_eq!(
            series("0 0 ? * MON", "2025-09-20T00:00:00Z", 2),
            ["2025-09-22T00:00:00Z", "2025-09-29T00:00:00Z"]
        );
        // A stepped star is a restriction, so the OR rule applies:
        // days 1,3,5,... OR Sundays.
        assert_eq!(
            series("0 0 */2 * 0", "2025-09-26T00:00:00Z", 4),
            [
                "2025-09-27T00:00:00Z",
                "2025-09-28T00:00:00Z",
                "2025-09-29T00:00:00Z",
                "2025-10-01T00:00:00Z",
            ]
        );
    }

    #[test]
    fn sunday_is_0_and_7() {
        // 2025-06-15 and 2025-06-22 are Sundays.
        let want = Some("2025-06-22T05:00:00Z".to_string());
        assert_eq!(next("0 5 * * 7", "2025-06-15T05:00:00Z"), want);
        assert_eq!(next("0 5 * * 0", "2025-06-15T05:00:00Z"), want);
        assert_eq!(next("0 5 * * SUN", "2025-06-15T05:00:00Z"), want);
        assert_eq!(sched("0 5 * * 7").days_of_week, 1);
        // 5-7 = Friday, Saturday, Sunday.
        assert_eq!(
            series("0 0 * * 5-7", "2025-06-15T00:00:00Z", 4),
            [
                "2025-06-20T00:00:00Z",
                "2025-06-21T00:00:00Z",
                "2025-06-22T00:00:00Z",
                "2025-06-27T00:00:00Z",
            ]
        );
    }

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(sched("0 0 1 JAN *").months, 1 << 1);
        assert_eq!(sched("0 0 1 jan *").months, 1 << 1);
        assert_eq!(sched("0 0 1 Dec *").months, 1 << 12);
        assert_eq!(sched("0 0 * * mon").days_of_week, 1 << 1);
        assert_eq!(sched("0 0 * * MON-FRI"), {
            let mut s = sched("0 0 * * 1-5");
            s.source = "0 0 * * MON-FRI".into();
            s
        });
        assert_eq!(
            series("30 6 * jan-mar/2 mon", "2025-03-28T00:00:00Z", 2),
            ["2025-03-31T06:30:00Z", "2026-01-05T06:30:00Z"]
        );
    }

    #[test]
    fn ranges_with_steps() {
        // 9-17/4 = 9, 13, 17 on weekdays. 2025-06-13 is a Friday.
        assert_eq!(
            series("0 9-17/4 * * 1-5", "2025-06-13T10:00:00Z", 4),
            [
                "2025-06-13T13:00:00Z",
                "2025-06-13T17:00:00Z",
                "2025-06-16T09:00:00Z",
                "2025-06-16T13:00:00Z",
            ]
        );
        // N/S means N-max/S.
        assert_eq!(
            sched("5/20 * * * *").minutes,
            (1 << 5) | (1 << 25) | (1 << 45)
        );
        assert_eq!(sched("*/20 * * * *").minutes, 1 | (1 << 20) | (1 << 40));
        // Lists combine.
        assert_eq!(
            series("0,30 1,13 * * *", "2025-06-13T10:00:00Z", 3),
            [
                "2025-06-13T13:00:00Z",
                "2025-06-13T13:30:00Z",
                "2025-06-14T01:00:00Z"
            ]
        );
        // Day-of-week N/S stops at Saturday (Kubernetes behaviour).
        assert_eq!(
            sched("0 0 * * 1/2").days_of_week,
            (1 << 1) | (1 << 3) | (1 << 5)
        );
    }

    #[test]
    fn year_boundary() {
        assert_eq!(
            next("59 23 31 12 *", "2025-12-31T23:59:00Z").as_deref(),
            Some("2026-12-31T23:59:00Z")
        );
        assert_eq!(
            next("0 0 * * *", "2025-12-31T23:59:59Z").as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
    }

    #[test]
    fn display_prints_original() {
        assert_eq!(
            sched("*/15  9-17 * jan MON").to_string(),
            "*/15  9-17 * jan MON"
        );
        assert_eq!(sched("  @hourly ").to_string(), "@hourly");
    }

    #[test]
    fn rejections() {
        assert_eq!(err(""), "empty schedule");
        assert_eq!(err("   "), "empty schedule");
        assert_eq!(
            err("* * * *"),
            "expected 5 fields (minute hour day-of-month month day-of-week), got 4"
        );
        assert_err("0 0 * * * *", "expected 5 fields");
        assert_err("0 0 * * * 2025", "got 6");
        assert_eq!(
            err("61 * * * *"),
            "minute field \"61\": 61 is out of range 0-59"
        );
        assert_err("0 24 * * *", "hour field \"24\": 24 is out of range 0-23");
        assert_err(
            "0 0 0 * *",
            "day-of-month field \"0\": 0 is out of range 1-31",
        );
        assert_err("0 0 32 * *", "32 is out of range 1-31");
        assert_err("0 0 * 13 *", "month field \"13\": 13 is out of range 1-12");
        assert_err("0 0 * 0 *", "0 is out of range 1-12");
        assert_err(
            "0 0 * * 8",
            "day-of-week field \"8\": 8 is out of range 0-7",
        );
        assert_err("1,99999999999 * * * *", "99999999999 is out of range 0-59");
        assert_err(
            "*/0 * * * *",
            "minute field \"*/0\": step must be at least 1",
        );
        assert_err(
            "0 1-5/0 * * *",
            "hour field \"1-5/0\": step must be at least 1",
        );
        assert_err("*/x * * * *", "step \"x\" is not a positive number");
        assert_err("*/ * * * *", "step \"\" is not a positive number");
        assert_err("1/2/3 * * * *", "step \"2/3\" is not a positive number");
        assert_err(
            "0 17-9 * * *",
            "hour field \"17-9\": range 17-9 is reversed",
        );
        assert_err("0 0 * * FRI-MON", "range 5-1 is reversed");
        assert_err(
            "0 0 * DEC-JAN *",
            "month field \"DEC-JAN\": range 12-1 is reversed",
        );
        assert_err("@reboot", "@reboot is not supported");
        assert_err("@every 1h", "unknown macro \"@every 1h\"");
        assert_err("@daily 0", "unknown macro");
        assert_err(
            "TZ=Europe/Berlin 0 3 * * *",
            "time zone prefix \"TZ=Europe/Berlin\" is not supported: the schedule is always evaluated in UTC",
        );
        assert_err("CRON_TZ=UTC 0 3 * * *", "always evaluated in UTC");
        assert_err("1,,2 * * * *", "minute field \"1,,2\": empty list element");
        assert_err("1, * * * *", "empty list element");
        assert_err(
            "? * * * *",
            "minute field \"?\": \"?\" is not a valid value",
        );
        assert_err("0 0 * * MONDAY", "\"MONDAY\" is not a valid value");
        assert_err(
            "0 0 * MON *",
            "month field \"MON\": \"MON\" is not a valid value",
        );
        assert_err("0 0 JAN * *", "day-of-month field \"JAN\"");
        assert_err("-5 * * * *", "\"\" is not a valid value");
        assert_err("5- * * * *", "\"\" is not a valid value");
        assert_err("1-2-3 * * * *", "\"2-3\" is not a valid value");
        assert_err("+5 * * * *", "\"+5\" is not a valid value");
    }

    #[test]
    fn efficient_for_sparse_schedules() {
        // Needs no per-minute scan: the whole 5-year window is walked quickly.
        let s = sched("0 0 30 2 *");
        let start = std::time::Instant::now();
        for _ in 0..100 {
            assert_eq!(s.next_after(ts("2025-01-01T00:00:00Z")), None);
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(
            next("13 13 29 FEB *", "2024-03-01T00:00:00Z").as_deref(),
            Some("2028-02-29T13:13:00Z")
        );
    }

    /// Reference: scan minute by minute (only used for short horizons).
    fn brute_force(s: &Schedule, after: Timestamp, max_minutes: i64) -> Option<Timestamp> {
        let start = TimeZone::UTC.to_datetime(after);
        let mut t = TimeZone::UTC
            .to_timestamp(start.date().at(start.hour(), start.minute(), 0, 0))
            .expect("valid timestamp");
        for _ in 0..max_minutes {
            t = Timestamp::from_second(t.as_second() + 60).expect("valid timestamp");
            let dt = TimeZone::UTC.to_datetime(t);
            if has(s.minutes, dt.minute() as u32)
                && has(s.hours, dt.hour() as u32)
                && has(s.months, dt.month() as u32)
                && s.day_matches(dt.date())
            {
                return Some(t);
            }
        }
        None
    }

    #[test]
    fn matches_brute_force() {
        let exprs = [
            "* * * * *",
            "*/7 */5 * * *",
            "59 23 * * *",
            "0 0 31 * *",
            "0 0 29 2 *",
            "15 4 1,15 * WED",
            "0 9-17/4 * * 1-5",
            "5/20 3-4 */3 jan-mar,nov *",
            "0 12 13 * FRI",
            "0 0 * * 6,7",
            "30 2 28-31 * *",
        ];
        let starts = [
            "2024-02-28T23:59:30Z",
            "2025-01-31T23:59:00Z",
            "2025-12-31T23:58:59Z",
            "2027-03-01T00:00:00Z",
            "1999-12-31T12:34:56Z",
        ];
        for expr in exprs {
            let s = sched(expr);
            for start in starts {
                let after = ts(start);
                let fast = s.next_after(after);
                let slow = brute_force(&s, after, 4 * 366 * 24 * 60);
                assert_eq!(fast, slow, "{expr:?} after {start}");
            }
        }
    }
}
