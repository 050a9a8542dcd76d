//! Live job events. Every status change inserts an event row and (by trigger, while some hub
//! follows the log for subscribers: `jobq.event_followers`) NOTIFYs `jobq_events` in its
//! transaction. Each API process runs one [`EventHub`]: a LISTEN
//! connection that, when woken, reads the new *final* events from the log in delivery order
//! (see [`Position`]) and broadcasts them to the WebSocket sessions of the process. A session
//! replays from the log what it missed (a resume point, or lag), then follows the broadcast.

mod hub;
pub mod session;

pub use crate::store::events::Position;
pub use hub::{EventHub, Published};

use poem_openapi::types::ToJSON as _;

use crate::api::models::JobEvent;
use crate::store::EventRow;

/// The text frame that carries `row` to a subscriber: `{"type": "event", "event": {...}}`, the
/// event in the same shape as `GET /v1/jobs/{id}/events`.
pub fn frame(row: EventRow) -> Option<String> {
    let event = JobEvent::try_from(row).ok()?;
    let message = serde_json::json!({ "type": "event", "event": event.to_json() });
    Some(message.to_string())
}
