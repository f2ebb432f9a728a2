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

/// What presenting a ticket at a socket came to.
#[derive(Debug)]
pub enum Redemption {
    /// Unknown, already used, expired, or its token or user no longer valid.
    Invalid,
    /// Valid, but its owner holds none of the socket's roles: refused, and not used up.
    WrongRole(TokenOwner),
    /// Used up by this call: the socket opens for its owner.
    Redeemed(TokenOwner),
}

/// Uses a ticket up for a socket that users with one of `roles` may open (see [`Redemption`]).
pub async fn redeem(pool: &PgPool, secret: &str, roles: &[&str]) -> sqlx::Result<Redemption> {
    if !secret.starts_with(TICKET_PREFIX) || secret.len() != TICKET_PREFIX.len() + 43 {
        return Ok(Redemption::Invalid);
    }
    type Row = (
        i64,
        i64,
        uuid::Uuid,
        Vec<String>,
        Option<chrono::DateTime<chrono::Utc>>,
        bool,
    );
    let row: Option<Row> = sqlx::query_as(include_str!("../../sql/redeem_ws_ticket.sql"))
        .bind(digest(secret))
        .bind(USER_MODEL_TYPE)
        .bind(roles)
        .fetch_optional(pool)
        .await?;
    let Some((token_id, user_id, user_uuid, owner_roles, expires_at, redeemed)) = row else {
        return Ok(Redemption::Invalid);
    };
    let owner = TokenOwner {
        token_id,
        user_id,
        user_uuid,
        roles: owner_roles,
        expires_at,
    };
    let allowed = owner.roles.iter().any(|r| roles.contains(&r.as_str()));
    Ok(match (redeemed, allowed) {
        (true, _) => Redemption::Redeemed(owner),
        (false, false) => Redemption::WrongRole(owner),
        // Allowed but not deleted: a concurrent redemption used it first.
        (false, true) => Redemption::Invalid,
    })
}
