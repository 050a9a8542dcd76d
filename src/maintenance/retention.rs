//! Retention: finished jobs and their events older than the retention age are deleted, in
//! small batches (short transactions, short locks), by one process at a time.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::store;

const BATCH: i64 = 1000;

pub async fn run(pool: PgPool, retention: Duration, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match prune_once(&pool, retention).await {
            Ok(Some(n)) if n > 0 => {
                tracing::info!(deleted = n, "retention: old finished jobs deleted")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pruning failed"),
        }
    }
}

/// Deletes every job that finished more than `retention` ago; `None` when another process is
/// pruning. The lock is a session lock on one connection, held across the batches.
pub async fn prune_once(pool: &PgPool, retention: Duration) -> sqlx::Result<Option<u64>> {
    let cutoff = Utc::now()
        - chrono::Duration::from_std(retention).unwrap_or_else(|_| chrono::Duration::days(36500));
    let mut conn = pool.acquire().await?;
    if !store::jobs::try_lock_retention(&mut conn).await? {
        return Ok(None);
    }
    let mut deleted = 0;
    let result = async {
        loop {
            let n = store::jobs::prune_finished(&mut *conn, cutoff, BATCH).await?;
            deleted += n;
            if n < BATCH as u64 {
                return Ok::<_, sqlx::Error>(());
            }
        }
    }
    .await;
    store::jobs::unlock_retention(&mut conn).await?;
    result.map(|()| Some(deleted))
}
