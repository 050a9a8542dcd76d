use std::time::Duration;

use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{SmtpServer, spawn_app, spawn_app_with};

#[sqlx::test(migrations = false)]
async fn an_email_job_is_delivered_to_a_real_smtp_server(_: PgPoolOptions, db: PgConnectOptions) {
    let smtp = SmtpServer::start();
    let app = spawn_app_with(db, &["--smtp-url", &smtp.url()]).await;

    let job = app
        .enqueue(
            "/v1/jobs/email",
            json!({"to": "ada@example.com", "subject": "Quarterly report", "body": "All green."}),
        )
        .await;
    assert_eq!(job["status"], "queued");
    let id = job["id"].as_str().unwrap();

    let done = app.finished(id, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempt"], 1);
    let message_id = done["result"]["message_id"].as_str().unwrap();
    assert!(
        message_id.contains(id),
        "Message-ID derives from the job id: {message_id}"
    );
    assert!(
        done["result"]["server_response"]
            .as_str()
            .unwrap()
            .starts_with("250")
    );

    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "exactly one message delivered");
    let message = &messages[0];
    assert!(message.contains("Subject: Quarterly report"), "{message}");
    assert!(message.contains("To: ada@example.com"), "{message}");
    assert!(message.contains(message_id), "{message}");
    assert!(message.contains("All green."), "{message}");
}

#[sqlx::test(migrations = false)]
async fn a_rejected_recipient_fails_at_once_without_retrying(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let smtp = SmtpServer::rejecting();
    let app = spawn_app_with(db, &["--smtp-url", &smtp.url()]).await;

    let job = app
        .enqueue(
            "/v1/jobs/email",
            json!({"to": "nobody@example.com", "subject": "Hi", "body": "", "max_attempts": 5}),
        )
        .await;
    let done = app
        .finished(job["id"].as_str().unwrap(), Duration::from_secs(20))
        .await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["attempt"], 1, "a 5xx is final: no retry");
    let error = done["last_error"].as_str().unwrap();
    assert!(error.contains("550"), "{error}");
    assert!(smtp.messages().is_empty());
}

#[sqlx::test(migrations = false)]
async fn without_an_smtp_server_the_email_is_written_to_the_mail_folder(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = spawn_app(db).await;
    let job = app
        .enqueue(
            "/v1/jobs/email",
            json!({"to": "dev@example.com", "subject": "Local test", "body": "hello"}),
        )
        .await;
    let done = app
        .finished(job["id"].as_str().unwrap(), Duration::from_secs(20))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let path = done["result"]["server_response"].as_str().unwrap();
    let eml = std::fs::read_to_string(path).expect("the .eml file exists");
    assert!(eml.contains("Subject: Local test"), "{eml}");
}
