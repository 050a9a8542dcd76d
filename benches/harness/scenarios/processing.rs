//! Scenario 2, processing: a backlog of tiny hash jobs (`{"data": "x"}`) run to `succeeded`.
//!
//! jobq: the backlog is enqueued over HTTP by a `--role api` process, which then exits; a
//! `--role worker` process is started and the run is measured from the status rows: jobs /
//! (last `finished_at` - first `started_at`). apalis: the same backlog pushed with `push_all`
//! (1000 per call), then a worker with NOTIFY pickup; jobs / (last `done_at` - first `lock_at`).
//! A CHECKPOINT precedes every measured run. A run slower than the plan's cap is cut short and
//! reports the rate of what it finished (marked partial).
//!
//! Settings: "defaults" is each at its own defaults (jobq: hash concurrency 128, fetch batch
//! 64; apalis: batch 10, no concurrency limit). "c=N" sets the
//! concurrency on both (apalis keeps batch 10). "matched" also sets the same fetch batch on both, min(20, N) (jobq
//! never fetches more than it can run). The history rows repeat defaults and matched c=8 with
//! a million finished jobs already in the tables (see `seed`).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use serde_json::{Value, json};

use crate::Ctx;
use crate::baseline::{self, ApalisDb, Counter, QUEUE};
use crate::jobq::{self, Api, Jobq, JobqDb};
use crate::report::{Row, Target, Unit};
use crate::seed;

/// The outcome of one processing run.
#[derive(Debug, Clone)]
struct Run {
    label: String,
    rate: Option<f64>,
    done: i64,
    complete: bool,
    wall_seconds: f64,
}

impl Run {
    fn note(&self, n: usize, cap: Duration) -> Option<String> {
        (!self.complete).then(|| {
            format!(
                "{} partial: {} of {n} done within {} s",
                self.label,
                self.done,
                cap.as_secs()
            )
        })
    }
}

fn notes(base: String, runs: &[&Run], n: usize, cap: Duration) -> String {
    let mut parts = vec![base];
    parts.extend(runs.iter().filter_map(|r| r.note(n, cap)));
    parts.join("; ")
}

fn matched_batch(c: usize) -> usize {
    c.min(20)
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let plan = &ctx.plan;
    let (n, cap) = (plan.processing_jobs, plan.processing_cap);

    let j_def = jobq_run(ctx, None, "defaults", &[]).await?;
    let a_def = apalis_run(ctx, None, "defaults", None, None).await?;
    ctx.row(
        Row::new(format!("processing {n} jobs, defaults"), Unit::JobsPerSec)
            .jobq(j_def.rate)
            .baseline(a_def.rate)
            .target(Target::AtLeast { value: 10_000.0 })
            .target(Target::RatioAtLeast { ratio: 3.0 })
            .note(notes(
                "jobq defaults (hash concurrency 128, fetch batch 64); apalis defaults (batch 10, no concurrency limit)".to_owned(),
                &[&j_def, &a_def],
                n,
                cap,
            )),
    );

    let mut matched_runs: Vec<(usize, Run)> = Vec::new();
    for &c in &plan.concurrencies {
        let cs = c.to_string();
        let j = jobq_run(ctx, None, &format!("c{c}"), &["--hash-concurrency", &cs]).await?;
        let a = apalis_run(ctx, None, &format!("c{c}"), None, Some(c)).await?;
        ctx.row(
            Row::new(format!("processing {n} jobs, c={c}"), Unit::JobsPerSec)
                .jobq(j.rate)
                .baseline(a.rate)
                .note(notes(
                    format!("jobq --hash-concurrency {c}; apalis concurrency {c}, batch 10"),
                    &[&j, &a],
                    n,
                    cap,
                )),
        );
        let b = matched_batch(c);
        let bs = b.to_string();
        let jm = jobq_run(
            ctx,
            None,
            &format!("c{c}-b{b}"),
            &["--hash-concurrency", &cs, "--fetch-batch-size", &bs],
        )
        .await?;
        let am = apalis_run(ctx, None, &format!("c{c}-b{b}"), Some(b), Some(c)).await?;
        ctx.row(
            Row::new(
                format!("processing {n} jobs, c={c} batch={b} (matched)"),
                Unit::JobsPerSec,
            )
            .jobq(jm.rate)
            .baseline(am.rate)
            .target(Target::RatioAtLeast { ratio: 0.9 })
            .note(notes(
                format!("both concurrency {c}, fetch batch {b}"),
                &[&jm, &am],
                n,
                cap,
            )),
        );
        matched_runs.push((c, jm));
    }
    let matched_c8 = matched_runs
        .iter()
        .find(|(c, _)| *c == 8)
        .or(matched_runs.last())
        .cloned();

    // History: templates seeded once, copied per run.
    let rows = plan.history_rows;
    ctx.log(format!(
        "seeding {rows} finished jobs (jobq and apalis templates)"
    ));
    let seeding = Instant::now();
    let jobq_template = jobq_template(ctx, rows).await?;
    let apalis_template = apalis_template(ctx, rows).await?;
    ctx.detail(
        "history seeding",
        json!({ "rows": rows, "seconds": seeding.elapsed().as_secs_f64() }),
    );
    let history = history_runs(ctx, &jobq_template, &apalis_template, &j_def, matched_c8).await;
    ctx.pg.drop_db(&jobq_template.name).await?;
    ctx.pg.drop_db(&apalis_template).await?;
    history
}

async fn history_runs(
    ctx: &Ctx,
    jobq_template: &JobqDb,
    apalis_template: &str,
    j_def: &Run,
    matched: Option<(usize, Run)>,
) -> anyhow::Result<()> {
    let (n, cap, rows) = (
        ctx.plan.processing_jobs,
        ctx.plan.processing_cap,
        ctx.plan.history_rows,
    );
    let history = format!("{rows} finished");
    let jh = jobq_run(ctx, Some(jobq_template), "hist-defaults", &[]).await?;
    let ah = apalis_run(ctx, Some(apalis_template), "hist-defaults", None, None).await?;
    ctx.row(
        Row::new(
            format!("processing {n} jobs, defaults, {history}"),
            Unit::JobsPerSec,
        )
        .jobq(jh.rate)
        .baseline(ah.rate)
        .target(Target::OwnAtLeast {
            ratio: 0.8,
            reference: j_def.rate,
            of: "jobq empty".to_owned(),
        })
        .note(notes(
            format!("as `defaults` with {history} jobs in the tables"),
            &[&jh, &ah],
            n,
            cap,
        )),
    );
    if let Some((c, jm)) = matched {
        let b = matched_batch(c);
        let (cs, bs) = (c.to_string(), b.to_string());
        let jh = jobq_run(
            ctx,
            Some(jobq_template),
            &format!("hist-c{c}-b{b}"),
            &["--hash-concurrency", &cs, "--fetch-batch-size", &bs],
        )
        .await?;
        let ah = apalis_run(
            ctx,
            Some(apalis_template),
            &format!("hist-c{c}-b{b}"),
            Some(b),
            Some(c),
        )
        .await?;
        ctx.row(
            Row::new(
                format!("processing {n} jobs, c={c} batch={b}, {history}"),
                Unit::JobsPerSec,
            )
            .jobq(jh.rate)
            .baseline(ah.rate)
            .target(Target::OwnAtLeast {
                ratio: 0.8,
                reference: jm.rate,
                of: "jobq empty".to_owned(),
            })
            .note(notes(
                format!("as `c={c} batch={b} (matched)` with {history} jobs in the tables"),
                &[&jh, &ah],
                n,
                cap,
            )),
        );
    }
    Ok(())
}

/// A jobq database with `rows` finished jobs, copied from one job jobq really ran.
async fn jobq_template(ctx: &Ctx, rows: i64) -> anyhow::Result<JobqDb> {
    let db = JobqDb::create(&ctx.pg, "history").await?;
    let jobq = Jobq::start(&db, "history-template", &[]).await?;
    let api = Api::new(&jobq, &db.token)?;
    let marker = jobq::id_marker();
    let job = api.enqueue_hash("x", 1).await?;
    let pool = db.pool(&ctx.pg).await?;
    let finished = jobq::wait_finished(
        &pool,
        marker,
        Instant::now() + Duration::from_secs(60),
        Duration::from_millis(50),
    )
    .await?;
    anyhow::ensure!(finished, "the template job did not finish within 60 s");
    jobq.stop().await?;
    seed::jobq_history(&pool, job.id, rows).await?;
    pool.close().await;
    Ok(db)
}

/// An apalis database with `rows` Done tasks; returns its name.
async fn apalis_template(ctx: &Ctx, rows: i64) -> anyhow::Result<String> {
    let db = ApalisDb::create(&ctx.pg, "history").await?;
    seed::apalis_history(&db.pool, QUEUE, rows).await?;
    db.pool.close().await;
    Ok(db.name)
}

async fn jobq_run(
    ctx: &Ctx,
    template: Option<&JobqDb>,
    label: &str,
    flags: &[&str],
) -> anyhow::Result<Run> {
    let db = match template {
        Some(t) => JobqDb::copy(&ctx.pg, t, label).await?,
        None => JobqDb::create(&ctx.pg, label).await?,
    };
    let result = measure_jobq(ctx, &db, label, flags).await;
    ctx.pg.drop_db(&db.name).await?;
    let (run, detail) = result?;
    ctx.detail(&format!("jobq {label}"), detail);
    Ok(run)
}

async fn measure_jobq(
    ctx: &Ctx,
    db: &JobqDb,
    label: &str,
    flags: &[&str],
) -> anyhow::Result<(Run, Value)> {
    let (n, cap, poll) = (
        ctx.plan.processing_jobs,
        ctx.plan.processing_cap,
        ctx.plan.poll,
    );
    let pool = db.pool(&ctx.pg).await?;
    let api_process = Jobq::start(
        db,
        &format!("{label}-api"),
        &["--role", "api", "--enqueue-rate-limit", "0"],
    )
    .await?;
    let api = Api::new(&api_process, &db.token)?;
    let marker = jobq::id_marker();
    let accepted = api
        .enqueue_many(&json!({"kind": "hash", "data": "x"}), n)
        .await?;
    anyhow::ensure!(accepted.len() == n, "{} of {n} accepted", accepted.len());
    api_process.stop().await?;
    ctx.pg.checkpoint().await?;

    let mut all = vec!["--role", "worker"];
    all.extend_from_slice(flags);
    let released = Utc::now();
    let clock = Instant::now();
    let worker = Jobq::start(db, &format!("{label}-worker"), &all).await?;
    let complete = jobq::wait_finished(&pool, marker, clock + cap, poll).await?;
    let wall_seconds = clock.elapsed().as_secs_f64();
    let span = jobq::span(&pool, marker).await?;
    worker.stop().await?;
    pool.close().await;
    let run = Run {
        label: format!("jobq {label}"),
        rate: span.rate(),
        done: span.succeeded,
        complete,
        wall_seconds,
    };
    ctx.log(format!(
        "jobq {label}: {} jobs in {:.2} s (db timestamps) = {:.0}/s{}",
        span.succeeded,
        span.seconds_started_to_finished().unwrap_or(f64::NAN),
        run.rate.unwrap_or(f64::NAN),
        if complete { "" } else { " (partial)" }
    ));
    let detail = json!({
        "flags": flags,
        "jobs": n,
        "succeeded": span.succeeded,
        "complete": complete,
        "first_started": span.first_started,
        "last_finished": span.last_finished,
        "seconds": span.seconds_started_to_finished(),
        "jobs_per_sec": run.rate,
        "released_at": released,
        "wall_seconds_from_process_start": run.wall_seconds,
    });
    Ok((run, detail))
}

async fn apalis_run(
    ctx: &Ctx,
    template: Option<&str>,
    label: &str,
    batch: Option<usize>,
    concurrency: Option<usize>,
) -> anyhow::Result<Run> {
    let db = match template {
        Some(t) => ApalisDb::copy(&ctx.pg, t, label).await?,
        None => ApalisDb::create(&ctx.pg, label).await?,
    };
    let result = measure_apalis(ctx, &db, label, batch, concurrency).await;
    db.drop(&ctx.pg).await?;
    let (run, detail) = result?;
    ctx.detail(&format!("apalis {label}"), detail);
    Ok(run)
}

async fn measure_apalis(
    ctx: &Ctx,
    db: &ApalisDb,
    label: &str,
    batch: Option<usize>,
    concurrency: Option<usize>,
) -> anyhow::Result<(Run, Value)> {
    let (n, cap, poll) = (
        ctx.plan.processing_jobs,
        ctx.plan.processing_cap,
        ctx.plan.poll,
    );
    let marker = baseline::id_marker();
    db.push_backlog(n).await.context("push the backlog")?;
    ctx.pg.checkpoint().await?;
    let handled = Counter::default();
    let clock = Instant::now();
    let worker = baseline::start_hash_worker(db, batch, concurrency, handled.clone());
    let complete = db.wait_done(QUEUE, &marker, n, clock + cap, poll).await?;
    let wall_seconds = clock.elapsed().as_secs_f64();
    let span = db.span(QUEUE, &marker).await?;
    worker.stop().await?;
    let run = Run {
        label: format!("apalis {label}"),
        rate: span.rate(),
        done: span.done,
        complete,
        wall_seconds,
    };
    ctx.log(format!(
        "apalis {label}: {} jobs = {:.0}/s{}",
        span.done,
        run.rate.unwrap_or(f64::NAN),
        if complete { "" } else { " (partial)" }
    ));
    let detail = json!({
        "batch_size": batch.unwrap_or(10),
        "concurrency": concurrency,
        "jobs": n,
        "done": span.done,
        "complete": complete,
        "first_lock_at": span.first_lock,
        "last_done_at": span.last_done,
        "jobs_per_sec": run.rate,
        "handled": handled.load(std::sync::atomic::Ordering::Relaxed),
        "wall_seconds_from_worker_start": run.wall_seconds,
    });
    Ok((run, detail))
}
