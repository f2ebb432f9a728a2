//! Payments through the gateway: a pending `transactions` row gets a payment intent the
//! customer's app completes; the gateway's signed webhook then settles it, once however often
//! it is delivered. The same flow pays bookings, tips and wallet top-ups.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::gateway::{
    Gateway, GatewayError, GatewayEvent, GatewayEventKind, IntentRequest, RefundRequest,
};
use super::ledger::{self, money_text, EntryKind};
use super::settlement;
use super::{PaymentMethod, TransactionStatus, TransactionType};
use crate::domain::money::CURRENCY;
use crate::error::{ApiError, Context as _};
use crate::outbox::{Courier, Failure, Job};

/// The configured gateway, if any (card, GCash and Maya are refused without one).
#[derive(Clone, Default)]
pub struct Payments {
    pub gateway: Option<Arc<dyn Gateway>>,
}

impl Payments {
    pub fn gateway(&self) -> Result<&Arc<dyn Gateway>, ApiError> {
        self.gateway.as_ref().ok_or_else(|| {
            ApiError::invalid(
                "payment_method",
                "card, GCash and Maya payments are not configured on this server; pay by cash or wallet",
            )
        })
    }
}

/// A gateway payment as the paying app sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GatewayPayment {
    /// The Hilot transaction.
    pub transaction_id: Uuid,
    /// `payment`, `tip` or `wallet_topup`.
    #[serde(rename = "type")]
    pub kind: TransactionType,
    pub payment_method: PaymentMethod,
    /// `pending` until the gateway confirms it, then `completed` (or `failed`).
    pub status: TransactionStatus,
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "1150.00")]
    pub amount: Decimal,
    pub currency: String,
    /// `paymongo`.
    pub gateway: Option<String>,
    /// The payment intent the app attaches a payment method to.
    pub intent_id: Option<String>,
    /// The intent's client key (for the gateway's client-side API).
    pub client_key: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct PaymentRow {
    id: i64,
    uuid: Uuid,
    kind: TransactionType,
    payment_method: PaymentMethod,
    status: TransactionStatus,
    amount: Decimal,
    currency: Option<String>,
    gateway: Option<String>,
    intent_id: Option<String>,
    gateway_response: Option<Value>,
    created_at: Option<DateTime<Utc>>,
    description: Option<String>,
}

const ROW_SQL: &str = "SELECT id, uuid, type AS kind, payment_method, status, amount, currency, gateway, \
     gateway_transaction_id AS intent_id, gateway_response, created_at, description FROM transactions";

impl PaymentRow {
    fn view(self) -> GatewayPayment {
        GatewayPayment {
            transaction_id: self.uuid,
            kind: self.kind,
            payment_method: self.payment_method,
            status: self.status,
            amount: self.amount,
            currency: self.currency.unwrap_or_else(|| CURRENCY.to_owned()),
            gateway: self.gateway,
            intent_id: self.intent_id,
            client_key: self
                .gateway_response
                .as_ref()
                .and_then(|r| r.pointer("/data/attributes/client_key"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            created_at: self.created_at,
        }
    }
}

/// Gives a pending gateway transaction its payment intent (one HTTP call, outside any database
/// transaction), or answers the intent it already has.
pub async fn ensure_intent(
    db: &PgPool,
    payments: &Payments,
    transaction_id: i64,
) -> Result<GatewayPayment, ApiError> {
    let row: PaymentRow = sqlx::query_as(&format!("{ROW_SQL} WHERE id = $1"))
        .bind(transaction_id)
        .fetch_one(db)
        .await
        .context("loading the payment")?;
    if row.intent_id.is_some() || row.status != TransactionStatus::Pending {
        return Ok(row.view());
    }
    let gateway = payments.gateway()?;
    let intent = gateway
        .create_intent(&IntentRequest {
            amount: row.amount,
            currency: row.currency.clone().unwrap_or_else(|| CURRENCY.to_owned()),
            description: row.description.clone().unwrap_or_default(),
            method: row.payment_method.as_str().to_owned(),
            metadata: json!({"hilot_transaction_id": row.uuid}),
        })
        .await
        .map_err(|e| match e {
            GatewayError::Unavailable(_) => ApiError::Unavailable(e.to_string()),
            GatewayError::Rejected(_) => ApiError::Conflict(e.to_string()),
        })?;
    // Two requests racing: the first intent stored wins, the other is left unused at the gateway.
    sqlx::query(
        "UPDATE transactions SET gateway = $2, gateway_transaction_id = $3, gateway_response = $4, \
             status = 'pending' WHERE id = $1 AND gateway_transaction_id IS NULL",
    )
    .bind(row.id)
    .bind(gateway.name())
    .bind(&intent.id)
    .bind(&intent.raw)
    .execute(db)
    .await
    .context("storing the payment intent")?;
    let row: PaymentRow = sqlx::query_as(&format!("{ROW_SQL} WHERE id = $1"))
        .bind(transaction_id)
        .fetch_one(db)
        .await
        .context("loading the payment")?;
    Ok(row.view())
}

/// The booking's payment to complete through the gateway: its pending payment (created when the
/// therapist accepted), or a new one after a failed attempt.
pub async fn booking_payment(
    db: &PgPool,
    payments: &Payments,
    booking_id: i64,
    customer_id: i64,
) -> Result<GatewayPayment, ApiError> {
    payments.gateway()?;
    let mut tx = db.begin().await.context("starting the payment")?;
    let b = lock_booking(&mut tx, booking_id).await?;
    if b.customer_id != customer_id {
        return Err(ApiError::not_found("booking"));
    }
    if !b.payment_method.via_gateway() {
        return Err(ApiError::Conflict(format!(
            "this booking is paid by {}, not through the payment gateway",
            b.payment_method.as_str()
        )));
    }
    if matches!(b.status.as_str(), "pending" | "cancelled" | "no_show") {
        return Err(ApiError::Conflict(format!(
            "the booking is {}; it is paid once a therapist accepts it",
            b.status
        )));
    }
    let rows: Vec<(i64, TransactionStatus)> = sqlx::query_as(
        "SELECT id, status FROM transactions WHERE booking_id = $1 AND type = 'payment' ORDER BY id DESC",
    )
    .bind(booking_id)
    .fetch_all(&mut *tx)
    .await
    .context("reading the payments")?;
    let id = match rows
        .iter()
        .find(|(_, s)| !matches!(s, TransactionStatus::Failed | TransactionStatus::Refunded))
    {
        Some((id, _)) => *id,
        None if b.total_amount > Decimal::ZERO => {
            ledger::record(
                &mut tx,
                &ledger::NewTransaction::new(
                    TransactionType::Payment,
                    b.customer_id,
                    b.payment_method,
                    b.total_amount,
                    TransactionStatus::Pending,
                    format!("Booking {}", b.booking_number),
                )
                .booking(b.id),
            )
            .await
            .context("recording the payment")?
            .0
        }
        None => {
            return Err(ApiError::Conflict(
                "this booking costs nothing to pay".into(),
            ))
        }
    };
    tx.commit().await.context("committing the payment")?;
    ensure_intent(db, payments, id).await
}

async fn lock_booking(
    tx: &mut PgConnection,
    booking_id: i64,
) -> Result<settlement::BookingMoney, ApiError> {
    sqlx::query("SELECT 1 FROM bookings WHERE id = $1 FOR UPDATE")
        .bind(booking_id)
        .execute(&mut *tx)
        .await
        .context("locking the booking")?;
    settlement::load(tx, booking_id)
        .await
        .context("loading the booking")
}

/// A wallet top-up through the gateway; the wallet is credited when the gateway confirms it.
pub async fn start_topup(
    db: &PgPool,
    payments: &Payments,
    user_id: i64,
    amount: Decimal,
    method: PaymentMethod,
    idempotency_key: Option<String>,
) -> Result<GatewayPayment, ApiError> {
    payments.gateway()?;
    let mut t = ledger::NewTransaction::new(
        TransactionType::WalletTopup,
        user_id,
        method,
        amount,
        TransactionStatus::Pending,
        "Wallet top-up",
    );
    t.idempotency_key = idempotency_key.clone();
    let mut conn = db.acquire().await.context("starting the top-up")?;
    let id = match ledger::record(&mut conn, &t).await {
        Ok((id, _)) => id,
        Err(e) if crate::error::unique_violation(&e).is_some() => {
            let (id, kind, same): (i64, TransactionType, bool) = sqlx::query_as(
                "SELECT id, type, amount = $3 AND payment_method = $4 FROM transactions \
                 WHERE user_id = $1 AND idempotency_key = $2",
            )
            .bind(user_id)
            .bind(&idempotency_key)
            .bind(amount)
            .bind(method)
            .fetch_one(&mut *conn)
            .await
            .context("reading the earlier request")?;
            if kind != TransactionType::WalletTopup || !same {
                return Err(ApiError::Conflict(
                    "this Idempotency-Key was already used for another request".into(),
                ));
            }
            id
        }
        Err(e) => return Err(ApiError::from(e)),
    };
    drop(conn);
    ensure_intent(db, payments, id).await
}

/// What a verified gateway event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventOutcome {
    /// It changed a payment.
    Applied,
    /// It was already applied (a retry of the same event): nothing moved.
    AlreadyApplied,
    /// Nothing in Hilot matches it, or Hilot does not act on its type.
    Ignored,
}

/// Applies a verified gateway event. A replay (the same event with the same signature time) is
/// refused with 409; a retry with a fresh signature is applied once (idempotent by the payment's
/// status).
pub async fn apply_event(
    db: &PgPool,
    gateway: &str,
    event: &GatewayEvent,
) -> Result<EventOutcome, ApiError> {
    let mut tx = db.begin().await.context("starting the webhook")?;
    let fresh = sqlx::query(
        "INSERT INTO gateway_webhook_receipts (gateway, event_id, signed_at, event_type) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(gateway)
    .bind(&event.event_id)
    .bind(event.signed_at)
    .bind(event.kind.name())
    .execute(&mut *tx)
    .await
    .context("recording the webhook")?
    .rows_affected();
    if fresh == 0 {
        return Err(ApiError::Conflict(format!(
            "webhook {} signed at {} was already received: a replay",
            event.event_id, event.signed_at
        )));
    }
    let outcome = match &event.kind {
        GatewayEventKind::PaymentPaid {
            intent_id,
            payment_id,
            amount,
            raw,
        } => paid(&mut tx, gateway, intent_id, payment_id, *amount, raw).await?,
        GatewayEventKind::PaymentFailed { intent_id, reason } => {
            let done = sqlx::query(
                "UPDATE transactions SET status = 'failed', failed_at = now(), failure_reason = $3 \
                 WHERE gateway = $1 AND gateway_transaction_id = $2 AND status IN ('pending', 'processing')",
            )
            .bind(gateway)
            .bind(intent_id)
            .bind(reason)
            .execute(&mut *tx)
            .await
            .context("failing the payment")?
            .rows_affected();
            if done > 0 {
                crate::webhooks::emit(
                    &mut tx,
                    "payment.failed",
                    json!({"intent_id": intent_id, "reason": reason}),
                )
                .await
                .context("queueing the webhook")?;
                EventOutcome::Applied
            } else {
                EventOutcome::Ignored
            }
        }
        GatewayEventKind::Other(_) => EventOutcome::Ignored,
    };
    tx.commit().await.context("committing the webhook")?;
    Ok(outcome)
}

/// id, uuid, type, status, amount, user_id, booking_id, payment_method.
type PaidRow = (
    i64,
    Uuid,
    TransactionType,
    TransactionStatus,
    Decimal,
    i64,
    Option<i64>,
    PaymentMethod,
);

async fn paid(
    tx: &mut PgConnection,
    gateway: &str,
    intent_id: &str,
    payment_id: &str,
    amount: Decimal,
    raw: &Value,
) -> Result<EventOutcome, ApiError> {
    // The booking is locked before its payment, as everywhere else (cancellation, the payment
    // endpoint): two webhooks for two payments of one booking must not wait on each other.
    let booking_of_payment: Option<Option<i64>> = sqlx::query_scalar(
        "SELECT booking_id FROM transactions WHERE gateway = $1 AND gateway_transaction_id = $2",
    )
    .bind(gateway)
    .bind(intent_id)
    .fetch_optional(&mut *tx)
    .await
    .context("finding the payment")?;
    if let Some(Some(booking_id)) = booking_of_payment {
        sqlx::query("SELECT 1 FROM bookings WHERE id = $1 FOR UPDATE")
            .bind(booking_id)
            .execute(&mut *tx)
            .await
            .context("locking the booking")?;
    }
    let row: Option<PaidRow> =
        sqlx::query_as(
            "SELECT id, uuid, type, status, amount, user_id, booking_id, payment_method FROM transactions \
             WHERE gateway = $1 AND gateway_transaction_id = $2 FOR UPDATE",
        )
        .bind(gateway)
        .bind(intent_id)
        .fetch_optional(&mut *tx)
        .await
        .context("finding the payment")?;
    let Some((id, uuid, kind, status, expected, user_id, booking_id, method)) = row else {
        return Ok(EventOutcome::Ignored);
    };
    if matches!(
        status,
        TransactionStatus::Completed | TransactionStatus::Refunded
    ) {
        return Ok(EventOutcome::AlreadyApplied);
    }
    if amount != expected {
        return Err(ApiError::Conflict(format!(
            "the gateway reports {} paid for a payment of {}",
            money_text(amount),
            money_text(expected)
        )));
    }
    sqlx::query(
        "UPDATE transactions SET status = 'completed', processed_at = now(), failed_at = NULL, failure_reason = NULL, \
             metadata = COALESCE(metadata, '{}'::jsonb) || jsonb_build_object('payment_id', $2::text, 'payment', $3::jsonb) \
         WHERE id = $1",
    )
    .bind(id)
    .bind(payment_id)
    .bind(raw)
    .execute(&mut *tx)
    .await
    .context("completing the payment")?;
    match kind {
        TransactionType::WalletTopup => {
            ledger::post(
                tx,
                user_id,
                EntryKind::Topup,
                amount,
                Some(id),
                None,
                "Wallet top-up",
            )
            .await?;
        }
        TransactionType::Tip => {
            let booking_id = booking_id
                .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a tip without a booking")))?;
            super::tips::credit_tip(tx, booking_id, id, amount).await?;
        }
        TransactionType::Payment => {
            let booking_id = booking_id.ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("a payment without a booking"))
            })?;
            let b = settlement::load(tx, booking_id)
                .await
                .context("loading the booking")?;
            let called_off = matches!(b.status.as_str(), "cancelled" | "no_show");
            // (A called-off booking's fee may be a completed wallet payment: a payment after
            // the cancellation is refunded below as such, not as a second payment.)
            let paid_before: bool = !called_off
                && sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM transactions WHERE booking_id = $1 AND type = 'payment' \
                     AND status = 'completed' AND id <> $2)",
            )
            .bind(booking_id)
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .context("reading the booking's payments")?;
            if paid_before {
                // Paid twice (a failed intent the customer completed after paying a new one):
                // the second payment goes back in full and stops counting as the booking's.
                sqlx::query("UPDATE transactions SET status = 'refunded' WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .context("setting the duplicate payment aside")?;
                settlement::issue_refund(tx, &b, id, method, amount, "Paid twice").await?;
                return Ok(EventOutcome::Applied);
            }
            // Any other attempt still open is called off; if the gateway completes it anyway,
            // it is refunded as above.
            sqlx::query(
                "UPDATE transactions SET status = 'failed', failed_at = now(), \
                     failure_reason = 'the booking was paid by another payment' \
                 WHERE booking_id = $1 AND type = 'payment' AND id <> $2 \
                   AND status IN ('pending', 'processing')",
            )
            .bind(booking_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .context("calling off the other payments")?;
            if called_off {
                // Paid after the booking was called off (its fee was settled then): all of it
                // goes back.
                settlement::issue_refund(
                    tx,
                    &b,
                    id,
                    method,
                    amount,
                    "Paid after the booking was cancelled",
                )
                .await?;
            }
            crate::webhooks::emit(
                tx,
                "payment.paid",
                json!({"booking_id": b.uuid, "booking_number": b.booking_number, "transaction_id": uuid,
                       "amount": money_text(amount), "currency": CURRENCY, "method": method}),
            )
            .await
            .context("queueing the webhook")?;
        }
        TransactionType::Refund | TransactionType::Payout => return Ok(EventOutcome::Ignored),
    }
    Ok(EventOutcome::Applied)
}

/// The outbox courier of gateway refunds.
pub struct RefundCourier {
    pub db: PgPool,
    pub gateway: Arc<dyn Gateway>,
}

impl Courier for RefundCourier {
    fn deliver<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<Option<u16>, Failure>> {
        Box::pin(async move {
            let refund_id = job
                .payload
                .get("refund_transaction_id")
                .and_then(Value::as_i64);
            let payment_id = job.payload.get("payment_id").and_then(Value::as_str);
            let amount: Option<Decimal> = job
                .payload
                .get("amount")
                .and_then(Value::as_str)
                .and_then(|a| a.parse().ok());
            let (Some(refund_id), Some(payment_id), Some(amount)) = (refund_id, payment_id, amount)
            else {
                return Err(Failure::permanent("a refund job without its payment", None));
            };
            let result = self
                .gateway
                .refund(&RefundRequest {
                    payment_id: payment_id.to_owned(),
                    amount,
                    reason: job
                        .payload
                        .get("reason")
                        .and_then(Value::as_str)
                        .unwrap_or("refund")
                        .to_owned(),
                    idempotency_key: job.uuid.to_string(),
                })
                .await;
            match result {
                Ok(refund) => {
                    sqlx::query(
                        "UPDATE transactions SET status = 'completed', processed_at = now(), gateway = $2, \
                             gateway_transaction_id = $3 WHERE id = $1 AND status = 'pending'",
                    )
                    .bind(refund_id)
                    .bind(self.gateway.name())
                    .bind(&refund.id)
                    .execute(&self.db)
                    .await
                    .map_err(|e| Failure::retry(format!("recording the refund: {e}"), None))?;
                    Ok(Some(200))
                }
                Err(GatewayError::Unavailable(why)) => Err(Failure::retry(why, None)),
                Err(GatewayError::Rejected(why)) => {
                    let _ = sqlx::query(
                        "UPDATE transactions SET status = 'failed', failed_at = now(), failure_reason = $2 \
                         WHERE id = $1 AND status = 'pending'",
                    )
                    .bind(refund_id)
                    .bind(&why)
                    .execute(&self.db)
                    .await;
                    Err(Failure::permanent(why, None))
                }
            }
        })
    }
}
