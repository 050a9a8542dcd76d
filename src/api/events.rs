//! `GET /v1/events`: the WebSocket of live job events. Not in the OpenAPI document (it cannot
//! describe WebSocket messages); the protocol is in `openapi/websocket.md`.

use std::time::Duration;

use poem::web::websocket::{WebSocket, WebSocketConfig};
use poem::web::{Data, Query};
use poem::{IntoResponse, Request, handler};
use serde::Deserialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::auth::authenticate;
use crate::api::error::ApiError;
use crate::auth::KeyStore;
use crate::domain::JobKind;
use crate::events::EventHub;
use crate::events::session::{self, MAX_READ_MESSAGE, Subscribe};

/// What the WebSocket route needs.
#[derive(Clone)]
pub struct EventsState {
    pub hub: EventHub,
    pub pool: PgPool,
    pub keys: KeyStore,
    pub shutdown: CancellationToken,
    pub send_timeout: Duration,
    pub ping_interval: Duration,
}

/// The initial subscription, from the query string: `?job_ids=a,b&kinds=email,hash&after=123`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    job_ids: Option<String>,
    kinds: Option<String>,
    after: Option<i64>,
}

fn list<T>(
    raw: Option<&str>,
    field: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<Vec<T>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    raw.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            parse(s).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_parameter",
                    format!("{s:?} is not a valid value"),
                    Some(field),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The key, from the `Authorization` header; a browser, which cannot set it, sends an `auth`
/// message first instead.
#[handler]
pub async fn events(
    req: &Request,
    ws: WebSocket,
    query: poem::Result<Query<EventsQuery>>,
    state: Data<&EventsState>,
) -> poem::Result<impl IntoResponse> {
    let header = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let principal = match header {
        Some(value) => {
            let token = value
                .strip_prefix("Bearer ")
                .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer <key>"))?;
            Some(authenticate(&state.keys, token).await?)
        }
        None => None,
    };
    let Query(query) =
        query.map_err(|e| ApiError::bad_request("invalid_parameter", e.to_string(), None))?;
    let initial = Subscribe {
        job_ids: list(query.job_ids.as_deref(), "job_ids", |s| {
            Uuid::parse_str(s).ok()
        })?,
        kinds: list(query.kinds.as_deref(), "kinds", JobKind::parse)?,
        after: query.after,
    };
    let state = state.0.clone();
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(MAX_READ_MESSAGE))
        .max_frame_size(Some(MAX_READ_MESSAGE));
    Ok(ws
        .config(config)
        .on_upgrade(move |socket| session::run(socket, state, initial, principal)))
}
