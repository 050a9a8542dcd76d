use std::time::Duration;

use base64::Engine as _;
use serde_json::json;
use sha2::{Digest, Sha256, Sha512};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::spawn_app;

#[sqlx::test(migrations = false)]
async fn sha256_of_data1_repeated_a_million_times_matches_an_independent_digest(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let job = app
        .enqueue(
            "/v1/jobs/hash",
            json!({"data": "data1", "repeat": 1_000_000}),
        )
        .await;
    assert_eq!(job["input"]["total_bytes"], 5_000_000);

    let done = app
        .finished(job["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");

    // Computed here, from the bytes themselves, not by jobq's code path.
    let expected = hex::encode(Sha256::digest("data1".repeat(1_000_000).as_bytes()));
    assert_eq!(done["result"]["digest_hex"], expected.as_str());
    assert_eq!(done["result"]["algorithm"], "sha256");
    assert_eq!(done["result"]["bytes_hashed"], 5_000_000);
}

#[sqlx::test(migrations = false)]
async fn base64_input_with_sha512_hashes_the_decoded_bytes(_: PgPoolOptions, db: PgConnectOptions) {
    let app = spawn_app(db).await;
    let bytes: Vec<u8> = (0..=255u8).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let job = app
        .enqueue(
            "/v1/jobs/hash",
            json!({"data": {"base64": encoded}, "repeat": 3, "algorithm": "sha512"}),
        )
        .await;
    let done = app
        .finished(job["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    let expected = hex::encode(Sha512::digest(bytes.repeat(3)));
    assert_eq!(done["result"]["digest_hex"], expected.as_str(), "{done}");
}

/// A digest runs on a thread of its own ("jobq-digest") ten nice levels below the rest of the
/// process, so that the API, fetches and outcome statements get a CPU at once while digests
/// keep every CPU busy. (Linux keeps nice values per thread.)
#[cfg(target_os = "linux")]
#[sqlx::test(migrations = false)]
async fn a_digest_runs_on_its_own_thread_below_normal_priority(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    /// The nice value of thread `tid` of this process (field 19 of its stat line).
    fn nice_of(stat: &str) -> i64 {
        // The command name (field 2) may hold spaces: count from the closing parenthesis.
        let after = &stat[stat.rfind(')').expect("stat line") + 2..];
        after
            .split(' ')
            .nth(16)
            .expect("nice field")
            .parse()
            .expect("nice")
    }
    let app = spawn_app(db).await;
    let base = nice_of(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
    // 1 GB: long enough to be seen running (seconds here), stopped by its cancel below.
    let id = app
        .enqueue_id(
            "/v1/jobs/hash",
            json!({"data": "data1", "repeat": 200_000_000}),
        )
        .await;
    let niceness = crate::helpers::eventually(
        Duration::from_secs(30),
        "a digest thread to run",
        || async {
            let mut seen = Vec::new();
            for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
                let path = task.path();
                let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
                if comm.trim_end() == "jobq-digest" {
                    let stat = std::fs::read_to_string(path.join("stat")).ok()?;
                    seen.push(nice_of(&stat));
                }
            }
            (!seen.is_empty()).then_some(seen)
        },
    )
    .await;
    assert!(
        niceness.iter().all(|&n| n == (base + 10).min(19)),
        "digest threads at nice {niceness:?}, the process at {base}"
    );
    let resp = app.post(&format!("/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
    let done = app.finished(&id, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "cancelled", "{done}");
}
