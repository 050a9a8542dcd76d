//! A worker takes an attempt: `queued`/`retrying` -> `running`, or a rescue of an attempt whose
//! worker died (`running` with the same task id).

use std::collections::HashSet;

use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use ulid::Ulid;
use uuid::Uuid;

use crate::domain::{EventType, JobKind, JobStatus};
use crate::lifecycle::StoreError;
use crate::store::{self, JobRow, queue::Entry};

#[derive(Debug)]
pub enum Start {
    /// Run this attempt; the row is `running` with the new attempt number.
    Run(std::sync::Arc<JobRow>),
    /// Nothing to run (cancelled, already finished, superseded, or out of attempts after a rescue).
    Skip(&'static str),
}

pub async fn start(
    pool: &PgPool,
    job_id: Uuid,
    task_id: &str,
    worker: &str,
) -> Result<Start, StoreError> {
    let mut tx = pool.begin().await?;
    let Some(job) = store::jobs::lock(&mut tx, job_id).await? else {
        return Ok(Start::Skip("job no longer exists"));
    };
    if job.task_id != task_id {
        return Ok(Start::Skip("attempt superseded"));
    }
    let status = JobStatus::parse(&job.status);
    if !status.is_some_and(|s| JobStatus::STARTABLE.contains(&s)) {
        return Ok(Start::Skip("job is not runnable"));
    }
    let rescued = status == Some(JobStatus::Running);
    if rescued && job.attempt >= job.max_attempts {
        let error = format!(
            "worker {} was lost during attempt {} of {}",
            job.worker.as_deref().unwrap_or("?"),
            job.attempt,
            job.max_attempts
        );
        if let Some(failed) = store::jobs::fail(&mut tx, job_id, task_id, &error).await? {
            let data = json!({ "attempt": failed.attempt, "error": error });
            store::events::insert(&mut tx, &failed, EventType::Failed, &data).await?;
        }
        tx.commit().await?;
        return Ok(Start::Skip("lost worker used the last attempt"));
    }

    let running = store::jobs::mark_running(&mut tx, job_id, worker).await?;
    let data = started_data(&running, worker, rescued);
    store::events::insert(&mut tx, &running, EventType::Started, &data).await?;
    tx.commit().await?;
    Ok(Start::Run(std::sync::Arc::new(running)))
}

/// Gives back attempts started by [`store::queue::fetch_and_start`] that never reached a handler
/// (the worker stopped first): the jobs are `queued` again, the attempt does not count, and the
/// same attempt waits in the queue again. Returns how many were given back (an attempt that
/// was cancelled or rescued meanwhile is no longer this worker's to give).
pub async fn unstart_many(
    conn: &mut PgConnection,
    kind: JobKind,
    task_ids: &[String],
    worker: &str,
) -> Result<usize, StoreError> {
    if task_ids.is_empty() {
        return Ok(0);
    }
    let rows = store::jobs::unstart_many(conn, task_ids, worker).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let entries = rows
        .iter()
        .map(|r| {
            let task_id = Ulid::from_string(&r.task_id)
                .map_err(|e| sqlx::Error::Decode(format!("task id {:?}: {e}", r.task_id).into()))?;
            Ok(Entry::due_now(task_id, r.id, r.priority))
        })
        .collect::<sqlx::Result<Vec<_>>>()?;
    store::queue::push(conn, kind, &entries).await?;
    let data: Vec<Value> = rows
        .iter()
        .map(|r| json!({ "attempt": r.attempt + 1, "reason": "worker stopped before the attempt began" }))
        .collect();
    store::events::insert_many(conn, &rows, EventType::Queued, &data).await?;
    Ok(rows.len())
}

/// Gives every `running` attempt of `kind` that nobody runs (see
/// [`store::queue::lost_attempts`]) a successor: a new attempt id on the status row and a queue
/// entry for it, due now. The worker that takes it rescues the job (`start`): a new attempt,
/// resumed from the last checkpoint, or `failed` if the lost one was the last. Returns the
/// rescued jobs with the worker that lost each.
pub async fn rescue_lost(
    conn: &mut PgConnection,
    kind: JobKind,
    worker: &str,
    held: &[String],
    window: std::time::Duration,
) -> Result<Vec<(Uuid, Option<String>)>, StoreError> {
    let lost = store::queue::lost_attempts(conn, kind, worker, held, window).await?;
    if lost.is_empty() {
        return Ok(Vec::new());
    }
    let next: Vec<Ulid> = lost.iter().map(|_| Ulid::generate()).collect();
    let ids: Vec<Uuid> = lost.iter().map(|l| l.job_id).collect();
    let old: Vec<String> = lost.iter().map(|l| l.task_id.clone()).collect();
    let new: Vec<String> = next.iter().map(ToString::to_string).collect();
    let moved: HashSet<Uuid> = store::jobs::reassign_lost(conn, &ids, &old, &new)
        .await?
        .into_iter()
        .collect();
    let (rescued, entries): (Vec<_>, Vec<_>) = lost
        .into_iter()
        .zip(next)
        .filter(|(l, _)| moved.contains(&l.job_id))
        .map(|(l, task_id)| {
            let entry = Entry::due_now(task_id, l.job_id, l.priority);
            ((l.job_id, l.worker), entry)
        })
        .unzip();
    store::queue::push(conn, kind, &entries).await?;
    Ok(rescued)
}

/// The data of a `started` event for `row` as the attempt began (the same fields as
/// [`store::queue::fetch_and_start`] writes for the attempts it starts).
fn started_data(row: &JobRow, worker: &str, rescued: bool) -> Value {
    json!({
        "attempt": row.attempt,
        "max_attempts": row.max_attempts,
        "worker": worker,
        "resumed_from": row.progress_done,
        "rescued": rescued,
    })
}
