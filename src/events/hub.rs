//! The per-process reader of the event log and its in-memory fan-out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::{JobKind, JobStatus};
use crate::events::{Position, frame};
use crate::store;
use crate::store::events::EventRow;

const CHANNEL: &str = "jobq_events";
const PAGE: i64 = 256;
/// Events the broadcast keeps for sessions that fall behind; past that a session lags and
/// catches up from the log instead. Entries are shared, so this is one copy for all sessions.
const BACKLOG: usize = 4096;
/// How often to look again while committed events wait behind a running transaction.
const HELD_BACK_RECHECK: Duration = Duration::from_millis(5);
/// Backstop read when no notification comes (notifications are lost while reconnecting, and
/// not sent for a moment after the hub starts following the log).
const IDLE_RECHECK: Duration = Duration::from_secs(1);
/// How often a hub that follows the log refreshes its registration (which counts for a minute,
/// see `store::events::follow`): event inserts notify only while some hub is registered.
const FOLLOW_REFRESH: Duration = Duration::from_secs(20);

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
    /// Whether the hub stopped following the log because nobody listened. Changed together
    /// with the receiver count under this lock (see [`EventHub::subscribe`]).
    detached: Arc<Mutex<bool>>,
    /// Subscribers that found the hub detached wait here until it follows the log again.
    resync: mpsc::UnboundedSender<oneshot::Sender<()>>,
    /// Reads of the log by the hub (statements), for tests and metrics.
    reads: Arc<AtomicU64>,
    /// This hub's registration as a follower of the log.
    process: Uuid,
}

impl EventHub {
    /// Starts reading the log from its current end; runs until `shutdown`. The end is read
    /// before this returns, so that everything a subscriber may see after it is published:
    /// a session "from now" starts at the end it reads itself, never before the hub's.
    pub async fn start(pool: PgPool, shutdown: CancellationToken) -> Self {
        let (tx, _) = broadcast::channel(BACKLOG);
        let (resync, requests) = mpsc::unbounded_channel();
        let hub = Self {
            tx,
            detached: Arc::default(),
            resync,
            reads: Arc::default(),
            process: Uuid::now_v7(),
        };
        let start = store::events::head(&pool).await.ok();
        tokio::spawn(hub.clone().run(pool, start, requests, shutdown));
        hub
    }

    /// Events published from now on. Subscribe *before* reading anything from the log (a
    /// replay, a job row), then skip what that read already covered (by position): nothing is
    /// missed at the seam, because every event after the log's end as the caller reads it
    /// afterwards will be published (events at or before it may be too, and are skipped).
    ///
    /// While nobody listens the hub does not read the log at all (each enqueue and each batch
    /// of finished jobs notifies; the two reads after each were two of every three statements
    /// of an API process taking single enqueues one at a time). A subscriber that finds it
    /// detached waits until the hub has caught up with the log's end, which it reads *after*
    /// this subscriber was counted, so the caller's own later read of the end is at or after
    /// the hub's position.
    pub async fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        let (live, detached) = {
            let detached = self.detached.lock().unwrap_or_else(PoisonError::into_inner);
            (self.tx.subscribe(), *detached)
        };
        if detached {
            let (done, caught_up) = oneshot::channel();
            if self.resync.send(done).is_ok() {
                // Err: the hub stopped (shutdown); the session ends with it.
                let _ = caught_up.await;
            }
        }
        live
    }

    /// How many statements the hub has run against the log.
    pub fn log_reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    async fn run(
        self,
        pool: PgPool,
        start: Option<Position>,
        mut requests: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
        shutdown: CancellationToken,
    ) {
        let mut position = if let Some(p) = start {
            p
        } else {
            loop {
                match self.head(&pool).await {
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
        // When this hub last wrote its registration as a follower; `None`: not registered.
        let mut registered: Option<Instant> = None;
        while !shutdown.is_cancelled() {
            if listener.is_none() {
                listener = connect(&pool)
                    .await
                    .map_err(|e| {
                        tracing::warn!(error = %e, "event LISTEN connection failed; retrying");
                    })
                    .ok();
            }
            let detached = self.detach_if_unwatched();
            self.keep_registration(&pool, !detached, &mut registered)
                .await;
            if !detached {
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
            }
            let notified = async {
                match listener.as_mut() {
                    Some(l) => l.try_recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                // Detached, only a subscriber wakes the hub (notifications are drained below).
                _ = tokio::time::sleep(recheck), if !detached => {}
                request = requests.recv() => match request {
                    Some(first) => {
                        self.catch_up(&pool, &mut position, &mut registered, first, &mut requests)
                            .await;
                    }
                    None => break,
                },
                received = notified => {
                    // Ok(None): the connection dropped and reconnects on the next call; the log
                    // read above covers anything notified meanwhile. Err: build a new listener.
                    if received.is_err() {
                        listener = None;
                    }
                }
            }
        }
        if registered.is_some() {
            // Best effort: a registration left behind stops counting after a minute.
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                store::events::unfollow(&pool, self.process),
            )
            .await;
        }
    }

    /// Registers this hub as a follower of the log while it follows it (refreshed every
    /// `FOLLOW_REFRESH`), and deletes the registration once it stops. A failure is retried on
    /// the next turn; meanwhile the backstop read finds new events, a second later at most.
    async fn keep_registration(
        &self,
        pool: &PgPool,
        following: bool,
        registered: &mut Option<Instant>,
    ) {
        match (following, *registered) {
            (true, Some(at)) if at.elapsed() < FOLLOW_REFRESH => {}
            (true, _) => match store::events::follow(pool, self.process).await {
                Ok(()) => *registered = Some(Instant::now()),
                Err(e) => tracing::warn!(error = %e, "event hub cannot register as a follower"),
            },
            (false, Some(_)) => match store::events::unfollow(pool, self.process).await {
                Ok(()) => *registered = None,
                Err(e) => tracing::warn!(error = %e, "event hub cannot end its registration"),
            },
            (false, None) => {}
        }
    }

    /// Stops following the log if nobody listens; returns whether the hub is detached.
    fn detach_if_unwatched(&self) -> bool {
        let mut detached = self.detached.lock().unwrap_or_else(PoisonError::into_inner);
        if self.tx.receiver_count() == 0 {
            *detached = true;
        }
        *detached
    }

    /// Answers subscribers waiting for the hub to follow the log again. If it is detached, it
    /// skips to the log's end first, read now, after those subscribers were counted: events up
    /// to there are final, so none of them is news to a subscriber that reads its own start
    /// afterwards. If the end cannot be read, the hub follows on from where it stopped (slower
    /// while it catches up, never missing anything).
    async fn catch_up(
        &self,
        pool: &PgPool,
        position: &mut Position,
        registered: &mut Option<Instant>,
        first: oneshot::Sender<()>,
        requests: &mut mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    ) {
        let detached = *self.detached.lock().unwrap_or_else(PoisonError::into_inner);
        if detached {
            // Registered (written now) before the end is read: events committed after that end
            // are notified, but for statements that ran before the registration committed,
            // which the backstop read finds.
            *registered = None;
            self.keep_registration(pool, true, registered).await;
            match self.head(pool).await {
                Ok(head) => *position = (*position).max(head),
                Err(e) => tracing::warn!(error = %e, "event hub cannot read the log's end"),
            }
            *self.detached.lock().unwrap_or_else(PoisonError::into_inner) = false;
        }
        let _ = first.send(());
        while let Ok(waiting) = requests.try_recv() {
            let _ = waiting.send(());
        }
    }

    // Every read of the log goes through these three, which count it.

    async fn head(&self, pool: &PgPool) -> sqlx::Result<Position> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        store::events::head(pool).await
    }

    async fn page_after(&self, pool: &PgPool, position: Position) -> sqlx::Result<Vec<EventRow>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        store::events::page_after(pool, position, PAGE).await
    }

    async fn any_after(&self, pool: &PgPool, position: Position) -> sqlx::Result<bool> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        store::events::any_after(pool, position).await
    }

    /// Broadcasts every final event after `position`; returns whether committed events remain
    /// after it (held back behind a running transaction, or final since the page was read).
    async fn publish_new(&self, pool: &PgPool, position: &mut Position) -> sqlx::Result<bool> {
        loop {
            let page = self.page_after(pool, *position).await?;
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
                return self.any_after(pool, *position).await;
            }
        }
    }
}

async fn connect(pool: &PgPool) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
