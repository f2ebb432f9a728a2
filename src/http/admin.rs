//! Admin: provider verification and role changes, each written to audit_logs.

use actix_web::{get, post, put, web, HttpRequest};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Caller;
use super::extract::{Json, Query};
use crate::accounts::users::{self, UserProfile};
use crate::accounts::{Role, USER_MODEL_TYPE};
use crate::audit::{self, AuditContext};
use crate::domain::validate::{check_text, optional_text};
use crate::error::{ApiError, Context as _, FieldError, Problem};
use crate::realtime::guard::{CredentialEvent, Ending};
use crate::state::AppState;

/// Most providers one page lists.
pub const MAX_PAGE: i64 = 200;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum VerificationStatus {
    Pending,
    UnderReview,
    Verified,
    Rejected,
}

impl VerificationStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::UnderReview => "under_review",
            Self::Verified => "verified",
            Self::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ProviderListQuery {
    /// Default `pending`.
    pub verification_status: Option<VerificationStatus>,
    /// Default 50, at most 200.
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ProviderSummary {
    pub provider_id: Uuid,
    pub user_id: Uuid,
    pub phone: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub verification_status: String,
    pub rejection_reason: Option<String>,
    pub verified_at: Option<DateTime<Utc>>,
    pub license_number: Option<String>,
    pub license_type: Option<String>,
    pub base_lat: Option<f64>,
    pub base_lng: Option<f64>,
    pub service_radius_km: Option<i32>,
    pub created_at: Option<DateTime<Utc>>,
}

const SUMMARY_SELECT: &str =
    "SELECT p.uuid AS provider_id, u.uuid AS user_id, u.phone, u.first_name, u.last_name, \
        p.verification_status::text AS verification_status, p.rejection_reason, p.verified_at, \
        tp.license_number, tp.license_type, tp.base_location_latitude::float8 AS base_lat, \
        tp.base_location_longitude::float8 AS base_lng, tp.service_radius_km, p.created_at \
     FROM providers p JOIN users u ON u.id = p.user_id \
     LEFT JOIN therapist_profiles tp ON tp.provider_id = p.id";

/// Providers by verification status (default: pending), oldest first.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(ProviderListQuery),
    responses(
        (status = 200, description = "Providers", body = [ProviderSummary]),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/admin/providers")]
pub async fn list_providers(
    state: web::Data<AppState>,
    caller: Caller,
    Query(query): Query<ProviderListQuery>,
) -> Result<web::Json<Vec<ProviderSummary>>, ApiError> {
    caller.require_admin()?;
    let limit = query.limit.unwrap_or(50);
    let offset = query.offset.unwrap_or(0);
    let mut errors = Vec::new();
    crate::domain::validate::check_range(&mut errors, "limit", limit, 1, MAX_PAGE);
    crate::domain::validate::check_range(&mut errors, "offset", offset, 0, 1_000_000);
    ApiError::check(errors)?;
    let status = query
        .verification_status
        .unwrap_or(VerificationStatus::Pending);
    sqlx::query_as(&format!(
        "{SUMMARY_SELECT} WHERE p.verification_status = $1::verification_status AND p.deleted_at IS NULL \
         ORDER BY p.created_at, p.id LIMIT $2 OFFSET $3"
    ))
    .bind(status.as_str())
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await
    .context("listing providers")
    .map(web::Json)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// `verified` or `rejected`.
    pub status: VerificationStatus,
    /// Required when rejecting; shown to the therapist.
    pub reason: Option<String>,
}

/// Verify or reject a provider. The decision is written to audit_logs with the old and new
/// values, the admin, their address and user agent. A rejected therapist goes offline.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("provider_id" = Uuid, Path, description = "The provider id")),
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "The provider after the decision", body = ProviderSummary),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such provider", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/admin/providers/{provider_id}/verify")]
pub async fn verify_provider(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Json(body): Json<VerifyRequest>,
) -> Result<web::Json<ProviderSummary>, ApiError> {
    caller.require_admin()?;
    let reason = optional_text(&body.reason);
    let mut errors = Vec::new();
    match body.status {
        VerificationStatus::Verified | VerificationStatus::Rejected => {}
        _ => errors.push(FieldError::new("status", "must be verified or rejected")),
    }
    if body.status == VerificationStatus::Rejected && reason.is_none() {
        errors.push(FieldError::new("reason", "is required when rejecting"));
    }
    if let Some(reason) = reason {
        check_text(&mut errors, "reason", reason, 1, 1000);
    }
    ApiError::check(errors)?;

    let mut tx = state.db.begin().await.context("starting verification")?;
    let old: Option<(i64, String, Option<String>, bool)> = sqlx::query_as(
        "SELECT id, verification_status::text, rejection_reason, COALESCE(is_available, false) \
         FROM providers WHERE uuid = $1 AND deleted_at IS NULL FOR UPDATE",
    )
    .bind(path.into_inner())
    .fetch_optional(&mut *tx)
    .await
    .context("finding the provider")?;
    let (provider_id, old_status, old_reason, old_online) =
        old.ok_or_else(|| ApiError::not_found("provider"))?;
    let verified = body.status == VerificationStatus::Verified;
    let new_reason = if verified { None } else { reason };
    let new_online = verified && old_online;
    sqlx::query(
        "UPDATE providers SET verification_status = $2::verification_status, rejection_reason = $3, \
             verified_at = CASE WHEN $4 THEN now() ELSE NULL END, verified_by = $5, is_available = $6 \
         WHERE id = $1",
    )
    .bind(provider_id)
    .bind(body.status.as_str())
    .bind(new_reason)
    .bind(verified)
    .bind(caller.user_id())
    .bind(new_online)
    .execute(&mut *tx)
    .await
    .context("recording the decision")?;
    audit::record(
        &mut *tx,
        &AuditContext::from_request(&req, caller.user_id()),
        if verified { "provider.verified" } else { "provider.rejected" },
        "provider",
        provider_id,
        json!({"verification_status": old_status, "rejection_reason": old_reason, "is_available": old_online}),
        json!({"verification_status": body.status.as_str(), "rejection_reason": new_reason, "is_available": new_online}),
    )
    .await
    .context("auditing the decision")?;
    let summary: ProviderSummary = sqlx::query_as(&format!("{SUMMARY_SELECT} WHERE p.id = $1"))
        .bind(provider_id)
        .fetch_one(&mut *tx)
        .await
        .context("loading the provider")?;
    crate::webhooks::emit(
        &mut tx,
        if verified {
            "provider.verified"
        } else {
            "provider.rejected"
        },
        json!({"provider_id": summary.provider_id, "verification_status": body.status.as_str(),
               "rejection_reason": new_reason}),
    )
    .await
    .context("queueing the provider webhook")?;
    tx.commit().await.context("committing the decision")?;
    state.provider_changed(provider_id).await;
    if !verified {
        // A rejected therapist gets no more offers and their socket closes, on every node.
        let user_id: i64 = sqlx::query_scalar("SELECT user_id FROM providers WHERE id = $1")
            .bind(provider_id)
            .fetch_one(&state.db)
            .await
            .context("finding the provider's user")?;
        state
            .credentials_ended(CredentialEvent::ProviderEnded {
                user_id,
                reason: Ending::Suspended,
            })
            .await;
    }
    Ok(web::Json(summary))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActiveRequest {
    /// `false` suspends (a provider) or deactivates (an account); `true` restores it.
    pub active: bool,
    /// Why; recorded in audit_logs.
    pub reason: Option<String>,
}

/// Suspend or restore a provider. A suspended therapist goes offline, gets no offers, and their
/// open sockets close (4001 `suspended`) on every node. Written to audit_logs.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("provider_id" = Uuid, Path, description = "The provider id")),
    request_body = ActiveRequest,
    responses(
        (status = 200, description = "The provider after the change", body = ProviderSummary),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such provider", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/v1/admin/providers/{provider_id}/active")]
pub async fn put_provider_active(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Json(body): Json<ActiveRequest>,
) -> Result<web::Json<ProviderSummary>, ApiError> {
    caller.require_admin()?;
    let reason = checked_reason(&body.reason)?;
    let mut tx = state.db.begin().await.context("starting a suspension")?;
    let old: Option<(i64, i64, bool, bool)> = sqlx::query_as(
        "SELECT id, user_id, COALESCE(is_active, true), COALESCE(is_available, false) \
         FROM providers WHERE uuid = $1 AND deleted_at IS NULL FOR UPDATE",
    )
    .bind(path.into_inner())
    .fetch_optional(&mut *tx)
    .await
    .context("finding the provider")?;
    let (provider_id, user_id, old_active, old_online) =
        old.ok_or_else(|| ApiError::not_found("provider"))?;
    let new_online = body.active && old_online;
    sqlx::query("UPDATE providers SET is_active = $2, is_available = $3 WHERE id = $1")
        .bind(provider_id)
        .bind(body.active)
        .bind(new_online)
        .execute(&mut *tx)
        .await
        .context("changing the provider's state")?;
    audit::record(
        &mut *tx,
        &AuditContext::from_request(&req, caller.user_id()),
        if body.active {
            "provider.restored"
        } else {
            "provider.suspended"
        },
        "provider",
        provider_id,
        json!({"is_active": old_active, "is_available": old_online}),
        json!({"is_active": body.active, "is_available": new_online, "reason": reason}),
    )
    .await
    .context("auditing the change")?;
    let summary: ProviderSummary = sqlx::query_as(&format!("{SUMMARY_SELECT} WHERE p.id = $1"))
        .bind(provider_id)
        .fetch_one(&mut *tx)
        .await
        .context("loading the provider")?;
    tx.commit().await.context("committing the change")?;
    state.provider_changed(provider_id).await;
    if !body.active {
        state
            .credentials_ended(CredentialEvent::ProviderEnded {
                user_id,
                reason: Ending::Suspended,
            })
            .await;
    }
    Ok(web::Json(summary))
}

fn checked_reason(reason: &Option<String>) -> Result<Option<&str>, ApiError> {
    let reason = optional_text(reason);
    if let Some(reason) = reason {
        let mut errors = Vec::new();
        check_text(&mut errors, "reason", reason, 1, 1000);
        ApiError::check(errors)?;
    }
    Ok(reason)
}

/// The target user of an admin action on accounts; nobody acts on their own account.
async fn other_user(
    tx: &mut sqlx::PgConnection,
    caller: &Caller,
    user_uuid: Uuid,
) -> Result<i64, ApiError> {
    let user_id = users::id_by_uuid(&mut *tx, user_uuid)
        .await
        .context("finding the user")?
        .ok_or_else(|| ApiError::not_found("user"))?;
    if user_id == caller.user_id() {
        return Err(ApiError::Forbidden(
            "you cannot do this to your own account".into(),
        ));
    }
    Ok(user_id)
}

/// Deactivate or restore an account. A deactivated account cannot log in, its tokens are
/// revoked, and its open sockets close (4001 `deactivated`) on every node. Only a super admin
/// deactivates an admin. Written to audit_logs.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("user_id" = Uuid, Path, description = "The user id")),
    request_body = ActiveRequest,
    responses(
        (status = 200, description = "The user after the change", body = UserProfile),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed to make this change", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/v1/admin/users/{user_id}/active")]
pub async fn put_user_active(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Json(body): Json<ActiveRequest>,
) -> Result<web::Json<UserProfile>, ApiError> {
    caller.require_admin()?;
    let reason = checked_reason(&body.reason)?;
    let mut tx = state.db.begin().await.context("starting a deactivation")?;
    let user_id = other_user(&mut tx, &caller, path.into_inner()).await?;
    let profile = users::profile(&mut *tx, user_id)
        .await
        .context("loading the user")?;
    require_rank_over(&caller, &profile, "deactivates or restores")?;
    let old_active: bool =
        sqlx::query_scalar("SELECT COALESCE(is_active, true) FROM users WHERE id = $1 FOR UPDATE")
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await
            .context("locking the user")?;
    sqlx::query("UPDATE users SET is_active = $2, updated_at = now() WHERE id = $1")
        .bind(user_id)
        .bind(body.active)
        .execute(&mut *tx)
        .await
        .context("changing the account's state")?;
    if !body.active {
        crate::accounts::tokens::revoke_all(&mut *tx, user_id)
            .await
            .context("revoking the account's tokens")?;
    }
    audit::record(
        &mut *tx,
        &AuditContext::from_request(&req, caller.user_id()),
        if body.active {
            "user.restored"
        } else {
            "user.deactivated"
        },
        "user",
        user_id,
        json!({"is_active": old_active}),
        json!({"is_active": body.active, "reason": reason}),
    )
    .await
    .context("auditing the change")?;
    tx.commit().await.context("committing the change")?;
    if body.active {
        state.user_changed(user_id).await;
    } else {
        state
            .credentials_ended(CredentialEvent::UserEnded {
                user_id,
                reason: Ending::Deactivated,
            })
            .await;
    }
    Ok(web::Json(profile))
}

/// An admin acts on an admin (or a super admin) only as a super admin: an ordinary admin could
/// otherwise lock their superiors out.
fn require_rank_over(caller: &Caller, target: &UserProfile, action: &str) -> Result<(), ApiError> {
    let privileged = target
        .roles
        .iter()
        .any(|r| r == "admin" || r == "super_admin");
    if privileged && !caller.has(Role::SuperAdmin) {
        return Err(ApiError::Forbidden(format!(
            "only a super admin {action} an admin"
        )));
    }
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    /// Tokens revoked.
    pub revoked: u64,
}

/// Revoke every token of a user (a stolen phone, a leaked token): every session ends and open
/// sockets close (4001 `revoked`) on every node. Written to audit_logs.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("user_id" = Uuid, Path, description = "The user id")),
    responses(
        (status = 200, description = "Tokens revoked", body = Revoked),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed to make this change", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/admin/users/{user_id}/revoke-tokens")]
pub async fn revoke_tokens(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<Revoked>, ApiError> {
    caller.require_admin()?;
    let mut tx = state.db.begin().await.context("starting a revocation")?;
    let user_id = other_user(&mut tx, &caller, path.into_inner()).await?;
    let profile = users::profile(&mut *tx, user_id)
        .await
        .context("loading the user")?;
    require_rank_over(&caller, &profile, "revokes the tokens of")?;
    let revoked = crate::accounts::tokens::revoke_all(&mut *tx, user_id)
        .await
        .context("revoking the tokens")?;
    audit::record(
        &mut *tx,
        &AuditContext::from_request(&req, caller.user_id()),
        "user.tokens_revoked",
        "user",
        user_id,
        json!({}),
        json!({ "revoked": revoked }),
    )
    .await
    .context("auditing the revocation")?;
    tx.commit().await.context("committing the revocation")?;
    state
        .credentials_ended(CredentialEvent::UserEnded {
            user_id,
            reason: Ending::Revoked,
        })
        .await;
    Ok(web::Json(Revoked { revoked }))
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RoleName {
    Customer,
    Therapist,
    StoreOwner,
    Admin,
    SuperAdmin,
}

impl RoleName {
    fn role(self) -> Role {
        match self {
            Self::Customer => Role::Customer,
            Self::Therapist => Role::Therapist,
            Self::StoreOwner => Role::StoreOwner,
            Self::Admin => Role::Admin,
            Self::SuperAdmin => Role::SuperAdmin,
        }
    }

    fn is_privileged(self) -> bool {
        matches!(self, Self::Admin | Self::SuperAdmin)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolesRequest {
    /// The user's complete set of roles after the change.
    pub roles: Vec<RoleName>,
}

/// Replace a user's roles. Only a super admin grants or removes admin roles; nobody changes
/// their own. Written to audit_logs with the old and new roles.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("user_id" = Uuid, Path, description = "The user id")),
    request_body = RolesRequest,
    responses(
        (status = 200, description = "The user after the change", body = UserProfile),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed to make this change", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/v1/admin/users/{user_id}/roles")]
pub async fn put_roles(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Json(body): Json<RolesRequest>,
) -> Result<web::Json<UserProfile>, ApiError> {
    caller.require_admin()?;
    let mut wanted = body.roles.clone();
    wanted.sort();
    wanted.dedup();
    if wanted.is_empty() {
        return Err(ApiError::invalid("roles", "must name at least one role"));
    }
    let mut tx = state.db.begin().await.context("starting role change")?;
    let user_id = users::id_by_uuid(&mut *tx, path.into_inner())
        .await
        .context("finding the user")?
        .ok_or_else(|| ApiError::not_found("user"))?;
    if user_id == caller.user_id() {
        return Err(ApiError::Forbidden(
            "you cannot change your own roles".into(),
        ));
    }
    let current: Vec<String> = users::profile(&mut *tx, user_id)
        .await
        .context("loading the user's roles")?
        .roles;
    let wanted_names: Vec<&str> = wanted.iter().map(|r| r.role().as_str()).collect();
    let touches_privileged = wanted.iter().any(|r| r.is_privileged())
        || current.iter().any(|r| r == "admin" || r == "super_admin");
    let privileged_changed = touches_privileged
        && ["admin", "super_admin"]
            .iter()
            .any(|p| current.iter().any(|c| c == p) != wanted_names.contains(p));
    if privileged_changed && !caller.has(Role::SuperAdmin) {
        return Err(ApiError::Forbidden(
            "only a super admin grants or removes admin roles".into(),
        ));
    }
    sqlx::query("DELETE FROM model_has_roles WHERE model_id = $1 AND model_type = $2")
        .bind(user_id)
        .bind(USER_MODEL_TYPE)
        .execute(&mut *tx)
        .await
        .context("clearing roles")?;
    for role in &wanted {
        users::grant_role(&mut *tx, user_id, role.role())
            .await
            .context("granting a role")?;
    }
    audit::record(
        &mut *tx,
        &AuditContext::from_request(&req, caller.user_id()),
        "user.roles_changed",
        "user",
        user_id,
        json!({ "roles": current }),
        json!({ "roles": wanted_names }),
    )
    .await
    .context("auditing the role change")?;
    let profile = users::profile(&mut *tx, user_id)
        .await
        .context("loading the user")?;
    tx.commit().await.context("committing the role change")?;
    // Cached tokens carry the old roles: a removed role must stop working at once, on every
    // node, and sockets that needed it close.
    state
        .credentials_ended(CredentialEvent::RolesChanged {
            user_id,
            roles: profile.roles.clone(),
        })
        .await;
    Ok(web::Json(profile))
}
