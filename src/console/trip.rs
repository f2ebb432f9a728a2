//! Trip replay: a booking's stored fixes from acceptance to arrival, as GeoJSON.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::dispatch::lifecycle::BookingStatus;
use crate::error::{ApiError, Context as _};
use crate::geo::{distance_m, Point};

/// Most fixes one replay answers (an hour at 1 Hz is 3,600).
pub const MAX_TRIP_POINTS: i64 = 20_000;

/// Who asks for a replay.
#[derive(Debug, Clone, Copy)]
pub struct Viewer {
    pub user_id: i64,
    pub is_admin: bool,
}

#[derive(Debug, sqlx::FromRow)]
struct TripBooking {
    uuid: Uuid,
    booking_number: String,
    status: BookingStatus,
    kind: String,
    customer_id: i64,
    provider_id: Option<i64>,
    provider_uuid: Option<Uuid>,
    booking_type: String,
    /// When the therapist now on it took it: their acceptance, or a dispatcher's reassignment.
    assigned_at: Option<DateTime<Utc>>,
    set_out_at: Option<DateTime<Utc>>,
    arrived_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    lat: Option<f64>,
    lng: Option<f64>,
}

#[derive(Debug, sqlx::FromRow)]
struct Fix {
    lat: f64,
    lng: f64,
    at: DateTime<Utc>,
    accuracy_m: Option<f64>,
    heading: Option<f64>,
    speed_kmh: Option<f64>,
}

/// A GeoJSON FeatureCollection: first the trip as a LineString (`properties.times` holds each
/// position's time, in order; `geometry` is null with fewer than two fixes), then every fix as
/// a Point, then the customer's address as a Point with `kind: "destination"`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TripCollection {
    /// Always `FeatureCollection`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[schema(value_type = Vec<Object>)]
    pub features: Vec<Value>,
}

/// The trip of a booking: for admins always, for its customer once it is completed; anyone
/// else gets 404, as for a booking that does not exist.
pub async fn replay(
    db: &PgPool,
    booking_uuid: Uuid,
    viewer: Viewer,
) -> Result<TripCollection, ApiError> {
    let booking: TripBooking = sqlx::query_as(
        "SELECT b.uuid, b.booking_number, b.status, b.type::text AS kind, b.customer_id, \
                b.provider_id, p.uuid AS provider_uuid, b.booking_type::text AS booking_type, \
                GREATEST(b.accepted_at, \
                  (SELECT max(t.created_at) FROM booking_timeline t \
                    WHERE t.booking_id = b.id AND t.status = 'accepted'), \
                  (SELECT max(a.created_at) FROM audit_logs a WHERE a.auditable_type = 'booking' \
                    AND a.auditable_id = b.id AND a.action = 'booking.reassigned')) AS assigned_at, \
                (SELECT max(t.created_at) FROM booking_timeline t \
                  WHERE t.booking_id = b.id AND t.status = 'en_route') AS set_out_at, \
                (SELECT min(t.created_at) FROM booking_timeline t \
                  WHERE t.booking_id = b.id AND t.status = 'arrived') AS arrived_at, \
                COALESCE(b.completed_at, b.cancelled_at) AS ended_at, \
                bl.latitude::float8 AS lat, bl.longitude::float8 AS lng \
         FROM bookings b LEFT JOIN providers p ON p.id = b.provider_id \
         LEFT JOIN booking_locations bl ON bl.booking_id = b.id \
         WHERE b.uuid = $1 AND b.deleted_at IS NULL",
    )
    .bind(booking_uuid)
    .fetch_optional(db)
    .await
    .context("loading the booking")?
    .filter(|b: &TripBooking| viewer.is_admin || b.customer_id == viewer.user_id)
    .ok_or_else(|| ApiError::not_found("booking"))?;
    if !viewer.is_admin && booking.status != BookingStatus::Completed {
        return Err(ApiError::Conflict(format!(
            "the booking is {}; its trip can be replayed once it is completed",
            booking.status.as_str()
        )));
    }
    if booking.kind == "in_store" {
        return Err(ApiError::Conflict(
            "an in-store booking has no trip: the customer goes to the store".into(),
        ));
    }
    let from = trip_start(&booking, viewer.is_admin);
    let fixes: Vec<Fix> = match (booking.provider_id, from) {
        (Some(provider_id), Some(from)) => {
            let to = booking
                .arrived_at
                .or(booking.ended_at)
                .unwrap_or_else(Utc::now);
            sqlx::query_as(include_str!("../../sql/booking_trip.sql"))
                .bind(provider_id)
                .bind(from)
                .bind(to)
                .bind(MAX_TRIP_POINTS)
                .fetch_all(db)
                .await
                .context("loading the trip's fixes")?
        }
        // Never accepted: nobody travelled.
        _ => Vec::new(),
    };
    Ok(collection(&booking, from, &fixes))
}

/// Where the replay starts: never before the therapist now on the booking took it (a
/// dispatcher's reassignment included), so nobody sees where they were before. A customer sees
/// only what the live view showed them: a booking for later from when the therapist set out
/// (before that, where they are is their own business, for days perhaps), a booking for now
/// from the acceptance, when the therapist sets out at once.
fn trip_start(booking: &TripBooking, admin: bool) -> Option<DateTime<Utc>> {
    let assigned = booking.assigned_at?;
    if admin || booking.booking_type != "scheduled" {
        return Some(assigned);
    }
    booking.set_out_at.map(|set_out| set_out.max(assigned))
}

fn collection(booking: &TripBooking, from: Option<DateTime<Utc>>, fixes: &[Fix]) -> TripCollection {
    let travelled: f64 = fixes
        .windows(2)
        .map(|pair| {
            distance_m(
                Point::new(pair[0].lat, pair[0].lng),
                Point::new(pair[1].lat, pair[1].lng),
            )
        })
        .sum();
    let coordinates: Vec<[f64; 2]> = fixes.iter().map(|f| [f.lng, f.lat]).collect();
    let times: Vec<DateTime<Utc>> = fixes.iter().map(|f| f.at).collect();
    let mut features = Vec::with_capacity(fixes.len() + 2);
    features.push(json!({
        "type": "Feature",
        "geometry": (coordinates.len() >= 2).then(|| json!({"type": "LineString", "coordinates": coordinates})),
        "properties": {
            "kind": "trip",
            "booking_id": booking.uuid,
            "booking_number": booking.booking_number,
            "status": booking.status,
            "provider_id": booking.provider_uuid,
            "from": from,
            "to": booking.arrived_at.or(booking.ended_at),
            "arrived": booking.arrived_at.is_some(),
            "times": times,
            "points": fixes.len(),
            "distance_m": travelled.round() as u64,
        },
    }));
    for (seq, fix) in fixes.iter().enumerate() {
        features.push(json!({
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [fix.lng, fix.lat]},
            "properties": {
                "kind": "fix",
                "seq": seq,
                "at": fix.at,
                "accuracy_m": fix.accuracy_m,
                "heading": fix.heading,
                "speed_kmh": fix.speed_kmh,
            },
        }));
    }
    if let (Some(lat), Some(lng)) = (booking.lat, booking.lng) {
        features.push(json!({
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [lng, lat]},
            "properties": {"kind": "destination", "booking_id": booking.uuid},
        }));
    }
    TripCollection {
        kind: "FeatureCollection",
        features,
    }
}
