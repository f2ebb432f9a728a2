//! Register, log in, log out, `GET /v1/me`, and the caller's saved addresses.

use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::Caller;
use super::extract::Json;
use crate::accounts::password::{check_password_length, dummy_hash, PersonalData, PoolError};
use crate::accounts::phone::normalize_phone;
use crate::accounts::users::{self, NewUser, UserProfile};
use crate::accounts::{tokens, Role};
use crate::domain::validate::{check_lat_lng, check_text, coordinate, optional_text};
use crate::error::{ApiError, Context as _, FieldError, Problem};
use crate::realtime::guard::{CredentialEvent, Ending};
use crate::state::AppState;

/// What a full hashing queue answers: 503, try again in a second.
pub fn hashing_busy(error: PoolError) -> ApiError {
    ApiError::Overloaded {
        detail: error.to_string(),
        retry_after_secs: 1,
    }
}

/// Roles a person may give themselves when registering.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SelfServiceRole {
    Customer,
    Therapist,
    /// Runs a wellness centre (`PUT /v1/store/profile`).
    StoreOwner,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Any common format; stored as E.164 (default country PH).
    #[schema(example = "0917 123 4567")]
    pub phone: String,
    /// 8 to 128 characters; not easy to guess (the most common passwords are refused), and not
    /// containing the phone number or the names.
    pub password: String,
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
    pub role: SelfServiceRole,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub phone: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthResponse {
    pub user: UserProfile,
    /// Bearer token: send as `Authorization: Bearer <token>`. Shown only once.
    pub token: String,
    pub token_expires_at: DateTime<Utc>,
}

/// Create an account (customer, therapist or store owner) and log in.
#[utoipa::path(
    tag = "accounts",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = AuthResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Phone or email already registered", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many registrations from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many passwords being hashed; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/auth/register")]
pub async fn register(
    req: HttpRequest,
    state: web::Data<AppState>,
    Json(body): Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    check_registration_limit(&state, &req).await?;
    let mut errors = Vec::new();
    let phone = normalize_phone(&body.phone)
        .map_err(|why| errors.push(FieldError::new("phone", why)))
        .ok();
    let email_local = body
        .email
        .as_deref()
        .and_then(|e| e.split('@').next())
        .unwrap_or_default();
    let personal = PersonalData {
        phone: phone.as_deref(),
        names: &[body.first_name.trim(), body.last_name.trim(), email_local],
    };
    // The length now; the rest of the policy (zxcvbn is CPU work) on the hashing pool.
    if let Err(why) = check_password_length(&body.password) {
        errors.push(FieldError::new("password", why));
    }
    check_text(&mut errors, "first_name", &body.first_name, 1, 100);
    check_text(&mut errors, "last_name", &body.last_name, 1, 100);
    let email = optional_text(&body.email);
    if let Some(email) = email {
        if email.len() > 255 || !looks_like_email(email) {
            errors.push(FieldError::new("email", "is not an email address"));
        }
    }
    ApiError::check(errors)?;
    let hash = state
        .hashes
        .check_and_hash(&body.password, personal)
        .await
        .map_err(hashing_busy)??
        .map_err(|why| ApiError::invalid("password", why))?;
    let phone = phone.expect("validated above");

    let role = match body.role {
        SelfServiceRole::Customer => Role::Customer,
        SelfServiceRole::Therapist => Role::Therapist,
        SelfServiceRole::StoreOwner => Role::StoreOwner,
    };
    let mut tx = state.db.begin().await.context("starting registration")?;
    let user_id = users::insert(
        &mut tx,
        NewUser {
            phone: &phone,
            password_hash: &hash,
            first_name: body.first_name.trim(),
            last_name: body.last_name.trim(),
            email: email.map(str::to_lowercase).as_deref(),
            role,
        },
    )
    .await?;
    let token = tokens::issue(&mut *tx, user_id, "register", token_ttl(&state))
        .await
        .context("issuing a token")?;
    let user = users::profile(&mut *tx, user_id)
        .await
        .context("loading the new user")?;
    tx.commit().await.context("committing registration")?;
    Ok(HttpResponse::Created().json(AuthResponse {
        user,
        token: token.secret,
        token_expires_at: token.expires_at,
    }))
}

/// Log in with phone and password. Limited per phone and per client address.
#[utoipa::path(
    tag = "accounts",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = AuthResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong phone or password", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many passwords being checked; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/auth/login")]
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    Json(body): Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let phone = normalize_phone(&body.phone).map_err(|why| ApiError::invalid("phone", why))?;
    if body.password.is_empty() || body.password.chars().count() > 1024 {
        return Err(ApiError::invalid(
            "password",
            "must be 1 to 1024 characters",
        ));
    }
    check_login_limits(&state, &phone, &req).await?;

    let account = users::credentials(&state.db, &phone)
        .await
        .context("looking up credentials")?;
    let (user_id, stored_hash) = match &account {
        Some((id, Some(hash))) => (Some(*id), hash.clone()),
        _ => (None, dummy_hash().to_owned()),
    };
    // Verify even for an unknown phone, so timing does not reveal which phones have accounts.
    let matches = state
        .hashes
        .verify(&body.password, &stored_hash)
        .await
        .map_err(hashing_busy)?;
    let user_id = match (user_id, matches) {
        (Some(id), true) => id,
        _ => return Err(ApiError::Unauthorized),
    };
    let token = tokens::issue(&state.db, user_id, "login", token_ttl(&state))
        .await
        .context("issuing a token")?;
    let user = users::profile(&state.db, user_id)
        .await
        .context("loading the user")?;
    Ok(HttpResponse::Ok().json(AuthResponse {
        user,
        token: token.secret,
        token_expires_at: token.expires_at,
    }))
}

/// Revoke the token used for this call.
#[utoipa::path(
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Token revoked"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/auth/logout")]
pub async fn logout(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    tokens::revoke(&state.db, caller.0.token_id)
        .await
        .context("revoking a token")?;
    // Sockets opened with this token (or a ticket it made) close on every node.
    state
        .credentials_ended(CredentialEvent::TokenEnded {
            user_id: caller.user_id(),
            token_id: caller.0.token_id,
            reason: Ending::LoggedOut,
        })
        .await;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WsTicket {
    /// Put it in the socket URL as `?ticket=`. Works once.
    pub ticket: String,
    /// Seconds the ticket can be used (30).
    pub expires_in: u64,
}

/// A single-use ticket for opening a WebSocket (`?ticket=` on any socket URL, on any node),
/// for clients that cannot set headers on a WebSocket (browsers). The socket belongs to the
/// token that made the ticket: logging that token out closes it.
#[utoipa::path(
    tag = "realtime",
    security(("bearer" = [])),
    responses(
        (status = 201, description = "A ticket valid for 30 s", body = WsTicket),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/ws/tickets")]
pub async fn ws_ticket(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let ticket = crate::accounts::tickets::issue(&state.db, caller.0.token_id)
        .await
        .context("issuing a WebSocket ticket")?;
    Ok(HttpResponse::Created().json(WsTicket {
        ticket,
        expires_in: crate::accounts::tickets::TICKET_TTL.as_secs(),
    }))
}

/// The caller's own account.
#[utoipa::path(
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = UserProfile),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/me")]
pub async fn me(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<web::Json<UserProfile>, ApiError> {
    users::profile(&state.db, caller.user_id())
        .await
        .context("loading the caller")
        .map(web::Json)
}

fn token_ttl(state: &AppState) -> Duration {
    Duration::days(i64::from(state.settings.token_ttl_days.max(1)))
}

fn looks_like_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAddress {
    /// `home`, `work`, `other`, or any short label.
    pub label: Option<String>,
    pub address_line1: String,
    pub address_line2: Option<String>,
    pub city: String,
    pub province: Option<String>,
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2; default `PH`.
    pub country: Option<String>,
    pub lat: f64,
    pub lng: f64,
    /// Make this the default address (any previous default stops being one).
    pub is_default: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Address {
    #[serde(rename = "id")]
    pub uuid: Uuid,
    pub label: Option<String>,
    pub address_line1: String,
    pub address_line2: Option<String>,
    pub city: String,
    pub province: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
    pub lat: f64,
    pub lng: f64,
    pub is_default: bool,
    pub created_at: Option<DateTime<Utc>>,
}

const ADDRESS_COLUMNS: &str = "uuid, label, address_line1, address_line2, city, province, postal_code, \
     country, latitude::float8 AS lat, longitude::float8 AS lng, COALESCE(is_default, false) AS is_default, created_at";

/// Save an address; its PostGIS point is derived from `lat`/`lng`.
#[utoipa::path(
    tag = "accounts",
    security(("bearer" = [])),
    request_body = NewAddress,
    responses(
        (status = 201, description = "Saved", body = Address),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a customer", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/me/addresses")]
pub async fn create_address(
    state: web::Data<AppState>,
    caller: Caller,
    Json(body): Json<NewAddress>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Customer)?;
    let mut errors = Vec::new();
    check_lat_lng(&mut errors, "lat", "lng", body.lat, body.lng);
    check_text(&mut errors, "address_line1", &body.address_line1, 1, 255);
    check_text(&mut errors, "city", &body.city, 1, 100);
    for (field, value, max) in [
        ("label", &body.label, 50),
        ("address_line2", &body.address_line2, 255),
        ("province", &body.province, 100),
        ("postal_code", &body.postal_code, 10),
    ] {
        if let Some(v) = value {
            check_text(&mut errors, field, v, 0, max);
        }
    }
    let country = optional_text(&body.country)
        .unwrap_or("PH")
        .to_ascii_uppercase();
    if country.len() != 2 || !country.chars().all(|c| c.is_ascii_alphabetic()) {
        errors.push(FieldError::new(
            "country",
            "must be a two-letter country code",
        ));
    }
    ApiError::check(errors)?;
    let (lat, lng) = (coordinate(body.lat), coordinate(body.lng));

    let mut tx = state
        .db
        .begin()
        .await
        .context("starting address creation")?;
    // Serialise this user's address changes: two concurrent "make this the default" saves
    // would otherwise both clear the old default and collide on uq_user_addresses_one_default.
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE")
        .bind(caller.user_id())
        .execute(&mut *tx)
        .await
        .context("locking the user's addresses")?;
    let has_default: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM user_addresses WHERE user_id = $1 AND is_default)",
    )
    .bind(caller.user_id())
    .fetch_one(&mut *tx)
    .await
    .context("checking the default address")?;
    // The first address becomes the default unless the client says otherwise.
    let is_default = body.is_default.unwrap_or(!has_default);
    if is_default {
        sqlx::query(
            "UPDATE user_addresses SET is_default = FALSE WHERE user_id = $1 AND is_default",
        )
        .bind(caller.user_id())
        .execute(&mut *tx)
        .await
        .context("clearing the previous default address")?;
    }
    let address: Address = sqlx::query_as(&format!(
        "INSERT INTO user_addresses (user_id, label, address_line1, address_line2, city, province, \
             postal_code, country, latitude, longitude, is_default) \
         VALUES ($1, COALESCE($2, 'home'), $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {ADDRESS_COLUMNS}"
    ))
    .bind(caller.user_id())
    .bind(optional_text(&body.label))
    .bind(body.address_line1.trim())
    .bind(optional_text(&body.address_line2))
    .bind(body.city.trim())
    .bind(optional_text(&body.province))
    .bind(optional_text(&body.postal_code))
    .bind(&country)
    .bind(lat)
    .bind(lng)
    .bind(is_default)
    .fetch_one(&mut *tx)
    .await
    .context("saving the address")?;
    tx.commit().await.context("committing the address")?;
    Ok(HttpResponse::Created().json(address))
}

/// The caller's saved addresses, the default first.
#[utoipa::path(
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Addresses", body = [Address]),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a customer", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/me/addresses")]
pub async fn list_addresses(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<web::Json<Vec<Address>>, ApiError> {
    caller.require(Role::Customer)?;
    sqlx::query_as(&format!(
        "SELECT {ADDRESS_COLUMNS} FROM user_addresses WHERE user_id = $1 \
         ORDER BY is_default DESC NULLS LAST, created_at DESC, id DESC"
    ))
    .bind(caller.user_id())
    .fetch_all(&state.db)
    .await
    .context("listing addresses")
    .map(web::Json)
}

/// Delete one of the caller's addresses. Someone else's address answers 404, like a missing one.
#[utoipa::path(
    tag = "accounts",
    security(("bearer" = [])),
    params(("address_id" = Uuid, Path, description = "The address id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a customer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such address of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/me/addresses/{address_id}")]
pub async fn delete_address(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Customer)?;
    let deleted = sqlx::query("DELETE FROM user_addresses WHERE uuid = $1 AND user_id = $2")
        .bind(path.into_inner())
        .bind(caller.user_id())
        .execute(&state.db)
        .await
        .context("deleting an address")?
        .rows_affected();
    if deleted == 0 {
        return Err(ApiError::not_found("address"));
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Login attempts per phone and per client address, counted across the cluster when Redis is
/// configured (an attacker spread over every node gets no more tries), else, or while Redis is
/// away, by this node.
async fn check_login_limits(
    state: &AppState,
    phone: &str,
    req: &HttpRequest,
) -> Result<(), ApiError> {
    let address = crate::http::client_address::client_address(req, &state.settings.trusted_proxies);
    let settings = &state.settings;
    let mut buckets = Vec::with_capacity(2);
    if let Some(address) = address {
        buckets.push(crate::cluster::limits::Bucket {
            key: format!("login:address:{address}"),
            burst: settings.login_burst_per_address,
            replenish: std::time::Duration::from_secs(settings.login_replenish_per_address_s),
        });
    }
    buckets.push(crate::cluster::limits::Bucket {
        key: format!("login:phone:{phone}"),
        burst: settings.login_burst_per_phone,
        replenish: std::time::Duration::from_secs(settings.login_replenish_per_phone_s),
    });
    let cluster = state.cluster_limits.check(&buckets).await;
    cluster_or_local(cluster, || state.login_limiter.check(phone, address))
}

/// The cluster's answer when it gave one, else this node's.
fn cluster_or_local(
    cluster: Option<Result<(), std::time::Duration>>,
    local: impl FnOnce() -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    match cluster {
        Some(Ok(())) => Ok(()),
        Some(Err(wait)) => Err(ApiError::TooManyRequests {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        }),
        None => local(),
    }
}

/// Registrations per client address, across the cluster when Redis is configured, else (or
/// while Redis is away) by this node.
async fn check_registration_limit(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    let Some(address) =
        crate::http::client_address::client_address(req, &state.settings.trusted_proxies)
    else {
        return Ok(());
    };
    let bucket = crate::cluster::limits::Bucket {
        key: format!("register:address:{address}"),
        burst: state.settings.register_burst_per_address,
        replenish: std::time::Duration::from_secs(state.settings.register_replenish_per_address_s),
    };
    let cluster = state.cluster_limits.check(&[bucket]).await;
    cluster_or_local(cluster, || {
        state.limits.register_per_address.check(&address)
    })
}
