//! How often a therapist app should send its position (pure): every second while a customer
//! watches it arrive, every few seconds while offered or on a booking, rarely while idle, and
//! less often still when the server is overloaded. The therapist socket sends the interval as a
//! `config` frame at connect and whenever it changes; apps ping at that interval.

use std::time::Duration;

/// Seconds between pings of an idle (available or offline) therapist.
pub const DEFAULT_IDLE_S: u32 = 10;
/// Seconds between pings while holding an offer or on a booking.
pub const DEFAULT_ACTIVE_S: u32 = 2;
/// Seconds between pings while travelling to a customer and close to the door.
pub const DEFAULT_ARRIVING_S: u32 = 1;
/// "Close to the door": within this many metres of the customer while on the way.
pub const ARRIVING_WITHIN_M: f64 = 1_000.0;
/// Under overload, idle therapists ping this many times less often, active ones half as often;
/// arriving ones keep their pace (a customer is watching).
pub const OVERLOAD_IDLE_FACTOR: u32 = 3;
pub const OVERLOAD_ACTIVE_FACTOR: u32 = 2;

/// What a therapist is doing, as far as their ping rate goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    Idle,
    /// Holding an offer, or on a booking.
    Active,
    /// On the way to a customer and within [`ARRIVING_WITHIN_M`].
    Arriving,
}

/// The configured intervals, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    pub idle_s: u32,
    pub active_s: u32,
    pub arriving_s: u32,
    /// No interval may reach this: a therapist must ping well within the presence TTL.
    pub presence_ttl: Duration,
}

impl Cadence {
    /// Seconds between pings for `activity`, raised when `overloaded`.
    pub fn interval_s(&self, activity: Activity, overloaded: bool) -> u32 {
        let (base, factor) = match activity {
            Activity::Idle => (self.idle_s, OVERLOAD_IDLE_FACTOR),
            Activity::Active => (self.active_s, OVERLOAD_ACTIVE_FACTOR),
            Activity::Arriving => (self.arriving_s, 1),
        };
        let raised = if overloaded {
            base.saturating_mul(factor)
        } else {
            base
        };
        // At least two pings per presence window, so one lost ping never hides a therapist.
        let ceiling = (self.presence_ttl.as_secs() / 2).max(1) as u32;
        raised.clamp(1, ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CADENCE: Cadence = Cadence {
        idle_s: DEFAULT_IDLE_S,
        active_s: DEFAULT_ACTIVE_S,
        arriving_s: DEFAULT_ARRIVING_S,
        presence_ttl: Duration::from_secs(60),
    };

    #[test]
    fn the_interval_follows_what_the_therapist_does() {
        assert_eq!(CADENCE.interval_s(Activity::Idle, false), 10);
        assert_eq!(CADENCE.interval_s(Activity::Active, false), 2);
        assert_eq!(CADENCE.interval_s(Activity::Arriving, false), 1);
    }

    #[test]
    fn overload_slows_the_idle_most_and_never_the_arriving_nor_past_the_presence_window() {
        assert_eq!(CADENCE.interval_s(Activity::Idle, true), 30);
        assert_eq!(CADENCE.interval_s(Activity::Active, true), 4);
        assert_eq!(CADENCE.interval_s(Activity::Arriving, true), 1);
        let short_ttl = Cadence {
            presence_ttl: Duration::from_secs(20),
            ..CADENCE
        };
        assert_eq!(short_ttl.interval_s(Activity::Idle, true), 10);
        let zero = Cadence {
            idle_s: 0,
            ..CADENCE
        };
        assert_eq!(zero.interval_s(Activity::Idle, false), 1);
    }
}
