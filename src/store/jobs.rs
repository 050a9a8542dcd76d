//! `jobq.jobs`: the status row of each job. Worker-side updates are fenced on the attempt's
//! task id and the status they expect, so a stale attempt cannot overwrite a newer state.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// One row of `jobq.jobs`, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: Uuid,
    pub kind: String,
    pub status: String,
    pub payload: Value,
    pub progress_done: i32,
    pub progress_total: i32,
    pub attempt: i32,
    pub max_attempts: i32,
    pub result: Option<Value>,
    pub last_error: Option<String>,
    pub task_id: String,
    pub worker: Option<String>,
    pub owner: String,
    pub idempotency_key: Option<String>,
    pub request_hash: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// A job to insert.
pub struct NewJob<'a> {
    pub id: Uuid,
    pub kind: &'a str,
    pub payload: &'a Value,
    pub progress_total: i32,
    pub max_attempts: i32,
    pub task_id: &'a str,
    pub owner: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub request_hash: &'a [u8],
}

/// Inserts a queued job; `None` when the owner already has a job with this idempotency key.
pub async fn insert(conn: &mut PgConnection, job: &NewJob<'_>) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as!(
        JobRow,
        r#"
        INSERT INTO jobq.jobs
            (id, kind, status, payload, progress_total, max_attempts, task_id, owner,
             idempotency_key, request_hash)
        VALUES ($1, $2, 'queued', $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING *
        "#,
        job.id,
        job.kind,
        job.payload,
        job.progress_total,
        job.max_attempts,
        job.task_id,
        job.owner,
        job.idempotency_key,
        job.request_hash,
    )
    .fetch_optional(conn)
    .await
}

pub async fn get(ex: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as!(JobRow, "SELECT * FROM jobq.jobs WHERE id = $1", id)
        .fetch_optional(ex)
        .await
}

pub async fn get_by_idempotency_key(
    ex: impl PgExecutor<'_>,
    owner: &str,
    key: &str,
) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as!(
        JobRow,
        "SELECT * FROM jobq.jobs WHERE owner = $1 AND idempotency_key = $2",
        owner,
        key
    )
    .fetch_optional(ex)
    .await
}

/// Filters of a job listing; `None` means any.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub status: Option<String>,
    pub kind: Option<String>,
    /// Only jobs with an id below this one (the cursor: ids are time-ordered, newest first).
    pub before: Option<Uuid>,
}

/// Jobs newest first, at most `limit`.
pub async fn list(
    ex: impl PgExecutor<'_>,
    filter: &ListFilter,
    limit: i64,
) -> sqlx::Result<Vec<JobRow>> {
    sqlx::query_as!(
        JobRow,
        r#"
        SELECT * FROM jobq.jobs
        WHERE ($1::text IS NULL OR status = $1)
          AND ($2::text IS NULL OR kind = $2)
          AND ($3::uuid IS NULL OR id < $3)
        ORDER BY id DESC
        LIMIT $4
        "#,
        filter.status,
        filter.kind,
        filter.before,
        limit
    )
    .fetch_all(ex)
    .await
}

/// Locks a job's row for the rest of the transaction.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as!(
        JobRow,
        "SELECT * FROM jobq.jobs WHERE id = $1 FOR UPDATE",
        id
    )
    .fetch_optional(conn)
    .await
}

/// Starts the next attempt of a locked job.
pub async fn mark_running(conn: &mut PgConnection, id: Uuid, worker: &str) -> sqlx::Result<JobRow> {
    sqlx::query_as!(
        JobRow,
        r#"
        UPDATE jobq.jobs
        SET status = 'running', attempt = attempt + 1, worker = $2,
            started_at = COALESCE(started_at, now()), next_attempt_at = NULL, updated_at = now()
        WHERE id = $1
        RETURNING *
        "#,
        id,
        worker
    )
    .fetch_one(conn)
    .await
}

/// Records durable progress of the running attempt `task_id`; false if it no longer owns the job.
pub async fn set_progress(
    conn: &mut PgConnection,
    id: Uuid,
    task_id: &str,
    done: i32,
) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as!(
        JobRow,
        r#"
        UPDATE jobq.jobs SET progress_done = $3, updated_at = now()
        WHERE id = $1 AND task_id = $2 AND status = 'running'
        RETURNING *
        "#,
        id,
        task_id,
        done
    )
    .fetch_optional(conn)
    .await
}

/// `running` -> `succeeded`, fenced on the attempt.
pub async fn succeed(
    conn: &mut PgConnection,
    id: Uuid,
    task_id: &str,
    result: &Value,
) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as!(
        JobRow,
        r#"
        UPDATE jobq.jobs
        SET status = 'succeeded', result = $3, progress_done = progress_total,
            finished_at = now(), updated_at = now()
        WHERE id = $1 AND task_id = $2 AND status = 'running'
        RETURNING *
        "#,
        id,
        task_id,
        result
    )
    .fetch_optional(conn)
    .await
}

/// `running` -> `retrying`, handing the job to a new attempt due at `next_attempt_at`.
pub async fn retry_later(
    conn: &mut PgConnection,
    id: Uuid,
    task_id: &str,
    next_task_id: &str,
    error: &str,
    next_attempt_at: DateTime<Utc>,
) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as!(
        JobRow,
        r#"
        UPDATE jobq.jobs
        SET status = 'retrying', task_id = $3, last_error = $4, next_attempt_at = $5,
            updated_at = now()
        WHERE id = $1 AND task_id = $2 AND status = 'running'
        RETURNING *
        "#,
        id,
        task_id,
        next_task_id,
        error,
        next_attempt_at
    )
    .fetch_optional(conn)
    .await
}

/// `running` -> `failed` for good (a failed last attempt, a permanent error, or a rescued attempt
/// with no attempts left), fenced on the attempt.
pub async fn fail(
    conn: &mut PgConnection,
    id: Uuid,
    task_id: &str,
    error: &str,
) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as!(
        JobRow,
        r#"
        UPDATE jobq.jobs
        SET status = 'failed', last_error = $3, finished_at = now(), updated_at = now()
        WHERE id = $1 AND task_id = $2 AND status = 'running'
        RETURNING *
        "#,
        id,
        task_id,
        error
    )
    .fetch_optional(conn)
    .await
}

/// `running` -> `queued` without spending an attempt: the worker stopped at a safe point
/// (shutdown) after `progress_done` units; a new attempt `next_task_id` picks it up.
pub async fn release(
    conn: &mut PgConnection,
    id: Uuid,
    task_id: &str,
    next_task_id: &str,
    progress_done: i32,
) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as!(
        JobRow,
        r#"
        UPDATE jobq.jobs
        SET status = 'queued', task_id = $3, attempt = GREATEST(attempt - 1, 0),
            progress_done = GREATEST(progress_done, $4), worker = NULL, updated_at = now()
        WHERE id = $1 AND task_id = $2 AND status = 'running'
        RETURNING *
        "#,
        id,
        task_id,
        next_task_id,
        progress_done
    )
    .fetch_optional(conn)
    .await
}
