use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{closed_port, spawn_app, start_app};

const COMMITTED: &str = include_str!("../../openapi/jobq.json");

#[sqlx::test(migrations = false)]
async fn the_committed_spec_is_the_served_spec(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let served = app.get("/openapi.json").await.text().await.unwrap();
    assert!(
        served.trim_end() == COMMITTED.trim_end(),
        "openapi/jobq.json is stale: regenerate it with `cargo run -- openapi > openapi/jobq.json`"
    );
    let spec: Value = serde_json::from_str(&served).unwrap();
    for op in [
        "enqueue_email",
        "enqueue_long_running",
        "enqueue_hash",
        "get_job",
        "list_jobs",
        "list_job_events",
    ] {
        assert!(
            served.contains(&format!("\"operationId\": \"{op}\"")),
            "{op} missing"
        );
    }
    assert_eq!(spec["openapi"], "3.0.0");
}

#[sqlx::test(migrations = false)]
async fn swagger_ui_and_probes_are_served(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let docs = app.get("/docs").await;
    assert_eq!(docs.status(), StatusCode::OK);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        html.contains("openapi.json") || html.contains("spec"),
        "the UI loads the spec"
    );

    let health: Value = app.get("/healthz").await.json().await.unwrap();
    assert_eq!(health, json!({"status": "ok"}));
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test]
async fn without_postgres_readiness_fails_and_enqueue_answers_503_fast() {
    // A pool pointing at a port where nothing listens: Postgres is "down".
    let down = closed_port();
    let options = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(down.port())
        .username("postgres");
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy_with(options);
    // Any token: the key lookup itself needs the database.
    let app = start_app(pool, "jq_unchecked".to_owned(), &["--role", "api"]).await;

    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");

    let started = std::time::Instant::now();
    let resp = app.post("/v1/jobs/hash", &json!({"data": "x"})).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fails fast, took {:?}",
        started.elapsed()
    );
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["code"], "unavailable");
    assert!(
        app.get("/healthz").await.status().is_success(),
        "liveness is independent"
    );
}
