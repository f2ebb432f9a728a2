//! Status changes and cancellations. Every booking transition commits in one place,
//! [`Dispatcher::commit_transition`]: what must happen inside the transaction (offers closed,
//! provider totals, and settlement when it comes) and what follows the commit (the matcher,
//! trips, status frames).

use rust_decimal::Decimal;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::lifecycle::{check_transition, Actor, BookingStatus, TransitionError};
use super::offers::{self, Outcome};
use super::settings::DispatchSettings;
use super::store::{self, BookingFacts, BookingView};
use super::{matcher::MatchEvent, pricing, Caller, Dispatcher, NO_THERAPIST_AVAILABLE};
use crate::error::{ApiError, Context as _};

pub(super) fn transition_error(error: TransitionError) -> ApiError {
    match error {
        TransitionError::Illegal { .. } => ApiError::Conflict(error.to_string()),
        TransitionError::NotAllowed { .. } => ApiError::Forbidden(error.to_string()),
    }
}

pub(super) fn actor_label(actor: Actor) -> &'static str {
    match actor {
        Actor::Customer => "customer",
        Actor::Therapist => "therapist",
        Actor::System => "system",
        Actor::Admin => "admin",
    }
}

/// A transition whose compare-and-set `UPDATE` ran in the transaction handed with it.
pub(super) struct Transition<'a> {
    pub booking: &'a BookingFacts,
    pub to: BookingStatus,
    /// The therapist who holds the booking after it (accept names the winner).
    pub provider_id: Option<i64>,
    /// Said to therapists whose open offers this transition closes, and on the status frame.
    pub reason: Option<&'a str>,
}

impl Dispatcher {
    /// Commits a transition: the one place every booking transition goes through.
    ///
    /// Inside the transaction: a booking leaving `pending` closes its open offers (`lost_race`
    /// when accepted, `withdrawn` otherwise); a completed booking adds to the therapist's totals;
    /// money settles and the transition's outbox event is written (`effects`).
    /// After the commit: the matcher hears, the therapists whose offers closed are told, trips
    /// start or end, and the customer, the therapist and the dashboards get the status.
    pub(super) async fn commit_transition(
        &self,
        mut tx: Transaction<'static, Postgres>,
        change: Transition<'_>,
    ) -> Result<BookingView, ApiError> {
        let booking = change.booking;
        let leaves_pending = booking.status == BookingStatus::Pending;
        let closed_offers = if leaves_pending {
            let outcome = if change.to == BookingStatus::Accepted {
                Outcome::LostRace
            } else {
                Outcome::Withdrawn
            };
            offers::close_open_of_booking(&mut tx, booking.id, outcome)
                .await
                .context("closing the booking's open offers")?
        } else {
            Vec::new()
        };
        if change.to == BookingStatus::Completed {
            sqlx::query(include_str!("../../sql/provider_totals_on_completion.sql"))
                .bind(booking.id)
                .execute(&mut *tx)
                .await
                .context("updating the provider's statistics")?;
        }
        // Money and the outbox event of the transition, in the same transaction.
        crate::effects::on_booking_transition(&mut tx, booking.id).await?;
        let view = store::view(&mut tx, booking.id)
            .await
            .context("loading the booking")?;
        tx.commit().await.context("committing the status change")?;

        // Trips first: the matcher, hearing the booking left pending, frees the therapists it
        // held for it, and must find the winner already busy. A scheduled booking becomes a
        // trip when its therapist sets out, not when they accept it days ahead.
        match (change.to, change.provider_id.or(booking.provider_id)) {
            (BookingStatus::Accepted, Some(provider_id)) if !booking.is_scheduled() => {
                self.track_trip(booking, provider_id, BookingStatus::Accepted)
            }
            (BookingStatus::EnRoute, Some(provider_id)) if booking.is_scheduled() => {
                self.track_trip(booking, provider_id, BookingStatus::EnRoute)
            }
            (to, Some(provider_id)) => self.trip_status_changed(provider_id, booking.id, to),
            (_, None) => {}
        }
        // The therapist's calendar changed: their commitments gained, moved or lost this one.
        if let Some(provider_id) = change.provider_id.or(booking.therapist()) {
            let counts = booking.is_scheduled()
                || self
                    .inner
                    .diary
                    .get(provider_id)
                    .is_some_and(|entry| entry.bookable());
            if counts {
                let diary = self.inner.diary.clone();
                let db = self.inner.db.clone();
                tokio::spawn(async move { diary.changed(&db, provider_id).await });
            }
        }
        if leaves_pending {
            self.signal(MatchEvent::BookingClosed {
                booking_id: booking.id,
            });
            let told = if change.to == BookingStatus::Accepted {
                "taken"
            } else {
                match change.reason {
                    Some(NO_THERAPIST_AVAILABLE) => "expired",
                    _ => "cancelled",
                }
            };
            self.tell_withdrawn(booking.uuid, &closed_offers, told)
                .await;
        }
        self.push_status(booking.id, change.reason).await;
        Ok(view)
    }

    /// A status change by the assigned therapist (or an admin).
    pub async fn change_status(
        &self,
        booking_uuid: Uuid,
        caller: Caller,
        to: BookingStatus,
    ) -> Result<BookingView, ApiError> {
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

    pub(super) async fn apply_transition(
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
        self.commit_transition(
            tx,
            Transition {
                booking,
                to,
                provider_id: None,
                reason: None,
            },
        )
        .await
    }

    /// Cancels a booking for its customer, its therapist or an admin, with the policy's fee.
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
        check_transition(booking.status, BookingStatus::Cancelled, actor)
            .map_err(transition_error)?;
        let policy = DispatchSettings::load(&self.inner.db).await.cancellation;
        let appointment = booking.scheduled_at.unwrap_or(booking.requested_at);
        let hours_until = (appointment - chrono::Utc::now()).num_seconds() as f64 / 3600.0;
        let fee = pricing::cancellation_fee(
            &policy,
            booking.status != BookingStatus::Pending,
            actor == Actor::Customer,
            hours_until,
            booking.total_amount,
        );
        let mut tx = self
            .inner
            .db
            .begin()
            .await
            .context("starting a cancellation")?;
        store::set_actor(
            &mut tx,
            Some(caller.user_id),
            &format!("Cancelled by the {}: {reason}", actor_label(actor)),
        )
        .await
        .context("marking the actor")?;
        let rows = self
            .mark_cancelled(&mut tx, &booking, Some(caller.user_id), reason, fee)
            .await?;
        if rows == 0 {
            return Err(ApiError::Conflict(
                "the booking changed meanwhile; reload it".into(),
            ));
        }
        self.commit_transition(
            tx,
            Transition {
                booking: &booking,
                to: BookingStatus::Cancelled,
                provider_id: None,
                reason: Some(reason),
            },
        )
        .await
    }

    async fn mark_cancelled(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        booking: &BookingFacts,
        by: Option<i64>,
        reason: &str,
        fee: Decimal,
    ) -> Result<u64, ApiError> {
        let rows = sqlx::query(include_str!("../../sql/booking_cancel.sql"))
            .bind(booking.id)
            .bind(booking.status)
            .bind(by)
            .bind(reason)
            .bind(fee)
            .execute(&mut **tx)
            .await
            .context("cancelling")?
            .rows_affected();
        if rows > 0 && booking.status == BookingStatus::Pending {
            release_promo(tx, booking.id)
                .await
                .context("releasing the promo code")?;
        }
        Ok(rows)
    }

    /// Hilot cancels a booking (a request declined or unanswered): free, compare-and-set from
    /// the status the caller read; `None` when the booking changed meanwhile.
    pub(super) async fn cancel_by_system(
        &self,
        booking: &BookingFacts,
        reason: &str,
        note: &str,
        by: Option<i64>,
    ) -> Result<Option<BookingView>, ApiError> {
        let mut tx = self
            .inner
            .db
            .begin()
            .await
            .context("starting a cancellation")?;
        store::set_actor(&mut tx, by, note)
            .await
            .context("marking the actor")?;
        let rows = self
            .mark_cancelled(&mut tx, booking, by, reason, Decimal::ZERO)
            .await?;
        if rows == 0 {
            return Ok(None);
        }
        self.commit_transition(
            tx,
            Transition {
                booking,
                to: BookingStatus::Cancelled,
                provider_id: None,
                reason: Some(reason),
            },
        )
        .await
        .map(Some)
    }

    /// Nobody accepted in time: the booking ends cancelled, `no_therapist_available`.
    pub(super) async fn expire_unmatched(&self, booking_id: i64) -> Result<(), ApiError> {
        let Some(booking) = store::facts_by_id(&self.inner.db, booking_id)
            .await
            .context("loading the booking")?
        else {
            return Ok(());
        };
        if booking.status != BookingStatus::Pending {
            return Ok(());
        }
        let mut tx = self.inner.db.begin().await.context("starting an expiry")?;
        store::set_actor(
            &mut tx,
            None,
            if booking.is_scheduled() {
                "No therapist accepted before the lead time"
            } else {
                "No therapist accepted before the pending timeout"
            },
        )
        .await
        .context("marking the actor")?;
        let rows = self
            .mark_cancelled(
                &mut tx,
                &booking,
                None,
                NO_THERAPIST_AVAILABLE,
                Decimal::ZERO,
            )
            .await?;
        if rows == 0 {
            return Ok(()); // accepted or cancelled meanwhile
        }
        metrics::counter!("hilot_bookings_expired_total").increment(1);
        self.commit_transition(
            tx,
            Transition {
                booking: &booking,
                to: BookingStatus::Cancelled,
                provider_id: None,
                reason: Some(NO_THERAPIST_AVAILABLE),
            },
        )
        .await
        .map(|_| ())
    }
}

/// A booking that never started gives its promo code back.
async fn release_promo(tx: &mut sqlx::PgConnection, booking_id: i64) -> sqlx::Result<()> {
    sqlx::query(include_str!("../../sql/promo_release.sql"))
        .bind(booking_id)
        .execute(tx)
        .await
        .map(|_| ())
}
