//! Scenario 7, CPU: SHA-256 of "data1", "data2", "data3" each repeated R times, as three
//! concurrent hash jobs (one batch request, jobq defaults). Throughput = bytes / (last
//! `finished_at` - first `started_at`); baseline: the same three digests computed by three
//! threads in this process with the sha2 crate (inputs tiled into 64 KiB blocks, as jobq does).
//! jobq's digests must equal the in-process ones. Meanwhile `GET /healthz` is polled every
//! 10 ms: its p99 shows whether the API stays responsive. Three small jobs run first (warm-up).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::time::MissedTickBehavior;

use crate::Ctx;
use crate::jobq::{self, Api, Jobq, JobqDb};
use crate::report::{Row, Target, Unit};
use crate::stats::Summary;

const INPUTS: [&str; 3] = ["data1", "data2", "data3"];

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let db = JobqDb::create(&ctx.pg, "cpu").await?;
    let result = async {
        let jobq = Jobq::start(&db, "cpu", &[]).await?;
        let api = Api::new(&jobq, &db.token)?;
        let pool = db.pool(&ctx.pg).await?;
        warm_up(&api, &pool).await?;
        for &repeat in &ctx.plan.cpu_repeats {
            one(ctx, &api, &pool, repeat).await?;
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
    let marker = jobq::id_marker();
    let jobs: Vec<Value> = INPUTS
        .iter()
        .map(|d| json!({"kind": "hash", "data": d, "repeat": 10_000}))
        .collect();
    api.enqueue_batch(&jobs).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    if !jobq::wait_finished(pool, marker, deadline, Duration::from_millis(20)).await? {
        bail!("the warm-up hash jobs did not finish within 60 s");
    }
    Ok(())
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

async fn one(ctx: &Ctx, api: &Api, pool: &sqlx::PgPool, repeat: u64) -> anyhow::Result<()> {
    let (base_secs, expected) = in_process(repeat).await?;
    let total_bytes: u64 = INPUTS.iter().map(|d| d.len() as u64 * repeat).sum();
    let mb = total_bytes as f64 / 1e6;

    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll_health(api.base.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let marker = jobq::id_marker();
    let jobs: Vec<Value> = INPUTS
        .iter()
        .map(|d| json!({"kind": "hash", "data": d, "repeat": repeat}))
        .collect();
    let accepted = api.enqueue_batch(&jobs).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let finished = jobq::wait_finished(pool, marker, deadline, Duration::from_millis(20)).await;
    stop.store(true, Ordering::Relaxed);
    let health = poller.await.context("healthz poller")??;
    if !finished? {
        bail!("the hash jobs did not finish within 600 s");
    }
    let span = jobq::span(pool, marker).await?;
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
    let jobq_secs = span
        .seconds_started_to_finished()
        .context("no timestamps")?;
    let total_secs = span
        .seconds_created_to_finished()
        .context("no timestamps")?;
    let health_summary = Summary::of(&health);
    let size = format!("3 x {:.0} MB", mb / 3.0);
    ctx.detail(
        &format!("repeat {repeat}"),
        json!({
            "bytes": total_bytes,
            "jobq_seconds_first_started_to_last_finished": jobq_secs,
            "jobq_seconds_created_to_last_finished": total_secs,
            "in_process_seconds": base_secs,
            "healthz_ms": health_summary,
        }),
    );
    ctx.row(
        Row::new(format!("cpu {size} SHA-256: throughput"), Unit::MBps)
            .jobq(Some(mb / jobq_secs))
            .baseline(Some(mb / base_secs))
            .target(Target::RatioAtLeast { ratio: 0.8 })
            .note("first started -> last finished; baseline: 3 threads, sha2 in process"),
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
