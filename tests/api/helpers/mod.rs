//! `spawn_app` and friends: a real jobq on a fresh database, a real SMTP server, the real binary.

mod app;
mod load;
mod pg;
mod process;
mod smtp;
mod ws;

pub use app::{TestApp, authorized_client, create_key, spawn_app, spawn_app_with, start_app};
pub use load::{kept_and_counted, settle, start_load};
pub use pg::PrivatePostgres;
pub use process::{JobqProcess, database_url};
pub use smtp::{SmtpServer, closed_port};
pub use ws::{Ended, WsClient};

use std::time::{Duration, Instant};

/// A running jobq that tests talk to: where it is and which key to use.
pub trait Target {
    fn base(&self) -> &str;
    fn token(&self) -> &str;
}

/// Polls `probe` every 50 ms until it returns `Some`, panicking with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An RFC 3339 timestamp from a JSON response.
pub fn time(v: &serde_json::Value) -> chrono::DateTime<chrono::Utc> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {v}"))
}

/// The value of one sample (`name` or `name{labels}`) in a Prometheus text exposition.
pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    sample(text, name_and_labels)
        .unwrap_or_else(|| panic!("no sample {name_and_labels} in\n{text}"))
}

/// The value of one sample of a counter, 0 if it was never incremented (no sample yet).
pub fn counted(text: &str, name_and_labels: &str) -> f64 {
    sample(text, name_and_labels).unwrap_or(0.0)
}

fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
