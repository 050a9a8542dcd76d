//! Scenario 7, CPU: SHA-256 of "data1", "data2", "data3" each repeated R times, as three
//! concurrent hash jobs (one batch request, jobq defaults). Throughput = bytes / (last
//! `finished_at` - first `started_at`); baseline: the same three digests computed by three
//! threads in this process with the sha2 crate (inputs tiled into 64 KiB blocks, as jobq does).
//! Sizes up to 100 MB in all are measured nine times, alternately, and the medians compared.
//! jobq's digests must equal the in-process ones. Meanwhile `GET /healthz` is polled every
//! 10 ms: its p99 shows whether the API stays responsive. Three small jobs run first (warm-up).
//!
//! What bounds the small case is measured too: the same three jobs with a 5-byte input (hashed
//! inline, microseconds), ten times. Their first started -> last finished is an attempt's fixed
//! cost (the fetch statement and its commit, dispatch, the recorded outcomes), which no input
//! size avoids; in-process time / (in-process time + fixed cost) is the most any size can reach.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::time::MissedTickBehavior;

use crate::Ctx;
use crate::jobq::{self, Accepted, Api, Jobq, JobqDb, Span};
use crate::report::{Row, Target, Unit};
use crate::stats::{Summary, percentile};

const INPUTS: [&str; 3] = ["data1", "data2", "data3"];

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let db = JobqDb::create(&ctx.pg, "cpu").await?;
    let result = async {
        let jobq = Jobq::start(&db, "cpu", &[]).await?;
        let api = Api::new(&jobq, &db.token)?;
        let pool = db.pool(&ctx.pg).await?;
        warm_up(&api, &pool).await?;
        let fixed = fixed_cost(ctx, &api, &pool).await?;
        for &repeat in &ctx.plan.cpu_repeats {
            one(ctx, &api, &pool, repeat, fixed).await?;
        }
        pool.close().await;
        jobq.stop().await
    }
    .await;
    ctx.pg.drop_db(&db.name).await?;
    result
}

/// Three small hash jobs (50 KB each: on the blocking pool, like the measured ones) run to the
/// end first, so that the measured runs meet a process in its steady state: connections open,
/// statements prepared, blocking threads started.
async fn warm_up(api: &Api, pool: &sqlx::PgPool) -> anyhow::Result<()> {
    run_three(
        api,
        pool,
        10_000,
        Duration::from_secs(60),
        Duration::from_millis(20),
    )
    .await?;
    Ok(())
}

/// The three inputs, each repeated `repeat` times, as one batch of hash jobs run to the end:
/// the accepted jobs and their span. Fails if they do not all finish within `within`.
async fn run_three(
    api: &Api,
    pool: &sqlx::PgPool,
    repeat: u64,
    within: Duration,
    poll: Duration,
) -> anyhow::Result<(Vec<Accepted>, Span)> {
    let marker = jobq::id_marker();
    let jobs: Vec<Value> = INPUTS
        .iter()
        .map(|d| json!({"kind": "hash", "data": d, "repeat": repeat}))
        .collect();
    let accepted = api.enqueue_batch(&jobs).await?;
    if !jobq::wait_finished(pool, marker, Instant::now() + within, poll).await? {
        bail!("three hash jobs ({repeat} repeats) did not finish within {within:?}");
    }
    let span = jobq::span(pool, marker).await?;
    // The next batch's id marker must not cover these jobs.
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok((accepted, span))
}

/// Three hash jobs of 5 bytes each, one batch at a time, `ROUNDS` times: the median of first
/// started -> last finished, in seconds, with a row of its own.
async fn fixed_cost(ctx: &Ctx, api: &Api, pool: &sqlx::PgPool) -> anyhow::Result<f64> {
    const ROUNDS: usize = 10;
    let mut spans = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let (_, span) = run_three(
            api,
            pool,
            1,
            Duration::from_secs(60),
            Duration::from_millis(5),
        )
        .await?;
        if span.succeeded != INPUTS.len() as i64 {
            bail!("{} of 3 tiny hash jobs succeeded", span.succeeded);
        }
        spans.push(
            span.seconds_started_to_finished()
                .context("no timestamps")?
                * 1000.0,
        );
    }
    let summary = Summary::of(&spans).context("no rounds")?;
    ctx.detail(
        "fixed cost (3 x 5 bytes)",
        json!({ "ms": spans, "summary": summary }),
    );
    ctx.row(
        Row::new("cpu 3 x 5 bytes: first started -> last finished", Unit::Ms)
            .jobq(Some(summary.p50))
            .note(format!(
                "the fixed cost of an attempt: p50 of {ROUNDS} batches (max {:.1} ms)",
                summary.max
            )),
    );
    Ok(summary.p50 / 1000.0)
}

/// SHA-256 of `data` repeated `repeat` times, hex.
fn digest(data: &[u8], repeat: u64) -> String {
    let mut hasher = Sha256::new();
    let per_block = (64 * 1024 / data.len().max(1)).max(1) as u64;
    let block = data.repeat(per_block as usize);
    let mut left = repeat;
    while left >= per_block {
        hasher.update(&block);
        left -= per_block;
    }
    for _ in 0..left {
        hasher.update(data);
    }
    hex::encode(hasher.finalize())
}

/// The three digests on three threads at once: (seconds, digests).
async fn in_process(repeat: u64) -> anyhow::Result<(f64, Vec<String>)> {
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let digests = std::thread::scope(|s| {
            let handles: Vec<_> = INPUTS
                .iter()
                .map(|d| s.spawn(move || digest(d.as_bytes(), repeat)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("hash thread panicked"))
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })?;
        Ok((start.elapsed().as_secs_f64(), digests))
    })
    .await
    .context("in-process hashing")?
}

/// Polls `GET /healthz` every 10 ms until `stop`; latencies in ms.
fn poll_health(
    base: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<anyhow::Result<Vec<f64>>> {
    tokio::spawn(async move {
        let client = jobq::http_client()?;
        let url = format!("{base}/healthz");
        let mut ticker = tokio::time::interval(Duration::from_millis(10));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut latencies = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            ticker.tick().await;
            let t = Instant::now();
            let response = client.get(&url).send().await.context("GET /healthz")?;
            let status = response.status();
            let _ = response.bytes().await;
            if !status.is_success() {
                bail!("GET /healthz answered {status}");
            }
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(latencies)
    })
}

/// One measurement of the three digests: in process, then as three jobq jobs.
#[derive(Debug, serde::Serialize)]
struct Run {
    in_process_secs: f64,
    started_to_finished_secs: f64,
    created_to_finished_secs: f64,
}

async fn measure(api: &Api, pool: &sqlx::PgPool, repeat: u64) -> anyhow::Result<Run> {
    let (in_process_secs, expected) = in_process(repeat).await?;
    let (accepted, span) = run_three(
        api,
        pool,
        repeat,
        Duration::from_secs(600),
        Duration::from_millis(20),
    )
    .await?;
    for (job, want) in accepted.iter().zip(&expected) {
        let got = api.get_job(job.id).await?;
        let digest = got["result"]["digest_hex"].as_str().unwrap_or_default();
        if digest != want {
            bail!(
                "job {} computed {digest:?}, sha2 in process {want:?}",
                job.id
            );
        }
    }
    Ok(Run {
        in_process_secs,
        started_to_finished_secs: span
            .seconds_started_to_finished()
            .context("no timestamps")?,
        created_to_finished_secs: span
            .seconds_created_to_finished()
            .context("no timestamps")?,
    })
}

async fn one(
    ctx: &Ctx,
    api: &Api,
    pool: &sqlx::PgPool,
    repeat: u64,
    fixed_secs: f64,
) -> anyhow::Result<()> {
    let total_bytes: u64 = INPUTS.iter().map(|d| d.len() as u64 * repeat).sum();
    let mb = total_bytes as f64 / 1e6;
    // A run of a few milliseconds is at the mercy of this shared machine: small sizes are
    // measured nine times (alternately in process and by jobq) and the medians compared.
    let rounds = if total_bytes <= 100_000_000 { 9 } else { 1 };

    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll_health(api.base.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let measured = async {
        let mut runs = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            runs.push(measure(api, pool, repeat).await?);
        }
        anyhow::Ok(runs)
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    let health = poller.await.context("healthz poller")??;
    let runs = measured?;
    let median = |f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        percentile(&v, 50.0)
    };
    let base_secs = median(|r| r.in_process_secs);
    let jobq_secs = median(|r| r.started_to_finished_secs);
    let total_secs = median(|r| r.created_to_finished_secs);
    let health_summary = Summary::of(&health);
    let size = format!("3 x {:.0} MB", mb / 3.0);
    ctx.detail(
        &format!("repeat {repeat}"),
        json!({
            "bytes": total_bytes,
            "rounds": runs,
            "median_jobq_seconds_first_started_to_last_finished": jobq_secs,
            "median_jobq_seconds_created_to_last_finished": total_secs,
            "median_in_process_seconds": base_secs,
            "healthz_ms": health_summary,
        }),
    );
    ctx.row(
        Row::new(format!("cpu {size} SHA-256: throughput"), Unit::MBps)
            .jobq(Some(mb / jobq_secs))
            .baseline(Some(mb / base_secs))
            .target(Target::RatioAtLeast { ratio: 0.8 })
            .note(format!(
                "first started -> last finished, median of {rounds}; baseline: 3 threads, sha2 \
                 in process; at most {:.2}x with the fixed cost above",
                base_secs / (base_secs + fixed_secs)
            )),
    );
    ctx.row(
        Row::new(format!("cpu {size}: enqueue to last finished"), Unit::Secs)
            .jobq(Some(total_secs))
            .baseline(Some(base_secs)),
    );
    ctx.row(
        Row::new(format!("cpu {size}: GET /healthz p99 meanwhile"), Unit::Ms)
            .jobq(health_summary.map(|s| s.p99))
            .target(Target::AtMost { value: 20.0 })
            .note(format!(
                "{} polls every 10 ms, max {:.1} ms",
                health.len(),
                health_summary.map_or(f64::NAN, |s| s.max)
            )),
    );
    Ok(())
}
