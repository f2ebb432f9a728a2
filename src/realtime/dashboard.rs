//! Dispatch dashboards: each watches a viewport; movements, state changes and booking changes
//! inside it are pushed, coalesced per therapist (latest wins) and flushed at most
//! `dashboard_flushes_per_s` times a second.
//!
//! A client's pending updates hold at most one entry per therapist in its viewport (plus a
//! bounded list of booking changes), so a client that never reads costs bounded memory, and
//! producers only touch a small map under a short lock, so no dashboard waits for another.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

use super::frames::{check_size, open_envelope, read_body, ServerFrame};
use super::guard::{protocol_close, Admission, FrameLimiter, SocketGuard};
use super::{CLIENT_TIMEOUT, HEARTBEAT_INTERVAL};
use crate::geo::index::{LiveFix, LiveIndex, StateChange, TherapistState};
use crate::geo::Point;
use crate::state::AppState;

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

fn state_name(state: TherapistState) -> &'static str {
    match state {
        TherapistState::Offline => "offline",
        TherapistState::Available => "available",
        TherapistState::Offered => "offered",
        TherapistState::Busy => "busy",
    }
}

#[derive(Debug, Clone)]
enum Update {
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

struct Client {
    view: Mutex<View>,
    notify: Notify,
}

/// Every dashboard connected to this server.
/// Told of every booking frame this node's dispatch produced (the other nodes' dashboards).
pub type BookingObserver = Arc<dyn Fn(Point, &Value) + Send + Sync>;

#[derive(Default)]
pub struct Dashboards {
    clients: RwLock<HashMap<u64, Arc<Client>>>,
    booking_observer: std::sync::OnceLock<BookingObserver>,
}

impl Dashboards {
    fn register(&self) -> (u64, Arc<Client>) {
        let id = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
        let client = Arc::new(Client {
            view: Mutex::new(View::default()),
            notify: Notify::new(),
        });
        self.clients.write().insert(id, client.clone());
        (id, client)
    }

    fn unregister(&self, id: u64) {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeFrame {
    #[serde(rename = "type")]
    _type: String,
    bbox: [f64; 4],
}

#[derive(serde::Serialize)]
struct MovedFrame {
    #[serde(rename = "type")]
    kind: &'static str,
    provider_id: Uuid,
    lat: f64,
    lng: f64,
    heading: Option<f64>,
    status: &'static str,
    at: chrono::DateTime<Utc>,
}

/// Runs one dashboard socket.
pub async fn run(
    state: AppState,
    mut guard: SocketGuard,
    mut session: Session,
    mut stream: AggregatedMessageStream,
) {
    let (id, client) = state.dashboards.register();
    let mut subscribes = FrameLimiter::new(
        state.settings.dashboard_subscribes_per_s,
        state.settings.dashboard_subscribe_burst,
    );
    let _open = state.sockets.open("dashboard");
    let min_interval =
        Duration::from_secs_f64(1.0 / state.settings.dashboard_flushes_per_s.max(0.1));
    let mut shutdown = state.shutdown.clone();
    let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
    let mut last_heard = Instant::now();
    let mut last_flush = Instant::now() - min_interval;
    let close_reason = loop {
        tokio::select! {
            biased;
            _ = super::stopped(&mut shutdown) => {
                break Some(CloseReason::from((CloseCode::Restart, "server restarting; reconnect")));
            }
            ending = guard.ended() => break Some(ending.close_reason()),
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > CLIENT_TIMEOUT {
                    break Some(CloseReason::from((CloseCode::Policy, "heartbeat timeout")));
                }
                if super::send_ping(&mut session).await.is_err() { break None; }
            }
            message = stream.recv() => {
                last_heard = Instant::now();
                if let Some(Ok(message)) = &message {
                    match guard.admit(message) {
                        Admission::Admit => {}
                        Admission::Refuse(error) => {
                            if let Some(error) = error {
                                if super::send_text(&mut session, error.to_text()).await.is_err() { break None; }
                            }
                            continue;
                        }
                        Admission::Close(reason) => break Some(reason),
                    }
                }
                let reply = match message {
                    None | Some(Ok(AggregatedMessage::Close(_))) => break None,
                    Some(Err(error)) => break Some(protocol_close(&error)),
                    Some(Ok(AggregatedMessage::Ping(bytes))) => {
                        if super::send_pong(&mut session, &bytes).await.is_err() { break None; }
                        continue;
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => continue,
                    Some(Ok(AggregatedMessage::Binary(_))) => ServerFrame::error("unsupported_frame", "send JSON text frames", None).to_text(),
                    // A valid subscribe reads the database: it takes a token of its own bucket
                    // too, stricter than the frame bucket.
                    Some(Ok(AggregatedMessage::Text(text))) => match read_subscribe(&text) {
                        Err(error) => error.to_text(),
                        Ok(bbox) => match subscribes.admit("subscribe frames") {
                            Admission::Admit => match subscribe(&state, &client, bbox).await {
                                Ok(snapshot) => snapshot,
                                Err(error) => error.to_text(),
                            },
                            Admission::Refuse(Some(error)) => error.to_text(),
                            Admission::Refuse(None) => continue,
                            Admission::Close(reason) => break Some(reason),
                        },
                    },
                };
                if super::send_text(&mut session, reply).await.is_err() { break None; }
            }
            // Last: a dashboard with updates always pending must still hear its client (pongs,
            // new viewports) and keep its heartbeat, or it would be closed as unresponsive.
            _ = client.notify.notified() => {
                // Coalesce: wait out the rest of the interval, then send the latest of everything.
                let wait = min_interval.saturating_sub(last_flush.elapsed());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                last_flush = Instant::now();
                if flush(&state, &client, &mut session).await.is_err() { break None; }
            }
        }
    };
    state.dashboards.unregister(id);
    if let Some(reason) = close_reason {
        super::close(session, Some(reason)).await;
    }
}

/// Reads a dashboard's frame: `subscribe` with a valid box is all it may send.
pub fn read_subscribe(text: &str) -> Result<Bbox, ServerFrame> {
    check_size(text)?;
    let envelope = open_envelope(text)?;
    if envelope.kind != "subscribe" {
        return Err(ServerFrame::error(
            "unknown_type",
            format!("unknown frame type {:?}; expected subscribe", envelope.kind),
            None,
        ));
    }
    let frame: SubscribeFrame = read_body(&envelope)?;
    let [west, south, east, north] = frame.bbox;
    Bbox::new(west, south, east, north).map_err(|why| ServerFrame::error("invalid_bbox", why, None))
}

/// Handles a `subscribe` frame: sets the viewport and answers the snapshot inside it.
async fn subscribe(state: &AppState, client: &Client, bbox: Bbox) -> Result<String, ServerFrame> {
    let bookings = bookings_in(&state.db, bbox).await.map_err(|_| {
        ServerFrame::error(
            "unavailable",
            "the database is unavailable, try again shortly",
            None,
        )
    })?;
    let providers = providers_in(&state.index, bbox, Utc::now());
    {
        let mut view = client.view.lock();
        view.bbox = Some(bbox);
        view.pending.clear();
        view.bookings.clear();
        view.visible = providers.iter().map(|(id, _)| *id).collect();
    }
    let providers: Vec<Value> = providers.into_iter().map(|(_, v)| v).collect();
    Ok(json!({"type": "snapshot", "providers": providers, "bookings": bookings}).to_string())
}

async fn flush(
    state: &AppState,
    client: &Client,
    session: &mut Session,
) -> Result<(), super::Gone> {
    let (updates, bookings) = {
        let mut view = client.view.lock();
        (
            std::mem::take(&mut view.pending),
            std::mem::take(&mut view.bookings),
        )
    };
    let now = Utc::now();
    let ttl = state.index.presence_ttl();
    for (_, update) in updates {
        let frame = match update {
            // The busiest frame by far: serialised straight from a struct, not through a Value.
            Update::Moved {
                uuid,
                fix,
                state,
                received_at,
            } => {
                let moved = MovedFrame {
                    kind: "provider.moved",
                    provider_id: uuid,
                    lat: fix.point.lat,
                    lng: fix.point.lng,
                    heading: fix.heading,
                    status: state_name(shown_state(state, received_at, now, ttl)),
                    at: fix.at,
                };
                serde_json::to_string(&moved).expect("plain struct serialises")
            }
            Update::Status { uuid, state } => {
                json!({"type": "provider.status", "provider_id": uuid, "status": state_name(state)})
                    .to_string()
            }
            Update::Left { uuid } => {
                json!({"type": "provider.left", "provider_id": uuid}).to_string()
            }
        };
        super::send_text(session, frame).await?;
    }
    for frame in bookings {
        super::send_text(session, frame.to_string()).await?;
    }
    Ok(())
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
