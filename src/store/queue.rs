//! The queue entries, in apalis-postgres' `apalis.jobs`. An entry is one attempt of a job; its
//! arguments are only the job id, the status row holds everything else. Entries are written with
//! apalis-postgres' own `push_tasks` so that they are exactly what its workers expect.

use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use ulid::Ulid;
use uuid::Uuid;

use crate::domain::JobKind;

/// The arguments of a queue entry.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct AttemptArgs {
    pub job_id: Uuid,
}

/// How often apalis itself may hand the same entry out again. This only matters when our handler
/// could not record the outcome (the database was unreachable for a long time) or a worker died;
/// the job's own attempts are counted in `jobq.jobs`.
const ENTRY_MAX_ATTEMPTS: usize = 25;

/// Adds the entry for attempt `task_id` of `job_id`, due at `run_at` (now if `None`).
///
/// apalis stores `run_at` in whole seconds and runs an entry once `run_at < now()`; a future
/// time is rounded up so that an attempt never starts before its backoff has passed.
pub async fn push(
    conn: &mut PgConnection,
    kind: JobKind,
    task_id: Ulid,
    job_id: Uuid,
    run_at: Option<DateTime<Utc>>,
) -> Result<(), apalis_postgres::Error> {
    let mut task = entry(task_id, job_id)?;
    if let Some(at) = run_at {
        let secs = at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0);
        task = task.run_at_timestamp(secs.max(0) as u64);
    }
    apalis_postgres::queries::push_tasks(conn, kind.queue(), vec![task.build()]).await
}

/// Adds entries due now, one per `(task_id, job_id)`, in one statement.
pub async fn push_many(
    conn: &mut PgConnection,
    kind: JobKind,
    entries: &[(Ulid, Uuid)],
) -> Result<(), apalis_postgres::Error> {
    let tasks = entries
        .iter()
        .map(|&(task_id, job_id)| entry(task_id, job_id).map(|t| t.build()))
        .collect::<Result<Vec<_>, _>>()?;
    apalis_postgres::queries::push_tasks(conn, kind.queue(), tasks).await
}

fn entry(task_id: Ulid, job_id: Uuid) -> Result<TaskBuilder<Vec<u8>>, apalis_postgres::Error> {
    let args =
        serde_json::to_vec(&AttemptArgs { job_id }).map_err(apalis_postgres::Error::JsonError)?;
    Ok(TaskBuilder::new(args)
        .task_id(TaskId::from_ulid(task_id))
        .max_attempts(ENTRY_MAX_ATTEMPTS))
}

/// Deletes queue entries of jobq's queues that apalis finished more than `older_than` ago.
/// Our status rows and events are the record; finished entries only slow apalis' fetch and ack.
pub async fn prune_finished(
    conn: &mut PgConnection,
    older_than: std::time::Duration,
) -> sqlx::Result<u64> {
    let queues: Vec<String> = JobKind::ALL.iter().map(|k| k.queue().to_owned()).collect();
    let secs = older_than.as_secs_f64();
    let done = sqlx::query!(
        r#"
        DELETE FROM apalis.jobs
        WHERE job_type = ANY($1)
          AND (status IN ('Done', 'Killed') OR (status = 'Failed' AND attempts >= max_attempts))
          AND done_at < now() - make_interval(secs => $2)
        "#,
        &queues,
        secs
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    // Workers of processes long gone that no entry refers to any more (lock_by is a foreign key).
    sqlx::query!(
        r#"
        DELETE FROM apalis.workers w
        WHERE w.last_seen < now() - interval '1 day'
          AND NOT EXISTS (SELECT 1 FROM apalis.jobs j WHERE j.lock_by = w.id)
        "#
    )
    .execute(&mut *conn)
    .await?;
    Ok(done)
}

/// Takes the cluster-wide maintenance lock for the current transaction, if free.
pub async fn try_maintenance_lock(conn: &mut PgConnection) -> sqlx::Result<bool> {
    let locked =
        sqlx::query_scalar!("SELECT pg_try_advisory_xact_lock(hashtext('jobq.maintenance'))")
            .fetch_one(conn)
            .await?;
    Ok(locked.unwrap_or(false))
}

/// Refreshes planner statistics of the hot tables (autovacuum may be off).
pub async fn analyze(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("ANALYZE apalis.jobs, jobq.jobs")
        .execute(conn)
        .await?;
    Ok(())
}

/// Registers (or re-registers) an apalis worker as alive now.
pub async fn register_worker(
    conn: &mut PgConnection,
    worker: &str,
    queue: &str,
    service: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen)
        VALUES ($1, $2, 'jobq', $3, now())
        ON CONFLICT (id) DO UPDATE
        SET worker_type = EXCLUDED.worker_type, layers = EXCLUDED.layers, last_seen = now()
        "#,
        worker,
        queue,
        service
    )
    .execute(conn)
    .await?;
    Ok(())
}
