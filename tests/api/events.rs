//! The event WebSocket, with a real client.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPoolOptions};
use uuid::Uuid;

use crate::helpers::{Ended, JobqProcess, TestApp, WsClient, eventually, metric, spawn_app_with};

const WAIT: Duration = Duration::from_secs(30);

async fn enqueue_steps(app: &TestApp, steps: u32, step_ms: u32) -> String {
    app.enqueue_id(
        "/v1/jobs/long-running",
        json!({"steps": steps, "step_duration_ms": step_ms}),
    )
    .await
}

fn is_terminal_of(id: &str) -> impl Fn(&Value) -> bool + '_ {
    move |e| {
        e["job_id"] == id
            && matches!(
                e["type"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
    }
}

fn ids(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["id"].as_i64().unwrap()).collect()
}

#[sqlx::test(migrations = false)]
async fn a_subscriber_sees_a_long_running_job_from_queued_to_succeeded_in_order(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(db, &["--progress-interval", "0ms"]).await;
    let mut ws = WsClient::connect(&app, "").await;
    ws.expect("subscribed").await;

    let id = enqueue_steps(&app, 5, 40).await;
    let events = ws.events_until(WAIT, is_terminal_of(&id)).await;

    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
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
    let done: Vec<u64> = events[2..7]
        .iter()
        .map(|e| e["data"]["done"].as_u64().unwrap())
        .collect();
    assert_eq!(done, [1, 2, 3, 4, 5]);
    assert!(ids(&events).windows(2).all(|w| w[0] < w[1]));
    // Exactly the log, in the REST shape.
    assert_eq!(events, app.events(&id).await);
}

#[sqlx::test(migrations = false)]
async fn filters_select_jobs_and_kinds_and_change_on_an_open_socket(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(db, &[]).await;
    let a = enqueue_steps(&app, 4, 30).await;
    let b = enqueue_steps(&app, 4, 30).await;

    // One job, replayed from the start of the log.
    let mut only_a = WsClient::connect(&app, &format!("?job_ids={a}&after=0")).await;
    only_a.expect("subscribed").await;
    let events = only_a.events_until(WAIT, is_terminal_of(&a)).await;
    assert!(
        events.iter().all(|e| e["job_id"] == a.as_str()),
        "{events:#?}"
    );

    // One kind, live.
    let mut hashes = WsClient::connect(&app, "?kinds=hash").await;
    hashes.expect("subscribed").await;
    let h = app.enqueue_id("/v1/jobs/hash", json!({"data": "x"})).await;
    let events = hashes.events_until(WAIT, is_terminal_of(&h)).await;
    assert!(events.iter().all(|e| e["kind"] == "hash"), "{events:#?}");

    // Switch the same socket to job b, replaying its whole history.
    hashes
        .send(json!({"type": "subscribe", "job_ids": [b], "after": 0}))
        .await;
    let ack = hashes.expect("subscribed").await;
    assert_eq!(ack["job_ids"], json!([b]));
    // The replay ends with `caught_up`. That can come before b's last events: the replay hands
    // out only events no running transaction can still precede, and a write transaction of this
    // database (a worker's) may hold the newest back for a moment; those then follow live.
    // Either way each of b's events arrives once, in order.
    let (mut events, mut caught_up, mut ended) = (Vec::new(), false, false);
    while !(caught_up && ended) {
        let message = hashes.next(WAIT).await.expect("a message");
        match message["type"].as_str() {
            Some("caught_up") => {
                assert!(!caught_up, "a second caught_up: {message}");
                caught_up = true;
            }
            Some("event") => {
                ended |= is_terminal_of(&b)(&message["event"]);
                events.push(message["event"].clone());
            }
            _ => panic!("unexpected message {message}"),
        }
    }
    assert!(
        events.iter().all(|e| e["job_id"] == b.as_str()),
        "{events:#?}"
    );
    assert_eq!(events, app.events(&b).await);
}

#[sqlx::test(migrations = false)]
async fn reconnecting_with_the_last_id_misses_nothing_and_repeats_nothing(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(db, &["--progress-interval", "0ms"]).await;
    let mut ws = WsClient::connect(&app, "").await;
    ws.expect("subscribed").await;
    let mut jobs = Vec::new();
    for _ in 0..4 {
        jobs.push(enqueue_steps(&app, 10, 30).await);
    }

    // Read a part, then drop the connection while the jobs go on.
    let mut received = Vec::new();
    for _ in 0..12 {
        let message = ws.next(WAIT).await.unwrap();
        if message["type"] == "event" {
            received.push(message["event"].clone());
        }
    }
    let last = received.last().unwrap()["id"].as_i64().unwrap();
    ws.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut ws = WsClient::connect(&app, &format!("?after={last}")).await;
    let ack = ws.expect("subscribed").await;
    assert_eq!(ack["after"], last);
    let mut finished = HashSet::new();
    let rest = ws
        .events_until(WAIT, |e| {
            if matches!(e["type"].as_str(), Some("succeeded")) {
                finished.insert(e["job_id"].as_str().unwrap().to_owned());
            }
            finished.len() == jobs.len()
        })
        .await;
    received.extend(rest);

    let got = ids(&received);
    let unique: HashSet<i64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "no event twice");
    let mut log = Vec::new();
    for job in &jobs {
        log.extend(ids(&app.events(job).await));
    }
    let log: HashSet<i64> = log.into_iter().collect();
    assert_eq!(unique, log, "the union of both connections is the log");
}

#[sqlx::test(migrations = false)]
async fn a_long_uncommitted_event_holds_back_later_ones_so_resuming_never_skips_it(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(db, &["--role", "api"]).await;
    let job = enqueue_steps(&app, 1, 0).await;
    // Start explicitly after the job's own events, so only the two below can arrive.
    let before = *ids(&app.events(&job).await).last().unwrap();
    let mut ws = WsClient::connect(&app, &format!("?after={before}")).await;
    ws.expect("subscribed").await;
    ws.expect("caught_up").await;

    let insert = "INSERT INTO jobq.job_events (job_id, kind, type, status, data, owner)
                  VALUES ($1, 'long_running', 'progress', 'queued', '{}', 'default') RETURNING id";
    let job_id = Uuid::parse_str(&job).unwrap();
    // Two interleaved transactions: the first takes the smaller id but commits last.
    let mut first = app.pool.begin().await.unwrap();
    let early: i64 = sqlx::query_scalar(insert)
        .bind(job_id)
        .fetch_one(&mut *first)
        .await
        .unwrap();
    let mut second = app.pool.begin().await.unwrap();
    let late: i64 = sqlx::query_scalar(insert)
        .bind(job_id)
        .fetch_one(&mut *second)
        .await
        .unwrap();
    assert!(early < late);
    second.commit().await.unwrap();

    // `late` is committed, but delivering it now would let a client resume "after late" and
    // never see `early`. It waits.
    let early_delivery = ws.next(Duration::from_millis(500)).await;
    assert_eq!(
        early_delivery,
        Err(Ended::TimedOut),
        "early={early} late={late}"
    );
    first.commit().await.unwrap();
    let events = ws.events_until(WAIT, |e| e["id"] == late).await;
    assert_eq!(ids(&events), [early, late]);

    let mut resumed = WsClient::connect(&app, &format!("?after={early}")).await;
    resumed.expect("subscribed").await;
    let events = resumed.events_until(WAIT, |e| e["id"] == late).await;
    assert_eq!(ids(&events), [late]);
}

#[sqlx::test(migrations = false)]
async fn a_long_write_transaction_in_another_database_holds_back_no_event(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(db.clone(), &[]).await;
    // Another database of the same server, with a write transaction (it has a transaction id)
    // that stays open for the whole test: an ETL job, a migration, a forgotten psql session.
    let elsewhere = db.clone().database("postgres");
    let mut other = PgConnection::connect_with(&elsewhere).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    let xid = "SELECT pg_current_xact_id()::text";
    let open: String = sqlx::query_scalar(xid).fetch_one(&mut other).await.unwrap();

    let mut ws = WsClient::connect(&app, "").await;
    ws.expect("subscribed").await;
    let job = app.enqueue_id("/v1/jobs/hash", json!({"data": "x"})).await;
    // Ours is running in the snapshots of this database now (a later transaction committed).
    let running: bool =
        sqlx::query_scalar("SELECT $1::xid8 = ANY (SELECT pg_snapshot_xip(pg_current_snapshot()))")
            .bind(&open)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(running, "transaction {open} is not running");

    // Live events, and a wait on the job, come as soon as the job is done.
    let waited = app
        .get(&format!("/v1/jobs/{job}/wait?timeout_seconds=5"))
        .await;
    assert_eq!(waited.status(), 200);
    let waited: Value = waited.json().await.unwrap();
    assert_eq!(waited["status"], "succeeded", "{waited}");
    let events = ws
        .events_until(Duration::from_secs(5), is_terminal_of(&job))
        .await;
    assert_eq!(ids(&events), ids(&app.events(&job).await));

    // The other transaction was open all along.
    let still: String = sqlx::query_scalar(xid).fetch_one(&mut other).await.unwrap();
    assert_eq!(still, open);
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_subscriber_on_an_api_process_receives_the_events_of_a_worker_process(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let api = JobqProcess::start(&db, &["--role", "api"]).await;
    let worker = JobqProcess::start(&db, &["--role", "worker", "--progress-interval", "0ms"]).await;
    let mut ws = WsClient::connect(&api, "").await;
    ws.expect("subscribed").await;

    let job = api
        .post_json(
            "/v1/jobs/long-running",
            &json!({"steps": 3, "step_duration_ms": 50}),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let events = ws.events_until(WAIT, is_terminal_of(&id)).await;

    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "queued",
            "started",
            "progress",
            "progress",
            "progress",
            "succeeded"
        ]
    );
    let ran_on = events[1]["data"]["worker"].as_str().unwrap();
    assert!(
        ran_on.contains(&format!("-{}-", worker.pid())),
        "run by the worker process: {ran_on}"
    );
}

#[sqlx::test(migrations = false)]
async fn protocol_errors_close_with_clear_codes(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app_with(db, &["--role", "api"]).await;

    let mut ws = WsClient::connect(&app, "").await;
    ws.expect("subscribed").await;
    ws.send(json!({"type": "ping"})).await;
    ws.expect("pong").await;
    ws.send(json!({"type": "subscribe_all"})).await;
    let error = ws.expect("error").await;
    assert_eq!(error["code"], "invalid_message");
    assert_eq!(ws.next(WAIT).await, Err(WsClient::close_code(4400)));

    let mut ws = WsClient::connect(&app, "").await;
    ws.expect("subscribed").await;
    ws.send(json!({"type": "subscribe", "kinds": ["sms"]}))
        .await;
    ws.expect("error").await;
    assert_eq!(ws.next(WAIT).await, Err(WsClient::close_code(4400)));

    let mut ws = WsClient::connect(&app, "").await;
    ws.expect("subscribed").await;
    ws.send(json!({"type": "subscribe", "job_ids": ["x".repeat(70_000)]}))
        .await;
    let ended = loop {
        match ws.next(WAIT).await {
            Ok(m) => assert_eq!(m["type"], "error", "{m}"),
            Err(e) => break e,
        }
    };
    assert_eq!(ended, WsClient::close_code(1009));

    let mut ws = WsClient::connect(&app, "?after=987654321").await;
    let error = ws.expect("error").await;
    assert_eq!(error["code"], "unknown_resume_point");
    assert_eq!(ws.next(WAIT).await, Err(WsClient::close_code(4404)));

    // A bad query parameter is refused before the upgrade.
    let url = format!("{}/v1/events?kinds=sms", app.base.replacen("http", "ws", 1));
    let refused = tokio_tungstenite::connect_async(url).await.unwrap_err();
    assert!(refused.to_string().contains("400"), "{refused}");
}

/// Reads events until every job of `jobs` has succeeded.
async fn read_until_succeeded(reader: &mut WsClient, jobs: HashSet<String>) -> Vec<Value> {
    let mut finished = HashSet::new();
    reader
        .events_until(Duration::from_secs(180), |e| {
            if e["type"] == "succeeded" {
                finished.insert(e["job_id"].as_str().unwrap().to_owned());
            }
            finished == jobs
        })
        .await
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[sqlx::test(migrations = false)]
async fn a_client_that_stops_reading_neither_stalls_others_nor_grows_server_memory(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let server = JobqProcess::start(
        &db,
        &[
            "--progress-interval",
            "0ms",
            "--ws-send-timeout",
            "1s",
            "--long-running-concurrency",
            "64",
        ],
    )
    .await;
    let mut reader = WsClient::connect(&server, "").await;
    reader.expect("subscribed").await;
    // One batch request of `n` long-running jobs of 250 progress events each, read to the end
    // by `reader`. (One request: the reader is not reading while it is sent.)
    let flood = async |n: usize| {
        let job = json!({"kind": "long_running", "steps": 250, "step_duration_ms": 1});
        let answer = server
            .post_json("/v1/jobs/batch", &json!({ "jobs": vec![job; n] }))
            .await;
        let jobs = answer["jobs"].as_array().expect("accepted jobs");
        assert_eq!(jobs.len(), n, "{answer}");
        jobs.iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect::<HashSet<_>>()
    };
    // A client with a tiny receive buffer that never reads after subscribing.
    let stalled_client = async || {
        let mut stalled = WsClient::connect_with_small_buffer(&server, "").await;
        stalled.expect("subscribed").await;
        stalled
    };
    // Warm-up: the same flood past another stalled client, so that what a stalled client costs
    // once and for a bounded time (the broadcast's backlog held for it until it is dropped), and
    // the working size of pools, buffers and the allocator's arenas (they grow by ~5 MiB over
    // the first ~15 s of a flood, then stay flat: 240,000 events in one run left RSS where it
    // was after 30,000), are in the baseline. What is measured is growth with the flood's size.
    let first_stalled = stalled_client().await;
    let warm_up = flood(128).await;
    let mut events = read_until_succeeded(&mut reader, warm_up).await;
    let before = rss_kib(server.pid());

    let stalled = stalled_client().await;
    // 256 jobs: ~64,000 progress events, ~13 MB of frames, far more than the kernel buffers of
    // a socket (4 MiB at most here), so a server that queued events for the stalled client
    // would grow by more than that.
    let jobs = flood(256).await;
    let flowing = Instant::now();
    let reading = tokio::spawn(async move {
        let events = read_until_succeeded(&mut reader, jobs).await;
        (reader, events)
    });
    // Dropped while the flood still flows: once its socket's buffers are full, one send times
    // out (1 s here) and the session ends, only the reader's is left.
    let sessions = async || metric(&server.metrics().await, "jobq_websocket_sessions");
    while sessions().await > 1.0 {
        assert!(
            !reading.is_finished(),
            "the flood ended ({:?}) and the stalled clients' sessions were still open",
            flowing.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "stalled sessions dropped {:?} into the flood",
        flowing.elapsed()
    );
    let (_reader, measured) = reading.await.unwrap();
    let after = rss_kib(server.pid());
    let bytes: usize = measured.iter().map(|e| e.to_string().len()).sum();
    events.extend(measured);

    // The reading client got every event of every job, once, however far the other one fell.
    let got = ids(&events);
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), got.len());
    let log: i64 = sqlx::query_scalar("SELECT count(*) FROM jobq.job_events")
        .fetch_one(&PgPoolOptions::new().connect_with(db.clone()).await.unwrap())
        .await
        .unwrap();
    assert_eq!(
        got.len() as i64,
        log,
        "{} events received, {log} in the log",
        got.len()
    );
    eprintln!(
        "{} events in all, {bytes} bytes past the second stalled client; server RSS {before} KiB -> {after} KiB",
        got.len()
    );

    // The stalled clients were dropped, not buffered for: their streams end after what the
    // kernel had already accepted.
    for mut stalled in [first_stalled, stalled] {
        let ended = loop {
            match stalled.next(Duration::from_secs(30)).await {
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert_ne!(
            ended,
            Ended::TimedOut,
            "a stalled client was never disconnected"
        );
    }
    // Within a few MiB of the baseline (seen: 0-4 MiB, the allocator settling); a server that
    // kept the flood for the stalled client would hold the ~9 MiB that did not fit in the
    // kernel's buffers, more as Rust values.
    let growth = after.saturating_sub(before);
    assert!(
        growth < 8 * 1024,
        "server memory grew by {growth} KiB while {bytes} bytes of events flowed past a stalled client"
    );
}

#[sqlx::test(migrations = false)]
async fn a_client_that_never_answers_pings_is_closed_with_4000(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(db, &["--role", "api", "--ws-ping-interval", "200ms"]).await;
    let mut silent = WsClient::connect(&app, "").await;
    // Not reading means not answering the server's pings either.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    silent.expect("subscribed").await;
    assert_eq!(silent.next(WAIT).await, Err(WsClient::close_code(4000)));

    // A client that reads (and so answers pings) stays connected.
    let mut alive = WsClient::connect(&app, "").await;
    alive.expect("subscribed").await;
    assert_eq!(
        alive.next(Duration::from_millis(1500)).await,
        Err(Ended::TimedOut)
    );
    alive.send(json!({"type": "ping"})).await;
    alive.expect("pong").await;
}

/// The hub's reads of the event log so far, from `/metrics`.
async fn log_reads(app: &TestApp) -> f64 {
    let text = app
        .get("/metrics")
        .await
        .text()
        .await
        .expect("metrics text");
    metric(&text, "jobq_event_log_reads_total")
}

/// Every enqueue and every batch of finished jobs notifies the hub; while nobody subscribes it
/// reads nothing. The first subscriber after such a quiet spell gets each event after its
/// start (the hub catches up before the subscriber reads its start) and none from before.
#[sqlx::test(migrations = false)]
async fn the_hub_reads_no_log_while_nobody_listens_and_a_late_subscriber_misses_nothing(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app_with(db, &[]).await;
    let before = log_reads(&app).await;
    let mut quiet = Vec::new();
    for i in 0..10 {
        quiet.push(
            app.enqueue_id("/v1/jobs/hash", json!({"data": format!("quiet {i}")}))
                .await,
        );
    }
    for id in &quiet {
        assert_eq!(app.finished(id, WAIT).await["status"], "succeeded");
    }
    assert!(app.events(&quiet[9]).await.len() >= 3, "the log has events");
    assert_eq!(
        log_reads(&app).await,
        before,
        "the hub read the log with nobody subscribed"
    );

    let mut ws = WsClient::connect(&app, "").await;
    ws.expect("subscribed").await;
    let id = app
        .enqueue_id("/v1/jobs/hash", json!({"data": "heard"}))
        .await;
    let events = ws.events_until(WAIT, is_terminal_of(&id)).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["queued", "started", "succeeded"], "{events:?}");
    assert!(events.iter().all(|e| e["job_id"] == id.as_str()));
    assert_eq!(events, app.events(&id).await);
    assert!(
        log_reads(&app).await > before,
        "the hub follows the log again"
    );

    // Everyone gone: the hub detaches again, and a second late subscriber is served too.
    ws.close().await;
    let quiet_again = app.enqueue("/v1/jobs/hash", json!({"data": "quiet"})).await;
    app.finished(quiet_again["id"].as_str().unwrap(), WAIT)
        .await;
    let mut late = WsClient::connect(&app, "").await;
    late.expect("subscribed").await;
    let id = app
        .enqueue_id("/v1/jobs/hash", json!({"data": "heard again"}))
        .await;
    let events = late.events_until(WAIT, is_terminal_of(&id)).await;
    assert!(
        events.iter().all(|e| e["job_id"] == id.as_str()),
        "{events:?}"
    );
    assert_eq!(events.len(), 3, "{events:?}");
}

#[sqlx::test(migrations = false)]
async fn a_subscriber_arriving_while_the_log_cannot_be_read_still_gets_every_later_event(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    // The hub is detached (nobody subscribed) and the log's end cannot be read when a subscriber
    // arrives: the hub then follows on from where it stopped instead of from the end, slower but
    // with nothing skipped. The table is out of reach under another name meanwhile (statements
    // that name it fail, as in an outage, while keys and the status rows still answer).
    let app = spawn_app_with(db, &[]).await;
    let early = app
        .enqueue_id("/v1/jobs/hash", json!({"data": "early"}))
        .await;
    assert_eq!(app.finished(&early, WAIT).await["status"], "succeeded");
    let reads = log_reads(&app).await;

    sqlx::query("ALTER TABLE jobq.job_events RENAME TO job_events_away")
        .execute(&app.pool)
        .await
        .unwrap();
    let mut ws = WsClient::connect(&app, "").await;
    let ack = ws.expect("subscribed").await;
    assert!(
        ack.get("last_event_id").is_none_or(Value::is_null),
        "the session could not read the log either: {ack}"
    );
    assert!(
        log_reads(&app).await > reads,
        "the hub tried to read the log's end for the new subscriber"
    );
    sqlx::query("ALTER TABLE jobq.job_events_away RENAME TO job_events")
        .execute(&app.pool)
        .await
        .unwrap();

    let id = app
        .enqueue_id("/v1/jobs/hash", json!({"data": "later"}))
        .await;
    let events = ws.events_until(WAIT, is_terminal_of(&id)).await;
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| e["job_id"] == id.as_str())
        .collect();
    let types: Vec<&str> = mine.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["queued", "started", "succeeded"], "{events:?}");
    // Following on from where it stopped, the hub may also hand over events from before the
    // subscriber came (here, the early job's); never anything out of order.
    assert!(
        events
            .iter()
            .all(|e| e["job_id"] == id.as_str() || e["job_id"] == early.as_str()),
        "{events:?}"
    );
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[sqlx::test(migrations = false)]
async fn events_are_notified_only_while_a_hub_follows_them(_: PgPoolOptions, db: PgConnectOptions) {
    // A NOTIFY wakes every LISTENing backend of the database at each commit; events notify only
    // while some process has subscribers to read them for.
    let app = spawn_app_with(db, &[]).await;
    let mut listener = PgListener::connect_with(&app.pool).await.unwrap();
    listener.listen("jobq_events").await.unwrap();
    let followers = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobq.event_followers")
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    let run_one = async |data: &str| {
        let id = app
            .enqueue_id("/v1/jobs/hash", json!({ "data": data }))
            .await;
        let done = app.finished(&id, WAIT).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    };
    // Whether a notification arrives within `within` (any left from before are drained first
    // by the caller).
    async fn notified(listener: &mut PgListener, within: Duration) -> bool {
        tokio::time::timeout(within, listener.recv()).await.is_ok()
    }

    // Nobody subscribed: a job's three events (queued, started, succeeded) notify nobody.
    assert_eq!(followers().await, 0);
    run_one("unwatched").await;
    assert!(
        !notified(&mut listener, Duration::from_millis(500)).await,
        "events were notified with nobody subscribed"
    );

    // A subscriber: the hub registers before the subscription is answered, and events notify.
    let mut ws = WsClient::connect(&app, "").await;
    ws.expect("subscribed").await;
    assert_eq!(followers().await, 1);
    run_one("watched").await;
    assert!(
        notified(&mut listener, Duration::from_secs(5)).await,
        "no notification with a subscriber"
    );

    // It leaves: the hub ends its registration, and events stop notifying.
    ws.close().await;
    eventually(WAIT, "the hub to end its registration", || async {
        (followers().await == 0).then_some(())
    })
    .await;
    while notified(&mut listener, Duration::from_millis(200)).await {}
    run_one("unwatched again").await;
    assert!(
        !notified(&mut listener, Duration::from_millis(500)).await,
        "events were notified after the last subscriber left"
    );
}
