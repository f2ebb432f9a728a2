//! A dispatcher steering the engine by hand: offering a pending booking to a chosen therapist
//! ahead of the matcher, and handing an accepted booking to another therapist.
//!
//! Both go through the engine, not around it. A dispatcher's offer is an ordinary row in
//! `booking_offers` (made by `sql/offers_open.sql`, with its eligibility checks and the unique
//! index on open offers per therapist); the matcher then hears `OfferOpened` and owns it like
//! its own (the offer frame, the expiry timer, the therapist reserved in the index), and the
//! therapist accepts through the one accept path. A reassignment commits like every transition
//! (compare-and-set on status and therapist, the unique index on active bookings per therapist
//! as the last word); the first therapist's trip ends, so the matcher hears they are available
//! again, and they are told on their socket.
//!
//! Every action is written to `audit_logs` in its own transaction.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::cancellation::{Cancellation, FeeDecision};
use super::lifecycle::{Actor, BookingStatus};
use super::matcher::MatchEvent;
use super::notify::frame;
use super::offers::{self, OfferView};
use super::settings::DispatchSettings;
use super::store::{self, BookingFacts};
use super::transitions::Changed;
use super::waiting::PlannedOffer;
use super::Dispatcher;
use crate::audit::{self, AuditContext};
use crate::error::{exclusion_violation, unique_violation, ApiError, Context as _, FieldError};
use crate::geo::index::{ServiceOffer, TherapistState};
use crate::geo::{distance_m, Point};

/// `reason` on the frames of a reassigned booking.
pub const REASSIGNED: &str = "reassigned";

/// The therapist a dispatcher chose, as the engine knows them now.
struct Chosen {
    provider_id: i64,
    first_name: String,
    terms: ServiceOffer,
    distance_m: f64,
    eta_seconds: u32,
}

impl Dispatcher {
    /// A booking a dispatcher acts on: 404 if unknown, 409 for an in-store booking (the store
    /// confirms those; nobody is dispatched).
    async fn dispatched_booking(&self, booking_uuid: Uuid) -> Result<BookingFacts, ApiError> {
        let booking = store::facts_by_uuid(&self.inner.db, booking_uuid)
            .await
            .context("loading the booking")?
            .ok_or_else(|| ApiError::not_found("booking"))?;
        let kind: String = sqlx::query_scalar("SELECT type::text FROM bookings WHERE id = $1")
            .bind(booking.id)
            .fetch_one(&self.inner.db)
            .await
            .context("loading the booking")?;
        if kind != "home_service" {
            return Err(ApiError::Conflict(
                "an in-store booking is confirmed by its store; it is not dispatched".into(),
            ));
        }
        Ok(booking)
    }

    /// The chosen therapist if they can take this booking now: known (404 on `therapist_id`
    /// otherwise), online with a fresh position, not busy or holding another offer, offering
    /// the booking's service at home (409 naming what is missing).
    async fn choose(&self, booking: &BookingFacts, therapist: Uuid) -> Result<Chosen, ApiError> {
        let provider_id: i64 = sqlx::query_scalar(
            "SELECT id FROM providers WHERE uuid = $1 AND type = 'therapist' AND deleted_at IS NULL",
        )
        .bind(therapist)
        .fetch_optional(&self.inner.db)
        .await
        .context("finding the therapist")?
        .ok_or_else(|| {
            ApiError::FieldNotFound(FieldError::new("therapist_id", "no such therapist"))
        })?;
        let index = &self.inner.index;
        let Some(profile) = index.profile(provider_id) else {
            return Err(ApiError::Conflict(
                "the therapist is offline (not connected)".into(),
            ));
        };
        match index.state(provider_id) {
            Some(TherapistState::Available) => {}
            Some(TherapistState::Offered) => {
                return Err(ApiError::Conflict(
                    "the therapist is answering another offer now".into(),
                ))
            }
            Some(TherapistState::Busy) => {
                return Err(ApiError::Conflict(
                    "the therapist is on another booking".into(),
                ))
            }
            Some(TherapistState::Offline) | None => {
                return Err(ApiError::Conflict(
                    "the therapist is offline (no recent position, or switched off)".into(),
                ))
            }
        }
        if !(profile.verified && profile.active) {
            return Err(ApiError::Conflict(
                "the therapist is not verified and active".into(),
            ));
        }
        let Some(terms) = profile
            .services
            .iter()
            .find(|s| s.service_id == booking.service_id && s.available && s.home_service_enabled)
            .cloned()
        else {
            return Err(ApiError::Conflict(
                "the therapist does not offer this service at home".into(),
            ));
        };
        let fix = index
            .live_fix(provider_id)
            .ok_or_else(|| ApiError::Conflict("the therapist has no recent position".into()))?;
        let destination = booking
            .lat
            .zip(booking.lng)
            .map(|(lat, lng)| Point::new(lat, lng))
            .ok_or_else(|| ApiError::Conflict("the booking has no location".into()))?;
        let distance = distance_m(fix.point, destination);
        Ok(Chosen {
            provider_id,
            first_name: profile.first_name,
            terms,
            distance_m: distance,
            eta_seconds: self.inner.eta.eta_seconds(distance),
        })
    }

    /// Offers a pending booking to the therapist a dispatcher chose, now, beside any offers the
    /// matcher has open; the first accept wins as always. Answers the booking's offers.
    pub async fn offer_to(
        &self,
        booking_uuid: Uuid,
        therapist: Uuid,
        reason: Option<&str>,
        audit_context: &AuditContext,
    ) -> Result<Vec<OfferView>, ApiError> {
        let booking = self.dispatched_booking(booking_uuid).await?;
        if booking.status != BookingStatus::Pending {
            return Err(ApiError::Conflict(format!(
                "the booking is {}; only a pending booking can be offered",
                booking.status.as_str()
            )));
        }
        if booking.is_request() {
            // A request names its therapist, who answers it; the matcher never offers it.
            return Err(ApiError::Conflict(
                "the booking is a request to a named therapist: they accept or decline it".into(),
            ));
        }
        let chosen = self.choose(&booking, therapist).await?;
        // The customer's price ceiling, as the matcher keeps it (the accept checks it again).
        if let Some(max) = booking.max_service_amount {
            let asked = super::pricing::service_subtotal(&chosen.terms, chosen.distance_m);
            if asked > max {
                return Err(ApiError::Conflict(format!(
                    "the therapist's price for this booking ({}) is above what the customer \
                     accepts ({})",
                    crate::money::ledger::money_text(asked),
                    crate::money::ledger::money_text(max)
                )));
            }
        }
        // The matcher's calendar rule: an offer the therapist could not accept (it would overlap
        // their bookings for later, or fall outside their schedule) would only hold the booking
        // until it expired.
        if let Some(place) = booking
            .lat
            .zip(booking.lng)
            .map(|(lat, lng)| Point::new(lat, lng))
        {
            let travel = chrono::Duration::seconds(i64::from(chosen.eta_seconds));
            let job = super::matcher::job_of(&booking, place);
            if !self.inner.diary.can_take(
                chosen.provider_id,
                &job,
                travel,
                Utc::now(),
                self.inner.eta,
            ) {
                return Err(ApiError::Conflict(
                    "the therapist's calendar has no room for this booking".into(),
                ));
            }
        }
        let settings = DispatchSettings::load(&self.inner.db).await;
        // The matcher's deadline: a booking for later is offered until its lead time, a booking
        // for now until the pending timeout.
        let scheduled_at = booking.scheduled_at.filter(|_| booking.is_scheduled());
        let deadline = super::scheduled::offer_deadline(
            booking.requested_at,
            scheduled_at,
            crate::schedule::SchedulingSettings::load(&self.inner.db)
                .await
                .lead,
            chrono::Duration::from_std(settings.pending_timeout).unwrap_or_default(),
        );
        let expires_at: DateTime<Utc> = (Utc::now()
            + chrono::Duration::from_std(settings.offer_timeout).unwrap_or_default())
        .min(deadline);
        let mut tx = self.inner.db.begin().await.context("starting the offer")?;
        let round: i32 = sqlx::query_scalar(
            "SELECT COALESCE(max(round), 0) + 1 FROM booking_offers WHERE booking_id = $1",
        )
        .bind(booking.id)
        .fetch_one(&mut *tx)
        .await
        .context("reading the booking's offers")?;
        let planned = PlannedOffer {
            booking_id: booking.id,
            provider_id: chosen.provider_id,
            distance_m: chosen.distance_m,
            eta_seconds: chosen.eta_seconds,
            terms: chosen.terms.clone(),
        };
        let made = offers::open(&mut *tx, &[(planned, round, expires_at)])
            .await
            .context("opening the offer")?;
        if made.is_empty() {
            // The database's word, whatever this node's index said: the booking left pending,
            // or the therapist went offline, took a booking or holds an offer made elsewhere.
            return Err(ApiError::Conflict(
                "the offer could not be made: the booking is no longer pending, or the \
                 therapist is no longer free to take it"
                    .into(),
            ));
        }
        audit::record(
            &mut *tx,
            audit_context,
            "booking.offered",
            "booking",
            booking.id,
            json!({"status": booking.status}),
            json!({"offered_to": {"id": therapist, "first_name": chosen.first_name},
                   "round": round, "expires_at": expires_at, "reason": reason}),
        )
        .await
        .context("auditing the offer")?;
        tx.commit().await.context("committing the offer")?;
        metrics::counter!("hilot_dispatcher_offers_total").increment(1);
        // The matcher owns the offer from here: the frame, the expiry, the reservation.
        self.signal(MatchEvent::OfferOpened {
            booking_id: booking.id,
            provider_id: chosen.provider_id,
        });
        offers::for_booking(&self.inner.db, booking.id)
            .await
            .context("listing the booking's offers")
    }

    /// Hands an accepted (or en-route) booking to another therapist, who must be free now. The
    /// customer keeps the price they were given; the new therapist starts from `accepted`. The
    /// first therapist is freed (the matcher may offer them other bookings at once) and hears
    /// `booking.reassigned`; the customer, the new therapist and the dashboards get the status.
    pub async fn reassign(
        &self,
        booking_uuid: Uuid,
        therapist: Uuid,
        reason: &str,
        audit_context: &AuditContext,
    ) -> Result<Changed, ApiError> {
        let booking = self.dispatched_booking(booking_uuid).await?;
        if !matches!(
            booking.status,
            BookingStatus::Accepted | BookingStatus::EnRoute
        ) {
            return Err(ApiError::Conflict(format!(
                "the booking is {}; only an accepted or en-route booking can be reassigned",
                booking.status.as_str()
            )));
        }
        let Some(first) = booking.provider_id else {
            return Err(ApiError::Conflict("the booking has no therapist".into()));
        };
        let first_uuid: Uuid = sqlx::query_scalar("SELECT uuid FROM providers WHERE id = $1")
            .bind(first)
            .fetch_one(&self.inner.db)
            .await
            .context("loading the first therapist")?;
        if first_uuid == therapist {
            return Err(ApiError::invalid(
                "therapist_id",
                "the booking is already with this therapist",
            ));
        }
        let chosen = self.choose(&booking, therapist).await?;
        let mut tx = self
            .inner
            .db
            .begin()
            .await
            .context("starting the reassignment")?;
        let free: bool = sqlx::query_scalar(include_str!("../../sql/therapist_free_now.sql"))
            .bind(chosen.provider_id)
            .fetch_one(&mut *tx)
            .await
            .context("checking the therapist")?;
        if !free {
            return Err(ApiError::Conflict(
                "the therapist is no longer free to take it (offline, on a booking, or holding \
                 an offer)"
                    .into(),
            ));
        }
        let note = format!(
            "Reassigned by a dispatcher to {}: {reason}",
            chosen.first_name
        );
        store::set_actor(&mut tx, audit_context.actor_user_id, &note)
            .await
            .context("marking the actor")?;
        let moved: Result<Option<i64>, sqlx::Error> =
            sqlx::query_scalar(include_str!("../../sql/booking_reassign.sql"))
                .bind(booking.id)
                .bind(booking.status)
                .bind(first)
                .bind(chosen.provider_id)
                .bind(chosen.distance_m)
                .bind(i32::try_from(chosen.eta_seconds.div_ceil(60)).unwrap_or(i32::MAX))
                .fetch_optional(&mut *tx)
                .await;
        match moved {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(ApiError::Conflict(
                    "the booking changed meanwhile; reload it".into(),
                ))
            }
            Err(error) if unique_violation(&error).is_some() => {
                return Err(ApiError::Conflict(
                    "the therapist is on another booking".into(),
                ))
            }
            Err(error) if exclusion_violation(&error).is_some() => {
                return Err(ApiError::Conflict(
                    "the therapist's calendar has no room for this booking".into(),
                ))
            }
            Err(error) => return Err(ApiError::from(error)),
        }
        // The offers list shows the hand-over: an offer accepted on the therapist's behalf.
        sqlx::query(include_str!("../../sql/offers_record_reassignment.sql"))
            .bind(booking.id)
            .bind(chosen.provider_id)
            .bind(chosen.distance_m)
            .bind(i32::try_from(chosen.eta_seconds).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await
            .context("recording the reassignment")?;
        audit::record(
            &mut *tx,
            audit_context,
            "booking.reassigned",
            "booking",
            booking.id,
            json!({"status": booking.status, "therapist_id": first_uuid}),
            json!({"status": BookingStatus::Accepted, "therapist_id": therapist, "reason": reason}),
        )
        .await
        .context("auditing the reassignment")?;
        tx.commit().await.context("committing the reassignment")?;
        metrics::counter!("hilot_bookings_reassigned_total").increment(1);

        // The new therapist is busy before the first is freed, so the matcher never sees both
        // free. A booking for later becomes a trip only when its therapist sets out (as in
        // `commit_transition`): tracking it now would stream the new therapist's position to
        // the customer for days and keep them from every other job. The first therapist's trip
        // ends only if it is this booking's (they may be on the way to another one).
        if !booking.is_scheduled() {
            self.track_trip(&booking, chosen.provider_id, BookingStatus::Accepted);
        }
        self.end_trip_of(first, booking.id);
        // Both calendars changed: one lost this booking, the other gained it.
        for provider_id in [first, chosen.provider_id] {
            let diary = self.inner.diary.clone();
            let db = self.inner.db.clone();
            tokio::spawn(async move { diary.changed(&db, provider_id).await });
        }
        if let Some(user_id) = self.provider_user(first).await {
            self.inner
                .bus
                .to_user(
                    user_id,
                    frame(
                        json!({"type": "booking.reassigned", "booking_id": booking.uuid,
                                 "reason": reason}),
                    ),
                )
                .await;
        }
        self.push_status(booking.id, Some(REASSIGNED)).await;
        Ok(Changed {
            booking_id: booking.id,
        })
    }

    /// Cancels a booking for a dispatcher through the one cancellation rule, with their fee
    /// decision: `charge_fee` asks of the customer what the policy asks of a customer
    /// cancelling now (nothing while pending or inside the free window); otherwise no fee. The
    /// money and the audit row are in the cancellation's transaction.
    pub async fn cancel_by_dispatcher(
        &self,
        booking_uuid: Uuid,
        reason: &str,
        charge_fee: bool,
        audit_context: &AuditContext,
    ) -> Result<Changed, ApiError> {
        let booking = store::facts_by_uuid(&self.inner.db, booking_uuid)
            .await
            .context("loading the booking")?
            .ok_or_else(|| ApiError::not_found("booking"))?;
        let note = format!("Cancelled by a dispatcher: {reason}");
        let request = Cancellation {
            booking_id: booking.id,
            actor: Actor::Admin,
            actor_user: audit_context.actor_user_id,
            reason,
            note: &note,
            only_from: None,
            assigned_to: None,
            fee: if charge_fee {
                FeeDecision::ChargeCustomer
            } else {
                FeeDecision::Waive
            },
        };
        let (mut tx, cancelled) = self.start_cancellation(request).await?;
        audit::record(
            &mut *tx,
            audit_context,
            "booking.cancelled",
            "booking",
            booking.id,
            json!({"status": cancelled.previous}),
            json!({"status": BookingStatus::Cancelled, "reason": reason, "charge_fee": charge_fee,
                   "cancellation_fee": crate::domain::money::round_money(cancelled.fee).to_string()}),
        )
        .await
        .context("auditing the cancellation")?;
        self.commit_cancellation(tx, &booking, cancelled, reason)
            .await
    }

    /// Marks a therapist offline for a dispatcher, in one transaction: their availability
    /// switch off, their open offer withdrawn, the audit row. The caller refreshes the live
    /// index, then [`Dispatcher::offline_committed`] tells the matcher and the therapist.
    pub async fn mark_offline(
        &self,
        provider_uuid: Uuid,
        reason: &str,
        audit_context: &AuditContext,
    ) -> Result<MarkedOffline, ApiError> {
        let mut tx = self.inner.db.begin().await.context("starting the change")?;
        let found: Option<(i64, i64, bool)> = sqlx::query_as(
            "SELECT id, user_id, COALESCE(is_available, false) FROM providers \
             WHERE uuid = $1 AND type = 'therapist' AND deleted_at IS NULL FOR UPDATE",
        )
        .bind(provider_uuid)
        .fetch_optional(&mut *tx)
        .await
        .context("finding the therapist")?;
        let (provider_id, user_id, was_online) =
            found.ok_or_else(|| ApiError::not_found("therapist"))?;
        sqlx::query("UPDATE providers SET is_available = false WHERE id = $1")
            .bind(provider_id)
            .execute(&mut *tx)
            .await
            .context("marking the therapist offline")?;
        let withdrawn: Vec<(i64, Uuid)> = sqlx::query_as(
            "UPDATE booking_offers o SET outcome = 'withdrawn', closed_at = now() FROM bookings b \
             WHERE o.provider_id = $1 AND o.outcome IS NULL AND b.id = o.booking_id \
             RETURNING b.id, b.uuid",
        )
        .bind(provider_id)
        .fetch_all(&mut *tx)
        .await
        .context("withdrawing the therapist's offer")?;
        audit::record(
            &mut *tx,
            audit_context,
            "therapist.marked_offline",
            "provider",
            provider_id,
            json!({"is_available": was_online}),
            json!({"is_available": false, "reason": reason,
                   "offers_withdrawn": withdrawn.iter().map(|(_, uuid)| uuid).collect::<Vec<_>>()}),
        )
        .await
        .context("auditing the change")?;
        tx.commit().await.context("committing the change")?;
        Ok(MarkedOffline {
            provider_id,
            user_id,
            was_online,
            withdrawn,
        })
    }

    /// After [`Dispatcher::mark_offline`] committed and the index knows: the matcher (on
    /// whichever node) moves the withdrawn offer on, and the therapist hears it.
    pub async fn offline_committed(&self, marked: &MarkedOffline) {
        for (booking_id, booking_uuid) in &marked.withdrawn {
            self.signal(MatchEvent::OfferClosed {
                booking_id: *booking_id,
                provider_id: marked.provider_id,
                outcome: offers::Outcome::Withdrawn,
            });
            self.tell_withdrawn(*booking_uuid, &[marked.provider_id], "offline")
                .await;
        }
    }
}

/// What marking a therapist offline did.
#[derive(Debug, Clone)]
pub struct MarkedOffline {
    pub provider_id: i64,
    pub user_id: i64,
    pub was_online: bool,
    /// The bookings whose open offer to them was withdrawn (id, public id).
    pub withdrawn: Vec<(i64, Uuid)>,
}
