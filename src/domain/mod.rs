//! Pure types and rules of a job: kinds, statuses and their transitions, events, retry backoff.
//! Nothing here knows about HTTP, SQL or apalis.

mod backoff;
mod job;

pub use backoff::Backoff;
pub use job::{EventType, FieldError, JobKind, JobStatus};
