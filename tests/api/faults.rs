//! Reliability under faults: jobq as real child processes under a steady, bounded load of all
//! three kinds, while a worker is killed, Postgres restarts, SMTP goes away, or SIGTERM comes.
//! Each test prints a one-line summary: accepted, finished, duplicates, lost, time to recover.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::task::JoinHandle;

use crate::helpers::{
    JobqProcess, PrivatePostgres, SmtpServer, Target, WsClient, closed_port, eventually, settle,
    start_load,
};

/// A WebSocket subscriber that keeps reconnecting with its last event id, as a client should.
struct Watcher {
    events: Arc<Mutex<Vec<Value>>>,
    task: JoinHandle<()>,
}

impl Watcher {
    async fn start(target: &impl Target) -> Self {
        let (base, token) = (target.base().to_owned(), target.token().to_owned());
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut first = WsClient::try_connect(&base, Some(&token), "")
            .await
            .expect("connect");
        first.expect("subscribed").await;
        let sink = events.clone();
        let task = tokio::spawn(async move {
            let mut ws = Some(first);
            let mut last: Option<i64> = None;
            loop {
                if ws.is_none() {
                    let query =
                        last.map_or_else(|| "?after=0".to_owned(), |id| format!("?after={id}"));
                    match WsClient::try_connect(&base, Some(&token), &query).await {
                        Ok(c) => ws = Some(c),
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    }
                }
                let Some(client) = ws.as_mut() else { continue };
                match client.next(Duration::from_secs(60)).await {
                    Ok(m) if m["type"] == "event" => {
                        last = m["event"]["id"].as_i64().or(last);
                        sink.lock().unwrap().push(m["event"].clone());
                    }
                    Ok(_) => {}
                    Err(_) => ws = None,
                }
            }
        });
        Self { events, task }
    }

    /// Jobs of `ids` whose terminal event this subscriber has not seen.
    fn missing_terminal(&self, ids: &[(String, String)]) -> Vec<String> {
        let events = self.events.lock().unwrap();
        let done: HashSet<&str> = events
            .iter()
            .filter(|e| {
                matches!(
                    e["type"].as_str(),
                    Some("succeeded" | "failed" | "cancelled")
                )
            })
            .filter_map(|e| e["job_id"].as_str())
            .collect();
        ids.iter()
            .filter(|(id, _)| !done.contains(id.as_str()))
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn duplicates(&self) -> usize {
        let events = self.events.lock().unwrap();
        let ids: Vec<i64> = events.iter().filter_map(|e| e["id"].as_i64()).collect();
        ids.len() - ids.iter().collect::<HashSet<_>>().len()
    }

    async fn assert_saw_every_end(&self, ids: &[(String, String)]) {
        eventually(
            Duration::from_secs(30),
            "the subscriber to see every terminal event",
            || async { self.missing_terminal(ids).is_empty().then_some(()) },
        )
        .await;
        assert_eq!(self.duplicates(), 0, "the subscriber got an event twice");
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const WORKER: &[&str] = &[
    "--heartbeat-interval",
    "1s",
    "--missed-heartbeats",
    "2",
    "--poll-interval",
    "200ms",
    "--progress-interval",
    "100ms",
    "--retry-base",
    "1s",
];

#[sqlx::test(migrations = false)]
async fn kill_9_of_a_worker_under_load_loses_nothing(_: PgPoolOptions, db: PgConnectOptions) {
    let smtp = SmtpServer::start();
    let api = JobqProcess::start(&db, &["--role", "api"]).await;
    let smtp_url = smtp.url();
    let flags = [WORKER, &["--role", "worker", "--smtp-url", &smtp_url]].concat();
    let mut worker = JobqProcess::start(&db, &flags).await;
    let watcher = Watcher::start(&api).await;
    let pool = PgPoolOptions::new().connect_with(db.clone()).await.unwrap();

    let load = start_load(
        api.client.clone(),
        api.base.clone(),
        20,
        Duration::from_secs(8),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let running: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobq.jobs WHERE status = 'running'")
            .fetch_one(&pool)
            .await
            .unwrap();
    worker.kill();
    let killed = Instant::now();
    let killed_at = chrono::Utc::now();
    // Two replacements start at once: both look for the dead worker's attempts in the same
    // moment, and each attempt must get exactly one successor.
    let (_replacement, _second) = tokio::join!(
        JobqProcess::start(&db, &flags),
        JobqProcess::start(&db, &flags)
    );
    let report = load.finish().await;
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);

    let ledger = settle(
        &api.client,
        &api.base,
        &pool,
        &report.accepted,
        Duration::from_secs(60),
    )
    .await;
    // How long the dead worker's jobs waited: its last running job's rescue.
    let rescued: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT max(created_at) FROM jobq.job_events WHERE type = 'started' AND (data->>'rescued')::bool",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let recovered = rescued.map(|at| (at - killed_at).to_std().unwrap_or_default());
    eprintln!(
        "{} running_at_kill={running}",
        ledger.summary("kill-9", recovered)
    );
    ledger.assert_clean();
    assert!(running > 0, "the kill hit running jobs");
    let resumed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobq.job_events WHERE type = 'started'
         AND (data->>'rescued')::bool AND kind = 'long_running' AND (data->>'resumed_from')::int > 0",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        resumed > 0,
        "a long-running job resumed from its checkpoint"
    );
    // No attempt ran twice (two rescuers, two `started` events of one attempt number).
    let started_twice: Vec<(uuid::Uuid, i32, i64)> = sqlx::query_as(
        "SELECT job_id, (data->>'attempt')::int, count(*) FROM jobq.job_events
         WHERE type = 'started' GROUP BY 1, 2 HAVING count(*) > 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        started_twice.is_empty(),
        "attempts started twice (job, attempt, starts): {started_twice:?}"
    );
    // Orphans are rescued after 2 missed 1 s heartbeats (+ the new worker's start).
    let recovered = recovered.expect("jobs were rescued");
    assert!(
        recovered < Duration::from_secs(10),
        "rescued after {recovered:?}"
    );
    assert!(killed.elapsed() < Duration::from_secs(90));
    watcher.assert_saw_every_end(&report.accepted).await;
}

#[sqlx::test(migrations = false)]
async fn a_postgres_crash_under_load_is_survived_without_a_restart_of_jobq(
    _: PgPoolOptions,
    _db: PgConnectOptions,
) {
    let pg = PrivatePostgres::start();
    let db = pg.options("jobq");
    let smtp = SmtpServer::start();
    let smtp_url = smtp.url();
    let flags = [
        WORKER,
        &["--smtp-url", &smtp_url, "--db-acquire-timeout", "1s"],
    ]
    .concat();
    let server = JobqProcess::start(&db, &flags).await;
    let pid = server.pid();
    let watcher = Watcher::start(&server).await;
    let ready = || async {
        match server
            .client
            .get(format!("{}/readyz", server.base))
            .timeout(Duration::from_secs(3))
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    };
    assert_eq!(ready().await, 200);

    let load = start_load(
        server.client.clone(),
        server.base.clone(),
        20,
        Duration::from_secs(12),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.down();
    eventually(
        Duration::from_secs(10),
        "readyz to report the outage",
        || async { (ready().await == 503).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.up();
    let up = Instant::now();
    eventually(
        Duration::from_secs(30),
        "readyz to report the recovery",
        || async { (ready().await == 200).then_some(()) },
    )
    .await;
    let recovered = up.elapsed();
    let report = load.finish().await;
    assert!(
        report.unexpected.is_empty(),
        "only 2xx or 503: {:?}",
        report.unexpected
    );
    assert!(
        report.unavailable > 0,
        "enqueues during the outage were refused"
    );
    assert!(
        report.slowest_refusal < Duration::from_secs(5),
        "refusals are fast: {:?}",
        report.slowest_refusal
    );

    let pool = PgPoolOptions::new().connect_with(db.clone()).await.unwrap();
    let ledger = settle(
        &server.client,
        &server.base,
        &pool,
        &report.accepted,
        Duration::from_secs(90),
    )
    .await;
    eprintln!(
        "{} refused_503={} slowest_refusal={:?}",
        ledger.summary("postgres-crash", Some(recovered)),
        report.unavailable,
        report.slowest_refusal
    );
    ledger.assert_clean();
    assert_eq!(server.pid(), pid, "the same jobq process carried on");
    watcher.assert_saw_every_end(&report.accepted).await;
}

#[sqlx::test(migrations = false)]
async fn an_smtp_outage_delays_email_without_losing_or_doubling_it(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let down = closed_port();
    let url = down.smtp_url();
    let server = JobqProcess::start(&db, &[WORKER, &["--smtp-url", &url]].concat()).await;
    let email = async |subject: String, max_attempts: u32| {
        let body = json!({"to": "ops@example.com", "subject": subject, "body": "b", "max_attempts": max_attempts});
        let job = server.post_json("/v1/jobs/email", &body).await;
        job["id"].as_str().unwrap().to_owned()
    };
    let status = async |id: String| {
        let job = server.get_json(&format!("/v1/jobs/{id}")).await;
        job["status"].as_str().unwrap().to_owned()
    };

    // Jobs with 2 attempts give up while the server is away.
    let mut doomed = Vec::new();
    for i in 0..3 {
        doomed.push(email(format!("doomed {i}"), 2).await);
    }
    for id in &doomed {
        eventually(Duration::from_secs(30), "doomed emails to fail", || async {
            (status(id.clone()).await == "failed").then_some(())
        })
        .await;
    }
    // Patient ones retry with backoff...
    let mut patient = Vec::new();
    for i in 0..10 {
        patient.push(email(format!("patient {i}"), 10).await);
    }
    for id in &patient {
        eventually(Duration::from_secs(30), "emails to retry", || async {
            (status(id.clone()).await == "retrying").then_some(())
        })
        .await;
    }
    // ... and go out once the server is back.
    let back = Instant::now();
    let smtp = SmtpServer::start_on(down.release());
    for id in &patient {
        eventually(
            Duration::from_secs(60),
            "emails to be delivered",
            || async { (status(id.clone()).await == "succeeded").then_some(()) },
        )
        .await;
    }
    let recovered = back.elapsed();
    assert_eq!(
        smtp.messages().len(),
        10,
        "each delivered once; the failed ones not at all"
    );

    // An operator retries the failed ones: exactly one delivery each.
    let bulk = server
        .post_json(
            "/v1/jobs/retry",
            &json!({"status": ["failed"], "kind": ["email"]}),
        )
        .await;
    assert_eq!(bulk["retried"], 3);
    for id in &doomed {
        eventually(
            Duration::from_secs(30),
            "retried emails to be delivered",
            || async { (status(id.clone()).await == "succeeded").then_some(()) },
        )
        .await;
    }
    let messages = smtp.messages();
    let ids: Vec<&str> = messages
        .iter()
        .filter_map(|m| {
            m.lines()
                .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
        })
        .collect();
    assert_eq!(ids.len(), 13);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        13,
        "no message delivered twice"
    );
    eprintln!(
        "[fault:smtp-outage] accepted=13 finished=13 delivered={} duplicates=0 lost=0 time_to_recover={:.1}s",
        messages.len(),
        recovered.as_secs_f64()
    );
}

#[sqlx::test(migrations = false)]
async fn sigterm_under_load_exits_cleanly_and_leaves_nothing_running(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let smtp = SmtpServer::start();
    let smtp_url = smtp.url();
    let flags = [WORKER, &["--smtp-url", &smtp_url, "--shutdown-grace", "5s"]].concat();
    let mut first = JobqProcess::start(&db, &flags).await;
    let client = first.client.clone();
    let base = first.base.clone();
    let load = start_load(client.clone(), base.clone(), 20, Duration::from_secs(3));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopping = Instant::now();
    let status = first.terminate(Duration::from_secs(15)).await;
    let stop_took = stopping.elapsed();
    assert!(status.success(), "exit status {status:?}\n{}", first.logs());
    assert!(
        stop_took < Duration::from_secs(7),
        "stopped within the grace period: {stop_took:?}"
    );
    let report = load.finish().await;
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);

    // Nothing is left `running` by the stopped process: finished, or released to the queue.
    let pool = PgPoolOptions::new().connect_with(db.clone()).await.unwrap();
    let running: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobq.jobs WHERE status = 'running'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(running, 0, "jobs left running after a graceful stop");

    let second = JobqProcess::start(&db, &flags).await;
    let ledger = settle(
        &second.client,
        &second.base,
        &pool,
        &report.accepted,
        Duration::from_secs(60),
    )
    .await;
    eprintln!(
        "{} stop_took={:.1}s",
        ledger.summary("sigterm", None),
        stop_took.as_secs_f64()
    );
    ledger.assert_clean();
}
