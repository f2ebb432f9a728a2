//! Money over HTTP: the caller's wallet and its lines, top-ups, paying a booking through the
//! gateway, tips, the gateway's webhook, and the admin's payouts and ledger check.

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Caller;
use super::extract::{Json, Query, RawBody};
use crate::error::{ApiError, Context as _, Problem};
use crate::money::check::{self, Violation};
use crate::money::payments::{self, EventOutcome, GatewayPayment};
use crate::money::payouts::{self, PayoutRun, PayoutView};
use crate::money::views::{self, WalletLineView, WalletView};
use crate::money::{gateway::WebhookError, tips, PaymentMethod};
use crate::state::AppState;

use super::bookings::optional_idempotency_key;

/// The caller's wallet.
#[utoipa::path(
    tag = "money",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The wallet", body = WalletView),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/wallet")]
pub async fn wallet(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<web::Json<WalletView>, ApiError> {
    views::wallet(&state.db, caller.user_id())
        .await
        .context("loading the wallet")?
        .map(web::Json)
        .ok_or_else(|| ApiError::not_found("wallet"))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    /// Default 50, at most 200.
    pub limit: Option<i64>,
}

fn limit(value: Option<i64>) -> Result<i64, ApiError> {
    let limit = value.unwrap_or(50);
    let mut errors = Vec::new();
    crate::domain::validate::check_range(&mut errors, "limit", limit, 1, 200);
    ApiError::check(errors)?;
    Ok(limit)
}

/// The caller's wallet lines, newest first, each with the balance before and after.
#[utoipa::path(
    tag = "money",
    security(("bearer" = [])),
    params(LimitQuery),
    responses(
        (status = 200, description = "Wallet lines, newest first", body = [WalletLineView]),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/wallet/transactions")]
pub async fn wallet_transactions(
    state: web::Data<AppState>,
    caller: Caller,
    Query(query): Query<LimitQuery>,
) -> Result<web::Json<Vec<WalletLineView>>, ApiError> {
    let limit = limit(query.limit)?;
    views::wallet_lines(&state.db, caller.user_id(), limit)
        .await
        .context("listing wallet lines")
        .map(web::Json)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopupRequest {
    #[serde(with = "crate::domain::money")]
    #[schema(schema_with = topup_amount_schema)]
    pub amount: Decimal,
    /// `card`, `gcash` or `paymaya`.
    pub payment_method: PaymentMethod,
}

fn topup_amount_schema() -> utoipa::openapi::Object {
    crate::domain::money::input_schema("What to add to the wallet, 1 to 100000 PHP.", false)
}

/// Largest single top-up.
pub const MAX_TOPUP: i64 = 100_000;

/// Adds money to the caller's wallet through the gateway: answers the payment intent the app
/// completes; the wallet is credited when the gateway's webhook confirms it.
#[utoipa::path(
    tag = "money",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key answer the same top-up")),
    request_body = TopupRequest,
    responses(
        (status = 201, description = "The pending top-up and its payment intent", body = GatewayPayment),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key was used for another request, or the gateway refused", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid amount or method (or no gateway configured)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The gateway is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/wallet/topups")]
pub async fn topup(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    Json(body): Json<TopupRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = optional_idempotency_key(&req)?;
    if body.amount < Decimal::ONE || body.amount > Decimal::from(MAX_TOPUP) {
        return Err(ApiError::invalid(
            "amount",
            format!("must be from 1.00 to {MAX_TOPUP}.00"),
        ));
    }
    if !body.payment_method.via_gateway() {
        return Err(ApiError::invalid(
            "payment_method",
            "top up by card, gcash or paymaya",
        ));
    }
    let payment = payments::start_topup(
        &state.db,
        &state.payments,
        caller.user_id(),
        body.amount,
        body.payment_method,
        key,
    )
    .await?;
    Ok(HttpResponse::Created().json(payment))
}

/// The customer's booking (404 for anyone else).
async fn own_booking(state: &AppState, caller: &Caller, booking: Uuid) -> Result<i64, ApiError> {
    crate::dispatch::store::facts_by_uuid(&state.db, booking)
        .await
        .context("loading the booking")?
        .filter(|b| b.customer_id == caller.user_id())
        .map(|b| b.id)
        .ok_or_else(|| ApiError::not_found("booking"))
}

/// Pays an accepted card, GCash or Maya booking: answers its payment intent (the same one until
/// it is paid or fails; a new one after a failure). The booking's `payment.status` becomes
/// `paid` when the gateway's webhook confirms it.
#[utoipa::path(
    tag = "money",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id")),
    responses(
        (status = 200, description = "The payment and its intent", body = GatewayPayment),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not a gateway booking, or not accepted yet", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No gateway configured", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The gateway is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/bookings/{booking_id}/payment")]
pub async fn pay_booking(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<GatewayPayment>, ApiError> {
    let booking_id = own_booking(&state, &caller, path.into_inner()).await?;
    payments::booking_payment(&state.db, &state.payments, booking_id, caller.user_id())
        .await
        .map(web::Json)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TipRequest {
    #[serde(with = "crate::domain::money")]
    #[schema(schema_with = tip_amount_schema)]
    pub amount: Decimal,
    /// `wallet` (default: paid at once) or `card`, `gcash`, `paymaya` (through the gateway).
    pub payment_method: Option<PaymentMethod>,
}

fn tip_amount_schema() -> utoipa::openapi::Object {
    crate::domain::money::input_schema(
        "More than zero, at most app setting tip_limits.max_amount.",
        false,
    )
}

/// Tips the therapist of a completed booking (customer only; once or more). All of it goes to
/// the therapist's wallet.
#[utoipa::path(
    tag = "money",
    security(("bearer" = [])),
    params(
        ("booking_id" = Uuid, Path, description = "The booking id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key answer the same tip"),
    ),
    request_body = TipRequest,
    responses(
        (status = 201, description = "The tip (completed; or pending with a payment intent when paid through the gateway)", body = GatewayPayment),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The booking is not completed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Amount zero or below or above the ceiling, wallet short, or no gateway", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The gateway is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/bookings/{booking_id}/tip")]
pub async fn tip(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Json(body): Json<TipRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = optional_idempotency_key(&req)?;
    let booking_id = own_booking(&state, &caller, path.into_inner()).await?;
    let payment = tips::tip(
        &state.db,
        &state.payments,
        booking_id,
        caller.user_id(),
        body.amount,
        body.payment_method.unwrap_or(PaymentMethod::Wallet),
        key,
    )
    .await?;
    Ok(HttpResponse::Created().json(payment))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAnswer {
    pub event_id: String,
    pub outcome: EventOutcome,
}

/// The payment gateway's webhook (PayMongo events `payment.paid`, `payment.failed`). The
/// signature (HMAC-SHA256 in `Paymongo-Signature`) and its time (within the tolerance) are
/// checked; a replay is refused; a retried event is applied once.
#[utoipa::path(
    tag = "money",
    request_body(content = Object, description = "The gateway's event, exactly as signed"),
    params(("Paymongo-Signature" = String, Header, description = "t=<unix>,te=<hex>,li=<hex>")),
    responses(
        (status = 200, description = "Processed (or already processed)", body = WebhookAnswer),
        (status = 400, description = "Malformed event", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing or forged signature, signed outside the tolerance, or no gateway configured", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A replay of an event already received", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over the size limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A signed event holding a NUL character (U+0000)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/payments/webhook")]
pub async fn gateway_webhook(
    req: HttpRequest,
    state: web::Data<AppState>,
    RawBody(body): RawBody,
) -> Result<web::Json<WebhookAnswer>, ApiError> {
    let gateway = state.payments.gateway.clone().ok_or_else(|| {
        ApiError::Forbidden(
            "no payment gateway is configured: its webhooks cannot be verified".into(),
        )
    })?;
    let signature = req
        .headers()
        .get(gateway.signature_header())
        .and_then(|v| v.to_str().ok());
    let event = gateway
        .verify_webhook(signature, &body, chrono::Utc::now().timestamp())
        .map_err(|e| {
            metrics::counter!("hilot_gateway_webhooks_refused_total").increment(1);
            match e {
                WebhookError::Malformed(_) => ApiError::BadRequest(e.to_string()),
                _ => ApiError::Forbidden(e.to_string()),
            }
        })?;
    // Even a signed event cannot put a NUL character in the database.
    super::extract::refuse_nul(&body)?;
    let outcome = payments::apply_event(&state.db, gateway.name(), &event).await?;
    Ok(web::Json(WebhookAnswer {
        event_id: event.event_id,
        outcome,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayoutRunRequest {
    /// First day of the period (UTC).
    pub period_start: NaiveDate,
    /// Last day of the period, included.
    pub period_end: NaiveDate,
}

/// Runs a payout for a period (admins): one payout per therapist with positive net earnings in
/// it (seed §6.2 over earnings not yet paid out), each debiting their wallet. Running the same
/// period again creates nothing.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = PayoutRunRequest,
    responses(
        (status = 200, description = "What the run created (and whom it skipped, why)", body = PayoutRun),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The period ends before it starts, or ends in the future", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/admin/payouts/run")]
pub async fn run_payouts(
    state: web::Data<AppState>,
    caller: Caller,
    Json(body): Json<PayoutRunRequest>,
) -> Result<web::Json<PayoutRun>, ApiError> {
    caller.require_admin()?;
    if body.period_end < body.period_start {
        return Err(ApiError::invalid(
            "period_end",
            "must not be before period_start",
        ));
    }
    if body.period_end > chrono::Utc::now().date_naive() {
        return Err(ApiError::invalid("period_end", "must not be in the future"));
    }
    if (body.period_end - body.period_start).num_days() > 366 {
        return Err(ApiError::invalid(
            "period_start",
            "a period is at most a year",
        ));
    }
    payouts::run(&state.db, body.period_start, body.period_end)
        .await
        .map(web::Json)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PayoutListQuery {
    /// `pending`, `processing`, `completed` or `failed`.
    pub status: Option<PayoutStatus>,
    /// Default 50, at most 200.
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PayoutStatus {
    Pending,
    Processing,
    Completed,
    Failed,
}

impl PayoutStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

/// Payouts, newest first (admins).
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(PayoutListQuery),
    responses(
        (status = 200, description = "Payouts", body = [PayoutView]),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/admin/payouts")]
pub async fn list_payouts(
    state: web::Data<AppState>,
    caller: Caller,
    Query(query): Query<PayoutListQuery>,
) -> Result<web::Json<Vec<PayoutView>>, ApiError> {
    caller.require_admin()?;
    let limit = limit(query.limit)?;
    payouts::list(&state.db, query.status.map(PayoutStatus::as_str), limit)
        .await
        .context("listing payouts")
        .map(web::Json)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayoutStatusRequest {
    /// `completed` or `failed`.
    pub status: PayoutStatus,
    /// The bank's reference (completed).
    pub reference_number: Option<String>,
    /// Why the transfer failed.
    pub failure_reason: Option<String>,
}

/// Marks a pending payout completed or failed (admins). A failed payout's net returns to the
/// therapist's wallet and its earnings to the next run.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("payout_id" = Uuid, Path, description = "The payout id")),
    request_body = PayoutStatusRequest,
    responses(
        (status = 200, description = "The payout", body = PayoutView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such payout", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already completed or failed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/admin/payouts/{payout_id}/status")]
pub async fn payout_status(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Json(body): Json<PayoutStatusRequest>,
) -> Result<web::Json<PayoutView>, ApiError> {
    caller.require_admin()?;
    let mut errors = Vec::new();
    if let Some(reference) = &body.reference_number {
        crate::domain::validate::check_text(&mut errors, "reference_number", reference, 1, 50);
    }
    if let Some(reason) = &body.failure_reason {
        crate::domain::validate::check_text(&mut errors, "failure_reason", reason, 1, 500);
    }
    ApiError::check(errors)?;
    let completed = match body.status {
        PayoutStatus::Completed => true,
        PayoutStatus::Failed => false,
        other => {
            return Err(ApiError::invalid(
                "status",
                format!(
                    "a payout is marked completed or failed, not {}",
                    other.as_str()
                ),
            ))
        }
    };
    payouts::settle(
        &state.db,
        path.into_inner(),
        completed,
        body.reference_number.as_deref().map(str::trim),
        body.failure_reason.as_deref().map(str::trim),
    )
    .await
    .map(web::Json)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerCheck {
    /// True when every invariant holds.
    pub ok: bool,
    pub violations: Vec<Violation>,
}

/// Runs the ledger's invariants (admins): wallets equal their lines, and every completed
/// booking's payment = earnings + commission + platform fee - promo discount.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The check", body = LedgerCheck),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/admin/ledger/check")]
pub async fn ledger_check(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<web::Json<LedgerCheck>, ApiError> {
    caller.require_admin()?;
    let violations = check::run(&state.db).await.context("checking the ledger")?;
    Ok(web::Json(LedgerCheck {
        ok: violations.is_empty(),
        violations,
    }))
}
