//! The options every enqueue may carry, whatever the kind.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::FieldError;

pub const MAX_ATTEMPTS_LIMIT: u32 = 25;
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -100..=100;
pub const MAX_DELAY_MS: u64 = 366 * 24 * 3600 * 1000;
pub const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=24 * 3600 * 1000;
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG_CHARS: usize = 64;
/// The last instant RFC 3339 can write: 9999-12-31T23:59:59.999Z.
pub const LAST_TIME: DateTime<Utc> = match DateTime::from_timestamp_millis(253_402_300_799_999) {
    Some(t) => t,
    None => DateTime::<Utc>::MAX_UTC,
};

/// Options as a request states them (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawOptions {
    pub max_attempts: Option<u32>,
    pub run_at: Option<DateTime<Utc>>,
    pub delay_ms: Option<u64>,
    pub priority: Option<i32>,
    pub timeout_ms: Option<u64>,
    pub tags: Option<Vec<String>>,
}

/// Valid options of one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOptions {
    pub max_attempts: u32,
    /// Not before this time; `None`: at once.
    pub run_at: Option<DateTime<Utc>>,
    pub priority: i32,
    pub timeout: Option<Duration>,
    pub tags: Vec<String>,
}

impl JobOptions {
    /// Checks `raw` (with `default_max_attempts` when it names none); `now` anchors `delay_ms`.
    pub fn parse(
        raw: &RawOptions,
        default_max_attempts: u32,
        now: DateTime<Utc>,
    ) -> Result<Self, FieldError> {
        let max_attempts = raw.max_attempts.unwrap_or(default_max_attempts);
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts) {
            return Err(FieldError::new(
                "max_attempts",
                format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}"),
            ));
        }
        if raw.delay_ms.is_some_and(|ms| ms > MAX_DELAY_MS) {
            return Err(FieldError::new(
                "delay_ms",
                format!("must be between 0 and {MAX_DELAY_MS}"),
            ));
        }
        // `delay_ms` counts from `run_at` when both are given, else from now. RFC 3339 (and so
        // the API) ends at year 9999: a later time is that last second.
        let base = raw.run_at.unwrap_or(now);
        let due = base
            .checked_add_signed(chrono::Duration::milliseconds(
                raw.delay_ms.unwrap_or(0) as i64
            ))
            .unwrap_or(LAST_TIME)
            .min(LAST_TIME);
        let run_at = Some(due).filter(|at| *at > now);
        let priority = raw.priority.unwrap_or(0);
        if !PRIORITY_RANGE.contains(&priority) {
            return Err(FieldError::new("priority", "must be between -100 and 100"));
        }
        let timeout = match raw.timeout_ms {
            Some(ms) if !TIMEOUT_MS_RANGE.contains(&ms) => {
                return Err(FieldError::new(
                    "timeout_ms",
                    format!(
                        "must be between {} and {}",
                        TIMEOUT_MS_RANGE.start(),
                        TIMEOUT_MS_RANGE.end()
                    ),
                ));
            }
            other => other.map(Duration::from_millis),
        };
        let tags = raw.tags.clone().unwrap_or_default();
        if tags.len() > MAX_TAGS {
            return Err(FieldError::new("tags", format!("at most {MAX_TAGS} tags")));
        }
        for (i, tag) in tags.iter().enumerate() {
            if !valid_tag(tag) {
                return Err(FieldError::new(
                    format!("tags[{i}]"),
                    format!("1-{MAX_TAG_CHARS} characters: letters, digits, _ . : / = -"),
                ));
            }
        }
        let mut tags = tags;
        tags.sort();
        tags.dedup();
        Ok(Self {
            max_attempts,
            run_at,
            priority,
            timeout,
            tags,
        })
    }
}

pub fn valid_tag(tag: &str) -> bool {
    (1..=MAX_TAG_CHARS).contains(&tag.chars().count())
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:/=-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: RawOptions) -> Result<JobOptions, String> {
        JobOptions::parse(&raw, 5, "2026-01-01T00:00:00Z".parse().unwrap()).map_err(|e| e.field)
    }

    #[test]
    fn defaults_and_bounds_name_the_field() {
        let ok = parse(RawOptions::default()).unwrap();
        assert_eq!(
            (ok.max_attempts, ok.priority, ok.run_at, ok.timeout),
            (5, 0, None, None)
        );
        let delayed = parse(RawOptions {
            delay_ms: Some(1500),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            delayed.run_at.unwrap().to_rfc3339(),
            "2026-01-01T00:00:01.500+00:00"
        );
        let past = parse(RawOptions {
            run_at: Some("2025-01-01T00:00:00Z".parse().unwrap()),
            ..Default::default()
        });
        assert_eq!(past.unwrap().run_at, None, "a time in the past means now");
        let err = |raw| parse(raw).unwrap_err();
        assert_eq!(
            err(RawOptions {
                max_attempts: Some(0),
                ..Default::default()
            }),
            "max_attempts"
        );
        assert_eq!(
            err(RawOptions {
                priority: Some(101),
                ..Default::default()
            }),
            "priority"
        );
        assert_eq!(
            err(RawOptions {
                timeout_ms: Some(5),
                ..Default::default()
            }),
            "timeout_ms"
        );
        assert_eq!(
            err(RawOptions {
                delay_ms: Some(MAX_DELAY_MS + 1),
                ..Default::default()
            }),
            "delay_ms"
        );
        let both = parse(RawOptions {
            delay_ms: Some(1000),
            run_at: Some("2026-01-01T00:00:05Z".parse().unwrap()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            both.run_at.unwrap().to_rfc3339(),
            "2026-01-01T00:00:06+00:00",
            "the delay counts from run_at"
        );
        let far = parse(RawOptions {
            delay_ms: Some(MAX_DELAY_MS),
            run_at: Some("9999-12-31T00:00:00Z".parse().unwrap()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            far.run_at,
            Some(LAST_TIME),
            "capped at the end of year 9999"
        );
        assert_eq!(
            err(RawOptions {
                tags: Some(vec!["ok".into(), "no spaces".into()]),
                ..Default::default()
            }),
            "tags[1]"
        );
        assert_eq!(
            err(RawOptions {
                tags: Some(vec!["t".into(); 21]),
                ..Default::default()
            }),
            "tags"
        );
    }
}
