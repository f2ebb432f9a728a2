//! The customer socket: `booking.status` on every change of their bookings and
//! `provider.location` while their therapist is on the way, and the booking chat (`message`
//! frames both ways).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use tokio::sync::mpsc;

use super::frames::ServerFrame;
use super::guard::{protocol_close, Admission, SocketGuard};
use super::{CLIENT_TIMEOUT, HEARTBEAT_INTERVAL};
use crate::fanout::hub::MAILBOX_CAPACITY;
use crate::state::AppState;

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1 << 62);

/// Runs one customer socket until the client leaves, times out, or the server shuts down.
pub async fn run(
    state: AppState,
    user_id: i64,
    mut guard: SocketGuard,
    mut session: Session,
    mut stream: AggregatedMessageStream,
) {
    let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    let (mailbox, mut inbox) = mpsc::channel(MAILBOX_CAPACITY);
    let _open = state.sockets.open("customer");
    state.bus.hub().register(user_id, id, mailbox).await;
    let mut shutdown = state.shutdown.clone();
    let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
    let mut last_heard = Instant::now();
    let close_reason = loop {
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => {
                break Some(CloseReason::from((CloseCode::Restart, "server restarting; reconnect")));
            }
            ending = guard.ended() => break Some(ending.close_reason()),
            Some(frame) = inbox.recv() => {
                if super::send_text(&mut session, frame.to_string()).await.is_err() { break None; }
            }
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
                match message {
                    None | Some(Ok(AggregatedMessage::Close(_))) => break None,
                    Some(Err(error)) => break Some(protocol_close(&error)),
                    Some(Ok(AggregatedMessage::Ping(bytes))) => {
                        if super::send_pong(&mut session, &bytes).await.is_err() { break None; }
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => {}
                    Some(Ok(AggregatedMessage::Text(text))) => {
                        if let Some(error) = on_text(&state, user_id, &text).await {
                            if super::send_text(&mut session, error.to_text()).await.is_err() { break None; }
                        }
                    }
                    Some(Ok(AggregatedMessage::Binary(_))) => {
                        let error = ServerFrame::error("unsupported_frame", "send JSON text frames", None);
                        if super::send_text(&mut session, error.to_text()).await.is_err() { break None; }
                    }
                }
            }
        }
    };
    state.bus.hub().unregister(user_id, id).await;
    if let Some(reason) = close_reason {
        super::close(session, Some(reason)).await;
    }
}

/// A customer frame: chat (`message`, `message.read`); anything else is refused.
async fn on_text(state: &AppState, user_id: i64, text: &str) -> Option<ServerFrame> {
    if let Err(error) = super::frames::check_size(text) {
        return Some(error);
    }
    let envelope = match super::frames::open_envelope(text) {
        Ok(envelope) => envelope,
        Err(error) => return Some(error),
    };
    match envelope.kind.as_ref() {
        "message" | "message.read" => super::chat::on_frame(state, user_id, &envelope).await,
        other => Some(ServerFrame::error(
            "unknown_type",
            format!("unknown frame type {other:?}; this socket takes message and message.read"),
            envelope.seq,
        )),
    }
}
