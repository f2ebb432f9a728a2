//! What every request handler and background task shares.

use std::sync::Arc;
use std::time::Instant;

use sqlx::PgPool;

use crate::config::Settings;
use crate::http::limits::LoginLimiter;

/// Cheap to clone: everything inside is a handle.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    /// Present only when `REDIS_URL` is configured (multi-node mode).
    pub redis: Option<redis::aio::ConnectionManager>,
    pub settings: Arc<Settings>,
    pub started_at: Instant,
    pub login_limiter: Arc<LoginLimiter>,
}
