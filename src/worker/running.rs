//! The attempts running in this process, so that an operator's cancel (a `jobq_cancel`
//! notification from any process) reaches the one running the job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Clone, Default)]
pub struct RunningJobs {
    tokens: Arc<Mutex<HashMap<Uuid, CancellationToken>>>,
}

/// Keeps a job registered while its attempt runs.
pub struct Registration {
    jobs: RunningJobs,
    job_id: Uuid,
    pub token: CancellationToken,
}

impl RunningJobs {
    pub fn register(&self, job_id: Uuid) -> Registration {
        let token = CancellationToken::new();
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(job_id, token.clone());
        }
        Registration {
            jobs: self.clone(),
            job_id,
            token,
        }
    }

    /// Tells the attempt of `job_id` to stop, if it runs here.
    pub fn cancel(&self, job_id: Uuid) -> bool {
        let token = self
            .tokens
            .lock()
            .ok()
            .and_then(|t| t.get(&job_id).cloned());
        match token {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut tokens) = self.jobs.tokens.lock() {
            tokens.remove(&self.job_id);
        }
    }
}
