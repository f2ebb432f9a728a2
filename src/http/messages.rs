//! The in-booking chat over HTTP (the same messages reach both parties' sockets as `message`
//! frames).

use actix_web::{get, post, web, HttpResponse};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Caller;
use super::extract::{Json, Query};
use crate::error::{ApiError, Problem};
use crate::messages::{self, ChatMessage, ReadReceipt};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MessageListQuery {
    /// The most recent this many (default 100, at most 500), oldest first.
    pub limit: Option<i64>,
}

/// The booking's messages, oldest first (its customer and therapist only), with read receipts.
#[utoipa::path(
    tag = "messages",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id"), MessageListQuery),
    responses(
        (status = 200, description = "Messages", body = [ChatMessage]),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking of yours", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/bookings/{booking_id}/messages")]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Query(query): Query<MessageListQuery>,
) -> Result<web::Json<Vec<ChatMessage>>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    let mut errors = Vec::new();
    crate::domain::validate::check_range(&mut errors, "limit", limit, 1, 500);
    ApiError::check(errors)?;
    messages::list(&state.db, path.into_inner(), caller.user_id(), limit)
        .await
        .map(web::Json)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// 1 to `messaging.max_length` characters.
    pub body: String,
}

/// Writes to the other party (from acceptance until a while after completion).
#[utoipa::path(
    tag = "messages",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id")),
    request_body = NewMessage,
    responses(
        (status = 201, description = "The message", body = ChatMessage),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The chat is not open", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Empty or too long", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many messages", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/bookings/{booking_id}/messages")]
pub async fn send(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Json(body): Json<NewMessage>,
) -> Result<HttpResponse, ApiError> {
    let (message, parties) =
        messages::post(&state.db, path.into_inner(), caller.user_id(), &body.body).await?;
    state.deliver_message(&message, &parties).await;
    Ok(HttpResponse::Created().json(message))
}

/// Marks the messages the caller received in this booking read; the sender gets a
/// `message.read` frame.
#[utoipa::path(
    tag = "messages",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id")),
    responses(
        (status = 200, description = "What was marked read", body = ReadReceipt),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/bookings/{booking_id}/messages/read")]
pub async fn mark_read(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<ReadReceipt>, ApiError> {
    let (receipt, side, parties) =
        messages::mark_read(&state.db, path.into_inner(), caller.user_id()).await?;
    state.deliver_read_receipt(&receipt, side, &parties).await;
    Ok(web::Json(receipt))
}
