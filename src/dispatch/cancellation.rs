//! Cancelling a booking: the one rule for who may cancel, what it costs, and what it undoes.
//! `POST /v1/bookings/{id}/cancel` and the pending timeout both come through [`cancel`];
//! `/status` refuses `cancelled` (see [`refuse_status_cancel`]), so no path cancels without the
//! fee, the timestamps, the actor and the reason. The money a cancellation moves
//! (`crate::effects::on_booking_transition`) reads the fee this rule wrote on the booking, so
//! there is one rule for what a cancellation costs.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use super::lifecycle::{
    check_transition, check_visit_transition, Actor, BookingStatus, TransitionError,
};
use super::pricing::{cancellation_fee, CancellationPolicy};
use super::store;
use crate::error::{ApiError, Context as _};

/// A cancellation to make.
#[derive(Debug, Clone, Copy)]
pub struct Cancellation<'a> {
    pub booking_id: i64,
    pub actor: Actor,
    /// The user cancelling (`cancelled_by`); `None` for Hilot itself.
    pub actor_user: Option<i64>,
    /// `cancellation_reason`, shown to both sides.
    pub reason: &'a str,
    /// The timeline's description of the change.
    pub note: &'a str,
    /// Cancel only if the booking is still in this status (the pending timeout must not cancel
    /// a booking accepted a moment ago); otherwise 409.
    pub only_from: Option<BookingStatus>,
    /// For a therapist cancelling: the therapist who must still be assigned when the booking
    /// is locked (a reassignment may have raced the request); otherwise 403.
    pub assigned_to: Option<i64>,
    /// Which fee: the policy's for this actor, or a dispatcher's decision.
    pub fee: FeeDecision,
}

/// Who decides the fee of a cancellation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeeDecision {
    /// The policy, for the actor cancelling (only a customer cancelling late pays).
    Policy,
    /// A dispatcher cancelling for the customer (who phoned in, or did not answer) charges the
    /// fee the policy asks of a customer cancelling now.
    ChargeCustomer,
    /// A dispatcher waives any fee.
    Waive,
}

/// What a cancellation did, for the dispatcher's follow-up (stop dispatch, free the therapist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled {
    pub previous: BookingStatus,
    pub provider_id: Option<i64>,
    pub fee: Decimal,
}

/// When the free-cancellation window is measured to: a scheduled booking's appointment; for a
/// `now` booking its acceptance (the therapist sets out at once), never a time the client sent.
pub fn fee_reference(
    booking_type: &str,
    scheduled_at: Option<DateTime<Utc>>,
    accepted_at: Option<DateTime<Utc>>,
    requested_at: DateTime<Utc>,
) -> DateTime<Utc> {
    match (booking_type, scheduled_at) {
        ("scheduled", Some(at)) => at,
        _ => accepted_at.unwrap_or(requested_at),
    }
}

/// A home visit for later whose start has passed while its therapist has not set out: the
/// customer who gives up on them owes no fee (pure). (A visit to a store still `accepted` at
/// its start is the customer's lateness, not the store's.)
pub fn therapist_is_late(
    kind: &str,
    booking_type: &str,
    status: BookingStatus,
    scheduled_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    kind == "home_service"
        && booking_type == "scheduled"
        && status == BookingStatus::Accepted
        && scheduled_at.is_some_and(|start| start <= now)
}

/// The fee for cancelling a booking in `status` now (pure).
#[allow(clippy::too_many_arguments)]
pub fn fee(
    policy: &CancellationPolicy,
    status: BookingStatus,
    actor: Actor,
    booking_type: &str,
    scheduled_at: Option<DateTime<Utc>>,
    accepted_at: Option<DateTime<Utc>>,
    requested_at: DateTime<Utc>,
    total_amount: Decimal,
    now: DateTime<Utc>,
) -> Decimal {
    let reference = fee_reference(booking_type, scheduled_at, accepted_at, requested_at);
    let hours_until = (reference - now).num_seconds() as f64 / 3600.0;
    cancellation_fee(
        policy,
        status != BookingStatus::Pending,
        actor == Actor::Customer,
        hours_until,
        total_amount,
    )
}

/// What a customer who did not show up pays (pure): what cancelling at the last moment would
/// have cost them, so missing a visit is never cheaper than calling it off late.
pub fn no_show_fee(policy: &CancellationPolicy, total_amount: Decimal) -> Decimal {
    cancellation_fee(policy, true, true, f64::NEG_INFINITY, total_amount)
}

/// `/status` never cancels: cancelling has a fee, a reason and an actor, which only `/cancel`
/// records. 409 pointing there.
pub fn refuse_status_cancel(to: BookingStatus) -> Result<(), ApiError> {
    if to == BookingStatus::Cancelled {
        return Err(ApiError::Conflict(
            "a booking is cancelled with POST /v1/bookings/{id}/cancel (which records the fee \
             and the reason), not with /status"
                .into(),
        ));
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Row {
    status: BookingStatus,
    booking_type: String,
    /// `home_service` or `in_store`.
    kind: String,
    scheduled_at: Option<DateTime<Utc>>,
    accepted_at: Option<DateTime<Utc>>,
    requested_at: DateTime<Utc>,
    total_amount: Decimal,
    provider_id: Option<i64>,
}

/// Cancels inside `tx`: locks the booking, checks the actor may cancel it now, and records the
/// fee, `cancelled_at`, `cancelled_by`, the reason and (through the timeline trigger) the actor;
/// the promo code the booking held is given back; the money and the booking's event follow in
/// the same transaction (`crate::effects::on_booking_transition`). The caller commits, then stops dispatch and
/// frees the therapist.
pub async fn cancel(
    tx: &mut PgConnection,
    request: Cancellation<'_>,
    policy: &CancellationPolicy,
) -> Result<Cancelled, ApiError> {
    let row: Row = sqlx::query_as(
        "SELECT status, booking_type::text AS booking_type, type::text AS kind, scheduled_at, accepted_at, \
                requested_at, total_amount, provider_id FROM bookings WHERE id = $1 FOR UPDATE",
    )
    .bind(request.booking_id)
    .fetch_optional(&mut *tx)
    .await
    .context("locking the booking")?
    .ok_or_else(|| ApiError::not_found("booking"))?;
    if request
        .assigned_to
        .is_some_and(|therapist| row.provider_id != Some(therapist))
    {
        return Err(ApiError::Forbidden(
            "the booking is no longer assigned to you".into(),
        ));
    }
    if request.only_from.is_some_and(|s| s != row.status) {
        return Err(ApiError::Conflict(format!(
            "the booking is {} now",
            row.status.as_str()
        )));
    }
    if row.kind == "in_store" {
        // A visit follows the in-store lifecycle: once checked in, only the store or a
        // dispatcher cancels it.
        check_visit_transition(
            row.status,
            BookingStatus::Cancelled,
            request.actor.at_a_store(),
        )?;
    } else {
        check_transition(row.status, BookingStatus::Cancelled, request.actor).map_err(
            |e| match e {
                TransitionError::Illegal { .. } => ApiError::Conflict(e.to_string()),
                TransitionError::NotAllowed { .. } => ApiError::Forbidden(e.to_string()),
            },
        )?;
    }
    let fee_actor = match request.fee {
        FeeDecision::Policy
            if therapist_is_late(
                &row.kind,
                &row.booking_type,
                row.status,
                row.scheduled_at,
                Utc::now(),
            ) =>
        {
            Actor::System
        }
        FeeDecision::Policy => request.actor,
        FeeDecision::ChargeCustomer => Actor::Customer,
        FeeDecision::Waive => Actor::System,
    };
    let fee = fee(
        policy,
        row.status,
        fee_actor,
        &row.booking_type,
        row.scheduled_at,
        row.accepted_at,
        row.requested_at,
        row.total_amount,
        Utc::now(),
    );
    store::set_actor(tx, request.actor_user, request.note)
        .await
        .context("marking the actor")?;
    sqlx::query(
        "UPDATE bookings SET status = 'cancelled', cancelled_at = now(), cancelled_by = $2, \
             cancellation_reason = $3, cancellation_fee = $4 WHERE id = $1",
    )
    .bind(request.booking_id)
    .bind(request.actor_user)
    .bind(request.reason)
    .bind(fee)
    .execute(&mut *tx)
    .await
    .context("cancelling")?;
    release_promo(tx, request.booking_id)
        .await
        .context("releasing the promo code")?;
    // The money (the fee written above kept or charged, the rest refunded, the therapist
    // compensated) and the booking's event, in this same transaction.
    crate::effects::on_booking_transition(tx, request.booking_id).await?;
    Ok(Cancelled {
        previous: row.status,
        provider_id: row.provider_id,
        fee,
    })
}

/// A booking that was cancelled gives its promo code back (its use and the per-customer count).
/// Every cancelling path calls this, in-store ones included.
pub async fn release_promo(tx: &mut PgConnection, booking_id: i64) -> sqlx::Result<()> {
    sqlx::query(include_str!("../../sql/promo_release.sql"))
        .bind(booking_id)
        .execute(tx)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn d(v: i64) -> Decimal {
        Decimal::from(v)
    }

    #[test]
    fn a_now_booking_pays_from_its_acceptance_whatever_scheduled_at_says() {
        let policy = CancellationPolicy::default();
        let now = Utc::now();
        let requested = now - Duration::minutes(10);
        let accepted = now - Duration::minutes(5);
        let far = Some(now + Duration::days(30));
        let fee_now = |status| {
            fee(
                &policy,
                status,
                Actor::Customer,
                "now",
                far,
                Some(accepted),
                requested,
                d(1000),
                now,
            )
        };
        assert_eq!(fee_now(BookingStatus::Accepted), d(500));
        assert_eq!(fee_now(BookingStatus::Pending), Decimal::ZERO);
    }

    #[test]
    fn a_scheduled_booking_is_free_until_the_window() {
        let policy = CancellationPolicy::default();
        let now = Utc::now();
        let at = |hours| Some(now + Duration::hours(hours));
        let fee_at = |scheduled| {
            fee(
                &policy,
                BookingStatus::Accepted,
                Actor::Customer,
                "scheduled",
                scheduled,
                Some(now),
                now,
                d(1000),
                now,
            )
        };
        assert_eq!(fee_at(at(48)), Decimal::ZERO);
        assert_eq!(fee_at(at(2)), d(500));
    }

    #[test]
    fn a_therapist_who_has_not_set_out_by_the_start_is_late() {
        let now = Utc::now();
        let started = Some(now - Duration::minutes(1));
        let ahead = Some(now + Duration::minutes(1));
        let late =
            |kind, booking_type, status, at| therapist_is_late(kind, booking_type, status, at, now);
        assert!(late(
            "home_service",
            "scheduled",
            BookingStatus::Accepted,
            started
        ));
        assert!(!late(
            "home_service",
            "scheduled",
            BookingStatus::Accepted,
            ahead
        ));
        assert!(!late(
            "home_service",
            "scheduled",
            BookingStatus::EnRoute,
            started
        ));
        assert!(!late(
            "in_store",
            "scheduled",
            BookingStatus::Accepted,
            started
        ));
        assert!(!late(
            "home_service",
            "now",
            BookingStatus::Accepted,
            started
        ));
    }

    #[test]
    fn status_never_cancels() {
        assert!(matches!(
            refuse_status_cancel(BookingStatus::Cancelled),
            Err(ApiError::Conflict(_))
        ));
        assert!(refuse_status_cancel(BookingStatus::EnRoute).is_ok());
    }

    #[test]
    fn a_no_show_costs_what_the_latest_cancellation_would() {
        let policy = CancellationPolicy::default();
        let total = Decimal::from(1000);
        let latest = fee(
            &policy,
            BookingStatus::Arrived,
            Actor::Customer,
            "now",
            None,
            Some(Utc::now()),
            Utc::now(),
            total,
            Utc::now(),
        );
        assert!(latest > Decimal::ZERO);
        assert_eq!(no_show_fee(&policy, total), latest);
    }
}
