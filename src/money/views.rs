//! Wallets, their lines, and a booking's payment, as clients see them.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

use super::ledger::EntryKind;
use super::{PaymentMethod, TransactionStatus};
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

#[derive(sqlx::FromRow)]
struct PaymentFacts {
    status: String,
    payment_method: PaymentMethod,
    total_amount: Decimal,
    tip_amount: Decimal,
    cancellation_fee: Decimal,
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
    let facts: PaymentFacts = sqlx::query_as(
        "SELECT status::text AS status, payment_method, total_amount, COALESCE(tip_amount, 0) AS tip_amount, \
                COALESCE(cancellation_fee, 0) AS cancellation_fee FROM bookings WHERE id = $1",
    )
    .bind(booking_id)
    .fetch_one(&mut *db)
    .await?;
    let rows: Vec<(String, TransactionStatus, Decimal, PaymentMethod)> = sqlx::query_as(
        "SELECT type::text, status, amount, payment_method FROM transactions \
         WHERE booking_id = $1 AND type IN ('payment', 'refund')",
    )
    .bind(booking_id)
    .fetch_all(&mut *db)
    .await?;
    let sum = |kind: &str, pred: &dyn Fn(TransactionStatus) -> bool| -> Decimal {
        rows.iter()
            .filter(|(k, s, _, _)| k == kind && pred(*s))
            .map(|(_, _, a, _)| *a)
            .sum()
    };
    let paid = sum("payment", &|s| s == TransactionStatus::Completed);
    let refunded = sum("refund", &|s| s != TransactionStatus::Failed);
    let has = |kind: &str, status: TransactionStatus| {
        rows.iter().any(|(k, s, _, _)| k == kind && *s == status)
    };
    let fee_charged = facts.cancellation_fee > Decimal::ZERO
        && rows.iter().any(|(k, s, _, m)| {
            k == "payment" && *s == TransactionStatus::Completed && *m == PaymentMethod::Wallet
        })
        && paid <= facts.cancellation_fee;
    Ok(PaymentView {
        method: facts.payment_method,
        status: state(
            &facts.status,
            facts.payment_method,
            paid,
            has("payment", TransactionStatus::Pending),
            has("payment", TransactionStatus::Failed),
            refunded,
            has("refund", TransactionStatus::Pending),
            fee_charged,
        ),
        amount: facts.total_amount,
        paid_amount: paid,
        refunded_amount: refunded,
        tip_amount: facts.tip_amount,
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
