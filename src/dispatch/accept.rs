//! Accepting and declining an offer, on any node: everything is decided in one transaction.
//!
//! Accept locks the booking, then the caller's offer; checks that the offer is open and
//! unexpired and that the therapist is eligible now (verified, active, holding the therapist
//! role, still online, not holding an active booking), whatever node made the offer; then the compare-and-set `UPDATE` takes the booking, with the unique index on active
//! bookings per therapist as the last word. The other open offers lose the race in the same
//! transaction.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::lifecycle::BookingStatus;
use super::matcher::{MatchEvent, ACCEPT_GRACE};
use super::offers::{self, Outcome};
use super::settings::DispatchSettings;
use super::store::{self, BookingFacts};
use super::transitions::{self, Changed, Transition};
use super::{pricing, Caller, Dispatcher};
use crate::error::{exclusion_violation, unique_violation, ApiError, Context as _};

#[derive(sqlx::FromRow)]
struct LockedOffer {
    id: i64,
    outcome: Option<Outcome>,
    expired: bool,
    distance_m: f64,
    sent_at: DateTime<Utc>,
    eligible: bool,
    online: bool,
    busy: bool,
}

/// The therapist's terms for the booking's service, read inside the accept.
#[derive(sqlx::FromRow)]
pub(super) struct TherapistTerms {
    price: Decimal,
    pub(super) terms_updated_at: Option<DateTime<Utc>>,
    base_distance_km: Option<i32>,
    per_km_surcharge: Option<Decimal>,
    commission_rate: Option<Decimal>,
    promo_kind: Option<String>,
    promo_value: Option<Decimal>,
    promo_max: Option<Decimal>,
    promo_min: Option<Decimal>,
    platform_fee_setting: Option<serde_json::Value>,
    commission_rate_setting: Option<serde_json::Value>,
}

impl TherapistTerms {
    /// The promo terms reserved for the booking, if any.
    fn promo(&self) -> Option<pricing::PromoTerms> {
        let (kind, value) = (self.promo_kind.as_deref()?, self.promo_value?);
        Some(pricing::PromoTerms {
            discount: if kind == "percentage" {
                pricing::Discount::Percentage {
                    percent: value,
                    max: self.promo_max,
                }
            } else {
                pricing::Discount::FixedAmount(value)
            },
            min_booking_amount: self.promo_min,
        })
    }

    /// The booking's final price on these terms, `distance_m` from the customer.
    pub(super) fn price(&self, distance_m: f64) -> pricing::BookingPrice {
        let cfg = self.settings();
        pricing::price_booking(&pricing::PriceInputs {
            price: self.price,
            base_distance_km: self.base_distance_km.unwrap_or(5),
            per_km_surcharge: self.per_km_surcharge.unwrap_or_default(),
            distance_m,
            platform_fee: cfg.platform_fee,
            commission_rate: self.commission_rate.unwrap_or(cfg.commission_rate),
            promo: self.promo(),
        })
    }

    /// A therapist's terms for a booking's service, with the promo reserved for the booking.
    pub(super) async fn read(
        tx: &mut sqlx::PgConnection,
        provider_id: i64,
        service_id: i64,
        booking_id: i64,
    ) -> sqlx::Result<Option<Self>> {
        sqlx::query_as(include_str!("../../sql/accept_terms.sql"))
            .bind(provider_id)
            .bind(service_id)
            .bind(booking_id)
            .fetch_optional(tx)
            .await
    }

    /// The operator's settings the price depends on, parsed as everywhere else.
    fn settings(&self) -> DispatchSettings {
        DispatchSettings::from_values(
            [
                ("platform_fee", self.platform_fee_setting.clone()),
                ("commission_rate", self.commission_rate_setting.clone()),
            ]
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_owned(), value?)))
            .collect(),
        )
    }
}

/// An accept once it is decided, by an offer or by a request to a named therapist: what both
/// write, in the accepting transaction.
pub(super) struct Acceptance<'a> {
    pub booking_id: i64,
    pub provider_id: i64,
    pub price: &'a pricing::BookingPrice,
    /// From the therapist to the customer, and the travel time it takes.
    pub distance_m: f64,
    pub travel_minutes: i32,
    pub actor_user_id: i64,
    /// The offer accepted, if the booking came by one.
    pub offer_id: Option<i64>,
}

impl Acceptance<'_> {
    /// The compare-and-set (`accept_booking.sql`): the booking, still pending, becomes the
    /// therapist's at its final price. `false` when it was no longer pending.
    pub(super) async fn take_booking(&self, tx: &mut sqlx::PgConnection) -> sqlx::Result<bool> {
        let taken = sqlx::query(&format!(
            "{} AND {}",
            include_str!("../../sql/accept_booking.sql").trim_end(),
            store::actor_condition(12)
        ))
        .bind(self.booking_id)
        .bind(self.provider_id)
        .bind(self.price.service_price)
        .bind(self.price.distance_surcharge)
        .bind(self.price.platform_fee)
        .bind(self.price.promo_discount)
        .bind(self.price.total_amount)
        .bind(self.price.commission_rate)
        .bind(self.price.commission_amount)
        .bind(self.price.provider_earnings)
        .bind(self.travel_minutes)
        .bind(store::actor_text(Some(self.actor_user_id)))
        .bind("Accepted by the therapist")
        .execute(tx)
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    /// What is recorded beside it (`accept_records.sql`): the offer closed, the travel
    /// estimate, the promo's final discount.
    pub(super) async fn record(&self, tx: &mut sqlx::PgConnection) -> sqlx::Result<()> {
        sqlx::query(include_str!("../../sql/accept_records.sql"))
            .bind(self.offer_id)
            .bind(self.booking_id)
            .bind(self.distance_m)
            .bind(self.travel_minutes)
            .bind(self.price.promo_discount)
            .execute(tx)
            .await
            .map(|_| ())
    }
}

/// Why an accept was refused after the offer itself was closed (committed), so the matcher
/// moves on.
struct ClosedRefusal {
    error: ApiError,
    reason: &'static str,
}

/// Withdraws the caller's offer (committing that alone, so the booking goes on to the next
/// therapist) and answers the refusal.
async fn withdraw(
    mut tx: Transaction<'static, Postgres>,
    booking_id: i64,
    provider_id: i64,
    refusal: ClosedRefusal,
) -> AcceptError {
    let closed = async {
        offers::close(&mut *tx, booking_id, provider_id, Outcome::Withdrawn).await?;
        tx.commit().await
    }
    .await
    .context("withdrawing the offer");
    match closed {
        Ok(()) => AcceptError::Closed(refusal),
        Err(error) => AcceptError::from(error),
    }
}

enum AcceptError {
    /// Refused; nothing changed.
    Refused(ApiError),
    /// Refused, and the offer closed.
    Closed(ClosedRefusal),
}

impl From<ApiError> for AcceptError {
    fn from(error: ApiError) -> Self {
        AcceptError::Refused(error)
    }
}

impl Dispatcher {
    /// Accepts an offer: the first accept wins; others get 409.
    pub async fn accept(&self, booking_uuid: Uuid, caller: Caller) -> Result<Changed, ApiError> {
        // An offer accepted before it expired counts, however long the transaction then waits.
        let asked_at = chrono::Utc::now();
        let started = std::time::Instant::now();
        let provider_id = caller
            .provider_id
            .ok_or_else(|| ApiError::not_found("booking"))?;
        // One connection for the whole answer, from the answers' own pool: the booking is read
        // in the transaction that takes it.
        let mut tx = self
            .inner
            .answers
            .begin()
            .await
            .context("starting the accept")?;
        transitions::step_took("accept_connection", started);
        let booking = store::facts_by_uuid(&mut *tx, booking_uuid)
            .await
            .context("loading the booking")?
            .ok_or_else(|| ApiError::not_found("booking"))?;
        if booking.provider_id == Some(provider_id) && booking.status == BookingStatus::Accepted {
            // A repeated accept of one's own booking.
            return Ok(Changed {
                booking_id: booking.id,
            });
        }
        if booking.requested_provider_id == Some(provider_id) {
            // A request to this therapist by name is answered in a transaction of its own.
            drop(tx);
            return self.accept_request(&booking, caller, asked_at).await;
        }
        match self
            .commit_accept(tx, &booking, provider_id, caller.user_id, asked_at)
            .await
        {
            Ok(view) => {
                metrics::counter!("hilot_bookings_accepted_total").increment(1);
                Ok(view)
            }
            Err(AcceptError::Closed(refusal)) => {
                self.signal(MatchEvent::OfferClosed {
                    booking_id: booking.id,
                    provider_id,
                    outcome: Outcome::Withdrawn,
                });
                self.tell_withdrawn(booking.uuid, &[provider_id], refusal.reason)
                    .await;
                Err(refusal.error)
            }
            Err(AcceptError::Refused(error)) => {
                tracing::debug!(booking_id = booking.id, provider_id, %error, "accept refused");
                Err(error)
            }
        }
    }

    async fn commit_accept(
        &self,
        mut tx: Transaction<'static, Postgres>,
        booking: &BookingFacts,
        provider_id: i64,
        actor: i64,
        asked_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Changed, AcceptError> {
        let began = std::time::Instant::now();
        let status: BookingStatus =
            sqlx::query_scalar("SELECT status FROM bookings WHERE id = $1 FOR UPDATE")
                .bind(booking.id)
                .fetch_one(&mut *tx)
                .await
                .context("locking the booking")?;
        let offer: Option<LockedOffer> =
            sqlx::query_as(include_str!("../../sql/accept_lock_offer.sql"))
                .bind(booking.id)
                .bind(provider_id)
                .bind(asked_at)
                .bind(ACCEPT_GRACE.num_milliseconds() as f64 / 1000.0)
                .fetch_optional(&mut *tx)
                .await
                .context("locking the offer")?;
        let Some(offer) = offer else {
            return Err(AcceptError::Refused(ApiError::NotFound(
                "booking: no offer of this booking was made to you".into(),
            )));
        };
        match offer.outcome {
            Some(Outcome::LostRace) => {
                return Err(AcceptError::Refused(ApiError::Conflict(format!(
                    "the offer was taken: the booking is {}",
                    status.as_str()
                ))))
            }
            Some(outcome) => {
                return Err(AcceptError::Refused(ApiError::Conflict(format!(
                    "the offer is no longer open ({}; the booking is {})",
                    serde_json::to_value(outcome)
                        .unwrap_or_default()
                        .as_str()
                        .unwrap_or(""),
                    status.as_str()
                ))))
            }
            None if offer.expired => {
                return Err(AcceptError::Refused(ApiError::Conflict(
                    "the offer expired".into(),
                )))
            }
            None => {}
        }
        if status != BookingStatus::Pending {
            return Err(AcceptError::Refused(ApiError::Conflict(format!(
                "the offer was taken: the booking is {}",
                status.as_str()
            ))));
        }
        // The therapist's eligibility, read now: the offer was made on what the matcher knew
        // then, on whichever node; an ineligible therapist's offer is withdrawn, so the booking
        // goes on to the next one.
        let ineligible = if !offer.eligible {
            Some(ApiError::Forbidden(
                "only a verified, active therapist may accept offers".into(),
            ))
        } else if !offer.online {
            Some(ApiError::Conflict(
                "you are offline: go online to accept offers".into(),
            ))
        } else if offer.busy {
            Some(ApiError::Conflict(
                "you already have an active booking".into(),
            ))
        } else {
            None
        };
        if let Some(error) = ineligible {
            return Err(withdraw(
                tx,
                booking.id,
                provider_id,
                ClosedRefusal {
                    error,
                    reason: "not_eligible",
                },
            )
            .await);
        }
        let terms = TherapistTerms::read(&mut tx, provider_id, booking.service_id, booking.id)
            .await
            .context("reading the therapist's terms")?;
        let Some(terms) = terms else {
            return Err(withdraw(
                tx,
                booking.id,
                provider_id,
                ClosedRefusal {
                    error: ApiError::Conflict("you no longer offer this service".into()),
                    reason: "accept_failed",
                },
            )
            .await);
        };
        if terms.terms_updated_at.is_some_and(|at| at > offer.sent_at) {
            // The offer was made (and its earnings shown) on the terms of its time; the price
            // a customer is charged is never one set after the offer reached the therapist.
            return Err(withdraw(
                tx,
                booking.id,
                provider_id,
                ClosedRefusal {
                    error: ApiError::Conflict(
                        "your price or travel terms for this service changed after this offer was \
                     made: the offer is withdrawn, and your next offers use the new terms"
                            .into(),
                    ),
                    reason: "terms_changed",
                },
            )
            .await);
        }
        let price = terms.price(offer.distance_m);
        if booking
            .max_service_amount
            .is_some_and(|max| price.service_price + price.distance_surcharge > max)
        {
            // The matcher offers a booking only within the customer's price ceiling; an offer
            // a dispatcher made by hand may not be, and the customer never agreed to that price.
            let error = ApiError::Conflict(
                "your price for this booking is above what the customer accepts: the offer is \
                 withdrawn"
                    .into(),
            );
            let refusal = ClosedRefusal {
                error,
                reason: "over_price",
            };
            return Err(withdraw(tx, booking.id, provider_id, refusal).await);
        }
        let travel_minutes = self.inner.eta.eta_minutes(offer.distance_m);
        let acceptance = Acceptance {
            booking_id: booking.id,
            provider_id,
            price: &price,
            distance_m: offer.distance_m,
            travel_minutes,
            actor_user_id: actor,
            offer_id: Some(offer.id),
        };
        match acceptance.take_booking(&mut tx).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(AcceptError::Refused(ApiError::Conflict(
                    "the offer was taken: the booking changed meanwhile".into(),
                )))
            }
            Err(error) if unique_violation(&error).is_some() => {
                return Err(AcceptError::Refused(ApiError::Conflict(
                    "you already have an active booking".into(),
                )))
            }
            Err(error) if exclusion_violation(&error).is_some() => {
                return Err(AcceptError::Refused(ApiError::Conflict(
                    "this booking would overlap another of your bookings".into(),
                )))
            }
            Err(error) => return Err(AcceptError::Refused(ApiError::from(error))),
        }
        acceptance
            .record(&mut tx)
            .await
            .context("recording the accepted offer, travel estimate and promo discount")?;
        transitions::step_took("accept_statements", began);
        self.commit_transition(
            tx,
            Transition {
                booking,
                to: BookingStatus::Accepted,
                provider_id: Some(provider_id),
                reason: None,
                effects_written: false,
            },
        )
        .await
        .map_err(AcceptError::Refused)
    }

    /// Declines an open offer; the matcher moves on to the next therapist.
    pub async fn decline(&self, booking_uuid: Uuid, caller: Caller) -> Result<(), ApiError> {
        let provider_id = caller
            .provider_id
            .ok_or_else(|| ApiError::not_found("booking"))?;
        let mut conn = self
            .inner
            .answers
            .acquire()
            .await
            .context("starting the decline")?;
        let booking = store::facts_by_uuid(&mut *conn, booking_uuid)
            .await
            .context("loading the booking")?
            .ok_or_else(|| ApiError::not_found("booking"))?;
        if booking.requested_provider_id == Some(provider_id) {
            drop(conn);
            return self.decline_request(&booking, caller).await;
        }
        let declined = offers::close(&mut *conn, booking.id, provider_id, Outcome::Declined)
            .await
            .context("declining the offer")?;
        if !declined {
            let ever: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM booking_offers WHERE booking_id = $1 AND provider_id = $2)",
            )
            .bind(booking.id)
            .bind(provider_id)
            .fetch_one(&mut *conn)
            .await
            .context("reading the offers")?;
            return Err(if ever {
                ApiError::Conflict("the offer is no longer open".into())
            } else {
                ApiError::NotFound("booking: no offer of this booking was made to you".into())
            });
        }
        self.signal(MatchEvent::OfferClosed {
            booking_id: booking.id,
            provider_id,
            outcome: Outcome::Declined,
        });
        metrics::counter!("hilot_offers_declined_total").increment(1);
        Ok(())
    }
}
