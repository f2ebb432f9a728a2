//! Booking prices (pure): the chosen therapist's price and distance surcharge, the platform
//! fee, the promo discount, and the platform's commission. Decimal throughout, never float.

use rust_decimal::Decimal;

use crate::domain::money::round_money;
use crate::domain::pricing::quote;
use crate::geo::index::ServiceOffer;

/// A promo code's discount rule (from `promo_codes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discount {
    /// Percent off the service and surcharge, capped at `max` when set.
    Percentage {
        percent: Decimal,
        max: Option<Decimal>,
    },
    FixedAmount(Decimal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromoTerms {
    pub discount: Discount,
    pub min_booking_amount: Option<Decimal>,
}

/// Everything the booking row stores about money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookingPrice {
    pub service_price: Decimal,
    pub distance_surcharge: Decimal,
    pub platform_fee: Decimal,
    pub promo_discount: Decimal,
    pub total_amount: Decimal,
    pub commission_rate: Decimal,
    pub commission_amount: Decimal,
    pub provider_earnings: Decimal,
}

/// Inputs of a price.
#[derive(Debug, Clone, Copy)]
pub struct PriceInputs {
    pub price: Decimal,
    pub base_distance_km: i32,
    pub per_km_surcharge: Decimal,
    pub distance_m: f64,
    pub platform_fee: Decimal,
    /// Percent the platform keeps of the service and surcharge.
    pub commission_rate: Decimal,
    pub promo: Option<PromoTerms>,
}

/// The discount a promo gives on `amount` (0 when the booking is below its minimum).
pub fn promo_discount(terms: &PromoTerms, amount: Decimal) -> Decimal {
    if terms.min_booking_amount.is_some_and(|min| amount < min) {
        return Decimal::ZERO;
    }
    let raw = match terms.discount {
        Discount::Percentage { percent, max } => {
            let off = round_money(amount * percent / Decimal::ONE_HUNDRED);
            max.map_or(off, |cap| off.min(cap))
        }
        Discount::FixedAmount(value) => value,
    };
    raw.clamp(Decimal::ZERO, amount)
}

/// What a therapist's terms charge for the service and the travel to a place `distance_m` away
/// (fees and promo aside): what a booking's price ceiling bounds.
pub fn service_subtotal(offer: &ServiceOffer, distance_m: f64) -> Decimal {
    let q = quote(
        offer.price,
        offer.base_distance_km,
        offer.per_km_surcharge,
        distance_m,
    );
    q.service_price + q.distance_surcharge
}

/// Prices a booking. The promo discount comes off what the customer pays; the platform bears
/// it, so the therapist's earnings do not shrink.
pub fn price_booking(inputs: &PriceInputs) -> BookingPrice {
    let q = quote(
        inputs.price,
        inputs.base_distance_km,
        inputs.per_km_surcharge,
        inputs.distance_m,
    );
    let service_total = q.service_price + q.distance_surcharge;
    let platform_fee = round_money(inputs.platform_fee.max(Decimal::ZERO));
    let promo_discount = inputs
        .promo
        .map_or(Decimal::ZERO, |terms| promo_discount(&terms, service_total));
    let commission_amount =
        round_money(service_total * inputs.commission_rate / Decimal::ONE_HUNDRED);
    BookingPrice {
        service_price: q.service_price,
        distance_surcharge: q.distance_surcharge,
        platform_fee,
        promo_discount,
        total_amount: service_total + platform_fee - promo_discount,
        commission_rate: inputs.commission_rate,
        commission_amount,
        provider_earnings: service_total - commission_amount,
    }
}

/// app_settings `cancellation_policy`: free while pending; after acceptance, free only if the
/// appointment is at least `free_before_hours` away, else `fee_percentage` of the total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancellationPolicy {
    pub free_before_hours: i64,
    pub fee_percentage: Decimal,
}

impl Default for CancellationPolicy {
    fn default() -> Self {
        Self {
            free_before_hours: 24,
            fee_percentage: Decimal::from(50),
        }
    }
}

/// The fee a customer pays for cancelling. Therapists and Hilot never charge the customer.
pub fn cancellation_fee(
    policy: &CancellationPolicy,
    was_accepted: bool,
    cancelled_by_customer: bool,
    hours_until_appointment: f64,
    total_amount: Decimal,
) -> Decimal {
    if !was_accepted || !cancelled_by_customer {
        return Decimal::ZERO;
    }
    if hours_until_appointment >= policy.free_before_hours as f64 {
        return Decimal::ZERO;
    }
    round_money(total_amount * policy.fee_percentage / Decimal::ONE_HUNDRED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(v: i64) -> Decimal {
        Decimal::from(v)
    }

    fn inputs() -> PriceInputs {
        PriceInputs {
            price: d(1000),
            base_distance_km: 5,
            per_km_surcharge: d(20),
            distance_m: 7_500.0,
            platform_fee: d(50),
            commission_rate: d(15),
            promo: None,
        }
    }

    #[test]
    fn a_booking_without_promo() {
        let p = price_booking(&inputs());
        assert_eq!(p.distance_surcharge, d(60)); // 2.5 km beyond → 3 started km
        assert_eq!(p.total_amount, d(1110));
        assert_eq!(p.commission_amount, d(159)); // 15 % of 1060
        assert_eq!(p.provider_earnings, d(901));
    }

    #[test]
    fn percentage_promos_are_capped_and_need_the_minimum() {
        let ten_off = PromoTerms {
            discount: Discount::Percentage {
                percent: d(10),
                max: Some(d(100)),
            },
            min_booking_amount: Some(d(500)),
        };
        let p = price_booking(&PriceInputs {
            promo: Some(ten_off),
            ..inputs()
        });
        assert_eq!(
            p.promo_discount,
            d(100),
            "10 % of 1060 is 106, capped at 100"
        );
        assert_eq!(p.total_amount, d(1010));
        assert_eq!(
            p.provider_earnings,
            d(901),
            "the platform bears the discount"
        );
        let too_small = PriceInputs {
            price: d(300),
            distance_m: 0.0,
            promo: Some(ten_off),
            ..inputs()
        };
        assert_eq!(price_booking(&too_small).promo_discount, Decimal::ZERO);
    }

    #[test]
    fn a_fixed_promo_never_makes_the_price_negative() {
        let huge = PromoTerms {
            discount: Discount::FixedAmount(d(5000)),
            min_booking_amount: None,
        };
        let p = price_booking(&PriceInputs {
            promo: Some(huge),
            platform_fee: d(0),
            ..inputs()
        });
        assert_eq!(p.total_amount, Decimal::ZERO);
    }

    #[test]
    fn cancellation_is_free_while_pending_and_for_therapists() {
        let policy = CancellationPolicy::default();
        assert_eq!(
            cancellation_fee(&policy, false, true, 0.0, d(1000)),
            Decimal::ZERO
        );
        assert_eq!(
            cancellation_fee(&policy, true, false, 0.0, d(1000)),
            Decimal::ZERO
        );
        assert_eq!(cancellation_fee(&policy, true, true, 0.0, d(1000)), d(500));
        assert_eq!(
            cancellation_fee(&policy, true, true, 30.0, d(1000)),
            Decimal::ZERO
        );
    }
}
