//! Status changes and cancellations (whose rule is `cancellation`). Every booking transition
//! commits in one place,
//! [`Dispatcher::commit_transition`]: what must happen inside the transaction (offers closed,
//! provider totals, and settlement when it comes) and what follows the commit (the matcher,
//! trips, status frames).

use chrono::Utc;
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::cancellation::{self, Cancellation, Cancelled};
use super::lifecycle::{check_transition, Actor, BookingStatus, TransitionError};
use super::offers::{self, Outcome};
use super::settings::DispatchSettings;
use super::store::{self, BookingFacts, BookingView};
use super::{matcher::MatchEvent, Caller, Dispatcher, NO_THERAPIST_AVAILABLE};
use crate::audit::{self, AuditContext};
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

/// A booking whose transition committed. Its view is read only by a caller that answers with
/// it ([`Changed::view`], after the commit): a socket's status frame is answered by the
/// `booking.status` push, and reading the whole view (three queries) inside every transition's
/// transaction held its connection for nothing.
#[must_use]
#[derive(Debug, Clone, Copy)]
pub struct Changed {
    pub booking_id: i64,
}

impl Changed {
    /// The booking as it is now (it may already have moved on).
    pub async fn view(self, dispatcher: &Dispatcher) -> Result<BookingView, ApiError> {
        dispatcher.view(self.booking_id).await
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
    /// The transition's money and outbox event are already in the transaction (cancellations:
    /// [`cancellation::cancel`] writes them), so committing must not write them twice.
    pub effects_written: bool,
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
    ) -> Result<Changed, ApiError> {
        let booking = change.booking;
        let started = std::time::Instant::now();
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
        // Money and the outbox event of the transition, in the same transaction (a cancellation
        // wrote them already: `cancellation::cancel` settles it).
        if !change.effects_written {
            crate::effects::on_booking_transition(&mut tx, booking.id).await?;
        }
        step_took("before_commit", started);
        let committing = std::time::Instant::now();
        tx.commit().await.context("committing the status change")?;
        step_took("commit", committing);

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
        // The facts after the transition, as committed: no read back.
        let mut after = booking.clone();
        after.status = change.to;
        if let Some(provider_id) = change.provider_id {
            if after.provider_id != Some(provider_id) {
                after.provider_id = Some(provider_id);
                after.provider_user_id = self.provider_user(provider_id).await;
            }
        }
        self.push_status_of(&after, change.reason).await;
        Ok(Changed {
            booking_id: booking.id,
        })
    }

    /// A status change by the assigned therapist (or an admin, whose change is also written
    /// to `audit_logs` with `audit_context`, in the change's transaction).
    pub async fn change_status(
        &self,
        booking_uuid: Uuid,
        caller: Caller,
        to: BookingStatus,
        audit_context: &AuditContext,
    ) -> Result<Changed, ApiError> {
        cancellation::refuse_status_cancel(to)?;
        // One connection for the whole change: the booking is read in its transaction.
        let mut tx = self
            .inner
            .db
            .begin()
            .await
            .context("starting a status change")?;
        let booking = self
            .visible_booking_on(&mut *tx, booking_uuid, caller)
            .await?;
        let actor = if caller.provider_id.is_some() && booking.provider_id == caller.provider_id {
            Actor::Therapist
        } else if caller.is_admin {
            Actor::Admin
        } else {
            Actor::Customer
        };
        check_transition(booking.status, to, actor).map_err(transition_error)?;
        if to == BookingStatus::EnRoute && actor == Actor::Therapist && booking.is_scheduled() {
            let lead = crate::schedule::SchedulingSettings::load(&self.inner.db)
                .await
                .lead;
            if let Some(from) = super::scheduled::set_out_from(booking.scheduled_at, lead) {
                if Utc::now() < from {
                    return Err(ApiError::Conflict(format!(
                        "this booking is for {}: set out from {} (its lead time)",
                        booking
                            .scheduled_at
                            .map(|at| at.to_rfc3339())
                            .unwrap_or_default(),
                        from.to_rfc3339()
                    )));
                }
            }
        }
        if to == BookingStatus::InProgress {
            require_paid_before_start(&mut tx, booking.id).await?;
        }
        if actor == Actor::Admin {
            audit::record(
                &mut *tx,
                audit_context,
                "booking.status_changed",
                "booking",
                booking.id,
                json!({"status": booking.status}),
                json!({"status": to}),
            )
            .await
            .context("auditing the status change")?;
        }
        self.apply_transition_in(
            tx,
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
    ) -> Result<Changed, ApiError> {
        let tx = self
            .inner
            .db
            .begin()
            .await
            .context("starting a status change")?;
        self.apply_transition_in(tx, booking, to, actor_user, note)
            .await
    }

    /// [`Dispatcher::apply_transition`] in a transaction the caller began.
    async fn apply_transition_in(
        &self,
        mut tx: Transaction<'static, Postgres>,
        booking: &BookingFacts,
        to: BookingStatus,
        actor_user: Option<i64>,
        note: &str,
    ) -> Result<Changed, ApiError> {
        let stamp = match to {
            BookingStatus::InProgress => ", started_at = now()",
            BookingStatus::Completed => ", completed_at = now()",
            // The customer was not there: they owe what cancelling late would have cost (the
            // money follows in `commit_transition`'s effects).
            BookingStatus::NoShow => ", cancellation_fee = $6",
            _ => "",
        };
        let no_show_fee = if to == BookingStatus::NoShow {
            let policy = DispatchSettings::load(&self.inner.db).await.cancellation;
            cancellation::no_show_fee(&policy, booking.total_amount)
        } else {
            Decimal::ZERO
        };
        let rows = sqlx::query(&format!(
            "UPDATE bookings SET status = $3{stamp} WHERE id = $1 AND status = $2 AND {}",
            store::actor_condition(4)
        ))
        .bind(booking.id)
        .bind(booking.status)
        .bind(to)
        .bind(store::actor_text(actor_user))
        .bind(note)
        .bind(no_show_fee)
        .execute(&mut *tx)
        .await
        .map_err(|error| {
            if crate::error::unique_violation(&error) == Some("uq_bookings_one_active_per_provider")
            {
                // Setting out for a booking for later while another is under way.
                ApiError::Conflict(
                    "you are on another booking: finish it before setting out for this one".into(),
                )
            } else {
                ApiError::from(anyhow::Error::new(error).context("changing the status"))
            }
        })?
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
                effects_written: false,
            },
        )
        .await
    }

    /// Cancels a booking for its customer, its therapist or an admin, with the policy's fee
    /// (the rule is [`cancellation::cancel`]); the matcher drops it and the therapist is free.
    /// An admin's cancellation is written to `audit_logs` with `audit_context`, as one through
    /// the console is.
    pub async fn cancel(
        &self,
        booking_uuid: Uuid,
        caller: Caller,
        reason: &str,
        audit_context: &AuditContext,
    ) -> Result<Changed, ApiError> {
        let booking = self.visible_booking(booking_uuid, caller).await?;
        let actor = if booking.customer_id == caller.user_id {
            Actor::Customer
        } else if caller.provider_id.is_some() && booking.provider_id == caller.provider_id {
            Actor::Therapist
        } else if caller.is_admin {
            Actor::Admin
        } else {
            // A therapist who sees the booking only because it was requested of them (and went
            // to someone else, or to nobody yet) is not a party to it.
            return Err(ApiError::Forbidden(
                "only the customer, the assigned therapist or an admin may cancel this booking"
                    .into(),
            ));
        };
        let note = format!("Cancelled by the {}: {reason}", actor_label(actor));
        let request = Cancellation {
            booking_id: booking.id,
            actor,
            actor_user: Some(caller.user_id),
            reason,
            note: &note,
            only_from: None,
            // Checked again under the lock: a reassignment a moment ago makes them a stranger.
            assigned_to: (actor == Actor::Therapist)
                .then_some(booking.provider_id)
                .flatten(),
            fee: cancellation::FeeDecision::Policy,
        };
        let (mut tx, cancelled) = self.start_cancellation(request).await?;
        if actor == Actor::Admin {
            audit::record(
                &mut *tx,
                audit_context,
                "booking.cancelled",
                "booking",
                booking.id,
                json!({"status": cancelled.previous}),
                json!({"status": BookingStatus::Cancelled, "reason": reason,
                       "cancellation_fee": crate::domain::money::round_money(cancelled.fee).to_string()}),
            )
            .await
            .context("auditing the cancellation")?;
        }
        self.commit_cancellation(tx, &booking, cancelled, reason)
            .await
    }

    /// Hilot cancels a pending request (declined by the named therapist, or unanswered): free,
    /// through the same rule as every cancellation; `None` when the booking changed meanwhile.
    pub(super) async fn cancel_by_system(
        &self,
        booking: &BookingFacts,
        reason: &str,
        note: &str,
        by: Option<i64>,
    ) -> Result<Option<Changed>, ApiError> {
        let request = Cancellation {
            booking_id: booking.id,
            actor: Actor::System,
            actor_user: by,
            reason,
            note,
            only_from: Some(BookingStatus::Pending),
            assigned_to: None,
            fee: cancellation::FeeDecision::Policy,
        };
        let (tx, cancelled) = match self.start_cancellation(request).await {
            Ok(started) => started,
            Err(ApiError::Conflict(_)) => return Ok(None),
            Err(error) => return Err(error),
        };
        self.commit_cancellation(tx, booking, cancelled, reason)
            .await
            .map(Some)
    }

    /// Nobody accepted in time (the pending timeout; for a booking for later, its lead time):
    /// the booking ends cancelled, `no_therapist_available` (through the same rule as every
    /// cancellation, only while it is still pending).
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
        let request = Cancellation {
            booking_id,
            actor: Actor::System,
            actor_user: None,
            reason: NO_THERAPIST_AVAILABLE,
            note: if booking.is_scheduled() {
                "No therapist accepted before the lead time"
            } else {
                "No therapist accepted before the pending timeout"
            },
            only_from: Some(BookingStatus::Pending),
            assigned_to: None,
            fee: cancellation::FeeDecision::Policy,
        };
        let (tx, cancelled) = match self.start_cancellation(request).await {
            Ok(started) => started,
            Err(ApiError::Conflict(_)) => return Ok(()), // accepted or cancelled meanwhile
            Err(error) => return Err(error),
        };
        metrics::counter!("hilot_bookings_expired_total").increment(1);
        self.commit_cancellation(tx, &booking, cancelled, NO_THERAPIST_AVAILABLE)
            .await
            .map(|_| ())
    }

    /// Applies the one cancellation rule in a new transaction, with the current policy; the
    /// caller adds what else belongs in it (an audit row) and commits with
    /// [`Dispatcher::commit_cancellation`].
    pub(super) async fn start_cancellation(
        &self,
        request: Cancellation<'_>,
    ) -> Result<(Transaction<'static, Postgres>, Cancelled), ApiError> {
        let policy = DispatchSettings::load(&self.inner.db).await.cancellation;
        let mut tx = self
            .inner
            .db
            .begin()
            .await
            .context("starting a cancellation")?;
        let cancelled = cancellation::cancel(&mut tx, request, &policy).await?;
        Ok((tx, cancelled))
    }

    /// Commits a cancellation [`cancellation::cancel`] made in `tx`: the transition starts from
    /// the status and therapist it read under its lock (not the caller's earlier read), and its
    /// money and outbox event are already written.
    pub(super) async fn commit_cancellation(
        &self,
        tx: Transaction<'static, Postgres>,
        booking: &BookingFacts,
        cancelled: Cancelled,
        reason: &str,
    ) -> Result<Changed, ApiError> {
        let before = BookingFacts {
            status: cancelled.previous,
            provider_id: cancelled.provider_id,
            ..booking.clone()
        };
        self.commit_transition(
            tx,
            Transition {
                booking: &before,
                to: BookingStatus::Cancelled,
                provider_id: None,
                reason: Some(reason),
                effects_written: true,
            },
        )
        .await
    }
}

/// A booking paid through the gateway (card, GCash, Maya) starts only once it is paid: the
/// therapist (or the store, for an in-store visit) would otherwise serve, and earn, on a
/// payment the customer never made. 409
/// naming the way to pay. Cash and the Hilot wallet settle inside Hilot.
pub(crate) async fn require_paid_before_start(
    tx: &mut sqlx::PgConnection,
    booking_id: i64,
) -> Result<(), ApiError> {
    let (method, paid): (crate::money::PaymentMethod, bool) = sqlx::query_as(
        "SELECT b.payment_method, EXISTS (SELECT 1 FROM transactions t WHERE t.booking_id = b.id \
                AND t.type = 'payment' AND t.status = 'completed') \
         FROM bookings b WHERE b.id = $1",
    )
    .bind(booking_id)
    .fetch_one(&mut *tx)
    .await
    .context("reading the booking's payment")?;
    if method.via_gateway() && !paid {
        return Err(ApiError::Conflict(format!(
            "the booking is paid by {} and not paid yet: the customer pays in the app \
             (POST /v1/bookings/{{id}}/payment) before the session starts",
            method.as_str()
        )));
    }
    Ok(())
}

/// How long one step of a status change took (`hilot_transition_step_seconds{step}`): for an
/// accept, the wait for its connection and its own statements; for every transition, what runs
/// before the commit (closing offers, effects) and the commit. Under load an accept's wait for
/// its connection is the first thing to look at when accept → `booking.status` grows.
pub(super) fn step_took(step: &'static str, started: std::time::Instant) {
    metrics::histogram!("hilot_transition_step_seconds", "step" => step)
        .record(started.elapsed().as_secs_f64());
}
