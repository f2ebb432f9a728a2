//! Scheduled bookings in the lifecycle: requests to a named therapist (accept, decline, lapse),
//! the warning to a customer whose open booking nobody has taken, the therapist told to set out
//! at `scheduled_at − lead` (the booking then shows on the dashboard), and reminders before it.
//!
//! The sweep runs every [`SWEEP_INTERVAL`] on every node; each step is a compare-and-set, so
//! several nodes sweeping at once still act once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgExecutor;
use tokio::sync::watch;
use uuid::Uuid;

use super::accept::{Acceptance, TherapistTerms};
use super::lifecycle::BookingStatus;
use super::matcher::ACCEPT_GRACE;
use super::notify::frame;
use super::store::{self, BookingFacts, BookingView};
use super::transitions::Changed;
use super::transitions::Transition;
use super::{Caller, Dispatcher};
use crate::error::{ApiError, Context as _};
use crate::geo::Point;
use crate::schedule::SchedulingSettings;

/// Until when a booking is offered. A booking for now: its pending timeout. A booking for later:
/// until its lead time (when its therapist must set out), but never less than a booking for now
/// gets (one made for the earliest slot, right at the lead time, would otherwise be cancelled
/// before any offer went out), and never past its start.
pub fn offer_deadline(
    requested_at: DateTime<Utc>,
    scheduled_at: Option<DateTime<Utc>>,
    lead: chrono::Duration,
    pending_timeout: chrono::Duration,
) -> DateTime<Utc> {
    let for_now = requested_at + pending_timeout;
    match scheduled_at {
        Some(start) => (start - lead).max(for_now).min(start),
        None => for_now,
    }
}

/// How often the sweep looks for lapsed requests, due bookings and reminders.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(2);
/// `cancellation_reason` of a request the named therapist declined.
pub const DECLINED_BY_THERAPIST: &str = "declined_by_therapist";
/// `cancellation_reason` of a request the named therapist did not answer in time.
pub const REQUEST_EXPIRED: &str = "request_expired";

/// Notification and socket event types of scheduled bookings.
pub mod event {
    /// To the named therapist: a customer asks for them.
    pub const REQUEST: &str = "booking.request";
    /// Before a scheduled booking (`minutes_before`), to both sides.
    pub const REMINDER: &str = "booking.reminder";
    /// To the customer of an open booking nobody has taken yet, before it is cancelled.
    pub const UNMATCHED: &str = "booking.unmatched";
    /// To the assigned therapist at `scheduled_at − lead`: time to set out.
    pub const DUE: &str = "booking.due";
    /// A reschedule request was made, approved, rejected or expired.
    pub const RESCHEDULE: &str = "booking.reschedule";
}

/// Writes a notification row (the in-app list).
pub(super) async fn notice(
    db: impl PgExecutor<'_>,
    user_id: i64,
    kind: &str,
    title: &str,
    body: &str,
    data: &Value,
) -> sqlx::Result<bool> {
    sqlx::query(
        "INSERT INTO notifications (user_id, type, title, body, action_type, action_data) \
         VALUES ($1, $2, $3, $4, 'open_booking', $5) ON CONFLICT DO NOTHING",
    )
    .bind(user_id)
    .bind(kind)
    .bind(title)
    .bind(body)
    .bind(data)
    .execute(db)
    .await
    .map(|r| r.rows_affected() > 0)
}

impl Dispatcher {
    /// Tells the named therapist about a request (socket frame and notification).
    pub async fn announce_request(&self, booking: &BookingFacts, view: &BookingView) {
        let Some(provider_id) = booking.requested_provider_id else {
            return;
        };
        let Some(user_id) = self.provider_user(provider_id).await else {
            return;
        };
        let payload = json!({
            "type": event::REQUEST,
            "booking_id": booking.uuid,
            "service": view.service,
            "location": view.location,
            "scheduled_at": booking.scheduled_at,
            "duration_minutes": booking.duration_minutes,
            "expires_at": booking.request_expires_at,
        });
        let body = format!(
            "Booking {} asks for you on {}",
            booking.booking_number,
            booking
                .scheduled_at
                .map(|at| at.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_default()
        );
        if let Err(error) = notice(
            &self.inner.db,
            user_id,
            event::REQUEST,
            "New booking request",
            &body,
            &payload,
        )
        .await
        {
            tracing::warn!(%error, "writing a request notification failed");
        }
        self.inner.bus.to_user(user_id, frame(payload)).await;
    }

    /// The named therapist accepts a request: the booking is theirs, its slot already held.
    pub(super) async fn accept_request(
        &self,
        booking: &BookingFacts,
        caller: Caller,
        asked_at: DateTime<Utc>,
    ) -> Result<Changed, ApiError> {
        let mut tx = self.inner.db.begin().await.context("starting the accept")?;
        let (status, expires_at, eligible): (BookingStatus, Option<DateTime<Utc>>, bool) =
            sqlx::query_as(
                "SELECT b.status, b.request_expires_at, \
                        EXISTS (SELECT 1 FROM therapists_eligible_now e WHERE e.provider_id = b.requested_provider_id) \
                 FROM bookings b WHERE b.id = $1 FOR UPDATE",
            )
            .bind(booking.id)
            .fetch_one(&mut *tx)
            .await
            .context("locking the booking")?;
        if status != BookingStatus::Pending {
            return Err(ApiError::Conflict(format!(
                "the request is no longer open: the booking is {}",
                status.as_str()
            )));
        }
        if expires_at.is_some_and(|at| at + ACCEPT_GRACE < asked_at) {
            return Err(ApiError::Conflict("the request expired".into()));
        }
        if !eligible {
            return Err(ApiError::Forbidden(
                "only a verified, active therapist may accept bookings".into(),
            ));
        }
        // Priced as an offer's accept is: the booking showed the catalog's estimate until now;
        // it is charged the named therapist's own price for the service (with the promo it
        // holds), and their travel surcharge from their base, as slot quotes measure it (from
        // where they are now when they have no base, else none).
        let provider_id = caller
            .provider_id
            .ok_or_else(|| ApiError::Forbidden("only therapists accept bookings".into()))?;
        let terms = TherapistTerms::read(&mut tx, provider_id, booking.service_id, booking.id)
            .await
            .context("reading the therapist's terms")?
            .ok_or_else(|| ApiError::Conflict("you no longer offer this service".into()))?;
        if terms
            .terms_updated_at
            .is_some_and(|at| at > booking.requested_at)
        {
            // As for an offer: the customer asked on the terms of their time.
            return Err(ApiError::Conflict(
                "your price or travel terms for this service changed after this request was \
                 made: decline it, and the customer can ask again on your new terms"
                    .into(),
            ));
        }
        let base = self
            .inner
            .diary
            .get(provider_id)
            .and_then(|entry| entry.base);
        let from = base.or_else(|| self.inner.index.live_fix(provider_id).map(|fix| fix.point));
        let distance_m = match (booking.lat, booking.lng, from) {
            (Some(lat), Some(lng), Some(from)) => {
                crate::geo::distance_m(Point::new(lat, lng), from)
            }
            _ => 0.0,
        };
        let price = terms.price(distance_m);
        let acceptance = Acceptance {
            booking_id: booking.id,
            provider_id,
            price: &price,
            distance_m,
            travel_minutes: self.inner.eta.eta_minutes(distance_m),
            actor_user_id: caller.user_id,
            offer_id: None,
        };
        if !acceptance
            .take_booking(&mut tx)
            .await
            .context("accepting the request")?
        {
            return Err(ApiError::Conflict("the booking changed meanwhile".into()));
        }
        acceptance
            .record(&mut tx)
            .await
            .context("recording the travel estimate and promo discount")?;
        metrics::counter!("hilot_scheduled_requests_accepted_total").increment(1);
        self.commit_transition(
            tx,
            Transition {
                booking,
                to: BookingStatus::Accepted,
                provider_id: booking.requested_provider_id,
                reason: None,
                effects_written: false,
            },
        )
        .await
    }

    /// The named therapist declines a request: it ends cancelled, free, and the customer hears
    /// why at once.
    pub(super) async fn decline_request(
        &self,
        booking: &BookingFacts,
        caller: Caller,
    ) -> Result<(), ApiError> {
        if booking.status != BookingStatus::Pending {
            return Err(ApiError::Conflict(format!(
                "the request is no longer open: the booking is {}",
                booking.status.as_str()
            )));
        }
        match self
            .cancel_by_system(
                booking,
                DECLINED_BY_THERAPIST,
                "Declined by the therapist",
                Some(caller.user_id),
            )
            .await?
        {
            Some(_) => Ok(()),
            None => Err(ApiError::Conflict("the request is no longer open".into())),
        }
    }

    /// An open scheduled booking nobody has taken: its customer is told, once, when it will be
    /// cancelled unless a therapist takes it.
    pub(super) async fn warn_unmatched(&self, booking_id: i64, cancels_at: DateTime<Utc>) {
        let warned: Option<(i64, Uuid, String, Option<DateTime<Utc>>)> = match sqlx::query_as(
            "UPDATE bookings SET unmatched_warned_at = now() \
             WHERE id = $1 AND status = 'pending' AND unmatched_warned_at IS NULL \
             RETURNING customer_id, uuid, booking_number, scheduled_at",
        )
        .bind(booking_id)
        .fetch_optional(&self.inner.db)
        .await
        {
            Ok(row) => row,
            Err(error) => {
                tracing::warn!(booking_id, %error, "warning an unmatched booking failed");
                return;
            }
        };
        let Some((customer, uuid, number, scheduled_at)) = warned else {
            return;
        };
        let payload = json!({
            "type": event::UNMATCHED,
            "booking_id": uuid,
            "scheduled_at": scheduled_at,
            "cancels_at": cancels_at,
        });
        let body = format!(
            "No therapist has taken booking {number} yet. Unless one does, it is cancelled at {}.",
            cancels_at.format("%H:%M UTC")
        );
        if let Err(error) = notice(
            &self.inner.db,
            customer,
            event::UNMATCHED,
            "Still looking for a therapist",
            &body,
            &payload,
        )
        .await
        {
            tracing::warn!(%error, "writing an unmatched notification failed");
        }
        self.inner.bus.to_user(customer, frame(payload)).await;
    }

    /// One sweep: lapsed requests and reschedule requests, bookings due to start, reminders.
    pub async fn sweep_scheduled(&self) -> anyhow::Result<()> {
        let settings = SchedulingSettings::load(&self.inner.db).await;
        self.expire_requests().await?;
        self.expire_reschedules().await?;
        self.bookings_due(&settings).await?;
        self.send_reminders(&settings).await?;
        Ok(())
    }

    async fn expire_requests(&self) -> anyhow::Result<()> {
        let lapsed: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM bookings WHERE status = 'pending' AND request_expires_at IS NOT NULL \
               AND request_expires_at < now() - make_interval(secs => $1) ORDER BY id LIMIT 200",
        )
        .bind(ACCEPT_GRACE.num_milliseconds() as f64 / 1000.0)
        .fetch_all(&self.inner.db)
        .await?;
        for id in lapsed {
            if let Some(booking) = store::facts_by_id(&self.inner.db, id).await? {
                self.cancel_by_system(
                    &booking,
                    REQUEST_EXPIRED,
                    "The therapist did not answer the request in time",
                    None,
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        Ok(())
    }

    /// At `scheduled_at − lead` the assigned therapist is expected to set out: they are told
    /// (once), and the booking shows on the dashboards.
    async fn bookings_due(&self, settings: &SchedulingSettings) -> anyhow::Result<()> {
        let due: Vec<(i64, Uuid, Option<i64>, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE bookings b SET due_notified_at = now() FROM providers p \
             WHERE p.id = b.provider_id AND b.booking_type = 'scheduled' AND b.status = 'accepted' \
               AND b.due_notified_at IS NULL AND b.scheduled_at <= now() + make_interval(mins => $1) \
             RETURNING b.id, b.uuid, p.user_id, b.scheduled_at",
        )
        .bind(settings.lead.num_minutes() as i32)
        .fetch_all(&self.inner.db)
        .await?;
        for (id, uuid, therapist, scheduled_at) in due {
            if let Some(user_id) = therapist {
                let payload =
                    json!({"type": event::DUE, "booking_id": uuid, "scheduled_at": scheduled_at});
                notice(
                    &self.inner.db,
                    user_id,
                    event::DUE,
                    "Time to set out",
                    "Your scheduled booking starts soon: mark it en route when you leave.",
                    &payload,
                )
                .await?;
                self.inner.bus.to_user(user_id, frame(payload)).await;
            }
            self.push_status(id, None).await;
        }
        Ok(())
    }

    /// Reminders before each accepted scheduled booking (`crate::notifications::reminders`
    /// writes them, once each), told on both parties' sockets too.
    async fn send_reminders(&self, settings: &SchedulingSettings) -> anyhow::Result<()> {
        let written =
            crate::notifications::reminders::due(&self.inner.db, &settings.reminder_minutes)
                .await?;
        for reminder in written {
            metrics::counter!("hilot_booking_reminders_total").increment(1);
            self.inner
                .bus
                .to_user(reminder.user_id, frame(reminder.payload))
                .await;
        }
        Ok(())
    }
}

/// Sweeps every [`SWEEP_INTERVAL`] until shutdown.
pub async fn run(dispatcher: Dispatcher, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(error) = dispatcher.sweep_scheduled().await {
            tracing::warn!(
                error = format!("{error:#}"),
                "the scheduled bookings sweep failed"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        }
    }
}

/// When the therapist of a booking for later may set out (pure): from its lead time,
/// `scheduled_at − lead` (when `booking.due` tells them to). Before, they could run the whole
/// visit days early and complete it, which opens its money and its review. `None` for a
/// booking for now.
pub fn set_out_from(
    scheduled_at: Option<DateTime<Utc>>,
    lead: chrono::Duration,
) -> Option<DateTime<Utc>> {
    scheduled_at.map(|start| start - lead)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn a_therapist_sets_out_for_a_booking_for_later_from_its_lead_time() {
        let start = Utc::now() + Duration::days(2);
        assert_eq!(
            set_out_from(Some(start), Duration::minutes(60)),
            Some(start - Duration::minutes(60))
        );
        assert_eq!(set_out_from(None, Duration::minutes(60)), None);
    }

    #[test]
    fn a_booking_for_later_is_offered_until_its_lead_time_but_never_less_than_one_for_now() {
        let now = Utc::now();
        let (lead, pending) = (Duration::minutes(60), Duration::minutes(5));
        assert_eq!(offer_deadline(now, None, lead, pending), now + pending);
        let tomorrow = now + Duration::days(1);
        assert_eq!(
            offer_deadline(now, Some(tomorrow), lead, pending),
            tomorrow - lead
        );
        // Booked for the earliest slot: the pending window, not an instant.
        let earliest = now + lead;
        assert_eq!(
            offer_deadline(now, Some(earliest), lead, pending),
            now + pending
        );
        // Never past the start.
        let soon = now + Duration::minutes(2);
        assert_eq!(offer_deadline(now, Some(soon), lead, pending), soon);
    }
}
