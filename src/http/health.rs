//! Liveness and readiness probes.

use std::future::Future;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{get, web, HttpResponse};
use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;

use crate::db;
use crate::error::PROBLEM_JSON;
use crate::partitions;
use crate::state::AppState;

/// Each readiness check gives up after this long, so a hung dependency answers 503, not a hang.
pub const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, ToSchema)]
pub struct LiveReport {
    /// Always `"alive"`: the process answers HTTP.
    pub status: &'static str,
    pub uptime_seconds: u64,
}

/// One dependency's state; `detail` says what is wrong when `ok` is false.
#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyChecks {
    pub database: Check,
    pub postgis: Check,
    pub partitions: Check,
    /// Rows that landed in the DEFAULT location partition (a warning, not a failure).
    pub default_partition_rows: Option<i64>,
    /// Absent when the server runs single-node without Redis. Redis away does not make the
    /// node unready: it serves its own view (`cluster.state` is `local_only`) until Redis is back.
    pub redis: Option<Check>,
    /// This node's link to the other nodes (absent single-node).
    pub cluster: Option<crate::cluster::link::LinkReport>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyReport {
    /// `"ready"`; `"degraded"` (still 200) while Redis is away and this node serves its own
    /// view; or `"unavailable"` (with status 503).
    pub status: &'static str,
    pub checks: ReadyChecks,
}

/// The process is up. Never touches a dependency, so it stays 200 while the database is down.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "The process is alive", body = LiveReport))
)]
#[get("/health/live")]
pub async fn live(state: web::Data<AppState>) -> web::Json<LiveReport> {
    web::Json(LiveReport {
        status: "alive",
        uptime_seconds: state.started_at.elapsed().as_secs(),
    })
}

/// Ready to serve: database reachable, PostGIS 3 or later, this and next month's location
/// partitions in place. Otherwise 503 naming the cause. Redis away is reported but not a
/// failure: behind a load balancer every node would go out of rotation at once, while each
/// can still take bookings and pings on its own view (`status: "degraded"`).
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, description = "Every dependency is ready", body = ReadyReport),
        (status = 503, description = "A dependency is not ready; `detail` names it", body = crate::error::Problem)
    )
)]
#[get("/health/ready")]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let pool = &state.db;
    let database = check(async {
        sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(|_| "reachable".to_owned())
            .map_err(|e| format!("unreachable: {e}"))
    })
    .await;
    let postgis = check(async {
        match db::postgis_major_version(pool).await {
            Ok(major) if major >= db::MIN_POSTGIS_MAJOR => Ok(format!("PostGIS {major}")),
            Ok(major) => Err(format!(
                "PostGIS {major} is older than {}",
                db::MIN_POSTGIS_MAJOR
            )),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await;
    let partitions = check(async {
        match partitions::missing_required(pool, Utc::now().date_naive()).await {
            Ok(missing) if missing.is_empty() => Ok("this and next month in place".to_owned()),
            Ok(missing) => Err(format!("missing: {}", missing.join(", "))),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await;
    let default_partition_rows = if database.ok {
        tokio::time::timeout(READY_CHECK_TIMEOUT, partitions::rows_in_default(pool))
            .await
            .ok()
            .and_then(Result::ok)
    } else {
        None
    };
    let redis = match &state.redis {
        None => None,
        Some(connection) => {
            let mut connection = connection.clone();
            Some(
                check(async move {
                    redis::cmd("PING")
                        .query_async::<String>(&mut connection)
                        .await
                        .map(|_| "reachable".to_owned())
                        .map_err(|e| format!("unreachable: {e}"))
                })
                .await,
            )
        }
    };

    let failures: Vec<String> = [
        ("database", &database),
        ("postgis", &postgis),
        ("partitions", &partitions),
    ]
    .into_iter()
    .filter(|(_, c)| !c.ok)
    .map(|(name, c)| format!("{name}: {}", c.detail))
    .collect();
    let checks = ReadyChecks {
        database,
        postgis,
        partitions,
        default_partition_rows,
        redis,
        cluster: state.redis.as_ref().map(|_| state.cluster_link.report()),
    };
    let degraded = checks.redis.as_ref().is_some_and(|r| !r.ok)
        || checks
            .cluster
            .as_ref()
            .is_some_and(|c| c.state != "connected");
    if failures.is_empty() {
        HttpResponse::Ok().json(ReadyReport {
            status: if degraded { "degraded" } else { "ready" },
            checks,
        })
    } else {
        let body = serde_json::json!({
            "type": "/problems/unavailable",
            "title": "Service Unavailable",
            "status": 503,
            "detail": format!("not ready: {}", failures.join("; ")),
            "checks": checks,
        });
        HttpResponse::ServiceUnavailable()
            .insert_header((header::CONTENT_TYPE, PROBLEM_JSON))
            .insert_header((header::RETRY_AFTER, "5"))
            .body(body.to_string())
    }
}

async fn check(probe: impl Future<Output = Result<String, String>>) -> Check {
    match tokio::time::timeout(READY_CHECK_TIMEOUT, probe).await {
        Ok(Ok(detail)) => Check { ok: true, detail },
        Ok(Err(detail)) => Check { ok: false, detail },
        Err(_) => Check {
            ok: false,
            detail: format!("no answer within {} s", READY_CHECK_TIMEOUT.as_secs()),
        },
    }
}
