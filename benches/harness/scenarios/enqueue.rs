//! Scenario 1, enqueue over HTTP: single-job requests at concurrency 1 and 16, batch requests
//! of 1000 jobs. Jobs/s accepted (a 202 means committed: durable) and request latency.
//! jobq runs with `--role api` (no workers competing) and, for the matched rows,
//! `--enqueue-rate-limit 0` (apalis has no per-client limit); one row keeps jobq's default
//! limit. Baseline: apalis `push` with 1 and 16 producers, `push_all` of 1000 tasks.
//! Each run gets a fresh database; the rows written are counted afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use apalis::prelude::TaskSink as _;
use serde_json::json;

use crate::Ctx;
use crate::baseline::{ApalisDb, HashArgs, QUEUE, push_all};
use crate::jobq::bytes_body::Body;
use crate::jobq::{Api, Jobq, JobqDb};
use crate::report::{Row, Target, Unit};
use crate::stats::Summary;

/// One enqueue run: jobs accepted, wall time, latency of each request (ms).
struct Measured {
    jobs: usize,
    seconds: f64,
    latencies: Vec<f64>,
    rejected: usize,
}

impl Measured {
    fn empty() -> Self {
        Measured {
            jobs: 0,
            seconds: 0.0,
            latencies: Vec::new(),
            rejected: 0,
        }
    }

    /// One request of `jobs` jobs that started at `start` and has just ended; interleaved
    /// runs count only their own requests' time.
    fn record(&mut self, start: Instant, jobs: usize) {
        let took = start.elapsed().as_secs_f64();
        self.seconds += took;
        self.latencies.push(took * 1000.0);
        self.jobs += jobs;
    }

    fn rate(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| self.jobs as f64 / self.seconds)
    }

    fn summary(&self) -> Option<Summary> {
        Summary::of(&self.latencies)
    }

    fn detail(&self) -> serde_json::Value {
        json!({
            "jobs": self.jobs,
            "seconds": self.seconds,
            "jobs_per_sec": self.rate(),
            "latency_ms": self.summary(),
            "rejected_429": self.rejected,
        })
    }
}

const NO_LIMIT: [&str; 2] = ["--enqueue-rate-limit", "0"];

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let plan = &ctx.plan;

    let j1 = jobq_single(ctx, "single-c1", 1, plan.enqueue_single_c1, &NO_LIMIT).await?;
    let a1 = apalis_push(ctx, "push-1", 1, plan.enqueue_single_c1).await?;
    latency_rows(
        ctx,
        "enqueue single c=1",
        &j1,
        &a1,
        "apalis push, 1 producer",
        None,
    );

    let j16 = jobq_single(ctx, "single-c16", 16, plan.enqueue_single_c16, &NO_LIMIT).await?;
    let a16 = apalis_push(ctx, "push-16", 16, plan.enqueue_single_c16).await?;
    latency_rows(
        ctx,
        "enqueue single c=16",
        &j16,
        &a16,
        "apalis push, 16 producers",
        Some(Target::RatioAtLeast { ratio: 1.0 }),
    );

    let jd = jobq_single(ctx, "single-c16-defaults", 16, plan.enqueue_single_c16, &[]).await?;
    ctx.row(
        // What the default per-key limit lets one key do: a policy, not a capacity (the target
        // is on the unlimited row above).
        Row::new("enqueue single c=16, jobq defaults", Unit::JobsPerSec)
            .jobq(jd.rate())
            .baseline(a16.rate())
            .note(format!(
                "default --enqueue-rate-limit (1,000/s per key per process): {} of {} requests got 429",
                jd.rejected,
                jd.rejected + jd.jobs
            )),
    );

    // Every batch contestant in one loop, round by round (the order rotating), so that each
    // meets the same moments of this shared machine as push_all: measured one after the other,
    // the same figures moved by up to 2x between runs.
    let b = batch_rounds(ctx, plan.enqueue_batches).await?;
    latency_rows(
        ctx,
        "enqueue batch of 1000",
        &b.endpoint,
        &b.push_all,
        "apalis push_all of 1000; latency per request; alternated batch by batch",
        Some(Target::RatioAtLeast { ratio: 0.8 }),
    );
    latency_rows(
        ctx,
        "enqueue batch of 1000, no HTTP",
        &b.in_process,
        &b.push_all,
        "jobq's lifecycle::enqueue_many called in process (status row, queue entry, event per job) vs push_all (one row)",
        None,
    );
    latency_rows(
        ctx,
        "three rows per job into jobq's tables by COPY",
        &b.copy_into_jobq,
        &b.push_all,
        "the same rows by COPY (the cheapest bulk write) into jobq's own tables, every index and trigger of theirs, one transaction per 1000: no SQL of jobq's can write them faster",
        None,
    );
    latency_rows(
        ctx,
        "three rows per job alone (floor)",
        &b.floor,
        &b.push_all,
        "the same rows by COPY into bare copies of jobq's tables (primary keys only, no triggers)",
        None,
    );
    Ok(())
}

fn latency_rows(
    ctx: &Ctx,
    name: &str,
    jobq: &Measured,
    apalis: &Measured,
    baseline: &str,
    target: Option<Target>,
) {
    let mut row = Row::new(name, Unit::JobsPerSec)
        .jobq(jobq.rate())
        .baseline(apalis.rate())
        .note(baseline);
    if let Some(t) = target {
        row = row.target(t);
    }
    ctx.row(row);
    let (j, a) = (jobq.summary(), apalis.summary());
    ctx.row(
        Row::new(format!("{name}: latency p50"), Unit::Ms)
            .jobq(j.map(|s| s.p50))
            .baseline(a.map(|s| s.p50)),
    );
    ctx.row(
        Row::new(format!("{name}: latency p99"), Unit::Ms)
            .jobq(j.map(|s| s.p99))
            .baseline(a.map(|s| s.p99)),
    );
    ctx.detail(&format!("{name} jobq"), jobq.detail());
    ctx.detail(&format!("{name} apalis"), apalis.detail());
}

/// A fresh jobq database and an API-only jobq on it.
async fn api_only(ctx: &Ctx, label: &str, flags: &[&str]) -> anyhow::Result<(JobqDb, Jobq, Api)> {
    let db = JobqDb::create(&ctx.pg, label).await?;
    let mut all = vec!["--role", "api"];
    all.extend_from_slice(flags);
    let jobq = Jobq::start(&db, label, &all).await?;
    let api = Api::new(&jobq, &db.token)?;
    Ok((db, jobq, api))
}

async fn count_jobq_rows(ctx: &Ctx, db: &JobqDb) -> anyhow::Result<i64> {
    let pool = db.pool(&ctx.pg).await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jobq.jobs")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    Ok(n)
}

async fn finish_jobq(
    ctx: &Ctx,
    db: JobqDb,
    jobq: Jobq,
    expected_rows: usize,
) -> anyhow::Result<()> {
    let rows = count_jobq_rows(ctx, &db).await?;
    jobq.stop().await?;
    ctx.pg.drop_db(&db.name).await?;
    if rows as usize != expected_rows {
        bail!("jobq accepted {expected_rows} jobs but its table holds {rows}");
    }
    Ok(())
}

/// `n` accepted single enqueues (connections opened, key cached); a 429 is waited out.
async fn warm_up(api: &Api, n: usize) -> anyhow::Result<()> {
    let body = Body::json(&json!({"data": "x"}))?;
    let (mut accepted, mut attempts) = (0, 0);
    while accepted < n {
        attempts += 1;
        if attempts > 20 * n {
            bail!("warm-up: only {accepted} of {n} enqueues accepted in {attempts} attempts");
        }
        match api.post_raw("/v1/jobs/hash", body.clone()).await? {
            (202, _) => accepted += 1,
            (429, _) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            (status, answer) => bail!("warm-up enqueue answered {status}: {answer}"),
        }
    }
    Ok(())
}

/// `concurrency` clients sending `POST /v1/jobs/hash` until `n` requests were made. Only 202s
/// count as accepted; 429s (rate limit) are counted apart; anything else is an error.
async fn jobq_single(
    ctx: &Ctx,
    label: &str,
    concurrency: usize,
    n: usize,
    flags: &[&str],
) -> anyhow::Result<Measured> {
    let (db, jobq, api) = api_only(ctx, label, flags).await?;
    let body = Body::json(&json!({"data": "x"}))?;
    warm_up(&api, ctx.plan.enqueue_warmup).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (api, body, next) = (api.clone(), body.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut accepted, mut rejected) = (0usize, 0usize);
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let t = Instant::now();
                let (status, answer) = api.post_raw("/v1/jobs/hash", body.clone()).await?;
                match status {
                    202 => {
                        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                        accepted += 1;
                    }
                    429 => rejected += 1,
                    _ => return Err(anyhow!("enqueue answered {status}: {answer}")),
                }
            }
            Ok::<_, anyhow::Error>((latencies, accepted, rejected))
        }));
    }
    let mut m = Measured::empty();
    for task in tasks {
        let (latencies, accepted, rejected) = task.await.context("client task")??;
        m.latencies.extend(latencies);
        m.jobs += accepted;
        m.rejected += rejected;
    }
    m.seconds = start.elapsed().as_secs_f64();
    finish_jobq(ctx, db, jobq, ctx.plan.enqueue_warmup + m.jobs).await?;
    Ok(m)
}

/// The batch contestants' figures, from one alternating loop.
struct BatchRounds {
    /// `POST /v1/jobs/batch` of 1000 hash jobs.
    endpoint: Measured,
    /// `lifecycle::enqueue_many` of the same 1000 jobs, in this process.
    in_process: Measured,
    /// The rows jobq writes for them, by COPY into its own tables.
    copy_into_jobq: Measured,
    /// The same rows by COPY into bare copies of those tables.
    floor: Measured,
    /// apalis `push_all` of 1000 tasks.
    push_all: Measured,
}

/// `batches` rounds after a warm-up round; in each, every contestant writes 1000 jobs once, the
/// order rotating from round to round. Each has its own database; every row is counted
/// afterwards.
async fn batch_rounds(ctx: &Ctx, batches: usize) -> anyhow::Result<BatchRounds> {
    use ::jobq::domain::{JobKind, JobOptions};
    use ::jobq::lifecycle::{EnqueueRequest, enqueue_many};

    let warmup = ctx.plan.enqueue_warmup;
    // The endpoint, on a jobq process of its own.
    let (api_db, jobq, api) = api_only(ctx, "batch", &NO_LIMIT).await?;
    let body = Body::json(&json!({ "jobs": vec![json!({"kind": "hash", "data": "x"}); 1000] }))?;
    warm_up(&api, warmup).await?;
    // In process: the payload and options the API stores for {"kind": "hash", "data": "x"}.
    let in_db = JobqDb::create(&ctx.pg, "in-process").await?;
    let in_pool = in_db.pool(&ctx.pg).await?;
    let reqs = vec![
        EnqueueRequest {
            kind: JobKind::Hash,
            payload: json!({"data": "eA==", "repeat": 1, "algorithm": "sha256"}),
            progress_total: 0,
            options: JobOptions {
                max_attempts: 5,
                run_at: None,
                priority: 0,
                timeout: None,
                tags: Vec::new(),
            },
            owner: "default".to_owned(),
            idempotency_key: None,
            origin: None,
        };
        1000
    ];
    // COPY: into jobq's tables and into bare copies of them, in one more database.
    let copy_db = JobqDb::create(&ctx.pg, "copy").await?;
    let copy_pool = copy_db.pool(&ctx.pg).await?;
    for ddl in [
        "CREATE SCHEMA floor",
        "CREATE TABLE floor.jobs (LIKE jobq.jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
        "ALTER TABLE floor.jobs ADD PRIMARY KEY (id)",
        "CREATE TABLE floor.entries (LIKE apalis.jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
        "ALTER TABLE floor.entries ADD PRIMARY KEY (id)",
        "CREATE TABLE floor.events (LIKE jobq.job_events INCLUDING DEFAULTS INCLUDING IDENTITY)",
        "ALTER TABLE floor.events ADD PRIMARY KEY (id)",
    ] {
        sqlx::query(ddl).execute(&copy_pool).await?;
    }
    let jobq_tables = ["jobq.jobs", "apalis.jobs", "jobq.job_events"];
    let floor_tables = ["floor.jobs", "floor.entries", "floor.events"];
    // push_all, on apalis' own database.
    let apalis = ApalisDb::create(&ctx.pg, "push-all").await?;
    let mut storage = apalis.storage::<HashArgs>(QUEUE, None);

    let mut m: [Measured; 5] = std::array::from_fn(|_| Measured::empty());
    // Round 0 warms every contestant up and is not recorded.
    for round in 0..=batches {
        for k in 0..5 {
            let which = (round + k) % 5;
            let t = Instant::now();
            match which {
                0 => {
                    let (status, answer) = api.post_raw("/v1/jobs/batch", body.clone()).await?;
                    if status != 202 {
                        let text = answer.to_string();
                        bail!(
                            "batch enqueue answered {status}: {}",
                            &text[..text.len().min(300)]
                        );
                    }
                }
                1 => {
                    let done = enqueue_many(&in_pool, &reqs).await?;
                    if done.len() != reqs.len() {
                        bail!("enqueue_many accepted {} of {}", done.len(), reqs.len());
                    }
                }
                2 => copy_rows(&copy_pool, jobq_tables, 1000).await?,
                3 => copy_rows(&copy_pool, floor_tables, 1000).await?,
                _ => push_all(&mut storage, 1000).await?,
            }
            if round > 0 {
                m[which].record(t, 1000);
            }
        }
    }

    // Every contestant's rows are all there.
    let expected = (1000 + batches * 1000) as i64;
    let endpoint_rows = count_jobq_rows(ctx, &api_db).await?;
    jobq.stop().await?;
    let in_process_rows = count_apalis_rows(&in_pool).await?;
    in_pool.close().await;
    let copied: (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobq.jobs), (SELECT count(*) FROM apalis.jobs), \
         (SELECT count(*) FROM jobq.job_events), (SELECT count(*) FROM floor.jobs), \
         (SELECT count(*) FROM floor.entries), (SELECT count(*) FROM floor.events)",
    )
    .fetch_one(&copy_pool)
    .await?;
    copy_pool.close().await;
    let pushed = count_apalis_rows(&apalis.pool).await?;
    for name in [&api_db.name, &in_db.name, &copy_db.name] {
        ctx.pg.drop_db(name).await?;
    }
    apalis.drop(&ctx.pg).await?;
    if endpoint_rows != expected + warmup as i64 {
        bail!(
            "the endpoint accepted {} jobs but jobq's table holds {endpoint_rows}",
            expected + warmup as i64
        );
    }
    let e = expected;
    if (in_process_rows, copied, pushed) != (e, (e, e, e, e, e, e), e) {
        bail!(
            "expected {e} rows each: in process {in_process_rows}, copied {copied:?}, pushed {pushed}"
        );
    }
    let [endpoint, in_process, copy_into_jobq, floor, push_all] = m;
    Ok(BatchRounds {
        endpoint,
        in_process,
        copy_into_jobq,
        floor,
        push_all,
    })
}

/// One transaction writing, by COPY into `tables` (status rows, queue entries, events), the
/// rows jobq's accept statement writes for `n` hash jobs of `{"data": "x"}`: same columns and
/// values (COPY's text format).
async fn copy_rows(pool: &sqlx::PgPool, tables: [&str; 3], n: usize) -> anyhow::Result<()> {
    use std::fmt::Write as _;

    let queue = ::jobq::domain::JobKind::Hash.queue();
    let (mut jobs, mut entries, mut events) = (String::new(), String::new(), String::new());
    for _ in 0..n {
        let id = uuid::Uuid::now_v7();
        let task = ulid::Ulid::generate();
        writeln!(
            jobs,
            "{id}\thash\tqueued\t{{\"data\": \"eA==\", \"repeat\": 1, \"algorithm\": \"sha256\"}}\t0\t5\t{task}\tdefault\t0\t{{}}"
        )?;
        let args: String = format!("{{\"job_id\":\"{id}\"}}")
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        writeln!(entries, "{task}\t{queue}\t\\\\x{args}\tPending\t0\t25\t0")?;
        writeln!(
            events,
            "{id}\thash\tqueued\tqueued\t{{\"attempt\": 0}}\tdefault"
        )?;
    }
    let [jobs_table, entries_table, events_table] = tables;
    let mut tx = pool.begin().await?;
    for (statement, rows) in [
        (
            format!(
                "COPY {jobs_table} (id, kind, status, payload, progress_total, max_attempts, \
                 task_id, owner, priority, tags) FROM STDIN"
            ),
            jobs,
        ),
        (
            format!(
                "COPY {entries_table} (id, job_type, job, status, attempts, max_attempts, \
                 priority) FROM STDIN"
            ),
            entries,
        ),
        (
            format!("COPY {events_table} (job_id, kind, type, status, data, owner) FROM STDIN"),
            events,
        ),
    ] {
        let mut copy = tx.copy_in_raw(&statement).await?;
        copy.send(rows.into_bytes()).await?;
        copy.finish().await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn count_apalis_rows(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(pool)
        .await?)
}

/// `producers` tasks calling apalis' `push` (one INSERT transaction each) until `n`.
async fn apalis_push(
    ctx: &Ctx,
    label: &str,
    producers: usize,
    n: usize,
) -> anyhow::Result<Measured> {
    let db = ApalisDb::create(&ctx.pg, label).await?;
    let mut warm = db.storage::<HashArgs>(QUEUE, None);
    for _ in 0..ctx.plan.enqueue_warmup {
        warm.push(HashArgs { data: "x".into() })
            .await
            .map_err(|e| anyhow!("apalis push: {e}"))?;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let mut storage = db.storage::<HashArgs>(QUEUE, None);
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let t = Instant::now();
                storage
                    .push(HashArgs { data: "x".into() })
                    .await
                    .map_err(|e| anyhow!("apalis push: {e}"))?;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    for task in tasks {
        latencies.extend(task.await.context("producer task")??);
    }
    let seconds = start.elapsed().as_secs_f64();
    let rows = count_apalis_rows(&db.pool).await?;
    db.drop(&ctx.pg).await?;
    if rows as usize != ctx.plan.enqueue_warmup + n {
        bail!("apalis pushed {n} tasks but its table holds {rows}");
    }
    Ok(Measured {
        jobs: n,
        seconds,
        latencies,
        rejected: 0,
    })
}
