//! What operators do to jobs: cancel, retry one, retry many. Each is one transaction with its
//! events, which record who did it (`data.by`).

use std::collections::HashMap;

use serde_json::{Value, json};
use sqlx::PgPool;
use ulid::Ulid;
use uuid::Uuid;

use crate::domain::{EventType, JobKind, JobStatus};
use crate::lifecycle::StoreError;
use crate::store::{self, JobRow, jobs::JobFilter, queue::Entry};

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("no such job")]
    NotFound,
    #[error("the job is {status}")]
    InvalidStatus { status: JobStatus },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for OpsError {
    fn from(e: sqlx::Error) -> Self {
        OpsError::Store(e.into())
    }
}

/// Locks job `id` and checks that it is in one of `allowed`; returns it and its status.
async fn lock_in(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    allowed: &[JobStatus],
) -> Result<(JobRow, JobStatus), OpsError> {
    let job = store::jobs::lock(tx, id).await?.ok_or(OpsError::NotFound)?;
    let status = JobStatus::parse(&job.status).ok_or(OpsError::NotFound)?;
    if !allowed.contains(&status) {
        return Err(OpsError::InvalidStatus { status });
    }
    Ok((job, status))
}

/// Cancels a queued, retrying or running job. A queued or retrying job never runs; a running
/// one is told to stop (its worker, in any process, gets `jobq_cancel`) and whatever its
/// attempt produces afterwards is discarded.
pub async fn cancel(pool: &PgPool, id: Uuid, by: &str) -> Result<JobRow, OpsError> {
    let mut tx = pool.begin().await?;
    let (job, status) = lock_in(&mut tx, id, &JobStatus::CANCELLABLE).await?;
    let cancelled = store::jobs::cancel(&mut tx, id)
        .await?
        .ok_or(OpsError::NotFound)?;
    let data = json!({ "by": by, "previous_status": status, "attempt": job.attempt });
    store::events::insert(&mut tx, &cancelled, EventType::Cancelled, &data).await?;
    if status == JobStatus::Running {
        store::jobs::notify_cancel(&mut tx, id).await?;
    }
    tx.commit().await?;
    Ok(cancelled)
}

/// Queues a failed or cancelled job again with a fresh attempt count.
pub async fn retry(pool: &PgPool, id: Uuid, by: &str) -> Result<JobRow, OpsError> {
    let mut tx = pool.begin().await?;
    lock_in(&mut tx, id, &JobStatus::RETRYABLE).await?;
    let mut retried = requeue(&mut tx, &[id], by).await?;
    tx.commit().await?;
    retried.pop().ok_or(OpsError::NotFound)
}

/// What a bulk retry did (or, for a dry run, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkRetry {
    /// Retryable jobs matching the filter.
    pub matched: i64,
    /// Jobs retried: `matched` up to the cap.
    pub retried: i64,
}

/// Retries up to `cap` failed or cancelled jobs matching `filter` (its statuses narrowed to
/// those two), oldest first; with `dry_run`, only counts them.
pub async fn bulk_retry(
    pool: &PgPool,
    filter: &JobFilter,
    cap: i64,
    dry_run: bool,
    by: &str,
) -> Result<BulkRetry, StoreError> {
    let mut filter = filter.clone();
    let retryable = JobStatus::RETRYABLE.map(|s| s.as_str().to_owned());
    filter.statuses = Some(match filter.statuses.take() {
        Some(asked) => asked
            .into_iter()
            .filter(|s| retryable.contains(s))
            .collect(),
        None => retryable.to_vec(),
    });
    let matched: i64 = store::jobs::count(pool, &filter)
        .await?
        .iter()
        .map(|(_, _, n)| n)
        .sum();
    if dry_run {
        return Ok(BulkRetry {
            matched,
            retried: matched.min(cap),
        });
    }
    let mut tx = pool.begin().await?;
    let ids = store::jobs::lock_matching(&mut tx, &filter, cap).await?;
    let retried = requeue(&mut tx, &ids, by).await?;
    tx.commit().await?;
    Ok(BulkRetry {
        matched,
        retried: retried.len() as i64,
    })
}

/// Requeues `ids` (already locked, failed or cancelled) with new queue entries and `retried`
/// events, in the caller's transaction.
async fn requeue(
    tx: &mut sqlx::PgConnection,
    ids: &[Uuid],
    by: &str,
) -> Result<Vec<JobRow>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let before: HashMap<Uuid, JobRow> = store::jobs::get_many(&mut *tx, ids)
        .await?
        .into_iter()
        .map(|j| (j.id, j))
        .collect();
    let tasks: Vec<Ulid> = ids.iter().map(|_| Ulid::generate()).collect();
    let task_ids: Vec<String> = tasks.iter().map(Ulid::to_string).collect();
    let rows = store::jobs::requeue(tx, ids, &task_ids).await?;

    let mut by_kind: HashMap<JobKind, Vec<Entry>> = HashMap::new();
    let mut data: Vec<Value> = Vec::with_capacity(rows.len());
    let task_of: HashMap<Uuid, Ulid> = ids.iter().copied().zip(tasks.iter().copied()).collect();
    for row in &rows {
        let old = before.get(&row.id);
        data.push(json!({
            "by": by,
            "previous_status": old.map(|j| j.status.as_str()),
            "previous_attempts": old.map(|j| j.attempt),
        }));
        if let (Some(kind), Some(task)) = (JobKind::parse(&row.kind), task_of.get(&row.id)) {
            by_kind
                .entry(kind)
                .or_default()
                .push(Entry::due_now(*task, row.id, row.priority));
        }
    }
    for (kind, entries) in by_kind {
        store::queue::push(tx, kind, &entries).await?;
    }
    store::events::insert_many(tx, &rows, EventType::Retried, &data).await?;
    Ok(rows)
}
