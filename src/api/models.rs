//! What the API reads and writes. Requests are plain data until the handler parses them into a
//! job kind's payload; responses are built from status rows and events.

use chrono::{DateTime, Utc};
use poem_openapi::types::Example;
use poem_openapi::{Object, Union};
use serde::Serialize;
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::domain::{EventType, JobKind, JobStatus};
use crate::jobs::email::{EmailJob, EmailResult};
use crate::jobs::hash::{HashAlgorithm, HashJob, HashResult};
use crate::jobs::long_running::{LongRunningJob, LongRunningResult};
use crate::store::{EventRow, JobRow};

/// Progress of a job: `done` of `total` units (steps for long-running jobs; 0 of 0 for kinds
/// that do not report progress).
#[derive(Debug, Clone, Object, Serialize)]
#[oai(example)]
pub struct JobProgress {
    /// Units completed so far (durable: a resumed job continues from here).
    pub done: u32,
    /// Units in all (the job's `steps` for long-running jobs; 0 for the other kinds).
    pub total: u32,
}

/// The input of an email job (the body is not echoed back).
#[derive(Debug, Clone, Object, Serialize)]
#[oai(example)]
pub struct EmailInput {
    /// Recipient address, as enqueued.
    pub to: String,
    /// Subject line, as enqueued.
    pub subject: String,
    /// Length of the body in bytes (UTF-8); the body itself is not returned.
    pub body_bytes: u64,
}

/// The input of a long-running job.
#[derive(Debug, Clone, Object, Serialize)]
#[oai(example)]
pub struct LongRunningInput {
    /// Number of steps to run (1-10000).
    pub steps: u32,
    /// Duration of each step in milliseconds (0-60000).
    pub step_duration_ms: u32,
}

/// A summary of the input of a hash job (the data itself is not echoed back).
#[derive(Debug, Clone, Object, Serialize)]
#[oai(example)]
pub struct HashInput {
    /// The SHA-2 function applied.
    pub algorithm: HashAlgorithm,
    /// Length of the input in bytes (text as UTF-8, base64 decoded); the input itself is not
    /// returned.
    pub data_bytes: u64,
    /// How many times the input is fed to the hash function.
    pub repeat: u64,
    /// Bytes to hash in all: `data_bytes` x `repeat`.
    pub total_bytes: u64,
}

/// What the job was asked to do; `kind` tells which shape.
#[derive(Debug, Clone, Union, Serialize)]
#[oai(discriminator_name = "kind", one_of)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobInput {
    #[oai(mapping = "email")]
    Email(EmailInput),
    #[oai(mapping = "long_running")]
    LongRunning(LongRunningInput),
    #[oai(mapping = "hash")]
    Hash(HashInput),
}

/// The result of a succeeded job; `kind` tells which shape.
#[derive(Debug, Clone, Union, Serialize)]
#[oai(discriminator_name = "kind", one_of)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobResult {
    #[oai(mapping = "email")]
    Email(EmailResult),
    #[oai(mapping = "long_running")]
    LongRunning(LongRunningResult),
    #[oai(mapping = "hash")]
    Hash(HashResult),
}

/// A job and everything known about it.
#[derive(Debug, Clone, Object, Serialize)]
#[oai(example)]
pub struct Job {
    /// Time-ordered unique id (UUIDv7).
    pub id: Uuid,
    /// The job's kind; `input` and `result` have its shape.
    pub kind: JobKind,
    /// Where the job is in its lifecycle.
    pub status: JobStatus,
    /// Attempts started so far (0 until a worker takes the job).
    pub attempt: u32,
    /// Attempts allowed before the job fails for good.
    pub max_attempts: u32,
    /// Progress of the job (long-running jobs report it step by step).
    pub progress: JobProgress,
    /// What the job was asked to do (`kind` tells the shape).
    pub input: JobInput,
    /// Set once the job has succeeded.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,
    /// The error of the latest failed attempt.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the job was enqueued (RFC 3339).
    #[serde(with = "crate::api::body::rfc3339")]
    pub created_at: DateTime<Utc>,
    /// When the job last changed: status, attempt, progress or result (RFC 3339).
    #[serde(with = "crate::api::body::rfc3339")]
    pub updated_at: DateTime<Utc>,
    /// When the first attempt started.
    #[oai(skip_serializing_if_is_none)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::api::body::rfc3339::option"
    )]
    pub started_at: Option<DateTime<Utc>>,
    /// When the job reached a terminal status.
    #[oai(skip_serializing_if_is_none)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::api::body::rfc3339::option"
    )]
    pub finished_at: Option<DateTime<Utc>>,
    /// When the next attempt is due (status `retrying`).
    #[oai(skip_serializing_if_is_none)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::api::body::rfc3339::option"
    )]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Not run before this time (set for jobs enqueued with `run_at` or `delay_ms`).
    #[oai(skip_serializing_if_is_none)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::api::body::rfc3339::option"
    )]
    pub run_at: Option<DateTime<Utc>>,
    /// Higher runs first within a kind.
    pub priority: i32,
    /// An attempt running longer fails.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The labels given at enqueue (empty when none).
    pub tags: Vec<String>,
}

/// A time of the examples (RFC 3339).
pub(crate) fn at(t: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// The id of the job of the examples.
pub(crate) const EXAMPLE_JOB_ID: Uuid = Uuid::from_u128(0x019bc0fd_89c0_7a3e_9c41_5d2f8e6b1a07);

impl Example for JobProgress {
    /// A long-running job at its third of five steps.
    fn example() -> Self {
        JobProgress { done: 3, total: 5 }
    }
}

impl Example for EmailInput {
    fn example() -> Self {
        EmailInput {
            to: "user@example.com".to_owned(),
            subject: "Welcome to jobq".to_owned(),
            body_bytes: 31,
        }
    }
}

impl Example for LongRunningInput {
    fn example() -> Self {
        LongRunningInput {
            steps: 5,
            step_duration_ms: 200,
        }
    }
}

impl Example for HashInput {
    /// `{"data": "data1", "repeat": 1000}`.
    fn example() -> Self {
        HashInput {
            algorithm: HashAlgorithm::Sha256,
            data_bytes: 5,
            repeat: 1000,
            total_bytes: 5000,
        }
    }
}

/// The digest of the example job.
const EXAMPLE_DIGEST: &str = "411c1c5b0d7d5a9e08d469f1b8b31e810d78c4c3cf7dcecfa510a45d73c84037";

/// A hash job of `{"data": "data1", "repeat": 1000}` that succeeded at its first attempt.
impl Example for Job {
    fn example() -> Self {
        Job {
            id: EXAMPLE_JOB_ID,
            kind: JobKind::Hash,
            status: JobStatus::Succeeded,
            attempt: 1,
            max_attempts: 5,
            progress: JobProgress { done: 0, total: 0 },
            input: JobInput::Hash(HashInput::example()),
            result: Some(JobResult::Hash(HashResult {
                algorithm: HashAlgorithm::Sha256,
                digest_hex: EXAMPLE_DIGEST.to_owned(),
                bytes_hashed: 5000,
            })),
            last_error: None,
            created_at: at("2026-01-15T09:30:00Z"),
            updated_at: at("2026-01-15T09:30:00.180Z"),
            started_at: Some(at("2026-01-15T09:30:00.150Z")),
            finished_at: Some(at("2026-01-15T09:30:00.180Z")),
            next_attempt_at: None,
            run_at: None,
            priority: 0,
            timeout_ms: None,
            tags: vec!["example".to_owned()],
        }
    }
}

/// One page of jobs, newest first.
#[derive(Debug, Clone, Object, Serialize)]
#[oai(example)]
pub struct JobPage {
    /// At most `limit` jobs, in the requested order.
    pub jobs: Vec<Job>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Something that happened to a job.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct JobEvent {
    /// Increasing id of the event.
    pub id: i64,
    /// The job it happened to.
    pub job_id: Uuid,
    /// The job's kind.
    pub kind: JobKind,
    /// What happened.
    #[oai(rename = "type")]
    pub event_type: EventType,
    /// The job's status right after the event.
    pub status: JobStatus,
    /// Details by type: `attempt`, `error`, `done`/`total`, `result`, `next_attempt_at`, ...
    pub data: serde_json::Value,
    /// When it happened (RFC 3339).
    pub created_at: DateTime<Utc>,
}

/// One page of a job's events, oldest first.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct EventPage {
    /// At most `limit` events, in increasing `id` order.
    pub events: Vec<JobEvent>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub next_after: Option<i64>,
}

impl Example for JobPage {
    fn example() -> Self {
        JobPage {
            jobs: vec![Job::example()],
            next_cursor: Some("AZvA_YnAej6cQV0vjmsaBw".to_owned()),
        }
    }
}

impl Example for JobEvent {
    /// The last event of the example job.
    fn example() -> Self {
        JobEvent {
            id: 3,
            job_id: EXAMPLE_JOB_ID,
            kind: JobKind::Hash,
            event_type: EventType::Succeeded,
            status: JobStatus::Succeeded,
            data: serde_json::json!({
                "attempt": 1,
                "result": {
                    "algorithm": "sha256",
                    "digest_hex": EXAMPLE_DIGEST,
                    "bytes_hashed": 5000,
                },
            }),
            created_at: at("2026-01-15T09:30:00.180Z"),
        }
    }
}

impl Example for EventPage {
    /// The events of the example job.
    fn example() -> Self {
        let event = |id, event_type, status, data, time| JobEvent {
            id,
            job_id: EXAMPLE_JOB_ID,
            kind: JobKind::Hash,
            event_type,
            status,
            data,
            created_at: at(time),
        };
        EventPage {
            events: vec![
                event(
                    1,
                    EventType::Queued,
                    JobStatus::Queued,
                    serde_json::json!({"attempt": 0}),
                    "2026-01-15T09:30:00Z",
                ),
                event(
                    2,
                    EventType::Started,
                    JobStatus::Running,
                    serde_json::json!({"attempt": 1}),
                    "2026-01-15T09:30:00.150Z",
                ),
                JobEvent::example(),
            ],
            next_after: None,
        }
    }
}

fn corrupt(what: &str, value: &str) -> ApiError {
    ApiError::internal(&format!("stored {what} is invalid: {value:?}"))
}

fn non_negative(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

impl TryFrom<JobRow> for Job {
    type Error = ApiError;

    fn try_from(row: JobRow) -> Result<Self, ApiError> {
        let kind = JobKind::parse(&row.kind).ok_or_else(|| corrupt("kind", &row.kind))?;
        let status = JobStatus::parse(&row.status).ok_or_else(|| corrupt("status", &row.status))?;
        let bad_payload = |e: serde_json::Error| corrupt("payload", &e.to_string());
        let input = match kind {
            JobKind::Email => {
                let p: EmailJob = serde_json::from_value(row.payload).map_err(bad_payload)?;
                JobInput::Email(EmailInput {
                    to: p.to,
                    subject: p.subject,
                    body_bytes: p.body.len() as u64,
                })
            }
            JobKind::LongRunning => {
                let p: LongRunningJob = serde_json::from_value(row.payload).map_err(bad_payload)?;
                JobInput::LongRunning(LongRunningInput {
                    steps: p.steps,
                    step_duration_ms: p.step_duration_ms,
                })
            }
            JobKind::Hash => {
                let p: HashJob = serde_json::from_value(row.payload).map_err(bad_payload)?;
                JobInput::Hash(HashInput {
                    algorithm: p.algorithm,
                    data_bytes: p.data.len() as u64,
                    repeat: p.repeat,
                    total_bytes: p.total_bytes(),
                })
            }
        };
        let bad_result = |e: serde_json::Error| corrupt("result", &e.to_string());
        let result = match row.result {
            None => None,
            Some(v) => Some(match kind {
                JobKind::Email => JobResult::Email(serde_json::from_value(v).map_err(bad_result)?),
                JobKind::LongRunning => {
                    JobResult::LongRunning(serde_json::from_value(v).map_err(bad_result)?)
                }
                JobKind::Hash => JobResult::Hash(serde_json::from_value(v).map_err(bad_result)?),
            }),
        };
        Ok(Job {
            id: row.id,
            kind,
            status,
            attempt: non_negative(row.attempt),
            max_attempts: non_negative(row.max_attempts),
            progress: JobProgress {
                done: non_negative(row.progress_done),
                total: non_negative(row.progress_total),
            },
            input,
            result,
            last_error: row.last_error,
            created_at: row.created_at,
            updated_at: row.updated_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            next_attempt_at: row.next_attempt_at,
            run_at: row.run_at,
            priority: row.priority,
            timeout_ms: row.timeout_ms.and_then(|ms| u64::try_from(ms).ok()),
            tags: row.tags,
        })
    }
}

impl TryFrom<EventRow> for JobEvent {
    type Error = ApiError;

    fn try_from(row: EventRow) -> Result<Self, ApiError> {
        Ok(JobEvent {
            id: row.id,
            job_id: row.job_id,
            kind: JobKind::parse(&row.kind).ok_or_else(|| corrupt("kind", &row.kind))?,
            event_type: EventType::parse(&row.event_type)
                .ok_or_else(|| corrupt("event type", &row.event_type))?,
            status: JobStatus::parse(&row.status).ok_or_else(|| corrupt("status", &row.status))?,
            data: row.data,
            created_at: row.created_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::types::ToJSON;

    use super::*;
    use crate::api::jobs::JobList;

    /// Jobs of every kind, input and result shape, with every optional field present and absent.
    fn jobs() -> Vec<Job> {
        let base = Job::example();
        vec![
            base.clone(),
            Job {
                kind: JobKind::Email,
                status: JobStatus::Retrying,
                input: JobInput::Email(EmailInput::example()),
                result: None,
                last_error: Some("SMTP said \"no\"\n\u{1F600}".to_owned()),
                started_at: Some(at("2026-01-15T09:30:00.123456Z")),
                finished_at: None,
                next_attempt_at: Some(at("2026-01-15T09:31:00Z")),
                timeout_ms: Some(5000),
                tags: vec![],
                ..base.clone()
            },
            Job {
                kind: JobKind::LongRunning,
                status: JobStatus::Succeeded,
                input: JobInput::LongRunning(LongRunningInput::example()),
                result: Some(JobResult::LongRunning(LongRunningResult {
                    steps_completed: 5,
                })),
                run_at: Some(at("2026-01-16T00:00:00.5Z")),
                priority: -100,
                tags: vec!["a".to_owned(), "b=c".to_owned()],
                ..base.clone()
            },
            Job {
                kind: JobKind::Email,
                input: JobInput::Email(EmailInput::example()),
                result: Some(JobResult::Email(EmailResult {
                    message_id: "<x@jobq>".to_owned(),
                    server_response: "250 ok".to_owned(),
                })),
                started_at: None,
                finished_at: None,
                ..base
            },
        ]
    }

    #[test]
    fn the_serde_answer_is_the_json_the_schema_describes() {
        for job in jobs() {
            let serde = serde_json::to_value(&job).expect("serialize");
            assert_eq!(Some(serde), job.to_json(), "{job:?}");
        }
        let list = JobList { jobs: jobs() };
        assert_eq!(
            Some(serde_json::to_value(&list).expect("serialize")),
            list.to_json()
        );
        for next_cursor in [None, Some("AZvA_YnAej6cQV0vjmsaBw".to_owned())] {
            let page = JobPage {
                jobs: jobs(),
                next_cursor,
            };
            assert_eq!(
                Some(serde_json::to_value(&page).expect("serialize")),
                page.to_json()
            );
        }
    }
}
