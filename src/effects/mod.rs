//! What a booking's status change sets off, inside the database transaction that commits it:
//! money (settlement on completion, charges on acceptance, fees and refunds on cancellation),
//! the parties' notifications, and the operators' webhooks. Dispatch calls
//! [`on_booking_transition`] once at each point where a transition commits, so money moves
//! exactly when the status does, or not at all.

use serde_json::json;
use sqlx::PgConnection;

use crate::error::{ApiError, Context as _};
use crate::money::ledger::money_text;
use crate::money::settlement;
use crate::notifications::{self, kind, Notice};

/// Runs the consequences of the status the booking just moved to (read from the row, as the
/// caller's `UPDATE` left it in this transaction).
pub async fn on_booking_transition(tx: &mut PgConnection, booking_id: i64) -> Result<(), ApiError> {
    let f = settlement::load(tx, booking_id)
        .await
        .context("loading the booking's effects")?;
    match f.status.as_str() {
        "accepted" => settlement::on_accepted(tx, &f).await?,
        "completed" => settlement::on_completed(tx, &f).await?,
        "cancelled" | "no_show" => settlement::on_cancelled(tx, &f).await?,
        _ => {}
    }
    let therapist = f
        .therapist_name
        .clone()
        .unwrap_or_else(|| "Your therapist".into());
    let number = &f.booking_number;
    let to_customer = |kind, title: &str, body: String| Notice {
        user_id: f.customer_id,
        kind,
        title: title.to_owned(),
        body,
        action_type: Some("open_booking"),
        action_data: json!({"booking_id": f.uuid}),
        booking_id: Some(booking_id),
    };
    let mut notices = Vec::new();
    match f.status.as_str() {
        "accepted" => notices.push(to_customer(
            kind::ACCEPTED,
            "Booking accepted",
            format!("{therapist} accepted booking {number}"),
        )),
        "en_route" => notices.push(to_customer(
            kind::EN_ROUTE,
            "On the way",
            format!("{therapist} is on the way"),
        )),
        "arrived" => notices.push(to_customer(
            kind::ARRIVED,
            "Arrived",
            format!("{therapist} has arrived"),
        )),
        "in_progress" => notices.push(to_customer(
            kind::IN_PROGRESS,
            "Session started",
            format!("Booking {number} has started"),
        )),
        "completed" => {
            notices.push(to_customer(
                kind::COMPLETED,
                "Session complete",
                format!(
                    "Booking {number} is complete (₱{}). How was it? Leave a review.",
                    money_text(f.total_amount)
                ),
            ));
            if let Some(user_id) = f.therapist_user_id {
                notices.push(Notice {
                    user_id,
                    kind: kind::COMPLETED,
                    title: "Booking complete".into(),
                    body: format!(
                        "You earned ₱{} for booking {number}",
                        money_text(f.provider_earnings)
                    ),
                    action_type: Some("open_booking"),
                    action_data: json!({"booking_id": f.uuid}),
                    booking_id: Some(booking_id),
                });
            }
        }
        "cancelled" | "no_show" => {
            let reason = f.cancellation_reason.clone().unwrap_or_default();
            let body = if f.cancellation_fee > rust_decimal::Decimal::ZERO {
                format!(
                    "Booking {number} was cancelled ({reason}); fee ₱{}",
                    money_text(f.cancellation_fee)
                )
            } else {
                format!("Booking {number} was cancelled ({reason})")
            };
            let kind = if f.status == "no_show" {
                kind::NO_SHOW
            } else {
                kind::CANCELLED
            };
            for user_id in std::iter::once(f.customer_id).chain(f.therapist_user_id) {
                if f.cancelled_by != Some(user_id) {
                    notices.push(Notice {
                        user_id,
                        kind,
                        title: "Booking cancelled".into(),
                        body: body.clone(),
                        action_type: Some("open_booking"),
                        action_data: json!({"booking_id": f.uuid}),
                        booking_id: Some(booking_id),
                    });
                }
            }
        }
        _ => {}
    }
    for notice in notices {
        notifications::notify(tx, notice)
            .await
            .context("writing a notification")?;
    }
    emit_booking_event(tx, booking_id, &format!("booking.{}", f.status)).await
}

/// Queues a booking webhook (`booking.created` when a booking is made, and every transition).
pub async fn emit_booking_event(
    tx: &mut PgConnection,
    booking_id: i64,
    event: &str,
) -> Result<(), ApiError> {
    const DATA: &str = "SELECT jsonb_build_object('booking_id', b.uuid, 'booking_number', b.booking_number, \
                'status', b.status, 'provider_id', p.uuid, 'service_id', s.uuid, \
                'total_amount', to_char(b.total_amount, 'FM999999990.00'), 'currency', 'PHP', \
                'payment_method', b.payment_method, 'cancellation_reason', b.cancellation_reason, \
                'cancellation_fee', to_char(COALESCE(b.cancellation_fee, 0), 'FM999999990.00')) \
         FROM bookings b JOIN services s ON s.id = b.service_id LEFT JOIN providers p ON p.id = b.provider_id \
         WHERE b.id = $3";
    crate::webhooks::emit_with(tx, event, DATA, booking_id)
        .await
        .context("queueing the booking webhook")
}
