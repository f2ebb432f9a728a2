//! Wellness centres (providers of type `store`): their profiles with opening hours and rooms,
//! the services they sell in store, finding them near a customer, and their in-store bookings.
//!
//! - [`visits`]: in-store bookings: the slot a booking holds a room for, confirming and
//!   declining, check-in, no-shows, and the sweep that ends unconfirmed or missed visits.
//!
//! A store is a place: unlike a therapist's, its position is public. Room capacity is the
//! database's to enforce (`store_visits` and its trigger), so no two servers can overbook.

pub mod visits;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::hours::{OpeningHours, WeeklyHours, WeeklyInput};
use crate::domain::money::CURRENCY;
use crate::domain::validate::{check_lat_lng, check_range, check_text, coordinate, optional_text};
use crate::error::{ApiError, Context as _, FieldError};

/// The time zone a store gets when it names none.
pub const DEFAULT_TIMEZONE: &str = "Asia/Manila";
/// Most rooms a store may declare (the table's check says the same).
pub const MAX_ROOMS: i32 = 500;
/// Most entries in a list field (amenities, payment methods).
pub const MAX_LIST_ENTRIES: usize = 30;

/// What a store owner sends to set up or change their store.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreProfileInput {
    pub store_name: String,
    pub description: Option<String>,
    pub address_line1: String,
    pub address_line2: Option<String>,
    pub city: String,
    pub province: Option<String>,
    pub postal_code: Option<String>,
    pub lat: f64,
    pub lng: f64,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub website: Option<String>,
    /// IANA time zone of the opening hours (default `Asia/Manila`).
    #[schema(example = "Asia/Manila")]
    pub timezone: Option<String>,
    /// Weekday to local opening intervals: `{"monday": [{"open": "09:00", "close": "21:00"}]}`.
    /// A missing day is closed; the seed's `{"open", "close", "closed"}` form is read too.
    #[schema(value_type = Object)]
    pub opening_hours: WeeklyInput,
    /// `["WiFi", "Parking", "Shower", "Sauna", "Lockers"]`
    pub amenities: Option<Vec<String>>,
    /// How many bookings the store serves at once (1 to 500).
    pub number_of_rooms: i32,
    /// `["Cash", "Card", "GCash", "PayMaya"]`
    pub payment_methods: Option<Vec<String>>,
    pub cancellation_policy: Option<String>,
    pub house_rules: Option<String>,
}

/// A checked profile, ready to store.
pub struct ValidProfile<'a> {
    pub input: &'a StoreProfileInput,
    pub hours: OpeningHours,
}

fn check_list(errors: &mut Vec<FieldError>, field: &str, list: &Option<Vec<String>>) {
    if let Some(list) = list {
        if list.len() > MAX_LIST_ENTRIES {
            errors.push(FieldError::new(
                field,
                format!("must have at most {MAX_LIST_ENTRIES} entries"),
            ));
        }
        for (i, item) in list.iter().enumerate() {
            check_text(errors, &format!("{field}[{i}]"), item, 1, 50);
        }
    }
}

/// Checks every field of a profile, naming each bad one.
pub fn validate(input: &StoreProfileInput) -> Result<ValidProfile<'_>, ApiError> {
    let mut errors = Vec::new();
    check_text(&mut errors, "store_name", &input.store_name, 1, 255);
    check_text(&mut errors, "address_line1", &input.address_line1, 1, 255);
    check_text(&mut errors, "city", &input.city, 1, 100);
    check_lat_lng(&mut errors, "lat", "lng", input.lat, input.lng);
    check_range(
        &mut errors,
        "number_of_rooms",
        input.number_of_rooms,
        1,
        MAX_ROOMS,
    );
    for (field, value, max) in [
        ("description", &input.description, 4000),
        ("address_line2", &input.address_line2, 255),
        ("province", &input.province, 100),
        ("postal_code", &input.postal_code, 10),
        ("phone", &input.phone, 20),
        ("email", &input.email, 255),
        ("website", &input.website, 255),
        ("cancellation_policy", &input.cancellation_policy, 4000),
        ("house_rules", &input.house_rules, 4000),
    ] {
        if let Some(value) = value {
            check_text(&mut errors, field, value, 0, max);
        }
    }
    check_list(&mut errors, "amenities", &input.amenities);
    check_list(&mut errors, "payment_methods", &input.payment_methods);
    let timezone = optional_text(&input.timezone).unwrap_or(DEFAULT_TIMEZONE);
    let hours =
        match OpeningHours::parse("timezone", timezone, "opening_hours", &input.opening_hours) {
            Ok(hours) => Some(hours),
            Err(more) => {
                errors.extend(more);
                None
            }
        };
    ApiError::check(errors)?;
    Ok(ValidProfile {
        input,
        hours: hours.expect("no errors means the hours parsed"),
    })
}

/// A service a store sells in store, with its price.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct StoreService {
    pub service_id: Uuid,
    pub name: String,
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "900.00")]
    pub price: Decimal,
    pub currency: String,
    pub duration_minutes: i32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StoreAddress {
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub province: Option<String>,
    pub postal_code: Option<String>,
}

/// A store as customers and its owner see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StoreView {
    /// The store's provider id.
    pub store_id: Uuid,
    pub store_name: String,
    pub description: Option<String>,
    pub address: StoreAddress,
    pub lat: f64,
    pub lng: f64,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub website: Option<String>,
    pub timezone: String,
    /// Every weekday with its local opening intervals (empty: closed).
    #[schema(value_type = Object)]
    pub opening_hours: WeeklyHours,
    pub open_now: bool,
    pub amenities: Vec<String>,
    pub number_of_rooms: i32,
    pub payment_methods: Vec<String>,
    pub cancellation_policy: Option<String>,
    pub house_rules: Option<String>,
    /// `pending`, `under_review`, `verified` or `rejected`; only verified stores are found.
    pub verification_status: String,
    pub is_active: bool,
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "4.60")]
    pub average_rating: Decimal,
    pub total_reviews: i32,
    pub services: Vec<StoreService>,
}

#[derive(sqlx::FromRow)]
struct StoreRow {
    uuid: Uuid,
    store_name: String,
    description: Option<String>,
    address_line1: String,
    address_line2: Option<String>,
    city: String,
    province: Option<String>,
    postal_code: Option<String>,
    lat: f64,
    lng: f64,
    phone: Option<String>,
    email: Option<String>,
    website: Option<String>,
    timezone: String,
    operating_hours: Option<serde_json::Value>,
    amenities: Option<serde_json::Value>,
    number_of_rooms: i32,
    payment_methods: Option<serde_json::Value>,
    cancellation_policy: Option<String>,
    house_rules: Option<String>,
    verification_status: String,
    is_active: bool,
    average_rating: Decimal,
    total_reviews: i32,
}

const STORE_SELECT: &str = "SELECT p.id, p.uuid, sp.store_name, sp.description, sp.address_line1, sp.address_line2, \
        sp.city, sp.province, sp.postal_code, sp.latitude::float8 AS lat, sp.longitude::float8 AS lng, \
        sp.phone, sp.email, sp.website, sp.timezone, sp.operating_hours, sp.amenities, \
        COALESCE(sp.number_of_rooms, 1) AS number_of_rooms, sp.payment_methods, sp.cancellation_policy, \
        sp.house_rules, p.verification_status::text AS verification_status, \
        COALESCE(p.is_active, true) AS is_active, COALESCE(p.average_rating, 0) AS average_rating, \
        COALESCE(p.total_reviews, 0) AS total_reviews \
     FROM providers p JOIN store_profiles sp ON sp.provider_id = p.id \
     WHERE p.type = 'store' AND p.deleted_at IS NULL";

fn string_list(value: Option<serde_json::Value>) -> Vec<String> {
    value
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// A store's opening hours as stored (validated when written).
pub fn stored_hours(timezone: &str, stored: Option<&serde_json::Value>) -> OpeningHours {
    stored
        .and_then(|hours| OpeningHours::from_stored(timezone, hours))
        .unwrap_or_else(|| {
            OpeningHours::from_stored(DEFAULT_TIMEZONE, &serde_json::json!({}))
                .expect("empty hours are valid")
        })
}

async fn services_of(db: impl PgExecutor<'_>, provider_id: i64) -> sqlx::Result<Vec<StoreService>> {
    sqlx::query_as(
        "SELECT s.uuid AS service_id, s.name, ps.price, COALESCE(s.currency, 'PHP') AS currency, \
                COALESCE(s.duration_minutes, 60) AS duration_minutes \
         FROM provider_services ps JOIN services s ON s.id = ps.service_id \
         WHERE ps.provider_id = $1 AND ps.store_service_enabled IS TRUE AND ps.is_available IS NOT FALSE \
           AND s.deleted_at IS NULL \
         ORDER BY s.name",
    )
    .bind(provider_id)
    .fetch_all(db)
    .await
}

fn into_view(row: StoreRow, services: Vec<StoreService>, now: DateTime<Utc>) -> StoreView {
    let hours = stored_hours(&row.timezone, row.operating_hours.as_ref());
    StoreView {
        store_id: row.uuid,
        store_name: row.store_name,
        description: row.description,
        address: StoreAddress {
            line1: row.address_line1,
            line2: row.address_line2,
            city: row.city,
            province: row.province,
            postal_code: row.postal_code,
        },
        lat: row.lat,
        lng: row.lng,
        phone: row.phone,
        email: row.email,
        website: row.website,
        timezone: row.timezone,
        opening_hours: hours.weekly(),
        open_now: hours.is_open_at(now),
        amenities: string_list(row.amenities),
        number_of_rooms: row.number_of_rooms,
        payment_methods: string_list(row.payment_methods),
        cancellation_policy: row.cancellation_policy,
        house_rules: row.house_rules,
        verification_status: row.verification_status,
        is_active: row.is_active,
        average_rating: row.average_rating,
        total_reviews: row.total_reviews,
        services,
    }
}

/// The store with this provider id, with its services.
pub async fn view(pool: &PgPool, provider_id: i64) -> Result<StoreView, ApiError> {
    let row: StoreRow = sqlx::query_as(&format!("{STORE_SELECT} AND p.id = $1"))
        .bind(provider_id)
        .fetch_optional(pool)
        .await
        .context("loading the store")?
        .ok_or_else(|| ApiError::not_found("store"))?;
    let services = services_of(pool, provider_id)
        .await
        .context("loading the store's services")?;
    Ok(into_view(row, services, Utc::now()))
}

/// A store by its public id, as customers see it: verified and active only.
pub async fn public_view(pool: &PgPool, store_uuid: Uuid) -> Result<StoreView, ApiError> {
    let id: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT p.id FROM ({STORE_SELECT} AND p.uuid = $1 AND p.verification_status = 'verified' \
           AND p.is_active IS NOT FALSE) p"
    ))
    .bind(store_uuid)
    .fetch_optional(pool)
    .await
    .context("finding the store")?;
    view(pool, id.ok_or_else(|| ApiError::not_found("store"))?).await
}

/// The caller's own store provider id, if they set one up.
pub async fn own_store_id(db: impl PgExecutor<'_>, user_id: i64) -> Result<Option<i64>, ApiError> {
    sqlx::query_scalar(
        "SELECT id FROM providers WHERE user_id = $1 AND type = 'store' AND deleted_at IS NULL",
    )
    .bind(user_id)
    .fetch_optional(db)
    .await
    .context("finding the caller's store")
}

/// The caller's store, or 404 naming the fix.
pub async fn require_own_store(db: impl PgExecutor<'_>, user_id: i64) -> Result<i64, ApiError> {
    own_store_id(db, user_id).await?.ok_or_else(|| {
        ApiError::NotFound("no store profile yet: PUT /v1/store/profile first".into())
    })
}

/// Creates or updates the owner's store (a new store starts `pending` verification).
pub async fn save_profile(
    pool: &PgPool,
    owner_user_id: i64,
    profile: &ValidProfile<'_>,
) -> Result<i64, ApiError> {
    let input = profile.input;
    let mut tx = pool.begin().await.context("starting the store update")?;
    // One store per owner (uq_providers_one_per_user_type); a concurrent first save finds the
    // row the other one created.
    sqlx::query(
        "INSERT INTO providers (user_id, type, verification_status, accepts_home_service, accepts_store_service, business_name) \
         VALUES ($1, 'store', 'pending', FALSE, TRUE, $2) \
         ON CONFLICT (user_id, type) WHERE deleted_at IS NULL DO NOTHING",
    )
    .bind(owner_user_id)
    .bind(input.store_name.trim())
    .execute(&mut *tx)
    .await
    .context("creating the store's provider")?;
    let provider_id: i64 = sqlx::query_scalar(
        "SELECT id FROM providers WHERE user_id = $1 AND type = 'store' AND deleted_at IS NULL FOR UPDATE",
    )
    .bind(owner_user_id)
    .fetch_one(&mut *tx)
    .await
    .context("finding the store's provider")?;
    let list = |v: &Option<Vec<String>>| {
        v.as_ref()
            .map(|items| serde_json::json!(items.iter().map(|s| s.trim()).collect::<Vec<_>>()))
    };
    sqlx::query(include_str!("../../sql/store_profile_upsert.sql"))
        .bind(provider_id)
        .bind(input.store_name.trim())
        .bind(optional_text(&input.description))
        .bind(input.address_line1.trim())
        .bind(optional_text(&input.address_line2))
        .bind(input.city.trim())
        .bind(optional_text(&input.province))
        .bind(optional_text(&input.postal_code))
        .bind(coordinate(input.lat))
        .bind(coordinate(input.lng))
        .bind(optional_text(&input.phone))
        .bind(optional_text(&input.email))
        .bind(optional_text(&input.website))
        .bind(serde_json::json!(profile.hours.weekly()))
        .bind(list(&input.amenities))
        .bind(input.number_of_rooms)
        .bind(list(&input.payment_methods))
        .bind(optional_text(&input.cancellation_policy))
        .bind(optional_text(&input.house_rules))
        .bind(profile.hours.timezone().name())
        .execute(&mut *tx)
        .await
        .context("saving the store profile")?;
    sqlx::query("UPDATE providers SET business_name = $2 WHERE id = $1")
        .bind(provider_id)
        .bind(input.store_name.trim())
        .execute(&mut *tx)
        .await
        .context("naming the store")?;
    tx.commit().await.context("committing the store profile")?;
    Ok(provider_id)
}

/// Sets the store's price for a service it sells in store.
pub async fn set_service(
    pool: &PgPool,
    provider_id: i64,
    service_id: i64,
    price: Decimal,
    available: bool,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO provider_services (provider_id, service_id, price, is_available, home_service_enabled, store_service_enabled) \
         VALUES ($1, $2, $3, $4, FALSE, TRUE) \
         ON CONFLICT (provider_id, service_id) DO UPDATE SET price = EXCLUDED.price, \
             is_available = EXCLUDED.is_available, home_service_enabled = FALSE, store_service_enabled = TRUE",
    )
    .bind(provider_id)
    .bind(service_id)
    .bind(price)
    .bind(available)
    .execute(pool)
    .await
    .context("saving the store's service")?;
    Ok(())
}

/// Stops selling a service in store; `false` when the store did not sell it.
pub async fn remove_service(
    pool: &PgPool,
    provider_id: i64,
    service_id: i64,
) -> Result<bool, ApiError> {
    let removed =
        sqlx::query("DELETE FROM provider_services WHERE provider_id = $1 AND service_id = $2")
            .bind(provider_id)
            .bind(service_id)
            .execute(pool)
            .await
            .context("removing the store's service")?
            .rows_affected();
    Ok(removed > 0)
}

/// A store near the customer, nearest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NearbyStore {
    pub store_id: Uuid,
    pub store_name: String,
    pub address: String,
    pub city: String,
    pub lat: f64,
    pub lng: f64,
    /// Geodesic distance from the customer (PostGIS geography), whole metres.
    pub distance_m: u32,
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "900.00")]
    pub price: Decimal,
    pub currency: String,
    pub duration_minutes: i32,
    pub open_now: bool,
    /// When it next opens, if it is closed now (within a week).
    pub opens_at: Option<DateTime<Utc>>,
    pub number_of_rooms: i32,
    pub amenities: Vec<String>,
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "4.60")]
    pub average_rating: Decimal,
}

#[derive(sqlx::FromRow)]
struct NearbyRow {
    uuid: Uuid,
    store_name: String,
    address_line1: String,
    city: String,
    lat: f64,
    lng: f64,
    distance_m: f64,
    price: Decimal,
    currency: String,
    duration_minutes: i32,
    timezone: String,
    operating_hours: Option<serde_json::Value>,
    number_of_rooms: i32,
    amenities: Option<serde_json::Value>,
    average_rating: Decimal,
}

/// Verified, active stores selling `service_id` within `radius_m`, nearest first: a GiST KNN
/// scan of `store_profiles.location` (stores barely move, so the database answers).
pub async fn nearby(
    pool: &PgPool,
    lat: f64,
    lng: f64,
    service_id: i64,
    radius_m: f64,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<Vec<NearbyStore>, ApiError> {
    let rows: Vec<NearbyRow> = sqlx::query_as(include_str!("../../sql/stores_nearby.sql"))
        .bind(lat)
        .bind(lng)
        .bind(service_id)
        .bind(radius_m)
        .bind(limit)
        .fetch_all(pool)
        .await
        .context("finding stores nearby")?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let hours = stored_hours(&row.timezone, row.operating_hours.as_ref());
            let open_now = hours.is_open_at(now);
            NearbyStore {
                store_id: row.uuid,
                store_name: row.store_name,
                address: row.address_line1,
                city: row.city,
                lat: row.lat,
                lng: row.lng,
                distance_m: row.distance_m.round().max(0.0) as u32,
                price: row.price,
                currency: if row.currency.is_empty() {
                    CURRENCY.to_owned()
                } else {
                    row.currency
                },
                duration_minutes: row.duration_minutes,
                open_now,
                opens_at: (!open_now).then(|| hours.next_opening(now)).flatten(),
                number_of_rooms: row.number_of_rooms,
                amenities: string_list(row.amenities),
                average_rating: row.average_rating,
            }
        })
        .collect())
}

/// A store on the dispatch map.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct MapStore {
    pub store_id: Uuid,
    pub store_name: String,
    pub lat: f64,
    pub lng: f64,
    pub number_of_rooms: i32,
    /// Rooms held right now by pending, confirmed, checked-in or running visits.
    pub rooms_in_use: i64,
    pub verification_status: String,
}

/// Every store inside a bounding box, with its rooms in use now.
pub async fn on_map(
    pool: &PgPool,
    west: f64,
    south: f64,
    east: f64,
    north: f64,
) -> Result<Vec<MapStore>, ApiError> {
    sqlx::query_as(include_str!("../../sql/stores_on_map.sql"))
        .bind(west)
        .bind(south)
        .bind(east)
        .bind(north)
        .fetch_all(pool)
        .await
        .context("listing stores on the map")
}
