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
        loop {
            let message = tokio::time::timeout(FRAME_TIMEOUT, self.inner.next())
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

    pub async fn next_json(&mut self) -> Value {
        self.next_json_or_close()
            .await
            .expect("the socket is still open")
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

    pub async fn close(mut self) {
        let _ = self.inner.close(None).await;
    }
}
