//! `GET /v1/therapists/nearby`: answered from the live index, never from the database.

use actix_web::{get, web};
use chrono::Utc;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Caller;
use super::extract::Query;
use crate::domain::money::CURRENCY;
use crate::domain::pricing::quote;
use crate::domain::validate::{check_lat_lng, check_range};
use crate::error::{ApiError, Problem};
use crate::geo::index::{NearbyQuery, Placement, MAX_SEARCH_RADIUS_M};
use crate::geo::Point;
use crate::schedule::diary::Job;
use crate::schedule::slots::Session;
use crate::state::AppState;

/// Search radius when the client gives none.
pub const DEFAULT_RADIUS_M: u32 = 5_000;
/// Distances shown to customers are rounded to this many metres, and ETAs to this many seconds.
/// What keeps a therapist's position private is that customers' searches place them at the
/// centre of their index cell ([`Placement::CellCentre`]); the rounding only keeps the figures
/// from claiming more precision than that.
pub const DISTANCE_ROUNDING_M: u32 = 100;
pub const ETA_ROUNDING_S: u32 = 60;
/// Answers when the client gives no limit, and the most it may ask for.
pub const DEFAULT_LIMIT: u32 = 10;
pub const MAX_LIMIT: u32 = 50;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NearbyParams {
    /// Customer latitude.
    pub lat: f64,
    /// Customer longitude.
    pub lng: f64,
    /// A service id from `GET /v1/services`.
    pub service_id: Uuid,
    /// Search radius in metres (default 5000, at most 50000).
    pub radius_m: Option<u32>,
    /// How many therapists (default 10, at most 50).
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuoteView {
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "800.00")]
    pub service_price: Decimal,
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "40.00")]
    pub distance_surcharge: Decimal,
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "840.00")]
    pub total_amount: Decimal,
    pub currency: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NearbyTherapist {
    pub provider_id: Uuid,
    pub first_name: String,
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "4.80")]
    pub average_rating: Decimal,
    /// Distance from the customer along the WGS84 ellipsoid. For customers it is measured to
    /// the centre of the therapist's H3 cell (resolution 9, about 0.1 km², so up to about
    /// 220 m off) and rounded to 100 m, and the radius, the travel limits, the order and the
    /// quote use that same distance; admins see the exact one.
    pub distance_m: u32,
    /// Estimated travel time (distance × road circuity ÷ average speed), rounded to the minute
    /// (exact for admins).
    pub eta_seconds: u32,
    pub quote: QuoteView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NearbyAnswer {
    /// Nearest first; ties broken by provider so answers are stable. Never any coordinates.
    pub therapists: Vec<NearbyTherapist>,
}

/// The nearest online, verified therapists who offer the service, travel this far, and could
/// do the session now and still reach their next scheduled booking in time.
#[utoipa::path(
    tag = "matching",
    security(("bearer" = [])),
    params(NearbyParams),
    responses(
        (status = 200, description = "Nearest first", body = NearbyAnswer),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown service", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many searches; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/therapists/nearby")]
pub async fn nearby(
    state: web::Data<AppState>,
    caller: Caller,
    Query(params): Query<NearbyParams>,
) -> Result<web::Json<NearbyAnswer>, ApiError> {
    let exact = caller.is_admin();
    if !exact {
        state.limits.nearby_per_user.check(&caller.user_id())?;
    }
    let radius_m = params.radius_m.unwrap_or(DEFAULT_RADIUS_M);
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    let mut errors = Vec::new();
    check_lat_lng(&mut errors, "lat", "lng", params.lat, params.lng);
    check_range(
        &mut errors,
        "radius_m",
        radius_m,
        1,
        MAX_SEARCH_RADIUS_M as u32,
    );
    check_range(&mut errors, "limit", limit, 1, MAX_LIMIT);
    ApiError::check(errors)?;
    let service_id = state
        .catalog
        .service_id(&state.db, params.service_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("service_id: no such service".into()))?;

    // Only therapists who could start this session now and still make their next scheduled
    // booking (the matcher's own rule, so nobody is shown who would not be offered the job).
    let point = Point::new(params.lat, params.lng);
    let duration = state
        .catalog
        .duration_minutes(&state.db, service_id)
        .await?;
    let session = Session::minutes(
        i64::from(duration),
        state.diary.settings().travel_buffer_minutes,
    );
    let job = Job::Now {
        session,
        place: point,
    };
    let now = Utc::now();
    let hits = state.index.nearby_where(
        &NearbyQuery {
            point,
            service_id,
            radius_m: f64::from(radius_m),
            limit: limit as usize,
            placement: if exact {
                Placement::Exact
            } else {
                Placement::CellCentre
            },
        },
        now,
        |provider_id, distance_m| {
            let travel = chrono::Duration::seconds(i64::from(state.eta.eta_seconds(distance_m)));
            state
                .diary
                .can_take(provider_id, &job, travel, now, state.eta)
        },
    );
    let therapists = hits
        .into_iter()
        .map(|hit| {
            let q = quote(
                hit.offer.price,
                hit.offer.base_distance_km,
                hit.offer.per_km_surcharge,
                hit.distance_m,
            );
            NearbyTherapist {
                provider_id: hit.uuid,
                first_name: hit.first_name,
                average_rating: hit.average_rating,
                distance_m: shown(hit.distance_m.round() as u32, DISTANCE_ROUNDING_M, exact),
                eta_seconds: shown(state.eta.eta_seconds(hit.distance_m), ETA_ROUNDING_S, exact),
                quote: QuoteView {
                    service_price: q.service_price,
                    distance_surcharge: q.distance_surcharge,
                    total_amount: q.total_amount,
                    currency: CURRENCY,
                },
            }
        })
        .collect();
    Ok(web::Json(NearbyAnswer { therapists }))
}

/// `value` rounded to the nearest multiple of `step` (at least one step), unless `exact`.
fn shown(value: u32, step: u32, exact: bool) -> u32 {
    if exact {
        return value;
    }
    (value.saturating_add(step / 2) / step).max(1) * step
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn distances_and_etas_are_rounded_for_everyone_but_admins() {
        assert_eq!(shown(1_234, 100, false), 1_200);
        assert_eq!(shown(1_250, 100, false), 1_300);
        assert_eq!(
            shown(12, 100, false),
            100,
            "never zero: that would say 'within 50 m'"
        );
        assert_eq!(shown(89, 60, false), 60);
        assert_eq!(shown(91, 60, false), 120);
        assert_eq!(shown(1_234, 100, true), 1_234);
    }
}
