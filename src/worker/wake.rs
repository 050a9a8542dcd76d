//! When a worker fetches. apalis-postgres fetches whenever the worker is woken; this wakes it
//! on Postgres NOTIFY (apalis' insert trigger, at commit: pickup in milliseconds) and on a
//! backstop interval (retries falling due, notifications lost while disconnected).
//!
//! One LISTEN connection per process serves all queues and reconnects by itself; after every
//! (re)connect all workers are woken, since notifications sent meanwhile are gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::ext::poll_strategy::{PollSnapshot, PollStrategy};
use serde::Deserialize;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// apalis-postgres' trigger notifies this channel for every entry inserted due now.
const INSERT_CHANNEL: &str = "apalis::job::insert";

type Subscribers = Arc<Mutex<HashMap<String, Vec<mpsc::Sender<()>>>>>;

#[derive(Clone)]
pub struct Notifier {
    subscribers: Subscribers,
}

#[derive(Deserialize)]
struct InsertEvent {
    job_type: String,
}

impl Notifier {
    /// Starts the LISTEN loop; it ends when `shutdown` is cancelled.
    pub fn start(pool: PgPool, shutdown: CancellationToken) -> Self {
        let notifier = Self {
            subscribers: Arc::default(),
        };
        tokio::spawn(notifier.clone().listen(pool, shutdown));
        notifier
    }

    /// A poll strategy for a worker of `queue`.
    pub fn strategy(&self, queue: &str, poll_interval: Duration) -> WakeStrategy {
        // One pending wake-up is enough: a fetch takes everything that is due.
        let (tx, rx) = mpsc::channel(1);
        if let Ok(mut subs) = self.subscribers.lock() {
            let list = subs.entry(queue.to_owned()).or_default();
            list.retain(|s| !s.is_closed());
            list.push(tx);
        }
        let mut interval = tokio::time::interval(poll_interval);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        WakeStrategy { rx, interval }
    }

    fn wake(&self, queue: Option<&str>) {
        let Ok(subs) = self.subscribers.lock() else {
            return;
        };
        let targets = subs
            .iter()
            .filter(|(q, _)| queue.is_none_or(|want| want == q.as_str()))
            .flat_map(|(_, list)| list.iter());
        for s in targets {
            let _ = s.try_send(());
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
            self.wake(None);
            loop {
                let received = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = listener.try_recv() => r,
                };
                match received {
                    Ok(Some(n)) => match serde_json::from_str::<InsertEvent>(n.payload()) {
                        Ok(ev) => self.wake(Some(&ev.job_type)),
                        Err(_) => self.wake(None),
                    },
                    // The connection dropped; the next try_recv reconnects. Anything notified
                    // meanwhile is lost, so everyone looks at the queue.
                    Ok(None) => {
                        tracing::info!("LISTEN connection lost; reconnecting");
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
    listener.listen(INSERT_CHANNEL).await?;
    Ok(listener)
}

/// Wakes a worker on a notification for its queue or on the backstop interval. Both sources
/// are drained until they return `Pending`, so their wakers are always registered.
pub struct WakeStrategy {
    rx: mpsc::Receiver<()>,
    interval: Interval,
}

impl PollStrategy for WakeStrategy {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let mut woken = false;
        while let Poll::Ready(Some(())) = self.rx.poll_recv(cx) {
            woken = true;
        }
        while self.interval.poll_tick(cx).is_ready() {
            woken = true;
        }
        if woken {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}
