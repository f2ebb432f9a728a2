//! Dispatch settings from app_settings (read when a booking starts dispatching, so operators
//! change them without a restart), each with the seed's default when missing or malformed.

use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::PgPool;

use super::pricing::CancellationPolicy;
use crate::providers::setting_as_f64;

/// `booking_timeout.pending`: how long a booking may wait for a therapist.
pub const DEFAULT_PENDING_TIMEOUT: Duration = Duration::from_secs(300);
/// `dispatch.offer_timeout_s`: how long a therapist has to answer an offer.
pub const DEFAULT_OFFER_TIMEOUT: Duration = Duration::from_secs(20);
/// `dispatch.batch_size`: therapists offered a booking at once (first accept wins).
pub const DEFAULT_BATCH_SIZE: usize = 1;
/// `dispatch.initial_radius_km` and `dispatch.radius_step_km`: the search starts here and
/// widens by this step up to `service_radius_max`.
pub const DEFAULT_INITIAL_RADIUS_KM: f64 = 5.0;
pub const DEFAULT_RADIUS_STEP_KM: f64 = 5.0;
/// `dispatch.batch_window_ms`: rounds run at most this often (0: each event at once).
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_millis(1000);
/// `dispatch.max_price_over_catalog_percent`.
pub const DEFAULT_MAX_PRICE_OVER_CATALOG_PERCENT: i64 = 50;
/// `commission_rate.default`: the platform's percentage when a provider has none.
pub const DEFAULT_COMMISSION_PERCENT: i64 = 15;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DispatchSettings {
    /// Percent the platform keeps when a provider has no rate of their own.
    pub commission_rate: Decimal,
    pub platform_fee: Decimal,
    pub cancellation: CancellationPolicy,
    pub pending_timeout: Duration,
    pub offer_timeout: Duration,
    pub batch_size: usize,
    pub initial_radius_m: f64,
    pub radius_step_m: f64,
    pub max_radius_m: f64,
    /// Events are gathered this long into one round (zero: a round per event).
    pub batch_window: Duration,
    /// `dispatch.max_price_over_catalog_percent`: unless the customer sets `max_price`, a
    /// booking for now goes only to therapists whose service price and travel surcharge stay
    /// within the catalog price plus this percentage.
    pub max_price_over_catalog_percent: Decimal,
}

fn field(value: &Option<Value>, name: &str) -> Option<f64> {
    value
        .as_ref()?
        .get(name)
        .and_then(setting_as_f64)
        .filter(|v| v.is_finite() && *v > 0.0)
}

fn seconds(value: Option<f64>, default: Duration) -> Duration {
    value.map_or(default, |s| Duration::from_secs_f64(s.min(86_400.0)))
}

/// Every app setting dispatch reads, in one query.
pub const KEYS: &[&str] = &[
    "booking_timeout",
    "dispatch",
    "service_radius_max",
    "commission_rate",
    "platform_fee",
    "cancellation_policy",
];

impl DispatchSettings {
    /// Reads the settings (one query); anything missing or malformed takes its default.
    pub async fn load(pool: &PgPool) -> Self {
        let rows: Vec<(String, Value)> =
            sqlx::query_as("SELECT key, value FROM app_settings WHERE key = ANY($1)")
                .bind(KEYS)
                .fetch_all(pool)
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "reading dispatch settings failed; using defaults");
                    Vec::new()
                });
        Self::from_values(rows.into_iter().collect())
    }

    /// The settings from `app_settings` rows (key → value) already read; anything missing or
    /// malformed takes its default.
    pub fn from_values(mut values: std::collections::HashMap<String, Value>) -> Self {
        let timeouts = values.remove("booking_timeout");
        let dispatch = values.remove("dispatch");
        let max_km = values
            .remove("service_radius_max")
            .as_ref()
            .and_then(setting_as_f64)
            .filter(|v| v.is_finite() && *v > 0.0)
            // As `providers::service_radius_max_km` reads it: an operator's typo (metres for
            // kilometres, "Infinity") must not send every round searching the planet.
            .map_or(20.0, |km| km.clamp(1.0, 500.0));
        Self {
            commission_rate: field(&values.remove("commission_rate"), "default")
                .and_then(decimal)
                .unwrap_or(Decimal::from(DEFAULT_COMMISSION_PERCENT)),
            platform_fee: values
                .remove("platform_fee")
                .as_ref()
                .and_then(setting_as_f64)
                .filter(|v| *v >= 0.0)
                .and_then(decimal)
                .unwrap_or_default(),
            cancellation: cancellation_policy(values.remove("cancellation_policy")),
            pending_timeout: seconds(field(&timeouts, "pending"), DEFAULT_PENDING_TIMEOUT),
            offer_timeout: seconds(field(&dispatch, "offer_timeout_s"), DEFAULT_OFFER_TIMEOUT),
            batch_size: field(&dispatch, "batch_size")
                .map_or(DEFAULT_BATCH_SIZE, |b| (b as usize).clamp(1, 50)),
            initial_radius_m: field(&dispatch, "initial_radius_km")
                .map_or(DEFAULT_INITIAL_RADIUS_KM, |km| km.clamp(0.1, 500.0))
                * 1000.0,
            // At least 100 m a step, so widening to the widest radius takes a bounded number
            // of searches.
            radius_step_m: field(&dispatch, "radius_step_km")
                .map_or(DEFAULT_RADIUS_STEP_KM, |km| km.clamp(0.1, 500.0))
                * 1000.0,
            max_radius_m: max_km * 1000.0,
            batch_window: dispatch
                .as_ref()
                .and_then(|d| d.get("batch_window_ms"))
                .and_then(setting_as_f64)
                .filter(|ms| ms.is_finite() && *ms >= 0.0)
                .map_or(DEFAULT_BATCH_WINDOW, |ms| {
                    Duration::from_millis(ms.min(60_000.0) as u64)
                }),
            max_price_over_catalog_percent: field(&dispatch, "max_price_over_catalog_percent")
                .map(|percent| percent.min(10_000.0))
                .and_then(decimal)
                .unwrap_or(Decimal::from(DEFAULT_MAX_PRICE_OVER_CATALOG_PERCENT)),
        }
    }

    /// The most a customer who set no `max_price` pays for the service and travel surcharge of
    /// a service whose catalog price is `catalog_price`.
    pub fn default_price_ceiling(&self, catalog_price: Decimal) -> Decimal {
        crate::domain::money::round_money(
            catalog_price * (Decimal::ONE_HUNDRED + self.max_price_over_catalog_percent)
                / Decimal::ONE_HUNDRED,
        )
    }
}

fn decimal(value: f64) -> Option<Decimal> {
    Decimal::from_f64_retain(value).map(|d| d.round_dp(2))
}

/// app_settings `cancellation_policy`.
fn cancellation_policy(value: Option<Value>) -> CancellationPolicy {
    let default = CancellationPolicy::default();
    CancellationPolicy {
        free_before_hours: value
            .as_ref()
            .and_then(|v| v.get("free_before_hours"))
            .and_then(setting_as_f64)
            .map_or(default.free_before_hours, |h| h as i64),
        fee_percentage: value
            .as_ref()
            .and_then(|v| v.get("fee_percentage"))
            .and_then(setting_as_f64)
            .and_then(decimal)
            .map_or(default.fee_percentage, |p| {
                p.clamp(Decimal::ZERO, Decimal::ONE_HUNDRED)
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_seed_settings_are_read_and_missing_ones_take_defaults() {
        let rows = [
            (
                "booking_timeout".to_owned(),
                json!({"pending": 300, "accepted": 1800}),
            ),
            (
                "commission_rate".to_owned(),
                json!({"default": 15, "premium": 10}),
            ),
            (
                "cancellation_policy".to_owned(),
                json!({"free_before_hours": 24, "fee_percentage": 50}),
            ),
            ("service_radius_max".to_owned(), json!("20")),
        ];
        let settings = DispatchSettings::from_values(rows.into_iter().collect());
        assert_eq!(settings.pending_timeout, Duration::from_secs(300));
        assert_eq!(settings.commission_rate, Decimal::from(15));
        assert_eq!(settings.max_radius_m, 20_000.0);
        assert_eq!(settings.offer_timeout, DEFAULT_OFFER_TIMEOUT);
        assert_eq!(settings.platform_fee, Decimal::ZERO);
        assert_eq!(settings.cancellation.fee_percentage, Decimal::from(50));
        assert_eq!(settings.batch_window, DEFAULT_BATCH_WINDOW);
    }

    #[test]
    fn a_zero_batch_window_means_match_each_event_at_once() {
        let rows = [(
            "dispatch".to_owned(),
            json!({"batch_window_ms": 0, "batch_size": 2}),
        )];
        let settings = DispatchSettings::from_values(rows.into_iter().collect());
        assert_eq!(settings.batch_window, Duration::ZERO);
        assert_eq!(settings.batch_size, 2);
    }

    #[test]
    fn radii_an_operator_mistypes_stay_searchable() {
        for (typed, widest_m) in [
            (json!("Infinity"), 20_000.0),
            (json!("1e999"), 20_000.0),
            (json!(20_000), 500_000.0),
            (json!(0.01), 1_000.0),
        ] {
            let rows = [
                ("service_radius_max".to_owned(), typed.clone()),
                (
                    "dispatch".to_owned(),
                    json!({"radius_step_km": 0.000001, "initial_radius_km": 1e9}),
                ),
            ];
            let settings = DispatchSettings::from_values(rows.into_iter().collect());
            assert_eq!(settings.max_radius_m, widest_m, "{typed}");
            assert_eq!(settings.radius_step_m, 100.0);
            assert_eq!(settings.initial_radius_m, 500_000.0);
        }
    }
}
