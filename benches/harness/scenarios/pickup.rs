//! Scenario 3, pickup latency: an idle worker; jobs enqueued one at a time at a steady pace;
//! enqueue to `running`.
//!
//! jobq (defaults, `--role all`): `started_at - created_at` of each status row (`created_at` is
//! the enqueue transaction's start, so the figure includes its commit). apalis (defaults,
//! NOTIFY): each task pushed in a transaction of ours whose `now()` is noted, to the moment its
//! handler starts (taken in the handler).
//!
//! A CHECKPOINT precedes each side's paced run, as it does every processing run, so that
//! neither side meets the writing-out of what came before it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::time::MissedTickBehavior;

use crate::Ctx;
use crate::baseline::{self, ApalisDb, Arrivals, QUEUE, SeqArgs};
use crate::jobq::{self, Api, Jobq, JobqDb};
use crate::report::{Row, Target, Unit};
use crate::stats::{Summary, ms_between};

const WARM_UP: usize = 5;

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let (jobq, fetches) = jobq_latencies(ctx).await?;
    let apalis = apalis_latencies(ctx).await?;
    let (j, a) = (Summary::of(&jobq), Summary::of(&apalis));
    ctx.detail("jobq", json!({ "latency_ms": j }));
    ctx.detail("apalis", json!({ "latency_ms": a }));
    let note = format!(
        "{} jobs at {}/s, idle worker; jobq created_at->started_at, apalis push tx->handler",
        ctx.plan.paced_jobs, ctx.plan.pace_per_sec
    );
    ctx.row(
        Row::new("pickup latency p50", Unit::Ms)
            .jobq(j.map(|s| s.p50))
            .baseline(a.map(|s| s.p50))
            .target(Target::AtMost { value: 5.0 })
            .note(note),
    );
    ctx.row(
        Row::new("pickup latency p99", Unit::Ms)
            .jobq(j.map(|s| s.p99))
            .baseline(a.map(|s| s.p99))
            .target(Target::AtMost { value: 20.0 }),
    );
    ctx.row(
        Row::new("pickup latency max", Unit::Ms)
            .jobq(j.map(|s| s.max))
            .baseline(a.map(|s| s.max)),
    );
    ctx.detail("jobq fetches", json!(fetches));
    ctx.row(
        Row::new("pickup: jobq fetches that found nothing", Unit::Count)
            .jobq(Some(fetches.empty))
            .note(format!(
                "from /metrics, during the paced run: {} fetches took the {} jobs",
                fetches.taken, ctx.plan.paced_jobs
            )),
    );
    Ok(())
}

/// The hash worker's fetches (`jobq_queue_fetches_total`) during the paced run.
#[derive(Clone, Copy, Default, serde::Serialize)]
struct Fetches {
    taken: f64,
    empty: f64,
}

impl Fetches {
    async fn read(api: &Api) -> anyhow::Result<Self> {
        let metrics = api.metrics().await?;
        let series = |result: &str| {
            jobq::counter(
                &metrics,
                &format!(r#"jobq_queue_fetches_total{{kind="hash",result="{result}"}}"#),
            )
        };
        Ok(Self {
            taken: series("taken"),
            empty: series("empty"),
        })
    }
}

fn pacer(per_sec: u32) -> tokio::time::Interval {
    let mut ticker =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(per_sec.max(1))));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

async fn jobq_latencies(ctx: &Ctx) -> anyhow::Result<(Vec<f64>, Fetches)> {
    let db = JobqDb::create(&ctx.pg, "pickup").await?;
    let result = async {
        let jobq = Jobq::start(&db, "pickup", &[]).await?;
        let api = Api::new(&jobq, &db.token)?;
        let pool = db.pool(&ctx.pg).await?;
        let warm = jobq::id_marker();
        for _ in 0..WARM_UP {
            api.enqueue_hash("x", 1).await?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        if !jobq::wait_finished(&pool, warm, deadline, ctx.plan.poll).await? {
            bail!("warm-up jobs did not finish within 30 s");
        }
        ctx.pg.checkpoint().await?;
        let before = Fetches::read(&api).await?;
        let mut ticker = pacer(ctx.plan.pace_per_sec);
        let mut ids = Vec::with_capacity(ctx.plan.paced_jobs);
        for _ in 0..ctx.plan.paced_jobs {
            ticker.tick().await;
            ids.push(api.enqueue_hash("x", 1).await?.id);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        if !jobq::wait_finished(&pool, warm, deadline, ctx.plan.poll).await? {
            bail!("paced jobs did not finish within 30 s of the last enqueue");
        }
        let after = Fetches::read(&api).await?;
        let fetches = Fetches {
            taken: after.taken - before.taken,
            empty: after.empty - before.empty,
        };
        let latencies = jobq::pickup_ms(&pool, &ids).await?;
        pool.close().await;
        jobq.stop().await?;
        Ok((latencies, fetches))
    }
    .await;
    ctx.pg.drop_db(&db.name).await?;
    result
}

async fn apalis_latencies(ctx: &Ctx) -> anyhow::Result<Vec<f64>> {
    let db = ApalisDb::create(&ctx.pg, "pickup").await?;
    let result = async {
        let arrivals = Arrivals::default();
        let worker = baseline::start_seq_worker(&db, arrivals.clone());
        let arrived = |seq: u64| {
            arrivals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&seq)
                .copied()
        };
        // Warm-up tasks (sequence numbers above the measured ones) also prove the worker listens.
        // A task pushed before the worker's LISTEN is up is announced to nobody, and apalis then
        // looks only at its 30 s heartbeat (seen once in a CI smoke run): while a warm-up task
        // waits, another is pushed every second, whose NOTIFY makes the worker fetch both.
        const WARM_FIRST: u64 = 1_000_000;
        let mut warm_seq = WARM_FIRST;
        let deadline = Instant::now() + Duration::from_secs(30);
        for _ in 0..WARM_UP {
            let awaited = warm_seq;
            let mut nudge_at = Instant::now();
            while arrived(awaited).is_none() {
                if Instant::now() > deadline {
                    bail!("the apalis worker did not pick up warm-up tasks within 30 s");
                }
                if Instant::now() >= nudge_at {
                    db.push_in_tx(QUEUE, &[args(warm_seq)]).await?;
                    warm_seq += 1;
                    nudge_at = Instant::now() + Duration::from_secs(1);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // Every nudge, too, has run before the clock starts.
        while (WARM_FIRST..warm_seq).any(|seq| arrived(seq).is_none()) {
            if Instant::now() > deadline {
                bail!("the apalis worker did not run every warm-up task within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ctx.pg.checkpoint().await?;
        let mut ticker = pacer(ctx.plan.pace_per_sec);
        let mut pushed: HashMap<u64, DateTime<Utc>> = HashMap::new();
        for i in 0..ctx.plan.paced_jobs as u64 {
            ticker.tick().await;
            pushed.insert(i, db.push_in_tx(QUEUE, &[args(i)]).await?);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let latencies = loop {
            let seen: Vec<f64> = pushed
                .iter()
                .filter_map(|(seq, at)| arrived(*seq).map(|t| ms_between(*at, t)))
                .collect();
            if seen.len() == pushed.len() {
                break seen;
            }
            if Instant::now() > deadline {
                bail!(
                    "apalis ran {} of {} paced tasks within 30 s",
                    seen.len(),
                    pushed.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        worker.stop().await.context("stop the apalis worker")?;
        Ok(latencies)
    }
    .await;
    db.drop(&ctx.pg).await?;
    result
}

fn args(seq: u64) -> SeqArgs {
    SeqArgs {
        data: "x".to_owned(),
        seq,
    }
}
