//! Accepting jobs: status rows, queue entries and `queued` (or `scheduled`) events commit
//! together or not at all, one job or a thousand.

use std::collections::HashMap;

use chrono::Utc;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use ulid::Ulid;
use uuid::Uuid;

use crate::domain::{EventType, JobKind, JobOptions};
use crate::lifecycle::StoreError;
use crate::store::{self, JobRow, jobs::NewJob, queue::Entry};

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
    let mut done = enqueue_many(pool, vec![req]).await?;
    done.pop()
        .ok_or_else(|| EnqueueError::Store(sqlx::Error::RowNotFound.into()))
}

/// Accepts all of `reqs` in one transaction, in order, or none: a request whose idempotency
/// key was used before is a replay (the earlier job) if it is the same request, and makes the
/// whole call fail with [`EnqueueError::KeyReused`] otherwise.
pub async fn enqueue_many(
    pool: &PgPool,
    reqs: Vec<EnqueueRequest>,
) -> Result<Vec<Enqueued>, EnqueueError> {
    let now = Utc::now();
    let mut new = Vec::with_capacity(reqs.len());
    for req in &reqs {
        let due_later = req.options.run_at.is_some_and(|at| at > now);
        new.push(NewJob {
            id: Uuid::now_v7(),
            kind: req.kind.as_str(),
            status: if due_later { "scheduled" } else { "queued" },
            payload: req.payload.clone(),
            progress_total: i32::try_from(req.progress_total).unwrap_or(i32::MAX),
            max_attempts: i32::try_from(req.options.max_attempts).unwrap_or(i32::MAX),
            task_id: Ulid::generate().to_string(),
            owner: req.owner.clone(),
            idempotency_key: req.idempotency_key.clone(),
            request_hash: req.fingerprint(),
            run_at: req.options.run_at,
            priority: req.options.priority,
            timeout_ms: req
                .options
                .timeout
                .map(|t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX)),
            tags: req.options.tags.clone(),
        });
    }

    let mut tx = pool.begin().await?;
    let created = store::jobs::insert_many(&mut tx, &new).await?;
    let mut replays: HashMap<Uuid, JobRow> = HashMap::new();
    if created.len() < new.len() {
        // Some keys were taken: the insert waited for their transactions, so the earlier jobs
        // are visible now. Every one of them must be the same request.
        let created_ids: std::collections::HashSet<Uuid> = created.iter().map(|r| r.id).collect();
        for (req, job) in reqs.iter().zip(&new) {
            if created_ids.contains(&job.id) {
                continue;
            }
            let key = req.idempotency_key.clone().unwrap_or_default();
            let existing = store::jobs::get_by_idempotency_keys(&mut *tx, &req.owner, &[key])
                .await?
                .pop()
                .ok_or(sqlx::Error::RowNotFound)?;
            if existing.request_hash.as_deref() != Some(job.request_hash.as_slice()) {
                return Err(EnqueueError::KeyReused {
                    job_id: existing.id,
                });
            }
            replays.insert(job.id, existing);
        }
    }

    let mut by_kind: HashMap<JobKind, Vec<Entry>> = HashMap::new();
    let mut data = Vec::with_capacity(created.len());
    let origin: HashMap<Uuid, Option<&Value>> = reqs
        .iter()
        .zip(&new)
        .map(|(req, job)| (job.id, req.origin.as_ref()))
        .collect();
    for row in &created {
        let mut event = json!({ "attempt": 0 });
        if let Some(at) = row.run_at {
            event["run_at"] = json!(at);
        }
        if let Some(Some(extra)) = origin.get(&row.id) {
            event["origin"] = (*extra).clone();
        }
        data.push(event);
        let kind =
            JobKind::parse(&row.kind).ok_or_else(|| sqlx::Error::Decode("job kind".into()))?;
        let task_id = Ulid::from_string(&row.task_id).map_err(|e| sqlx::Error::Decode(e.into()))?;
        by_kind.entry(kind).or_default().push(Entry {
            task_id,
            job_id: row.id,
            run_at: row.run_at,
            priority: row.priority,
        });
    }
    for (kind, entries) in &by_kind {
        store::queue::push(&mut tx, *kind, entries).await?;
    }
    // A scheduled job's first event is `queued` too (its status says `scheduled`).
    store::events::insert_many(&mut tx, &created, EventType::Queued, &data).await?;
    tx.commit().await?;

    let mut created: HashMap<Uuid, JobRow> = created.into_iter().map(|r| (r.id, r)).collect();
    Ok(new
        .iter()
        .filter_map(|job| match created.remove(&job.id) {
            Some(row) => Some(Enqueued::Created(row)),
            None => replays.remove(&job.id).map(Enqueued::Replayed),
        })
        .collect())
}
