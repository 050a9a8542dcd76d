//! The HTTP API (poem-openapi): routes, the OpenAPI document, Swagger UI.

pub mod body;
pub mod error;
pub mod events;
pub mod health;
pub mod jobs;
pub mod models;

use poem::middleware::Tracing;
use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::{OpenApiService, Tags};
use sqlx::PgPool;

use crate::config::{ApiConfig, Role};
use health::HealthApi;
use jobs::JobsApi;

#[derive(Tags)]
pub enum ApiTags {
    /// Enqueue jobs and follow them.
    Jobs,
    /// Liveness and readiness probes.
    Health,
}

fn service(pool: PgPool, config: ApiConfig) -> OpenApiService<(JobsApi, HealthApi), ()> {
    let jobs = JobsApi {
        pool: pool.clone(),
        config,
    };
    OpenApiService::new(
        (jobs, HealthApi { pool }),
        "jobq",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "A durable job queue on Postgres: enqueue email, long-running and hash jobs, \
             follow their status, progress, results and events.",
    )
}

/// The OpenAPI document, as served at `/openapi.json` and committed in `openapi/jobq.json`.
pub fn spec_json() -> String {
    // The spec needs no database; a lazy pool never connects.
    let pool = PgPool::connect_lazy_with(sqlx::postgres::PgConnectOptions::new());
    service(pool, ApiConfig::placeholder()).spec()
}

/// All routes of a process: the API (`/v1`, the event WebSocket, `/docs`, `/openapi.json`) when
/// `events` is given (roles `all` and `api`); only the health probes otherwise.
pub fn routes(
    pool: PgPool,
    config: ApiConfig,
    role: Role,
    events: Option<events::EventsState>,
) -> impl Endpoint {
    let route = if let (true, Some(events)) = (role.runs_api(), events) {
        let api = service(pool, config);
        let docs = api.swagger_ui();
        let spec = api.spec_endpoint();
        Route::new()
            .at("/v1/events", poem::get(events::events.data(events)))
            .nest("/docs", docs)
            .at("/openapi.json", spec)
            .nest("/", api)
    } else {
        let health =
            OpenApiService::new(HealthApi { pool }, "jobq worker", env!("CARGO_PKG_VERSION"));
        Route::new().nest("/", health)
    };
    // Bodies are only read through `JsonBody`, which enforces each endpoint's size limit.
    route.catch_all_error(error::into_response).with(Tracing)
}
