//! Bad input gets a 4xx naming the field, and nothing is enqueued.

use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::spawn_app_with;

async fn assert_error(resp: reqwest::Response, status: u16, field: Option<&str>, case: &str) {
    let got = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "{case}: {text}");
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{case}: not JSON: {text}"));
    assert!(
        body["code"].is_string() && body["message"].is_string(),
        "{case}: {body}"
    );
    assert_eq!(body["field"].as_str(), field, "{case}: {body}");
}

#[sqlx::test(migrations = false)]
async fn invalid_bodies_of_each_kind_are_refused_naming_the_field(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(db, &["--role", "api", "--hash-max-input-bytes", "1000000"]).await;
    let email = "/v1/jobs/email";
    let long = "/v1/jobs/long-running";
    let hash = "/v1/jobs/hash";
    let cases: Vec<(&str, &str, Value, u16, Option<&str>)> = vec![
        (
            "email: bad address",
            email,
            json!({"to": "not-an-address", "subject": "s", "body": "b"}),
            422,
            Some("to"),
        ),
        (
            "email: missing subject",
            email,
            json!({"to": "a@b.co", "body": "b"}),
            422,
            Some("subject"),
        ),
        (
            "email: empty subject",
            email,
            json!({"to": "a@b.co", "subject": "", "body": "b"}),
            422,
            Some("subject"),
        ),
        (
            "email: address with a space",
            email,
            json!({"to": " a@b.co", "subject": "s", "body": "b"}),
            422,
            Some("to"),
        ),
        (
            "email: unknown field",
            email,
            json!({"to": "a@b.co", "subject": "s", "body": "b", "max_attempt": 3}),
            422,
            Some("max_attempt"),
        ),
        (
            "email: subject with newline",
            email,
            json!({"to": "a@b.co", "subject": "a\nBcc: x@y.z", "body": "b"}),
            422,
            Some("subject"),
        ),
        (
            "email: wrong type",
            email,
            json!({"to": 5, "subject": "s", "body": "b"}),
            422,
            Some("to"),
        ),
        (
            "email: unknown field",
            email,
            json!({"to": "a@b.co", "subjet": "s", "subject": "s", "body": "b"}),
            422,
            Some("subjet"),
        ),
        (
            "email: max_attempts 0",
            email,
            json!({"to": "a@b.co", "subject": "s", "body": "b", "max_attempts": 0}),
            422,
            Some("max_attempts"),
        ),
        (
            "email: max_attempts 26",
            email,
            json!({"to": "a@b.co", "subject": "s", "body": "b", "max_attempts": 26}),
            422,
            Some("max_attempts"),
        ),
        (
            "email: body too long",
            email,
            json!({"to": "a@b.co", "subject": "s", "body": "x".repeat(300_000)}),
            422,
            Some("body"),
        ),
        (
            "long: zero steps",
            long,
            json!({"steps": 0, "step_duration_ms": 1}),
            422,
            Some("steps"),
        ),
        (
            "long: too many steps",
            long,
            json!({"steps": 10_001, "step_duration_ms": 1}),
            422,
            Some("steps"),
        ),
        (
            "long: negative steps",
            long,
            json!({"steps": -1, "step_duration_ms": 1}),
            422,
            Some("steps"),
        ),
        (
            "long: steps as string",
            long,
            json!({"steps": "3", "step_duration_ms": 1}),
            422,
            Some("steps"),
        ),
        (
            "long: step too long",
            long,
            json!({"steps": 1, "step_duration_ms": 60_001}),
            422,
            Some("step_duration_ms"),
        ),
        (
            "long: missing duration",
            long,
            json!({"steps": 1}),
            422,
            Some("step_duration_ms"),
        ),
        (
            "long: huge number",
            long,
            json!({"steps": 1e40, "step_duration_ms": 1}),
            422,
            Some("steps"),
        ),
        (
            "hash: no data",
            hash,
            json!({"repeat": 2}),
            422,
            Some("data"),
        ),
        (
            "hash: data of neither form",
            hash,
            json!({"data": {"base64": "YQ==", "text": "a"}}),
            422,
            Some("data"),
        ),
        (
            "hash: bad base64",
            hash,
            json!({"data": {"base64": "***"}}),
            422,
            Some("data.base64"),
        ),
        (
            "hash: unpadded base64",
            hash,
            json!({"data": {"base64": "YQ"}}),
            422,
            Some("data.base64"),
        ),
        (
            "hash: null for an optional field",
            hash,
            json!({"data": "a", "repeat": null}),
            422,
            Some("repeat"),
        ),
        (
            "hash: repeat 0",
            hash,
            json!({"data": "a", "repeat": 0}),
            422,
            Some("repeat"),
        ),
        (
            "hash: over this server's input limit",
            hash,
            json!({"data": "data1", "repeat": 1_000_000}),
            413,
            Some("repeat"),
        ),
        (
            "hash: unknown algorithm",
            hash,
            json!({"data": "a", "algorithm": "md5"}),
            422,
            Some("algorithm"),
        ),
        (
            "hash: not an object",
            hash,
            json!(["data"]),
            422,
            Some("body"),
        ),
    ];
    for (case, path, body, status, field) in cases {
        let resp = app.post(path, &body).await;
        assert_error(resp, status, field, case).await;
    }

    assert_eq!(
        app.count("jobq.jobs").await,
        0,
        "no refused request left a job behind"
    );
    assert_eq!(
        app.count("apalis.jobs").await,
        0,
        "no refused request left a queue entry"
    );
}

#[sqlx::test(migrations = false)]
async fn malformed_requests_get_clear_4xx_answers(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, &["--role", "api"]).await;
    let raw = |path: &str, content_type: &str, body: Vec<u8>| {
        app.client
            .post(app.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    let resp = raw("/v1/jobs/hash", "application/json", b"{\"data\": ".to_vec())
        .await
        .unwrap();
    assert_error(resp, 400, None, "truncated JSON").await;
    let resp = raw("/v1/jobs/hash", "application/json", Vec::new())
        .await
        .unwrap();
    assert_error(resp, 400, None, "empty body").await;
    let resp = raw("/v1/jobs/hash", "text/plain", b"data1".to_vec())
        .await
        .unwrap();
    assert_error(resp, 415, Some("Content-Type"), "wrong content type").await;
    let big = format!("{{\"data\": \"{}\"}}", "a".repeat(9 * 1024 * 1024));
    let resp = raw("/v1/jobs/hash", "application/json", big.into_bytes())
        .await
        .unwrap();
    assert_error(resp, 413, None, "oversized body").await;
    let resp = raw(
        "/v1/jobs/long-running",
        "application/json",
        vec![b' '; 5000],
    )
    .await
    .unwrap();
    assert_error(resp, 413, None, "oversized for this endpoint").await;

    let resp = app
        .client
        .post(app.url("/v1/jobs/long-running"))
        .header("Idempotency-Key", "has spaces")
        .json(&json!({"steps": 1, "step_duration_ms": 1}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, Some("Idempotency-Key"), "bad idempotency key").await;

    // A method the route does not have: 405 naming the ones it has.
    let job = uuid::Uuid::now_v7();
    for (method, path, allow) in [
        ("PATCH", format!("/v1/jobs/{job}"), "GET, HEAD"),
        ("GET", "/v1/jobs/email".to_owned(), "POST"),
        ("TRACE", "/healthz".to_owned(), "GET, HEAD"),
    ] {
        let resp = app
            .client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                app.url(&path),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
        assert_error(resp, 405, None, &format!("{method} {path}")).await;
    }

    let unknown = uuid::Uuid::now_v7();
    let cases: Vec<(String, u16, Option<&str>)> = vec![
        (format!("/v1/jobs/{unknown}"), 404, Some("id")),
        (format!("/v1/jobs/{unknown}/events"), 404, Some("id")),
        ("/v1/jobs/not-a-uuid".into(), 400, Some("id")),
        ("/v1/jobs?limit=0".into(), 400, Some("limit")),
        ("/v1/jobs?limit=201".into(), 400, Some("limit")),
        ("/v1/jobs?limit=x".into(), 400, Some("limit")),
        ("/v1/jobs?status=done".into(), 400, Some("status")),
        ("/v1/jobs?kind=sms".into(), 400, Some("kind")),
        ("/v1/jobs?cursor=%%%".into(), 400, Some("cursor")),
        (
            format!("/v1/jobs/{unknown}/events?after=-1"),
            400,
            Some("after"),
        ),
        ("/v1/nope".into(), 404, None),
    ];
    for (path, status, field) in cases {
        let resp = app.get(&path).await;
        assert_error(resp, status, field, &path).await;
    }
}
