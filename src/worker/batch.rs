//! Group commits on the worker side: attempts start in the transaction that fetched them, and
//! outcomes finishing at about the same time are recorded in one transaction. Under load a
//! worker thus commits twice per batch of jobs instead of three times per job; when idle, a
//! batch is a single job and nothing waits for company. A few batches may be recording at once,
//! so an outcome that arrives while one commits starts its own at once instead of waiting a
//! whole statement for it (only when every slot is busy do outcomes wait and group up).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::db::KeptConnections;
use crate::domain::{Backoff, JobKind};
use crate::jobs::JobError;
use crate::lifecycle::{self, Finished, Outcome, StoreError};
use crate::store::JobRow;

/// Most outcomes recorded in one transaction.
const MAX_FINISH_BATCH: usize = 512;
/// Outcome batches recording at once.
const BATCHES_IN_FLIGHT: usize = 4;

/// Attempts started at fetch time and not yet taken by their handler, and the attempts of each
/// kind this process holds (fetched and not finished), by task id.
#[derive(Clone, Default)]
pub struct Started {
    rows: Arc<Mutex<HashMap<String, Arc<JobRow>>>>,
    held: Arc<[Mutex<HashSet<String>>; 3]>,
}

impl Started {
    fn held_of(&self, kind: JobKind) -> &Mutex<HashSet<String>> {
        &self.held[match kind {
            JobKind::Email => 0,
            JobKind::LongRunning => 1,
            JobKind::Hash => 2,
        }]
    }

    /// How many attempts of `kind` this process fetched and has not finished yet.
    pub fn held(&self, kind: JobKind) -> usize {
        self.held_of(kind).lock().map_or(0, |set| set.len())
    }

    /// The task ids of the attempts of `kind` this process holds.
    pub fn held_ids(&self, kind: JobKind) -> Vec<String> {
        self.held_of(kind)
            .lock()
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Attempts of `kind` were fetched.
    pub fn hold(&self, kind: JobKind, task_ids: impl IntoIterator<Item = String>) {
        if let Ok(mut set) = self.held_of(kind).lock() {
            set.extend(task_ids);
        }
    }

    /// An attempt of `kind` ended (finished, skipped or given back).
    pub fn release(&self, kind: JobKind, task_id: &str) {
        if let Ok(mut set) = self.held_of(kind).lock() {
            set.remove(task_id);
        }
    }

    pub fn insert(&self, rows: Vec<JobRow>) {
        if let Ok(mut map) = self.rows.lock() {
            for row in rows {
                map.insert(row.task_id.clone(), Arc::new(row));
            }
        }
    }

    /// The row of attempt `task_id` if it was started at fetch time (taken: asked once).
    pub fn take(&self, task_id: &str) -> Option<Arc<JobRow>> {
        self.rows.lock().ok()?.remove(task_id)
    }
}

struct Request {
    job: Arc<JobRow>,
    outcome: Result<Value, JobError>,
    progress_done: u32,
    reply: oneshot::Sender<Result<Finished, StoreError>>,
}

/// Records outcomes in batches: whatever arrived while the previous batch was committing.
#[derive(Clone)]
pub struct Finisher {
    tx: mpsc::UnboundedSender<Request>,
}

impl Finisher {
    /// Starts the recording task, which records on `conns` (and on `pool` when a batch must be
    /// recorded one by one); it ends when the last `Finisher` clone is dropped.
    pub fn start(conns: KeptConnections, pool: PgPool, backoff: Backoff) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(record(pool, conns, backoff, rx));
        Self { tx }
    }

    /// Records the outcome of `job`'s attempt, together with others arriving meanwhile.
    pub async fn finish(
        &self,
        job: &Arc<JobRow>,
        outcome: &Result<Value, JobError>,
        progress_done: u32,
    ) -> Result<Finished, StoreError> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            job: job.clone(),
            outcome: outcome.clone(),
            progress_done,
            reply,
        };
        if self.tx.send(request).is_err() {
            return Err(StoreError::Db(sqlx::Error::PoolClosed));
        }
        answer
            .await
            .unwrap_or(Err(StoreError::Db(sqlx::Error::PoolClosed)))
    }
}

async fn record(
    pool: PgPool,
    conns: KeptConnections,
    backoff: Backoff,
    mut rx: mpsc::UnboundedReceiver<Request>,
) {
    let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    loop {
        // A slot first, then whatever has arrived: while all slots are busy, outcomes group up.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::new();
        if rx.recv_many(&mut batch, MAX_FINISH_BATCH).await == 0 {
            return;
        }
        let (pool, conns) = (pool.clone(), conns.clone());
        tokio::spawn(async move {
            record_batch(&pool, &conns, &backoff, batch).await;
            drop(slot);
        });
    }
}

/// Records one batch of outcomes and answers each request.
async fn record_batch(
    pool: &PgPool,
    conns: &KeptConnections,
    backoff: &Backoff,
    mut batch: Vec<Request>,
) {
    let outcomes: Vec<Outcome<'_>> = batch
        .iter()
        .map(|r| Outcome {
            job: &r.job,
            outcome: &r.outcome,
            progress_done: r.progress_done,
        })
        .collect();
    // On a kept connection: the outcome statements are planned on it already.
    let recorded = conns
        .run(async |conn| lifecycle::finish_many(conn, &outcomes, backoff).await)
        .await;
    drop(outcomes);
    match recorded {
        Ok(finished) => {
            for (request, f) in batch.drain(..).zip(finished) {
                let _ = request.reply.send(Ok(f));
            }
        }
        Err(e) if batch.len() == 1 || e.is_unavailable() => {
            // The caller retries while the database is unreachable; a lone failure is its own.
            let mut first = Some(e);
            for request in batch.drain(..) {
                let err = first
                    .take()
                    .unwrap_or(StoreError::Db(sqlx::Error::PoolTimedOut));
                let _ = request.reply.send(Err(err));
            }
        }
        Err(e) => {
            // One bad outcome must not fail the others: record them one by one.
            tracing::warn!(error = %e, jobs = batch.len(), "outcome batch failed; recording one by one");
            for request in batch.drain(..) {
                let f = lifecycle::finish(
                    pool,
                    &request.job,
                    &request.outcome,
                    backoff,
                    request.progress_done,
                )
                .await;
                let _ = request.reply.send(f);
            }
        }
    }
}
