use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use jobq::auth::Role;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{authorized_client, create_key};

/// The real `jobq` binary as a child process, for crash and signal tests.
pub struct JobqProcess {
    child: Child,
    pub base: String,
    pub log: PathBuf,
    /// An admin key, created once the process has migrated the database.
    pub token: String,
    /// Sends `token` with every request.
    pub client: reqwest::Client,
}

impl super::Target for JobqProcess {
    fn base(&self) -> &str {
        &self.base
    }
    fn token(&self) -> &str {
        &self.token
    }
}

/// A Postgres URL for the database of `db` (the tests run against a trust-auth server).
pub fn database_url(db: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        db.get_username(),
        db.get_host(),
        db.get_port(),
        db.get_database().unwrap_or("postgres")
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl JobqProcess {
    /// Starts `jobq serve` on the database of `db` with `flags`, and waits until it answers.
    pub async fn start(db: &PgConnectOptions, flags: &[&str]) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("jobq-test-{}.log", uuid::Uuid::now_v7()));
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_jobq"))
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(flags)
            .env("DATABASE_URL", database_url(db))
            .env(
                "JOBQ_LOG",
                std::env::var("JOBQ_TEST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn jobq");
        let mut process = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            token: String::new(),
            client: reqwest::Client::new(),
        };
        process.wait_until_healthy().await;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(db.clone())
            .await
            .expect("connect to the test database");
        process.token = create_key(&pool, "process-admin", Role::Admin, "default").await;
        process.client = authorized_client(&process.token);
        pool.close().await;
        process
    }

    async fn wait_until_healthy(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/healthz", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "jobq did not start:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// POSTs `body` to `path` with the admin key; the answer, which must be a success.
    pub async fn post_json(&self, path: &str, body: &Value) -> Value {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        Self::success(resp, "POST", path).await
    }

    /// GETs `path` with the admin key; the answer, which must be a success.
    pub async fn get_json(&self, path: &str) -> Value {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        Self::success(resp, "GET", path).await
    }

    /// Job `id` once it has finished (succeeded, failed or cancelled); panics after `timeout`.
    pub async fn finished(&self, id: &str, timeout: Duration) -> Value {
        super::eventually(timeout, &format!("job {id} to finish"), || async {
            let job = self.get_json(&format!("/v1/jobs/{id}")).await;
            matches!(
                job["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
            .then_some(job)
        })
        .await
    }

    /// The process's `/metrics` text (the admin key may read it).
    pub async fn metrics(&self) -> String {
        let resp = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        assert!(
            resp.status().is_success(),
            "GET /metrics: {}",
            resp.status()
        );
        resp.text().await.expect("metrics text")
    }

    async fn success(resp: reqwest::Response, method: &str, path: &str) -> Value {
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// SIGTERM, then waits (at most `timeout`) for the exit status.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "jobq did not exit:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for JobqProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
