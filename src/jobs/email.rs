//! The email kind: one plain-text message over SMTP (lettre), or into a folder of `.eml` files
//! when no SMTP server is configured (development).
//!
//! Every message carries a Message-ID derived from the job id, so a message sent twice (the
//! worker died between the server's "250" and our commit) is recognisable as one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{
    Address, AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::FieldError;
use crate::jobs::JobError;

pub const MAX_SUBJECT_CHARS: usize = 998;
pub const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailJob {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// What a sent email reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Object)]
pub struct EmailResult {
    /// The Message-ID header of the message, derived from the job id.
    pub message_id: String,
    /// The SMTP server's reply to the message (e.g. `250 2.0.0 Ok: queued as 4F2A1`), or the
    /// file the message was written to when delivery goes to a folder.
    pub server_response: String,
}

impl EmailJob {
    pub fn parse(to: String, subject: String, body: String) -> Result<Self, FieldError> {
        let to = to.trim().to_owned();
        to.parse::<Address>()
            .map_err(|e| FieldError::new("to", format!("is not a valid email address: {e}")))?;
        if subject.trim().is_empty() {
            return Err(FieldError::new("subject", "must not be empty"));
        }
        if subject.chars().count() > MAX_SUBJECT_CHARS {
            return Err(FieldError::new(
                "subject",
                format!("must be at most {MAX_SUBJECT_CHARS} characters"),
            ));
        }
        if subject.contains(['\r', '\n']) {
            return Err(FieldError::new("subject", "must not contain line breaks"));
        }
        if body.len() > MAX_BODY_BYTES {
            return Err(FieldError::new(
                "body",
                format!("must be at most {MAX_BODY_BYTES} bytes"),
            ));
        }
        Ok(Self { to, subject, body })
    }

    pub async fn run(&self, job_id: Uuid, mailer: &Mailer) -> Result<EmailResult, JobError> {
        mailer.send(job_id, self).await
    }
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Folder(AsyncFileTransport<Tokio1Executor>, PathBuf),
}

/// Delivers email jobs: over SMTP, or into a folder of `.eml` files.
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    /// What to log about the transport (never the credentials of the URL).
    description: String,
}

impl Mailer {
    /// SMTP delivery, configured by a URL such as `smtp://127.0.0.1:2525`,
    /// `smtp://user:pass@host:587?tls=required` or `smtps://host`.
    pub fn smtp(url: &str, from: Mailbox, timeout: Duration) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| anyhow::anyhow!("invalid SMTP URL: {e}"))?
            .timeout(Some(timeout))
            .build();
        let description = match url::Url::parse(url) {
            Ok(u) => format!(
                "SMTP {}://{}:{}",
                u.scheme(),
                u.host_str().unwrap_or("?"),
                u.port_or_known_default().unwrap_or(25)
            ),
            Err(_) => "SMTP".to_owned(),
        };
        Ok(Self {
            transport: Transport::Smtp(transport),
            from,
            description,
        })
    }

    /// Development delivery: each message becomes a `.eml` file in `dir`.
    pub fn folder(dir: &Path, from: Mailbox) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create mail folder {}: {e}", dir.display()))?;
        Ok(Self {
            transport: Transport::Folder(AsyncFileTransport::new(dir), dir.to_owned()),
            from,
            description: format!("folder {} (.eml files, no SMTP server)", dir.display()),
        })
    }

    pub fn describe(&self) -> &str {
        &self.description
    }

    pub fn is_folder(&self) -> bool {
        matches!(self.transport, Transport::Folder(..))
    }

    async fn send(&self, job_id: Uuid, job: &EmailJob) -> Result<EmailResult, JobError> {
        let to: Address = job
            .to
            .parse()
            .map_err(|e| JobError::Permanent(format!("invalid recipient: {e}")))?;
        let domain = self.from.email.domain();
        let message_id = format!("<{job_id}@{domain}>");
        let message = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(job.subject.clone())
            .message_id(Some(message_id.clone()))
            .header(ContentType::TEXT_PLAIN)
            .body(job.body.clone())
            .map_err(|e| JobError::Permanent(format!("cannot build the message: {e}")))?;
        let server_response = match &self.transport {
            Transport::Smtp(smtp) => {
                let reply = smtp.send(message).await.map_err(classify_smtp_error)?;
                let text: Vec<&str> = reply.message().collect();
                format!("{} {}", reply.code(), text.join(" "))
            }
            Transport::Folder(folder, dir) => {
                let id = folder
                    .send(message)
                    .await
                    .map_err(|e| JobError::Retryable(format!("cannot write the message: {e}")))?;
                dir.join(format!("{id}.eml")).display().to_string()
            }
        };
        Ok(EmailResult {
            message_id,
            server_response,
        })
    }
}

/// A 5xx reply is the server's final word (unknown recipient, policy); anything else (refused
/// connection, timeout, 4xx) may pass on another attempt.
fn classify_smtp_error(e: lettre::transport::smtp::Error) -> JobError {
    if e.is_permanent() {
        JobError::Permanent(format!("SMTP server rejected the message: {e}"))
    } else {
        JobError::Retryable(format!("SMTP delivery failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_subjects_are_checked_with_the_field_named() {
        let ok = EmailJob::parse(" a@example.com ".into(), "Hi".into(), "body".into()).unwrap();
        assert_eq!(ok.to, "a@example.com");
        let bad = |to: &str, subject: &str, body: &str| {
            EmailJob::parse(to.into(), subject.into(), body.into())
                .unwrap_err()
                .field
        };
        assert_eq!(bad("not-an-address", "Hi", ""), "to");
        assert_eq!(bad("a@b.c", "", ""), "subject");
        assert_eq!(bad("a@b.c", "two\nlines", ""), "subject");
        assert_eq!(
            bad("a@b.c", &"s".repeat(MAX_SUBJECT_CHARS + 1), ""),
            "subject"
        );
        assert_eq!(bad("a@b.c", "Hi", &"b".repeat(MAX_BODY_BYTES + 1)), "body");
    }
}
