//! What the simulated people saw: latency histograms (HDR, microseconds), counts of what
//! happened, and errors by kind. Shared by every simulated socket; cheap to record into.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

/// The latencies the load test reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// A location frame's scheduled send → its `ack`.
    PingToAck,
    /// A booking's scheduled request → the first `offer` frame any therapist gets for it.
    BookingToFirstOffer,
    /// A therapist's `offer.accept` → the customer's `booking.status: accepted`.
    AcceptToCustomerStatus,
    /// A ping's `recorded_at` → a dashboard's `provider.moved` carrying it.
    PingToDashboard,
    /// The same, for a dashboard on another node than the therapists' sockets: the fix went
    /// through the replication (Redis) on its way.
    PingToOtherNodeDashboard,
    /// A booking for later's scheduled request → its `201` (validation, the therapist-free
    /// check and the exclusion constraint's insert).
    ScheduledBookingCreated,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::PingToAck,
        Metric::BookingToFirstOffer,
        Metric::AcceptToCustomerStatus,
        Metric::PingToDashboard,
        Metric::PingToOtherNodeDashboard,
        Metric::ScheduledBookingCreated,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Metric::PingToAck => "ping → ack",
            Metric::BookingToFirstOffer => "booking → first offer",
            Metric::AcceptToCustomerStatus => "accept → customer booking.status",
            Metric::PingToDashboard => "ping → dashboard provider.moved",
            Metric::PingToOtherNodeDashboard => "ping → dashboard on another node",
            Metric::ScheduledBookingCreated => "booking for later → 201",
        }
    }
}

/// The largest latency a histogram holds (one minute); longer ones are clamped to it.
const MAX_LATENCY_US: u64 = 60_000_000;

/// A latency histogram in microseconds, 1 µs to a minute, three significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

pub struct Stats {
    histograms: Mutex<BTreeMap<Metric, Histogram<u64>>>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    bookings: Mutex<HashMap<Uuid, BookingClock>>,
}

/// When each step of one booking happened, as seen by whichever simulated client saw it.
/// Either side of a pair may arrive first (an offer can beat the `201` to the customer).
#[derive(Debug, Default, Clone, Copy)]
struct BookingClock {
    requested: Option<Instant>,
    first_offer: Option<Instant>,
    accept_sent: Option<Instant>,
    customer_accepted: Option<Instant>,
    /// A booking for later: kept out of the book-now latencies.
    scheduled: bool,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Self {
        let histograms = Metric::ALL
            .into_iter()
            .map(|m| (m, latency_histogram()))
            .collect();
        Self {
            histograms: Mutex::new(histograms),
            counts: Mutex::new(BTreeMap::new()),
            errors: Mutex::new(BTreeMap::new()),
            bookings: Mutex::new(HashMap::new()),
        }
    }

    pub fn record(&self, metric: Metric, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        if let Some(h) = self.histograms.lock().get_mut(&metric) {
            h.saturating_record(us);
        }
    }

    pub fn count(&self, what: &'static str) {
        *self.counts.lock().entry(what).or_default() += 1;
    }

    pub fn error(&self, kind: impl Into<String>) {
        *self.errors.lock().entry(kind.into()).or_default() += 1;
    }

    pub fn error_total(&self) -> u64 {
        self.errors.lock().values().sum()
    }

    pub fn count_of(&self, what: &str) -> u64 {
        self.counts.lock().get(what).copied().unwrap_or(0)
    }

    /// Forgets all latencies and counts (the end of a ramp-up).
    pub fn reset(&self) {
        for h in self.histograms.lock().values_mut() {
            h.reset();
        }
        self.counts.lock().clear();
        self.errors.lock().clear();
    }

    fn with_clock(&self, booking: Uuid, update: impl FnOnce(&mut BookingClock)) -> BookingClock {
        let mut bookings = self.bookings.lock();
        let clock = bookings.entry(booking).or_default();
        update(clock);
        *clock
    }

    /// A booking for later was created.
    pub fn scheduled_booking(&self, booking: Uuid) {
        self.with_clock(booking, |c| c.scheduled = true);
    }

    pub fn is_scheduled(&self, booking: Uuid) -> bool {
        self.bookings
            .lock()
            .get(&booking)
            .is_some_and(|c| c.scheduled)
    }

    pub fn booking_requested(&self, booking: Uuid, scheduled: Instant) {
        let c = self.with_clock(booking, |c| c.requested = Some(scheduled));
        if let Some(offer) = c.first_offer {
            self.record(
                Metric::BookingToFirstOffer,
                offer.saturating_duration_since(scheduled),
            );
        }
    }

    pub fn offer_received(&self, booking: Uuid, at: Instant) {
        let mut first = false;
        let c = self.with_clock(booking, |c| {
            if c.first_offer.is_none() {
                c.first_offer = Some(at);
                first = true;
            }
        });
        if let (true, Some(requested)) = (first, c.requested) {
            self.record(
                Metric::BookingToFirstOffer,
                at.saturating_duration_since(requested),
            );
        }
    }

    pub fn accept_sent(&self, booking: Uuid, at: Instant) {
        let c = self.with_clock(booking, |c| c.accept_sent = Some(at));
        if let Some(seen) = c.customer_accepted {
            self.record(
                Metric::AcceptToCustomerStatus,
                seen.saturating_duration_since(at),
            );
        }
    }

    pub fn customer_saw_accepted(&self, booking: Uuid, at: Instant) {
        let c = self.with_clock(booking, |c| c.customer_accepted = Some(at));
        if let Some(sent) = c.accept_sent {
            self.record(
                Metric::AcceptToCustomerStatus,
                at.saturating_duration_since(sent),
            );
        }
    }

    /// The booking ended; its clock is no longer needed.
    pub fn booking_finished(&self, booking: Uuid) {
        self.bookings.lock().remove(&booking);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let latencies = self
            .histograms
            .lock()
            .iter()
            .map(|(m, h)| (*m, Percentiles::of(h)))
            .collect();
        StatsSnapshot {
            latencies,
            counts: self
                .counts
                .lock()
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            errors: self.errors.lock().clone(),
        }
    }
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    pub latencies: BTreeMap<Metric, Percentiles>,
    pub counts: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_before_the_201_still_measures_from_the_request() {
        let stats = Stats::new();
        let id = Uuid::new_v4();
        let t0 = Instant::now();
        stats.offer_received(id, t0 + Duration::from_millis(30));
        stats.booking_requested(id, t0);
        stats.offer_received(id, t0 + Duration::from_millis(90)); // a second offer: not first
        let p = &stats.snapshot().latencies[&Metric::BookingToFirstOffer];
        assert_eq!(p.count, 1);
        assert!((p.max_ms - 30.0).abs() < 0.1, "{p:?}");
    }

    #[test]
    fn errors_are_counted_by_kind() {
        let stats = Stats::new();
        stats.error("http_503");
        stats.error("http_503");
        stats.error("ws_connect");
        assert_eq!(stats.error_total(), 3);
        assert_eq!(stats.snapshot().errors["http_503"], 2);
    }
}
