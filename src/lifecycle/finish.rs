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
    let mut tx = pool.begin().await?;
    let finished = finish_in(&mut tx, job, outcome, backoff, progress_done).await?;
    store::queue::delete(&mut tx, std::slice::from_ref(&job.task_id)).await?;
    tx.commit().await?;
    Ok(finished)
}

/// The outcome of one attempt, for [`finish_many`].
pub struct Outcome<'a> {
    /// The row as the attempt started.
    pub job: &'a JobRow,
    pub outcome: &'a Result<Value, JobError>,
    /// The latest progress the attempt reached.
    pub progress_done: u32,
}

/// Records many outcomes in one transaction (one commit for the lot): successes with one
/// statement for the rows and one for their events, the rarer outcomes one by one. The queue
/// entries of all of them are deleted in the same transaction.
pub async fn finish_many(
    pool: &PgPool,
    outcomes: &[Outcome<'_>],
    backoff: &Backoff,
) -> Result<Vec<Finished>, StoreError> {
    let mut tx = pool.begin().await?;
    let mut finished: Vec<Option<Finished>> = Vec::with_capacity(outcomes.len());
    let (mut ids, mut task_ids, mut results) = (Vec::new(), Vec::new(), Vec::new());
    for o in outcomes {
        match o.outcome {
            Ok(result) => {
                ids.push(o.job.id);
                task_ids.push(o.job.task_id.clone());
                results.push(result.clone());
                finished.push(None);
            }
            Err(_) => {
                let f = finish_in(&mut tx, o.job, o.outcome, backoff, o.progress_done).await?;
                finished.push(Some(f));
            }
        }
    }
    if !ids.is_empty() {
        let rows = store::jobs::succeed_many(&mut tx, &ids, &task_ids, &results).await?;
        if !rows.is_empty() {
            let data: Vec<Value> = rows
                .iter()
                .map(|r| json!({ "attempt": r.attempt, "result": r.result }))
                .collect();
            store::events::insert_many(&mut tx, &rows, EventType::Succeeded, &data).await?;
        }
        let succeeded: std::collections::HashSet<&str> =
            rows.iter().map(|r| r.task_id.as_str()).collect();
        for (f, o) in finished.iter_mut().zip(outcomes) {
            if f.is_none() {
                *f = Some(if succeeded.contains(o.job.task_id.as_str()) {
                    Finished::Succeeded
                } else {
                    Finished::NotOwner
                });
            }
        }
    }
    let entries: Vec<String> = outcomes.iter().map(|o| o.job.task_id.clone()).collect();
    store::queue::delete(&mut tx, &entries).await?;
    tx.commit().await?;
    Ok(finished
        .into_iter()
        .map(|f| f.unwrap_or(Finished::NotOwner))
        .collect())
}

/// Records `outcome` inside `tx` (status row, next queue entry, event); the caller commits.
async fn finish_in(
    tx: &mut PgConnection,
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
    let (row, event, data, finished) = match outcome {
        Ok(result) => {
            let row = store::jobs::succeed(&mut *tx, job.id, &job.task_id, result).await?;
            let data = json!({ "attempt": job.attempt, "result": result });
            (row, EventType::Succeeded, data, Finished::Succeeded)
        }
        Err(JobError::Retryable(error)) if job.attempt < job.max_attempts => {
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
        Err(JobError::Retryable(error) | JobError::Permanent(error)) => {
            let row = store::jobs::fail(&mut *tx, job.id, &job.task_id, error).await?;
            let data = json!({ "attempt": job.attempt, "error": error });
            (row, EventType::Failed, data, Finished::Failed)
        }
        Err(JobError::Interrupted) => {
            let next = Ulid::generate();
            let done = i32::try_from(progress_done).unwrap_or(i32::MAX);
            let row = store::jobs::release(&mut *tx, job.id, &job.task_id, &next.to_string(), done)
                .await?;
            if row.is_some() {
                let entry = Entry {
                    task_id: next,
                    job_id: job.id,
                    run_at: None,
                    priority: job.priority,
                };
                store::queue::push(&mut *tx, kind, &[entry]).await?;
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
    store::events::insert(&mut *tx, &row, event, &data).await?;
    Ok(finished)
}
