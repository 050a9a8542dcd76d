//! The long-running kind: `steps` steps of `step_duration_ms` each, with durable progress.
//! A rescued or released job resumes after its last durable step.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::FieldError;
use crate::jobs::{JobContext, JobError};

pub const MAX_STEPS: u32 = 10_000;
pub const MAX_STEP_DURATION_MS: u32 = 60_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LongRunningJob {
    pub steps: u32,
    pub step_duration_ms: u32,
}

/// What a finished long-running job reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Object)]
pub struct LongRunningResult {
    /// Steps completed, equal to the job's `steps`.
    pub steps_completed: u32,
}

impl LongRunningJob {
    pub fn parse(steps: u32, step_duration_ms: u32) -> Result<Self, FieldError> {
        if !(1..=MAX_STEPS).contains(&steps) {
            return Err(FieldError::new(
                "steps",
                format!("must be between 1 and {MAX_STEPS}"),
            ));
        }
        if step_duration_ms > MAX_STEP_DURATION_MS {
            return Err(FieldError::new(
                "step_duration_ms",
                format!("must be between 0 and {MAX_STEP_DURATION_MS}"),
            ));
        }
        Ok(Self {
            steps,
            step_duration_ms,
        })
    }

    pub async fn run(&self, ctx: &mut JobContext) -> Result<LongRunningResult, JobError> {
        let step = Duration::from_millis(u64::from(self.step_duration_ms));
        for done in ctx.checkpoint.min(self.steps)..self.steps {
            tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => return Err(JobError::Lost),
                _ = ctx.shutdown.cancelled() => return Err(JobError::Interrupted),
                _ = tokio::time::sleep(step) => {}
            }
            ctx.progress.report(done + 1, self.steps).await?;
        }
        Ok(LongRunningResult {
            steps_completed: self.steps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_name_the_offending_field() {
        assert_eq!(LongRunningJob::parse(0, 10).unwrap_err().field, "steps");
        assert_eq!(
            LongRunningJob::parse(MAX_STEPS + 1, 10).unwrap_err().field,
            "steps"
        );
        assert_eq!(
            LongRunningJob::parse(3, MAX_STEP_DURATION_MS + 1)
                .unwrap_err()
                .field,
            "step_duration_ms"
        );
        assert!(LongRunningJob::parse(MAX_STEPS, 0).is_ok());
    }
}
