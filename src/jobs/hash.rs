//! The hash kind: a SHA-2 digest of submitted bytes, optionally repeated `repeat` times
//! ("data1" x 1,000,000). The digest runs on a thread of its own below normal priority, never on
//! the async executor, in chunks so that a shutdown is noticed between them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

use crate::domain::FieldError;
use crate::jobs::{JobContext, JobError, stop_requested};

pub const MAX_REPEAT: u64 = 1_000_000_000;
/// How many bytes are hashed between two checks for a cancel or a shutdown.
const CHUNK_BYTES: u64 = 64 * 1024 * 1024;
/// Inputs up to this many bytes (data length x repeat) are hashed on the calling task: tens of
/// microseconds at most, less than a round trip through the blocking pool.
pub const INLINE_MAX_BYTES: u64 = 16 * 1024;

/// How much lower digests run than the rest of the process (a nice increment of their own
/// threads; Linux keeps nice values per thread). A digest keeps the CPUs whenever nothing else
/// wants them, but the API, the fetches and the outcome statements of other jobs, and Postgres
/// itself, get a CPU at once when they wake up instead of waiting for a digest's time slice: a
/// few hops through them are what a job's start and finish cost (measured in issue 9's harness:
/// with default priority, three 5 MB digests on two CPUs delayed their own outcome statements by
/// milliseconds).
const DIGEST_NICE: i32 = 10;

/// Lowers the calling thread's priority by [`DIGEST_NICE`]; best effort.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::nice(DIGEST_NICE) {
        tracing::debug!(error = %e, "cannot lower the digest thread's priority");
    }
}

/// The SHA-2 function to apply.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Enum,
)]
#[serde(rename_all = "lowercase")]
#[oai(rename_all = "lowercase")]
pub enum HashAlgorithm {
    Sha224,
    #[default]
    Sha256,
    Sha384,
    Sha512,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashJob {
    pub algorithm: HashAlgorithm,
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
    pub repeat: u64,
}

/// What a finished hash job reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Object)]
pub struct HashResult {
    pub algorithm: HashAlgorithm,
    /// The digest, lowercase hex.
    pub digest_hex: String,
    /// Bytes fed to the hash function: the data's length times `repeat`.
    pub bytes_hashed: u64,
}

/// A hash job's input as a request gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashInput {
    /// Text, hashed as its UTF-8 bytes.
    Text(String),
    /// Standard base64 (padded), for binary input.
    Base64(String),
}

/// The longest text input, in characters.
pub const MAX_TEXT_CHARS: usize = 1024 * 1024;
/// The longest base64 input, in characters (a little over 1 MiB decoded).
pub const MAX_BASE64_CHARS: usize = MAX_TEXT_CHARS.div_ceil(3) * 4;
/// Standard padded base64, any trailing bits: every string this pattern admits decodes.
pub const BASE64_PATTERN: &str = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$";

/// Decodes what `BASE64_PATTERN` admits, lenient only about the unused bits of the last symbol.
const LENIENT_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical),
);

impl HashJob {
    /// Builds a job from a request (`field` names the input for errors): at most
    /// `MAX_TEXT_CHARS` of text or `MAX_BASE64_CHARS` of base64; `repeat` defaults to 1. The
    /// server's limit on the total (see `check_total`) is a separate matter.
    pub fn parse(
        input: HashInput,
        field: &str,
        repeat: Option<u64>,
        algorithm: Option<HashAlgorithm>,
    ) -> Result<Self, FieldError> {
        let data = match input {
            HashInput::Text(text) => {
                if text.chars().count() > MAX_TEXT_CHARS {
                    return Err(FieldError::new(
                        field,
                        format!(
                            "must be at most {MAX_TEXT_CHARS} characters (use repeat for larger inputs)"
                        ),
                    ));
                }
                text.into_bytes()
            }
            HashInput::Base64(encoded) => {
                let field = format!("{field}.base64");
                // Checked before decoding: an oversized input is refused unread.
                if encoded.len() > MAX_BASE64_CHARS {
                    return Err(FieldError::new(
                        field,
                        format!("must be at most {MAX_BASE64_CHARS} characters"),
                    ));
                }
                LENIENT_BASE64.decode(encoded.as_bytes()).map_err(|e| {
                    FieldError::new(field, format!("is not valid padded base64: {e}"))
                })?
            }
        };
        let repeat = repeat.unwrap_or(1);
        if !(1..=MAX_REPEAT).contains(&repeat) {
            return Err(FieldError::new(
                "repeat",
                format!("must be between 1 and {MAX_REPEAT}"),
            ));
        }
        Ok(Self {
            algorithm: algorithm.unwrap_or_default(),
            data,
            repeat,
        })
    }

    /// The server's limit on the bytes one job hashes (data length x repeat).
    pub fn check_total(&self, max_total_bytes: u64) -> Result<(), FieldError> {
        let total = self.total_bytes();
        if total > max_total_bytes {
            return Err(FieldError::new(
                "repeat",
                format!(
                    "the input would be {total} bytes (data length x repeat); this server's limit is {max_total_bytes}"
                ),
            ));
        }
        Ok(())
    }

    pub fn total_bytes(&self) -> u64 {
        (self.data.len() as u64).saturating_mul(self.repeat)
    }

    /// True when the digest is computed on the calling task: an input of at most
    /// [`INLINE_MAX_BYTES`] takes microseconds, less than handing it to another thread.
    pub fn runs_inline(&self) -> bool {
        self.total_bytes() <= INLINE_MAX_BYTES
    }

    /// Computes the digest on a thread of its own below normal priority (see [`DIGEST_NICE`]),
    /// checking between chunks whether to stop; a tiny input (see [`Self::runs_inline`])
    /// directly. (Takes what it needs from `ctx` up front: the future does not borrow it.)
    pub fn run(
        &self,
        ctx: &JobContext,
    ) -> impl Future<Output = Result<HashResult, JobError>> + Send + 'static {
        let job = self.clone();
        let (cancel, shutdown) = (ctx.cancel.clone(), ctx.shutdown.clone());
        let span = tracing::Span::current();
        async move {
            if job.runs_inline() {
                return job.digest(&|| stop_requested(&cancel, &shutdown));
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name("jobq-digest".to_owned())
                .spawn(move || {
                    lower_priority();
                    let digest =
                        span.in_scope(|| job.digest(&|| stop_requested(&cancel, &shutdown)));
                    let _ = tx.send(digest);
                })
                .map_err(|e| JobError::Retryable(format!("cannot start a hash thread: {e}")))?;
            rx.await.map_err(|_| {
                JobError::Retryable(
                    "the hash thread ended without a result (it panicked)".to_owned(),
                )
            })?
        }
    }

    fn digest(&self, stop: &dyn Fn() -> Result<(), JobError>) -> Result<HashResult, JobError> {
        let digest_hex = match self.algorithm {
            HashAlgorithm::Sha224 => self.feed::<Sha224>(stop)?,
            HashAlgorithm::Sha256 => self.feed::<Sha256>(stop)?,
            HashAlgorithm::Sha384 => self.feed::<Sha384>(stop)?,
            HashAlgorithm::Sha512 => self.feed::<Sha512>(stop)?,
        };
        Ok(HashResult {
            algorithm: self.algorithm,
            digest_hex,
            bytes_hashed: self.total_bytes(),
        })
    }

    /// Feeds `data` `repeat` times. Small inputs are first tiled into a ~64 KiB block so the
    /// hasher sees large updates instead of millions of tiny ones.
    fn feed<D: Digest>(&self, stop: &dyn Fn() -> Result<(), JobError>) -> Result<String, JobError> {
        let mut hasher = D::new();
        if self.data.is_empty() {
            return Ok(hex::encode(hasher.finalize()));
        }
        let per_block = ((64 * 1024 / self.data.len()).max(1) as u64).min(self.repeat);
        let block = self.data.repeat(per_block as usize);
        let mut remaining = self.repeat;
        let mut since_check = 0u64;
        while remaining >= per_block {
            hasher.update(&block);
            remaining -= per_block;
            since_check += block.len() as u64;
            if since_check >= CHUNK_BYTES {
                since_check = 0;
                stop()?;
            }
        }
        for _ in 0..remaining {
            hasher.update(&self.data);
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

/// Hash input is stored as base64 inside the job's JSON payload.
mod base64_bytes {
    use super::BASE64;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        BASE64.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(job: &HashJob) -> String {
        job.digest(&|| Ok(())).unwrap().digest_hex
    }

    fn text(data: &str) -> HashInput {
        HashInput::Text(data.to_owned())
    }

    fn b64(data: &str) -> HashInput {
        HashInput::Base64(data.to_owned())
    }

    #[test]
    fn repeated_input_hashes_like_the_concatenation() {
        for (data, repeat) in [("data1", 1_000u64), ("x", 70_000), ("abc", 1)] {
            let job = HashJob::parse(text(data), "data", Some(repeat), None).unwrap();
            let expected = hex::encode(Sha256::digest(data.repeat(repeat as usize)));
            assert_eq!(digest_of(&job), expected, "{data} x {repeat}");
        }
    }

    #[test]
    fn every_algorithm_matches_the_reference() {
        let job = |a| HashJob::parse(text("abc"), "data", None, Some(a)).unwrap();
        assert_eq!(
            digest_of(&job(HashAlgorithm::Sha224)),
            hex::encode(Sha224::digest(b"abc"))
        );
        assert_eq!(
            digest_of(&job(HashAlgorithm::Sha384)),
            hex::encode(Sha384::digest(b"abc"))
        );
        assert_eq!(
            digest_of(&job(HashAlgorithm::Sha512)),
            hex::encode(Sha512::digest(b"abc"))
        );
    }

    #[test]
    fn base64_input_is_decoded_and_errors_name_the_field() {
        let job = HashJob::parse(b64("AAEC"), "data", None, None).unwrap();
        assert_eq!(job.data, vec![0, 1, 2]);
        // Unused trailing bits are tolerated, as the spec's pattern admits them.
        assert_eq!(
            HashJob::parse(b64("YR=="), "data", None, None)
                .unwrap()
                .data,
            b"a"
        );
        let err = HashJob::parse(b64("***"), "data", None, None).unwrap_err();
        assert_eq!(err.field, "data.base64");
        let err = HashJob::parse(b64("YQ"), "data", None, None).unwrap_err();
        assert_eq!(err.field, "data.base64", "unpadded");
        let err = HashJob::parse(text("ab"), "data", Some(0), None).unwrap_err();
        assert_eq!(err.field, "repeat");
        let big = "é".repeat(MAX_TEXT_CHARS + 1);
        assert_eq!(
            HashJob::parse(HashInput::Text(big), "data", None, None)
                .unwrap_err()
                .field,
            "data"
        );
        let fits = "é".repeat(MAX_TEXT_CHARS);
        assert!(HashJob::parse(HashInput::Text(fits), "data", None, None).is_ok());
    }

    #[test]
    fn the_total_limit_is_checked_apart() {
        let job = HashJob::parse(text("ab"), "data", Some(51), None).unwrap();
        assert_eq!(job.check_total(100).unwrap_err().field, "repeat");
        assert!(job.check_total(102).is_ok());
    }

    #[test]
    fn payload_round_trips_through_json() {
        let job = HashJob::parse(b64("AAEC"), "data", Some(3), None).unwrap();
        let back: HashJob = serde_json::from_value(serde_json::to_value(&job).unwrap()).unwrap();
        assert_eq!(back, job);
    }
}

#[cfg(test)]
mod stop_tests {
    use super::*;

    #[test]
    fn a_stop_request_ends_a_large_digest_between_chunks() {
        let job = HashJob::parse(
            HashInput::Text("x".repeat(1024 * 1024)),
            "data",
            Some(100),
            None,
        )
        .unwrap();
        assert_eq!(job.digest(&|| Err(JobError::Lost)), Err(JobError::Lost));
        assert_eq!(
            job.digest(&|| Err(JobError::Interrupted)),
            Err(JobError::Interrupted)
        );
    }
}
