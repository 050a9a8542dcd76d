//! Prometheus metrics, served at `/metrics`. Counters and histograms are per process (scrape
//! every process); gauges of the queue are read from the database at scrape time.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

use crate::domain::{JobKind, JobStatus};
use crate::events::EventHub;
use crate::store;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Seconds buckets of job run times: from a fast hash to a long report.
const RUN_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Installs the process-wide recorder (once; later calls reuse it).
fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let built = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("jobq_job_run_seconds".into()), RUN_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("jobq_http_request_duration_seconds".into()),
                        HTTP_BUCKETS,
                    )
                })
                .and_then(|b| b.install_recorder());
            match built {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// Call once at start-up so that metrics recorded before the first scrape are kept.
pub fn init() {
    let _ = handle();
}

pub fn job_enqueued(kind: JobKind) {
    counter!("jobq_jobs_enqueued_total", "kind" => kind.as_str()).increment(1);
}

/// One look at `kind`'s queue that took `taken` entries (0: it found nothing due).
pub fn queue_fetched(kind: JobKind, taken: usize) {
    let result = if taken == 0 { "empty" } else { "taken" };
    counter!("jobq_queue_fetches_total", "kind" => kind.as_str(), "result" => result).increment(1);
}

pub fn job_started(kind: JobKind) {
    counter!("jobq_jobs_started_total", "kind" => kind.as_str()).increment(1);
}

/// An attempt ended with `outcome` (`succeeded`, `retrying`, `failed`, `released`,
/// `cancelled`) after `run`.
pub fn attempt_finished(kind: JobKind, outcome: &'static str, run: Duration) {
    match outcome {
        "succeeded" => counter!("jobq_jobs_succeeded_total", "kind" => kind.as_str()).increment(1),
        "failed" => counter!("jobq_jobs_failed_total", "kind" => kind.as_str()).increment(1),
        _ => {}
    }
    counter!("jobq_attempts_total", "kind" => kind.as_str(), "outcome" => outcome).increment(1);
    histogram!("jobq_job_run_seconds", "kind" => kind.as_str(), "outcome" => outcome)
        .record(run.as_secs_f64());
}

pub fn http_request(route: String, method: String, status: u16, started: Instant) {
    let status = status.to_string();
    counter!("jobq_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    histogram!("jobq_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
}

/// The text exposition, with the queue gauges refreshed from the database.
/// `hub` is this process's event hub, if it runs one (its sessions and reads of the log).
pub async fn render(pool: &PgPool, hub: Option<&EventHub>) -> String {
    // Every status, from the counts kept as jobs change (a few rows, however long the history).
    if let Ok(counts) = store::jobs::count(pool, &store::jobs::JobFilter::default()).await {
        for kind in JobKind::ALL {
            for status in JobStatus::ALL {
                let n = counts
                    .iter()
                    .find(|(k, s, _)| k == kind.as_str() && s == status.as_str())
                    .map_or(0, |(_, _, n)| *n);
                gauge!("jobq_jobs", "kind" => kind.as_str(), "status" => status.as_str())
                    .set(n as f64);
            }
        }
    }
    if let Some(hub) = hub {
        gauge!("jobq_websocket_sessions").set(hub.subscribers() as f64);
        counter!("jobq_event_log_reads_total").absolute(hub.log_reads());
    }
    handle().map(PrometheusHandle::render).unwrap_or_default()
}
