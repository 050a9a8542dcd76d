//! `jobq.queues`: per-kind pause and rate limit, shared by every worker process.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueueRow {
    pub kind: String,
    pub paused: bool,
    pub rate_limit: Option<f64>,
    pub tokens: f64,
    pub refilled_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub updated_by: Option<String>,
}

pub async fn all(ex: impl PgExecutor<'_>) -> sqlx::Result<Vec<QueueRow>> {
    sqlx::query_as!(QueueRow, "SELECT * FROM jobq.queues ORDER BY kind")
        .fetch_all(ex)
        .await
}

/// Pauses or resumes `kind` (NOTIFYs `jobq_queues`).
pub async fn set_paused(
    ex: impl PgExecutor<'_>,
    kind: &str,
    paused: bool,
    by: &str,
) -> sqlx::Result<QueueRow> {
    sqlx::query_as!(
        QueueRow,
        r#"
        INSERT INTO jobq.queues (kind, paused, updated_by) VALUES ($1, $2, $3)
        ON CONFLICT (kind) DO UPDATE
        SET paused = EXCLUDED.paused, updated_by = EXCLUDED.updated_by, updated_at = now()
        RETURNING *
        "#,
        kind,
        paused,
        by
    )
    .fetch_one(ex)
    .await
}

/// Sets (or, with `None`, removes) the rate limit of `kind`, in jobs per second. The bucket
/// starts empty, so a new limit holds from its first second.
pub async fn set_rate_limit(
    ex: impl PgExecutor<'_>,
    kind: &str,
    per_second: Option<f64>,
    by: &str,
) -> sqlx::Result<QueueRow> {
    sqlx::query_as!(
        QueueRow,
        r#"
        INSERT INTO jobq.queues (kind, rate_limit, updated_by) VALUES ($1, $2, $3)
        ON CONFLICT (kind) DO UPDATE
        SET rate_limit = EXCLUDED.rate_limit, tokens = 0, refilled_at = now(),
            updated_by = EXCLUDED.updated_by, updated_at = now()
        RETURNING *
        "#,
        kind,
        per_second,
        by
    )
    .fetch_one(ex)
    .await
}

/// The result of taking tokens from a rate-limited kind's bucket.
#[derive(Debug, Clone, Copy)]
pub struct Taken {
    /// Whole tokens taken (at most what was asked).
    pub taken: i32,
    /// Tokens left (a fraction when less than one).
    pub left: f64,
    pub rate: f64,
}

/// Takes up to `want` tokens from `kind`'s bucket (refilled at its rate, holding at most one
/// second's worth); `None` when the kind has no rate limit.
pub async fn take_tokens(
    conn: &mut PgConnection,
    kind: &str,
    want: i32,
) -> sqlx::Result<Option<Taken>> {
    let row = sqlx::query!(
        r#"
        WITH q AS (
            SELECT kind, rate_limit,
                   LEAST(rate_limit, tokens + rate_limit
                         * extract(epoch FROM clock_timestamp() - refilled_at)::float8) AS available
            FROM jobq.queues
            WHERE kind = $1 AND rate_limit IS NOT NULL
            FOR UPDATE
        ),
        t AS (SELECT kind, rate_limit, available, LEAST($2::float8, floor(available)) AS taken FROM q)
        UPDATE jobq.queues AS u
        SET tokens = t.available - t.taken, refilled_at = clock_timestamp()
        FROM t
        WHERE u.kind = t.kind
        RETURNING t.taken::int AS "taken!", (t.available - t.taken) AS "left!", t.rate_limit AS "rate!"
        "#,
        kind,
        f64::from(want)
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| Taken {
        taken: r.taken,
        left: r.left,
        rate: r.rate,
    }))
}

/// Gives back tokens that were taken but not used (fewer entries were due than taken).
pub async fn refund_tokens(conn: &mut PgConnection, kind: &str, n: i32) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        UPDATE jobq.queues SET tokens = LEAST(rate_limit, tokens + $2::float8)
        WHERE kind = $1 AND rate_limit IS NOT NULL
        "#,
        kind,
        f64::from(n)
    )
    .execute(conn)
    .await?;
    Ok(())
}
