//! WebSocket upgrades. The token is checked before the upgrade: a bad one gets 401 and no socket.

use actix_web::{get, web, HttpRequest, HttpResponse};

use super::auth::{authenticate, bearer_token};
use crate::accounts::Role;
use crate::error::{ApiError, Problem};
use crate::providers;
use crate::realtime::{customer, therapist, MAX_WIRE_FRAME_BYTES};
use crate::state::AppState;

/// A place among the handshakes in progress, or 503 with `Retry-After` when every place is
/// taken: under a reconnect storm the server refuses quickly instead of queueing.
pub fn admit(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    state.upgrades.admit().ok_or_else(|| {
        metrics::counter!("hilot_requests_shed_total", "reason" => "upgrades").increment(1);
        ApiError::Unavailable("too many connections are being set up; retry shortly".into())
    })
}

/// Completes the WebSocket handshake with Hilot's frame limits.
pub fn upgrade(
    req: &HttpRequest,
    body: web::Payload,
) -> Result<
    (
        HttpResponse,
        actix_ws::Session,
        actix_ws::AggregatedMessageStream,
    ),
    ApiError,
> {
    let (response, session, stream) = actix_ws::handle(req, body)
        .map_err(|e| ApiError::BadRequest(format!("not a WebSocket handshake: {e}")))?;
    let stream = stream
        .max_frame_size(MAX_WIRE_FRAME_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_WIRE_FRAME_BYTES);
    Ok((response, session, stream))
}

/// The therapist app's socket: location pings in, acks and offers out (see the API contract).
/// Authenticate with `Authorization: Bearer` or `?token=`.
///
/// The server sends `{"type":"config","ping_interval_s":n}` at connect and whenever the interval
/// changes (10 s idle, 2 s offered or on a booking, 1 s near the customer, longer under
/// overload); apps ping at that interval. An ack is `{"type":"ack","seq":n,"stored":bool}`, with
/// `"reason":"refused_by_database"` when the database refused the fix for good.
#[utoipa::path(
    tag = "realtime",
    security(("bearer" = [])),
    params(("token" = Option<String>, Query, description = "Bearer token, for clients that cannot set headers")),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket handshake", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a therapist", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No therapist profile yet", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many connections being set up, or the database is unavailable; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/ws/therapist")]
pub async fn therapist_socket(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let _admitted = admit(&state)?;
    let caller = authenticate(&state, bearer_token(&req, true)).await?;
    caller.require(Role::Therapist)?;
    let provider = providers::own_therapist(&state.db, caller.user_id()).await?;
    let (response, session, stream) = upgrade(&req, body)?;
    let who = therapist::TherapistIdentity {
        user_id: caller.user_id(),
        provider_id: provider.id,
    };
    actix_web::rt::spawn(therapist::run(
        state.get_ref().clone(),
        who,
        session,
        stream,
    ));
    Ok(response)
}

/// The customer app's socket: `booking.status` and `provider.location` pushes.
#[utoipa::path(
    tag = "realtime",
    security(("bearer" = [])),
    params(("token" = Option<String>, Query, description = "Bearer token, for clients that cannot set headers")),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket handshake", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a customer", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many connections being set up, or the database is unavailable; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/ws/customer")]
pub async fn customer_socket(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let _admitted = admit(&state)?;
    let caller = authenticate(&state, bearer_token(&req, true)).await?;
    caller.require(Role::Customer)?;
    let (response, session, stream) = upgrade(&req, body)?;
    actix_web::rt::spawn(customer::run(
        state.get_ref().clone(),
        caller.user_id(),
        session,
        stream,
    ));
    Ok(response)
}
