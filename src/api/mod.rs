//! The HTTP API (poem-openapi): routes, the OpenAPI document, Swagger UI, metrics.

pub mod body;
pub mod error;
pub mod events;
pub mod health;
pub mod jobs;
pub mod models;
pub mod ops;

use std::time::Instant;

use poem::middleware::Tracing;
use poem::web::Data;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, handler};
use poem_openapi::{OpenApiService, OperationId, Tags};
use sqlx::PgPool;

use crate::config::{ApiConfig, Role};
use crate::events::EventHub;
use crate::metrics;
use health::HealthApi;
use jobs::JobsApi;
use ops::OpsApi;

#[derive(Tags)]
pub enum ApiTags {
    /// Enqueue jobs and follow them.
    Jobs,
    /// Find, retry and cancel jobs; counts and queue statistics.
    Operations,
    /// Liveness and readiness probes.
    Health,
}

type Apis = (JobsApi, OpsApi, HealthApi);

fn service(pool: PgPool, config: ApiConfig) -> OpenApiService<Apis, ()> {
    let jobs = JobsApi {
        pool: pool.clone(),
        config,
    };
    let ops = OpsApi { pool: pool.clone() };
    OpenApiService::new(
        (jobs, ops, HealthApi { pool }),
        "jobq",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "A durable job queue on Postgres: enqueue email, long-running and hash jobs, \
             follow their status, progress, results and events; retry and cancel them. \
             Live events: the WebSocket `GET /v1/events` (see openapi/websocket.md). \
             Prometheus metrics: `GET /metrics`.",
    )
}

/// The OpenAPI document, as served at `/openapi.json` and committed in `openapi/jobq.json`.
pub fn spec_json() -> String {
    // The spec needs no database; a lazy pool never connects.
    let pool = PgPool::connect_lazy_with(sqlx::postgres::PgConnectOptions::new());
    service(pool, ApiConfig::placeholder()).spec()
}

/// What `/metrics` reads at scrape time.
#[derive(Clone)]
struct MetricsState {
    pool: PgPool,
    hub: Option<EventHub>,
}

#[handler]
async fn metrics_endpoint(state: Data<&MetricsState>) -> Response {
    let sessions = state.hub.as_ref().map(EventHub::subscribers);
    let text = metrics::render(&state.pool, sessions).await;
    text.with_content_type("text/plain; version=0.0.4")
        .into_response()
}

/// All routes of a process: the API (`/v1`, the event WebSocket, `/docs`, `/openapi.json`) when
/// `events` is given (roles `all` and `api`), otherwise only the health probes; `/metrics`
/// always.
pub fn routes(
    pool: PgPool,
    config: ApiConfig,
    role: Role,
    events: Option<events::EventsState>,
) -> impl Endpoint {
    metrics::init();
    let metrics_state = MetricsState {
        pool: pool.clone(),
        hub: events.as_ref().map(|e| e.hub.clone()),
    };
    let route = Route::new().at("/metrics", poem::get(metrics_endpoint.data(metrics_state)));
    let route = if let (true, Some(events)) = (role.runs_api(), events) {
        let api = service(pool, config);
        let docs = api.swagger_ui();
        let spec = api.spec_endpoint();
        route
            .at("/v1/events", poem::get(events::events.data(events)))
            .nest("/docs", docs)
            .at("/openapi.json", spec)
            .nest("/", api)
    } else {
        let health =
            OpenApiService::new(HealthApi { pool }, "jobq worker", env!("CARGO_PKG_VERSION"));
        route.nest("/", health)
    };
    // Bodies are only read through `JsonBody`, which enforces each endpoint's size limit.
    route
        .catch_all_error(error::into_response)
        .around(count_request)
        .with(Tracing)
}

/// Records every request in `jobq_http_requests_total` and its duration histogram, labelled
/// by operation (the operationId; a fixed name for the few routes outside the spec).
async fn count_request<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let started = Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let resp = next.call(req).await?.into_response();
    let route = match resp.data::<OperationId>() {
        Some(op) => op.0.to_owned(),
        None => match path.as_str() {
            "/metrics" => "metrics".to_owned(),
            "/v1/events" => "events_websocket".to_owned(),
            "/openapi.json" => "openapi".to_owned(),
            p if p.starts_with("/docs") => "docs".to_owned(),
            _ => "unmatched".to_owned(),
        },
    };
    metrics::http_request(route, method, resp.status().as_u16(), started);
    Ok(resp)
}
