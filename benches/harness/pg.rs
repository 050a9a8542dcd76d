//! The Postgres server: fresh databases per run (created, tracked, dropped), pools, facts about
//! the server for the report.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use url::Url;

use crate::cleanup;

/// Every database of a run is named `jobq_bench_<pid>_<n>_<label>`; leftovers of a run whose
/// process is gone are dropped at the start of the next.
const PREFIX: &str = "jobq_bench_";

pub struct Pg {
    admin_url: Url,
    admin: PgPool,
    counter: AtomicU32,
}

/// Refuses anything but a loopback server: the harness creates and drops databases.
pub fn check_loopback(url: &Url) -> anyhow::Result<()> {
    match url.host_str() {
        Some("127.0.0.1" | "localhost" | "::1" | "[::1]") => Ok(()),
        other => bail!(
            "the bench only runs against a loopback Postgres (127.0.0.1, localhost, ::1), not {other:?}"
        ),
    }
}

impl Pg {
    pub async fn connect(admin_url: &str) -> anyhow::Result<Self> {
        let url = Url::parse(admin_url).with_context(|| format!("bad Postgres URL {admin_url}"))?;
        check_loopback(&url)?;
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect(admin_url)
            .await
            .with_context(|| format!("cannot connect to Postgres at {admin_url}"))?;
        Ok(Self {
            admin_url: url,
            admin,
            counter: AtomicU32::new(0),
        })
    }

    pub fn admin_url(&self) -> String {
        self.admin_url.to_string()
    }

    /// The URL of database `name` on the same server.
    pub fn url_for(&self, name: &str) -> String {
        let mut url = self.admin_url.clone();
        url.set_path(&format!("/{name}"));
        url.to_string()
    }

    fn next_name(&self, label: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(30)
            .collect();
        format!("{PREFIX}{}_{n}_{label}", std::process::id())
    }

    /// A new empty database, dropped at the end of the run at the latest.
    pub async fn create_db(&self, label: &str) -> anyhow::Result<String> {
        let name = self.next_name(label);
        cleanup::track_db(&name);
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&self.admin)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        Ok(name)
    }

    /// A copy of `template` (which must have no open connections).
    pub async fn copy_db(&self, template: &str, label: &str) -> anyhow::Result<String> {
        let name = self.next_name(label);
        cleanup::track_db(&name);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\" STRATEGY file_copy"
        )))
        .execute(&self.admin)
        .await
        .with_context(|| format!("CREATE DATABASE {name} TEMPLATE {template}"))?;
        Ok(name)
    }

    pub async fn drop_db(&self, name: &str) -> anyhow::Result<()> {
        // Our own names: `jobq_bench_<pid>_<n>_<label>`, [a-z0-9_] only.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&self.admin)
        .await
        .with_context(|| format!("DROP DATABASE {name}"))?;
        cleanup::untrack_db(name);
        Ok(())
    }

    /// Drops the databases of earlier runs whose harness process no longer exists.
    pub async fn drop_leftovers(&self) -> anyhow::Result<Vec<String>> {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE $1")
                .bind(format!("{}%", PREFIX.replace('_', "\\_")))
                .fetch_all(&self.admin)
                .await?;
        let mut dropped = Vec::new();
        for name in names {
            let pid = name
                .strip_prefix(PREFIX)
                .and_then(|rest| rest.split('_').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            let alive =
                pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                self.drop_db(&name).await?;
                dropped.push(name);
            }
        }
        Ok(dropped)
    }

    /// Flushes dirty buffers so that every measured run starts from the same state.
    pub async fn checkpoint(&self) -> anyhow::Result<()> {
        sqlx::query("CHECKPOINT")
            .execute(&self.admin)
            .await
            .context("CHECKPOINT")?;
        Ok(())
    }

    pub async fn pool(&self, name: &str, max: u32) -> anyhow::Result<PgPool> {
        PgPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&self.url_for(name))
            .await
            .with_context(|| format!("cannot connect to database {name}"))
    }

    /// Server facts printed with the results.
    pub async fn facts(&self) -> anyhow::Result<serde_json::Value> {
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&self.admin)
            .await?;
        let autovacuum: String = sqlx::query_scalar("SHOW autovacuum")
            .fetch_one(&self.admin)
            .await?;
        let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(&self.admin)
            .await?;
        let shared_buffers: String = sqlx::query_scalar("SHOW shared_buffers")
            .fetch_one(&self.admin)
            .await?;
        Ok(serde_json::json!({
            "server_version": version,
            "autovacuum": autovacuum,
            "synchronous_commit": sync,
            "shared_buffers": shared_buffers,
        }))
    }
}
