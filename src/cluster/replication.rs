//! The live index on every node holds every therapist: what one node learns (a fix, an offer or
//! booking taking a therapist, a profile change, a booking frame for the dashboards) it
//! publishes on one Redis channel per deployment; every other node applies it.
//!
//! Pub/sub, not Streams: the index is "latest wins" state, not a log. A node that missed
//! messages does not need them replayed one by one; it needs the latest position and state of
//! every therapist, which PostgreSQL already holds (stored fixes, active bookings, profiles) and
//! which the start-up rebuild already reads. So one path serves start-up, a dropped
//! subscription and a Redis restart: subscribe, then rebuild from PostgreSQL, then follow.
//! Publishing costs one `PUBLISH` per batch and Redis keeps nothing, so there is no stream to
//! trim and no consumer group to tend. The price: fixes the storage policy did not keep (idle
//! fixes within 15 s and 50 m of the last stored one) are not replayed after a gap; the next
//! ping of each therapist, seconds later, moves them again.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};

use super::link::{spawn_subscription, LinkStatus, Subscriber};
use crate::geo::index::{DispatchChange, FixOutcome, LiveFix, LiveIndex, Moved, TherapistState};
use crate::geo::Point;

/// Events waiting to be published before new ones are dropped (Redis slow or away: the other
/// nodes catch up from PostgreSQL when their link comes back).
pub const OUTBOUND_CAPACITY: usize = 100_000;
/// Most events in one `PUBLISH`. Batches form by themselves while the previous one is in flight.
pub const BATCH_MAX: usize = 1_000;
/// One `PUBLISH` gives up after this long.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

/// One thing a node learnt, as the other nodes apply it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum IndexEvent {
    /// A fix that moved the therapist's live position, with when the server received it.
    Fix {
        p: i64,
        lat: f64,
        lng: f64,
        heading: Option<f64>,
        speed: Option<f64>,
        accuracy: Option<f64>,
        at: DateTime<Utc>,
        received_at: DateTime<Utc>,
    },
    /// Dispatch took the therapist (offered, busy) or let them go (`None`); `was` is the state
    /// it changed from, which the receiver must still hold for an offer's end to apply.
    Dispatch {
        p: i64,
        was: Option<TherapistState>,
        state: Option<TherapistState>,
    },
    /// Profile, services, availability or verification changed: reload them from PostgreSQL.
    Profile { p: i64 },
    /// A booking frame for the dashboards whose viewport holds `at`.
    Booking { lat: f64, lng: f64, frame: Value },
}

#[derive(Serialize, Deserialize)]
struct Batch {
    origin: u64,
    events: Vec<IndexEvent>,
}

/// What a node does with what other nodes tell it (installed at start-up).
#[derive(Clone)]
pub struct Appliers {
    pub index: Arc<LiveIndex>,
    pub db: PgPool,
    pub match_max_accuracy_m: f64,
    /// The same hook a local fix runs (dashboards; the booking's trip, wherever it is tracked).
    pub moved: Arc<dyn Fn(i64, LiveFix, Moved) + Send + Sync>,
    /// Delivers a booking frame to this node's dashboards.
    pub booking: Arc<dyn Fn(Point, Value) + Send + Sync>,
}

/// This node's side of the replication: a publisher, and a subscription that applies.
pub struct Replication {
    origin: u64,
    outbound: Option<mpsc::Sender<IndexEvent>>,
}

impl Replication {
    /// Single node: nothing to tell anyone.
    pub fn local() -> Self {
        Self {
            origin: rand::random(),
            outbound: None,
        }
    }

    /// Publishes on `channel` and applies what other nodes publish there. The subscription
    /// re-establishes itself after any drop and catches up from PostgreSQL each time.
    pub fn redis(
        client: redis::Client,
        publisher: redis::aio::ConnectionManager,
        channel: String,
        status: Arc<LinkStatus>,
        appliers: Appliers,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let origin = rand::random();
        let (sender, receiver) = mpsc::channel(OUTBOUND_CAPACITY);
        tokio::spawn(publish(
            receiver,
            publisher,
            channel.clone(),
            origin,
            status.clone(),
        ));
        let on_message = {
            let appliers = appliers.clone();
            move |message: redis::Msg| {
                let appliers = appliers.clone();
                async move {
                    let Ok(payload) = message.get_payload::<Vec<u8>>() else {
                        return;
                    };
                    match serde_json::from_slice::<Batch>(&payload) {
                        Ok(batch) if batch.origin == origin => {}
                        Ok(batch) => apply(&appliers, batch.events),
                        Err(error) => {
                            tracing::warn!(%error, "ignoring a malformed replication batch")
                        }
                    }
                }
                .boxed()
            }
        };
        let on_subscribed = {
            let status = status.clone();
            move |_after_drop: bool| {
                let (appliers, status) = (appliers.clone(), status.clone());
                async move {
                    status.set_catching_up(true);
                    if let Err(error) = catch_up(&appliers).await {
                        tracing::error!(
                            error = format!("{error:#}"),
                            "catching up the live index from PostgreSQL failed"
                        );
                    }
                    status.set_catching_up(false);
                }
                .boxed()
            }
        };
        spawn_subscription(
            client,
            status,
            Subscriber {
                name: "replication",
                channels: vec![channel],
                on_message: Box::new(on_message),
                on_subscribed: Box::new(on_subscribed),
            },
            shutdown,
        );
        Self {
            origin,
            outbound: Some(sender),
        }
    }

    /// This node's id on the channel.
    pub fn origin(&self) -> u64 {
        self.origin
    }

    fn send(&self, event: IndexEvent) {
        let Some(outbound) = &self.outbound else {
            return;
        };
        if outbound.try_send(event).is_err() {
            metrics::counter!("hilot_replication_dropped_total").increment(1);
        }
    }

    /// A local fix moved a therapist.
    pub fn fix(&self, provider_id: i64, fix: LiveFix, received_at: DateTime<Utc>) {
        self.send(IndexEvent::Fix {
            p: provider_id,
            lat: fix.point.lat,
            lng: fix.point.lng,
            heading: fix.heading,
            speed: fix.speed_kmh,
            accuracy: fix.accuracy_m,
            at: fix.at,
            received_at,
        });
    }

    /// Local dispatch changed a therapist's dispatch state.
    pub fn dispatch_state(&self, provider_id: i64, change: DispatchChange) {
        self.send(IndexEvent::Dispatch {
            p: provider_id,
            was: change.was,
            state: change.now,
        });
    }

    /// A therapist's profile changed through this node.
    pub fn profile(&self, provider_id: i64) {
        self.send(IndexEvent::Profile { p: provider_id });
    }

    /// A booking frame this node's dashboards got.
    pub fn booking(&self, at: Point, frame: &Value) {
        if self.outbound.is_none() {
            return; // one node: nobody to tell, so no copy of the frame
        }
        self.send(IndexEvent::Booking {
            lat: at.lat,
            lng: at.lng,
            frame: frame.clone(),
        });
    }
}

async fn publish(
    mut receiver: mpsc::Receiver<IndexEvent>,
    mut publisher: redis::aio::ConnectionManager,
    channel: String,
    origin: u64,
    status: Arc<LinkStatus>,
) {
    let mut events = Vec::with_capacity(BATCH_MAX);
    while receiver.recv_many(&mut events, BATCH_MAX).await > 0 {
        let count = events.len();
        let payload = serde_json::to_vec(&Batch {
            origin,
            events: std::mem::take(&mut events),
        })
        .expect("replication batches serialise");
        let published = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(payload)
                .query_async::<i64>(&mut publisher),
        )
        .await;
        match published {
            Ok(Ok(_)) => {
                metrics::counter!("hilot_replication_published_total").increment(count as u64)
            }
            failed => {
                // The others catch up from PostgreSQL once their link is back.
                let error = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => format!("no answer within {PUBLISH_TIMEOUT:?}"),
                };
                status.failed(error);
                metrics::counter!("hilot_replication_publish_failures_total")
                    .increment(count as u64);
            }
        }
    }
}

fn apply(appliers: &Appliers, events: Vec<IndexEvent>) {
    let now = Utc::now();
    for event in events {
        match event {
            IndexEvent::Fix {
                p,
                lat,
                lng,
                heading,
                speed,
                accuracy,
                at,
                received_at,
            } => {
                let lag = (now - received_at).num_microseconds().unwrap_or(0).max(0);
                metrics::histogram!("hilot_replication_lag_seconds").record(lag as f64 / 1e6);
                let fix = LiveFix {
                    point: Point::new(lat, lng),
                    heading,
                    speed_kmh: speed,
                    accuracy_m: accuracy,
                    at,
                };
                // Presence follows the receiving node's clock, never a time ahead of ours.
                let received_at = received_at.min(now);
                match appliers.index.record_fix(p, fix, received_at) {
                    FixOutcome::Moved(moved) => (appliers.moved)(p, fix, moved),
                    FixOutcome::OlderThanLive => {}
                    FixOutcome::Unknown => {
                        // Registered through another node since this one rebuilt: load them.
                        let appliers = appliers.clone();
                        tokio::spawn(async move {
                            refresh(&appliers, p).await;
                            if let FixOutcome::Moved(moved) =
                                appliers.index.record_fix(p, fix, received_at)
                            {
                                (appliers.moved)(p, fix, moved);
                            }
                        });
                    }
                }
                metrics::counter!("hilot_replication_applied_total", "kind" => "fix").increment(1);
            }
            IndexEvent::Dispatch { p, was, state } => {
                appliers
                    .index
                    .apply_remote_dispatch_change(p, DispatchChange { was, now: state });
                metrics::counter!("hilot_replication_applied_total", "kind" => "dispatch")
                    .increment(1);
            }
            IndexEvent::Profile { p } => {
                let appliers = appliers.clone();
                tokio::spawn(async move { refresh(&appliers, p).await });
                metrics::counter!("hilot_replication_applied_total", "kind" => "profile")
                    .increment(1);
            }
            IndexEvent::Booking { lat, lng, frame } => {
                (appliers.booking)(Point::new(lat, lng), frame);
                metrics::counter!("hilot_replication_applied_total", "kind" => "booking")
                    .increment(1);
            }
        }
    }
}

async fn refresh(appliers: &Appliers, provider_id: i64) {
    if let Err(error) = crate::geo::load::refresh(
        &appliers.db,
        &appliers.index,
        provider_id,
        appliers.match_max_accuracy_m,
    )
    .await
    {
        tracing::warn!(
            provider_id,
            error = format!("{error:#}"),
            "reloading a therapist another node changed failed"
        );
    }
}

/// Everything this node may have missed, from PostgreSQL: every therapist's profile and latest
/// stored fix (older fixes never replace newer ones in the index), and who is on a booking.
async fn catch_up(appliers: &Appliers) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let therapists =
        crate::geo::load::rebuild(&appliers.db, &appliers.index, appliers.match_max_accuracy_m)
            .await?;
    let busy: Vec<i64> =
        sqlx::query_scalar(include_str!("../../sql/providers_on_active_bookings.sql"))
            .fetch_all(&appliers.db)
            .await?;
    appliers.index.sync_busy(&busy);
    metrics::counter!("hilot_replication_catch_ups_total").increment(1);
    tracing::info!(
        therapists,
        busy = busy.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "live index caught up from PostgreSQL"
    );
    Ok(())
}
