//! The baseline: bare apalis + apalis-postgres in this process, in a database of its own
//! (`PostgresStorage::setup`), with NOTIFY pickup (`with_pubsub`), the payload jobq gets, and the
//! batch size and concurrency of the jobq run it is compared with.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use apalis::layers::WorkerBuilderExt as _;
use apalis::prelude::{BoxDynError, Data, TaskBuilder, TaskSink as _, WorkerBuilder, WorkerError};
use apalis_postgres::{Config, PgTask, PostgresStorage};
use chrono::{DateTime, Utc};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use ulid::Ulid;

use crate::pg::Pg;

/// The queue of every baseline run (apalis' default name would be the Rust type name).
pub const QUEUE: &str = "hash";
pub const EMAIL_QUEUE: &str = "email";
/// Pool size of the baseline: jobq's default `--db-max-connections`.
pub const POOL: u32 = 16;

/// The hash payload, as jobq gets it (`{"data": "x"}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HashArgs {
    pub data: String,
}

/// A hash payload with a sequence number, to find its handler's timestamp.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeqArgs {
    pub data: String,
    pub seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmailArgs {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// The apalis database of one baseline run.
pub struct ApalisDb {
    pub name: String,
    pub pool: PgPool,
}

impl ApalisDb {
    pub async fn create(pg: &Pg, label: &str) -> anyhow::Result<Self> {
        let name = pg.create_db(&format!("apalis_{label}")).await?;
        let pool = pg.pool(&name, POOL).await?;
        PostgresStorage::setup(&pool)
            .await
            .context("apalis-postgres setup")?;
        Ok(Self { name, pool })
    }

    /// A copy of a prepared database (`template` must have no open connections).
    pub async fn copy(pg: &Pg, template: &str, label: &str) -> anyhow::Result<Self> {
        let name = pg.copy_db(template, &format!("apalis_{label}")).await?;
        let pool = pg.pool(&name, POOL).await?;
        Ok(Self { name, pool })
    }

    pub async fn drop(self, pg: &Pg) -> anyhow::Result<()> {
        self.pool.close().await;
        pg.drop_db(&self.name).await
    }

    /// apalis' own storage on this database, queue `queue`, batch size `batch` (None: its
    /// default, 10).
    pub fn storage<A>(&self, queue: &str, batch: Option<usize>) -> PostgresStorage<A> {
        let config = Config::default().queue(queue);
        let config = match batch {
            Some(b) => config.batch_size(b),
            None => config,
        };
        PostgresStorage::new(&self.pool).with_config(config)
    }

    /// Pushes `n` hash tasks with `push_all`, 1000 per call (one INSERT each).
    pub async fn push_backlog(&self, n: usize) -> anyhow::Result<()> {
        let mut storage = self.storage::<HashArgs>(QUEUE, None);
        let mut left = n;
        while left > 0 {
            let take = left.min(1000);
            push_all(&mut storage, take).await?;
            left -= take;
        }
        Ok(())
    }

    /// Pushes `args` in one transaction of our own and returns its start time (`now()`), the
    /// same clock jobq's `created_at` reads.
    pub async fn push_in_tx<A: Serialize>(
        &self,
        queue: &str,
        args: &[A],
    ) -> anyhow::Result<DateTime<Utc>> {
        let mut tasks: Vec<PgTask> = Vec::with_capacity(args.len());
        for a in args {
            tasks.push(TaskBuilder::new(serde_json::to_vec(a)?).build());
        }
        let mut tx = self.pool.begin().await?;
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&mut *tx)
            .await?;
        apalis_postgres::queries::push_tasks(&mut *tx, queue, tasks)
            .await
            .map_err(|e| anyhow!("apalis push_tasks: {e}"))?;
        tx.commit().await?;
        Ok(now)
    }

    /// Done and failed tasks of `queue` pushed after `marker` (primary-key range scan).
    pub async fn counts(&self, queue: &str, marker: &str) -> anyhow::Result<(i64, i64)> {
        sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'Done'),
                    count(*) FILTER (WHERE status IN ('Failed', 'Killed'))
             FROM apalis.jobs WHERE job_type = $1 AND id >= $2",
        )
        .bind(queue)
        .bind(marker)
        .fetch_one(&self.pool)
        .await
        .context("count apalis tasks")
    }

    /// Waits until `n` tasks after `marker` are Done (or `deadline`); `true` if all are.
    pub async fn wait_done(
        &self,
        queue: &str,
        marker: &str,
        n: usize,
        deadline: Instant,
        poll: Duration,
    ) -> anyhow::Result<bool> {
        loop {
            let (done, failed) = self.counts(queue, marker).await?;
            if failed > 0 {
                bail!("{failed} apalis task(s) failed");
            }
            if done as usize >= n {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Done tasks after `marker`: count, first `lock_at`, last `done_at`.
    pub async fn span(&self, queue: &str, marker: &str) -> anyhow::Result<Span> {
        let (done, first_lock, last_done) = sqlx::query_as(
            "SELECT count(*), min(lock_at), max(done_at) FROM apalis.jobs
             WHERE job_type = $1 AND id >= $2 AND status = 'Done'",
        )
        .bind(queue)
        .bind(marker)
        .fetch_one(&self.pool)
        .await
        .context("read apalis task times")?;
        Ok(Span {
            done,
            first_lock,
            last_done,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub done: i64,
    pub first_lock: Option<DateTime<Utc>>,
    pub last_done: Option<DateTime<Utc>>,
}

impl Span {
    pub fn rate(&self) -> Option<f64> {
        let secs = (self.last_done? - self.first_lock?).num_microseconds()? as f64 / 1e6;
        (secs > 0.0).then(|| self.done as f64 / secs)
    }
}

/// A ULID below every task id generated from now on (apalis ids are ULIDs; seeded history
/// uses smaller ids): tasks with `id >= marker` are this run's.
pub fn id_marker() -> String {
    let ms = Utc::now().timestamp_millis().saturating_sub(1).max(0) as u64;
    Ulid::from_parts(ms, 0).to_string()
}

/// A worker running in this process until stopped.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), WorkerError>>,
}

impl Running {
    /// Stops fetching, lets running tasks finish and flushes their acks (bounded).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(Duration::from_secs(20), &mut self.handle).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(anyhow!("apalis worker failed: {e}")),
            Ok(Err(e)) => Err(anyhow!("apalis worker panicked: {e}")),
            Err(_) => {
                self.handle.abort();
                Err(anyhow!("apalis worker did not stop within 20 s"))
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Builds a worker on `backend` (concurrency limit or apalis' default: none) and spawns it.
macro_rules! spawn_worker {
    ($name:expr, $backend:expr, $concurrency:expr, $data:expr, $handler:expr) => {{
        let (stop, stopped) = oneshot::channel::<()>();
        let signal = async move {
            let _ = stopped.await;
            Ok::<(), std::io::Error>(())
        };
        let builder = WorkerBuilder::new($name).backend($backend);
        let handle = match $concurrency {
            Some(c) => {
                let worker = builder.concurrency(c).data($data).build($handler);
                tokio::spawn(worker.run_until(signal))
            }
            None => {
                let worker = builder.data($data).build($handler);
                tokio::spawn(worker.run_until(signal))
            }
        };
        Running {
            stop: Some(stop),
            handle,
        }
    }};
}

/// Counts handled tasks.
pub type Counter = Arc<AtomicU64>;

async fn hash_task(args: HashArgs, done: Data<Counter>) -> Result<String, BoxDynError> {
    let digest = hex::encode(Sha256::digest(args.data.as_bytes()));
    done.fetch_add(1, Ordering::Relaxed);
    Ok(digest)
}

/// The processing baseline: SHA-256 of the payload, the digest as the task's result.
pub fn start_hash_worker(
    db: &ApalisDb,
    batch: Option<usize>,
    concurrency: Option<usize>,
    done: Counter,
) -> Running {
    let backend = db.storage::<HashArgs>(QUEUE, batch).with_pubsub();
    spawn_worker!("bench-worker", backend, concurrency, done, hash_task)
}

/// When each task's handler started, by sequence number.
pub type Arrivals = Arc<Mutex<HashMap<u64, DateTime<Utc>>>>;

async fn seq_task(args: SeqArgs, arrivals: Data<Arrivals>) -> Result<String, BoxDynError> {
    let now = Utc::now();
    arrivals
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(args.seq, now);
    Ok(hex::encode(Sha256::digest(args.data.as_bytes())))
}

/// The pickup baseline: a worker at apalis' defaults that notes when each handler starts.
pub fn start_seq_worker(db: &ApalisDb, arrivals: Arrivals) -> Running {
    let backend = db.storage::<SeqArgs>(QUEUE, None).with_pubsub();
    spawn_worker!("bench-pickup", backend, None::<usize>, arrivals, seq_task)
}

#[derive(Clone)]
pub struct Mailer {
    pub transport: AsyncSmtpTransport<Tokio1Executor>,
    pub sent: Counter,
}

async fn email_task(args: EmailArgs, mailer: Data<Mailer>) -> Result<String, BoxDynError> {
    let message = Message::builder()
        .from("bench <bench@localhost>".parse()?)
        .to(args.to.parse()?)
        .subject(args.subject)
        .body(args.body)?;
    let reply = mailer.transport.send(message).await?;
    mailer.sent.fetch_add(1, Ordering::Relaxed);
    Ok(reply.code().to_string())
}

/// The I/O baseline: apalis at its defaults sending with lettre (as jobq does).
pub fn start_email_worker(db: &ApalisDb, smtp_url: &str, sent: Counter) -> anyhow::Result<Running> {
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
        .context("lettre SMTP URL")?
        .timeout(Some(Duration::from_secs(30)))
        .build();
    let backend = db.storage::<EmailArgs>(EMAIL_QUEUE, None).with_pubsub();
    let mailer = Mailer { transport, sent };
    Ok(spawn_worker!(
        "bench-email",
        backend,
        None::<usize>,
        mailer,
        email_task
    ))
}

/// One `push_all` of `n` hash tasks (one INSERT).
pub async fn push_all(storage: &mut PostgresStorage<HashArgs>, n: usize) -> anyhow::Result<()> {
    let tasks = (0..n).map(|_| {
        TaskBuilder::new(HashArgs {
            data: "x".to_owned(),
        })
        .build()
    });
    storage
        .push_all(futures::stream::iter(tasks))
        .await
        .map_err(|e| anyhow!("apalis push_all: {e}"))
}
