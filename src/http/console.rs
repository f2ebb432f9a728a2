//! The dispatch console over HTTP: booking detail, search, alerts, trip replay and stores on
//! the map. Admins only, except a customer replaying their own completed trip.

use actix_web::{get, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Caller;
use super::extract::Query;
use crate::console::alerts::{self, Alert};
use crate::console::detail::{self, BookingDetail};
use crate::console::search::{self, SearchResults};
use crate::console::trip::{self, TripCollection, Viewer};
use crate::error::{ApiError, Problem};
use crate::realtime::dashboard::Bbox;
use crate::state::AppState;
use crate::stores::{self, MapStore};

/// A booking's trip from acceptance to arrival, as GeoJSON: a LineString whose
/// `properties.times` give each position's time, every fix as a Point, and the destination.
/// Admins may replay any booking; its customer once it is completed.
#[utoipa::path(
    tag = "bookings",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id")),
    responses(
        (status = 200, description = "The trip", body = TripCollection, content_type = "application/geo+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Your booking is not completed yet, or has no trip (in store)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/bookings/{booking_id}/trip")]
pub async fn booking_trip(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<actix_web::HttpResponse, ApiError> {
    let trip = trip::replay(
        &state.db,
        path.into_inner(),
        Viewer {
            user_id: caller.user_id(),
            is_admin: caller.is_admin(),
        },
    )
    .await?;
    Ok(actix_web::HttpResponse::Ok()
        .content_type("application/geo+json")
        .json(trip))
}

/// Everything about one booking for the detail panel.
#[utoipa::path(
    tag = "dispatch",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id")),
    responses(
        (status = 200, description = "The booking in detail", body = BookingDetail),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/admin/bookings/{booking_id}")]
pub async fn booking_detail(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<BookingDetail>, ApiError> {
    caller.require_admin()?;
    detail::detail(&state.db, path.into_inner())
        .await
        .map(web::Json)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// A name (or part of one), a phone number (or at least four of its digits) or a booking
    /// number; 2 to 100 characters.
    pub q: String,
}

/// Find therapists, bookings and stores by name, phone or booking number, with where they are.
#[utoipa::path(
    tag = "dispatch",
    security(("bearer" = [])),
    params(SearchParams),
    responses(
        (status = 200, description = "Up to ten of each kind", body = SearchResults),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Query too short or too long", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/admin/search")]
pub async fn find(
    state: web::Data<AppState>,
    caller: Caller,
    Query(params): Query<SearchParams>,
) -> Result<web::Json<SearchResults>, ApiError> {
    caller.require_admin()?;
    let query = params.q.trim();
    let length = query.chars().count();
    if !(2..=100).contains(&length) || query.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "q",
            "must be 2 to 100 characters, without control characters",
        ));
    }
    search::search(&state.db, &state.index, query)
        .await
        .map(web::Json)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertList {
    /// Oldest condition first. The dashboard socket sends `alert` frames as they change.
    pub alerts: Vec<Alert>,
}

/// What needs a dispatcher now: bookings waiting past the threshold, therapists silent during
/// an active booking, sessions past their duration plus a margin (app_settings `alerts`).
#[utoipa::path(
    tag = "dispatch",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Current alerts", body = AlertList),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/admin/alerts")]
pub async fn list_alerts(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<web::Json<AlertList>, ApiError> {
    caller.require_admin()?;
    Ok(web::Json(AlertList {
        alerts: alerts::current(&state.db).await?,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StoresBboxParams {
    /// `west,south,east,north` in degrees.
    pub bbox: String,
}

/// Stores inside the view, with their rooms in use now.
#[utoipa::path(
    tag = "dispatch",
    security(("bearer" = [])),
    params(StoresBboxParams),
    responses(
        (status = 200, description = "Stores in view", body = [MapStore]),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid bbox", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/dispatch/stores")]
pub async fn map_stores(
    state: web::Data<AppState>,
    caller: Caller,
    Query(params): Query<StoresBboxParams>,
) -> Result<web::Json<Vec<MapStore>>, ApiError> {
    caller.require_admin()?;
    let bbox = Bbox::parse(&params.bbox).map_err(|why| ApiError::invalid("bbox", why))?;
    stores::on_map(&state.db, bbox.west, bbox.south, bbox.east, bbox.north)
        .await
        .map(web::Json)
}
