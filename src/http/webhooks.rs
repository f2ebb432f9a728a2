//! Operator webhooks over HTTP (admins): register endpoints, list them and their deliveries,
//! redeliver one, and deactivate an endpoint.

use actix_web::{delete, get, post, web, HttpResponse};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Caller;
use super::extract::{Json, Query};
use crate::error::{ApiError, Context as _, FieldError, Problem};
use crate::outbox::{self, DeliveryView};
use crate::state::AppState;
use crate::webhooks::{self, signing, EndpointView};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// Where events are POSTed (`http` or `https`).
    pub url: String,
    /// Event types (`booking.completed`), prefixes (`booking.*`) or `*`.
    pub events: Vec<String>,
    /// `whsec_<base64 of 24 to 64 bytes>`; generated when omitted. Shown only in this answer.
    pub secret: Option<String>,
    pub description: Option<String>,
}

/// `private_allowed`: the operator lets webhooks reach internal addresses.
fn check_url(errors: &mut Vec<FieldError>, raw: &str, private_allowed: bool) {
    match url::Url::parse(raw.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            if !private_allowed && !webhooks::address::host_may_be_public(&url) {
                errors.push(FieldError::new("url", webhooks::address::NOT_PUBLIC));
            }
            if raw.len() > 2000 {
                errors.push(FieldError::new("url", "must be at most 2000 characters"));
            }
            if !url.username().is_empty() || url.password().is_some() {
                errors.push(FieldError::new(
                    "url",
                    "must not carry credentials; use the secret",
                ));
            }
        }
        Ok(_) => errors.push(FieldError::new(
            "url",
            "must be an http or https URL with a host",
        )),
        Err(e) => errors.push(FieldError::new("url", format!("is not a URL: {e}"))),
    }
}

/// Registers a webhook endpoint (admins). Events are delivered at least once, signed per the
/// Standard Webhooks spec (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`),
/// retried with exponential backoff and dead-lettered after the last attempt.
#[utoipa::path(
    tag = "webhooks",
    security(("bearer" = [])),
    request_body = NewEndpoint,
    responses(
        (status = 201, description = "The endpoint, with its secret (shown once)", body = EndpointView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an http(s) URL, an internal address (unless HILOT_WEBHOOK_PRIVATE_ADDRESSES), unknown event, or a malformed secret", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/admin/webhooks")]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    Json(body): Json<NewEndpoint>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let mut errors = Vec::new();
    check_url(
        &mut errors,
        &body.url,
        state.settings.integrations.webhook_private_addresses,
    );
    if body.events.is_empty() || body.events.len() > 50 {
        errors.push(FieldError::new("events", "give 1 to 50 event types"));
    }
    for event in &body.events {
        if !webhooks::is_valid_pattern(event) {
            errors.push(FieldError::new(
                "events",
                format!(
                    "unknown event type {event:?}; known: {}",
                    webhooks::EVENT_TYPES.join(", ")
                ),
            ));
        }
    }
    if let Some(secret) = &body.secret {
        if let Err(why) = signing::secret_key(secret) {
            errors.push(FieldError::new("secret", why));
        }
    }
    if let Some(description) = &body.description {
        crate::domain::validate::check_text(&mut errors, "description", description, 0, 500);
    }
    ApiError::check(errors)?;
    let secret = body.secret.clone().unwrap_or_else(webhooks::new_secret);
    let mut events = body.events.clone();
    events.sort();
    events.dedup();
    let endpoint = webhooks::create_endpoint(
        &state.db,
        body.url.trim(),
        &events,
        &secret,
        crate::domain::validate::optional_text(&body.description),
        caller.user_id(),
    )
    .await
    .context("creating the endpoint")?;
    Ok(HttpResponse::Created().json(endpoint))
}

/// Webhook endpoints (admins).
#[utoipa::path(
    tag = "webhooks",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Endpoints (without their secrets)", body = [EndpointView]),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/admin/webhooks")]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<web::Json<Vec<EndpointView>>, ApiError> {
    caller.require_admin()?;
    webhooks::list_endpoints(&state.db)
        .await
        .context("listing endpoints")
        .map(web::Json)
}

/// Deactivates an endpoint (admins); its pending deliveries are dead-lettered.
#[utoipa::path(
    tag = "webhooks",
    security(("bearer" = [])),
    params(("endpoint_id" = Uuid, Path, description = "The endpoint id")),
    responses(
        (status = 200, description = "The endpoint, inactive", body = EndpointView),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/admin/webhooks/{endpoint_id}")]
pub async fn deactivate(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<EndpointView>, ApiError> {
    caller.require_admin()?;
    let mut tx = state.db.begin().await.context("starting")?;
    let endpoint = webhooks::deactivate(&mut tx, path.into_inner())
        .await
        .context("deactivating the endpoint")?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    tx.commit().await.context("committing")?;
    Ok(web::Json(endpoint))
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Dead,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    pub status: Option<DeliveryStatus>,
    /// Default 50, at most 200.
    pub limit: Option<i64>,
}

async fn endpoint(state: &AppState, id: Uuid) -> Result<i64, ApiError> {
    webhooks::endpoint_id(&state.db, id)
        .await
        .context("finding the endpoint")?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

/// An endpoint's deliveries, newest first (admins): status, attempts, last error.
#[utoipa::path(
    tag = "webhooks",
    security(("bearer" = [])),
    params(("endpoint_id" = Uuid, Path, description = "The endpoint id"), DeliveryQuery),
    responses(
        (status = 200, description = "Deliveries", body = [DeliveryView]),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/admin/webhooks/{endpoint_id}/deliveries")]
pub async fn deliveries(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Query(query): Query<DeliveryQuery>,
) -> Result<web::Json<Vec<DeliveryView>>, ApiError> {
    caller.require_admin()?;
    let limit = query.limit.unwrap_or(50);
    let mut errors = Vec::new();
    crate::domain::validate::check_range(&mut errors, "limit", limit, 1, 200);
    ApiError::check(errors)?;
    let id = endpoint(&state, path.into_inner()).await?;
    let status = query.status.map(|s| match s {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Dead => "dead",
    });
    outbox::deliveries_of_endpoint(&state.db, id, status, limit)
        .await
        .context("listing deliveries")
        .map(web::Json)
}

/// Sends a delivery again now, with a fresh count of attempts (admins); same `webhook-id`.
#[utoipa::path(
    tag = "webhooks",
    security(("bearer" = [])),
    params(
        ("endpoint_id" = Uuid, Path, description = "The endpoint id"),
        ("delivery_id" = Uuid, Path, description = "The delivery id"),
    ),
    responses(
        (status = 200, description = "The delivery, pending again", body = DeliveryView),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint or delivery", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The endpoint is inactive", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/admin/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver")]
pub async fn redeliver(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<web::Json<DeliveryView>, ApiError> {
    caller.require_admin()?;
    let (endpoint_uuid, delivery) = path.into_inner();
    let id = endpoint(&state, endpoint_uuid).await?;
    let active: bool = sqlx::query_scalar("SELECT is_active FROM webhook_endpoints WHERE id = $1")
        .bind(id)
        .fetch_one(&state.db)
        .await
        .context("reading the endpoint")?;
    if !active {
        return Err(ApiError::Conflict("the endpoint is inactive".into()));
    }
    outbox::redeliver(&state.db, id, delivery)
        .await
        .context("redelivering")?
        .map(web::Json)
        .ok_or_else(|| ApiError::not_found("delivery"))
}
