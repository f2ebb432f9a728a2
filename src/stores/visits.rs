//! In-store bookings: a customer books a room-hour at a store, now or for later; the store
//! confirms or declines; the customer checks in, or becomes a no-show after a grace period.
//!
//! ```text
//! pending --store confirms--> accepted --check-in--> arrived --store--> in_progress --store--> completed
//!    |                           |                      |
//!    +--declined/unconfirmed     +--no_show (after grace, not checked in)
//!    +--cancelled                +--cancelled           +--cancelled
//! ```
//!
//! Opening hours are checked here; room capacity is the database's (the `store_visits`
//! trigger), so two servers booking the last room at once cannot both succeed.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use utoipa::ToSchema;
use uuid::Uuid;

use super::stored_hours;
use crate::dispatch::cancellation::release_promo;
use crate::dispatch::lifecycle::BookingStatus;
use crate::dispatch::pricing::{self, PromoTerms};
use crate::dispatch::settings::DispatchSettings;
use crate::dispatch::store::{self, BookingView};
use crate::error::{ApiError, Context as _};
use crate::providers::setting_as_f64;

/// `in_store.no_show_grace_minutes`: how long after its start an unconfirmed or un-checked-in
/// visit waits before it ends.
pub const DEFAULT_NO_SHOW_GRACE: Duration = Duration::minutes(15);
/// `in_store.check_in_early_minutes`: how early before its start a visit may be checked in.
pub const DEFAULT_CHECK_IN_EARLY: Duration = Duration::minutes(60);
/// `cancellation_reason` when the store declines without saying why.
pub const DECLINED_BY_STORE: &str = "declined_by_store";
/// `cancellation_reason` when the store never confirmed before the visit's grace ran out.
pub const STORE_DID_NOT_CONFIRM: &str = "store_did_not_confirm";

pub use crate::dispatch::lifecycle::{check_visit_transition, VisitActor};

/// The in-store settings from `app_settings.in_store`.
#[derive(Debug, Clone, Copy)]
pub struct InStoreSettings {
    pub no_show_grace: Duration,
    pub check_in_early: Duration,
}

impl InStoreSettings {
    pub async fn load(db: &PgPool) -> Self {
        let value: Option<Value> =
            sqlx::query_scalar("SELECT value FROM app_settings WHERE key = 'in_store'")
                .fetch_optional(db)
                .await
                .ok()
                .flatten();
        let minutes = |name: &str, default: Duration| {
            value
                .as_ref()
                .and_then(|v| v.get(name))
                .and_then(setting_as_f64)
                .filter(|m| m.is_finite() && *m >= 0.0)
                .map_or(default, |m| {
                    Duration::seconds((m.min(1440.0) * 60.0) as i64)
                })
        };
        Self {
            no_show_grace: minutes("no_show_grace_minutes", DEFAULT_NO_SHOW_GRACE),
            check_in_early: minutes("check_in_early_minutes", DEFAULT_CHECK_IN_EARLY),
        }
    }
}

/// The room-time an in-store booking holds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VisitView {
    pub store_id: Uuid,
    pub store_name: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub checked_in_at: Option<DateTime<Utc>>,
    /// When a customer who has not checked in becomes a no-show.
    pub no_show_at: DateTime<Utc>,
}

/// An in-store booking: the booking, plus its store and slot.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InStoreBooking {
    #[serde(flatten)]
    pub booking: BookingView,
    pub visit: VisitView,
}

/// What a customer asks for.
pub struct VisitRequest<'a> {
    pub customer_id: i64,
    pub store_uuid: Uuid,
    pub service_id: i64,
    /// `None`: now.
    pub scheduled_at: Option<DateTime<Utc>>,
    pub customer_notes: Option<&'a str>,
    pub promo: Option<(store::PromoUse, PromoTerms)>,
    pub payment_method: crate::money::PaymentMethod,
    pub idempotency_key: &'a str,
    pub request_hash: &'a str,
    /// The `max_pending_bookings` setting: waiting bookings of any kind a customer may hold.
    pub max_pending: u32,
}

#[derive(sqlx::FromRow)]
struct StoreForBooking {
    id: i64,
    store_name: String,
    address_line1: String,
    city: String,
    lat: f64,
    lng: f64,
    timezone: String,
    operating_hours: Option<Value>,
    /// `None` when the store does not sell the service in store.
    price: Option<Decimal>,
    duration_minutes: Option<i32>,
    commission_rate: Option<Decimal>,
}

/// What creating a visit came to.
pub enum Created {
    New(i64),
    /// The same idempotency key committed first (a concurrent retry).
    KeyTaken,
    /// The customer already holds `max_pending_bookings` waiting bookings (a pending visit
    /// holds a room, so without the limit one account could hold every room of a store).
    TooManyPending,
}

/// Books a room at a store. 422 for a store or service that cannot be booked, 409 when the
/// store is closed for the slot or every room is taken (the database decides that one).
pub async fn create(
    pool: &PgPool,
    request: &VisitRequest<'_>,
    now: DateTime<Utc>,
) -> Result<Created, ApiError> {
    let store: StoreForBooking = sqlx::query_as(
        "SELECT p.id, sp.store_name, sp.address_line1, sp.city, sp.latitude::float8 AS lat, \
                sp.longitude::float8 AS lng, sp.timezone, sp.operating_hours, ps.price, \
                CASE WHEN ps.id IS NULL THEN NULL ELSE COALESCE(s.duration_minutes, 60) END AS duration_minutes, \
                p.commission_rate \
         FROM providers p JOIN store_profiles sp ON sp.provider_id = p.id \
         LEFT JOIN provider_services ps ON ps.provider_id = p.id AND ps.service_id = $2 \
              AND ps.store_service_enabled IS TRUE AND ps.is_available IS NOT FALSE \
         LEFT JOIN services s ON s.id = ps.service_id \
         WHERE p.uuid = $1 AND p.type = 'store' AND p.deleted_at IS NULL \
           AND p.verification_status = 'verified' AND p.is_active IS NOT FALSE",
    )
    .bind(request.store_uuid)
    .bind(request.service_id)
    .fetch_optional(pool)
    .await
    .context("finding the store")?
    .ok_or_else(|| ApiError::invalid("store_id", "no such store taking bookings"))?;
    let (Some(service_price), Some(duration_minutes)) = (store.price, store.duration_minutes)
    else {
        return Err(ApiError::invalid(
            "service_id",
            "this store does not offer this service in store",
        ));
    };

    let starts_at = request.scheduled_at.unwrap_or(now);
    // The same horizon as home visits (`scheduling.horizon_days`): an operator's limit on how
    // far ahead anything is booked, and on how long a room can be held ahead.
    let horizon = crate::schedule::SchedulingSettings::load(pool)
        .await
        .horizon;
    if starts_at > now + horizon {
        return Err(ApiError::invalid(
            "scheduled_at",
            format!(
                "must be within {} days (the booking horizon)",
                horizon.num_days()
            ),
        ));
    }
    let ends_at = starts_at + Duration::minutes(i64::from(duration_minutes.max(1)));
    let hours = stored_hours(&store.timezone, store.operating_hours.as_ref());
    if !hours.covers(starts_at, ends_at) {
        let local = |t: DateTime<Utc>| {
            t.with_timezone(&hours.timezone())
                .format("%a %Y-%m-%d %H:%M")
                .to_string()
        };
        let next = hours
            .next_opening(starts_at)
            .map(|t| format!("; it next opens {}", local(t)))
            .unwrap_or_default();
        return Err(ApiError::Conflict(format!(
            "{} is not open for the whole visit, {} to {} ({}){next}",
            store.store_name,
            local(starts_at),
            local(ends_at),
            hours.timezone().name()
        )));
    }

    let cfg = DispatchSettings::load(pool).await;
    let price = pricing::price_booking(&pricing::PriceInputs {
        price: service_price,
        base_distance_km: 0,
        per_km_surcharge: Decimal::ZERO,
        distance_m: 0.0,
        platform_fee: cfg.platform_fee,
        commission_rate: store.commission_rate.unwrap_or(cfg.commission_rate),
        promo: request.promo.as_ref().map(|(_, terms)| *terms),
    });

    let mut tx = pool
        .begin()
        .await
        .context("starting the in-store booking")?;
    // A waiting visit holds a room: it counts toward the same limit as home bookings.
    let waiting = store::lock_customer_and_count_waiting(
        &mut tx,
        request.customer_id,
        request.idempotency_key,
        now,
    )
    .await
    .context("counting waiting bookings")?;
    if waiting >= i64::from(request.max_pending) {
        return Ok(Created::TooManyPending);
    }
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO bookings (customer_id, provider_id, service_id, type, booking_type, scheduled_at, status, \
             service_price, distance_surcharge, platform_fee, promo_discount, total_amount, provider_earnings, \
             commission_amount, commission_rate, customer_notes, idempotency_key, idempotency_request_hash, \
             payment_method) \
         VALUES ($1, $2, $3, 'in_store', $4::booking_schedule_type, $5, 'pending', $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
         ON CONFLICT (customer_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
         RETURNING id",
    )
    .bind(request.customer_id)
    .bind(store.id)
    .bind(request.service_id)
    .bind(if request.scheduled_at.is_some() { "scheduled" } else { "now" })
    .bind(request.scheduled_at)
    .bind(price.service_price)
    .bind(price.distance_surcharge)
    .bind(price.platform_fee)
    .bind(price.promo_discount)
    .bind(price.total_amount)
    .bind(price.provider_earnings)
    .bind(price.commission_amount)
    .bind(price.commission_rate)
    .bind(request.customer_notes)
    .bind(request.idempotency_key)
    .bind(request.request_hash)
    .bind(request.payment_method)
    .fetch_optional(&mut *tx)
    .await
    .context("creating the in-store booking")?;
    let Some(booking_id) = inserted else {
        return Ok(Created::KeyTaken);
    };
    sqlx::query(
        "INSERT INTO booking_locations (booking_id, address, building_name, latitude, longitude) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(booking_id)
    .bind(format!("{}, {}", store.address_line1, store.city))
    .bind(&store.store_name)
    .bind(crate::domain::validate::coordinate(store.lat))
    .bind(crate::domain::validate::coordinate(store.lng))
    .execute(&mut *tx)
    .await
    .context("saving the store's address on the booking")?;
    sqlx::query(
        "INSERT INTO store_visits (booking_id, store_provider_id, slot) VALUES ($1, $2, tstzrange($3, $4, '[)'))",
    )
    .bind(booking_id)
    .bind(store.id)
    .bind(starts_at)
    .bind(ends_at)
    .execute(&mut *tx)
    .await
    .map_err(|e| match constraint_of(&e) {
        Some("store_room_capacity") => ApiError::Conflict(format!(
            "every room at {} is taken for that time; pick another time or store",
            store.store_name
        )),
        _ => ApiError::from(anyhow::Error::new(e).context("holding a room")),
    })?;
    if let Some((promo, _)) = &request.promo {
        store::record_promo_use(
            &mut tx,
            promo,
            request.customer_id,
            booking_id,
            Some(store.id),
            price.promo_discount,
        )
        .await?;
    }
    tx.commit()
        .await
        .context("committing the in-store booking")?;
    metrics::counter!("hilot_bookings_created_total").increment(1);
    Ok(Created::New(booking_id))
}

fn constraint_of(error: &sqlx::Error) -> Option<&str> {
    error.as_database_error().and_then(|e| e.constraint())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VisitFacts {
    pub booking_id: i64,
    pub booking_uuid: Uuid,
    pub status: BookingStatus,
    pub customer_id: i64,
    pub store_provider_id: i64,
    pub store_owner_id: i64,
    pub store_uuid: Uuid,
    pub store_name: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub checked_in_at: Option<DateTime<Utc>>,
}

const VISIT_SQL: &str = "SELECT b.id AS booking_id, b.uuid AS booking_uuid, b.status, b.customer_id, \
        v.store_provider_id, p.user_id AS store_owner_id, p.uuid AS store_uuid, sp.store_name, \
        lower(v.slot) AS starts_at, upper(v.slot) AS ends_at, v.checked_in_at \
     FROM store_visits v JOIN bookings b ON b.id = v.booking_id \
     JOIN providers p ON p.id = v.store_provider_id JOIN store_profiles sp ON sp.provider_id = p.id";

pub async fn facts_by_uuid(
    db: &PgPool,
    booking_uuid: Uuid,
) -> Result<Option<VisitFacts>, ApiError> {
    sqlx::query_as(&format!(
        "{VISIT_SQL} WHERE b.uuid = $1 AND b.deleted_at IS NULL"
    ))
    .bind(booking_uuid)
    .fetch_optional(db)
    .await
    .context("loading the in-store booking")
}

/// The booking and its visit, as answered to clients.
pub async fn view(db: &PgPool, booking_id: i64) -> Result<InStoreBooking, ApiError> {
    let settings = InStoreSettings::load(db).await;
    let mut conn = db.acquire().await.context("loading the booking")?;
    view_in(&mut conn, booking_id, settings).await
}

async fn view_in(
    conn: &mut PgConnection,
    booking_id: i64,
    settings: InStoreSettings,
) -> Result<InStoreBooking, ApiError> {
    let booking = store::view(&mut *conn, booking_id)
        .await
        .context("loading the booking")?;
    let facts: VisitFacts = sqlx::query_as(&format!("{VISIT_SQL} WHERE b.id = $1"))
        .bind(booking_id)
        .fetch_one(&mut *conn)
        .await
        .context("loading the visit")?;
    Ok(InStoreBooking {
        booking,
        visit: visit_view(&facts, settings),
    })
}

fn visit_view(facts: &VisitFacts, settings: InStoreSettings) -> VisitView {
    VisitView {
        store_id: facts.store_uuid,
        store_name: facts.store_name.clone(),
        starts_at: facts.starts_at,
        ends_at: facts.ends_at,
        checked_in_at: facts.checked_in_at,
        no_show_at: facts.starts_at + settings.no_show_grace,
    }
}

/// Moves an in-store booking, recording who did it in the timeline. `reason` is stored as the
/// cancellation reason for `cancelled`.
pub async fn transition(
    db: &PgPool,
    facts: &VisitFacts,
    to: BookingStatus,
    actor: VisitActor,
    actor_user_id: Option<i64>,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<InStoreBooking, ApiError> {
    check_visit_transition(facts.status, to, actor)?;
    let settings = InStoreSettings::load(db).await;
    match to {
        BookingStatus::Arrived if now < facts.starts_at - settings.check_in_early => {
            return Err(ApiError::Conflict(format!(
                "check-in opens {} minutes before the visit, at {}",
                settings.check_in_early.num_minutes(),
                (facts.starts_at - settings.check_in_early).to_rfc3339()
            )));
        }
        BookingStatus::Arrived if now > facts.starts_at + settings.no_show_grace => {
            return Err(ApiError::Conflict(format!(
                "too late to check in: the visit started at {} and the grace period has passed",
                facts.starts_at.to_rfc3339()
            )));
        }
        BookingStatus::NoShow if now < facts.starts_at + settings.no_show_grace => {
            return Err(ApiError::Conflict(format!(
                "not a no-show yet: the customer may check in until {}",
                (facts.starts_at + settings.no_show_grace).to_rfc3339()
            )));
        }
        _ => {}
    }
    let note = match (to, reason) {
        (BookingStatus::Accepted, _) => "Confirmed by the store".to_owned(),
        (BookingStatus::Arrived, _) => format!("Checked in (by the {})", actor.label()),
        (BookingStatus::NoShow, _) => format!("No-show (marked by the {})", actor.label()),
        (BookingStatus::Cancelled, Some(reason)) => {
            format!("Cancelled by the {}: {reason}", actor.label())
        }
        (to, _) => format!("{} (by the {})", to.as_str(), actor.label()),
    };
    // A no-show owes what cancelling at the last moment would have cost (as in `sweep`); read
    // only for a no-show, and before the transaction holds a connection.
    let no_show_fee_percentage = match to {
        BookingStatus::NoShow => Some(DispatchSettings::load(db).await.cancellation.fee_percentage),
        _ => None,
    };
    let mut tx = db.begin().await.context("starting the change")?;
    if matches!(to, BookingStatus::InProgress | BookingStatus::Completed) {
        crate::dispatch::transitions::require_paid_before_start(&mut tx, facts.booking_id).await?;
    }
    store::set_actor(&mut tx, actor_user_id, &note)
        .await
        .context("marking the actor")?;
    let rows = sqlx::query(
        "UPDATE bookings SET status = $3, \
             accepted_at = CASE WHEN $3 = 'accepted' THEN now() ELSE accepted_at END, \
             started_at = CASE WHEN $3 = 'in_progress' THEN now() ELSE started_at END, \
             completed_at = CASE WHEN $3 = 'completed' THEN now() ELSE completed_at END, \
             cancelled_at = CASE WHEN $3 = 'cancelled' THEN now() ELSE cancelled_at END, \
             cancelled_by = CASE WHEN $3 = 'cancelled' THEN $4 ELSE cancelled_by END, \
             cancellation_reason = CASE WHEN $3 = 'cancelled' THEN $5 ELSE cancellation_reason END, \
             cancellation_fee = CASE WHEN $3 = 'no_show' \
                 THEN round(total_amount * $6 / 100, 2) ELSE cancellation_fee END \
         WHERE id = $1 AND status = $2",
    )
    .bind(facts.booking_id)
    .bind(facts.status)
    .bind(to)
    .bind(actor_user_id)
    .bind(reason)
    .bind(no_show_fee_percentage)
    .execute(&mut *tx)
    .await
    .context("changing the booking")?
    .rows_affected();
    if rows == 0 {
        return Err(ApiError::Conflict(
            "the booking changed meanwhile; reload it".into(),
        ));
    }
    if to == BookingStatus::Arrived {
        sqlx::query("UPDATE store_visits SET checked_in_at = now() WHERE booking_id = $1")
            .bind(facts.booking_id)
            .execute(&mut *tx)
            .await
            .context("recording the check-in")?;
    }
    if to == BookingStatus::Cancelled {
        // Whoever cancels, and from whichever status, the promo code is given back, as a
        // delivered booking's cancellation gives it back.
        release_promo(&mut tx, facts.booking_id)
            .await
            .context("releasing the promo code")?;
    }
    // Money and notifications move with the status, in the same transaction.
    crate::effects::on_booking_transition(&mut tx, facts.booking_id).await?;
    let view = view_in(&mut tx, facts.booking_id, settings).await?;
    tx.commit().await.context("committing the change")?;
    Ok(view)
}

/// The store's bookings, soonest visit first, optionally in one status.
pub async fn list_for_store(
    db: &PgPool,
    store_provider_id: i64,
    status: Option<BookingStatus>,
    limit: i64,
) -> Result<Vec<InStoreBooking>, ApiError> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT b.id FROM store_visits v JOIN bookings b ON b.id = v.booking_id \
         WHERE v.store_provider_id = $1 AND b.deleted_at IS NULL \
           AND ($2::booking_status IS NULL OR b.status = $2) \
         ORDER BY lower(v.slot), b.id LIMIT $3",
    )
    .bind(store_provider_id)
    .bind(status)
    .bind(limit)
    .fetch_all(db)
    .await
    .context("listing the store's bookings")?;
    let settings = InStoreSettings::load(db).await;
    let mut conn = db.acquire().await.context("listing the store's bookings")?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(view_in(&mut conn, id, settings).await?);
    }
    Ok(out)
}

/// Visits whose grace ran out: unconfirmed ones are cancelled (`store_did_not_confirm`),
/// confirmed ones nobody checked in to become `no_show`. Answers the bookings changed, for
/// the caller to announce. Safe on several servers at once: each change is a compare-and-set.
pub async fn sweep(db: &PgPool, now: DateTime<Utc>) -> Result<Vec<i64>, ApiError> {
    let settings = InStoreSettings::load(db).await;
    let due = now - settings.no_show_grace;
    let mut tx = db.begin().await.context("starting the visit sweep")?;
    store::set_actor(
        &mut tx,
        None,
        "The store did not confirm before the visit's grace period ended",
    )
    .await
    .context("marking the actor")?;
    let mut changed: Vec<i64> = sqlx::query_scalar(
        "UPDATE bookings b SET status = 'cancelled', cancelled_at = now(), cancellation_reason = $2 \
         FROM store_visits v \
         WHERE v.booking_id = b.id AND b.status = 'pending' AND lower(v.slot) <= $1 \
         RETURNING b.id",
    )
    .bind(due)
    .bind(STORE_DID_NOT_CONFIRM)
    .fetch_all(&mut *tx)
    .await
    .context("ending unconfirmed visits")?;
    for booking_id in &changed {
        release_promo(&mut tx, *booking_id)
            .await
            .context("releasing the promo code")?;
    }
    store::set_actor(
        &mut tx,
        None,
        "No-show: not checked in before the grace period ended",
    )
    .await
    .context("marking the actor")?;
    // A no-show owes what cancelling at the last moment would have cost
    // (`cancellation::no_show_fee`; numeric `round` rounds halves away from zero, as it does).
    let fee_percentage = DispatchSettings::load(db).await.cancellation.fee_percentage;
    let no_shows: Vec<i64> = sqlx::query_scalar(
        "UPDATE bookings b SET status = 'no_show', \
             cancellation_fee = round(b.total_amount * $2 / 100, 2) \
         FROM store_visits v \
         WHERE v.booking_id = b.id AND b.status = 'accepted' AND v.checked_in_at IS NULL \
           AND lower(v.slot) <= $1 \
         RETURNING b.id",
    )
    .bind(due)
    .bind(fee_percentage)
    .fetch_all(&mut *tx)
    .await
    .context("marking no-shows")?;
    changed.extend(no_shows);
    for booking_id in &changed {
        crate::effects::on_booking_transition(&mut tx, *booking_id).await?;
    }
    tx.commit().await.context("committing the visit sweep")?;
    Ok(changed)
}

/// Runs [`sweep`] every `every` until shutdown, handing each changed booking to `announce`.
pub async fn run_sweeper<F, Fut>(
    db: PgPool,
    every: StdDuration,
    announce: F,
    mut shutdown: watch::Receiver<bool>,
) where
    F: Fn(i64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(every.max(StdDuration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        match sweep(&db, Utc::now()).await {
            Ok(changed) => {
                for booking_id in changed {
                    announce(booking_id).await;
                }
            }
            Err(error) => tracing::warn!(error = %error, "the in-store visit sweep failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BookingStatus::*;
    use VisitActor::*;

    #[test]
    fn only_the_store_confirms_and_starts() {
        assert!(check_visit_transition(Pending, Accepted, Store).is_ok());
        assert!(matches!(
            check_visit_transition(Pending, Accepted, Customer),
            Err(ApiError::Forbidden(_))
        ));
        assert!(check_visit_transition(Arrived, InProgress, Store).is_ok());
        assert!(check_visit_transition(Arrived, InProgress, Customer).is_err());
    }

    #[test]
    fn customers_check_in_and_cancel_before_arriving() {
        assert!(check_visit_transition(Accepted, Arrived, Customer).is_ok());
        assert!(check_visit_transition(Pending, Cancelled, Customer).is_ok());
        assert!(check_visit_transition(Accepted, Cancelled, Customer).is_ok());
        assert!(check_visit_transition(Arrived, Cancelled, Customer).is_err());
    }

    #[test]
    fn illegal_moves_name_the_state() {
        match check_visit_transition(Completed, Arrived, Customer) {
            Err(ApiError::Conflict(detail)) => assert!(detail.contains("completed"), "{detail}"),
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert!(matches!(
            check_visit_transition(Pending, Arrived, Customer),
            Err(ApiError::Conflict(_))
        ));
        assert!(matches!(
            check_visit_transition(Pending, NoShow, System),
            Err(ApiError::Conflict(_))
        ));
    }
}
