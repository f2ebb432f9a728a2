//! Notifications: the `notifications` rows users read in the app, and their push delivery to
//! every active device through the outbox (FCM HTTP v1, see [`push`]).
//!
//! [`notify`] runs inside the transaction of whatever caused it, so a notification exists
//! exactly when its cause committed, and its push goes out at least once after that.

pub mod push;
pub mod reminders;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

/// Notification types (`notifications.type`).
pub mod kind {
    pub const ACCEPTED: &str = "booking.accepted";
    pub const EN_ROUTE: &str = "booking.en_route";
    pub const ARRIVED: &str = "booking.arrived";
    pub const IN_PROGRESS: &str = "booking.in_progress";
    pub const COMPLETED: &str = "booking.completed";
    pub const CANCELLED: &str = "booking.cancelled";
    pub const NO_SHOW: &str = "booking.no_show";
    pub const REMINDER: &str = "booking.reminder";
    pub const MESSAGE: &str = "message";
    pub const PAYOUT: &str = "payout";
    pub const PAYMENT: &str = "payment";
}

/// A notification to write.
#[derive(Debug, Clone)]
pub struct Notice {
    pub user_id: i64,
    pub kind: &'static str,
    pub title: String,
    pub body: String,
    /// What the app opens when tapped (`open_booking`, `open_chat`, `open_wallet`).
    pub action_type: Option<&'static str>,
    pub action_data: Value,
    pub booking_id: Option<i64>,
}

/// Writes the notification and queues a push to each of the user's active devices. Answers
/// `None` when it already existed (one reminder per booking).
pub async fn notify(tx: &mut PgConnection, notice: Notice) -> sqlx::Result<Option<Uuid>> {
    // One statement: the row, and a push per active device.
    sqlx::query_scalar(
        "WITH n AS ( \
             INSERT INTO notifications (user_id, type, title, body, action_type, action_data, booking_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING uuid \
         ), pushed AS ( \
             INSERT INTO outbox (channel, target, event_type, payload) \
             SELECT 'push', 'push:' || d.id, $2, jsonb_build_object( \
                 'device_token_id', d.id, 'token', d.token, 'device_type', d.device_type::text, \
                 'notification_id', n.uuid, 'type', $2::text, 'title', $3::text, 'body', $4::text, \
                 'action_type', $5::text, 'action_data', $6::jsonb) \
             FROM n JOIN device_tokens d ON d.user_id = $1 AND d.is_active IS NOT FALSE \
         ) SELECT uuid FROM n",
    )
    .bind(notice.user_id)
    .bind(notice.kind)
    .bind(&notice.title)
    .bind(&notice.body)
    .bind(notice.action_type)
    .bind(&notice.action_data)
    .bind(notice.booking_id)
    .fetch_optional(tx)
    .await
}

/// A notification as its user sees it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct NotificationView {
    pub id: Uuid,
    /// `booking.accepted`, `booking.en_route`, `booking.arrived`, `booking.completed`,
    /// `booking.cancelled`, `booking.reminder`, `message`, `payout`, ...
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub kind: String,
    pub title: String,
    pub body: String,
    pub action_type: Option<String>,
    #[schema(value_type = Object)]
    pub action_data: Option<Value>,
    pub is_read: bool,
    pub read_at: Option<DateTime<Utc>>,
    /// Channels it went out on so far (`push`).
    #[schema(value_type = Vec<String>)]
    pub sent_via: Option<Value>,
    pub created_at: Option<DateTime<Utc>>,
}

const VIEW_COLUMNS: &str = "uuid AS id, type, title, body, action_type, action_data, \
     COALESCE(is_read, false) AS is_read, read_at, sent_via, created_at";

/// The user's notifications, newest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    user_id: i64,
    unread_only: bool,
    limit: i64,
) -> sqlx::Result<Vec<NotificationView>> {
    sqlx::query_as(&format!(
        "SELECT {VIEW_COLUMNS} FROM notifications WHERE user_id = $1 AND (NOT $2 OR is_read IS NOT TRUE) \
         ORDER BY created_at DESC, id DESC LIMIT $3"
    ))
    .bind(user_id)
    .bind(unread_only)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Marks one of the user's notifications read (`None`: not theirs, or no such notification).
pub async fn mark_read(
    db: impl PgExecutor<'_>,
    user_id: i64,
    id: Uuid,
) -> sqlx::Result<Option<NotificationView>> {
    sqlx::query_as(&format!(
        "UPDATE notifications SET is_read = true, read_at = COALESCE(read_at, now()) \
         WHERE uuid = $1 AND user_id = $2 RETURNING {VIEW_COLUMNS}"
    ))
    .bind(id)
    .bind(user_id)
    .fetch_optional(db)
    .await
}

/// A device that receives push notifications.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct DeviceView {
    pub device_type: String,
    pub device_name: Option<String>,
    pub app_version: Option<String>,
    pub is_active: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Active devices a user may have: every notification is pushed to each, so without a cap one
/// account could make each notification a thousand outbound pushes. Registering one more
/// retires the least recently registered.
pub const MAX_ACTIVE_DEVICES: i64 = 10;

/// A device as an app registers it.
pub struct NewDevice<'a> {
    /// `android`, `ios` or `web`.
    pub device_type: &'a str,
    pub token: &'a str,
    pub device_name: Option<&'a str>,
    pub app_version: Option<&'a str>,
    pub os_version: Option<&'a str>,
}

/// Registers (or re-activates) a device token for the user. A token names one app install,
/// so it is taken from any other user it was registered to (a phone passed on, or another
/// account signed in on it): their notifications no longer reach this phone. Beyond
/// [`MAX_ACTIVE_DEVICES`], the user's least recently registered devices are retired. The
/// device belongs to the login `access_token_id`: logging out deletes it.
pub async fn register_device(
    db: &sqlx::PgPool,
    user_id: i64,
    access_token_id: i64,
    device: &NewDevice<'_>,
) -> sqlx::Result<DeviceView> {
    let token = device.token;
    let mut tx = db.begin().await?;
    // Two accounts registering one token at once: one after the other.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
        .bind(token)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE device_tokens SET is_active = false \
         WHERE token = $1 AND user_id <> $2 AND is_active IS NOT FALSE",
    )
    .bind(token)
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    let registered: DeviceView = sqlx::query_as(
        "INSERT INTO device_tokens (user_id, device_type, token, device_name, app_version, device_os_version, \
             is_active, last_used_at, access_token_id) \
         VALUES ($1, $2::device_type, $3, $4, $5, $6, true, clock_timestamp(), $7) \
         ON CONFLICT (user_id, token) DO UPDATE SET device_type = EXCLUDED.device_type, \
             device_name = EXCLUDED.device_name, app_version = EXCLUDED.app_version, \
             device_os_version = EXCLUDED.device_os_version, is_active = true, \
             last_used_at = clock_timestamp(), access_token_id = EXCLUDED.access_token_id \
         RETURNING device_type::text AS device_type, device_name, app_version, \
             COALESCE(is_active, true) AS is_active, created_at, updated_at",
    )
    .bind(user_id)
    .bind(device.device_type)
    .bind(token)
    .bind(device.device_name)
    .bind(device.app_version)
    .bind(device.os_version)
    .bind(access_token_id)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE device_tokens SET is_active = false WHERE id IN ( \
             SELECT id FROM device_tokens WHERE user_id = $1 AND is_active IS NOT FALSE \
             ORDER BY last_used_at DESC NULLS LAST, id DESC OFFSET $2)",
    )
    .bind(user_id)
    .bind(MAX_ACTIVE_DEVICES)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(registered)
}
