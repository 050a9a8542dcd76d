//! The recurring-job scheduler: turns due schedule ticks into jobs. Runs in every process; the
//! schedule rows' locks and the jobs' idempotency keys make each tick one job.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::{self, EnqueueRequest};
use crate::store::{self, schedules::ScheduleRow};

/// Longest sleep between two looks at the schedules (a new schedule is seen within it).
const MAX_NAP: Duration = Duration::from_millis(500);

pub type MakeJob = Arc<dyn Fn(&ScheduleRow) -> Result<EnqueueRequest, String> + Send + Sync>;

pub async fn run(pool: PgPool, make_job: MakeJob, shutdown: CancellationToken) {
    loop {
        if let Err(e) = lifecycle::schedules::run_due(&pool, &*make_job).await {
            tracing::warn!(error = %e, "scheduler could not run due schedules");
        }
        let nap = match store::schedules::next_due(&pool).await {
            Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or_default().min(MAX_NAP),
            _ => MAX_NAP,
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(nap + Duration::from_millis(1)) => {}
        }
    }
}
