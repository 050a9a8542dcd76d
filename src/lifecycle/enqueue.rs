//! Accepting a job: status row, queue entry and `queued` event commit together or not at all.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use ulid::Ulid;
use uuid::Uuid;

use crate::domain::{EventType, JobKind};
use crate::lifecycle::StoreError;
use crate::store::{self, JobRow, jobs::NewJob};

/// A validated job to accept.
pub struct EnqueueRequest {
    pub kind: JobKind,
    pub payload: Value,
    pub progress_total: u32,
    pub max_attempts: u32,
    pub owner: String,
    pub idempotency_key: Option<String>,
}

impl EnqueueRequest {
    /// Identifies the request for idempotency: the same key with the same fingerprint is a replay.
    fn fingerprint(&self) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(self.kind.as_str());
        h.update([0]);
        h.update(self.payload.to_string());
        h.update([0]);
        h.update(self.max_attempts.to_be_bytes());
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
    let fingerprint = req.fingerprint();
    let task_id = Ulid::generate();
    let task = task_id.to_string();
    let new = NewJob {
        id: Uuid::now_v7(),
        kind: req.kind.as_str(),
        payload: &req.payload,
        progress_total: i32::try_from(req.progress_total).unwrap_or(i32::MAX),
        max_attempts: i32::try_from(req.max_attempts).unwrap_or(i32::MAX),
        task_id: &task,
        owner: &req.owner,
        idempotency_key: req.idempotency_key.as_deref(),
        request_hash: &fingerprint,
    };

    let mut tx = pool.begin().await?;
    if let Some(job) = store::jobs::insert(&mut tx, &new).await? {
        store::queue::push(&mut tx, req.kind, task_id, job.id, None)
            .await
            .map_err(StoreError::from)?;
        store::events::insert(&mut tx, &job, EventType::Queued, &json!({ "attempt": 0 })).await?;
        tx.commit().await?;
        return Ok(Enqueued::Created(job));
    }
    tx.rollback().await?;

    // The key is taken: the insert waited for the other transaction, so its row is visible now.
    let key = req.idempotency_key.as_deref().unwrap_or_default();
    let existing = store::jobs::get_by_idempotency_key(pool, &req.owner, key)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    if existing.request_hash.as_deref() == Some(fingerprint.as_slice()) {
        Ok(Enqueued::Replayed(existing))
    } else {
        Err(EnqueueError::KeyReused {
            job_id: existing.id,
        })
    }
}
