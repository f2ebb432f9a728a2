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

use std::sync::{Arc, OnceLock};

use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::hub::{Frame, Hub};
use crate::cluster::link::{spawn_subscription, LinkStatus, Subscriber};

#[derive(Serialize, Deserialize)]
struct Envelope {
    user_id: i64,
    frame: String,
}

#[derive(Serialize, Deserialize)]
struct ControlEnvelope {
    origin: u64,
    payload: String,
}

/// What crosses PostgreSQL's NOTIFY while Redis is away.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum FallbackMessage {
    Event {
        origin: u64,
        user_id: i64,
        frame: String,
    },
    Control {
        origin: u64,
        payload: String,
    },
}

/// The NOTIFY channel of the fallback (NOTIFY stays within a database, so deployments apart).
const FALLBACK_CHANNEL: &str = "hilot_bus_fallback";
/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
const FALLBACK_MAX_PAYLOAD: usize = 7_900;
/// Between attempts to listen again after the fallback's connection failed.
const FALLBACK_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// A socket set left behind (a node that died without cleaning up) expires after a day.
const SLOT_TTL_S: i64 = 24 * 3600;

/// Handles a control event (a JSON payload) on this node.
pub type ControlHandler = Arc<dyn Fn(String) + Send + Sync>;

#[derive(Clone)]
pub struct EventBus {
    hub: Hub,
    redis: Option<(redis::aio::ConnectionManager, String)>,
    /// Where frames go when a PUBLISH fails (with Redis only).
    fallback: Option<sqlx::PgPool>,
    control: Arc<OnceLock<ControlHandler>>,
    /// This node's id on the control channel, to skip its own echoes.
    origin: u64,
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
        }
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
        let envelope = serde_json::to_string(&ControlEnvelope {
            origin: self.origin,
            payload: payload.clone(),
        })
        .expect("envelopes serialise");
        let mut publisher = publisher.clone();
        let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(control_channel(channel))
            .arg(envelope)
            .query_async(&mut publisher)
            .await;
        if let Err(error) = published {
            tracing::warn!(%error, "publishing a control event failed; sending it through PostgreSQL");
            metrics::counter!("hilot_bus_publish_failures_total").increment(1);
            if may_fall_back(&error) {
                self.notify(&FallbackMessage::Control {
                    origin: self.origin,
                    payload,
                })
                .await;
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
        let control_route = Arc::new(Control {
            channel: control_channel(&channel),
            handler: control.clone(),
            origin,
        });
        tokio::spawn(listen_to_fallback(
            db.clone(),
            hub.clone(),
            control_route.clone(),
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

    /// Takes a closed socket out of its cluster-wide set.
    pub fn release_slot(&self, key: &str, member: &str) {
        let Some((publisher, channel)) = &self.redis else {
            return;
        };
        let key = format!("{channel}:{key}");
        let (mut connection, member) = (publisher.clone(), member.to_owned());
        tokio::spawn(async move {
            let _: redis::RedisResult<i64> = redis::cmd("ZREM")
                .arg(key)
                .arg(member)
                .query_async(&mut connection)
                .await;
        });
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Sends `frame` to every socket of `user_id`, on any node.
    pub async fn to_user(&self, user_id: i64, frame: Frame) {
        match &self.redis {
            None => self.hub.deliver(user_id, frame).await,
            Some((publisher, channel)) => {
                let payload = serde_json::to_string(&Envelope {
                    user_id,
                    frame: frame.to_string(),
                })
                .expect("envelopes serialise");
                let mut publisher = publisher.clone();
                let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .query_async(&mut publisher)
                    .await;
                if let Err(error) = published {
                    // Redis is down: this node's own sockets get the frame at once, the other
                    // nodes' through PostgreSQL.
                    tracing::warn!(%error, "publishing an event failed; delivering locally and through PostgreSQL");
                    metrics::counter!("hilot_bus_publish_failures_total").increment(1);
                    let fallback = may_fall_back(&error).then(|| FallbackMessage::Event {
                        origin: self.origin,
                        user_id,
                        frame: frame.to_string(),
                    });
                    self.hub.deliver(user_id, frame).await;
                    if let Some(message) = fallback {
                        self.notify(&message).await;
                    }
                }
            }
        }
    }
}

struct Control {
    channel: String,
    handler: Arc<OnceLock<ControlHandler>>,
    origin: u64,
}

/// One message from the event or the control channel.
async fn forward(message: redis::Msg, hub: &Hub, control: &Control) {
    let Ok(payload) = message.get_payload::<String>() else {
        return;
    };
    if message.get_channel_name() == control.channel {
        match serde_json::from_str::<ControlEnvelope>(&payload) {
            Ok(envelope) if envelope.origin == control.origin => {}
            Ok(envelope) => {
                if let Some(handler) = control.handler.get() {
                    handler(envelope.payload);
                }
            }
            Err(error) => tracing::warn!(%error, "ignoring a malformed control event"),
        }
        return;
    }
    match serde_json::from_str::<Envelope>(&payload) {
        Ok(envelope) => hub.deliver(envelope.user_id, envelope.frame.into()).await,
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
    control: Arc<Control>,
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
    control: &Control,
) -> sqlx::Result<()> {
    let mut listener = sqlx::postgres::PgListener::connect_with(listen_pool).await?;
    listener.listen(FALLBACK_CHANNEL).await?;
    loop {
        let notification = listener.recv().await?;
        take_fallback(notification.payload(), hub, control).await;
    }
}

/// One message from the fallback channel; this node's own were delivered when sent.
async fn take_fallback(payload: &str, hub: &Hub, control: &Control) {
    match serde_json::from_str::<FallbackMessage>(payload) {
        Ok(FallbackMessage::Event { origin, .. } | FallbackMessage::Control { origin, .. })
            if origin == control.origin => {}
        Ok(FallbackMessage::Event { user_id, frame, .. }) => {
            metrics::counter!("hilot_bus_fallback_received_total").increment(1);
            hub.deliver(user_id, frame.into()).await;
        }
        Ok(FallbackMessage::Control { payload, .. }) => {
            metrics::counter!("hilot_bus_fallback_received_total").increment(1);
            if let Some(handler) = control.handler.get() {
                handler(payload);
            }
        }
        Err(error) => tracing::warn!(%error, "ignoring a malformed fallback message"),
    }
}
