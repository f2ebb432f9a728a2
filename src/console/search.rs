//! Search for dispatchers: a therapist, store or booking by name, phone or booking number,
//! with where it is now so the map can fly there.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, Context as _};
use crate::geo::index::{LiveIndex, TherapistState};

/// Most hits of each kind.
pub const MAX_HITS: i64 = 10;

#[derive(Debug, Serialize, ToSchema)]
pub struct TherapistHit {
    pub provider_id: Uuid,
    pub name: String,
    pub phone: String,
    /// `available`, `offered`, `busy` or `offline` (from the live index).
    pub status: &'static str,
    /// Their live position, else their base.
    pub lat: Option<f64>,
    pub lng: Option<f64>,
    /// When the live position was fixed (absent for a base).
    pub at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BookingHit {
    pub booking_id: Uuid,
    pub booking_number: String,
    pub status: String,
    /// `home_service` or `in_store`.
    #[serde(rename = "type")]
    pub place: String,
    pub customer_name: String,
    pub customer_phone: String,
    pub provider_name: Option<String>,
    pub lat: Option<f64>,
    pub lng: Option<f64>,
    pub requested_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StoreHit {
    pub store_id: Uuid,
    pub store_name: String,
    pub phone: Option<String>,
    pub lat: f64,
    pub lng: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResults {
    pub therapists: Vec<TherapistHit>,
    pub bookings: Vec<BookingHit>,
    pub stores: Vec<StoreHit>,
}

#[derive(sqlx::FromRow)]
struct TherapistRow {
    provider_id: i64,
    uuid: Uuid,
    name: String,
    phone: String,
    base_lat: Option<f64>,
    base_lng: Option<f64>,
}

#[derive(sqlx::FromRow)]
struct BookingRow {
    uuid: Uuid,
    booking_number: String,
    status: String,
    place: String,
    customer_name: String,
    customer_phone: String,
    provider_name: Option<String>,
    lat: Option<f64>,
    lng: Option<f64>,
    requested_at: DateTime<Utc>,
}

/// `text` for a LIKE pattern, its wildcards taken literally.
fn like_escaped(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The digits of a query that looks like (part of) a phone number: at least four, and
/// nothing but digits, spaces, `+`, `-` and parentheses.
pub fn phone_digits(query: &str) -> Option<String> {
    let looks_like_phone = query
        .chars()
        .all(|c| c.is_ascii_digit() || " +-()".contains(c));
    let digits: String = query.chars().filter(char::is_ascii_digit).collect();
    // A local number (0917…) is stored as +63917…: search without the trunk 0.
    let digits = digits
        .strip_prefix('0')
        .map(str::to_owned)
        .unwrap_or(digits);
    (looks_like_phone && digits.len() >= 4).then_some(digits)
}

fn state_name(state: TherapistState) -> &'static str {
    match state {
        TherapistState::Offline => "offline",
        TherapistState::Available => "available",
        TherapistState::Offered => "offered",
        TherapistState::Busy => "busy",
    }
}

/// Therapists, bookings and stores matching `query` (already trimmed, 2 to 100 characters).
pub async fn search(
    db: &PgPool,
    index: &LiveIndex,
    query: &str,
) -> Result<SearchResults, ApiError> {
    let pattern = format!("%{}%", like_escaped(query));
    let digits = phone_digits(query).map(|d| format!("%{d}%"));
    let therapists: Vec<TherapistRow> = sqlx::query_as(
        "SELECT p.id AS provider_id, p.uuid, u.first_name || ' ' || u.last_name AS name, u.phone, \
                tp.base_location_latitude::float8 AS base_lat, tp.base_location_longitude::float8 AS base_lng \
         FROM providers p JOIN users u ON u.id = p.user_id \
         LEFT JOIN therapist_profiles tp ON tp.provider_id = p.id \
         WHERE p.type = 'therapist' AND p.deleted_at IS NULL \
           AND ((u.first_name || ' ' || u.last_name) ILIKE $1 OR ($2::text IS NOT NULL AND u.phone LIKE $2)) \
         ORDER BY u.first_name, u.last_name, p.id LIMIT $3",
    )
    .bind(&pattern)
    .bind(&digits)
    .bind(MAX_HITS)
    .fetch_all(db)
    .await
    .context("searching therapists")?;
    let bookings: Vec<BookingRow> = sqlx::query_as(
        "SELECT b.uuid, b.booking_number, b.status::text AS status, b.type::text AS place, \
                cu.first_name || ' ' || cu.last_name AS customer_name, cu.phone AS customer_phone, \
                COALESCE(sp.store_name, pu.first_name || ' ' || pu.last_name) AS provider_name, \
                bl.latitude::float8 AS lat, bl.longitude::float8 AS lng, b.requested_at \
         FROM bookings b JOIN users cu ON cu.id = b.customer_id \
         LEFT JOIN providers p ON p.id = b.provider_id LEFT JOIN users pu ON pu.id = p.user_id \
         LEFT JOIN store_profiles sp ON sp.provider_id = p.id \
         LEFT JOIN booking_locations bl ON bl.booking_id = b.id \
         WHERE b.deleted_at IS NULL \
           AND (b.booking_number ILIKE $1 \
                OR (cu.first_name || ' ' || cu.last_name) ILIKE $1 \
                OR ($2::text IS NOT NULL AND cu.phone LIKE $2)) \
         ORDER BY b.requested_at DESC, b.id DESC LIMIT $3",
    )
    .bind(&pattern)
    .bind(&digits)
    .bind(MAX_HITS)
    .fetch_all(db)
    .await
    .context("searching bookings")?;
    let stores: Vec<(Uuid, String, Option<String>, f64, f64)> = sqlx::query_as(
        "SELECT p.uuid, sp.store_name, sp.phone, sp.latitude::float8, sp.longitude::float8 \
         FROM store_profiles sp JOIN providers p ON p.id = sp.provider_id JOIN users u ON u.id = p.user_id \
         WHERE p.deleted_at IS NULL \
           AND (sp.store_name ILIKE $1 OR ($2::text IS NOT NULL AND (u.phone LIKE $2 OR sp.phone LIKE $2))) \
         ORDER BY sp.store_name, p.id LIMIT $3",
    )
    .bind(&pattern)
    .bind(&digits)
    .bind(MAX_HITS)
    .fetch_all(db)
    .await
    .context("searching stores")?;

    let ttl = index.presence_ttl();
    let now = Utc::now();
    Ok(SearchResults {
        therapists: therapists
            .into_iter()
            .map(|row| {
                let live = index.map_entry(row.provider_id);
                let status = live.as_ref().map_or("offline", |e| {
                    let fresh = (now - e.received_at).to_std().is_ok_and(|age| age <= ttl);
                    state_name(if fresh {
                        e.state
                    } else {
                        TherapistState::Offline
                    })
                });
                TherapistHit {
                    provider_id: row.uuid,
                    name: row.name,
                    phone: row.phone,
                    status,
                    lat: live.as_ref().map(|e| e.fix.point.lat).or(row.base_lat),
                    lng: live.as_ref().map(|e| e.fix.point.lng).or(row.base_lng),
                    at: live.as_ref().map(|e| e.fix.at),
                }
            })
            .collect(),
        bookings: bookings
            .into_iter()
            .map(|row| BookingHit {
                booking_id: row.uuid,
                booking_number: row.booking_number,
                status: row.status,
                place: row.place,
                customer_name: row.customer_name,
                customer_phone: row.customer_phone,
                provider_name: row.provider_name,
                lat: row.lat,
                lng: row.lng,
                requested_at: row.requested_at,
            })
            .collect(),
        stores: stores
            .into_iter()
            .map(|(store_id, store_name, phone, lat, lng)| StoreHit {
                store_id,
                store_name,
                phone,
                lat,
                lng,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_like_queries_become_digits() {
        assert_eq!(phone_digits("0917 123 4567").as_deref(), Some("9171234567"));
        assert_eq!(phone_digits("+63 917-123").as_deref(), Some("63917123"));
        assert_eq!(phone_digits("123"), None);
        assert_eq!(phone_digits("Maria 0917"), None);
    }

    #[test]
    fn like_wildcards_are_literal() {
        assert_eq!(like_escaped("50%_off\\"), "50\\%\\_off\\\\");
    }
}
