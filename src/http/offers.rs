//! Admin: a booking's offers, for dispatchers reading how it was matched.

use actix_web::{get, web};
use uuid::Uuid;

use super::auth::Caller;
use crate::dispatch::offers::{self, OfferView};
use crate::dispatch::store;
use crate::error::{ApiError, Context as _, Problem};
use crate::state::AppState;

/// Every offer of a booking, in the order they were made: to whom, in which round, when, how it
/// ended (`open` while it still may be accepted), and the distance and ETA it was made at.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id")),
    responses(
        (status = 200, description = "The booking's offers, oldest first", body = [OfferView]),
        (status = 400, description = "Malformed booking id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/admin/bookings/{booking_id}/offers")]
pub async fn booking_offers(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<Vec<OfferView>>, ApiError> {
    caller.require_admin()?;
    let booking = store::facts_by_uuid(&state.db, path.into_inner())
        .await
        .context("loading the booking")?
        .ok_or_else(|| ApiError::not_found("booking"))?;
    let offers = offers::for_booking(&state.db, booking.id)
        .await
        .context("listing the booking's offers")?;
    Ok(web::Json(offers))
}
