//! The therapist socket: one task per connection, owning its state, with one `select!` loop over
//! client frames, acks of stored pings, the heartbeat and shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use tokio::sync::mpsc;

use super::frames::{
    open_envelope, read_body, AvailabilityFrame, BookingFrame, Envelope, LocationFrame, ServerFrame,
};
use super::guard::{protocol_close, Admission, SocketGuard};
use super::hub::MAILBOX_CAPACITY;
use super::{ACK_DRAIN_TIMEOUT, CLIENT_TIMEOUT, HEARTBEAT_INTERVAL, MAX_FRAME_BYTES};
use crate::ingest::validate::RawPing;
use crate::ingest::writer::StoredAck;
use crate::ingest::PingOutcome;
use crate::state::AppState;
use crate::{dispatch, providers};

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// Who is on the other end.
#[derive(Debug, Clone, Copy)]
pub struct TherapistIdentity {
    pub user_id: i64,
    pub provider_id: i64,
}

/// A ping queued for storage whose ack has not come back yet.
struct PendingPing {
    /// Times the app resent it while it was queued; each gets its own ack.
    resent: u32,
    /// Sent without `recorded_at`: remembered per connection once stored.
    connection_scoped: bool,
}

struct TherapistSession {
    state: AppState,
    who: TherapistIdentity,
    connection: u64,
    session: Session,
    pending: HashMap<i64, PendingPing>,
    acks: mpsc::UnboundedSender<StoredAck>,
}

/// Runs one therapist socket until the client leaves, times out, or the server shuts down.
pub async fn run(
    state: AppState,
    who: TherapistIdentity,
    mut guard: SocketGuard,
    session: Session,
    mut stream: AggregatedMessageStream,
) {
    let (acks, mut ack_rx) = mpsc::unbounded_channel();
    let (mailbox, mut inbox) = mpsc::channel(MAILBOX_CAPACITY);
    let mut shutdown = state.shutdown.clone();
    let mut me = TherapistSession {
        state,
        who,
        connection: NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
        session,
        pending: HashMap::new(),
        acks,
    };
    let _open = me.state.sockets.open("therapist");
    me.state
        .bus
        .hub()
        .register(who.user_id, me.connection, mailbox)
        .await;
    let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
    let mut last_heard = Instant::now();
    let mut draining_since: Option<Instant> = None;
    let close_reason = loop {
        if draining_since.is_some() && me.pending.is_empty() {
            break Some(CloseReason::from((
                CloseCode::Restart,
                "server restarting; reconnect",
            )));
        }
        tokio::select! {
            biased;
            Some(ack) = ack_rx.recv() => {
                if me.deliver_ack(ack).await.is_err() { break None; }
            }
            Some(frame) = inbox.recv() => {
                if me.session.text(frame.to_string()).await.is_err() { break None; }
            }
            // Credentials ended (or a newer socket replaced this one): offers must stop now.
            ending = guard.ended() => break Some(ending.close_reason()),
            changed = shutdown.changed(), if draining_since.is_none() => {
                // Stop taking frames; wait (bounded) for the acks of pings already queued.
                let _ = changed;
                draining_since = Some(Instant::now());
            }
            _ = heartbeat.tick() => {
                if draining_since.is_some_and(|since| since.elapsed() > ACK_DRAIN_TIMEOUT) {
                    break Some(CloseReason::from((CloseCode::Restart, "server restarting; reconnect")));
                }
                if last_heard.elapsed() > CLIENT_TIMEOUT {
                    break Some(CloseReason::from((CloseCode::Policy, "heartbeat timeout")));
                }
                if me.session.ping(b"").await.is_err() { break None; }
            }
            message = stream.recv(), if draining_since.is_none() => {
                last_heard = Instant::now();
                if let Some(Ok(message)) = &message {
                    match guard.admit(message) {
                        Admission::Admit => {}
                        Admission::Refuse(error) => {
                            if me.send(&error).await.is_err() { break None; }
                            continue;
                        }
                        Admission::Close(reason) => break Some(reason),
                    }
                }
                match message {
                    None => break None,
                    Some(Err(error)) => {
                        tracing::debug!(%error, "therapist socket protocol error");
                        break Some(protocol_close(&error));
                    }
                    Some(Ok(AggregatedMessage::Text(text))) => {
                        if let Err(Flow::Closed) = me.on_text(&text).await {
                            break None;
                        }
                    }
                    Some(Ok(AggregatedMessage::Binary(_))) => {
                        if me.send(&ServerFrame::error("unsupported_frame", "send JSON text frames", None)).await.is_err() { break None; }
                    }
                    Some(Ok(AggregatedMessage::Ping(bytes))) => {
                        if me.session.pong(&bytes).await.is_err() { break None; }
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => {}
                    Some(Ok(AggregatedMessage::Close(_))) => break None,
                }
            }
        }
    };
    me.state
        .bus
        .hub()
        .unregister(who.user_id, me.connection)
        .await;
    me.state.dispatcher.therapist_disconnected(who.provider_id);
    if let Some(reason) = close_reason {
        let _ = me.session.close(Some(reason)).await;
    }
}

enum Flow {
    /// The client is gone.
    Closed,
}

impl TherapistSession {
    async fn send(&mut self, frame: &ServerFrame) -> Result<(), Flow> {
        self.session
            .text(frame.to_text())
            .await
            .map_err(|_| Flow::Closed)
    }

    async fn deliver_ack(&mut self, ack: StoredAck) -> Result<(), Flow> {
        let Some(pending) = self.pending.remove(&ack.seq) else {
            return Ok(());
        };
        if pending.connection_scoped {
            self.state.ingest.remember_connection_ping(
                self.who.provider_id,
                self.connection,
                ack.seq,
                true,
            );
        }
        for _ in 0..=pending.resent {
            self.send(&ServerFrame::Ack {
                seq: ack.seq,
                stored: true,
            })
            .await?;
        }
        Ok(())
    }

    async fn on_text(&mut self, text: &str) -> Result<(), Flow> {
        if text.len() > MAX_FRAME_BYTES {
            let detail = format!("frames are at most {MAX_FRAME_BYTES} bytes");
            return self
                .send(&ServerFrame::error("frame_too_large", detail, None))
                .await;
        }
        let envelope = match open_envelope(text) {
            Ok(envelope) => envelope,
            Err(error) => return self.send(&error).await,
        };
        match envelope.kind.as_str() {
            "location" => self.on_location(&envelope).await,
            "availability" => self.on_availability(&envelope).await,
            "offer.accept" | "offer.decline" | "status" => self.on_booking_frame(&envelope).await,
            other => {
                let detail = format!(
                    "unknown frame type {other:?}; expected location, availability, offer.accept, offer.decline or status"
                );
                self.send(&ServerFrame::error("unknown_type", detail, envelope.seq))
                    .await
            }
        }
    }

    async fn on_location(&mut self, envelope: &Envelope) -> Result<(), Flow> {
        let frame: LocationFrame = match read_body(envelope) {
            Ok(frame) => frame,
            Err(error) => return self.send(&error).await,
        };
        if let Some(pending) = self.pending.get_mut(&frame.seq) {
            // Resent while still queued: it will be acknowledged again once stored.
            pending.resent += 1;
            return Ok(());
        }
        let raw = RawPing {
            seq: frame.seq,
            lat: frame.lat,
            lng: frame.lng,
            accuracy_m: frame.accuracy_m,
            heading: frame.heading,
            speed_kmh: frame.speed_kmh,
            battery: frame.battery,
            recorded_at: frame.recorded_at,
        };
        let outcome = self
            .state
            .ingest
            .accept(self.who.provider_id, self.connection, raw, &self.acks)
            .await;
        match outcome {
            PingOutcome::Queued => {
                self.pending.insert(
                    frame.seq,
                    PendingPing {
                        resent: 0,
                        connection_scoped: frame.recorded_at.is_none(),
                    },
                );
                Ok(())
            }
            PingOutcome::Ack { stored } => {
                self.send(&ServerFrame::Ack {
                    seq: frame.seq,
                    stored,
                })
                .await
            }
            PingOutcome::Rejected(rejection) => {
                let detail = rejection.detail(&self.state.ingest.limits);
                self.send(&ServerFrame::error(
                    rejection.code(),
                    detail,
                    Some(frame.seq),
                ))
                .await
            }
        }
    }

    /// `offer.accept`, `offer.decline` and `status`: the same operations as the HTTP calls.
    /// Success shows up as the `booking.status` push; failure as an error frame.
    async fn on_booking_frame(&mut self, envelope: &Envelope) -> Result<(), Flow> {
        let frame: BookingFrame = match read_body(envelope) {
            Ok(frame) => frame,
            Err(error) => return self.send(&error).await,
        };
        let caller = dispatch::Caller {
            user_id: self.who.user_id,
            provider_id: Some(self.who.provider_id),
            is_admin: false,
        };
        let dispatcher = &self.state.dispatcher;
        let result = match (envelope.kind.as_str(), frame.status) {
            ("offer.accept", _) => dispatcher
                .accept(frame.booking_id, caller)
                .await
                .map(|_| ()),
            ("offer.decline", _) => dispatcher.decline(frame.booking_id, caller).await,
            (_, Some(status)) => dispatcher
                .change_status(frame.booking_id, caller, status)
                .await
                .map(|_| ()),
            (_, None) => Err(crate::error::ApiError::invalid("status", "is required")),
        };
        match result {
            Ok(()) => Ok(()),
            Err(error) => {
                let problem = error.problem();
                let code = problem.kind.trim_start_matches("/problems/").to_owned();
                self.send(&ServerFrame::error(&code, problem.detail, None))
                    .await
            }
        }
    }

    async fn on_availability(&mut self, envelope: &Envelope) -> Result<(), Flow> {
        let frame: AvailabilityFrame = match read_body(envelope) {
            Ok(frame) => frame,
            Err(error) => return self.send(&error).await,
        };
        let result = async {
            let provider = providers::own_therapist(&self.state.db, self.who.user_id).await?;
            providers::set_online(&self.state, &provider, frame.online).await
        }
        .await;
        match result {
            Ok(availability) => {
                self.send(&ServerFrame::Availability {
                    online: availability.online,
                    verification_status: availability.verification_status,
                })
                .await
            }
            Err(error) => {
                let problem = error.problem();
                let code = problem.kind.trim_start_matches("/problems/").to_owned();
                self.send(&ServerFrame::error(&code, problem.detail, None))
                    .await
            }
        }
    }
}
