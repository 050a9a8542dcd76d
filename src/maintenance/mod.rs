//! Small periodic services that keep the database in shape; each runs in every process and
//! does its work in one process at a time (advisory locks).

mod queue;
mod retention;
pub mod scheduler;

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use queue::once as housekeeping_once;
pub use retention::prune_once;

/// Starts the queue housekeeping, the retention pruner and the scheduler of recurring jobs;
/// all stop with `shutdown`.
pub fn start(
    pool: PgPool,
    retention: Duration,
    every: Duration,
    make_job: scheduler::MakeJob,
    shutdown: CancellationToken,
) {
    tokio::spawn(queue::run(pool.clone(), shutdown.clone()));
    tokio::spawn(retention::run(
        pool.clone(),
        retention,
        every,
        shutdown.clone(),
    ));
    tokio::spawn(scheduler::run(pool, make_job, shutdown));
}
