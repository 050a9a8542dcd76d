//! The HTTP API (poem-openapi): routes, the OpenAPI document, Swagger UI, metrics.

pub mod auth;
pub mod body;
pub mod contract;
pub mod error;
pub mod events;
pub mod health;
pub mod jobs;
pub mod keys;
pub mod models;
pub mod ops;
pub mod queues;
pub mod requests;
pub mod schedules;

use std::time::Instant;

use poem::middleware::Tracing;
use poem::web::Data;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, handler};
use poem_openapi::{OpenApiService, OperationId, Tags};
use sqlx::PgPool;

use crate::auth::{KeyStore, RateLimits, Role as KeyRole};
use crate::config::{ApiConfig, Role};
use crate::events::EventHub;
use crate::metrics;
use error::ApiError;
use health::HealthApi;
use jobs::JobsApi;
use keys::KeysApi;
use ops::OpsApi;
use queues::QueuesApi;
use schedules::SchedulesApi;

#[derive(Tags)]
pub enum ApiTags {
    /// Enqueue jobs and follow them.
    Jobs,
    /// Find, retry and cancel jobs; counts and queue statistics.
    Operations,
    /// Pause, resume and rate-limit the queue of a kind.
    Queues,
    /// Recurring jobs.
    Schedules,
    /// Manage API keys (admin).
    Keys,
    /// Liveness and readiness probes.
    Health,
}

type Apis = (JobsApi, OpsApi, QueuesApi, SchedulesApi, KeysApi, HealthApi);

/// What the API of a process needs.
#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub config: ApiConfig,
    pub keys: KeyStore,
    pub limits: RateLimits,
    pub hub: Option<EventHub>,
    /// Cancelled at shutdown.
    pub shutdown: tokio_util::sync::CancellationToken,
}

fn service(state: ApiState) -> OpenApiService<Apis, ()> {
    let schedules = SchedulesApi {
        pool: state.pool.clone(),
        config: state.config.clone(),
    };
    let queues = QueuesApi {
        pool: state.pool.clone(),
    };
    let jobs = JobsApi {
        enqueuer: crate::lifecycle::Enqueuer::new(state.pool.clone(), state.shutdown),
        pool: state.pool.clone(),
        config: state.config,
        limits: state.limits,
        hub: state.hub,
    };
    let ops = OpsApi {
        pool: state.pool.clone(),
    };
    let keys = KeysApi {
        pool: state.pool.clone(),
        store: state.keys,
    };
    let apis = (
        jobs,
        ops,
        queues,
        schedules,
        keys,
        HealthApi { pool: state.pool },
    );
    OpenApiService::new(apis, "jobq", env!("CARGO_PKG_VERSION")).description(
        "A durable job queue on Postgres: enqueue email, long-running and hash jobs, \
             follow their status, progress, results and events; retry and cancel them. \
             Live events: the WebSocket `GET /v1/events` (see openapi/websocket.md). \
             Prometheus metrics: `GET /metrics`.",
    )
}

/// The OpenAPI document, as served at `/openapi.json` and committed in `openapi/jobq.json`.
pub fn spec_json() -> String {
    // The spec needs no database: a lazy pool never connects, the key store never looks up.
    let pool = PgPool::connect_lazy_with(sqlx::postgres::PgConnectOptions::new());
    let keys = KeyStore::start(
        pool.clone(),
        true,
        tokio_util::sync::CancellationToken::new(),
    );
    let raw = service(ApiState {
        pool,
        config: ApiConfig::placeholder(),
        keys,
        limits: RateLimits::new(0),
        hub: None,
        shutdown: tokio_util::sync::CancellationToken::new(),
    })
    .spec();
    contract::finish(&raw)
}

/// What `/metrics` reads at scrape time.
#[derive(Clone)]
struct MetricsState {
    pool: PgPool,
    keys: KeyStore,
    hub: Option<EventHub>,
}

/// Prometheus text exposition; needs an ops key (Prometheus: `authorization` in the scrape
/// config).
#[handler]
async fn metrics_endpoint(req: &Request, state: Data<&MetricsState>) -> poem::Result<Response> {
    let token = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::unauthorized("an API key is required: Authorization: Bearer <key>")
        })?;
    let who = auth::authenticate(&state.keys, token).await?;
    if !who.has(KeyRole::Ops) {
        return Err(ApiError::forbidden("metrics need the ops role").into());
    }
    let text = metrics::render(&state.pool, state.hub.as_ref()).await;
    Ok(text
        .with_content_type("text/plain; version=0.0.4")
        .into_response())
}

/// All routes of a process: the API (`/v1`, the event WebSocket, `/docs`, `/openapi.json`) when
/// `events` is given (roles `all` and `api`), otherwise only the health probes; `/metrics`
/// always.
pub fn routes(state: ApiState, role: Role, events: Option<events::EventsState>) -> impl Endpoint {
    metrics::init();
    let metrics_state = MetricsState {
        pool: state.pool.clone(),
        keys: state.keys.clone(),
        hub: events.as_ref().map(|e| e.hub.clone()),
    };
    let keys = state.keys.clone();
    let pool = state.pool.clone();
    let route = Route::new().at("/metrics", poem::get(metrics_endpoint.data(metrics_state)));
    let (route, spec) = if let (true, Some(events)) = (role.runs_api(), events) {
        let api = service(state);
        let raw = api.spec();
        let spec = contract::finish(&raw);
        // Swagger UI shows the finished document, the one `/openapi.json` serves.
        let docs_html = api.swagger_ui_html().replacen(&raw, &spec, 1);
        let served = spec.clone();
        let route = route
            .at("/v1/events", poem::get(events::events.data(events)))
            .nest("/ui", crate::ui::routes())
            .at(
                "/docs",
                poem::get(poem::endpoint::make_sync(move |_| {
                    poem::web::Html(docs_html.clone())
                })),
            )
            .at(
                "/openapi.json",
                poem::get(poem::endpoint::make_sync(move |_| {
                    served
                        .clone()
                        .with_content_type("application/json; charset=utf-8")
                })),
            )
            .nest("/", api);
        (route, spec)
    } else {
        let health =
            OpenApiService::new(HealthApi { pool }, "jobq worker", env!("CARGO_PKG_VERSION"));
        let spec = health.spec();
        (route.nest("/", health), spec)
    };
    let methods = std::sync::Arc::new(contract::Methods::from_spec(
        &spec,
        &[
            ("/metrics", "GET"),
            ("/v1/events", "GET"),
            ("/openapi.json", "GET"),
            ("/docs", "GET"),
        ],
    ));
    // Bodies are only read through `JsonBody`, which enforces each endpoint's size limit.
    let insecure = keys.insecure();
    route
        .data(keys)
        .around(move |next, req| insecure_dev_key(insecure, next, req))
        .around(move |next, req| api_errors(methods.clone(), next, req))
        .around(count_request)
        .with(Tracing)
}

/// Every error that reached the router becomes the API's error shape (see `error`); a 405
/// names the route's methods in `Allow`.
async fn api_errors<E: Endpoint>(
    methods: std::sync::Arc<contract::Methods>,
    next: E,
    req: Request,
) -> poem::Result<Response> {
    let path = req.uri().path().to_owned();
    match next.call(req).await {
        Ok(resp) => Ok(resp.into_response()),
        Err(err) => {
            let allowed = methods.allowed(&path);
            Ok(error::into_response(err, &path, allowed.as_deref()))
        }
    }
}

/// With authentication switched off, a request without a key gets a placeholder one, which
/// the key store (in that mode) takes as the development admin.
async fn insecure_dev_key<E: Endpoint>(
    insecure: bool,
    next: E,
    mut req: Request,
) -> poem::Result<E::Output> {
    let header = poem::http::header::AUTHORIZATION;
    if insecure && !req.headers().contains_key(&header) {
        req.headers_mut().insert(
            header,
            poem::http::HeaderValue::from_static("Bearer insecure-dev"),
        );
    }
    next.call(req).await
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
