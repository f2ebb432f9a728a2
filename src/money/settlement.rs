//! What a booking's transitions move, each inside the transaction that commits the transition:
//!
//! - **accepted** (the price is final): a wallet booking is paid from the customer's wallet at
//!   once, or switches to cash when the wallet no longer covers the final price; a card, GCash
//!   or Maya booking gets a pending payment the customer completes through the gateway.
//! - **completed**: a cash payment is recorded (and debited to the therapist's wallet as cash
//!   collected for the platform); the therapist's wallet is credited their earnings; the
//!   platform books its commission and fee, and bears the promo discount.
//! - **cancelled / no show**: a fee (decided by the cancellation rule, stored on the booking) is
//!   kept from what was paid, or charged to the customer's wallet when nothing was; the rest of
//!   a payment is refunded (to the wallet at once, or through the gateway via the outbox); the
//!   therapist who lost the job gets the fee less the platform's commission.

use rust_decimal::Decimal;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::ledger::{self, EntryKind, NewTransaction, PlatformLine};
use super::{PaymentMethod, TransactionStatus, TransactionType};
use crate::domain::money::round_money;
use crate::error::{ApiError, Context as _};
use crate::outbox::{self, Channel, NewDelivery};

/// The money facts of a booking.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BookingMoney {
    pub id: i64,
    pub uuid: Uuid,
    pub booking_number: String,
    pub status: String,
    pub customer_id: i64,
    pub therapist_user_id: Option<i64>,
    pub payment_method: PaymentMethod,
    pub total_amount: Decimal,
    pub provider_earnings: Decimal,
    pub commission_amount: Decimal,
    pub commission_rate: Decimal,
    pub platform_fee: Decimal,
    pub promo_discount: Decimal,
    pub cancellation_fee: Decimal,
    pub tip_amount: Decimal,
    /// For the parties' notifications.
    pub therapist_name: Option<String>,
    pub cancelled_by: Option<i64>,
    pub cancellation_reason: Option<String>,
    /// Whether any transaction names the booking yet (most transitions of a cash booking need
    /// not look further).
    pub has_transactions: bool,
}

/// What the money rules read of a booking (the money facts; the transition hook also runs it
/// inside its statement). The caller adds which bookings (`WHERE ...`).
pub const LOAD_SELECT: &str = "SELECT b.id, b.uuid, b.booking_number, b.status::text AS status, b.customer_id, \
                p.user_id AS therapist_user_id, b.payment_method, b.total_amount, b.provider_earnings, \
                b.commission_amount, b.commission_rate, COALESCE(b.platform_fee, 0) AS platform_fee, \
                COALESCE(b.promo_discount, 0) AS promo_discount, \
                COALESCE(b.cancellation_fee, 0) AS cancellation_fee, COALESCE(b.tip_amount, 0) AS tip_amount, \
                u.first_name AS therapist_name, b.cancelled_by, b.cancellation_reason, \
                EXISTS (SELECT 1 FROM transactions t WHERE t.booking_id = b.id) AS has_transactions \
         FROM bookings b LEFT JOIN providers p ON p.id = b.provider_id LEFT JOIN users u ON u.id = p.user_id";

/// [`LOAD_SELECT`] of one booking (`$1`).
pub fn load_sql() -> String {
    format!("{LOAD_SELECT} WHERE b.id = $1")
}

/// The money facts of one booking.
pub async fn load(tx: &mut PgConnection, booking_id: i64) -> sqlx::Result<BookingMoney> {
    sqlx::query_as(&load_sql())
        .bind(booking_id)
        .fetch_one(tx)
        .await
}

/// [`load`] of several bookings in one query (in no particular order; a missing one is absent).
pub async fn load_many(
    tx: &mut PgConnection,
    booking_ids: &[i64],
) -> sqlx::Result<Vec<BookingMoney>> {
    sqlx::query_as(&format!("{LOAD_SELECT} WHERE b.id = ANY($1)"))
        .bind(booking_ids)
        .fetch_all(tx)
        .await
}

/// A cancellation fee split between the therapist who lost the job and the platform, which
/// keeps its commission rate of it.
pub fn cancellation_split(fee: Decimal, commission_rate: Decimal) -> (Decimal, Decimal) {
    let platform =
        round_money(fee * commission_rate / Decimal::ONE_HUNDRED).clamp(Decimal::ZERO, fee);
    (fee - platform, platform)
}

/// Of a fee `charged` to a wallet that went from `balance_before` to below zero: the part the
/// wallet could not cover (what the customer now owes), never more than the charge.
pub fn uncollected(charged: Decimal, balance_before: Decimal) -> Decimal {
    (charged - balance_before.max(Decimal::ZERO)).clamp(Decimal::ZERO, charged)
}

/// A cancellation fee split when only `collected` of it came in: the therapist's share is
/// taken from what was collected (a payout never sends money Hilot did not receive); the
/// platform holds the rest, including what the customer still owes.
pub fn cancellation_split_collected(
    fee: Decimal,
    collected: Decimal,
    commission_rate: Decimal,
) -> (Decimal, Decimal) {
    let (to_therapist, _) =
        cancellation_split(collected.clamp(Decimal::ZERO, fee), commission_rate);
    (to_therapist, fee - to_therapist)
}

/// Of a cancelled booking's payment `paid` and its `fee`: what is refunded, and what of the fee
/// is still to be charged because the payment did not cover it.
pub fn refund_and_fee(paid: Decimal, fee: Decimal) -> (Decimal, Decimal) {
    let kept = fee.min(paid);
    (paid - kept, fee - kept)
}

/// A payment the booking already has: (id, method, status, amount).
async fn live_payment(
    tx: &mut PgConnection,
    booking_id: i64,
) -> sqlx::Result<Option<(i64, PaymentMethod, TransactionStatus, Decimal)>> {
    sqlx::query_as(
        "SELECT id, payment_method, status, amount FROM transactions \
         WHERE booking_id = $1 AND type = 'payment' AND status NOT IN ('failed', 'refunded') \
         ORDER BY id LIMIT 1",
    )
    .bind(booking_id)
    .fetch_optional(tx)
    .await
}

/// The therapist accepted: the price is final, so prepaid methods are charged now.
pub async fn on_accepted(tx: &mut PgConnection, b: &BookingMoney) -> Result<(), ApiError> {
    if b.payment_method == PaymentMethod::Cash
        || b.total_amount <= Decimal::ZERO
        || (b.has_transactions
            && live_payment(tx, b.id)
                .await
                .context("reading the payment")?
                .is_some())
    {
        return Ok(());
    }
    match b.payment_method {
        PaymentMethod::Cash => Ok(()),
        PaymentMethod::Wallet => {
            // Locked until the payment is posted: a tip or another booking's charge committing
            // in between would otherwise make the post overdraw, and the accept fail.
            let covered: bool = sqlx::query_scalar(
                "SELECT COALESCE(balance, 0) >= $2 FROM wallets WHERE user_id = $1 FOR UPDATE",
            )
            .bind(b.customer_id)
            .bind(b.total_amount)
            .fetch_optional(&mut *tx)
            .await
            .context("reading the customer's wallet")?
            .unwrap_or(false);
            if !covered {
                // The final price outgrew the wallet: the customer pays cash instead.
                sqlx::query("UPDATE bookings SET payment_method = 'cash' WHERE id = $1")
                    .bind(b.id)
                    .execute(&mut *tx)
                    .await
                    .context("switching the booking to cash")?;
                return Ok(());
            }
            let (payment, _) = ledger::record(
                tx,
                &NewTransaction::new(
                    TransactionType::Payment,
                    b.customer_id,
                    PaymentMethod::Wallet,
                    b.total_amount,
                    TransactionStatus::Completed,
                    format!("Booking {}", b.booking_number),
                )
                .booking(b.id),
            )
            .await
            .context("recording the wallet payment")?;
            ledger::post(
                tx,
                b.customer_id,
                EntryKind::Payment,
                b.total_amount,
                Some(payment),
                Some(b.id),
                &format!("Paid booking {}", b.booking_number),
            )
            .await?;
            Ok(())
        }
        method => {
            ledger::record(
                tx,
                &NewTransaction::new(
                    TransactionType::Payment,
                    b.customer_id,
                    method,
                    b.total_amount,
                    TransactionStatus::Pending,
                    format!("Booking {}", b.booking_number),
                )
                .booking(b.id),
            )
            .await
            .context("recording the pending payment")?;
            Ok(())
        }
    }
}

/// The service is done: the payment is recorded, the therapist earns, the platform books its share.
pub async fn on_completed(tx: &mut PgConnection, b: &BookingMoney) -> Result<(), ApiError> {
    let mut payment = if b.has_transactions {
        live_payment(tx, b.id)
            .await
            .context("reading the payment")?
            .map(|p| p.0)
    } else {
        None
    };
    let Some(therapist) = b.therapist_user_id else {
        return Ok(());
    };
    if payment.is_none() && b.total_amount > Decimal::ZERO {
        // Cash (or a wallet booking that fell back to cash): the customer pays the therapist.
        let (id, _) = ledger::record(
            tx,
            &NewTransaction::new(
                TransactionType::Payment,
                b.customer_id,
                PaymentMethod::Cash,
                b.total_amount,
                TransactionStatus::Completed,
                format!("Booking {}, paid in cash", b.booking_number),
            )
            .booking(b.id),
        )
        .await
        .context("recording the cash payment")?;
        ledger::post(
            tx,
            therapist,
            EntryKind::CashCollected,
            b.total_amount,
            Some(id),
            Some(b.id),
            &format!("Cash collected for booking {}", b.booking_number),
        )
        .await?;
        payment = Some(id);
    }
    if b.provider_earnings > Decimal::ZERO {
        ledger::post(
            tx,
            therapist,
            EntryKind::Earnings,
            b.provider_earnings,
            payment,
            Some(b.id),
            &format!("Earnings for booking {}", b.booking_number),
        )
        .await?;
    }
    for (line, amount) in [
        (PlatformLine::Commission, b.commission_amount),
        (PlatformLine::PlatformFee, b.platform_fee),
        (PlatformLine::PromoCost, -b.promo_discount),
    ] {
        ledger::platform(tx, b.id, payment, line, amount)
            .await
            .context("booking the platform's share")?;
    }
    Ok(())
}

/// The booking was cancelled (or the customer did not show): the fee is kept or charged, the
/// rest refunded, and the therapist compensated.
pub async fn on_cancelled(tx: &mut PgConnection, b: &BookingMoney) -> Result<(), ApiError> {
    if !b.has_transactions && b.cancellation_fee <= Decimal::ZERO {
        return Ok(()); // nothing was paid, nothing is owed
    }
    // A gateway payment the customer never completed is called off.
    sqlx::query(
        "UPDATE transactions SET status = 'failed', failed_at = now(), \
             failure_reason = 'the booking was cancelled before it was paid' \
         WHERE booking_id = $1 AND type = 'payment' AND status IN ('pending', 'processing')",
    )
    .bind(b.id)
    .execute(&mut *tx)
    .await
    .context("calling off the pending payment")?;
    let paid = live_payment(tx, b.id)
        .await
        .context("reading the payment")?;
    let paid_amount = paid.map_or(Decimal::ZERO, |p| p.3);
    let fee = b.cancellation_fee.max(Decimal::ZERO);
    let (refund, fee_to_charge) = refund_and_fee(paid_amount, fee);
    if let Some((payment_id, method, _, _)) = paid {
        if refund > Decimal::ZERO {
            issue_refund(tx, b, payment_id, method, refund, "Booking cancelled").await?;
        }
    }
    // What the customer's wallet could not cover is a debt: the customer cannot book again
    // until it is paid (`http::bookings::check_payment_method`), and the therapist is
    // compensated only from what was collected.
    let mut owed = Decimal::ZERO;
    if fee_to_charge > Decimal::ZERO {
        let (id, _) = ledger::record(
            tx,
            &NewTransaction::new(
                TransactionType::Payment,
                b.customer_id,
                PaymentMethod::Wallet,
                fee_to_charge,
                TransactionStatus::Completed,
                format!("Cancellation fee, booking {}", b.booking_number),
            )
            .booking(b.id),
        )
        .await
        .context("recording the cancellation fee")?;
        let line = ledger::post(
            tx,
            b.customer_id,
            EntryKind::CancellationFee,
            fee_to_charge,
            Some(id),
            Some(b.id),
            &format!("Cancellation fee, booking {}", b.booking_number),
        )
        .await?;
        owed = uncollected(fee_to_charge, line.balance_before);
    }
    if let (Some(therapist), true) = (b.therapist_user_id, fee > Decimal::ZERO) {
        let (to_therapist, to_platform) =
            cancellation_split_collected(fee, fee - owed, b.commission_rate);
        if to_therapist > Decimal::ZERO {
            ledger::post(
                tx,
                therapist,
                EntryKind::CancellationCompensation,
                to_therapist,
                paid.map(|p| p.0),
                Some(b.id),
                &format!("Cancellation fee for booking {}", b.booking_number),
            )
            .await?;
        }
        ledger::platform(
            tx,
            b.id,
            paid.map(|p| p.0),
            PlatformLine::CancellationCommission,
            to_platform,
        )
        .await
        .context("booking the platform's share of the fee")?;
    } else if fee > Decimal::ZERO {
        ledger::platform(
            tx,
            b.id,
            paid.map(|p| p.0),
            PlatformLine::CancellationCommission,
            fee,
        )
        .await
        .context("booking the fee")?;
    }
    Ok(())
}

/// Refunds `amount` of payment `payment_id`: to the wallet at once, or through the gateway by
/// the outbox (the refund stays pending until the gateway confirms it).
pub async fn issue_refund(
    tx: &mut PgConnection,
    b: &BookingMoney,
    payment_id: i64,
    method: PaymentMethod,
    amount: Decimal,
    why: &str,
) -> Result<(), ApiError> {
    let status = if method.via_gateway() {
        TransactionStatus::Pending
    } else {
        TransactionStatus::Completed
    };
    let mut refund = NewTransaction::new(
        TransactionType::Refund,
        b.customer_id,
        if method == PaymentMethod::Cash {
            PaymentMethod::Wallet
        } else {
            method
        },
        amount,
        status,
        format!("{why}: refund for booking {}", b.booking_number),
    )
    .booking(b.id);
    refund.related = Some(payment_id);
    let (refund_id, refund_uuid) = ledger::record(tx, &refund)
        .await
        .context("recording the refund")?;
    if method.via_gateway() {
        let gateway: Option<(Option<String>, Option<serde_json::Value>)> =
            sqlx::query_as("SELECT gateway, metadata FROM transactions WHERE id = $1")
                .bind(payment_id)
                .fetch_optional(&mut *tx)
                .await
                .context("reading the payment's gateway")?;
        let (gateway, metadata) = gateway.unwrap_or_default();
        outbox::enqueue(
            tx,
            NewDelivery {
                channel: Channel::Gateway,
                target: format!("gateway:{}", gateway.as_deref().unwrap_or("none")),
                endpoint_id: None,
                event_type: "refund".into(),
                payload: json!({
                    "refund_transaction_id": refund_id,
                    "refund_id": refund_uuid,
                    "payment_id": metadata.as_ref().and_then(|m| m.get("payment_id")).cloned(),
                    "amount": amount.to_string(),
                    "reason": why,
                }),
            },
        )
        .await
        .context("queueing the gateway refund")?;
    } else {
        ledger::post(
            tx,
            b.customer_id,
            EntryKind::Refund,
            amount,
            Some(refund_id),
            Some(b.id),
            &format!("Refund for booking {}", b.booking_number),
        )
        .await?;
    }
    crate::webhooks::emit(
        tx,
        "payment.refunded",
        json!({"booking_id": b.uuid, "booking_number": b.booking_number, "refund_id": refund_uuid,
               "amount": ledger::money_text(amount), "currency": crate::domain::money::CURRENCY,
               "method": method}),
    )
    .await
    .context("queueing the refund webhook")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(v: &str) -> Decimal {
        v.parse().unwrap()
    }

    #[test]
    fn a_fee_is_split_at_the_commission_rate() {
        assert_eq!(
            cancellation_split(d("500"), d("15")),
            (d("425.00"), d("75.00"))
        );
        assert_eq!(
            cancellation_split(d("0.01"), d("15")),
            (d("0.01"), d("0.00"))
        );
    }

    #[test]
    fn the_fee_comes_out_of_the_payment_first() {
        assert_eq!(refund_and_fee(d("1000"), d("500")), (d("500"), d("0")));
        // A wallet of 100 charged a fee of 500 owes 400; an empty or overdrawn one owes it all.
        assert_eq!(uncollected(d("500"), d("100")), d("400"));
        assert_eq!(uncollected(d("500"), d("0")), d("500"));
        assert_eq!(uncollected(d("500"), d("-50")), d("500"));
        assert_eq!(uncollected(d("500"), d("800")), d("0"));
        // Compensation comes only from what was collected; the platform holds the rest.
        assert_eq!(
            cancellation_split_collected(d("500"), d("500"), d("15")),
            (d("425"), d("75"))
        );
        assert_eq!(
            cancellation_split_collected(d("500"), d("100"), d("15")),
            (d("85"), d("415"))
        );
        assert_eq!(
            cancellation_split_collected(d("500"), d("0"), d("15")),
            (d("0"), d("500"))
        );
        assert_eq!(refund_and_fee(d("0"), d("500")), (d("0"), d("500")));
        assert_eq!(refund_and_fee(d("1000"), d("0")), (d("1000"), d("0")));
    }
}
