//! PostgreSQL: the pool, migrations, and the version checks made when the pool is built.

pub mod app_settings;

use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::{Settings, BACKGROUND_ACQUIRE_TIMEOUT, DB_ACQUIRE_TIMEOUT};

/// The oldest PostGIS major version the schema and queries are written for.
pub const MIN_POSTGIS_MAJOR: u32 = 3;

/// Migrations compiled into the binary, so `hilot serve` on any machine can build the schema.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens the pool without touching the database yet (readiness is checked separately).
pub fn pool_options(settings: &Settings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.db_max_connections)
        .acquire_timeout(DB_ACQUIRE_TIMEOUT)
        .idle_timeout(Some(Duration::from_secs(300)))
        // sqlx pings every connection it hands out by default: a round trip per acquire, which
        // profiles under load showed as a large share of all database time. A connection that
        // died is still found out (the query fails, the pool drops it), and idle ones are
        // recycled above.
        .test_before_acquire(false)
}

pub fn connect_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    url.parse::<PgConnectOptions>()
        .map(|o| o.application_name("hilot"))
        .with_context(|| "DATABASE_URL is not a valid PostgreSQL URL")
}

/// The pool of the server's own work (dispatch, the ping writer, partition upkeep): separate
/// from the requests' pool, so shedding requests under overload never stalls matching or
/// storage, and its waits may be longer. Connects lazily.
pub fn background_pool(settings: &Settings) -> anyhow::Result<PgPool> {
    let url = settings.resolved_database_url()?;
    Ok(pool_options(settings)
        .max_connections(settings.db_background_connections.max(1))
        .acquire_timeout(BACKGROUND_ACQUIRE_TIMEOUT)
        .connect_lazy_with(connect_options(&url)?))
}

/// A few connections of their own for one latency-critical task (the matcher, the ping writer),
/// to the same database as `of`. On the shared pool such a task queued behind every socket's
/// transaction: under load the matcher waited 0.7 s for each of its reads and rounds fell
/// seconds apart. Connects lazily; the connections stay open while the task runs.
pub fn dedicated_pool(of: &PgPool, connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(connections.max(1))
        .acquire_timeout(BACKGROUND_ACQUIRE_TIMEOUT)
        .idle_timeout(None)
        .test_before_acquire(false)
        .connect_lazy_with(of.connect_options().as_ref().clone())
}

/// Connects, checks PostGIS, and applies pending migrations.
pub async fn connect_and_migrate(settings: &Settings) -> anyhow::Result<PgPool> {
    let url = settings.resolved_database_url()?;
    let options = connect_options(&url)?;
    let pool = pool_options(settings)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {}", redact(&url)))?;
    MIGRATOR
        .run(&pool)
        .await
        .context("applying database migrations")?;
    let major = postgis_major_version(&pool).await?;
    anyhow::ensure!(
        major >= MIN_POSTGIS_MAJOR,
        "PostGIS {major} is too old: Hilot needs PostGIS {MIN_POSTGIS_MAJOR} or later"
    );
    Ok(pool)
}

/// The major version of the PostGIS library the database runs.
pub async fn postgis_major_version(pool: &PgPool) -> anyhow::Result<u32> {
    let version: String = sqlx::query_scalar("SELECT postgis_lib_version()")
        .fetch_one(pool)
        .await
        .context("reading the PostGIS version (is the postgis extension installed?)")?;
    parse_major(&version).with_context(|| format!("unexpected PostGIS version {version:?}"))
}

fn parse_major(version: &str) -> Option<u32> {
    version.split('.').next()?.trim().parse().ok()
}

/// The URL with its password replaced, safe to print.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgis_major_is_read_from_the_version_string() {
        assert_eq!(parse_major("3.3.2"), Some(3));
        assert_eq!(parse_major("garbage"), None);
    }

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redact("postgres://hilot:secret@127.0.0.1:5432/hilot"),
            "postgres://hilot:***@127.0.0.1:5432/hilot"
        );
    }
}
