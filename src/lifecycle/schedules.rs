//! Recurring jobs: when a schedule ticks, and turning due ticks into jobs exactly once.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::json;
use sqlx::PgPool;

use crate::domain::FieldError;
use crate::lifecycle::{EnqueueRequest, StoreError, enqueue};
use crate::store::{self, schedules::ScheduleRow};

/// A tick at most this late still counts as on time; older due ticks were missed (no process
/// ran) and follow the schedule's `missed` policy.
pub const GRACE: Duration = Duration::from_secs(2);

/// When a schedule ticks: a cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct Cadence {
    /// One, or two whose ticks together are the expression's (see `domain::cron`).
    schedules: Vec<cron::Schedule>,
    tz: Tz,
}

impl Cadence {
    /// `expr` is checked by `domain::cron` (5 fields, or 6 with seconds first); `timezone`
    /// is an IANA name such as `Europe/Berlin`.
    pub fn parse(expr: &str, timezone: &str) -> Result<Self, FieldError> {
        let parsed = crate::domain::cron::parse(expr)?;
        let schedules = parsed
            .expressions
            .iter()
            .map(|e| cron::Schedule::from_str(e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| FieldError::new("cron", format!("invalid cron expression: {e}")))?;
        let tz = Tz::from_str(timezone)
            .map_err(|_| FieldError::new("timezone", "unknown time zone (use an IANA name)"))?;
        Ok(Self { schedules, tz })
    }

    /// The first tick strictly after `t`; `None` if it never ticks again (e.g. February 30).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.schedules
            .iter()
            .filter_map(|s| s.after(&local).next())
            .min()
            .map(|next| next.with_timezone(&Utc))
    }
}

/// What to do with the due ticks of a schedule at `now`: the ticks to enqueue and the next one
/// (`None`: it never ticks again).
pub fn plan(
    cadence: &Cadence,
    next_run_at: DateTime<Utc>,
    run_missed_once: bool,
    now: DateTime<Utc>,
) -> (Vec<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let grace = chrono::Duration::from_std(GRACE).unwrap_or_default();
    let mut on_time = Vec::new();
    let mut latest_missed = None;
    let mut tick = Some(next_run_at);
    let mut seen = 0;
    while let Some(t) = tick.filter(|t| *t <= now) {
        if now - t <= grace {
            on_time.push(t);
        } else {
            latest_missed = Some(t);
        }
        seen += 1;
        tick = if seen < 10_000 {
            cadence.next_after(t)
        } else {
            cadence.next_after(now)
        };
    }
    let mut run: Vec<DateTime<Utc>> = Vec::new();
    if run_missed_once {
        run.extend(latest_missed);
    }
    run.extend(on_time);
    let next = tick.or_else(|| cadence.next_after(now));
    (run, next)
}

/// The job a schedule makes, checked as an API request would be.
pub type JobFactory<'a> = &'a (dyn Fn(&ScheduleRow) -> Result<EnqueueRequest, String> + Sync);

/// Enqueues the due ticks of every due schedule, each exactly once (the schedule row is locked
/// by one process, and each tick's job carries an idempotency key of its own); returns the
/// number of jobs enqueued.
pub async fn run_due(pool: &PgPool, make_job: JobFactory<'_>) -> Result<usize, StoreError> {
    let mut tx = pool.begin().await?;
    let due = store::schedules::claim_due(&mut tx, 100).await?;
    let now = Utc::now();
    let mut enqueued = 0;
    for s in due {
        let Ok(cadence) = Cadence::parse(&s.cron, &s.timezone) else {
            tracing::warn!(schedule = %s.id, "stored schedule no longer parses; pausing it");
            store::schedules::set_paused(&mut *tx, s.id, true, s.next_run_at).await?;
            continue;
        };
        let Some(next_run_at) = s.next_run_at else {
            continue;
        };
        let (ticks, next) = plan(&cadence, next_run_at, s.missed == "run_once", now);
        for tick in &ticks {
            let mut req = match make_job(&s) {
                Ok(req) => req,
                Err(e) => {
                    tracing::warn!(schedule = %s.id, error = %e, "schedule's job is invalid; tick skipped");
                    continue;
                }
            };
            req.idempotency_key = Some(format!(
                "schedule:{}:{}",
                s.id,
                tick.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ));
            req.origin = Some(json!({
                "schedule_id": s.id,
                "schedule": s.name,
                "scheduled_for": tick,
            }));
            match enqueue(pool, req).await {
                Ok(_) => enqueued += 1,
                Err(crate::lifecycle::EnqueueError::KeyReused { .. }) => {}
                Err(crate::lifecycle::EnqueueError::Store(e)) => return Err(e),
            }
        }
        store::schedules::advance(&mut tx, s.id, next, ticks.last().copied()).await?;
    }
    tx.commit().await?;
    Ok(enqueued)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn five_and_six_field_expressions_tick_in_their_time_zone() {
        let every_2s = Cadence::parse("*/2 * * * * *", "UTC").unwrap();
        assert_eq!(
            every_2s.next_after(at("2026-01-01T00:00:01Z")),
            Some(at("2026-01-01T00:00:02Z"))
        );
        let nine_berlin = Cadence::parse("0 9 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            nine_berlin.next_after(at("2026-07-01T00:00:00Z")),
            Some(at("2026-07-01T07:00:00Z"))
        );
        assert_eq!(Cadence::parse("* * *", "UTC").unwrap_err().field, "cron");
        let weekdays = Cadence::parse("0 9 * * 1-5", "UTC").unwrap();
        assert_eq!(
            weekdays.next_after(at("2026-11-27T10:00:00Z")),
            Some(at("2026-11-30T09:00:00Z")),
            "Friday 10:00 -> Monday 9:00"
        );
        let friday_or_13th = Cadence::parse("0 0 13 * 5", "UTC").unwrap();
        assert_eq!(
            friday_or_13th.next_after(at("2026-11-27T10:00:00Z")),
            Some(at("2026-12-04T00:00:00Z"))
        );
        let never = Cadence::parse("0 0 30 2 *", "UTC").unwrap();
        assert_eq!(never.next_after(at("2026-01-01T00:00:00Z")), None);
        assert_eq!(
            Cadence::parse("0 9 * * *", "Mars/Base").unwrap_err().field,
            "timezone"
        );
    }

    #[test]
    fn missed_ticks_run_once_or_are_skipped() {
        let c = Cadence::parse("*/2 * * * * *", "UTC").unwrap();
        let now = at("2026-01-01T00:00:21Z");
        // Due since 00:00:10: ticks 10..=20; 20 is within the 2 s grace, 10..=18 were missed.
        let on_time = [at("2026-01-01T00:00:20Z")];
        let (run, next) = plan(&c, at("2026-01-01T00:00:10Z"), true, now);
        assert_eq!(
            run[0],
            at("2026-01-01T00:00:18Z"),
            "one job for the missed ticks"
        );
        assert_eq!(run[1..], on_time);
        assert_eq!(next, Some(at("2026-01-01T00:00:22Z")));
        let (run, _) = plan(&c, at("2026-01-01T00:00:10Z"), false, now);
        assert_eq!(run, on_time);
        let (run, next) = plan(&c, at("2026-01-01T00:00:22Z"), true, now);
        assert!(run.is_empty());
        assert_eq!(next, Some(at("2026-01-01T00:00:22Z")));
    }
}
