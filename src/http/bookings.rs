//! Bookings: book now (idempotent), read, list, accept, decline, status, cancel, track.

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Caller;
use super::extract::{Json, Query, RawBody};
use crate::accounts::Role;
use crate::audit::AuditContext;
use crate::dispatch::lifecycle::BookingStatus;
use crate::dispatch::pricing::{self, Discount, PromoTerms};
use crate::dispatch::store::{self, BookingView};
use crate::dispatch::{self, settings as dispatch_settings};
use crate::domain::validate::{check_lat_lng, check_text, coordinate, optional_text};
use crate::error::{unique_violation, ApiError, Context as _, FieldError, Problem};
use crate::state::AppState;

/// Header that makes `POST /v1/bookings` safe to retry.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
pub use crate::dispatch::store::IDEMPOTENCY_WINDOW;
/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// `booking_locations.address` is VARCHAR(500).
pub const MAX_ADDRESS_CHARS: usize = 500;

#[derive(Debug, Clone, Copy, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BookingKind {
    Now,
    Scheduled,
}

/// Where the service happens: at the customer's (`home_service`, dispatched to a therapist) or at
/// a store (`in_store`, confirmed by the store).
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ServicePlace {
    #[default]
    HomeService,
    InStore,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLocation {
    pub lat: f64,
    pub lng: f64,
    /// Street address shown to the therapist.
    pub address: String,
    pub unit_number: Option<String>,
    pub landmark: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBooking {
    /// A service id from `GET /v1/services`.
    pub service_id: Uuid,
    /// `home_service` (default) or `in_store` (give `store_id`; no location).
    #[serde(rename = "type", default)]
    pub place: ServicePlace,
    /// The store, for an `in_store` booking (`GET /v1/stores/nearby`).
    pub store_id: Option<Uuid>,
    /// `now` (dispatched at once) or `scheduled` (for `scheduled_at`: a home service is offered
    /// ahead of time, or asked of `provider_id`; an `in_store` booking is booked at the store).
    pub booking_type: BookingKind,
    /// Required for `scheduled`: at least the lead time ahead (60 min by default), within the
    /// booking horizon (30 days), and with `provider_id` one of that therapist's slots.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// `scheduled` only: ask this therapist (a request they accept or decline within
    /// `scheduled_request_timeout`; it holds the slot meanwhile). Without it the platform finds one.
    pub provider_id: Option<Uuid>,
    /// One of the caller's saved addresses; or give `location`.
    pub address_id: Option<Uuid>,
    pub location: Option<NewLocation>,
    pub customer_notes: Option<String>,
    pub promo_code: Option<String>,
    /// `cash` (default, paid to the therapist at the end), `wallet` (charged when a therapist
    /// accepts; the balance must cover the estimate), or `card`, `gcash`, `paymaya` (paid through
    /// the gateway once accepted: `POST /v1/bookings/{id}/payment`).
    pub payment_method: Option<crate::money::PaymentMethod>,
    /// Home service, without `provider_id`: the most the customer accepts for the service and
    /// the travel surcharge (fees and promo aside). The booking is offered only to therapists
    /// whose price for it stays within. Default: the catalog price plus
    /// `dispatch.max_price_over_catalog_percent` (50 %).
    #[serde(default, with = "crate::domain::money::option")]
    #[schema(schema_with = max_price_schema)]
    pub max_price: Option<Decimal>,
}

fn max_price_schema() -> utoipa::openapi::Object {
    crate::domain::money::input_schema(
        "More than zero, at most 100000. The most the customer accepts for the service and travel surcharge.",
        true,
    )
}

fn idempotency_key(req: &HttpRequest) -> Result<String, ApiError> {
    optional_idempotency_key(req)?.ok_or_else(|| {
        ApiError::invalid(
            IDEMPOTENCY_HEADER,
            "is required: a unique string per booking attempt",
        )
    })
}

/// The `Idempotency-Key` header, when sent: 1 to [`MAX_IDEMPOTENCY_KEY`] visible ASCII
/// characters (spaces allowed inside, none around).
pub fn optional_idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let key = value.as_bytes().trim_ascii();
    // `HeaderValue::to_str` would let a tab through.
    if !key.iter().all(|b| (b' '..=b'~').contains(b)) {
        return Err(ApiError::invalid(
            IDEMPOTENCY_HEADER,
            "must be visible ASCII",
        ));
    }
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(ApiError::invalid(
            IDEMPOTENCY_HEADER,
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY} characters"),
        ));
    }
    Ok(Some(String::from_utf8_lossy(key).into_owned()))
}

/// The booking's location, from a saved address or the body.
struct Place {
    lat: f64,
    lng: f64,
    address: String,
    unit_number: Option<String>,
    landmark: Option<String>,
}

struct Promo {
    usage: dispatch::store::PromoUse,
    terms: PromoTerms,
}

/// Book now. Send an `Idempotency-Key`: the same key and body within 24 h answer the same
/// booking; the same key with another body answers 409.
#[utoipa::path(
    tag = "bookings",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "A unique string per booking attempt; retries reuse it")),
    request_body = CreateBooking,
    responses(
        (status = 201, description = "The booking (pending); a replay answers the same booking", body = BookingView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a customer", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive in time", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key was used with another body, the customer already has `max_pending_bookings` bookings waiting (type `/problems/too-many-pending-bookings`), or owes a cancellation fee their wallet did not cover", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (service, address, location, time, promo code); `scheduled_at` on a `now` booking", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/bookings")]
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    RawBody(body): RawBody,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Customer)?;
    let received_at = super::ReceivedAt::of(&req);
    let key = idempotency_key(&req)?;
    // The hash is over the parsed JSON (keys sorted), so whitespace or key order is not "another body".
    let canonical: serde_json::Value = super::extract::parse_json(&body)?;
    let request_hash = hex::encode(Sha256::digest(canonical.to_string().as_bytes()));
    let request: CreateBooking = super::extract::parse_json(&body)?;
    let user_id = caller.user_id();

    if let Some(existing) = replay(&state, user_id, &key, &request_hash).await? {
        return Ok(HttpResponse::Created()
            .insert_header(("Idempotent-Replayed", "true"))
            .json(existing));
    }

    if request.place == ServicePlace::InStore {
        if request.provider_id.is_some() {
            return Err(ApiError::invalid(
                "provider_id",
                "is only for home-service bookings (an in_store booking names its store_id)",
            ));
        }
        return create_in_store(&state, user_id, &key, &request_hash, &request).await;
    }
    let now = Utc::now();
    let settings = NewBookingSettings::load(&state.db).await?;
    let scheduling = &settings.scheduling;
    let mut errors = Vec::new();
    if request.store_id.is_some() {
        errors.push(FieldError::new(
            "store_id",
            "is only for in_store bookings (type: in_store)",
        ));
    }
    if let Some(max) = request.max_price {
        if request.provider_id.is_some() {
            errors.push(FieldError::new(
                "max_price",
                "is for bookings the platform dispatches, not requests to a named therapist",
            ));
        } else if max <= Decimal::ZERO || max > Decimal::from(super::therapist::MAX_SERVICE_PRICE) {
            errors.push(FieldError::new(
                "max_price",
                format!(
                    "must be more than 0 and at most {}",
                    super::therapist::MAX_SERVICE_PRICE
                ),
            ));
        }
    }
    match (request.booking_type, request.scheduled_at) {
        (BookingKind::Now, Some(_)) => errors.push(FieldError::new(
            "scheduled_at",
            "must be absent for a `now` booking (it starts at once)",
        )),
        (BookingKind::Now, None) => {
            if request.provider_id.is_some() {
                errors.push(FieldError::new(
                    "provider_id",
                    "is only for `scheduled` bookings (book-now goes to the nearest therapist)",
                ));
            }
        }
        (BookingKind::Scheduled, None) => errors.push(FieldError::new(
            "scheduled_at",
            "is required for a `scheduled` booking",
        )),
        (BookingKind::Scheduled, Some(at)) => {
            if let Err(ApiError::Validation {
                errors: mut found, ..
            }) = dispatch::reschedule::check_time("scheduled_at", at, now, scheduling)
            {
                errors.append(&mut found);
            }
        }
    }
    if let Some(notes) = &request.customer_notes {
        check_text(&mut errors, "customer_notes", notes, 0, 1000);
    }
    if request.address_id.is_some() == request.location.is_some() {
        errors.push(FieldError::new(
            "location",
            "give exactly one of address_id or location",
        ));
    }
    if let Some(location) = &request.location {
        check_lat_lng(
            &mut errors,
            "location.lat",
            "location.lng",
            location.lat,
            location.lng,
        );
        check_text(
            &mut errors,
            "location.address",
            &location.address,
            1,
            MAX_ADDRESS_CHARS,
        );
        if let Some(unit) = &location.unit_number {
            check_text(&mut errors, "location.unit_number", unit, 0, 50);
        }
        if let Some(landmark) = &location.landmark {
            check_text(&mut errors, "location.landmark", landmark, 0, 255);
        }
    }
    ApiError::check(errors)?;

    let service: Option<(i64, Decimal)> = sqlx::query_as(
        "SELECT id, base_price FROM services WHERE uuid = $1 AND deleted_at IS NULL AND is_active IS NOT FALSE",
    )
    .bind(request.service_id)
    .fetch_optional(&state.db)
    .await
    .context("finding the service")?;
    let (service_id, base_price) =
        service.ok_or_else(|| ApiError::invalid("service_id", "no such service"))?;
    let duration_minutes = state
        .catalog
        .duration_minutes(&state.db, service_id)
        .await?;
    let session = crate::schedule::slots::Session::minutes(
        i64::from(duration_minutes),
        scheduling.travel_buffer_minutes,
    );
    // A request to a named therapist: they must be bookable, offer the service at home, and
    // have the time free in their schedule. The exclusion constraint settles races at insert.
    let requested_provider = match (
        request.booking_type,
        request.provider_id,
        request.scheduled_at,
    ) {
        (BookingKind::Scheduled, Some(provider_uuid), Some(at)) => {
            let provider_id =
                super::schedule::bookable_therapist(&state, provider_uuid, service_id).await?;
            super::schedule::check_therapist_free(
                &state,
                provider_id,
                session,
                at,
                scheduling.slot_step,
            )
            .await?;
            Some(provider_id)
        }
        _ => None,
    };
    let request_expires_at = requested_provider.and(request.scheduled_at).map(|at| {
        (now + scheduling.request_timeout)
            .min(at - scheduling.lead)
            .max(now + chrono::Duration::seconds(1))
    });
    let place = match (&request.address_id, &request.location) {
        (Some(address_id), _) => saved_address(&state, user_id, *address_id).await?,
        (None, Some(location)) => Place {
            lat: location.lat,
            lng: location.lng,
            address: location.address.trim().to_owned(),
            unit_number: optional_text(&location.unit_number).map(str::to_owned),
            landmark: optional_text(&location.landmark).map(str::to_owned),
        },
        (None, None) => {
            return Err(ApiError::invalid(
                "location",
                "give exactly one of address_id or location",
            ))
        }
    };
    let promo = match optional_text(&request.promo_code) {
        Some(code) => Some(find_promo(&state, user_id, code, service_id, now).await?),
        None => None,
    };

    // Until a therapist accepts, the price is an estimate from the catalog price.
    let cfg = &settings.dispatch;
    let estimate = pricing::price_booking(&pricing::PriceInputs {
        price: base_price,
        base_distance_km: 0,
        per_km_surcharge: Decimal::ZERO,
        distance_m: 0.0,
        platform_fee: cfg.platform_fee,
        commission_rate: cfg.commission_rate,
        promo: promo.as_ref().map(|p| p.terms),
    });

    // The price ceiling of a booking the platform dispatches: the customer's, or the catalog
    // price plus the operator's margin. A request names its therapist, whose quote it chose.
    let max_service_amount = match requested_provider {
        Some(_) => None,
        None => Some(
            request
                .max_price
                .unwrap_or_else(|| cfg.default_price_ceiling(base_price)),
        ),
    };
    let max_pending = settings.max_pending;
    let payment_method = request
        .payment_method
        .unwrap_or(crate::money::PaymentMethod::Cash);
    check_payment_method(&state, user_id, payment_method, estimate.total_amount).await?;

    let mut tx = state.db.begin().await.context("starting the booking")?;
    let waiting = dispatch::store::lock_customer_and_count_waiting(&mut tx, user_id, &key, now)
        .await
        .context("counting waiting bookings")?;
    if waiting >= i64::from(max_pending) {
        // A retry of a booking that was created meanwhile is still a replay, not a refusal.
        tx.rollback().await.ok();
        if let Some(existing) = replay(&state, user_id, &key, &request_hash).await? {
            return Ok(HttpResponse::Created()
                .insert_header(("Idempotent-Replayed", "true"))
                .json(existing));
        }
        return Err(ApiError::TooManyPendingBookings { limit: max_pending });
    }
    let inserted: Option<i64> = sqlx::query_scalar(include_str!("../../sql/booking_insert.sql"))
        .bind(user_id)
        .bind(service_id)
        .bind(request.scheduled_at)
        .bind(estimate.service_price)
        .bind(estimate.distance_surcharge)
        .bind(estimate.platform_fee)
        .bind(estimate.promo_discount)
        .bind(estimate.total_amount)
        .bind(estimate.provider_earnings)
        .bind(estimate.commission_amount)
        .bind(estimate.commission_rate)
        .bind(optional_text(&request.customer_notes))
        .bind(&key)
        .bind(&request_hash)
        .bind(payment_method)
        .bind(match request.booking_type {
            BookingKind::Now => "now",
            BookingKind::Scheduled => "scheduled",
        })
        .bind(requested_provider)
        .bind(request_expires_at)
        .bind(duration_minutes)
        .bind(scheduling.travel_buffer_minutes as i32)
        .bind(&place.address)
        .bind(&place.unit_number)
        .bind(&place.landmark)
        .bind(coordinate(place.lat))
        .bind(coordinate(place.lng))
        .bind(max_service_amount)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|error| match crate::error::exclusion_violation(&error) {
            Some(_) => ApiError::FieldConflict(FieldError::new(
                "scheduled_at",
                "the therapist is already booked then: choose another slot",
            )),
            None => ApiError::from(error),
        })?;
    let Some(booking_id) = inserted else {
        // A concurrent request with the same key committed first: answer as a replay.
        tx.rollback().await.ok();
        return match replay(&state, user_id, &key, &request_hash).await? {
            Some(existing) => Ok(HttpResponse::Created()
                .insert_header(("Idempotent-Replayed", "true"))
                .json(existing)),
            None => Err(ApiError::Conflict(
                "a booking with this Idempotency-Key is being created; retry".into(),
            )),
        };
    };
    if let Some(promo) = &promo {
        dispatch::store::record_promo_use(
            &mut tx,
            &promo.usage,
            user_id,
            booking_id,
            requested_provider,
            estimate.promo_discount,
        )
        .await?;
    }
    crate::effects::emit_booking_event(&mut tx, booking_id, "booking.created").await?;
    let view = store::view(&mut tx, booking_id)
        .await
        .context("loading the booking")?;
    tx.commit().await.map_err(|e| match unique_violation(&e) {
        Some(_) => {
            ApiError::Conflict("a booking with this Idempotency-Key already exists; retry".into())
        }
        None => ApiError::from(e),
    })?;
    metrics::counter!("hilot_bookings_created_total").increment(1);
    if requested_provider.is_some() {
        if let Some(facts) = store::facts_by_id(&state.db, booking_id)
            .await
            .context("loading the booking")?
        {
            state.dispatcher.announce_request(&facts, &view).await;
        }
    } else {
        // The matcher hears at once, with what it needs (nothing is read back).
        let facts = store::BookingFacts::of_new_booking(
            booking_id,
            user_id,
            service_id,
            scheduling.travel_buffer_minutes as i32,
            &view,
        );
        let arrival = dispatch::matcher::Arrival::new(
            facts,
            &view,
            settings.dispatch,
            settings.scheduling.clone(),
            settings.read_at,
        );
        state
            .dispatcher
            .start_waiting(booking_id, received_at, arrival);
    }
    state.dispatcher.announce(booking_id).await;
    Ok(HttpResponse::Created().json(view))
}

/// Every operator setting a home-service booking is checked and priced with, read in one
/// query (the booking path reads no setting twice).
struct NewBookingSettings {
    scheduling: crate::schedule::SchedulingSettings,
    dispatch: dispatch_settings::DispatchSettings,
    max_pending: u32,
    /// When they were read (the matcher adopts the newest a booking was priced with).
    read_at: std::time::Instant,
}

impl NewBookingSettings {
    async fn load(db: &sqlx::PgPool) -> Result<Self, ApiError> {
        let read_at = std::time::Instant::now();
        let keys: Vec<&str> = dispatch_settings::KEYS
            .iter()
            .copied()
            .chain([
                "scheduling",
                "scheduled_request_timeout",
                "max_pending_bookings",
            ])
            .collect();
        let rows: Vec<(String, serde_json::Value)> =
            sqlx::query_as("SELECT key, value FROM app_settings WHERE key = ANY($1)")
                .bind(&keys)
                .fetch_all(db)
                .await
                .context("reading the booking settings")?;
        let mut values: std::collections::HashMap<String, serde_json::Value> =
            rows.into_iter().collect();
        let max_pending = crate::db::app_settings::max_pending_bookings_of(
            values.remove("max_pending_bookings").as_ref(),
        );
        let scheduling = crate::schedule::SchedulingSettings::from_values(
            values.remove("scheduling"),
            values.remove("scheduled_request_timeout"),
        );
        Ok(Self {
            scheduling,
            dispatch: dispatch_settings::DispatchSettings::from_values(values),
            max_pending,
            read_at,
        })
    }
}

/// An in-store booking: a room at a store, now or at `scheduled_at`, waiting for the store to
/// confirm.
async fn create_in_store(
    state: &AppState,
    user_id: i64,
    key: &str,
    request_hash: &str,
    request: &CreateBooking,
) -> Result<HttpResponse, ApiError> {
    let now = Utc::now();
    let mut errors = Vec::new();
    if request.max_price.is_some() {
        errors.push(FieldError::new(
            "max_price",
            "is for home services: a store's price is its own",
        ));
    }
    if request.store_id.is_none() {
        errors.push(FieldError::new(
            "store_id",
            "is required for in_store bookings",
        ));
    }
    if request.address_id.is_some() || request.location.is_some() {
        errors.push(FieldError::new(
            "location",
            "an in_store booking happens at the store: give store_id, not address_id or location",
        ));
    }
    match (request.booking_type, request.scheduled_at) {
        (BookingKind::Now, Some(_)) => errors.push(FieldError::new(
            "scheduled_at",
            "is only for scheduled bookings",
        )),
        (BookingKind::Scheduled, None) => errors.push(FieldError::new(
            "scheduled_at",
            "is required for scheduled bookings",
        )),
        (BookingKind::Scheduled, Some(at)) if at <= now => {
            errors.push(FieldError::new("scheduled_at", "must be in the future"))
        }
        _ => {}
    }
    if let Some(notes) = &request.customer_notes {
        check_text(&mut errors, "customer_notes", notes, 0, 1000);
    }
    ApiError::check(errors)?;
    let service_id = state
        .catalog
        .service_id(&state.db, request.service_id)
        .await?
        .ok_or_else(|| ApiError::invalid("service_id", "no such service"))?;
    let promo = match optional_text(&request.promo_code) {
        Some(code) => Some(find_promo(state, user_id, code, service_id, now).await?),
        None => None,
    };
    let payment_method = request
        .payment_method
        .unwrap_or(crate::money::PaymentMethod::Cash);
    // The store's price is known once the store is; a wallet that falls short when the store
    // confirms switches the booking to cash, as for home services.
    check_payment_method(state, user_id, payment_method, Decimal::ZERO).await?;
    let visit = crate::stores::visits::VisitRequest {
        payment_method,
        customer_id: user_id,
        store_uuid: request.store_id.expect("checked above"),
        service_id,
        scheduled_at: request.scheduled_at,
        customer_notes: optional_text(&request.customer_notes),
        promo: promo.map(|p| (p.usage, p.terms)),
        idempotency_key: key,
        request_hash,
        max_pending: NewBookingSettings::load(&state.db).await?.max_pending,
    };
    let refusal = match crate::stores::visits::create(&state.db, &visit, now).await? {
        crate::stores::visits::Created::New(booking_id) => {
            let view = crate::stores::visits::view(&state.db, booking_id).await?;
            state.dispatcher.announce(booking_id).await;
            return Ok(HttpResponse::Created().json(view));
        }
        crate::stores::visits::Created::KeyTaken => {
            ApiError::Conflict("a booking with this Idempotency-Key is being created; retry".into())
        }
        crate::stores::visits::Created::TooManyPending => ApiError::TooManyPendingBookings {
            limit: visit.max_pending,
        },
    };
    // A retry of a booking that was created meanwhile is still a replay, not a refusal.
    match replay(state, user_id, key, request_hash).await? {
        Some(existing) => Ok(HttpResponse::Created()
            .insert_header(("Idempotent-Replayed", "true"))
            .json(existing)),
        None => Err(refusal),
    }
}

/// A booking answered again for a retried request: home service or in store.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Replayed {
    Home(Box<BookingView>),
    InStore(Box<crate::stores::visits::InStoreBooking>),
}

/// A wallet must cover the estimate; card and e-wallets need a configured gateway.
async fn check_payment_method(
    state: &AppState,
    user_id: i64,
    method: crate::money::PaymentMethod,
    estimate: Decimal,
) -> Result<(), ApiError> {
    use crate::money::PaymentMethod;
    let balance = crate::money::views::wallet(&state.db, user_id)
        .await
        .context("reading the wallet")?
        .map_or(Decimal::ZERO, |w| w.balance);
    if balance < Decimal::ZERO {
        // A cancellation or no-show fee the wallet could not cover: settled before the next
        // booking, whatever its method, or a customer could run up fees without end.
        return Err(ApiError::Conflict(format!(
            "you owe {} in cancellation fees; top up your wallet to book again",
            crate::money::ledger::money_text(-balance)
        )));
    }
    match method {
        PaymentMethod::Cash => Ok(()),
        PaymentMethod::Wallet => {
            if balance < estimate {
                return Err(ApiError::invalid(
                    "payment_method",
                    format!(
                        "the wallet balance ({}) does not cover the estimated {}; top up or choose another method",
                        crate::money::ledger::money_text(balance),
                        crate::money::ledger::money_text(estimate)
                    ),
                ));
            }
            Ok(())
        }
        _ => state.payments.gateway().map(|_| ()),
    }
}

/// The booking an earlier request with this key created, if any (409 if its body differed).
async fn replay(
    state: &AppState,
    user_id: i64,
    key: &str,
    request_hash: &str,
) -> Result<Option<Replayed>, ApiError> {
    let existing: Option<(i64, Option<String>, String)> = sqlx::query_as(
        "SELECT id, idempotency_request_hash, type::text FROM bookings \
         WHERE customer_id = $1 AND idempotency_key = $2 AND created_at >= $3",
    )
    .bind(user_id)
    .bind(key)
    .bind(Utc::now() - IDEMPOTENCY_WINDOW)
    .fetch_optional(&state.db)
    .await
    .context("looking up the idempotency key")?;
    match existing {
        None => Ok(None),
        Some((id, hash, kind)) if hash.as_deref() == Some(request_hash) => {
            if kind == "in_store" {
                let view = crate::stores::visits::view(&state.db, id).await?;
                Ok(Some(Replayed::InStore(Box::new(view))))
            } else {
                state
                    .dispatcher
                    .view(id)
                    .await
                    .map(|v| Some(Replayed::Home(Box::new(v))))
            }
        }
        Some(_) => Err(ApiError::Conflict(
            "this Idempotency-Key was already used with a different request body".into(),
        )),
    }
}

async fn saved_address(
    state: &AppState,
    user_id: i64,
    address_id: Uuid,
) -> Result<Place, ApiError> {
    let row: Option<(f64, f64, String, Option<String>, String)> = sqlx::query_as(
        "SELECT latitude::float8, longitude::float8, address_line1, address_line2, city \
         FROM user_addresses WHERE uuid = $1 AND user_id = $2",
    )
    .bind(address_id)
    .bind(user_id)
    .fetch_optional(&state.db)
    .await
    .context("finding the address")?;
    // Someone else's address is "no such address", exactly like a missing one.
    let (lat, lng, line1, line2, city) =
        row.ok_or_else(|| ApiError::invalid("address_id", "no such address of yours"))?;
    let address = [Some(line1), line2, Some(city)]
        .into_iter()
        .flatten()
        .filter(|part| !part.trim().is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    // Each line fits its own column; joined, they must fit the booking's.
    if address.chars().count() > MAX_ADDRESS_CHARS {
        return Err(ApiError::invalid(
            "address_id",
            format!(
                "this saved address is longer than the {MAX_ADDRESS_CHARS} characters a booking \
                 holds; book with `location` and a shorter address"
            ),
        ));
    }
    Ok(Place {
        lat,
        lng,
        address,
        unit_number: None,
        landmark: None,
    })
}

async fn find_promo(
    state: &AppState,
    user_id: i64,
    code: &str,
    service_id: i64,
    now: DateTime<Utc>,
) -> Result<Promo, ApiError> {
    type Row = (
        i64,
        String,
        Decimal,
        Option<Decimal>,
        Option<Decimal>,
        DateTime<Utc>,
        DateTime<Utc>,
        Option<i32>,
        Option<i32>,
        Option<i32>,
        Option<serde_json::Value>,
        Option<bool>,
        Option<bool>,
        Option<serde_json::Value>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, discount_type::text, discount_value, max_discount_amount, min_booking_amount, valid_from, valid_until, \
                usage_limit, usage_count, per_user_limit, applicable_service_ids, new_customers_only, is_active, \
                applicable_provider_ids \
         FROM promo_codes WHERE upper(code) = upper($1)",
    )
    .bind(code)
    .fetch_optional(&state.db)
    .await
    .context("finding the promo code")?;
    let invalid = |why: &str| ApiError::invalid("promo_code", why);
    let (
        id,
        kind,
        value,
        max,
        min,
        from,
        until,
        limit,
        count,
        per_user,
        services,
        new_only,
        active,
        provider_ids,
    ) = row.ok_or_else(|| invalid("no such promo code"))?;
    if active == Some(false) {
        return Err(invalid("is no longer active"));
    }
    if now < from {
        return Err(invalid("is not valid yet"));
    }
    if now > until {
        return Err(invalid("has expired"));
    }
    if limit.is_some_and(|l| count.unwrap_or(0) >= l) {
        return Err(invalid("has been used up"));
    }
    if let Some(serde_json::Value::Array(ids)) = &services {
        if !ids.iter().any(|v| v.as_i64() == Some(service_id)) {
            return Err(invalid("does not apply to this service"));
        }
    }
    let used: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM promo_code_usages WHERE promo_code_id = $1 AND user_id = $2",
    )
    .bind(id)
    .bind(user_id)
    .fetch_one(&state.db)
    .await
    .context("counting promo uses")?;
    if used >= i64::from(per_user.unwrap_or(1)) {
        return Err(invalid("you have already used this promo code"));
    }
    // "New customers only" and the therapists or stores a code is for are settled in the
    // booking's transaction (`record_promo_use`), after the customer's lock.
    let providers = match provider_ids {
        Some(serde_json::Value::Array(ids)) => {
            Some(ids.iter().filter_map(serde_json::Value::as_i64).collect())
        }
        _ => None,
    };
    Ok(Promo {
        usage: dispatch::store::PromoUse {
            id,
            new_customers_only: new_only == Some(true),
            providers,
        },
        terms: PromoTerms {
            discount: if kind == "percentage" {
                Discount::Percentage {
                    percent: value,
                    max,
                }
            } else {
                Discount::FixedAmount(value)
            },
            min_booking_amount: min,
        },
    })
}

/// The caller as the dispatcher sees them (their therapist provider, if any).
pub(super) async fn dispatch_caller(
    state: &AppState,
    caller: &Caller,
) -> Result<dispatch::Caller, ApiError> {
    // A suspended or rejected therapist is no therapist here (`providers::suspension`, the
    // rule sockets and going online follow): their token still serves them as a customer, but
    // they can no longer read, move, cancel or reschedule the bookings of their practice
    // (completing one would earn them a payout).
    let provider_id = if caller.has(Role::Therapist) {
        match crate::providers::own_therapist(&state.db, caller.user_id()).await {
            Ok(provider) if crate::providers::suspension(&provider).is_none() => Some(provider.id),
            Ok(_) | Err(ApiError::NotFound(_)) => None,
            Err(error) => return Err(error),
        }
    } else {
        None
    };
    Ok(dispatch::Caller {
        user_id: caller.user_id(),
        provider_id,
        is_admin: caller.is_admin(),
    })
}

/// A booking, for its customer, its therapist or an admin (404 for anyone else).
#[utoipa::path(
    tag = "bookings",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id")),
    responses(
        (status = 200, description = "The booking", body = BookingView),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/bookings/{booking_id}")]
pub async fn get_booking(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<BookingView>, ApiError> {
    let who = dispatch_caller(&state, &caller).await?;
    let booking = state
        .dispatcher
        .visible_booking(path.into_inner(), who)
        .await?;
    state.dispatcher.view(booking.id).await.map(web::Json)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only bookings in this status.
    pub status: Option<BookingStatus>,
    /// Default 50, at most 200.
    pub limit: Option<i64>,
}

/// The caller's own bookings (as customer or therapist), newest first.
#[utoipa::path(
    tag = "bookings",
    security(("bearer" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "Bookings, newest first (timelines omitted)", body = [BookingView]),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/bookings")]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<web::Json<Vec<BookingView>>, ApiError> {
    let limit = params.limit.unwrap_or(50);
    let mut errors = Vec::new();
    crate::domain::validate::check_range(&mut errors, "limit", limit, 1, 200);
    ApiError::check(errors)?;
    store::list_for_user(&state.db, caller.user_id(), params.status, limit)
        .await
        .context("listing bookings")
        .map(web::Json)
}

/// Accept an offer made to the caller. The first accept wins; later ones answer 409.
#[utoipa::path(
    tag = "bookings",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id from the offer")),
    responses(
        (status = 200, description = "The booking, now accepted", body = BookingView),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No offer of this booking was made to you", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The offer expired or was taken, or you already have an active booking", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/bookings/{booking_id}/accept")]
pub async fn accept(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<BookingView>, ApiError> {
    let who = dispatch_caller(&state, &caller).await?;
    state
        .dispatcher
        .accept(path.into_inner(), who)
        .await?
        .view(&state.dispatcher)
        .await
        .map(web::Json)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Declined {
    pub booking_id: Uuid,
    pub declined: bool,
}

/// Decline an offer made to the caller; it moves on to the next therapist.
#[utoipa::path(
    tag = "bookings",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id from the offer")),
    responses(
        (status = 200, description = "Declined", body = Declined),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No offer of this booking was made to you", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The offer is no longer open", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/bookings/{booking_id}/decline")]
pub async fn decline(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<Declined>, ApiError> {
    let who = dispatch_caller(&state, &caller).await?;
    let booking_id = path.into_inner();
    state.dispatcher.decline(booking_id, who).await?;
    Ok(web::Json(Declined {
        booking_id,
        declined: true,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// `en_route`, `arrived`, `in_progress`, `completed` or `no_show` (`cancelled` answers 409:
    /// use `/cancel`).
    pub status: BookingStatus,
}

/// Move a booking along its lifecycle (the assigned therapist). 409 names the current status;
/// `cancelled` is always 409 here: only `POST /v1/bookings/{id}/cancel` cancels.
#[utoipa::path(
    tag = "bookings",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id")),
    request_body = StatusRequest,
    responses(
        (status = 200, description = "The booking after the change", body = BookingView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the assigned therapist", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Illegal transition from the current status, or `cancelled` (use /cancel)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/bookings/{booking_id}/status")]
pub async fn change_status(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Json(body): Json<StatusRequest>,
) -> Result<web::Json<BookingView>, ApiError> {
    let who = dispatch_caller(&state, &caller).await?;
    state
        .dispatcher
        .change_status(
            path.into_inner(),
            who,
            body.status,
            &AuditContext::from_request(&req, caller.user_id()),
        )
        .await?
        .view(&state.dispatcher)
        .await
        .map(web::Json)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    pub reason: String,
}

/// Cancel (customer, assigned therapist or admin). Free while pending; after acceptance the
/// customer pays app_settings `cancellation_policy`'s fee. The therapist is free again at once.
#[utoipa::path(
    tag = "bookings",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id")),
    request_body = CancelRequest,
    responses(
        (status = 200, description = "The cancelled booking, with its cancellation_fee", body = BookingView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed to cancel now", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Too late to cancel", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/bookings/{booking_id}/cancel")]
pub async fn cancel(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
    Json(body): Json<CancelRequest>,
) -> Result<web::Json<BookingView>, ApiError> {
    let mut errors = Vec::new();
    check_text(&mut errors, "reason", &body.reason, 1, 500);
    ApiError::check(errors)?;
    let who = dispatch_caller(&state, &caller).await?;
    state
        .dispatcher
        .cancel(
            path.into_inner(),
            who,
            body.reason.trim(),
            &AuditContext::from_request(&req, caller.user_id()),
        )
        .await?
        .view(&state.dispatcher)
        .await
        .map(web::Json)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderPosition {
    pub lat: f64,
    pub lng: f64,
    pub heading: Option<f64>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Tracking {
    pub status: BookingStatus,
    pub eta_seconds: Option<u32>,
    /// Only while the booking is `accepted` or `en_route`.
    pub provider_location: Option<ProviderPosition>,
}

/// Where the therapist is, for the booking's own customer only.
#[utoipa::path(
    tag = "bookings",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path, description = "The booking id")),
    responses(
        (status = 200, description = "Status, ETA and position", body = Tracking),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/bookings/{booking_id}/track")]
pub async fn track(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<web::Json<Tracking>, ApiError> {
    let booking = store::facts_by_uuid(&state.db, path.into_inner())
        .await
        .context("loading the booking")?
        .filter(|b| b.customer_id == caller.user_id())
        .ok_or_else(|| ApiError::not_found("booking"))?;
    let (fix, eta_seconds) = state.dispatcher.track(&booking);
    Ok(web::Json(Tracking {
        status: booking.status,
        eta_seconds,
        provider_location: fix.map(|f| ProviderPosition {
            lat: f.point.lat,
            lng: f.point.lng,
            heading: f.heading,
            at: f.at,
        }),
    }))
}
