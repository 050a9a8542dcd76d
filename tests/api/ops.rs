//! Operators: find, retry, cancel, counts, statistics, metrics, retention, logs.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use jobq::auth::Role;

use crate::helpers::{
    JobqProcess, SmtpServer, TestApp, authorized_client, closed_port, eventually, kept_and_counted,
    metric, spawn_app_with,
};

const WAIT: Duration = Duration::from_secs(30);

fn id_of(job: &Value) -> String {
    job["id"].as_str().unwrap().to_owned()
}

fn ids(page: &Value) -> Vec<String> {
    page["jobs"].as_array().unwrap().iter().map(id_of).collect()
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let resp = app.get(path).await;
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
    resp.json().await.unwrap()
}

async fn hash(app: &TestApp, data: &str) -> String {
    app.enqueue_id("/v1/jobs/hash", json!({ "data": data }))
        .await
}

async fn email(app: &TestApp, max_attempts: u32) -> String {
    let body =
        json!({"to": "a@example.com", "subject": "s", "body": "b", "max_attempts": max_attempts});
    app.enqueue_id("/v1/jobs/email", body).await
}

async fn status_is(app: &TestApp, id: &str, status: &str) -> Value {
    eventually(WAIT, &format!("job {id} to be {status}"), || async {
        let job = app.job(id).await;
        (job["status"] == status).then_some(job)
    })
    .await
}

#[sqlx::test(migrations = false)]
async fn find_filters_by_time_range_and_error_text_in_both_orders_with_counts(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let smtp = SmtpServer::rejecting();
    let app = spawn_app_with(db, &["--smtp-url", &smtp.url()]).await;
    let early = vec![hash(&app, "a").await, hash(&app, "b").await];
    tokio::time::sleep(Duration::from_millis(50)).await;
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let late = vec![
        hash(&app, "c").await,
        email(&app, 1).await,
        email(&app, 1).await,
    ];
    for id in early.iter().chain(&late) {
        app.finished(id, WAIT).await;
    }
    let since = since.replace('+', "%2B");

    let page = get_json(&app, &format!("/v1/jobs?created_after={since}")).await;
    assert_eq!(ids(&page), late.iter().rev().cloned().collect::<Vec<_>>());
    let page = get_json(
        &app,
        &format!("/v1/jobs?created_after={since}&order=oldest_first"),
    )
    .await;
    assert_eq!(ids(&page), late);
    let page = get_json(
        &app,
        &format!("/v1/jobs?created_before={since}&order=oldest_first"),
    )
    .await;
    assert_eq!(ids(&page), early);

    let page = get_json(&app, "/v1/jobs?error_contains=MAILBOX%20unavailable").await;
    assert_eq!(ids(&page), vec![late[2].clone(), late[1].clone()]);
    let page = get_json(&app, "/v1/jobs?error_contains=100%25_").await;
    assert!(
        ids(&page).is_empty(),
        "wildcards in the text are taken literally"
    );
    let page = get_json(&app, "/v1/jobs?status=failed&status=succeeded&kind=email").await;
    assert_eq!(ids(&page).len(), 2);

    let counts = get_json(&app, "/v1/jobs/counts").await;
    assert_eq!(counts["total"], 5);
    assert_eq!(counts["by_status"]["succeeded"], 3);
    assert_eq!(counts["by_status"]["failed"], 2);
    assert_eq!(
        counts["by_kind"],
        json!({"email": 2, "hash": 3, "long_running": 0})
    );
    let counts = get_json(
        &app,
        &format!("/v1/jobs/counts?created_after={since}&kind=hash"),
    )
    .await;
    assert_eq!(counts["total"], 1);

    // An empty range is a valid filter that matches nothing.
    let empty = get_json(
        &app,
        &format!("/v1/jobs?created_after={since}&created_before={since}"),
    )
    .await;
    assert_eq!(empty["jobs"], json!([]));
}

#[sqlx::test(migrations = false)]
async fn oldest_first_pages_take_in_jobs_created_while_paging(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(db, &["--role", "api"]).await;
    let mut all = Vec::new();
    for _ in 0..3 {
        all.push(hash(&app, "x").await);
    }
    let first = get_json(&app, "/v1/jobs?order=oldest_first&limit=2").await;
    all.push(hash(&app, "y").await);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = get_json(
        &app,
        &format!("/v1/jobs?order=oldest_first&limit=2&cursor={cursor}"),
    )
    .await;
    let mut seen = ids(&first);
    seen.extend(ids(&second));
    assert_eq!(
        seen, all,
        "every job once, in creation order, the new one at the end"
    );
}

#[sqlx::test(migrations = false)]
async fn retrying_a_failed_email_delivers_it_once_the_server_is_back(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let refusing = closed_port();
    let url = refusing.smtp_url();
    let app = spawn_app_with(db, &["--smtp-url", &url]).await;
    let id = email(&app, 1).await;
    let failed = status_is(&app, &id, "failed").await;
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("SMTP delivery failed")
    );

    // Only failed or cancelled jobs can be retried; the answer names the status.
    let done = hash(&app, "x").await;
    status_is(&app, &done, "succeeded").await;
    let refused = app
        .post(&format!("/v1/jobs/{done}/retry"), &json!({}))
        .await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let err: Value = refused.json().await.unwrap();
    assert_eq!(err["code"], "invalid_status");
    assert_eq!(err["field"], "status");
    assert!(
        err["message"].as_str().unwrap().contains("succeeded"),
        "{err}"
    );

    let smtp = SmtpServer::start_on(refusing.release());
    let resp = app.post(&format!("/v1/jobs/{id}/retry"), &json!({})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let requeued: Value = resp.json().await.unwrap();
    assert_eq!(requeued["status"], "queued");
    assert_eq!(requeued["attempt"], 0);

    let job = status_is(&app, &id, "succeeded").await;
    assert_eq!(job["attempt"], 1);
    assert_eq!(smtp.messages().len(), 1, "delivered exactly once");
    let types: Vec<String> = app
        .events(&id)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "queued",
            "started",
            "failed",
            "retried",
            "started",
            "succeeded"
        ]
    );
    let retried = app
        .events(&id)
        .await
        .into_iter()
        .find(|e| e["type"] == "retried")
        .unwrap();
    assert_eq!(retried["data"]["by"], "test-admin");
    assert_eq!(retried["data"]["previous_status"], "failed");
    assert_eq!(retried["data"]["previous_attempts"], 1);
}

#[sqlx::test(migrations = false)]
async fn a_bulk_retry_dry_run_and_the_real_run_agree(_: PgPoolOptions, db: PgConnectOptions) {
    let smtp = SmtpServer::rejecting();
    let app = spawn_app_with(db, &["--smtp-url", &smtp.url()]).await;
    let mut failed = Vec::new();
    for _ in 0..5 {
        failed.push(email(&app, 1).await);
    }
    let ok = hash(&app, "x").await;
    for id in failed.iter().chain([&ok]) {
        app.finished(id, WAIT).await;
    }
    let app = &app;
    let bulk = |body: Value| async move {
        let resp = app.post("/v1/jobs/retry", &body).await;
        assert_eq!(resp.status(), StatusCode::OK, "{body}");
        resp.json::<Value>().await.unwrap()
    };

    let dry = bulk(json!({"status": ["failed"], "limit": 3, "dry_run": true})).await;
    assert_eq!(dry, json!({"matched": 5, "retried": 3, "dry_run": true}));
    assert_eq!(
        get_json(app, "/v1/jobs/counts?status=failed").await["total"],
        5,
        "a dry run changes nothing"
    );
    let none = bulk(json!({"status": ["succeeded"], "dry_run": true})).await;
    assert_eq!(
        none["matched"], 0,
        "only failed and cancelled jobs are retried"
    );

    let real = bulk(json!({"status": ["failed"], "limit": 3})).await;
    assert_eq!(real, json!({"matched": 5, "retried": 3, "dry_run": false}));
    let mut retried = HashSet::new();
    for id in &failed {
        if app.events(id).await.iter().any(|e| e["type"] == "retried") {
            retried.insert(id.clone());
        }
    }
    let oldest: HashSet<String> = failed[..3].iter().cloned().collect();
    assert_eq!(retried, oldest, "the three oldest were retried");

    let invalid = app.post("/v1/jobs/retry", &json!({"limit": 0})).await;
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let err: Value = invalid.json().await.unwrap();
    assert_eq!(err["field"], "limit");
}

#[sqlx::test(migrations = false)]
async fn cancelled_queued_and_retrying_jobs_never_run(_: PgPoolOptions, db: PgConnectOptions) {
    let smtp = SmtpServer::start();
    let api = spawn_app_with(db.clone(), &["--role", "api"]).await;
    let queued = email(&api, 3).await;
    let resp = api
        .post(&format!("/v1/jobs/{queued}/cancel"), &json!({}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let job: Value = resp.json().await.unwrap();
    assert_eq!(job["status"], "cancelled");
    let again = api
        .post(&format!("/v1/jobs/{queued}/cancel"), &json!({}))
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);

    // Workers start only now: they find the entry and drop it.
    let worker = spawn_app_with(db.clone(), &["--role", "worker", "--smtp-url", &smtp.url()]).await;
    let probe = hash(&api, "x").await;
    status_is(&api, &probe, "succeeded").await;
    assert!(
        smtp.messages().is_empty(),
        "the cancelled email was never sent"
    );
    assert_eq!(api.job(&queued).await["status"], "cancelled");
    drop(worker);

    // A job waiting for its next attempt.
    let closed = closed_port();
    let refusing = closed.smtp_url();
    let app = spawn_app_with(db, &["--smtp-url", &refusing, "--retry-base", "30s"]).await;
    let retrying = email(&app, 3).await;
    status_is(&app, &retrying, "retrying").await;
    let resp = app
        .post(&format!("/v1/jobs/{retrying}/cancel"), &json!({}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let events = app.events(&retrying).await;
    let cancelled = events.last().unwrap();
    assert_eq!(cancelled["type"], "cancelled");
    assert_eq!(cancelled["data"]["previous_status"], "retrying");
    assert_eq!(cancelled["data"]["by"], "test-admin");
    let job = app.job(&retrying).await;
    assert_eq!(
        (job["status"].as_str(), job["attempt"].as_u64()),
        (Some("cancelled"), Some(1))
    );
    assert!(job.get("next_attempt_at").is_none(), "{job}");
}

#[sqlx::test(migrations = false)]
async fn cancelling_a_running_job_in_another_process_stops_its_work(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let api = JobqProcess::start(&db, &["--role", "api"]).await;
    let worker = JobqProcess::start(&db, &["--role", "worker", "--progress-interval", "0ms"]).await;
    let client = api.client.clone();
    // Long steps: the next progress write (which would also find the job cancelled) is seconds
    // away, so a prompt stop can only come from the cancel notification.
    let job = api
        .post_json(
            "/v1/jobs/long-running",
            &json!({"steps": 20, "step_duration_ms": 1500}),
        )
        .await;
    let id = id_of(&job);
    let job_url = format!("{}/v1/jobs/{id}", api.base);
    let progress = || async {
        let job: Value = client
            .get(&job_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        job["progress"]["done"].as_u64().unwrap()
    };
    eventually(WAIT, "progress", || async {
        (progress().await >= 1).then_some(())
    })
    .await;

    let resp = client
        .post(format!("{job_url}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let at_cancel = progress().await;
    eventually(
        Duration::from_secs(1),
        "the worker to stop the attempt",
        || async {
            let logs = worker.logs();
            (logs.contains("cancelling the running attempt")
                && logs.contains("attempt ended without effect"))
            .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(progress().await <= at_cancel, "progress stopped growing");

    let events: Value = client
        .get(format!("{job_url}/events?limit=200"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = events["events"].as_array().unwrap();
    assert_eq!(
        events.last().unwrap()["type"],
        "cancelled",
        "nothing after the cancel"
    );
    assert_eq!(events.last().unwrap()["data"]["previous_status"], "running");
}

#[sqlx::test(migrations = false)]
async fn stats_and_metrics_match_a_known_workload(_: PgPoolOptions, db: PgConnectOptions) {
    let smtp = SmtpServer::rejecting();
    let server = JobqProcess::start(&db, &["--smtp-url", &smtp.url()]).await;
    let client = server.client.clone();
    let post = async |path: &'static str, body: Value| id_of(&server.post_json(path, &body).await);
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(post("/v1/jobs/hash", json!({"data": format!("{i}")})).await);
    }
    for _ in 0..2 {
        ids.push(
            post(
                "/v1/jobs/email",
                json!({"to": "a@b.co", "subject": "s", "body": "", "max_attempts": 1}),
            )
            .await,
        );
    }
    let long = post(
        "/v1/jobs/long-running",
        json!({"steps": 100, "step_duration_ms": 100}),
    )
    .await;
    let job_url = |id: &str| format!("{}/v1/jobs/{id}", server.base);
    eventually(WAIT, "the long job to run", || async {
        let job: Value = client
            .get(job_url(&long))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (job["status"] == "running").then_some(())
    })
    .await;
    client
        .post(format!("{}/cancel", job_url(&long)))
        .send()
        .await
        .unwrap();
    for id in &ids {
        eventually(WAIT, "jobs to finish", || async {
            let job: Value = client
                .get(job_url(id))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            matches!(job["status"].as_str(), Some("succeeded" | "failed")).then_some(())
        })
        .await;
    }

    let stats: Value = client
        .get(format!("{}/v1/stats", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let of = |kind: &str| {
        stats["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kind"] == kind)
            .unwrap()
            .clone()
    };
    let (hash, email, long_running) = (of("hash"), of("email"), of("long_running"));
    assert_eq!(
        hash["counts"],
        json!({"scheduled": 0, "queued": 0, "running": 0, "retrying": 0, "succeeded": 4, "failed": 0, "cancelled": 0})
    );
    assert_eq!(email["counts"]["failed"], 2);
    assert_eq!(long_running["counts"]["cancelled"], 1);
    assert_eq!(hash["finished_last_minute"], 4);
    assert_eq!(email["finished_last_minute"], 2);
    assert_eq!(long_running["finished_last_minute"], 1);
    assert!(hash["run_time_mean_ms"].as_f64().unwrap() >= 0.0);
    assert!(
        hash["run_time_p95_ms"].as_f64().unwrap()
            >= hash["run_time_mean_ms"].as_f64().unwrap() * 0.5
    );
    assert!(
        hash.get("oldest_queued_age_seconds").is_none(),
        "nothing waits"
    );

    // The cancelled attempt ends a moment after the cancel: wait for its metric.
    let text = eventually(WAIT, "the cancelled attempt to be counted", || async {
        let text = server.metrics().await;
        text.contains(r#"jobq_attempts_total{kind="long_running",outcome="cancelled"} 1"#)
            .then_some(text)
    })
    .await;
    for (series, want) in [
        (r#"jobq_jobs_enqueued_total{kind="hash"}"#, 4.0),
        (r#"jobq_jobs_enqueued_total{kind="email"}"#, 2.0),
        (r#"jobq_jobs_enqueued_total{kind="long_running"}"#, 1.0),
        (r#"jobq_jobs_started_total{kind="hash"}"#, 4.0),
        (r#"jobq_jobs_succeeded_total{kind="hash"}"#, 4.0),
        (r#"jobq_jobs_failed_total{kind="email"}"#, 2.0),
        (
            r#"jobq_job_run_seconds_count{kind="hash",outcome="succeeded"}"#,
            4.0,
        ),
        (r#"jobq_jobs{kind="hash",status="queued"}"#, 0.0),
        (r#"jobq_jobs{kind="long_running",status="running"}"#, 0.0),
        // Finished jobs too, not only the queue's depth.
        (r#"jobq_jobs{kind="hash",status="succeeded"}"#, 4.0),
        (r#"jobq_jobs{kind="email",status="failed"}"#, 2.0),
        (r#"jobq_jobs{kind="long_running",status="cancelled"}"#, 1.0),
        (
            r#"jobq_http_requests_total{route="enqueue_hash",method="POST",status="202"}"#,
            4.0,
        ),
        ("jobq_websocket_sessions", 0.0),
    ] {
        assert_eq!(metric(&text, series), want, "{series}");
    }
    assert!(
        text.contains("# TYPE jobq_job_run_seconds histogram"),
        "{text}"
    );
}

#[sqlx::test(migrations = false)]
async fn retention_prunes_exactly_the_old_finished_jobs(_: PgPoolOptions, db: PgConnectOptions) {
    let smtp = SmtpServer::rejecting();
    let app = spawn_app_with(
        db,
        &[
            "--smtp-url",
            &smtp.url(),
            "--retention",
            "1h",
            "--retention-interval",
            "200ms",
            "--long-running-concurrency",
            "1",
        ],
    )
    .await;
    let (h1, h2, h3) = (
        hash(&app, "1").await,
        hash(&app, "2").await,
        hash(&app, "3").await,
    );
    let failed = email(&app, 1).await;
    for id in [&h1, &h2, &h3, &failed] {
        app.finished(id, WAIT).await;
    }
    let body = json!({"steps": 100, "step_duration_ms": 100});
    let running = app.enqueue_id("/v1/jobs/long-running", body.clone()).await;
    status_is(&app, &running, "running").await;
    let queued = app.enqueue_id("/v1/jobs/long-running", body).await;

    // Age everything but h3 by two days.
    let old: Vec<uuid::Uuid> = [&h1, &h2, &failed, &running, &queued]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    sqlx::query(
        "UPDATE jobq.jobs SET created_at = now() - interval '2 days',
                finished_at = finished_at - interval '2 days' WHERE id = ANY($1)",
    )
    .bind(&old)
    .execute(&app.pool)
    .await
    .unwrap();

    eventually(WAIT, "the pruner", || async {
        (app.get(&format!("/v1/jobs/{h1}")).await.status() == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    for gone in [&h1, &h2, &failed] {
        assert_eq!(
            app.get(&format!("/v1/jobs/{gone}")).await.status(),
            StatusCode::NOT_FOUND
        );
    }
    let orphaned: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobq.job_events WHERE job_id = ANY($1)")
            .bind(&old[..3])
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(orphaned, 0, "their events went with them");
    for kept in [&h3, &running, &queued] {
        assert_eq!(
            app.get(&format!("/v1/jobs/{kept}")).await.status(),
            StatusCode::OK,
            "{kept} kept"
        );
    }
    assert_eq!(app.count("jobq.jobs").await, 3);
}

#[sqlx::test(migrations = false)]
async fn json_logs_carry_the_job_id_and_kind(_: PgPoolOptions, db: PgConnectOptions) {
    let server = JobqProcess::start(&db, &["--log-format", "json"]).await;
    let id = id_of(
        &server
            .post_json("/v1/jobs/hash", &json!({"data": "x"}))
            .await,
    );
    let lines = eventually(WAIT, "the job's log lines", || async {
        let logs = server.logs();
        logs.contains("attempt succeeded").then_some(logs)
    })
    .await;
    let lines: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON line: {l}")))
        .collect();
    let of_job: Vec<&Value> = lines
        .iter()
        .filter(|l| l["span"]["job_id"] == id.as_str())
        .collect();
    let messages: Vec<&str> = of_job
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.contains(&"attempt started") && messages.contains(&"attempt succeeded"),
        "{messages:?}"
    );
    assert!(of_job.iter().all(|l| l["span"]["kind"] == "hash"));
}

#[sqlx::test(migrations = false)]
async fn job_counts_are_kept_exactly_through_every_change_and_read_without_the_jobs(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // Emails fail for a transient reason (nobody listens): retried 30 s later at the earliest.
    let closed = closed_port();
    let refusing = closed.smtp_url();
    let app = spawn_app_with(
        db,
        &[
            "--smtp-url",
            &refusing,
            "--retry-base",
            "30s",
            "--long-running-concurrency",
            "1",
        ],
    )
    .await;
    // Every kind of change: single and batch inserts (two tenants), attempts that start and
    // succeed, fail for good, or wait to retry; a scheduled job; cancels of a queued and of a
    // running job; an operator's retry; and the retention pruner's deletes.
    let done = [hash(&app, "1").await, hash(&app, "2").await];
    let failed = email(&app, 1).await;
    let retrying = email(&app, 5).await;
    let acme = app.key(Role::Client, "acme").await;
    let batch = authorized_client(&acme)
        .post(app.url("/v1/jobs/batch"))
        .json(&json!({"jobs": [
            {"kind": "hash", "data": "a"},
            {"kind": "hash", "data": "b"},
            {"kind": "hash", "data": "later", "delay_ms": 3_600_000},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), StatusCode::ACCEPTED);
    let body = json!({"steps": 100, "step_duration_ms": 100});
    let running = app.enqueue_id("/v1/jobs/long-running", body.clone()).await;
    status_is(&app, &running, "running").await;
    let queued = app.enqueue_id("/v1/jobs/long-running", body).await;
    for id in [&queued, &running] {
        let resp = app.post(&format!("/v1/jobs/{id}/cancel"), &json!({})).await;
        assert_eq!(resp.status(), StatusCode::OK, "cancel {id}");
    }
    for id in done.iter().chain([&failed]) {
        app.finished(id, WAIT).await;
    }
    status_is(&app, &retrying, "retrying").await;
    let resp = app
        .post(&format!("/v1/jobs/{failed}/retry"), &json!({}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    app.finished(&failed, WAIT).await;
    sqlx::query(
        "UPDATE jobq.jobs SET finished_at = finished_at - interval '2 days' WHERE id = $1::uuid",
    )
    .bind(&done[0])
    .execute(&app.pool)
    .await
    .unwrap();
    let pruned = jobq::maintenance::prune_once(&app.pool, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(pruned, Some(1));

    for owner in [None, Some("default"), Some("acme")] {
        let (kept, counted) = kept_and_counted(&app.pool, owner).await;
        assert_eq!(kept, counted, "owner {owner:?}");
    }
    let (kept, _) = kept_and_counted(&app.pool, None).await;
    for status in ["succeeded", "failed", "cancelled", "scheduled", "retrying"] {
        assert!(
            kept.as_array().unwrap().iter().any(|row| row[1] == status),
            "no {status} job in {kept}: the workload missed a change"
        );
    }
    // Housekeeping folds them into one row per (kind, status, owner), same counts.
    let rows_and_keys = || async {
        let (rows, keys): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM jobq.job_counts),
                    (SELECT count(DISTINCT (kind, status, owner)) FROM jobq.jobs)",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        (rows, keys)
    };
    let (_, keys) = rows_and_keys().await;
    eventually(WAIT, "a housekeeping pass", || async {
        jobq::maintenance::housekeeping_once(&app.pool)
            .await
            .unwrap()
    })
    .await;
    let (after_fold, counted) = kept_and_counted(&app.pool, None).await;
    assert_eq!(after_fold, counted);
    assert_eq!(rows_and_keys().await, (keys, keys));

    // Counts are read without touching the jobs: they answer while another transaction holds
    // the jobs table locked against everything (a full count would wait for it).
    let total: i64 = counted
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[2].as_i64().unwrap())
        .sum();
    let mut locker = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE jobq.jobs IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    let counts = tokio::time::timeout(Duration::from_secs(5), get_json(&app, "/v1/jobs/counts"))
        .await
        .expect("counts answered while the jobs table was locked");
    assert_eq!(counts["total"], total, "{counts}");
    locker.rollback().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn stats_figures_read_a_bounded_sample_of_each_kind(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, &["--role", "api"]).await;
    // 100 hash jobs finished one a second, 0.5 s to 99.5 s ago (60 in the last minute, with
    // half a second to spare for the test's own pace), each attempt 20 ms; 5 emails finished in
    // the last 5 s, 100 ms each; two emails queued, the first created first.
    sqlx::raw_sql(
        "INSERT INTO jobq.jobs (id, kind, status, payload, task_id, max_attempts, attempt,
                                attempt_started_at, finished_at)
         SELECT gen_random_uuid(), kind, 'succeeded', '{}', kind || i, 5, 1,
                now() - make_interval(secs => i + 0.5) - run, now() - make_interval(secs => i + 0.5)
         FROM (VALUES ('hash', 100, interval '20 ms'), ('email', 5, interval '100 ms'))
                  AS k(kind, n, run),
              generate_series(0, n - 1) AS i;
         INSERT INTO jobq.jobs (id, kind, status, payload, task_id, max_attempts, created_at)
         VALUES ('01000000-0000-7000-8000-000000000001', 'email', 'queued', '{}', 'q1', 5,
                 now() - interval '30 s'),
                ('01000000-0000-7000-8000-000000000002', 'email', 'queued', '{}', 'q2', 5,
                 now() - interval '20 s')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let figures = |sample: i64| {
        let pool = app.pool.clone();
        async move {
            jobq::store::jobs::figures(&pool, 300.0, sample)
                .await
                .unwrap()
        }
    };
    let of = |all: &[jobq::store::jobs::KindFigures], kind: &str| {
        all.iter().find(|f| f.kind == kind).unwrap().clone()
    };

    // A sample larger than what finished: every figure exact.
    let all = figures(1000).await;
    let (hash, email, long) = (
        of(&all, "hash"),
        of(&all, "email"),
        of(&all, "long_running"),
    );
    assert_eq!(hash.finished_last_minute, 60);
    assert!((hash.run_ms_mean.unwrap() - 20.0).abs() < 0.5, "{hash:?}");
    assert_eq!(email.finished_last_minute, 5);
    assert!((email.run_ms_p95.unwrap() - 100.0).abs() < 0.5, "{email:?}");
    assert_eq!(long.finished_last_minute, 0);
    assert_eq!(long.run_ms_mean, None);
    let oldest = email.oldest_queued_at.expect("emails wait");
    let age = (chrono::Utc::now() - oldest).num_milliseconds();
    assert!(
        (29_000..40_000).contains(&age),
        "the first queued is 30 s old: {age} ms"
    );

    // Ten at most per kind: the hash count becomes the rate of its newest ten (one a second)
    // times 60 s; the emails (fewer than ten) stay exact, however many hash jobs there are.
    let sampled = figures(10).await;
    let (hash, email) = (of(&sampled, "hash"), of(&sampled, "email"));
    assert!(
        (55..=75).contains(&hash.finished_last_minute),
        "estimated {} for 60",
        hash.finished_last_minute
    );
    assert!((hash.run_ms_mean.unwrap() - 20.0).abs() < 0.5, "{hash:?}");
    assert_eq!(email.finished_last_minute, 5);
}
