//! The real binary as a child process: crash (kill -9) and graceful stop (SIGTERM).

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{JobqProcess, eventually};

const FLAGS: &[&str] = &[
    "--heartbeat-interval",
    "1s",
    "--missed-heartbeats",
    "2",
    "--poll-interval",
    "200ms",
    "--progress-interval",
    "50ms",
    "--shutdown-grace",
    "5s",
];

async fn enqueue_long_running(p: &JobqProcess, steps: u32, step_ms: u32) -> String {
    let body = json!({"steps": steps, "step_duration_ms": step_ms});
    let job = p.post_json("/v1/jobs/long-running", &body).await;
    job["id"].as_str().unwrap().to_owned()
}

async fn progress_at_least(p: &JobqProcess, id: &str, n: u64) -> u64 {
    eventually(Duration::from_secs(30), "progress", || async {
        let job = p.get_json(&format!("/v1/jobs/{id}")).await;
        let done = job["progress"]["done"].as_u64().unwrap();
        (done >= n).then_some(done)
    })
    .await
}

async fn events(p: &JobqProcess, id: &str) -> Vec<Value> {
    p.get_json(&format!("/v1/jobs/{id}/events?limit=200")).await["events"]
        .as_array()
        .unwrap()
        .clone()
}

#[sqlx::test(migrations = false)]
async fn a_killed_worker_process_is_replaced_and_the_job_resumes_from_its_checkpoint(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let mut first = JobqProcess::start(&db, FLAGS).await;
    let id = enqueue_long_running(&first, 30, 100).await;
    let checkpoint = progress_at_least(&first, &id, 5).await;
    first.kill();

    let second = JobqProcess::start(&db, FLAGS).await;
    let job = second.finished(&id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "succeeded", "{job}\n{}", second.logs());
    assert_eq!(job["result"]["steps_completed"], 30);
    assert_eq!(
        job["attempt"], 2,
        "the lost attempt counts, the rescue is the second"
    );

    let events = events(&second, &id).await;
    let starts: Vec<&Value> = events.iter().filter(|e| e["type"] == "started").collect();
    assert_eq!(starts.len(), 2, "{events:#?}");
    assert_eq!(starts[1]["data"]["rescued"], true);
    let resumed_from = starts[1]["data"]["resumed_from"].as_u64().unwrap();
    assert!(
        resumed_from >= checkpoint,
        "resumed from step {resumed_from}, but step {checkpoint} was already durable"
    );
    // The rescued attempt went on from the checkpoint instead of starting over.
    let rescue_at = events.iter().position(|e| e == starts[1]).unwrap();
    let first_progress = events[rescue_at..]
        .iter()
        .find(|e| e["type"] == "progress")
        .map(|e| e["data"]["done"].as_u64().unwrap())
        .unwrap();
    assert_eq!(first_progress, resumed_from + 1);
    assert_eq!(
        events.iter().filter(|e| e["type"] == "succeeded").count(),
        1
    );
}

#[sqlx::test(migrations = false)]
async fn sigterm_releases_a_running_job_at_a_safe_point_and_exits_zero(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let mut first = JobqProcess::start(&db, FLAGS).await;
    let id = enqueue_long_running(&first, 40, 100).await;
    progress_at_least(&first, &id, 3).await;

    let status = first.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status:?}\n{}", first.logs());

    // Back in the queue with its checkpoint, its attempt not spent.
    let second = JobqProcess::start(&db, &[FLAGS, &["--role", "api"]].concat()).await;
    let job = second.get_json(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["status"], "queued", "{job}");
    assert_eq!(job["attempt"], 0);
    let saved = job["progress"]["done"].as_u64().unwrap();
    assert!(saved >= 3, "checkpoint kept: {job}");
    let released = events(&second, &id).await;
    let last = released.last().unwrap();
    assert_eq!(last["type"], "queued");
    assert_eq!(last["data"]["reason"], "worker shutdown");
    drop(second);

    // A new worker finishes it from the checkpoint.
    let third = JobqProcess::start(&db, FLAGS).await;
    let job = third.finished(&id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["attempt"], 1);
    let starts: Vec<Value> = events(&third, &id)
        .await
        .into_iter()
        .filter(|e| e["type"] == "started")
        .collect();
    assert_eq!(
        starts.last().unwrap()["data"]["resumed_from"].as_u64(),
        Some(saved)
    );
}

#[sqlx::test(migrations = false)]
async fn sigterm_on_an_idle_process_exits_zero_quickly(_: PgPoolOptions, db: PgConnectOptions) {
    // Idle workers rest between looks at the queue (here until a notification, or half a
    // heartbeat: 30 s); a shutdown must not wait that rest out, nor the 10 s grace.
    let mut process = JobqProcess::start(
        &db,
        &[
            "--poll-interval",
            "1h",
            "--heartbeat-interval",
            "60s",
            "--shutdown-grace",
            "10s",
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let status = process.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "{}", process.logs());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}\n{}",
        started.elapsed(),
        process.logs()
    );
}

/// Drops a database a test created under a name of its own (a UUID, not user input).
async fn drop_database(admin: &sqlx::PgPool, name: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE \"{name}\" WITH (FORCE)"
    )))
    .execute(admin)
    .await
    .unwrap();
}

#[sqlx::test(migrations = false)]
async fn migrate_and_serve_create_a_missing_database(_: PgPoolOptions, db: PgConnectOptions) {
    let name = format!("jobq_fresh_{}", uuid::Uuid::now_v7().simple());
    let fresh = db.clone().database(&name);
    let url = crate::helpers::database_url(&fresh);

    let status = std::process::Command::new(env!("CARGO_BIN_EXE_jobq"))
        .args(["migrate", "--database-url", &url])
        .status()
        .unwrap();
    assert!(status.success());
    let pool = PgPoolOptions::new()
        .connect_with(fresh.clone())
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables
         WHERE table_schema IN ('jobq', 'apalis') AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for t in [
        "apalis.jobs",
        "apalis.workers",
        "jobq.job_events",
        "jobq.jobs",
    ] {
        assert!(tables.iter().any(|x| x == t), "{t} missing from {tables:?}");
    }
    pool.close().await;
    let admin = PgPoolOptions::new().connect_with(db).await.unwrap();
    drop_database(&admin, &name).await;

    // `serve` on a database that does not exist creates it too, and runs a job on it.
    let process = JobqProcess::start(&fresh, FLAGS).await;
    let id = enqueue_long_running(&process, 1, 0).await;
    assert_eq!(
        process.finished(&id, Duration::from_secs(60)).await["status"],
        "succeeded"
    );
    drop(process);
    drop_database(&admin, &name).await;
}

#[sqlx::test(migrations = false)]
async fn keys_create_prints_only_the_token_even_when_it_creates_the_database(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // The README's `export JOBQ_TOKEN=$(jobq keys create ...)` on a machine where jobq never ran:
    // the command creates the database and logs that, and stdout must still be the token alone.
    let name = format!("jobq_fresh_{}", uuid::Uuid::now_v7().simple());
    let url = crate::helpers::database_url(&db.clone().database(&name));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobq"))
        .args(["keys", "create", "--name", "first", "--role", "admin"])
        .args(["--database-url", &url])
        .env("JOBQ_LOG", "info")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout: {stdout:?}");
    assert!(lines[0].starts_with("jq_"), "stdout: {stdout:?}");
    assert!(
        stderr.contains("created the database"),
        "the log goes to stderr: {stderr:?}"
    );
    let admin = PgPoolOptions::new().connect_with(db).await.unwrap();
    drop_database(&admin, &name).await;
}

/// Pooled connections that Postgres ended while they sat idle (a restart, a failover, an idle
/// timeout) are noticed before use and replaced: requests still succeed, on fresh connections.
/// (It guards sqlx's check before handing out a connection, or whatever replaces it: skipping
/// the check for connections used moments ago was tried, see the README's Performance section.)
#[sqlx::test(migrations = false)]
async fn connections_postgres_ended_while_idle_are_replaced_unseen(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // Nothing but this test's requests takes from the pool meanwhile: the backstop poll is an
    // hour away, heartbeats 30 s apart.
    let process = JobqProcess::start(
        &db,
        &["--poll-interval", "1h", "--heartbeat-interval", "30s"],
    )
    .await;
    let list = || {
        process
            .client
            .get(format!("{}/v1/jobs?limit=1", process.base))
            .send()
    };
    // Several connections in the pool. Only they are ended below, not the LISTEN connections,
    // whose reconnects would take (and so clear out) the dead ones first.
    for response in futures::future::join_all((0..8).map(|_| list())).await {
        assert_eq!(response.unwrap().status().as_u16(), 200);
    }
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.clone())
        .await
        .unwrap();
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM ( \
             SELECT pid FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
               AND query NOT ILIKE '%LISTEN%' OFFSET 0) s",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(ended >= 2, "only {ended} sessions of jobq to end");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..8 {
        let response = list().await.unwrap();
        let status = response.status().as_u16();
        assert_eq!(status, 200, "{}", response.text().await.unwrap_or_default());
    }
    admin.close().await;
}
