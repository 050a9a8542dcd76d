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

/// A job's events after event id `after`, oldest first.
pub async fn list_for_job(
    ex: impl PgExecutor<'_>,
    job_id: Uuid,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as!(
        EventRow,
        r#"
        SELECT id, job_id, kind, type AS event_type, status, data, owner, created_at
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
