//! Dispatcher actions from the console: offer a pending booking to a chosen therapist,
//! reassign an accepted one, cancel with a reason and a fee decision, write to a booking's
//! parties, and mark a therapist offline. Admins only (the dispatcher role); every action is
//! written to `audit_logs` with the actor, their address, the target, the before and after and
//! the reason, in the action's own transaction.

use actix_web::{post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::Caller;
use super::extract::Json;
use crate::audit::AuditContext;
use crate::dispatch::store::BookingView;
use crate::domain::validate::{check_text, optional_text};
use crate::error::{ApiError, Problem};
use crate::messages::{self, ChatMessage, Recipients};
use crate::state::AppState;

/// The longest reason a dispatcher may give.
const REASON_MAX: usize = 500;

fn required_reason(reason: &str) -> Result<&str, ApiError> {
    let mut errors = Vec::new();
    check_text(&mut errors, "reason", reason, 1, REASON_MAX);
    ApiError::check(errors)?;
    Ok(reason.trim())
}

fn optional_reason(reason: &Option<String>) -> Result<Option<&str>, ApiError> {
    match optional_text(reason) {
        Some(reason) => required_reason(reason).map(Some),
        None => Ok(None),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfferRequest {
    /// The therapist (provider id) to offer the booking to; they must be online and free.
    pub therapist_id: Uuid,
    /// Why; recorded in the audit trail.
    pub reason: Option<String>,
}

/// Offer a pending booking to a chosen therapist now, beside any offers the matcher has open.
/// The offer is the engine's like any other: the therapist gets an `offer` frame, it expires
/// after `dispatch.offer_timeout_s`, and the first accept wins. Answers the booking's offers.
#[utoipa::path(
    tag = "dispatch",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id")),
    request_body = OfferRequest,
    responses(
        (status = 201, description = "The booking's offers, the new one last", body = [crate::dispatch::offers::OfferView]),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking or therapist", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The booking is not pending (the status is named), or the therapist is not free to take it (offline, busy, answering another offer, not offering the service)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/admin/bookings/{booking_id}/offers")]
pub async fn offer_booking(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Json(body): Json<OfferRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let reason = optional_reason(&body.reason)?;
    let offers = state
        .dispatcher
        .offer_to(
            path.into_inner(),
            body.therapist_id,
            reason,
            &AuditContext::from_request(&req, caller.user_id()),
        )
        .await?;
    Ok(HttpResponse::Created().json(offers))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReassignRequest {
    /// The therapist (provider id) to hand the booking to; they must be online and free.
    pub therapist_id: Uuid,
    /// Why; told to the first therapist and recorded in the audit trail.
    pub reason: String,
}

/// Hand an accepted or en-route booking to another therapist, who starts from `accepted`. The
/// first therapist is freed (they may get offers again at once) and hears `booking.reassigned`;
/// the customer and the new therapist get `booking.status` with `reason: "reassigned"`. The
/// customer's price does not change.
#[utoipa::path(
    tag = "dispatch",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id")),
    request_body = ReassignRequest,
    responses(
        (status = 200, description = "The booking with its new therapist", body = BookingView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking or therapist", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The booking is not accepted or en route (the status is named), or the therapist is not free to take it", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (a missing reason, or the therapist already holding the booking)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/admin/bookings/{booking_id}/reassign")]
pub async fn reassign_booking(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Json(body): Json<ReassignRequest>,
) -> Result<web::Json<BookingView>, ApiError> {
    caller.require_admin()?;
    let reason = required_reason(&body.reason)?;
    state
        .dispatcher
        .reassign(
            path.into_inner(),
            body.therapist_id,
            reason,
            &AuditContext::from_request(&req, caller.user_id()),
        )
        .await?
        .view(&state.dispatcher)
        .await
        .map(web::Json)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DispatcherCancelRequest {
    /// Shown to the customer and the therapist as the cancellation reason.
    pub reason: String,
    /// `true`: the customer pays what the policy asks of a customer cancelling now (nothing
    /// while pending or inside the free window); `false`: no fee.
    pub charge_fee: bool,
}

/// Cancel a booking with a reason and a fee decision, through the one cancellation rule: the
/// fee, the refund and the therapist's compensation are written in the cancellation's
/// transaction, with the audit row.
#[utoipa::path(
    tag = "dispatch",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id")),
    request_body = DispatcherCancelRequest,
    responses(
        (status = 200, description = "The cancelled booking (`cancellation_fee` says what the customer pays)", body = BookingView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The booking cannot be cancelled in its status (named)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/admin/bookings/{booking_id}/cancel")]
pub async fn cancel_booking(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Json(body): Json<DispatcherCancelRequest>,
) -> Result<web::Json<BookingView>, ApiError> {
    caller.require_admin()?;
    let reason = required_reason(&body.reason)?;
    state
        .dispatcher
        .cancel_by_dispatcher(
            path.into_inner(),
            reason,
            body.charge_fee,
            &AuditContext::from_request(&req, caller.user_id()),
        )
        .await?
        .view(&state.dispatcher)
        .await
        .map(web::Json)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DispatcherMessageRequest {
    pub body: String,
    /// `customer`, `therapist` or `both` (the default; only the customer while nobody is
    /// assigned).
    #[serde(default)]
    pub to: Recipients,
}

/// Write to a booking's parties through its chat, in any status. Each receiver gets a
/// `message` frame with `from: "dispatcher"` and a notification, and sees the message in
/// `GET /v1/bookings/{id}/messages`; the other party does not see a message not written to
/// them.
#[utoipa::path(
    tag = "dispatch",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id")),
    request_body = DispatcherMessageRequest,
    responses(
        (status = 201, description = "One message per receiver", body = [ChatMessage]),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Written to the therapist of a booking that has none", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Empty or too long", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/admin/bookings/{booking_id}/messages")]
pub async fn message_parties(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Json(body): Json<DispatcherMessageRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let sent = messages::post_from_dispatcher(
        &state.db,
        path.into_inner(),
        caller.user_id(),
        &body.body,
        body.to,
        &AuditContext::from_request(&req, caller.user_id()),
    )
    .await?;
    for (message, receiver) in &sent {
        state.bus.to_user(*receiver, message.frame().into()).await;
    }
    let messages: Vec<ChatMessage> = sent.into_iter().map(|(m, _)| m).collect();
    Ok(HttpResponse::Created().json(messages))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfflineRequest {
    /// Why; told to the therapist and recorded in the audit trail.
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TherapistOffline {
    pub provider_id: Uuid,
    pub online: bool,
    /// Whether they were online before.
    pub was_online: bool,
}

/// Mark a therapist offline (as if they had switched off): they get no more offers, an open
/// offer they hold goes to the next therapist, and their sockets hear an `availability` frame
/// (`online: false`, `by: "dispatcher"`, the reason). A booking they are on stays theirs. They
/// may go online again themselves.
#[utoipa::path(
    tag = "dispatch",
    security(("bearer" = [])),
    params(("provider_id" = Uuid, Path, description = "The therapist's provider id")),
    request_body = OfflineRequest,
    responses(
        (status = 200, description = "The therapist is offline", body = TherapistOffline),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such therapist", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/admin/therapists/{provider_id}/offline")]
pub async fn mark_offline(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Json(body): Json<OfflineRequest>,
) -> Result<web::Json<TherapistOffline>, ApiError> {
    caller.require_admin()?;
    let reason = required_reason(&body.reason)?;
    let provider_uuid = path.into_inner();
    let marked = state
        .dispatcher
        .mark_offline(
            provider_uuid,
            reason,
            &AuditContext::from_request(&req, caller.user_id()),
        )
        .await?;
    // The live index hears it (on every node); the therapist hears it, then that their offer
    // is gone (the matcher moves it on).
    state.provider_changed(marked.provider_id).await;
    state
        .bus
        .to_user(
            marked.user_id,
            json!({"type": "availability", "provider_id": provider_uuid, "online": false,
                   "by": "dispatcher", "reason": reason})
            .to_string()
            .into(),
        )
        .await;
    state.dispatcher.offline_committed(&marked).await;
    Ok(web::Json(TherapistOffline {
        provider_id: provider_uuid,
        online: false,
        was_online: marked.was_online,
    }))
}
