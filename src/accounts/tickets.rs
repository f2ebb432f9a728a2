//! Single-use WebSocket tickets: a browser cannot put a bearer token in a WebSocket's headers,
//! and a token in a URL ends up in history and proxy logs, so it trades the token for a ticket
//! that works once, within [`TICKET_TTL`], on any node (they live in PostgreSQL).

use base64::Engine as _;
use rand::RngCore;
use sqlx::PgPool;

use super::tokens::{digest, TokenOwner};
use super::USER_MODEL_TYPE;

/// How long a ticket can be used.
pub const TICKET_TTL: std::time::Duration = std::time::Duration::from_secs(30);
/// Prefix that tells a ticket from a token (and makes a leaked one easy to recognise).
pub const TICKET_PREFIX: &str = "hwt_";

/// A fresh ticket for the token `token_id`; only its digest is stored.
pub async fn issue(pool: &PgPool, token_id: i64) -> sqlx::Result<String> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = format!(
        "{TICKET_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    // Expired tickets are swept here rather than by a timer: issuing is rare and the index on
    // expires_at makes this a small range delete.
    sqlx::query("DELETE FROM ws_tickets WHERE expires_at < now() - interval '1 minute'")
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO ws_tickets (digest, token_id, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))",
    )
    .bind(digest(&secret))
    .bind(token_id)
    .bind(TICKET_TTL.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(secret)
}

/// Uses a ticket up: the owner of the token behind it, or `None` when it is unknown, used,
/// expired, or its token or user no longer valid.
pub async fn redeem(pool: &PgPool, secret: &str) -> sqlx::Result<Option<TokenOwner>> {
    if !secret.starts_with(TICKET_PREFIX) || secret.len() != TICKET_PREFIX.len() + 43 {
        return Ok(None);
    }
    type Row = (
        i64,
        i64,
        uuid::Uuid,
        Vec<String>,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<chrono::DateTime<chrono::Utc>>,
    );
    let row: Option<Row> = sqlx::query_as(include_str!("../../sql/redeem_ws_ticket.sql"))
        .bind(digest(secret))
        .bind(USER_MODEL_TYPE)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(
        |(token_id, user_id, user_uuid, roles, _, expires_at)| TokenOwner {
            token_id,
            user_id,
            user_uuid,
            roles,
            expires_at,
        },
    ))
}
