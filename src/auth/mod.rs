//! API keys: who is calling, with which role, for which tenant.
//!
//! A key is `jq_` + 32 random bytes (base64url). Only its SHA-256 is stored. Each API process
//! caches lookups for a few seconds and drops its cache whenever a key is revoked anywhere
//! (`jobq_keys` NOTIFY), so a revocation takes effect at once in every process.

mod cache;
mod rate;

pub use cache::KeyStore;
pub use rate::RateLimits;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::store::{self, keys::KeyRow};

/// What a key may do. Each role can do everything the ones before it can.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    poem_openapi::Enum,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum Role {
    /// Enqueues jobs and reads its own tenant's jobs and events.
    Client,
    /// Also reads every tenant's jobs, retries and cancels them, sees statistics and metrics.
    Ops,
    /// Also manages API keys.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Ops => "ops",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Role::Client, Role::Ops, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// The caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: Option<Uuid>,
    pub name: String,
    pub role: Role,
    pub tenant: String,
    /// Enqueue requests per second for this key (per process); `None`: the server default.
    pub rate_limit: Option<u32>,
}

impl Principal {
    /// Everyone, when authentication is switched off for local development.
    pub fn insecure_dev() -> Self {
        Self {
            key_id: None,
            name: "insecure-dev".to_owned(),
            role: Role::Admin,
            tenant: DEFAULT_TENANT.to_owned(),
            rate_limit: None,
        }
    }

    pub fn has(&self, role: Role) -> bool {
        self.role >= role
    }

    /// Whether this caller may see jobs owned by `tenant`.
    pub fn may_see(&self, tenant: &str) -> bool {
        self.has(Role::Ops) || self.tenant == tenant
    }

    /// The tenant a listing is restricted to: `None` for callers that see all tenants.
    pub fn tenant_scope(&self) -> Option<&str> {
        (!self.has(Role::Ops)).then_some(self.tenant.as_str())
    }
}

pub const DEFAULT_TENANT: &str = "default";
const TOKEN_PREFIX: &str = "jq_";

impl TryFrom<KeyRow> for Principal {
    type Error = String;

    fn try_from(row: KeyRow) -> Result<Self, String> {
        Ok(Self {
            key_id: Some(row.id),
            role: Role::parse(&row.role).ok_or_else(|| format!("unknown role {:?}", row.role))?,
            name: row.name,
            tenant: row.tenant,
            rate_limit: row.rate_limit.and_then(|n| u32::try_from(n).ok()),
        })
    }
}

/// SHA-256 of a token: what the database keeps.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A key that was just created: its token exists only here.
pub struct CreatedKey {
    pub row: KeyRow,
    pub token: String,
}

/// Validated fields of a new key.
pub struct KeySpec {
    pub name: String,
    pub role: Role,
    pub tenant: String,
    pub rate_limit: Option<u32>,
}

impl KeySpec {
    pub fn parse(
        name: &str,
        role: Role,
        tenant: &str,
        rate_limit: Option<u32>,
    ) -> Result<Self, crate::domain::FieldError> {
        use crate::domain::FieldError;
        let valid = valid_label;
        if !valid(name) {
            return Err(FieldError::new(
                "name",
                "1-100 characters: letters, digits, - _ . @",
            ));
        }
        if !valid(tenant) {
            return Err(FieldError::new(
                "tenant",
                "1-100 characters: letters, digits, - _ . @",
            ));
        }
        if rate_limit.is_some_and(|n| n == 0 || n > 1_000_000) {
            return Err(FieldError::new(
                "rate_limit",
                "must be between 1 and 1000000",
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            role,
            tenant: tenant.to_owned(),
            rate_limit,
        })
    }
}

/// Whether `s` may name a key or a tenant: 1-100 letters, digits or `-_.@`.
pub fn valid_label(s: &str) -> bool {
    (1..=100).contains(&s.chars().count())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
}

/// Creates a key; the returned token is the only copy of the secret.
pub async fn create_key(ex: impl sqlx::PgExecutor<'_>, spec: &KeySpec) -> sqlx::Result<CreatedKey> {
    let secret: [u8; 32] = rand::random();
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = hash_token(&token);
    let prefix: String = token.chars().take(TOKEN_PREFIX.len() + 6).collect();
    let row = store::keys::insert(
        ex,
        &store::keys::NewKey {
            id: Uuid::now_v7(),
            name: &spec.name,
            role: spec.role.as_str(),
            tenant: &spec.tenant,
            key_hash: &hash,
            prefix: &prefix,
            rate_limit: spec.rate_limit.map(|n| n as i32),
        },
    )
    .await?;
    Ok(CreatedKey { row, token })
}
