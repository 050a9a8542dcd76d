//! Accepting jobs: status rows, queue entries and `queued` (or `scheduled`) events commit
//! together or not at all, one job or a thousand.

use std::collections::HashSet;

use chrono::{SubsecRound as _, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use ulid::Ulid;
use uuid::Uuid;

use crate::domain::{JobKind, JobOptions};
use crate::lifecycle::StoreError;
use crate::store::{self, JobRow, jobs::NewJob};

/// A validated job to accept.
#[derive(Debug, Clone)]
pub struct EnqueueRequest {
    pub kind: JobKind,
    pub payload: Value,
    pub progress_total: u32,
    pub options: JobOptions,
    pub owner: String,
    pub idempotency_key: Option<String>,
    /// Extra data for the `queued` event (e.g. the schedule that made the job).
    pub origin: Option<Value>,
}

impl EnqueueRequest {
    /// Identifies the request for idempotency: the same key with the same fingerprint is a
    /// replay. A relative `delay_ms` is part of the options as the absolute time it gave, so a
    /// replay of a delayed job compares equal only by kind, payload and the other options.
    fn fingerprint(&self) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(self.kind.as_str());
        h.update([0]);
        h.update(self.payload.to_string());
        h.update([0]);
        let options = json!({
            "max_attempts": self.options.max_attempts,
            "priority": self.options.priority,
            "timeout_ms": self.options.timeout.map(|t| t.as_millis() as u64),
            "tags": self.options.tags,
        });
        h.update(options.to_string());
        h.finalize().to_vec()
    }
}

#[derive(Debug)]
pub enum Enqueued {
    /// A new job.
    Created(JobRow),
    /// The Idempotency-Key was used before with the same request: that job.
    Replayed(JobRow),
}

impl Enqueued {
    pub fn row(&self) -> &JobRow {
        match self {
            Enqueued::Created(row) | Enqueued::Replayed(row) => row,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("the Idempotency-Key was already used for a different request (job {job_id})")]
    KeyReused { job_id: Uuid },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for EnqueueError {
    fn from(e: sqlx::Error) -> Self {
        EnqueueError::Store(e.into())
    }
}

pub async fn enqueue(pool: &PgPool, req: EnqueueRequest) -> Result<Enqueued, EnqueueError> {
    let mut done = enqueue_many(pool, std::slice::from_ref(&req)).await?;
    done.pop()
        .ok_or_else(|| EnqueueError::Store(sqlx::Error::RowNotFound.into()))
}

/// Accepts all of `reqs` at once, in order, or none. Without idempotency keys that is one
/// statement committing by itself; with keys it is a transaction, since a request whose key was
/// used before is a replay (the earlier job) if it is the same request and makes the whole call
/// fail with [`EnqueueError::KeyReused`] otherwise.
pub async fn enqueue_many(
    pool: &PgPool,
    reqs: &[EnqueueRequest],
) -> Result<Vec<Enqueued>, EnqueueError> {
    let mut conn = pool.acquire().await?;
    enqueue_many_on(&mut conn, reqs).await
}

/// [`enqueue_many`] on a connection of the caller's.
pub async fn enqueue_many_on(
    conn: &mut PgConnection,
    reqs: &[EnqueueRequest],
) -> Result<Vec<Enqueued>, EnqueueError> {
    let now = Utc::now();
    let mut new = Vec::with_capacity(reqs.len());
    for req in reqs {
        let id = Uuid::now_v7();
        // Postgres keeps microseconds: the job answered must be the job stored.
        let run_at = req.options.run_at.map(|at| at.trunc_subsecs(6));
        let due_later = run_at.is_some_and(|at| at > now);
        // A scheduled job's first event is `queued` too (its status says `scheduled`).
        let mut event_data = json!({ "attempt": 0 });
        if let Some(at) = run_at {
            event_data["run_at"] = json!(at);
        }
        if let Some(origin) = &req.origin {
            event_data["origin"] = origin.clone();
        }
        new.push(NewJob {
            id,
            kind: req.kind,
            status: if due_later { "scheduled" } else { "queued" },
            payload: &req.payload,
            progress_total: i32::try_from(req.progress_total).unwrap_or(i32::MAX),
            max_attempts: i32::try_from(req.options.max_attempts).unwrap_or(i32::MAX),
            task_id: Ulid::generate().to_string(),
            owner: &req.owner,
            idempotency_key: req.idempotency_key.as_deref(),
            request_hash: req.idempotency_key.as_ref().map(|_| req.fingerprint()),
            run_at,
            priority: req.options.priority,
            timeout_ms: req
                .options
                .timeout
                .map(|t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX)),
            tags: &req.options.tags,
            entry_args: store::queue::entry_args(id)?,
            event_data,
        });
    }

    if new.iter().all(|job| job.idempotency_key.is_none()) {
        let at = store::jobs::accept_all(&mut *conn, &new).await?;
        return Ok(new
            .iter()
            .map(|job| Enqueued::Created(job.row(at)))
            .collect());
    }

    let mut tx = sqlx::Connection::begin(conn).await?;
    let accepted = store::jobs::accept_many(&mut *tx, &new).await?;
    let created: HashSet<Uuid> = accepted.ids.into_iter().collect();
    let mut done = Vec::with_capacity(new.len());
    for job in &new {
        if created.contains(&job.id) {
            done.push(Enqueued::Created(job.row(accepted.at)));
            continue;
        }
        // The key was taken: the insert waited for that transaction, so the earlier job is
        // visible now. It must be the same request.
        let key = job.idempotency_key.unwrap_or_default().to_owned();
        let existing = store::jobs::get_by_idempotency_keys(&mut *tx, job.owner, &[key])
            .await?
            .pop()
            .ok_or(sqlx::Error::RowNotFound)?;
        if existing.request_hash != job.request_hash {
            return Err(EnqueueError::KeyReused {
                job_id: existing.id,
            });
        }
        done.push(Enqueued::Replayed(existing));
    }
    tx.commit().await?;
    Ok(done)
}
