//! One attempt, as a pipeline: start (mark running) -> run the kind -> record the outcome.
//! apalis only delivers the attempt; whatever happens, the outcome is ours to record, and the
//! handler returns `Ok` so that apalis merely marks its queue entry done.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::domain::{Backoff, JobKind};
use crate::jobs::email::{EmailJob, Mailer};
use crate::jobs::hash::HashJob;
use crate::jobs::long_running::LongRunningJob;
use crate::jobs::{JobContext, JobError};
use crate::lifecycle::{self, DurableProgress, Finished, Start, StoreError};
use crate::metrics;
use crate::store::JobRow;
use crate::worker::batch::{Finisher, Started};
use crate::worker::running::RunningJobs;

/// How long a worker keeps trying to record a start or an outcome while Postgres is unreachable
/// before it gives the attempt back to apalis (which hands it out again).
const STORE_RETRY_FOR: Duration = Duration::from_secs(60);

pub struct Executor {
    pub pool: PgPool,
    pub mailer: Arc<Mailer>,
    pub backoff: Backoff,
    pub progress_interval: Duration,
    /// Cancelled at the start of a graceful shutdown: jobs stop at their next safe point.
    pub shutdown: CancellationToken,
    /// Attempts running here, for operators' cancels.
    pub running: RunningJobs,
    /// Attempts the backends started at fetch time.
    pub started: Started,
    /// Records outcomes in group commits.
    pub finisher: Finisher,
    /// Digests computed at once (the CPU-bound part of hash jobs).
    pub hash_threads: Arc<tokio::sync::Semaphore>,
}

impl Executor {
    pub async fn run_attempt(
        &self,
        job_id: Uuid,
        task_id: &str,
        worker: &str,
    ) -> Result<(), StoreError> {
        let started = match self.started.take(task_id) {
            Some(job) => Start::Run(job),
            None => {
                with_store_retry(|| lifecycle::start(&self.pool, job_id, task_id, worker)).await?
            }
        };
        let job = match started {
            Start::Run(job) => job,
            Start::Skip(reason) => {
                tracing::info!(%job_id, reason, "attempt skipped");
                return Ok(());
            }
        };
        let span =
            tracing::info_span!("job", job_id = %job.id, kind = %job.kind, attempt = job.attempt);
        async {
            tracing::info!(resumed_from = job.progress_done, "attempt started");
            let kind = JobKind::parse(&job.kind);
            if let Some(kind) = kind {
                metrics::job_started(kind);
            }
            let clock = Instant::now();
            let registration = self.running.register(job.id);
            let latest = Arc::new(AtomicU32::new(
                u32::try_from(job.progress_done).unwrap_or(0),
            ));
            let attempt = self.execute(&job, registration.token.clone(), latest.clone());
            let limit = job
                .timeout_ms
                .and_then(|ms| u64::try_from(ms).ok())
                .map(Duration::from_millis);
            let token = registration.token.clone();
            let attempt = async move {
                let Some(limit) = limit else {
                    return attempt.await;
                };
                match tokio::time::timeout(limit, attempt).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        // Stop whatever still runs (a hash chunk on the blocking pool): its
                        // result is discarded.
                        token.cancel();
                        Err(JobError::Retryable(format!(
                            "attempt timed out after {} ms (timeout_ms)",
                            limit.as_millis()
                        )))
                    }
                }
            };
            let outcome = AssertUnwindSafe(attempt)
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(JobError::Retryable(panic_message(&panic))));
            drop(registration);
            let done = latest.load(Ordering::Relaxed);
            let finished =
                with_store_retry(|| self.finisher.finish(&job, &outcome, done)).await?;
            let run = clock.elapsed();
            let label = match finished {
                Finished::Succeeded => "succeeded",
                Finished::Retrying => "retrying",
                Finished::Failed => "failed",
                Finished::Released => "released",
                Finished::NotOwner => "cancelled",
            };
            if let Some(kind) = kind {
                metrics::attempt_finished(kind, label, run);
            }
            let ms = run.as_millis() as u64;
            let error = outcome.as_ref().err().map(ToString::to_string);
            match finished {
                Finished::Succeeded => tracing::info!(ms, "attempt succeeded"),
                Finished::NotOwner => tracing::info!(
                    ms,
                    "attempt ended without effect: the job was cancelled or belongs to another attempt"
                ),
                _ => tracing::warn!(ms, outcome = label, error, "attempt did not succeed"),
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    async fn execute(
        &self,
        job: &JobRow,
        cancel: CancellationToken,
        latest: Arc<AtomicU32>,
    ) -> Result<Value, JobError> {
        let kind = JobKind::parse(&job.kind)
            .ok_or_else(|| JobError::Permanent(format!("unknown job kind {:?}", job.kind)))?;
        let mut ctx = JobContext {
            job_id: job.id,
            attempt: u32::try_from(job.attempt).unwrap_or(1),
            checkpoint: u32::try_from(job.progress_done).unwrap_or(0),
            shutdown: self.shutdown.clone(),
            cancel,
            progress: Box::new(DurableProgress::new(
                self.pool.clone(),
                job.id,
                job.task_id.clone(),
                self.progress_interval,
                latest,
            )),
        };
        match kind {
            JobKind::Email => {
                let email: EmailJob = payload(job)?;
                to_json(email.run(job.id, &self.mailer).await?)
            }
            JobKind::LongRunning => {
                let steps: LongRunningJob = payload(job)?;
                to_json(steps.run(&mut ctx).await?)
            }
            JobKind::Hash => {
                let hash: HashJob = payload(job)?;
                let _thread = if hash.runs_inline() {
                    None
                } else {
                    let permit = self.hash_threads.acquire().await;
                    Some(permit.map_err(|_| JobError::Interrupted)?)
                };
                to_json(hash.run(&ctx).await?)
            }
        }
    }
}

fn payload<T: DeserializeOwned>(job: &JobRow) -> Result<T, JobError> {
    serde_json::from_value(job.payload.clone())
        .map_err(|e| JobError::Permanent(format!("stored payload is unreadable: {e}")))
}

fn to_json<T: Serialize>(result: T) -> Result<Value, JobError> {
    serde_json::to_value(result)
        .map_err(|e| JobError::Permanent(format!("result cannot be stored: {e}")))
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    format!("job panicked: {text}")
}

/// Runs `op` until it succeeds, fails for a reason other than an unreachable database, or
/// `STORE_RETRY_FOR` has passed.
async fn with_store_retry<T, F, Fut>(mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let deadline = Instant::now() + STORE_RETRY_FOR;
    let mut wait = Duration::from_millis(100);
    loop {
        match op().await {
            Err(e) if e.is_unavailable() && Instant::now() + wait < deadline => {
                tracing::warn!(error = %e, "database unavailable; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}
