//! `audit_logs`: who changed what, from where, with the old and new values.

use std::net::IpAddr;

use serde_json::Value;
use sqlx::types::ipnetwork::IpNetwork;
use sqlx::PgExecutor;

/// The actor and the client a change came from.
#[derive(Debug, Clone)]
pub struct AuditContext {
    pub actor_user_id: Option<i64>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl AuditContext {
    /// A change that came over a socket, where only the user is known.
    pub fn user(actor_user_id: i64) -> Self {
        Self {
            actor_user_id: Some(actor_user_id),
            ip: None,
            user_agent: None,
        }
    }

    pub fn from_request(req: &actix_web::HttpRequest, actor_user_id: i64) -> Self {
        Self {
            actor_user_id: Some(actor_user_id),
            ip: req.peer_addr().map(|a| a.ip()),
            user_agent: req
                .headers()
                .get(actix_web::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(500).collect()),
        }
    }
}

pub async fn record(
    db: impl PgExecutor<'_>,
    context: &AuditContext,
    action: &str,
    auditable_type: &str,
    auditable_id: i64,
    old_values: Value,
    new_values: Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO audit_logs (user_id, action, auditable_type, auditable_id, old_values, new_values, ip_address, user_agent) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(context.actor_user_id)
    .bind(action)
    .bind(auditable_type)
    .bind(auditable_id)
    .bind(old_values)
    .bind(new_values)
    .bind(context.ip.map(IpNetwork::from))
    .bind(&context.user_agent)
    .execute(db)
    .await
    .map(|_| ())
}
