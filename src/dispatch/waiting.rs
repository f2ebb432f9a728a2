//! The matcher's memory (no I/O): waiting bookings indexed by H3 cell, which of them need a
//! round, and planning a round against the live index of therapists.
//!
//! A booking needs a round when it arrives, when one of its offers closes, when its radius
//! widens, or when a therapist becomes available within its radius. A booking nobody can serve
//! is parked: it costs nothing until supply changes near it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use h3o::{CellIndex, LatLng, Resolution};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use rustc_hash::{FxHashMap, FxHashSet};

use super::assignment::{self, BookingNeed, Edge};
use crate::geo::index::{LiveIndex, NearbyHit, NearbyQuery, ServiceOffer};
use crate::geo::{distance_m, EtaModel, Point};
use crate::schedule::diary::Job;

/// Waiting bookings are bucketed by H3 cells of this resolution (about 36 km², edge ≈ 3.7 km),
/// so a therapist's change looks at a few hundred buckets at most, whatever the city's size.
pub const BOOKING_CELL_RESOLUTION: Resolution = Resolution::Six;
/// Each booking's candidates in a round: its k nearest eligible therapists (more when it wants
/// a larger batch). Keeps the assignment graph sparse.
pub const CANDIDATES_PER_BOOKING: usize = 6;
/// Bookings a round always searches before its search budget may defer the rest.
pub const MIN_SEARCHED_PER_ROUND: usize = 32;
/// Cells vary in size; bounding distances with a fraction of the average edge keeps the reach
/// lookup conservative everywhere.
const EDGE_SAFETY_FACTOR: f64 = 0.6;

/// A booking waiting for a therapist.
#[derive(Debug, Clone)]
pub struct WaitingBooking {
    pub id: i64,
    pub point: Point,
    pub service_id: i64,
    pub requested_at: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    /// The search radius so far: it starts at `initial_radius_m` and widens by a step whenever
    /// a round offers the booking to nobody.
    pub radius_m: f64,
    /// Therapists not to offer it again: they declined, let the offer expire, or lost it for a
    /// reason of their own. Losing an accept race does not count.
    pub tried: FxHashSet<i64>,
    /// Open offers: therapist → expiry.
    pub open: FxHashMap<i64, DateTime<Utc>>,
    /// Rounds that offered it to someone so far.
    pub rounds: i32,
    /// What the therapist's calendar must allow (`None`: nothing is checked).
    pub job: Option<Job>,
    /// The most the customer accepts for the service and travel surcharge (`None`: any).
    pub max_service_amount: Option<Decimal>,
    cell: CellIndex,
}

impl WaitingBooking {
    pub fn new(
        id: i64,
        point: Point,
        service_id: i64,
        requested_at: DateTime<Utc>,
        deadline: DateTime<Utc>,
        radius_m: f64,
    ) -> Option<Self> {
        let cell = LatLng::new(point.lat, point.lng)
            .ok()?
            .to_cell(BOOKING_CELL_RESOLUTION);
        Some(Self {
            id,
            point,
            service_id,
            requested_at,
            deadline,
            radius_m,
            tried: FxHashSet::default(),
            open: FxHashMap::default(),
            rounds: 0,
            job: None,
            max_service_amount: None,
            cell,
        })
    }

    /// Sets the most the customer accepts for the service and travel surcharge.
    pub fn with_price_ceiling(mut self, max_service_amount: Option<Decimal>) -> Self {
        self.max_service_amount = max_service_amount;
        self
    }

    /// Whether this candidate's price for the booking (their service price and travel
    /// surcharge from where they are) is one the customer accepts.
    pub fn accepts_price_of(&self, hit: &NearbyHit) -> bool {
        self.max_service_amount
            .is_none_or(|max| super::pricing::service_subtotal(&hit.offer, hit.distance_m) <= max)
    }

    /// Sets what the therapist's calendar must allow.
    pub fn with_job(mut self, job: Job) -> Self {
        self.job = Some(job);
        self
    }

    /// A scheduled booking: offered ahead of time, with no waiting credit (it is not urgent).
    pub fn is_scheduled(&self) -> bool {
        matches!(self.job, Some(Job::Later { .. }))
    }
}

/// Whether a therapist the index found may be offered this booking now, beyond the index's own
/// eligibility (verified, active, online, free, in range, offering the service). The default
/// admits everyone; the server plugs in the calendar ([`crate::schedule::diary::Diary::can_take`]).
pub type EligibilityFilter =
    Arc<dyn Fn(&WaitingBooking, &NearbyHit, DateTime<Utc>) -> bool + Send + Sync>;

pub fn admit_all() -> EligibilityFilter {
    Arc::new(|_, _, _| true)
}

/// The dispatch rules a round follows.
#[derive(Debug, Clone, Copy)]
pub struct RoundRules {
    pub batch_size: usize,
    pub radius_step_m: f64,
    pub max_radius_m: f64,
    /// Time the exact solver may take before the rest of the round goes greedy.
    pub solve_budget: Duration,
    /// Time the round may spend finding candidates; bookings not reached wait for the next
    /// round (proving a wide empty radius empty is the index's costliest search, and a round
    /// must not hold its thread for long).
    pub search_budget: Duration,
}

/// One offer a round decided to make; the therapist is already reserved in the index.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedOffer {
    pub booking_id: i64,
    pub provider_id: i64,
    pub distance_m: f64,
    pub eta_seconds: u32,
    pub terms: ServiceOffer,
}

/// What a round did, for metrics and benchmarks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundReport {
    pub considered: usize,
    pub exact_components: usize,
    pub greedy_components: usize,
}

#[derive(Default)]
pub struct WaitingBookings {
    bookings: FxHashMap<i64, WaitingBooking>,
    cells: FxHashMap<CellIndex, Vec<i64>>,
    dirty: FxHashSet<i64>,
    /// Who holds which open offer (a therapist holds at most one).
    offer_of: FxHashMap<i64, i64>,
    /// The cell (index resolution) each available therapist was last considered in, so a ping
    /// that does not move them to another cell costs a lookup and nothing more.
    therapist_cells: FxHashMap<i64, CellIndex>,
}

impl WaitingBookings {
    pub fn len(&self) -> usize {
        self.bookings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bookings.is_empty()
    }

    pub fn contains(&self, id: i64) -> bool {
        self.bookings.contains_key(&id)
    }

    pub fn get(&self, id: i64) -> Option<&WaitingBooking> {
        self.bookings.get(&id)
    }

    pub fn ids(&self) -> Vec<i64> {
        self.bookings.keys().copied().collect()
    }

    /// Adds a booking (with any offers it already has open); it needs a round.
    pub fn insert(&mut self, booking: WaitingBooking) {
        let id = booking.id;
        for provider in booking.open.keys() {
            self.offer_of.insert(*provider, id);
        }
        self.cells.entry(booking.cell).or_default().push(id);
        self.bookings.insert(id, booking);
        self.dirty.insert(id);
    }

    /// Forgets a booking that left `pending`; returns it with the offers it had open.
    pub fn remove(&mut self, id: i64) -> Option<WaitingBooking> {
        let booking = self.bookings.remove(&id)?;
        if let Some(bucket) = self.cells.get_mut(&booking.cell) {
            bucket.retain(|b| *b != id);
            if bucket.is_empty() {
                self.cells.remove(&booking.cell);
            }
        }
        for provider in booking.open.keys() {
            if self.offer_of.get(provider) == Some(&id) {
                self.offer_of.remove(provider);
            }
        }
        self.dirty.remove(&id);
        Some(booking)
    }

    /// The booking's count of offer rounds, to bump when a round offers it.
    pub fn rounds_mut(&mut self, id: i64) -> Option<&mut i32> {
        self.bookings.get_mut(&id).map(|b| &mut b.rounds)
    }

    pub fn mark_dirty(&mut self, id: i64) {
        if self.bookings.contains_key(&id) {
            self.dirty.insert(id);
        }
    }

    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Records an offer made.
    pub fn offer_opened(&mut self, booking_id: i64, provider_id: i64, expires_at: DateTime<Utc>) {
        if let Some(booking) = self.bookings.get_mut(&booking_id) {
            booking.open.insert(provider_id, expires_at);
            self.offer_of.insert(provider_id, booking_id);
        }
    }

    /// Records an offer closed; `tried` keeps the therapist from being offered it again. The
    /// booking needs a round. Returns whether the offer was open here.
    pub fn offer_closed(&mut self, booking_id: i64, provider_id: i64, tried: bool) -> bool {
        if self.offer_of.get(&provider_id) == Some(&booking_id) {
            self.offer_of.remove(&provider_id);
        }
        let Some(booking) = self.bookings.get_mut(&booking_id) else {
            return false;
        };
        let was_open = booking.open.remove(&provider_id).is_some();
        if tried {
            booking.tried.insert(provider_id);
        }
        self.dirty.insert(booking_id);
        was_open
    }

    /// The booking whose offer a therapist holds, if any.
    pub fn offer_held_by(&self, provider_id: i64) -> Option<i64> {
        self.offer_of.get(&provider_id).copied()
    }

    /// A therapist went away: stop remembering where they were considered.
    pub fn forget_therapist(&mut self, provider_id: i64) {
        self.therapist_cells.remove(&provider_id);
    }

    /// A therapist is available at `point` (came online, was freed, or moved). Bookings whose
    /// radius reaches them and that still want offers need a round. `moved_only`: a ping, so
    /// nothing is done unless they entered another cell. Returns how many bookings it marked.
    pub fn supply_at(&mut self, provider_id: i64, point: Point, moved_only: bool) -> usize {
        let Ok(latlng) = LatLng::new(point.lat, point.lng) else {
            return 0;
        };
        let fine = latlng.to_cell(crate::geo::index::H3_RESOLUTION);
        let previous = self.therapist_cells.insert(provider_id, fine);
        if moved_only && previous == Some(fine) {
            return 0;
        }
        if self.cells.is_empty() {
            return 0;
        }
        let reach = self
            .bookings
            .values()
            .map(|b| b.radius_m)
            .fold(0.0, f64::max);
        let origin = latlng.to_cell(BOOKING_CELL_RESOLUTION);
        let mut marked = 0;
        for cell in origin.grid_disk::<Vec<_>>(disk_for(reach)) {
            let Some(ids) = self.cells.get(&cell) else {
                continue;
            };
            for id in ids {
                let booking = &self.bookings[id];
                if !booking.tried.contains(&provider_id)
                    && distance_m(point, booking.point) <= booking.radius_m
                    && self.dirty.insert(*id)
                {
                    marked += 1;
                }
            }
        }
        marked
    }

    /// Plans a round: each booking needing one gets its k nearest eligible therapists as
    /// candidates (widening its radius while it has none), the assignment decides, and the
    /// chosen therapists are reserved in the index. Bookings offered to nobody are parked, their
    /// radius one step wider.
    pub fn plan_round(
        &mut self,
        index: &LiveIndex,
        eta: EtaModel,
        rules: &RoundRules,
        filter: &EligibilityFilter,
        now: DateTime<Utc>,
    ) -> (Vec<PlannedOffer>, RoundReport) {
        let started = std::time::Instant::now();
        let mut ids: Vec<i64> = self.dirty.drain().collect();
        ids.sort_unstable();
        let mut ids = ids.into_iter();
        let mut searched = 0usize;
        let mut needs: Vec<BookingNeed> = Vec::new();
        let mut edges: Vec<Edge> = Vec::new();
        let mut round_bookings: Vec<i64> = Vec::new();
        let mut hits_by_pair: FxHashMap<(usize, i64), NearbyHit> = FxHashMap::default();
        while let Some(id) = ids.next() {
            // The budget only splits backlogs (a takeover, a burst): a round of a few bookings
            // is always assigned whole, and every round makes progress.
            if searched >= MIN_SEARCHED_PER_ROUND && started.elapsed() > rules.search_budget {
                self.dirty.insert(id);
                self.dirty.extend(ids.by_ref());
                break;
            }
            let Some(booking) = self.bookings.get_mut(&id) else {
                continue;
            };
            let slots = rules.batch_size.max(1).saturating_sub(booking.open.len());
            if slots == 0 || now >= booking.deadline {
                continue;
            }
            searched += 1;
            let wanted = CANDIDATES_PER_BOOKING.max(2 * slots);
            let candidates = loop {
                let hits = index.nearby(
                    &NearbyQuery {
                        point: booking.point,
                        service_id: booking.service_id,
                        radius_m: booking.radius_m,
                        limit: wanted + booking.tried.len(),
                        placement: crate::geo::index::Placement::Exact,
                    },
                    now,
                );
                let candidates: Vec<NearbyHit> = hits
                    .into_iter()
                    .filter(|hit| {
                        !booking.tried.contains(&hit.provider_id)
                            && !booking.open.contains_key(&hit.provider_id)
                            && booking.accepts_price_of(hit)
                            && filter(booking, hit, now)
                    })
                    .take(wanted)
                    .collect();
                if candidates.is_empty() && booking.radius_m < rules.max_radius_m {
                    booking.radius_m =
                        (booking.radius_m + rules.radius_step_m).min(rules.max_radius_m);
                    continue;
                }
                break candidates;
            };
            if candidates.is_empty() {
                continue; // parked until supply changes near it
            }
            let b = needs.len();
            needs.push(BookingNeed {
                slots,
                open: booking.open.len(),
                waited_s: if booking.is_scheduled() {
                    0.0
                } else {
                    (now - booking.requested_at).num_milliseconds().max(0) as f64 / 1000.0
                },
            });
            round_bookings.push(id);
            for hit in candidates {
                edges.push(Edge {
                    booking: b,
                    therapist: hit.provider_id,
                    eta_s: f64::from(eta.eta_seconds(hit.distance_m)),
                    rating: hit.average_rating.to_f64().unwrap_or_default(),
                });
                hits_by_pair.insert((b, hit.provider_id), hit);
            }
        }
        let solved = assignment::assign(&needs, &edges, rules.solve_budget);
        let mut offered: FxHashSet<usize> = FxHashSet::default();
        let mut planned = Vec::with_capacity(solved.pairs.len());
        for (b, provider_id) in &solved.pairs {
            if !index.try_offer(*provider_id) {
                continue; // taken meanwhile; the booking is looked at again below
            }
            let hit = &hits_by_pair[&(*b, *provider_id)];
            offered.insert(*b);
            planned.push(PlannedOffer {
                booking_id: round_bookings[*b],
                provider_id: *provider_id,
                distance_m: hit.distance_m,
                eta_seconds: eta.eta_seconds(hit.distance_m),
                terms: hit.offer.clone(),
            });
        }
        for (b, id) in round_bookings.iter().enumerate() {
            if offered.contains(&b) {
                continue;
            }
            // Its candidates went to others. Others may be free beyond its k nearest, or beyond
            // its radius: look again (wider) next round. This ends: every round hands the free
            // therapists it saw to someone, and a booking with no free therapist left in reach
            // is parked.
            if let Some(booking) = self.bookings.get_mut(id) {
                booking.radius_m = (booking.radius_m + rules.radius_step_m).min(rules.max_radius_m);
                self.dirty.insert(*id);
            }
        }
        let report = RoundReport {
            considered: round_bookings.len(),
            exact_components: solved.exact_components,
            greedy_components: solved.greedy_components,
        };
        (planned, report)
    }
}

/// Grid distance (in booking cells) that covers every point within `reach_m`.
fn disk_for(reach_m: f64) -> u32 {
    let edge_m = BOOKING_CELL_RESOLUTION.edge_length_km() * 1000.0 * EDGE_SAFETY_FACTOR;
    // A cell k rings away holds nothing nearer than (1.5 k − 2) edges.
    ((reach_m / edge_m + 2.0) / 1.5).ceil().max(1.0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::index::{LiveFix, TherapistProfile, DEFAULT_PRESENCE_TTL};
    use rust_decimal::Decimal;
    use uuid::Uuid;

    const MAKATI: Point = Point {
        lat: 14.5547,
        lng: 121.0244,
    };

    fn offset(north_m: f64, east_m: f64) -> Point {
        let lat = MAKATI.lat + north_m / 111_320.0;
        let lng = MAKATI.lng + east_m / (111_320.0 * MAKATI.lat.to_radians().cos());
        Point::new(lat, lng)
    }

    fn therapist(index: &LiveIndex, id: i64, at: Point, now: DateTime<Utc>) {
        index.upsert_profile(TherapistProfile {
            provider_id: id,
            user_id: id,
            uuid: Uuid::from_u128(id as u128),
            first_name: format!("T{id}"),
            average_rating: Decimal::from(4),
            verified: true,
            active: true,
            online: true,
            service_radius_km: 20,
            services: vec![ServiceOffer {
                service_id: 1,
                price: Decimal::from(800),
                available: true,
                home_service_enabled: true,
                base_distance_km: 5,
                per_km_surcharge: Decimal::ZERO,
                max_travel_distance_km: 20,
            }],
        });
        index.update_fix(
            id,
            LiveFix {
                point: at,
                heading: None,
                speed_kmh: None,
                accuracy_m: Some(5.0),
                at: now,
            },
        );
    }

    fn booking(id: i64, at: Point, now: DateTime<Utc>) -> WaitingBooking {
        WaitingBooking::new(id, at, 1, now, now + chrono::Duration::minutes(5), 5_000.0).unwrap()
    }

    fn rules() -> RoundRules {
        RoundRules {
            batch_size: 1,
            radius_step_m: 5_000.0,
            max_radius_m: 20_000.0,
            solve_budget: Duration::from_millis(20),
            search_budget: Duration::from_secs(5),
        }
    }

    fn pairs(planned: &[PlannedOffer]) -> Vec<(i64, i64)> {
        let mut p: Vec<(i64, i64)> = planned
            .iter()
            .map(|o| (o.booking_id, o.provider_id))
            .collect();
        p.sort_unstable();
        p
    }

    #[test]
    fn a_round_assigns_for_least_total_travel_and_reserves_the_therapists() {
        let now = Utc::now();
        let index = LiveIndex::new(DEFAULT_PRESENCE_TTL);
        // T1 and T2 are 3 km apart; B1 is 1.4 km from T1 and 1.6 km from T2; B2 is 1.0 km
        // from T1 and (about) 4 km from T2.
        let t1 = offset(0.0, 0.0);
        let t2 = offset(0.0, 3000.0);
        therapist(&index, 1, t1, now);
        therapist(&index, 2, t2, now);
        let b1 = offset(0.0, 1400.0);
        let b2 = offset(0.0, -1000.0);
        let mut waiting = WaitingBookings::default();
        waiting.insert(booking(10, b1, now));
        waiting.insert(booking(20, b2, now));
        assert!((distance_m(b1, t2) - 1600.0).abs() < 5.0);
        let (planned, report) =
            waiting.plan_round(&index, EtaModel::default(), &rules(), &admit_all(), now);
        assert_eq!(pairs(&planned), [(10, 2), (20, 1)]);
        assert_eq!(report.considered, 2);
        assert_eq!(
            index.state(1),
            Some(crate::geo::index::TherapistState::Offered)
        );
        assert!(!waiting.has_dirty());
    }

    #[test]
    fn parked_bookings_wake_only_for_supply_within_their_radius() {
        let now = Utc::now();
        let index = LiveIndex::new(DEFAULT_PRESENCE_TTL);
        let mut waiting = WaitingBookings::default();
        waiting.insert(booking(10, MAKATI, now));
        let (planned, _) =
            waiting.plan_round(&index, EtaModel::default(), &rules(), &admit_all(), now);
        assert!(planned.is_empty());
        assert!(
            !waiting.has_dirty(),
            "parked once its radius reached the maximum"
        );
        assert_eq!(waiting.get(10).unwrap().radius_m, 20_000.0);
        // Supply 40 km away wakes nobody; supply 2 km away does.
        assert_eq!(waiting.supply_at(1, offset(40_000.0, 0.0), false), 0);
        assert_eq!(waiting.supply_at(2, offset(2_000.0, 0.0), false), 1);
        // The same therapist pinging within the same cell costs nothing more.
        waiting.plan_round(&index, EtaModel::default(), &rules(), &admit_all(), now);
        assert_eq!(waiting.supply_at(2, offset(2_000.0, 0.0), true), 0);
    }

    #[test]
    fn those_who_declined_are_not_offered_again_but_race_losers_are() {
        let now = Utc::now();
        let index = LiveIndex::new(DEFAULT_PRESENCE_TTL);
        therapist(&index, 1, offset(100.0, 0.0), now);
        therapist(&index, 2, offset(900.0, 0.0), now);
        let mut waiting = WaitingBookings::default();
        waiting.insert(booking(10, MAKATI, now));
        let (planned, _) =
            waiting.plan_round(&index, EtaModel::default(), &rules(), &admit_all(), now);
        assert_eq!(pairs(&planned), [(10, 1)]);
        waiting.offer_opened(10, 1, now);
        // T1 declines: next round goes to T2.
        index.release_offer(1);
        waiting.offer_closed(10, 1, true);
        let (planned, _) =
            waiting.plan_round(&index, EtaModel::default(), &rules(), &admit_all(), now);
        assert_eq!(pairs(&planned), [(10, 2)]);
        // A race loser of another booking stays eligible for this one.
        waiting.insert(booking(20, offset(50.0, 0.0), now));
        waiting.offer_closed(99, 1, false);
        let (planned, _) =
            waiting.plan_round(&index, EtaModel::default(), &rules(), &admit_all(), now);
        assert_eq!(pairs(&planned), [(20, 1)]);
    }

    #[test]
    fn a_filter_plugs_into_eligibility() {
        let now = Utc::now();
        let index = LiveIndex::new(DEFAULT_PRESENCE_TTL);
        therapist(&index, 1, offset(100.0, 0.0), now);
        therapist(&index, 2, offset(900.0, 0.0), now);
        let mut waiting = WaitingBookings::default();
        waiting.insert(booking(10, MAKATI, now));
        let only_even: EligibilityFilter = Arc::new(|_, hit, _| hit.provider_id % 2 == 0);
        let (planned, _) =
            waiting.plan_round(&index, EtaModel::default(), &rules(), &only_even, now);
        assert_eq!(pairs(&planned), [(10, 2)]);
    }

    #[test]
    fn a_spent_search_budget_leaves_the_rest_for_the_next_round() {
        let now = Utc::now();
        let index = LiveIndex::new(DEFAULT_PRESENCE_TTL);
        let mut waiting = WaitingBookings::default();
        let backlog = MIN_SEARCHED_PER_ROUND as i64 + 2;
        for id in 1..=backlog {
            waiting.insert(booking(id, MAKATI, now));
        }
        let mut tight = rules();
        tight.search_budget = Duration::ZERO;
        tight.max_radius_m = 5_000.0;
        waiting.plan_round(&index, EtaModel::default(), &tight, &admit_all(), now);
        assert!(
            waiting.has_dirty(),
            "the minimum searched, two left for later"
        );
        waiting.plan_round(&index, EtaModel::default(), &tight, &admit_all(), now);
        assert!(!waiting.has_dirty());
    }

    #[test]
    fn the_reach_disk_covers_the_radius() {
        assert!(disk_for(20_000.0) >= 8);
        assert!(disk_for(1.0) >= 1);
    }
}
