//! Recording the outcome of an attempt: `succeeded`; `retrying` with a durable next attempt;
//! `failed`; or back to `queued` when the worker stopped it for a shutdown.

use chrono::Utc;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use ulid::Ulid;

use crate::domain::{Backoff, EventType, JobKind};
use crate::jobs::JobError;
use crate::lifecycle::StoreError;
use crate::store::{self, JobRow, queue::Entry};

#[derive(Debug, PartialEq, Eq)]
pub enum Finished {
    Succeeded,
    Retrying,
    Failed,
    Released,
    /// The attempt no longer owned the job; nothing was written.
    NotOwner,
}

/// Records `outcome` for the running attempt `job` (the row as the attempt started).
/// `progress_done` is the latest progress the attempt reached, kept when it is released.
pub async fn finish(
    pool: &PgPool,
    job: &JobRow,
    outcome: &Result<Value, JobError>,
    backoff: &Backoff,
    progress_done: u32,
) -> Result<Finished, StoreError> {
    let one = Outcome {
        job,
        outcome,
        progress_done,
    };
    let mut conn = pool.acquire().await?;
    let mut finished = finish_many(&mut conn, std::slice::from_ref(&one), backoff).await?;
    Ok(finished.pop().unwrap_or(Finished::NotOwner))
}

/// The outcome of one attempt, for [`finish_many`].
pub struct Outcome<'a> {
    /// The row as the attempt started.
    pub job: &'a JobRow,
    pub outcome: &'a Result<Value, JobError>,
    /// The latest progress the attempt reached.
    pub progress_done: u32,
}

/// Records many outcomes with one commit for the lot. Successes take one statement (rows and
/// events; it commits by itself when all succeeded); the rarer outcomes are recorded one by one
/// before it, in one transaction with it. (The attempts' queue entries went when they were taken.)
pub async fn finish_many(
    conn: &mut PgConnection,
    outcomes: &[Outcome<'_>],
    backoff: &Backoff,
) -> Result<Vec<Finished>, StoreError> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    let (mut ids, mut task_ids, mut results) = (Vec::new(), Vec::new(), Vec::new());
    for o in outcomes {
        if let Ok(result) = o.outcome {
            ids.push(o.job.id);
            task_ids.push(o.job.task_id.clone());
            results.push(result.clone());
        }
    }
    // The other outcomes, in order, and the task ids of the successes that were recorded.
    let (failed, succeeded) = if ids.len() == outcomes.len() {
        let succeeded = store::jobs::succeed_many(conn, &ids, &task_ids, &results).await?;
        (Vec::new(), succeeded)
    } else {
        let mut tx = sqlx::Connection::begin(conn).await?;
        let mut failed = Vec::with_capacity(outcomes.len() - ids.len());
        for o in outcomes {
            if let Err(error) = o.outcome {
                failed.push(finish_failed(&mut tx, o.job, error, backoff, o.progress_done).await?);
            }
        }
        let succeeded = store::jobs::succeed_many(&mut *tx, &ids, &task_ids, &results).await?;
        tx.commit().await?;
        (failed, succeeded)
    };
    let succeeded: std::collections::HashSet<&str> = succeeded.iter().map(String::as_str).collect();
    let mut failed = failed.into_iter();
    Ok(outcomes
        .iter()
        .map(|o| match o.outcome {
            Err(_) => failed.next().unwrap_or(Finished::NotOwner),
            Ok(_) if succeeded.contains(o.job.task_id.as_str()) => Finished::Succeeded,
            Ok(_) => Finished::NotOwner,
        })
        .collect())
}

/// Records an attempt that did not succeed inside `tx` (status row, next queue entry, event);
/// the caller commits. (Successes are recorded set-wise by [`finish_many`].)
async fn finish_failed(
    tx: &mut PgConnection,
    job: &JobRow,
    error: &JobError,
    backoff: &Backoff,
    progress_done: u32,
) -> Result<Finished, StoreError> {
    let kind = JobKind::parse(&job.kind).ok_or_else(|| {
        StoreError::Db(sqlx::Error::Decode(
            format!("unknown job kind {:?}", job.kind).into(),
        ))
    })?;
    let (row, event, data, finished) = match error {
        JobError::Retryable(error) if job.attempt < job.max_attempts => {
            let attempt = u32::try_from(job.attempt).unwrap_or(1);
            let delay = backoff.next_delay(attempt);
            let at = Utc::now() + delay;
            let next = Ulid::generate();
            let row = store::jobs::retry_later(
                &mut *tx,
                job.id,
                &job.task_id,
                &next.to_string(),
                error,
                at,
            )
            .await?;
            if row.is_some() {
                let entry = Entry {
                    task_id: next,
                    job_id: job.id,
                    run_at: Some(at),
                    priority: job.priority,
                };
                store::queue::push(&mut *tx, kind, &[entry]).await?;
            }
            let data = json!({
                "attempt": job.attempt,
                "error": error,
                "next_attempt_at": at,
                "delay_ms": delay.as_millis() as u64,
            });
            (row, EventType::Retrying, data, Finished::Retrying)
        }
        JobError::Retryable(error) | JobError::Permanent(error) => {
            let row = store::jobs::fail(&mut *tx, job.id, &job.task_id, error).await?;
            let data = json!({ "attempt": job.attempt, "error": error });
            (row, EventType::Failed, data, Finished::Failed)
        }
        JobError::Interrupted => {
            let next = Ulid::generate();
            let done = i32::try_from(progress_done).unwrap_or(i32::MAX);
            let row = store::jobs::release(&mut *tx, job.id, &job.task_id, &next.to_string(), done)
                .await?;
            if row.is_some() {
                let entry = Entry::due_now(next, job.id, job.priority);
                store::queue::push(&mut *tx, kind, &[entry]).await?;
            }
            let data =
                json!({ "attempt": job.attempt, "reason": "worker shutdown", "resume_from": done });
            (row, EventType::Queued, data, Finished::Released)
        }
        JobError::Lost => (None, EventType::Failed, Value::Null, Finished::NotOwner),
    };
    let Some(row) = row else {
        return Ok(Finished::NotOwner);
    };
    store::events::insert(&mut *tx, &row, event, &data).await?;
    Ok(finished)
}
