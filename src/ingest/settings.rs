//! The storage policy's settings live in app_settings, so operators change them without a
//! restart; the server re-reads them every [`POLICY_REFRESH_INTERVAL`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use tokio::sync::watch;

use super::policy::StoragePolicy;
use super::Ingest;
use crate::providers::setting_as_f64;

pub const POLICY_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// app_settings `location_store_interval_s` and `location_store_distance_m`.
pub async fn storage_policy(pool: &PgPool) -> anyhow::Result<StoragePolicy> {
    let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT key, value FROM app_settings WHERE key IN ('location_store_interval_s', 'location_store_distance_m')",
    )
    .fetch_all(pool)
    .await
    .context("reading the location storage policy")?;
    let mut policy = StoragePolicy::default();
    for (key, value) in rows {
        let Some(number) = setting_as_f64(&value).filter(|n| n.is_finite() && *n >= 0.0) else {
            tracing::warn!(%key, %value, "ignoring a storage setting that is not a non-negative number");
            continue;
        };
        match key.as_str() {
            "location_store_interval_s" => {
                policy.interval = chrono::Duration::milliseconds((number * 1000.0).min(1e12) as i64)
            }
            "location_store_distance_m" => policy.distance_m = number,
            _ => {}
        }
    }
    Ok(policy)
}

pub async fn keep_policy_fresh(
    pool: PgPool,
    ingest: Arc<Ingest>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLICY_REFRESH_INTERVAL) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        match storage_policy(&pool).await {
            Ok(policy) => ingest.set_policy(policy),
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "keeping the previous storage policy"
            ),
        }
    }
}
