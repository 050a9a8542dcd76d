//! The three job kinds. Each module owns its payload, how a request becomes that payload
//! (parse, don't validate), its result and how it runs. They know nothing of apalis, HTTP or SQL:
//! a kind gets a [`JobContext`] and returns its result or a [`JobError`].

pub mod email;
pub mod hash;
pub mod long_running;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Why an attempt did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// A failure that another attempt may not hit (a refused connection, a timeout).
    #[error("{0}")]
    Retryable(String),
    /// A failure no retry can fix (the SMTP server rejected the recipient).
    #[error("{0}")]
    Permanent(String),
    /// The worker is shutting down; the job stopped at a safe point and goes back to the queue.
    #[error("interrupted by worker shutdown")]
    Interrupted,
    /// This attempt no longer owns the job (it was cancelled, or rescued by another worker).
    #[error("attempt no longer owns the job")]
    Lost,
}

/// Where a running job reports durable progress.
pub trait Progress: Send {
    /// Records that `done` of `total` units are complete. Implementations may throttle writes;
    /// `Err(JobError::Lost)` tells the job to stop because it is no longer its attempt's.
    fn report(&mut self, done: u32, total: u32) -> BoxFuture<'_, Result<(), JobError>>;
}

/// What a job kind gets to run one attempt.
pub struct JobContext {
    pub job_id: Uuid,
    /// 1-based number of this attempt.
    pub attempt: u32,
    /// Units already completed by earlier attempts (the durable checkpoint).
    pub checkpoint: u32,
    /// Cancelled when the worker begins a graceful shutdown: stop at the next safe point and
    /// return [`JobError::Interrupted`].
    pub shutdown: CancellationToken,
    /// Cancelled when an operator cancels the job: stop as soon as possible and return
    /// [`JobError::Lost`] (the job's status already says `cancelled`).
    pub cancel: CancellationToken,
    pub progress: Box<dyn Progress>,
}

impl JobContext {
    /// `Err` when the job should stop now: cancelled, or the worker shutting down.
    pub fn check(&self) -> Result<(), JobError> {
        stop_requested(&self.cancel, &self.shutdown)
    }
}

/// The stop check of [`JobContext::check`], for work that runs away from the context (on the
/// blocking pool).
pub fn stop_requested(
    cancel: &CancellationToken,
    shutdown: &CancellationToken,
) -> Result<(), JobError> {
    if cancel.is_cancelled() {
        Err(JobError::Lost)
    } else if shutdown.is_cancelled() {
        Err(JobError::Interrupted)
    } else {
        Ok(())
    }
}
