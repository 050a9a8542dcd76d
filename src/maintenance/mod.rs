//! Small periodic services that keep the database in shape; each runs in every process and
//! does its work in one process at a time (advisory locks).

mod queue;
mod retention;

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use retention::prune_once;

/// Starts the queue housekeeping and the retention pruner; both stop with `shutdown`.
pub fn start(pool: PgPool, retention: Duration, every: Duration, shutdown: CancellationToken) {
    tokio::spawn(queue::run(pool.clone(), shutdown.clone()));
    tokio::spawn(retention::run(pool, retention, every, shutdown));
}
