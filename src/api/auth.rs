//! Authentication of API requests: `Authorization: Bearer <key>`, checked against the key
//! store; roles are checked by each operation.

use std::time::Duration;

use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;

use crate::api::error::ApiError;
use crate::auth::{KeyStore, Principal, RateLimits, Role};

/// An API key, sent as `Authorization: Bearer jq_...`. Keys have a role (`client`, `ops`,
/// `admin`) and a tenant; create them with `jobq keys create` or `POST /v1/keys`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "jq_<secret>", checker = "check")]
pub struct ApiKey(pub Principal);

async fn check(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    let Some(store) = req.data::<KeyStore>() else {
        return Err(ApiError::internal(&"no key store in the request").into());
    };
    authenticate(store, &bearer.token).await.map_err(Into::into)
}

/// The principal of `token`, or the API's 401/503.
pub async fn authenticate(store: &KeyStore, token: &str) -> Result<Principal, ApiError> {
    match store.authenticate(token).await {
        Ok(Some(principal)) => Ok(principal),
        Ok(None) => Err(ApiError::unauthorized("the API key is unknown or revoked")),
        Err(e) => Err(e.into()),
    }
}

impl ApiKey {
    /// The caller, if its role is at least `role`; 403 otherwise.
    pub fn require(&self, role: Role) -> Result<&Principal, ApiError> {
        if self.0.has(role) {
            Ok(&self.0)
        } else {
            Err(ApiError::forbidden(format!(
                "this operation needs the {} role; the key has {}",
                role.as_str(),
                self.0.role.as_str()
            )))
        }
    }
}

/// Takes one enqueue from the caller's rate allowance; 429 with Retry-After when spent.
pub fn rate_check(limits: &RateLimits, who: &Principal) -> Result<(), ApiError> {
    limits.check(who).map_err(|wait| {
        let secs = wait.max(Duration::from_millis(1)).as_secs_f64().ceil() as u64;
        ApiError::too_many_requests(secs.max(1))
    })
}
