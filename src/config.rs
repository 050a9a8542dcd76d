//! Every setting, as one clap struct per concern: each is a `--flag` and a `JOBQ_*` environment
//! variable (`DATABASE_URL` for the database), with defaults that work on a laptop with a local
//! Postgres.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::domain::{Backoff, MAX_ATTEMPTS_LIMIT};

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/jobq";

fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

#[derive(Debug, Clone, Args)]
pub struct DbConfig {
    /// Postgres URL. The database is created if it does not exist.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    pub database_url: String,
    /// Connections in this process's pool (its workers keep up to two idle between uses, its API one).
    #[arg(long, env = "JOBQ_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// How long a request waits for a pooled connection before failing with 503.
    #[arg(long, env = "JOBQ_DB_ACQUIRE_TIMEOUT", default_value = "3s", value_parser = duration)]
    pub db_acquire_timeout: Duration,
    /// How long start-up keeps trying to reach Postgres.
    #[arg(long, env = "JOBQ_DB_CONNECT_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub db_connect_timeout: Duration,
}

/// Which parts of jobq this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The HTTP API and the workers.
    All,
    /// Only the HTTP API.
    Api,
    /// Only the workers (plus /healthz and /readyz).
    Worker,
}

impl Role {
    pub fn runs_api(self) -> bool {
        matches!(self, Role::All | Role::Api)
    }
    pub fn runs_workers(self) -> bool {
        matches!(self, Role::All | Role::Worker)
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub db: DbConfig,
    /// What this process runs.
    #[arg(long, env = "JOBQ_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,
    /// Address of the HTTP server (port 0 picks a free port).
    #[arg(long, env = "JOBQ_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Time running jobs get to finish or reach a safe point after SIGTERM/ctrl-c.
    #[arg(long, env = "JOBQ_SHUTDOWN_GRACE", default_value = "10s", value_parser = duration)]
    pub shutdown_grace: Duration,
    /// Finished jobs (and their events) older than this are deleted.
    #[arg(long, env = "JOBQ_RETENTION", default_value = "7days", value_parser = duration)]
    pub retention: Duration,
    /// How often the retention pruner runs (in one process at a time).
    #[arg(long, env = "JOBQ_RETENTION_INTERVAL", default_value = "1m", value_parser = duration)]
    pub retention_interval: Duration,
    #[command(flatten)]
    pub api: ApiConfig,
    #[command(flatten)]
    pub email: EmailConfig,
    #[command(flatten)]
    pub worker: WorkerConfig,
}

#[derive(Debug, Clone, Args)]
pub struct ApiConfig {
    /// Largest total input of a hash job (data length x repeat), in bytes.
    #[arg(long, env = "JOBQ_HASH_MAX_INPUT_BYTES", default_value_t = 1 << 30)]
    pub hash_max_input_bytes: u64,
    /// Attempts a job gets when the request does not say.
    #[arg(long, env = "JOBQ_DEFAULT_MAX_ATTEMPTS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=MAX_ATTEMPTS_LIMIT as i64))]
    pub default_max_attempts: u32,
    /// A WebSocket client whose socket accepts nothing for this long is told to resume later
    /// and disconnected.
    #[arg(long, env = "JOBQ_WS_SEND_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub ws_send_timeout: Duration,
    /// The server pings each WebSocket client this often; a client silent for three intervals
    /// is disconnected (close code 4000).
    #[arg(long, env = "JOBQ_WS_PING_INTERVAL", default_value = "20s", value_parser = duration)]
    pub ws_ping_interval: Duration,
    /// Enqueue requests per second allowed to one API key in this process, unless the key
    /// has a limit of its own (0: no limit).
    #[arg(long, env = "JOBQ_ENQUEUE_RATE_LIMIT", default_value_t = 1000)]
    pub enqueue_rate_limit: u32,
    /// Accept every request without an API key, as an admin. For local development only:
    /// logged as a warning at start.
    #[arg(long, env = "JOBQ_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}

impl ApiConfig {
    /// Settings for places that need no real configuration (printing the spec).
    pub fn placeholder() -> Self {
        Self {
            hash_max_input_bytes: 0,
            default_max_attempts: 1,
            ws_send_timeout: Duration::from_secs(10),
            ws_ping_interval: Duration::from_secs(20),
            enqueue_rate_limit: 0,
            insecure_no_auth: true,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct EmailConfig {
    /// SMTP server URL, e.g. smtp://127.0.0.1:2525 or smtps://user:pass@smtp.example.com.
    /// Without it, emails are written as .eml files to --mail-dir (development).
    #[arg(long, env = "JOBQ_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// Folder for .eml files when no SMTP URL is set.
    #[arg(long, env = "JOBQ_MAIL_DIR", default_value = "mail-outbox")]
    pub mail_dir: PathBuf,
    /// Sender of every email.
    #[arg(long, env = "JOBQ_EMAIL_FROM", default_value = "jobq <jobq@localhost>")]
    pub email_from: String,
    /// Time limit of one SMTP conversation.
    #[arg(long, env = "JOBQ_SMTP_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub smtp_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    /// Email jobs one worker process runs at once.
    #[arg(long, env = "JOBQ_EMAIL_CONCURRENCY", default_value_t = 128)]
    pub email_concurrency: usize,
    /// Long-running jobs one worker process runs at once.
    #[arg(long, env = "JOBQ_LONG_RUNNING_CONCURRENCY", default_value_t = 64)]
    pub long_running_concurrency: usize,
    /// Hash jobs one worker process holds at once. Their digests run on at most
    /// --hash-threads threads; the other attempts wait for a thread (tiny jobs spend most of
    /// their time recording their start and outcome, not hashing).
    #[arg(long, env = "JOBQ_HASH_CONCURRENCY", default_value_t = 128)]
    pub hash_concurrency: usize,
    /// Digests computed at once, each on a thread of the blocking pool (0: no limit beyond
    /// --hash-concurrency; the OS shares the CPUs among them). Set it to reserve CPUs for other
    /// work in the process.
    #[arg(long, env = "JOBQ_HASH_THREADS", default_value_t = 0)]
    pub hash_threads: usize,
    /// Queue entries fetched per round trip (never more than the kind's free slots); their
    /// attempts start in the fetching transaction.
    #[arg(long, env = "JOBQ_FETCH_BATCH_SIZE", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub fetch_batch_size: u32,
    /// Backstop poll of the queue; new jobs are normally picked up at once through NOTIFY,
    /// this catches retries falling due and anything a lost notification missed.
    #[arg(long, env = "JOBQ_POLL_INTERVAL", default_value = "1s", value_parser = duration)]
    pub poll_interval: Duration,
    /// How often a worker proves it is alive.
    #[arg(long, env = "JOBQ_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = duration)]
    pub heartbeat_interval: Duration,
    /// Heartbeats a worker may miss before its jobs are rescued by another.
    #[arg(long, env = "JOBQ_MISSED_HEARTBEATS", default_value_t = 3)]
    pub missed_heartbeats: usize,
    /// Delay before the second attempt; it doubles for each further one.
    #[arg(long, env = "JOBQ_RETRY_BASE", default_value = "1s", value_parser = duration)]
    pub retry_base: Duration,
    /// Longest delay between attempts.
    #[arg(long, env = "JOBQ_RETRY_MAX", default_value = "1h", value_parser = duration)]
    pub retry_max: Duration,
    /// Shortest time between two durable progress writes of one job.
    #[arg(long, env = "JOBQ_PROGRESS_INTERVAL", default_value = "250ms", value_parser = duration)]
    pub progress_interval: Duration,
}

impl WorkerConfig {
    pub fn backoff(&self) -> Backoff {
        Backoff {
            base: self.retry_base,
            max: self.retry_max,
        }
    }

    pub fn hash_concurrency(&self) -> usize {
        self.hash_concurrency.max(1)
    }

    pub fn hash_threads(&self) -> usize {
        if self.hash_threads > 0 {
            self.hash_threads
        } else {
            self.hash_concurrency()
        }
    }

    /// How long a silent worker's jobs wait before they are rescued.
    pub fn orphan_after(&self) -> Duration {
        self.heartbeat_interval * self.missed_heartbeats as u32
    }
}
