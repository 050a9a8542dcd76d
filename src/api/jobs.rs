//! `/v1/jobs`: enqueue each kind, read a job, list jobs, read a job's events.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as CURSOR;
use chrono::{DateTime, Utc};
use poem_openapi::Object;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use sqlx::PgPool;
use uuid::Uuid;

use crate::api::ApiTags;
use crate::api::auth::{ApiKey, rate_check};
use crate::api::body::{JsonBody, JsonOut};
use crate::api::error::ApiError;
use crate::api::models::{EventPage, Job, JobEvent, JobPage};
use crate::api::requests::{
    EnqueueBatch, EnqueueEmail, EnqueueHash, EnqueueLongRunning, JobRequest, at_index,
};
use crate::auth::{Principal, RateLimits, Role};
use crate::config::ApiConfig;
use crate::domain::{JobKind, JobOptions, JobStatus};
use crate::events::EventHub;
use crate::lifecycle::{self, EnqueueError, EnqueueRequest, Enqueued};
use crate::{metrics, store};

const MAX_PAGE: u32 = 200;
const DEFAULT_PAGE: u32 = 50;
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
const MAX_BATCH: usize = 1000;

pub struct JobsApi {
    pub pool: PgPool,
    pub config: ApiConfig,
    pub limits: RateLimits,
    /// Live events, for `wait_job` (absent only where no API runs).
    pub hub: Option<EventHub>,
    /// Single enqueues, accepted in group commits.
    pub enqueuer: lifecycle::Enqueuer,
}

/// The jobs of a batch.
#[derive(Debug, Object, serde::Serialize)]
#[oai(example)]
pub struct JobList {
    /// The jobs, in the order of the request's `jobs`.
    pub jobs: Vec<Job>,
}

impl poem_openapi::types::Example for JobList {
    fn example() -> Self {
        JobList {
            jobs: vec![<Job as poem_openapi::types::Example>::example()],
        }
    }
}

/// A batch was accepted.
#[derive(ApiResponse)]
pub enum BatchResponse {
    /// Every job is durable and queued (or scheduled), in the order of the request. With an
    /// `Idempotency-Key` used before for the same request, these are the jobs it created.
    #[oai(status = 202)]
    Accepted(
        JsonOut<JobList>,
        /// True when an earlier request with the same Idempotency-Key created these jobs.
        #[oai(header = "Idempotent-Replayed")]
        bool,
    ),
}

/// A job was accepted.
#[derive(ApiResponse)]
pub enum EnqueueResponse {
    /// The job is durable and queued. With an `Idempotency-Key` used before for the same
    /// request, this is the job that request created (`Idempotent-Replayed: true`).
    #[oai(status = 202)]
    Accepted(
        JsonOut<Job>,
        /// The job's URL.
        #[oai(header = "Location")]
        String,
        /// True when an earlier request with the same Idempotency-Key created this job.
        #[oai(header = "Idempotent-Replayed")]
        bool,
    ),
}

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Jobs")]
impl JobsApi {
    /// Enqueue an email job
    ///
    /// Sends one plain-text email over SMTP. The message carries a Message-ID derived from the
    /// job id, which the job's result reports.
    #[oai(path = "/jobs/email", method = "post", operation_id = "enqueue_email")]
    async fn enqueue_email(
        &self,
        req: &poem::Request,
        auth: ApiKey,
        body: JsonBody<EnqueueEmail>,
        /// Makes the request safe to retry: the same key with the same body returns the same
        /// job; with a different body, 409. 1-255 visible ASCII characters.
        #[oai(
            name = "Idempotency-Key",
            validator(min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$")
        )]
        idempotency_key: Header<Option<String>>,
    ) -> Result<EnqueueResponse, ApiError> {
        self.enqueue_one(
            &auth,
            JobRequest::Email(body.0),
            idempotency(req, idempotency_key.0)?,
        )
        .await
    }

    /// Enqueue a long-running job
    ///
    /// Runs `steps` steps of `step_duration_ms` each, with durable progress; a job whose worker
    /// dies resumes from its last recorded step.
    #[oai(
        path = "/jobs/long-running",
        method = "post",
        operation_id = "enqueue_long_running"
    )]
    async fn enqueue_long_running(
        &self,
        req: &poem::Request,
        auth: ApiKey,
        body: JsonBody<EnqueueLongRunning>,
        /// See `enqueue_email`.
        #[oai(
            name = "Idempotency-Key",
            validator(min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$")
        )]
        idempotency_key: Header<Option<String>>,
    ) -> Result<EnqueueResponse, ApiError> {
        self.enqueue_one(
            &auth,
            JobRequest::LongRunning(body.0),
            idempotency(req, idempotency_key.0)?,
        )
        .await
    }

    /// Enqueue a hash job
    ///
    /// Computes a SHA-2 digest (sha256 by default) of the input repeated `repeat` times, e.g.
    /// `{"data": "data1", "repeat": 1000000}`. The result holds the hex digest.
    #[oai(path = "/jobs/hash", method = "post", operation_id = "enqueue_hash")]
    async fn enqueue_hash(
        &self,
        req: &poem::Request,
        auth: ApiKey,
        body: JsonBody<EnqueueHash>,
        /// See `enqueue_email`.
        #[oai(
            name = "Idempotency-Key",
            validator(min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$")
        )]
        idempotency_key: Header<Option<String>>,
    ) -> Result<EnqueueResponse, ApiError> {
        self.enqueue_one(
            &auth,
            JobRequest::Hash(body.0),
            idempotency(req, idempotency_key.0)?,
        )
        .await
    }

    /// Enqueue many jobs
    ///
    /// Up to 1000 jobs of any kinds (`kind` in each), accepted together in one transaction or
    /// not at all (an invalid field is named as `jobs[3].to`). Counts as one request for the
    /// key's rate limit.
    #[oai(path = "/jobs/batch", method = "post", operation_id = "enqueue_batch")]
    async fn enqueue_batch(
        &self,
        req: &poem::Request,
        auth: ApiKey,
        body: JsonBody<EnqueueBatch>,
        /// Makes the request safe to retry: the same key with the same body returns the same
        /// jobs; with a different body, 409. 1-255 visible ASCII characters.
        #[oai(
            name = "Idempotency-Key",
            validator(min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$")
        )]
        idempotency_key: Header<Option<String>>,
    ) -> Result<BatchResponse, ApiError> {
        let who = auth.require(Role::Client)?;
        rate_check(&self.limits, who)?;
        let key = idempotency(req, idempotency_key.0)?
            .map(check_idempotency_key)
            .transpose()?;
        let jobs = body.0.jobs;
        if jobs.is_empty() || jobs.len() > MAX_BATCH {
            return Err(ApiError::validation(
                "jobs",
                format!("must hold 1 to {MAX_BATCH} jobs"),
            ));
        }
        let mut reqs = Vec::with_capacity(jobs.len());
        for (i, job) in jobs.into_iter().enumerate() {
            let item_key = key.as_ref().map(|k| format!("{k}#{i}"));
            let req = self
                .request(who, job, item_key)
                .map_err(|e| at_index("jobs", i, e))?;
            reqs.push(req);
        }
        let done = self.accept(reqs).await?;
        let replayed = done.iter().all(|d| matches!(d, Enqueued::Replayed(_)));
        let jobs = done
            .into_iter()
            .map(|d| match d {
                Enqueued::Created(row) | Enqueued::Replayed(row) => Job::try_from(row),
            })
            .collect::<Result<_, _>>()?;
        Ok(BatchResponse::Accepted(JsonOut(JobList { jobs }), replayed))
    }

    /// Get a job
    ///
    /// The job as it is now: status, attempts, progress, a summary of its input and, once it
    /// has succeeded, its result. Any key may read its own tenant's jobs; `ops` and `admin` keys
    /// read every tenant's. A job that does not exist or belongs to another tenant: 404. To wait
    /// for the job to finish, use `wait_job` rather than polling this.
    #[oai(path = "/jobs/:id", method = "get", operation_id = "get_job")]
    async fn get_job(
        &self,
        auth: ApiKey,
        /// The job's id.
        id: Path<Uuid>,
    ) -> Result<JsonOut<Job>, ApiError> {
        let row = self.visible_job(&auth, id.0).await?;
        Ok(JsonOut(row.try_into()?))
    }

    /// List jobs
    ///
    /// Filtered by status, kind, creation time and error text; newest first unless
    /// `order=oldest_first`. Pages stay consistent while jobs change: follow `next_cursor`
    /// (with the same filters and order) until it is absent.
    #[oai(path = "/jobs", method = "get", operation_id = "list_jobs")]
    #[allow(clippy::too_many_arguments)]
    async fn list_jobs(
        &self,
        auth: ApiKey,
        /// Only jobs in one of these statuses (repeat the parameter for several).
        #[oai(default)]
        status: Query<Vec<JobStatus>>,
        /// Only jobs of one of these kinds (repeat the parameter for several).
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
        /// Only jobs carrying all these tags (repeat the parameter for several, at most 20).
        #[oai(default, validator(max_items = 20))]
        tag: Query<Vec<String>>,
        /// `newest_first` (default) or `oldest_first`.
        order: Query<Option<ListOrder>>,
        /// Page size, 1-200 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        #[oai(validator(pattern = "^[A-Za-z0-9_-]{21}[AQgw]$"))]
        cursor: Query<Option<String>>,
    ) -> Result<JsonOut<JobPage>, ApiError> {
        let limit = page_size(limit.0)?;
        let after = cursor.0.as_deref().map(decode_cursor).transpose()?;
        let mut filter = job_filter(
            status.0,
            kind.0,
            created_after.0,
            created_before.0,
            error_contains.0,
        )?;
        filter.owner = auth.0.tenant_scope().map(str::to_owned);
        filter.tags = tag_filter(tag.0)?;
        let newest_first = order.0.unwrap_or_default() == ListOrder::NewestFirst;
        let mut rows = store::jobs::list(
            &self.pool,
            &filter,
            newest_first,
            after,
            i64::from(limit) + 1,
        )
        .await?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = more
            .then(|| rows.last().map(|r| CURSOR.encode(r.id.as_bytes())))
            .flatten();
        let jobs = rows
            .into_iter()
            .map(Job::try_from)
            .collect::<Result<_, _>>()?;
        Ok(JsonOut(JobPage { jobs, next_cursor }))
    }

    /// Wait for a job to finish
    ///
    /// Answers as soon as the job is `succeeded`, `failed` or `cancelled` (driven by the job's
    /// events, not by polling the table), or with the job as it is when `timeout_seconds`
    /// (1-60, default 30) run out. Enqueue, then wait: two calls to a result.
    #[oai(path = "/jobs/:id/wait", method = "get", operation_id = "wait_job")]
    async fn wait_job(
        &self,
        auth: ApiKey,
        /// The job's id.
        id: Path<Uuid>,
        /// How long to wait at most, in seconds (1-60, default 30).
        #[oai(validator(minimum(value = "1"), maximum(value = "60")))]
        timeout_seconds: Query<Option<u32>>,
    ) -> Result<JsonOut<Job>, ApiError> {
        let seconds = match timeout_seconds.0 {
            None => 30,
            Some(n) if (1..=60).contains(&n) => n,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_parameter",
                    "must be between 1 and 60",
                    Some("timeout_seconds"),
                ));
            }
        };
        let hub = self
            .hub
            .as_ref()
            .ok_or_else(|| ApiError::unavailable(&"no event hub in this process"))?;
        // Subscribe before reading the job: a finish between the two is not missed.
        let mut live = hub.subscribe().await;
        let deadline =
            tokio::time::Instant::now() + std::time::Duration::from_secs(u64::from(seconds));
        loop {
            let row = self.visible_job(&auth, id.0).await?;
            if JobStatus::parse(&row.status).is_some_and(JobStatus::is_terminal) {
                return Ok(JsonOut(row.try_into()?));
            }
            // Until the job's own terminal event, or lag (then look at the row again).
            let finished = loop {
                match tokio::time::timeout_at(deadline, live.recv()).await {
                    Err(_) | Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                        break None;
                    }
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => break Some(()),
                    Ok(Ok(event)) if event.job_id == id.0 && event.status.is_terminal() => {
                        break Some(());
                    }
                    Ok(Ok(_)) => continue,
                }
            };
            if finished.is_none() {
                let row = self.visible_job(&auth, id.0).await?;
                return Ok(JsonOut(row.try_into()?));
            }
        }
    }

    /// List a job's events
    ///
    /// Oldest first: queued, started, progress, retrying, succeeded, failed, cancelled.
    #[oai(
        path = "/jobs/:id/events",
        method = "get",
        operation_id = "list_job_events"
    )]
    async fn list_job_events(
        &self,
        auth: ApiKey,
        /// The job's id.
        id: Path<Uuid>,
        /// Only events with an id greater than this (`next_after` of the previous page).
        #[oai(validator(minimum(value = "0")))]
        after: Query<Option<i64>>,
        /// Page size, 1-200 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<u32>>,
    ) -> Result<Json<EventPage>, ApiError> {
        let limit = page_size(limit.0)?;
        self.visible_job(&auth, id.0).await?;
        let after = after.0.unwrap_or(0).max(0);
        let mut rows =
            store::events::list_for_job(&self.pool, id.0, after, i64::from(limit) + 1).await?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_after = more.then(|| rows.last().map(|r| r.id)).flatten();
        let events = rows
            .into_iter()
            .map(JobEvent::try_from)
            .collect::<Result<_, _>>()?;
        Ok(Json(EventPage { events, next_after }))
    }
}

impl JobsApi {
    /// Job `id` if the caller may see it; another tenant's job is as absent as a missing one.
    async fn visible_job(&self, auth: &ApiKey, id: Uuid) -> Result<store::JobRow, ApiError> {
        store::jobs::get(&self.pool, id)
            .await?
            .filter(|row| auth.0.may_see(&row.owner))
            .ok_or_else(|| ApiError::not_found("job", "id"))
    }

    /// A request of the caller, checked: kind fields, options, key.
    fn request(
        &self,
        who: &Principal,
        job: JobRequest,
        idempotency_key: Option<String>,
    ) -> Result<EnqueueRequest, ApiError> {
        let parsed = job.parse(self.config.hash_max_input_bytes)?;
        let options = JobOptions::parse(
            &parsed.options,
            self.config.default_max_attempts,
            Utc::now(),
        )?;
        Ok(EnqueueRequest {
            kind: parsed.kind,
            payload: parsed.payload,
            progress_total: parsed.progress_total,
            options,
            owner: who.tenant.clone(),
            idempotency_key,
            origin: None,
        })
    }

    /// Accepts checked requests, mapping an idempotency conflict to 409.
    async fn accept(&self, reqs: Vec<EnqueueRequest>) -> Result<Vec<Enqueued>, ApiError> {
        // A single request shares a group commit with concurrent ones; a batch is one already.
        let accepted = match <[EnqueueRequest; 1]>::try_from(reqs) {
            Ok([one]) => self.enqueuer.enqueue(one).await.map(|d| vec![d]),
            Err(reqs) => lifecycle::enqueue_many(&self.pool, &reqs).await,
        };
        match accepted {
            Ok(done) => {
                for d in &done {
                    if let Enqueued::Created(row) = d
                        && let Some(kind) = JobKind::parse(&row.kind)
                    {
                        metrics::job_enqueued(kind);
                    }
                }
                Ok(done)
            }
            Err(EnqueueError::KeyReused { job_id }) => Err(ApiError::conflict(
                "idempotency_key_reused",
                format!(
                    "this Idempotency-Key was already used for a different request (job {job_id})"
                ),
                Some(IDEMPOTENCY_KEY),
            )),
            Err(EnqueueError::Store(e)) => Err(e.into()),
        }
    }

    async fn enqueue_one(
        &self,
        auth: &ApiKey,
        job: JobRequest,
        idempotency_key: Option<String>,
    ) -> Result<EnqueueResponse, ApiError> {
        let who = auth.require(Role::Client)?;
        rate_check(&self.limits, who)?;
        let key = idempotency_key.map(check_idempotency_key).transpose()?;
        let req = self.request(who, job, key)?;
        let done = self
            .accept(vec![req])
            .await?
            .pop()
            .ok_or_else(|| ApiError::internal(&"enqueue returned nothing"))?;
        let (row, replayed) = match done {
            Enqueued::Created(row) => (row, false),
            Enqueued::Replayed(row) => (row, true),
        };
        let location = format!("/v1/jobs/{}", row.id);
        Ok(EnqueueResponse::Accepted(
            JsonOut(row.try_into()?),
            location,
            replayed,
        ))
    }
}

/// The Idempotency-Key as parsed, after a look at the raw header: poem-openapi reads a value
/// that is not visible ASCII (e.g. Latin-1 bytes) as no header at all.
fn idempotency(req: &poem::Request, parsed: Option<String>) -> Result<Option<String>, ApiError> {
    match (req.headers().get(IDEMPOTENCY_KEY), parsed) {
        (Some(_), None) => Err(ApiError::bad_request(
            "invalid_header",
            "must be 1-255 visible ASCII characters",
            Some(IDEMPOTENCY_KEY),
        )),
        (_, parsed) => Ok(parsed),
    }
}

fn check_idempotency_key(key: String) -> Result<String, ApiError> {
    let ok = (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(key)
    } else {
        Err(ApiError::bad_request(
            "invalid_header",
            "must be 1-255 visible ASCII characters",
            Some(IDEMPOTENCY_KEY),
        ))
    }
}

/// The order of a job listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "snake_case")]
pub enum ListOrder {
    #[default]
    NewestFirst,
    OldestFirst,
}

/// A filter from the API's filter fields; `None`/empty means any.
pub fn job_filter(
    statuses: Vec<JobStatus>,
    kinds: Vec<JobKind>,
    created_after: Option<DateTime<Utc>>,
    created_before: Option<DateTime<Utc>>,
    error_contains: Option<String>,
) -> Result<store::jobs::JobFilter, ApiError> {
    // A range that ends before it starts is valid and matches nothing (the SQL says so).
    if error_contains
        .as_ref()
        .is_some_and(|e| e.chars().count() > 200)
    {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "must be at most 200 characters",
            Some("error_contains"),
        ));
    }
    let names =
        |v: Vec<&'static str>| (!v.is_empty()).then(|| v.into_iter().map(str::to_owned).collect());
    // Postgres text holds no NUL, so no stored error contains one: such a filter matches
    // nothing (an empty status list).
    let statuses = if error_contains.as_ref().is_some_and(|e| e.contains('\0')) {
        Some(Vec::new())
    } else {
        names(statuses.into_iter().map(JobStatus::as_str).collect())
    };
    let error_contains = error_contains.map(|e| e.replace('\0', ""));
    Ok(store::jobs::JobFilter {
        statuses,
        kinds: names(kinds.into_iter().map(JobKind::as_str).collect()),
        created_after,
        created_before,
        error_contains: error_contains.filter(|e| !e.is_empty()),
        owner: None,
        tags: None,
    })
}

/// The `tag` parameters as a filter (`None`: any). A string no job can carry as a tag is a
/// valid filter that matches nothing.
pub fn tag_filter(tags: Vec<String>) -> Result<Option<Vec<String>>, ApiError> {
    if tags.len() > 20 {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "at most 20 tags",
            Some("tag"),
        ));
    }
    // Postgres text holds no NUL: such a tag (which no job can carry) becomes one that Postgres
    // accepts and no job can carry either (U+FFFD is outside the tag alphabet).
    let tags: Vec<String> = tags
        .into_iter()
        .map(|t| t.replace('\0', "\u{FFFD}"))
        .collect();
    Ok((!tags.is_empty()).then_some(tags))
}

pub fn page_size(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad_request(
            "invalid_parameter",
            format!("must be between 1 and {MAX_PAGE}"),
            Some("limit"),
        )),
    }
}

fn decode_cursor(cursor: &str) -> Result<Uuid, ApiError> {
    CURSOR
        .decode(cursor)
        .ok()
        .and_then(|b| Uuid::from_slice(&b).ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_parameter",
                "not a cursor returned by this API",
                Some("cursor"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_with_a_nul_is_a_filter_postgres_accepts_and_no_job_matches() {
        let tags = tag_filter(vec!["a\0b".to_owned(), "ok".to_owned()])
            .unwrap()
            .unwrap();
        assert!(tags.iter().all(|t| !t.contains('\0')));
        let alphabet = regex::Regex::new("^[A-Za-z0-9_.:/=-]{1,64}$").unwrap();
        assert!(!alphabet.is_match(&tags[0]), "{tags:?}");
        assert_eq!(tags[1], "ok");
        assert_eq!(tag_filter(Vec::new()).unwrap(), None);
    }
}
