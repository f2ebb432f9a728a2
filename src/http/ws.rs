//! WebSocket upgrades. Credentials are checked before the upgrade (a bad one gets 401 and no
//! socket) and for as long as the socket is open (see [`crate::realtime::guard`]).

use actix_web::{get, web, HttpRequest, HttpResponse};

use super::auth::{authenticate, bearer_token, Caller};
use crate::accounts::tickets::Redemption;
use crate::accounts::Role;
use crate::error::{ApiError, Context as _, Problem};
use crate::providers;
use crate::realtime::guard::{Credentials, FrameLimiter, SocketGuard, SocketKind};
use crate::realtime::{customer, therapist, MAX_WIRE_FRAME_BYTES};
use crate::state::AppState;

/// Who opens a socket: `Authorization: Bearer` (apps), `?ticket=` (browsers, from
/// `POST /v1/ws/tickets`), or `?token=` (kept for existing apps; never logged). Only users with
/// one of `roles` may open it: others answer 403, and a ticket of theirs is not used up.
pub async fn socket_caller(
    req: &HttpRequest,
    state: &AppState,
    roles: &[Role],
) -> Result<Caller, ApiError> {
    let caller = if req
        .headers()
        .contains_key(actix_web::http::header::AUTHORIZATION)
    {
        authenticate(state, bearer_token(req, false)).await?
    } else if let Some(ticket) = url::form_urlencoded::parse(req.query_string().as_bytes())
        // An empty `ticket=` (a client's template left blank) counts as none.
        .find(|(k, v)| k == "ticket" && !v.is_empty())
        .map(|(_, v)| v.into_owned())
    {
        let names: Vec<&str> = roles.iter().map(|role| role.as_str()).collect();
        let owner = match crate::accounts::tickets::redeem(&state.db, &ticket, &names)
            .await
            .context("redeeming a WebSocket ticket")?
        {
            Redemption::Redeemed(owner) | Redemption::WrongRole(owner) => owner,
            Redemption::Invalid => return Err(ApiError::Unauthorized),
        };
        super::auth::record_user(owner.user_id);
        Caller(owner)
    } else {
        authenticate(state, bearer_token(req, true)).await?
    };
    caller.require_any(roles)?;
    Ok(caller)
}

/// The guard a new socket of `kind` runs under: registered (so ended credentials close it, and
/// a fourth socket of the same user and kind, on any node, replaces the oldest) with its frame
/// bucket.
pub async fn socket_guard(state: &AppState, kind: SocketKind, caller: &Caller) -> SocketGuard {
    let credentials = Credentials {
        user_id: caller.user_id(),
        token_id: caller.0.token_id,
        expires_at: caller.0.expires_at,
    };
    let (lease, replaced) = state
        .socket_registry
        .register_everywhere(kind, credentials)
        .await;
    for event in replaced {
        state.credentials_ended(event).await;
    }
    SocketGuard::new(
        lease,
        credentials,
        FrameLimiter::new(
            state.settings.socket_frames_per_s,
            state.settings.socket_frame_burst,
        ),
    )
}

const TICKET_PARAM: &str = "One-use ticket from `POST /v1/ws/tickets` (browsers)";
const TOKEN_PARAM: &str =
    "Bearer token, for existing clients that cannot set headers (prefer a ticket)";

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
/// Authenticate with `Authorization: Bearer`, `?ticket=` or `?token=`.
///
/// The server sends `{"type":"config","ping_interval_s":n}` at connect and whenever the interval
/// changes (10 s idle, 2 s offered or on a booking, 1 s near the customer, longer under
/// overload); apps ping at that interval. An ack is `{"type":"ack","seq":n,"stored":bool}`, with
/// `"reason":"refused_by_database"` when the database refused the fix for good.
#[utoipa::path(
    tag = "realtime",
    security(("bearer" = [])),
    params(
        ("ticket" = Option<String>, Query, description = TICKET_PARAM),
        ("token" = Option<String>, Query, description = TOKEN_PARAM),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket handshake", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token or ticket", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a therapist, or the therapist is suspended or rejected", body = Problem, content_type = "application/problem+json"),
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
    let caller = socket_caller(&req, &state, &[Role::Therapist]).await?;
    let provider = providers::own_therapist(&state.db, caller.user_id()).await?;
    if let Some(why) = providers::suspension(&provider) {
        return Err(ApiError::Forbidden(why));
    }
    let (response, session, stream) = upgrade(&req, body)?;
    let who = therapist::TherapistIdentity {
        user_id: caller.user_id(),
        provider_id: provider.id,
    };
    let guard = socket_guard(&state, SocketKind::Therapist, &caller).await;
    actix_web::rt::spawn(therapist::run(
        state.get_ref().clone(),
        who,
        guard,
        session,
        stream,
    ));
    Ok(response)
}

/// The customer app's socket: `booking.status` and `provider.location` pushes.
#[utoipa::path(
    tag = "realtime",
    security(("bearer" = [])),
    params(
        ("ticket" = Option<String>, Query, description = TICKET_PARAM),
        ("token" = Option<String>, Query, description = TOKEN_PARAM),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket handshake", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token or ticket", body = Problem, content_type = "application/problem+json"),
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
    let caller = socket_caller(&req, &state, &[Role::Customer]).await?;
    let (response, session, stream) = upgrade(&req, body)?;
    let guard = socket_guard(&state, SocketKind::Customer, &caller).await;
    actix_web::rt::spawn(customer::run(
        state.get_ref().clone(),
        caller.user_id(),
        guard,
        session,
        stream,
    ));
    Ok(response)
}
