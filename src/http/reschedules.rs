//! Reschedules of a scheduled booking: either side proposes a new time, the other approves or
//! rejects it (`crate::dispatch::reschedule` holds the rules).

use actix_web::{get, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::Caller;
use super::bookings::dispatch_caller;
use super::extract::Json;
use crate::dispatch::reschedule::RescheduleView;
use crate::domain::validate::{check_text, optional_text};
use crate::error::{ApiError, Problem};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposeReschedule {
    /// The new start: one of the therapist's free slots, at least the lead time ahead and within
    /// the booking horizon.
    pub scheduled_at: DateTime<Utc>,
    /// Shown to the other side.
    pub reason: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerReschedule {
    /// Shown to the side that asked.
    pub notes: Option<String>,
}

/// Propose a new time for an accepted scheduled booking (its customer or its therapist). The
/// other side is told (socket event `booking.reschedule` and a notification) and answers before
/// the request expires; one request may wait per booking.
#[utoipa::path(
    tag = "bookings",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking")),
    request_body = ProposeReschedule,
    responses(
        (status = 201, description = "The request, pending", body = RescheduleView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not an accepted scheduled booking (`booking_id`), or a request already waits", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (`scheduled_at`: past, before the lead time, beyond the horizon, not a free slot; `reason`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/bookings/{booking_id}/reschedule")]
pub async fn propose(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Json(body): Json<ProposeReschedule>,
) -> Result<HttpResponse, ApiError> {
    let mut errors = Vec::new();
    if let Some(reason) = &body.reason {
        check_text(&mut errors, "reason", reason, 0, 1000);
    }
    ApiError::check(errors)?;
    let who = dispatch_caller(&state, &caller).await?;
    let request = state
        .dispatcher
        .propose_reschedule(
            path.into_inner(),
            who,
            body.scheduled_at,
            optional_text(&body.reason),
        )
        .await?;
    Ok(HttpResponse::Created().json(request))
}

/// The booking's reschedule requests, oldest first (its customer, its therapist, admins).
#[utoipa::path(
    tag = "bookings",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking")),
    responses(
        (status = 200, description = "Reschedule requests", body = [RescheduleView]),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/bookings/{booking_id}/reschedule")]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<Vec<RescheduleView>>, ApiError> {
    let who = dispatch_caller(&state, &caller).await?;
    state
        .dispatcher
        .reschedules(path.into_inner(), who)
        .await
        .map(web::Json)
}

async fn answer(
    state: &AppState,
    caller: &Caller,
    booking_id: Uuid,
    request_id: Uuid,
    approved: bool,
    body: Option<AnswerReschedule>,
) -> Result<web::Json<RescheduleView>, ApiError> {
    let notes = body.and_then(|b| b.notes);
    let mut errors = Vec::new();
    if let Some(notes) = &notes {
        check_text(&mut errors, "notes", notes, 0, 1000);
    }
    ApiError::check(errors)?;
    let who = dispatch_caller(state, caller).await?;
    state
        .dispatcher
        .answer_reschedule(booking_id, request_id, who, approved, optional_text(&notes))
        .await
        .map(web::Json)
}

/// Approve the other side's request: the booking moves to the new time at once, or nothing
/// changes and the answer is 409 when that time was taken meanwhile.
#[utoipa::path(
    tag = "bookings",
    security(("bearer" = [])),
    params(
        ("booking_id" = Uuid, Path, description = "The booking"),
        ("request_id" = Uuid, Path, description = "The reschedule request"),
    ),
    request_body(content = Option<AnswerReschedule>, description = "Optional notes"),
    responses(
        (status = 200, description = "The request, approved", body = RescheduleView),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "You asked for it: the other side answers", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking or request of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The request is no longer open, the booking changed, or the new time is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (`notes`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/bookings/{booking_id}/reschedule/{request_id}/approve")]
pub async fn approve(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(Uuid, Uuid)>,
    body: Option<Json<AnswerReschedule>>,
) -> Result<web::Json<RescheduleView>, ApiError> {
    let (booking_id, request_id) = path.into_inner();
    answer(
        &state,
        &caller,
        booking_id,
        request_id,
        true,
        body.map(|b| b.0),
    )
    .await
}

/// Reject the other side's request: the booking keeps its time.
#[utoipa::path(
    tag = "bookings",
    security(("bearer" = [])),
    params(
        ("booking_id" = Uuid, Path, description = "The booking"),
        ("request_id" = Uuid, Path, description = "The reschedule request"),
    ),
    request_body(content = Option<AnswerReschedule>, description = "Optional notes"),
    responses(
        (status = 200, description = "The request, rejected", body = RescheduleView),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "You asked for it: the other side answers", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking or request of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The request is no longer open", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (`notes`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/bookings/{booking_id}/reschedule/{request_id}/reject")]
pub async fn reject(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(Uuid, Uuid)>,
    body: Option<Json<AnswerReschedule>>,
) -> Result<web::Json<RescheduleView>, ApiError> {
    let (booking_id, request_id) = path.into_inner();
    answer(
        &state,
        &caller,
        booking_id,
        request_id,
        false,
        body.map(|b| b.0),
    )
    .await
}
