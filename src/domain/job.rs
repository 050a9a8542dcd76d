//! The vocabulary of a job's life.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The three kinds of work jobq runs. The string form is what the database and the API use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, poem_openapi::Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum JobKind {
    /// Send one email over SMTP.
    Email,
    /// Run N steps with a delay each, reporting progress; resumable from its checkpoint.
    LongRunning,
    /// Compute a SHA-2 digest of submitted bytes, optionally repeated.
    Hash,
}

impl JobKind {
    pub const ALL: [JobKind; 3] = [JobKind::Email, JobKind::LongRunning, JobKind::Hash];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Email => "email",
            JobKind::LongRunning => "long_running",
            JobKind::Hash => "hash",
        }
    }

    /// The apalis queue that carries this kind's attempts.
    pub fn queue(self) -> &'static str {
        match self {
            JobKind::Email => "jobq.email",
            JobKind::LongRunning => "jobq.long_running",
            JobKind::Hash => "jobq.hash",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a job is in its life. `succeeded`, `failed` and `cancelled` are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, poem_openapi::Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum JobStatus {
    /// Accepted, not to run before its `run_at`.
    Scheduled,
    /// Accepted and waiting for a worker.
    Queued,
    /// A worker is running an attempt.
    Running,
    /// An attempt failed; the next one is due at `next_attempt_at`.
    Retrying,
    /// Finished with a result.
    Succeeded,
    /// Every attempt failed (or the failure cannot be retried); `last_error` says why.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Scheduled,
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Retrying,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Scheduled => "scheduled",
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Retrying => "retrying",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// Statuses an operator may retry from.
    pub const RETRYABLE: [JobStatus; 2] = [JobStatus::Failed, JobStatus::Cancelled];

    /// Statuses an operator may cancel from.
    pub const CANCELLABLE: [JobStatus; 4] = [
        JobStatus::Scheduled,
        JobStatus::Queued,
        JobStatus::Retrying,
        JobStatus::Running,
    ];

    /// Statuses from which a worker may start an attempt. `running` is included because an
    /// attempt whose worker died is rescued and started again.
    pub const STARTABLE: [JobStatus; 4] = [
        JobStatus::Scheduled,
        JobStatus::Queued,
        JobStatus::Retrying,
        JobStatus::Running,
    ];
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a job; one row in the event log per occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum EventType {
    /// The job was accepted (or put back in the queue by a worker that shut down).
    Queued,
    /// A worker started an attempt.
    Started,
    /// The attempt made durable progress.
    Progress,
    /// An attempt failed and another one is scheduled.
    Retrying,
    /// The job finished with a result.
    Succeeded,
    /// The job failed for good.
    Failed,
    /// The job was cancelled (by an operator; `data.by` says who).
    Cancelled,
    /// An operator queued a failed or cancelled job again (`data.by` says who).
    Retried,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Queued => "queued",
            EventType::Started => "started",
            EventType::Progress => "progress",
            EventType::Retrying => "retrying",
            EventType::Succeeded => "succeeded",
            EventType::Failed => "failed",
            EventType::Cancelled => "cancelled",
            EventType::Retried => "retried",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            EventType::Queued,
            EventType::Started,
            EventType::Progress,
            EventType::Retrying,
            EventType::Succeeded,
            EventType::Failed,
            EventType::Cancelled,
            EventType::Retried,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A request value that is not acceptable, and the field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_statuses_round_trip_through_their_names() {
        for k in JobKind::ALL {
            assert_eq!(JobKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(JobKind::parse("nope"), None);
    }

    #[test]
    fn only_finished_statuses_are_terminal() {
        let terminal: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [
                JobStatus::Succeeded,
                JobStatus::Failed,
                JobStatus::Cancelled
            ]
        );
    }
}
