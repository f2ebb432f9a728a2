//! A booking as a dispatcher sees it: the booking and its timeline, its payment, both parties
//! with their phones, the store visit, the trip so far, the parties' messages, and every
//! dispatcher action taken on it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::dispatch::offers::{self, OfferView};
use crate::dispatch::store::{self, BookingView};
use crate::error::{ApiError, Context as _};
use crate::messages::ChatMessage;
use crate::money::views::PaymentView;

/// The most messages the panel shows (the latest ones).
const PANEL_MESSAGES: i64 = 200;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Party {
    pub id: Uuid,
    pub name: String,
    pub phone: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderParty {
    /// The provider id (therapist or store).
    pub id: Uuid,
    /// `therapist` or `store`.
    pub kind: String,
    pub name: String,
    pub phone: String,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct TripSummary {
    /// Stored fixes from acceptance to arrival (or to now).
    pub points: i64,
    pub first_fix_at: Option<DateTime<Utc>>,
    pub last_fix_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct AuditEntry {
    pub action: String,
    pub actor_name: Option<String>,
    pub at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<Object>)]
    pub old_values: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub new_values: Option<Value>,
    /// The address the action came from.
    pub ip_address: Option<String>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct VisitSlot {
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub checked_in_at: Option<DateTime<Utc>>,
}

/// Everything the detail panel shows about one booking.
#[derive(Debug, Serialize, ToSchema)]
pub struct BookingDetail {
    pub booking: BookingView,
    /// Where the payment stands (the same as `booking.payment`, which lists leave out).
    pub payment: PaymentView,
    pub customer: Party,
    pub provider: Option<ProviderParty>,
    /// The store visit of an in-store booking.
    pub visit: Option<VisitSlot>,
    /// The trip so far; the positions are at `GET /v1/bookings/{id}/trip`.
    pub trip: Option<TripSummary>,
    /// The chat between the customer and the therapist, oldest first (the latest 200). Reading
    /// them here marks nothing read.
    pub messages: Vec<ChatMessage>,
    /// Every offer of the booking, oldest first: to whom, when, and how it ended.
    pub offers: Vec<OfferView>,
    /// Dispatcher actions on this booking, oldest first.
    pub audit: Vec<AuditEntry>,
}

#[derive(sqlx::FromRow)]
struct Facts {
    id: i64,
    kind: String,
    provider_id: Option<i64>,
    accepted_at: Option<DateTime<Utc>>,
    trip_end: Option<DateTime<Utc>>,
}

/// The booking's internal id, or 404.
pub async fn booking_id(db: &PgPool, booking_uuid: Uuid) -> Result<i64, ApiError> {
    sqlx::query_scalar("SELECT id FROM bookings WHERE uuid = $1 AND deleted_at IS NULL")
        .bind(booking_uuid)
        .fetch_optional(db)
        .await
        .context("finding the booking")?
        .ok_or_else(|| ApiError::not_found("booking"))
}

pub async fn detail(db: &PgPool, booking_uuid: Uuid) -> Result<BookingDetail, ApiError> {
    let facts: Facts = sqlx::query_as(
        "SELECT b.id, b.type::text AS kind, b.provider_id, b.accepted_at, \
                COALESCE((SELECT min(t.created_at) FROM booking_timeline t \
                          WHERE t.booking_id = b.id AND t.status = 'arrived'), \
                         b.completed_at, b.cancelled_at) AS trip_end \
         FROM bookings b WHERE b.uuid = $1 AND b.deleted_at IS NULL",
    )
    .bind(booking_uuid)
    .fetch_optional(db)
    .await
    .context("finding the booking")?
    .ok_or_else(|| ApiError::not_found("booking"))?;
    let mut conn = db.acquire().await.context("loading the booking")?;
    let booking = store::view(&mut conn, facts.id)
        .await
        .context("loading the booking")?;
    let customer: Party = sqlx::query_as(
        "SELECT u.uuid AS id, u.first_name || ' ' || u.last_name AS name, u.phone \
         FROM bookings b JOIN users u ON u.id = b.customer_id WHERE b.id = $1",
    )
    .bind(facts.id)
    .fetch_one(&mut *conn)
    .await
    .context("loading the customer")?;
    let provider: Option<(Uuid, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT p.uuid, p.type::text, u.first_name || ' ' || u.last_name, u.phone, sp.store_name \
         FROM providers p JOIN users u ON u.id = p.user_id \
         LEFT JOIN store_profiles sp ON sp.provider_id = p.id WHERE p.id = $1",
    )
    .bind(facts.provider_id)
    .fetch_optional(&mut *conn)
    .await
    .context("loading the provider")?;
    let visit: Option<VisitSlot> = sqlx::query_as(
        "SELECT lower(slot) AS starts_at, upper(slot) AS ends_at, checked_in_at \
         FROM store_visits WHERE booking_id = $1",
    )
    .bind(facts.id)
    .fetch_optional(&mut *conn)
    .await
    .context("loading the visit")?;
    let trip = match (facts.kind.as_str(), facts.provider_id, facts.accepted_at) {
        ("home_service", Some(provider_id), Some(from)) => Some(
            sqlx::query_as(
                "SELECT count(*) AS points, min(created_at) AS first_fix_at, max(created_at) AS last_fix_at \
                 FROM provider_locations WHERE provider_id = $1 AND created_at >= $2 AND created_at <= $3",
            )
            .bind(provider_id)
            .bind(from)
            .bind(facts.trip_end.unwrap_or_else(Utc::now))
            .fetch_one(&mut *conn)
            .await
            .context("summing up the trip")?,
        ),
        _ => None,
    };
    let payment = match &booking.payment {
        Some(payment) => payment.clone(),
        None => crate::money::views::payment(&mut conn, facts.id)
            .await
            .context("loading the payment")?,
    };
    let messages = crate::messages::for_dispatcher(&mut conn, facts.id, PANEL_MESSAGES)
        .await
        .context("loading the messages")?;
    let offers = offers::for_booking(&mut *conn, facts.id)
        .await
        .context("loading the offers")?;
    let audit: Vec<AuditEntry> = sqlx::query_as(
        "SELECT a.action, u.first_name || ' ' || u.last_name AS actor_name, a.created_at AS at, \
                a.old_values, a.new_values, host(a.ip_address) AS ip_address \
         FROM audit_logs a LEFT JOIN users u ON u.id = a.user_id \
         WHERE a.auditable_type = 'booking' AND a.auditable_id = $1 ORDER BY a.id",
    )
    .bind(facts.id)
    .fetch_all(&mut *conn)
    .await
    .context("loading the booking's audit trail")?;
    Ok(BookingDetail {
        booking,
        payment,
        customer,
        provider: provider.map(|(id, kind, name, phone, store_name)| ProviderParty {
            id,
            kind,
            name: store_name.unwrap_or(name),
            phone,
        }),
        visit,
        trip,
        messages,
        offers,
        audit,
    })
}
