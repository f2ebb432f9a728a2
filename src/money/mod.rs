//! Money: every peso moves through the ledger (`transactions`, `wallet_transactions` and the
//! platform's side in `platform_ledger`), each move inside one database transaction.
//!
//! - [`ledger`]: posting a wallet line (balance before and after, never negative unless a
//!   documented rule allows it) and recording a transaction.
//! - [`settlement`]: what a booking's acceptance, completion and cancellation move (payment,
//!   commission, platform fee, promo cost, earnings, cancellation fee, refunds).
//! - [`gateway`]: the `Gateway` trait, PayMongo's payment-intent API over HTTP, and its signed
//!   webhook.
//! - [`payments`]: card, GCash and Maya payments of bookings, tips and top-ups through the
//!   gateway, and what a verified gateway event does.
//! - [`tips`], [`payouts`]: tips to therapists; payout runs over a period (seed §6.2).
//! - [`views`]: wallets and a booking's payment as clients see them.
//! - [`check`]: the ledger invariants as one SQL query (`sql/ledger_check.sql`).

pub mod check;
pub mod gateway;
pub mod ledger;
pub mod payments;
pub mod payouts;
pub mod settlement;
pub mod tips;
pub mod views;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How a customer pays (the seed's `payment_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[sqlx(type_name = "payment_method", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Cash,
    Wallet,
    Card,
    Gcash,
    Paymaya,
}

impl PaymentMethod {
    /// Card and e-wallets are paid through the payment gateway; cash and the Hilot wallet
    /// settle inside Hilot.
    pub fn via_gateway(self) -> bool {
        matches!(self, Self::Card | Self::Gcash | Self::Paymaya)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cash => "cash",
            Self::Wallet => "wallet",
            Self::Card => "card",
            Self::Gcash => "gcash",
            Self::Paymaya => "paymaya",
        }
    }
}

/// `transactions.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema, sqlx::Type)]
#[sqlx(type_name = "transaction_type", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum TransactionType {
    Payment,
    Refund,
    Payout,
    WalletTopup,
    Tip,
}

/// `transactions.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema, sqlx::Type)]
#[sqlx(type_name = "transaction_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum TransactionStatus {
    Pending,
    Processing,
    Completed,
    Failed,
    Refunded,
}
