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
pub const MAX_BODY_CHARS: usize = 256 * 1024;
pub const MAX_TO_CHARS: usize = 254;
/// A recipient: a dot-atom local part and a host name (letters, digits, hyphens per label).
pub const TO_PATTERN: &str = "^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$";
pub const SUBJECT_PATTERN: &str = "^[^\\r\\n\\x00]*$";

/// `TO_PATTERN`, checked by hand.
pub fn valid_address(to: &str) -> bool {
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c);
    let Some((user, domain)) = to.split_once('@') else {
        return false;
    };
    let user_ok = user
        .split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(atext));
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    user_ok && domain.split('.').all(label_ok)
}

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
    /// Checks a request's fields exactly as the API's schema states them (`TO_PATTERN`,
    /// `SUBJECT_PATTERN` and the lengths), so that what the spec admits is accepted.
    pub fn parse(to: String, subject: String, body: String) -> Result<Self, FieldError> {
        if !(3..=MAX_TO_CHARS).contains(&to.chars().count()) || !valid_address(&to) {
            return Err(FieldError::new(
                "to",
                "is not a valid email address (user@example.com: no spaces, quotes or IP literals)",
            ));
        }
        let chars = subject.chars().count();
        if !(1..=MAX_SUBJECT_CHARS).contains(&chars) {
            return Err(FieldError::new(
                "subject",
                format!("must be 1 to {MAX_SUBJECT_CHARS} characters"),
            ));
        }
        if subject.contains(['\r', '\n', '\0']) {
            return Err(FieldError::new(
                "subject",
                "must not contain line breaks or NUL characters",
            ));
        }
        if body.chars().count() > MAX_BODY_CHARS {
            return Err(FieldError::new(
                "body",
                format!("must be at most {MAX_BODY_CHARS} characters"),
            ));
        }
        if body.contains('\0') {
            return Err(FieldError::new("body", "must not contain NUL characters"));
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
        // Checked at enqueue (`valid_address`: safe characters only), so lettre's own, stricter
        // length checks are not applied again.
        let to = match job.to.split_once('@') {
            Some((user, domain)) if valid_address(&job.to) => Address::new_dangerous(user, domain),
            _ => {
                return Err(JobError::Permanent(format!(
                    "invalid recipient: {:?}",
                    job.to
                )));
            }
        };
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
        let ok = EmailJob::parse("a@example.com".into(), "Hi".into(), "body".into()).unwrap();
        assert_eq!(ok.to, "a@example.com");
        let bad = |to: &str, subject: &str, body: &str| {
            EmailJob::parse(to.into(), subject.into(), body.into())
                .unwrap_err()
                .field
        };
        for to in [
            "not-an-address",
            " a@example.com",
            "a@example.com ",
            "a..b@example.com",
            ".a@example.com",
            "a@-example.com",
            "a@example-.com",
            "a@example..com",
            "a@[127.0.0.1]",
            "\"a b\"@example.com",
            "a@b@c",
        ] {
            assert_eq!(bad(to, "Hi", ""), "to", "{to}");
        }
        for to in ["a@b", "first.last+tag@mail.example.org", "x_y!#$@0-9.io"] {
            assert!(valid_address(to), "{to}");
        }
        assert_eq!(bad("a@b.c", "", ""), "subject");
        assert_eq!(bad("a@b.c", "two\nlines", ""), "subject");
        assert_eq!(bad("a@b.c", "nul\0", ""), "subject");
        assert_eq!(bad("a@b.c", "Hi", "nul\0"), "body");
        assert_eq!(
            bad("a@b.c", &"s".repeat(MAX_SUBJECT_CHARS + 1), ""),
            "subject"
        );
        assert_eq!(bad("a@b.c", "Hi", &"b".repeat(MAX_BODY_CHARS + 1)), "body");
    }
}
