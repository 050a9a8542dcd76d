//! The only place with SQL. Functions are named `<table>_<verb>`-style inside a module per table
//! and take an executor, so the caller decides the transaction.

pub mod events;
pub mod jobs;
pub mod keys;
pub mod queue;
pub mod queues;
pub mod schedules;

pub use events::EventRow;
pub use jobs::JobRow;

/// True when the database could not be reached (as opposed to a statement it refused):
/// worth waiting and trying again.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
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
