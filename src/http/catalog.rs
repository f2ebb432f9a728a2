//! The service catalog (seeded categories and services).

use actix_web::{get, web};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, Context as _};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Service {
    #[serde(rename = "id")]
    pub uuid: Uuid,
    pub slug: String,
    pub name: String,
    /// The category's name.
    pub category: Option<String>,
    pub category_slug: Option<String>,
    /// Suggested price; each therapist sets their own.
    #[serde(with = "crate::domain::money")]
    #[schema(value_type = String, example = "800.00")]
    pub base_price: Decimal,
    pub currency: String,
    pub duration_minutes: i32,
    pub description: Option<String>,
}

/// Active services, in the catalog's order.
#[utoipa::path(
    tag = "catalog",
    responses((status = 200, description = "Services", body = [Service]))
)]
#[get("/v1/services")]
pub async fn list_services(
    state: web::Data<AppState>,
) -> Result<web::Json<Vec<Service>>, ApiError> {
    sqlx::query_as(
        "SELECT s.uuid, s.slug, s.name, c.name AS category, c.slug AS category_slug, s.base_price, \
                COALESCE(s.currency, 'PHP') AS currency, s.duration_minutes, s.description \
         FROM services s LEFT JOIN service_categories c ON c.id = s.category_id \
         WHERE s.is_active IS NOT FALSE AND s.deleted_at IS NULL \
         ORDER BY c.sort_order NULLS LAST, s.sort_order, s.id",
    )
    .fetch_all(&state.db)
    .await
    .context("listing services")
    .map(web::Json)
}
