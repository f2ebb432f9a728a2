//! The event bus: how a frame for a user reaches their sockets on whichever node holds them.
//! Single node (no `REDIS_URL`): straight to the local hub. With Redis: published on one
//! channel per deployment; every node subscribes and hands frames to its own hub.

use anyhow::Context as _;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::hub::{Frame, Hub};

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

    /// Publishes through Redis on `channel` and starts the subscriber that feeds the local hub.
    pub async fn redis(
        hub: Hub,
        client: redis::Client,
        publisher: redis::aio::ConnectionManager,
        channel: String,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let mut pubsub = client
            .get_async_pubsub()
            .await
            .context("opening the Redis subscription")?;
        pubsub
            .subscribe(&channel)
            .await
            .context("subscribing to the event channel")?;
        tokio::spawn(forward(pubsub, hub.clone(), shutdown));
        Ok(Self {
            hub,
            redis: Some((publisher, channel)),
        })
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

async fn forward(mut pubsub: redis::aio::PubSub, hub: Hub, mut shutdown: watch::Receiver<bool>) {
    let mut messages = pubsub.on_message();
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    tracing::error!("the Redis event subscription ended");
                    return;
                };
                let Ok(payload) = message.get_payload::<String>() else { continue };
                match serde_json::from_str::<Envelope>(&payload) {
                    Ok(envelope) => hub.deliver(envelope.user_id, envelope.frame.into()).await,
                    Err(error) => tracing::warn!(%error, "ignoring a malformed event"),
                }
            }
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        }
    }
}
