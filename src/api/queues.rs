//! `/v1/queues`: pause, resume and rate-limit a kind, across every worker process.

use chrono::{DateTime, Utc};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Deserialize;
use sqlx::PgPool;

use crate::api::ApiTags;
use crate::api::auth::ApiKey;
use crate::api::body::{BodyLimit, JsonBody};
use crate::api::error::ApiError;
use crate::auth::Role;
use crate::domain::JobKind;
use crate::store::{self, queues::QueueRow};

pub struct QueuesApi {
    pub pool: PgPool,
}

/// The controls of one kind's queue.
#[derive(Debug, Object)]
#[oai(example)]
pub struct QueueState {
    /// The kind whose queue this is.
    pub kind: JobKind,
    /// No new jobs of this kind start (running ones finish); enqueue still accepts them.
    pub paused: bool,
    /// Jobs started per second at most, across all worker processes (absent: no limit).
    #[oai(skip_serializing_if_is_none)]
    pub rate_limit_per_second: Option<f64>,
    /// When the controls last changed (RFC 3339); absent when they never have.
    #[oai(skip_serializing_if_is_none)]
    pub updated_at: Option<DateTime<Utc>>,
    /// The key that changed it last.
    #[oai(skip_serializing_if_is_none)]
    pub updated_by: Option<String>,
}

/// Every kind's queue.
#[derive(Debug, Object)]
#[oai(example)]
pub struct QueueList {
    /// One entry per kind: `email`, `long_running`, `hash`.
    pub queues: Vec<QueueState>,
}

/// A new rate limit.
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields, example)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Jobs started per second at most (0.01-100000), across all worker processes.
    #[oai(validator(minimum(value = "0.01"), maximum(value = "100000")))]
    pub per_second: f64,
}

impl Example for QueueState {
    /// The email queue, rate-limited by an operator.
    fn example() -> Self {
        QueueState {
            kind: JobKind::Email,
            paused: false,
            rate_limit_per_second: Some(50.0),
            updated_at: Some(crate::api::models::at("2026-01-15T08:00:00Z")),
            updated_by: Some("ops-console".to_owned()),
        }
    }
}

impl Example for QueueList {
    fn example() -> Self {
        QueueList {
            queues: vec![
                QueueState::example(),
                state(JobKind::LongRunning, None),
                state(JobKind::Hash, None),
            ],
        }
    }
}

impl Example for RateLimit {
    fn example() -> Self {
        RateLimit { per_second: 50.0 }
    }
}

impl BodyLimit for RateLimit {
    const MAX_BODY_BYTES: usize = 1024;
}

fn state(kind: JobKind, row: Option<&QueueRow>) -> QueueState {
    QueueState {
        kind,
        paused: row.is_some_and(|r| r.paused),
        rate_limit_per_second: row.and_then(|r| r.rate_limit),
        updated_at: row.map(|r| r.updated_at),
        updated_by: row.and_then(|r| r.updated_by.clone()),
    }
}

#[derive(ApiResponse)]
pub enum RateLimitRemoved {
    /// The kind has no rate limit (any more).
    #[oai(status = 200)]
    Removed(Json<QueueState>),
}

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Queues")]
impl QueuesApi {
    /// List queues
    ///
    /// The controls of every kind's queue, one entry per kind, including kinds nobody has
    /// paused or rate-limited yet (`paused: false`, no limit, no `updated_at`). Needs the `ops`
    /// role (403 otherwise).
    #[oai(path = "/queues", method = "get", operation_id = "list_queues")]
    async fn list_queues(&self, auth: ApiKey) -> Result<Json<QueueList>, ApiError> {
        auth.require(Role::Ops)?;
        let rows = store::queues::all(&self.pool).await?;
        let queues = JobKind::ALL
            .into_iter()
            .map(|k| state(k, rows.iter().find(|r| r.kind == k.as_str())))
            .collect();
        Ok(Json(QueueList { queues }))
    }

    /// Pause a queue
    ///
    /// No worker process starts new jobs of this kind until it is resumed (running ones
    /// finish); enqueue still accepts jobs. Survives restarts.
    #[oai(
        path = "/queues/:kind/pause",
        method = "post",
        operation_id = "pause_queue"
    )]
    async fn pause_queue(
        &self,
        auth: ApiKey,
        /// The kind whose queue this is.
        kind: Path<JobKind>,
    ) -> Result<Json<QueueState>, ApiError> {
        let who = auth.require(Role::Ops)?;
        let kind = kind.0;
        let row = store::queues::set_paused(&self.pool, kind.as_str(), true, &who.name).await?;
        Ok(Json(state(kind, Some(&row))))
    }

    /// Resume a queue
    ///
    /// Worker processes start jobs of this kind again (within the queue's rate limit, if any),
    /// at once: they hear of it through Postgres. Idempotent: resuming a queue that is not
    /// paused changes only `updated_at`/`updated_by`. Needs the `ops` role (403 otherwise).
    #[oai(
        path = "/queues/:kind/resume",
        method = "post",
        operation_id = "resume_queue"
    )]
    async fn resume_queue(
        &self,
        auth: ApiKey,
        /// The kind whose queue this is.
        kind: Path<JobKind>,
    ) -> Result<Json<QueueState>, ApiError> {
        let who = auth.require(Role::Ops)?;
        let kind = kind.0;
        let row = store::queues::set_paused(&self.pool, kind.as_str(), false, &who.name).await?;
        Ok(Json(state(kind, Some(&row))))
    }

    /// Set a queue's rate limit
    ///
    /// At most `per_second` jobs of this kind start per second, counted across all worker
    /// processes (the bucket is kept in Postgres, so more processes do not raise it).
    #[oai(
        path = "/queues/:kind/rate-limit",
        method = "put",
        operation_id = "set_queue_rate_limit"
    )]
    async fn set_queue_rate_limit(
        &self,
        auth: ApiKey,
        /// The kind whose queue this is.
        kind: Path<JobKind>,
        body: JsonBody<RateLimit>,
    ) -> Result<Json<QueueState>, ApiError> {
        let who = auth.require(Role::Ops)?;
        let kind = kind.0;
        let rate = body.0.per_second;
        if !(0.01..=100_000.0).contains(&rate) {
            return Err(ApiError::validation(
                "per_second",
                "must be between 0.01 and 100000",
            ));
        }
        let row =
            store::queues::set_rate_limit(&self.pool, kind.as_str(), Some(rate), &who.name).await?;
        Ok(Json(state(kind, Some(&row))))
    }

    /// Remove a queue's rate limit
    ///
    /// Jobs of this kind start as fast as workers take them again. Idempotent: removing a
    /// limit that is not set answers 200 with the same state. Needs the `ops` role (403
    /// otherwise).
    #[oai(
        path = "/queues/:kind/rate-limit",
        method = "delete",
        operation_id = "remove_queue_rate_limit"
    )]
    async fn remove_queue_rate_limit(
        &self,
        auth: ApiKey,
        /// The kind whose queue this is.
        kind: Path<JobKind>,
    ) -> Result<RateLimitRemoved, ApiError> {
        let who = auth.require(Role::Ops)?;
        let kind = kind.0;
        let row = store::queues::set_rate_limit(&self.pool, kind.as_str(), None, &who.name).await?;
        Ok(RateLimitRemoved::Removed(Json(state(kind, Some(&row)))))
    }
}
