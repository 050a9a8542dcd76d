//! Operators' controls of each kind's queue as this process knows them: paused, rate-limited.
//! Reloaded whenever `jobq_queues` is notified (a pause takes effect at once in every process)
//! and every few seconds as a backstop.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sqlx::PgPool;

use crate::domain::JobKind;
use crate::store;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Control {
    pub paused: bool,
    pub rate_limited: bool,
}

#[derive(Clone, Default)]
pub struct QueueControls {
    inner: Arc<RwLock<HashMap<JobKind, Control>>>,
}

impl QueueControls {
    pub async fn reload(&self, pool: &PgPool) -> sqlx::Result<()> {
        let rows = store::queues::all(pool).await?;
        let fresh: HashMap<JobKind, Control> = rows
            .iter()
            .filter_map(|r| {
                JobKind::parse(&r.kind).map(|k| {
                    let control = Control {
                        paused: r.paused,
                        rate_limited: r.rate_limit.is_some(),
                    };
                    (k, control)
                })
            })
            .collect();
        if let Ok(mut inner) = self.inner.write() {
            *inner = fresh;
        }
        Ok(())
    }

    pub fn get(&self, kind: JobKind) -> Control {
        self.inner
            .read()
            .ok()
            .and_then(|m| m.get(&kind).copied())
            .unwrap_or_default()
    }
}
