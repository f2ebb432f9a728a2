//! This node's link to Redis: whether its subscriptions are up, since when they are down, how
//! many gaps it has caught up from; and a subscription loop that re-establishes itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::watch;

/// First wait before re-subscribing after a drop; doubled after each failed attempt.
pub const RESUBSCRIBE_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between attempts while Redis stays away.
pub const RESUBSCRIBE_BACKOFF_MAX: Duration = Duration::from_secs(3);
/// One attempt to open and subscribe gives up after this long (a hung Redis is a down Redis).
pub const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Shared by every subscription of this node; read by health and metrics.
#[derive(Debug, Default)]
pub struct LinkStatus {
    /// Subscriptions configured (0: single node, no Redis).
    subscriptions: AtomicU64,
    /// Subscriptions currently up.
    up: AtomicU64,
    /// When the link last went down (while it is down).
    down_since: Mutex<Option<DateTime<Utc>>>,
    /// The last error heard from Redis.
    last_error: Mutex<Option<String>>,
    /// Times a subscription came back after a drop (each followed by a catch-up).
    recoveries: AtomicU64,
    /// Set while the replication's catch-up from PostgreSQL runs.
    catching_up: AtomicBool,
}

/// What health reports about the cluster link.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct LinkReport {
    /// `connected`, `catching_up`, or `local_only` (Redis is away: this node serves its own view).
    pub state: &'static str,
    /// When the link went down, while it is down.
    pub down_since: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Times a dropped subscription came back (each followed by a catch-up).
    pub recoveries: u64,
}

impl LinkStatus {
    fn register(&self) {
        self.subscriptions.fetch_add(1, Ordering::Relaxed);
    }

    /// Every subscription is up and no catch-up is running.
    pub fn connected(&self) -> bool {
        self.up.load(Ordering::Relaxed) >= self.subscriptions.load(Ordering::Relaxed)
            && !self.catching_up.load(Ordering::Relaxed)
    }

    pub fn set_catching_up(&self, running: bool) {
        self.catching_up.store(running, Ordering::Relaxed);
    }

    fn went_up(&self) {
        self.up.fetch_add(1, Ordering::Relaxed);
        if self.up.load(Ordering::Relaxed) >= self.subscriptions.load(Ordering::Relaxed) {
            *self.down_since.lock() = None;
        }
        metrics::gauge!("hilot_cluster_redis_connected").set(self.up_ratio());
    }

    fn went_down(&self, error: String) {
        self.up.fetch_sub(1, Ordering::Relaxed);
        self.down_since.lock().get_or_insert_with(Utc::now);
        self.failed(error);
        metrics::gauge!("hilot_cluster_redis_connected").set(self.up_ratio());
    }

    /// Records an error heard from Redis (a failed publish, a failed attempt).
    pub fn failed(&self, error: String) {
        *self.last_error.lock() = Some(error);
    }

    fn up_ratio(&self) -> f64 {
        let total = self.subscriptions.load(Ordering::Relaxed).max(1);
        (self.up.load(Ordering::Relaxed) as f64 / total as f64).floor()
    }

    pub fn report(&self) -> LinkReport {
        let down = self.up.load(Ordering::Relaxed) < self.subscriptions.load(Ordering::Relaxed);
        LinkReport {
            state: if down {
                "local_only"
            } else if self.catching_up.load(Ordering::Relaxed) {
                "catching_up"
            } else {
                "connected"
            },
            down_since: *self.down_since.lock(),
            last_error: self.last_error.lock().clone(),
            recoveries: self.recoveries.load(Ordering::Relaxed),
        }
    }
}

/// What to do with one message, and what to do each time the subscription is (re)established.
pub struct Subscriber {
    pub name: &'static str,
    pub channels: Vec<String>,
    pub on_message: Box<dyn FnMut(redis::Msg) -> BoxFuture<'static, ()> + Send>,
    /// Called after every successful subscribe, `true` after a drop: the place to catch up on
    /// whatever was published while this node was not listening.
    pub on_subscribed: Box<dyn FnMut(bool) -> BoxFuture<'static, ()> + Send>,
}

/// Runs `subscriber` until shutdown: subscribes, forwards messages, and when the subscription
/// drops (Redis restarted, the connection cut) re-subscribes with exponential backoff and
/// jitter, then catches up. Spawned once per subscription; never gives up.
pub fn spawn_subscription(
    client: redis::Client,
    status: Arc<LinkStatus>,
    mut subscriber: Subscriber,
    mut shutdown: watch::Receiver<bool>,
) {
    status.register();
    tokio::spawn(async move {
        let mut backoff = RESUBSCRIBE_BACKOFF_MIN;
        let mut after_drop = false;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let opened = tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
                let mut pubsub = client.get_async_pubsub().await?;
                for channel in &subscriber.channels {
                    pubsub.subscribe(channel).await?;
                }
                Ok::<_, redis::RedisError>(pubsub)
            })
            .await;
            let mut pubsub = match opened {
                Ok(Ok(pubsub)) => pubsub,
                failed => {
                    let error = match failed {
                        Ok(Err(error)) => error.to_string(),
                        _ => format!("no answer within {SUBSCRIBE_TIMEOUT:?}"),
                    };
                    status.failed(error.clone());
                    if !after_drop {
                        // Never up yet: count it down once, so health says so.
                        status.up.fetch_add(1, Ordering::Relaxed);
                        status.went_down(error.clone());
                        after_drop = true;
                    }
                    tracing::warn!(subscription = subscriber.name, %error, ?backoff, "subscribing to Redis failed; retrying");
                    let jitter = backoff.mul_f64(rand::random::<f64>() * 0.5);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff + jitter) => {}
                        _ = stopped(&mut shutdown) => return,
                    }
                    backoff = (backoff * 2).min(RESUBSCRIBE_BACKOFF_MAX);
                    continue;
                }
            };
            backoff = RESUBSCRIBE_BACKOFF_MIN;
            status.went_up();
            if after_drop {
                status.recoveries.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("hilot_cluster_resubscriptions_total", "subscription" => subscriber.name)
                    .increment(1);
                tracing::info!(
                    subscription = subscriber.name,
                    "Redis subscription re-established; catching up"
                );
            }
            (subscriber.on_subscribed)(after_drop).await;
            let mut messages = pubsub.on_message();
            let ended = loop {
                tokio::select! {
                    message = messages.next() => match message {
                        Some(message) => (subscriber.on_message)(message).await,
                        None => break "the connection to Redis closed".to_owned(),
                    },
                    _ = stopped(&mut shutdown) => return,
                }
            };
            drop(messages);
            tracing::warn!(subscription = subscriber.name, reason = %ended, "Redis subscription dropped; this node serves its own view until it is back");
            status.went_down(ended);
            after_drop = true;
        }
    });
}

/// Resolves once shutdown starts (never holding the channel's guard across an await).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
