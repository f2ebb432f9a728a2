//! The dashboard feed: each dashboard watches a viewport; movements, state changes and booking changes
//! inside it are pushed, coalesced per therapist (latest wins) and flushed at most
//! `dashboard_flushes_per_s` times a second.
//!
//! A client's pending updates hold at most one entry per therapist in its viewport (plus a
//! bounded list of booking changes), so a client that never reads costs bounded memory, and
//! producers only touch a small map under a short lock, so no dashboard waits for another.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::geo::index::{LiveFix, LiveIndex, StateChange, TherapistState};
use crate::geo::Point;

/// Booking changes waiting for one dashboard before the oldest are dropped.
pub const MAX_PENDING_BOOKING_FRAMES: usize = 1_000;

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

/// `[west, south, east, north]` in degrees, as a map sends its view: any width, including the
/// whole world and boxes that cross the antimeridian (`west > east`, as in RFC 7946).
/// Longitudes are normalised into -180..180; a box 360° wide or wider is the whole world.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bbox {
    pub west: f64,
    pub south: f64,
    pub east: f64,
    pub north: f64,
}

/// A longitude wrapped into -180..=180 (180 stays 180, so a box may end on the antimeridian).
fn wrap_lng(lng: f64) -> f64 {
    if (-180.0..=180.0).contains(&lng) {
        return lng;
    }
    (lng + 180.0).rem_euclid(360.0) - 180.0
}

impl Bbox {
    /// A valid box, or why not.
    pub fn new(west: f64, south: f64, east: f64, north: f64) -> Result<Self, &'static str> {
        if ![west, south, east, north].iter().all(|v| v.is_finite()) {
            return Err("west, south, east and north must be finite numbers");
        }
        if !(-90.0..=90.0).contains(&south) || !(-90.0..=90.0).contains(&north) {
            return Err("south and north must be latitudes within -90..90");
        }
        if south >= north {
            return Err("south must be less than north");
        }
        if west == east {
            return Err("west and east must differ");
        }
        let (west, east) = if east - west >= 360.0 {
            (-180.0, 180.0)
        } else {
            (wrap_lng(west), wrap_lng(east))
        };
        Ok(Self {
            west,
            south,
            east,
            north,
        })
    }

    /// Parses `west,south,east,north`.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let parts: Vec<f64> = text
            .split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| "must be four numbers: west,south,east,north")?;
        match parts.as_slice() {
            [w, s, e, n] => Self::new(*w, *s, *e, *n),
            _ => Err("must be four numbers: west,south,east,north"),
        }
    }

    /// Whether the box crosses the antimeridian.
    pub fn crosses_antimeridian(&self) -> bool {
        self.west > self.east
    }

    /// The box as one or two plain boxes that do not cross the antimeridian.
    pub fn parts(&self) -> [(f64, f64, f64, f64); 2] {
        if self.crosses_antimeridian() {
            [
                (self.west, self.south, 180.0, self.north),
                (-180.0, self.south, self.east, self.north),
            ]
        } else {
            let whole = (self.west, self.south, self.east, self.north);
            [whole, whole]
        }
    }

    pub fn contains(&self, p: Point) -> bool {
        let in_lng = if self.crosses_antimeridian() {
            p.lng >= self.west || p.lng <= self.east
        } else {
            p.lng >= self.west && p.lng <= self.east
        };
        in_lng && p.lat >= self.south && p.lat <= self.north
    }
}

/// The state a dashboard shows: offline when nothing was heard from the therapist within the
/// presence TTL (by the server's clock: `received_at`).
pub fn shown_state(
    state: TherapistState,
    received_at: DateTime<Utc>,
    now: DateTime<Utc>,
    ttl: Duration,
) -> TherapistState {
    let fresh = (now - received_at).to_std().map_or(true, |age| age <= ttl);
    if fresh {
        state
    } else {
        TherapistState::Offline
    }
}

pub fn state_name(state: TherapistState) -> &'static str {
    match state {
        TherapistState::Offline => "offline",
        TherapistState::Available => "available",
        TherapistState::Offered => "offered",
        TherapistState::Busy => "busy",
    }
}

#[derive(Debug, Clone)]
pub enum Update {
    Moved {
        uuid: Uuid,
        fix: LiveFix,
        state: TherapistState,
        /// When the server received the fix: freshness follows the server's clock.
        received_at: DateTime<Utc>,
    },
    Status {
        uuid: Uuid,
        state: TherapistState,
    },
    Left {
        uuid: Uuid,
    },
}

#[derive(Default)]
struct View {
    bbox: Option<Bbox>,
    /// Therapists the client currently shows.
    visible: HashSet<i64>,
    /// Latest update per therapist since the last flush.
    pending: HashMap<i64, Update>,
    bookings: VecDeque<Value>,
}

pub struct Client {
    view: Mutex<View>,
    notify: Notify,
}

impl Client {
    /// Shows `bbox` from now on, with `visible` the therapists of the snapshot just sent.
    pub fn set_view(&self, bbox: Bbox, visible: HashSet<i64>) {
        let mut view = self.view.lock();
        view.bbox = Some(bbox);
        view.pending.clear();
        view.bookings.clear();
        view.visible = visible;
    }

    /// Takes what is waiting to be sent: the latest update per therapist and booking changes.
    pub fn take_pending(&self) -> (HashMap<i64, Update>, VecDeque<Value>) {
        let mut view = self.view.lock();
        (
            std::mem::take(&mut view.pending),
            std::mem::take(&mut view.bookings),
        )
    }

    /// Resolves when something is waiting to be sent.
    pub async fn notified(&self) {
        self.notify.notified().await
    }
}

/// Told of every booking frame this node's dispatch produced (the other nodes' dashboards).
pub type BookingObserver = Arc<dyn Fn(Point, &Value) + Send + Sync>;

/// Every dashboard connected to this server.
#[derive(Default)]
pub struct Dashboards {
    clients: RwLock<HashMap<u64, Arc<Client>>>,
    booking_observer: std::sync::OnceLock<BookingObserver>,
}

impl Dashboards {
    pub fn register(&self) -> (u64, Arc<Client>) {
        let id = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
        let client = Arc::new(Client {
            view: Mutex::new(View::default()),
            notify: Notify::new(),
        });
        self.clients.write().insert(id, client.clone());
        (id, client)
    }

    pub fn unregister(&self, id: u64) {
        self.clients.write().remove(&id);
    }

    /// A therapist's live position moved.
    pub fn moved(&self, provider_id: i64, uuid: Uuid, fix: LiveFix, state: TherapistState) {
        let received_at = Utc::now();
        for client in self.clients.read().values() {
            let mut view = client.view.lock();
            let Some(bbox) = view.bbox else { continue };
            if bbox.contains(fix.point) {
                view.visible.insert(provider_id);
                view.pending.insert(
                    provider_id,
                    Update::Moved {
                        uuid,
                        fix,
                        state,
                        received_at,
                    },
                );
            } else if view.visible.remove(&provider_id) {
                view.pending.insert(provider_id, Update::Left { uuid });
            } else {
                continue;
            }
            drop(view);
            client.notify.notify_one();
        }
    }

    /// A therapist's state changed (available, offered, busy, offline).
    pub fn state_changed(&self, change: StateChange) {
        for client in self.clients.read().values() {
            let mut view = client.view.lock();
            if !view.visible.contains(&change.provider_id) {
                continue;
            }
            match view.pending.get_mut(&change.provider_id) {
                Some(Update::Moved { state, .. }) => *state = change.state,
                Some(Update::Left { .. }) => continue,
                _ => {
                    view.pending.insert(
                        change.provider_id,
                        Update::Status {
                            uuid: change.uuid,
                            state: change.state,
                        },
                    );
                }
            }
            drop(view);
            client.notify.notify_one();
        }
    }

    /// Sets the observer of this node's booking frames (once, at start-up).
    pub fn observe_bookings(&self, observer: BookingObserver) {
        let _ = self.booking_observer.set(observer);
    }

    /// A booking changed; dashboards whose viewport holds it hear about it, on every node.
    pub fn booking_changed(&self, at: Point, frame: Value) {
        if let Some(observer) = self.booking_observer.get() {
            observer(at, &frame);
        }
        self.booking_changed_here(at, frame);
    }

    /// A booking changed (as another node said): this node's dashboards hear about it.
    pub fn booking_changed_here(&self, at: Point, frame: Value) {
        for client in self.clients.read().values() {
            let mut view = client.view.lock();
            if !view.bbox.is_some_and(|b| b.contains(at)) {
                continue;
            }
            if view.bookings.len() >= MAX_PENDING_BOOKING_FRAMES {
                view.bookings.pop_front();
                metrics::counter!("hilot_dashboard_frames_dropped_total").increment(1);
            }
            view.bookings.push_back(frame.clone());
            drop(view);
            client.notify.notify_one();
        }
    }

    /// A frame for every subscribed dashboard, wherever it looks (alerts).
    pub fn broadcast(&self, frame: &Value) {
        for client in self.clients.read().values() {
            let mut view = client.view.lock();
            if view.bbox.is_none() {
                continue; // it fetches the current list when it starts
            }
            if view.bookings.len() >= MAX_PENDING_BOOKING_FRAMES {
                view.bookings.pop_front();
                metrics::counter!("hilot_dashboard_frames_dropped_total").increment(1);
            }
            view.bookings.push_back(frame.clone());
            drop(view);
            client.notify.notify_one();
        }
    }

    pub fn len(&self) -> usize {
        self.clients.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Active bookings inside a box, as the map shows them. The box is compared as plain
/// longitude/latitude (geometry), never cast to a geography polygon: a world-sized polygon has
/// antipodal edges that geography refuses.
pub async fn bookings_in(pool: &PgPool, bbox: Bbox) -> sqlx::Result<Vec<Value>> {
    let [first, second] = bbox.parts();
    let rows: Vec<(Uuid, String, String, f64, f64, Option<Uuid>)> = sqlx::query_as(
        "SELECT b.uuid, b.booking_number, b.status::text, bl.latitude::float8, bl.longitude::float8, p.uuid \
         FROM bookings b JOIN booking_locations bl ON bl.booking_id = b.id \
         LEFT JOIN providers p ON p.id = b.provider_id \
         WHERE b.status IN ('pending', 'accepted', 'en_route', 'arrived', 'in_progress') \
           AND (bl.location::geometry && ST_MakeEnvelope($1, $2, $3, $4, 4326) \
                OR bl.location::geometry && ST_MakeEnvelope($5, $6, $7, $8, 4326)) \
         ORDER BY b.id DESC LIMIT 5000",
    )
    .bind(first.0)
    .bind(first.1)
    .bind(first.2)
    .bind(first.3)
    .bind(second.0)
    .bind(second.1)
    .bind(second.2)
    .bind(second.3)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, number, status, lat, lng, provider)| {
            json!({"booking_id": id, "booking_number": number, "status": status, "lat": lat, "lng": lng, "provider_id": provider})
        })
        .collect())
}

/// Therapists inside a box with the state the map shows.
pub fn providers_in(index: &LiveIndex, bbox: Bbox, now: DateTime<Utc>) -> Vec<(i64, Value)> {
    let ttl = index.presence_ttl();
    index
        .map_entries(|p| bbox.contains(p))
        .into_iter()
        .map(|e| {
            let state = shown_state(e.state, e.received_at, now, ttl);
            (
                e.provider_id,
                json!({
                    "provider_id": e.uuid,
                    "lat": e.fix.point.lat,
                    "lng": e.fix.point.lng,
                    "heading": e.fix.heading,
                    "status": state_name(state),
                    "at": e.fix.at,
                }),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_parse_validate_and_contain() {
        let bbox = Bbox::parse("120.9,14.4,121.1,14.7").unwrap();
        assert!(bbox.contains(Point::new(14.55, 121.02)));
        assert!(!bbox.contains(Point::new(14.8, 121.02)));
        assert!(
            Bbox::parse("121.1,14.7,120.9,14.4").is_err(),
            "south > north"
        );
        assert!(Bbox::parse("1,2,3").is_err());
        assert!(Bbox::parse("0,-95,1,1").is_err());
        assert!(Bbox::parse("a,b,c,d").is_err());
    }

    #[test]
    fn boxes_of_any_width_and_across_the_antimeridian() {
        let world = Bbox::parse("-540,-85,540,85").unwrap();
        assert_eq!((world.west, world.east), (-180.0, 180.0));
        assert!(world.contains(Point::new(14.55, 121.02)));
        let across = Bbox::parse("170,-20,-170,20").unwrap();
        assert!(across.crosses_antimeridian());
        assert!(across.contains(Point::new(0.0, 179.5)));
        assert!(across.contains(Point::new(0.0, -179.5)));
        assert!(!across.contains(Point::new(0.0, 0.0)));
        // A map panned one world east: 480..490 is 120..130.
        let shifted = Bbox::parse("480,10,490,20").unwrap();
        assert!(shifted.contains(Point::new(14.55, 121.02)));
    }

    #[test]
    fn a_client_that_never_reads_holds_one_update_per_therapist() {
        let dashboards = Dashboards::default();
        let (_, client) = dashboards.register();
        client.view.lock().bbox = Some(Bbox::new(120.0, 14.0, 122.0, 15.0).unwrap());
        let now = Utc::now();
        for round in 0..1000 {
            for provider in 0..50 {
                let fix = LiveFix {
                    point: Point::new(14.5 + round as f64 * 1e-6, 121.0),
                    heading: None,
                    speed_kmh: None,
                    accuracy_m: None,
                    at: now,
                };
                dashboards.moved(provider, Uuid::nil(), fix, TherapistState::Available);
            }
        }
        assert_eq!(client.view.lock().pending.len(), 50);
    }
}
