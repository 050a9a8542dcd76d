//! WebSocket subscribers of `GET /v1/events` (protocol: openapi/websocket.md): connecting with
//! the key in the header, reading events with their arrival time, and the hidden `__ws-client`
//! subcommand that holds thousands of idle subscribers in a process of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use crate::stats::{Summary, ms_between};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Small buffers: tungstenite's defaults (128 KiB each way) would cost 2.5 GB for 10,000
/// sockets on the client side.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
}

/// Connects with `Authorization: Bearer <token>` and waits for the `subscribed` message.
pub async fn connect(url: &str, token: &str, timeout: Duration) -> anyhow::Result<Ws> {
    let mut request = url.into_client_request().context("WebSocket URL")?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().context("header value")?,
    );
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config()), true);
    let (mut ws, _) = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| anyhow!("WebSocket handshake timed out"))?
        .context("WebSocket handshake")?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => bail!("no `subscribed` message within {timeout:?}"),
            Ok(None) => bail!("closed before `subscribed`"),
            Ok(Some(Err(e))) => bail!("WebSocket error before `subscribed`: {e}"),
            Ok(Some(Ok(Message::Text(text)))) => {
                let v: Value = serde_json::from_str(&text).context("JSON message")?;
                match v.get("type").and_then(Value::as_str) {
                    Some("subscribed") => return Ok(ws),
                    _ => bail!("expected `subscribed`, got {v}"),
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => bail!("closed before `subscribed`: {frame:?}"),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// A job event as a subscriber saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub job_id: Uuid,
    pub event_type: String,
    pub created_at: DateTime<Utc>,
    pub arrived: DateTime<Utc>,
}

impl Seen {
    /// Event creation (its `created_at`, the database clock) to arrival here, in ms.
    pub fn latency_ms(&self) -> f64 {
        ms_between(self.created_at, self.arrived)
    }
}

/// Parses an `event` message; `None` for other messages.
pub fn parse_event(text: &str, arrived: DateTime<Utc>) -> Option<Seen> {
    let v: Value = serde_json::from_str(text).ok()?;
    if v.get("type")?.as_str()? != "event" {
        return None;
    }
    let e = v.get("event")?;
    Some(Seen {
        job_id: Uuid::parse_str(e.get("job_id")?.as_str()?).ok()?,
        event_type: e.get("type")?.as_str()?.to_owned(),
        created_at: DateTime::parse_from_rfc3339(e.get("created_at")?.as_str()?)
            .ok()?
            .with_timezone(&Utc),
        arrived,
    })
}

/// Reads `ws` until it closes, sending every `event_type` event (with the subscriber's index)
/// to `out`. `open` is decremented when the connection ends.
pub async fn read_events(
    mut ws: Ws,
    index: usize,
    event_type: &'static str,
    out: mpsc::UnboundedSender<(usize, Seen)>,
    open: Arc<AtomicUsize>,
) {
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Text(text)) => {
                let arrived = Utc::now();
                if let Some(seen) = parse_event(&text, arrived)
                    && seen.event_type == event_type
                    && out.send((index, seen)).is_err()
                {
                    break;
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    open.fetch_sub(1, Ordering::Relaxed);
}

/// Connects `count` subscribers to `url`, at most `parallel` handshakes at a time. Returns the
/// connected ones and the errors of the others.
pub async fn connect_many(
    url: &str,
    token: &str,
    count: usize,
    parallel: usize,
) -> (Vec<Ws>, Vec<String>) {
    let limit = Arc::new(Semaphore::new(parallel.max(1)));
    let mut set = JoinSet::new();
    for _ in 0..count {
        let (url, token, limit) = (url.to_owned(), token.to_owned(), limit.clone());
        set.spawn(async move {
            let _permit = limit.acquire_owned().await.map_err(|e| anyhow!("{e}"))?;
            connect(&url, &token, Duration::from_secs(60)).await
        });
    }
    let mut connected = Vec::with_capacity(count);
    let mut errors = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(ws)) => connected.push(ws),
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(e) => errors.push(format!("connect task: {e}")),
        }
    }
    (connected, errors)
}

/// Arguments of the hidden `__ws-client` subcommand. The key comes from `JOBQ_BENCH_TOKEN`.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// `ws://127.0.0.1:<port>/v1/events`
    #[arg(long)]
    pub url: String,
    #[arg(long)]
    pub count: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 200)]
    pub parallel: usize,
}

/// The subscriber process: connects `count` idle subscribers, prints one JSON line, then answers
/// commands on stdin, one JSON line each:
/// `report <job_id> <timeout_ms>`: how many subscribers got that job's `succeeded` event, and
/// how late; `quit` (or end of input, e.g. the harness died): exit.
pub async fn client_main(args: ClientArgs) -> anyhow::Result<()> {
    crate::raise_nofile_limit();
    let token = std::env::var("JOBQ_BENCH_TOKEN").context("JOBQ_BENCH_TOKEN is not set")?;
    let started = Instant::now();
    let (connected, errors) = connect_many(&args.url, &token, args.count, args.parallel).await;
    let n = connected.len();
    let open = Arc::new(AtomicUsize::new(n));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut readers = JoinSet::new();
    for (i, ws) in connected.into_iter().enumerate() {
        readers.spawn(read_events(ws, i, "succeeded", tx.clone(), open.clone()));
    }
    drop(tx);
    println!(
        "{}",
        json!({
            "connected": n,
            "failed": errors.len(),
            "first_error": errors.first(),
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut pending: Vec<(usize, Seen)> = Vec::new();
    while let Ok(Some(line)) = stdin.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["report", job, timeout_ms] => {
                let job = Uuid::parse_str(job).context("job id")?;
                let timeout = Duration::from_millis(timeout_ms.parse().context("timeout")?);
                let deadline = Instant::now() + timeout;
                let mut got: Vec<Seen> = Vec::new();
                pending.retain(|(_, s)| {
                    if s.job_id == job {
                        got.push(s.clone());
                        false
                    } else {
                        true
                    }
                });
                while got.len() < open.load(Ordering::Relaxed).max(1) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, rx.recv()).await {
                        Ok(Some((_, s))) if s.job_id == job => got.push(s),
                        Ok(Some(other)) => pending.push(other),
                        Ok(None) | Err(_) => break,
                    }
                    if got.len() >= n {
                        break;
                    }
                }
                let latencies: Vec<f64> = got.iter().map(Seen::latency_ms).collect();
                println!(
                    "{}",
                    json!({
                        "job_id": job,
                        "got": got.len(),
                        "open": open.load(Ordering::Relaxed),
                        "latency_ms": Summary::of(&latencies),
                    })
                );
            }
            ["quit"] => break,
            _ => println!(
                "{}",
                json!({ "error": format!("unknown command {line:?}") })
            ),
        }
    }
    readers.abort_all();
    Ok(())
}
