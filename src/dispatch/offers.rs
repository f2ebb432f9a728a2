//! `booking_offers`: every offer of a booking to a therapist, open until it is accepted,
//! declined, expires, is withdrawn, or loses the race to another therapist's accept.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

use super::waiting::PlannedOffer;

/// How an offer ended (`booking_offers.outcome`; NULL while open).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, sqlx::Type, ToSchema,
)]
#[sqlx(type_name = "offer_outcome", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Accepted,
    Declined,
    Expired,
    /// Dispatch took it back: the booking was cancelled or timed out, the therapist went
    /// offline or may no longer take offers.
    Withdrawn,
    /// Another therapist accepted the booking first.
    LostRace,
}

impl Outcome {
    /// Whether the therapist is not offered the same booking again. Losing a race is no reason:
    /// the loser stays eligible for it (should it come back) and for every other booking.
    pub fn excludes_therapist(self) -> bool {
        !matches!(self, Outcome::LostRace | Outcome::Accepted)
    }
}

/// One offer as a dispatcher sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OfferView {
    pub provider: OfferProvider,
    /// The booking's offer round (1 for its first offers).
    pub round: i32,
    pub sent_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// `open`, `accepted`, `declined`, `expired`, `withdrawn` or `lost_race`.
    #[schema(example = "open")]
    pub outcome: String,
    pub closed_at: Option<DateTime<Utc>>,
    pub distance_m: u64,
    pub eta_seconds: i32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OfferProvider {
    pub id: Uuid,
    pub first_name: String,
}

#[derive(sqlx::FromRow)]
struct OfferRow {
    provider_uuid: Uuid,
    first_name: String,
    round: i32,
    sent_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    outcome: Option<Outcome>,
    closed_at: Option<DateTime<Utc>>,
    distance_m: f64,
    eta_seconds: i32,
}

/// A booking's offers, in the order they were made.
pub async fn for_booking(db: impl PgExecutor<'_>, booking_id: i64) -> sqlx::Result<Vec<OfferView>> {
    let rows: Vec<OfferRow> = sqlx::query_as(include_str!("../../sql/offers_for_booking.sql"))
        .bind(booking_id)
        .fetch_all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| OfferView {
            provider: OfferProvider {
                id: r.provider_uuid,
                first_name: r.first_name,
            },
            round: r.round,
            sent_at: r.sent_at,
            expires_at: r.expires_at,
            outcome: match r.outcome {
                None => "open".to_owned(),
                Some(outcome) => serde_json::to_value(outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            },
            closed_at: r.closed_at,
            distance_m: r.distance_m.round() as u64,
            eta_seconds: r.eta_seconds,
        })
        .collect())
}

/// Opens a round's offers in one statement; returns those made (booking, provider): only to
/// therapists eligible and online now, for bookings still pending.
pub async fn open(
    db: impl PgExecutor<'_>,
    planned: &[(PlannedOffer, i32, DateTime<Utc>)],
) -> sqlx::Result<Vec<(i64, i64)>> {
    let bookings: Vec<i64> = planned.iter().map(|(p, _, _)| p.booking_id).collect();
    let providers: Vec<i64> = planned.iter().map(|(p, _, _)| p.provider_id).collect();
    let rounds: Vec<i32> = planned.iter().map(|(_, r, _)| *r).collect();
    let expiries: Vec<DateTime<Utc>> = planned.iter().map(|(_, _, e)| *e).collect();
    let distances: Vec<f64> = planned.iter().map(|(p, _, _)| p.distance_m).collect();
    let etas: Vec<i32> = planned
        .iter()
        .map(|(p, _, _)| i32::try_from(p.eta_seconds).unwrap_or(i32::MAX))
        .collect();
    sqlx::query_as(include_str!("../../sql/offers_open.sql"))
        .bind(bookings)
        .bind(providers)
        .bind(rounds)
        .bind(expiries)
        .bind(distances)
        .bind(etas)
        .fetch_all(db)
        .await
}

/// Closes one therapist's open offer of a booking; `true` if it was open.
pub async fn close(
    db: impl PgExecutor<'_>,
    booking_id: i64,
    provider_id: i64,
    outcome: Outcome,
) -> sqlx::Result<bool> {
    sqlx::query(
        "UPDATE booking_offers SET outcome = $3, closed_at = now() \
         WHERE booking_id = $1 AND provider_id = $2 AND outcome IS NULL",
    )
    .bind(booking_id)
    .bind(provider_id)
    .bind(outcome)
    .execute(db)
    .await
    .map(|r| r.rows_affected() > 0)
}

/// Closes the open offers that expired by now; returns them (booking, provider). An offer an
/// accept has locked is skipped (its accept decides; the caller looks again later).
pub async fn close_expired(
    db: impl PgExecutor<'_>,
    offers: &[(i64, i64)],
) -> sqlx::Result<Vec<(i64, i64)>> {
    let bookings: Vec<i64> = offers.iter().map(|o| o.0).collect();
    let providers: Vec<i64> = offers.iter().map(|o| o.1).collect();
    sqlx::query_as(include_str!("../../sql/offers_expire.sql"))
        .bind(bookings)
        .bind(providers)
        .fetch_all(db)
        .await
}

/// Closes every open offer of a booking leaving `pending`; returns the therapists who held one.
pub async fn close_open_of_booking(
    tx: &mut PgConnection,
    booking_id: i64,
    outcome: Outcome,
) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(
        "UPDATE booking_offers SET outcome = $2, closed_at = now() \
         WHERE booking_id = $1 AND outcome IS NULL RETURNING provider_id",
    )
    .bind(booking_id)
    .bind(outcome)
    .fetch_all(tx)
    .await
}

/// An open offer as the matcher arms it (one a dispatcher made).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OpenOffer {
    pub round: i32,
    pub expires_at: DateTime<Utc>,
    pub distance_m: f64,
    pub eta_seconds: i32,
}

/// The therapist's open offer of a booking, if it is still open.
pub async fn open_offer(
    db: impl PgExecutor<'_>,
    booking_id: i64,
    provider_id: i64,
) -> sqlx::Result<Option<OpenOffer>> {
    sqlx::query_as(
        "SELECT round, expires_at, distance_m, eta_seconds FROM booking_offers \
         WHERE booking_id = $1 AND provider_id = $2 AND outcome IS NULL",
    )
    .bind(booking_id)
    .bind(provider_id)
    .fetch_optional(db)
    .await
}

/// An offer of a pending booking, as a matcher taking over reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredOffer {
    pub booking_id: i64,
    pub provider_id: i64,
    pub round: i32,
    pub expires_at: DateTime<Utc>,
    pub outcome: Option<Outcome>,
}

pub async fn of_pending_bookings(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<StoredOffer>> {
    sqlx::query_as(include_str!("../../sql/offers_of_pending_bookings.sql"))
        .fetch_all(db)
        .await
}
