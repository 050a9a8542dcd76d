//! The hash kind: a SHA-2 digest of submitted bytes, optionally repeated `repeat` times
//! ("data1" x 1,000,000). The digest runs on tokio's blocking pool, never on the async executor,
//! in chunks so that a shutdown is noticed between them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

use crate::domain::FieldError;
use crate::jobs::{JobContext, JobError, stop_requested};

/// Largest `data` (after base64 decoding) a request may carry.
pub const MAX_DATA_BYTES: usize = 1024 * 1024;
pub const MAX_REPEAT: u64 = 1_000_000_000;
/// How many bytes are hashed between two checks for a cancel or a shutdown.
const CHUNK_BYTES: u64 = 64 * 1024 * 1024;

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

impl HashJob {
    /// Builds a job from a request: exactly one of `data` (text, hashed as its UTF-8 bytes) and
    /// `data_base64`; `repeat` defaults to 1; the total input must not exceed `max_total_bytes`.
    pub fn parse(
        data: Option<String>,
        data_base64: Option<String>,
        repeat: Option<u64>,
        algorithm: Option<HashAlgorithm>,
        max_total_bytes: u64,
    ) -> Result<Self, FieldError> {
        let (field, data) = match (data, data_base64) {
            (Some(text), None) => ("data", text.into_bytes()),
            (None, Some(encoded)) => {
                // Decoding is the one place the size must be checked before the work:
                // base64 is 4/3 of the bytes, so an oversized input is refused unread.
                if encoded.len() > MAX_DATA_BYTES.div_ceil(3) * 4 {
                    return Err(too_big("data_base64"));
                }
                let bytes = BASE64.decode(encoded.as_bytes()).map_err(|e| {
                    FieldError::new("data_base64", format!("is not valid base64: {e}"))
                })?;
                ("data_base64", bytes)
            }
            (Some(_), Some(_)) => {
                return Err(FieldError::new(
                    "data",
                    "give either data or data_base64, not both",
                ));
            }
            (None, None) => {
                return Err(FieldError::new(
                    "data",
                    "one of data or data_base64 is required",
                ));
            }
        };
        if data.len() > MAX_DATA_BYTES {
            return Err(too_big(field));
        }
        let repeat = repeat.unwrap_or(1);
        if !(1..=MAX_REPEAT).contains(&repeat) {
            return Err(FieldError::new(
                "repeat",
                format!("must be between 1 and {MAX_REPEAT}"),
            ));
        }
        let total = (data.len() as u64).saturating_mul(repeat);
        if total > max_total_bytes {
            return Err(FieldError::new(
                "repeat",
                format!(
                    "the input would be {total} bytes (data length x repeat); the limit is {max_total_bytes}"
                ),
            ));
        }
        Ok(Self {
            algorithm: algorithm.unwrap_or_default(),
            data,
            repeat,
        })
    }

    pub fn total_bytes(&self) -> u64 {
        (self.data.len() as u64).saturating_mul(self.repeat)
    }

    /// Computes the digest on the blocking pool, checking between chunks whether to stop.
    /// (Takes what it needs from `ctx` up front: the future does not borrow it.)
    pub fn run(
        &self,
        ctx: &JobContext,
    ) -> impl Future<Output = Result<HashResult, JobError>> + Send + 'static {
        let job = self.clone();
        let (cancel, shutdown) = (ctx.cancel.clone(), ctx.shutdown.clone());
        let span = tracing::Span::current();
        async move {
            tokio::task::spawn_blocking(move || {
                span.in_scope(|| job.digest(&|| stop_requested(&cancel, &shutdown)))
            })
            .await
            .map_err(|e| JobError::Retryable(format!("hash task failed: {e}")))?
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
        let per_block = (64 * 1024 / self.data.len()).max(1) as u64;
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

fn too_big(field: &str) -> FieldError {
    FieldError::new(
        field,
        format!("must be at most {MAX_DATA_BYTES} bytes (use repeat for larger inputs)"),
    )
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

    #[test]
    fn repeated_input_hashes_like_the_concatenation() {
        for (data, repeat) in [("data1", 1_000u64), ("x", 70_000), ("abc", 1)] {
            let job =
                HashJob::parse(Some(data.into()), None, Some(repeat), None, u64::MAX).unwrap();
            let expected = hex::encode(Sha256::digest(data.repeat(repeat as usize)));
            assert_eq!(digest_of(&job), expected, "{data} x {repeat}");
        }
    }

    #[test]
    fn every_algorithm_matches_the_reference() {
        let job = |a| HashJob::parse(Some("abc".into()), None, None, Some(a), 100).unwrap();
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
        let job = HashJob::parse(None, Some("AAEC".into()), None, None, 100).unwrap();
        assert_eq!(job.data, vec![0, 1, 2]);
        let err = HashJob::parse(None, Some("***".into()), None, None, 100).unwrap_err();
        assert_eq!(err.field, "data_base64");
        let err =
            HashJob::parse(Some("a".into()), Some("AA==".into()), None, None, 100).unwrap_err();
        assert_eq!(err.field, "data");
        let err = HashJob::parse(None, None, None, None, 100).unwrap_err();
        assert_eq!(err.field, "data");
        let err = HashJob::parse(Some("ab".into()), None, Some(0), None, 100).unwrap_err();
        assert_eq!(err.field, "repeat");
        let err = HashJob::parse(Some("ab".into()), None, Some(51), None, 100).unwrap_err();
        assert_eq!(err.field, "repeat");
        let big = "a".repeat(MAX_DATA_BYTES + 1);
        assert_eq!(
            HashJob::parse(Some(big), None, None, None, u64::MAX)
                .unwrap_err()
                .field,
            "data"
        );
    }

    #[test]
    fn payload_round_trips_through_json() {
        let job = HashJob::parse(None, Some("AAEC".into()), Some(3), None, 100).unwrap();
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
            Some("x".repeat(1024 * 1024)),
            None,
            Some(100),
            None,
            u64::MAX,
        )
        .unwrap();
        assert_eq!(job.digest(&|| Err(JobError::Lost)), Err(JobError::Lost));
        assert_eq!(
            job.digest(&|| Err(JobError::Interrupted)),
            Err(JobError::Interrupted)
        );
    }
}
