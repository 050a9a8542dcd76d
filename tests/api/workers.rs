use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use jobq::auth::Role;
use jobq::db::{CHECKED_AFTER_IDLE, Kept, KeptConnections};
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    JobqProcess, TestApp, counted, create_key, eventually, spawn_app_with, start_app, time,
};
use sqlx::postgres::PgListener;

/// jobq with the backstop poll an hour away and heartbeats (which also wake a worker) 30 s
/// apart, once its workers have made their first (empty) fetch and wait.
async fn spawn_app_woken_by_notify_only(db: PgConnectOptions) -> TestApp {
    let app = spawn_app_with(
        db,
        &["--poll-interval", "1h", "--heartbeat-interval", "30s"],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    app
}

#[sqlx::test(migrations = false)]
async fn a_new_job_is_picked_up_through_notify_not_by_polling(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // Only the NOTIFY sent at commit can wake the worker in time.
    let app = spawn_app_woken_by_notify_only(db).await;

    for _ in 0..3 {
        let id = app.enqueue_id("/v1/jobs/hash", json!({"data": "x"})).await;
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
        ids.push(
            app.enqueue_id(
                "/v1/jobs/long-running",
                json!({"steps": 3, "step_duration_ms": 100}),
            )
            .await,
        );
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

/// kind, status, attempt, result, last_error, payload
type JobOutcome = (
    String,
    String,
    i32,
    Option<serde_json::Value>,
    Option<String>,
    serde_json::Value,
);

/// Outcomes are recorded in group commits and attempts start in the fetching transaction: a
/// burst of successes and failures of different kinds, finishing at the same time, must still
/// end each job exactly once with its own result, one `started` and one terminal event, and no
/// queue entry left behind.
#[sqlx::test(migrations = false)]
async fn outcomes_recorded_together_stay_each_jobs_own(_: PgPoolOptions, db: PgConnectOptions) {
    use sha2::Digest as _;
    // Emails fail at once (nothing listens on port 1) and have a single attempt.
    let app = spawn_app_with(
        db,
        &[
            "--smtp-url",
            "smtp://127.0.0.1:1",
            "--fetch-batch-size",
            "64",
        ],
    )
    .await;
    let mut jobs: Vec<serde_json::Value> = (0..300)
        .map(|i| json!({"kind": "hash", "data": format!("item {i}")}))
        .collect();
    for i in 0..30 {
        jobs.insert(
            i * 10,
            json!({"kind": "email", "to": "a@example.com", "subject": format!("n{i}"), "body": "", "max_attempts": 1}),
        );
    }
    let resp = app.post("/v1/jobs/batch", &json!({ "jobs": jobs })).await;
    assert_eq!(resp.status().as_u16(), 202);
    let accepted: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(accepted["jobs"].as_array().unwrap().len(), 330);

    eventually(Duration::from_secs(60), "all 330 jobs to end", || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobq.jobs WHERE status NOT IN ('succeeded', 'failed')",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        (open == 0).then_some(())
    })
    .await;

    let rows: Vec<JobOutcome> =
        sqlx::query_as("SELECT kind, status, attempt, result, last_error, payload FROM jobq.jobs")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 330);
    for (kind, status, attempt, result, error, payload) in &rows {
        assert_eq!(*attempt, 1, "{kind} {status}");
        match kind.as_str() {
            "hash" => {
                assert_eq!(status, "succeeded", "{error:?}");
                // The result is this job's own digest, not a neighbour's in the same batch.
                // (The stored payload keeps the input as base64.)
                let input = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    payload["data"].as_str().unwrap(),
                )
                .unwrap();
                let expected = hex::encode(sha2::Sha256::digest(&input));
                assert_eq!(
                    result.as_ref().unwrap()["digest_hex"],
                    expected,
                    "{payload}"
                );
            }
            "email" => {
                assert_eq!(status, "failed");
                assert!(error.as_deref().is_some_and(|e| !e.is_empty()));
            }
            other => panic!("unexpected kind {other}"),
        }
    }
    let per_job: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE type = 'started'), \
                count(*) FILTER (WHERE type IN ('succeeded', 'failed')) \
         FROM jobq.job_events GROUP BY job_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(per_job.len(), 330);
    assert!(
        per_job.iter().all(|&(s, t)| s == 1 && t == 1),
        "{per_job:?}"
    );
    // Each queue entry went when its attempt was taken (none is left `Running` or to prune).
    let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(entries, 0);
}

#[sqlx::test(migrations = false)]
async fn a_batch_wakes_the_workers_of_each_kind_once(_: PgPoolOptions, db: PgConnectOptions) {
    // apalis-postgres' own trigger notified once per queue entry (1,000 notifications for every
    // listening process per 1,000-job batch); jobq's notifies once per statement and kind with
    // entries due now. An API-only process: no worker inserts entries of its own.
    let app = spawn_app_with(db, &["--role", "api"]).await;
    let mut listener = PgListener::connect_with(&app.pool).await.unwrap();
    listener.listen("apalis::job::insert").await.unwrap();

    let mut jobs: Vec<serde_json::Value> = (0..40)
        .map(|i| json!({"kind": "hash", "data": format!("item {i}")}))
        .collect();
    jobs.extend(
        (0..40).map(|_| json!({"kind": "long_running", "steps": 1, "step_duration_ms": 0})),
    );
    jobs.extend((0..10).map(
        |_| json!({"kind": "email", "to": "a@b.co", "subject": "s", "body": "", "delay_ms": 60000}),
    ));
    let resp = app.post("/v1/jobs/batch", &json!({ "jobs": jobs })).await;
    assert_eq!(resp.status().as_u16(), 202);
    assert_eq!(
        app.count("apalis.jobs").await,
        90,
        "one queue entry per job"
    );

    let mut woken = Vec::new();
    while let Ok(received) = tokio::time::timeout(Duration::from_secs(1), listener.recv()).await {
        let payload: serde_json::Value = serde_json::from_str(received.unwrap().payload()).unwrap();
        woken.push(payload["job_type"].as_str().unwrap().to_owned());
    }
    woken.sort();
    // The delayed emails are due in a minute: the workers' poll finds them, no wake-up now.
    assert_eq!(woken, ["jobq.hash", "jobq.long_running"]);
}

#[sqlx::test(migrations = false)]
async fn an_attempt_taken_by_a_fetch_whose_answer_was_lost_is_rescued(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // A fetch statement commits (the entry taken, the job `running` on the worker) but its
    // answer never reaches the worker: the connection broke in between. The worker lives on and
    // heartbeats, so the attempt never looks orphaned; only the worker's own check of what it
    // holds rescues it.
    let app = spawn_app_with(db, &["--heartbeat-interval", "200ms"]).await;
    // Paused, the worker does not take the job itself.
    let paused = app.post("/v1/queues/hash/pause", &json!({})).await;
    assert_eq!(paused.status().as_u16(), 200);
    let id = app.enqueue_id("/v1/jobs/hash", json!({"data": "x"})).await;
    let worker: String = eventually(
        Duration::from_secs(10),
        "the hash worker to register",
        || async {
            sqlx::query_scalar("SELECT id FROM apalis.workers WHERE worker_type = 'jobq.hash'")
                .fetch_optional(&app.pool)
                .await
                .unwrap()
        },
    )
    .await;
    // What the lost fetch committed.
    let taken = sqlx::query("DELETE FROM apalis.jobs WHERE job_type = 'jobq.hash'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(taken.rows_affected(), 1);
    let lost_task: String = sqlx::query_scalar(
        "UPDATE jobq.jobs SET status = 'running', attempt = 1, worker = $1, started_at = now(),
                attempt_started_at = now() - interval '1 minute' WHERE id = $2::uuid
         RETURNING task_id",
    )
    .bind(&worker)
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let resumed = app.post("/v1/queues/hash/resume", &json!({})).await;
    assert_eq!(resumed.status().as_u16(), 200);

    let done = app.finished(&id, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempt"], 2, "the lost attempt counts: {done}");
    let events = app.events(&id).await;
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "started" && e["data"]["rescued"] == true),
        "{events:#?}"
    );
    // The rescue ran as a new attempt: the lost one could no longer record anything.
    let task: String = sqlx::query_scalar("SELECT task_id FROM jobq.jobs WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_ne!(task, lost_task);
}

#[sqlx::test(migrations = false)]
async fn an_attempt_left_running_by_an_earlier_version_is_rescued_after_the_upgrade(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // The database as a jobq before queue entries were deleted at fetch left it: a job running
    // on a worker that has since died, its entry `Running` and locked by that worker.
    let pool = PgPoolOptions::new().connect_with(db).await.unwrap();
    apalis_postgres::PostgresStorage::setup(&pool)
        .await
        .unwrap();
    // jobq's migrations up to the one before the fix.
    jobq::db::MIGRATOR
        .run_to(20261128000007, &pool)
        .await
        .unwrap();
    let id = uuid::Uuid::now_v7();
    let task = ulid::Ulid::generate().to_string();
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, last_seen)
         VALUES ('old-worker', 'jobq.hash', 'PostgresStorage', now() - interval '1 hour')",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO jobq.jobs (id, kind, status, payload, attempt, max_attempts, task_id, worker,
                                started_at, attempt_started_at)
         VALUES ($1, 'hash', 'running', '{\"data\": \"eA==\", \"repeat\": 1, \"algorithm\": \"sha256\"}',
                 1, 3, $2, 'old-worker', now() - interval '1 hour', now() - interval '1 hour')",
    )
    .bind(id)
    .bind(&task)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, lock_by,
                                 lock_at)
         VALUES ($1, 'jobq.hash', convert_to($2, 'UTF8'), 'Running', 1, 25,
                 now() - interval '1 hour', 'old-worker', now() - interval '1 hour')",
    )
    .bind(&task)
    .bind(format!("{{\"job_id\":\"{id}\"}}"))
    .execute(&pool)
    .await
    .unwrap();

    // The upgraded jobq: the rest of the migrations, then the workers.
    jobq::db::migrate(&pool).await.unwrap();
    let token = create_key(&pool, "test-admin", Role::Admin, "default").await;
    let app = start_app(pool, token, &[]).await;
    let done = app.finished(&id.to_string(), Duration::from_secs(20)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempt"], 2, "{done}");
    let rescued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobq.job_events
         WHERE job_id = $1 AND type = 'started' AND (data->>'rescued')::bool",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(rescued, 1);
}

/// Outcomes are recorded in batches, several at once: an outcome arriving while another batch
/// is still recording starts its own instead of waiting for it. Here the first job's outcome is
/// held up by a row lock; a second job must still finish meanwhile.
#[sqlx::test(migrations = false)]
async fn an_outcome_does_not_wait_for_a_batch_still_recording(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(db, &[]).await;
    // 1 GB: running long enough (a second or more) to lock its row before it finishes.
    let slow = app
        .enqueue_id(
            "/v1/jobs/hash",
            json!({"data": "data1", "repeat": 200_000_000}),
        )
        .await;
    let slow_id: uuid::Uuid = slow.parse().unwrap();
    eventually(Duration::from_secs(30), "the large job to run", || async {
        (app.job(&slow).await["status"] == "running").then_some(())
    })
    .await;
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM jobq.jobs WHERE id = $1 FOR UPDATE")
        .bind(slow_id)
        .execute(&mut *lock)
        .await
        .unwrap();
    // Its outcome statement is now waiting for the lock.
    eventually(
        Duration::from_secs(60),
        "the large job's outcome to wait for the lock",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock' \
                   AND query LIKE '%UPDATE jobq.jobs%'",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
            (waiting > 0).then_some(())
        },
    )
    .await;

    let quick = app
        .enqueue_id("/v1/jobs/hash", json!({"data": "quick"}))
        .await;
    let done = app.finished(&quick, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(app.job(&slow).await["status"], "running");

    lock.rollback().await.unwrap();
    let done = app.finished(&slow, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
}

#[sqlx::test(migrations = false)]
async fn a_fetch_that_takes_every_due_job_is_not_followed_by_one_that_finds_nothing(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // A real process: the fetch counters are per process. With the backstop poll an hour away
    // and heartbeats a minute apart (a fetch returns empty-handed every half heartbeat), every
    // fetch below follows a notification or a known due time.
    let server = JobqProcess::start(
        &db,
        &["--poll-interval", "1h", "--heartbeat-interval", "60s"],
    )
    .await;
    let fetches = || async {
        let text = server.metrics().await;
        let taken = counted(
            &text,
            r#"jobq_queue_fetches_total{kind="hash",result="taken"}"#,
        );
        let empty = counted(
            &text,
            r#"jobq_queue_fetches_total{kind="hash",result="empty"}"#,
        );
        (taken, empty)
    };
    // The hash worker's first look at the queue found nothing; it now waits.
    let before = eventually(Duration::from_secs(30), "the first fetch", || async {
        let f = fetches().await;
        (f.1 >= 1.0).then_some(f)
    })
    .await;

    // Two jobs due now and one due in 1.5 s, in one request: one notification.
    let run_at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let accepted = server
        .post_json(
            "/v1/jobs/batch",
            &json!({"jobs": [
                {"kind": "hash", "data": "a"},
                {"kind": "hash", "data": "b"},
                {"kind": "hash", "data": "c", "run_at": run_at.to_rfc3339()},
            ]}),
        )
        .await;
    let ids: Vec<String> = accepted["jobs"]
        .as_array()
        .expect("accepted jobs")
        .iter()
        .map(|j| j["id"].as_str().expect("job id").to_owned())
        .collect();
    assert_eq!(ids.len(), 3, "{accepted}");
    let mut done = Vec::new();
    for id in &ids {
        let job = server.finished(id, Duration::from_secs(10)).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        done.push(job);
    }
    // The fetch that took the first two also told when the third falls due: it ran then, not
    // at the next empty-handed return half a heartbeat (30 s) later.
    let late = time(&done[2]["started_at"]) - run_at;
    assert!(
        late < chrono::Duration::seconds(1),
        "the delayed job started {late} after its run_at"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = fetches().await;
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (2.0, 0.0),
        "one fetch for the two due jobs, one when the third fell due, none that found nothing \
         (before: {before:?}, after: {after:?})"
    );
}

/// The backends of this database (other than the caller's) whose last statement contains
/// `text`.
async fn backends_last_running(pool: &sqlx::PgPool, text: &str) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND strpos(query, $1) > 0",
    )
    .bind(text)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Every sample (the backends whose last statement was the one looked for, taken after each
/// request) names the same single backend.
fn assert_one_backend(samples: &[Vec<i32>], what: &str) {
    let first = &samples[0];
    assert_eq!(first.len(), 1, "{what} on backends {samples:?}");
    assert!(
        samples.iter().all(|pids| pids == first),
        "{what} on more than one backend: {samples:?}"
    );
}

#[sqlx::test(migrations = false)]
async fn a_worker_records_outcomes_on_a_connection_it_keeps(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // Jobs one after another, with API requests (polling for each job) between them: a pooled
    // connection goes to whoever asks next (the least recently used first), and a backend that
    // has not run the worker's statements yet plans them afresh.
    let app = spawn_app_woken_by_notify_only(db).await;
    let mut recorded_on = Vec::new();
    for i in 0..8 {
        let id = app
            .enqueue_id("/v1/jobs/hash", json!({"data": format!("x{i}")}))
            .await;
        let done = app.finished(&id, Duration::from_secs(10)).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        // The backend that recorded the outcome was not handed to the API requests since.
        recorded_on.push(backends_last_running(&app.pool, "WITH done AS (").await);
    }
    assert_one_backend(&recorded_on, "outcomes recorded");
}

#[sqlx::test(migrations = false)]
async fn single_enqueues_are_written_on_a_connection_the_api_keeps(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // Requests one after another, with reads between them that take pooled connections.
    let app = spawn_app_woken_by_notify_only(db).await;
    let mut accepted_on = Vec::new();
    for i in 0..8 {
        let id = app
            .enqueue_id("/v1/jobs/hash", json!({"data": format!("y{i}")}))
            .await;
        let job = app.job(&id).await;
        assert_eq!(job["id"], id.as_str(), "{job}");
        accepted_on.push(backends_last_running(&app.pool, "WITH t AS (").await);
    }
    assert_one_backend(&accepted_on, "single enqueues written");
}

#[sqlx::test(migrations = false)]
async fn kept_connections_are_reused_newest_first_checked_after_idling_and_given_back(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(db)
        .await
        .unwrap();
    let closing = CancellationToken::new();
    let kept = KeptConnections::new(pool.clone(), 2, closing.clone());
    async fn pid(conn: &mut Kept) -> i32 {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut **conn)
            .await
            .unwrap()
    }

    let mut a = kept.acquire().await.unwrap();
    let pid_a = pid(&mut a).await;
    a.keep();
    assert_eq!(kept.idle(), 1);
    // Reused, and while it is in use the next one comes from the pool.
    let mut again = kept.acquire().await.unwrap();
    assert_eq!(pid(&mut again).await, pid_a);
    let mut b = kept.acquire().await.unwrap();
    let pid_b = pid(&mut b).await;
    assert_ne!(pid_b, pid_a);
    again.keep();
    b.keep();
    // Newest first.
    let mut newest = kept.acquire().await.unwrap();
    assert_eq!(pid(&mut newest).await, pid_b);
    newest.keep();
    // No more than two kept; a third goes back to the pool.
    let (c1, c2, c3) = (
        kept.acquire().await.unwrap(),
        kept.acquire().await.unwrap(),
        kept.acquire().await.unwrap(),
    );
    c1.keep();
    c2.keep();
    c3.keep();
    assert_eq!(kept.idle(), 2);
    // One whose use failed is not kept.
    let failed = kept.acquire().await.unwrap();
    drop(failed);
    assert_eq!(kept.idle(), 1);

    // Ended by Postgres while idle: noticed before reuse, replaced by a live one.
    let mut victim = kept.acquire().await.unwrap();
    let victim_pid = pid(&mut victim).await;
    victim.keep();
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(victim_pid)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(ended);
    tokio::time::sleep(CHECKED_AFTER_IDLE + Duration::from_millis(200)).await;
    let mut fresh = kept.acquire().await.unwrap();
    assert_ne!(pid(&mut fresh).await, victim_pid);
    fresh.keep();

    // At shutdown every kept connection goes back: the pool's close (which waits for all of
    // them) completes.
    assert!(kept.idle() > 0);
    closing.cancel();
    eventually(
        Duration::from_secs(5),
        "kept connections given back",
        || async { (kept.idle() == 0).then_some(()) },
    )
    .await;
    let late = kept.acquire().await.unwrap();
    late.keep();
    assert_eq!(kept.idle(), 0, "kept after shutdown began");
    tokio::time::timeout(Duration::from_secs(5), pool.close())
        .await
        .expect("the pool closes");
}

#[sqlx::test(migrations = false)]
async fn a_look_at_the_queue_that_finds_nothing_due_yet_wakes_the_worker_when_something_falls_due(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // No backstop poll, no empty-handed return for 15 s; a job due later sends no notification.
    let app = spawn_app_woken_by_notify_only(db).await;
    let run_at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let id = app
        .enqueue_id(
            "/v1/jobs/hash",
            json!({"data": "later", "run_at": run_at.to_rfc3339()}),
        )
        .await;
    // A change of the queue's controls wakes the worker: it looks, finds nothing due, and learns
    // when the job falls due from that same (empty) fetch.
    for action in ["pause", "resume"] {
        let response = app
            .post(&format!("/v1/queues/hash/{action}"), &json!({}))
            .await;
        assert_eq!(response.status().as_u16(), 200, "{action}");
    }
    let done = app.finished(&id, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let late = time(&done["started_at"]) - run_at;
    assert!(
        late < chrono::Duration::seconds(1),
        "the job started {late} after it fell due"
    );
}
