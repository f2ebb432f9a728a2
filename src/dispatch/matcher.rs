//! The region's matcher: one task on the node holding the region's lease. It owns the waiting
//! bookings and runs only when something changes:
//!
//! - a booking is created, cancelled or taken (accept), or one of its offers closes;
//! - a therapist becomes available, comes online, moves into reach, or goes offline;
//! - an offer expires, or a booking reaches its pending timeout (timers).
//!
//! Changes mark the bookings they concern, and a round over them runs at most once every
//! `batch_window_ms` (at once when it is 0). A new booking waits a whole window before its
//! first round, so bookings arriving together are assigned together. Events from other nodes arrive through PostgreSQL `NOTIFY`. On taking the lease the
//! matcher reloads every pending booking and its offers from the database, so nothing is lost
//! when a node dies or restarts.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::lease::{Lease, LEASE_HEARTBEAT, LEASE_RETRY};
use super::lifecycle::BookingStatus;
use super::notify::frame;
use super::offers::{self, Outcome};
use super::settings::DispatchSettings;
use super::store::{self, LocationView, ServiceRef};
use super::waiting::{PlannedOffer, RoundRules, WaitingBooking, WaitingBookings};
use super::{pricing, Dispatcher};
use crate::geo::index::TherapistState;
use crate::geo::Point;
use crate::schedule::diary::Job;
use crate::schedule::slots::Session;
use crate::schedule::SchedulingSettings;

/// The PostgreSQL channel matcher events travel on between nodes.
pub const NOTIFY_CHANNEL: &str = "hilot_dispatch";
/// Settings are read again at most this often (operators change them without a restart).
const SETTINGS_REFRESH: Duration = Duration::from_secs(5);
/// A new booking reads the settings again unless they are younger than this.
const SETTINGS_FRESH_FOR_NEW_BOOKINGS: Duration = Duration::from_millis(500);
/// Time the exact assignment may take in one round before the rest goes greedy.
pub const SOLVE_BUDGET: Duration = Duration::from_millis(20);
/// An accept asked for up to this long after its offer's expiry still counts (the offer and
/// the accept take time on the way), and the matcher closes an offer as expired only then.
pub const ACCEPT_GRACE: chrono::Duration = chrono::Duration::milliseconds(500);
/// Time one round may spend finding candidates; the rest wait for the next round.
pub const SEARCH_BUDGET: Duration = Duration::from_millis(50);
/// Everything pending is compared with the database this often, in case a `NOTIFY` was lost.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(30);
/// Connections of the matcher's own (it runs one query at a time; the second covers a
/// reconnect).
const MATCHER_CONNECTIONS: u32 = 2;
/// Most events applied in one turn of the loop, between looks at rounds and timers.
const EVENTS_PER_TURN: usize = 512;

/// A region and its matcher. One region, the whole world, is the default; sharding adds more.
#[derive(Debug, Clone)]
pub struct Region {
    pub name: String,
}

impl Default for Region {
    fn default() -> Self {
        Self {
            name: "default".into(),
        }
    }
}

/// What the matcher hears about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MatchEvent {
    BookingCreated {
        booking_id: i64,
        /// When it was made: its batching window counts from then.
        #[serde(default)]
        requested_at: Option<DateTime<Utc>>,
        /// What the node that made it already knows, when the matcher runs on that node
        /// (never sent between nodes: a matcher elsewhere reads the booking itself).
        #[serde(skip)]
        arrival: Option<Arrival>,
    },
    /// The booking left `pending`; whoever moved it closed its open offers.
    BookingClosed {
        booking_id: i64,
    },
    /// One offer closed (declined, or refused at accept); the closer recorded it.
    OfferClosed {
        booking_id: i64,
        provider_id: i64,
        outcome: Outcome,
    },
    /// A dispatcher opened an offer by hand (recorded already): the matcher arms it like its
    /// own and sends the offer frame.
    OfferOpened {
        booking_id: i64,
        provider_id: i64,
    },
    TherapistAvailable {
        provider_id: i64,
    },
    TherapistMoved {
        provider_id: i64,
    },
    TherapistGone {
        provider_id: i64,
    },
}

impl MatchEvent {
    /// Therapist events concern this node's live index only.
    pub fn is_therapist_event(&self) -> bool {
        matches!(
            self,
            MatchEvent::TherapistAvailable { .. }
                | MatchEvent::TherapistMoved { .. }
                | MatchEvent::TherapistGone { .. }
        )
    }
}

/// Sends an event to the matcher on whichever node holds the lease.
pub async fn notify_remote(db: &PgPool, event: &MatchEvent) -> sqlx::Result<()> {
    let payload = serde_json::to_string(event).expect("events serialise");
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(NOTIFY_CHANNEL)
        .bind(payload)
        .execute(db)
        .await
        .map(|_| ())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    OfferExpiry {
        booking_id: i64,
        provider_id: i64,
    },
    Deadline {
        booking_id: i64,
    },
    /// An open scheduled booking nobody has taken yet: its customer is told before it would be
    /// cancelled.
    Warning {
        booking_id: i64,
    },
}

/// A booking just created on this node, as its request knew it: its facts, what its offer
/// frames say, and the settings it was priced with. Handed to a matcher on the same node, it
/// spares the round reading the booking and the settings back: at 100 bookings a second those
/// reads were a query on the path of every round, which a booking's first offer waits for.
#[derive(Clone)]
pub struct Arrival(std::sync::Arc<ArrivalParts>);

struct ArrivalParts {
    facts: store::BookingFacts,
    context: BookingContext,
    settings: DispatchSettings,
    scheduling: SchedulingSettings,
    /// When the request read the settings.
    settings_read: Instant,
}

impl Arrival {
    pub fn new(
        facts: store::BookingFacts,
        view: &store::BookingView,
        settings: DispatchSettings,
        scheduling: SchedulingSettings,
        settings_read: Instant,
    ) -> Self {
        Self(std::sync::Arc::new(ArrivalParts {
            facts,
            context: BookingContext::of(view),
            settings,
            scheduling,
            settings_read,
        }))
    }
}

impl std::fmt::Debug for Arrival {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Arrival").field(&self.0.facts.id).finish()
    }
}

/// Two arrivals are the same when they are one hand-over (events compare by what they say).
impl PartialEq for Arrival {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// What an offer frame says about its booking, read once, when it is first offered.
#[derive(Clone)]
struct BookingContext {
    service: ServiceRef,
    location: Option<LocationView>,
    /// `now` or `scheduled`, and when a scheduled one starts: the therapist decides on both.
    booking_type: String,
    scheduled_at: Option<DateTime<Utc>>,
}

impl BookingContext {
    fn of(view: &store::BookingView) -> Self {
        Self {
            service: view.service.clone(),
            location: view.location.clone(),
            booking_type: view.booking_type.clone(),
            scheduled_at: view.scheduled_at,
        }
    }
}

struct Matcher {
    /// The matcher's own connections ([`MATCHER_CONNECTIONS`]).
    db: PgPool,
    dispatcher: Dispatcher,
    waiting: WaitingBookings,
    contexts: FxHashMap<i64, BookingContext>,
    /// Public ids of the waiting bookings (for withdrawal frames).
    uuids: FxHashMap<i64, Uuid>,
    timers: BinaryHeap<Reverse<(DateTime<Utc>, Timer)>>,
    settings: DispatchSettings,
    scheduling: SchedulingSettings,
    settings_read: Instant,
    /// When the last round ran: rounds run at most once a window.
    last_round: Instant,
    /// When the first booking arrived since the last round: new bookings wait a whole window
    /// for the bookings arriving with them, so they are assigned together.
    new_since: Option<Instant>,
    /// Bookings announced since the last round, read from the database together when it starts:
    /// one query a window instead of one per booking, so the matcher keeps up with a city's
    /// bookings however slow each round trip is under load.
    arriving: rustc_hash::FxHashSet<i64>,
    /// What this node's requests handed over about some of `arriving` (the rest are read).
    arrivals: FxHashMap<i64, Arrival>,
}

enum Stop {
    Shutdown,
    LeaseLost,
}

/// Runs this node's candidacy for `region` until shutdown: wait for the lease, match while
/// holding it, and start over if it is lost.
pub async fn run(dispatcher: Dispatcher, region: Region) {
    let mut shutdown = dispatcher.inner.shutdown.clone();
    let options = dispatcher.inner.db.connect_options().as_ref().clone();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let lease = async {
            let mut lease = Lease::connect(&options, &region.name).await?;
            loop {
                if lease.try_acquire().await? {
                    return Ok::<_, sqlx::Error>(lease);
                }
                tokio::time::sleep(LEASE_RETRY).await;
            }
        };
        let lease = tokio::select! {
            lease = lease => lease,
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        };
        let lease = match lease {
            Ok(lease) => lease,
            Err(error) => {
                tracing::warn!(%error, region = region.name, "matcher lease unavailable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(LEASE_RETRY) => continue,
                    _ = crate::shutdown::stopped(&mut shutdown) => return,
                }
            }
        };
        tracing::info!(region = region.name, "matcher lease taken; matching here");
        metrics::gauge!("hilot_matcher_leader").set(1.0);
        let stop = lead(&dispatcher, lease).await;
        metrics::gauge!("hilot_matcher_leader").set(0.0);
        *dispatcher.inner.matcher.lock() = None;
        match stop {
            Stop::Shutdown => return,
            Stop::LeaseLost => {
                tracing::warn!(region = region.name, "matcher lease lost; standing by");
            }
        }
    }
}

async fn lead(dispatcher: &Dispatcher, mut lease: Lease) -> Stop {
    let db = dispatcher.inner.db.clone();
    // The listener has a connection of its own (as the lease does), so it holds none of the
    // pool that accepts and background work share.
    let listen_pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(db.connect_options().as_ref().clone());
    // Listen before loading, so nothing said meanwhile is missed (duplicates are harmless).
    let mut listener = match PgListener::connect_with(&listen_pool).await {
        Ok(mut listener) => match listener.listen(NOTIFY_CHANNEL).await {
            Ok(()) => listener,
            Err(error) => {
                tracing::warn!(%error, "matcher cannot listen");
                lease.release().await;
                return Stop::LeaseLost;
            }
        },
        Err(error) => {
            tracing::warn!(%error, "matcher cannot listen");
            lease.release().await;
            return Stop::LeaseLost;
        }
    };
    // Its own connections: the matcher is one task on the critical path of every booking.
    let matcher_pool = crate::db::dedicated_pool(&db, MATCHER_CONNECTIONS);
    let (events, mut inbox) = mpsc::unbounded_channel();
    *dispatcher.inner.matcher.lock() = Some(events);
    let mut matcher = Matcher {
        db: matcher_pool.clone(),
        dispatcher: dispatcher.clone(),
        waiting: WaitingBookings::default(),
        contexts: FxHashMap::default(),
        uuids: FxHashMap::default(),
        timers: BinaryHeap::new(),
        settings: DispatchSettings::load(&matcher_pool).await,
        scheduling: SchedulingSettings::load(&matcher_pool).await,
        settings_read: Instant::now(),
        last_round: Instant::now(),
        new_since: None,
        arriving: Default::default(),
        arrivals: FxHashMap::default(),
    };
    if let Err(error) = matcher.reload().await {
        tracing::error!(
            error = format!("{error:#}"),
            "matcher could not load pending bookings"
        );
    }
    let mut shutdown = dispatcher.inner.shutdown.clone();
    let mut heartbeat = tokio::time::interval(LEASE_HEARTBEAT);
    let mut reconcile = tokio::time::interval(RECONCILE_INTERVAL);
    reconcile.reset();
    let mut events_batch = Vec::with_capacity(EVENTS_PER_TURN);
    let stop = loop {
        let round_at = matcher.round_due().then(|| {
            let window = matcher.settings.batch_window;
            let earliest = matcher.last_round + window;
            match matcher.new_since {
                Some(since) => earliest.max(since + window),
                None => earliest,
            }
        });
        let next_timer = matcher.timers.peek().map(|Reverse((at, _))| *at);
        let timer_in = next_timer
            .map(|at| (at - Utc::now()).to_std().unwrap_or_default())
            .unwrap_or(Duration::from_secs(3600));
        // Rounds and timers come before the inbox: at 10,000 therapists every ping of an
        // available one is an event, the inbox is rarely empty under load, and a round polled
        // after it would wait for a lull that never comes (rounds fell seconds apart).
        tokio::select! {
            biased;
            _ = crate::shutdown::stopped(&mut shutdown) => break Stop::Shutdown,
            _ = heartbeat.tick() => {
                let started = Instant::now();
                if !lease.alive().await {
                    break Stop::LeaseLost;
                }
                step_took("heartbeat", started);
            }
            _ = sleep_until(round_at), if round_at.is_some() => {
                let started = Instant::now();
                // What is already queued counts for this round (a booking announced just now).
                matcher.apply_queued(&mut inbox, &mut events_batch).await;
                step_took("events", started);
                let started = Instant::now();
                matcher.round().await;
                step_took("round", started);
            }
            _ = tokio::time::sleep(timer_in) => {
                let started = Instant::now();
                matcher.fire_timers().await;
                step_took("timers", started);
            }
            received = inbox.recv_many(&mut events_batch, EVENTS_PER_TURN) => {
                if received == 0 {
                    break Stop::Shutdown; // every sender is gone: the dispatcher is dropped
                }
                let started = Instant::now();
                for event in events_batch.drain(..) {
                    matcher.apply(event).await;
                }
                step_took("events", started);
            }
            message = listener.try_recv() => match message {
                Ok(Some(notification)) => {
                    match serde_json::from_str::<MatchEvent>(notification.payload()) {
                        Ok(event) => matcher.apply(event).await,
                        Err(error) => tracing::warn!(%error, "ignoring a malformed matcher event"),
                    }
                }
                // The listener reconnected: something may have been missed.
                Ok(None) => {
                    if let Err(error) = matcher.reload().await {
                        tracing::warn!(error = format!("{error:#}"), "matcher reload failed");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "matcher listener failed");
                    break Stop::LeaseLost;
                }
            },
            _ = reconcile.tick() => {
                if let Err(error) = matcher.reload().await {
                    tracing::warn!(error = format!("{error:#}"), "matcher reconcile failed");
                }
            }
        }
    };
    *dispatcher.inner.matcher.lock() = None;
    // Offers stay open in the database: the next matcher re-arms them.
    for id in matcher.waiting.ids() {
        if let Some(booking) = matcher.waiting.remove(id) {
            for provider in booking.open.keys() {
                dispatcher.inner.index.release_offer(*provider);
            }
        }
    }
    drop(listener);
    listen_pool.close().await;
    matcher_pool.close().await;
    lease.release().await;
    stop
}

/// How long one step of the matcher's loop took (`hilot_matcher_step_seconds{step}`): whatever
/// one step waits for, every other step waits behind it.
fn step_took(step: &'static str, started: Instant) {
    metrics::histogram!("hilot_matcher_step_seconds", "step" => step)
        .record(started.elapsed().as_secs_f64());
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// What taking a booking asks of a therapist's calendar: a session now at `place`, or a session
/// at its scheduled start.
pub(super) fn job_of(facts: &store::BookingFacts, place: Point) -> Job {
    let session = Session::minutes(
        i64::from(facts.duration_minutes.unwrap_or(60)),
        i64::from(facts.buffer_minutes),
    );
    match facts.scheduled_at.filter(|_| facts.is_scheduled()) {
        Some(start) => Job::Later { start, session },
        None => Job::Now { session, place },
    }
}

impl Matcher {
    fn db(&self) -> &PgPool {
        &self.db
    }

    async fn refresh_settings(&mut self) {
        if self.settings_read.elapsed() >= SETTINGS_REFRESH {
            self.reload_settings().await;
        }
    }

    async fn reload_settings(&mut self) {
        self.settings = DispatchSettings::load(self.db()).await;
        self.scheduling = SchedulingSettings::load(self.db()).await;
        self.settings_read = Instant::now();
    }

    /// Loads every pending booking and its offers (taking over, or reconciling).
    async fn reload(&mut self) -> anyhow::Result<()> {
        let pending = store::facts_in_status(self.db(), &[BookingStatus::Pending]).await?;
        let stored = offers::of_pending_bookings(self.db()).await?;
        let mut by_booking: FxHashMap<i64, Vec<offers::StoredOffer>> = FxHashMap::default();
        for offer in stored {
            by_booking.entry(offer.booking_id).or_default().push(offer);
        }
        let still_pending: rustc_hash::FxHashSet<i64> = pending.iter().map(|b| b.id).collect();
        for id in self.waiting.ids() {
            if !still_pending.contains(&id) {
                self.forget(id);
            }
        }
        for facts in pending {
            if self.waiting.contains(facts.id) {
                continue;
            }
            let offers = by_booking.remove(&facts.id).unwrap_or_default();
            self.admit(facts, offers).await;
        }
        Ok(())
    }

    /// Starts waiting for a pending booking, with the offers it already has. A request to a
    /// named therapist is theirs to answer, not the matcher's.
    async fn admit(&mut self, facts: store::BookingFacts, stored: Vec<offers::StoredOffer>) {
        if facts.is_request() {
            return;
        }
        let Some(point) = facts
            .lat
            .zip(facts.lng)
            .map(|(lat, lng)| Point::new(lat, lng))
        else {
            tracing::error!(booking_id = facts.id, "a pending booking has no location");
            return;
        };
        let start = facts.scheduled_at.filter(|_| facts.is_scheduled());
        // Offered until `scheduled::offer_deadline`: a scheduled booking until its lead time, a
        // `now` one until the pending timeout.
        let deadline = super::scheduled::offer_deadline(
            facts.requested_at,
            start,
            self.scheduling.lead,
            chrono::Duration::from_std(self.settings.pending_timeout).unwrap_or_default(),
        );
        let job = job_of(&facts, point);
        let radius = self
            .settings
            .initial_radius_m
            .min(self.settings.max_radius_m);
        let Some(booking) = WaitingBooking::new(
            facts.id,
            point,
            facts.service_id,
            facts.requested_at,
            deadline,
            radius,
        ) else {
            return;
        };
        let mut booking = booking
            .with_job(job)
            .with_price_ceiling(facts.max_service_amount);
        if booking.is_scheduled() {
            self.timers.push(Reverse((
                deadline - self.scheduling.unmatched_warning,
                Timer::Warning {
                    booking_id: facts.id,
                },
            )));
        }
        for offer in stored {
            booking.rounds = booking.rounds.max(offer.round);
            match offer.outcome {
                None => {
                    // Still open: the therapist keeps it until it expires.
                    let index = &self.dispatcher.inner.index;
                    if index.state(offer.provider_id) == Some(TherapistState::Available) {
                        index.set_dispatch_state(offer.provider_id, Some(TherapistState::Offered));
                    }
                    booking.open.insert(offer.provider_id, offer.expires_at);
                    self.timers.push(Reverse((
                        offer.expires_at + ACCEPT_GRACE,
                        Timer::OfferExpiry {
                            booking_id: facts.id,
                            provider_id: offer.provider_id,
                        },
                    )));
                }
                Some(outcome) if outcome.excludes_therapist() => {
                    booking.tried.insert(offer.provider_id);
                }
                Some(_) => {}
            }
        }
        // What offer frames say about the booking is read when it is first offered.
        self.uuids.insert(facts.id, facts.uuid);
        self.timers.push(Reverse((
            deadline,
            Timer::Deadline {
                booking_id: facts.id,
            },
        )));
        self.waiting.insert(booking);
    }

    /// Forgets a booking that left `pending`, freeing the therapists it held in the index.
    fn forget(&mut self, booking_id: i64) {
        self.contexts.remove(&booking_id);
        self.uuids.remove(&booking_id);
        if let Some(booking) = self.waiting.remove(booking_id) {
            for provider in booking.open.keys() {
                self.dispatcher.inner.index.release_offer(*provider);
            }
        }
    }

    async fn apply(&mut self, event: MatchEvent) {
        let index = self.dispatcher.inner.index.clone();
        match event {
            MatchEvent::BookingCreated {
                booking_id,
                requested_at,
                arrival,
            } => {
                if let Some(arrival) = arrival {
                    if !self.waiting.contains(booking_id) {
                        self.arrivals.insert(booking_id, arrival);
                    }
                }
                if !self.waiting.contains(booking_id) && self.arriving.insert(booking_id) {
                    // It waits a whole window for the bookings arriving with it; the round
                    // reads them all. The window counts from when it was asked for (its request
                    // reached the server), not from when the matcher heard: the time the request
                    // took to commit, and any queue it waited in, is already part of its wait.
                    let window = self.settings.batch_window;
                    let waited = requested_at
                        .and_then(|at| (Utc::now() - at).to_std().ok())
                        .unwrap_or_default()
                        .min(window);
                    let made = Instant::now()
                        .checked_sub(waited)
                        .unwrap_or_else(Instant::now);
                    self.new_since = Some(self.new_since.map_or(made, |since| since.min(made)));
                }
            }
            MatchEvent::BookingClosed { booking_id } => {
                self.arriving.remove(&booking_id);
                self.arrivals.remove(&booking_id);
                self.forget(booking_id)
            }
            MatchEvent::OfferOpened {
                booking_id,
                provider_id,
            } => self.arm_dispatcher_offer(booking_id, provider_id).await,
            MatchEvent::OfferClosed {
                booking_id,
                provider_id,
                outcome,
            } => {
                self.waiting
                    .offer_closed(booking_id, provider_id, outcome.excludes_therapist());
                index.release_offer(provider_id);
            }
            MatchEvent::TherapistAvailable { provider_id }
            | MatchEvent::TherapistMoved { provider_id } => {
                if index.state(provider_id) == Some(TherapistState::Available) {
                    if let Some(fix) = index.live_fix(provider_id) {
                        let moved = matches!(event, MatchEvent::TherapistMoved { .. });
                        self.waiting.supply_at(provider_id, fix.point, moved);
                    }
                }
            }
            MatchEvent::TherapistGone { provider_id } => {
                self.waiting.forget_therapist(provider_id);
                if let Some(booking_id) = self.waiting.offer_held_by(provider_id) {
                    match offers::close(self.db(), booking_id, provider_id, Outcome::Withdrawn)
                        .await
                    {
                        Ok(true) => {
                            self.waiting.offer_closed(booking_id, provider_id, true);
                            index.release_offer(provider_id);
                            if let Some(uuid) = self.uuids.get(&booking_id).copied() {
                                self.dispatcher
                                    .tell_withdrawn(uuid, &[provider_id], "offline")
                                    .await;
                            }
                        }
                        Ok(false) => {} // closed meanwhile; its own event follows
                        Err(error) => {
                            tracing::warn!(%error, "withdrawing an offline therapist's offer failed")
                        }
                    }
                }
            }
        }
        if self.settings.batch_window.is_zero() && self.round_due() {
            self.round().await;
        }
    }

    /// Applies the events queued right now (not those that keep arriving meanwhile).
    async fn apply_queued(
        &mut self,
        inbox: &mut mpsc::UnboundedReceiver<MatchEvent>,
        batch: &mut Vec<MatchEvent>,
    ) {
        let queued = inbox.len();
        let mut applied = 0;
        while applied < queued {
            let received = inbox
                .recv_many(batch, EVENTS_PER_TURN.min(queued - applied))
                .await;
            if received == 0 {
                break;
            }
            applied += received;
            for event in batch.drain(..) {
                self.apply(event).await;
            }
        }
    }

    /// Whether a round has anything to do: bookings arrived, or something changed for waiting ones.
    fn round_due(&self) -> bool {
        self.waiting.has_dirty() || !self.arriving.is_empty()
    }

    /// Starts waiting for the bookings announced since the last round that are still pending:
    /// those this node's requests handed over as they are, the others read in one query.
    async fn admit_arriving(&mut self) {
        if self.arriving.is_empty() {
            return;
        }
        let ids: Vec<i64> = self.arriving.drain().collect();
        let mut found = Vec::with_capacity(ids.len());
        let mut unknown = Vec::new();
        for id in ids {
            match self.arrivals.remove(&id) {
                Some(arrival) => found.push(arrival),
                None => unknown.push(id),
            }
        }
        // Operators expect a change to apply to the next booking. A booking handed over was
        // priced with settings its request read, so the newest of those are the matcher's too;
        // for bookings read back, read the settings afresh unless just read.
        if let Some(newest) = found.iter().map(|a| &a.0).max_by_key(|a| a.settings_read) {
            if newest.settings_read > self.settings_read {
                self.settings = newest.settings;
                self.scheduling = newest.scheduling.clone();
                self.settings_read = newest.settings_read;
            }
        }
        if !unknown.is_empty() && self.settings_read.elapsed() >= SETTINGS_FRESH_FOR_NEW_BOOKINGS {
            self.reload_settings().await;
        }
        let mut facts: Vec<store::BookingFacts> = Vec::with_capacity(found.len() + unknown.len());
        for arrival in found {
            let parts = &arrival.0;
            self.contexts.insert(parts.facts.id, parts.context.clone());
            facts.push(parts.facts.clone());
        }
        if !unknown.is_empty() {
            match store::facts_by_ids(self.db(), &unknown).await {
                Ok(read) => facts.extend(read),
                Err(error) => {
                    tracing::warn!(bookings = unknown.len(), %error, "loading new bookings failed; the reconcile picks them up")
                }
            }
        }
        // Oldest first, as they arrived.
        facts.sort_by_key(|facts| facts.id);
        for facts in facts {
            let id = facts.id;
            if facts.status == BookingStatus::Pending && !self.waiting.contains(id) {
                self.admit(facts, Vec::new()).await;
            }
            if !self.waiting.contains(id) {
                self.contexts.remove(&id);
            }
        }
    }

    /// Takes over an offer a dispatcher made: the therapist is reserved, the expiry armed, and
    /// the offer frame sent, exactly as for an offer of a round.
    async fn arm_dispatcher_offer(&mut self, booking_id: i64, provider_id: i64) {
        if !self.waiting.contains(booking_id) {
            match store::facts_by_id(self.db(), booking_id).await {
                Ok(Some(facts)) if facts.status == BookingStatus::Pending => {
                    self.admit(facts, Vec::new()).await
                }
                Ok(_) => return,
                Err(error) => {
                    tracing::warn!(booking_id, %error, "loading a booking for a dispatcher's offer failed; the reconcile picks it up");
                    return;
                }
            }
        }
        let stored = match offers::open_offer(self.db(), booking_id, provider_id).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return, // answered or closed meanwhile
            Err(error) => {
                tracing::warn!(booking_id, %error, "reading a dispatcher's offer failed; the reconcile picks it up");
                return;
            }
        };
        let index = self.dispatcher.inner.index.clone();
        if index.state(provider_id) == Some(TherapistState::Available) {
            index.set_dispatch_state(provider_id, Some(TherapistState::Offered));
        }
        self.waiting
            .offer_opened(booking_id, provider_id, stored.expires_at);
        if let Some(rounds) = self.waiting.rounds_mut(booking_id) {
            *rounds = (*rounds).max(stored.round);
        }
        self.timers.push(Reverse((
            stored.expires_at + ACCEPT_GRACE,
            Timer::OfferExpiry {
                booking_id,
                provider_id,
            },
        )));
        let Some(service_id) = self.waiting.get(booking_id).map(|b| b.service_id) else {
            return;
        };
        let terms = index.profile(provider_id).and_then(|profile| {
            profile
                .services
                .into_iter()
                .find(|s| s.service_id == service_id)
        });
        let Some(terms) = terms else {
            tracing::warn!(booking_id, provider_id, "a dispatcher's offer to a therapist without the service's terms here; it expires unsent");
            return;
        };
        let offer = PlannedOffer {
            booking_id,
            provider_id,
            distance_m: stored.distance_m,
            eta_seconds: u32::try_from(stored.eta_seconds).unwrap_or_default(),
            terms,
        };
        self.send_offer(&offer, stored.expires_at).await;
    }

    async fn fire_timers(&mut self) {
        let now = Utc::now();
        let mut expired_offers = Vec::new();
        let mut deadlines = Vec::new();
        let mut warnings = Vec::new();
        while let Some(Reverse((at, timer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::OfferExpiry {
                    booking_id,
                    provider_id,
                } => {
                    let still_open = self.waiting.get(booking_id).is_some_and(|b| {
                        b.open.get(&provider_id).map(|e| *e + ACCEPT_GRACE) == Some(at)
                    });
                    if still_open {
                        expired_offers.push((booking_id, provider_id));
                    }
                }
                Timer::Deadline { booking_id } => {
                    if self.waiting.contains(booking_id) {
                        deadlines.push(booking_id);
                    }
                }
                Timer::Warning { booking_id } => {
                    if self.waiting.contains(booking_id) {
                        warnings.push(booking_id);
                    }
                }
            }
        }
        for booking_id in warnings {
            if let Some(deadline) = self.waiting.get(booking_id).map(|b| b.deadline) {
                self.dispatcher.warn_unmatched(booking_id, deadline).await;
            }
        }
        if !expired_offers.is_empty() {
            match offers::close_expired(self.db(), &expired_offers).await {
                Ok(closed) => {
                    let closed_set: rustc_hash::FxHashSet<(i64, i64)> =
                        closed.iter().copied().collect();
                    for (booking_id, provider_id) in closed {
                        self.waiting.offer_closed(booking_id, provider_id, true);
                        self.dispatcher.inner.index.release_offer(provider_id);
                        if let Some(uuid) = self.uuids.get(&booking_id).copied() {
                            self.dispatcher
                                .tell_withdrawn(uuid, &[provider_id], "expired")
                                .await;
                        }
                    }
                    // Being accepted right now: look again shortly (the accept's own event
                    // usually comes first).
                    let later = Utc::now() + ACCEPT_GRACE;
                    for (booking_id, provider_id) in expired_offers {
                        if !closed_set.contains(&(booking_id, provider_id)) {
                            self.retry_expiry(booking_id, provider_id, later);
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "expiring offers failed; retrying");
                    let later = Utc::now() + chrono::Duration::seconds(1);
                    for (booking_id, provider_id) in expired_offers {
                        self.retry_expiry(booking_id, provider_id, later);
                    }
                }
            }
        }
        for booking_id in deadlines {
            match self.dispatcher.expire_unmatched(booking_id).await {
                Ok(()) => self.forget(booking_id),
                Err(error) => {
                    tracing::warn!(booking_id, %error, "expiring a booking failed; retrying");
                    self.timers.push(Reverse((
                        Utc::now() + chrono::Duration::seconds(1),
                        Timer::Deadline { booking_id },
                    )));
                }
            }
        }
    }

    /// Re-arms an offer's expiry check at `at` (the timer matches the offer by its expiry).
    fn retry_expiry(&mut self, booking_id: i64, provider_id: i64, at: DateTime<Utc>) {
        let still_open = self
            .waiting
            .get(booking_id)
            .is_some_and(|b| b.open.contains_key(&provider_id));
        if still_open {
            self.waiting
                .offer_opened(booking_id, provider_id, at - ACCEPT_GRACE);
            self.timers.push(Reverse((
                at,
                Timer::OfferExpiry {
                    booking_id,
                    provider_id,
                },
            )));
        }
    }

    async fn round(&mut self) {
        self.last_round = Instant::now();
        self.new_since = None;
        let t = Instant::now();
        self.admit_arriving().await;
        step_took("round_admit", t);
        self.refresh_settings().await;
        let started = Instant::now();
        let now = Utc::now();
        let rules = RoundRules {
            batch_size: self.settings.batch_size,
            radius_step_m: self.settings.radius_step_m,
            max_radius_m: self.settings.max_radius_m,
            solve_budget: SOLVE_BUDGET,
            search_budget: SEARCH_BUDGET,
        };
        let inner = self.dispatcher.inner.clone();
        let (planned, report) =
            self.waiting
                .plan_round(&inner.index, inner.eta, &rules, &inner.filter, now);
        metrics::histogram!("hilot_matcher_round_seconds").record(started.elapsed().as_secs_f64());
        tracing::debug!(
            waiting = self.waiting.len(),
            considered = report.considered,
            planned = planned.len(),
            exact = report.exact_components,
            greedy = report.greedy_components,
            "matcher round"
        );
        metrics::counter!("hilot_matcher_rounds_total").increment(1);
        metrics::counter!("hilot_matcher_greedy_components_total")
            .increment(report.greedy_components as u64);
        if !planned.is_empty() {
            self.open_offers(planned, now).await;
        }
    }

    async fn open_offers(&mut self, planned: Vec<PlannedOffer>, now: DateTime<Utc>) {
        let offer_timeout =
            chrono::Duration::from_std(self.settings.offer_timeout).unwrap_or_default();
        let rows: Vec<(PlannedOffer, i32, DateTime<Utc>)> = planned
            .into_iter()
            .filter_map(|offer| {
                let booking = self.waiting.get(offer.booking_id)?;
                let expires_at = (now + offer_timeout).min(booking.deadline);
                Some((offer, booking.rounds + 1, expires_at))
            })
            .collect();
        // What the offer frames say about bookings offered for the first time is read in one
        // query, on the matcher's other connection while the offers are written.
        let mut first_offered: Vec<i64> = rows
            .iter()
            .map(|(offer, _, _)| offer.booking_id)
            .filter(|booking_id| !self.contexts.contains_key(booking_id))
            .collect();
        first_offered.sort_unstable();
        first_offered.dedup();
        let t = Instant::now();
        let (made, views) = tokio::join!(
            offers::open(self.db(), &rows),
            self.fetch_contexts(&first_offered)
        );
        step_took("round_open", t);
        self.keep_contexts(&first_offered, views);
        let made = match made {
            Ok(made) => made
                .into_iter()
                .collect::<rustc_hash::FxHashSet<(i64, i64)>>(),
            Err(error) => {
                tracing::warn!(%error, "opening offers failed; the bookings try again");
                Default::default()
            }
        };
        tracing::debug!(planned = rows.len(), made = made.len(), "offers opened");
        let mut rounds_bumped = rustc_hash::FxHashSet::default();
        for (offer, round, expires_at) in rows {
            let key = (offer.booking_id, offer.provider_id);
            if !made.contains(&key) {
                // Not eligible now, or holding an offer made elsewhere: free them here and let
                // the booking look again without them.
                self.dispatcher.inner.index.release_offer(offer.provider_id);
                self.waiting
                    .offer_closed(offer.booking_id, offer.provider_id, true);
                continue;
            }
            self.waiting
                .offer_opened(offer.booking_id, offer.provider_id, expires_at);
            let first_of_booking = rounds_bumped.insert(offer.booking_id);
            if first_of_booking {
                if let Some(b) = self.waiting.rounds_mut(offer.booking_id) {
                    *b = round;
                }
            }
            self.timers.push(Reverse((
                expires_at + ACCEPT_GRACE,
                Timer::OfferExpiry {
                    booking_id: offer.booking_id,
                    provider_id: offer.provider_id,
                },
            )));
            tracing::debug!(
                booking_id = offer.booking_id,
                provider_id = offer.provider_id,
                "offer sent"
            );
            self.send_offer(&offer, expires_at).await;
            if round == 1 && first_of_booking {
                self.first_offer_sent(offer.booking_id);
            }
        }
    }

    /// `hilot_first_offer_seconds`: from a book-now booking's `requested_at` (its transaction's
    /// start) to its first offer frame handed to the fan-out. Beside the load test's booking →
    /// first offer, it tells the server's share (window, round) from the way there and back.
    fn first_offer_sent(&self, booking_id: i64) {
        let Some(booking) = self.waiting.get(booking_id) else {
            return;
        };
        if booking.is_scheduled() {
            return;
        }
        if let Ok(waited) = (Utc::now() - booking.requested_at).to_std() {
            metrics::histogram!("hilot_first_offer_seconds").record(waited.as_secs_f64());
        }
    }

    /// Reads what offer frames say about these bookings, in one query.
    async fn read_contexts(&mut self, booking_ids: &[i64]) {
        let views = self.fetch_contexts(booking_ids).await;
        self.keep_contexts(booking_ids, views);
    }

    /// The views the offer frames of these bookings are made from.
    async fn fetch_contexts(&self, booking_ids: &[i64]) -> sqlx::Result<Vec<store::BookingView>> {
        if booking_ids.is_empty() {
            return Ok(Vec::new());
        }
        store::views_without_timeline(self.db(), booking_ids).await
    }

    /// Keeps what the offer frames of these bookings say, from their fetched views.
    fn keep_contexts(&mut self, booking_ids: &[i64], views: sqlx::Result<Vec<store::BookingView>>) {
        let by_uuid: FxHashMap<Uuid, i64> = booking_ids
            .iter()
            .filter_map(|id| self.uuids.get(id).map(|uuid| (*uuid, *id)))
            .collect();
        match views {
            Ok(views) => {
                for view in views {
                    let Some(booking_id) = by_uuid.get(&view.id).copied() else {
                        continue;
                    };
                    self.contexts.insert(booking_id, BookingContext::of(&view));
                }
            }
            Err(error) => {
                tracing::warn!(bookings = booking_ids.len(), %error, "reading bookings for their offers failed")
            }
        }
    }

    async fn send_offer(&mut self, offer: &PlannedOffer, expires_at: DateTime<Utc>) {
        let Some(uuid) = self.uuids.get(&offer.booking_id).copied() else {
            return;
        };
        if !self.contexts.contains_key(&offer.booking_id) {
            self.read_contexts(&[offer.booking_id]).await;
        }
        let Some(context) = self.contexts.get(&offer.booking_id) else {
            return;
        };
        let Some(user_id) = self.dispatcher.provider_user(offer.provider_id).await else {
            return;
        };
        let price = pricing::price_booking(&pricing::PriceInputs {
            price: offer.terms.price,
            base_distance_km: offer.terms.base_distance_km,
            per_km_surcharge: offer.terms.per_km_surcharge,
            distance_m: offer.distance_m,
            platform_fee: Decimal::ZERO,
            commission_rate: self.settings.commission_rate,
            promo: None,
        });
        metrics::counter!("hilot_offers_sent_total").increment(1);
        self.dispatcher
            .inner
            .bus
            .to_user(
                user_id,
                frame(json!({
                    "type": "offer",
                    "booking_id": uuid,
                    "service": context.service,
                    "location": context.location,
                    "booking_type": context.booking_type,
                    "scheduled_at": context.scheduled_at,
                    "distance_m": offer.distance_m.round() as u64,
                    "eta_seconds": offer.eta_seconds,
                    "earnings": crate::domain::money::round_money(price.provider_earnings).to_string(),
                    "currency": crate::domain::money::CURRENCY,
                    "expires_at": expires_at,
                })),
            )
            .await;
    }
}
