//! Prometheus metrics and the generated OpenAPI document.

use actix_web::{get, HttpResponse};
use utoipa::OpenApi;

use crate::telemetry;

/// Prometheus text exposition of every counter, gauge and histogram.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
#[get("/metrics")]
pub async fn metrics() -> HttpResponse {
    let handle = telemetry::metrics_handle();
    handle.run_upkeep();
    telemetry::record_process_memory();
    telemetry::record_process_cpu();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}

/// This document: every endpoint and schema, generated from the code.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object))
)]
#[get("/openapi.json")]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(super::openapi::ApiDoc::openapi())
}
