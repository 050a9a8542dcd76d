use std::time::Duration;

use clap::Parser;
use jobq::app::App;
use jobq::auth::{KeySpec, Role};
use jobq::config::ServeConfig;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use super::eventually;

/// The test defaults below may be overridden by a test's own flags.
#[derive(Parser)]
#[command(args_override_self = true)]
struct Args {
    #[command(flatten)]
    serve: ServeConfig,
}

/// A jobq running in this test process.
pub struct TestApp {
    pub base: String,
    /// Sends the admin key of `token` with every request.
    pub client: reqwest::Client,
    /// An admin key (name `test-admin`, tenant `default`).
    pub token: String,
    pub pool: PgPool,
    /// Kept alive for the test's duration.
    _app: App,
}

/// Starts jobq (API and workers) on the fresh database `db` with test-friendly timings and the
/// given extra flags (e.g. `["--smtp-url", ...]`).
pub async fn spawn_app_with(db: PgConnectOptions, flags: &[&str]) -> TestApp {
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(db.clone())
        .await
        .expect("connect to the test database");
    jobq::db::migrate(&pool).await.expect("migrate");
    let token = create_key(&pool, "test-admin", Role::Admin, "default").await;
    start_app(pool, token, flags).await
}

/// Creates an API key directly in the database; returns its token.
pub async fn create_key(pool: &PgPool, name: &str, role: Role, tenant: &str) -> String {
    let spec = KeySpec::parse(name, role, tenant, None).expect("valid key fields");
    jobq::auth::create_key(pool, &spec)
        .await
        .expect("create key")
        .token
}

/// A client that sends `token` as its bearer key.
pub fn authorized_client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = format!("Bearer {token}").parse().expect("header value");
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// Starts jobq on `pool` as it is (no connection, no migration first); requests carry `token`.
pub async fn start_app(pool: PgPool, token: String, flags: &[&str]) -> TestApp {
    let mut args = vec![
        "jobq",
        "--listen",
        "127.0.0.1:0",
        "--poll-interval",
        "100ms",
        "--heartbeat-interval",
        "1s",
        "--progress-interval",
        "50ms",
        "--shutdown-grace",
        "5s",
        "--smtp-timeout",
        "5s",
    ];
    args.extend_from_slice(flags);
    let config = Args::try_parse_from(&args).expect("valid test flags").serve;
    let app = App::start(config, pool.clone(), CancellationToken::new())
        .await
        .expect("start jobq");
    TestApp {
        base: format!("http://{}", app.addr()),
        client: authorized_client(&token),
        token,
        pool,
        _app: app,
    }
}

/// `spawn_app_with` and mail written to a temporary folder.
pub async fn spawn_app(db: PgConnectOptions) -> TestApp {
    let dir = std::env::temp_dir().join(format!("jobq-test-mail-{}", uuid::Uuid::now_v7()));
    let dir = dir.to_string_lossy().into_owned();
    spawn_app_with(db, &["--mail-dir", &dir]).await
}

impl super::Target for TestApp {
    fn base(&self) -> &str {
        &self.base
    }
    fn token(&self) -> &str {
        &self.token
    }
}

impl TestApp {
    /// A new key of `role` for `tenant`.
    pub async fn key(&self, role: Role, tenant: &str) -> String {
        let name = format!("{}-{tenant}", role.as_str());
        create_key(&self.pool, &name, role, tenant).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    /// Enqueues and asserts 202; returns the job.
    pub async fn enqueue(&self, path: &str, body: Value) -> Value {
        let resp = self.post(path, &body).await;
        let status = resp.status();
        let json: Value = resp.json().await.expect("json body");
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "enqueue {path} {body}: {json}"
        );
        json
    }

    /// Enqueues and asserts 202; returns the job's id.
    pub async fn enqueue_id(&self, path: &str, body: Value) -> String {
        let job = self.enqueue(path, body).await;
        job["id"].as_str().expect("a job id").to_owned()
    }

    pub async fn job(&self, id: &str) -> Value {
        let resp = self.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.expect("json body")
    }

    /// All events of a job, oldest first.
    pub async fn events(&self, id: &str) -> Vec<Value> {
        let page: Value = self
            .get(&format!("/v1/jobs/{id}/events?limit=200"))
            .await
            .json()
            .await
            .expect("json body");
        page["events"].as_array().expect("events array").clone()
    }

    /// Waits until the job is in a terminal status and returns it.
    pub async fn finished(&self, id: &str, timeout: Duration) -> Value {
        eventually(timeout, &format!("job {id} to finish"), || async {
            let job = self.job(id).await;
            matches!(
                job["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
            .then_some(job)
        })
        .await
    }

    /// Rows in `table` (a fixed name from the test itself).
    pub async fn count(&self, table: &'static str) -> i64 {
        let sql = match table {
            "jobq.jobs" => "SELECT count(*) FROM jobq.jobs",
            "jobq.job_events" => "SELECT count(*) FROM jobq.job_events",
            "apalis.jobs" => "SELECT count(*) FROM apalis.jobs",
            other => panic!("no count query for {other}"),
        };
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }
}
