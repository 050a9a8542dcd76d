//! The benchmark harness of issue 9: jobq against bare apalis-postgres on the same machine, in
//! one invocation, from timestamps of real work in a real database.
//!
//! `cargo bench --bench harness` runs every scenario at full size (release build) and prints a
//! table (scenario, jobq, baseline, ratio, target, pass/miss); `-- --smoke` runs them all with
//! tiny counts (CI: `cargo test --locked --bench harness -- --smoke`), `-- --only a,b` a
//! selection, `-- --json PATH` writes the results elsewhere. See README.md, "Performance".
//!
//! Every run gets fresh databases (`jobq_bench_<pid>_...`) on the loopback Postgres, jobq runs
//! as the real binary in child processes, the baseline in this process. Children and databases
//! are registered and removed at the end, on a failed scenario and on ctrl-c/SIGTERM.

mod baseline;
mod cleanup;
mod jobq;
mod pg;
mod report;
mod scenarios;
mod seed;
mod smtp;
mod stats;
mod ws;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser as _;
use serde::Serialize;
use serde_json::{Value, json};

use crate::pg::Pg;
use crate::report::{Report, Row, ScenarioOutcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Enqueue over HTTP: single requests at concurrency 1 and 16, batches of 1000.
    Enqueue,
    /// 20,000 queued tiny hash jobs run to `succeeded` at concurrency 1, 8, 64; with history.
    Processing,
    /// Enqueue-commit to `running` of jobs enqueued one at a time at 50/s.
    Pickup,
    /// Enqueue to `succeeded` event at a WebSocket subscriber; fan-out to many subscribers.
    Events,
    /// 10,000 idle WebSocket subscribers: memory per connection, events still flowing.
    WsCapacity,
    /// 100 emails against an SMTP server taking 1 s per message.
    Email,
    /// Three concurrent SHA-256 jobs; /healthz latency meanwhile.
    Cpu,
}

impl Scenario {
    const ALL: [Scenario; 7] = [
        Scenario::Enqueue,
        Scenario::Processing,
        Scenario::Pickup,
        Scenario::Events,
        Scenario::WsCapacity,
        Scenario::Email,
        Scenario::Cpu,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Enqueue => "enqueue",
            Scenario::Processing => "processing",
            Scenario::Pickup => "pickup",
            Scenario::Events => "events",
            Scenario::WsCapacity => "ws-capacity",
            Scenario::Email => "email",
            Scenario::Cpu => "cpu",
        }
    }
}

#[derive(Debug, clap::Parser)]
#[command(
    name = "harness",
    about = "jobq benchmark harness (issue 9): jobq vs bare apalis-postgres, from real timestamps"
)]
struct Cli {
    /// Tiny counts, a few seconds per scenario (CI). Exits non-zero only if a scenario does not
    /// complete, never for a missed target.
    #[arg(long)]
    smoke: bool,
    /// Run only these scenarios (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Where to write the results as JSON [default: target/bench/results.json, or
    /// target/bench/results-smoke.json with --smoke].
    #[arg(long)]
    json: Option<PathBuf>,
    /// A loopback Postgres URL of a role that may create databases; every bench database is
    /// created and dropped through it.
    #[arg(
        long,
        env = "JOBQ_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Queued jobs per processing run (default 20,000; smoke 200).
    #[arg(long)]
    processing_jobs: Option<usize>,
    /// Finished jobs seeded for the history runs (default 1,000,000; smoke 1,000).
    #[arg(long)]
    history_rows: Option<i64>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    #[command(subcommand)]
    hidden: Option<Hidden>,
}

#[derive(Debug, clap::Subcommand)]
enum Hidden {
    /// The subscriber process of the ws-capacity scenario.
    #[command(name = "__ws-client", hide = true)]
    WsClient(ws::ClientArgs),
}

/// The sizes of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub smoke: bool,
    pub scenario_timeout: Duration,
    /// How often completion is polled in the database.
    pub poll: Duration,
    pub enqueue_warmup: usize,
    pub enqueue_single_c1: usize,
    pub enqueue_single_c16: usize,
    /// Batch requests of 1000 jobs.
    pub enqueue_batches: usize,
    pub processing_jobs: usize,
    pub concurrencies: Vec<usize>,
    pub history_rows: i64,
    /// Longest a processing run may take; a slower one reports its partial rate.
    pub processing_cap: Duration,
    pub paced_jobs: usize,
    pub pace_per_sec: u32,
    pub fanout_subscribers: usize,
    pub fanout_jobs: usize,
    pub ws_idle: usize,
    pub emails: usize,
    pub email_delay: Duration,
    pub cpu_repeats: Vec<u64>,
}

impl Plan {
    fn full() -> Self {
        Self {
            smoke: false,
            scenario_timeout: Duration::from_secs(40 * 60),
            poll: Duration::from_millis(100),
            enqueue_warmup: 50,
            enqueue_single_c1: 3_000,
            enqueue_single_c16: 16_000,
            enqueue_batches: 50,
            processing_jobs: 20_000,
            concurrencies: vec![1, 8, 64],
            history_rows: 1_000_000,
            processing_cap: Duration::from_secs(180),
            paced_jobs: 500,
            pace_per_sec: 50,
            fanout_subscribers: 1_000,
            fanout_jobs: 20,
            ws_idle: 10_000,
            emails: 100,
            email_delay: Duration::from_secs(1),
            cpu_repeats: vec![1_000_000, 100_000_000],
        }
    }

    fn smoke() -> Self {
        Self {
            smoke: true,
            scenario_timeout: Duration::from_secs(180),
            poll: Duration::from_millis(50),
            enqueue_warmup: 5,
            enqueue_single_c1: 100,
            enqueue_single_c16: 160,
            enqueue_batches: 2,
            processing_jobs: 200,
            concurrencies: vec![1, 8, 64],
            history_rows: 1_000,
            processing_cap: Duration::from_secs(60),
            paced_jobs: 20,
            pace_per_sec: 50,
            fanout_subscribers: 20,
            fanout_jobs: 3,
            ws_idle: 200,
            emails: 10,
            email_delay: Duration::from_secs(1),
            cpu_repeats: vec![1_000_000],
        }
    }
}

/// What a scenario gets: the server, the sizes, and where its rows go.
#[derive(Clone)]
pub struct Ctx {
    pub pg: Arc<Pg>,
    pub plan: Plan,
    pub scenario: &'static str,
    report: Arc<Mutex<Report>>,
}

impl Ctx {
    fn report(&self) -> std::sync::MutexGuard<'_, Report> {
        self.report.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a row to the table (and shows it at once).
    pub fn row(&self, row: Row) {
        let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| row.unit.format(v));
        eprintln!(
            "[{}] {}: jobq {} | baseline {}{}",
            self.scenario,
            row.scenario,
            fmt(row.jobq),
            fmt(row.baseline),
            if row.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", row.note)
            }
        );
        self.report().rows.push(row);
    }

    /// Keeps a raw measurement for the JSON output.
    pub fn detail(&self, key: &str, value: Value) {
        let scenario = self.scenario;
        self.report().detail(scenario, key, value);
    }

    pub fn log(&self, message: impl AsRef<str>) {
        eprintln!("[{}] {}", self.scenario, message.as_ref());
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (inherited by the processes we start).
pub fn raise_nofile_limit() -> (u64, u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                (hard, hard)
            } else {
                (soft, hard)
            }
        }
        Err(_) => (0, 0),
    }
}

fn main() -> ExitCode {
    // `cargo nextest` / libtest-style listing: this binary holds no tests.
    if std::env::args().any(|a| a == "--list") {
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Hidden::WsClient(args)) = cli.hidden {
        return match runtime.block_on(ws::client_main(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ws-client: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: {e:#}");
            cleanup::kill_children();
            ExitCode::FAILURE
        }
    }
}

/// Runs the selected scenarios; `Ok(false)` if one of them did not complete.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    let mut plan = if cli.smoke {
        Plan::smoke()
    } else {
        Plan::full()
    };
    if let Some(n) = cli.processing_jobs {
        plan.processing_jobs = n.max(1);
    }
    if let Some(n) = cli.history_rows {
        plan.history_rows = n.max(0);
    }
    let selected: Vec<Scenario> = if cli.only.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        Scenario::ALL
            .into_iter()
            .filter(|s| cli.only.contains(s))
            .collect()
    };
    let json_path = cli.json.clone().unwrap_or_else(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
        dir.join(if cli.smoke {
            "results-smoke.json"
        } else {
            "results.json"
        })
    });

    let pg = Arc::new(Pg::connect(&cli.database_url).await?);
    cleanup::on_signal_clean_up_and_exit(pg.admin_url());
    let (nofile, _) = raise_nofile_limit();
    let leftovers = pg.drop_leftovers().await?;
    if !leftovers.is_empty() {
        eprintln!(
            "bench: dropped {} database(s) left by interrupted runs",
            leftovers.len()
        );
    }
    let _ = std::fs::remove_dir_all(jobq::log_dir());

    let started_at = chrono::Utc::now();
    let meta_start = json!({
        "date": started_at.to_rfc3339(),
        "mode": if cli.smoke { "smoke" } else { "full" },
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "command": std::env::args().collect::<Vec<_>>(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "loadavg_at_start": loadavg(),
        "postgres": pg.facts().await?,
        "nofile_limit": nofile,
        "jobq_binary": jobq::BIN,
        "plan": &plan,
    });
    eprintln!(
        "bench: {} run of {} on {} CPUs, Postgres {}; logs in {}",
        meta_start["mode"].as_str().unwrap_or("?"),
        selected
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(","),
        meta_start["cpus"],
        meta_start["postgres"]["server_version"],
        jobq::log_dir().display()
    );

    let report = Arc::new(Mutex::new(Report::default()));
    let mut all_completed = true;
    let clock = Instant::now();
    for scenario in selected {
        let ctx = Ctx {
            pg: pg.clone(),
            plan: plan.clone(),
            scenario: scenario.name(),
            report: report.clone(),
        };
        ctx.log("starting");
        let begun = Instant::now();
        let task = tokio::spawn(scenarios::run(scenario, ctx.clone()));
        let abort = task.abort_handle();
        let result = match tokio::time::timeout(plan.scenario_timeout, task).await {
            Err(_) => {
                abort.abort();
                Err(anyhow::anyhow!(
                    "did not finish within {:?}",
                    plan.scenario_timeout
                ))
            }
            Ok(Err(e)) => Err(anyhow::anyhow!("panicked: {e}")),
            Ok(Ok(r)) => r,
        };
        // Whatever the scenario left behind.
        if cleanup::kill_children() > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        if let Err(e) = cleanup::drop_dbs(&pg.admin_url()).await {
            eprintln!(
                "bench: could not drop databases after {}: {e:#}",
                scenario.name()
            );
        }
        let seconds = begun.elapsed().as_secs_f64();
        let error = result.err().map(|e| format!("{e:#}"));
        match &error {
            None => ctx.log(format!("done in {seconds:.1} s")),
            Some(e) => {
                all_completed = false;
                ctx.log(format!("FAILED after {seconds:.1} s: {e}"));
            }
        }
        ctx.report().scenarios.push(ScenarioOutcome {
            name: scenario.name().to_owned(),
            completed: error.is_none(),
            error,
            seconds,
        });
    }

    let report = report.lock().unwrap_or_else(|p| p.into_inner());
    let mut meta = meta_start;
    meta["seconds"] = json!(clock.elapsed().as_secs_f64());
    meta["loadavg_at_end"] = json!(loadavg());
    println!();
    println!(
        "jobq benchmark ({}, {} build), {}; {} CPUs; Postgres {} (autovacuum {}, synchronous_commit {}); total {:.0} s",
        meta["mode"].as_str().unwrap_or("?"),
        meta["profile"].as_str().unwrap_or("?"),
        started_at.format("%Y-%m-%d %H:%M UTC"),
        meta["cpus"],
        meta["postgres"]["server_version"].as_str().unwrap_or("?"),
        meta["postgres"]["autovacuum"].as_str().unwrap_or("?"),
        meta["postgres"]["synchronous_commit"]
            .as_str()
            .unwrap_or("?"),
        clock.elapsed().as_secs_f64(),
    );
    println!();
    print!("{}", report.table());
    for s in report.scenarios.iter().filter(|s| !s.completed) {
        println!(
            "\nscenario {} did not complete: {}",
            s.name,
            s.error.as_deref().unwrap_or("?")
        );
    }
    report
        .write_json(&json_path, meta)
        .context("write the JSON results")?;
    println!("\nresults: {}", json_path.display());
    Ok(all_completed)
}

fn loadavg() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}
