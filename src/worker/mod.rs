//! The workers: one apalis worker per job kind on apalis-postgres, under an apalis Monitor that
//! restarts a worker whose backend failed (e.g. Postgres restarted) and stops them all on shutdown.

mod backend;
mod batch;
mod controls;
mod executor;
mod running;
mod wake;

use std::sync::Arc;
use std::time::Duration;

use apalis::layers::WorkerBuilderExt as _;
use apalis::prelude::{
    BackendExt as _, BoxDynError, Data, Monitor, TaskId, WorkerBuilder, WorkerContext,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;
use crate::db::KeptConnections;
use crate::domain::JobKind;
use crate::jobs::email::Mailer;
use crate::store::queue::AttemptArgs;

use backend::{QueueBackend, QueuePersistence};
use batch::{Finisher, Started};
use controls::QueueControls;
pub use executor::Executor;
use running::RunningJobs;
pub use wake::Notifier;

/// Idle connections the workers keep out of the pool: at light load one serves every fetch and
/// outcome batch, under load the others come and go through the pool.
const KEPT_CONNECTIONS: usize = 2;

/// Runs the workers until `shutdown` is cancelled and running jobs have finished or been
/// released (at most `shutdown_grace`).
pub async fn run(
    pool: PgPool,
    config: &ServeConfig,
    mailer: Arc<Mailer>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let running = RunningJobs::default();
    let controls = QueueControls::default();
    let notifier = Notifier::start(
        pool.clone(),
        running.clone(),
        controls.clone(),
        shutdown.clone(),
    );
    let started = Started::default();
    // The connections the workers' fetches and outcome batches run on, kept out of the pool
    // between uses.
    let conns = KeptConnections::new(pool.clone(), KEPT_CONNECTIONS, shutdown.clone());
    let executor = Arc::new(Executor {
        pool: pool.clone(),
        mailer,
        backoff: config.worker.backoff(),
        progress_interval: config.worker.progress_interval,
        shutdown: shutdown.clone(),
        running,
        started: started.clone(),
        finisher: Finisher::start(conns.clone(), pool.clone(), config.worker.backoff()),
        hash_threads: Arc::new(tokio::sync::Semaphore::new(config.worker.hash_threads())),
    });
    let instance = instance_name();
    tracing::info!(%instance, "workers starting");

    let mut monitor = Monitor::new();
    for kind in JobKind::ALL {
        let w = config.worker.clone();
        let concurrency = match kind {
            JobKind::Email => w.email_concurrency,
            JobKind::LongRunning => w.long_running_concurrency,
            JobKind::Hash => w.hash_concurrency(),
        }
        .max(1);
        let (pool, notifier, executor, instance, controls, started, conns) = (
            pool.clone(),
            notifier.clone(),
            executor.clone(),
            instance.clone(),
            controls.clone(),
            started.clone(),
            conns.clone(),
        );
        monitor = monitor.register(move |restarts| {
            // Never fetch more than can run (the backend also counts the free slots): entries
            // fetched are started at once.
            let batch = (w.fetch_batch_size as usize).min(concurrency);
            let queue = apalis_postgres::Config::default()
                .queue(kind.queue())
                .batch_size(batch)
                .heartbeat_interval(w.heartbeat_interval)
                .missed_heartbeats(w.missed_heartbeats)
                // Fetching already locks an entry to this worker; a second write per job for
                // apalis' own `Running` status would buy nothing.
                .lock_tasks(false);
            let delay = restart_delay(restarts);
            let wake = notifier.subscribe(kind.queue());
            let backend = QueueBackend::new(QueuePersistence {
                pool: pool.clone(),
                config: queue,
                kind,
                controls: controls.clone(),
                wake,
                poll_interval: w.poll_interval,
                started: started.clone(),
                concurrency,
                rest: Default::default(),
                conns: conns.clone(),
            })
            .before_start(move |_| async move {
                tokio::time::sleep(delay).await;
                Ok(())
            });
            // A fresh name per restart: entries held by the failed incarnation are rescued
            // once its heartbeat is stale, instead of being kept alive by the new one.
            WorkerBuilder::new(format!("{kind}-{instance}-{restarts}"))
                .backend(backend)
                .concurrency(concurrency)
                .data(executor.clone())
                .data(kind)
                .build(handle_attempt)
        });
    }
    let signal = shutdown.clone();
    monitor
        .should_restart(move |worker, error| {
            tracing::warn!(worker = worker.name(), %error, "worker stopped; restarting");
            !signal.is_cancelled()
        })
        .shutdown_timeout(config.shutdown_grace)
        .run_with_signal(async move {
            shutdown.cancelled().await;
            Ok(())
        })
        .await?;
    tracing::info!("workers stopped");
    Ok(())
}

/// The apalis handler: one attempt of one job.
async fn handle_attempt(
    args: AttemptArgs,
    task_id: TaskId,
    worker: WorkerContext,
    executor: Data<Arc<Executor>>,
    kind: Data<JobKind>,
) -> Result<(), BoxDynError> {
    let task_id = task_id.to_string();
    let outcome = executor
        .run_attempt(args.job_id, &task_id, worker.name())
        .await;
    executor.started.release(*kind, &task_id);
    outcome.map_err(Into::into)
}

/// Unique per process, so worker names never collide across processes or restarts.
fn instance_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".to_owned());
    let suffix: u32 = rand::random::<u32>() % 0x10000;
    format!("{host}-{}-{suffix:04x}", std::process::id())
}

/// Back-off before a restarted worker touches the database again.
fn restart_delay(restarts: usize) -> Duration {
    if restarts == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(100 << restarts.min(5))
    }
}
