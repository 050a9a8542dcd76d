//! Pure types and rules of a job: kinds, statuses and their transitions, events, retry backoff.
//! Nothing here knows about HTTP, SQL or apalis.

mod backoff;
pub mod cron;
mod job;
mod options;

pub use backoff::Backoff;
pub use job::{EventType, FieldError, JobKind, JobStatus};
pub use options::{JobOptions, LAST_TIME, MAX_ATTEMPTS_LIMIT, RawOptions, valid_tag};
