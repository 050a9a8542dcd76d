//! Connecting to Postgres (creating the database if missing) and applying migrations.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

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
