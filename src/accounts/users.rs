//! User rows: registration, lookup for login, and the profile the API shows.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Role, USER_MODEL_TYPE};
use crate::error::{unique_violation, ApiError, Context as _, FieldError};

/// What `GET /v1/me` and the auth answers show of a user.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct UserProfile {
    #[serde(rename = "id")]
    pub uuid: Uuid,
    pub phone: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    /// Role names: `customer`, `therapist`, `store_owner`, `admin`, `super_admin`.
    pub roles: Vec<String>,
    pub created_at: Option<DateTime<Utc>>,
}

pub struct NewUser<'a> {
    pub phone: &'a str,
    pub password_hash: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub email: Option<&'a str>,
    pub role: Role,
}

/// Inserts the user and grants the role; a taken phone or email is a 409 naming the field.
pub async fn insert(tx: &mut sqlx::PgConnection, user: NewUser<'_>) -> Result<i64, ApiError> {
    let inserted = sqlx::query_scalar(
        "INSERT INTO users (phone, password, first_name, last_name, email) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(user.phone)
    .bind(user.password_hash)
    .bind(user.first_name)
    .bind(user.last_name)
    .bind(user.email)
    .fetch_one(&mut *tx)
    .await;
    let user_id: i64 = match inserted {
        Ok(id) => id,
        Err(error) => {
            return Err(match unique_violation(&error) {
                Some(c) if c.contains("phone") => ApiError::FieldConflict(FieldError::new(
                    "phone",
                    "an account with this phone number already exists",
                )),
                Some(c) if c.contains("email") => ApiError::FieldConflict(FieldError::new(
                    "email",
                    "an account with this email already exists",
                )),
                _ => ApiError::from(error),
            })
        }
    };
    grant_role(&mut *tx, user_id, user.role)
        .await
        .context("granting the registration role")?;
    Ok(user_id)
}

pub async fn grant_role(db: impl PgExecutor<'_>, user_id: i64, role: Role) -> sqlx::Result<bool> {
    sqlx::query(
        "INSERT INTO model_has_roles (role_id, model_type, model_id) \
         SELECT id, $2, $3 FROM roles WHERE name = $1 ON CONFLICT DO NOTHING",
    )
    .bind(role.as_str())
    .bind(USER_MODEL_TYPE)
    .bind(user_id)
    .execute(db)
    .await
    .map(|r| r.rows_affected() > 0)
}

/// The id and password hash of the active account with this phone.
pub async fn credentials(
    pool: &PgPool,
    phone: &str,
) -> sqlx::Result<Option<(i64, Option<String>)>> {
    sqlx::query_as(
        "SELECT id, password FROM users WHERE phone = $1 AND deleted_at IS NULL AND is_active IS NOT FALSE",
    )
    .bind(phone)
    .fetch_optional(pool)
    .await
}

pub async fn profile(db: impl PgExecutor<'_>, user_id: i64) -> sqlx::Result<UserProfile> {
    sqlx::query_as(
        "SELECT u.uuid, u.phone, u.first_name, u.last_name, u.email, u.created_at, \
                COALESCE(array_agg(r.name ORDER BY r.id) FILTER (WHERE r.name IS NOT NULL), '{}') AS roles \
         FROM users u \
         LEFT JOIN model_has_roles mr ON mr.model_id = u.id AND mr.model_type = $2 \
         LEFT JOIN roles r ON r.id = mr.role_id \
         WHERE u.id = $1 GROUP BY u.id",
    )
    .bind(user_id)
    .bind(USER_MODEL_TYPE)
    .fetch_one(db)
    .await
}

/// Internal id of a user by public id.
pub async fn id_by_uuid(db: impl PgExecutor<'_>, uuid: Uuid) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT id FROM users WHERE uuid = $1 AND deleted_at IS NULL")
        .bind(uuid)
        .fetch_optional(db)
        .await
}
