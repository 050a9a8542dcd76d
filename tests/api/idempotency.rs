use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{TestApp, spawn_app_with};

async fn post_with_key(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/jobs/long-running"))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn the_same_key_and_body_twice_yields_one_job(_: PgPoolOptions, db: PgConnectOptions) {
    // API only: the job stays queued, so both answers describe the same unchanged job.
    let app = spawn_app_with(db, &["--role", "api"]).await;
    let body = json!({"steps": 3, "step_duration_ms": 10});

    let first = post_with_key(&app, "order-42", &body).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert_eq!(first.headers()["idempotent-replayed"], "false");
    let first: Value = first.json().await.unwrap();

    let second = post_with_key(&app, "order-42", &body).await;
    assert_eq!(second.status(), StatusCode::ACCEPTED);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: Value = second.json().await.unwrap();

    assert_eq!(first["id"], second["id"]);
    assert_eq!(app.count("jobq.jobs").await, 1);
    assert_eq!(
        app.count("apalis.jobs").await,
        1,
        "one queue entry, not two"
    );
}

#[sqlx::test(migrations = false)]
async fn the_same_key_with_a_different_body_is_a_conflict(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, &["--role", "api"]).await;
    let first = post_with_key(&app, "k1", &json!({"steps": 3, "step_duration_ms": 10})).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);

    let other = post_with_key(&app, "k1", &json!({"steps": 4, "step_duration_ms": 10})).await;
    assert_eq!(other.status(), StatusCode::CONFLICT);
    let err: Value = other.json().await.unwrap();
    assert_eq!(err["code"], "idempotency_key_reused");
    assert_eq!(err["field"], "Idempotency-Key");
    assert_eq!(app.count("jobq.jobs").await, 1);
}

#[sqlx::test(migrations = false)]
async fn concurrent_requests_with_one_key_create_one_job(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, &["--role", "api"]).await;
    let body = json!({"steps": 2, "step_duration_ms": 0});
    let requests = (0..8).map(|_| post_with_key(&app, "burst", &body));
    let responses = futures::future::join_all(requests).await;
    let mut ids = Vec::new();
    for r in responses {
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let job: Value = r.json().await.unwrap();
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "all eight answers name one job");
    assert_eq!(app.count("jobq.jobs").await, 1);
}
