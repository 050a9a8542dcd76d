use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::Target;

/// A real WebSocket client (tokio-tungstenite) on `GET /v1/events`.
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a read ended when it did not return a message.
#[derive(Debug, PartialEq)]
pub enum Ended {
    Closed(Option<u16>),
    TimedOut,
}

impl WsClient {
    /// Connects to `target` with its key in the `Authorization` header and the query string
    /// `query` ("" for none).
    pub async fn connect(target: &impl Target, query: &str) -> Self {
        Self::try_connect(target.base(), Some(target.token()), query)
            .await
            .expect("WebSocket connect")
    }

    /// Connects to `base` with `token` as header (or none); the handshake's error as it is.
    pub async fn try_connect(
        base: &str,
        token: Option<&str>,
        query: &str,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let url = format!("{}/v1/events{query}", base.replacen("http", "ws", 1));
        let mut request = url.into_client_request()?;
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().expect("header value");
            request.headers_mut().insert("authorization", value);
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self { ws })
    }

    pub async fn send(&mut self, message: Value) {
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .expect("send");
    }

    /// The next JSON message, or how the stream ended.
    pub async fn next(&mut self, timeout: Duration) -> Result<Value, Ended> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return Err(Ended::TimedOut),
                Ok(None) | Ok(Some(Err(_))) => return Err(Ended::Closed(None)),
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Ok(serde_json::from_str(&text).expect("JSON message"));
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Err(Ended::Closed(frame.map(|f| u16::from(f.code))));
                }
                Ok(Some(Ok(_))) => continue, // ping/pong
            }
        }
    }

    /// The next message, which must be of `kind` (`subscribed`, `caught_up`, ...).
    pub async fn expect(&mut self, kind: &str) -> Value {
        let message = self.next(Duration::from_secs(10)).await.expect("a message");
        assert_eq!(message["type"], kind, "{message}");
        message
    }

    /// Collects `event` messages until `done` says the last one completes the set.
    pub async fn events_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = match self.next(left).await {
                Ok(m) => m,
                Err(e) => panic!("stream ended ({e:?}) after {} events", events.len()),
            };
            if message["type"] != "event" {
                continue;
            }
            let event = message["event"].clone();
            let finished = done(&event);
            events.push(event);
            if finished {
                return events;
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    pub fn close_code(code: u16) -> Ended {
        Ended::Closed(Some(u16::from(CloseCode::from(code))))
    }
}

impl WsClient {
    /// Like `connect`, over a socket with a 4 KiB receive buffer: a client that stops reading
    /// soon pushes back on the server.
    pub async fn connect_with_small_buffer(target: &impl Target, query: &str) -> Self {
        let addr = target.base().trim_start_matches("http://");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = socket
            .connect(addr.parse().expect("socket address"))
            .await
            .expect("connect");
        let mut request = format!("ws://{addr}/v1/events{query}")
            .into_client_request()
            .expect("request");
        let value = format!("Bearer {}", target.token())
            .parse()
            .expect("header value");
        request.headers_mut().insert("authorization", value);
        let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
            .await
            .expect("WebSocket handshake");
        Self { ws }
    }
}
