//! Tips: after completion the customer may tip the therapist, once or more; every centavo goes
//! to the therapist's wallet. Paid from the customer's wallet at once, or through the gateway
//! (credited when the gateway confirms it).

use rust_decimal::Decimal;
use serde_json::json;
use sqlx::{PgConnection, PgPool};

use super::ledger::{self, money_text, EntryKind, NewTransaction};
use super::payments::{ensure_intent, GatewayPayment, Payments};
use super::settlement;
use super::{PaymentMethod, TransactionStatus, TransactionType};
use crate::error::{unique_violation, ApiError, Context as _};
use crate::notifications::{self, kind, Notice};

/// Checks a tip's amount against the ceiling (`tip_limits.max_amount`).
pub fn check_amount(amount: Decimal, max: Decimal) -> Result<(), ApiError> {
    if amount <= Decimal::ZERO {
        return Err(ApiError::invalid("amount", "must be more than zero"));
    }
    if amount > max {
        return Err(ApiError::invalid(
            "amount",
            format!(
                "must be at most {} (tip_limits.max_amount)",
                money_text(max)
            ),
        ));
    }
    Ok(())
}

/// Tips the therapist of a completed booking of `customer_id`. A repeated `idempotency_key`
/// answers the first tip.
pub async fn tip(
    db: &PgPool,
    payments: &Payments,
    booking_id: i64,
    customer_id: i64,
    amount: Decimal,
    method: PaymentMethod,
    idempotency_key: Option<String>,
) -> Result<GatewayPayment, ApiError> {
    let max = crate::db::app_settings::tip_max(db)
        .await
        .context("reading the tip limit")?;
    check_amount(amount, max)?;
    if method == PaymentMethod::Cash {
        return Err(ApiError::invalid(
            "payment_method",
            "cash tips are handed over in person; tip by wallet, card, gcash or paymaya",
        ));
    }
    if method.via_gateway() {
        payments.gateway()?;
    }
    let mut tx = db.begin().await.context("starting the tip")?;
    sqlx::query("SELECT 1 FROM bookings WHERE id = $1 FOR UPDATE")
        .bind(booking_id)
        .execute(&mut *tx)
        .await
        .context("locking the booking")?;
    let b = settlement::load(&mut tx, booking_id)
        .await
        .context("loading the booking")?;
    if b.customer_id != customer_id {
        return Err(ApiError::not_found("booking"));
    }
    if b.status != "completed" || b.therapist_user_id.is_none() {
        return Err(ApiError::Conflict(format!(
            "only a completed booking can be tipped; this one is {}",
            b.status
        )));
    }
    let status = if method.via_gateway() {
        TransactionStatus::Pending
    } else {
        TransactionStatus::Completed
    };
    let mut t = NewTransaction::new(
        TransactionType::Tip,
        customer_id,
        method,
        amount,
        status,
        format!("Tip for booking {}", b.booking_number),
    )
    .booking(b.id);
    t.idempotency_key = idempotency_key.clone();
    let id = match ledger::record(&mut tx, &t).await {
        Ok((id, _)) => id,
        Err(e) if unique_violation(&e).is_some() => {
            drop(tx);
            let (id, same): (i64, bool) = sqlx::query_as(
                "SELECT id, type = 'tip' AND booking_id = $3 AND amount = $4 AND payment_method = $5 \
                 FROM transactions WHERE user_id = $1 AND idempotency_key = $2",
            )
            .bind(customer_id)
            .bind(&idempotency_key)
            .bind(booking_id)
            .bind(amount)
            .bind(method)
            .fetch_one(db)
            .await
            .context("reading the earlier tip")?;
            if !same {
                return Err(ApiError::Conflict(
                    "this Idempotency-Key was already used for another request".into(),
                ));
            }
            return ensure_intent(db, payments, id).await;
        }
        Err(e) => return Err(ApiError::from(e)),
    };
    if !method.via_gateway() {
        ledger::post(
            &mut tx,
            customer_id,
            EntryKind::TipGiven,
            amount,
            Some(id),
            Some(b.id),
            &format!("Tip for booking {}", b.booking_number),
        )
        .await?;
        credit_tip(&mut tx, b.id, id, amount).await?;
    }
    tx.commit().await.context("committing the tip")?;
    ensure_intent(db, payments, id).await
}

/// A paid tip reaches the therapist: their wallet, the booking's `tip_amount`, a notification
/// and the operators' webhook.
pub async fn credit_tip(
    tx: &mut PgConnection,
    booking_id: i64,
    transaction_id: i64,
    amount: Decimal,
) -> Result<(), ApiError> {
    let b = settlement::load(tx, booking_id)
        .await
        .context("loading the booking")?;
    let therapist = b.therapist_user_id.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("a tip for a booking without a therapist"))
    })?;
    ledger::post(
        tx,
        therapist,
        EntryKind::TipReceived,
        amount,
        Some(transaction_id),
        Some(b.id),
        &format!("Tip for booking {}", b.booking_number),
    )
    .await?;
    sqlx::query("UPDATE bookings SET tip_amount = COALESCE(tip_amount, 0) + $2 WHERE id = $1")
        .bind(b.id)
        .bind(amount)
        .execute(&mut *tx)
        .await
        .context("adding the tip to the booking")?;
    notifications::notify(
        tx,
        Notice {
            user_id: therapist,
            kind: kind::PAYMENT,
            title: "You got a tip".into(),
            body: format!(
                "A tip of ₱{} for booking {}",
                money_text(amount),
                b.booking_number
            ),
            action_type: Some("open_wallet"),
            action_data: json!({"booking_id": b.uuid}),
            booking_id: Some(b.id),
        },
    )
    .await
    .context("notifying the therapist")?;
    crate::webhooks::emit(
        tx,
        "tip.received",
        json!({"booking_id": b.uuid, "booking_number": b.booking_number,
               "amount": money_text(amount), "currency": crate::domain::money::CURRENCY}),
    )
    .await
    .context("queueing the webhook")?;
    Ok(())
}
