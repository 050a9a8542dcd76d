//! Enqueue requests: one body per kind, each with the options every job may carry, and their
//! parsing into a job (payload, progress total, options).

use chrono::{DateTime, Utc};
use poem_openapi::{Object, Union};
use serde::Deserialize;
use serde_json::Value;

use crate::api::body::BodyLimit;
use crate::api::error::ApiError;
use crate::domain::{JobKind, RawOptions};
use crate::jobs::email::EmailJob;
use crate::jobs::hash::{HashAlgorithm, HashJob};
use crate::jobs::long_running::LongRunningJob;

/// Declares an enqueue request: the kind's own fields, then the options of every job.
macro_rules! enqueue_request {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Object, Deserialize, serde::Serialize)]
        #[oai(deny_unknown_fields)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// Attempts before the job fails for good (1-25; the server default when omitted).
            #[oai(validator(minimum(value = "1"), maximum(value = "25")))]
            pub max_attempts: Option<u32>,
            /// Do not run before this time (RFC 3339): the job is `scheduled` until then, and
            /// runs within a second after it. A time in the past means now.
            pub run_at: Option<DateTime<Utc>>,
            /// Do not run before this many milliseconds from now (at most a year). Give this or
            /// `run_at`.
            #[oai(validator(minimum(value = "0"), maximum(value = "31622400000")))]
            pub delay_ms: Option<u64>,
            /// -100 to 100 (default 0): when jobs of a kind wait, higher runs first.
            #[oai(validator(minimum(value = "-100"), maximum(value = "100")))]
            pub priority: Option<i32>,
            /// An attempt running longer than this many milliseconds (100 to 86400000) fails
            /// and is retried like any failure.
            #[oai(validator(minimum(value = "100"), maximum(value = "86400000")))]
            pub timeout_ms: Option<u64>,
            /// Labels to find the job by (`list_jobs?tag=`): at most 20, each 1-64 letters,
            /// digits or `_.:/=-`.
            #[oai(validator(max_items = 20))]
            pub tags: Option<Vec<String>>,
        }

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
    };
}

enqueue_request! {
    /// Send one plain-text email.
    EnqueueEmail {
        /// Recipient address, e.g. `ada@example.com`.
        #[oai(validator(min_length = 3, max_length = 320))]
        to: String,
        /// Subject line: 1 to 998 characters, no line breaks.
        #[oai(validator(min_length = 1, max_length = 998))]
        subject: String,
        /// Plain-text body, at most 256 KiB.
        #[oai(validator(max_length = 262144))]
        body: String,
    }
}

enqueue_request! {
    /// Run `steps` steps of `step_duration_ms` each, reporting progress.
    EnqueueLongRunning {
        /// Number of steps (1-10000).
        #[oai(validator(minimum(value = "1"), maximum(value = "10000")))]
        steps: u32,
        /// Duration of each step in milliseconds (0-60000).
        #[oai(validator(minimum(value = "0"), maximum(value = "60000")))]
        step_duration_ms: u32,
    }
}

enqueue_request! {
    /// Compute a SHA-2 digest of `data` (or `data_base64`) repeated `repeat` times.
    EnqueueHash {
        /// Input as text, hashed as its UTF-8 bytes (at most 1 MiB). Give this or `data_base64`.
        #[oai(validator(max_length = 1048576))]
        data: Option<String>,
        /// Input as standard base64 (at most 1 MiB decoded). Give this or `data`.
        #[oai(validator(max_length = 1398104))]
        data_base64: Option<String>,
        /// How many times the input is fed to the hash function (1-1000000000, default 1); the
        /// total (length x repeat) is limited by the server, 1 GiB by default.
        #[oai(validator(minimum(value = "1"), maximum(value = "1000000000")))]
        repeat: Option<u64>,
        /// Hash function; `sha256` when omitted.
        algorithm: Option<HashAlgorithm>,
    }
}

impl BodyLimit for EnqueueEmail {
    const MAX_BODY_BYTES: usize = 512 * 1024;
}

impl BodyLimit for EnqueueLongRunning {
    const MAX_BODY_BYTES: usize = 4 * 1024;
}

impl BodyLimit for EnqueueHash {
    const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
}

/// One job of any kind, `kind` telling which (a batch item, a schedule's job).
#[derive(Debug, Clone, Union, Deserialize, serde::Serialize)]
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

/// A parsed request: what `lifecycle::enqueue` needs, options still unchecked.
pub struct ParsedJob {
    pub kind: JobKind,
    pub payload: Value,
    pub progress_total: u32,
    pub options: RawOptions,
}

fn payload<T: serde::Serialize>(job: &T) -> Result<Value, ApiError> {
    serde_json::to_value(job).map_err(|e| ApiError::internal(&e))
}

impl JobRequest {
    /// Checks the kind's fields (errors name the field); `hash_limit` bounds a hash job's input.
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
                let job = HashJob::parse(r.data, r.data_base64, r.repeat, r.algorithm, hash_limit)?;
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
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct EnqueueBatch {
    /// 1 to 1000 jobs, of any kinds.
    #[oai(validator(min_items = 1, max_items = 1000))]
    pub jobs: Vec<JobRequest>,
}

impl BodyLimit for EnqueueBatch {
    const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
}

/// Prefixes a field error with the place of the item in a list (`jobs[3].to`).
pub fn at_index(list: &str, index: usize, e: ApiError) -> ApiError {
    at_field(&format!("{list}[{index}]"), e)
}

/// Prefixes a field error with the object it is in (`job.to`).
pub fn at_field(parent: &str, e: ApiError) -> ApiError {
    match e {
        ApiError::Unprocessable(mut body) => {
            let field = body.0.field.take().unwrap_or_default();
            body.0.field = Some(format!("{parent}.{field}"));
            ApiError::Unprocessable(body)
        }
        other => other,
    }
}
