//! Reviews over HTTP: write one, read a booking's or a therapist's, and moderate (admins).

use actix_web::{get, post, web, HttpResponse};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Caller;
use super::extract::{Json, Query};
use crate::error::{ApiError, Context as _, Problem};
use crate::reviews::{self, NewReview, ReviewView};
use crate::state::AppState;

/// Reviews the other party of a completed booking: the customer the therapist, the therapist
/// the customer; once each, within `review_window_days` of completion. A customer's review
/// moves the therapist's `average_rating` and `total_reviews`.
#[utoipa::path(
    tag = "reviews",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id")),
    request_body = NewReview,
    responses(
        (status = 201, description = "The review", body = ReviewView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not completed, already reviewed, or the window closed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A rating outside 1-5, or an invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/bookings/{booking_id}/review")]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Json(body): Json<NewReview>,
) -> Result<HttpResponse, ApiError> {
    let (review, provider) =
        reviews::create(&state.db, path.into_inner(), caller.user_id(), &body).await?;
    if let Some(provider_id) = provider {
        // Ranking reads the rating from the live index.
        state.provider_changed(provider_id).await;
    }
    Ok(HttpResponse::Created().json(review))
}

/// The reviews of a booking, for its customer, its therapist or an admin.
#[utoipa::path(
    tag = "reviews",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id")),
    responses(
        (status = 200, description = "Reviews", body = [ReviewView]),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/bookings/{booking_id}/reviews")]
pub async fn of_booking(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<Vec<ReviewView>>, ApiError> {
    let booking = crate::dispatch::store::facts_by_uuid(&state.db, path.into_inner())
        .await
        .context("loading the booking")?
        .filter(|b| {
            b.customer_id == caller.user_id()
                || b.provider_user_id == Some(caller.user_id())
                || caller.is_admin()
        })
        .ok_or_else(|| ApiError::not_found("booking"))?;
    reviews::of_booking(&state.db, booking.id)
        .await
        .context("listing reviews")
        .map(web::Json)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReviewListQuery {
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

/// A therapist's visible reviews by customers, newest first (any signed-in user).
#[utoipa::path(
    tag = "reviews",
    security(("bearer" = [])),
    params(("provider_id" = Uuid, Path, description = "The therapist's provider id"), ReviewListQuery),
    responses(
        (status = 200, description = "Reviews", body = [ReviewView]),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such therapist", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/therapists/{provider_id}/reviews")]
pub async fn of_therapist(
    state: web::Data<AppState>,
    _caller: Caller,
    path: web::Path<Uuid>,
    Query(query): Query<ReviewListQuery>,
) -> Result<web::Json<Vec<ReviewView>>, ApiError> {
    let limit = limit(query.limit)?;
    let provider: i64 =
        sqlx::query_scalar("SELECT id FROM providers WHERE uuid = $1 AND deleted_at IS NULL")
            .bind(path.into_inner())
            .fetch_optional(&state.db)
            .await
            .context("finding the therapist")?
            .ok_or_else(|| ApiError::not_found("therapist"))?;
    reviews::of_provider(&state.db, provider, limit)
        .await
        .context("listing reviews")
        .map(web::Json)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ModerationQuery {
    pub flagged: Option<bool>,
    pub visible: Option<bool>,
    /// Default 50, at most 200.
    pub limit: Option<i64>,
}

/// Reviews for moderation, newest first (admins).
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(ModerationQuery),
    responses(
        (status = 200, description = "Reviews", body = [ReviewView]),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/admin/reviews")]
pub async fn list_for_moderation(
    state: web::Data<AppState>,
    caller: Caller,
    Query(query): Query<ModerationQuery>,
) -> Result<web::Json<Vec<ReviewView>>, ApiError> {
    caller.require_admin()?;
    let limit = limit(query.limit)?;
    reviews::for_moderation(&state.db, query.flagged, query.visible, limit)
        .await
        .context("listing reviews")
        .map(web::Json)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModerationRequest {
    /// False hides the review (it leaves the therapist's average).
    pub is_visible: Option<bool>,
    pub is_flagged: Option<bool>,
    pub flagged_reason: Option<String>,
}

/// Hides, shows, flags or unflags a review (admins).
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("review_id" = Uuid, Path, description = "The review id")),
    request_body = ModerationRequest,
    responses(
        (status = 200, description = "The review", body = ReviewView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such review", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/admin/reviews/{review_id}/moderate")]
pub async fn moderate(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Json(body): Json<ModerationRequest>,
) -> Result<web::Json<ReviewView>, ApiError> {
    caller.require_admin()?;
    let mut errors = Vec::new();
    if let Some(reason) = &body.flagged_reason {
        crate::domain::validate::check_text(&mut errors, "flagged_reason", reason, 1, 500);
    }
    if body.is_visible.is_none() && body.is_flagged.is_none() && body.flagged_reason.is_none() {
        errors.push(crate::error::FieldError::new(
            "is_visible",
            "give is_visible, is_flagged or flagged_reason",
        ));
    }
    ApiError::check(errors)?;
    let (review, provider) = reviews::moderate(
        &state.db,
        path.into_inner(),
        body.is_visible,
        body.is_flagged,
        body.flagged_reason.as_deref().map(str::trim),
    )
    .await?;
    if let Some(provider_id) = provider {
        state.provider_changed(provider_id).await;
    }
    Ok(web::Json(review))
}
