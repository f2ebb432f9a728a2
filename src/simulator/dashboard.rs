//! A simulated dispatcher: a dashboard socket watching a viewport, timing each
//! `provider.moved` from the fix's `recorded_at` to its arrival.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::watch;

use super::client::{self, Incoming, Server};
use super::stats::{Metric, Stats};

pub async fn watch_viewport(
    server: Server,
    admin_token: String,
    bbox: [f64; 4],
    metric: Metric,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = client::Backoff::new();
    loop {
        match server.socket("dashboard", &admin_token).await {
            Ok(mut socket) => {
                backoff.reset();
                let subscribe = json!({"type": "subscribe", "bbox": bbox});
                if client::send_json(&mut socket, &subscribe).await.is_ok() {
                    loop {
                        tokio::select! {
                            incoming = client::next_text(&mut socket) => match incoming {
                                Incoming::Frame(text) => on_frame(&stats, metric, text.as_str()),
                                Incoming::Closed => break,
                                Incoming::Ignored => {}
                            },
                            _ = crate::shutdown::stopped(&mut stop) => {
                                let _ = futures_util::SinkExt::close(&mut socket).await;
                                return;
                            }
                        }
                    }
                }
                stats.error("dashboard_socket_closed");
            }
            Err(error) => super::client::count_connect_failure(&stats, &error),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = crate::shutdown::stopped(&mut stop) => return,
        }
    }
}

/// The fields a dashboard reader looks at; a whole-city dashboard reads thousands of frames a
/// second, so they are parsed borrowed, not into a `Value`.
#[derive(serde::Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    at: Option<&'a str>,
    code: Option<&'a str>,
}

fn on_frame(stats: &Stats, metric: Metric, text: &str) {
    let Ok(frame) = serde_json::from_str::<Frame>(text) else {
        return stats.error("dashboard_unreadable_frame");
    };
    match frame.kind {
        "provider.moved" => {
            if let Some(at) = frame.at.and_then(|s| s.parse::<DateTime<Utc>>().ok()) {
                let latency = (Utc::now() - at).to_std().unwrap_or_default();
                stats.record(metric, latency);
                stats.count("dashboard_moves");
            }
        }
        "snapshot" => stats.count("dashboard_snapshots"),
        "error" => stats.error(format!(
            "dashboard_frame_error:{}",
            frame.code.unwrap_or("unknown")
        )),
        _ => {}
    }
}
