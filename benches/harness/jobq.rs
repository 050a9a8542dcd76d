//! jobq as the real binary in child processes (`jobq migrate`, `jobq keys create`,
//! `jobq serve --role ...`), its HTTP API, and what its tables say about finished work.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::cleanup;
use crate::pg::Pg;

pub const BIN: &str = env!("CARGO_BIN_EXE_jobq");

/// Where the logs of the jobq processes go (replaced by each run).
pub fn log_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/logs")
}

/// A migrated jobq database with an admin key.
pub struct JobqDb {
    pub name: String,
    pub url: String,
    pub token: String,
}

/// A jobq command with a clean environment: only our flags decide the settings.
fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("JOBQ_") || key == "DATABASE_URL" || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

/// Runs a short jobq command to completion (bounded), returning its stdout.
async fn run_to_end(args: &[&str], timeout: Duration) -> anyhow::Result<String> {
    let mut cmd = command(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().with_context(|| format!("cannot run {BIN}"))?;
    let pid = child.id();
    if let Some(pid) = pid {
        cleanup::track_child(pid);
    }
    let out = tokio::time::timeout(timeout, child.wait_with_output()).await;
    if let Some(pid) = pid {
        cleanup::untrack_child(pid);
    }
    let out = out
        .map_err(|_| anyhow!("`jobq {}` did not finish within {timeout:?}", args[0]))?
        .with_context(|| format!("`jobq {}` failed to run", args[0]))?;
    if !out.status.success() {
        bail!(
            "`jobq {}` exited with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).context("jobq printed non-UTF-8")
}

impl JobqDb {
    /// A fresh database, migrated by `jobq migrate`, with an admin key from `jobq keys create`.
    pub async fn create(pg: &Pg, label: &str) -> anyhow::Result<Self> {
        let name = pg.create_db(&format!("jobq_{label}")).await?;
        let url = pg.url_for(&name);
        run_to_end(
            &["migrate", "--database-url", &url],
            Duration::from_secs(60),
        )
        .await?;
        let token = create_key(&url).await?;
        Ok(Self { name, url, token })
    }

    /// A copy of `template` (a prepared jobq database); the template's key works in it.
    pub async fn copy(pg: &Pg, template: &JobqDb, label: &str) -> anyhow::Result<Self> {
        let name = pg.copy_db(&template.name, &format!("jobq_{label}")).await?;
        Ok(Self {
            url: pg.url_for(&name),
            name,
            token: template.token.clone(),
        })
    }

    pub async fn pool(&self, pg: &Pg) -> anyhow::Result<PgPool> {
        pg.pool(&self.name, 2).await
    }
}

async fn create_key(url: &str) -> anyhow::Result<String> {
    let out = run_to_end(
        &[
            "keys",
            "create",
            "--name",
            "bench",
            "--role",
            "admin",
            "--database-url",
            url,
        ],
        Duration::from_secs(30),
    )
    .await?;
    let token = out.trim().to_owned();
    if !token.starts_with("jq_") {
        bail!("`jobq keys create` printed {out:?}, not a key");
    }
    Ok(token)
}

/// A running `jobq serve`.
pub struct Jobq {
    child: Child,
    pid: u32,
    pub base: String,
    pub log: PathBuf,
    pub label: String,
}

impl Jobq {
    /// Starts `jobq serve --listen 127.0.0.1:0 <flags>` on `db` and waits until its log says
    /// where it listens.
    pub async fn start(db: &JobqDb, label: &str, flags: &[&str]) -> anyhow::Result<Self> {
        let dir = log_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let log = dir.join(format!("{}-{label}.log", db.name));
        let out =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone().context("log file")?;
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--database-url",
            &db.url,
        ];
        args.extend_from_slice(flags);
        let mut cmd = command(&args);
        cmd.stdout(out).stderr(err);
        let child = cmd.spawn().with_context(|| format!("cannot start {BIN}"))?;
        let pid = child.id().context("jobq exited at once")?;
        cleanup::track_child(pid);
        let mut jobq = Self {
            child,
            pid,
            base: String::new(),
            log,
            label: label.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(addr) = jobq.listening_addr() {
                jobq.base = format!("http://{addr}");
                return Ok(jobq);
            }
            if let Some(status) = jobq.child.try_wait().context("wait for jobq")? {
                bail!(
                    "jobq ({label}) exited with {status} before listening:\n{}",
                    jobq.log_tail(30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "jobq ({label}) did not start within 60 s:\n{}",
                    jobq.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The address from the `jobq listening` log line (JSON logs).
    fn listening_addr(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        text.lines().find_map(|line| {
            let v: Value = serde_json::from_str(line).ok()?;
            // Flattened events (jobq's setting) or under "fields".
            let fields = v.get("fields").unwrap_or(&v);
            if fields.get("message")?.as_str()? != "jobq listening" {
                return None;
            }
            Some(fields.get("addr")?.as_str()?.to_owned())
        })
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Resident memory of the process (VmRSS, KiB).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid)
    }

    /// SIGTERM, then waits (bounded) for the exit; SIGKILL if it does not come.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        cleanup::signal(self.pid, Signal::SIGTERM);
        let waited = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
        cleanup::untrack_child(self.pid);
        match waited {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(anyhow!(
                "jobq ({}) exited with {status} after SIGTERM:\n{}",
                self.label,
                self.log_tail(20)
            )),
            Ok(Err(e)) => Err(e).context("wait for jobq"),
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                Err(anyhow!(
                    "jobq ({}) did not exit within 20 s of SIGTERM (killed)",
                    self.label
                ))
            }
        }
    }
}

impl Drop for Jobq {
    fn drop(&mut self) {
        // kill_on_drop kills it; the registry must forget it too.
        let _ = self.child.start_kill();
        cleanup::untrack_child(self.pid);
    }
}

pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

/// The HTTP API of one jobq process, with its admin key.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
    pub token: String,
}

/// A job as the enqueue answer (202) reports it.
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
}

pub fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(60))
        .build()
        .context("HTTP client")
}

fn accepted(job: &Value) -> anyhow::Result<Accepted> {
    let id = job
        .get("id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .with_context(|| format!("no job id in {job}"))?;
    let created_at = job
        .get("created_at")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .with_context(|| format!("no created_at in {job}"))?
        .with_timezone(&Utc);
    Ok(Accepted { id, created_at })
}

impl Api {
    pub fn new(jobq: &Jobq, token: &str) -> anyhow::Result<Self> {
        Ok(Self {
            client: http_client()?,
            base: jobq.base.clone(),
            token: token.to_owned(),
        })
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
    }

    /// POST with a prepared JSON body; the status and the parsed body.
    pub async fn post_raw(
        &self,
        path: &str,
        body: bytes_body::Body,
    ) -> anyhow::Result<(u16, Value)> {
        let response = self
            .post(path)
            .body(body.0)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status().as_u16();
        let text = response.text().await.context("read the answer")?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    async fn expect_202(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let (status, value) = self.post_raw(path, bytes_body::Body::json(body)?).await?;
        if status != 202 {
            bail!("POST {path} answered {status}: {value}");
        }
        Ok(value)
    }

    /// `POST /v1/jobs/hash`.
    pub async fn enqueue_hash(&self, data: &str, repeat: u64) -> anyhow::Result<Accepted> {
        let job = self
            .expect_202("/v1/jobs/hash", &json!({"data": data, "repeat": repeat}))
            .await?;
        accepted(&job)
    }

    /// `POST /v1/jobs/batch` with `jobs` (each with its `kind`).
    pub async fn enqueue_batch(&self, jobs: &[Value]) -> anyhow::Result<Vec<Accepted>> {
        let answer = self
            .expect_202("/v1/jobs/batch", &json!({ "jobs": jobs }))
            .await?;
        let list = answer
            .get("jobs")
            .and_then(Value::as_array)
            .with_context(|| format!("no jobs in the batch answer {answer}"))?;
        list.iter().map(accepted).collect()
    }

    /// Enqueues `n` copies of `job` with batch requests of at most 1000.
    pub async fn enqueue_many(&self, job: &Value, n: usize) -> anyhow::Result<Vec<Accepted>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let take = (n - out.len()).min(1000);
            let jobs = vec![job.clone(); take];
            out.extend(self.enqueue_batch(&jobs).await?);
        }
        Ok(out)
    }

    /// `GET path` with the key.
    async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))
    }

    pub async fn get_job(&self, id: Uuid) -> anyhow::Result<Value> {
        let response = self.get(&format!("/v1/jobs/{id}")).await?;
        let status = response.status();
        let value: Value = response.json().await.context("job JSON")?;
        if !status.is_success() {
            bail!("GET /v1/jobs/{id} answered {status}: {value}");
        }
        Ok(value)
    }

    /// `GET /metrics`: the Prometheus text (read samples with [`counter`]).
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let response = self.get("/metrics").await?;
        if !response.status().is_success() {
            bail!("GET /metrics answered {}", response.status());
        }
        response.text().await.context("metrics text")
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("{}/v1/events{query}", self.base.replacen("http", "ws", 1))
    }
}

/// A JSON body serialised once and sent many times.
pub mod bytes_body {
    #[derive(Clone)]
    pub struct Body(pub Vec<u8>);

    impl Body {
        pub fn json(v: &serde_json::Value) -> anyhow::Result<Self> {
            Ok(Self(serde_json::to_vec(v)?))
        }
    }
}

/// A UUID below every UUIDv7 made from now on (and above those of seeded history): jobs with
/// `id >= marker` are the ones of this run, found through the primary key.
pub fn id_marker() -> Uuid {
    let ms = Utc::now().timestamp_millis().saturating_sub(1).max(0) as u128;
    Uuid::from_u128(ms << 80)
}

/// Counts of the jobs of a run, by status group.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub unfinished: i64,
    pub failed: i64,
}

/// Jobs not yet terminal, and failed or cancelled ones, through the `(status, id)` index (cheap
/// even with a million finished jobs in the table).
pub async fn progress(pool: &PgPool, marker: Uuid) -> anyhow::Result<Progress> {
    let (unfinished, failed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status IN ('scheduled', 'queued', 'running', 'retrying')),
                count(*) FILTER (WHERE status IN ('failed', 'cancelled'))
         FROM jobq.jobs
         WHERE status IN ('scheduled', 'queued', 'running', 'retrying', 'failed', 'cancelled')
           AND id >= $1",
    )
    .bind(marker)
    .fetch_one(pool)
    .await
    .context("count unfinished jobs")?;
    Ok(Progress { unfinished, failed })
}

/// Waits until no job of the run is unfinished (or `deadline`); `true` if all finished.
pub async fn wait_finished(
    pool: &PgPool,
    marker: Uuid,
    deadline: Instant,
    poll: Duration,
) -> anyhow::Result<bool> {
    loop {
        let p = progress(pool, marker).await?;
        if p.failed > 0 {
            bail!("{} job(s) failed or were cancelled", p.failed);
        }
        if p.unfinished == 0 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(poll).await;
    }
}

/// What the status rows of a run say: how many succeeded, first start, last finish, first
/// creation.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub succeeded: i64,
    pub first_created: Option<DateTime<Utc>>,
    pub first_started: Option<DateTime<Utc>>,
    pub last_finished: Option<DateTime<Utc>>,
}

impl Span {
    /// Jobs per second between the first start and the last finish.
    pub fn rate(&self) -> Option<f64> {
        let secs = (self.last_finished? - self.first_started?).num_microseconds()? as f64 / 1e6;
        (secs > 0.0).then(|| self.succeeded as f64 / secs)
    }

    pub fn seconds_started_to_finished(&self) -> Option<f64> {
        Some((self.last_finished? - self.first_started?).num_microseconds()? as f64 / 1e6)
    }

    pub fn seconds_created_to_finished(&self) -> Option<f64> {
        Some((self.last_finished? - self.first_created?).num_microseconds()? as f64 / 1e6)
    }
}

pub async fn span(pool: &PgPool, marker: Uuid) -> anyhow::Result<Span> {
    let (succeeded, first_created, first_started, last_finished) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'succeeded'), min(created_at),
                min(started_at) FILTER (WHERE status = 'succeeded'),
                max(finished_at) FILTER (WHERE status = 'succeeded')
         FROM jobq.jobs WHERE id >= $1",
    )
    .bind(marker)
    .fetch_one(pool)
    .await
    .context("read the run's status rows")?;
    Ok(Span {
        succeeded,
        first_created,
        first_started,
        last_finished,
    })
}

/// Pickup latency per job: `started_at - created_at` (ms) of the given jobs.
pub async fn pickup_ms(pool: &PgPool, ids: &[Uuid]) -> anyhow::Result<Vec<f64>> {
    let rows: Vec<(Option<f64>,)> = sqlx::query_as(
        "SELECT (extract(epoch FROM started_at - created_at) * 1000)::float8
         FROM jobq.jobs WHERE id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .context("read started_at - created_at")?;
    if rows.len() != ids.len() {
        bail!("{} of {} jobs found", rows.len(), ids.len());
    }
    rows.into_iter()
        .map(|(ms,)| ms.context("a job has no started_at"))
        .collect()
}

/// The value of one counter sample in `metrics` (0 if it was never incremented).
pub fn counter(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
