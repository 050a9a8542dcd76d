//! Durable, throttled progress of a running attempt.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::EventType;
use crate::jobs::{JobError, Progress};
use crate::store;

/// Writes progress to the status row (and a `progress` event) at most once per `interval`, and
/// always for the last unit, so fast ticks do not become one write each.
pub struct DurableProgress {
    pool: PgPool,
    job_id: Uuid,
    task_id: String,
    interval: Duration,
    last_write: Option<Instant>,
    /// The latest reported value, written or not; a shutdown release saves it as the checkpoint.
    latest: Arc<AtomicU32>,
}

impl DurableProgress {
    pub fn new(
        pool: PgPool,
        job_id: Uuid,
        task_id: String,
        interval: Duration,
        latest: Arc<AtomicU32>,
    ) -> Self {
        Self {
            pool,
            job_id,
            task_id,
            interval,
            last_write: None,
            latest,
        }
    }

    async fn write(&mut self, done: u32, total: u32) -> Result<(), JobError> {
        let result: Result<bool, sqlx::Error> = async {
            let mut tx = self.pool.begin().await?;
            let done_i32 = i32::try_from(done).unwrap_or(i32::MAX);
            let Some(job) =
                store::jobs::set_progress(&mut tx, self.job_id, &self.task_id, done_i32).await?
            else {
                return Ok(false);
            };
            let data = json!({ "done": done, "total": total });
            store::events::insert(&mut tx, &job, EventType::Progress, &data).await?;
            tx.commit().await?;
            Ok(true)
        }
        .await;
        match result {
            Ok(true) => Ok(()),
            Ok(false) => Err(JobError::Lost),
            // Progress is a checkpoint, not the result: a failed write only makes the
            // checkpoint older, so the job carries on.
            Err(e) => {
                tracing::warn!(error = %e, "could not record progress");
                Ok(())
            }
        }
    }
}

impl Progress for DurableProgress {
    fn report(&mut self, done: u32, total: u32) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(async move {
            self.latest.store(done, Ordering::Relaxed);
            let due = self
                .last_write
                .is_none_or(|at| at.elapsed() >= self.interval);
            if !due && done < total {
                return Ok(());
            }
            self.last_write = Some(Instant::now());
            self.write(done, total).await
        })
    }
}
