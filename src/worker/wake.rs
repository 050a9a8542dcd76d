//! Signals for the workers, on one LISTEN connection per process: apalis-postgres' insert
//! notifications (sent at commit) bump a per-queue generation counter that the queue's backends
//! wait on; `jobq_cancel` notifications stop the named job's attempt if it runs here. The
//! connection reconnects by itself; after every (re)connect all queues are bumped, since
//! notifications sent meanwhile are gone. (A cancel sent meanwhile is still enforced: the
//! attempt's writes are fenced on its status, so it stops at its next progress write or is
//! discarded at its end.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::worker::controls::QueueControls;
use crate::worker::running::RunningJobs;

/// apalis-postgres' trigger notifies this channel for every entry inserted due now.
const INSERT_CHANNEL: &str = "apalis::job::insert";
/// `lifecycle::cancel` notifies this channel with the id of a job cancelled while running.
const CANCEL_CHANNEL: &str = "jobq_cancel";
/// A trigger notifies this channel when an operator pauses, resumes or rate-limits a kind.
const QUEUES_CHANNEL: &str = "jobq_queues";
/// How often the queue controls are re-read even without a notification.
const CONTROLS_REFRESH: Duration = Duration::from_secs(5);

type Subscribers = Arc<Mutex<HashMap<String, watch::Sender<u64>>>>;

#[derive(Clone)]
pub struct Notifier {
    subscribers: Subscribers,
    running: RunningJobs,
    controls: QueueControls,
}

#[derive(Deserialize)]
struct InsertEvent {
    job_type: String,
}

impl Notifier {
    /// Starts the LISTEN loop; it ends when `shutdown` is cancelled.
    pub fn start(
        pool: PgPool,
        running: RunningJobs,
        controls: QueueControls,
        shutdown: CancellationToken,
    ) -> Self {
        let notifier = Self {
            subscribers: Arc::default(),
            running,
            controls,
        };
        tokio::spawn(notifier.clone().listen(pool, shutdown));
        notifier
    }

    /// A receiver that changes whenever an entry of `queue` may have become available.
    pub fn subscribe(&self, queue: &str) -> watch::Receiver<u64> {
        match self.subscribers.lock() {
            Ok(mut subs) => subs
                .entry(queue.to_owned())
                .or_insert_with(|| watch::channel(0).0)
                .subscribe(),
            // Poisoned (a panic while holding it): a receiver that never changes still works,
            // the backstop poll picks the jobs up.
            Err(_) => watch::channel(0).1,
        }
    }

    fn wake(&self, queue: Option<&str>) {
        let Ok(subs) = self.subscribers.lock() else {
            return;
        };
        for (q, tx) in subs.iter() {
            if queue.is_none_or(|want| want == q) {
                tx.send_modify(|generation| *generation = generation.wrapping_add(1));
            }
        }
    }

    async fn listen(self, pool: PgPool, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let mut listener = match connect(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            self.refresh_controls(&pool).await;
            self.wake(None);
            let mut refresh = tokio::time::interval(CONTROLS_REFRESH);
            loop {
                let received = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = refresh.tick() => {
                        self.refresh_controls(&pool).await;
                        continue;
                    }
                    r = listener.try_recv() => r,
                };
                match received {
                    Ok(Some(n)) if n.channel() == CANCEL_CHANNEL => {
                        if let Ok(job_id) = n.payload().parse()
                            && self.running.cancel(job_id)
                        {
                            tracing::info!(%job_id, "cancelling the running attempt");
                        }
                    }
                    Ok(Some(n)) if n.channel() == QUEUES_CHANNEL => {
                        self.refresh_controls(&pool).await;
                        self.wake(None);
                    }
                    Ok(Some(n)) => match serde_json::from_str::<InsertEvent>(n.payload()) {
                        Ok(ev) => self.wake(Some(&ev.job_type)),
                        Err(_) => self.wake(None),
                    },
                    // The connection dropped; the next try_recv reconnects. Anything notified
                    // meanwhile is lost, so everyone looks at the queue and the controls again.
                    Ok(None) => {
                        tracing::info!("LISTEN connection lost; reconnecting");
                        self.refresh_controls(&pool).await;
                        self.wake(None);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection failed; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}

async fn connect(pool: &PgPool) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener
        .listen_all([INSERT_CHANNEL, CANCEL_CHANNEL, QUEUES_CHANNEL])
        .await?;
    Ok(listener)
}

impl Notifier {
    async fn refresh_controls(&self, pool: &PgPool) {
        if let Err(e) = self.controls.reload(pool).await {
            tracing::warn!(error = %e, "could not read the queue controls");
        }
    }
}
