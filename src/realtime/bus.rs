//! The event bus: how a frame for a user reaches their sockets on whichever node holds them.
//! Single node (no `REDIS_URL`): straight to the local hub. With Redis: published on one
//! channel per deployment; every node subscribes and hands frames to its own hub. A dropped
//! subscription comes back by itself ([`crate::cluster::link`]); while Redis is away a frame
//! reaches the sockets of the node that produced it.

use std::sync::Arc;

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

#[derive(Clone)]
pub struct EventBus {
    hub: Hub,
    redis: Option<(redis::aio::ConnectionManager, String)>,
}

impl EventBus {
    pub fn local(hub: Hub) -> Self {
        Self { hub, redis: None }
    }

    /// Publishes through Redis on `channel` and starts the subscriber that feeds the local hub
    /// (and re-subscribes after any drop).
    pub fn redis(
        hub: Hub,
        client: redis::Client,
        publisher: redis::aio::ConnectionManager,
        channel: String,
        status: Arc<LinkStatus>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let forward_to = hub.clone();
        spawn_subscription(
            client,
            status,
            Subscriber {
                name: "events",
                channels: vec![channel.clone()],
                on_message: Box::new(move |message: redis::Msg| {
                    let hub = forward_to.clone();
                    async move {
                        let Ok(payload) = message.get_payload::<String>() else {
                            return;
                        };
                        match serde_json::from_str::<Envelope>(&payload) {
                            Ok(envelope) => {
                                hub.deliver(envelope.user_id, envelope.frame.into()).await
                            }
                            Err(error) => tracing::warn!(%error, "ignoring a malformed event"),
                        }
                    }
                    .boxed()
                }),
                // Frames are moments, not state: nothing to catch up (clients re-read state over
                // REST when they reconnect, and the live index has its own catch-up).
                on_subscribed: Box::new(|_| async {}.boxed()),
            },
            shutdown,
        );
        Self {
            hub,
            redis: Some((publisher, channel)),
        }
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
                    // Redis is down: this node's own sockets still get the frame.
                    tracing::warn!(%error, "publishing an event failed; delivering locally");
                    metrics::counter!("hilot_bus_publish_failures_total").increment(1);
                    self.hub.deliver(user_id, frame).await;
                }
            }
        }
    }
}
