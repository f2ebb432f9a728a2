//! Which fixes are written to `provider_locations` (pure).
//!
//! Storing every 1 Hz fix of every idle therapist costs about 20 GB a day per thousand
//! therapists, so idle fixes are sampled: stored when `interval` has passed since the last
//! stored one, or the therapist moved more than `distance_m`. Every fix of a therapist on an
//! active booking is stored (trip replay, disputes); so is every out-of-order fix (a phone
//! replaying what it buffered while offline). Zero in either setting stores everything.

use chrono::{DateTime, Duration, Utc};

use crate::geo::{great_circle_m, Point};

/// app_settings `location_store_interval_s` default.
pub const DEFAULT_STORE_INTERVAL_S: i64 = 15;
/// app_settings `location_store_distance_m` default.
pub const DEFAULT_STORE_DISTANCE_M: f64 = 50.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoragePolicy {
    pub interval: Duration,
    pub distance_m: f64,
}

impl Default for StoragePolicy {
    fn default() -> Self {
        Self {
            interval: Duration::seconds(DEFAULT_STORE_INTERVAL_S),
            distance_m: DEFAULT_STORE_DISTANCE_M,
        }
    }
}

/// Why a fix is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreReason {
    ActiveBooking = 0,
    OutOfOrder,
    FirstFix,
    IntervalElapsed,
    Moved,
    /// A zero interval or distance setting: keep every fix.
    StoreEverything,
}

impl StoreReason {
    /// Every reason, in discriminant order.
    pub const ALL: [StoreReason; 6] = [
        Self::ActiveBooking,
        Self::OutOfOrder,
        Self::FirstFix,
        Self::IntervalElapsed,
        Self::Moved,
        Self::StoreEverything,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::ActiveBooking => "active_booking",
            Self::OutOfOrder => "out_of_order",
            Self::FirstFix => "first_fix",
            Self::IntervalElapsed => "interval",
            Self::Moved => "moved",
            Self::StoreEverything => "store_everything",
        }
    }
}

/// Decides whether a fix at `point`/`at` is stored, given the last stored fix.
pub fn decide(
    policy: &StoragePolicy,
    last_stored: Option<(Point, DateTime<Utc>)>,
    point: Point,
    at: DateTime<Utc>,
    on_active_booking: bool,
    out_of_order: bool,
) -> Option<StoreReason> {
    if on_active_booking {
        return Some(StoreReason::ActiveBooking);
    }
    if out_of_order {
        return Some(StoreReason::OutOfOrder);
    }
    if policy.interval <= Duration::zero() || policy.distance_m <= 0.0 {
        return Some(StoreReason::StoreEverything);
    }
    let Some((stored_point, stored_at)) = last_stored else {
        return Some(StoreReason::FirstFix);
    };
    if at - stored_at >= policy.interval {
        return Some(StoreReason::IntervalElapsed);
    }
    if great_circle_m(stored_point, point) > policy.distance_m {
        return Some(StoreReason::Moved);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_fixes_are_sampled_by_time_and_distance() {
        let policy = StoragePolicy::default();
        let t0 = Utc::now();
        let here = Point::new(14.5547, 121.0244);
        let last = Some((here, t0));
        assert_eq!(
            decide(&policy, None, here, t0, false, false),
            Some(StoreReason::FirstFix)
        );
        assert_eq!(
            decide(&policy, last, here, t0 + Duration::seconds(5), false, false),
            None
        );
        assert_eq!(
            decide(
                &policy,
                last,
                here,
                t0 + Duration::seconds(15),
                false,
                false
            ),
            Some(StoreReason::IntervalElapsed)
        );
        let sixty_m_north = Point::new(14.55524, 121.0244);
        assert_eq!(
            decide(
                &policy,
                last,
                sixty_m_north,
                t0 + Duration::seconds(5),
                false,
                false
            ),
            Some(StoreReason::Moved)
        );
    }

    #[test]
    fn bookings_out_of_order_fixes_and_zero_settings_store_everything() {
        let t0 = Utc::now();
        let here = Point::new(14.5547, 121.0244);
        let last = Some((here, t0));
        let policy = StoragePolicy::default();
        assert_eq!(
            decide(&policy, last, here, t0, true, false),
            Some(StoreReason::ActiveBooking)
        );
        assert_eq!(
            decide(&policy, last, here, t0, false, true),
            Some(StoreReason::OutOfOrder)
        );
        let no_interval = StoragePolicy {
            interval: Duration::zero(),
            distance_m: 50.0,
        };
        let no_distance = StoragePolicy {
            interval: Duration::seconds(15),
            distance_m: 0.0,
        };
        for policy in [no_interval, no_distance] {
            assert_eq!(
                decide(&policy, last, here, t0, false, false),
                Some(StoreReason::StoreEverything)
            );
        }
    }
}
