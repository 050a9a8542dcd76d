//! Scenario 4, event latency (jobq only: bare apalis has no event stream, the baseline is "-").
//!
//! One WebSocket subscriber (`?kinds=hash`); jobs enqueued at a steady pace; for each job the
//! `succeeded` event's arrival is compared with the event's `created_at` (the writing
//! transaction's start, database clock) and with the job's `created_at` (enqueue). Then one
//! job at a time is fanned out to many subscribers: arrival at each vs the event's
//! `created_at`, and the arrival at the last subscriber.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use anyhow::bail;
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use uuid::Uuid;

use crate::Ctx;
use crate::jobq::{Api, Jobq, JobqDb};
use crate::report::{Row, Target, Unit};
use crate::stats::{Summary, ms_between};
use crate::ws::{self, Seen};

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let db = JobqDb::create(&ctx.pg, "events").await?;
    let result = async {
        let jobq = Jobq::start(&db, "events", &[]).await?;
        let api = Api::new(&jobq, &db.token)?;
        latency(ctx, &api).await?;
        fan_out(ctx, &api).await?;
        jobq.stop().await
    }
    .await;
    ctx.pg.drop_db(&db.name).await?;
    result
}

type Events = mpsc::UnboundedReceiver<(usize, Seen)>;

/// Waits for the `succeeded` events of `jobs` at `subscribers` subscribers each.
async fn collect(
    rx: &mut Events,
    jobs: &HashSet<Uuid>,
    subscribers: usize,
    timeout: Duration,
) -> Vec<(usize, Seen)> {
    let want = jobs.len() * subscribers;
    let deadline = Instant::now() + timeout;
    let mut got = Vec::with_capacity(want);
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((i, seen))) if jobs.contains(&seen.job_id) => got.push((i, seen)),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    got
}

async fn latency(ctx: &Ctx, api: &Api) -> anyhow::Result<()> {
    let subscriber = ws::connect(
        &api.ws_url("?kinds=hash"),
        &api.token,
        Duration::from_secs(10),
    )
    .await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let reader = tokio::spawn(ws::read_events(
        subscriber,
        0,
        "succeeded",
        tx,
        Arc::new(AtomicUsize::new(1)),
    ));

    // Warm-up: the first events of a process (connections, caches) are not measured.
    let mut warm = HashSet::new();
    for _ in 0..3 {
        warm.insert(api.enqueue_hash("x", 1).await?.id);
    }
    if collect(&mut rx, &warm, 1, Duration::from_secs(30))
        .await
        .len()
        < warm.len()
    {
        bail!("the subscriber did not get the warm-up jobs' events within 30 s");
    }

    let mut ticker = tokio::time::interval(Duration::from_secs_f64(
        1.0 / f64::from(ctx.plan.pace_per_sec.max(1)),
    ));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut created: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
    for _ in 0..ctx.plan.paced_jobs {
        ticker.tick().await;
        let job = api.enqueue_hash("x", 1).await?;
        created.insert(job.id, job.created_at);
    }
    let ids: HashSet<Uuid> = created.keys().copied().collect();
    let got = collect(&mut rx, &ids, 1, Duration::from_secs(30)).await;
    reader.abort();
    if got.len() < ids.len() {
        bail!(
            "the subscriber got {} of {} succeeded events within 30 s",
            got.len(),
            ids.len()
        );
    }
    let event_ms: Vec<f64> = got.iter().map(|(_, s)| s.latency_ms()).collect();
    let e2e_ms: Vec<f64> = got
        .iter()
        .filter_map(|(_, s)| created.get(&s.job_id).map(|c| ms_between(*c, s.arrived)))
        .collect();
    let (event, e2e) = (Summary::of(&event_ms), Summary::of(&e2e_ms));
    ctx.detail(
        "one subscriber",
        json!({ "jobs": ids.len(), "event_to_subscriber_ms": event, "enqueue_to_succeeded_event_ms": e2e }),
    );
    let note = format!(
        "{} jobs at {}/s; event created_at -> arrival at the subscriber",
        ids.len(),
        ctx.plan.pace_per_sec
    );
    ctx.row(
        Row::new("event to subscriber p50", Unit::Ms)
            .jobq(event.map(|s| s.p50))
            .note(note),
    );
    ctx.row(
        Row::new("event to subscriber p99", Unit::Ms)
            .jobq(event.map(|s| s.p99))
            .target(Target::AtMost { value: 50.0 }),
    );
    ctx.row(
        Row::new("enqueue to `succeeded` at subscriber p50", Unit::Ms)
            .jobq(e2e.map(|s| s.p50))
            .note("job created_at -> arrival of its succeeded event"),
    );
    ctx.row(
        Row::new("enqueue to `succeeded` at subscriber p99", Unit::Ms).jobq(e2e.map(|s| s.p99)),
    );
    Ok(())
}

async fn fan_out(ctx: &Ctx, api: &Api) -> anyhow::Result<()> {
    let n = ctx.plan.fanout_subscribers;
    let url = api.ws_url("?kinds=hash");
    let clock = Instant::now();
    let (connected, errors) = ws::connect_many(&url, &api.token, n, 100).await;
    if let Some(e) = errors.first() {
        bail!(
            "{} of {n} subscribers could not connect; first error: {e}",
            errors.len()
        );
    }
    ctx.log(format!(
        "{n} subscribers connected in {:.1} s",
        clock.elapsed().as_secs_f64()
    ));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let open = Arc::new(AtomicUsize::new(n));
    let mut readers = JoinSet::new();
    for (i, ws) in connected.into_iter().enumerate() {
        readers.spawn(ws::read_events(
            ws,
            i,
            "succeeded",
            tx.clone(),
            open.clone(),
        ));
    }
    drop(tx);

    let mut samples = Vec::new();
    let mut last = Vec::new();
    for _ in 0..ctx.plan.fanout_jobs {
        let job = api.enqueue_hash("x", 1).await?;
        let one: HashSet<Uuid> = [job.id].into();
        let got = collect(&mut rx, &one, n, Duration::from_secs(30)).await;
        if got.len() < n {
            bail!(
                "{} of {n} subscribers got job {}'s succeeded event within 30 s",
                got.len(),
                job.id
            );
        }
        let ms: Vec<f64> = got.iter().map(|(_, s)| s.latency_ms()).collect();
        last.push(ms.iter().copied().fold(f64::MIN, f64::max));
        samples.extend(ms);
    }
    readers.abort_all();
    let all = Summary::of(&samples);
    let last_one = Summary::of(&last);
    ctx.detail(
        "fan-out",
        json!({ "subscribers": n, "jobs": ctx.plan.fanout_jobs, "event_to_subscriber_ms": all, "event_to_last_subscriber_ms": last_one }),
    );
    let note = format!(
        "{} jobs one after another, each event to all {n} subscribers",
        ctx.plan.fanout_jobs
    );
    ctx.row(
        Row::new(format!("fan-out to {n} subscribers p50"), Unit::Ms)
            .jobq(all.map(|s| s.p50))
            .note(note),
    );
    ctx.row(
        Row::new(format!("fan-out to {n} subscribers p99"), Unit::Ms)
            .jobq(all.map(|s| s.p99))
            .target(Target::AtMost { value: 100.0 }),
    );
    ctx.row(
        Row::new(
            format!("fan-out: until the last of {n} has it (max)"),
            Unit::Ms,
        )
        .jobq(last_one.map(|s| s.max))
        .note(format!(
            "median over events {:.1} ms",
            last_one.map_or(f64::NAN, |s| s.p50)
        )),
    );
    Ok(())
}
