//! Operator endpoints: retry and cancel jobs, bulk retry, counts and queue statistics.

use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{Object, OpenApi};
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::api::ApiTags;
use crate::api::auth::ApiKey;
use crate::api::body::{BodyLimit, JsonBody, JsonOut};
use crate::api::error::ApiError;
use crate::api::jobs::job_filter;
use crate::api::models::Job;
use crate::auth::Role;
use crate::domain::{JobKind, JobStatus};
use crate::lifecycle::{self, OpsError};
use crate::store;

/// Window of the run-time statistics.
const STATS_WINDOW_SECS: f64 = 300.0;
/// The newest finished jobs per kind that the run-time figures and the last minute's count look
/// at: bounded, so that /v1/stats costs the same at 10 or 10,000 jobs/s.
const STATS_SAMPLE: i64 = 10_000;
const MAX_BULK: u32 = 10_000;

pub struct OpsApi {
    pub pool: PgPool,
}

/// Retry many failed or cancelled jobs chosen by a filter (the same fields as `list_jobs`).
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields, example)]
#[serde(deny_unknown_fields)]
pub struct BulkRetryRequest {
    /// `failed` and/or `cancelled` (default both); other statuses match nothing.
    #[oai(default)]
    #[serde(default)]
    pub status: Vec<JobStatus>,
    /// Only these kinds (default all).
    #[oai(default)]
    #[serde(default)]
    pub kind: Vec<JobKind>,
    /// Only jobs created at or after this time (RFC 3339).
    #[oai(skip_serializing_if_is_none)]
    #[serde(default, deserialize_with = "crate::api::body::present")]
    pub created_after: Option<DateTime<Utc>>,
    /// Only jobs created before this time (RFC 3339); a range that ends before it starts
    /// matches nothing.
    #[oai(skip_serializing_if_is_none)]
    #[serde(default, deserialize_with = "crate::api::body::present")]
    pub created_before: Option<DateTime<Utc>>,
    /// Only jobs whose last error contains this text (case-insensitive).
    #[oai(validator(max_length = 200), skip_serializing_if_is_none)]
    #[serde(default, deserialize_with = "crate::api::body::present")]
    pub error_contains: Option<String>,
    /// Retry at most this many jobs, oldest first (1-10000, default 1000).
    #[oai(
        validator(minimum(value = "1"), maximum(value = "10000")),
        skip_serializing_if_is_none
    )]
    #[serde(default, deserialize_with = "crate::api::body::present")]
    pub limit: Option<u32>,
    /// Only count what would be retried (default false).
    #[oai(default)]
    #[serde(default)]
    pub dry_run: bool,
}

impl BodyLimit for BulkRetryRequest {
    const MAX_BODY_BYTES: usize = 16 * 1024;
}

/// What a bulk retry did (or would do).
#[derive(Debug, Object)]
#[oai(example)]
pub struct BulkRetryResult {
    /// Failed or cancelled jobs matching the filter.
    pub matched: i64,
    /// Jobs queued again (for a dry run: that would be), at most `limit`.
    pub retried: i64,
    /// Whether this was a dry run (nothing was changed).
    pub dry_run: bool,
}

/// Jobs per status.
#[derive(Debug, Default, Object)]
#[oai(example)]
pub struct StatusCounts {
    /// Number of jobs in status `scheduled` (waiting for their `run_at`).
    pub scheduled: i64,
    /// Number of jobs in status `queued` (waiting for a worker).
    pub queued: i64,
    /// Number of jobs in status `running`.
    pub running: i64,
    /// Number of jobs in status `retrying` (waiting for their next attempt).
    pub retrying: i64,
    /// Number of jobs in status `succeeded`.
    pub succeeded: i64,
    /// Number of jobs in status `failed`.
    pub failed: i64,
    /// Number of jobs in status `cancelled`.
    pub cancelled: i64,
}

impl StatusCounts {
    fn add(&mut self, status: &str, n: i64) {
        match JobStatus::parse(status) {
            Some(JobStatus::Scheduled) => self.scheduled += n,
            Some(JobStatus::Queued) => self.queued += n,
            Some(JobStatus::Running) => self.running += n,
            Some(JobStatus::Retrying) => self.retrying += n,
            Some(JobStatus::Succeeded) => self.succeeded += n,
            Some(JobStatus::Failed) => self.failed += n,
            Some(JobStatus::Cancelled) => self.cancelled += n,
            None => {}
        }
    }
}

/// Jobs per kind.
#[derive(Debug, Default, Object)]
#[oai(example)]
pub struct KindCounts {
    /// Number of jobs of kind `email`.
    pub email: i64,
    /// Number of jobs of kind `long_running`.
    pub long_running: i64,
    /// Number of jobs of kind `hash`.
    pub hash: i64,
}

/// How many jobs match a filter, by status and by kind.
#[derive(Debug, Object)]
#[oai(example)]
pub struct JobCounts {
    /// Number of jobs matching the filter.
    pub total: i64,
    /// The matching jobs per status (they add up to `total`).
    pub by_status: StatusCounts,
    /// The matching jobs per kind (they add up to `total`).
    pub by_kind: KindCounts,
}

/// The state of one kind's queue.
#[derive(Debug, Object)]
#[oai(example)]
pub struct KindStats {
    /// The kind these figures are about.
    pub kind: JobKind,
    /// Jobs per status.
    pub counts: StatusCounts,
    /// Whether operators paused the kind (no new jobs start).
    pub paused: bool,
    /// Jobs started per second at most, across all workers (absent: no limit).
    #[oai(skip_serializing_if_is_none)]
    pub rate_limit_per_second: Option<f64>,
    /// Age of the oldest queued job, in seconds (absent when none waits).
    #[oai(skip_serializing_if_is_none)]
    pub oldest_queued_age_seconds: Option<f64>,
    /// Jobs that reached a terminal status in the last minute: exact up to 10,000; past that,
    /// estimated from the rate at which the newest 10,000 finished.
    pub finished_last_minute: i64,
    /// Mean run time of the attempts that finished jobs in the last `window_seconds` (of the
    /// newest 10,000 such jobs at most).
    #[oai(skip_serializing_if_is_none)]
    pub run_time_mean_ms: Option<f64>,
    /// 95th percentile of the same run times.
    #[oai(skip_serializing_if_is_none)]
    pub run_time_p95_ms: Option<f64>,
}

/// Queue statistics per kind.
#[derive(Debug, Object)]
#[oai(example)]
pub struct Stats {
    /// One entry per kind: `email`, `long_running`, `hash`.
    pub kinds: Vec<KindStats>,
    /// The window of the run-time figures, in seconds.
    pub window_seconds: f64,
}

impl Example for BulkRetryRequest {
    /// A dry run: how many emails that failed to connect would be retried.
    fn example() -> Self {
        BulkRetryRequest {
            status: vec![JobStatus::Failed],
            kind: vec![JobKind::Email],
            created_after: Some(crate::api::models::at("2026-01-15T00:00:00Z")),
            created_before: None,
            error_contains: Some("connection refused".to_owned()),
            limit: Some(100),
            dry_run: true,
        }
    }
}

impl Example for BulkRetryResult {
    fn example() -> Self {
        BulkRetryResult {
            matched: 12,
            retried: 12,
            dry_run: true,
        }
    }
}

impl Example for StatusCounts {
    fn example() -> Self {
        StatusCounts {
            scheduled: 2,
            queued: 5,
            running: 1,
            retrying: 1,
            succeeded: 120,
            failed: 3,
            cancelled: 1,
        }
    }
}

impl Example for KindCounts {
    fn example() -> Self {
        KindCounts {
            email: 40,
            long_running: 13,
            hash: 80,
        }
    }
}

impl Example for JobCounts {
    fn example() -> Self {
        JobCounts {
            total: 133,
            by_status: StatusCounts::example(),
            by_kind: KindCounts::example(),
        }
    }
}

impl Example for KindStats {
    fn example() -> Self {
        KindStats {
            kind: JobKind::Hash,
            counts: StatusCounts::example(),
            paused: false,
            rate_limit_per_second: None,
            oldest_queued_age_seconds: Some(1.5),
            finished_last_minute: 42,
            run_time_mean_ms: Some(12.5),
            run_time_p95_ms: Some(30.0),
        }
    }
}

impl Example for Stats {
    fn example() -> Self {
        let idle = |kind| KindStats {
            kind,
            counts: StatusCounts::default(),
            paused: false,
            rate_limit_per_second: None,
            oldest_queued_age_seconds: None,
            finished_last_minute: 0,
            run_time_mean_ms: None,
            run_time_p95_ms: None,
        };
        Stats {
            kinds: vec![
                idle(JobKind::Email),
                idle(JobKind::LongRunning),
                KindStats::example(),
            ],
            window_seconds: STATS_WINDOW_SECS,
        }
    }
}

fn ops_error(e: OpsError, action: &str) -> ApiError {
    match e {
        OpsError::NotFound => ApiError::not_found("job", "id"),
        OpsError::InvalidStatus { status } => ApiError::conflict(
            "invalid_status",
            format!("the job is {status}; {action}"),
            Some("status"),
        ),
        OpsError::Store(e) => e.into(),
    }
}

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Operations")]
impl OpsApi {
    /// Retry a job
    ///
    /// Queues a `failed` or `cancelled` job again with a fresh attempt count; its history stays
    /// in its events (a `retried` event records who did it). Any other status: 409.
    #[oai(path = "/jobs/:id/retry", method = "post", operation_id = "retry_job")]
    async fn retry_job(
        &self,
        auth: ApiKey,
        /// The job's id.
        id: Path<Uuid>,
    ) -> Result<JsonOut<Job>, ApiError> {
        let who = auth.require(Role::Ops)?;
        let row = lifecycle::retry(&self.pool, id.0, &who.name)
            .await
            .map_err(|e| ops_error(e, "only failed or cancelled jobs can be retried"))?;
        Ok(JsonOut(row.try_into()?))
    }

    /// Cancel a job
    ///
    /// A `queued` or `retrying` job never runs. A `running` job is stopped cooperatively in
    /// whatever process runs it: a long-running job at its next step, a hash job after its
    /// current chunk; its result is discarded. Terminal jobs: 409.
    #[oai(
        path = "/jobs/:id/cancel",
        method = "post",
        operation_id = "cancel_job"
    )]
    async fn cancel_job(
        &self,
        auth: ApiKey,
        /// The job's id.
        id: Path<Uuid>,
    ) -> Result<JsonOut<Job>, ApiError> {
        let who = auth.require(Role::Ops)?;
        let row = lifecycle::cancel(&self.pool, id.0, &who.name)
            .await
            .map_err(|e| ops_error(e, "only queued, retrying or running jobs can be cancelled"))?;
        Ok(JsonOut(row.try_into()?))
    }

    /// Retry jobs in bulk
    ///
    /// Queues again up to `limit` failed or cancelled jobs matching the filter, oldest first.
    /// With `dry_run`, only counts them: a dry run and a real run with the same body agree as
    /// long as the jobs do not change in between.
    #[oai(path = "/jobs/retry", method = "post", operation_id = "retry_jobs")]
    async fn retry_jobs(
        &self,
        auth: ApiKey,
        body: JsonBody<BulkRetryRequest>,
    ) -> Result<Json<BulkRetryResult>, ApiError> {
        let who = auth.require(Role::Ops)?;
        let req = body.0;
        let limit = match req.limit {
            None => 1000,
            Some(n) if (1..=MAX_BULK).contains(&n) => n,
            Some(_) => {
                return Err(ApiError::validation(
                    "limit",
                    format!("must be between 1 and {MAX_BULK}"),
                ));
            }
        };
        if req
            .error_contains
            .as_ref()
            .is_some_and(|e| e.chars().count() > 200)
        {
            return Err(ApiError::validation(
                "error_contains",
                "must be at most 200 characters",
            ));
        }
        let filter = job_filter(
            req.status,
            req.kind,
            req.created_after,
            req.created_before,
            req.error_contains,
        )
        .map_err(|e| match e {
            ApiError::BadRequest(body) => ApiError::Unprocessable(body),
            other => other,
        })?;
        let done = lifecycle::bulk_retry(
            &self.pool,
            &filter,
            i64::from(limit),
            req.dry_run,
            &who.name,
        )
        .await?;
        Ok(Json(BulkRetryResult {
            matched: done.matched,
            retried: done.retried,
            dry_run: req.dry_run,
        }))
    }

    /// Count jobs
    ///
    /// How many jobs match the filter (the fields of `list_jobs`), by status and by kind.
    /// Client keys count their own tenant's jobs; ops keys count all.
    #[oai(path = "/jobs/counts", method = "get", operation_id = "count_jobs")]
    async fn count_jobs(
        &self,
        auth: ApiKey,
        /// Only jobs in one of these statuses.
        #[oai(default)]
        status: Query<Vec<JobStatus>>,
        /// Only jobs of one of these kinds.
        #[oai(default)]
        kind: Query<Vec<JobKind>>,
        /// Only jobs created at or after this time (RFC 3339).
        created_after: Query<Option<DateTime<Utc>>>,
        /// Only jobs created before this time (RFC 3339); a range that ends before it starts
        /// matches nothing.
        created_before: Query<Option<DateTime<Utc>>>,
        /// Only jobs whose last error contains this text (case-insensitive).
        #[oai(validator(max_length = 200))]
        error_contains: Query<Option<String>>,
    ) -> Result<Json<JobCounts>, ApiError> {
        let mut filter = job_filter(
            status.0,
            kind.0,
            created_after.0,
            created_before.0,
            error_contains.0,
        )?;
        filter.owner = auth.0.tenant_scope().map(str::to_owned);
        let rows = store::jobs::count(&self.pool, &filter).await?;
        let mut counts = JobCounts {
            total: 0,
            by_status: StatusCounts::default(),
            by_kind: KindCounts::default(),
        };
        for (kind, status, n) in rows {
            counts.total += n;
            counts.by_status.add(&status, n);
            match JobKind::parse(&kind) {
                Some(JobKind::Email) => counts.by_kind.email += n,
                Some(JobKind::LongRunning) => counts.by_kind.long_running += n,
                Some(JobKind::Hash) => counts.by_kind.hash += n,
                None => {}
            }
        }
        Ok(Json(counts))
    }

    /// Queue statistics
    ///
    /// Per kind: jobs per status, the age of the oldest queued job, jobs finished in the last
    /// minute, and the mean and 95th percentile run time of the last five minutes.
    #[oai(path = "/stats", method = "get", operation_id = "get_stats")]
    async fn get_stats(&self, auth: ApiKey) -> Result<Json<Stats>, ApiError> {
        auth.require(Role::Ops)?;
        let counts = store::jobs::count(&self.pool, &store::jobs::JobFilter::default()).await?;
        let figures = store::jobs::figures(&self.pool, STATS_WINDOW_SECS, STATS_SAMPLE).await?;
        let queues = store::queues::all(&self.pool).await?;
        let now = Utc::now();
        let kinds = JobKind::ALL
            .into_iter()
            .map(|kind| {
                let mut by_status = StatusCounts::default();
                for (k, status, n) in &counts {
                    if k == kind.as_str() {
                        by_status.add(status, *n);
                    }
                }
                let f = figures.iter().find(|f| f.kind == kind.as_str());
                let q = queues.iter().find(|q| q.kind == kind.as_str());
                KindStats {
                    kind,
                    counts: by_status,
                    paused: q.is_some_and(|q| q.paused),
                    rate_limit_per_second: q.and_then(|q| q.rate_limit),
                    oldest_queued_age_seconds: f
                        .and_then(|f| f.oldest_queued_at)
                        .map(|at| (now - at).num_milliseconds().max(0) as f64 / 1000.0),
                    finished_last_minute: f.map_or(0, |f| f.finished_last_minute),
                    run_time_mean_ms: f.and_then(|f| f.run_ms_mean),
                    run_time_p95_ms: f.and_then(|f| f.run_ms_p95),
                }
            })
            .collect();
        Ok(Json(Stats {
            kinds,
            window_seconds: STATS_WINDOW_SECS,
        }))
    }
}
