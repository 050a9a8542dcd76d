//! Every change to a job is one function here and one transaction: the status row (fenced on
//! the status and attempt it expects), the queue entry when there is a next attempt, and the
//! event. Callers never write those tables directly.

mod enqueue;
mod finish;
mod group;
mod ops;
mod progress;
pub mod schedules;
mod start;

pub use enqueue::{EnqueueError, EnqueueRequest, Enqueued, enqueue, enqueue_many};
pub use finish::{Finished, Outcome, finish, finish_many};
pub use group::Enqueuer;
pub use ops::{BulkRetry, OpsError, bulk_retry, cancel, retry};
pub use progress::DurableProgress;
pub use start::{Start, rescue_lost, start, unstart_many};

/// A failure to read or write the job tables or the queue.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

impl StoreError {
    /// True when the database could not be reached: worth waiting and trying again.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Db(e) => crate::store::is_unavailable(e),
        }
    }
}
