//! The ledger's two primitives: a `transactions` row (money in or out of Hilot, or between its
//! users), and a wallet line that moves a wallet's balance and records it before and after.
//!
//! Balances never go negative, except by two documented rules: a therapist's wallet is debited
//! the cash they collected on the platform's behalf (they owe it until a payout nets it off),
//! and a customer's wallet is debited a cancellation fee when nothing was prepaid (the next
//! top-up settles it).

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{PaymentMethod, TransactionStatus, TransactionType};
use crate::error::ApiError;

/// What a wallet line is for (`wallet_transactions.entry_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema, sqlx::Type)]
#[sqlx(type_name = "wallet_entry_kind", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Earnings,
    TipReceived,
    CashCollected,
    CancellationCompensation,
    Payment,
    TipGiven,
    CancellationFee,
    Refund,
    Topup,
    Payout,
    PayoutReversal,
}

impl EntryKind {
    pub fn is_credit(self) -> bool {
        matches!(
            self,
            Self::Earnings
                | Self::TipReceived
                | Self::CancellationCompensation
                | Self::Refund
                | Self::Topup
                | Self::PayoutReversal
        )
    }

    /// The documented rules under which a debit may take the balance below zero.
    pub fn may_overdraw(self) -> bool {
        matches!(self, Self::CashCollected | Self::CancellationFee)
    }

    /// How the line moves `total_earned` and `total_spent`.
    fn totals(self, amount: Decimal) -> (Decimal, Decimal) {
        match self {
            Self::Earnings | Self::TipReceived | Self::CancellationCompensation => {
                (amount, Decimal::ZERO)
            }
            Self::Payment | Self::TipGiven | Self::CancellationFee => (Decimal::ZERO, amount),
            Self::Refund => (Decimal::ZERO, -amount),
            _ => (Decimal::ZERO, Decimal::ZERO),
        }
    }
}

/// A transaction to record.
#[derive(Debug, Clone)]
pub struct NewTransaction {
    pub booking_id: Option<i64>,
    pub user_id: i64,
    pub kind: TransactionType,
    pub method: PaymentMethod,
    pub amount: Decimal,
    pub status: TransactionStatus,
    pub gateway: Option<String>,
    pub gateway_id: Option<String>,
    pub description: String,
    pub metadata: Value,
    pub related: Option<i64>,
    pub idempotency_key: Option<String>,
}

impl NewTransaction {
    pub fn new(
        kind: TransactionType,
        user_id: i64,
        method: PaymentMethod,
        amount: Decimal,
        status: TransactionStatus,
        description: impl Into<String>,
    ) -> Self {
        Self {
            booking_id: None,
            user_id,
            kind,
            method,
            amount,
            status,
            gateway: None,
            gateway_id: None,
            description: description.into(),
            metadata: Value::Object(Default::default()),
            related: None,
            idempotency_key: None,
        }
    }

    pub fn booking(mut self, booking_id: i64) -> Self {
        self.booking_id = Some(booking_id);
        self
    }
}

/// Records a transaction; answers its internal id and public id.
pub async fn record(tx: &mut PgConnection, t: &NewTransaction) -> sqlx::Result<(i64, Uuid)> {
    sqlx::query_as(
        "INSERT INTO transactions (transaction_number, booking_id, user_id, type, payment_method, amount, \
             gateway, gateway_transaction_id, status, description, metadata, related_transaction_id, \
             idempotency_key, processed_at) \
         VALUES (next_transaction_number(), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
             CASE WHEN $8 = 'completed'::transaction_status THEN now() END) \
         RETURNING id, uuid",
    )
    .bind(t.booking_id)
    .bind(t.user_id)
    .bind(t.kind)
    .bind(t.method)
    .bind(t.amount)
    .bind(&t.gateway)
    .bind(&t.gateway_id)
    .bind(t.status)
    .bind(&t.description)
    .bind(&t.metadata)
    .bind(t.related)
    .bind(&t.idempotency_key)
    .fetch_one(tx)
    .await
}

/// A line that was posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalletLine {
    pub wallet_id: i64,
    pub balance_before: Decimal,
    pub balance_after: Decimal,
}

/// Posts a line to `user_id`'s wallet (the one the seed's trigger made with the user).
/// A debit that would take the balance below zero is refused with 422 naming `field`, unless
/// its kind may overdraw.
pub async fn post(
    tx: &mut PgConnection,
    user_id: i64,
    kind: EntryKind,
    amount: Decimal,
    transaction_id: Option<i64>,
    booking_id: Option<i64>,
    description: &str,
) -> Result<WalletLine, ApiError> {
    if amount <= Decimal::ZERO {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "a wallet line of {amount} is not a move"
        )));
    }
    let signed = if kind.is_credit() { amount } else { -amount };
    let (earned, spent) = kind.totals(amount);
    let moved: Option<(i64, Decimal)> = sqlx::query_as(
        "UPDATE wallets SET balance = COALESCE(balance, 0) + $2, \
             total_earned = COALESCE(total_earned, 0) + $3, total_spent = COALESCE(total_spent, 0) + $4 \
         WHERE user_id = $1 AND ($5 OR COALESCE(balance, 0) + $2 >= 0) RETURNING id, balance",
    )
    .bind(user_id)
    .bind(signed)
    .bind(earned)
    .bind(spent)
    .bind(kind.is_credit() || kind.may_overdraw())
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("moving a wallet balance")))?;
    let Some((wallet_id, balance_after)) = moved else {
        let balance: Option<Option<Decimal>> =
            sqlx::query_scalar("SELECT balance FROM wallets WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| {
                    ApiError::Internal(anyhow::Error::new(e).context("reading a wallet"))
                })?;
        return Err(match balance {
            None => ApiError::Internal(anyhow::anyhow!("user {user_id} has no wallet")),
            Some(balance) => ApiError::invalid(
                "payment_method",
                format!(
                    "the wallet balance ({}) does not cover {}",
                    money_text(balance.unwrap_or_default()),
                    money_text(amount)
                ),
            ),
        });
    };
    let balance_before = balance_after - signed;
    sqlx::query(
        "INSERT INTO wallet_transactions (wallet_id, type, amount, balance_before, balance_after, \
             reference_type, reference_id, description, entry_kind, booking_id) \
         VALUES ($1, $2::wallet_transaction_type, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(wallet_id)
    .bind(if kind.is_credit() { "credit" } else { "debit" })
    .bind(amount)
    .bind(balance_before)
    .bind(balance_after)
    .bind(transaction_id.map(|_| "Transaction"))
    .bind(transaction_id)
    .bind(description)
    .bind(kind)
    .bind(booking_id)
    .execute(&mut *tx)
    .await
    .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("writing a wallet line")))?;
    Ok(WalletLine {
        wallet_id,
        balance_before,
        balance_after,
    })
}

/// What the platform keeps (positive) or bears (negative) of a booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformLine {
    Commission,
    PlatformFee,
    PromoCost,
    CancellationCommission,
}

impl PlatformLine {
    fn as_str(self) -> &'static str {
        match self {
            Self::Commission => "commission",
            Self::PlatformFee => "platform_fee",
            Self::PromoCost => "promo_cost",
            Self::CancellationCommission => "cancellation_commission",
        }
    }
}

/// Books the platform's share of a booking (zero amounts are skipped).
pub async fn platform(
    tx: &mut PgConnection,
    booking_id: i64,
    transaction_id: Option<i64>,
    line: PlatformLine,
    amount: Decimal,
) -> sqlx::Result<()> {
    if amount.is_zero() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO platform_ledger (booking_id, transaction_id, kind, amount) VALUES ($1, $2, $3, $4)",
    )
    .bind(booking_id)
    .bind(transaction_id)
    .bind(line.as_str())
    .bind(amount)
    .execute(tx)
    .await
    .map(|_| ())
}

/// `"1150.00"`.
pub fn money_text(amount: Decimal) -> String {
    let mut rounded = crate::domain::money::round_money(amount);
    rounded.rescale(2);
    rounded.to_string()
}
