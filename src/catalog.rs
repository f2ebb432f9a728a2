//! The service catalog in memory: public service ids to internal ids, so hot paths (nearby,
//! booking) do not query the database to resolve them.

use std::collections::HashMap;

use parking_lot::RwLock;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{ApiError, Context as _};

#[derive(Default)]
pub struct ServiceCatalog {
    ids: RwLock<HashMap<Uuid, i64>>,
    durations: RwLock<HashMap<i64, i32>>,
}

impl ServiceCatalog {
    /// The internal id of an active service, reading the database only on a miss.
    pub async fn service_id(&self, pool: &PgPool, uuid: Uuid) -> Result<Option<i64>, ApiError> {
        if let Some(id) = self.ids.read().get(&uuid) {
            return Ok(Some(*id));
        }
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM services WHERE uuid = $1 AND deleted_at IS NULL AND is_active IS NOT FALSE",
        )
        .bind(uuid)
        .fetch_optional(pool)
        .await
        .context("resolving a service id")?;
        if let Some(id) = id {
            self.ids.write().insert(uuid, id);
        }
        Ok(id)
    }

    /// A service's session length in minutes (`services.duration_minutes`), cached.
    pub async fn duration_minutes(&self, pool: &PgPool, service_id: i64) -> Result<i32, ApiError> {
        if let Some(minutes) = self.durations.read().get(&service_id) {
            return Ok(*minutes);
        }
        let minutes: i32 =
            sqlx::query_scalar("SELECT duration_minutes FROM services WHERE id = $1")
                .bind(service_id)
                .fetch_optional(pool)
                .await
                .context("reading a service's duration")?
                .unwrap_or(60);
        self.durations.write().insert(service_id, minutes);
        Ok(minutes)
    }
}
