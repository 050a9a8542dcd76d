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

/// `None` until the first load: until then nothing is known, not "no controls".
#[derive(Clone, Default)]
pub struct QueueControls {
    inner: Arc<RwLock<Option<HashMap<JobKind, Control>>>>,
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
            *inner = Some(fresh);
        }
        Ok(())
    }

    /// The controls of `kind`; `None` while they have not been loaded yet (a worker must then
    /// assume a rate limit may apply and ask the database).
    pub fn get(&self, kind: JobKind) -> Option<Control> {
        let inner = self.inner.read().ok()?;
        inner
            .as_ref()
            .map(|m| m.get(&kind).copied().unwrap_or_default())
    }
}
