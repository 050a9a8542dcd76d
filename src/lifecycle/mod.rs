//! Every change to a job is one function here and one transaction: the status row (fenced on
//! the status and attempt it expects), the queue entry when there is a next attempt, and the
//! event. Callers never write those tables directly.

mod enqueue;
mod finish;
mod progress;
mod start;

pub use enqueue::{EnqueueError, EnqueueRequest, Enqueued, enqueue};
pub use finish::{Finished, finish};
pub use progress::DurableProgress;
pub use start::{Start, start};

/// A failure to read or write the job tables or the queue.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("queue error: {0}")]
    Queue(#[from] apalis_postgres::Error),
}

impl StoreError {
    /// True when the database could not be reached (as opposed to a query it refused):
    /// worth waiting and trying again.
    pub fn is_unavailable(&self) -> bool {
        let db = match self {
            StoreError::Db(e) => e,
            StoreError::Queue(apalis_postgres::Error::Database(e)) => e,
            StoreError::Queue(_) => return false,
        };
        match db {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => true,
            // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now,
            // 08xxx connection exceptions.
            sqlx::Error::Database(e) => e
                .code()
                .is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
            _ => false,
        }
    }
}
