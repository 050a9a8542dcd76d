use std::time::Duration;

use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{spawn_app, time};

#[sqlx::test(migrations = false)]
async fn a_long_running_job_shows_increasing_progress_and_ends_at_steps_of_steps(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let job = app
        .enqueue(
            "/v1/jobs/long-running",
            json!({"steps": 10, "step_duration_ms": 150}),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["progress"], json!({"done": 0, "total": 10}));

    // Watch the job while it runs, as a client polling it would.
    let mut seen: Vec<u64> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        let job = app.job(&id).await;
        let progress = job["progress"]["done"].as_u64().unwrap();
        if seen.last() != Some(&progress) {
            seen.push(progress);
        }
        if job["status"] == "succeeded" {
            break job;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job did not finish: {job}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "progress only grows: {seen:?}"
    );
    let intermediate = seen.iter().filter(|&&p| p > 0 && p < 10).count();
    assert!(intermediate >= 2, "progress seen while running: {seen:?}");
    assert_eq!(done["progress"], json!({"done": 10, "total": 10}));
    assert_eq!(done["result"]["steps_completed"], 10);

    // The durable progress events tell the same story.
    let events = app.events(&id).await;
    let progress: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "progress")
        .map(|e| e["data"]["done"].as_u64().unwrap())
        .collect();
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
    assert_eq!(progress.last(), Some(&10));
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"queued"));
    assert_eq!(types.get(1), Some(&"started"));
    assert_eq!(types.last(), Some(&"succeeded"));
}

#[sqlx::test(migrations = false)]
async fn fast_steps_are_checkpointed_in_throttled_writes(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let job = app
        .enqueue(
            "/v1/jobs/long-running",
            json!({"steps": 300, "step_duration_ms": 1}),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    let done = app.finished(id, Duration::from_secs(30)).await;
    assert_eq!(done["progress"]["done"], 300);

    let writes: Vec<u64> = app
        .events(id)
        .await
        .iter()
        .filter(|e| e["type"] == "progress")
        .map(|e| e["data"]["done"].as_u64().unwrap())
        .collect();
    // At most one write per 50 ms (the test's --progress-interval) plus the last, not one per
    // step, however long a loaded machine made the run.
    let ran = time(&done["finished_at"]) - time(&done["started_at"]);
    let allowed = (ran.num_milliseconds() / 50 + 2) as usize;
    assert!(
        writes.len() <= allowed && writes.len() < 300,
        "{} progress writes for 300 steps in {ran}",
        writes.len()
    );
    assert_eq!(writes.last(), Some(&300), "the last step is always written");
}
