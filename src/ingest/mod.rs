//! Location pings: validate, move the live index, decide storage, batch into provider_locations.

pub mod cadence;
pub mod policy;
pub mod settings;
pub mod validate;
pub mod writer;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use chrono::{DateTime, Utc};
use metrics::Counter;
use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;

use crate::geo::index::{FixOutcome, LiveFix, LiveIndex, Moved, TherapistState};
use crate::geo::Point;
use policy::{StoragePolicy, StoreReason};
use validate::{PingLimits, RawPing, Rejection};
use writer::{AckSender, PingRecord};

/// Decided pings remembered per therapist (by seq, in a ring), so a resent ping is acknowledged
/// again and never stored twice. Apps resend what is still unacknowledged, a few pings back.
pub const DEDUPE_WINDOW: usize = 32;

/// How a resent ping is recognised: by its fix time when the app sent one (stable across
/// reconnects), otherwise only within the same connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DedupeKey {
    Fix { seq: i64, recorded_at_ms: i64 },
    Connection { seq: i64, connection: u64 },
}

impl DedupeKey {
    fn of(raw: &RawPing, connection: u64) -> Self {
        match raw.recorded_at {
            Some(at) => Self::Fix {
                seq: raw.seq,
                recorded_at_ms: at.timestamp_millis(),
            },
            None => Self::Connection {
                seq: raw.seq,
                connection,
            },
        }
    }

    fn seq(self) -> i64 {
        match self {
            Self::Fix { seq, .. } | Self::Connection { seq, .. } => seq,
        }
    }
}

/// What the server remembers of one therapist's pings while they are connected.
#[derive(Debug)]
struct PingMemo {
    /// The newest accepted fix, for the jump check.
    last_accepted: Option<(Point, DateTime<Utc>)>,
    /// The newest stored (or queued) fix, for the storage policy.
    last_stored: Option<(Point, DateTime<Utc>)>,
    /// The highest seq decided: anything `DEDUPE_WINDOW` below it is no longer remembered.
    high_water: i64,
    /// Decided pings, in the slot `seq mod DEDUPE_WINDOW`: an O(1) look-up, no scan.
    window: [Option<(DedupeKey, bool)>; DEDUPE_WINDOW],
}

impl Default for PingMemo {
    fn default() -> Self {
        Self {
            last_accepted: None,
            last_stored: None,
            high_water: i64::MIN,
            window: [None; DEDUPE_WINDOW],
        }
    }
}

impl PingMemo {
    fn slot(seq: i64) -> usize {
        seq.rem_euclid(DEDUPE_WINDOW as i64) as usize
    }

    fn remember(&mut self, key: DedupeKey, stored: bool) {
        self.high_water = self.high_water.max(key.seq());
        self.window[Self::slot(key.seq())] = Some((key, stored));
    }

    fn recall(&self, key: DedupeKey) -> Option<bool> {
        if key.seq() <= self.high_water.saturating_sub(DEDUPE_WINDOW as i64) {
            return None;
        }
        match self.window[Self::slot(key.seq())] {
            Some((k, stored)) if k == key => Some(stored),
            _ => None,
        }
    }
}

/// What to tell the app about one ping.
#[derive(Debug, Clone, PartialEq)]
pub enum PingOutcome {
    /// Acknowledge now; `stored` says whether the fix is in provider_locations.
    Ack { stored: bool },
    /// Queued for storage; the ack follows on the socket's ack channel after commit.
    Queued,
    /// Refused; the app gets an error frame with this reason.
    Rejected(Rejection),
}

/// Told about every fix that moved a therapist's live position (dispatch: geofence, the
/// customer's live view; the dashboards), with who moved and their state.
pub type MovedHook = Arc<dyn Fn(i64, LiveFix, Moved) + Send + Sync>;

/// Counters bumped on every ping, resolved once (a labelled `counter!` hashes its key each time).
struct PingCounters {
    duplicate: Counter,
    not_stored: Counter,
    queued: [Counter; StoreReason::ALL.len()],
}

impl PingCounters {
    fn new() -> Self {
        Self {
            duplicate: metrics::counter!("hilot_pings_total", "outcome" => "duplicate"),
            not_stored: metrics::counter!("hilot_pings_total", "outcome" => "not_stored"),
            queued: StoreReason::ALL.map(|reason| {
                metrics::counter!("hilot_pings_total", "outcome" => "queued", "reason" => reason.label())
            }),
        }
    }
}

pub struct Ingest {
    index: Arc<LiveIndex>,
    moved: OnceLock<MovedHook>,
    queue: mpsc::Sender<PingRecord>,
    /// Each connected therapist's memo, shared by their sockets. Locked only when a socket opens
    /// or closes; pings lock their own therapist's memo.
    memos: Mutex<FxHashMap<i64, Arc<Mutex<PingMemo>>>>,
    policy: RwLock<StoragePolicy>,
    counters: PingCounters,
    pub limits: PingLimits,
}

/// One socket's hold on its therapist's ping memo: the memo is forgotten when the therapist's
/// last socket closes (a reconnect starts afresh; the database still stores a resent fix once).
pub struct TherapistPings {
    ingest: Arc<Ingest>,
    provider_id: i64,
    memo: Option<Arc<Mutex<PingMemo>>>,
}

impl Drop for TherapistPings {
    fn drop(&mut self) {
        let mut memos = self.ingest.memos.lock();
        drop(self.memo.take());
        if memos
            .get(&self.provider_id)
            .is_some_and(|memo| Arc::strong_count(memo) == 1)
        {
            memos.remove(&self.provider_id);
        }
    }
}

impl Ingest {
    pub fn new(
        index: Arc<LiveIndex>,
        queue: mpsc::Sender<PingRecord>,
        limits: PingLimits,
        policy: StoragePolicy,
    ) -> Self {
        Self {
            index,
            moved: OnceLock::new(),
            queue,
            memos: Mutex::new(FxHashMap::default()),
            policy: RwLock::new(policy),
            counters: PingCounters::new(),
            limits,
        }
    }

    /// Sets the hook called when a fix moves a therapist (once, at start-up).
    pub fn on_moved(&self, hook: MovedHook) {
        let _ = self.moved.set(hook);
    }

    pub fn set_policy(&self, policy: StoragePolicy) {
        *self.policy.write() = policy;
    }

    pub fn policy(&self) -> StoragePolicy {
        *self.policy.read()
    }

    /// Pings waiting for the database.
    pub fn queue_depth(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// How full the storage queue is, from 0 to 1 (a sign of overload).
    pub fn queue_fill(&self) -> f64 {
        self.queue_depth() as f64 / self.queue.max_capacity().max(1) as f64
    }

    /// Therapists with an open socket whose pings are remembered.
    pub fn connected_therapists(&self) -> usize {
        self.memos.lock().len()
    }

    /// A socket of therapist `provider_id` opens: its hold on their ping memo.
    pub fn join(self: &Arc<Self>, provider_id: i64) -> TherapistPings {
        // A reconnecting app is checked for jumps from where the index last saw it: closing
        // the socket must not be a way to teleport. (Read before taking the memos' lock, so
        // the two locks are never held together.)
        let last = self
            .index
            .live_fix(provider_id)
            .map(|fix| (fix.point, fix.at));
        let memo = self
            .memos
            .lock()
            .entry(provider_id)
            .or_insert_with(|| {
                Arc::new(Mutex::new(PingMemo {
                    last_accepted: last,
                    ..PingMemo::default()
                }))
            })
            .clone();
        TherapistPings {
            ingest: self.clone(),
            provider_id,
            memo: Some(memo),
        }
    }
}

impl TherapistPings {
    fn memo(&self) -> &Mutex<PingMemo> {
        self.memo.as_deref().expect("held until drop")
    }

    /// Whether another socket of this therapist is open on this node (each socket holds the
    /// memo once, and the memos' map once more).
    pub fn another_socket_open(&self) -> bool {
        let _memos = self.ingest.memos.lock();
        self.memo
            .as_ref()
            .is_some_and(|memo| Arc::strong_count(memo) > 2)
    }

    /// Records what became of a queued ping once the writer answered.
    pub fn settled(&self, key: DedupeKey, stored: bool) {
        self.memo().lock().remember(key, stored);
    }

    /// Handles one location frame from this therapist on connection `connection`.
    /// Waits (backpressure) when the storage queue is full.
    pub async fn accept(&self, connection: u64, raw: RawPing, ack: &AckSender) -> PingOutcome {
        let ingest = &*self.ingest;
        let provider_id = self.provider_id;
        let now = Utc::now();
        let key = DedupeKey::of(&raw, connection);
        let (ping, reason, moved) = {
            let mut memo = self.memo().lock();
            if let Some(stored) = memo.recall(key) {
                ingest.counters.duplicate.increment(1);
                return PingOutcome::Ack { stored };
            }
            let ping = match validate::validate(&raw, memo.last_accepted, now, &ingest.limits) {
                Ok(ping) => ping,
                Err(rejection) => {
                    metrics::counter!("hilot_pings_rejected_total", "reason" => rejection.code())
                        .increment(1);
                    return PingOutcome::Rejected(rejection);
                }
            };
            let out_of_order = memo
                .last_accepted
                .is_some_and(|(_, at)| ping.recorded_at < at);
            if !out_of_order {
                memo.last_accepted = Some((ping.point, ping.recorded_at));
            }
            // One index lock: move the therapist (when the fix is good enough to match on),
            // reading their state under the same lock.
            let fix = LiveFix {
                point: ping.point,
                heading: ping.heading,
                speed_kmh: ping.speed_kmh,
                accuracy_m: Some(ping.accuracy_m),
                at: ping.recorded_at,
            };
            let (state, moved) = match ping
                .matchable
                .then(|| ingest.index.record_fix(provider_id, fix, now))
            {
                Some(FixOutcome::Moved(moved)) => (Some(moved.state), Some((fix, moved))),
                _ => (ingest.index.state(provider_id), None),
            };
            let reason = policy::decide(
                &ingest.policy(),
                memo.last_stored,
                ping.point,
                ping.recorded_at,
                state == Some(TherapistState::Busy),
                out_of_order,
            );
            match reason {
                Some(_) if !out_of_order => memo.last_stored = Some((ping.point, ping.recorded_at)),
                Some(_) => {}
                // Remembered now: nothing more will happen to this ping.
                None => memo.remember(key, false),
            }
            (ping, reason, moved)
        };
        if let (Some((fix, moved)), Some(hook)) = (moved, ingest.moved.get()) {
            hook(provider_id, fix, moved);
        }
        let Some(reason) = reason else {
            ingest.counters.not_stored.increment(1);
            return PingOutcome::Ack { stored: false };
        };
        ingest.counters.queued[reason as usize].increment(1);
        let record = PingRecord {
            provider_id,
            seq: ping.seq,
            key,
            point: ping.point,
            accuracy_m: ping.accuracy_m,
            heading: ping.heading,
            speed_kmh: ping.speed_kmh,
            battery: ping.battery,
            recorded_at: ping.recorded_at,
            queued_at: Instant::now(),
            ack: Some(ack.clone()),
        };
        if ingest.queue.send(record).await.is_err() {
            // The writer is gone (shutting down): the ping was not stored, say so honestly.
            return PingOutcome::Ack { stored: false };
        }
        PingOutcome::Queued
    }
}
