use std::time::Duration;

use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{closed_port, spawn_app_with, time};

#[sqlx::test(migrations = false)]
async fn a_refused_smtp_connection_retries_with_growing_delays_then_fails(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let refusing = closed_port();
    let url = refusing.smtp_url();
    let app = spawn_app_with(db, &["--smtp-url", &url, "--retry-base", "1s"]).await;

    let job = app
        .enqueue(
            "/v1/jobs/email",
            json!({"to": "a@example.com", "subject": "s", "body": "b", "max_attempts": 3}),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    let done = app.finished(id, Duration::from_secs(60)).await;

    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["attempt"], 3);
    assert_eq!(done["max_attempts"], 3);
    let error = done["last_error"].as_str().unwrap();
    assert!(error.contains("SMTP delivery failed"), "{error}");

    let events = app.events(id).await;
    let of = |t: &str| -> Vec<&Value> { events.iter().filter(|e| e["type"] == t).collect() };
    let (started, retrying, failed) = (of("started"), of("retrying"), of("failed"));
    assert_eq!(started.len(), 3, "{events:#?}");
    assert_eq!(retrying.len(), 2);
    assert_eq!(failed.len(), 1);

    // Exponential backoff: the second delay is longer than the first (jitter is +-25%).
    let delays: Vec<u64> = retrying
        .iter()
        .map(|e| e["data"]["delay_ms"].as_u64().unwrap())
        .collect();
    assert!((750..=1250).contains(&delays[0]), "{delays:?}");
    assert!((1500..=2500).contains(&delays[1]), "{delays:?}");
    // ... and each attempt really waited for its backoff.
    for (retry, next_start) in retrying.iter().zip(&started[1..]) {
        let due = time(&retry["data"]["next_attempt_at"]);
        let began = time(&next_start["created_at"]);
        assert!(
            began >= due,
            "attempt started at {began}, before it was due at {due}"
        );
    }
}
