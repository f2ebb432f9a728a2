//! Wallets, their lines, and a booking's payment, as clients see them.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

use super::ledger::EntryKind;
use super::PaymentMethod;
use crate::domain::money::CURRENCY;

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct WalletView {
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "1500.00")]
    pub balance: Decimal,
    pub currency: String,
    /// Earnings, tips and compensation received (therapists).
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "0.00")]
    pub total_earned: Decimal,
    /// Bookings, tips and fees paid, less refunds (customers).
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "0.00")]
    pub total_spent: Decimal,
    pub is_active: bool,
}

pub async fn wallet(db: impl PgExecutor<'_>, user_id: i64) -> sqlx::Result<Option<WalletView>> {
    sqlx::query_as(
        "SELECT COALESCE(balance, 0) AS balance, COALESCE(currency, 'PHP') AS currency, \
                COALESCE(total_earned, 0) AS total_earned, COALESCE(total_spent, 0) AS total_spent, \
                COALESCE(is_active, true) AS is_active FROM wallets WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(db)
    .await
}

/// One line of a wallet.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct WalletLineView {
    pub id: Uuid,
    /// `credit` or `debit`.
    #[serde(rename = "type")]
    pub kind: String,
    pub entry_kind: Option<EntryKind>,
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "680.00")]
    pub amount: Decimal,
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "0.00")]
    pub balance_before: Decimal,
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "680.00")]
    pub balance_after: Decimal,
    pub description: Option<String>,
    pub booking_id: Option<Uuid>,
    pub transaction_id: Option<Uuid>,
    pub created_at: Option<DateTime<Utc>>,
}

/// The user's wallet lines, newest first.
pub async fn wallet_lines(
    db: impl PgExecutor<'_>,
    user_id: i64,
    limit: i64,
) -> sqlx::Result<Vec<WalletLineView>> {
    sqlx::query_as(
        "SELECT l.uuid AS id, l.type::text AS kind, l.entry_kind, l.amount, l.balance_before, l.balance_after, \
                l.description, b.uuid AS booking_id, t.uuid AS transaction_id, l.created_at \
         FROM wallet_transactions l JOIN wallets w ON w.id = l.wallet_id \
         LEFT JOIN bookings b ON b.id = l.booking_id \
         LEFT JOIN transactions t ON l.reference_type = 'Transaction' AND t.id = l.reference_id \
         WHERE w.user_id = $1 ORDER BY l.id DESC LIMIT $2",
    )
    .bind(user_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Where a booking's payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentState {
    /// Nothing is charged before a therapist accepts.
    Pending,
    /// Cash: paid to the therapist at the end.
    DueInCash,
    /// A gateway payment the customer has yet to complete.
    AwaitingPayment,
    Paid,
    Failed,
    RefundPending,
    Refunded,
    PartiallyRefunded,
    /// Cancelled with nothing paid and no fee.
    NotCharged,
    /// Cancelled with nothing prepaid: the fee was charged to the wallet.
    FeeCharged,
}

/// `booking.payment`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PaymentView {
    pub method: PaymentMethod,
    pub status: PaymentState,
    /// What the booking costs.
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "1150.00")]
    pub amount: Decimal,
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "1150.00")]
    pub paid_amount: Decimal,
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "0.00")]
    pub refunded_amount: Decimal,
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "0.00")]
    pub tip_amount: Decimal,
    pub currency: String,
}

/// The payment of a booking nothing was charged for yet (pending).
pub fn unpaid(method: PaymentMethod, amount: Decimal) -> PaymentView {
    PaymentView {
        method,
        status: PaymentState::Pending,
        amount,
        paid_amount: Decimal::ZERO,
        refunded_amount: Decimal::ZERO,
        tip_amount: Decimal::ZERO,
        currency: CURRENCY.to_owned(),
    }
}

#[derive(sqlx::FromRow)]
struct PaymentFacts {
    status: String,
    payment_method: PaymentMethod,
    total_amount: Decimal,
    tip_amount: Decimal,
    cancellation_fee: Decimal,
    paid: Decimal,
    refunded: Decimal,
    awaiting: bool,
    failed: bool,
    refund_pending: bool,
    wallet_paid: bool,
}

/// Decides the payment state (pure).
#[allow(clippy::too_many_arguments)]
pub fn state(
    booking_status: &str,
    method: PaymentMethod,
    paid: Decimal,
    awaiting: bool,
    failed: bool,
    refunded: Decimal,
    refund_pending: bool,
    fee_charged: bool,
) -> PaymentState {
    let closed = matches!(booking_status, "cancelled" | "no_show");
    if refund_pending {
        PaymentState::RefundPending
    } else if paid > Decimal::ZERO && refunded >= paid {
        PaymentState::Refunded
    } else if refunded > Decimal::ZERO {
        PaymentState::PartiallyRefunded
    } else if closed && fee_charged {
        PaymentState::FeeCharged
    } else if paid > Decimal::ZERO {
        PaymentState::Paid
    } else if awaiting {
        PaymentState::AwaitingPayment
    } else if closed {
        PaymentState::NotCharged
    } else if failed {
        PaymentState::Failed
    } else if method == PaymentMethod::Cash && booking_status != "pending" {
        PaymentState::DueInCash
    } else {
        PaymentState::Pending
    }
}

pub async fn payment(db: &mut PgConnection, booking_id: i64) -> sqlx::Result<PaymentView> {
    let f: PaymentFacts = sqlx::query_as(
        "SELECT b.status::text AS status, b.payment_method, b.total_amount, COALESCE(b.tip_amount, 0) AS tip_amount, \
                COALESCE(b.cancellation_fee, 0) AS cancellation_fee, \
                COALESCE(t.paid, 0) AS paid, COALESCE(t.refunded, 0) AS refunded, \
                COALESCE(t.awaiting, false) AS awaiting, COALESCE(t.failed, false) AS failed, \
                COALESCE(t.refund_pending, false) AS refund_pending, COALESCE(t.wallet_paid, false) AS wallet_paid \
         FROM bookings b LEFT JOIN LATERAL ( \
             SELECT SUM(t.amount) FILTER (WHERE t.type = 'payment' AND t.status = 'completed') AS paid, \
                    SUM(t.amount) FILTER (WHERE t.type = 'refund' AND t.status <> 'failed') AS refunded, \
                    bool_or(t.type = 'payment' AND t.status = 'pending') AS awaiting, \
                    bool_or(t.type = 'payment' AND t.status = 'failed') AS failed, \
                    bool_or(t.type = 'refund' AND t.status = 'pending') AS refund_pending, \
                    bool_or(t.type = 'payment' AND t.status = 'completed' AND t.payment_method = 'wallet') AS wallet_paid \
             FROM transactions t LEFT JOIN transactions paid_twice \
                 ON paid_twice.id = t.related_transaction_id AND paid_twice.status = 'refunded' \
             WHERE t.booking_id = b.id AND t.type IN ('payment', 'refund') \
               AND paid_twice.id IS NULL) t ON true \
         WHERE b.id = $1",
    )
    .bind(booking_id)
    .fetch_one(&mut *db)
    .await?;
    let fee_charged =
        f.cancellation_fee > Decimal::ZERO && f.wallet_paid && f.paid <= f.cancellation_fee;
    Ok(PaymentView {
        method: f.payment_method,
        status: state(
            &f.status,
            f.payment_method,
            f.paid,
            f.awaiting,
            f.failed,
            f.refunded,
            f.refund_pending,
            fee_charged,
        ),
        amount: f.total_amount,
        paid_amount: f.paid,
        refunded_amount: f.refunded,
        tip_amount: f.tip_amount,
        currency: CURRENCY.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_states() {
        let z = Decimal::ZERO;
        let d = Decimal::from;
        assert_eq!(
            state(
                "pending",
                PaymentMethod::Card,
                z,
                false,
                false,
                z,
                false,
                false
            ),
            PaymentState::Pending
        );
        assert_eq!(
            state(
                "accepted",
                PaymentMethod::Cash,
                z,
                false,
                false,
                z,
                false,
                false
            ),
            PaymentState::DueInCash
        );
        assert_eq!(
            state(
                "accepted",
                PaymentMethod::Card,
                z,
                true,
                false,
                z,
                false,
                false
            ),
            PaymentState::AwaitingPayment
        );
        assert_eq!(
            state(
                "completed",
                PaymentMethod::Card,
                d(100),
                false,
                false,
                z,
                false,
                false
            ),
            PaymentState::Paid
        );
        assert_eq!(
            state(
                "cancelled",
                PaymentMethod::Card,
                d(100),
                false,
                false,
                d(50),
                false,
                false
            ),
            PaymentState::PartiallyRefunded
        );
        assert_eq!(
            state(
                "cancelled",
                PaymentMethod::Wallet,
                d(100),
                false,
                false,
                d(100),
                false,
                false
            ),
            PaymentState::Refunded
        );
        assert_eq!(
            state(
                "cancelled",
                PaymentMethod::Card,
                d(100),
                false,
                false,
                d(100),
                true,
                false
            ),
            PaymentState::RefundPending
        );
        assert_eq!(
            state(
                "cancelled",
                PaymentMethod::Cash,
                d(50),
                false,
                false,
                z,
                false,
                true
            ),
            PaymentState::FeeCharged
        );
        assert_eq!(
            state(
                "cancelled",
                PaymentMethod::Cash,
                z,
                false,
                false,
                z,
                false,
                false
            ),
            PaymentState::NotCharged
        );
    }
}
