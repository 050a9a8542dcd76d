//! `/v1/keys`: API key management, for admin keys.

use chrono::{DateTime, Utc};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::api::ApiTags;
use crate::api::auth::ApiKey;
use crate::api::body::{BodyLimit, JsonBody};
use crate::api::error::ApiError;
use crate::auth::{self, KeySpec, KeyStore, Role};
use crate::store::{self, keys::KeyRow};

pub struct KeysApi {
    pub pool: PgPool,
    pub store: KeyStore,
}

/// A new API key.
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields, example)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Who or what uses the key (1-100 of letters, digits, `-_.@`); ops actions record it.
    #[oai(validator(min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9._@-]{1,100}$"))]
    pub name: String,
    /// What the key may do: `client`, `ops` or `admin` (each may do what the ones before may).
    pub role: Role,
    /// The tenant whose jobs the key creates and (for `client`) sees (1-100 of letters,
    /// digits, `-_.@`); `default` when omitted.
    #[oai(
        validator(min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9._@-]{1,100}$"),
        skip_serializing_if_is_none
    )]
    #[serde(default, deserialize_with = "crate::api::body::present")]
    pub tenant: Option<String>,
    /// Enqueue requests per second for this key (per API process); the server default when
    /// omitted.
    #[oai(
        validator(minimum(value = "1"), maximum(value = "1000000")),
        skip_serializing_if_is_none
    )]
    #[serde(default, deserialize_with = "crate::api::body::present")]
    pub rate_limit: Option<u32>,
}

impl BodyLimit for CreateKey {
    const MAX_BODY_BYTES: usize = 4 * 1024;
}

/// An API key as listed: the secret is never shown again after creation.
#[derive(Debug, Object)]
#[oai(example)]
pub struct KeyInfo {
    /// The key's id (for `revoke_key`).
    pub id: Uuid,
    /// Who or what uses the key; ops actions record it (e.g. `updated_by`, `created_by`).
    pub name: String,
    /// What the key may do: `client`, `ops` or `admin` (each may do what the ones before may).
    pub role: Role,
    /// The tenant whose jobs the key creates and (for `client`) sees.
    pub tenant: String,
    /// The first characters of the token, to recognise it.
    pub prefix: String,
    /// Enqueue requests per second for this key (per API process); absent: the server
    /// default.
    #[oai(skip_serializing_if_is_none)]
    pub rate_limit: Option<u32>,
    /// When the key was created (RFC 3339).
    pub created_at: DateTime<Utc>,
    /// When the key was revoked (RFC 3339); absent while it works.
    #[oai(skip_serializing_if_is_none)]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key that was just created, with its token: store it now, it is not shown again.
#[derive(Debug, Object)]
#[oai(example)]
pub struct CreatedKey {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// The key as `list_keys` shows it.
    pub key: KeyInfo,
}

/// All keys.
#[derive(Debug, Object)]
#[oai(example)]
pub struct KeyList {
    /// Every key, revoked ones included, newest first.
    pub keys: Vec<KeyInfo>,
}

impl Example for CreateKey {
    fn example() -> Self {
        CreateKey {
            name: "billing-service".to_owned(),
            role: Role::Client,
            tenant: Some("billing".to_owned()),
            rate_limit: Some(50),
        }
    }
}

impl Example for KeyInfo {
    fn example() -> Self {
        KeyInfo {
            id: Uuid::from_u128(0x019bc0f2_1c4e_7d10_8a3b_6e2f4c9d0b15),
            name: "billing-service".to_owned(),
            role: Role::Client,
            tenant: "billing".to_owned(),
            prefix: "jq_Xr4tQ9".to_owned(),
            rate_limit: Some(50),
            created_at: crate::api::models::at("2026-01-15T09:00:00Z"),
            revoked_at: None,
        }
    }
}

impl Example for CreatedKey {
    fn example() -> Self {
        CreatedKey {
            token: "jq_Xr4tQ9mZb2Lk7vN0cW5yH8sE3pA6dF1gJ4uT9oR2iKq".to_owned(),
            key: KeyInfo::example(),
        }
    }
}

impl Example for KeyList {
    fn example() -> Self {
        KeyList {
            keys: vec![KeyInfo::example()],
        }
    }
}

#[derive(ApiResponse)]
pub enum CreateKeyResponse {
    /// The key was created.
    #[oai(status = 201)]
    Created(Json<CreatedKey>),
}

impl TryFrom<KeyRow> for KeyInfo {
    type Error = ApiError;

    fn try_from(row: KeyRow) -> Result<Self, ApiError> {
        Ok(KeyInfo {
            id: row.id,
            role: Role::parse(&row.role)
                .ok_or_else(|| ApiError::internal(&format!("stored role {:?}", row.role)))?,
            name: row.name,
            tenant: row.tenant,
            prefix: row.prefix,
            rate_limit: row.rate_limit.and_then(|n| u32::try_from(n).ok()),
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        })
    }
}

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Keys")]
impl KeysApi {
    /// Create an API key
    ///
    /// The answer holds the key's token: it is shown once and only its hash is stored.
    #[oai(path = "/keys", method = "post", operation_id = "create_key")]
    async fn create_key(
        &self,
        auth: ApiKey,
        body: JsonBody<CreateKey>,
    ) -> Result<CreateKeyResponse, ApiError> {
        auth.require(Role::Admin)?;
        let req = body.0;
        let tenant = req.tenant.as_deref().unwrap_or(auth::DEFAULT_TENANT);
        let spec = KeySpec::parse(&req.name, req.role, tenant, req.rate_limit)?;
        let created = auth::create_key(&self.pool, &spec).await?;
        Ok(CreateKeyResponse::Created(Json(CreatedKey {
            token: created.token,
            key: created.row.try_into()?,
        })))
    }

    /// List API keys
    ///
    /// Every key, revoked ones included (with `revoked_at`), newest first. Tokens are never
    /// shown, only their first characters (`prefix`). Needs the `admin` role (403 otherwise).
    #[oai(path = "/keys", method = "get", operation_id = "list_keys")]
    async fn list_keys(&self, auth: ApiKey) -> Result<Json<KeyList>, ApiError> {
        auth.require(Role::Admin)?;
        let keys = store::keys::list(&self.pool)
            .await?
            .into_iter()
            .map(KeyInfo::try_from)
            .collect::<Result<_, _>>()?;
        Ok(Json(KeyList { keys }))
    }

    /// Revoke an API key
    ///
    /// The key stops working at once, in every jobq process.
    #[oai(path = "/keys/:id", method = "delete", operation_id = "revoke_key")]
    async fn revoke_key(
        &self,
        auth: ApiKey,
        /// The key's id.
        id: Path<Uuid>,
    ) -> Result<Json<KeyInfo>, ApiError> {
        auth.require(Role::Admin)?;
        let row = store::keys::revoke(&self.pool, id.0)
            .await?
            .ok_or_else(|| ApiError::not_found("key", "id"))?;
        // Other processes hear of it through NOTIFY; this one forgets at once.
        self.store.clear();
        Ok(Json(row.try_into()?))
    }
}
