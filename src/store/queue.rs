//! The queue entries, in apalis-postgres' `apalis.jobs`. An entry is one attempt of a job that
//! waits to be taken; its arguments are only the job id, the status row holds everything else.
//! Entries are inserted with the columns and values apalis-postgres' own `push_tasks` writes,
//! except that `run_at` keeps its sub-second precision (apalis' sink truncates it to whole
//! seconds, which would make a scheduled job or a backoff up to a second early or late).
//!
//! **An entry is deleted when a worker takes it** ([`fetch_and_start`]), not marked `Running`
//! and deleted at the end as apalis-postgres does: the status row already says the attempt runs
//! and on which worker, and one delete is a third of the row work of an update (new row version,
//! index entries, the check of the `lock_by` foreign key) plus a delete. What apalis-postgres'
//! `reenqueue_orphaned` did with `Running` entries, [`lost_attempts`] does with `running`
//! status rows: an attempt whose worker stopped beating (or that its live worker does not hold)
//! gets a new entry.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgConnection, Row};
use ulid::Ulid;
use uuid::Uuid;

use crate::domain::JobKind;
use crate::store::JobRow;

/// The arguments of a queue entry.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct AttemptArgs {
    pub job_id: Uuid,
}

/// How often apalis itself may hand the same entry out again. This only matters when our handler
/// could not record the outcome (the database was unreachable for a long time) or a worker died;
/// the job's own attempts are counted in `jobq.jobs`.
pub const ENTRY_MAX_ATTEMPTS: i32 = 25;

/// The encoded arguments of the queue entry of an attempt of `job_id`.
pub fn entry_args(job_id: Uuid) -> sqlx::Result<Vec<u8>> {
    serde_json::to_vec(&AttemptArgs { job_id }).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// One attempt to queue.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub task_id: Ulid,
    pub job_id: Uuid,
    /// Due time; `None`: now.
    pub run_at: Option<DateTime<Utc>>,
    pub priority: i32,
}

impl Entry {
    /// The entry of attempt `task_id` of job `job_id`, due now.
    pub fn due_now(task_id: Ulid, job_id: Uuid, priority: i32) -> Self {
        Self {
            task_id,
            job_id,
            run_at: None,
            priority,
        }
    }
}

/// Adds entries of `kind` in one statement. Entries due now are announced by the table's insert
/// trigger (NOTIFY at commit, one per statement and kind).
pub async fn push(conn: &mut PgConnection, kind: JobKind, entries: &[Entry]) -> sqlx::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = entries.iter().map(|e| e.task_id.to_string()).collect();
    let args = entries
        .iter()
        .map(|e| entry_args(e.job_id))
        .collect::<sqlx::Result<Vec<_>>>()?;
    let run_ats: Vec<Option<DateTime<Utc>>> = entries.iter().map(|e| e.run_at).collect();
    let priorities: Vec<i32> = entries.iter().map(|e| e.priority).collect();
    sqlx::query!(
        r#"
        INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority)
        SELECT id, $2, job, 'Pending', 0, $3, COALESCE(run_at, now()), priority
        FROM unnest($1::text[], $4::bytea[], $5::timestamptz[], $6::int[])
             AS t(id, job, run_at, priority)
        "#,
        &ids,
        kind.queue(),
        ENTRY_MAX_ATTEMPTS,
        &args,
        &run_ats as &[Option<DateTime<Utc>>],
        &priorities
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An entry handed to this worker by [`fetch_and_start`].
pub struct Fetched {
    pub task_id: String,
    pub job: Vec<u8>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub priority: i32,
}

/// Takes (deletes) up to `limit` due entries of `kind` (highest priority first, then the longest
/// due: the selection of apalis-postgres' `apalis.get_jobs`) and starts their attempts on
/// `worker`: each job whose current attempt the entry is and that waits to run becomes
/// `running`, with its `started` event. One statement; without an open transaction it commits
/// by itself. Returns each entry with its started row, or `None` where the attempt was not
/// started here (a rescue, a cancelled or superseded job: the handler's own start decides those).
///
/// A fetch that takes fewer than `limit` entries (none included) took every entry due: it also
/// tells when the next entry not yet due falls due ([`Taken::next_due`]), so that the worker
/// can rest until then (or until a notification) instead of asking again at once.
///
/// Checked at run time, not by `query!`: sqlx cannot tell the nullability of a data-modifying
/// CTE's columns, and the job row decodes by name through `JobRow`'s `FromRow`.
pub async fn fetch_and_start(
    conn: &mut PgConnection,
    kind: JobKind,
    worker: &str,
    limit: i32,
) -> sqlx::Result<Taken> {
    let rows = sqlx::query(
        r#"
        WITH entries AS (
            -- `= ANY(ARRAY(..))`, not `IN (..)`: the entries are then deleted through the
            -- primary key whatever the row estimates, so the generic plan Postgres switches to
            -- after five executions is as good as a custom one and the fetch is not planned
            -- again each time (0.2-0.3 ms of a 3-job fetch's ~0.5 ms). With `IN`, the generic
            -- plan hash-joined a sequential scan of every entry.
            DELETE FROM apalis.jobs
            WHERE id = ANY(ARRAY(
                SELECT id FROM apalis.jobs
                WHERE (status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts))
                  AND run_at < now() AND job_type = $1
                  -- A pause holds from its commit on, in every process, whatever a worker's
                  -- cached controls say yet.
                  AND NOT EXISTS (SELECT 1 FROM jobq.queues q WHERE q.kind = $4 AND q.paused)
                ORDER BY priority DESC, run_at ASC
                LIMIT $3
                FOR UPDATE SKIP LOCKED
            ))
            RETURNING id, job, attempts, max_attempts, run_at, priority,
                      -- The job id from the entry's arguments ({"job_id": "..."}); NULL rather
                      -- than an error for anything else, so one bad entry cannot stop a queue.
                      substring(encode(job, 'escape') FROM
                          '"job_id":"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"'
                      )::uuid AS job_id
        ), started AS (
            UPDATE jobq.jobs j
            SET status = 'running', attempt = j.attempt + 1, worker = $2,
                started_at = COALESCE(j.started_at, now()), attempt_started_at = now(),
                next_attempt_at = NULL, updated_at = now()
            FROM entries e
            WHERE j.id = e.job_id AND j.task_id = e.id
              -- `|| ''` keeps the (status, id) index out of the plan: with statistics taken
              -- before a burst of new jobs, the planner believes almost no row is `queued` and
              -- drives the join from that index, reading every queued job per fetch.
              AND j.status || '' IN ('scheduled', 'queued', 'retrying')
            RETURNING j.*
        ), events AS (
            INSERT INTO jobq.job_events (job_id, kind, type, status, data, owner)
            SELECT id, kind, 'started', status,
                   jsonb_build_object('attempt', attempt, 'max_attempts', max_attempts,
                                      'worker', $2::text, 'resumed_from', progress_done,
                                      'rescued', false),
                   owner
            FROM started
        )
        SELECT e.id AS entry_id, e.job AS entry_job, e.attempts AS entry_attempts,
               e.max_attempts AS entry_max_attempts, e.run_at AS entry_run_at,
               e.priority AS entry_priority, d.next_due, s.*
        FROM (entries e LEFT JOIN started s ON s.task_id = e.id)
             -- One row even when nothing was taken (its entry columns NULL), to carry the next
             -- due time. That is read only for a fetch that took every due entry (an InitPlan
             -- runs only when reached: a full batch under a backlog does not scan for it).
             RIGHT JOIN (
                 SELECT CASE WHEN (SELECT count(*) FROM entries) < $3 THEN (
                     SELECT min(run_at) FROM apalis.jobs
                     WHERE job_type = $1 AND status = 'Pending' AND run_at >= now()
                 ) END AS next_due
             ) d ON true
        ORDER BY e.priority DESC, e.run_at ASC
        "#,
    )
    .bind(kind.queue())
    .bind(worker)
    .bind(i64::from(limit))
    .bind(kind.as_str())
    .fetch_all(conn)
    .await?;
    let next_due = match rows.first() {
        Some(row) => row.try_get("next_due")?,
        None => None,
    };
    let mut entries = Vec::with_capacity(rows.len());
    for row in &rows {
        // NULL: the row that only carries the next due time (nothing was taken).
        let Some(task_id) = row.try_get::<Option<String>, _>("entry_id")? else {
            continue;
        };
        let entry = Fetched {
            task_id,
            job: row.try_get("entry_job")?,
            attempts: row.try_get("entry_attempts")?,
            max_attempts: row.try_get("entry_max_attempts")?,
            run_at: row.try_get("entry_run_at")?,
            priority: row.try_get("entry_priority")?,
        };
        let started = match row.try_get::<Option<Uuid>, _>("id")? {
            Some(_) => Some(JobRow::from_row(row)?),
            None => None,
        };
        entries.push((entry, started));
    }
    Ok(Taken { entries, next_due })
}

/// What [`fetch_and_start`] took.
pub struct Taken {
    /// Each entry taken, with its started row (`None` where the attempt was not started here).
    pub entries: Vec<(Fetched, Option<JobRow>)>,
    /// When fewer entries than asked for were taken (none included): when the next entry not
    /// yet due falls due, if any.
    pub next_due: Option<DateTime<Utc>>,
}

/// An attempt that is `running` with nobody running it.
#[derive(Debug)]
pub struct LostAttempt {
    pub job_id: Uuid,
    pub task_id: String,
    pub worker: Option<String>,
    pub priority: i32,
}

/// Locks the `running` attempts of `kind` that nobody runs and no queue entry waits for: their
/// worker has not beaten for `window` (or is gone), or it is `worker` itself, which does not
/// hold them (`held`) although they started more than `window` ago (a fetch that committed but
/// whose answer was lost with the connection; an outcome that could not be recorded).
pub async fn lost_attempts(
    conn: &mut PgConnection,
    kind: JobKind,
    worker: &str,
    held: &[String],
    window: std::time::Duration,
) -> sqlx::Result<Vec<LostAttempt>> {
    sqlx::query_as!(
        LostAttempt,
        r#"
        SELECT j.id AS job_id, j.task_id, j.worker, j.priority
        FROM jobq.jobs j
        LEFT JOIN apalis.workers w ON w.id = j.worker
        WHERE j.status = 'running' AND j.kind = $1
          AND (w.id IS NULL
               OR w.last_seen < now() - make_interval(secs => $4)
               OR (j.worker = $2 AND NOT (j.task_id = ANY($3))
                   AND j.attempt_started_at < now() - make_interval(secs => $4)))
          -- Already given a new entry that waits to be taken.
          AND NOT EXISTS (SELECT 1 FROM apalis.jobs e WHERE e.id = j.task_id)
        FOR UPDATE OF j SKIP LOCKED
        "#,
        kind.as_str(),
        worker,
        held,
        window.as_secs_f64()
    )
    .fetch_all(conn)
    .await
}

/// Deletes queue entries of jobq's queues that apalis finished more than `older_than` ago (jobq
/// deletes an entry when it is taken; databases that ran older versions still hold finished ones).
/// Our status rows and events are the record; finished entries only slow the fetch.
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
    // A job still `running` on such a worker is rescued all the same (`lost_attempts`).
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
