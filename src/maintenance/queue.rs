//! Housekeeping of apalis' queue tables, in one process at a time (advisory lock): finished
//! entries are deleted (our status rows and events are the record) and statistics refreshed.
//! The job counts' appended changes are folded into one row per key and their table vacuumed
//! (every statement that changes jobs appends a row or two; autovacuum may be off).

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::store;

const EVERY: Duration = Duration::from_secs(30);
/// Finished queue entries are kept this long (for apalis' own introspection), then deleted.
const KEEP_FINISHED: Duration = Duration::from_secs(60);

pub async fn run(pool: PgPool, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        match once(&pool).await {
            Ok(Some(pruned)) => tracing::debug!(pruned, "queue maintenance done"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "queue maintenance failed"),
        }
    }
}

/// Prunes finished entries and refreshes statistics; `None` if another process holds the lock.
pub async fn once(pool: &PgPool) -> sqlx::Result<Option<u64>> {
    let mut tx = pool.begin().await?;
    if !store::queue::try_maintenance_lock(&mut tx).await? {
        return Ok(None);
    }
    let pruned = store::queue::prune_finished(&mut tx, KEEP_FINISHED).await?;
    store::queue::analyze(&mut tx).await?;
    let folded = store::jobs::fold_counts(&mut *tx).await?;
    tx.commit().await?;
    if folded > 0 {
        store::jobs::vacuum_counts(pool).await?;
    }
    Ok(Some(pruned))
}
