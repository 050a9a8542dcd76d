//! One WebSocket subscriber: its filter, its place in the event order, and the protocol
//! (documented in `openapi/websocket.md`).
//!
//! Memory per session is bounded: a lagging session does not queue events of its own, it
//! re-reads the log from its position a page at a time; a client that stops reading is told to
//! resume from its last event id and disconnected once a send has waited `--ws-send-timeout`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use poem::web::websocket::{CloseCode, Message, WebSocketStream};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::api::auth::authenticate;
use crate::api::events::EventsState;
use crate::auth::{KeyStore, Principal};
use crate::domain::JobKind;
use crate::events::{Position, Published, frame};
use crate::store;

/// Close codes (4000-4999 are the application's own).
pub mod close {
    /// No valid key: neither an `Authorization` header nor a first `auth` message in time.
    pub const UNAUTHORIZED: u16 = 4401;
    /// A message was not valid JSON, not a known type, or had invalid fields.
    pub const INVALID_MESSAGE: u16 = 4400;
    /// `after` names an event that is not (or no longer) in the log.
    pub const UNKNOWN_RESUME_POINT: u16 = 4404;
    /// The client did not read fast enough; reconnect with `after` = the last event id it has.
    pub const TOO_SLOW: u16 = 4408;
    /// Nothing (not even a pong) heard from the client for three ping intervals.
    pub const KEEPALIVE_TIMEOUT: u16 = 4000;
}

/// Largest message a client may send; larger ones are answered with close code 1009.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// Messages past this are not even read: the connection is dropped.
pub const MAX_READ_MESSAGE: usize = 1024 * 1024;
/// Most job ids one subscription may name.
pub const MAX_JOB_IDS: usize = 1000;
const REPLAY_PAGE: i64 = 200;

/// What a subscriber wants (`None` means any), within what its key may see.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub job_ids: Option<HashSet<Uuid>>,
    pub kinds: Option<HashSet<JobKind>>,
    /// The only tenant whose events the key may see (`None`: all, for ops and admin keys).
    pub tenant: Option<String>,
}

impl Filter {
    fn matches(&self, job_id: &Uuid, kind: JobKind, owner: &str) -> bool {
        self.job_ids.as_ref().is_none_or(|ids| ids.contains(job_id))
            && self.kinds.as_ref().is_none_or(|k| k.contains(&kind))
            && self.tenant.as_deref().is_none_or(|t| t == owner)
    }
}

/// How long a connection without an `Authorization` header has to send its `auth` message.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// A subscription request, from the connection's query string or a `subscribe` message.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    #[serde(default)]
    pub job_ids: Option<Vec<Uuid>>,
    #[serde(default)]
    pub kinds: Option<Vec<JobKind>>,
    /// Replay every event after this event id first.
    #[serde(default)]
    pub after: Option<i64>,
}

impl Subscribe {
    fn filter(&self, tenant: Option<String>) -> Result<Filter, String> {
        if self
            .job_ids
            .as_ref()
            .is_some_and(|ids| ids.len() > MAX_JOB_IDS)
        {
            return Err(format!("job_ids: at most {MAX_JOB_IDS} ids"));
        }
        Ok(Filter {
            job_ids: self.job_ids.as_ref().map(|v| v.iter().copied().collect()),
            kinds: self.kinds.as_ref().map(|v| v.iter().copied().collect()),
            tenant,
        })
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Subscribe(Subscribe),
    Ping,
    Auth { token: String },
}

/// Why a session ended early.
enum End {
    /// Close with this code and reason after sending `message` (if any).
    Close(u16, String, Option<serde_json::Value>),
    /// The socket is gone or stuck; just drop it.
    Gone,
}

struct Session {
    sink: futures::stream::SplitSink<WebSocketStream, Message>,
    send_timeout: Duration,
    pool: PgPool,
    filter: Filter,
    /// Events at or before this position were delivered (or filtered out).
    position: Option<Position>,
    /// Id of the last event the client was sent.
    last_sent: Option<i64>,
    /// Replaying from the log (on a resume point, or after lagging behind the broadcast).
    replaying: bool,
    /// The tenant the key is limited to.
    tenant: Option<String>,
}

/// Runs a session until the client leaves, breaks the protocol, or `shutdown`.
pub async fn run(
    socket: WebSocketStream,
    state: EventsState,
    initial: Subscribe,
    principal: Option<Principal>,
) {
    let EventsState {
        hub,
        pool,
        keys,
        shutdown,
        send_timeout,
        ping_interval,
    } = state;
    let (mut sink, mut stream) = socket.split();
    let principal = match principal {
        Some(p) => p,
        None => match first_message_auth(&mut stream, &keys).await {
            Ok(p) => p,
            Err(message) => {
                let error = json!({ "type": "error", "code": "unauthorized", "message": message });
                let goodbye = async {
                    sink.send(Message::text(error.to_string())).await?;
                    sink.send(Message::close_with(
                        CloseCode::from(close::UNAUTHORIZED),
                        "unauthorized",
                    ))
                    .await
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), goodbye).await;
                return;
            }
        },
    };
    // Subscribe before anything is read from the log (see EventHub::subscribe).
    let mut live = hub.subscribe().await;
    let mut session = Session {
        sink,
        send_timeout,
        pool,
        filter: Filter::default(),
        position: None,
        last_sent: None,
        replaying: false,
        tenant: principal.tenant_scope().map(str::to_owned),
    };
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval(ping_interval);
    ping.tick().await;

    let mut end = session.subscribe(initial).await.err();
    while end.is_none() {
        end = tokio::select! {
            biased;
            _ = shutdown.cancelled() => Some(End::Close(1001, "server shutting down".into(), None)),
            incoming = stream.next() => {
                last_heard = Instant::now();
                match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => Some(End::Gone),
                    Some(Ok(Message::Text(text))) if text.len() > MAX_CLIENT_MESSAGE => Some(End::Close(
                        1009,
                        "message too big".into(),
                        Some(json!({
                            "type": "error",
                            "code": "message_too_big",
                            "message": format!("messages are limited to {MAX_CLIENT_MESSAGE} bytes"),
                        })),
                    )),
                    Some(Ok(Message::Text(text))) => session.on_message(&text).await.err(),
                    Some(Ok(Message::Binary(_))) => Some(invalid("binary messages are not supported")),
                    Some(Ok(_)) => None, // ping (answered by the library), pong
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > ping_interval * 3 {
                    Some(End::Close(close::KEEPALIVE_TIMEOUT, "no pong".into(), None))
                } else {
                    session.send(Message::ping(Vec::new())).await.err()
                }
            }
            _ = std::future::ready(()), if session.replaying => session.replay_page().await.err(),
            received = live.recv(), if !session.replaying => match received {
                Ok(event) => session.on_live(&event).await.err(),
                Err(RecvError::Lagged(_)) => {
                    // Fell behind the broadcast: the log has everything, in order.
                    session.replaying = true;
                    None
                }
                Err(RecvError::Closed) => Some(End::Close(1011, "event stream ended".into(), None)),
            },
        };
    }
    if let Some(End::Close(code, reason, message)) = end {
        // The closing handshake: our close frame, then the client's, briefly awaited so that a
        // client still busy reading sees the close code rather than a reset connection.
        let goodbye = async {
            if let Some(message) = message {
                session
                    .sink
                    .send(Message::text(message.to_string()))
                    .await?;
            }
            session
                .sink
                .send(Message::close_with(CloseCode::from(code), reason))
                .await?;
            while let Some(Ok(frame)) = stream.next().await {
                if frame.is_close() {
                    break;
                }
            }
            Ok::<(), std::io::Error>(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), goodbye).await;
    }
}

fn invalid(message: &str) -> End {
    End::Close(
        close::INVALID_MESSAGE,
        "invalid message".into(),
        Some(json!({ "type": "error", "code": "invalid_message", "message": message })),
    )
}

/// Waits for the `auth` message of a connection that came without an `Authorization` header.
async fn first_message_auth(
    stream: &mut futures::stream::SplitStream<WebSocketStream>,
    keys: &KeyStore,
) -> Result<Principal, String> {
    let first = tokio::time::timeout(AUTH_TIMEOUT, async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Text(text))) => return Some(text),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            }
        }
    })
    .await
    .map_err(|_| {
        "send {\"type\": \"auth\", \"token\": \"<key>\"} first (or an Authorization header)"
            .to_owned()
    })?
    .ok_or_else(|| "connection closed before authenticating".to_owned())?;
    let token = match serde_json::from_str::<ClientMessage>(&first) {
        Ok(ClientMessage::Auth { token }) => token,
        _ => {
            return Err(
                "the first message must be {\"type\": \"auth\", \"token\": \"<key>\"}".to_owned(),
            );
        }
    };
    authenticate(keys, &token)
        .await
        .map_err(|_| "the API key is unknown or revoked".to_owned())
}

impl Session {
    async fn send(&mut self, message: Message) -> Result<(), End> {
        match tokio::time::timeout(self.send_timeout, self.sink.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Close(
                close::TOO_SLOW,
                "too slow: resume with after=<last event id>".into(),
                Some(json!({ "type": "resume", "last_event_id": self.last_sent })),
            )),
        }
    }

    async fn on_message(&mut self, text: &str) -> Result<(), End> {
        match serde_json::from_str::<ClientMessage>(text) {
            Ok(ClientMessage::Subscribe(sub)) => self.subscribe(sub).await,
            Ok(ClientMessage::Ping) => self.send(Message::text(r#"{"type":"pong"}"#)).await,
            Ok(ClientMessage::Auth { .. }) => Err(invalid("already authenticated")),
            Err(e) => Err(invalid(&e.to_string())),
        }
    }

    /// Applies a subscription: a new filter and, with `after`, a replay from that event.
    async fn subscribe(&mut self, sub: Subscribe) -> Result<(), End> {
        self.filter = sub.filter(self.tenant.clone()).map_err(|e| invalid(&e))?;
        let head = store::events::head(&self.pool).await.ok();
        if self.position.is_none() {
            // "From now on": everything after the newest final event. (Later events that are
            // still held back have greater positions and come through the hub.)
            self.position = head;
        }
        if let Some(after) = sub.after {
            // 0 is before the first event: replay the whole log.
            let known = if after == 0 {
                Some(Position::default())
            } else {
                store::events::position_of(&self.pool, after)
                    .await
                    .ok()
                    .flatten()
            };
            let Some(position) = known else {
                return Err(End::Close(
                    close::UNKNOWN_RESUME_POINT,
                    "unknown resume point".into(),
                    Some(json!({
                        "type": "error",
                        "code": "unknown_resume_point",
                        "message": format!("event {after} is not in the event log"),
                    })),
                ));
            };
            self.position = Some(position);
            self.replaying = true;
        }
        let ack = json!({
            "type": "subscribed",
            "job_ids": sub.job_ids,
            "kinds": sub.kinds,
            "after": sub.after,
            "last_event_id": head.map(|h| h.id).filter(|&id| id > 0),
        });
        self.send(Message::text(ack.to_string())).await
    }

    /// Sends the next page of the log; when the log has nothing newer, returns to live events.
    async fn replay_page(&mut self) -> Result<(), End> {
        let after = match self.position {
            Some(p) => p,
            None => match store::events::head(&self.pool).await {
                Ok(h) => h,
                Err(_) => return Err(End::Close(1011, "event log unavailable".into(), None)),
            },
        };
        let page = store::events::page_after(&self.pool, after, REPLAY_PAGE)
            .await
            .map_err(|_| End::Close(1011, "event log unavailable".into(), None))?;
        let done = (page.len() as i64) < REPLAY_PAGE;
        for row in page {
            self.position = Some(row.position());
            let Some(kind) = JobKind::parse(&row.kind) else {
                continue;
            };
            if !self.filter.matches(&row.job_id, kind, &row.owner) {
                continue;
            }
            let id = row.id;
            if let Some(text) = frame(row) {
                self.send(Message::text(text)).await?;
                self.last_sent = Some(id);
            }
        }
        if done {
            self.replaying = false;
            let message =
                json!({ "type": "caught_up", "last_event_id": self.position.map(|p| p.id) });
            self.send(Message::text(message.to_string())).await?;
        }
        Ok(())
    }

    async fn on_live(&mut self, event: &Arc<Published>) -> Result<(), End> {
        if self.position.is_some_and(|p| event.position <= p) {
            return Ok(()); // already replayed from the log
        }
        self.position = Some(event.position);
        if self.filter.matches(&event.job_id, event.kind, &event.owner) {
            self.send(Message::text(event.frame.clone())).await?;
            self.last_sent = Some(event.id);
        }
        Ok(())
    }
}
