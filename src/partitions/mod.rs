//! The monthly `provider_locations` partitions: create ahead, report, retire past retention.
//!
//! Partitions are named `provider_locations_yYYYYmMM` as in the seed schema. A DEFAULT partition
//! catches any row whose month has no partition yet, so an insert never fails for want of one;
//! health reports rows sitting there because they make later partition creation slower.

use anyhow::Context as _;
use chrono::{Datelike, Months, NaiveDate};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

/// Key of the transaction-level advisory lock that serialises partition maintenance across
/// servers sharing one database ("hilot" + "part" in ASCII, so it is recognisable in pg_locks).
pub const PARTITION_LOCK_KEY: i64 = 0x68696c6f_70617274;

/// Parent table of the location history.
pub const PARENT_TABLE: &str = "provider_locations";
/// Its safety-net DEFAULT partition.
pub const DEFAULT_PARTITION: &str = "provider_locations_default";

/// The first day of the month holding `date`.
pub fn month_start(date: NaiveDate) -> NaiveDate {
    date.with_day(1).expect("day 1 exists in every month")
}

/// The first day of the month `n` months after the one holding `date` (negative: before).
pub fn month_offset(date: NaiveDate, n: i32) -> NaiveDate {
    let start = month_start(date);
    if n >= 0 {
        start + Months::new(n as u32)
    } else {
        start - Months::new(n.unsigned_abs())
    }
}

/// `provider_locations_y2026m02` for any date in February 2026.
pub fn partition_name(date: NaiveDate) -> String {
    format!("{PARENT_TABLE}_y{:04}m{:02}", date.year(), date.month())
}

/// The month a partition name stands for, if it is one of ours.
pub fn parse_partition_name(name: &str) -> Option<NaiveDate> {
    let rest = name.strip_prefix(PARENT_TABLE)?.strip_prefix("_y")?;
    let (year, month) = rest.split_once('m')?;
    if year.len() != 4 || month.len() != 2 {
        return None;
    }
    NaiveDate::from_ymd_opt(year.parse().ok()?, month.parse().ok()?, 1)
}

/// The months (first days) that must have a partition: this month and `ahead` more.
pub fn months_to_keep_ready(today: NaiveDate, ahead: u32) -> Vec<NaiveDate> {
    (0..=ahead as i32).map(|n| month_offset(today, n)).collect()
}

/// Partitions whose whole month ended before the retention window starts.
pub fn partitions_past_retention(
    existing: &[String],
    today: NaiveDate,
    retention_months: u32,
) -> Vec<String> {
    let oldest_kept = month_offset(today, -(retention_months as i32));
    existing
        .iter()
        .filter(|name| parse_partition_name(name).is_some_and(|month| month < oldest_kept))
        .cloned()
        .collect()
}

/// Months of location history kept when app_settings has no `location_retention_months` (the
/// seed's "drop old partitions (after 3 months)").
pub const DEFAULT_RETENTION_MONTHS: u32 = 3;
/// How often the running server re-checks partitions.
pub const MAINTENANCE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// One row of `hilot partitions status`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PartitionInfo {
    pub name: String,
    /// The partition's bound expression, as PostgreSQL prints it.
    pub bounds: String,
    pub rows: i64,
}

/// Creates the partitions for this month and `ahead` months after it; returns those it created.
pub async fn ensure(pool: &PgPool, today: NaiveDate, ahead: u32) -> anyhow::Result<Vec<String>> {
    let mut tx = pool
        .begin()
        .await
        .context("starting partition maintenance")?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PARTITION_LOCK_KEY)
        .execute(&mut *tx)
        .await
        .context("taking the partition maintenance lock")?;
    let existing = partition_names(&mut tx).await?;
    let mut created = Vec::new();
    for month in months_to_keep_ready(today, ahead) {
        let name = partition_name(month);
        if existing.contains(&name) {
            continue;
        }
        sqlx::query("SELECT ensure_provider_locations_partition($1)")
            .bind(month)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("creating partition {name}"))?;
        created.push(name);
    }
    tx.commit().await.context("committing new partitions")?;
    Ok(created)
}

/// Detaches and drops monthly partitions older than `retention_months` full months.
pub async fn rotate(
    pool: &PgPool,
    today: NaiveDate,
    retention_months: u32,
) -> anyhow::Result<Vec<String>> {
    let mut tx = pool.begin().await.context("starting partition rotation")?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PARTITION_LOCK_KEY)
        .execute(&mut *tx)
        .await
        .context("taking the partition maintenance lock")?;
    let existing = partition_names(&mut tx).await?;
    let doomed = partitions_past_retention(&existing, today, retention_months);
    for name in &doomed {
        // Names come from pg_inherits and match our pattern, so quoting them is enough.
        sqlx::query(&format!(
            "ALTER TABLE {PARENT_TABLE} DETACH PARTITION \"{name}\""
        ))
        .execute(&mut *tx)
        .await
        .with_context(|| format!("detaching partition {name}"))?;
        sqlx::query(&format!("DROP TABLE \"{name}\""))
            .execute(&mut *tx)
            .await
            .with_context(|| format!("dropping partition {name}"))?;
    }
    tx.commit().await.context("committing partition rotation")?;
    Ok(doomed)
}

/// app_settings `location_retention_months` (a JSON number, or a string holding one).
pub async fn retention_months(pool: &PgPool) -> anyhow::Result<u32> {
    let value: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT value FROM app_settings WHERE key = 'location_retention_months'",
    )
    .fetch_optional(pool)
    .await
    .context("reading location_retention_months")?;
    Ok(value
        .and_then(|v| match v {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
        .map_or(DEFAULT_RETENTION_MONTHS, |n| n.clamp(1, 120) as u32))
}

/// The server's background task: ensure and rotate at once, then once a day, until shutdown.
pub async fn run_maintenance(
    pool: PgPool,
    ahead: u32,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let today = chrono::Utc::now().date_naive();
        match ensure(&pool, today, ahead).await {
            Ok(created) if !created.is_empty() => {
                tracing::info!(?created, "location partitions created")
            }
            Ok(_) => {}
            Err(error) => tracing::error!(error = format!("{error:#}"), "partition ensure failed"),
        }
        let rotated = match retention_months(&pool).await {
            Ok(retention) => rotate(&pool, today, retention).await,
            Err(error) => Err(error),
        };
        match rotated {
            Ok(dropped) if !dropped.is_empty() => {
                tracing::info!(?dropped, "old location partitions dropped")
            }
            Ok(_) => {}
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), "partition rotation failed")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(MAINTENANCE_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Every partition with its bounds and exact row count.
pub async fn status(pool: &PgPool) -> anyhow::Result<Vec<PartitionInfo>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = $1::regclass ORDER BY c.relname",
    )
    .bind(PARENT_TABLE)
    .fetch_all(pool)
    .await
    .context("listing location partitions")?;
    let mut out = Vec::with_capacity(rows.len());
    for (name, bounds) in rows {
        let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{name}\""))
            .fetch_one(pool)
            .await
            .with_context(|| format!("counting rows of {name}"))?;
        out.push(PartitionInfo {
            name,
            bounds,
            rows: count,
        });
    }
    Ok(out)
}

/// The names of the partitions that must exist now (this month and next) but do not.
pub async fn missing_required(pool: &PgPool, today: NaiveDate) -> anyhow::Result<Vec<String>> {
    let mut conn = pool.acquire().await.context("checking partitions")?;
    let existing = partition_names(&mut conn).await?;
    Ok(months_to_keep_ready(today, 1)
        .into_iter()
        .map(partition_name)
        .filter(|name| !existing.contains(name))
        .collect())
}

/// Rows that fell into the DEFAULT partition (no monthly partition existed for them).
pub async fn rows_in_default(pool: &PgPool) -> anyhow::Result<i64> {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {DEFAULT_PARTITION}"))
        .fetch_one(pool)
        .await
        .context("counting rows in the default location partition")
}

async fn partition_names(conn: &mut sqlx::PgConnection) -> anyhow::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = $1::regclass",
    )
    .bind(PARENT_TABLE)
    .fetch_all(conn)
    .await
    .context("listing location partitions")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn names_follow_the_seed_pattern_and_round_trip() {
        assert_eq!(
            partition_name(d(2026, 2, 17)),
            "provider_locations_y2026m02"
        );
        assert_eq!(
            parse_partition_name("provider_locations_y2026m02"),
            Some(d(2026, 2, 1))
        );
        assert_eq!(parse_partition_name(DEFAULT_PARTITION), None);
        assert_eq!(parse_partition_name("provider_locations_y2026m13"), None);
    }

    #[test]
    fn months_ahead_cross_the_year_end() {
        assert_eq!(
            months_to_keep_ready(d(2026, 11, 30), 2),
            vec![d(2026, 11, 1), d(2026, 12, 1), d(2027, 1, 1)]
        );
    }

    #[test]
    fn retention_keeps_the_current_month_and_the_last_n() {
        let existing: Vec<String> = [
            "provider_locations_y2026m07",
            "provider_locations_y2026m08",
            "provider_locations_y2026m09",
            "provider_locations_y2026m11",
            DEFAULT_PARTITION,
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            partitions_past_retention(&existing, d(2026, 11, 21), 3),
            vec!["provider_locations_y2026m07".to_owned()]
        );
    }
}
