//! Scenario 6, I/O: emails against a loopback SMTP server that takes 1 s per message; time until
//! all are `succeeded`, with jobq's default settings (`--smtp-url` only).
//!
//! jobq: one batch request; last `finished_at` - first `created_at`. Baseline: an apalis worker
//! at its defaults (batch 10, no concurrency limit) sending with lettre, the tasks pushed in one
//! transaction of ours; last `done_at` - that transaction's `now()`. Every message is counted by
//! the SMTP sink.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::Ctx;
use crate::baseline::{self, ApalisDb, Counter, EMAIL_QUEUE, EmailArgs};
use crate::jobq::{self, Api, Jobq, JobqDb};
use crate::report::{Row, Target, Unit};
use crate::smtp::SmtpSink;

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let sink = SmtpSink::start(ctx.plan.email_delay).await?;
    let j = jobq_seconds(ctx, &sink).await?;
    let a = apalis_seconds(ctx, &sink).await?;
    let n = ctx.plan.emails;
    ctx.row(
        Row::new(
            format!(
                "{n} emails, SMTP {} s per message: all succeeded",
                ctx.plan.email_delay.as_secs_f64()
            ),
            Unit::Secs,
        )
        .jobq(Some(j))
        .baseline(Some(a))
        .target(Target::AtMost { value: 1.5 })
        .note("jobq defaults, one batch request; apalis defaults + lettre"),
    );
    Ok(())
}

fn email(n: usize) -> serde_json::Value {
    json!({
        "kind": "email",
        "to": format!("bench{n}@example.com"),
        "subject": "jobq bench",
        "body": "Sent by the jobq benchmark harness.",
    })
}

async fn jobq_seconds(ctx: &Ctx, sink: &SmtpSink) -> anyhow::Result<f64> {
    let n = ctx.plan.emails;
    let db = JobqDb::create(&ctx.pg, "email").await?;
    let result = async {
        let url = sink.url();
        let jobq = Jobq::start(&db, "email", &["--smtp-url", &url]).await?;
        let api = Api::new(&jobq, &db.token)?;
        let pool = db.pool(&ctx.pg).await?;
        let before = sink.accepted();
        let marker = jobq::id_marker();
        let jobs: Vec<_> = (0..n).map(email).collect();
        api.enqueue_batch(&jobs).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        if !jobq::wait_finished(&pool, marker, deadline, ctx.plan.poll).await? {
            bail!("jobq did not send {n} emails within 120 s");
        }
        let span = jobq::span(&pool, marker).await?;
        let delivered = sink.accepted() - before;
        pool.close().await;
        jobq.stop().await?;
        if span.succeeded as usize != n || delivered < n as u64 {
            bail!(
                "{} of {n} email jobs succeeded, the SMTP server accepted {delivered}",
                span.succeeded
            );
        }
        let seconds = span
            .seconds_created_to_finished()
            .context("no timestamps")?;
        ctx.detail(
            "jobq",
            json!({"emails": n, "delivered": delivered, "seconds_created_to_last_finished": seconds}),
        );
        Ok(seconds)
    }
    .await;
    ctx.pg.drop_db(&db.name).await?;
    result
}

async fn apalis_seconds(ctx: &Ctx, sink: &SmtpSink) -> anyhow::Result<f64> {
    let n = ctx.plan.emails;
    let db = ApalisDb::create(&ctx.pg, "email").await?;
    let result = async {
        let sent = Counter::default();
        let worker = baseline::start_email_worker(&db, &sink.url(), sent.clone())?;
        // Let the worker register and LISTEN before the tasks arrive.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = sink.accepted();
        let marker = baseline::id_marker();
        let tasks: Vec<EmailArgs> = (0..n)
            .map(|i| EmailArgs {
                to: format!("bench{i}@example.com"),
                subject: "jobq bench".into(),
                body: "Sent by the jobq benchmark harness.".into(),
            })
            .collect();
        let pushed_at = db.push_in_tx(EMAIL_QUEUE, &tasks).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        if !db
            .wait_done(EMAIL_QUEUE, &marker, n, deadline, ctx.plan.poll)
            .await?
        {
            bail!("apalis did not send {n} emails within 120 s");
        }
        let span = db.span(EMAIL_QUEUE, &marker).await?;
        worker.stop().await?;
        let delivered = sink.accepted() - before;
        if delivered < n as u64 {
            bail!("the SMTP server accepted {delivered} of {n} apalis emails");
        }
        let last = span.last_done.context("no done_at")?;
        let seconds = (last - pushed_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
        ctx.detail(
            "apalis",
            json!({"emails": n, "delivered": delivered, "seconds_pushed_to_last_done": seconds}),
        );
        Ok(seconds)
    }
    .await;
    db.drop(&ctx.pg).await?;
    result
}
