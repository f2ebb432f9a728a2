//! The outbox: deliveries to the outside world (push notifications, operator webhooks, gateway
//! refunds), written in the same database transaction as what caused them and drained by a
//! worker on every node, at least once, with exponential backoff and a dead-letter state.
//!
//! Nothing here knows how to deliver: each channel's [`Courier`] is handed to the worker at
//! start-up by the layer that owns it (notifications, webhooks, money).

pub mod worker;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

/// A delivery channel; the text is stored in `outbox.channel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Push,
    Webhook,
    Gateway,
    /// A booking event to fan out into notifications and webhooks.
    Event,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Webhook => "webhook",
            Self::Gateway => "gateway",
            Self::Event => "event",
        }
    }
}

/// A delivery to write.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub channel: Channel,
    /// Who receives it (`webhook:<endpoint>`, `push:<device>`, `gateway`): deliveries to one
    /// target never crowd out another's.
    pub target: String,
    pub endpoint_id: Option<i64>,
    pub event_type: String,
    pub payload: Value,
}

/// Writes a delivery; it goes out once the surrounding transaction commits.
pub async fn enqueue(tx: &mut PgConnection, delivery: NewDelivery) -> sqlx::Result<Uuid> {
    sqlx::query_scalar(
        "INSERT INTO outbox (channel, target, endpoint_id, event_type, payload) \
         VALUES ($1, $2, $3, $4, $5) RETURNING uuid",
    )
    .bind(delivery.channel.as_str())
    .bind(&delivery.target)
    .bind(delivery.endpoint_id)
    .bind(&delivery.event_type)
    .bind(&delivery.payload)
    .fetch_one(tx)
    .await
}

/// A claimed delivery, handed to its channel's courier.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    pub id: i64,
    /// Stable across retries: receivers deduplicate on it (`webhook-id`).
    pub uuid: Uuid,
    pub channel: String,
    pub target: String,
    pub endpoint_id: Option<i64>,
    pub event_type: String,
    pub payload: Value,
    /// This attempt's number, from 1.
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
}

/// Why an attempt failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// False when trying again cannot help (an unregistered device): dead-lettered at once.
    pub retry: bool,
    pub status_code: Option<u16>,
    pub error: String,
}

impl Failure {
    pub fn retry(error: impl Into<String>, status_code: Option<u16>) -> Self {
        Self {
            retry: true,
            status_code,
            error: error.into(),
        }
    }

    pub fn permanent(error: impl Into<String>, status_code: Option<u16>) -> Self {
        Self {
            retry: false,
            status_code,
            error: error.into(),
        }
    }
}

/// What one attempt at a delivery came to: the receiver's status on success.
pub type Outcome = Result<Option<u16>, Failure>;

/// Delivers one channel's jobs (an HTTP call, usually). Returns the receiver's status on success.
pub trait Courier: Send + Sync {
    fn deliver<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Outcome>;

    /// How many due deliveries one attempt takes together ([`Courier::deliver_batch`]).
    fn batch_size(&self) -> usize {
        1
    }

    /// Delivers several jobs in one attempt: one outcome per job, in order. By default, one
    /// after another.
    fn deliver_batch<'a>(&'a self, jobs: &'a [Job]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(deliver_each(self, jobs))
    }

    /// Most attempts of this channel a worker has in flight at once (unbounded by default, but
    /// for the worker's own concurrency).
    fn max_attempts_in_flight(&self) -> usize {
        usize::MAX
    }

    /// True when a successful delivery already marked its row delivered (in the transaction
    /// that did the work), so the worker need not write it again.
    fn records_delivery(&self) -> bool {
        false
    }
}

/// Delivers the jobs one after another, each on its own: what [`Courier::deliver_batch`] does
/// unless a courier does better.
pub async fn deliver_each<C: Courier + ?Sized>(courier: &C, jobs: &[Job]) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        outcomes.push(courier.deliver(job).await);
    }
    outcomes
}

pub type Couriers = Vec<(Channel, Arc<dyn Courier>)>;

/// One delivery as operators see it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct DeliveryView {
    /// Also the `webhook-id` header (`msg_<id without dashes>`).
    pub id: Uuid,
    pub event_type: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub dead_at: Option<DateTime<Utc>>,
    pub payload: Value,
}

/// An endpoint's deliveries, newest first.
pub async fn deliveries_of_endpoint(
    db: impl PgExecutor<'_>,
    endpoint_id: i64,
    status: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<DeliveryView>> {
    sqlx::query_as(
        "SELECT uuid AS id, event_type, status::text AS status, attempts, \
                CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at, \
                last_status_code, last_error, created_at, delivered_at, dead_at, payload \
         FROM outbox WHERE endpoint_id = $1 AND ($2::text IS NULL OR status::text = $2) \
         ORDER BY id DESC LIMIT $3",
    )
    .bind(endpoint_id)
    .bind(status)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Puts a delivery back in the queue now, with a fresh count of attempts (manual redelivery).
/// The message id stays the same, so a receiver that did get it can tell.
pub async fn redeliver(
    db: impl PgExecutor<'_>,
    endpoint_id: i64,
    delivery: Uuid,
) -> sqlx::Result<Option<DeliveryView>> {
    sqlx::query_as(
        "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = now(), dead_at = NULL, \
                updated_at = now() \
         WHERE endpoint_id = $1 AND uuid = $2 \
         RETURNING uuid AS id, event_type, status::text AS status, attempts, next_attempt_at, \
                   last_status_code, last_error, created_at, delivered_at, dead_at, payload",
    )
    .bind(endpoint_id)
    .bind(delivery)
    .fetch_optional(db)
    .await
}
