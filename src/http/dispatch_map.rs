//! The dispatch dashboard's data: the viewport socket, the GeoJSON picture, counts, and the H3
//! layer of supply against open demand. Admins only.

use std::collections::HashMap;

use actix_web::{get, web, HttpRequest, HttpResponse};
use chrono::Utc;
use h3o::{LatLng, Resolution};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Caller;
use super::extract::Query;
use crate::error::{ApiError, Context as _, Problem};
use crate::fanout::dashboard::{bookings_in, providers_in, Bbox};
use crate::geo::index::TherapistState;
use crate::geo::Point;
use crate::realtime::dashboard;
use crate::realtime::guard::SocketKind;
use crate::state::AppState;

/// Resolution of the supply/demand hexagons (about 0.7 km² each: a few streets).
pub const HEX_RESOLUTION: Resolution = Resolution::Eight;

/// The dispatch dashboard's socket: `subscribe` with a viewport, then a snapshot and live updates.
#[utoipa::path(
    tag = "dispatch",
    security(("bearer" = [])),
    params(
        ("ticket" = Option<String>, Query, description = "One-use ticket from `POST /v1/ws/tickets` (browsers)"),
        ("token" = Option<String>, Query, description = "Bearer token, for existing clients that cannot set headers (prefer a ticket)"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket handshake", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token or ticket", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many connections being set up, or the database is unavailable; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/ws/dashboard")]
pub async fn dashboard_socket(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let _admitted = super::ws::admit(&state)?;
    let caller = super::ws::socket_caller(&req, &state, super::auth::ADMINS).await?;
    let (response, session, stream) = super::ws::upgrade(&req, body)?;
    let guard = super::ws::socket_guard(&state, SocketKind::Dashboard, &caller).await;
    actix_web::rt::spawn(dashboard::run(
        state.get_ref().clone(),
        guard,
        session,
        stream,
    ));
    Ok(response)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BboxParams {
    /// `west,south,east,north` in degrees.
    pub bbox: String,
}

fn parse_bbox(params: &BboxParams) -> Result<Bbox, ApiError> {
    Bbox::parse(&params.bbox).map_err(|why| ApiError::invalid("bbox", why))
}

fn point_feature(lng: f64, lat: f64, properties: Value) -> Value {
    json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [lng, lat]}, "properties": properties})
}

/// GeoJSON FeatureCollection; `features` follow RFC 7946.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureCollection {
    #[serde(rename = "type")]
    #[schema(example = "FeatureCollection")]
    pub kind: &'static str,
    #[schema(value_type = Vec<Object>)]
    pub features: Vec<Value>,
}

/// The live picture inside a box, once: online therapists (status, heading, fix age) and active
/// bookings, as GeoJSON points.
#[utoipa::path(
    tag = "dispatch",
    security(("bearer" = [])),
    params(BboxParams),
    responses(
        (status = 200, description = "GeoJSON FeatureCollection", body = FeatureCollection, content_type = "application/geo+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid bbox", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/dispatch/live")]
pub async fn live(
    state: web::Data<AppState>,
    caller: Caller,
    Query(params): Query<BboxParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let bbox = parse_bbox(&params)?;
    let now = Utc::now();
    let mut features: Vec<Value> = providers_in(&state.index, bbox, now)
        .into_iter()
        .filter(|(_, p)| p["status"] != "offline")
        .map(|(_, p)| {
            let at: chrono::DateTime<Utc> = serde_json::from_value(p["at"].clone()).unwrap_or(now);
            let properties = json!({
                "kind": "therapist",
                "provider_id": p["provider_id"],
                "status": p["status"],
                "heading": p["heading"],
                "fix_age_s": (now - at).num_seconds().max(0),
            });
            point_feature(
                p["lng"].as_f64().unwrap_or_default(),
                p["lat"].as_f64().unwrap_or_default(),
                properties,
            )
        })
        .collect();
    for booking in bookings_in(&state.db, bbox)
        .await
        .context("listing bookings in view")?
    {
        let properties = json!({
            "kind": "booking",
            "booking_id": booking["booking_id"],
            "booking_number": booking["booking_number"],
            "status": booking["status"],
            "provider_id": booking["provider_id"],
        });
        features.push(point_feature(
            booking["lng"].as_f64().unwrap_or_default(),
            booking["lat"].as_f64().unwrap_or_default(),
            properties,
        ));
    }
    Ok(HttpResponse::Ok()
        .content_type("application/geo+json")
        .json(FeatureCollection {
            kind: "FeatureCollection",
            features,
        }))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ActiveBooking {
    pub booking_id: Uuid,
    pub booking_number: String,
    pub status: String,
    pub service: String,
    pub provider_first_name: Option<String>,
    pub requested_at: chrono::DateTime<Utc>,
    /// `cash`, `wallet`, `card`, `gcash` or `paymaya`.
    pub payment_method: String,
    /// `pending`, `due_in_cash`, `awaiting_payment`, `paid` or `failed` (see `booking.payment`).
    pub payment_status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DispatchStats {
    /// Therapists with a fresh fix who are online (available, offered or busy).
    pub online: usize,
    pub available: usize,
    pub offered: usize,
    pub busy: usize,
    pub pending_bookings: i64,
    pub matched_last_hour: i64,
    pub cancelled_last_hour: i64,
    /// Bookings not yet finished, newest first (at most 100).
    pub active_bookings: Vec<ActiveBooking>,
}

/// Counts for the dashboard's side panel.
#[utoipa::path(
    tag = "dispatch",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Counts and active bookings", body = DispatchStats),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/dispatch/stats")]
pub async fn stats(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<web::Json<DispatchStats>, ApiError> {
    caller.require_admin()?;
    let counts = state.index.counts(Utc::now());
    let count = |s: TherapistState| counts.get(&s).copied().unwrap_or(0);
    let (pending, matched, cancelled): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'pending'), \
                count(*) FILTER (WHERE accepted_at > now() - interval '1 hour'), \
                count(*) FILTER (WHERE status = 'cancelled' AND cancelled_at > now() - interval '1 hour') \
         FROM bookings WHERE status = 'pending' OR accepted_at > now() - interval '1 hour' \
            OR cancelled_at > now() - interval '1 hour'",
    )
    .fetch_one(&state.db)
    .await
    .context("counting bookings")?;
    let active_bookings = sqlx::query_as(
        "SELECT b.uuid AS booking_id, b.booking_number, b.status::text AS status, s.name AS service, \
                u.first_name AS provider_first_name, b.requested_at, b.payment_method::text AS payment_method, \
                CASE WHEN pay.paid THEN 'paid' WHEN pay.awaiting THEN 'awaiting_payment' \
                     WHEN pay.failed THEN 'failed' \
                     WHEN b.payment_method = 'cash' AND b.status <> 'pending' THEN 'due_in_cash' \
                     ELSE 'pending' END AS payment_status \
         FROM bookings b JOIN services s ON s.id = b.service_id \
         LEFT JOIN LATERAL (SELECT bool_or(t.status = 'completed') AS paid, \
                bool_or(t.status IN ('pending', 'processing')) AS awaiting, bool_or(t.status = 'failed') AS failed \
             FROM transactions t WHERE t.booking_id = b.id AND t.type = 'payment') pay ON true \
         LEFT JOIN providers p ON p.id = b.provider_id LEFT JOIN users u ON u.id = p.user_id \
         WHERE b.status IN ('pending', 'accepted', 'en_route', 'arrived', 'in_progress') \
         ORDER BY b.id DESC LIMIT 100",
    )
    .fetch_all(&state.db)
    .await
    .context("listing active bookings")?;
    Ok(web::Json(DispatchStats {
        online: count(TherapistState::Available)
            + count(TherapistState::Offered)
            + count(TherapistState::Busy),
        available: count(TherapistState::Available),
        offered: count(TherapistState::Offered),
        busy: count(TherapistState::Busy),
        pending_bookings: pending,
        matched_last_hour: matched,
        cancelled_last_hour: cancelled,
        active_bookings,
    }))
}

/// Supply (available therapists) against open demand (pending bookings) per H3 cell in a box,
/// as GeoJSON polygons. Only cells with either are listed.
#[utoipa::path(
    tag = "dispatch",
    security(("bearer" = [])),
    params(BboxParams),
    responses(
        (status = 200, description = "GeoJSON FeatureCollection of hexagons with supply and demand", body = FeatureCollection, content_type = "application/geo+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid bbox", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/dispatch/hexes")]
pub async fn hexes(
    state: web::Data<AppState>,
    caller: Caller,
    Query(params): Query<BboxParams>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let bbox = parse_bbox(&params)?;
    let mut cells: HashMap<h3o::CellIndex, (u32, u32)> = HashMap::new();
    let cell_of = |p: Point| {
        LatLng::new(p.lat, p.lng)
            .ok()
            .map(|ll| ll.to_cell(HEX_RESOLUTION))
    };
    for (_, p) in providers_in(&state.index, bbox, Utc::now()) {
        if p["status"] == "available" {
            let point = Point::new(
                p["lat"].as_f64().unwrap_or_default(),
                p["lng"].as_f64().unwrap_or_default(),
            );
            if let Some(cell) = cell_of(point) {
                cells.entry(cell).or_default().0 += 1;
            }
        }
    }
    for booking in bookings_in(&state.db, bbox)
        .await
        .context("listing bookings in view")?
    {
        if booking["status"] == "pending" {
            let point = Point::new(
                booking["lat"].as_f64().unwrap_or_default(),
                booking["lng"].as_f64().unwrap_or_default(),
            );
            if let Some(cell) = cell_of(point) {
                cells.entry(cell).or_default().1 += 1;
            }
        }
    }
    let features = cells
        .into_iter()
        .map(|(cell, (supply, demand))| {
            let mut ring: Vec<[f64; 2]> =
                cell.boundary().iter().map(|v| [v.lng(), v.lat()]).collect();
            if let Some(first) = ring.first().copied() {
                ring.push(first); // GeoJSON rings are closed
            }
            json!({
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"cell": cell.to_string(), "supply": supply, "demand": demand},
            })
        })
        .collect();
    Ok(HttpResponse::Ok()
        .content_type("application/geo+json")
        .json(FeatureCollection {
            kind: "FeatureCollection",
            features,
        }))
}
