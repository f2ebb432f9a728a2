//! The dashboard socket: one task per connection that sets its viewport from `subscribe` frames,
//! answers the snapshot, and flushes the coalesced feed (see [`crate::fanout::dashboard`]).

use std::time::{Duration, Instant};

use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::frames::{check_size, open_envelope, read_body, ServerFrame};
use super::guard::{protocol_close, Admission, FrameLimiter, SocketGuard};
use super::{CLIENT_TIMEOUT, HEARTBEAT_INTERVAL};
use crate::fanout::dashboard::{
    bookings_in, providers_in, shown_state, state_name, Bbox, Client, Update,
};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeFrame {
    #[serde(rename = "type")]
    _type: String,
    bbox: [f64; 4],
}

#[derive(serde::Serialize)]
struct MovedFrame {
    #[serde(rename = "type")]
    kind: &'static str,
    provider_id: Uuid,
    lat: f64,
    lng: f64,
    heading: Option<f64>,
    status: &'static str,
    at: chrono::DateTime<Utc>,
}

/// Runs one dashboard socket.
pub async fn run(
    state: AppState,
    mut guard: SocketGuard,
    mut session: Session,
    mut stream: AggregatedMessageStream,
) {
    let (id, client) = state.dashboards.register();
    let mut subscribes = FrameLimiter::new(
        state.settings.dashboard_subscribes_per_s,
        state.settings.dashboard_subscribe_burst,
    );
    let _open = state.sockets.open("dashboard");
    let min_interval =
        Duration::from_secs_f64(1.0 / state.settings.dashboard_flushes_per_s.max(0.1));
    let mut shutdown = state.shutdown.clone();
    let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
    let mut last_heard = Instant::now();
    let mut last_flush = Instant::now() - min_interval;
    let close_reason = loop {
        tokio::select! {
            biased;
            _ = crate::shutdown::stopped(&mut shutdown) => {
                break Some(CloseReason::from((CloseCode::Restart, "server restarting; reconnect")));
            }
            ending = guard.ended() => break Some(ending.close_reason()),
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > CLIENT_TIMEOUT {
                    break Some(CloseReason::from((CloseCode::Policy, "heartbeat timeout")));
                }
                if super::send_ping(&mut session).await.is_err() { break None; }
            }
            message = stream.recv() => {
                last_heard = Instant::now();
                if let Some(Ok(message)) = &message {
                    match guard.admit(message) {
                        Admission::Admit => {}
                        Admission::Refuse(error) => {
                            if let Some(error) = error {
                                if super::send_text(&mut session, error.to_text()).await.is_err() { break None; }
                            }
                            continue;
                        }
                        Admission::Close(reason) => break Some(reason),
                    }
                }
                let reply = match message {
                    None | Some(Ok(AggregatedMessage::Close(_))) => break None,
                    Some(Err(error)) => break Some(protocol_close(&error)),
                    Some(Ok(AggregatedMessage::Ping(bytes))) => {
                        if super::send_pong(&mut session, &bytes).await.is_err() { break None; }
                        continue;
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => continue,
                    Some(Ok(AggregatedMessage::Binary(_))) => ServerFrame::error("unsupported_frame", "send JSON text frames", None).to_text(),
                    // A valid subscribe reads the database: it takes a token of its own bucket
                    // too, stricter than the frame bucket.
                    Some(Ok(AggregatedMessage::Text(text))) => match read_subscribe(&text) {
                        Err(error) => error.to_text(),
                        Ok(bbox) => match subscribes.admit("subscribe frames") {
                            Admission::Admit => match subscribe(&state, &client, bbox).await {
                                Ok(snapshot) => snapshot,
                                Err(error) => error.to_text(),
                            },
                            Admission::Refuse(Some(error)) => error.to_text(),
                            Admission::Refuse(None) => continue,
                            Admission::Close(reason) => break Some(reason),
                        },
                    },
                };
                if super::send_text(&mut session, reply).await.is_err() { break None; }
            }
            // Last: a dashboard with updates always pending must still hear its client (pongs,
            // new viewports) and keep its heartbeat, or it would be closed as unresponsive.
            _ = client.notified() => {
                // Coalesce: wait out the rest of the interval, then send the latest of everything.
                let wait = min_interval.saturating_sub(last_flush.elapsed());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                last_flush = Instant::now();
                if flush(&state, &client, &mut session).await.is_err() { break None; }
            }
        }
    };
    state.dashboards.unregister(id);
    if let Some(reason) = close_reason {
        super::close(session, Some(reason)).await;
    }
}

/// Reads a dashboard's frame: `subscribe` with a valid box is all it may send.
pub fn read_subscribe(text: &str) -> Result<Bbox, ServerFrame> {
    check_size(text)?;
    let envelope = open_envelope(text)?;
    if envelope.kind != "subscribe" {
        return Err(ServerFrame::error(
            "unknown_type",
            format!("unknown frame type {:?}; expected subscribe", envelope.kind),
            None,
        ));
    }
    let frame: SubscribeFrame = read_body(&envelope)?;
    let [west, south, east, north] = frame.bbox;
    Bbox::new(west, south, east, north).map_err(|why| ServerFrame::error("invalid_bbox", why, None))
}

/// Handles a `subscribe` frame: sets the viewport and answers the snapshot inside it.
async fn subscribe(state: &AppState, client: &Client, bbox: Bbox) -> Result<String, ServerFrame> {
    let bookings = bookings_in(&state.db, bbox).await.map_err(|_| {
        ServerFrame::error(
            "unavailable",
            "the database is unavailable, try again shortly",
            None,
        )
    })?;
    let providers = providers_in(&state.index, bbox, Utc::now());
    client.set_view(bbox, providers.iter().map(|(id, _)| *id).collect());
    let providers: Vec<Value> = providers.into_iter().map(|(_, v)| v).collect();
    Ok(json!({"type": "snapshot", "providers": providers, "bookings": bookings}).to_string())
}

async fn flush(
    state: &AppState,
    client: &Client,
    session: &mut Session,
) -> Result<(), super::Gone> {
    let (updates, bookings) = client.take_pending();
    let now = Utc::now();
    let ttl = state.index.presence_ttl();
    for (_, update) in updates {
        let frame = match update {
            // The busiest frame by far: serialised straight from a struct, not through a Value.
            Update::Moved {
                uuid,
                fix,
                state,
                received_at,
            } => {
                let moved = MovedFrame {
                    kind: "provider.moved",
                    provider_id: uuid,
                    lat: fix.point.lat,
                    lng: fix.point.lng,
                    heading: fix.heading,
                    status: state_name(shown_state(state, received_at, now, ttl)),
                    at: fix.at,
                };
                serde_json::to_string(&moved).expect("plain struct serialises")
            }
            Update::Status { uuid, state } => {
                json!({"type": "provider.status", "provider_id": uuid, "status": state_name(state)})
                    .to_string()
            }
            Update::Left { uuid } => {
                json!({"type": "provider.left", "provider_id": uuid}).to_string()
            }
        };
        super::send_text(session, frame).await?;
    }
    for frame in bookings {
        super::send_text(session, frame.to_string()).await?;
    }
    Ok(())
}
