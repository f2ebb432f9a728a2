//! The therapist socket: one task per connection, owning its state, with one `select!` loop over
//! client frames, acks of stored pings, the heartbeat and shutdown.
//!
//! It also tells the app how often to ping (`config` frames): the socket follows what its
//! therapist is doing from the frames it relays (offers, booking statuses) and from its own
//! pings (how far from the customer's door), and asks for fewer pings when the server is behind.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use futures_util::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::frames::{
    read_therapist_frame, AvailabilityFrame, BookingAction, BookingFrame, LocationFrame,
    ServerFrame, TherapistFrame,
};
use super::guard::{protocol_close, Admission, SocketGuard};
use super::{Gone, ACK_DRAIN_TIMEOUT, CLIENT_TIMEOUT, HEARTBEAT_INTERVAL};
use crate::fanout::hub::MAILBOX_CAPACITY;
use crate::geo::index::TherapistState;
use crate::geo::{great_circle_m, Point};
use crate::ingest::cadence::{Activity, ARRIVING_WITHIN_M};
use crate::ingest::validate::RawPing;
use crate::ingest::writer::StoredAck;
use crate::ingest::{PingOutcome, TherapistPings};
use crate::state::AppState;
use crate::{dispatch, providers};

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// Frames waiting on the database that one socket may have queued behind the running one.
const MAX_QUEUED_ERRANDS: usize = 16;

/// Booking frames (offer answers, status changes) wait on the database: they run one at a time
/// and in order, beside the socket's loop rather than in it: a status change queued for a
/// connection under load held up every ack and relayed frame of its socket for as long (acks
/// took seconds at 10,000 therapists). Each runs as a task of its own; the loop sends what it
/// answers, and those already read when the socket closes are still carried out
/// ([`Errands::finish_detached`]).
#[derive(Default)]
struct Errands {
    running: Option<JoinHandle<Option<ServerFrame>>>,
    queued: VecDeque<BoxFuture<'static, Option<ServerFrame>>>,
}

impl Errands {
    /// Queues an errand (started at once if none runs); refused when too many wait.
    fn push(&mut self, errand: BoxFuture<'static, Option<ServerFrame>>) -> Result<(), ()> {
        if self.running.is_none() {
            self.running = Some(tokio::spawn(errand));
            return Ok(());
        }
        if self.queued.len() >= MAX_QUEUED_ERRANDS {
            return Err(());
        }
        self.queued.push_back(errand);
        Ok(())
    }

    /// What the running errand answers when it ends (the next one starts); pending while none
    /// runs. Cancel-safe: an answer not yet taken stays in its task.
    async fn finished(&mut self) -> Option<ServerFrame> {
        let Some(running) = self.running.as_mut() else {
            return std::future::pending().await;
        };
        let answer = running.await.unwrap_or_else(|error| {
            tracing::error!(%error, "a therapist socket's errand failed");
            Some(ServerFrame::error(
                "internal",
                "the server could not finish this frame; try again",
                None,
            ))
        });
        self.running = self.queued.pop_front().map(tokio::spawn);
        answer
    }

    /// The socket is gone: booking frames it already read are still carried out, in order (a
    /// `completed` or an accept sent just before the app closed is not lost), then `then` runs;
    /// nobody hears their answers.
    fn finish_detached(self, then: impl FnOnce() + Send + 'static) {
        let Errands { running, queued } = self;
        if running.is_none() && queued.is_empty() {
            then();
            return;
        }
        tokio::spawn(async move {
            if let Some(running) = running {
                let _ = running.await;
            }
            for errand in queued {
                errand.await;
            }
            then();
        });
    }
}

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
}

/// What the therapist is doing, as the frames this socket relays tell it.
#[derive(Debug, Default)]
struct Duty {
    /// Offers open to them: booking → the customer's place.
    offers: HashMap<Uuid, Point>,
    /// The booking they are on, and where its customer is.
    trip: Option<(Uuid, Point)>,
    /// On the way (accepted or en route) and within [`ARRIVING_WITHIN_M`] at the last ping.
    arriving: bool,
}

impl Duty {
    fn activity(&self) -> Activity {
        if self.arriving {
            Activity::Arriving
        } else if self.trip.is_some() || !self.offers.is_empty() {
            Activity::Active
        } else {
            Activity::Idle
        }
    }
}

/// The fields of relayed frames that tell what the therapist is doing.
#[derive(Deserialize)]
struct Relayed<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    booking_id: Option<Uuid>,
    #[serde(borrow)]
    status: Option<std::borrow::Cow<'a, str>>,
    location: Option<RelayedPlace>,
}

#[derive(Deserialize)]
struct RelayedPlace {
    lat: f64,
    lng: f64,
}

struct TherapistSession {
    state: AppState,
    who: TherapistIdentity,
    connection: u64,
    session: Session,
    pending: HashMap<i64, PendingPing>,
    acks: mpsc::UnboundedSender<StoredAck>,
    pings: TherapistPings,
    duty: Duty,
    /// The ping interval last sent in a `config` frame.
    ping_interval_s: u32,
    errands: Errands,
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
        pings: state.ingest.join(who.provider_id),
        state,
        who,
        connection: NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
        session,
        pending: HashMap::new(),
        acks,
        duty: Duty::default(),
        ping_interval_s: 0,
        errands: Errands::default(),
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
        if me.send_config_if_changed().await.is_err() {
            break None;
        }
        if draining_since.is_some() && me.pending.is_empty() {
            break Some(CloseReason::from((
                CloseCode::Restart,
                "server restarting; reconnect",
            )));
        }
        tokio::select! {
            biased;
            Some(ack) = ack_rx.recv() => {
                // Every ack already there goes out before the socket yields: one write for all.
                if me.deliver_ack(ack).await.is_err() { break None; }
                let mut failed = false;
                while let Ok(ack) = ack_rx.try_recv() {
                    if me.deliver_ack(ack).await.is_err() { failed = true; break; }
                }
                if failed { break None; }
            }
            answer = me.errands.finished() => {
                if let Some(frame) = answer {
                    if me.send(&frame).await.is_err() { break None; }
                }
            }
            Some(frame) = inbox.recv() => {
                me.follow(&frame);
                if super::send_text(&mut me.session, frame.to_string()).await.is_err() { break None; }
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
                me.resync_duty();
                if super::send_ping(&mut me.session).await.is_err() { break None; }
            }
            message = stream.recv(), if draining_since.is_none() => {
                last_heard = Instant::now();
                if let Some(Ok(message)) = &message {
                    match guard.admit(message) {
                        Admission::Admit => {}
                        Admission::Refuse(error) => {
                            if let Some(error) = error {
                                if me.send(&error).await.is_err() { break None; }
                            }
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
                        if super::send_pong(&mut me.session, &bytes).await.is_err() { break None; }
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
    // Their open offer moves on once the frames they sent before leaving are carried out,
    // unless the app is connected again by then on another socket, of this node or another (a
    // reconnect whose old socket timed out late must not take the offer it is reading away).
    let dispatcher = me.state.dispatcher.clone();
    let pings = me.pings;
    let open_elsewhere = guard.another_open_in_cluster().await;
    std::mem::take(&mut me.errands).finish_detached(move || {
        if !open_elsewhere && !pings.another_socket_open() {
            dispatcher.therapist_disconnected(who.provider_id);
        }
        drop(pings);
    });
    if let Some(reason) = close_reason {
        super::close(me.session, Some(reason)).await;
    }
}

enum Flow {
    /// The client is gone.
    Closed,
}

impl From<Gone> for Flow {
    fn from(_: Gone) -> Self {
        Flow::Closed
    }
}

impl TherapistSession {
    async fn send(&mut self, frame: &ServerFrame) -> Result<(), Flow> {
        Ok(super::send_text(&mut self.session, frame.to_text()).await?)
    }

    /// Sends `{"type":"config","ping_interval_s":n}` when the interval the app should use
    /// changed (and at connect).
    async fn send_config_if_changed(&mut self) -> Result<(), Flow> {
        let overloaded = super::overloaded(&self.state);
        let interval = self
            .state
            .settings
            .cadence()
            .interval_s(self.duty.activity(), overloaded);
        if interval == self.ping_interval_s {
            return Ok(());
        }
        self.ping_interval_s = interval;
        self.send(&ServerFrame::Config {
            ping_interval_s: interval,
        })
        .await
    }

    /// Follows what the therapist is doing from a frame relayed to them.
    fn follow(&mut self, frame: &str) {
        let Ok(relayed) = serde_json::from_str::<Relayed>(frame) else {
            return;
        };
        let Some(booking) = relayed.booking_id else {
            return;
        };
        let duty = &mut self.duty;
        match (relayed.kind.as_ref(), relayed.status.as_deref()) {
            ("offer", _) => {
                if let Some(place) = relayed.location {
                    duty.offers
                        .insert(booking, Point::new(place.lat, place.lng));
                }
            }
            ("offer.withdrawn", _) => {
                duty.offers.remove(&booking);
            }
            ("booking.status", Some("accepted")) => {
                if let Some(place) = duty.offers.remove(&booking) {
                    duty.trip = Some((booking, place));
                }
            }
            ("booking.status", Some("en_route")) => {}
            ("booking.status", Some(_)) => {
                duty.offers.remove(&booking);
                if duty.trip.is_some_and(|(on, _)| on == booking) {
                    duty.trip = None;
                    duty.arriving = false;
                }
            }
            _ => {}
        }
    }

    /// What the index says wins over what the frames suggested: an offer that expired without
    /// a frame, a booking that ended elsewhere.
    fn resync_duty(&mut self) {
        match self.state.index.state(self.who.provider_id) {
            Some(TherapistState::Offered | TherapistState::Busy) => {}
            _ => {
                self.duty = Duty::default();
            }
        }
    }

    async fn deliver_ack(&mut self, ack: StoredAck) -> Result<(), Flow> {
        let Some(pending) = self.pending.remove(&ack.seq) else {
            return Ok(());
        };
        let stored = ack.refused.is_none();
        self.pings.settled(ack.key, stored);
        for _ in 0..=pending.resent {
            self.send(&ServerFrame::Ack {
                seq: ack.seq,
                stored,
                reason: ack.refused,
            })
            .await?;
        }
        Ok(())
    }

    async fn on_text(&mut self, text: &str) -> Result<(), Flow> {
        match read_therapist_frame(text) {
            Ok(TherapistFrame::Location(frame)) => self.on_location(frame).await,
            Ok(TherapistFrame::Availability(frame)) => self.on_availability(frame).await,
            Ok(TherapistFrame::Booking(action, frame)) => {
                self.on_booking_frame(action, frame).await
            }
            Ok(TherapistFrame::Chat(envelope)) => {
                match super::chat::on_frame(&self.state, self.who.user_id, &envelope).await {
                    Some(error) => self.send(&error).await,
                    None => Ok(()),
                }
            }
            Err(error) => self.send(&error).await,
        }
    }

    async fn on_location(&mut self, frame: LocationFrame) -> Result<(), Flow> {
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
        let outcome = self.pings.accept(self.connection, raw, &self.acks).await;
        if !matches!(outcome, PingOutcome::Rejected(_)) {
            if let Some((_, customer)) = self.duty.trip {
                self.duty.arriving =
                    great_circle_m(Point::new(frame.lat, frame.lng), customer) <= ARRIVING_WITHIN_M;
            }
        }
        match outcome {
            PingOutcome::Queued => {
                self.pending.insert(frame.seq, PendingPing { resent: 0 });
                Ok(())
            }
            PingOutcome::Ack { stored } => {
                self.send(&ServerFrame::Ack {
                    seq: frame.seq,
                    stored,
                    reason: None,
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

    /// Runs a frame that waits on the database as the socket's next errand, or says the socket
    /// has too many waiting.
    async fn run_errand(
        &mut self,
        errand: BoxFuture<'static, Option<ServerFrame>>,
    ) -> Result<(), Flow> {
        if self.errands.push(errand).is_err() {
            metrics::counter!("hilot_socket_frames_refused_total", "reason" => "errands_full")
                .increment(1);
            return self
                .send(&ServerFrame::error(
                    "rate_limited",
                    format!(
                        "{MAX_QUEUED_ERRANDS} frames are already waiting for their answers; \
                         send this one again after them"
                    ),
                    None,
                ))
                .await;
        }
        Ok(())
    }

    /// `offer.accept`, `offer.decline` and `status`: the same operations as the HTTP calls.
    /// Success shows up as the `booking.status` push; failure as an error frame.
    async fn on_booking_frame(
        &mut self,
        action: BookingAction,
        frame: BookingFrame,
    ) -> Result<(), Flow> {
        let caller = dispatch::Caller {
            user_id: self.who.user_id,
            provider_id: Some(self.who.provider_id),
            is_admin: false,
        };
        let dispatcher = self.state.dispatcher.clone();
        self.run_errand(Box::pin(async move {
            let result = match (action, frame.status) {
                (BookingAction::Accept, _) => dispatcher
                    .accept(frame.booking_id, caller)
                    .await
                    .map(|_| ()),
                (BookingAction::Decline, _) => dispatcher.decline(frame.booking_id, caller).await,
                (_, Some(status)) => dispatcher
                    .change_status(
                        frame.booking_id,
                        caller,
                        status,
                        &crate::audit::AuditContext::user(caller.user_id),
                    )
                    .await
                    .map(|_| ()),
                (_, None) => Err(crate::error::ApiError::invalid("status", "is required")),
            };
            match result {
                Ok(()) => None,
                Err(error) => {
                    if let crate::error::ApiError::Internal(cause) = &error {
                        tracing::error!(error = ?cause, "a booking frame failed");
                    }
                    Some(ServerFrame::refusal(&error, None))
                }
            }
        }))
        .await
    }

    /// Availability is answered in line, unlike the booking frames: the app's next pings
    /// count as those of a therapist online (or not) only once it has been applied.
    async fn on_availability(&mut self, frame: AvailabilityFrame) -> Result<(), Flow> {
        let result = async {
            let provider = providers::own_therapist(&self.state.db, self.who.user_id).await?;
            let availability =
                providers::set_online(&self.state.db, &provider, frame.online).await?;
            self.state.provider_changed(provider.id).await;
            Ok::<_, crate::error::ApiError>(availability)
        }
        .await;
        self.send(&match result {
            Ok(availability) => ServerFrame::Availability {
                online: availability.online,
                verification_status: availability.verification_status,
            },
            Err(error) => ServerFrame::refusal(&error, None),
        })
        .await
    }
}
