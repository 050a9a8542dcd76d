use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{eventually, spawn_app_with, time};

#[sqlx::test(migrations = false)]
async fn a_new_job_is_picked_up_through_notify_not_by_polling(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // With the backstop poll an hour away and heartbeats (which also wake a worker) 30 s apart,
    // only the NOTIFY sent at commit can wake the worker in time.
    let app = spawn_app_with(
        db,
        &["--poll-interval", "1h", "--heartbeat-interval", "30s"],
    )
    .await;
    // Let the workers finish their first (empty) fetch and wait.
    tokio::time::sleep(Duration::from_millis(500)).await;

    for _ in 0..3 {
        let job = app.enqueue("/v1/jobs/hash", json!({"data": "x"})).await;
        let id = job["id"].as_str().unwrap().to_owned();
        let enqueued = Instant::now();
        let done = app.finished(&id, Duration::from_secs(10)).await;
        assert_eq!(done["status"], "succeeded");
        assert!(
            enqueued.elapsed() < Duration::from_secs(2),
            "finished after {:?}",
            enqueued.elapsed()
        );
        let started = time(&done["started_at"]);
        let created = time(&done["created_at"]);
        assert!(
            started - created < chrono::Duration::milliseconds(500),
            "{done}"
        );
    }
}

#[sqlx::test(migrations = false)]
async fn concurrency_is_limited_per_kind(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, &["--long-running-concurrency", "2"]).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let job = app
            .enqueue(
                "/v1/jobs/long-running",
                json!({"steps": 3, "step_duration_ms": 100}),
            )
            .await;
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    // A hash job is not held up by the long-running backlog.
    let hash = app.enqueue("/v1/jobs/hash", json!({"data": "x"})).await;
    let hash_done = app
        .finished(hash["id"].as_str().unwrap(), Duration::from_secs(10))
        .await;

    let mut spans = Vec::new();
    for id in &ids {
        let job = app.finished(id, Duration::from_secs(30)).await;
        assert_eq!(job["status"], "succeeded");
        spans.push((time(&job["started_at"]), time(&job["finished_at"])));
    }
    let most_at_once = spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(s, f)| s <= start && start < f)
                .count()
        })
        .max()
        .unwrap();
    assert_eq!(most_at_once, 2, "{spans:?}");
    let last_long = spans.iter().map(|(_, f)| *f).max().unwrap();
    assert!(
        time(&hash_done["finished_at"]) < last_long,
        "hash waited for the backlog"
    );
}

#[sqlx::test(migrations = false)]
async fn every_accepted_job_of_a_burst_finishes_once(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, &[]).await;
    let bodies = (0..60).map(|i| match i % 3 {
        0 => (
            "/v1/jobs/hash",
            json!({"data": format!("item {i}"), "repeat": 100}),
        ),
        1 => (
            "/v1/jobs/long-running",
            json!({"steps": 2, "step_duration_ms": 5}),
        ),
        _ => (
            "/v1/jobs/email",
            json!({"to": "a@example.com", "subject": format!("n{i}"), "body": ""}),
        ),
    });
    let accepted =
        futures::future::join_all(bodies.map(|(path, body)| app.enqueue(path, body))).await;
    let ids: Vec<String> = accepted
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();

    eventually(
        Duration::from_secs(60),
        "all 60 jobs to succeed",
        || async {
            let count: i64 =
                sqlx::query_scalar("SELECT count(*) FROM jobq.jobs WHERE status = 'succeeded'")
                    .fetch_one(&app.pool)
                    .await
                    .unwrap();
            (count == 60).then_some(())
        },
    )
    .await;
    let succeeded_events: Vec<(String, i64)> = sqlx::query_as(
        "SELECT job_id::text, count(*) FROM jobq.job_events WHERE type = 'succeeded' GROUP BY job_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(succeeded_events.len(), ids.len());
    assert!(
        succeeded_events.iter().all(|(_, n)| *n == 1),
        "one success each"
    );
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT attempt FROM jobq.jobs")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(attempts.iter().all(|&a| a == 1), "{attempts:?}");
}
