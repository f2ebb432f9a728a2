//! Operator settings from `app_settings` that the money, review, chat and reminder rules read,
//! parsed here into typed values; anything missing or malformed takes its documented default.

use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::PgExecutor;

/// `review_window_days`: days after completion during which either party may review.
pub const DEFAULT_REVIEW_WINDOW_DAYS: i64 = 14;
/// `tip_limits.max_amount`: the largest single tip, in PHP.
pub const DEFAULT_TIP_MAX: i64 = 10_000;
/// `messaging`: the longest message (characters), messages per sender per minute, and how long
/// the chat stays open after completion.
pub const DEFAULT_MESSAGE_MAX_LENGTH: usize = 1_000;
pub const DEFAULT_MESSAGES_PER_MINUTE: i64 = 20;
pub const DEFAULT_CHAT_OPEN_AFTER_COMPLETION_MIN: i64 = 60;

/// One setting's JSON value, if the row exists.
pub async fn read(db: impl PgExecutor<'_>, key: &str) -> sqlx::Result<Option<Value>> {
    sqlx::query_scalar("SELECT value FROM app_settings WHERE key = $1")
        .bind(key)
        .fetch_optional(db)
        .await
}

/// A number stored as a JSON number or a numeric string.
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|v| v.is_finite())
}

fn field(value: &Option<Value>, name: &str) -> Option<f64> {
    value.as_ref()?.get(name).and_then(number)
}

/// `max_pending_bookings` when the setting is missing or malformed.
pub const DEFAULT_MAX_PENDING_BOOKINGS: u32 = 2;

/// `max_pending_bookings`: bookings one customer may have waiting for a therapist, from its
/// value (already read).
pub fn max_pending_bookings_of(value: Option<&Value>) -> u32 {
    value
        .and_then(|v| match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_MAX_PENDING_BOOKINGS)
}

pub async fn review_window_days(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    Ok(read(db, "review_window_days")
        .await?
        .as_ref()
        .and_then(number)
        .filter(|d| *d >= 0.0)
        // Ten years at most: a larger number would overflow the date arithmetic it feeds.
        .map_or(DEFAULT_REVIEW_WINDOW_DAYS, |d| d.min(3_650.0) as i64))
}

pub async fn tip_max(db: impl PgExecutor<'_>) -> sqlx::Result<Decimal> {
    let value = read(db, "tip_limits").await?;
    Ok(field(&value, "max_amount")
        .filter(|m| *m > 0.0)
        .and_then(Decimal::from_f64_retain)
        .map_or(Decimal::from(DEFAULT_TIP_MAX), |d| d.round_dp(2)))
}

/// The chat's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Messaging {
    pub max_length: usize,
    pub per_minute: i64,
    pub open_after_completion_minutes: i64,
}

pub async fn messaging(db: impl PgExecutor<'_>) -> sqlx::Result<Messaging> {
    let value = read(db, "messaging").await?;
    Ok(Messaging {
        max_length: field(&value, "max_length")
            .filter(|v| *v >= 1.0)
            .map_or(DEFAULT_MESSAGE_MAX_LENGTH, |v| v as usize),
        per_minute: field(&value, "per_minute")
            .filter(|v| *v >= 1.0)
            .map_or(DEFAULT_MESSAGES_PER_MINUTE, |v| v as i64),
        open_after_completion_minutes: field(&value, "open_after_completion_minutes")
            .filter(|v| *v >= 0.0)
            // A year at most, for the same reason.
            .map_or(DEFAULT_CHAT_OPEN_AFTER_COMPLETION_MIN, |v| {
                v.min(525_600.0) as i64
            }),
    })
}
