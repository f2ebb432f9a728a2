//! The live index of therapists: H3 cell → therapists in it, and per therapist the latest fix,
//! state, verification, services and travel limits. Answers "who is near here" from memory.
//!
//! One `RwLock` guards the whole index: pings take the write lock once, for about a microsecond,
//! searches take the read lock for a few; on a handful of cores that beats sharding.
//!
//! Distances are WGS84 geodesics ([`super::distance_m`]). Searches prune on the mean sphere
//! (chords between unit vectors: a few multiplications) with a margin for the sphere's error,
//! and compute the geodesic only for eligible therapists, nearest first, until the answer is
//! proven. Presence follows the server's clock: a therapist is matched while their last fix
//! was *received* within the presence TTL, whatever the phone's clock says.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use h3o::{CellIndex, LatLng, Resolution};
use parking_lot::RwLock;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{distance_m, Point, EARTH_RADIUS_M, SPHERE_RELATIVE_ERROR};

/// H3 resolution of the index. At resolution 9 a cell is about 0.1 km² (edge ≈ 174 m): a
/// nearest-10 search in a dense city touches two or three rings of cells, a few hundred
/// therapists at most.
pub const H3_RESOLUTION: Resolution = Resolution::Nine;
/// A therapist with no fix for this long is not matched (they may have lost signal).
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(60);
/// The widest search `nearby` accepts.
pub const MAX_SEARCH_RADIUS_M: f64 = 50_000.0;
/// Most cells plus therapists one search may look at, whatever its radius. A wide search over an
/// empty service, or over a dense city, stops there and answers the nearest therapists it could
/// prove nearest (possibly fewer than asked for): a few hundred microseconds at worst.
pub const SEARCH_BUDGET: usize = 20_000;
/// Cells vary in size across the globe (up to about 2× in area); bounding unexplored rings with
/// a fraction of the average edge keeps the search exact everywhere.
const EDGE_SAFETY_FACTOR: f64 = 0.6;
/// The farthest a point can be from the centre of its index cell: a cell's centre-to-vertex
/// distance is at most 223 m at resolution 9 anywhere on Earth (a unit test samples the globe),
/// with room to spare. Searches that place therapists at their cell's centre widen by this.
pub const CELL_CENTRE_SLACK_M: f64 = 250.0;

/// What dispatch knows about a therapist right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TherapistState {
    Offline,
    Available,
    /// Holding an open offer: not offered another.
    Offered,
    /// On an active booking.
    Busy,
}

/// A therapist's terms for one service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceOffer {
    pub service_id: i64,
    pub price: Decimal,
    pub available: bool,
    pub home_service_enabled: bool,
    pub base_distance_km: i32,
    pub per_km_surcharge: Decimal,
    pub max_travel_distance_km: i32,
}

/// The slow-changing facts about a therapist, loaded from the database.
#[derive(Debug, Clone, PartialEq)]
pub struct TherapistProfile {
    pub provider_id: i64,
    /// The therapist's user (whose sockets get offers).
    pub user_id: i64,
    pub uuid: Uuid,
    pub first_name: String,
    pub average_rating: Decimal,
    pub verified: bool,
    pub active: bool,
    /// `providers.is_available`: the therapist chose to be online.
    pub online: bool,
    pub service_radius_km: i32,
    pub services: Vec<ServiceOffer>,
}

/// A position fix good enough to match on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveFix {
    pub point: Point,
    pub heading: Option<f64>,
    pub speed_kmh: Option<f64>,
    pub accuracy_m: Option<f64>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct Entry {
    profile: TherapistProfile,
    /// Offered/Busy come from dispatch; otherwise derived from `profile.online`.
    dispatch_state: Option<TherapistState>,
    live: Option<Live>,
    /// When the server received the live fix (its clock, not the phone's): presence.
    received_at: DateTime<Utc>,
}

/// A therapist's live fix, the index cell that holds it, and that cell's centre (where
/// [`Placement::CellCentre`] puts them; worked out when the cell changes, not per search).
#[derive(Debug, Clone, Copy)]
struct Live {
    fix: LiveFix,
    cell: CellIndex,
    centre: Point,
}

impl Entry {
    fn state(&self) -> TherapistState {
        match self.dispatch_state {
            Some(state) => state,
            None if self.profile.online => TherapistState::Available,
            None => TherapistState::Offline,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Occupant {
    provider_id: i64,
    /// The position as a unit vector, so searches compare chords instead of doing trigonometry.
    unit: [f64; 3],
}

/// Fx hashing: keys are integers we generate, and SipHash's DoS resistance costs a third of a
/// search here.
#[derive(Default)]
struct Inner {
    entries: FxHashMap<i64, Entry>,
    cells: FxHashMap<CellIndex, Vec<Occupant>>,
}

/// A nearest-therapist question.
#[derive(Debug, Clone, Copy)]
pub struct NearbyQuery {
    pub point: Point,
    pub service_id: i64,
    pub radius_m: f64,
    pub limit: usize,
    pub placement: Placement,
}

/// Where a search places each therapist when it measures, filters and orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// At their live fix: dispatch, and admins.
    Exact,
    /// At the centre of their index cell (about 0.1 km²): customers. Every part of the answer
    /// (who is within the radius and their travel limits, the order, the distances and so the
    /// quotes) is then the same wherever in the cell the therapist stands, so no series of
    /// searches, however placed and whatever their radii, locates anyone closer than their
    /// cell. Rounding the distances alone would not do: a search walked across a rounding step,
    /// or a radius narrowed step by step, measures the exact distance.
    CellCentre,
}

/// The centre of the index cell that holds `point`: where [`Placement::CellCentre`] puts a
/// therapist standing there.
pub fn cell_centre(point: Point) -> Option<Point> {
    let cell = LatLng::new(point.lat, point.lng)
        .ok()?
        .to_cell(H3_RESOLUTION);
    Some(centre_of(cell))
}

fn centre_of(cell: CellIndex) -> Point {
    let centre = LatLng::from(cell);
    Point::new(centre.lat(), centre.lng())
}

/// One answer: who, how far, and their terms for the service asked about.
#[derive(Debug, Clone, PartialEq)]
pub struct NearbyHit {
    pub provider_id: i64,
    pub uuid: Uuid,
    pub first_name: String,
    pub average_rating: Decimal,
    pub distance_m: f64,
    pub offer: ServiceOffer,
}

/// What became of a fix handed to [`LiveIndex::update_fix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixOutcome {
    /// The live position moved to this fix; who moved, and their state, read under the same lock.
    Moved(Moved),
    /// Older than the live position: kept out of it, so the map never goes backwards in time.
    OlderThanLive,
    /// The therapist is not in the index.
    Unknown,
}

/// A therapist whose live position just moved, as the hooks that follow a fix need them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub uuid: Uuid,
    pub state: TherapistState,
    /// The fix put them in another cell than their last (or is their first): only then can
    /// they have come within reach of something a cell-based search missed before.
    pub new_cell: bool,
    /// Searches had stopped seeing them (no fix, or none received within the presence TTL)
    /// and this fix brings them back, wherever it puts them.
    pub back_on_map: bool,
}

/// A therapist as the map shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct MapEntry {
    pub provider_id: i64,
    pub uuid: Uuid,
    pub state: TherapistState,
    pub fix: LiveFix,
    /// When the server received the fix (presence follows this, not `fix.at`).
    pub received_at: DateTime<Utc>,
}

/// A therapist's state as the map shows it changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StateChange {
    pub provider_id: i64,
    pub uuid: Uuid,
    pub state: TherapistState,
    /// Their live position, if they have one.
    pub point: Option<Point>,
}

/// Told about every state change (the dashboards), outside the index lock.
pub type StateObserver = std::sync::Arc<dyn Fn(StateChange) + Send + Sync>;

/// Told when this node's dispatch offers a therapist, makes them busy or lets them go (the
/// other nodes' indexes), outside the index lock. Not told of changes applied from elsewhere.
pub type DispatchStateObserver = std::sync::Arc<dyn Fn(i64, DispatchChange) + Send + Sync>;

/// One node's dispatch-state change, as the other nodes apply it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchChange {
    pub was: Option<TherapistState>,
    pub now: Option<TherapistState>,
}

impl DispatchChange {
    /// Whether another node applies this change to its own view `current`. Changes from
    /// different nodes cross on the wire (the lease holder ends its offer while the accepting
    /// node makes the therapist busy), so each applies only to the state it started from:
    /// the offer's end never frees a therapist another node already made busy. Busy itself
    /// always applies: the database accepted the booking, whatever this node last heard.
    pub fn applies_to(self, current: Option<TherapistState>) -> bool {
        self.now == Some(TherapistState::Busy) || current == self.was
    }
}

pub struct LiveIndex {
    inner: RwLock<Inner>,
    presence_ttl: Duration,
    observer: std::sync::OnceLock<StateObserver>,
    dispatch_observer: std::sync::OnceLock<DispatchStateObserver>,
}

impl LiveIndex {
    pub fn new(presence_ttl: Duration) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            presence_ttl,
            observer: std::sync::OnceLock::new(),
            dispatch_observer: std::sync::OnceLock::new(),
        }
    }

    /// Sets the observer of this node's dispatch-state changes (once, at start-up).
    pub fn observe_dispatch(&self, observer: DispatchStateObserver) {
        let _ = self.dispatch_observer.set(observer);
    }

    /// Applies a dispatch change another node decided, if it still applies here (see
    /// [`DispatchChange::applies_to`]); its observers here see the state change (dashboards),
    /// the dispatch observer does not (it would echo it back).
    pub fn apply_remote_dispatch_change(&self, provider_id: i64, change: DispatchChange) {
        self.change_entry_from(provider_id, false, |entry| {
            if change.applies_to(entry.dispatch_state) {
                entry.dispatch_state = change.now;
            }
            true
        });
    }

    /// Sets a dispatch state the database vouches for (after a catch-up), whatever it was.
    fn apply_authoritative_dispatch_state(&self, provider_id: i64, state: Option<TherapistState>) {
        self.change_entry_from(provider_id, false, |entry| {
            entry.dispatch_state = state;
            true
        });
    }

    /// After a catch-up: exactly the therapists in `busy` are busy (an offer in flight is
    /// left alone; it ends by itself).
    pub fn sync_busy(&self, busy: &[i64]) {
        let busy: rustc_hash::FxHashSet<i64> = busy.iter().copied().collect();
        let changes: Vec<(i64, Option<TherapistState>)> = {
            let inner = self.inner.read();
            inner
                .entries
                .iter()
                .filter_map(|(&id, entry)| {
                    let is_busy = entry.dispatch_state == Some(TherapistState::Busy);
                    match (is_busy, busy.contains(&id)) {
                        (false, true) => Some((id, Some(TherapistState::Busy))),
                        (true, false) => Some((id, None)),
                        _ => None,
                    }
                })
                .collect()
        };
        for (id, state) in changes {
            self.apply_authoritative_dispatch_state(id, state);
        }
    }

    /// Sets the observer of state changes (once, at start-up).
    pub fn observe(&self, observer: StateObserver) {
        let _ = self.observer.set(observer);
    }

    /// Applies `change` to one entry; tells the observer if the state it shows changed.
    fn change_entry(&self, provider_id: i64, change: impl FnOnce(&mut Entry) -> bool) -> bool {
        self.change_entry_from(provider_id, true, change)
    }

    /// [`Self::change_entry`]; `local` says whether this node decided it (and tells the
    /// dispatch observer when the dispatch state moved).
    fn change_entry_from(
        &self,
        provider_id: i64,
        local: bool,
        change: impl FnOnce(&mut Entry) -> bool,
    ) -> bool {
        let (applied, report, dispatch) = {
            let mut inner = self.inner.write();
            match inner.entries.get_mut(&provider_id) {
                None => (false, None, None),
                Some(entry) => {
                    let before = entry.state();
                    let dispatch_before = entry.dispatch_state;
                    let applied = change(entry);
                    let after = entry.state();
                    let report = (before != after).then(|| StateChange {
                        provider_id,
                        uuid: entry.profile.uuid,
                        state: after,
                        point: entry.live.map(|live| live.fix.point),
                    });
                    let dispatch = (local && entry.dispatch_state != dispatch_before).then_some(
                        DispatchChange {
                            was: dispatch_before,
                            now: entry.dispatch_state,
                        },
                    );
                    (applied, report, dispatch)
                }
            }
        };
        if let (Some(report), Some(observer)) = (report, self.observer.get()) {
            observer(report);
        }
        if let (Some(change), Some(observer)) = (dispatch, self.dispatch_observer.get()) {
            observer(provider_id, change);
        }
        applied
    }

    pub fn presence_ttl(&self) -> Duration {
        self.presence_ttl
    }

    /// Number of therapists known to the index.
    pub fn len(&self) -> usize {
        self.inner.read().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a therapist or replaces their profile, keeping their live position and dispatch state.
    pub fn upsert_profile(&self, profile: TherapistProfile) {
        let provider_id = profile.provider_id;
        if self.inner.read().entries.contains_key(&provider_id) {
            self.change_entry(provider_id, |entry| {
                entry.profile = profile;
                true
            });
            return;
        }
        let mut inner = self.inner.write();
        match inner.entries.get_mut(&provider_id) {
            Some(entry) => entry.profile = profile,
            None => {
                inner.entries.insert(
                    profile.provider_id,
                    Entry {
                        profile,
                        dispatch_state: None,
                        live: None,
                        received_at: DateTime::<Utc>::MIN_UTC,
                    },
                );
            }
        }
    }

    /// Forgets a therapist entirely (deleted provider).
    pub fn remove(&self, provider_id: i64) {
        let mut inner = self.inner.write();
        if let Some(entry) = inner.entries.remove(&provider_id) {
            if let Some(Live { cell, .. }) = entry.live {
                remove_occupant(&mut inner.cells, cell, provider_id);
            }
        }
    }

    /// Moves the therapist to `fix`, received now, unless the index already holds a newer one.
    pub fn update_fix(&self, provider_id: i64, fix: LiveFix) -> FixOutcome {
        self.record_fix(provider_id, fix, Utc::now())
    }

    /// Moves the therapist to `fix`, received by the server at `received_at`, unless the index
    /// already holds a fix the phone took later. One write lock, which also reads who moved and
    /// their state for the hooks that follow.
    pub fn record_fix(
        &self,
        provider_id: i64,
        fix: LiveFix,
        received_at: DateTime<Utc>,
    ) -> FixOutcome {
        let cell = match LatLng::new(fix.point.lat, fix.point.lng) {
            Ok(latlng) => latlng.to_cell(H3_RESOLUTION),
            Err(_) => return FixOutcome::Unknown,
        };
        let mut guard = self.inner.write();
        let inner = &mut *guard;
        let Some(entry) = inner.entries.get_mut(&provider_id) else {
            return FixOutcome::Unknown;
        };
        let previous_cell = match entry.live {
            Some(current) if current.fix.at > fix.at => return FixOutcome::OlderThanLive,
            Some(current) => Some(current.cell),
            None => None,
        };
        let centre = match entry.live {
            Some(current) if current.cell == cell => current.centre,
            _ => centre_of(cell),
        };
        let back_on_map =
            entry.live.is_none() || !is_fresh(entry.received_at, received_at, self.presence_ttl);
        entry.live = Some(Live { fix, cell, centre });
        entry.received_at = received_at;
        let moved = Moved {
            uuid: entry.profile.uuid,
            state: entry.state(),
            new_cell: previous_cell != Some(cell),
            back_on_map,
        };
        let occupant = Occupant {
            provider_id,
            unit: unit_vector(fix.point),
        };
        match previous_cell {
            Some(previous) if previous == cell => {
                let bucket = inner.cells.entry(cell).or_default();
                match bucket.iter_mut().find(|o| o.provider_id == provider_id) {
                    Some(slot) => *slot = occupant,
                    None => bucket.push(occupant),
                }
            }
            Some(previous) => {
                remove_occupant(&mut inner.cells, previous, provider_id);
                inner.cells.entry(cell).or_default().push(occupant);
            }
            None => inner.cells.entry(cell).or_default().push(occupant),
        }
        FixOutcome::Moved(moved)
    }

    /// Sets (or with `None`, clears) the dispatch state: Offered or Busy.
    pub fn set_dispatch_state(&self, provider_id: i64, state: Option<TherapistState>) {
        self.change_entry(provider_id, |entry| {
            entry.dispatch_state = state;
            true
        });
    }

    /// Reserves an available therapist for an offer; `false` if they are not available (offline,
    /// already offered, busy). The check and the change happen under one lock, so two bookings
    /// can never offer the same therapist at once.
    pub fn try_offer(&self, provider_id: i64) -> bool {
        self.change_entry(provider_id, |entry| {
            if entry.state() == TherapistState::Available {
                entry.dispatch_state = Some(TherapistState::Offered);
                true
            } else {
                false
            }
        })
    }

    /// Ends an offer: the therapist is available again unless something else claimed them.
    pub fn release_offer(&self, provider_id: i64) {
        self.change_entry(provider_id, |entry| {
            if entry.dispatch_state == Some(TherapistState::Offered) {
                entry.dispatch_state = None;
            }
            true
        });
    }

    pub fn state(&self, provider_id: i64) -> Option<TherapistState> {
        self.inner
            .read()
            .entries
            .get(&provider_id)
            .map(Entry::state)
    }

    pub fn live_fix(&self, provider_id: i64) -> Option<LiveFix> {
        self.inner
            .read()
            .entries
            .get(&provider_id)
            .and_then(|e| e.live.map(|live| live.fix))
    }

    /// One therapist as the map shows them (if they have a position).
    pub fn map_entry(&self, provider_id: i64) -> Option<MapEntry> {
        let inner = self.inner.read();
        let entry = inner.entries.get(&provider_id)?;
        let fix = entry.live?.fix;
        Some(MapEntry {
            provider_id,
            uuid: entry.profile.uuid,
            state: entry.state(),
            fix,
            received_at: entry.received_at,
        })
    }

    /// The therapist's user id and public id, without copying their profile.
    pub fn identity(&self, provider_id: i64) -> Option<(i64, Uuid)> {
        self.inner
            .read()
            .entries
            .get(&provider_id)
            .map(|e| (e.profile.user_id, e.profile.uuid))
    }

    pub fn profile(&self, provider_id: i64) -> Option<TherapistProfile> {
        self.inner
            .read()
            .entries
            .get(&provider_id)
            .map(|e| e.profile.clone())
    }

    /// Therapists with a position, as the map shows them.
    pub fn map_entries(&self, mut keep: impl FnMut(Point) -> bool) -> Vec<MapEntry> {
        let inner = self.inner.read();
        inner
            .entries
            .values()
            .filter_map(|e| {
                let fix = e.live?.fix;
                keep(fix.point).then(|| MapEntry {
                    provider_id: e.profile.provider_id,
                    uuid: e.profile.uuid,
                    state: e.state(),
                    fix,
                    received_at: e.received_at,
                })
            })
            .collect()
    }

    /// Counts by state of therapists with a fresh fix, for metrics and the dashboard.
    pub fn counts(&self, now: DateTime<Utc>) -> HashMap<TherapistState, usize> {
        let inner = self.inner.read();
        let mut counts = HashMap::new();
        for entry in inner.entries.values() {
            let fresh = entry.live.is_some() && is_fresh(entry.received_at, now, self.presence_ttl);
            let state = if fresh {
                entry.state()
            } else {
                TherapistState::Offline
            };
            *counts.entry(state).or_default() += 1;
        }
        counts
    }

    /// The `limit` nearest eligible therapists within `radius_m` (WGS84 geodesic), nearest
    /// first, ties by id.
    ///
    /// Eligible: verified, active, online and not holding an offer or booking, with a fix
    /// received within the presence TTL, offering the service with home service enabled, and
    /// the customer within both their service radius and the service's maximum travel distance.
    ///
    /// Rings of cells are visited outwards. Candidates are first ordered by chord length between
    /// unit vectors (monotone in great-circle distance, a few multiplications), which is within
    /// [`SPHERE_RELATIVE_ERROR`] of the geodesic; the geodesic is computed lazily, nearest on the
    /// sphere first and only for eligible therapists, and an answer is given once no unmeasured
    /// candidate and no unvisited cell can be nearer. A dense city costs a few hundred chords
    /// and about `limit` geodesics. The search stops after [`SEARCH_BUDGET`] cells and
    /// therapists, answering what it proved so far.
    pub fn nearby(&self, query: &NearbyQuery, now: DateTime<Utc>) -> Vec<NearbyHit> {
        self.nearby_where(query, now, |_, _| true)
    }

    /// [`Self::nearby`] among the therapists `keep(provider_id, distance_m)` admits (a
    /// caller's own rule, such as room in their calendar), so the limit counts only them.
    pub fn nearby_where(
        &self,
        query: &NearbyQuery,
        now: DateTime<Utc>,
        keep: impl Fn(i64, f64) -> bool,
    ) -> Vec<NearbyHit> {
        if query.limit == 0 || !query.point.is_valid() {
            return Vec::new();
        }
        let Ok(origin) = LatLng::new(query.point.lat, query.point.lng) else {
            return Vec::new();
        };
        let origin = origin.to_cell(H3_RESOLUTION);
        let here = unit_vector(query.point);
        let radius = query.radius_m.clamp(0.0, MAX_SEARCH_RADIUS_M);
        // Candidates are found by their fixes; a therapist placed at their cell's centre is at
        // most `slack` nearer or farther than their fix, so every bound widens by it.
        let slack = match query.placement {
            Placement::Exact => 0.0,
            Placement::CellCentre => CELL_CENTRE_SLACK_M,
        };
        // Anyone within `radius` (+ `slack`) on the ellipsoid is within this on the sphere.
        let sphere_radius = (radius + slack) / (1.0 - SPHERE_RELATIVE_ERROR);
        let radius_chord2 = chord2_for_distance(sphere_radius);
        let edge_m = H3_RESOLUTION.edge_length_km() * 1000.0 * EDGE_SAFETY_FACTOR;
        let inner = self.inner.read();
        // Candidates on the sphere as (chord², provider): `unchecked` lie beyond the band the
        // visited rings cover; `band` within it, sorted, measured from `next` on.
        let mut unchecked: Vec<(f64, i64)> = Vec::new();
        let mut band: Vec<(f64, i64)> = Vec::new();
        // Eligible, measured, not yet answered: (geodesic metres, provider), sorted.
        let mut measured: Vec<(f64, i64)> = Vec::new();
        let mut found: Vec<(f64, i64)> = Vec::with_capacity(query.limit);
        let mut ring_cells = Vec::new();
        let mut rings = Rings::new(origin);
        let mut budget = SEARCH_BUDGET;
        'rings: for k in 0u32.. {
            rings.ring(k, &mut ring_cells);
            if k > 0 && ring_cells.is_empty() {
                budget = 0; // past the widest ring a search may reach (by a pentagon)
            }
            for cell in &ring_cells {
                budget = budget.saturating_sub(1);
                let Some(bucket) = inner.cells.get(cell) else {
                    continue;
                };
                budget = budget.saturating_sub(bucket.len());
                for occupant in bucket {
                    let c2 = chord2(&here, &occupant.unit);
                    if c2 <= radius_chord2 {
                        unchecked.push((c2, occupant.provider_id));
                    }
                }
            }
            // Cells not yet visited are at grid distance ≥ k + 1: at least this far on the
            // sphere, and `proven_m` on the ellipsoid.
            let unexplored_from = ((1.5 * f64::from(k + 1)) - 2.0) * edge_m;
            let exhausted = budget == 0;
            let everything_seen = unexplored_from > sphere_radius || exhausted;
            let (band_chord2, proven_m) = if everything_seen && !exhausted {
                (f64::INFINITY, f64::INFINITY)
            } else {
                let sphere = unexplored_from.max(0.0);
                (
                    chord2_for_distance(sphere),
                    sphere * (1.0 - SPHERE_RELATIVE_ERROR) - slack,
                )
            };
            unchecked.retain(|&candidate| {
                let inside = candidate.0 < band_chord2;
                if inside {
                    band.push(candidate);
                }
                !inside
            });
            band.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut next = 0;
            loop {
                // The nearest any unmeasured candidate can be on the ellipsoid.
                let unmeasured_from = band.get(next).map_or(f64::INFINITY, |&(c2, _)| {
                    distance_from_chord2(c2) * (1.0 - SPHERE_RELATIVE_ERROR) - slack
                });
                match measured.first() {
                    Some(&(d, provider_id)) if d <= unmeasured_from => {
                        if d > proven_m {
                            break; // an unvisited cell may still hold someone nearer
                        }
                        measured.remove(0);
                        found.push((d, provider_id));
                        if found.len() == query.limit {
                            break 'rings;
                        }
                    }
                    _ => {
                        let Some(&(_, provider_id)) = band.get(next) else {
                            break;
                        };
                        next += 1;
                        let Some(entry) = inner.entries.get(&provider_id) else {
                            continue;
                        };
                        // Everything but the distance first: no geodesic for the ineligible.
                        if self
                            .eligible_offer(entry, query.service_id, 0.0, now)
                            .is_none()
                        {
                            continue;
                        }
                        let Some(live) = entry.live else {
                            continue;
                        };
                        let placed_at = match query.placement {
                            Placement::Exact => live.fix.point,
                            Placement::CellCentre => live.centre,
                        };
                        let d = distance_m(query.point, placed_at);
                        if d <= radius
                            && self
                                .eligible_offer(entry, query.service_id, d, now)
                                .is_some()
                            && keep(provider_id, d)
                        {
                            let at = measured.partition_point(|&(m, id)| {
                                m.total_cmp(&d).then(id.cmp(&provider_id)).is_lt()
                            });
                            measured.insert(at, (d, provider_id));
                        }
                    }
                }
            }
            band.drain(..next);
            if everything_seen {
                if exhausted {
                    metrics::counter!("hilot_nearby_searches_capped_total").increment(1);
                }
                break;
            }
        }
        found
            .into_iter()
            .filter_map(|(distance_m, provider_id)| {
                let entry = inner.entries.get(&provider_id)?;
                let offer = self.eligible_offer(entry, query.service_id, distance_m, now)?;
                Some(NearbyHit {
                    provider_id,
                    uuid: entry.profile.uuid,
                    first_name: entry.profile.first_name.clone(),
                    average_rating: entry.profile.average_rating,
                    distance_m,
                    offer: offer.clone(),
                })
            })
            .collect()
    }

    /// The therapist's offer for the service if they may take this customer at `distance_m`.
    fn eligible_offer<'e>(
        &self,
        entry: &'e Entry,
        service_id: i64,
        distance_m: f64,
        now: DateTime<Utc>,
    ) -> Option<&'e ServiceOffer> {
        let profile = &entry.profile;
        if !(profile.verified && profile.active) || entry.state() != TherapistState::Available {
            return None;
        }
        if entry.live.is_none() || !is_fresh(entry.received_at, now, self.presence_ttl) {
            return None;
        }
        if distance_m > f64::from(profile.service_radius_km) * 1000.0 {
            return None;
        }
        profile.services.iter().find(|offer| {
            offer.service_id == service_id
                && offer.available
                && offer.home_service_enabled
                && distance_m <= f64::from(offer.max_travel_distance_km) * 1000.0
        })
    }
}

/// The point on the unit sphere.
fn unit_vector(p: Point) -> [f64; 3] {
    let (lat, lng) = (p.lat.to_radians(), p.lng.to_radians());
    [lat.cos() * lng.cos(), lat.cos() * lng.sin(), lat.sin()]
}

/// Squared chord length between two unit vectors.
fn chord2(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    let (dx, dy, dz) = (a[0] - b[0], a[1] - b[1], a[2] - b[2]);
    dx * dx + dy * dy + dz * dz
}

/// Squared chord of the great-circle arc `d` metres long.
fn chord2_for_distance(d: f64) -> f64 {
    let half_angle = (d / EARTH_RADIUS_M / 2.0).min(std::f64::consts::FRAC_PI_2);
    let chord = 2.0 * half_angle.sin();
    chord * chord
}

/// Great-circle distance for a squared chord: the haversine formula, since hav(θ) = (c/2)².
fn distance_from_chord2(c2: f64) -> f64 {
    2.0 * EARTH_RADIUS_M * (c2.sqrt() / 2.0).min(1.0).asin()
}

fn is_fresh(at: DateTime<Utc>, now: DateTime<Utc>, ttl: Duration) -> bool {
    (now - at).to_std().map_or(true, |age| age <= ttl)
}

/// The widest ring a search can reach: a disk of this many rings already holds more cells
/// than [`SEARCH_BUDGET`].
fn widest_searchable_ring() -> u32 {
    let mut k = 0u32;
    while 3 * (k as usize) * (k as usize + 1) < SEARCH_BUDGET {
        k += 1;
    }
    k
}

/// The rings around a search's origin, one at a time. Near a pentagon the fast ring fails from
/// some distance on; the safe disk is then computed once, out to the widest ring a search can
/// reach, and the rings are read from it (computing a safe disk for every ring cost a cube of
/// the distance: a search started by a pentagon stalled the index for a long while).
struct Rings {
    origin: CellIndex,
    /// Cells by grid distance, once the fast ring has failed.
    safe: Option<Vec<Vec<CellIndex>>>,
}

impl Rings {
    fn new(origin: CellIndex) -> Self {
        Self { origin, safe: None }
    }

    /// Cells at grid distance exactly `k` from the origin, into `out`.
    fn ring(&mut self, k: u32, out: &mut Vec<CellIndex>) {
        out.clear();
        if self.safe.is_none() {
            let mut complete = true;
            for cell in self.origin.grid_ring_fast(k) {
                match cell {
                    Some(cell) => out.push(cell),
                    None => {
                        complete = false;
                        break;
                    }
                }
            }
            if complete {
                return;
            }
            out.clear();
            let widest = widest_searchable_ring().max(k);
            let mut by_distance = vec![Vec::new(); widest as usize + 1];
            for (cell, distance) in self.origin.grid_disk_distances_safe(widest) {
                by_distance[distance as usize].push(cell);
            }
            self.safe = Some(by_distance);
        }
        if let Some(cells) = self.safe.as_ref().and_then(|rings| rings.get(k as usize)) {
            out.extend_from_slice(cells);
        }
    }
}

fn remove_occupant(
    cells: &mut FxHashMap<CellIndex, Vec<Occupant>>,
    cell: CellIndex,
    provider_id: i64,
) {
    if let Some(bucket) = cells.get_mut(&cell) {
        bucket.retain(|o| o.provider_id != provider_id);
        if bucket.is_empty() {
            cells.remove(&cell);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration as ChronoDuration;

    fn offer(service_id: i64) -> ServiceOffer {
        ServiceOffer {
            service_id,
            price: Decimal::from(800),
            available: true,
            home_service_enabled: true,
            base_distance_km: 5,
            per_km_surcharge: Decimal::ZERO,
            max_travel_distance_km: 10,
        }
    }

    fn therapist(id: i64) -> TherapistProfile {
        TherapistProfile {
            provider_id: id,
            user_id: id,
            uuid: Uuid::from_u128(id as u128),
            first_name: format!("T{id}"),
            average_rating: Decimal::from(4),
            verified: true,
            active: true,
            online: true,
            service_radius_km: 10,
            services: vec![offer(1)],
        }
    }

    fn fix(lat: f64, lng: f64, at: DateTime<Utc>) -> LiveFix {
        LiveFix {
            point: Point::new(lat, lng),
            heading: None,
            speed_kmh: None,
            accuracy_m: Some(10.0),
            at,
        }
    }

    fn query(limit: usize) -> NearbyQuery {
        NearbyQuery {
            point: Point::new(14.5547, 121.0244),
            service_id: 1,
            radius_m: 5000.0,
            limit,
            placement: Placement::Exact,
        }
    }

    #[test]
    fn rings_by_a_pentagon_are_the_safe_disk_s_rings_computed_once() {
        let pentagon = H3_RESOLUTION.pentagons().next().unwrap();
        // A few cells away, so the fast ring works at first and fails further out.
        let origin = pentagon.grid_disk::<Vec<_>>(3)[20];
        let mut rings = Rings::new(origin);
        let mut out = Vec::new();
        for k in 0..=12u32 {
            rings.ring(k, &mut out);
            let mut expected: Vec<CellIndex> = origin
                .grid_disk_distances_safe(k)
                .filter(|&(_, d)| d == k)
                .map(|(cell, _)| cell)
                .collect();
            expected.sort_unstable();
            out.sort_unstable();
            assert_eq!(out, expected, "ring {k}");
        }
        assert!(
            rings.safe.is_some(),
            "the fast ring never failed near the pentagon"
        );
        rings.ring(widest_searchable_ring() + 1, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn nearest_first_ties_by_id_and_only_eligible() {
        let index = LiveIndex::new(DEFAULT_PRESENCE_TTL);
        let now = Utc::now();
        for id in 1..=5 {
            index.upsert_profile(therapist(id));
        }
        index.update_fix(3, fix(14.5560, 121.0244, now)); // ~145 m
        index.update_fix(1, fix(14.5560, 121.0244, now)); // same spot: tie, lower id first
        index.update_fix(2, fix(14.5600, 121.0244, now)); // ~590 m
        index.record_fix(
            4,
            fix(14.5548, 121.0244, now - ChronoDuration::seconds(120)),
            now - ChronoDuration::seconds(120),
        ); // received two minutes ago: stale
        let mut offline = therapist(5);
        offline.online = false;
        index.upsert_profile(offline);
        index.update_fix(5, fix(14.5547, 121.0245, now));

        let ids: Vec<i64> = index
            .nearby(&query(10), now)
            .iter()
            .map(|h| h.provider_id)
            .collect();
        assert_eq!(ids, [1, 3, 2]);
        let ids: Vec<i64> = index
            .nearby(&query(1), now)
            .iter()
            .map(|h| h.provider_id)
            .collect();
        assert_eq!(ids, [1]);
    }

    #[test]
    fn offered_or_busy_therapists_are_not_matched() {
        let index = LiveIndex::new(DEFAULT_PRESENCE_TTL);
        let now = Utc::now();
        index.upsert_profile(therapist(1));
        index.update_fix(1, fix(14.5550, 121.0244, now));
        index.set_dispatch_state(1, Some(TherapistState::Offered));
        assert!(index.nearby(&query(10), now).is_empty());
        index.set_dispatch_state(1, None);
        assert_eq!(index.nearby(&query(10), now).len(), 1);
    }

    #[test]
    fn an_offer_ending_elsewhere_never_frees_a_therapist_made_busy_here() {
        use TherapistState::{Busy, Offered};
        let index = LiveIndex::new(DEFAULT_PRESENCE_TTL);
        index.upsert_profile(therapist(1));
        index.update_fix(1, fix(14.5550, 121.0244, Utc::now()));
        // The lease holder offered; this node heard it, then the therapist accepted here.
        let offered = DispatchChange {
            was: None,
            now: Some(Offered),
        };
        index.apply_remote_dispatch_change(1, offered);
        index.set_dispatch_state(1, Some(Busy));
        // The lease holder's end of the offer crosses the accept on the wire.
        index.apply_remote_dispatch_change(
            1,
            DispatchChange {
                was: Some(Offered),
                now: None,
            },
        );
        assert_eq!(index.state(1), Some(Busy));
        // A busy therapist is busy wherever it was decided, whatever was heard before.
        index.set_dispatch_state(1, None);
        index.apply_remote_dispatch_change(
            1,
            DispatchChange {
                was: None,
                now: Some(Busy),
            },
        );
        assert_eq!(index.state(1), Some(Busy));
        // The end of the trip frees them.
        index.apply_remote_dispatch_change(
            1,
            DispatchChange {
                was: Some(Busy),
                now: None,
            },
        );
        assert_eq!(index.state(1), Some(TherapistState::Available));
        // An offer made before this node heard of a busy therapist does not apply.
        index.set_dispatch_state(1, Some(Busy));
        index.apply_remote_dispatch_change(1, offered);
        assert_eq!(index.state(1), Some(Busy));
    }

    #[test]
    fn older_fixes_never_move_the_live_position_back() {
        let index = LiveIndex::new(DEFAULT_PRESENCE_TTL);
        let now = Utc::now();
        index.upsert_profile(therapist(1));
        assert!(matches!(
            index.update_fix(1, fix(14.56, 121.02, now)),
            FixOutcome::Moved(Moved {
                state: TherapistState::Available,
                ..
            })
        ));
        assert_eq!(
            index.update_fix(1, fix(14.50, 121.00, now - ChronoDuration::seconds(5))),
            FixOutcome::OlderThanLive
        );
        assert_eq!(index.live_fix(1).unwrap().point, Point::new(14.56, 121.02));
        assert_eq!(
            index.update_fix(99, fix(14.56, 121.02, now)),
            FixOutcome::Unknown
        );
    }

    #[test]
    fn a_fix_says_whether_it_changed_cell_or_brought_the_therapist_back_on_the_map() {
        let index = LiveIndex::new(DEFAULT_PRESENCE_TTL);
        let now = Utc::now();
        index.upsert_profile(therapist(1));
        let moved = |lat: f64, received: DateTime<Utc>| match index.record_fix(
            1,
            fix(lat, 121.0244, received),
            received,
        ) {
            FixOutcome::Moved(moved) => (moved.new_cell, moved.back_on_map),
            other => panic!("not moved: {other:?}"),
        };
        assert_eq!(moved(14.5550, now), (true, true), "the first fix");
        assert_eq!(
            moved(14.55501, now + ChronoDuration::seconds(5)),
            (false, false)
        );
        assert_eq!(
            moved(14.5650, now + ChronoDuration::seconds(10)),
            (true, false)
        );
        // Silent for longer than the TTL, then heard again in the same cell.
        assert_eq!(
            moved(14.5650, now + ChronoDuration::seconds(80)),
            (false, true)
        );
    }

    #[test]
    fn presence_follows_the_servers_clock_not_the_phones() {
        let index = LiveIndex::new(DEFAULT_PRESENCE_TTL);
        let now = Utc::now();
        index.upsert_profile(therapist(1));
        // A phone whose clock is 61 s slow, heard just now: matched.
        index.update_fix(1, fix(14.5550, 121.0244, now - ChronoDuration::seconds(61)));
        assert_eq!(index.nearby(&query(10), now).len(), 1);
        // Nothing heard for longer than the TTL: not matched, whatever the fix says.
        assert!(index
            .nearby(&query(10), now + ChronoDuration::seconds(61))
            .is_empty());
    }

    #[test]
    fn distances_are_geodesics_and_wide_searches_stop_at_the_budget() {
        let index = LiveIndex::new(DEFAULT_PRESENCE_TTL);
        let now = Utc::now();
        index.upsert_profile(therapist(1));
        index.update_fix(1, fix(14.5600, 121.0244, now));
        let hit = &index.nearby(&query(10), now)[0];
        let geodesic = crate::geo::distance_m(query(1).point, Point::new(14.5600, 121.0244));
        assert_eq!(hit.distance_m, geodesic);
        // An empty service over the widest radius ends (at the budget) with nothing.
        let wide = NearbyQuery {
            service_id: 99,
            radius_m: MAX_SEARCH_RADIUS_M,
            ..query(50)
        };
        assert!(index.nearby(&wide, now).is_empty());
    }

    #[test]
    fn the_search_agrees_with_brute_force_geodesics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let index = LiveIndex::new(DEFAULT_PRESENCE_TTL);
        let now = Utc::now();
        let mut everyone = Vec::new();
        for id in 1..=3000 {
            let mut profile = therapist(id);
            profile.service_radius_km = rng.gen_range(1..=10);
            profile.online = rng.gen_bool(0.9);
            index.upsert_profile(profile.clone());
            let p = Point::new(
                14.45 + rng.gen::<f64>() * 0.25,
                120.95 + rng.gen::<f64>() * 0.15,
            );
            index.update_fix(id, fix(p.lat, p.lng, now));
            everyone.push((id, p, profile));
        }
        for round in 0..400 {
            // Customers' searches place everyone at their cell's centre.
            let placement = if round % 2 == 0 {
                Placement::Exact
            } else {
                Placement::CellCentre
            };
            let placed = |p: Point| match placement {
                Placement::Exact => p,
                Placement::CellCentre => cell_centre(p).unwrap(),
            };
            let here = Point::new(
                14.45 + rng.gen::<f64>() * 0.25,
                120.95 + rng.gen::<f64>() * 0.15,
            );
            let radius_m = rng.gen_range(300.0..12_000.0);
            let limit = rng.gen_range(1..=25);
            let mut expected: Vec<(f64, i64)> = everyone
                .iter()
                .filter(|(_, _, profile)| profile.online)
                .map(|(id, p, profile)| (crate::geo::distance_m(here, placed(*p)), *id, profile))
                .filter(|(d, _, profile)| {
                    *d <= radius_m
                        && *d <= f64::from(profile.service_radius_km) * 1000.0
                        && *d <= 10_000.0
                })
                .map(|(d, id, _)| (d, id))
                .collect();
            expected.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            expected.truncate(limit);
            let got: Vec<(f64, i64)> = index
                .nearby(
                    &NearbyQuery {
                        point: here,
                        service_id: 1,
                        radius_m,
                        limit,
                        placement,
                    },
                    now,
                )
                .iter()
                .map(|h| (h.distance_m, h.provider_id))
                .collect();
            assert_eq!(got, expected, "{here:?} {radius_m} {limit} {placement:?}");
        }
    }

    #[test]
    fn a_point_is_never_farther_from_its_cell_centre_than_the_slack() {
        let mut farthest: f64 = 0.0;
        for lat_step in -89..=89 {
            for lng_step in -90..90 {
                let point = Point::new(f64::from(lat_step), f64::from(lng_step) * 2.0 + 0.5);
                let cell = LatLng::new(point.lat, point.lng)
                    .unwrap()
                    .to_cell(H3_RESOLUTION);
                let centre = centre_of(cell);
                for vertex in cell.boundary().iter() {
                    let vertex = Point::new(vertex.lat(), vertex.lng());
                    farthest = farthest.max(crate::geo::distance_m(centre, vertex));
                }
            }
        }
        assert!(
            farthest < CELL_CENTRE_SLACK_M && farthest > 150.0,
            "{farthest}"
        );
    }

    #[test]
    fn a_customer_search_answers_the_same_wherever_in_its_cell_a_therapist_stands() {
        let now = Utc::now();
        let cell = LatLng::new(14.5547, 121.0244)
            .unwrap()
            .to_cell(H3_RESOLUTION);
        let centre = centre_of(cell);
        // Two places in the cell, near opposite vertices.
        let vertices: Vec<LatLng> = cell.boundary().iter().copied().collect();
        let inside = |v: &LatLng| {
            Point::new(
                centre.lat + 0.9 * (v.lat() - centre.lat),
                centre.lng + 0.9 * (v.lng() - centre.lng),
            )
        };
        let (a, b) = (inside(&vertices[0]), inside(&vertices[3]));
        assert!(crate::geo::distance_m(a, b) > 250.0);
        let answer = |at: Point, query: &NearbyQuery| {
            let index = LiveIndex::new(DEFAULT_PRESENCE_TTL);
            index.upsert_profile(therapist(1));
            index.update_fix(1, fix(at.lat, at.lng, now));
            index
                .nearby(query, now)
                .iter()
                .map(|h| h.distance_m)
                .collect::<Vec<_>>()
        };
        let from = Point::new(14.5600, 121.0300);
        let to_centre = crate::geo::distance_m(from, centre);
        // Radii just either side of the distance to the centre: the same answer for both places.
        for radius_m in [to_centre - 0.5, to_centre + 0.5] {
            let query = NearbyQuery {
                point: from,
                radius_m,
                placement: Placement::CellCentre,
                ..query(10)
            };
            assert_eq!(answer(a, &query), answer(b, &query), "{radius_m}");
        }
        let exact = NearbyQuery {
            point: from,
            ..query(10)
        };
        assert_ne!(answer(a, &exact), answer(b, &exact));
    }

    #[test]
    fn travel_limits_apply() {
        let index = LiveIndex::new(DEFAULT_PRESENCE_TTL);
        let now = Utc::now();
        let mut near_only = therapist(1);
        near_only.service_radius_km = 1;
        index.upsert_profile(near_only);
        index.update_fix(1, fix(14.5747, 121.0244, now)); // ~2.2 km away
        assert!(index.nearby(&query(10), now).is_empty());
    }
}
