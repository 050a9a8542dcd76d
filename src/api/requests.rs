//! Enqueue requests: one body per kind, each with the options every job may carry, and their
//! parsing into a job (payload, progress total, options). A schedule's job is the same request
//! without `run_at`/`delay_ms` (its ticks say when it runs).
//!
//! The schema attributes (`#[oai(...)]`) are the contract; parsing is serde's (`JsonBody`), and
//! the checks in `jobs::*::parse` and `JobOptions::parse` accept exactly what they state.

use chrono::{DateTime, Utc};
use poem_openapi::types::Example;
use poem_openapi::{Object, Union};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::body::BodyLimit;
use crate::api::error::ApiError;
use crate::domain::{FieldError, JobKind, RawOptions};
use crate::jobs::email::EmailJob;
use crate::jobs::hash::{HashAlgorithm, HashInput, HashJob};
use crate::jobs::long_running::LongRunningJob;

/// Declares the request of one kind twice: to enqueue (`$name`: the kind's fields, the options
/// of every job, `run_at`/`delay_ms`) and as a schedule's job (`$scheduled`: without the last
/// two).
macro_rules! job_request {
    (
        $(#[$meta:meta])* $name:ident,
        $(#[$smeta:meta])* $scheduled:ident,
        { $($(#[$fmeta:meta])* $field:ident: $ty:ty,)* }
    ) => {
        job_request!(@struct $(#[$meta])* $name {
            $($(#[$fmeta])* $field: $ty,)*
            /// Do not run before this time (RFC 3339): the job is `scheduled` until then and
            /// runs within a second after it. A past time means now. With `delay_ms` too, the
            /// delay counts from this time.
            #[oai(skip_serializing_if_is_none)]
            #[serde(default, deserialize_with = "crate::api::body::present", skip_serializing_if = "Option::is_none")]
            run_at: Option<DateTime<Utc>>,
            /// Do not run before this many milliseconds from now (or from `run_at`), at most
            /// a year.
            #[oai(validator(minimum(value = "0"), maximum(value = "31622400000")), skip_serializing_if_is_none)]
            #[serde(default, deserialize_with = "crate::api::body::present", skip_serializing_if = "Option::is_none")]
            delay_ms: Option<u64>,
        });
        job_request!(@struct $(#[$smeta])* $scheduled { $($(#[$fmeta])* $field: $ty,)* });

        impl $name {
            pub fn options(&self) -> RawOptions {
                RawOptions {
                    max_attempts: self.max_attempts,
                    run_at: self.run_at,
                    delay_ms: self.delay_ms,
                    priority: self.priority,
                    timeout_ms: self.timeout_ms,
                    tags: self.tags.clone(),
                }
            }
        }

        impl From<$scheduled> for $name {
            fn from(s: $scheduled) -> Self {
                Self {
                    $($field: s.$field,)*
                    max_attempts: s.max_attempts,
                    priority: s.priority,
                    timeout_ms: s.timeout_ms,
                    tags: s.tags,
                    run_at: None,
                    delay_ms: None,
                }
            }
        }
    };
    (@struct $(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty,)* }) => {
        // `$meta` after the derive: it may hold `#[oai(...)]` (e.g. `example`).
        #[derive(Debug, Clone, Object, Deserialize, Serialize)]
        $(#[$meta])*
        #[oai(deny_unknown_fields)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// Attempts before the job fails for good (1-25; the server's default, 5 unless
            /// configured, when omitted).
            #[oai(validator(minimum(value = "1"), maximum(value = "25")), skip_serializing_if_is_none)]
            #[serde(default, deserialize_with = "crate::api::body::present", skip_serializing_if = "Option::is_none")]
            pub max_attempts: Option<u32>,
            /// -100 to 100 (default 0): when jobs of a kind wait, higher runs first.
            #[oai(validator(minimum(value = "-100"), maximum(value = "100")), skip_serializing_if_is_none)]
            #[serde(default, deserialize_with = "crate::api::body::present", skip_serializing_if = "Option::is_none")]
            pub priority: Option<i32>,
            /// An attempt running longer than this many milliseconds (100 to 86400000) fails
            /// and is retried like any failure.
            #[oai(validator(minimum(value = "100"), maximum(value = "86400000")), skip_serializing_if_is_none)]
            #[serde(default, deserialize_with = "crate::api::body::present", skip_serializing_if = "Option::is_none")]
            pub timeout_ms: Option<u64>,
            /// Labels to find the job by (`list_jobs?tag=`): at most 20, each 1-64 letters,
            /// digits or `_.:/=-`.
            #[oai(
                validator(max_items = 20, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.:/=-]{1,64}$"),
                skip_serializing_if_is_none
            )]
            #[serde(default, deserialize_with = "crate::api::body::present", skip_serializing_if = "Option::is_none")]
            pub tags: Option<Vec<String>>,
        }
    };
}

job_request! {
    /// Send one plain-text email.
    #[oai(example)]
    EnqueueEmail,
    /// An email to send at each tick of a schedule.
    #[oai(example)]
    ScheduledEmail,
    {
        /// Recipient address, e.g. `ada@example.com` (no display name, quotes or IP literals).
        #[oai(validator(
            min_length = 3,
            max_length = 254,
            pattern = "^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
        ))]
        to: String,
        /// Subject line: 1 to 998 characters, no line breaks or NUL characters.
        #[oai(validator(min_length = 1, max_length = 998, pattern = "^[^\\r\\n\\x00]*$"))]
        subject: String,
        /// Plain-text body, at most 262144 characters, no NUL characters.
        // "No NUL" is added to the spec by `api::contract` (a `not` schema).
        #[oai(validator(max_length = 262144))]
        body: String,
    }
}

job_request! {
    /// Run `steps` steps of `step_duration_ms` each, reporting progress.
    #[oai(example)]
    EnqueueLongRunning,
    /// A long-running job to run at each tick of a schedule.
    #[oai(example)]
    ScheduledLongRunning,
    {
        /// Number of steps (1-10000).
        #[oai(validator(minimum(value = "1"), maximum(value = "10000")))]
        steps: u32,
        /// Duration of each step in milliseconds (0-60000).
        #[oai(validator(minimum(value = "0"), maximum(value = "60000")))]
        step_duration_ms: u32,
    }
}

job_request! {
    /// Compute a SHA-2 digest of `data` repeated `repeat` times.
    #[oai(example)]
    EnqueueHash,
    /// A hash job to run at each tick of a schedule.
    #[oai(example)]
    ScheduledHash,
    {
        /// The input: text (hashed as its UTF-8 bytes, at most 1048576 characters) or
        /// `{"base64": "..."}` for binary input.
        data: HashData,
        /// How many times the input is fed to the hash function (1-1000000000, default 1).
        /// The total (input length x repeat) is bounded by the server (1 GiB unless
        /// configured): beyond it, 413.
        #[oai(validator(minimum(value = "1"), maximum(value = "1000000000")), skip_serializing_if_is_none)]
        #[serde(default, deserialize_with = "crate::api::body::present", skip_serializing_if = "Option::is_none")]
        repeat: Option<u64>,
        /// Hash function; `sha256` when omitted.
        #[oai(skip_serializing_if_is_none)]
        #[serde(default, deserialize_with = "crate::api::body::present", skip_serializing_if = "Option::is_none")]
        algorithm: Option<HashAlgorithm>,
    }
}

// The examples Swagger UI shows (and schemathesis sends): valid, accepted, and cheap to run.
// A schedule's job is the base; the enqueue examples differ from it only where written out.

impl Example for ScheduledEmail {
    fn example() -> Self {
        Self {
            to: "ops@example.com".to_owned(),
            subject: "Daily report".to_owned(),
            body: "The daily report is ready.\n".to_owned(),
            max_attempts: Some(3),
            priority: None,
            timeout_ms: None,
            tags: Some(vec!["report".to_owned()]),
        }
    }
}

impl Example for ScheduledLongRunning {
    fn example() -> Self {
        Self {
            steps: 5,
            step_duration_ms: 200,
            max_attempts: None,
            priority: None,
            timeout_ms: None,
            tags: None,
        }
    }
}

impl Example for ScheduledHash {
    fn example() -> Self {
        Self {
            data: HashData::Text("data1".to_owned()),
            repeat: Some(1000),
            algorithm: Some(HashAlgorithm::Sha256),
            max_attempts: None,
            priority: None,
            timeout_ms: None,
            tags: Some(vec!["digest".to_owned()]),
        }
    }
}

impl Example for EnqueueEmail {
    fn example() -> Self {
        Self {
            to: "user@example.com".to_owned(),
            subject: "Welcome to jobq".to_owned(),
            body: "Hello,\n\nyour account is ready.\n".to_owned(),
            max_attempts: None,
            tags: Some(vec!["signup".to_owned()]),
            ..ScheduledEmail::example().into()
        }
    }
}

impl Example for EnqueueLongRunning {
    fn example() -> Self {
        ScheduledLongRunning::example().into()
    }
}

impl Example for EnqueueHash {
    fn example() -> Self {
        Self {
            tags: None,
            ..ScheduledHash::example().into()
        }
    }
}

/// A hash job's input: text (hashed as its UTF-8 bytes, at most 1048576 characters), or binary
/// as `{"base64": "..."}`.
// The text branch's length bound is added to the spec in `api::contract`: a union variant
// carries no validators.
#[derive(Debug, Clone, Union, Deserialize, Serialize)]
#[oai(one_of)]
#[serde(untagged)]
pub enum HashData {
    Text(String),
    Base64(Base64Data),
}

/// Binary input as standard padded base64 (at most 1398104 characters).
#[derive(Debug, Clone, Object, Deserialize, Serialize)]
#[oai(deny_unknown_fields, example)]
#[serde(deny_unknown_fields)]
pub struct Base64Data {
    /// The bytes, standard base64 with padding (`+/`, `=`), e.g. `ZGF0YTE=` for `data1`.
    #[oai(validator(
        max_length = 1398104,
        pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
    ))]
    pub base64: String,
}

impl Example for Base64Data {
    /// The bytes of `data1`.
    fn example() -> Self {
        Self {
            base64: "ZGF0YTE=".to_owned(),
        }
    }
}

impl BodyLimit for EnqueueEmail {
    const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
}

impl BodyLimit for EnqueueLongRunning {
    const MAX_BODY_BYTES: usize = 4 * 1024;
}

impl BodyLimit for EnqueueHash {
    // 1 Mi characters of text, each up to 6 bytes as a JSON escape.
    const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
}

/// One job of any kind, `kind` telling which (a batch item).
#[derive(Debug, Clone, Union, Deserialize, Serialize)]
#[oai(discriminator_name = "kind", one_of)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobRequest {
    #[oai(mapping = "email")]
    Email(EnqueueEmail),
    #[oai(mapping = "long_running")]
    LongRunning(EnqueueLongRunning),
    #[oai(mapping = "hash")]
    Hash(EnqueueHash),
}

/// The job a schedule enqueues at each tick, `kind` telling which.
#[derive(Debug, Clone, Union, Deserialize, Serialize)]
#[oai(discriminator_name = "kind", one_of)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScheduledJob {
    #[oai(mapping = "email")]
    Email(ScheduledEmail),
    #[oai(mapping = "long_running")]
    LongRunning(ScheduledLongRunning),
    #[oai(mapping = "hash")]
    Hash(ScheduledHash),
}

impl From<ScheduledJob> for JobRequest {
    fn from(job: ScheduledJob) -> Self {
        match job {
            ScheduledJob::Email(j) => JobRequest::Email(j.into()),
            ScheduledJob::LongRunning(j) => JobRequest::LongRunning(j.into()),
            ScheduledJob::Hash(j) => JobRequest::Hash(j.into()),
        }
    }
}

impl ScheduledJob {
    pub fn kind(&self) -> JobKind {
        match self {
            ScheduledJob::Email(_) => JobKind::Email,
            ScheduledJob::LongRunning(_) => JobKind::LongRunning,
            ScheduledJob::Hash(_) => JobKind::Hash,
        }
    }
}

/// A parsed request: what `lifecycle::enqueue` needs, options still unchecked.
pub struct ParsedJob {
    pub kind: JobKind,
    pub payload: Value,
    pub progress_total: u32,
    pub options: RawOptions,
}

fn payload<T: Serialize>(job: &T) -> Result<Value, ApiError> {
    serde_json::to_value(job).map_err(|e| ApiError::internal(&e))
}

impl JobRequest {
    /// Checks the kind's fields (errors name the field); `hash_limit` bounds a hash job's total
    /// input (413 beyond it).
    pub fn parse(self, hash_limit: u64) -> Result<ParsedJob, ApiError> {
        Ok(match self {
            JobRequest::Email(r) => {
                let options = r.options();
                let job = EmailJob::parse(r.to, r.subject, r.body)?;
                ParsedJob {
                    kind: JobKind::Email,
                    payload: payload(&job)?,
                    progress_total: 0,
                    options,
                }
            }
            JobRequest::LongRunning(r) => {
                let options = r.options();
                let job = LongRunningJob::parse(r.steps, r.step_duration_ms)?;
                let progress_total = job.steps;
                ParsedJob {
                    kind: JobKind::LongRunning,
                    payload: payload(&job)?,
                    progress_total,
                    options,
                }
            }
            JobRequest::Hash(r) => {
                let options = r.options();
                let input = match r.data {
                    HashData::Text(text) => HashInput::Text(text),
                    HashData::Base64(b) => HashInput::Base64(b.base64),
                };
                let job = HashJob::parse(input, "data", r.repeat, r.algorithm)?;
                job.check_total(hash_limit)
                    .map_err(|e: FieldError| ApiError::input_too_large(&e.field, e.message))?;
                ParsedJob {
                    kind: JobKind::Hash,
                    payload: payload(&job)?,
                    progress_total: 0,
                    options,
                }
            }
        })
    }
}

/// Many jobs in one request, accepted together or not at all.
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(deny_unknown_fields, example)]
#[serde(deny_unknown_fields)]
pub struct EnqueueBatch {
    /// 1 to 1000 jobs, of any kinds.
    #[oai(validator(min_items = 1, max_items = 1000))]
    pub jobs: Vec<JobRequest>,
}

impl Example for EnqueueBatch {
    fn example() -> Self {
        Self {
            jobs: vec![
                JobRequest::Email(EnqueueEmail::example()),
                JobRequest::LongRunning(EnqueueLongRunning::example()),
                JobRequest::Hash(EnqueueHash::example()),
            ],
        }
    }
}

impl BodyLimit for EnqueueBatch {
    const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
}

/// Prefixes a field error with the place of the item in a list (`jobs[3].to`).
pub fn at_index(list: &str, index: usize, e: ApiError) -> ApiError {
    at_field(&format!("{list}[{index}]"), e)
}

/// Prefixes a field error with the object it is in (`job.to`).
pub fn at_field(parent: &str, e: ApiError) -> ApiError {
    match e {
        ApiError::Unprocessable(mut body) | ApiError::PayloadTooLarge(mut body)
            if body.0.field.is_some() =>
        {
            let field = body.0.field.take().unwrap_or_default();
            body.0.field = Some(format!("{parent}.{field}"));
            match body.0.code.as_str() {
                "input_too_large" => ApiError::PayloadTooLarge(body),
                _ => ApiError::Unprocessable(body),
            }
        }
        other => other,
    }
}
