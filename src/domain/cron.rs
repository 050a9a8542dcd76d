//! Cron expressions as the API states them: classic 5-field cron (minute hour day-of-month month
//! day-of-week, Sunday = 0 or 7) or 6 fields with seconds first; each field a list of `*`, `n`
//! or `a-b` (a range that wraps when `a > b`, e.g. hours `22-2`), each optionally `/step`. When
//! both day fields are restricted (neither starts with `*`), a day matching either one ticks,
//! as in Vixie cron.
//!
//! `PATTERN` (the spec's) and `parse` accept exactly the same strings. The `cron` crate does
//! the calendar arithmetic on the explicit value lists `parse` produces.

use std::collections::BTreeSet;

use crate::domain::FieldError;

/// One field of `PATTERN` for numbers matching `$n`.
macro_rules! field {
    ($n:literal) => {
        concat!(
            "(?:\\*|",
            $n,
            "(?:-",
            $n,
            ")?)(?:/[1-9][0-9]?)?(?:,(?:\\*|",
            $n,
            "(?:-",
            $n,
            ")?)(?:/[1-9][0-9]?)?)*"
        )
    };
}

/// The grammar above as a regular expression (ECMA 262 and Rust `regex` alike).
pub const PATTERN: &str = concat!(
    "^(?:",
    field!("[0-5]?[0-9]"),
    " )?",
    field!("[0-5]?[0-9]"),
    " ",
    field!("(?:[01]?[0-9]|2[0-3])"),
    " ",
    field!("(?:0?[1-9]|[12][0-9]|3[01])"),
    " ",
    field!("(?:0?[1-9]|1[0-2])"),
    " ",
    field!("[0-7]"),
    "$"
);

/// A field: its name in errors, its range, and the most digits a number may have.
struct Unit {
    name: &'static str,
    min: u32,
    max: u32,
    digits: usize,
}

const SECOND: Unit = Unit {
    name: "seconds",
    min: 0,
    max: 59,
    digits: 2,
};
const MINUTE: Unit = Unit {
    name: "minutes",
    min: 0,
    max: 59,
    digits: 2,
};
const HOUR: Unit = Unit {
    name: "hours",
    min: 0,
    max: 23,
    digits: 2,
};
const DAY: Unit = Unit {
    name: "day of month",
    min: 1,
    max: 31,
    digits: 2,
};
const MONTH: Unit = Unit {
    name: "month",
    min: 1,
    max: 12,
    digits: 2,
};
/// 0-7 on input; 7 is Sunday like 0.
const WEEKDAY: Unit = Unit {
    name: "day of week",
    min: 0,
    max: 7,
    digits: 1,
};

/// A checked expression, as the `cron` crate's 6-field syntax (its weekdays are 1-7 from
/// Sunday): one expression, or two when both day fields are restricted (ticks of either).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub expressions: Vec<String>,
}

fn invalid(message: impl Into<String>) -> FieldError {
    FieldError::new("cron", message)
}

/// Checks `expr` and turns it into `cron` crate expressions.
pub fn parse(expr: &str) -> Result<Parsed, FieldError> {
    let fields: Vec<&str> = expr.split(' ').collect();
    let (second_field, rest) = match fields.len() {
        5 => ("0", &fields[..]),
        6 => (fields[0], &fields[1..]),
        _ => {
            return Err(invalid(
                "expected 5 fields (minute hour day month weekday) or 6 (seconds first), \
                 separated by single spaces",
            ));
        }
    };
    let seconds = values(second_field, &SECOND)?;
    let minutes = values(rest[0], &MINUTE)?;
    let hours = values(rest[1], &HOUR)?;
    let days = values(rest[2], &DAY)?;
    let months = values(rest[3], &MONTH)?;
    let weekdays: BTreeSet<u32> = values(rest[4], &WEEKDAY)?
        .into_iter()
        .map(|d| if d == 7 { 1 } else { d + 1 })
        .collect();
    let list = |field: &str, set: &BTreeSet<u32>| {
        if field == "*" {
            "*".to_owned()
        } else {
            set.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        }
    };
    let head = format!(
        "{} {} {}",
        list(second_field, &seconds),
        list(rest[0], &minutes),
        list(rest[1], &hours)
    );
    let months = list(rest[3], &months);
    let (days, weekdays) = (list(rest[2], &days), list(rest[4], &weekdays));
    let days_restricted = !rest[2].starts_with('*');
    let weekdays_restricted = !rest[4].starts_with('*');
    let expressions = if days_restricted && weekdays_restricted {
        vec![
            format!("{head} {days} {months} *"),
            format!("{head} * {months} {weekdays}"),
        ]
    } else {
        vec![format!("{head} {days} {months} {weekdays}")]
    };
    Ok(Parsed { expressions })
}

/// The values one field selects.
fn values(field: &str, unit: &Unit) -> Result<BTreeSet<u32>, FieldError> {
    let mut set = BTreeSet::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        let step = match step {
            None => 1,
            Some(s) if s.len() <= 2 && !s.starts_with('0') => number(s, 1, 99, 2)
                .ok_or_else(|| invalid(format!("{}: step {s:?} is not 1-99", unit.name)))?,
            Some(s) => {
                return Err(invalid(format!("{}: step {s:?} is not 1-99", unit.name)));
            }
        };
        let weekday = unit.max == 7;
        // The last value of a cycle (Saturday for weekdays: 7 is Sunday again).
        let top = if weekday { 6 } else { unit.max };
        let (from, to) = if range == "*" {
            (unit.min, top)
        } else {
            let bad = || {
                invalid(format!(
                    "{}: {range:?} is not a number or range within {}-{}",
                    unit.name, unit.min, unit.max
                ))
            };
            let n = |s: &str| number(s, unit.min, unit.max, unit.digits).ok_or_else(bad);
            match range.split_once('-') {
                Some((a, b)) => (n(a)?, n(b)?),
                // `a/step` runs from a to the end of the cycle.
                None if step > 1 => (n(range)?, top.max(n(range)?)),
                None => (n(range)?, n(range)?),
            }
        };
        // Sunday as 7 starting a range that ends earlier is Sunday as 0.
        let from = if weekday && from == 7 && to < 7 {
            0
        } else {
            from
        };
        let walk: Vec<u32> = if from <= to {
            (from..=to).collect()
        } else {
            (from..=top).chain(unit.min..=to).collect()
        };
        for v in walk.into_iter().step_by(step as usize) {
            set.insert(if weekday && v == 7 { 0 } else { v });
        }
    }
    Ok(set)
}

/// A number of 1 to `digits` ASCII digits within `min..=max`.
fn number(s: &str, min: u32, max: u32, digits: usize) -> Option<u32> {
    if s.is_empty() || s.len() > digits || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|n| (min..=max).contains(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quartz(expr: &str) -> Vec<String> {
        parse(expr).unwrap().expressions
    }

    #[test]
    fn fields_become_explicit_lists_with_sunday_first_weekdays() {
        assert_eq!(quartz("0 9 * * 1-5"), ["0 0 9 * * 2,3,4,5,6"]);
        assert_eq!(quartz("*/20 * * * *")[0], "0 0,20,40 * * * *");
        assert_eq!(quartz("*/30 * * * * *")[0], "0,30 * * * * *");
        assert_eq!(quartz("0 22-2 * * *")[0], "0 0 0,1,2,22,23 * * *");
        assert_eq!(quartz("0 0 * * 7")[0], "0 0 0 * * 1", "7 is Sunday");
        assert_eq!(quartz("0 0 * * 5-0")[0], "0 0 0 * * 1,6,7", "Fri-Sun wraps");
        assert_eq!(quartz("0 0 * * 0-7")[0], "0 0 0 * * 1,2,3,4,5,6,7");
        assert_eq!(quartz("5/20 * * * *")[0], "0 5,25,45 * * * *");
        assert_eq!(quartz("0 0 1-10/3 * *")[0], "0 0 0 1,4,7,10 * *");
        assert_eq!(quartz("0 0 * 11-2 *")[0], "0 0 0 * 1,2,11,12 *");
    }

    #[test]
    fn both_day_fields_restricted_tick_on_either() {
        assert_eq!(
            quartz("0 0 13 * 5"),
            ["0 0 0 13 * *", "0 0 0 * * 6"],
            "the 13th, and every Friday"
        );
        assert_eq!(
            quartz("0 0 */2 * 5").len(),
            1,
            "a * day field is not restricted"
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "0",
            "* * * *",
            "* * * * * * *",
            "0  9 * * *",
            " 0 9 * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * 32 * *",
            "* * * 0 *",
            "* * * 13 *",
            "* * * * 8",
            "* * * * 07",
            "*/0 * * * *",
            "*/05 * * * *",
            "*/100 * * * *",
            "1-/2 * * * *",
            "a * * * *",
            "MON * * * *",
            "* * * * MON",
            ",1 * * * *",
            "1, * * * *",
            "? * * * *",
            "L * * * *",
            "-1 * * * *",
            "001 * * * *",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_pattern_and_the_parser_agree() {
        let re = regex::Regex::new(PATTERN).unwrap();
        let samples = [
            "0 9 * * 1-5",
            "*/2 * * * * *",
            "0 0 1,15 * *",
            "59 23 31 12 7",
            "00 00 01 01 0",
            "5/20 * * * *",
            "0 22-2 * * *",
            "1-59/59 * * * *",
            "",
            "0",
            "60 * * * *",
            "*/0 * * * *",
            "* * * * 8",
            "* * * * 07",
            "0  9 * * *",
            "1, * * * *",
            "* * 00 * *",
        ];
        for s in samples {
            assert_eq!(re.is_match(s), parse(s).is_ok(), "{s:?}");
        }
    }
}
