//! Opaque bearer tokens: 256 random bits, shown once, stored only as a SHA-256 digest in
//! `personal_access_tokens` with abilities, `last_used_at` and `expires_at`.

use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::USER_MODEL_TYPE;

/// Random bytes in a token (256 bits).
pub const TOKEN_BYTES: usize = 32;
/// Prefix that makes a leaked Hilot token easy to recognise (and to scan for in logs).
pub const TOKEN_PREFIX: &str = "hlt_";
/// `last_used_at` is refreshed at most this often, so authenticating is not a write per request.
pub const LAST_USED_RESOLUTION: Duration = Duration::seconds(60);
/// Abilities granted to a login token (Sanctum's wildcard).
pub const FULL_ABILITIES: &str = r#"["*"]"#;

/// A freshly issued token: the secret goes to the client once and is never stored.
#[derive(Debug)]
pub struct IssuedToken {
    pub secret: String,
    pub expires_at: DateTime<Utc>,
}

/// The token row behind a valid bearer token, with its user's roles.
#[derive(Debug, Clone)]
pub struct TokenOwner {
    pub token_id: i64,
    pub user_id: i64,
    pub user_uuid: uuid::Uuid,
    pub roles: Vec<String>,
    /// When the token stops working (checked on every cached use too).
    pub expires_at: Option<DateTime<Utc>>,
}

pub fn generate_secret() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form: lowercase hex SHA-256 (64 characters, the seed's `token VARCHAR(64)`).
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Shape check before touching the database: forged strings of the wrong form are refused early.
pub fn looks_like_token(secret: &str) -> bool {
    secret.len() == TOKEN_PREFIX.len() + 43
        && secret.starts_with(TOKEN_PREFIX)
        && secret[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub async fn issue(
    db: impl sqlx::PgExecutor<'_>,
    user_id: i64,
    name: &str,
    ttl: Duration,
) -> sqlx::Result<IssuedToken> {
    let secret = generate_secret();
    let expires_at = Utc::now() + ttl;
    sqlx::query(
        "INSERT INTO personal_access_tokens (tokenable_type, tokenable_id, name, token, abilities, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(USER_MODEL_TYPE)
    .bind(user_id)
    .bind(name)
    .bind(digest(&secret))
    .bind(FULL_ABILITIES)
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok(IssuedToken { secret, expires_at })
}

/// The owner of a live (unexpired, unrevoked) token of an active user, or `None`.
pub async fn authenticate(pool: &PgPool, secret: &str) -> sqlx::Result<Option<TokenOwner>> {
    if !looks_like_token(secret) {
        return Ok(None);
    }
    type Row = (
        i64,
        i64,
        uuid::Uuid,
        Vec<String>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT t.id, t.tokenable_id, u.uuid, \
                COALESCE((SELECT array_agg(r.name) FROM model_has_roles mr JOIN roles r ON r.id = mr.role_id \
                          WHERE mr.model_id = u.id AND mr.model_type = $2), '{}'), \
                t.last_used_at, t.expires_at \
         FROM personal_access_tokens t \
         JOIN users u ON u.id = t.tokenable_id \
         WHERE t.token = $1 AND t.tokenable_type = $2 \
           AND (t.expires_at IS NULL OR t.expires_at > now()) \
           AND u.is_active IS NOT FALSE AND u.deleted_at IS NULL",
    )
    .bind(digest(secret))
    .bind(USER_MODEL_TYPE)
    .fetch_optional(pool)
    .await?;
    let Some((token_id, user_id, user_uuid, roles, last_used_at, expires_at)) = row else {
        return Ok(None);
    };
    if last_used_at.is_none_or(|at| Utc::now() - at > LAST_USED_RESOLUTION) {
        sqlx::query("UPDATE personal_access_tokens SET last_used_at = now() WHERE id = $1")
            .bind(token_id)
            .execute(pool)
            .await?;
    }
    Ok(Some(TokenOwner {
        token_id,
        user_id,
        user_uuid,
        roles,
        expires_at,
    }))
}

/// Logout: the token stops working at once.
pub async fn revoke(pool: &PgPool, token_id: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM personal_access_tokens WHERE id = $1")
        .bind(token_id)
        .execute(pool)
        .await
        .map(|_| ())
}

/// Revokes every token of a user (an admin's revocation, or the account's deactivation);
/// answers how many there were.
pub async fn revoke_all(db: impl sqlx::PgExecutor<'_>, user_id: i64) -> sqlx::Result<u64> {
    sqlx::query(
        "DELETE FROM personal_access_tokens WHERE tokenable_type = $1 AND tokenable_id = $2",
    )
    .bind(USER_MODEL_TYPE)
    .bind(user_id)
    .execute(db)
    .await
    .map(|r| r.rows_affected())
}

/// Of these tokens, the ones still valid (unexpired, unrevoked, of an active user), each with
/// its user's roles now. One query for every socket of a node.
pub async fn still_valid(
    pool: &PgPool,
    token_ids: &[i64],
) -> sqlx::Result<std::collections::HashMap<i64, Vec<String>>> {
    let rows: Vec<(i64, Vec<String>)> = sqlx::query_as(
        "SELECT t.id, COALESCE((SELECT array_agg(r.name) FROM model_has_roles mr JOIN roles r ON r.id = mr.role_id \
                                WHERE mr.model_id = u.id AND mr.model_type = $2), '{}') \
         FROM personal_access_tokens t JOIN users u ON u.id = t.tokenable_id \
         WHERE t.id = ANY($1) AND t.tokenable_type = $2 \
           AND (t.expires_at IS NULL OR t.expires_at > now()) \
           AND u.is_active IS NOT FALSE AND u.deleted_at IS NULL",
    )
    .bind(token_ids)
    .bind(USER_MODEL_TYPE)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Recently verified tokens, so hot endpoints do not query the database on every call.
/// Entries live at most [`TOKEN_CACHE_TTL`]; logout, revocation, deactivation and role changes
/// evict at once on every node (through the control events of the event bus).
pub struct TokenCache {
    entries:
        parking_lot::RwLock<std::collections::HashMap<String, (TokenOwner, std::time::Instant)>>,
}

/// How long a verified token is trusted without asking the database again.
pub const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(10);
/// The cache is emptied when it grows past this many tokens, bounding its memory.
pub const TOKEN_CACHE_MAX: usize = 100_000;

impl Default for TokenCache {
    fn default() -> Self {
        Self {
            entries: parking_lot::RwLock::new(std::collections::HashMap::new()),
        }
    }
}

impl TokenCache {
    /// The owner of `secret`: from the cache when fresh, else from the database.
    pub async fn authenticate(
        &self,
        pool: &PgPool,
        secret: &str,
    ) -> sqlx::Result<Option<TokenOwner>> {
        if !looks_like_token(secret) {
            return Ok(None);
        }
        let key = digest(secret);
        if let Some((owner, at)) = self.entries.read().get(&key) {
            let unexpired = owner.expires_at.is_none_or(|expiry| expiry > Utc::now());
            if at.elapsed() < TOKEN_CACHE_TTL && unexpired {
                return Ok(Some(owner.clone()));
            }
        }
        let owner = authenticate(pool, secret).await?;
        let mut entries = self.entries.write();
        match &owner {
            Some(owner) => {
                if entries.len() >= TOKEN_CACHE_MAX {
                    entries.clear();
                }
                entries.insert(key, (owner.clone(), std::time::Instant::now()));
            }
            None => {
                entries.remove(&key);
            }
        }
        Ok(owner)
    }

    /// Forgets one token (logout).
    pub fn evict_token(&self, token_id: i64) {
        self.entries
            .write()
            .retain(|_, (owner, _)| owner.token_id != token_id);
    }

    /// Forgets every token of a user (their roles changed).
    pub fn evict_user(&self, user_id: i64) {
        self.entries
            .write()
            .retain(|_, (owner, _)| owner.user_id != user_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_carry_256_random_bits_and_are_stored_as_sha256_hex() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert!(looks_like_token(&a), "{a}");
        assert_eq!(digest(&a).len(), 64);
        assert!(!looks_like_token("hlt_short"));
        assert!(!looks_like_token(&a.replace("hlt_", "xyz_")));
    }
}
