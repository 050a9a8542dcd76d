use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use mailin_embedded::response::{INTERNAL_ERROR, OK};
use mailin_embedded::{Handler, Response, Server};

/// A real SMTP server on loopback (mailin), recording every message it accepts.
/// It runs on its own threads until the test process ends.
pub struct SmtpServer {
    pub port: u16,
    messages: Arc<Mutex<Vec<String>>>,
}

#[derive(Clone)]
struct Recorder {
    messages: Arc<Mutex<Vec<String>>>,
    current: Vec<u8>,
    reject_recipients: bool,
}

impl Handler for Recorder {
    fn rcpt(&mut self, _to: &str) -> Response {
        if self.reject_recipients {
            mailin_embedded::response::NO_MAILBOX
        } else {
            OK
        }
    }

    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        _to: &[String],
    ) -> Response {
        self.current.clear();
        OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        match self.messages.lock() {
            Ok(mut m) => {
                m.push(String::from_utf8_lossy(&self.current).into_owned());
                OK
            }
            Err(_) => INTERNAL_ERROR,
        }
    }
}

impl SmtpServer {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A server that rejects every recipient with a permanent 5xx.
    pub fn rejecting() -> Self {
        Self::start_with(true)
    }

    /// A server on a given port (e.g. one that was refusing connections until now).
    pub fn start_on(port: u16) -> Self {
        Self::listen(
            TcpListener::bind(("127.0.0.1", port)).expect("bind SMTP port"),
            false,
        )
    }

    fn start_with(reject_recipients: bool) -> Self {
        Self::listen(
            TcpListener::bind("127.0.0.1:0").expect("bind SMTP port"),
            reject_recipients,
        )
    }

    fn listen(listener: TcpListener, reject_recipients: bool) -> Self {
        let port = listener.local_addr().expect("local addr").port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder {
            messages: messages.clone(),
            current: Vec::new(),
            reject_recipients,
        };
        let mut server = Server::new(recorder);
        server.with_name("test-smtp").with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        Self { port, messages }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().expect("messages lock").clone()
    }
}

/// A loopback port that refuses connections, reserved for as long as the value lives: the
/// socket is bound but never listens, so no other test can take the port meanwhile.
pub struct ClosedPort {
    socket: socket2::Socket,
    port: u16,
}

impl ClosedPort {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// An SMTP URL nobody answers on (connections are refused).
    pub fn smtp_url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Frees the port (e.g. to start a server on it).
    pub fn release(self) -> u16 {
        drop(self.socket);
        self.port
    }
}

pub fn closed_port() -> ClosedPort {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
    socket.bind(&addr.into()).expect("bind");
    let port = socket
        .local_addr()
        .expect("local addr")
        .as_socket()
        .expect("inet address")
        .port();
    ClosedPort { socket, port }
}
