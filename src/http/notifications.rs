//! Notifications and push devices over HTTP.

use actix_web::{get, post, web, HttpResponse};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Caller;
use super::extract::{Json, Query};
use crate::error::{ApiError, Context as _, Problem};
use crate::notifications::{self, DeviceView, NotificationView};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NotificationQuery {
    /// Only unread ones.
    pub unread: Option<bool>,
    /// Default 50, at most 200.
    pub limit: Option<i64>,
}

/// The caller's notifications, newest first.
#[utoipa::path(
    tag = "notifications",
    security(("bearer" = [])),
    params(NotificationQuery),
    responses(
        (status = 200, description = "Notifications", body = [NotificationView]),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/notifications")]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    Query(query): Query<NotificationQuery>,
) -> Result<web::Json<Vec<NotificationView>>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    let mut errors = Vec::new();
    crate::domain::validate::check_range(&mut errors, "limit", limit, 1, 200);
    ApiError::check(errors)?;
    notifications::list(
        &state.db,
        caller.user_id(),
        query.unread.unwrap_or(false),
        limit,
    )
    .await
    .context("listing notifications")
    .map(web::Json)
}

/// Marks one of the caller's notifications read.
#[utoipa::path(
    tag = "notifications",
    security(("bearer" = [])),
    params(("notification_id" = Uuid, Path, description = "The notification id")),
    responses(
        (status = 200, description = "The notification", body = NotificationView),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such notification of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/notifications/{notification_id}/read")]
pub async fn mark_read(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<NotificationView>, ApiError> {
    notifications::mark_read(&state.db, caller.user_id(), path.into_inner())
        .await
        .context("marking the notification read")?
        .map(web::Json)
        .ok_or_else(|| ApiError::not_found("notification"))
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceType {
    Android,
    Ios,
    Web,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceRequest {
    pub device_type: DeviceType,
    /// The FCM registration token.
    pub token: String,
    pub device_name: Option<String>,
    pub app_version: Option<String>,
    pub device_os_version: Option<String>,
}

/// Registers a device for push notifications (again: re-activates it).
#[utoipa::path(
    tag = "notifications",
    security(("bearer" = [])),
    request_body = DeviceRequest,
    responses(
        (status = 201, description = "The device", body = DeviceView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/me/devices")]
pub async fn register_device(
    state: web::Data<AppState>,
    caller: Caller,
    Json(body): Json<DeviceRequest>,
) -> Result<HttpResponse, ApiError> {
    let mut errors = Vec::new();
    // FCM and APNs tokens are a few hundred characters at most.
    crate::domain::validate::check_text(&mut errors, "token", &body.token, 1, 1024);
    if body.token.contains(char::is_whitespace) {
        errors.push(crate::error::FieldError::new(
            "token",
            "must not contain spaces",
        ));
    }
    for (field, value, max) in [
        ("device_name", &body.device_name, 255),
        ("app_version", &body.app_version, 50),
        ("device_os_version", &body.device_os_version, 50),
    ] {
        if let Some(value) = value {
            crate::domain::validate::check_text(&mut errors, field, value, 0, max);
        }
    }
    ApiError::check(errors)?;
    let device_type = match body.device_type {
        DeviceType::Android => "android",
        DeviceType::Ios => "ios",
        DeviceType::Web => "web",
    };
    let device = notifications::register_device(
        &state.db,
        caller.user_id(),
        caller.0.token_id,
        &notifications::NewDevice {
            device_type,
            token: body.token.trim(),
            device_name: crate::domain::validate::optional_text(&body.device_name),
            app_version: crate::domain::validate::optional_text(&body.app_version),
            os_version: crate::domain::validate::optional_text(&body.device_os_version),
        },
    )
    .await
    .context("registering the device")?;
    Ok(HttpResponse::Created().json(device))
}
