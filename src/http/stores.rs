//! Stores (wellness centres): the owner's set-up, customers finding stores nearby, and the
//! store's side of in-store bookings (confirm, decline, start, complete, no-show). Customers
//! book with `POST /v1/bookings` and `type: "in_store"`, and check in here.

use actix_web::{delete, get, post, put, web, HttpResponse};
use chrono::Utc;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Caller;
use super::extract::{Json, Query};
use crate::accounts::Role;
use crate::dispatch::lifecycle::BookingStatus;
use crate::domain::validate::{check_lat_lng, check_range, check_text, optional_text};
use crate::error::{ApiError, Context as _, FieldError, Problem};
use crate::state::AppState;
use crate::stores::visits::{self, InStoreBooking, VisitActor, VisitFacts, DECLINED_BY_STORE};
use crate::stores::{self, NearbyStore, StoreProfileInput, StoreView};

/// Largest price a store may set.
pub const MAX_STORE_PRICE: i64 = 100_000;
/// Nearby stores: default and widest radius, default and largest answer.
pub const DEFAULT_RADIUS_M: u32 = 10_000;
pub const MAX_RADIUS_M: u32 = 50_000;
pub const DEFAULT_LIMIT: u32 = 10;
pub const MAX_LIMIT: u32 = 50;

/// Create or update the caller's store. A new store starts `pending` until an admin verifies
/// it (`POST /v1/admin/providers/{id}/verify`); only verified stores are found and booked.
#[utoipa::path(
    tag = "stores",
    security(("bearer" = [])),
    request_body = StoreProfileInput,
    responses(
        (status = 200, description = "The store", body = StoreView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a store owner", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field: opening hours that overlap or are not real times, an unknown time zone, no rooms", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/v1/store/profile")]
pub async fn put_profile(
    state: web::Data<AppState>,
    caller: Caller,
    Json(body): Json<StoreProfileInput>,
) -> Result<web::Json<StoreView>, ApiError> {
    caller.require(Role::StoreOwner)?;
    let profile = stores::validate(&body)?;
    let provider_id = stores::save_profile(&state.db, caller.user_id(), &profile).await?;
    stores::view(&state.db, provider_id).await.map(web::Json)
}

/// The caller's store.
#[utoipa::path(
    tag = "stores",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The store", body = StoreView),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a store owner", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No store set up yet", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/store/profile")]
pub async fn get_profile(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<web::Json<StoreView>, ApiError> {
    caller.require(Role::StoreOwner)?;
    let provider_id = stores::require_own_store(&state.db, caller.user_id()).await?;
    stores::view(&state.db, provider_id).await.map(web::Json)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreServiceRequest {
    /// The in-store price (decimal string or number, at most 2 places).
    #[serde(with = "crate::domain::money")]
    #[schema(schema_with = price_input_schema)]
    pub price: Decimal,
    /// Whether customers can book it now (default true).
    pub available: Option<bool>,
}

fn price_input_schema() -> utoipa::openapi::Object {
    crate::domain::money::input_schema("The store's price for this service.", false)
}

/// Sell a service in store at a price (or change it).
#[utoipa::path(
    tag = "stores",
    security(("bearer" = [])),
    params(("service_id" = Uuid, Path, description = "A service id from `GET /v1/services`")),
    request_body = StoreServiceRequest,
    responses(
        (status = 200, description = "The store with its services", body = StoreView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a store owner", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such service, or no store yet", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid price", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/v1/store/services/{service_id}")]
pub async fn put_service(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Json(body): Json<StoreServiceRequest>,
) -> Result<web::Json<StoreView>, ApiError> {
    caller.require(Role::StoreOwner)?;
    let mut errors = Vec::new();
    if body.price <= Decimal::ZERO || body.price > Decimal::from(MAX_STORE_PRICE) {
        errors.push(FieldError::new(
            "price",
            format!("must be more than 0 and at most {MAX_STORE_PRICE}"),
        ));
    }
    ApiError::check(errors)?;
    let provider_id = stores::require_own_store(&state.db, caller.user_id()).await?;
    let service_id = state
        .catalog
        .service_id(&state.db, path.into_inner())
        .await?
        .ok_or_else(|| ApiError::not_found("service"))?;
    stores::set_service(
        &state.db,
        provider_id,
        service_id,
        body.price,
        body.available.unwrap_or(true),
    )
    .await?;
    stores::view(&state.db, provider_id).await.map(web::Json)
}

/// Stop selling a service in store.
#[utoipa::path(
    tag = "stores",
    security(("bearer" = [])),
    params(("service_id" = Uuid, Path, description = "A service id from `GET /v1/services`")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a store owner", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The store does not sell this service", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/store/services/{service_id}")]
pub async fn delete_service(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::StoreOwner)?;
    let provider_id = stores::require_own_store(&state.db, caller.user_id()).await?;
    let service_id = state
        .catalog
        .service_id(&state.db, path.into_inner())
        .await?
        .ok_or_else(|| ApiError::not_found("service"))?;
    if stores::remove_service(&state.db, provider_id, service_id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found("service of this store"))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NearbyStoresParams {
    /// Customer latitude.
    pub lat: f64,
    /// Customer longitude.
    pub lng: f64,
    /// A service id from `GET /v1/services`.
    pub service_id: Uuid,
    /// Search radius in metres (default 10000, at most 50000).
    pub radius_m: Option<u32>,
    /// How many stores (default 10, at most 50).
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NearbyStores {
    /// Nearest first.
    pub stores: Vec<NearbyStore>,
}

/// Verified stores near the customer that sell the service in store, nearest first, with
/// their price and whether they are open now.
#[utoipa::path(
    tag = "stores",
    security(("bearer" = [])),
    params(NearbyStoresParams),
    responses(
        (status = 200, description = "Nearest first", body = NearbyStores),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown service", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/stores/nearby")]
pub async fn nearby(
    state: web::Data<AppState>,
    _caller: Caller,
    Query(params): Query<NearbyStoresParams>,
) -> Result<web::Json<NearbyStores>, ApiError> {
    let radius_m = params.radius_m.unwrap_or(DEFAULT_RADIUS_M);
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    let mut errors = Vec::new();
    check_lat_lng(&mut errors, "lat", "lng", params.lat, params.lng);
    check_range(&mut errors, "radius_m", radius_m, 1, MAX_RADIUS_M);
    check_range(&mut errors, "limit", limit, 1, MAX_LIMIT);
    ApiError::check(errors)?;
    let service_id = state
        .catalog
        .service_id(&state.db, params.service_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("service_id: no such service".into()))?;
    let stores = stores::nearby(
        &state.db,
        params.lat,
        params.lng,
        service_id,
        f64::from(radius_m),
        i64::from(limit),
        Utc::now(),
    )
    .await?;
    Ok(web::Json(NearbyStores { stores }))
}

/// A verified store: address, opening hours, rooms, amenities and services.
#[utoipa::path(
    tag = "stores",
    security(("bearer" = [])),
    params(("store_id" = Uuid, Path, description = "The store id")),
    responses(
        (status = 200, description = "The store", body = StoreView),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such store", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/stores/{store_id}")]
pub async fn get_store(
    state: web::Data<AppState>,
    _caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<StoreView>, ApiError> {
    stores::public_view(&state.db, path.into_inner())
        .await
        .map(web::Json)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StoreBookingsParams {
    /// Only bookings in this status.
    pub status: Option<BookingStatus>,
    /// Default 50, at most 200.
    pub limit: Option<i64>,
}

/// The store's bookings, soonest visit first.
#[utoipa::path(
    tag = "stores",
    security(("bearer" = [])),
    params(StoreBookingsParams),
    responses(
        (status = 200, description = "The store's bookings", body = [InStoreBooking]),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a store owner", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No store set up yet", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/store/bookings")]
pub async fn list_bookings(
    state: web::Data<AppState>,
    caller: Caller,
    Query(params): Query<StoreBookingsParams>,
) -> Result<web::Json<Vec<InStoreBooking>>, ApiError> {
    caller.require(Role::StoreOwner)?;
    let limit = params.limit.unwrap_or(50);
    let mut errors = Vec::new();
    check_range(&mut errors, "limit", limit, 1, 200);
    ApiError::check(errors)?;
    let provider_id = stores::require_own_store(&state.db, caller.user_id()).await?;
    visits::list_for_store(&state.db, provider_id, params.status, limit)
        .await
        .map(web::Json)
}

/// The in-store booking if the caller owns its store; 404 otherwise.
async fn own_visit(
    state: &AppState,
    caller: &Caller,
    booking_id: Uuid,
) -> Result<VisitFacts, ApiError> {
    caller.require(Role::StoreOwner)?;
    let facts = visits::facts_by_uuid(&state.db, booking_id)
        .await?
        .filter(|v| v.store_owner_id == caller.user_id())
        .ok_or_else(|| ApiError::not_found("booking"))?;
    // A suspended or rejected store no longer confirms, serves or completes visits.
    let standing: Option<(bool, String)> = sqlx::query_as(
        "SELECT COALESCE(is_active, true), verification_status::text FROM providers WHERE id = $1",
    )
    .bind(facts.store_provider_id)
    .fetch_optional(&state.db)
    .await
    .context("checking the store's standing")?;
    match standing {
        Some((false, _)) => Err(ApiError::Forbidden("the store is suspended".into())),
        Some((_, status)) if status == "rejected" => Err(ApiError::Forbidden(
            "the store's verification was rejected".into(),
        )),
        _ => Ok(facts),
    }
}

async fn store_moves(
    state: &AppState,
    caller: &Caller,
    booking_id: Uuid,
    to: BookingStatus,
    reason: Option<&str>,
) -> Result<web::Json<InStoreBooking>, ApiError> {
    let facts = own_visit(state, caller, booking_id).await?;
    let view = visits::transition(
        &state.db,
        &facts,
        to,
        VisitActor::Store,
        Some(caller.user_id()),
        reason,
        Utc::now(),
    )
    .await?;
    state.dispatcher.announce(facts.booking_id).await;
    Ok(web::Json(view))
}

/// Confirm a pending in-store booking: the room is the customer's.
#[utoipa::path(
    tag = "stores",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id")),
    responses(
        (status = 200, description = "The booking, now accepted", body = InStoreBooking),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a store owner", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking at your store", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not pending (the detail names its state)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/store/bookings/{booking_id}/confirm")]
pub async fn confirm(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<InStoreBooking>, ApiError> {
    store_moves(
        &state,
        &caller,
        path.into_inner(),
        BookingStatus::Accepted,
        None,
    )
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclineRequest {
    /// Shown to the customer (default `declined_by_store`).
    pub reason: Option<String>,
}

/// Decline a pending in-store booking (it ends cancelled, free of charge).
#[utoipa::path(
    tag = "stores",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id")),
    request_body = DeclineRequest,
    responses(
        (status = 200, description = "The booking, now cancelled", body = InStoreBooking),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a store owner", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking at your store", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not pending (the detail names its state)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid reason", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/store/bookings/{booking_id}/decline")]
pub async fn decline(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Json(body): Json<DeclineRequest>,
) -> Result<web::Json<InStoreBooking>, ApiError> {
    let mut errors = Vec::new();
    if let Some(reason) = &body.reason {
        check_text(&mut errors, "reason", reason, 0, 500);
    }
    ApiError::check(errors)?;
    let facts = own_visit(&state, &caller, path.into_inner()).await?;
    if facts.status != BookingStatus::Pending {
        return Err(ApiError::Conflict(format!(
            "the booking is {}; only a pending booking can be declined",
            facts.status.as_str()
        )));
    }
    let reason = optional_text(&body.reason).unwrap_or(DECLINED_BY_STORE);
    let view = visits::transition(
        &state.db,
        &facts,
        BookingStatus::Cancelled,
        VisitActor::Store,
        Some(caller.user_id()),
        Some(reason),
        Utc::now(),
    )
    .await?;
    state.dispatcher.announce(facts.booking_id).await;
    Ok(web::Json(view))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreStatusRequest {
    /// `arrived` (check the customer in), `in_progress`, `completed` or `no_show` (after the
    /// grace period), or `cancelled` (with `reason`).
    pub status: BookingStatus,
    pub reason: Option<String>,
}

/// Move an in-store booking along (the store). 409 names the current state.
#[utoipa::path(
    tag = "stores",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id")),
    request_body = StoreStatusRequest,
    responses(
        (status = 200, description = "The booking after the change", body = InStoreBooking),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a store owner, or not the store's move", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking at your store", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Illegal from the current state, or too early for a no-show", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/store/bookings/{booking_id}/status")]
pub async fn change_status(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Json(body): Json<StoreStatusRequest>,
) -> Result<web::Json<InStoreBooking>, ApiError> {
    let mut errors = Vec::new();
    let reason = optional_text(&body.reason);
    if let Some(reason) = reason {
        check_text(&mut errors, "reason", reason, 1, 500);
    }
    if body.status == BookingStatus::Cancelled && reason.is_none() {
        errors.push(FieldError::new("reason", "is required when cancelling"));
    }
    ApiError::check(errors)?;
    store_moves(&state, &caller, path.into_inner(), body.status, reason).await
}

/// Check in at the store (the booking's customer), from an hour before the visit until the
/// grace period after its start.
#[utoipa::path(
    tag = "bookings",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id")),
    responses(
        (status = 200, description = "The booking, now arrived", body = InStoreBooking),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such in-store booking of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not confirmed, already checked in, too early or too late (the detail says which)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/bookings/{booking_id}/check-in")]
pub async fn check_in(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<InStoreBooking>, ApiError> {
    let facts = visits::facts_by_uuid(&state.db, path.into_inner())
        .await?
        .filter(|v| v.customer_id == caller.user_id())
        .ok_or_else(|| ApiError::not_found("in-store booking"))?;
    let view = visits::transition(
        &state.db,
        &facts,
        BookingStatus::Arrived,
        VisitActor::Customer,
        Some(caller.user_id()),
        None,
        Utc::now(),
    )
    .await?;
    state.dispatcher.announce(facts.booking_id).await;
    Ok(web::Json(view))
}
