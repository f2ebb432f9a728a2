//! Prices (pure): a therapist's service price plus the distance surcharge.

use rust_decimal::Decimal;

use super::money::round_money;

/// The customer's price for one therapist at one distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub service_price: Decimal,
    pub distance_surcharge: Decimal,
    pub total_amount: Decimal,
}

/// Each started kilometre beyond `base_distance_km` costs `per_km_surcharge`.
///
/// ```
/// use hilot::domain::pricing::quote;
/// use rust_decimal::Decimal;
/// let q = quote(Decimal::from(800), 5, Decimal::from(20), 6_200.0);
/// assert_eq!(q.distance_surcharge, Decimal::from(40)); // 1.2 km beyond → 2 started km
/// assert_eq!(q.total_amount, Decimal::from(840));
/// ```
pub fn quote(
    price: Decimal,
    base_distance_km: i32,
    per_km_surcharge: Decimal,
    distance_m: f64,
) -> Quote {
    let beyond_km = (distance_m / 1000.0 - f64::from(base_distance_km.max(0))).max(0.0);
    let started_km = Decimal::from(beyond_km.ceil() as i64);
    let distance_surcharge = round_money(started_km * per_km_surcharge);
    let service_price = round_money(price);
    Quote {
        service_price,
        distance_surcharge,
        total_amount: service_price + distance_surcharge,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_surcharge_within_the_base_distance() {
        let q = quote(Decimal::from(800), 5, Decimal::from(20), 4_999.0);
        assert_eq!(q.distance_surcharge, Decimal::ZERO);
        assert_eq!(q.total_amount, Decimal::from(800));
    }
}
