//! The event bus: how a frame for a user reaches their sockets on whichever node holds them.
//! Single node (no `REDIS_URL`): straight to the local hub. With Redis: published on one
//! channel per deployment; every node subscribes and hands frames to its own hub. A dropped
//! subscription comes back by itself ([`crate::cluster::link`]).
//!
//! A second channel carries control events (credentials that ended): each node hands them to
//! the handler installed at start-up. The node that publishes one applies it itself at once
//! and ignores its own echo.
//!
//! While Redis is away, a frame or control event whose PUBLISH fails takes PostgreSQL's
//! NOTIFY instead (every node listens on a connection of its own): an offer made by the node
//! that leads the matcher still reaches a therapist connected to another node, and a customer
//! still sees their booking move. NOTIFY is the fallback, not the road, because it serialises
//! on one queue lock at commit; the live index's stream of pings stays on Redis (each node
//! catches up when it returns), and the credential sweep still re-checks every socket.
//!
//! A PUBLISH can also succeed and still miss a node: one whose subscription is coming back
//! (after Redis restarted, or its connection was cut) hears nothing until it has re-subscribed,
//! up to a few seconds of backoff. Redis answers each PUBLISH with how many subscribers got it;
//! each node keeps how many nodes listen at best ([`Reach`]: every PUBLISH's answer, and
//! `PUBSUB NUMSUB` every two seconds), and a message that reached fewer also takes NOTIFY.
//! Every message carries its sender's id and a sequence number, so a node that gets it both
//! ways handles it once ([`RecentIds`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use parking_lot::Mutex;
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::hub::{Frame, Hub};
use crate::cluster::link::{spawn_subscription, LinkStatus, Subscriber};

/// A message's sender (`origin`, random per node and start) and its number there, from 1: a
/// node takes each `(origin, seq)` once. 0 (a sender that numbers nothing) is never deduplicated.
#[derive(Serialize, Deserialize)]
struct Envelope {
    user_id: i64,
    frame: String,
    #[serde(default)]
    origin: u64,
    #[serde(default)]
    seq: u64,
}

#[derive(Serialize, Deserialize)]
struct ControlEnvelope {
    origin: u64,
    payload: String,
    #[serde(default)]
    seq: u64,
}

/// What crosses PostgreSQL's NOTIFY: while Redis is away, or beside a PUBLISH that reached
/// fewer nodes than listen.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum FallbackMessage {
    Event {
        origin: u64,
        #[serde(default)]
        seq: u64,
        user_id: i64,
        frame: String,
        /// The sender delivered it to its own sockets already (its PUBLISH failed); otherwise
        /// (a PUBLISH that fell short) the sender's own listener delivers it too, unless the
        /// PUBLISH reached it first.
        #[serde(default = "already")]
        delivered_at_origin: bool,
    },
    Control {
        origin: u64,
        #[serde(default)]
        seq: u64,
        payload: String,
    },
}

fn already() -> bool {
    true
}

/// The NOTIFY channel of the fallback (NOTIFY stays within a database, so deployments apart).
const FALLBACK_CHANNEL: &str = "hilot_bus_fallback";
/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
const FALLBACK_MAX_PAYLOAD: usize = 7_900;
/// Between attempts to listen again after the fallback's connection failed.
const FALLBACK_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// A socket set left behind (a node that died without cleaning up) expires after a day.
const SLOT_TTL_S: i64 = 24 * 3600;
/// A node counts as alive this long after its last heartbeat; members of socket sets whose
/// node is not alive are left out when a closing socket looks for another.
const NODE_ALIVE_TTL_S: u64 = 15;
/// How often a node says it is alive (and retries the socket releases Redis missed).
pub const NODE_HEARTBEAT: Duration = Duration::from_secs(5);
/// How often each node asks Redis how many nodes listen (`PUBSUB NUMSUB`).
const REACH_PROBE: Duration = Duration::from_secs(2);
/// How long a node remembers the most nodes it saw listening. A node that left (stopped, or
/// killed) is forgotten after this; until then messages also take NOTIFY.
const REACH_MEMORY: Duration = Duration::from_secs(30);
/// Message ids each node remembers, to take a message sent both ways once: far more than cross
/// the bus in the few seconds between a message's two copies.
const RECENT_IDS: usize = 16_384;

/// How many nodes listen on a channel at best, lately.
#[derive(Default)]
struct Reach(Mutex<Option<(i64, Instant)>>);

impl Reach {
    /// Records that `receivers` nodes listen now; answers whether that falls short of the most
    /// seen within [`REACH_MEMORY`], so that a message that reached them may have missed a node.
    fn fell_short(&self, receivers: i64, now: Instant) -> bool {
        let mut best = self.0.lock();
        match *best {
            Some((most, seen)) if receivers < most && now.duration_since(seen) < REACH_MEMORY => {
                true
            }
            _ => {
                *best = Some((receivers, now));
                metrics::gauge!("hilot_bus_listening_nodes").set(receivers as f64);
                false
            }
        }
    }
}

/// The ids of the messages a node took lately, oldest first.
#[derive(Default)]
struct RecentIds {
    seen: FxHashSet<(u64, u64)>,
    order: VecDeque<(u64, u64)>,
}

impl RecentIds {
    /// Whether the message `(origin, seq)` is new here (and from now on, it is not).
    fn first_time(&mut self, origin: u64, seq: u64) -> bool {
        if seq == 0 {
            return true;
        }
        if !self.seen.insert((origin, seq)) {
            return false;
        }
        self.order.push_back((origin, seq));
        if self.order.len() > RECENT_IDS {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        true
    }
}

/// Handles a control event (a JSON payload) on this node.
pub type ControlHandler = Arc<dyn Fn(String) + Send + Sync>;

#[derive(Clone)]
pub struct EventBus {
    hub: Hub,
    redis: Option<(redis::aio::ConnectionManager, String)>,
    /// Where frames go when a PUBLISH fails (with Redis only).
    fallback: Option<sqlx::PgPool>,
    control: Arc<OnceLock<ControlHandler>>,
    /// This node's id on the bus, to skip its own echoes and number its messages.
    origin: u64,
    /// The last number given to a message of this node.
    sequence: Arc<AtomicU64>,
    /// How many nodes listen (each subscribes to the event and the control channel on one
    /// connection, so one count serves both).
    reach: Arc<Reach>,
    /// Socket releases (set key, member) Redis did not take, retried with each heartbeat.
    missed_releases: Arc<Mutex<Vec<(String, String)>>>,
}

/// Releases kept for retrying at most: beyond this many, sets expire by themselves (a day).
const MAX_MISSED_RELEASES: usize = 100_000;

fn node_key(channel: &str, node: u64) -> String {
    format!("{channel}:node:{node}")
}

fn control_channel(channel: &str) -> String {
    format!("{channel}:control")
}

impl EventBus {
    pub fn local(hub: Hub) -> Self {
        Self {
            hub,
            redis: None,
            fallback: None,
            control: Arc::default(),
            origin: rand::random(),
            sequence: Arc::default(),
            reach: Arc::default(),
            missed_releases: Arc::default(),
        }
    }

    fn next_seq(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Installs what this node does with control events (once, at start-up).
    pub fn on_control(&self, handler: ControlHandler) {
        let _ = self.control.set(handler);
    }

    /// Applies a control event on this node at once, then tells every other node.
    pub async fn control(&self, payload: String) {
        if let Some(handler) = self.control.get() {
            handler(payload.clone());
        }
        let Some((publisher, channel)) = &self.redis else {
            return;
        };
        let seq = self.next_seq();
        let envelope = serde_json::to_string(&ControlEnvelope {
            origin: self.origin,
            payload: payload.clone(),
            seq,
        })
        .expect("envelopes serialise");
        let mut publisher = publisher.clone();
        let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(control_channel(channel))
            .arg(envelope)
            .query_async(&mut publisher)
            .await;
        let fallback = FallbackMessage::Control {
            origin: self.origin,
            seq,
            payload,
        };
        match published {
            Ok(receivers) => {
                if self.reach.fell_short(receivers, Instant::now()) {
                    metrics::counter!("hilot_bus_publish_short_total").increment(1);
                    self.notify(&fallback).await;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "publishing a control event failed; sending it through PostgreSQL");
                metrics::counter!("hilot_bus_publish_failures_total").increment(1);
                if may_fall_back(&error) {
                    self.notify(&fallback).await;
                }
            }
        }
    }

    /// Sends `message` to the other nodes through PostgreSQL's NOTIFY.
    async fn notify(&self, message: &FallbackMessage) {
        let Some(db) = &self.fallback else {
            return;
        };
        let payload = serde_json::to_string(message).expect("fallback messages serialise");
        if payload.len() > FALLBACK_MAX_PAYLOAD {
            tracing::warn!(
                bytes = payload.len(),
                "a frame too long for NOTIFY reaches only this node's sockets"
            );
            metrics::counter!("hilot_bus_fallback_failures_total").increment(1);
            return;
        }
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(FALLBACK_CHANNEL)
            .bind(payload)
            .execute(db)
            .await;
        match sent {
            Ok(_) => metrics::counter!("hilot_bus_fallback_sent_total").increment(1),
            Err(error) => {
                tracing::warn!(%error, "the PostgreSQL fallback failed too; delivered on this node only");
                metrics::counter!("hilot_bus_fallback_failures_total").increment(1);
            }
        }
    }

    /// Publishes through Redis on `channel` and starts the subscriber that feeds the local hub
    /// (and re-subscribes after any drop), and the listener of the PostgreSQL fallback on `db`'s
    /// database.
    pub fn redis(
        hub: Hub,
        client: redis::Client,
        publisher: redis::aio::ConnectionManager,
        channel: String,
        status: Arc<LinkStatus>,
        db: sqlx::PgPool,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let forward_to = hub.clone();
        let control: Arc<OnceLock<ControlHandler>> = Arc::default();
        let origin = rand::random();
        let control_route = Arc::new(Inbound {
            channel: control_channel(&channel),
            handler: control.clone(),
            origin,
            recent: Mutex::default(),
        });
        let reach = Arc::<Reach>::default();
        tokio::spawn(listen_to_fallback(
            db.clone(),
            hub.clone(),
            control_route.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(probe_reach(
            publisher.clone(),
            channel.clone(),
            reach.clone(),
            shutdown.clone(),
        ));
        spawn_subscription(
            client,
            status,
            Subscriber {
                name: "events",
                channels: vec![channel.clone(), control_channel(&channel)],
                on_message: Box::new(move |message: redis::Msg| {
                    let (hub, control) = (forward_to.clone(), control_route.clone());
                    async move { forward(message, &hub, &control).await }.boxed()
                }),
                // Frames are moments, not state: nothing to catch up (clients re-read state over
                // REST when they reconnect, the credential sweep re-checks every open socket,
                // and the live index has its own catch-up).
                on_subscribed: Box::new(|_| async {}.boxed()),
            },
            shutdown,
        );
        Self {
            hub,
            redis: Some((publisher, channel)),
            // Its own connections, so an outage under request load does not make each offer
            // wait for the requests' pool.
            fallback: Some(crate::db::dedicated_pool(&db, 2)),
            control,
            origin,
            sequence: Arc::default(),
            reach,
            missed_releases: Arc::default(),
        }
    }

    /// Counts a socket in a cluster-wide set (`key`, under this deployment's prefix) holding at
    /// most `keep` members, newest last; answers the members pushed out (oldest first). With no
    /// Redis there is no cluster: nothing is counted and nothing pushed out.
    pub async fn claim_slot(&self, key: &str, member: &str, keep: usize) -> Vec<String> {
        let Some((publisher, channel)) = &self.redis else {
            return Vec::new();
        };
        let key = format!("{channel}:{key}");
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut connection = publisher.clone();
        // Add, then take out everything but the newest `keep`, in one round trip.
        let claimed: redis::RedisResult<(i64, bool, Vec<String>, i64)> = redis::pipe()
            .atomic()
            .cmd("ZADD")
            .arg(&key)
            .arg(now_ms)
            .arg(member)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(SLOT_TTL_S)
            .cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(-(keep as i64) - 1)
            .cmd("ZREMRANGEBYRANK")
            .arg(&key)
            .arg(0)
            .arg(-(keep as i64) - 1)
            .query_async(&mut connection)
            .await;
        match claimed {
            Ok((_, _, evicted, _)) => evicted,
            Err(error) => {
                tracing::warn!(%error, "counting a socket in the cluster failed");
                Vec::new()
            }
        }
    }

    /// The members of a cluster-wide socket set; `None` with no Redis, or when Redis does not
    /// answer.
    pub async fn slot_members(&self, key: &str) -> Option<Vec<String>> {
        let (publisher, channel) = self.redis.as_ref()?;
        let mut connection = publisher.clone();
        redis::cmd("ZRANGE")
            .arg(format!("{channel}:{key}"))
            .arg(0)
            .arg(-1)
            .query_async(&mut connection)
            .await
            .ok()
    }

    /// Takes a closed socket out of its cluster-wide set; if Redis does not take it now, the
    /// next heartbeats try again.
    pub fn release_slot(&self, key: &str, member: &str) {
        let Some((publisher, channel)) = &self.redis else {
            return;
        };
        let key = format!("{channel}:{key}");
        let (mut connection, member) = (publisher.clone(), member.to_owned());
        let missed = self.missed_releases.clone();
        tokio::spawn(async move {
            let released: redis::RedisResult<i64> = redis::cmd("ZREM")
                .arg(&key)
                .arg(&member)
                .query_async(&mut connection)
                .await;
            if released.is_err() {
                missed.lock().push((key, member));
            }
        });
    }

    /// Says that the node `node` (of the socket sets) is alive, for [`NODE_ALIVE_TTL_S`], and
    /// retries the releases Redis missed. Called every [`NODE_HEARTBEAT`].
    pub async fn heartbeat(&self, node: u64) {
        let Some((publisher, channel)) = &self.redis else {
            return;
        };
        let mut connection = publisher.clone();
        let mut beat = redis::pipe();
        beat.cmd("SET")
            .arg(node_key(channel, node))
            .arg(1)
            .arg("EX")
            .arg(NODE_ALIVE_TTL_S)
            .ignore();
        let missed = std::mem::take(&mut *self.missed_releases.lock());
        for (key, member) in &missed {
            beat.cmd("ZREM").arg(key).arg(member).ignore();
        }
        if beat.query_async::<()>(&mut connection).await.is_err() {
            // Still away: keep them for the next beat (a set expires in a day at most).
            let mut pending = self.missed_releases.lock();
            pending.extend(missed);
            pending.truncate(MAX_MISSED_RELEASES);
        }
    }

    /// Of `nodes`, which are alive (a heartbeat within [`NODE_ALIVE_TTL_S`]); `None` with no
    /// Redis, or when Redis does not answer.
    pub async fn alive(&self, nodes: &[u64]) -> Option<Vec<bool>> {
        let (publisher, channel) = self.redis.as_ref()?;
        if nodes.is_empty() {
            return Some(Vec::new());
        }
        let mut connection = publisher.clone();
        let mut mget = redis::cmd("MGET");
        for node in nodes {
            mget.arg(node_key(channel, *node));
        }
        let beats: Vec<Option<String>> = mget.query_async(&mut connection).await.ok()?;
        Some(beats.into_iter().map(|beat| beat.is_some()).collect())
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Sends `frame` to every socket of `user_id`, on any node.
    pub async fn to_user(&self, user_id: i64, frame: Frame) {
        match &self.redis {
            None => self.hub.deliver(user_id, frame).await,
            Some((publisher, channel)) => {
                let seq = self.next_seq();
                let payload = serde_json::to_string(&Envelope {
                    user_id,
                    frame: frame.to_string(),
                    origin: self.origin,
                    seq,
                })
                .expect("envelopes serialise");
                let mut publisher = publisher.clone();
                let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .query_async(&mut publisher)
                    .await;
                let fallback = |delivered_at_origin| FallbackMessage::Event {
                    origin: self.origin,
                    seq,
                    user_id,
                    frame: frame.to_string(),
                    delivered_at_origin,
                };
                match published {
                    Ok(receivers) => {
                        if self.reach.fell_short(receivers, Instant::now()) {
                            // Some node may be re-subscribing: every node also hears it
                            // through PostgreSQL, this one included, and takes it once.
                            metrics::counter!("hilot_bus_publish_short_total").increment(1);
                            self.notify(&fallback(false)).await;
                        }
                    }
                    Err(error) => {
                        // Redis is down: this node's own sockets get the frame at once, the
                        // other nodes' through PostgreSQL.
                        tracing::warn!(%error, "publishing an event failed; delivering locally and through PostgreSQL");
                        metrics::counter!("hilot_bus_publish_failures_total").increment(1);
                        let message = may_fall_back(&error).then(|| fallback(true));
                        self.hub.deliver(user_id, frame).await;
                        if let Some(message) = message {
                            self.notify(&message).await;
                        }
                    }
                }
            }
        }
    }
}

/// What a node needs to take messages from the others: the control channel's name and
/// handler, its own id, and the ids it took lately.
struct Inbound {
    channel: String,
    handler: Arc<OnceLock<ControlHandler>>,
    origin: u64,
    recent: Mutex<RecentIds>,
}

impl Inbound {
    fn first_time(&self, origin: u64, seq: u64) -> bool {
        self.recent.lock().first_time(origin, seq)
    }
}

/// Asks Redis how many nodes listen on `channel` every [`REACH_PROBE`], so a node knows
/// before its first message how many should hear it.
async fn probe_reach(
    publisher: redis::aio::ConnectionManager,
    channel: String,
    reach: Arc<Reach>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let mut connection = publisher.clone();
        // [(channel, count)]
        let counts: redis::RedisResult<Vec<(String, i64)>> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query_async(&mut connection)
            .await;
        if let Ok([(_, listening)]) = counts.as_deref() {
            reach.fell_short(*listening, Instant::now());
        }
        tokio::select! {
            _ = tokio::time::sleep(REACH_PROBE) => {}
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        }
    }
}

/// One message from the event or the control channel.
async fn forward(message: redis::Msg, hub: &Hub, control: &Inbound) {
    let Ok(payload) = message.get_payload::<String>() else {
        return;
    };
    if message.get_channel_name() == control.channel {
        match serde_json::from_str::<ControlEnvelope>(&payload) {
            Ok(envelope) if envelope.origin == control.origin => {}
            Ok(envelope) => {
                if !control.first_time(envelope.origin, envelope.seq) {
                    return;
                }
                if let Some(handler) = control.handler.get() {
                    handler(envelope.payload);
                }
            }
            Err(error) => tracing::warn!(%error, "ignoring a malformed control event"),
        }
        return;
    }
    match serde_json::from_str::<Envelope>(&payload) {
        Ok(envelope) => {
            if control.first_time(envelope.origin, envelope.seq) {
                hub.deliver(envelope.user_id, envelope.frame.into()).await;
            }
        }
        Err(error) => tracing::warn!(%error, "ignoring a malformed event"),
    }
}

/// Whether a failed PUBLISH may take the fallback: not when it timed out, since Redis may have
/// delivered it all the same (a stall past the command timeout), and every node would then get
/// the frame twice. Such a frame reaches this node's sockets only, as before the fallback.
fn may_fall_back(error: &redis::RedisError) -> bool {
    !error.is_timeout()
}

/// Listens on the fallback channel until shutdown, on a connection of its own (so it holds
/// none of the pool requests share), listening again after any failure.
async fn listen_to_fallback(
    db: sqlx::PgPool,
    hub: Hub,
    control: Arc<Inbound>,
    mut shutdown: watch::Receiver<bool>,
) {
    let listen_pool = crate::db::dedicated_pool(&db, 1);
    loop {
        let listening = listen_until_failure(&listen_pool, &hub, &control);
        tokio::select! {
            outcome = listening => {
                if let Err(error) = outcome {
                    tracing::warn!(%error, "listening to the PostgreSQL fallback failed; retrying");
                }
            }
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(FALLBACK_RETRY) => {}
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        }
    }
}

async fn listen_until_failure(
    listen_pool: &sqlx::PgPool,
    hub: &Hub,
    control: &Inbound,
) -> sqlx::Result<()> {
    let mut listener = sqlx::postgres::PgListener::connect_with(listen_pool).await?;
    listener.listen(FALLBACK_CHANNEL).await?;
    loop {
        let notification = listener.recv().await?;
        take_fallback(notification.payload(), hub, control).await;
    }
}

/// One message from the fallback channel: this node's own control events were applied when
/// sent, and so were its own frames unless their PUBLISH went through (and fell short); one
/// that came through Redis too is taken once.
async fn take_fallback(payload: &str, hub: &Hub, control: &Inbound) {
    match serde_json::from_str::<FallbackMessage>(payload) {
        Ok(
            FallbackMessage::Event {
                origin,
                delivered_at_origin: true,
                ..
            }
            | FallbackMessage::Control { origin, .. },
        ) if origin == control.origin => {}
        Ok(FallbackMessage::Event {
            origin,
            seq,
            user_id,
            frame,
            ..
        }) => {
            if control.first_time(origin, seq) {
                metrics::counter!("hilot_bus_fallback_received_total").increment(1);
                hub.deliver(user_id, frame.into()).await;
            }
        }
        Ok(FallbackMessage::Control {
            origin,
            seq,
            payload,
        }) => {
            if control.first_time(origin, seq) {
                metrics::counter!("hilot_bus_fallback_received_total").increment(1);
                if let Some(handler) = control.handler.get() {
                    handler(payload);
                }
            }
        }
        Err(error) => tracing::warn!(%error, "ignoring a malformed fallback message"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_falls_short_of_the_most_nodes_seen_lately_until_they_are_forgotten() {
        let reach = Reach::default();
        let start = Instant::now();
        assert!(
            !reach.fell_short(3, start),
            "the first count is the best yet"
        );
        assert!(reach.fell_short(2, start + Duration::from_secs(1)));
        assert!(reach.fell_short(0, start + Duration::from_secs(2)));
        // Every node back: the count is refreshed, and a drop counts again from then.
        assert!(!reach.fell_short(3, start + Duration::from_secs(20)));
        assert!(reach.fell_short(2, start + Duration::from_secs(45)));
        // A node that stays gone is forgotten.
        assert!(!reach.fell_short(2, start + Duration::from_secs(51)));
        assert!(!reach.fell_short(2, start + Duration::from_secs(52)));
        assert!(!reach.fell_short(4, start + Duration::from_secs(53)));
    }

    #[test]
    fn a_message_is_taken_once_however_it_comes() {
        let mut recent = RecentIds::default();
        assert!(recent.first_time(7, 1));
        assert!(!recent.first_time(7, 1));
        assert!(recent.first_time(8, 1), "another node's first message");
        assert!(
            recent.first_time(0, 0) && recent.first_time(0, 0),
            "unnumbered: always"
        );
        for seq in 2..=(RECENT_IDS as u64 + 1) {
            assert!(recent.first_time(7, seq));
        }
        assert_eq!(recent.order.len(), RECENT_IDS);
        assert!(recent.first_time(7, 1), "forgotten once far behind");
    }
}
