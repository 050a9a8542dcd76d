//! Run later, priorities, timeouts, tags, batches, pause, rate limits, recurring jobs, wait.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{JobqProcess, eventually, spawn_app_with, time};

const WAIT: Duration = Duration::from_secs(30);

fn id_of(job: &Value) -> String {
    job["id"].as_str().unwrap().to_owned()
}

async fn post_json(client: &reqwest::Client, url: String, body: Value) -> (StatusCode, Value) {
    let resp = client.post(url).json(&body).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[sqlx::test(migrations = false)]
async fn a_scheduled_job_waits_for_its_time_then_runs_within_a_second(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // The default backstop poll: only the scheduled time can wake the worker on time.
    let app = spawn_app_with(db, &["--poll-interval", "1s"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job = app
        .enqueue("/v1/jobs/hash", json!({"data": "later", "delay_ms": 2000}))
        .await;
    assert_eq!(job["status"], "scheduled");
    let id = id_of(&job);
    let run_at = time(&job["run_at"]);
    let at = chrono::Utc::now() + chrono::Duration::seconds(3);
    let pinned = app
        .enqueue(
            "/v1/jobs/hash",
            json!({"data": "pinned", "run_at": at.to_rfc3339()}),
        )
        .await;

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        app.job(&id).await["status"],
        "scheduled",
        "not before its time"
    );

    for (id, due) in [(id, run_at), (id_of(&pinned), at)] {
        let done = app.finished(&id, WAIT).await;
        assert_eq!(done["status"], "succeeded");
        let started = time(&done["started_at"]);
        let late = started - due;
        assert!(
            late >= chrono::Duration::zero(),
            "started {late} before its time"
        );
        assert!(
            late < chrono::Duration::seconds(1),
            "started {late} after its time"
        );
    }
}

#[sqlx::test(migrations = false)]
async fn with_one_worker_slot_higher_priority_runs_first(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, &["--long-running-concurrency", "1"]).await;
    let blocker = id_of(
        &app.enqueue(
            "/v1/jobs/long-running",
            json!({"steps": 1, "step_duration_ms": 600}),
        )
        .await,
    );
    eventually(WAIT, "the blocker to run", || async {
        (app.job(&blocker).await["status"] == "running").then_some(())
    })
    .await;
    let quick = json!({"steps": 1, "step_duration_ms": 10});
    let mut low = Vec::new();
    for _ in 0..3 {
        low.push(id_of(
            &app.enqueue("/v1/jobs/long-running", quick.clone()).await,
        ));
    }
    let mut urgent_body = quick.clone();
    urgent_body["priority"] = json!(50);
    let urgent = app.enqueue("/v1/jobs/long-running", urgent_body).await;
    assert_eq!(urgent["priority"], 50);
    let urgent = app.finished(&id_of(&urgent), WAIT).await;
    for id in &low {
        let job = app.finished(id, WAIT).await;
        assert!(
            time(&urgent["started_at"]) < time(&job["started_at"]),
            "the urgent job ran first"
        );
    }
}

#[sqlx::test(migrations = false)]
async fn an_attempt_past_its_timeout_is_retried_then_fails_naming_the_timeout(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(db, &["--retry-base", "1s", "--progress-interval", "0ms"]).await;
    let job = app
        .enqueue(
            "/v1/jobs/long-running",
            json!({"steps": 20, "step_duration_ms": 100, "timeout_ms": 350, "max_attempts": 2}),
        )
        .await;
    assert_eq!(job["timeout_ms"], 350);
    let id = id_of(&job);
    let done = app.finished(&id, WAIT).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["attempt"], 2);
    let error = done["last_error"].as_str().unwrap();
    assert!(error.contains("timed out after 350 ms"), "{error}");
    let events = app.events(&id).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(
        types.contains(&"retrying") && types.last() == Some(&"failed"),
        "{types:?}"
    );
    // The attempts stopped at the timeout: about three steps each, not twenty.
    let progress = types.iter().filter(|t| **t == "progress").count();
    assert!(progress <= 10, "{progress} progress events");
}

#[sqlx::test(migrations = false)]
async fn tags_find_jobs(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, &["--role", "api"]).await;
    let a = app
        .enqueue(
            "/v1/jobs/hash",
            json!({"data": "1", "tags": ["team:billing", "nightly"]}),
        )
        .await;
    let b = app
        .enqueue(
            "/v1/jobs/hash",
            json!({"data": "2", "tags": ["team:billing"]}),
        )
        .await;
    app.enqueue("/v1/jobs/hash", json!({"data": "3"})).await;
    assert_eq!(a["tags"], json!(["nightly", "team:billing"]));
    let ids = |page: Value| -> Vec<String> {
        page["jobs"].as_array().unwrap().iter().map(id_of).collect()
    };
    let page: Value = app
        .get("/v1/jobs?tag=team:billing")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(page), [id_of(&b), id_of(&a)]);
    let page: Value = app
        .get("/v1/jobs?tag=team:billing&tag=nightly")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(page), [id_of(&a)]);
    let bad = app
        .post(
            "/v1/jobs/hash",
            &json!({"data": "x", "tags": ["no spaces"]}),
        )
        .await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let err: Value = bad.json().await.unwrap();
    assert_eq!(err["field"], "tags[0]");
}

#[sqlx::test(migrations = false)]
async fn a_batch_is_accepted_whole_or_not_at_all_and_replays_by_key(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(db, &["--role", "api"]).await;
    let batch = json!({"jobs": [
        {"kind": "email", "to": "a@b.co", "subject": "s", "body": ""},
        {"kind": "long_running", "steps": 2, "step_duration_ms": 0, "priority": 5},
        {"kind": "hash", "data": "x", "delay_ms": 60000},
    ]});
    let send = |key: &'static str, body: Value| {
        app.client
            .post(app.url("/v1/jobs/batch"))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let resp = send("batch-1", batch.clone()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()["idempotent-replayed"], "false");
    let first: Value = resp.json().await.unwrap();
    let kinds: Vec<&str> = first["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["email", "long_running", "hash"]);
    assert_eq!(first["jobs"][2]["status"], "scheduled");

    let again = send("batch-1", batch.clone()).await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        again["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(id_of)
            .collect::<Vec<_>>(),
        first["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(id_of)
            .collect::<Vec<_>>()
    );
    let mut changed = batch.clone();
    changed["jobs"][0]["subject"] = json!("other");
    assert_eq!(
        send("batch-1", changed).await.unwrap().status(),
        StatusCode::CONFLICT
    );

    let bad = json!({"jobs": [{"kind": "hash", "data": "ok"}, {"kind": "long_running", "steps": 0, "step_duration_ms": 1}]});
    let resp = send("batch-2", bad).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["field"], "jobs[1].steps");
    let unknown_kind = json!({"jobs": [{"kind": "sms", "to": "x"}]});
    assert_eq!(
        send("batch-3", unknown_kind).await.unwrap().status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        app.count("jobq.jobs").await,
        3,
        "nothing of a refused batch was enqueued"
    );
}

#[sqlx::test(migrations = false)]
async fn wait_answers_at_completion_or_with_the_current_state(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(db, &[]).await;
    let job = app
        .enqueue(
            "/v1/jobs/long-running",
            json!({"steps": 4, "step_duration_ms": 150}),
        )
        .await;
    let id = id_of(&job);
    let waited: Value = app
        .get(&format!("/v1/jobs/{id}/wait?timeout_seconds=20"))
        .await
        .json()
        .await
        .unwrap();
    let answered = Utc::now();
    assert_eq!(waited["status"], "succeeded");
    let lag = answered - time(&waited["finished_at"]);
    assert!(
        // Pushed at completion, not found by polling or at the 20 s timeout (a bound loose
        // enough for a loaded CI machine).
        lag < chrono::Duration::seconds(1),
        "answered {lag} after completion"
    );

    let slow = app
        .enqueue(
            "/v1/jobs/long-running",
            json!({"steps": 50, "step_duration_ms": 100}),
        )
        .await;
    let started = Instant::now();
    let current: Value = app
        .get(&format!("/v1/jobs/{}/wait?timeout_seconds=1", id_of(&slow)))
        .await
        .json()
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        matches!(current["status"].as_str(), Some("queued" | "running")),
        "{current}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let done = app.get(&format!("/v1/jobs/{id}/wait")).await;
    assert_eq!(
        done.status(),
        StatusCode::OK,
        "a finished job answers at once"
    );
}

async fn started_times(pool: &sqlx::PgPool, kind: &str) -> Vec<DateTime<Utc>> {
    sqlx::query_scalar("SELECT started_at FROM jobq.jobs WHERE kind = $1 AND started_at IS NOT NULL ORDER BY started_at")
        .bind(kind)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn pause_stops_pickup_in_every_process_until_resumed(_: PgPoolOptions, db: PgConnectOptions) {
    let api = JobqProcess::start(&db, &["--role", "api"]).await;
    let one = JobqProcess::start(&db, &["--role", "worker"]).await;
    let mut two = JobqProcess::start(&db, &["--role", "worker"]).await;
    let url = |path: &str| format!("{}{path}", api.base);

    let (status, paused) = post_json(&api.client, url("/v1/queues/hash/pause"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(paused["paused"], true);
    let mut ids = Vec::new();
    for i in 0..4 {
        let (status, job) = post_json(
            &api.client,
            url("/v1/jobs/hash"),
            json!({"data": format!("{i}")}),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "enqueue still accepts");
        ids.push(id_of(&job));
    }
    let email = post_json(
        &api.client,
        url("/v1/jobs/long-running"),
        json!({"steps": 1, "step_duration_ms": 0}),
    )
    .await
    .1;
    let pool = PgPoolOptions::new().connect_with(db.clone()).await.unwrap();
    eventually(WAIT, "other kinds to keep running", || async {
        let job: Value = api
            .client
            .get(url(&format!("/v1/jobs/{}", id_of(&email))))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (job["status"] == "succeeded").then_some(())
    })
    .await;
    // A restarted worker process still sees the pause.
    two.kill();
    let three = JobqProcess::start(&db, &["--role", "worker"]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        started_times(&pool, "hash").await.is_empty(),
        "no hash job started while paused"
    );
    let stats: Value = api
        .client
        .get(url("/v1/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hash = stats["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "hash")
        .unwrap()
        .clone();
    assert_eq!(
        (hash["paused"].as_bool(), hash["counts"]["queued"].as_i64()),
        (Some(true), Some(4))
    );

    let resumed_at = Instant::now();
    let (status, _) = post_json(&api.client, url("/v1/queues/hash/resume"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    for id in &ids {
        eventually(WAIT, "hash jobs to run after resume", || async {
            let job: Value = api
                .client
                .get(url(&format!("/v1/jobs/{id}")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (job["status"] == "succeeded").then_some(())
        })
        .await;
    }
    assert!(
        resumed_at.elapsed() < Duration::from_secs(3),
        "resume is heard at once"
    );
    let unknown = api
        .client
        .post(url("/v1/queues/sms/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST, "not a kind");
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["field"], "kind");
    drop((one, three));
}

#[sqlx::test(migrations = false)]
async fn a_rate_limit_holds_across_two_worker_processes(_: PgPoolOptions, db: PgConnectOptions) {
    let api = JobqProcess::start(&db, &["--role", "api"]).await;
    let url = |path: &str| format!("{}{path}", api.base);
    let limit = api
        .client
        .put(url("/v1/queues/hash/rate-limit"))
        .json(&json!({"per_second": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(limit.status(), StatusCode::OK);
    let jobs: Vec<Value> = (0..80)
        .map(|i| json!({"kind": "hash", "data": format!("{i}")}))
        .collect();
    let (status, _) = post_json(&api.client, url("/v1/jobs/batch"), json!({ "jobs": jobs })).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let _one = JobqProcess::start(&db, &["--role", "worker", "--poll-interval", "100ms"]).await;
    let _two = JobqProcess::start(&db, &["--role", "worker", "--poll-interval", "100ms"]).await;

    let pool = PgPoolOptions::new().connect_with(db.clone()).await.unwrap();
    let starts = eventually(Duration::from_secs(40), "12 s of starts", || async {
        let starts = started_times(&pool, "hash").await;
        let first = *starts.first()?;
        (Utc::now() - first > chrono::Duration::seconds(12)).then_some(starts)
    })
    .await;
    // Steady state: the 10 s after the first second (the bucket starts empty but may burst).
    let from = starts[0] + chrono::Duration::seconds(1);
    let to = from + chrono::Duration::seconds(10);
    let n = starts.iter().filter(|t| **t >= from && **t < to).count();
    assert!(
        (45..=55).contains(&n),
        "{n} jobs started in 10 s at a limit of 5/s: {:?}",
        starts
            .iter()
            .map(|t| (*t - starts[0]).num_milliseconds())
            .collect::<Vec<_>>()
    );
}

#[sqlx::test(migrations = false)]
async fn a_schedule_makes_one_job_per_tick_across_processes_and_restarts(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let mut one = JobqProcess::start(&db, &[]).await;
    let mut two = JobqProcess::start(&db, &[]).await;
    let url = format!("{}/v1/schedules", one.base);
    let (status, schedule) = post_json(
        &one.client,
        url.clone(),
        json!({"name": "every-2s", "cron": "*/2 * * * * *", "job": {"kind": "hash", "data": "tick"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{schedule}");
    let schedule_id = schedule["id"].as_str().unwrap().to_owned();
    let pool = PgPoolOptions::new().connect_with(db.clone()).await.unwrap();
    let ticks = || async {
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT idempotency_key FROM jobq.jobs WHERE idempotency_key LIKE 'schedule:%' ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        keys.iter()
            .map(|k| {
                k.rsplit_once(':')
                    .map(|(_, _)| {
                        k.splitn(3, ':')
                            .nth(2)
                            .unwrap()
                            .parse::<DateTime<Utc>>()
                            .unwrap()
                    })
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };

    // Two processes for ~6 s, then one (the other killed) for ~4 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    one.kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let alive_until = Utc::now();
    let before = ticks().await;
    assert!(before.len() >= 4, "{before:?}");
    for pair in before.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            chrono::Duration::seconds(2),
            "one job per tick, no gap: {before:?}"
        );
    }
    assert!(
        alive_until - *before.last().unwrap() < chrono::Duration::seconds(3),
        "{before:?}"
    );

    // Everything down for ~7 s (three ticks or so), then a new process: the missed ticks make
    // one job together (`run_once`), then the schedule goes on.
    two.kill();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let _three = JobqProcess::start(&db, &[]).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = ticks().await;
    let unique: BTreeSet<_> = after.iter().collect();
    assert_eq!(unique.len(), after.len(), "no tick twice");
    let last_before = *before.last().unwrap();
    let resumed: Vec<_> = after.iter().filter(|t| **t > last_before).collect();
    assert!(resumed.len() >= 3, "the schedule goes on: {after:?}");
    // The ticks missed while nothing ran made one job together (the first after the gap);
    // from there on, one job per tick again.
    assert!(
        *resumed[0] - last_before >= chrono::Duration::seconds(4),
        "missed ticks were not each run: {after:?}"
    );
    for pair in resumed.windows(2) {
        assert_eq!(
            *pair[1] - *pair[0],
            chrono::Duration::seconds(2),
            "{after:?}"
        );
    }
    let origin: Value = sqlx::query_scalar(
        "SELECT data FROM jobq.job_events WHERE type = 'queued' AND data ? 'origin' LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(origin["origin"]["schedule_id"], schedule_id.as_str());
}

#[sqlx::test(migrations = false)]
async fn schedules_are_checked_as_the_spec_states_them(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, &["--role", "api"]).await;
    let create = |body: Value| {
        let app = &app;
        async move {
            let resp = app.post("/v1/schedules", &body).await;
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let job = json!({"kind": "hash", "data": "x"});
    for (case, body, field) in [
        (
            "a job with run_at",
            json!({"name": "a", "cron": "0 9 * * *", "job": {"kind": "hash", "data": "x", "run_at": "2030-01-01T00:00:00Z"}}),
            "job.run_at",
        ),
        (
            "an unknown time zone",
            json!({"name": "b", "cron": "0 9 * * *", "timezone": "Mars/Base", "job": job}),
            "timezone",
        ),
        (
            "a minute out of range",
            json!({"name": "c", "cron": "60 9 * * *", "job": job}),
            "cron",
        ),
        (
            "a name with a space",
            json!({"name": "d e", "cron": "0 9 * * *", "job": job}),
            "name",
        ),
    ] {
        let (status, body) = create(body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{case}: {body}");
        assert_eq!(body["field"], field, "{case}: {body}");
    }

    // Weekdays are 0-6 from Sunday (7 is Sunday too): 1-5 is Monday to Friday.
    let (status, weekdays) = create(json!({
        "name": "weekdays", "cron": "30 9 * * 1-5", "timezone": "Europe/Berlin", "job": job
    }))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{weekdays}");
    let next = time(&weekdays["next_run_at"]).with_timezone(&chrono_tz::Europe::Berlin);
    assert!(
        chrono::Datelike::weekday(&next).number_from_monday() <= 5,
        "{next}"
    );
    assert_eq!(next.format("%H:%M").to_string(), "09:30");
    assert_eq!(
        weekdays["job"],
        json!({"kind": "hash", "data": "x"}),
        "stored as given"
    );

    // February 30 never comes: accepted, with no next run.
    let (status, never) = create(json!({"name": "never", "cron": "0 0 30 2 *", "job": job})).await;
    assert_eq!(status, StatusCode::CREATED, "{never}");
    assert!(never.get("next_run_at").is_none(), "{never}");
}
