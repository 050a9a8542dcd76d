//! History: finished jobs already in the tables before a processing run, written with SQL
//! (`generate_series`), fast.
//!
//! jobq: copies of one real job that jobq itself ran to `succeeded` (its status row and its
//! events), so every column holds what jobq writes; ids are UUIDv7-shaped with timestamps 1-3
//! days old (inside `--retention`). jobq deletes finished queue entries from `apalis.jobs`
//! itself (after 60 s), so its history lives in `jobq.jobs` and `jobq.job_events` only.
//!
//! apalis: `Done` rows in `apalis.jobs` as apalis writes them (payload, result, lock and done
//! times), locked by another worker name than the bench worker's (the kinder case for apalis:
//! its ack reads every row locked by the acking worker's name).

use anyhow::Context as _;
use sqlx::PgPool;
use uuid::Uuid;

/// Seeds `n` succeeded jobs (and their events) copied from the finished job `template`.
pub async fn jobq_history(pool: &PgPool, template: Uuid, n: i64) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "CREATE TEMP TABLE seed ON COMMIT DROP AS
         SELECT i, ts,
                (lpad(to_hex((extract(epoch FROM ts) * 1000)::bigint), 12, '0') || '7'
                 || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid AS id
         FROM (SELECT i, now() - interval '3 days' + make_interval(secs => i * 172800.0 / $1) AS ts,
                      md5(i::text) AS h
               FROM generate_series(1, $1) AS i) s",
    )
    .bind(n)
    .execute(&mut *tx)
    .await
    .context("seed ids")?;
    let jobs = sqlx::query(
        "INSERT INTO jobq.jobs (id, kind, status, payload, max_attempts, task_id, attempt, result,
                                worker, owner, request_hash, created_at, updated_at, started_at,
                                finished_at, attempt_started_at, progress_total, progress_done,
                                priority, tags)
         SELECT s.id, t.kind, t.status, t.payload, t.max_attempts, 'seed-' || s.i, t.attempt,
                t.result, t.worker, t.owner, t.request_hash, s.ts, s.ts + interval '2 ms',
                s.ts + interval '1 ms', s.ts + interval '2 ms', s.ts + interval '1 ms',
                t.progress_total, t.progress_done, t.priority, t.tags
         FROM jobq.jobs t, seed s WHERE t.id = $1 ORDER BY s.i",
    )
    .bind(template)
    .execute(&mut *tx)
    .await
    .context("seed jobq.jobs")?
    .rows_affected();
    anyhow::ensure!(jobs == n as u64, "seeded {jobs} of {n} jobs");
    sqlx::query(
        "INSERT INTO jobq.job_events (job_id, kind, type, status, data, owner, created_at, xid)
         SELECT s.id, e.kind, e.type, e.status, e.data, e.owner,
                s.ts + (row_number() OVER (PARTITION BY s.i ORDER BY e.id)) * interval '1 ms',
                e.xid
         FROM seed s CROSS JOIN jobq.job_events e WHERE e.job_id = $1 ORDER BY s.i, e.id",
    )
    .bind(template)
    .execute(&mut *tx)
    .await
    .context("seed jobq.job_events")?;
    tx.commit().await?;
    sqlx::query("ANALYZE jobq.jobs, jobq.job_events")
        .execute(pool)
        .await
        .context("ANALYZE")?;
    Ok(())
}

/// Seeds `n` Done hash tasks into `apalis.jobs`.
pub async fn apalis_history(pool: &PgPool, queue: &str, n: i64) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen)
         VALUES ('history-worker', $1, 'PgStorage', '', now() - interval '1 day')",
    )
    .bind(queue)
    .execute(&mut *tx)
    .await
    .context("seed apalis.workers")?;
    // Ids below every real ULID ("0000000..." < "01K..."), so a run's tasks are `id >= marker`.
    let rows = sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at,
                                  last_result, lock_at, lock_by, done_at, priority)
         SELECT '00000000' || lpad(i::text, 18, '0'), $1, convert_to('{\"data\":\"x\"}', 'UTF8'),
                'Done', 1, 25, ts,
                '{\"Ok\": \"2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881\"}',
                ts + interval '1 ms', 'history-worker', ts + interval '2 ms', 0
         FROM (SELECT i, now() - interval '3 days' + make_interval(secs => i * 172800.0 / $2) AS ts
               FROM generate_series(1, $2) AS i) s",
    )
    .bind(queue)
    .bind(n)
    .execute(&mut *tx)
    .await
    .context("seed apalis.jobs")?
    .rows_affected();
    anyhow::ensure!(rows == n as u64, "seeded {rows} of {n} apalis tasks");
    tx.commit().await?;
    sqlx::query("ANALYZE apalis.jobs, apalis.workers")
        .execute(pool)
        .await
        .context("ANALYZE")?;
    Ok(())
}
