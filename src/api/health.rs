//! `/healthz` (the process is up) and `/readyz` (it can reach Postgres).

use std::time::Duration;

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use sqlx::PgPool;

use crate::api::ApiTags;

pub struct HealthApi {
    pub pool: PgPool,
}

/// Health of this process.
#[derive(Debug, Object)]
#[oai(example)]
pub struct Health {
    /// `ok`, or `unavailable` with the reason in `detail`.
    pub status: String,
    /// Why the process is unavailable; absent when `status` is `ok`.
    #[oai(skip_serializing_if_is_none)]
    pub detail: Option<String>,
}

impl poem_openapi::types::Example for Health {
    fn example() -> Self {
        Health {
            status: "ok".to_owned(),
            detail: None,
        }
    }
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// Postgres answers; this process can serve.
    #[oai(status = 200)]
    Ready(Json<Health>),
    /// Postgres does not answer; requests that need it fail with 503.
    #[oai(status = 503)]
    NotReady(Json<Health>),
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness
    ///
    /// Answers as long as the process runs.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> Json<Health> {
        Json(Health {
            status: "ok".to_owned(),
            detail: None,
        })
    }

    /// Readiness
    ///
    /// 200 when Postgres answers within a second, 503 otherwise.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self) -> ReadyResponse {
        let probe = sqlx::query("SELECT 1").execute(&self.pool);
        let detail = match tokio::time::timeout(Duration::from_secs(1), probe).await {
            Ok(Ok(_)) => {
                return ReadyResponse::Ready(Json(Health {
                    status: "ok".to_owned(),
                    detail: None,
                }));
            }
            Ok(Err(e)) => format!("database error: {e}"),
            Err(_) => "database did not answer within 1s".to_owned(),
        };
        ReadyResponse::NotReady(Json(Health {
            status: "unavailable".to_owned(),
            detail: Some(detail),
        }))
    }
}
