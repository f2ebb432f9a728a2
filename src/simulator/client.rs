//! The simulated apps' side of the public API: one HTTP client, WebSocket connections.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where the server is, and a shared HTTP client (keep-alive pool) to reach it.
#[derive(Clone, Debug)]
pub struct Server {
    pub base_url: String,
    pub http: reqwest::Client,
}

impl Server {
    pub fn new(base_url: &str) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("a plain HTTP client builds");
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Opens `/v1/ws/{who}` with the token in the `Authorization` header, as apps do.
    pub async fn socket(&self, who: &str, token: &str) -> Result<Socket, ConnectError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let ws_base = self
            .base_url
            .replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1);
        let mut request = format!("{ws_base}/v1/ws/{who}")
            .into_client_request()
            .map_err(|e| ConnectError::Failed(e.to_string()))?;
        let bearer = format!("Bearer {token}").parse().map_err(|_| {
            ConnectError::Failed("the token is not a valid header value".to_owned())
        })?;
        request.headers_mut().insert("authorization", bearer);
        tokio_tungstenite::connect_async_with_config(request, Some(socket_config()), false)
            .await
            .map(|(socket, _)| socket)
            .map_err(|e| match &e {
                tokio_tungstenite::tungstenite::Error::Http(response)
                    if response.status().as_u16() == 503 =>
                {
                    ConnectError::Shed
                }
                _ => ConnectError::Failed(e.to_string()),
            })
    }

    /// One unlabelled gauge or counter from the server's `/metrics` (Prometheus text).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    }

    /// Waits until `/health/ready` answers 200, or gives up after `patience`.
    pub async fn wait_ready(&self, patience: std::time::Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match self.http.get(self.url("/health/ready")).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                _ if tokio::time::Instant::now() > deadline => {
                    anyhow::bail!("{} did not become ready within {patience:?}", self.base_url)
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
            }
        }
    }
}

/// Sends one JSON frame.
pub async fn send_json(socket: &mut Socket, frame: &Value) -> Result<(), String> {
    socket
        .send(Message::text(frame.to_string()))
        .await
        .map_err(|e| e.to_string())
}

/// What arrived on a socket: a frame (parsed, or the raw text), or the end.
pub enum Incoming<T> {
    Frame(T),
    Closed,
    Ignored,
}

/// The next text frame parsed as JSON.
pub async fn next_frame(socket: &mut Socket) -> Incoming<Value> {
    match next_text(socket).await {
        Incoming::Frame(text) => match serde_json::from_str(text.as_str()) {
            Ok(value) => Incoming::Frame(value),
            Err(_) => Incoming::Ignored,
        },
        Incoming::Closed => Incoming::Closed,
        Incoming::Ignored => Incoming::Ignored,
    }
}

/// The next text frame unparsed, for readers that parse only the fields they need.
pub async fn next_text(socket: &mut Socket) -> Incoming<Utf8Bytes> {
    match socket.next().await {
        Some(Ok(Message::Text(text))) => Incoming::Frame(text),
        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => Incoming::Closed,
        Some(Ok(_)) => Incoming::Ignored,
    }
}

/// The frame's `"type"`, or "".
pub fn kind(frame: &Value) -> &str {
    frame.get("type").and_then(Value::as_str).unwrap_or("")
}

pub fn booking_id(frame: &Value) -> Option<uuid::Uuid> {
    frame
        .get("booking_id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

/// Reconnection delays as real apps should use them: doubling from one second up to half a
/// minute, each with jitter, so a server that restarts or sheds load is not hit by every
/// client again at the same instant.
pub struct Backoff {
    next: std::time::Duration,
}

impl Backoff {
    const FIRST: std::time::Duration = std::time::Duration::from_secs(1);
    const MAX: std::time::Duration = std::time::Duration::from_secs(30);

    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The next delay: between half and all of the current step; the step then doubles.
    pub fn next_delay(&mut self) -> std::time::Duration {
        use rand::Rng;
        let delay = self.next.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }

    /// After a connection that worked.
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// A simulated app's socket settings. tungstenite zero-fills its whole read buffer before
/// every read (128 KiB by default): at 10,000 sockets that memset was half of the load tool's
/// CPU, taken from the server it measures. The frames here are small, so 4 KiB is plenty (a
/// longer frame still arrives whole, over several reads).
fn socket_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4 * 1024)
}

/// Why a socket did not open.
#[derive(Debug)]
pub enum ConnectError {
    /// The server shed the handshake (503: too many being set up at once, as when a whole
    /// fleet connects together); the app retries after a backoff, as a real one does.
    Shed,
    Failed(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shed => f.write_str("the server shed the handshake (503); retry later"),
            Self::Failed(why) => f.write_str(why),
        }
    }
}

/// Counts a socket that did not open: a shed handshake (retried) is no error.
pub fn count_connect_failure(stats: &super::stats::Stats, error: &ConnectError) {
    match error {
        ConnectError::Shed => stats.count("ws_connect_shed"),
        ConnectError::Failed(_) => stats.error("ws_connect"),
    }
}
