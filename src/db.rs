//! Connecting to Postgres (creating the database if missing) and applying migrations.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::migrate::MigrateDatabase;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres};

use crate::config::DbConfig;

/// jobq's own migrations (schema `jobq`), embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connects, creating the database first if it does not exist. Keeps trying for
/// `db_connect_timeout` so that jobq may start before Postgres does.
pub async fn connect(cfg: &DbConfig) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = cfg
        .database_url
        .parse()
        .context("DATABASE_URL is not a valid Postgres URL")?;
    let deadline = Instant::now() + cfg.db_connect_timeout;
    let mut wait = Duration::from_millis(200);
    loop {
        match try_connect(cfg, &options).await {
            Ok(pool) => return Ok(pool),
            Err(e) if Instant::now() + wait < deadline => {
                tracing::warn!(error = %format!("{e:#}"), "Postgres not reachable yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

async fn try_connect(cfg: &DbConfig, options: &PgConnectOptions) -> anyhow::Result<PgPool> {
    if !Postgres::database_exists(&cfg.database_url)
        .await
        .context("cannot reach Postgres")?
    {
        let name = options.get_database().unwrap_or("?");
        match Postgres::create_database(&cfg.database_url).await {
            Ok(()) => tracing::info!(database = name, "created the database"),
            // Another process created it in the meantime.
            Err(e)
                if Postgres::database_exists(&cfg.database_url)
                    .await
                    .unwrap_or(false) =>
            {
                tracing::debug!(error = %e, "database appeared concurrently");
            }
            Err(e) => return Err(e).context("cannot create the database"),
        }
    }
    pool(cfg, options.clone()).await
}

/// A pool on an existing database.
pub async fn pool(cfg: &DbConfig, options: PgConnectOptions) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(cfg.db_max_connections)
        .acquire_timeout(cfg.db_acquire_timeout)
        .connect_with(options)
        .await
        .context("cannot connect to Postgres")
}

/// Applies apalis-postgres' migrations (schema `apalis`), then jobq's own, which adjust the queue
/// table's trigger and so need it to exist. Both are idempotent and serialised by sqlx's migration
/// lock, so concurrent starts are safe.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    apalis_postgres::PostgresStorage::setup(pool)
        .await
        .context("applying apalis-postgres migrations")?;
    MIGRATOR
        .run(pool)
        .await
        .context("applying jobq migrations")?;
    Ok(())
}

/// A few connections kept out of the pool for one hot path (a worker's fetches, its outcome
/// batches) and reused last in, first out.
///
/// sqlx's pool hands out its idle connections first in, first out, and pings each on the way
/// out and again on the way back. A worker's statement thus met a different connection nearly
/// every time (16 by default), on whose backend it had not run yet: Postgres plans a prepared
/// statement afresh for its first five executions on a connection before it keeps a generic plan
/// (0.3-0.4 ms of a 3-job fetch), and compiles each PL/pgSQL trigger function once per backend;
/// each use also paid two extra round trips. A kept connection has done all that already.
///
/// A kept connection idle for [`CHECKED_AFTER_IDLE`] is pinged before reuse, as the pool does
/// with each of its own (Postgres may have ended it meanwhile: a restart, a failover). It goes
/// back to the pool (which tests it) instead of being kept when its use failed ([`Kept`] not
/// [`Kept::keep`]-ed), when it has been kept for [`KEPT_FOR_AT_MOST`] (the pool's own lifetime
/// limit then applies again), and at shutdown (`closing`): the pool's `close` waits for every
/// connection.
#[derive(Clone)]
pub struct KeptConnections {
    inner: std::sync::Arc<KeptInner>,
}

struct KeptInner {
    pool: PgPool,
    /// Idle kept connections, the most recently used last.
    idle: std::sync::Mutex<Vec<Idle>>,
    most: usize,
    closing: tokio_util::sync::CancellationToken,
}

struct Idle {
    conn: PoolConnection<Postgres>,
    /// When it was taken from the pool.
    since: Instant,
    /// When its last use ended.
    used: Instant,
}

/// How long a connection may stay out of the pool.
pub const KEPT_FOR_AT_MOST: Duration = Duration::from_secs(600);
/// A kept connection idle for this long is pinged before it is used again.
pub const CHECKED_AFTER_IDLE: Duration = Duration::from_secs(1);

impl KeptConnections {
    /// Keeps up to `most` idle connections of `pool` until `closing` is cancelled.
    pub fn new(pool: PgPool, most: usize, closing: tokio_util::sync::CancellationToken) -> Self {
        let inner = std::sync::Arc::new(KeptInner {
            pool,
            idle: std::sync::Mutex::new(Vec::new()),
            most,
            closing: closing.clone(),
        });
        let weak = std::sync::Arc::downgrade(&inner);
        tokio::spawn(async move {
            closing.cancelled().await;
            if let Some(inner) = weak.upgrade() {
                inner.release_all();
            }
        });
        Self { inner }
    }

    /// The most recently used kept connection, or one from the pool.
    pub async fn acquire(&self) -> sqlx::Result<Kept> {
        loop {
            let reused = self.inner.idle.lock().ok().and_then(|mut idle| idle.pop());
            let Some(mut idle) = reused else {
                return Ok(Kept {
                    conn: self.inner.pool.acquire().await?,
                    since: Instant::now(),
                    home: self.inner.clone(),
                });
            };
            if idle.used.elapsed() >= CHECKED_AFTER_IDLE
                && sqlx::Connection::ping(&mut *idle.conn).await.is_err()
            {
                // Ended meanwhile: back to the pool, which closes it.
                continue;
            }
            return Ok(Kept {
                conn: idle.conn,
                since: idle.since,
                home: self.inner.clone(),
            });
        }
    }

    /// Runs `work` on a kept connection (see [`Self::acquire`]) and keeps the connection for
    /// the next use if `work` succeeded; after an error it goes back to the pool.
    pub async fn run<T, E: From<sqlx::Error>>(
        &self,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.acquire().await?;
        let done = work(&mut conn).await;
        if done.is_ok() {
            conn.keep();
        }
        done
    }

    /// Idle connections kept right now.
    pub fn idle(&self) -> usize {
        self.inner.idle.lock().map_or(0, |idle| idle.len())
    }
}

impl KeptInner {
    fn release_all(&self) {
        let released = self
            .idle
            .lock()
            .map(|mut idle| std::mem::take(&mut *idle))
            .unwrap_or_default();
        drop(released);
    }
}

/// A connection from [`KeptConnections`]. Dropped, it goes back to the pool; [`Kept::keep`]
/// keeps it for the next use.
pub struct Kept {
    conn: PoolConnection<Postgres>,
    since: Instant,
    home: std::sync::Arc<KeptInner>,
}

impl Kept {
    /// Keeps the connection for the next use (call it only after a use without error).
    pub fn keep(self) {
        let Self { conn, since, home } = self;
        if since.elapsed() >= KEPT_FOR_AT_MOST {
            return;
        }
        // Checked under the lock: `release_all` runs after `closing` is cancelled and takes the
        // lock, so a connection is either seen by it or not kept at all.
        if let Ok(mut idle) = home.idle.lock()
            && !home.closing.is_cancelled()
            && idle.len() < home.most
        {
            idle.push(Idle {
                conn,
                since,
                used: Instant::now(),
            });
        }
    }
}

impl std::ops::Deref for Kept {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Kept {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}
