//! Users, their roles and credentials.

pub mod password;
pub mod phone;
pub mod tickets;
pub mod tokens;
pub mod users;

use anyhow::Context as _;
use sqlx::PgPool;

/// `model_has_roles.model_type` for users (the seed follows Laravel/Spatie, which stores the
/// owning model's class name there).
pub const USER_MODEL_TYPE: &str = "App\\Models\\User";

/// The roles seeded by the schema (section 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Customer,
    Therapist,
    StoreOwner,
    Admin,
    SuperAdmin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Therapist => "therapist",
            Role::StoreOwner => "store_owner",
            Role::Admin => "admin",
            Role::SuperAdmin => "super_admin",
        }
    }
}

/// What `hilot admin create` did.
#[derive(Debug, PartialEq, Eq)]
pub enum AdminOutcome {
    Created,
    /// The phone already had an account; it now also has the admin role and the new password.
    Promoted,
}

/// Creates an admin (or promotes an existing account), recording the role change in audit_logs.
pub async fn create_admin(
    pool: &PgPool,
    raw_phone: &str,
    password: &str,
) -> anyhow::Result<(String, AdminOutcome)> {
    let phone =
        phone::normalize_phone(raw_phone).map_err(|why| anyhow::anyhow!("--phone {why}"))?;
    let personal = password::PersonalData {
        phone: Some(&phone),
        names: &[],
    };
    password::check_password_policy(password, personal)
        .map_err(|why| anyhow::anyhow!("--password {why}"))?;
    let hash = password::hash_password(password)?;

    let mut tx = pool
        .begin()
        .await
        .context("starting the admin transaction")?;
    let existing: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE phone = $1")
        .bind(&phone)
        .fetch_optional(&mut *tx)
        .await
        .context("looking up the phone")?;
    let (user_id, outcome) = match existing {
        Some(id) => {
            sqlx::query("UPDATE users SET password = $2, updated_at = now() WHERE id = $1")
                .bind(id)
                .bind(&hash)
                .execute(&mut *tx)
                .await
                .context("updating the admin's password")?;
            (id, AdminOutcome::Promoted)
        }
        None => {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO users (phone, password, first_name, last_name, is_verified, phone_verified_at) \
                 VALUES ($1, $2, 'Admin', '', TRUE, now()) RETURNING id",
            )
            .bind(&phone)
            .bind(&hash)
            .fetch_one(&mut *tx)
            .await
            .context("creating the admin user")?;
            (id, AdminOutcome::Created)
        }
    };
    let old_roles = users::profile(&mut *tx, user_id)
        .await
        .context("loading the user's roles")?
        .roles;
    let granted = users::grant_role(&mut *tx, user_id, Role::Admin)
        .await
        .context("granting the admin role")?;
    if granted {
        let new_roles = users::profile(&mut *tx, user_id)
            .await
            .context("loading the user's new roles")?
            .roles;
        let context = crate::audit::AuditContext {
            actor_user_id: None,
            ip: None,
            user_agent: Some("hilot admin create".into()),
        };
        crate::audit::record(
            &mut *tx,
            &context,
            "user.roles_changed",
            "user",
            user_id,
            serde_json::json!({ "roles": old_roles }),
            serde_json::json!({ "roles": new_roles }),
        )
        .await
        .context("auditing the role change")?;
    }
    tx.commit().await.context("committing the admin")?;
    Ok((phone, outcome))
}
