//! Checking one location ping (pure: no I/O, the clock is an argument).

use chrono::{DateTime, Duration, Utc};

use crate::geo::{great_circle_m, Point};

/// Fixes may be stamped at most this far ahead of the server clock (phone clocks drift).
pub const MAX_FUTURE_SKEW: Duration = Duration::seconds(30);
/// Fixes older than this are refused: too late to matter for dispatch or replay.
pub const MAX_FIX_AGE: Duration = Duration::minutes(10);
/// An accuracy radius beyond this is not a GPS fix worth storing.
pub const MAX_SANE_ACCURACY_M: f64 = 5_000.0;
/// Fastest plausible reported speed (the column holds up to 9999.99).
pub const MAX_REPORTED_SPEED_KMH: f64 = 1_000.0;
/// Below this time gap the implied speed is computed over this gap, so two fixes a few
/// milliseconds apart do not divide by nearly zero.
pub const MIN_SPEED_CHECK_GAP: Duration = Duration::seconds(1);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PingLimits {
    pub max_speed_kmh: f64,
    /// Fixes less accurate than this are stored but not matched on.
    pub match_max_accuracy_m: f64,
}

/// A location frame as the app sent it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawPing {
    pub seq: i64,
    pub lat: f64,
    pub lng: f64,
    pub accuracy_m: Option<f64>,
    pub heading: Option<f64>,
    pub speed_kmh: Option<f64>,
    pub battery: Option<i64>,
    pub recorded_at: Option<DateTime<Utc>>,
}

/// A ping that passed every check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValidPing {
    pub seq: i64,
    pub point: Point,
    pub accuracy_m: f64,
    pub heading: Option<f64>,
    pub speed_kmh: Option<f64>,
    pub battery: Option<i32>,
    pub recorded_at: DateTime<Utc>,
    /// Accurate enough to move the therapist on the map and match on.
    pub matchable: bool,
}

/// Why a ping was refused. `code()` goes into the `error` frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rejection {
    Coordinates,
    AccuracyMissing,
    Accuracy,
    Heading,
    Speed,
    Battery,
    FromTheFuture,
    TooOld,
    Jump { implied_kmh: f64 },
}

impl Rejection {
    pub fn code(self) -> &'static str {
        match self {
            Self::Coordinates => "invalid_coordinates",
            Self::AccuracyMissing => "accuracy_missing",
            Self::Accuracy => "invalid_accuracy",
            Self::Heading => "invalid_heading",
            Self::Speed => "invalid_speed",
            Self::Battery => "invalid_battery",
            Self::FromTheFuture => "recorded_in_future",
            Self::TooOld => "recorded_too_long_ago",
            Self::Jump { .. } => "implausible_jump",
        }
    }

    pub fn detail(self, limits: &PingLimits) -> String {
        match self {
            Self::Coordinates => "lat must be within -90..90 and lng within -180..180".into(),
            Self::AccuracyMissing => "accuracy_m is required".into(),
            Self::Accuracy => {
                format!("accuracy_m must be more than 0 and at most {MAX_SANE_ACCURACY_M}")
            }
            Self::Heading => "heading must be within 0..360 degrees".into(),
            Self::Speed => format!("speed_kmh must be within 0..{MAX_REPORTED_SPEED_KMH}"),
            Self::Battery => "battery must be within 0..100".into(),
            Self::FromTheFuture => format!(
                "recorded_at is more than {} s ahead of the server clock",
                MAX_FUTURE_SKEW.num_seconds()
            ),
            Self::TooOld => format!(
                "recorded_at is more than {} minutes old",
                MAX_FIX_AGE.num_minutes()
            ),
            Self::Jump { implied_kmh } => format!(
                "moving here from the previous fix implies {implied_kmh:.0} km/h (limit {:.0})",
                limits.max_speed_kmh
            ),
        }
    }
}

fn in_range(value: Option<f64>, min: f64, max_exclusive: f64) -> bool {
    value.is_none_or(|v| v.is_finite() && v >= min && v < max_exclusive)
}

/// Checks a ping against the limits and against `previous`, the last accepted fix.
pub fn validate(
    raw: &RawPing,
    previous: Option<(Point, DateTime<Utc>)>,
    now: DateTime<Utc>,
    limits: &PingLimits,
) -> Result<ValidPing, Rejection> {
    let point = Point::new(raw.lat, raw.lng);
    if !point.is_valid() {
        return Err(Rejection::Coordinates);
    }
    let accuracy_m = raw.accuracy_m.ok_or(Rejection::AccuracyMissing)?;
    if !accuracy_m.is_finite() || accuracy_m <= 0.0 || accuracy_m > MAX_SANE_ACCURACY_M {
        return Err(Rejection::Accuracy);
    }
    if !in_range(raw.heading, 0.0, 360.0) {
        return Err(Rejection::Heading);
    }
    if !in_range(raw.speed_kmh, 0.0, MAX_REPORTED_SPEED_KMH) {
        return Err(Rejection::Speed);
    }
    if raw.battery.is_some_and(|b| !(0..=100).contains(&b)) {
        return Err(Rejection::Battery);
    }
    let recorded_at = raw.recorded_at.unwrap_or(now);
    if recorded_at > now + MAX_FUTURE_SKEW {
        return Err(Rejection::FromTheFuture);
    }
    if recorded_at < now - MAX_FIX_AGE {
        return Err(Rejection::TooOld);
    }
    if let Some((previous_point, previous_at)) = previous {
        let gap = (recorded_at - previous_at).abs().max(MIN_SPEED_CHECK_GAP);
        let hours = gap.num_milliseconds() as f64 / 3_600_000.0;
        let implied_kmh = great_circle_m(previous_point, point) / 1000.0 / hours;
        if implied_kmh > limits.max_speed_kmh {
            return Err(Rejection::Jump { implied_kmh });
        }
    }
    Ok(ValidPing {
        seq: raw.seq,
        point,
        accuracy_m,
        heading: raw.heading,
        speed_kmh: raw.speed_kmh,
        battery: raw.battery.map(|b| b as i32),
        recorded_at,
        matchable: accuracy_m <= limits.match_max_accuracy_m,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PingLimits = PingLimits {
        max_speed_kmh: 250.0,
        match_max_accuracy_m: 100.0,
    };

    fn ping() -> RawPing {
        RawPing {
            seq: 1,
            lat: 14.5547,
            lng: 121.0244,
            accuracy_m: Some(8.0),
            heading: Some(90.0),
            speed_kmh: Some(20.0),
            battery: Some(80),
            recorded_at: None,
        }
    }

    fn rejected(raw: RawPing) -> &'static str {
        validate(&raw, None, Utc::now(), &LIMITS)
            .unwrap_err()
            .code()
    }

    #[test]
    fn a_good_ping_passes_and_is_matchable() {
        let valid = validate(&ping(), None, Utc::now(), &LIMITS).unwrap();
        assert!(valid.matchable);
        let coarse = validate(
            &RawPing {
                accuracy_m: Some(500.0),
                ..ping()
            },
            None,
            Utc::now(),
            &LIMITS,
        )
        .unwrap();
        assert!(!coarse.matchable, "stored but not matched");
    }

    #[test]
    fn each_bad_field_has_its_reason() {
        assert_eq!(
            rejected(RawPing {
                lat: 91.0,
                ..ping()
            }),
            "invalid_coordinates"
        );
        assert_eq!(
            rejected(RawPing {
                lng: f64::NAN,
                ..ping()
            }),
            "invalid_coordinates"
        );
        assert_eq!(
            rejected(RawPing {
                accuracy_m: None,
                ..ping()
            }),
            "accuracy_missing"
        );
        assert_eq!(
            rejected(RawPing {
                accuracy_m: Some(-1.0),
                ..ping()
            }),
            "invalid_accuracy"
        );
        assert_eq!(
            rejected(RawPing {
                heading: Some(360.0),
                ..ping()
            }),
            "invalid_heading"
        );
        assert_eq!(
            rejected(RawPing {
                speed_kmh: Some(-3.0),
                ..ping()
            }),
            "invalid_speed"
        );
        assert_eq!(
            rejected(RawPing {
                battery: Some(101),
                ..ping()
            }),
            "invalid_battery"
        );
        let now = Utc::now();
        assert_eq!(
            rejected(RawPing {
                recorded_at: Some(now + Duration::seconds(31)),
                ..ping()
            }),
            "recorded_in_future"
        );
        assert_eq!(
            rejected(RawPing {
                recorded_at: Some(now - Duration::minutes(11)),
                ..ping()
            }),
            "recorded_too_long_ago"
        );
    }

    #[test]
    fn implied_speed_above_the_limit_is_a_jump() {
        let now = Utc::now();
        let previous = Some((Point::new(14.5547, 121.0244), now - Duration::seconds(10)));
        // ~11 km in 10 s is ~4000 km/h.
        let far = RawPing {
            lat: 14.6547,
            recorded_at: Some(now),
            ..ping()
        };
        assert!(matches!(
            validate(&far, previous, now, &LIMITS),
            Err(Rejection::Jump { .. })
        ));
        // ~50 m in 10 s is 18 km/h.
        let near = RawPing {
            lat: 14.5551,
            recorded_at: Some(now),
            ..ping()
        };
        assert!(validate(&near, previous, now, &LIMITS).is_ok());
    }
}
