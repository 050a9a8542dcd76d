//! A steady, bounded load of all three kinds over HTTP, and the ledger that checks afterwards
//! that every accepted job finished, once.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// What the load saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Ids of the jobs the API accepted (2xx), with their kind.
    pub accepted: Vec<(String, String)>,
    /// Requests answered 503 (database unavailable), and the slowest such answer.
    pub unavailable: usize,
    pub slowest_refusal: Duration,
    /// Requests that could not reach the API at all (its process was down).
    pub unreachable: usize,
    /// Any other answer: (status, body). Must stay empty.
    pub unexpected: Vec<(u16, String)>,
}

pub struct Load {
    handle: JoinHandle<LoadReport>,
}

/// Enqueues `per_second` jobs a second for `duration`, cycling hash, long-running (10 steps of
/// 100 ms) and email jobs.
pub fn start_load(
    client: reqwest::Client,
    base: String,
    per_second: u32,
    duration: Duration,
) -> Load {
    let handle = tokio::spawn(async move {
        let mut report = LoadReport::default();
        let every = Duration::from_secs_f64(1.0 / f64::from(per_second.max(1)));
        let end = Instant::now() + duration;
        let mut n: u64 = 0;
        while Instant::now() < end {
            let (path, body) = match n % 3 {
                0 => (
                    "/v1/jobs/hash",
                    json!({"data": format!("load {n}"), "repeat": 1000}),
                ),
                1 => (
                    "/v1/jobs/long-running",
                    json!({"steps": 10, "step_duration_ms": 100}),
                ),
                _ => (
                    "/v1/jobs/email",
                    json!({"to": "load@example.com", "subject": format!("load {n}"), "body": "x", "max_attempts": 10}),
                ),
            };
            n += 1;
            let sent = Instant::now();
            let resp = client
                .post(format!("{base}{path}"))
                .timeout(Duration::from_secs(10))
                .json(&body)
                .send()
                .await;
            match resp {
                Ok(r) if r.status().is_success() => {
                    let job: Value = r.json().await.unwrap_or(Value::Null);
                    if let (Some(id), Some(kind)) = (job["id"].as_str(), job["kind"].as_str()) {
                        report.accepted.push((id.to_owned(), kind.to_owned()));
                    }
                }
                Ok(r) if r.status().as_u16() == 503 => {
                    report.unavailable += 1;
                    report.slowest_refusal = report.slowest_refusal.max(sent.elapsed());
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    report
                        .unexpected
                        .push((status, r.text().await.unwrap_or_default()));
                }
                // No answer (refused, reset, closed mid-request): not accepted
                // from the client's point of view. Jobs committed before the
                // connection dropped are still checked by the ledger.
                Err(_) => report.unreachable += 1,
            }
            tokio::time::sleep(every.saturating_sub(sent.elapsed())).await;
        }
        report
    });
    Load { handle }
}

impl Load {
    pub async fn finish(self) -> LoadReport {
        self.handle.await.expect("load task")
    }
}

/// Where the accepted jobs ended up.
#[derive(Debug, Default)]
pub struct Ledger {
    pub accepted: usize,
    pub finished: usize,
    pub succeeded: usize,
    /// Jobs with more than one `succeeded` event.
    pub duplicates: usize,
    /// Accepted jobs not terminal by the deadline (or gone).
    pub lost: Vec<String>,
    /// Any job in the database (accepted or not) not terminal by the deadline.
    pub stranded: Vec<String>,
    /// The counts kept in `jobq.job_counts` and a fresh count of the jobs, when they differ.
    pub counts_differ: Option<(Value, Value)>,
}

/// Counts per (kind, status) as kept in `jobq.job_counts` and as counted from the jobs, for one
/// owner or all, read in one statement (one snapshot): `[[kind, status, n], ...]` each.
pub async fn kept_and_counted(pool: &sqlx::PgPool, owner: Option<&str>) -> (Value, Value) {
    sqlx::query_as(
        "SELECT
           (SELECT coalesce(jsonb_agg(jsonb_build_array(kind, status, n) ORDER BY kind, status), '[]')
            FROM (SELECT kind, status, sum(n) AS n FROM jobq.job_counts
                  WHERE $1::text IS NULL OR owner = $1
                  GROUP BY 1, 2 HAVING sum(n) <> 0) k),
           (SELECT coalesce(jsonb_agg(jsonb_build_array(kind, status, n) ORDER BY kind, status), '[]')
            FROM (SELECT kind, status, count(*) AS n FROM jobq.jobs
                  WHERE $1::text IS NULL OR owner = $1
                  GROUP BY 1, 2) c)",
    )
    .bind(owner)
    .fetch_one(pool)
    .await
    .expect("read the kept and the counted job counts")
}

/// Waits (until `deadline`) for every accepted job to be terminal, then counts.
pub async fn settle(
    client: &reqwest::Client,
    base: &str,
    pool: &sqlx::PgPool,
    accepted: &[(String, String)],
    within: Duration,
) -> Ledger {
    let deadline = Instant::now() + within;
    let mut open: Vec<&str> = accepted.iter().map(|(id, _)| id.as_str()).collect();
    let mut ledger = Ledger {
        accepted: accepted.len(),
        ..Ledger::default()
    };
    while !open.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for id in open {
            let job: Option<Value> = match client.get(format!("{base}/v1/jobs/{id}")).send().await {
                Ok(r) if r.status().is_success() => r.json().await.ok(),
                _ => None,
            };
            match job.as_ref().and_then(|j| j["status"].as_str()) {
                Some("succeeded") => {
                    ledger.finished += 1;
                    ledger.succeeded += 1;
                }
                Some("failed" | "cancelled") => ledger.finished += 1,
                _ => still.push(id),
            }
        }
        open = still;
        if !open.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    ledger.lost = open.iter().map(|s| (*s).to_owned()).collect();
    // Jobs committed whose 2xx never reached the client (connection dropped) must finish too.
    loop {
        let stranded: Vec<String> = sqlx::query_scalar(
            "SELECT id::text FROM jobq.jobs WHERE status NOT IN ('succeeded', 'failed', 'cancelled')",
        )
        .fetch_all(pool)
        .await
        .unwrap_or_default();
        if stranded.is_empty() || Instant::now() >= deadline {
            ledger.stranded = stranded;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let duplicated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT job_id FROM jobq.job_events WHERE type = 'succeeded'
         GROUP BY job_id HAVING count(*) > 1) d",
    )
    .fetch_one(pool)
    .await
    .unwrap_or(-1);
    ledger.duplicates = duplicated.max(0) as usize;
    // Whatever was cut off halfway (a killed process, a crashed server), the counts kept as jobs
    // changed are still exactly the jobs' own.
    let (kept, counted) = kept_and_counted(pool, None).await;
    if kept != counted {
        ledger.counts_differ = Some((kept, counted));
    }
    ledger
}

impl Ledger {
    /// The one-line summary every fault test prints.
    pub fn summary(&self, name: &str, recovered_in: Option<Duration>) -> String {
        format!(
            "[fault:{name}] accepted={} finished={} succeeded={} duplicates={} lost={} stranded={} time_to_recover={}",
            self.accepted,
            self.finished,
            self.succeeded,
            self.duplicates,
            self.lost.len(),
            self.stranded.len(),
            recovered_in.map_or_else(|| "-".to_owned(), |d| format!("{:.1}s", d.as_secs_f64()))
        )
    }

    pub fn assert_clean(&self) {
        assert!(self.lost.is_empty(), "lost jobs: {:?}", self.lost);
        assert!(
            self.stranded.is_empty(),
            "stranded jobs: {:?}",
            self.stranded
        );
        assert_eq!(self.duplicates, 0, "jobs succeeded twice");
        assert_eq!(self.finished, self.accepted);
        assert_eq!(
            self.counts_differ, None,
            "job counts kept (left) differ from the jobs counted (right)"
        );
    }
}
