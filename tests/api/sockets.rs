//! A WebSocket client for tests: connect as a user, send JSON frames, read JSON frames.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::TestApp;

/// How long a test waits for a frame it expects.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Socket {
    inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// `config` frames (the therapist socket's ping interval) are set aside here rather than
    /// returned, since they may come at any time; tests about them read this.
    pub configs: Vec<Value>,
}

pub fn ws_url(port: u16, path: &str, token: &str) -> String {
    format!("ws://127.0.0.1:{port}{path}?token={token}")
}

/// Connects; panics with the HTTP status if the server refuses the upgrade.
pub async fn connect(app: &TestApp, path: &str, token: &str) -> Socket {
    connect_url(&ws_url(app.port, path, token)).await
}

pub async fn connect_url(url: &str) -> Socket {
    let (inner, _) = tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("websocket upgrade refused: {e}"));
    Socket {
        inner,
        configs: Vec::new(),
    }
}

/// Connects with `Authorization: Bearer` (as apps do).
pub async fn connect_with_header(app: &TestApp, path: &str, token: &str) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = format!("ws://127.0.0.1:{}{path}", app.port)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (inner, _) = tokio_tungstenite::connect_async(request)
        .await
        .unwrap_or_else(|e| panic!("websocket upgrade refused: {e}"));
    Socket {
        inner,
        configs: Vec::new(),
    }
}

/// The HTTP status with which the server refused an upgrade of `url`.
pub async fn refused_url_status(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("unexpected error: {other}"),
    }
}

/// The HTTP status with which the server refused an upgrade.
pub async fn refused_status(app: &TestApp, path: &str, token: &str) -> u16 {
    match tokio_tungstenite::connect_async(ws_url(app.port, path, token)).await {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("unexpected error: {other}"),
    }
}

impl Socket {
    pub async fn send_json(&mut self, frame: &Value) {
        self.send_text(frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.inner
            .send(Message::text(text))
            .await
            .expect("frame is sent");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.inner
            .send(Message::binary(bytes))
            .await
            .expect("frame is sent");
    }

    /// The next JSON frame, skipping protocol pings; `None` when the server closed the socket.
    pub async fn next_json_or_close(&mut self) -> Option<Value> {
        self.next_json_within(FRAME_TIMEOUT).await
    }

    /// Like [`Socket::next_json_or_close`], waiting up to `patience` (for sockets that may
    /// rightly hear nothing for a while, such as a therapist waiting for offers).
    pub async fn next_json_within(&mut self, patience: Duration) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(patience, self.inner.next())
                .await
                .expect("a frame arrives in time")?;
            match message {
                Ok(Message::Text(text)) => {
                    let frame: Value = serde_json::from_str(&text).expect("frames are JSON");
                    if frame["type"] == "config" {
                        self.configs.push(frame);
                        continue;
                    }
                    return Some(frame);
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// The next frame, or the close code and reason if the server closes first.
    pub async fn next_json_or_close_code(&mut self) -> Result<Value, (u16, String)> {
        loop {
            let message = tokio::time::timeout(FRAME_TIMEOUT, self.inner.next())
                .await
                .expect("a frame arrives in time");
            match message {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).expect("frames are JSON");
                    if frame["type"] != "config" {
                        return Ok(frame);
                    }
                    self.configs.push(frame);
                }
                Some(Ok(Message::Close(Some(frame)))) => {
                    return Err((u16::from(frame.code), frame.reason.to_string()))
                }
                Some(Ok(Message::Close(None))) | None => return Err((1005, String::new())),
                Some(Err(error)) => panic!("socket failed instead of closing: {error}"),
                Some(Ok(_)) => {}
            }
        }
    }

    pub async fn next_json(&mut self) -> Value {
        self.next_json_or_close()
            .await
            .expect("the socket is still open")
    }

    /// Reads until the server closes the socket; answers the close code and reason (frames
    /// before it are skipped).
    pub async fn next_close(&mut self) -> (u16, String) {
        loop {
            let message = tokio::time::timeout(FRAME_TIMEOUT, self.inner.next())
                .await
                .expect("the server closes the socket in time");
            match message {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string())
                }
                Some(Ok(Message::Close(None))) | None => return (1005, String::new()),
                Some(Err(error)) => panic!("socket failed instead of closing: {error}"),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next `config` frame (one already set aside first); other frames on the way are
    /// dropped.
    pub async fn next_config(&mut self) -> Value {
        loop {
            if !self.configs.is_empty() {
                return self.configs.remove(0);
            }
            let message = tokio::time::timeout(FRAME_TIMEOUT, self.inner.next())
                .await
                .expect("a config frame arrives in time")
                .expect("the socket is still open")
                .expect("the socket is still open");
            if let Message::Text(text) = message {
                let frame: Value = serde_json::from_str(&text).expect("frames are JSON");
                if frame["type"] == "config" {
                    return frame;
                }
            }
        }
    }

    /// Sends a protocol-level ping.
    pub async fn send_ping(&mut self) {
        self.inner
            .send(Message::Ping(Vec::new().into()))
            .await
            .expect("ping is sent");
    }

    /// Sends a frame without waiting for it to be flushed ahead of the next (for floods).
    pub async fn feed_binary(&mut self, bytes: Vec<u8>) -> bool {
        self.inner.feed(Message::binary(bytes)).await.is_ok()
    }

    pub async fn flush(&mut self) {
        let _ = self.inner.flush().await;
    }

    pub async fn close(mut self) {
        let _ = self.inner.close(None).await;
    }
}
