//! The payment gateway adapter: the [`Gateway`] trait Hilot pays through, and [`paymongo`], its
//! HTTP implementation on PayMongo's payment-intent API and signed webhooks.

pub mod paymongo;

use futures_util::future::BoxFuture;
use rust_decimal::Decimal;
use serde_json::Value;

/// A payment to collect.
#[derive(Debug, Clone)]
pub struct IntentRequest {
    pub amount: Decimal,
    pub currency: String,
    pub description: String,
    /// `card`, `gcash`, `paymaya`.
    pub method: String,
    /// Echoed back in the gateway's events.
    pub metadata: Value,
}

/// A payment intent the customer's app completes (it attaches a payment method with the
/// client key, and the gateway tells Hilot by webhook).
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    pub id: String,
    pub client_key: String,
    pub status: String,
    pub raw: Value,
}

#[derive(Debug, Clone)]
pub struct RefundRequest {
    /// The gateway's payment id (not the intent's).
    pub payment_id: String,
    pub amount: Decimal,
    pub reason: String,
    /// Hilot's refund id: the gateway refunds once however often it is asked.
    pub idempotency_key: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RefundResult {
    pub id: String,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    /// Unreachable, timed out or a 5xx: worth trying again.
    Unavailable(String),
    /// The gateway said no (4xx): trying again will not help.
    Rejected(String),
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unavailable(why) => write!(f, "the payment gateway is unavailable: {why}"),
            Self::Rejected(why) => write!(f, "the payment gateway refused: {why}"),
        }
    }
}

/// What a verified gateway webhook says.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayEvent {
    pub event_id: String,
    /// The signature's time (Unix seconds): with `event_id`, what a replay repeats.
    pub signed_at: i64,
    pub kind: GatewayEventKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GatewayEventKind {
    PaymentPaid {
        intent_id: String,
        payment_id: String,
        amount: Decimal,
        raw: Value,
    },
    PaymentFailed {
        intent_id: String,
        reason: String,
    },
    /// An event Hilot does not act on (acknowledged all the same).
    Other(String),
}

impl GatewayEventKind {
    pub fn name(&self) -> &str {
        match self {
            Self::PaymentPaid { .. } => "payment.paid",
            Self::PaymentFailed { .. } => "payment.failed",
            Self::Other(name) => name,
        }
    }
}

/// Why a webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookError {
    MissingSignature,
    BadSignature,
    /// Signed longer ago (or further ahead) than the tolerance.
    Stale {
        age_s: i64,
        tolerance_s: i64,
    },
    Malformed(String),
}

impl std::fmt::Display for WebhookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MissingSignature => write!(f, "the webhook has no signature header"),
            Self::BadSignature => write!(f, "the webhook signature does not match"),
            Self::Stale { age_s, tolerance_s } => write!(
                f,
                "the webhook was signed {age_s} s from now, beyond the {tolerance_s} s tolerance"
            ),
            Self::Malformed(why) => write!(f, "the webhook body is malformed: {why}"),
        }
    }
}

/// A payment gateway.
pub trait Gateway: Send + Sync {
    /// Stored in `transactions.gateway`.
    fn name(&self) -> &'static str;
    /// The header its webhooks carry their signature in.
    fn signature_header(&self) -> &'static str;
    fn create_intent<'a>(
        &'a self,
        request: &'a IntentRequest,
    ) -> BoxFuture<'a, Result<Intent, GatewayError>>;
    fn refund<'a>(
        &'a self,
        request: &'a RefundRequest,
    ) -> BoxFuture<'a, Result<RefundResult, GatewayError>>;
    /// Checks a webhook's signature and timestamp (`now` in Unix seconds) and reads it.
    fn verify_webhook(
        &self,
        signature: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<GatewayEvent, WebhookError>;
}

/// Centavos, as gateways count.
pub fn centavos(amount: Decimal) -> i64 {
    use rust_decimal::prelude::ToPrimitive;
    (crate::domain::money::round_money(amount) * Decimal::ONE_HUNDRED)
        .to_i64()
        .unwrap_or(i64::MAX)
}

pub fn from_centavos(centavos: i64) -> Decimal {
    Decimal::new(centavos, 2)
}
