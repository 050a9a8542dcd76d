//! `jobq.schedules`: recurring jobs.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    pub id: Uuid,
    pub name: String,
    pub tenant: String,
    pub cron: String,
    pub timezone: String,
    pub kind: String,
    pub job: Value,
    pub missed: String,
    pub paused: bool,
    /// `None`: the expression never ticks again.
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

pub struct NewSchedule<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub tenant: &'a str,
    pub cron: &'a str,
    pub timezone: &'a str,
    pub kind: &'a str,
    pub job: &'a Value,
    pub missed: &'a str,
    pub next_run_at: Option<DateTime<Utc>>,
    pub created_by: &'a str,
}

/// Inserts a schedule; `None` when the tenant already has one with this name.
pub async fn insert(
    ex: impl PgExecutor<'_>,
    s: &NewSchedule<'_>,
) -> sqlx::Result<Option<ScheduleRow>> {
    sqlx::query_as!(
        ScheduleRow,
        r#"
        INSERT INTO jobq.schedules
            (id, name, tenant, cron, timezone, kind, job, missed, next_run_at, created_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        ON CONFLICT (tenant, name) DO NOTHING
        RETURNING *
        "#,
        s.id,
        s.name,
        s.tenant,
        s.cron,
        s.timezone,
        s.kind,
        s.job,
        s.missed,
        s.next_run_at,
        s.created_by
    )
    .fetch_optional(ex)
    .await
}

/// Schedules, of one tenant or (`None`) all, by name.
pub async fn list(ex: impl PgExecutor<'_>, tenant: Option<&str>) -> sqlx::Result<Vec<ScheduleRow>> {
    sqlx::query_as!(
        ScheduleRow,
        "SELECT * FROM jobq.schedules WHERE ($1::text IS NULL OR tenant = $1) ORDER BY tenant, name",
        tenant
    )
    .fetch_all(ex)
    .await
}

pub async fn get(ex: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<ScheduleRow>> {
    sqlx::query_as!(
        ScheduleRow,
        "SELECT * FROM jobq.schedules WHERE id = $1",
        id
    )
    .fetch_optional(ex)
    .await
}

/// Pauses or resumes; a resumed schedule continues from its next tick after now.
pub async fn set_paused(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    paused: bool,
    next_run_at: Option<DateTime<Utc>>,
) -> sqlx::Result<Option<ScheduleRow>> {
    sqlx::query_as!(
        ScheduleRow,
        r#"
        UPDATE jobq.schedules
        SET paused = $2, next_run_at = CASE WHEN $2 THEN next_run_at ELSE $3 END
        WHERE id = $1
        RETURNING *
        "#,
        id,
        paused,
        next_run_at
    )
    .fetch_optional(ex)
    .await
}

pub async fn delete(ex: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query!("DELETE FROM jobq.schedules WHERE id = $1", id)
        .execute(ex)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Due schedules, locked for this transaction; schedules another process holds are skipped, so
/// each tick is taken by exactly one process.
pub async fn claim_due(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<ScheduleRow>> {
    sqlx::query_as!(
        ScheduleRow,
        r#"
        SELECT * FROM jobq.schedules
        WHERE NOT paused AND next_run_at <= now()
        ORDER BY next_run_at
        LIMIT $1
        FOR UPDATE SKIP LOCKED
        "#,
        limit
    )
    .fetch_all(conn)
    .await
}

pub async fn advance(
    conn: &mut PgConnection,
    id: Uuid,
    next_run_at: Option<DateTime<Utc>>,
    last_run_at: Option<DateTime<Utc>>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        UPDATE jobq.schedules SET next_run_at = $2, last_run_at = COALESCE($3, last_run_at)
        WHERE id = $1
        "#,
        id,
        next_run_at,
        last_run_at
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// When the earliest active schedule is due.
pub async fn next_due(ex: impl PgExecutor<'_>) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar!("SELECT min(next_run_at) FROM jobq.schedules WHERE NOT paused")
        .fetch_one(ex)
        .await
}
