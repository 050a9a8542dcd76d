//! Recording the outcome of an attempt: `succeeded`; `retrying` with a durable next attempt;
//! `failed`; or back to `queued` when the worker stopped it for a shutdown.

use chrono::Utc;
use serde_json::{Value, json};
use sqlx::PgPool;
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
    let kind = JobKind::parse(&job.kind).ok_or_else(|| {
        StoreError::Db(sqlx::Error::Decode(
            format!("unknown job kind {:?}", job.kind).into(),
        ))
    })?;
    let mut tx = pool.begin().await?;
    let (row, event, data, finished) = match outcome {
        Ok(result) => {
            let row = store::jobs::succeed(&mut tx, job.id, &job.task_id, result).await?;
            let data = json!({ "attempt": job.attempt, "result": result });
            (row, EventType::Succeeded, data, Finished::Succeeded)
        }
        Err(JobError::Retryable(error)) if job.attempt < job.max_attempts => {
            let attempt = u32::try_from(job.attempt).unwrap_or(1);
            let delay = backoff.next_delay(attempt);
            let at = Utc::now() + delay;
            let next = Ulid::generate();
            let row = store::jobs::retry_later(
                &mut tx,
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
                store::queue::push(&mut tx, kind, &[entry]).await?;
            }
            let data = json!({
                "attempt": job.attempt,
                "error": error,
                "next_attempt_at": at,
                "delay_ms": delay.as_millis() as u64,
            });
            (row, EventType::Retrying, data, Finished::Retrying)
        }
        Err(JobError::Retryable(error) | JobError::Permanent(error)) => {
            let row = store::jobs::fail(&mut tx, job.id, &job.task_id, error).await?;
            let data = json!({ "attempt": job.attempt, "error": error });
            (row, EventType::Failed, data, Finished::Failed)
        }
        Err(JobError::Interrupted) => {
            let next = Ulid::generate();
            let done = i32::try_from(progress_done).unwrap_or(i32::MAX);
            let row = store::jobs::release(&mut tx, job.id, &job.task_id, &next.to_string(), done)
                .await?;
            if row.is_some() {
                let entry = Entry {
                    task_id: next,
                    job_id: job.id,
                    run_at: None,
                    priority: job.priority,
                };
                store::queue::push(&mut tx, kind, &[entry]).await?;
            }
            let data =
                json!({ "attempt": job.attempt, "reason": "worker shutdown", "resume_from": done });
            (row, EventType::Queued, data, Finished::Released)
        }
        Err(JobError::Lost) => (None, EventType::Failed, Value::Null, Finished::NotOwner),
    };
    let Some(row) = row else {
        return Ok(Finished::NotOwner);
    };
    store::events::insert(&mut tx, &row, event, &data).await?;
    tx.commit().await?;
    Ok(finished)
}
