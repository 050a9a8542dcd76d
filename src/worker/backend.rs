//! jobq's apalis backend: apalis-postgres' queue tables and SQL (`apalis_postgres::queries`),
//! driven by apalis-core's `Persisted` state machine, with what apalis-postgres' own
//! `PostgresStorage` does not do:
//!
//! - **No lost wake-ups.** An empty fetch waits for the next NOTIFY of its queue (or the backstop
//!   poll) *inside* the fetch, having noted the notification generation before querying, so an
//!   entry committed while a fetch was in flight is always fetched next. (With a wake-up stream
//!   beside the backend, a notification consumed during an in-flight fetch was lost.) A fetch
//!   that takes fewer entries than it asked for took every due one: the next look waits the
//!   same way, until the next due time the fetch itself returned, instead of asking again at
//!   once and finding nothing (one statement per wake-up instead of three).
//! - **No stalled worker.** apalis-core's `Persisted` arms its heartbeat timer only while idle
//!   between fetches; a timer that fires during a fetch is consumed, and a worker that then parks
//!   after an empty fetch was never woken again. While parked, this backend keeps two wake-ups
//!   registered: the queue's notifications and a tick at half the heartbeat interval.
//! - **Group commits.** A fetch takes (deletes) up to a batch of due entries (our own statement:
//!   the same selection as apalis' `get_jobs`, planned for the query at hand) and starts their
//!   attempts in the same statement (status rows `running`, `started` events); outcomes are
//!   recorded in batches by the finisher (`batch.rs`). With no entry left to mark, apalis'
//!   acknowledgements have nothing to do. Never more is fetched than the kind has free slots.
//! - **Rescues from the status rows.** An attempt whose worker stopped beating (or that its live
//!   worker does not hold) gets a new entry ([`lifecycle::rescue_lost`]) where apalis-postgres
//!   would set its `Running` entry back to `Pending`.
//! - **Postgres outages do not kill the worker.** Fetches and heartbeats that cannot reach the
//!   database wait and try again instead of ending the worker's stream (apalis-postgres marks the
//!   backend dead, the worker stops and its running jobs are dropped).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apalis_codec::json::JsonCodec;
use apalis_core::backend::finalize::Durable;
use apalis_core::backend::persistence::{
    Persisted, Persistence, State, TaskEvent, TaskPersistLayer,
};
use apalis_core::backend::{Backend, BackendConfig, WireFormatBackend};
use apalis_core::task::Task;
use apalis_core::worker::context::WorkerContext;
use apalis_postgres::{Config, Error, queries};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use ulid::Ulid;

use crate::db::KeptConnections;
use crate::domain::JobKind;
use crate::lifecycle;
use crate::metrics;
use crate::store;
use crate::store::queue::AttemptArgs;
use crate::worker::batch::Started;
use crate::worker::controls::QueueControls;

type Entry = Task<Vec<u8>>;

fn store_error(lifecycle::StoreError::Db(e): lifecycle::StoreError) -> Error {
    Error::Database(e)
}

fn unavailable(e: &Error) -> bool {
    matches!(e, Error::Database(db) if store::is_unavailable(db))
}

#[derive(Clone)]
pub struct QueuePersistence {
    pub pool: PgPool,
    pub config: Config,
    pub kind: JobKind,
    pub controls: QueueControls,
    /// Changes whenever an entry may have become available, or the queue's controls changed.
    pub wake: watch::Receiver<u64>,
    pub poll_interval: Duration,
    /// Attempts started at fetch time, and how many this process holds.
    pub started: Started,
    /// Attempts of this kind the worker runs at once.
    pub concurrency: usize,
    /// Set by a fetch that took every due entry; shared by the clones apalis fetches with.
    pub rest: Rest,
    /// The connections the workers' statements run on, kept out of the pool between them.
    pub conns: KeptConnections,
}

/// What one look at the queue found.
struct Fetched {
    tasks: Vec<Entry>,
    /// When to look again at the latest, if sooner than the poll interval: the next token of a
    /// rate-limited kind, or the next entry falling due.
    look_again_in: Option<Duration>,
    /// Fewer entries were due than the fetch could take: the queue holds nothing more to take
    /// now, until a notification or `look_again_in`.
    drained: bool,
}

/// Whether the last fetch took every due entry, so that the next look at the queue waits for a
/// notification (or the next due time, or the poll) instead of asking again at once: after a
/// wake-up, one fetch instead of a second one that finds nothing (and its due-time query), both
/// competing for the CPU with the jobs just taken.
#[derive(Clone, Default)]
pub struct Rest(Arc<Mutex<Option<Drained>>>);

#[derive(Clone, Copy)]
struct Drained {
    /// The notification generation noted before that fetch.
    generation: u64,
    look_again_at: Option<Instant>,
}

impl Rest {
    fn set(&self, drained: Option<Drained>) {
        if let Ok(mut rest) = self.0.lock() {
            *rest = drained;
        }
    }

    /// The rest to take before fetching again, if the queue was drained and no notification
    /// came since (taken: asked once).
    fn take_unless_notified(&self, generation: u64) -> Option<Drained> {
        let drained = self.0.lock().ok()?.take()?;
        (drained.generation == generation).then_some(drained)
    }
}

impl QueuePersistence {
    /// Fetches what is due, no more than the kind's rate limit allows right now.
    async fn fetch_once(&self, worker: &WorkerContext) -> Result<Fetched, Error> {
        let control = self.controls.get(self.kind);
        // Controls not loaded yet (the process just started): a rate limit may apply, so ask the
        // database for tokens (none needed if the kind has no limit). A pause is also checked
        // by the fetch statement itself.
        let rate_limited = control.is_none_or(|c| c.rate_limited);
        if control.is_some_and(|c| c.paused) {
            return Ok(Fetched {
                tasks: Vec::new(),
                look_again_in: None,
                drained: false,
            });
        }
        // On a kept connection, on which the fetch statement is planned already.
        self.conns
            .run(async |conn| self.fetch_on(conn, worker, rate_limited).await)
            .await
    }

    async fn fetch_on(
        &self,
        conn: &mut PgConnection,
        worker: &WorkerContext,
        rate_limited: bool,
    ) -> Result<Fetched, Error> {
        // Never fetch more than there are free slots: a fetched entry is started at once, and one
        // waiting here for a slot would be `running` without running, out of reach of idle workers.
        let free = self
            .concurrency
            .saturating_sub(self.started.held(self.kind))
            .max(1);
        let batch = self.config.batch_size.min(free) as i32;
        let allowed = if rate_limited {
            match store::queues::take_tokens(&mut *conn, self.kind.as_str(), batch).await? {
                Some(t) if t.taken == 0 => {
                    let wait = ((1.0 - t.left) / t.rate).max(0.001);
                    return Ok(Fetched {
                        tasks: Vec::new(),
                        look_again_in: Some(Duration::from_secs_f64(wait)),
                        drained: false,
                    });
                }
                Some(t) => t.taken,
                None => batch,
            }
        } else {
            batch
        };
        // The attempts start in the fetching statement: one commit for the batch.
        let allowed = allowed.max(1);
        let taken =
            store::queue::fetch_and_start(&mut *conn, self.kind, worker.name(), allowed).await?;
        let fetched = taken.entries.len();
        let queue = self.config.queue.as_ref();
        let mut tasks = Vec::with_capacity(fetched);
        let mut held = Vec::with_capacity(fetched);
        let mut started = Vec::with_capacity(fetched);
        for (entry, row) in taken.entries {
            // The fetch has committed: one unreadable entry must not strand the others.
            let task_id = entry.task_id.clone();
            match entry_task(entry, queue, worker.name()) {
                Ok(task) => {
                    tasks.push(task);
                    held.push(task_id);
                    started.extend(row);
                }
                Err(e) => tracing::error!(
                    worker = worker.name(),
                    task_id,
                    error = %e,
                    "queue entry with an unreadable id skipped (a job it started is rescued)"
                ),
            }
        }
        self.started.hold(self.kind, held);
        self.started.insert(started);
        metrics::queue_fetched(self.kind, fetched);
        if rate_limited && (tasks.len() as i32) < allowed {
            store::queues::refund_tokens(
                &mut *conn,
                self.kind.as_str(),
                allowed - tasks.len() as i32,
            )
            .await?;
        }
        let look_again_in = taken.next_due.map(|at| {
            (at - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(1)
        });
        Ok(Fetched {
            tasks,
            look_again_in,
            drained: (fetched as i64) < i64::from(allowed),
        })
    }

    async fn beat(&self, worker: &WorkerContext) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        let queue = self.config.queue.as_ref();
        queries::keep_alive(&mut *tx, queue, worker).await?;
        self.rescue(&mut tx, worker).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Rescues the attempts of this kind nobody runs: those of workers that stopped beating,
    /// and those running on this live worker that it does not hold (a fetch that committed but
    /// whose answer never arrived; an outcome it could not record).
    async fn rescue(&self, conn: &mut PgConnection, worker: &WorkerContext) -> Result<(), Error> {
        let rescued = lifecycle::rescue_lost(
            conn,
            self.kind,
            worker.name(),
            &self.started.held_ids(self.kind),
            self.config.orphaned_duration(),
        )
        .await
        .map_err(store_error)?;
        if !rescued.is_empty() {
            tracing::warn!(worker = worker.name(), jobs = ?rescued, "attempts nobody runs queued again for a rescue");
        }
        Ok(())
    }
}

/// An entry fetched by [`store::queue::fetch_and_start`] as the task apalis' worker expects (what
/// apalis-postgres builds from a row of `apalis.get_jobs`).
fn entry_task(f: store::queue::Fetched, queue: &str, worker: &str) -> Result<Entry, Error> {
    let id = Ulid::from_string(&f.task_id).map_err(|e| {
        Error::TaskIdError(apalis_core::task::task_id::TaskIdError::Decode(
            e.to_string(),
        ))
    })?;
    Ok(apalis_core::task::builder::TaskBuilder::new(f.job)
        .task_id(apalis_core::task::task_id::TaskId::from_ulid(id))
        .queue(queue.to_owned().into())
        .status(apalis_core::task::status::Status::Running)
        .attempt(usize::try_from(f.attempts).unwrap_or(0))
        .max_attempts(usize::try_from(f.max_attempts).unwrap_or(25))
        .run_at_timestamp(u64::try_from(f.run_at.timestamp()).unwrap_or(0))
        .lock_by(Some(worker.to_owned()))
        .priority(usize::try_from(f.priority).unwrap_or(0))
        .build())
}

impl Persistence for QueuePersistence {
    type Compact = Vec<u8>;
    type Response = Value;
    type Error = Error;

    async fn register(&mut self, worker: &WorkerContext) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        let queue = self.config.queue.as_ref();
        store::queue::register_worker(&mut tx, worker.name(), queue, worker.get_service()).await?;
        self.rescue(&mut tx, worker).await?;
        tx.commit().await?;
        tracing::debug!(worker = worker.name(), "worker registered");
        Ok(())
    }

    async fn heartbeat(&mut self, worker: &WorkerContext) -> Result<(), Error> {
        match self.beat(worker).await {
            Err(e) if unavailable(&e) => {
                tracing::warn!(worker = worker.name(), error = %e, "heartbeat skipped: database unavailable");
                Ok(())
            }
            other => other,
        }
    }

    async fn fetch_next(&mut self, worker: &WorkerContext) -> Result<Vec<Entry>, Error> {
        // Return empty-handed now and then so that apalis runs heartbeats and acks.
        let until = Instant::now() + self.config.heartbeat_interval / 2;
        loop {
            // Notifications from here on mean "look again", even if they arrive mid-query.
            let generation = *self.wake.borrow_and_update();
            if worker.is_shutting_down() {
                // Take nothing more (a job released by the shutdown must not be taken back).
                return Ok(Vec::new());
            }
            let look_again_in = match self.rest.take_unless_notified(generation) {
                // The last fetch took every due entry and nothing was notified since.
                Some(drained) => drained
                    .look_again_at
                    .map(|at| at.saturating_duration_since(Instant::now())),
                None => match self.fetch_once(worker).await {
                    Ok(f) if !f.tasks.is_empty() => {
                        self.rest.set(f.drained.then(|| Drained {
                            generation,
                            look_again_at: f.look_again_in.map(|d| Instant::now() + d),
                        }));
                        return Ok(f.tasks);
                    }
                    Ok(f) => f.look_again_in,
                    Err(e) if unavailable(&e) => {
                        tracing::warn!(worker = worker.name(), error = %e, "fetch failed: database unavailable");
                        None
                    }
                    Err(e) => return Err(e),
                },
            };
            let now = Instant::now();
            if now >= until || worker.is_shutting_down() {
                return Ok(Vec::new());
            }
            let nap = self
                .poll_interval
                .min(until - now)
                .min(look_again_in.unwrap_or(Duration::MAX));
            tokio::select! {
                changed = self.wake.changed() => {
                    if changed.is_err() {
                        // The notifier is gone (shutdown): fall back to the poll interval.
                        tokio::time::sleep(nap).await;
                    }
                }
                _ = tokio::time::sleep(nap) => {}
                // A shutdown ends the nap: `poll_close` finishes this fetch before the worker
                // stops, and would otherwise wait out the nap (up to half a heartbeat, or the
                // whole shutdown grace). apalis' `stop` wakes the worker's task, which polls this
                // future again and finds the worker stopping.
                _ = std::future::poll_fn(|_| {
                    if worker.is_shutting_down() {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                }) => {}
            }
        }
    }

    async fn reenqueue_abandoned(
        &mut self,
        tasks: Vec<Entry>,
        worker: &WorkerContext,
    ) -> Result<u64, Error> {
        // Attempts the fetch started go back to the queue as they were. A rescue taken but not
        // begun stays `running` on its lost worker and is rescued again.
        let ids: Vec<String> = tasks
            .iter()
            .filter_map(|t| t.task_id().map(|id| id.to_string()))
            .filter(|id| self.started.take(id).is_some())
            .collect();
        let mut tx = self.pool.begin().await?;
        let given_back = lifecycle::unstart_many(&mut tx, self.kind, &ids, worker.name())
            .await
            .map_err(store_error)?;
        tx.commit().await?;
        for task in &tasks {
            if let Some(id) = task.task_id() {
                self.started.release(self.kind, &id.to_string());
            }
        }
        Ok(given_back as u64)
    }

    async fn handle_events(
        &mut self,
        _events: Vec<TaskEvent<Value>>,
        _worker: &WorkerContext,
    ) -> Result<(), Error> {
        // The entry of an attempt was deleted when it was taken, and its outcome is on the
        // status row: apalis' acknowledgement (`Done`/`Failed` on the entry) has nothing to mark.
        Ok(())
    }

    async fn push_tasks(&mut self, tasks: Vec<Entry>) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        queries::push_tasks(&mut *tx, self.config.queue.as_ref(), tasks).await?;
        tx.commit().await?;
        Ok(())
    }
}

type Wakeup = Pin<Box<dyn Future<Output = Option<watch::Receiver<u64>>> + Send + Sync>>;

/// The backend of one jobq worker (one queue).
pub struct QueueBackend {
    persistence: Persisted<QueuePersistence>,
    codec: JsonCodec,
    /// Wake-ups while parked (see the module doc); `None` once the notifier is gone.
    notified: Option<watch::Receiver<u64>>,
    next_notification: Option<Wakeup>,
    tick: tokio::time::Interval,
}

impl QueueBackend {
    /// The backend of `queue.kind`'s queue (`queue.config.queue`); `queue.wake` changes
    /// whenever an entry may have become available there, or its controls changed.
    pub fn new(queue: QueuePersistence) -> Self {
        let mut tick = tokio::time::interval(queue.config.heartbeat_interval / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            notified: Some(queue.wake.clone()),
            next_notification: None,
            tick,
            persistence: Persisted::new(queue),
            codec: JsonCodec::default(),
        }
    }

    /// Makes sure a parked worker is polled again: on the queue's next notification, and at
    /// the latest after half a heartbeat interval.
    fn keep_awake(&mut self, cx: &mut Context<'_>) {
        if let Some(notified) = &self.notified {
            let next = self.next_notification.get_or_insert_with(|| {
                let mut rx = notified.clone();
                Box::pin(async move { rx.changed().await.ok().map(|()| rx) })
            });
            if let Poll::Ready(seen) = next.as_mut().poll(cx) {
                // Carry on from the notification just seen: a fresh clone of an older receiver
                // would report it again at once, and the worker would spin.
                self.notified = seen;
                self.next_notification = None;
                cx.waker().wake_by_ref();
            }
        }
        while self.tick.poll_tick(cx).is_ready() {}
    }
}

impl Backend for QueueBackend {
    type Task = Entry;
    type Error = Error;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Error>> {
        let interval = self.persistence.config.heartbeat_interval;
        self.persistence.poll_ready(cx, worker, interval)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Entry, Error>>> {
        let next = self.persistence.poll_next(cx, worker);
        if next.is_pending() {
            self.keep_awake(cx);
        }
        next
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Error>> {
        // apalis-core's `poll_close` drops a fetch in flight. Ours starts the attempts it takes:
        // finish it, so that what it took is given back (`reenqueue_abandoned`) rather than left
        // `running` until a rescue.
        let state = self.persistence.state_mut();
        if let State::Fetch(fetch) = state {
            *state = match fetch.poll_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(tasks)) if !tasks.is_empty() => State::Buffered(tasks.into()),
                Poll::Ready(_) => State::Ready,
            };
        }
        self.persistence.poll_close(cx, worker)
    }
}

impl BackendConfig for QueueBackend {
    type Args = AttemptArgs;
    type Kind = Durable;
    type Id = Ulid;
    type Config = Config;
    type Layer = TaskPersistLayer<JsonCodec<Value>, Value>;

    fn config(&self) -> &Config {
        &self.persistence.config
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        let config = self.persistence.config.clone();
        self.persistence
            .layer(JsonCodec::<Value>::default(), config.batch_size)
            .persist_results(config.persist_results)
            .lock_tasks(config.lock_tasks)
    }
}

impl WireFormatBackend for QueueBackend {
    type Codec = JsonCodec;
    type Compact = Vec<u8>;

    fn codec(&self) -> &JsonCodec {
        &self.codec
    }
}
