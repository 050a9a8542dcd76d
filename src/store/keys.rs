//! `jobq.api_keys`.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub tenant: String,
    pub key_hash: Vec<u8>,
    pub prefix: String,
    pub rate_limit: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub struct NewKey<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub role: &'a str,
    pub tenant: &'a str,
    pub key_hash: &'a [u8],
    pub prefix: &'a str,
    pub rate_limit: Option<i32>,
}

pub async fn insert(ex: impl PgExecutor<'_>, key: &NewKey<'_>) -> sqlx::Result<KeyRow> {
    sqlx::query_as!(
        KeyRow,
        r#"
        INSERT INTO jobq.api_keys (id, name, role, tenant, key_hash, prefix, rate_limit)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        RETURNING *
        "#,
        key.id,
        key.name,
        key.role,
        key.tenant,
        key.key_hash,
        key.prefix,
        key.rate_limit
    )
    .fetch_one(ex)
    .await
}

/// The active (not revoked) key with this hash.
pub async fn find_active(ex: impl PgExecutor<'_>, key_hash: &[u8]) -> sqlx::Result<Option<KeyRow>> {
    sqlx::query_as!(
        KeyRow,
        "SELECT * FROM jobq.api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        key_hash
    )
    .fetch_optional(ex)
    .await
}

/// All keys, newest first (revoked ones included).
pub async fn list(ex: impl PgExecutor<'_>) -> sqlx::Result<Vec<KeyRow>> {
    sqlx::query_as!(
        KeyRow,
        "SELECT * FROM jobq.api_keys ORDER BY created_at DESC, id"
    )
    .fetch_all(ex)
    .await
}

/// Revokes key `id` (NOTIFYs `jobq_keys`); `None` if there is no such key.
pub async fn revoke(ex: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<KeyRow>> {
    sqlx::query_as!(
        KeyRow,
        r#"
        UPDATE jobq.api_keys SET revoked_at = COALESCE(revoked_at, now())
        WHERE id = $1
        RETURNING *
        "#,
        id
    )
    .fetch_optional(ex)
    .await
}
