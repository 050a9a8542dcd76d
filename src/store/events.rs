//! `jobq.job_events`: the append-only log of what happened to each job.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::EventType;
use crate::store::JobRow;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    /// The writing transaction (`xid8`, as a number): with `id`, the event's [`Position`].
    pub xid: i64,
    pub job_id: Uuid,
    pub kind: String,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub status: String,
    pub data: Value,
    pub owner: String,
    pub created_at: DateTime<Utc>,
}

/// Appends an event for `job` as it is now (its status after the change).
pub async fn insert(
    conn: &mut PgConnection,
    job: &JobRow,
    event_type: EventType,
    data: &Value,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"
        INSERT INTO jobq.job_events (job_id, kind, type, status, data, owner)
        VALUES ($1, $2, $3, $4, $5, $6)
        RETURNING id
        "#,
        job.id,
        job.kind,
        event_type.as_str(),
        job.status,
        data,
        job.owner
    )
    .fetch_one(conn)
    .await
}

/// Appends one event of `event_type` per job, with its own data (`data[i]` for `jobs[i]`).
pub async fn insert_many(
    conn: &mut PgConnection,
    jobs: &[JobRow],
    event_type: EventType,
    data: &[Value],
) -> sqlx::Result<()> {
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    let kinds: Vec<String> = jobs.iter().map(|j| j.kind.clone()).collect();
    let statuses: Vec<String> = jobs.iter().map(|j| j.status.clone()).collect();
    let owners: Vec<String> = jobs.iter().map(|j| j.owner.clone()).collect();
    sqlx::query!(
        r#"
        INSERT INTO jobq.job_events (job_id, kind, type, status, data, owner)
        SELECT job_id, kind, $5, status, data, owner
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $6::text[])
             AS t(job_id, kind, status, data, owner)
        "#,
        &ids,
        &kinds,
        &statuses,
        data,
        event_type.as_str(),
        &owners
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A job's events after event id `after`, oldest first. (One job's changes are serialised by its
/// row lock, so within a job the id order is the commit order.)
pub async fn list_for_job(
    ex: impl PgExecutor<'_>,
    job_id: Uuid,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as!(
        EventRow,
        r#"
        SELECT id, xid::text::bigint AS "xid!", job_id, kind, type AS event_type, status, data,
               owner, created_at
        FROM jobq.job_events
        WHERE job_id = $1 AND id > $2
        ORDER BY id
        LIMIT $3
        "#,
        job_id,
        after,
        limit
    )
    .fetch_all(ex)
    .await
}

/// Where an event stands in the order of delivery: by writing transaction, then by id.
/// Events below the horizon (the oldest transaction still running in this database, see
/// `jobq.event_horizon()`) are final: nothing that commits later can sort before them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub xid: i64,
    pub id: i64,
}

impl EventRow {
    pub fn position(&self) -> Position {
        Position {
            xid: self.xid,
            id: self.id,
        }
    }
}

/// Final events after `after`, in delivery order.
pub async fn page_after(
    ex: impl PgExecutor<'_>,
    after: Position,
    limit: i64,
) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as!(
        EventRow,
        r#"
        SELECT id, xid::text::bigint AS "xid!", job_id, kind, type AS event_type, status, data,
               owner, created_at
        FROM jobq.job_events
        WHERE (xid, id) > ($1::bigint::text::xid8, $2::bigint)
          AND xid < jobq.event_horizon()
        ORDER BY xid, id
        LIMIT $3
        "#,
        after.xid,
        after.id,
        limit
    )
    .fetch_all(ex)
    .await
}

/// The position of event `id`, if it is in the log.
pub async fn position_of(ex: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<Position>> {
    let row = sqlx::query!(
        r#"SELECT xid::text::bigint AS "xid!" FROM jobq.job_events WHERE id = $1"#,
        id
    )
    .fetch_optional(ex)
    .await?;
    Ok(row.map(|r| Position { xid: r.xid, id }))
}

/// Registers `process` as following the log (or refreshes its registration): event inserts
/// notify `jobq_events` while a registration is younger than a minute. Registrations older
/// than an hour (processes that died registered) are deleted on the way.
pub async fn follow(ex: impl PgExecutor<'_>, process: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        WITH stale AS (
            DELETE FROM jobq.event_followers WHERE seen_at < now() - interval '1 hour'
        )
        INSERT INTO jobq.event_followers (process) VALUES ($1)
        ON CONFLICT (process) DO UPDATE SET seen_at = now()
        "#,
        process
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// `process` no longer follows the log.
pub async fn unfollow(ex: impl PgExecutor<'_>, process: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM jobq.event_followers WHERE process = $1",
        process
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// The position of the newest final event; the default position when there is none.
pub async fn head(ex: impl PgExecutor<'_>) -> sqlx::Result<Position> {
    let row = sqlx::query!(
        r#"
        SELECT xid::text::bigint AS "xid!", id FROM jobq.job_events
        WHERE xid < jobq.event_horizon()
        ORDER BY xid DESC, id DESC
        LIMIT 1
        "#
    )
    .fetch_optional(ex)
    .await?;
    Ok(row.map_or_else(Position::default, |r| Position {
        xid: r.xid,
        id: r.id,
    }))
}

/// Whether any committed event lies after `after`: final or still held back behind a running
/// transaction. (A reader that just read everything final re-reads soon while this is true.)
pub async fn any_after(ex: impl PgExecutor<'_>, after: Position) -> sqlx::Result<bool> {
    // Not `SELECT EXISTS (...)`: the planner drops the order inside EXISTS and may then scan the
    // whole table for a first row (statistics taken while the log was small make it think most
    // rows qualify), which at the end of the log finds none after reading every row. Ordered
    // by the index, it reads from `after` on.
    let next = sqlx::query_scalar!(
        r#"
        SELECT id FROM jobq.job_events
        WHERE (xid, id) > ($1::bigint::text::xid8, $2::bigint)
        ORDER BY xid, id
        LIMIT 1
        "#,
        after.xid,
        after.id
    )
    .fetch_optional(ex)
    .await?;
    Ok(next.is_some())
}
