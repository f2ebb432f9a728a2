//! Typed app_settings that more than one layer reads (each read when needed, so operators
//! change them without a restart).

use serde_json::Value;
use sqlx::PgExecutor;

/// `max_pending_bookings` when the setting is missing or malformed.
pub const DEFAULT_MAX_PENDING_BOOKINGS: u32 = 2;

/// app_settings `max_pending_bookings`: bookings one customer may have waiting for a therapist.
pub async fn max_pending_bookings(db: impl PgExecutor<'_>) -> sqlx::Result<u32> {
    let value: Option<Value> =
        sqlx::query_scalar("SELECT value FROM app_settings WHERE key = 'max_pending_bookings'")
            .fetch_optional(db)
            .await?;
    Ok(value
        .as_ref()
        .and_then(|v| match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_MAX_PENDING_BOOKINGS))
}
