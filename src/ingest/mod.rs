//! Location pings: validate, move the live index, decide storage, batch into provider_locations.

pub mod policy;
pub mod settings;
pub mod validate;
pub mod writer;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;

use crate::geo::index::{FixOutcome, LiveFix, LiveIndex, TherapistState};
use crate::geo::Point;
use policy::StoragePolicy;
use validate::{PingLimits, RawPing, Rejection};
use writer::{AckSender, PingRecord};

/// Outcomes remembered per therapist so a resent ping is acknowledged again, never stored twice.
pub const DEDUPE_MEMORY: usize = 512;

/// How a resent ping is recognised: by its fix time when the app sent one (stable across
/// reconnects), otherwise only within the same connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DedupeKey {
    Fix { seq: i64, recorded_at_ms: i64 },
    Connection { seq: i64, connection: u64 },
}

#[derive(Debug, Default)]
struct TherapistMemo {
    /// The newest accepted fix, for the jump check.
    last_accepted: Option<(Point, DateTime<Utc>)>,
    /// The newest stored (or queued) fix, for the storage policy.
    last_stored: Option<(Point, DateTime<Utc>)>,
    /// Recently decided pings and whether they were stored.
    recent: VecDeque<(DedupeKey, bool)>,
}

impl TherapistMemo {
    fn remember(&mut self, key: DedupeKey, stored: bool) {
        if let Some(slot) = self.recent.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = stored;
            return;
        }
        if self.recent.len() >= DEDUPE_MEMORY {
            self.recent.pop_front();
        }
        self.recent.push_back((key, stored));
    }

    fn recall(&self, key: DedupeKey) -> Option<bool> {
        self.recent
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, s)| *s)
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
/// customer's live view).
pub type MovedHook = Arc<dyn Fn(i64, LiveFix) + Send + Sync>;

pub struct Ingest {
    index: Arc<LiveIndex>,
    moved: std::sync::OnceLock<MovedHook>,
    queue: mpsc::Sender<PingRecord>,
    memos: Mutex<HashMap<i64, TherapistMemo>>,
    policy: RwLock<StoragePolicy>,
    pub limits: PingLimits,
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
            moved: std::sync::OnceLock::new(),
            queue,
            memos: Mutex::new(HashMap::new()),
            policy: RwLock::new(policy),
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

    /// Handles one location frame from therapist `provider_id` on connection `connection`.
    /// Waits (backpressure) when the storage queue is full.
    pub async fn accept(
        &self,
        provider_id: i64,
        connection: u64,
        raw: RawPing,
        ack: &AckSender,
    ) -> PingOutcome {
        let now = Utc::now();
        let key = match raw.recorded_at {
            Some(at) => DedupeKey::Fix {
                seq: raw.seq,
                recorded_at_ms: at.timestamp_millis(),
            },
            None => DedupeKey::Connection {
                seq: raw.seq,
                connection,
            },
        };
        let on_booking = self.index.state(provider_id) == Some(TherapistState::Busy);
        let (ping, reason) = {
            let mut memos = self.memos.lock();
            let memo = memos.entry(provider_id).or_default();
            if let Some(stored) = memo.recall(key) {
                metrics::counter!("hilot_pings_total", "outcome" => "duplicate").increment(1);
                return PingOutcome::Ack { stored };
            }
            let ping = match validate::validate(&raw, memo.last_accepted, now, &self.limits) {
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
            let reason = policy::decide(
                &self.policy(),
                memo.last_stored,
                ping.point,
                ping.recorded_at,
                on_booking,
                out_of_order,
            );
            match reason {
                Some(_) if !out_of_order => memo.last_stored = Some((ping.point, ping.recorded_at)),
                Some(_) => {}
                // Remembered now: nothing more will happen to this ping.
                None => memo.remember(key, false),
            }
            (ping, reason)
        };
        if ping.matchable {
            let fix = LiveFix {
                point: ping.point,
                heading: ping.heading,
                speed_kmh: ping.speed_kmh,
                accuracy_m: Some(ping.accuracy_m),
                at: ping.recorded_at,
            };
            if self.index.update_fix(provider_id, fix) == FixOutcome::Moved {
                if let Some(hook) = self.moved.get() {
                    hook(provider_id, fix);
                }
            }
        }
        let Some(reason) = reason else {
            metrics::counter!("hilot_pings_total", "outcome" => "not_stored").increment(1);
            return PingOutcome::Ack { stored: false };
        };
        metrics::counter!("hilot_pings_total", "outcome" => "queued", "reason" => reason.label())
            .increment(1);
        let record = PingRecord {
            provider_id,
            seq: ping.seq,
            point: ping.point,
            accuracy_m: ping.accuracy_m,
            heading: ping.heading,
            speed_kmh: ping.speed_kmh,
            battery: ping.battery,
            recorded_at: ping.recorded_at,
            queued_at: Instant::now(),
            ack: Some(ack.clone()),
        };
        if self.queue.send(record).await.is_err() {
            // The writer is gone (shutting down): the ping was not stored, say so honestly.
            return PingOutcome::Ack { stored: false };
        }
        PingOutcome::Queued
    }

    /// Records committed pings so that a resend is acknowledged without storing it again.
    pub fn committed(&self, batch: &[PingRecord]) {
        let mut memos = self.memos.lock();
        for record in batch {
            let memo = memos.entry(record.provider_id).or_default();
            memo.remember(
                DedupeKey::Fix {
                    seq: record.seq,
                    recorded_at_ms: record.recorded_at.timestamp_millis(),
                },
                true,
            );
        }
    }

    /// The key a connection-scoped ping was remembered under (for pings without `recorded_at`).
    pub fn remember_connection_ping(
        &self,
        provider_id: i64,
        connection: u64,
        seq: i64,
        stored: bool,
    ) {
        self.memos
            .lock()
            .entry(provider_id)
            .or_default()
            .remember(DedupeKey::Connection { seq, connection }, stored);
    }
}
