use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{SmtpServer, TestApp, spawn_app_with};

/// Follows `next_cursor` through every page of `query`; returns the ids in order.
async fn all_pages(app: &TestApp, query: &str, limit: u32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut url = format!("/v1/jobs?limit={limit}{query}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let resp = app.get(&url).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let page: Value = resp.json().await.unwrap();
        let jobs = page["jobs"].as_array().unwrap();
        assert!(jobs.len() <= limit as usize);
        ids.extend(jobs.iter().map(|j| j["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return ids,
        }
    }
    panic!("pagination did not end");
}

#[sqlx::test(migrations = false)]
async fn listing_filters_by_status_and_kind_and_pages_newest_first(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let smtp = SmtpServer::rejecting();
    let app = spawn_app_with(db, &["--smtp-url", &smtp.url()]).await;

    let mut hashes = Vec::new();
    for i in 0..5 {
        let job = app
            .enqueue("/v1/jobs/hash", json!({"data": format!("d{i}")}))
            .await;
        hashes.push(job["id"].as_str().unwrap().to_owned());
    }
    let email = app
        .enqueue_id(
            "/v1/jobs/email",
            json!({"to": "x@example.com", "subject": "s", "body": ""}),
        )
        .await;
    for id in hashes.iter().chain([&email]) {
        app.finished(id, Duration::from_secs(20)).await;
    }

    // Newest first: the reverse of creation order, across pages of two, without repeats.
    let mut newest_first = hashes.clone();
    newest_first.reverse();
    assert_eq!(all_pages(&app, "&kind=hash", 2).await, newest_first);
    assert_eq!(
        all_pages(&app, "&status=succeeded&kind=hash", 3).await,
        newest_first
    );
    assert_eq!(
        all_pages(&app, "&status=failed", 2).await,
        vec![email.clone()]
    );
    assert!(
        all_pages(&app, "&status=failed&kind=hash", 2)
            .await
            .is_empty()
    );
    let everything: HashSet<String> = all_pages(&app, "", 4).await.into_iter().collect();
    assert_eq!(everything.len(), 6);

    // The failed job says why.
    let failed = app.job(&email).await;
    assert_eq!(failed["status"], "failed");
    assert!(failed["last_error"].as_str().unwrap().contains("550"));
}

#[sqlx::test(migrations = false)]
async fn pages_stay_correct_while_new_jobs_arrive(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, &["--role", "api"]).await;
    let mut old = Vec::new();
    for _ in 0..4 {
        let job = app
            .enqueue(
                "/v1/jobs/long-running",
                json!({"steps": 1, "step_duration_ms": 0}),
            )
            .await;
        old.push(job["id"].as_str().unwrap().to_owned());
    }
    let first: Value = app.get("/v1/jobs?limit=2").await.json().await.unwrap();
    // A job created between two page reads appears on neither of the following pages.
    app.enqueue(
        "/v1/jobs/long-running",
        json!({"steps": 1, "step_duration_ms": 0}),
    )
    .await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value = app
        .get(&format!("/v1/jobs?limit=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = first["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["jobs"].as_array().unwrap())
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = old.iter().rev().map(String::as_str).collect();
    assert_eq!(ids, expected);
    assert!(second["next_cursor"].is_null());
}

#[sqlx::test(migrations = false)]
async fn a_jobs_events_page_in_order(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, &["--progress-interval", "0ms"]).await;
    let job = app
        .enqueue(
            "/v1/jobs/long-running",
            json!({"steps": 5, "step_duration_ms": 20}),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    app.finished(id, Duration::from_secs(20)).await;

    let all = app.events(id).await;
    let types: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "queued",
            "started",
            "progress",
            "progress",
            "progress",
            "progress",
            "progress",
            "succeeded"
        ]
    );
    assert!(
        all.iter()
            .all(|e| e["job_id"] == id && e["kind"] == "long_running")
    );
    assert_eq!(all.last().unwrap()["status"], "succeeded");
    assert_eq!(all.last().unwrap()["data"]["result"]["steps_completed"], 5);

    // Page through with `after`, three at a time: the same events, none twice.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = app
            .get(&format!("/v1/jobs/{id}/events?limit=3&after={after}"))
            .await
            .json()
            .await
            .unwrap();
        paged.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_after"].as_i64() {
            Some(a) => after = a,
            None => break,
        }
    }
    assert_eq!(paged, all);
}

/// The accept statement sends back only the ids it wrote and the time (the API builds the
/// answer from what it sent): the answer to every enqueue must still be the job exactly as it
/// is stored, field for field, whatever options were given.
#[sqlx::test(migrations = false)]
async fn an_accepted_job_is_answered_exactly_as_it_is_stored(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(db, &["--role", "api"]).await;
    let batch = json!({"jobs": [
        {"kind": "email", "to": "a@b.co", "subject": "s", "body": "hello"},
        {"kind": "long_running", "steps": 3, "step_duration_ms": 10, "priority": -7,
         "max_attempts": 2, "timeout_ms": 5000, "tags": ["a", "b=c"]},
        {"kind": "hash", "data": "x", "repeat": 3, "delay_ms": 60000},
        {"kind": "hash", "data": "y", "tags": []},
    ]});
    let mut answered = Vec::new();
    for key in [None, Some("same-fields")] {
        let mut req = app.client.post(app.url("/v1/jobs/batch")).json(&batch);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let body: Value = resp.json().await.unwrap();
        answered.extend(body["jobs"].as_array().unwrap().iter().cloned());
    }
    answered.push(
        app.enqueue(
            "/v1/jobs/hash",
            json!({"data": "z", "priority": 3, "tags": ["one"], "timeout_ms": 100}),
        )
        .await,
    );
    assert_eq!(answered.len(), 9);
    let mut seen = HashSet::new();
    for job in &answered {
        let id = job["id"].as_str().unwrap();
        assert!(seen.insert(id.to_owned()), "ids are distinct");
        let stored: Value = app
            .get(&format!("/v1/jobs/{id}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(&stored, job, "the answer differs from the stored job {id}");
    }
    assert_eq!(answered[2]["status"], "scheduled");
    assert_eq!(answered[1]["tags"], json!(["a", "b=c"]));
    assert_eq!(answered[1]["max_attempts"], 2);
}
