//! The per-process reader of the event log and its in-memory fan-out.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::{JobKind, JobStatus};
use crate::events::{Position, frame};
use crate::store;

const CHANNEL: &str = "jobq_events";
const PAGE: i64 = 256;
/// Events the broadcast keeps for sessions that fall behind; past that a session lags and
/// catches up from the log instead. Entries are shared, so this is one copy for all sessions.
const BACKLOG: usize = 4096;
/// How often to look again while committed events wait behind a running transaction.
const HELD_BACK_RECHECK: Duration = Duration::from_millis(5);
/// Backstop read when no notification comes (notifications are lost while reconnecting).
const IDLE_RECHECK: Duration = Duration::from_secs(1);

/// One event, ready to send: its place in the order, what filters look at, and its frame.
#[derive(Debug)]
pub struct Published {
    pub position: Position,
    pub id: i64,
    pub job_id: Uuid,
    pub kind: JobKind,
    /// The job's status right after the event.
    pub status: JobStatus,
    pub owner: String,
    pub frame: String,
}

#[derive(Clone)]
pub struct EventHub {
    tx: broadcast::Sender<Arc<Published>>,
}

impl EventHub {
    /// Starts reading the log from its current end; runs until `shutdown`. The end is read
    /// before this returns, so that everything a subscriber may see after it is published:
    /// a session "from now" starts at the end it reads itself, never before the hub's.
    pub async fn start(pool: PgPool, shutdown: CancellationToken) -> Self {
        let (tx, _) = broadcast::channel(BACKLOG);
        let hub = Self { tx };
        let start = store::events::head(&pool).await.ok();
        tokio::spawn(hub.clone().run(pool, start, shutdown));
        hub
    }

    /// Events published from now on. Subscribe *before* replaying from the log, then skip what
    /// the replay already delivered (by position): nothing is missed at the seam.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.tx.subscribe()
    }

    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    async fn run(self, pool: PgPool, start: Option<Position>, shutdown: CancellationToken) {
        let mut position = if let Some(p) = start {
            p
        } else {
            loop {
                match store::events::head(&pool).await {
                    Ok(p) => break p,
                    Err(e) => {
                        tracing::warn!(error = %e, "event hub cannot read the log yet");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(IDLE_RECHECK) => {}
                        }
                    }
                }
            }
        };
        let mut listener: Option<PgListener> = None;
        let mut recheck = IDLE_RECHECK;
        while !shutdown.is_cancelled() {
            if listener.is_none() {
                listener = connect(&pool)
                    .await
                    .map_err(|e| {
                        tracing::warn!(error = %e, "event LISTEN connection failed; retrying");
                    })
                    .ok();
            }
            match self.publish_new(&pool, &mut position).await {
                Ok(held_back) => {
                    recheck = if held_back {
                        // Double up to the idle interval while a transaction holds events back.
                        if recheck >= IDLE_RECHECK {
                            HELD_BACK_RECHECK
                        } else {
                            (recheck * 2).min(IDLE_RECHECK)
                        }
                    } else {
                        IDLE_RECHECK
                    };
                }
                Err(e) => {
                    tracing::warn!(error = %e, "event hub cannot read the log; retrying");
                    recheck = IDLE_RECHECK;
                }
            }
            let notified = async {
                match listener.as_mut() {
                    Some(l) => l.try_recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(recheck) => {}
                received = notified => {
                    // Ok(None): the connection dropped and reconnects on the next call; the log
                    // read above covers anything notified meanwhile. Err: build a new listener.
                    if received.is_err() {
                        listener = None;
                    }
                }
            }
        }
    }

    /// Broadcasts every final event after `position`; returns whether committed events remain
    /// after it (held back behind a running transaction, or final since the page was read).
    async fn publish_new(&self, pool: &PgPool, position: &mut Position) -> sqlx::Result<bool> {
        if self.tx.receiver_count() == 0 {
            // Nobody in this process listens: skip to the end of the log instead of reading and
            // framing every event. The end is read before the second look, so a session that
            // subscribes after that look reads its own start at or after it (positions of
            // final events only grow) and is handed everything after its start.
            let head = store::events::head(pool).await?;
            if self.tx.receiver_count() == 0 {
                *position = (*position).max(head);
                return store::events::any_after(pool, *position).await;
            }
        }
        loop {
            let page = store::events::page_after(pool, *position, PAGE).await?;
            let full = page.len() as i64 == PAGE;
            for row in page {
                *position = row.position();
                let (id, job_id, owner) = (row.id, row.job_id, row.owner.clone());
                let (Some(kind), Some(status)) =
                    (JobKind::parse(&row.kind), JobStatus::parse(&row.status))
                else {
                    continue;
                };
                let Some(frame) = frame(row) else {
                    continue;
                };
                // No receivers is fine: nobody is watching.
                let _ = self.tx.send(Arc::new(Published {
                    position: *position,
                    id,
                    job_id,
                    kind,
                    status,
                    owner,
                    frame,
                }));
            }
            if !full {
                // Asked after the page: an event that became final in between is seen here too.
                return store::events::any_after(pool, *position).await;
            }
        }
    }
}

async fn connect(pool: &PgPool) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
