//! Providers (therapists): lookups by owner, platform limits, going online.

use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::error::{ApiError, Context as _};
use crate::http::therapist::Availability;
use crate::state::AppState;

/// Used when app_settings has no `service_radius_max`.
pub const DEFAULT_SERVICE_RADIUS_MAX_KM: i32 = 20;

/// The facts about a provider that authorisation and availability decisions need.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProviderRef {
    pub id: i64,
    pub uuid: Uuid,
    pub verification_status: String,
    pub is_active: bool,
}

/// The caller's own therapist provider; 404 (naming the fix) when they have no profile yet.
pub async fn own_therapist(db: impl PgExecutor<'_>, user_id: i64) -> Result<ProviderRef, ApiError> {
    sqlx::query_as(
        "SELECT id, uuid, verification_status::text AS verification_status, COALESCE(is_active, true) AS is_active \
         FROM providers WHERE user_id = $1 AND type = 'therapist' AND deleted_at IS NULL",
    )
    .bind(user_id)
    .fetch_optional(db)
    .await
    .context("finding the caller's provider")?
    .ok_or_else(|| ApiError::NotFound("no therapist profile yet: PUT /v1/therapist/profile first".into()))
}

/// app_settings `service_radius_max` (km): the widest radius a therapist may set.
pub async fn service_radius_max_km(pool: &PgPool) -> Result<i32, ApiError> {
    let value: Option<Value> =
        sqlx::query_scalar("SELECT value FROM app_settings WHERE key = 'service_radius_max'")
            .fetch_optional(pool)
            .await
            .context("reading service_radius_max")?;
    Ok(value
        .as_ref()
        .and_then(setting_as_f64)
        .map_or(DEFAULT_SERVICE_RADIUS_MAX_KM, |km| {
            km.clamp(1.0, 500.0) as i32
        }))
}

/// A numeric app setting stored as a JSON number or a string holding one.
pub fn setting_as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Why a provider may not go online, or `None` when it may.
pub fn online_refusal(provider: &ProviderRef) -> Option<String> {
    if !provider.is_active {
        return Some("the therapist account is deactivated".into());
    }
    if provider.verification_status != "verified" {
        return Some(format!(
            "only verified therapists may go online; verification status is {}",
            provider.verification_status
        ));
    }
    None
}

/// Why a therapist may not hold a socket at all (suspended or rejected), or `None`.
pub fn suspension(provider: &ProviderRef) -> Option<String> {
    if !provider.is_active {
        return Some("the therapist account is suspended".into());
    }
    if provider.verification_status == "rejected" {
        return Some("the therapist's verification was rejected".into());
    }
    None
}

/// Turns a therapist online or offline (409 naming why when they may not go online).
pub async fn set_online(
    state: &AppState,
    provider: &ProviderRef,
    online: bool,
) -> Result<Availability, ApiError> {
    if online {
        if let Some(why) = online_refusal(provider) {
            return Err(ApiError::Conflict(why));
        }
    }
    sqlx::query("UPDATE providers SET is_available = $2 WHERE id = $1")
        .bind(provider.id)
        .bind(online)
        .execute(&state.db)
        .await
        .context("changing availability")?;
    state.provider_changed(provider.id).await;
    Ok(Availability::new(provider, online))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(status: &str, active: bool) -> ProviderRef {
        ProviderRef {
            id: 1,
            uuid: Uuid::nil(),
            verification_status: status.into(),
            is_active: active,
        }
    }

    #[test]
    fn only_verified_active_therapists_may_go_online() {
        assert!(online_refusal(&provider("verified", true)).is_none());
        assert!(online_refusal(&provider("pending", true))
            .unwrap()
            .contains("pending"));
        assert!(online_refusal(&provider("verified", false))
            .unwrap()
            .contains("deactivated"));
    }

    #[test]
    fn settings_are_read_from_numbers_or_strings() {
        assert_eq!(setting_as_f64(&serde_json::json!(20)), Some(20.0));
        assert_eq!(setting_as_f64(&serde_json::json!("20")), Some(20.0));
        assert_eq!(setting_as_f64(&serde_json::json!({})), None);
    }
}
