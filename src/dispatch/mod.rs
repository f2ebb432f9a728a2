//! Book now: offers to the nearest eligible therapists in turn, atomic accept, the booking
//! lifecycle, arrival by geofence, and live status pushed to both sides.
//!
//! Each pending booking has one dispatch task that owns its search (radius, who was tried) and
//! waits for accepts, declines, timeouts and disconnects. Decisions that must hold across
//! tasks and servers live in the database: accepting is one compare-and-set `UPDATE`, and the
//! unique index `uq_bookings_one_active_per_provider` makes two active bookings for one
//! therapist impossible.

pub mod cancellation;
pub mod lifecycle;
pub mod pricing;
pub mod ranking;
pub mod settings;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::error::{unique_violation, ApiError, Context as _};
use crate::geo::index::{LiveFix, LiveIndex, NearbyQuery, ServiceOffer, TherapistState};
use crate::geo::{distance_m, EtaModel, Point};
use crate::realtime::bus::EventBus;
use crate::realtime::dashboard::Dashboards;
use lifecycle::{check_transition, Actor, BookingStatus, TransitionError};
use settings::DispatchSettings;
use store::{BookingFacts, BookingView};

/// `cancellation_reason` when nobody accepted before the pending timeout.
pub const NO_THERAPIST_AVAILABLE: &str = "no_therapist_available";
/// The customer gets the therapist's position at most this often.
pub const LOCATION_PUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// How long after dispatch ends a booking's offer list is remembered.
pub const OFFER_MEMORY: std::time::Duration = std::time::Duration::from_secs(600);
/// How long a booking's dispatch waits before trying again after a failed round.
const DISPATCH_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
/// Leaving the arrival circle resets the dwell only beyond this multiple of its radius, so GPS
/// jitter at the edge neither delays nor flips arrival.
pub const GEOFENCE_EXIT_FACTOR: f64 = 1.5;

/// What a booking's dispatch task hears about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DispatchEvent {
    Accepted(i64),
    AcceptFailed(i64),
    Declined(i64),
    Disconnected(i64),
    /// The booking was cancelled (or otherwise left `pending`).
    Gone,
}

#[derive(Debug, Clone)]
struct OpenOffer {
    expires_at: DateTime<Utc>,
    distance_m: f64,
    terms: ServiceOffer,
    /// An accept for it is being committed; the task must not withdraw it meanwhile.
    claimed: bool,
}

/// A therapist's active booking, for the geofence and the customer's live view.
#[derive(Debug, Clone)]
struct Trip {
    booking_id: i64,
    booking_uuid: Uuid,
    customer_id: i64,
    status: BookingStatus,
    destination: Option<Point>,
    inside_since: Option<DateTime<Utc>>,
    arriving: bool,
    last_push: Option<Instant>,
}

#[derive(Default)]
struct Registry {
    /// Open offers by booking, then provider.
    offers: HashMap<i64, HashMap<i64, OpenOffer>>,
    /// Everyone ever offered a booking still being dispatched (to tell "never offered you"
    /// from "expired" or "taken").
    offered: HashMap<i64, HashSet<i64>>,
    /// Dispatch tasks by booking.
    tasks: HashMap<i64, mpsc::UnboundedSender<DispatchEvent>>,
    /// Active bookings by provider.
    trips: HashMap<i64, Trip>,
}

struct Inner {
    db: PgPool,
    index: Arc<LiveIndex>,
    bus: EventBus,
    dashboards: Arc<Dashboards>,
    eta: EtaModel,
    arrival_radius_m: f64,
    arrival_dwell: chrono::Duration,
    registry: Mutex<Registry>,
    shutdown: watch::Receiver<bool>,
}

/// Cheap to clone handle to the dispatcher.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

/// The caller of a booking operation, as the dispatcher needs them.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user_id: i64,
    /// Their therapist provider id, if they have one.
    pub provider_id: Option<i64>,
    pub is_admin: bool,
}

fn frame(value: serde_json::Value) -> Arc<str> {
    value.to_string().into()
}

fn transition_error(error: TransitionError) -> ApiError {
    match error {
        TransitionError::Illegal { .. } => ApiError::Conflict(error.to_string()),
        TransitionError::NotAllowed { .. } => ApiError::Forbidden(error.to_string()),
    }
}

/// When an en-route therapist counts as arrived: within `radius_m` for `dwell`.
#[derive(Debug, Clone, Copy)]
pub struct Geofence {
    pub radius_m: f64,
    pub dwell: std::time::Duration,
}

impl Dispatcher {
    pub fn new(
        db: PgPool,
        index: Arc<LiveIndex>,
        bus: EventBus,
        dashboards: Arc<Dashboards>,
        eta: EtaModel,
        geofence: Geofence,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                index,
                bus,
                dashboards,
                eta,
                arrival_radius_m: geofence.radius_m,
                arrival_dwell: chrono::Duration::from_std(geofence.dwell)
                    .unwrap_or(chrono::Duration::seconds(20)),
                registry: Mutex::new(Registry::default()),
                shutdown,
            }),
        }
    }

    /// After a restart: therapists on active bookings are busy again, pending bookings resume.
    pub async fn resume(&self) -> anyhow::Result<(usize, usize)> {
        use BookingStatus::*;
        let active =
            store::facts_in_status(&self.inner.db, &[Accepted, EnRoute, Arrived, InProgress])
                .await
                .map_err(anyhow::Error::from)?;
        for booking in &active {
            if let Some(provider_id) = booking.provider_id {
                self.track_trip(booking, provider_id, booking.status);
            }
        }
        let pending = store::facts_in_status(&self.inner.db, &[Pending])
            .await
            .map_err(anyhow::Error::from)?;
        for booking in &pending {
            self.start(booking.clone());
        }
        Ok((active.len(), pending.len()))
    }

    fn track_trip(&self, booking: &BookingFacts, provider_id: i64, status: BookingStatus) {
        self.inner
            .index
            .set_dispatch_state(provider_id, Some(TherapistState::Busy));
        let destination = booking
            .lat
            .zip(booking.lng)
            .map(|(lat, lng)| Point::new(lat, lng));
        self.inner.registry.lock().trips.insert(
            provider_id,
            Trip {
                booking_id: booking.id,
                booking_uuid: booking.uuid,
                customer_id: booking.customer_id,
                status,
                destination,
                inside_since: None,
                arriving: false,
                last_push: None,
            },
        );
    }

    fn end_trip(&self, provider_id: i64) {
        self.inner.registry.lock().trips.remove(&provider_id);
        self.inner.index.set_dispatch_state(provider_id, None);
    }

    /// Starts dispatching a pending booking.
    pub fn start(&self, booking: BookingFacts) {
        let (events, receiver) = mpsc::unbounded_channel();
        self.inner.registry.lock().tasks.insert(booking.id, events);
        let this = self.clone();
        tokio::spawn(async move {
            let booking_id = booking.id;
            let mut events = receiver;
            let mut shutdown = this.inner.shutdown.clone();
            // A failed round (the database busy past its acquire timeout, say) must not leave
            // the booking pending until the next restart: try again while it is still pending.
            while let Err(error) = this.run_booking(booking.clone(), &mut events).await {
                tracing::warn!(
                    booking_id,
                    error = format!("{error:#}"),
                    "dispatch failed; retrying"
                );
                tokio::select! {
                    _ = tokio::time::sleep(DISPATCH_RETRY) => {}
                    _ = crate::realtime::stopped(&mut shutdown) => break,
                }
                if !this.still_pending(booking_id).await {
                    break;
                }
            }
            {
                let mut registry = this.inner.registry.lock();
                registry.tasks.remove(&booking_id);
                registry.offers.remove(&booking_id);
            }
            // Who was offered it is remembered a while longer, so a late accept hears
            // "taken" (409) rather than "never offered to you" (404).
            tokio::time::sleep(OFFER_MEMORY).await;
            this.inner.registry.lock().offered.remove(&booking_id);
        });
    }

    /// Whether the booking still waits for a therapist (when the database cannot say, assume
    /// it does: the next round finds out).
    async fn still_pending(&self, booking_id: i64) -> bool {
        sqlx::query_scalar::<_, bool>("SELECT status = 'pending' FROM bookings WHERE id = $1")
            .bind(booking_id)
            .fetch_optional(&self.inner.db)
            .await
            .map_or(true, |pending| pending.unwrap_or(false))
    }

    fn notify_task(&self, booking_id: i64, event: DispatchEvent) {
        if let Some(task) = self.inner.registry.lock().tasks.get(&booking_id) {
            let _ = task.send(event);
        }
    }

    async fn run_booking(
        &self,
        booking: BookingFacts,
        events: &mut mpsc::UnboundedReceiver<DispatchEvent>,
    ) -> anyhow::Result<()> {
        let cfg = DispatchSettings::load(&self.inner.db).await;
        let deadline = booking.requested_at
            + chrono::Duration::from_std(cfg.pending_timeout).unwrap_or_default();
        let Some(point) = booking
            .lat
            .zip(booking.lng)
            .map(|(lat, lng)| Point::new(lat, lng))
        else {
            anyhow::bail!("booking {} has no location", booking.id);
        };
        let view = {
            let mut conn = self.inner.db.acquire().await?;
            store::view(&mut conn, booking.id).await?
        };
        let mut tried: HashSet<i64> = HashSet::new();
        let mut radius_m = cfg.initial_radius_m.min(cfg.max_radius_m);
        let mut shutdown = self.inner.shutdown.clone();
        loop {
            if *shutdown.borrow() {
                return Ok(()); // resumed from the database by the next start
            }
            let now = Utc::now();
            if now >= deadline {
                return self.expire(&booking).await;
            }
            let batch = self.reserve_candidates(&booking, point, radius_m, &tried, cfg.batch_size);
            if batch.is_empty() {
                if radius_m < cfg.max_radius_m {
                    radius_m = (radius_m + cfg.radius_step_m).min(cfg.max_radius_m);
                    continue;
                }
                // Nobody in range: wait for someone to come online, or for the deadline.
                let wait = (deadline - now)
                    .to_std()
                    .unwrap_or_default()
                    .min(cfg.retry_interval);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    event = events.recv() => if matches!(event, None | Some(DispatchEvent::Gone)) { return Ok(()) },
                    _ = crate::realtime::stopped(&mut shutdown) => return Ok(()),
                }
                continue;
            }
            let expires_at = (now
                + chrono::Duration::from_std(cfg.offer_timeout).unwrap_or_default())
            .min(deadline);
            self.send_offers(&booking, &view, &batch, expires_at, &cfg)
                .await;
            tried.extend(batch.iter().map(|c| c.provider_id));
            let mut open: HashSet<i64> = batch.iter().map(|c| c.provider_id).collect();
            loop {
                let until_expiry = (expires_at - Utc::now()).to_std().unwrap_or_default();
                tokio::select! {
                    event = events.recv() => match event {
                        Some(DispatchEvent::Accepted(winner)) => {
                            self.withdraw(&booking, open.iter().copied().filter(|p| *p != winner), "taken").await;
                            return Ok(());
                        }
                        Some(DispatchEvent::AcceptFailed(p) | DispatchEvent::Declined(p) | DispatchEvent::Disconnected(p)) => {
                            open.remove(&p);
                            if open.is_empty() { break; }
                        }
                        Some(DispatchEvent::Gone) | None => {
                            self.withdraw(&booking, open.iter().copied(), "cancelled").await;
                            return Ok(());
                        }
                    },
                    _ = tokio::time::sleep(until_expiry) => {
                        // Offers being accepted right now are left to their accept.
                        let claimed = self.withdraw_unclaimed(&booking, &open, "expired").await;
                        open.retain(|p| claimed.contains(p));
                        if open.is_empty() { break; }
                    }
                    _ = crate::realtime::stopped(&mut shutdown) => {
                        self.withdraw(&booking, open.iter().copied(), "server_restarting").await;
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Picks and reserves (Available → Offered) up to `batch` candidates not yet tried.
    fn reserve_candidates(
        &self,
        booking: &BookingFacts,
        point: Point,
        radius_m: f64,
        tried: &HashSet<i64>,
        batch: usize,
    ) -> Vec<ranking::Candidate> {
        let hits = self.inner.index.nearby(
            &NearbyQuery {
                point,
                service_id: booking.service_id,
                radius_m,
                limit: batch + tried.len() + 8,
            },
            Utc::now(),
        );
        let mut reserved = Vec::new();
        for candidate in ranking::rank(hits, self.inner.eta, |p| tried.contains(&p)) {
            if reserved.len() >= batch {
                break;
            }
            if self.inner.index.try_offer(candidate.provider_id) {
                reserved.push(candidate);
            }
        }
        reserved
    }

    async fn send_offers(
        &self,
        booking: &BookingFacts,
        view: &BookingView,
        batch: &[ranking::Candidate],
        expires_at: DateTime<Utc>,
        cfg: &DispatchSettings,
    ) {
        let commission_rate = cfg.commission_rate;
        {
            let mut registry = self.inner.registry.lock();
            let offers = registry.offers.entry(booking.id).or_default();
            for c in batch {
                offers.insert(
                    c.provider_id,
                    OpenOffer {
                        expires_at,
                        distance_m: c.distance_m,
                        terms: c.offer.clone(),
                        claimed: false,
                    },
                );
            }
            registry
                .offered
                .entry(booking.id)
                .or_default()
                .extend(batch.iter().map(|c| c.provider_id));
        }
        for c in batch {
            let price = pricing::price_booking(&pricing::PriceInputs {
                price: c.offer.price,
                base_distance_km: c.offer.base_distance_km,
                per_km_surcharge: c.offer.per_km_surcharge,
                distance_m: c.distance_m,
                platform_fee: Decimal::ZERO,
                commission_rate,
                promo: None,
            });
            // Only a therapist who is verified, active and holds the role right now gets it.
            if !self.eligible_now(c.provider_id) {
                if let Some(offers) = self.inner.registry.lock().offers.get_mut(&booking.id) {
                    offers.remove(&c.provider_id);
                }
                self.inner.index.release_offer(c.provider_id);
                self.notify_task(booking.id, DispatchEvent::AcceptFailed(c.provider_id));
                continue;
            }
            let Some(user_id) = self.provider_user(c.provider_id).await else {
                continue;
            };
            metrics::counter!("hilot_offers_sent_total").increment(1);
            self.inner
                .bus
                .to_user(
                    user_id,
                    frame(json!({
                        "type": "offer",
                        "booking_id": booking.uuid,
                        "service": view.service,
                        "location": view.location,
                        "distance_m": c.distance_m.round() as u64,
                        "eta_seconds": c.eta_seconds,
                        "earnings": crate::domain::money::round_money(price.provider_earnings).to_string(),
                        "currency": crate::domain::money::CURRENCY,
                        "expires_at": expires_at,
                    })),
                )
                .await;
        }
    }

    /// Whether the live index (refreshed at once on every node when a role, a verification or
    /// an account changes) still has the therapist verified and active.
    fn eligible_now(&self, provider_id: i64) -> bool {
        self.inner
            .index
            .profile(provider_id)
            .is_some_and(|p| p.verified && p.active)
    }

    async fn provider_user(&self, provider_id: i64) -> Option<i64> {
        if let Some((user_id, _)) = self.inner.index.identity(provider_id) {
            return Some(user_id);
        }
        sqlx::query_scalar("SELECT user_id FROM providers WHERE id = $1")
            .bind(provider_id)
            .fetch_optional(&self.inner.db)
            .await
            .ok()
            .flatten()
    }

    /// Withdraws offers (telling each therapist why) and makes the therapists available again.
    async fn withdraw(
        &self,
        booking: &BookingFacts,
        providers: impl Iterator<Item = i64>,
        reason: &str,
    ) {
        // Only offers still open are withdrawn, so a therapist hears about each offer once
        // however the task and a failing accept interleave.
        let withdrawn: Vec<i64> = {
            let mut registry = self.inner.registry.lock();
            match registry.offers.get_mut(&booking.id) {
                Some(offers) => providers.filter(|p| offers.remove(p).is_some()).collect(),
                None => Vec::new(),
            }
        };
        for provider_id in withdrawn {
            self.inner.index.release_offer(provider_id);
            if let Some(user_id) = self.provider_user(provider_id).await {
                self.inner
                    .bus
                    .to_user(user_id, frame(json!({"type": "offer.withdrawn", "booking_id": booking.uuid, "reason": reason})))
                    .await;
            }
        }
    }

    /// Withdraws the offers no accept is committing; returns those still claimed.
    async fn withdraw_unclaimed(
        &self,
        booking: &BookingFacts,
        open: &HashSet<i64>,
        reason: &str,
    ) -> HashSet<i64> {
        let (claimed, unclaimed): (Vec<i64>, Vec<i64>) = {
            let registry = self.inner.registry.lock();
            let offers = registry.offers.get(&booking.id);
            open.iter()
                .partition(|p| offers.and_then(|o| o.get(p)).is_some_and(|o| o.claimed))
        };
        self.withdraw(booking, unclaimed.into_iter(), reason).await;
        claimed.into_iter().collect()
    }

    /// Nobody accepted in time: the booking ends cancelled, `no_therapist_available`.
    async fn expire(&self, booking: &BookingFacts) -> anyhow::Result<()> {
        let policy = DispatchSettings::load(&self.inner.db).await.cancellation;
        let mut tx = self.inner.db.begin().await?;
        let request = cancellation::Cancellation {
            booking_id: booking.id,
            actor: Actor::System,
            actor_user: None,
            reason: NO_THERAPIST_AVAILABLE,
            note: "No therapist accepted before the pending timeout",
            only_from: Some(BookingStatus::Pending),
        };
        match cancellation::cancel(&mut tx, request, &policy).await {
            Ok(_) => {}
            Err(ApiError::Conflict(_)) => return Ok(()), // accepted or cancelled meanwhile
            Err(error) => anyhow::bail!("cancelling at the pending timeout: {error}"),
        }
        tx.commit().await?;
        metrics::counter!("hilot_bookings_expired_total").increment(1);
        self.push_status(booking.id, Some(NO_THERAPIST_AVAILABLE))
            .await;
        Ok(())
    }

    /// Accepts an offer: one compare-and-set transaction; the first accept wins.
    pub async fn accept(
        &self,
        booking_uuid: Uuid,
        caller: Caller,
    ) -> Result<BookingView, ApiError> {
        let provider_id = caller
            .provider_id
            .ok_or_else(|| ApiError::not_found("booking"))?;
        let booking = store::facts_by_uuid(&self.inner.db, booking_uuid)
            .await
            .context("loading the booking")?
            .ok_or_else(|| ApiError::not_found("booking"))?;
        if booking.provider_id == Some(provider_id) && booking.status == BookingStatus::Accepted {
            return self.view(booking.id).await; // a repeated accept of one's own booking
        }
        let offer = {
            let mut registry = self.inner.registry.lock();
            let ever_offered = registry
                .offered
                .get(&booking.id)
                .is_some_and(|s| s.contains(&provider_id));
            match registry
                .offers
                .get_mut(&booking.id)
                .and_then(|o| o.get_mut(&provider_id))
            {
                Some(offer) if offer.expires_at < Utc::now() => {
                    return Err(ApiError::Conflict("the offer expired".into()))
                }
                Some(offer) if offer.claimed => {
                    return Err(ApiError::Conflict(
                        "this offer is already being accepted".into(),
                    ))
                }
                Some(offer) => {
                    offer.claimed = true;
                    offer.clone()
                }
                None if ever_offered => {
                    return Err(ApiError::Conflict(format!(
                        "the offer is no longer open (the booking is {})",
                        booking.status.as_str()
                    )))
                }
                None => {
                    return Err(ApiError::NotFound(
                        "booking: no offer of this booking was made to you".into(),
                    ))
                }
            }
        };
        match self
            .commit_accept(&booking, provider_id, caller.user_id, &offer)
            .await
        {
            Ok(view) => {
                self.track_trip(&booking, provider_id, BookingStatus::Accepted);
                // The winner's offer is done; the task withdraws the rest of the batch.
                if let Some(offers) = self.inner.registry.lock().offers.get_mut(&booking.id) {
                    offers.remove(&provider_id);
                }
                self.notify_task(booking.id, DispatchEvent::Accepted(provider_id));
                metrics::counter!("hilot_bookings_accepted_total").increment(1);
                self.push_status(booking.id, None).await;
                Ok(view)
            }
            Err(error) => {
                // The offer is dead (taken, cancelled, or the therapist is busy elsewhere):
                // withdraw it like any other (the therapist hears why and is free again),
                // whichever of this and the winner's accept the task hears first.
                let taken = matches!(
                    store::facts_by_id(&self.inner.db, booking.id).await,
                    Ok(Some(now)) if now.status != BookingStatus::Pending
                );
                let reason = if taken { "taken" } else { "accept_failed" };
                self.withdraw(&booking, std::iter::once(provider_id), reason)
                    .await;
                self.notify_task(booking.id, DispatchEvent::AcceptFailed(provider_id));
                Err(error)
            }
        }
    }

    async fn commit_accept(
        &self,
        booking: &BookingFacts,
        provider_id: i64,
        actor: i64,
        offer: &OpenOffer,
    ) -> Result<BookingView, ApiError> {
        let cfg = DispatchSettings::load(&self.inner.db).await;
        let commission_rate: Decimal =
            sqlx::query_scalar("SELECT commission_rate FROM providers WHERE id = $1")
                .bind(provider_id)
                .fetch_one(&self.inner.db)
                .await
                .context("reading the commission rate")
                .map(|r: Option<Decimal>| r)?
                .unwrap_or(cfg.commission_rate);
        let platform_fee = cfg.platform_fee;
        let mut tx = self.inner.db.begin().await.context("starting the accept")?;
        let promo = promo_terms_for_booking(&mut tx, booking.id).await?;
        let price = pricing::price_booking(&pricing::PriceInputs {
            price: offer.terms.price,
            base_distance_km: offer.terms.base_distance_km,
            per_km_surcharge: offer.terms.per_km_surcharge,
            distance_m: offer.distance_m,
            platform_fee,
            commission_rate,
            promo,
        });
        store::set_actor(&mut tx, Some(actor), "Accepted by the therapist")
            .await
            .context("marking the actor")?;
        let updated = sqlx::query(
            "UPDATE bookings SET status = 'accepted', provider_id = $2, accepted_at = now(), \
                 service_price = $3, distance_surcharge = $4, platform_fee = $5, promo_discount = $6, \
                 total_amount = $7, commission_rate = $8, commission_amount = $9, provider_earnings = $10 \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(booking.id)
        .bind(provider_id)
        .bind(price.service_price)
        .bind(price.distance_surcharge)
        .bind(price.platform_fee)
        .bind(price.promo_discount)
        .bind(price.total_amount)
        .bind(price.commission_rate)
        .bind(price.commission_amount)
        .bind(price.provider_earnings)
        .execute(&mut *tx)
        .await;
        let rows = match updated {
            Ok(result) => result.rows_affected(),
            Err(error) if unique_violation(&error).is_some() => {
                return Err(ApiError::Conflict(
                    "you already have an active booking".into(),
                ))
            }
            Err(error) => return Err(ApiError::from(error)),
        };
        if rows == 0 {
            let status: BookingStatus =
                sqlx::query_scalar("SELECT status FROM bookings WHERE id = $1")
                    .bind(booking.id)
                    .fetch_one(&mut *tx)
                    .await
                    .context("reading the booking status")?;
            return Err(ApiError::Conflict(format!(
                "the offer was taken: the booking is {}",
                status.as_str()
            )));
        }
        sqlx::query(
            "UPDATE booking_locations SET distance_km = round(($2 / 1000.0)::numeric, 2), \
                 estimated_travel_time_minutes = $3 WHERE booking_id = $1",
        )
        .bind(booking.id)
        .bind(offer.distance_m)
        .bind(
            i32::try_from(self.inner.eta.eta_seconds(offer.distance_m).div_ceil(60))
                .unwrap_or(i32::MAX),
        )
        .execute(&mut *tx)
        .await
        .context("recording the travel estimate")?;
        sqlx::query("UPDATE promo_code_usages SET discount_amount = $2 WHERE booking_id = $1")
            .bind(booking.id)
            .bind(price.promo_discount)
            .execute(&mut *tx)
            .await
            .context("recording the promo discount")?;
        crate::effects::on_booking_transition(&mut tx, booking.id).await?;
        let view = store::view(&mut tx, booking.id)
            .await
            .context("loading the booking")?;
        tx.commit().await.context("committing the accept")?;
        Ok(view)
    }

    /// Declines an open offer; dispatch moves on to the next therapist.
    pub async fn decline(&self, booking_uuid: Uuid, caller: Caller) -> Result<(), ApiError> {
        let provider_id = caller
            .provider_id
            .ok_or_else(|| ApiError::not_found("booking"))?;
        let booking = store::facts_by_uuid(&self.inner.db, booking_uuid)
            .await
            .context("loading the booking")?
            .ok_or_else(|| ApiError::not_found("booking"))?;
        {
            let mut registry = self.inner.registry.lock();
            let ever_offered = registry
                .offered
                .get(&booking.id)
                .is_some_and(|s| s.contains(&provider_id));
            let offers = registry.offers.get_mut(&booking.id);
            match offers.and_then(|o| o.remove(&provider_id)) {
                Some(_) => {}
                None if ever_offered => {
                    return Err(ApiError::Conflict("the offer is no longer open".into()))
                }
                None => {
                    return Err(ApiError::NotFound(
                        "booking: no offer of this booking was made to you".into(),
                    ))
                }
            }
        }
        self.inner.index.release_offer(provider_id);
        self.notify_task(booking.id, DispatchEvent::Declined(provider_id));
        metrics::counter!("hilot_offers_declined_total").increment(1);
        Ok(())
    }

    /// A therapist's socket closed: their open offers move on to the next therapist.
    pub fn therapist_disconnected(&self, provider_id: i64) {
        let bookings: Vec<i64> = {
            let mut registry = self.inner.registry.lock();
            registry
                .offers
                .iter_mut()
                .filter_map(|(booking, offers)| match offers.get(&provider_id) {
                    Some(offer) if !offer.claimed => {
                        offers.remove(&provider_id);
                        Some(*booking)
                    }
                    _ => None,
                })
                .collect()
        };
        for booking in bookings {
            self.inner.index.release_offer(provider_id);
            self.notify_task(booking, DispatchEvent::Disconnected(provider_id));
        }
    }

    /// A status change by the assigned therapist (or an admin).
    pub async fn change_status(
        &self,
        booking_uuid: Uuid,
        caller: Caller,
        to: BookingStatus,
    ) -> Result<BookingView, ApiError> {
        cancellation::refuse_status_cancel(to)?;
        let booking = self.visible_booking(booking_uuid, caller).await?;
        let actor = if caller.provider_id.is_some() && booking.provider_id == caller.provider_id {
            Actor::Therapist
        } else if caller.is_admin {
            Actor::Admin
        } else {
            Actor::Customer
        };
        check_transition(booking.status, to, actor).map_err(transition_error)?;
        self.apply_transition(
            &booking,
            to,
            Some(caller.user_id),
            &format!("Marked {} by the {}", to.as_str(), actor_label(actor)),
        )
        .await
    }

    async fn apply_transition(
        &self,
        booking: &BookingFacts,
        to: BookingStatus,
        actor_user: Option<i64>,
        note: &str,
    ) -> Result<BookingView, ApiError> {
        let mut tx = self
            .inner
            .db
            .begin()
            .await
            .context("starting a status change")?;
        store::set_actor(&mut tx, actor_user, note)
            .await
            .context("marking the actor")?;
        let stamp = match to {
            BookingStatus::InProgress => ", started_at = now()",
            BookingStatus::Completed => ", completed_at = now()",
            _ => "",
        };
        let rows = sqlx::query(&format!(
            "UPDATE bookings SET status = $3{stamp} WHERE id = $1 AND status = $2"
        ))
        .bind(booking.id)
        .bind(booking.status)
        .bind(to)
        .execute(&mut *tx)
        .await
        .context("changing the status")?
        .rows_affected();
        if rows == 0 {
            return Err(ApiError::Conflict(
                "the booking changed meanwhile; reload it".into(),
            ));
        }
        if to == BookingStatus::Completed {
            sqlx::query(
                "UPDATE providers p SET total_bookings = COALESCE(p.total_bookings, 0) + 1, \
                     total_earnings = COALESCE(p.total_earnings, 0) + b.provider_earnings \
                 FROM bookings b WHERE b.id = $1 AND p.id = b.provider_id",
            )
            .bind(booking.id)
            .execute(&mut *tx)
            .await
            .context("updating the provider's statistics")?;
        }
        crate::effects::on_booking_transition(&mut tx, booking.id).await?;
        let view = store::view(&mut tx, booking.id)
            .await
            .context("loading the booking")?;
        tx.commit().await.context("committing the status change")?;
        if let Some(provider_id) = booking.provider_id {
            if to.is_final() {
                self.end_trip(provider_id);
            } else if let Some(trip) = self.inner.registry.lock().trips.get_mut(&provider_id) {
                trip.status = to;
            }
        }
        self.push_status(booking.id, None).await;
        Ok(view)
    }

    /// Cancels a booking for its customer, its therapist or an admin, with the policy's fee
    /// (the rule is [`cancellation::cancel`]); dispatch stops and the therapist is free again.
    pub async fn cancel(
        &self,
        booking_uuid: Uuid,
        caller: Caller,
        reason: &str,
    ) -> Result<BookingView, ApiError> {
        let booking = self.visible_booking(booking_uuid, caller).await?;
        let actor = if booking.customer_id == caller.user_id {
            Actor::Customer
        } else if caller.provider_id.is_some() && booking.provider_id == caller.provider_id {
            Actor::Therapist
        } else {
            Actor::Admin
        };
        let policy = DispatchSettings::load(&self.inner.db).await.cancellation;
        let mut tx = self
            .inner
            .db
            .begin()
            .await
            .context("starting a cancellation")?;
        let note = format!("Cancelled by the {}: {reason}", actor_label(actor));
        let request = cancellation::Cancellation {
            booking_id: booking.id,
            actor,
            actor_user: Some(caller.user_id),
            reason,
            note: &note,
            only_from: None,
        };
        let cancelled = cancellation::cancel(&mut tx, request, &policy).await?;
        let view = store::view(&mut tx, booking.id)
            .await
            .context("loading the booking")?;
        tx.commit().await.context("committing the cancellation")?;
        if cancelled.previous == BookingStatus::Pending {
            self.notify_task(booking.id, DispatchEvent::Gone);
        }
        if let Some(provider_id) = cancelled.provider_id {
            self.end_trip(provider_id);
        }
        self.push_status(booking.id, Some(reason)).await;
        Ok(view)
    }

    /// The booking if the caller is its customer, its therapist or an admin; otherwise 404,
    /// exactly as for a booking that does not exist.
    pub async fn visible_booking(
        &self,
        booking_uuid: Uuid,
        caller: Caller,
    ) -> Result<BookingFacts, ApiError> {
        let booking = store::facts_by_uuid(&self.inner.db, booking_uuid)
            .await
            .context("loading the booking")?
            .ok_or_else(|| ApiError::not_found("booking"))?;
        let is_customer = booking.customer_id == caller.user_id;
        let is_therapist =
            caller.provider_id.is_some() && booking.provider_id == caller.provider_id;
        if is_customer || is_therapist || caller.is_admin {
            Ok(booking)
        } else {
            Err(ApiError::not_found("booking"))
        }
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

    /// The customer's live view: status, ETA, and the therapist's position while on the way.
    pub fn track(&self, booking: &BookingFacts) -> (Option<LiveFix>, Option<u32>) {
        if !booking.status.shares_position() {
            return (None, None);
        }
        let Some(provider_id) = booking.provider_id else {
            return (None, None);
        };
        let Some(fix) = self.inner.index.live_fix(provider_id) else {
            return (None, None);
        };
        let eta = booking.lat.zip(booking.lng).map(|(lat, lng)| {
            self.inner
                .eta
                .eta_seconds(distance_m(fix.point, Point::new(lat, lng)))
        });
        (Some(fix), eta)
    }

    /// Tells the customer and the dashboards about a booking just created (pending).
    pub async fn announce(&self, booking_id: i64) {
        self.push_status(booking_id, None).await;
    }

    fn provider_uuid(&self, provider_id: Option<i64>) -> Option<Uuid> {
        provider_id
            .and_then(|p| self.inner.index.identity(p))
            .map(|(_, uuid)| uuid)
    }

    /// Pushes the booking's status to its customer, its therapist and the dashboards.
    async fn push_status(&self, booking_id: i64, reason: Option<&str>) {
        let Ok(Some(facts)) = store::facts_by_id(&self.inner.db, booking_id).await else {
            return;
        };
        let mut payload = json!({
            "type": "booking.status",
            "booking_id": facts.uuid,
            "status": facts.status,
            "at": Utc::now(),
        });
        if let Some(reason) = reason {
            payload["reason"] = json!(reason);
        }
        if let (Some(lat), Some(lng)) = (facts.lat, facts.lng) {
            let mut for_map = payload.clone();
            for_map["lat"] = json!(lat);
            for_map["lng"] = json!(lng);
            for_map["provider_id"] = json!(self.provider_uuid(facts.provider_id));
            for_map["booking_number"] = json!(facts.booking_number);
            self.inner
                .dashboards
                .booking_changed(Point::new(lat, lng), for_map);
        }
        let frame = frame(payload);
        self.inner
            .bus
            .to_user(facts.customer_id, frame.clone())
            .await;
        if let Some(therapist) = facts.provider_user_id {
            self.inner.bus.to_user(therapist, frame).await;
        }
    }

    /// Called for every accepted, matchable fix: live position for the customer (at most once a
    /// second while accepted or en route) and arrival by geofence while en route.
    pub fn on_fix(&self, provider_id: i64, fix: LiveFix) {
        let mut push = None;
        let mut arrive = None;
        {
            let mut registry = self.inner.registry.lock();
            let Some(trip) = registry.trips.get_mut(&provider_id) else {
                return;
            };
            if trip.status.shares_position()
                && trip
                    .last_push
                    .is_none_or(|at| at.elapsed() >= LOCATION_PUSH_INTERVAL)
            {
                trip.last_push = Some(Instant::now());
                let eta = trip
                    .destination
                    .map(|d| self.inner.eta.eta_seconds(distance_m(fix.point, d)));
                push = Some((
                    trip.customer_id,
                    json!({
                        "type": "provider.location",
                        "booking_id": trip.booking_uuid,
                        "lat": fix.point.lat,
                        "lng": fix.point.lng,
                        "heading": fix.heading,
                        "eta_seconds": eta,
                        "at": fix.at,
                    }),
                ));
            }
            if trip.status == BookingStatus::EnRoute && !trip.arriving {
                if let Some(destination) = trip.destination {
                    let d = distance_m(fix.point, destination);
                    if d <= self.inner.arrival_radius_m {
                        let since = *trip.inside_since.get_or_insert(fix.at);
                        if fix.at - since >= self.inner.arrival_dwell {
                            trip.arriving = true;
                            arrive = Some(trip.booking_id);
                        }
                    } else if d > self.inner.arrival_radius_m * GEOFENCE_EXIT_FACTOR {
                        trip.inside_since = None;
                    }
                }
            }
        }
        if let Some((customer, payload)) = push {
            let bus = self.inner.bus.clone();
            tokio::spawn(async move { bus.to_user(customer, frame(payload)).await });
        }
        if let Some(booking_id) = arrive {
            let this = self.clone();
            tokio::spawn(async move { this.arrive_by_geofence(provider_id, booking_id).await });
        }
    }

    async fn arrive_by_geofence(&self, provider_id: i64, booking_id: i64) {
        let Ok(Some(booking)) = store::facts_by_id(&self.inner.db, booking_id).await else {
            return;
        };
        if check_transition(booking.status, BookingStatus::Arrived, Actor::System).is_err() {
            return;
        }
        let note = format!(
            "Arrived (geofence: within {:.0} m for {} s)",
            self.inner.arrival_radius_m,
            self.inner.arrival_dwell.num_seconds()
        );
        if let Err(error) = self
            .apply_transition(&booking, BookingStatus::Arrived, None, &note)
            .await
        {
            tracing::warn!(booking_id, %error, "geofence arrival not recorded");
            if let Some(trip) = self.inner.registry.lock().trips.get_mut(&provider_id) {
                trip.arriving = false;
            }
        } else {
            metrics::counter!("hilot_geofence_arrivals_total").increment(1);
        }
    }
}

fn actor_label(actor: Actor) -> &'static str {
    match actor {
        Actor::Customer => "customer",
        Actor::Therapist => "therapist",
        Actor::System => "system",
        Actor::Admin => "admin",
    }
}

/// The promo terms reserved for a booking, if any.
async fn promo_terms_for_booking(
    tx: &mut sqlx::PgConnection,
    booking_id: i64,
) -> Result<Option<pricing::PromoTerms>, ApiError> {
    let row: Option<(String, Decimal, Option<Decimal>, Option<Decimal>)> = sqlx::query_as(
        "SELECT pc.discount_type::text, pc.discount_value, pc.max_discount_amount, pc.min_booking_amount \
         FROM promo_code_usages u JOIN promo_codes pc ON pc.id = u.promo_code_id WHERE u.booking_id = $1",
    )
    .bind(booking_id)
    .fetch_optional(&mut *tx)
    .await
    .context("reading the booking's promo code")?;
    Ok(row.map(|(kind, value, max, min)| pricing::PromoTerms {
        discount: if kind == "percentage" {
            pricing::Discount::Percentage {
                percent: value,
                max,
            }
        } else {
            pricing::Discount::FixedAmount(value)
        },
        min_booking_amount: min,
    }))
}
