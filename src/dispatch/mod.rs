//! Book now: an event-driven matcher per region that offers waiting bookings to therapists for
//! the least total travel, offers and accepts in PostgreSQL, the booking lifecycle, arrival by
//! geofence, and live status pushed to both sides.
//!
//! - [`matcher`]: the region's matcher task: the lease, events, timers, rounds.
//! - [`waiting`]: its memory: waiting bookings by H3 cell, planning a round (no I/O).
//! - [`assignment`]: the round's decision: least total ETA plus a waiting-time term (pure).
//! - [`lease`]: exactly one active matcher per region across nodes (a PostgreSQL advisory lock).
//! - [`offers`]: `booking_offers`: opening, closing and listing offers.
//! - [`accept`]: accepting and declining an offer, from any node.
//! - [`transitions`]: status changes and cancellations; the one place a transition commits.
//! - [`cancellation`]: the one cancellation rule (fee window, promo released, actor, reason).
//! - [`manual`]: a dispatcher's offer to a chosen therapist, reassignment, cancellation with a
//!   fee decision, and marking a therapist offline (audited).
//! - [`trips`]: active bookings: busy therapists, live position for the customer, geofence.
//! - [`notify`]: frames to customers, therapists and dashboards.
//!
//! Decisions that must hold across nodes live in the database: accepting is a compare-and-set
//! `UPDATE` in a transaction that also checks the offer is open and the therapist eligible now;
//! the unique index `uq_bookings_one_active_per_provider` makes two active bookings for one
//! therapist impossible, and `uq_booking_offers_one_open_per_provider` two open offers.

pub mod accept;
pub mod assignment;
pub mod cancellation;
pub mod lease;
pub mod lifecycle;
pub mod manual;
pub mod matcher;
pub mod notify;
pub mod offers;
pub mod pricing;
pub mod ranking;
pub mod reschedule;
pub mod scheduled;
pub mod settings;
pub mod store;
pub mod transitions;
pub mod trips;
pub mod waiting;

use std::sync::Arc;

use parking_lot::Mutex;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::error::{ApiError, Context as _};
use crate::fanout::bus::EventBus;
use crate::fanout::dashboard::Dashboards;
use crate::geo::index::{LiveIndex, StateChange, TherapistState};
use crate::geo::EtaModel;
use crate::schedule::diary::Diary;
use lifecycle::BookingStatus;
use matcher::MatchEvent;
use store::{BookingFacts, BookingView};

pub use trips::Geofence;

/// `cancellation_reason` when nobody accepted before the pending timeout.
pub const NO_THERAPIST_AVAILABLE: &str = "no_therapist_available";

/// The connections for answers to offers ([`Inner::answers`]).
const OFFER_ANSWER_CONNECTIONS: u32 = 4;

struct Inner {
    db: PgPool,
    /// Connections of their own for therapists' answers to offers (accept, decline): an accept
    /// is the moment a therapist and a customer wait on, and on the shared pool it queued
    /// behind every other transition (seconds, at 100 bookings/s on two cores).
    answers: PgPool,
    index: Arc<LiveIndex>,
    bus: EventBus,
    dashboards: Arc<Dashboards>,
    eta: EtaModel,
    geofence: Geofence,
    trips: Mutex<trips::Trips>,
    /// The matcher running on this node, while this node holds its region's lease.
    matcher: Mutex<Option<mpsc::UnboundedSender<MatchEvent>>>,
    /// Eligibility beyond the index's own, applied by the matcher to every candidate: the
    /// therapist's calendar allows the booking.
    filter: waiting::EligibilityFilter,
    /// Every therapist's calendar (schedules, blocked times, commitments).
    diary: Arc<Diary>,
    shutdown: watch::Receiver<bool>,
}

/// Cheap to clone handle to the dispatcher.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

/// The matcher's calendar predicate: a candidate `hit.distance_m` away may be offered the
/// booking only if their calendar allows it (see [`Diary::can_take`]).
pub fn calendar_filter(diary: Arc<Diary>, eta: EtaModel) -> waiting::EligibilityFilter {
    Arc::new(move |booking, hit, now| match &booking.job {
        None => true,
        Some(job) => {
            let travel = chrono::Duration::seconds(i64::from(eta.eta_seconds(hit.distance_m)));
            diary.can_take(hit.provider_id, job, travel, now, eta)
        }
    })
}

/// The caller of a booking operation, as the dispatcher needs them.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user_id: i64,
    /// Their therapist provider id, if they have one.
    pub provider_id: Option<i64>,
    pub is_admin: bool,
}

impl Dispatcher {
    // Each argument is a distinct shared handle the dispatcher keeps; a bundle would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: PgPool,
        index: Arc<LiveIndex>,
        bus: EventBus,
        dashboards: Arc<Dashboards>,
        eta: EtaModel,
        geofence: Geofence,
        diary: Arc<Diary>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                answers: crate::db::dedicated_pool(&db, OFFER_ANSWER_CONNECTIONS),
                db,
                index,
                bus,
                dashboards,
                eta,
                geofence,
                trips: Mutex::new(trips::Trips::default()),
                matcher: Mutex::new(None),
                filter: calendar_filter(diary.clone(), eta),
                diary,
                shutdown,
            }),
        }
    }

    /// After a restart: therapists on active bookings are busy again. (Pending bookings are the
    /// matcher's: it reloads them when it takes its region's lease.)
    pub async fn resume(&self) -> anyhow::Result<usize> {
        use BookingStatus::*;
        let active =
            store::facts_in_status(&self.inner.db, &[Accepted, EnRoute, Arrived, InProgress])
                .await
                .map_err(anyhow::Error::from)?;
        for booking in &active {
            if let Some(provider_id) = booking.provider_id {
                // An accepted scheduled booking is not a trip until its therapist sets out.
                if !(booking.is_scheduled() && booking.status == Accepted) {
                    self.track_trip(booking, provider_id, booking.status);
                }
            }
        }
        Ok(active.len())
    }

    /// Runs this node's candidacy for every region's matcher until shutdown.
    pub fn start_matching(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(matcher::run(self.clone(), matcher::Region::default()))
    }

    /// A booking just committed (pending), asked for at `requested_at`: the matcher takes it
    /// from here, its batching window counting from then. `arrival` is what the request knows
    /// of it, which a matcher on this node uses instead of reading the booking back.
    pub fn start_waiting(
        &self,
        booking_id: i64,
        requested_at: chrono::DateTime<chrono::Utc>,
        arrival: matcher::Arrival,
    ) {
        self.signal(MatchEvent::BookingCreated {
            booking_id,
            requested_at: Some(requested_at),
            arrival: Some(arrival),
        });
    }

    /// Tells the matcher: directly when it runs here, otherwise through PostgreSQL
    /// (`NOTIFY`), which reaches the node holding the lease. Therapist events stay local: the
    /// matcher reads the live index of its own node.
    fn signal(&self, event: MatchEvent) {
        if let Some(matcher) = self.inner.matcher.lock().as_ref() {
            if matcher.send(event.clone()).is_ok() {
                return;
            }
        }
        if event.is_therapist_event() {
            return;
        }
        let db = self.inner.db.clone();
        tokio::spawn(async move {
            if let Err(error) = matcher::notify_remote(&db, &event).await {
                tracing::warn!(%error, "telling the matcher failed; it reconciles on takeover");
            }
        });
    }

    /// The index saw a therapist's state change: one who became available may serve a waiting
    /// booking; one who went offline gives their open offer back.
    pub fn therapist_state_changed(&self, change: StateChange) {
        match change.state {
            TherapistState::Available => self.signal(MatchEvent::TherapistAvailable {
                provider_id: change.provider_id,
            }),
            TherapistState::Offline => self.signal(MatchEvent::TherapistGone {
                provider_id: change.provider_id,
            }),
            TherapistState::Offered | TherapistState::Busy => {}
        }
    }

    /// A therapist's socket closed: their open offer moves on to the next therapist.
    pub fn therapist_disconnected(&self, provider_id: i64) {
        self.signal(MatchEvent::TherapistGone { provider_id });
    }

    /// The booking if the caller is its customer, its therapist or an admin; otherwise 404,
    /// exactly as for a booking that does not exist.
    pub async fn visible_booking(
        &self,
        booking_uuid: Uuid,
        caller: Caller,
    ) -> Result<BookingFacts, ApiError> {
        self.visible_booking_on(&self.inner.db, booking_uuid, caller)
            .await
    }

    /// [`Dispatcher::visible_booking`], read on a connection the caller holds (the transaction
    /// that will change it: one wait for a connection, not two).
    pub(crate) async fn visible_booking_on(
        &self,
        db: impl sqlx::PgExecutor<'_>,
        booking_uuid: Uuid,
        caller: Caller,
    ) -> Result<BookingFacts, ApiError> {
        let booking = store::facts_by_uuid(db, booking_uuid)
            .await
            .context("loading the booking")?
            .ok_or_else(|| ApiError::not_found("booking"))?;
        let is_customer = booking.customer_id == caller.user_id;
        // A therapist asked by name sees the request while it waits for them; once it went to
        // someone else, lapsed or was declined, it is no longer theirs to see.
        let is_requested = booking.status == BookingStatus::Pending
            && booking.provider_id.is_none()
            && booking.requested_provider_id == caller.provider_id;
        let is_therapist = caller.provider_id.is_some()
            && (booking.provider_id == caller.provider_id || is_requested);
        if is_customer || is_therapist || caller.is_admin {
            Ok(booking)
        } else {
            Err(ApiError::not_found("booking"))
        }
    }

    /// The connections of therapists' answers to offers, for `hilot_db_connections`.
    pub fn answers_pool(&self) -> &PgPool {
        &self.inner.answers
    }

    pub async fn view(&self, booking_id: i64) -> Result<BookingView, ApiError> {
        let mut conn = self
            .inner
            .db
            .acquire()
            .await
            .context("loading the booking")?;
        store::view(&mut conn, booking_id)
            .await
            .context("loading the booking")
    }

    /// Tells the customer and the dashboards about a booking just created (pending).
    pub async fn announce(&self, booking_id: i64) {
        self.push_status(booking_id, None).await;
    }

    pub fn diary(&self) -> &Arc<Diary> {
        &self.inner.diary
    }

    pub fn db(&self) -> &PgPool {
        &self.inner.db
    }
}
