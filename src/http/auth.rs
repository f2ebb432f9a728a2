//! Who is calling: the bearer token checked against `personal_access_tokens`, and role guards.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage as _, HttpRequest};
use futures_util::future::LocalBoxFuture;

use crate::accounts::tokens::TokenOwner;
use crate::accounts::Role;
use crate::error::{ApiError, Context as _};
use crate::state::AppState;

/// An authenticated caller. Extracting it answers 401 for a missing, malformed, unknown,
/// revoked or expired token.
#[derive(Debug, Clone)]
pub struct Caller(pub TokenOwner);

impl Caller {
    pub fn user_id(&self) -> i64 {
        self.0.user_id
    }

    pub fn has(&self, role: Role) -> bool {
        self.0.roles.iter().any(|r| r == role.as_str())
    }

    /// 403 unless the caller has `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        self.require_any(&[role])
    }

    /// 403 unless the caller has one of `roles` (the first names the audience in the refusal).
    pub fn require_any(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.iter().any(|role| self.has(*role)) {
            Ok(())
        } else {
            let role = roles.first().map_or("", |role| role.as_str());
            Err(ApiError::Forbidden(format!(
                "this call needs the {role} role"
            )))
        }
    }

    pub fn is_admin(&self) -> bool {
        self.has(Role::Admin) || self.has(Role::SuperAdmin)
    }

    /// 403 unless the caller is an admin or super admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        self.require_any(ADMINS)
    }
}

/// The roles that administer: admins and super admins.
pub const ADMINS: &[Role] = &[Role::Admin, Role::SuperAdmin];

/// The bearer token of a request: the `Authorization` header, or (for WebSockets, which browsers
/// cannot give headers) the `token` query parameter when `allow_query` is set.
pub fn bearer_token(req: &HttpRequest, allow_query: bool) -> Option<String> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    if allow_query {
        return url::form_urlencoded::parse(req.query_string().as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned());
    }
    None
}

/// Authenticates a request's bearer token (see [`bearer_token`]).
pub async fn authenticate(state: &AppState, token: Option<String>) -> Result<Caller, ApiError> {
    let token = token.ok_or(ApiError::Unauthorized)?;
    let caller = state
        .tokens
        .authenticate(&state.db, &token)
        .await
        .context("authenticating a token")?
        .map(Caller)
        .ok_or(ApiError::Unauthorized)?;
    record_user(caller.user_id());
    Ok(caller)
}

/// Puts the caller's user id on the request's span, so the access log line names who called.
pub fn record_user(user_id: i64) {
    tracing::Span::current().record("user_id", user_id);
}

/// The roles a route needs, when its path alone says so: every `/v1/admin/` route an admin,
/// every `/v1/therapist/` route a therapist.
fn roles_of_path(path: &str) -> Option<&'static [Role]> {
    if path.starts_with("/v1/admin/") {
        Some(ADMINS)
    } else if path.starts_with("/v1/therapist/") {
        Some(&[Role::Therapist])
    } else {
        None
    }
}

/// Middleware: a route whose role its path names answers 401 or 403 before anything of the
/// request is read. Without it a caller without the role learnt the route's body schema (a
/// malformed body answered 422 with the schema's complaint, and a valid one 403), because the
/// body is extracted beside the caller. The caller found here is kept for the handler's
/// [`Caller`], so the token is checked once.
pub async fn gate_roles(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let gate = roles_of_path(req.path())
        .and_then(|roles| Some((roles, req.app_data::<web::Data<AppState>>()?.clone())));
    let Some((roles, state)) = gate else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let checked = authenticate(&state, bearer_token(req.request(), false))
        .await
        .and_then(|caller| caller.require_any(roles).map(|()| caller));
    match checked {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(refusal) => Ok(req.error_response(refusal).map_into_right_body()),
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Already authenticated by `gate_roles`.
        if let Some(caller) = req.extensions().get::<Caller>().cloned() {
            return Box::pin(async move { Ok(caller) });
        }
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer_token(req, false);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no app state")))?;
            authenticate(&state, token).await
        })
    }
}
