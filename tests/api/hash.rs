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
