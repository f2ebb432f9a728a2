//! Filling the live index from the database: at start-up (so a restart does not blank the map)
//! and whenever a therapist's profile, services, availability or verification change.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

use super::index::{LiveFix, LiveIndex, ServiceOffer, TherapistProfile};
use super::Point;

/// `model_has_roles.model_type` of users (the same as `accounts::USER_MODEL_TYPE`; the index sits
/// below accounts, so it names it itself).
const USER_MODEL_TYPE: &str = "App\\Models\\User";

/// On start-up, fixes older than this are not loaded: the therapist is long gone from the map.
pub const REBUILD_FIX_WINDOW: Duration = Duration::from_secs(24 * 3600);

#[derive(sqlx::FromRow)]
struct ProfileRow {
    id: i64,
    user_id: i64,
    uuid: Uuid,
    first_name: Option<String>,
    average_rating: Option<Decimal>,
    verified: bool,
    active: bool,
    online: bool,
    service_radius_km: Option<i32>,
}

#[derive(sqlx::FromRow)]
struct OfferRow {
    provider_id: i64,
    service_id: i64,
    price: Decimal,
    available: bool,
    home_service_enabled: bool,
    base_distance_km: i32,
    per_km_surcharge: Decimal,
    max_travel_distance_km: i32,
}

#[derive(sqlx::FromRow)]
struct FixRow {
    provider_id: i64,
    lat: f64,
    lng: f64,
    heading: Option<f64>,
    speed: Option<f64>,
    accuracy: Option<f64>,
    at: DateTime<Utc>,
}

const PROFILE_SQL: &str = "SELECT p.id, p.user_id, p.uuid, u.first_name, p.average_rating, \
        p.verification_status = 'verified' AS verified, \
        (COALESCE(p.is_active, true) AND u.deleted_at IS NULL AND COALESCE(u.is_active, true) \
         AND EXISTS (SELECT 1 FROM model_has_roles mr JOIN roles r ON r.id = mr.role_id \
                     WHERE mr.model_id = u.id AND mr.model_type = $2 AND r.name = 'therapist')) AS active, \
        COALESCE(p.is_available, false) AS online, tp.service_radius_km \
     FROM providers p JOIN users u ON u.id = p.user_id \
     LEFT JOIN therapist_profiles tp ON tp.provider_id = p.id \
     WHERE p.type = 'therapist' AND p.deleted_at IS NULL AND ($1::bigint IS NULL OR p.id = $1)";

const OFFER_SQL: &str = "SELECT ps.provider_id, ps.service_id, ps.price, \
        COALESCE(ps.is_available, true) AND COALESCE(s.is_active, true) AND s.deleted_at IS NULL AS available, \
        COALESCE(ps.home_service_enabled, true) AS home_service_enabled, \
        COALESCE(ps.base_distance_km, 5) AS base_distance_km, COALESCE(ps.per_km_surcharge, 0) AS per_km_surcharge, \
        COALESCE(ps.max_travel_distance_km, 10) AS max_travel_distance_km \
     FROM provider_services ps JOIN services s ON s.id = ps.service_id \
     WHERE $1::bigint IS NULL OR ps.provider_id = $1";

const FIX_SQL: &str = "SELECT p.id AS provider_id, l.latitude::float8 AS lat, l.longitude::float8 AS lng, \
        l.heading::float8 AS heading, l.speed::float8 AS speed, l.accuracy::float8 AS accuracy, l.created_at AS at \
     FROM providers p CROSS JOIN LATERAL ( \
        SELECT latitude, longitude, heading, speed, accuracy, created_at FROM provider_locations \
        WHERE provider_id = p.id AND created_at > $1 AND created_at <= now() + interval '1 minute' \
          AND (accuracy IS NULL OR accuracy <= $2) \
        ORDER BY created_at DESC LIMIT 1) l \
     WHERE p.type = 'therapist' AND p.deleted_at IS NULL AND ($3::bigint IS NULL OR p.id = $3)";

/// The statement to run for everyone (`only` = `None`) or for one therapist: `sql` as written,
/// or, for one, the same text without its `$n::bigint IS NULL OR ` (the parameters stay the same).
///
/// Why two shapes: PostgreSQL caches a generic plan for a prepared statement after a few runs,
/// and the generic plan of `($n::bigint IS NULL OR column = $n)` scans every row even when one
/// is asked for. Reloading one therapist that way cost 70 ms of database time each at 10,000
/// therapists (pg_stat_statements in the dispatch-10k load scenario), which made PostgreSQL the
/// bottleneck of a city coming online. Used by every query that reloads one therapist (here and
/// in the schedule's store). Panics when the text has no such filter: a query this is used on
/// must have one.
pub fn statement_for(sql: &'static str, param: &str, only: Option<i64>) -> Cow<'static, str> {
    let filter = format!("{param}::bigint IS NULL OR ");
    assert!(sql.contains(&filter), "no `{filter}` in the query");
    match only {
        Some(_) => Cow::Owned(sql.replace(&filter, "")),
        None => Cow::Borrowed(sql),
    }
}

/// Loads profiles (all therapists, or one) with their service offers.
pub async fn load_profiles(
    pool: &PgPool,
    only: Option<i64>,
) -> anyhow::Result<Vec<TherapistProfile>> {
    let rows: Vec<ProfileRow> = sqlx::query_as(&statement_for(PROFILE_SQL, "$1", only))
        .bind(only)
        .bind(USER_MODEL_TYPE)
        .fetch_all(pool)
        .await
        .context("loading therapist profiles")?;
    let offers: Vec<OfferRow> = sqlx::query_as(&statement_for(OFFER_SQL, "$1", only))
        .bind(only)
        .fetch_all(pool)
        .await
        .context("loading service offers")?;
    let mut by_provider: HashMap<i64, Vec<ServiceOffer>> = HashMap::new();
    for o in offers {
        by_provider
            .entry(o.provider_id)
            .or_default()
            .push(ServiceOffer {
                service_id: o.service_id,
                price: o.price,
                available: o.available,
                home_service_enabled: o.home_service_enabled,
                base_distance_km: o.base_distance_km,
                per_km_surcharge: o.per_km_surcharge,
                max_travel_distance_km: o.max_travel_distance_km,
            });
    }
    Ok(rows
        .into_iter()
        .map(|r| TherapistProfile {
            provider_id: r.id,
            user_id: r.user_id,
            uuid: r.uuid,
            first_name: r.first_name.unwrap_or_default(),
            average_rating: r.average_rating.unwrap_or_default(),
            verified: r.verified,
            active: r.active,
            online: r.online,
            service_radius_km: r.service_radius_km.unwrap_or(0),
            services: by_provider.remove(&r.id).unwrap_or_default(),
        })
        .collect())
}

/// Rebuilds the whole index: every therapist and their latest accurate fix of the last day.
pub async fn rebuild(
    pool: &PgPool,
    index: &LiveIndex,
    match_max_accuracy_m: f64,
) -> anyhow::Result<usize> {
    let profiles = load_profiles(pool, None).await?;
    let count = profiles.len();
    for profile in profiles {
        index.upsert_profile(profile);
    }
    load_fixes(pool, index, match_max_accuracy_m, None).await?;
    Ok(count)
}

/// Reloads one therapist's profile (after a change made through the API).
pub async fn refresh(
    pool: &PgPool,
    index: &LiveIndex,
    provider_id: i64,
    match_max_accuracy_m: f64,
) -> anyhow::Result<()> {
    let known = index.identity(provider_id).is_some();
    match load_profiles(pool, Some(provider_id)).await?.pop() {
        Some(profile) => {
            index.upsert_profile(profile);
            if !known {
                load_fixes(pool, index, match_max_accuracy_m, Some(provider_id)).await?;
            }
        }
        None => index.remove(provider_id),
    }
    Ok(())
}

async fn load_fixes(
    pool: &PgPool,
    index: &LiveIndex,
    match_max_accuracy_m: f64,
    only: Option<i64>,
) -> anyhow::Result<()> {
    let since = Utc::now() - chrono::Duration::from_std(REBUILD_FIX_WINDOW).expect("fits");
    let fixes: Vec<FixRow> = sqlx::query_as(&statement_for(FIX_SQL, "$3", only))
        .bind(since)
        .bind(match_max_accuracy_m)
        .bind(only)
        .fetch_all(pool)
        .await
        .context("loading latest fixes")?;
    let now = Utc::now();
    for f in fixes {
        // The server heard this fix when it stored it, at the latest at its fix time; a fix
        // stamped ahead of the server's clock counts as heard now.
        let received_at = f.at.min(now);
        index.record_fix(
            f.provider_id,
            LiveFix {
                point: Point::new(f.lat, f.lng),
                heading: f.heading,
                speed_kmh: f.speed,
                accuracy_m: f.accuracy,
                at: f.at,
            },
            received_at,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_statement_for_one_drops_the_everyone_branch_only() {
        let sql = "WHERE a AND ($3::bigint IS NULL OR p.id = $3)";
        assert_eq!(
            super::statement_for(sql, "$3", Some(7)),
            "WHERE a AND (p.id = $3)"
        );
        assert_eq!(super::statement_for(sql, "$3", None), sql);
    }
}
