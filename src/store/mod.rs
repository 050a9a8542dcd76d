//! The only place with SQL. Functions are named `<table>_<verb>`-style inside a module per table
//! and take an executor, so the caller decides the transaction.

pub mod events;
pub mod jobs;
pub mod queue;

pub use events::EventRow;
pub use jobs::JobRow;
