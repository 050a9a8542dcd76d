//! API keys, roles, tenants, limits.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use jobq::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{
    Ended, JobqProcess, TestApp, WsClient, authorized_client, eventually, spawn_app_with,
};

const WAIT: Duration = Duration::from_secs(30);

async fn call(
    client: &reqwest::Client,
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut req = client.request(method, app.url(path));
    if let Some(body) = body {
        req = req.json(body);
    }
    req.send().await.unwrap()
}

#[sqlx::test(migrations = false)]
async fn requests_without_a_valid_key_get_401_with_www_authenticate(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(db, &["--role", "api"]).await;
    let anonymous = reqwest::Client::new();
    let revoked = app.key(Role::Client, "default").await;
    let key_id = {
        let keys: Value = app.get("/v1/keys").await.json().await.unwrap();
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == "client-default")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let resp = call(
        &app.client,
        &app,
        Method::DELETE,
        &format!("/v1/keys/{key_id}"),
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);

    let body = json!({"data": "x"});
    for (who, client) in [
        ("no key", anonymous.clone()),
        ("unknown key", authorized_client("jq_not-a-real-key")),
        ("revoked key", authorized_client(&revoked)),
    ] {
        let resp = call(&client, &app, Method::POST, "/v1/jobs/hash", Some(&body)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{who}");
        assert_eq!(
            resp.headers()["www-authenticate"],
            r#"Bearer realm="jobq""#,
            "{who}"
        );
        let err: Value = resp.json().await.unwrap();
        assert_eq!(
            (err["code"].as_str(), err["field"].as_str()),
            (Some("unauthorized"), Some("Authorization")),
            "{who}"
        );
    }
    assert_eq!(app.count("jobq.jobs").await, 0);
    // Health and the docs need no key.
    for path in ["/healthz", "/readyz", "/openapi.json", "/docs"] {
        assert_eq!(
            anonymous.get(app.url(path)).send().await.unwrap().status(),
            StatusCode::OK,
            "{path}"
        );
    }
}

/// The role each operation needs. Every operation of the served spec must be listed here: a
/// new endpoint without a rule fails this test.
fn rules() -> BTreeMap<&'static str, Option<Role>> {
    BTreeMap::from([
        ("healthz", None),
        ("readyz", None),
        ("enqueue_email", Some(Role::Client)),
        ("enqueue_long_running", Some(Role::Client)),
        ("enqueue_hash", Some(Role::Client)),
        ("enqueue_batch", Some(Role::Client)),
        ("wait_job", Some(Role::Client)),
        ("get_job", Some(Role::Client)),
        ("list_jobs", Some(Role::Client)),
        ("list_job_events", Some(Role::Client)),
        ("count_jobs", Some(Role::Client)),
        ("retry_job", Some(Role::Ops)),
        ("cancel_job", Some(Role::Ops)),
        ("retry_jobs", Some(Role::Ops)),
        ("get_stats", Some(Role::Ops)),
        ("list_queues", Some(Role::Ops)),
        ("pause_queue", Some(Role::Ops)),
        ("resume_queue", Some(Role::Ops)),
        ("set_queue_rate_limit", Some(Role::Ops)),
        ("remove_queue_rate_limit", Some(Role::Ops)),
        ("create_schedule", Some(Role::Ops)),
        ("list_schedules", Some(Role::Ops)),
        ("pause_schedule", Some(Role::Ops)),
        ("resume_schedule", Some(Role::Ops)),
        ("delete_schedule", Some(Role::Ops)),
        ("create_key", Some(Role::Admin)),
        ("list_keys", Some(Role::Admin)),
        ("revoke_key", Some(Role::Admin)),
    ])
}

#[sqlx::test(migrations = false)]
async fn every_endpoint_enforces_its_role(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, &["--role", "api"]).await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let job = app.enqueue_id("/v1/jobs/hash", json!({"data": "x"})).await;
    let schedule = app
        .post(
            "/v1/schedules",
            &json!({"name": "matrix", "cron": "0 0 1 1 *", "job": {"kind": "hash", "data": "x"}}),
        )
        .await;
    assert_eq!(schedule.status(), StatusCode::CREATED);
    let schedule: Value = schedule.json().await.unwrap();
    let schedule = schedule["id"].as_str().unwrap().to_owned();

    let mut operations = Vec::new();
    for (path, methods) in spec["paths"].as_object().unwrap() {
        for (method, op) in methods.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap().to_owned();
            let secured = op.get("security").is_some();
            operations.push((id, method.to_uppercase(), path.clone(), secured));
        }
    }
    let rules = rules();
    let listed: HashSet<&str> = rules.keys().copied().collect();
    let served: HashSet<&str> = operations.iter().map(|(id, ..)| id.as_str()).collect();
    assert_eq!(served, listed, "every operation needs a rule in rules()");

    let keys = [
        (
            Role::Client,
            authorized_client(&app.key(Role::Client, "default").await),
        ),
        (
            Role::Ops,
            authorized_client(&app.key(Role::Ops, "default").await),
        ),
        (Role::Admin, app.client.clone()),
    ];
    for (id, method, path, secured) in &operations {
        let needed = rules[id.as_str()];
        assert_eq!(
            *secured,
            needed.is_some(),
            "{id}: the spec's security matches the rule"
        );
        let body = match id.as_str() {
            "enqueue_email" => Some(json!({"to": "a@b.co", "subject": "s", "body": ""})),
            "enqueue_long_running" => Some(json!({"steps": 1, "step_duration_ms": 0})),
            "enqueue_hash" => Some(json!({"data": "x"})),
            "retry_jobs" => Some(json!({"dry_run": true})),
            "create_key" => Some(json!({"name": "made-by-test", "role": "client"})),
            "enqueue_batch" => Some(json!({"jobs": [{"kind": "hash", "data": "x"}]})),
            "set_queue_rate_limit" => Some(json!({"per_second": 1000})),
            "create_schedule" => Some(
                json!({"name": format!("s{}", uuid::Uuid::now_v7().simple()), "cron": "0 0 1 1 *", "job": {"kind": "hash", "data": "x"}}),
            ),
            _ => None,
        };
        let throwaway_key = || async {
            let keys: Value = app.get("/v1/keys").await.json().await.unwrap();
            keys["keys"][0]["id"].as_str().unwrap().to_owned()
        };
        let url = if path.contains("/keys/") {
            path.replace("{id}", &throwaway_key().await)
        } else if path.contains("/schedules/") {
            path.replace("{id}", &schedule)
        } else {
            path.replace("{id}", &job).replace("{kind}", "hash")
        };
        // The job stays queued (no workers): do not wait long for it.
        let url = if id == "wait_job" {
            format!("{url}?timeout_seconds=1")
        } else {
            url
        };
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let anonymous = call(
            &reqwest::Client::new(),
            &app,
            method.clone(),
            &url,
            body.as_ref(),
        )
        .await;
        match needed {
            None => assert!(anonymous.status().is_success(), "{id} needs no key"),
            Some(_) => assert_eq!(
                anonymous.status(),
                StatusCode::UNAUTHORIZED,
                "{id} without a key"
            ),
        }
        for (role, client) in &keys {
            let status = call(client, &app, method.clone(), &url, body.as_ref())
                .await
                .status();
            match needed {
                Some(needed) if *role < needed => {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{id} with a {role:?} key")
                }
                _ => assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{id} with a {role:?} key: {status}"
                ),
            }
        }
    }

    // Routes outside the spec: metrics (ops) and the event WebSocket (any key).
    for (role, client) in &keys {
        let status = client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status();
        let expected = if *role >= Role::Ops {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(status, expected, "/metrics with a {role:?} key");
    }
    let status = reqwest::get(app.url("/metrics")).await.unwrap().status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let refused = WsClient::try_connect(&app.base, None, "").await;
    assert!(
        refused.is_ok(),
        "a browser may authenticate with its first message"
    );
    let refused = WsClient::try_connect(&app.base, Some("jq_wrong"), "").await;
    assert!(refused.err().unwrap().to_string().contains("401"));
}

#[sqlx::test(migrations = false)]
async fn a_client_never_sees_another_tenants_jobs_or_events(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(db, &["--progress-interval", "0ms"]).await;
    let (a, b) = (
        app.key(Role::Client, "acme").await,
        app.key(Role::Client, "globex").await,
    );
    let (client_a, client_b) = (authorized_client(&a), authorized_client(&b));

    let mut watch_b = WsClient::try_connect(&app.base, Some(&b), "")
        .await
        .unwrap();
    watch_b.expect("subscribed").await;
    let mut watch_ops = WsClient::connect(&app, "").await;
    watch_ops.expect("subscribed").await;

    let resp = client_a
        .post(app.url("/v1/jobs/long-running"))
        .json(&json!({"steps": 3, "step_duration_ms": 20}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let job: Value = resp.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    // The admin (an ops-level key) sees it, live, to the end.
    watch_ops
        .events_until(WAIT, |e| {
            e["job_id"] == id.as_str() && e["type"] == "succeeded"
        })
        .await;

    for path in [format!("/v1/jobs/{id}"), format!("/v1/jobs/{id}/events")] {
        let resp = client_b.get(app.url(&path)).send().await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::NOT_FOUND,
            "{path}: another tenant's job does not exist"
        );
        let resp = client_a.get(app.url(&path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}: the owner sees it");
    }
    let page: Value = client_b
        .get(app.url("/v1/jobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(page["jobs"].as_array().unwrap().is_empty(), "{page}");
    let counts: Value = client_b
        .get(app.url("/v1/jobs/counts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counts["total"], 0);
    let page: Value = client_a
        .get(app.url("/v1/jobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);

    // Not live, not replayed, not by asking for the job id.
    assert_eq!(
        watch_b.next(Duration::from_millis(300)).await,
        Err(Ended::TimedOut)
    );
    let mut replay_b =
        WsClient::try_connect(&app.base, Some(&b), &format!("?after=0&job_ids={id}"))
            .await
            .unwrap();
    replay_b.expect("subscribed").await;
    replay_b.expect("caught_up").await;
    let mut replay_a = WsClient::try_connect(&app.base, Some(&a), "?after=0")
        .await
        .unwrap();
    replay_a.expect("subscribed").await;
    let events = replay_a
        .events_until(WAIT, |e| e["type"] == "succeeded")
        .await;
    assert!(events.iter().all(|e| e["job_id"] == id.as_str()));
}

#[sqlx::test(migrations = false)]
async fn a_browser_authenticates_with_its_first_message(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, &["--role", "api"]).await;
    let mut ws = WsClient::try_connect(&app.base, None, "?kinds=hash")
        .await
        .unwrap();
    ws.send(json!({"type": "auth", "token": app.token})).await;
    let ack = ws.expect("subscribed").await;
    assert_eq!(ack["kinds"], json!(["hash"]));

    let mut ws = WsClient::try_connect(&app.base, None, "").await.unwrap();
    ws.send(json!({"type": "subscribe"})).await;
    let error = ws.expect("error").await;
    assert_eq!(error["code"], "unauthorized");
    assert_eq!(ws.next(WAIT).await, Err(WsClient::close_code(4401)));

    let mut ws = WsClient::try_connect(&app.base, None, "").await.unwrap();
    ws.send(json!({"type": "auth", "token": "jq_wrong"})).await;
    ws.expect("error").await;
    assert_eq!(ws.next(WAIT).await, Err(WsClient::close_code(4401)));
}

#[sqlx::test(migrations = false)]
async fn revocation_takes_effect_at_once_in_another_process(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let one = JobqProcess::start(&db, &["--role", "api"]).await;
    let two = JobqProcess::start(&db, &["--role", "api"]).await;

    // A key made with the CLI.
    let url = crate::helpers::database_url(&db);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobq"))
        .args([
            "keys",
            "create",
            "--name",
            "reporting",
            "--role",
            "client",
            "--tenant",
            "acme",
            "--database-url",
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("jq_"), "{token}");
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_jobq"))
        .args(["keys", "list", "--database-url", &url])
        .output()
        .unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains("reporting") && !listed.contains(&token),
        "{listed}"
    );

    let client = authorized_client(&token);
    let jobs_on_two = format!("{}/v1/jobs", two.base);
    assert_eq!(
        client.get(&jobs_on_two).send().await.unwrap().status(),
        StatusCode::OK
    );

    let keys: Value = one
        .client
        .get(format!("{}/v1/keys", one.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "reporting")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = one
        .client
        .delete(format!("{}/v1/keys/{id}", one.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let revoked_at = std::time::Instant::now();
    eventually(
        Duration::from_secs(1),
        "the other process to refuse the key",
        || async {
            (client.get(&jobs_on_two).send().await.unwrap().status() == StatusCode::UNAUTHORIZED)
                .then_some(())
        },
    )
    .await;
    assert!(
        revoked_at.elapsed() < Duration::from_millis(500),
        "took {:?}",
        revoked_at.elapsed()
    );
}

#[sqlx::test(migrations = false)]
async fn keys_are_not_recoverable_from_the_database(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, &["--role", "api"]).await;
    let resp = app
        .post(
            "/v1/keys",
            &json!({"name": "ci", "role": "ops", "tenant": "acme"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created: Value = resp.json().await.unwrap();
    let token = created["token"].as_str().unwrap();
    assert!(token.len() >= 40, "enough randomness: {token}");
    assert_eq!(created["key"]["role"], "ops");

    let rows: Vec<String> = sqlx::query_scalar("SELECT row_to_json(k)::text FROM jobq.api_keys k")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let secret = &token[3..];
    for row in &rows {
        assert!(
            !row.contains(secret) && !row.contains(&secret[..20]),
            "the secret is stored: {row}"
        );
    }
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT key_hash FROM jobq.api_keys WHERE name = 'ci'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        stored,
        Sha256::digest(token.as_bytes()).to_vec(),
        "only its SHA-256"
    );
    // Listing never shows a secret either.
    let listed = app.get("/v1/keys").await.text().await.unwrap();
    assert!(!listed.contains(secret));
    // The key works.
    let ok = authorized_client(token)
        .get(app.url("/v1/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

#[sqlx::test(migrations = false)]
async fn rate_limited_enqueues_get_429_and_enqueue_nothing(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, &["--role", "api"]).await;
    let resp = app
        .post(
            "/v1/keys",
            &json!({"name": "slow", "role": "client", "rate_limit": 2}),
        )
        .await;
    let created: Value = resp.json().await.unwrap();
    let client = authorized_client(created["token"].as_str().unwrap());
    let mut accepted = 0;
    let mut limited = 0;
    for _ in 0..10 {
        let resp = client
            .post(app.url("/v1/jobs/hash"))
            .json(&json!({"data": "x"}))
            .send()
            .await
            .unwrap();
        match resp.status() {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                let wait: u64 = resp.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(wait >= 1);
                let err: Value = resp.json().await.unwrap();
                assert_eq!(err["code"], "rate_limited");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(limited >= 5, "{accepted} accepted, {limited} limited");
    assert_eq!(app.count("jobq.jobs").await, accepted);
    // Reads are not rate limited.
    assert_eq!(
        client
            .get(app.url("/v1/jobs"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[sqlx::test(migrations = false)]
async fn secrets_and_email_bodies_stay_out_of_logs_and_errors(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let server = JobqProcess::start(
        &db,
        &["--log-format", "json", "--smtp-url", "smtp://127.0.0.1:1"],
    )
    .await;
    let body = "PRIVATE-BODY-7f3a";
    let job = server
        .post_json(
            "/v1/jobs/email",
            &json!({"to": "a@b.co", "subject": "s", "body": body, "max_attempts": 1}),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    assert!(!job.to_string().contains(body), "the body is not echoed");
    eventually(WAIT, "the email to fail", || async {
        let job = server.get_json(&format!("/v1/jobs/{id}")).await;
        (job["status"] == "failed").then_some(())
    })
    .await;
    let wrong = authorized_client("jq_this-is-a-wrong-secret")
        .get(format!("{}/v1/jobs", server.base))
        .send()
        .await
        .unwrap();
    let error = wrong.text().await.unwrap();
    assert!(!error.contains("this-is-a-wrong-secret"), "{error}");
    let events = server.get_json(&format!("/v1/jobs/{id}/events")).await;
    assert!(!events.to_string().contains(body));

    let logs = server.logs();
    assert!(logs.contains(&id), "the job was logged");
    for secret in [body, &server.token[3..], "this-is-a-wrong-secret"] {
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
}

#[sqlx::test(migrations = false)]
async fn insecure_mode_accepts_requests_without_a_key_and_says_so(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let server = JobqProcess::start(&db, &["--insecure-no-auth"]).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/jobs/hash", server.base))
        .json(&json!({"data": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(
        server.logs().contains("AUTHENTICATION IS OFF"),
        "{}",
        server.logs()
    );
}
