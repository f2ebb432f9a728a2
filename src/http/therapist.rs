//! Therapist set-up: profile (providers + therapist_profiles), services and prices, going
//! online or offline.

use actix_web::{delete, get, put, web, HttpResponse};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::Caller;
use super::extract::Json;
use crate::accounts::Role;
use crate::domain::validate::{check_lat_lng, check_range, check_text, optional_text};
use crate::error::{ApiError, Context as _, FieldError, Problem};
use crate::providers;
use crate::state::AppState;

/// Largest price a therapist may set (the seed's DECIMAL(10,2) holds far more; this catches typos).
pub const MAX_SERVICE_PRICE: i64 = 100_000;
/// Largest per-km surcharge.
pub const MAX_PER_KM_SURCHARGE: i64 = 1_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileRequest {
    pub base_lat: f64,
    pub base_lng: f64,
    /// How far from base the therapist travels, 1 to app_settings `service_radius_max` km.
    pub service_radius_km: i32,
    pub bio: Option<String>,
    pub specializations: Option<Vec<String>>,
    pub languages_spoken: Option<Vec<String>>,
    pub license_number: Option<String>,
    pub license_type: Option<String>,
    pub years_of_experience: Option<i32>,
    pub has_own_equipment: Option<bool>,
    /// `{"monday": [{"start": "09:00", "end": "18:00"}], ...}`
    #[schema(value_type = Option<Object>)]
    pub default_schedule: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct TherapistProfile {
    pub provider_id: Uuid,
    /// `pending`, `under_review`, `verified` or `rejected`.
    pub verification_status: String,
    pub rejection_reason: Option<String>,
    pub is_active: bool,
    /// Whether the therapist is online (takes bookings).
    pub online: bool,
    pub base_lat: Option<f64>,
    pub base_lng: Option<f64>,
    pub service_radius_km: Option<i32>,
    pub bio: Option<String>,
    #[schema(value_type = Option<Vec<String>>)]
    pub specializations: Option<serde_json::Value>,
    #[schema(value_type = Option<Vec<String>>)]
    pub languages_spoken: Option<serde_json::Value>,
    pub license_number: Option<String>,
    pub license_type: Option<String>,
    pub years_of_experience: Option<i32>,
    pub has_own_equipment: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub default_schedule: Option<serde_json::Value>,
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "4.50")]
    pub average_rating: Decimal,
    pub total_reviews: i32,
}

const PROFILE_SELECT: &str = "SELECT p.uuid AS provider_id, p.verification_status::text AS verification_status, \
        p.rejection_reason, COALESCE(p.is_active, true) AS is_active, COALESCE(p.is_available, false) AS online, \
        tp.base_location_latitude::float8 AS base_lat, tp.base_location_longitude::float8 AS base_lng, \
        tp.service_radius_km, tp.bio, tp.specializations, tp.languages_spoken, tp.license_number, \
        tp.license_type, tp.years_of_experience, tp.has_own_equipment, tp.default_schedule, \
        COALESCE(p.average_rating, 0) AS average_rating, COALESCE(p.total_reviews, 0) AS total_reviews \
     FROM providers p JOIN therapist_profiles tp ON tp.provider_id = p.id WHERE p.id = $1";

fn check_string_list(errors: &mut Vec<FieldError>, field: &str, list: &Option<Vec<String>>) {
    if let Some(list) = list {
        if list.len() > 20 {
            errors.push(FieldError::new(field, "must have at most 20 entries"));
        }
        for (i, item) in list.iter().enumerate() {
            check_text(errors, &format!("{field}[{i}]"), item, 1, 50);
        }
    }
}

/// Create or update the caller's therapist profile. A new profile starts `pending` verification.
#[utoipa::path(
    tag = "therapist",
    security(("bearer" = [])),
    request_body = ProfileRequest,
    responses(
        (status = 200, description = "The profile", body = TherapistProfile),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a therapist", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/v1/therapist/profile")]
pub async fn put_profile(
    state: web::Data<AppState>,
    caller: Caller,
    Json(body): Json<ProfileRequest>,
) -> Result<web::Json<TherapistProfile>, ApiError> {
    caller.require(Role::Therapist)?;
    let radius_max = providers::service_radius_max_km(&state.db).await?;
    let mut errors = Vec::new();
    check_lat_lng(
        &mut errors,
        "base_lat",
        "base_lng",
        body.base_lat,
        body.base_lng,
    );
    check_range(
        &mut errors,
        "service_radius_km",
        body.service_radius_km,
        1,
        radius_max,
    );
    if let Some(bio) = &body.bio {
        check_text(&mut errors, "bio", bio, 0, 2000);
    }
    check_string_list(&mut errors, "specializations", &body.specializations);
    check_string_list(&mut errors, "languages_spoken", &body.languages_spoken);
    for (field, value) in [
        ("license_number", &body.license_number),
        ("license_type", &body.license_type),
    ] {
        if let Some(v) = value {
            check_text(&mut errors, field, v, 0, 100);
        }
    }
    if let Some(years) = body.years_of_experience {
        check_range(&mut errors, "years_of_experience", years, 0, 80);
    }
    if let Some(schedule) = &body.default_schedule {
        if !schedule.is_object() || schedule.to_string().len() > 4096 {
            errors.push(FieldError::new(
                "default_schedule",
                "must be an object of at most 4 KiB",
            ));
        }
    }
    ApiError::check(errors)?;

    let mut tx = state.db.begin().await.context("starting profile update")?;
    // One therapist provider per user (uq_providers_one_per_user_type); a concurrent first
    // save finds the row the other one created.
    sqlx::query(
        "INSERT INTO providers (user_id, type, verification_status, accepts_home_service) \
         VALUES ($1, 'therapist', 'pending', TRUE) \
         ON CONFLICT (user_id, type) WHERE deleted_at IS NULL DO NOTHING",
    )
    .bind(caller.user_id())
    .execute(&mut *tx)
    .await
    .context("creating the provider")?;
    let provider_id: i64 = sqlx::query_scalar(
        "SELECT id FROM providers WHERE user_id = $1 AND type = 'therapist' AND deleted_at IS NULL FOR UPDATE",
    )
    .bind(caller.user_id())
    .fetch_one(&mut *tx)
    .await
    .context("finding the provider")?;
    sqlx::query(
        "INSERT INTO therapist_profiles (provider_id, base_location_latitude, base_location_longitude, \
             service_radius_km, bio, specializations, languages_spoken, license_number, license_type, \
             years_of_experience, has_own_equipment, default_schedule) \
         VALUES ($1, $2, $3, $4, $5, $6, COALESCE($7, '[\"en\", \"fil\"]'::jsonb), $8, $9, $10, COALESCE($11, TRUE), $12) \
         ON CONFLICT (provider_id) DO UPDATE SET \
             base_location_latitude = EXCLUDED.base_location_latitude, \
             base_location_longitude = EXCLUDED.base_location_longitude, \
             service_radius_km = EXCLUDED.service_radius_km, \
             bio = COALESCE($5, therapist_profiles.bio), \
             specializations = COALESCE($6, therapist_profiles.specializations), \
             languages_spoken = COALESCE($7, therapist_profiles.languages_spoken), \
             license_number = COALESCE($8, therapist_profiles.license_number), \
             license_type = COALESCE($9, therapist_profiles.license_type), \
             years_of_experience = COALESCE($10, therapist_profiles.years_of_experience), \
             has_own_equipment = COALESCE($11, therapist_profiles.has_own_equipment), \
             default_schedule = COALESCE($12, therapist_profiles.default_schedule)",
    )
    .bind(provider_id)
    .bind(crate::domain::validate::coordinate(body.base_lat))
    .bind(crate::domain::validate::coordinate(body.base_lng))
    .bind(body.service_radius_km)
    .bind(optional_text(&body.bio))
    .bind(body.specializations.as_ref().map(|v| serde_json::json!(v)))
    .bind(body.languages_spoken.as_ref().map(|v| serde_json::json!(v)))
    .bind(optional_text(&body.license_number))
    .bind(optional_text(&body.license_type))
    .bind(body.years_of_experience)
    .bind(body.has_own_equipment)
    .bind(&body.default_schedule)
    .execute(&mut *tx)
    .await
    .context("saving the therapist profile")?;
    let profile: TherapistProfile = sqlx::query_as(PROFILE_SELECT)
        .bind(provider_id)
        .fetch_one(&mut *tx)
        .await
        .context("loading the profile")?;
    tx.commit().await.context("committing the profile")?;
    state.provider_changed(provider_id).await;
    Ok(web::Json(profile))
}

/// The caller's therapist profile.
#[utoipa::path(
    tag = "therapist",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The profile", body = TherapistProfile),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a therapist", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No profile yet", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/therapist/profile")]
pub async fn get_profile(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<web::Json<TherapistProfile>, ApiError> {
    caller.require(Role::Therapist)?;
    let provider = providers::own_therapist(&state.db, caller.user_id()).await?;
    sqlx::query_as(PROFILE_SELECT)
        .bind(provider.id)
        .fetch_one(&state.db)
        .await
        .context("loading the profile")
        .map(web::Json)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceTermsRequest {
    /// The therapist's price for this service (decimal string or number, at most 2 places).
    #[serde(with = "crate::domain::money")]
    #[schema(schema_with = price_input_schema)]
    pub price: Decimal,
    pub home_service_enabled: Option<bool>,
    /// Distance included in the price, in km.
    pub base_distance_km: Option<i32>,
    /// Charge per km beyond `base_distance_km`.
    #[serde(default, with = "crate::domain::money::option")]
    #[schema(schema_with = surcharge_input_schema)]
    pub per_km_surcharge: Option<Decimal>,
    /// The farthest the therapist travels for this service, in km.
    pub max_travel_distance_km: Option<i32>,
    /// Offer the service at all (default true).
    pub is_available: Option<bool>,
}

fn price_input_schema() -> utoipa::openapi::Object {
    crate::domain::money::input_schema("The therapist's price for this service.", false)
}

fn surcharge_input_schema() -> utoipa::openapi::Object {
    crate::domain::money::input_schema("Charge per km beyond `base_distance_km`.", true)
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ServiceTerms {
    pub service_id: Uuid,
    pub service_slug: String,
    pub service_name: String,
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "1150.00")]
    pub price: Decimal,
    pub currency: String,
    pub home_service_enabled: bool,
    pub base_distance_km: i32,
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "20.00")]
    pub per_km_surcharge: Decimal,
    pub max_travel_distance_km: i32,
    pub is_available: bool,
}

const TERMS_SELECT: &str = "SELECT s.uuid AS service_id, s.slug AS service_slug, s.name AS service_name, ps.price, \
        COALESCE(s.currency, 'PHP') AS currency, COALESCE(ps.home_service_enabled, true) AS home_service_enabled, \
        COALESCE(ps.base_distance_km, 5) AS base_distance_km, COALESCE(ps.per_km_surcharge, 0) AS per_km_surcharge, \
        COALESCE(ps.max_travel_distance_km, 10) AS max_travel_distance_km, COALESCE(ps.is_available, true) AS is_available \
     FROM provider_services ps JOIN services s ON s.id = ps.service_id";

/// Set the caller's price and travel terms for one service.
#[utoipa::path(
    tag = "therapist",
    security(("bearer" = [])),
    params(("service_id" = Uuid, Path, description = "A service id from GET /v1/services")),
    request_body = ServiceTermsRequest,
    responses(
        (status = 200, description = "The terms", body = ServiceTerms),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a therapist", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown service, or no therapist profile yet", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/v1/therapist/services/{service_id}")]
pub async fn put_service(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Json(body): Json<ServiceTermsRequest>,
) -> Result<web::Json<ServiceTerms>, ApiError> {
    caller.require(Role::Therapist)?;
    let provider = providers::own_therapist(&state.db, caller.user_id()).await?;
    let service_id: i64 = sqlx::query_scalar(
        "SELECT id FROM services WHERE uuid = $1 AND deleted_at IS NULL AND is_active IS NOT FALSE",
    )
    .bind(path.into_inner())
    .fetch_optional(&state.db)
    .await
    .context("finding the service")?
    .ok_or_else(|| ApiError::FieldNotFound(FieldError::new("service_id", "no such service")))?;

    let radius_max = providers::service_radius_max_km(&state.db).await?;
    let max_travel = body.max_travel_distance_km.unwrap_or(10.min(radius_max));
    let base_distance = body.base_distance_km.unwrap_or(5.min(max_travel));
    let surcharge = body.per_km_surcharge.unwrap_or_default();
    let mut errors = Vec::new();
    if body.price <= Decimal::ZERO || body.price > Decimal::from(MAX_SERVICE_PRICE) {
        errors.push(FieldError::new(
            "price",
            format!("must be more than 0 and at most {MAX_SERVICE_PRICE}"),
        ));
    }
    check_range(
        &mut errors,
        "max_travel_distance_km",
        max_travel,
        1,
        radius_max,
    );
    check_range(
        &mut errors,
        "base_distance_km",
        base_distance,
        0,
        max_travel.max(0),
    );
    if surcharge < Decimal::ZERO || surcharge > Decimal::from(MAX_PER_KM_SURCHARGE) {
        errors.push(FieldError::new(
            "per_km_surcharge",
            format!("must be between 0 and {MAX_PER_KM_SURCHARGE}"),
        ));
    }
    ApiError::check(errors)?;

    let row_id: i64 = sqlx::query_scalar(
        "INSERT INTO provider_services (provider_id, service_id, price, home_service_enabled, base_distance_km, \
             per_km_surcharge, max_travel_distance_km, is_available) \
         VALUES ($1, $2, $3, COALESCE($4, TRUE), $5, $6, $7, COALESCE($8, TRUE)) \
         ON CONFLICT (provider_id, service_id) DO UPDATE SET price = EXCLUDED.price, \
             home_service_enabled = COALESCE($4, provider_services.home_service_enabled), \
             base_distance_km = EXCLUDED.base_distance_km, per_km_surcharge = EXCLUDED.per_km_surcharge, \
             max_travel_distance_km = EXCLUDED.max_travel_distance_km, \
             is_available = COALESCE($8, provider_services.is_available) \
         RETURNING id",
    )
    .bind(provider.id)
    .bind(service_id)
    .bind(body.price)
    .bind(body.home_service_enabled)
    .bind(base_distance)
    .bind(surcharge)
    .bind(max_travel)
    .bind(body.is_available)
    .fetch_one(&state.db)
    .await
    .context("saving service terms")?;
    let terms: ServiceTerms = sqlx::query_as(&format!("{TERMS_SELECT} WHERE ps.id = $1"))
        .bind(row_id)
        .fetch_one(&state.db)
        .await
        .context("loading service terms")?;
    state.provider_changed(provider.id).await;
    Ok(web::Json(terms))
}

/// The caller's services and terms.
#[utoipa::path(
    tag = "therapist",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's services", body = [ServiceTerms]),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a therapist", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No therapist profile yet", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/therapist/services")]
pub async fn list_services(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<web::Json<Vec<ServiceTerms>>, ApiError> {
    caller.require(Role::Therapist)?;
    let provider = providers::own_therapist(&state.db, caller.user_id()).await?;
    sqlx::query_as(&format!(
        "{TERMS_SELECT} WHERE ps.provider_id = $1 ORDER BY s.sort_order, s.id"
    ))
    .bind(provider.id)
    .fetch_all(&state.db)
    .await
    .context("listing service terms")
    .map(web::Json)
}

/// Stop offering a service.
#[utoipa::path(
    tag = "therapist",
    security(("bearer" = [])),
    params(("service_id" = Uuid, Path, description = "A service id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a therapist", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The caller does not offer this service", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/therapist/services/{service_id}")]
pub async fn delete_service(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Therapist)?;
    let provider = providers::own_therapist(&state.db, caller.user_id()).await?;
    let deleted = sqlx::query(
        "DELETE FROM provider_services ps USING services s \
         WHERE ps.service_id = s.id AND s.uuid = $1 AND ps.provider_id = $2",
    )
    .bind(path.into_inner())
    .bind(provider.id)
    .execute(&state.db)
    .await
    .context("removing a service")?
    .rows_affected();
    if deleted == 0 {
        return Err(ApiError::FieldNotFound(FieldError::new(
            "service_id",
            "you do not offer this service",
        )));
    }
    state.provider_changed(provider.id).await;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityRequest {
    pub online: bool,
}

pub use crate::providers::Availability;

/// Go online (take bookings) or offline. Only a verified, active therapist may go online.
#[utoipa::path(
    tag = "therapist",
    security(("bearer" = [])),
    request_body = AvailabilityRequest,
    responses(
        (status = 200, description = "The new availability", body = Availability),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a therapist", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No therapist profile yet", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not verified or not active; `detail` says which", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/v1/therapist/availability")]
pub async fn put_availability(
    state: web::Data<AppState>,
    caller: Caller,
    Json(body): Json<AvailabilityRequest>,
) -> Result<web::Json<Availability>, ApiError> {
    caller.require(Role::Therapist)?;
    let provider = providers::own_therapist(&state.db, caller.user_id()).await?;
    let availability = providers::set_online(&state.db, &provider, body.online).await?;
    state.provider_changed(provider.id).await;
    Ok(web::Json(availability))
}
