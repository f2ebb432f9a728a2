//! Operator webhooks: endpoints admins register, and booking, payment, payout and provider events
//! delivered to them at least once through the outbox, signed as the Standard Webhooks spec says
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`).

pub mod address;
pub mod signing;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::outbox::{Courier, Failure, Job};

/// Every event type an endpoint may subscribe to (`*` and `booking.*`-style prefixes also work).
pub const EVENT_TYPES: &[&str] = &[
    "booking.created",
    "booking.accepted",
    "booking.en_route",
    "booking.arrived",
    "booking.in_progress",
    "booking.completed",
    "booking.cancelled",
    "booking.no_show",
    "booking.rescheduled",
    "payment.paid",
    "payment.failed",
    "payment.refunded",
    "tip.received",
    "payout.created",
    "payout.completed",
    "payout.failed",
    "provider.verified",
    "provider.rejected",
    "review.created",
];

/// True when `pattern` (an exact type, `*`, or `prefix.*`) is a valid subscription.
pub fn is_valid_pattern(pattern: &str) -> bool {
    pattern == "*"
        || EVENT_TYPES.contains(&pattern)
        || pattern.strip_suffix(".*").is_some_and(|prefix| {
            EVENT_TYPES
                .iter()
                .any(|t| t.split_once('.').is_some_and(|(p, _)| p == prefix))
        })
}

/// True when an endpoint subscribed to `patterns` wants `event_type`.
pub fn matches(patterns: &[String], event_type: &str) -> bool {
    patterns.iter().any(|p| {
        p == "*"
            || p == event_type
            || p.strip_suffix(".*").is_some_and(|prefix| {
                event_type
                    .split_once('.')
                    .is_some_and(|(head, _)| head == prefix)
            })
    })
}

/// The SQL condition "endpoint `e` is active and subscribes to the event named by parameter
/// `param`" (mirrors [`matches`]).
pub fn subscribed_to(param: &str) -> String {
    format!(
        "e.is_active AND ('*' = ANY(e.events) OR {param} = ANY(e.events) \
         OR split_part({param}, '.', 1) || '.*' = ANY(e.events))"
    )
}

/// Queues `event_type` with `data` for every active endpoint subscribed to it, inside the
/// transaction that made it happen (one statement; nothing when nobody subscribed).
pub async fn emit(tx: &mut PgConnection, event_type: &str, data: Value) -> sqlx::Result<()> {
    let body = json!({"type": event_type, "timestamp": Utc::now(), "data": data});
    sqlx::query(&format!(
        "INSERT INTO outbox (channel, target, endpoint_id, event_type, payload) \
         SELECT 'webhook', 'webhook:' || e.id, e.id, $1, $2 FROM webhook_endpoints e WHERE {}",
        subscribed_to("$1")
    ))
    .bind(event_type)
    .bind(&body)
    .execute(tx)
    .await
    .map(|_| ())
}

/// An endpoint as admins see it. The secret is shown once, when it is created.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct EndpointView {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    /// `whsec_<base64>`: only in the answer to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[sqlx(skip)]
    pub secret: Option<String>,
}

const ENDPOINT_COLUMNS: &str = "uuid AS id, url, events, description, is_active, created_at";

/// A new random secret in Standard Webhooks form.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

pub async fn create_endpoint(
    db: impl PgExecutor<'_>,
    url: &str,
    events: &[String],
    secret: &str,
    description: Option<&str>,
    created_by: i64,
) -> sqlx::Result<EndpointView> {
    let mut view: EndpointView = sqlx::query_as(&format!(
        "INSERT INTO webhook_endpoints (url, events, secret, description, created_by) \
         VALUES ($1, $2, $3, $4, $5) RETURNING {ENDPOINT_COLUMNS}"
    ))
    .bind(url)
    .bind(events)
    .bind(secret)
    .bind(description)
    .bind(created_by)
    .fetch_one(db)
    .await?;
    view.secret = Some(secret.to_owned());
    Ok(view)
}

pub async fn list_endpoints(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<EndpointView>> {
    sqlx::query_as(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY id"
    ))
    .fetch_all(db)
    .await
}

/// The internal id of an endpoint.
pub async fn endpoint_id(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT id FROM webhook_endpoints WHERE uuid = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Stops deliveries to an endpoint; pending ones are dropped with it.
pub async fn deactivate(db: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<EndpointView>> {
    let view: Option<EndpointView> = sqlx::query_as(&format!(
        "UPDATE webhook_endpoints SET is_active = false, updated_at = now() WHERE uuid = $1 \
         RETURNING {ENDPOINT_COLUMNS}, id AS internal_id"
    ))
    .bind(id)
    .fetch_optional(&mut *db)
    .await?;
    sqlx::query(
        "UPDATE outbox SET status = 'dead', dead_at = now(), last_error = 'endpoint deactivated' \
         WHERE endpoint_id = (SELECT id FROM webhook_endpoints WHERE uuid = $1) AND status = 'pending'",
    )
    .bind(id)
    .execute(&mut *db)
    .await?;
    Ok(view)
}

/// The webhook channel's courier: one signed POST per delivery.
pub struct WebhookCourier {
    pub db: sqlx::PgPool,
    /// Resolves through [`address::PublicAddressesOnly`] unless internal addresses are allowed.
    pub client: reqwest::Client,
    pub private_addresses_allowed: bool,
}

impl Courier for WebhookCourier {
    fn deliver<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<Option<u16>, Failure>> {
        Box::pin(async move {
            let endpoint: Option<(String, String, bool)> = sqlx::query_as(
                "SELECT url, secret, is_active FROM webhook_endpoints WHERE id = $1",
            )
            .bind(job.endpoint_id)
            .fetch_optional(&self.db)
            .await
            .map_err(|e| Failure::retry(format!("loading the endpoint: {e}"), None))?;
            let Some((url, secret, true)) = endpoint else {
                return Err(Failure::permanent(
                    "the endpoint was removed or deactivated",
                    None,
                ));
            };
            // Checked again here: the endpoint may predate the setting, or have been written
            // straight into the table.
            if !self.private_addresses_allowed
                && !url::Url::parse(&url).is_ok_and(|u| address::host_may_be_public(&u))
            {
                return Err(Failure::permanent(
                    format!("the endpoint's URL {}", address::NOT_PUBLIC),
                    None,
                ));
            }
            let body = job.payload.to_string();
            let id = signing::message_id(job.uuid);
            let timestamp = Utc::now().timestamp();
            let signature = signing::sign(&secret, &id, timestamp, &body)
                .map_err(|e| Failure::permanent(e, None))?;
            let response = self
                .client
                .post(&url)
                .header("content-type", "application/json")
                .header("webhook-id", &id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(body)
                .send()
                .await
                .map_err(|e| {
                    if address::is_internal_address_error(&e) {
                        Failure::permanent(
                            format!("the endpoint's host {}", address::NOT_PUBLIC),
                            None,
                        )
                    } else {
                        Failure::retry(format!("unreachable: {}", e.without_url()), None)
                    }
                })?;
            let status = response.status().as_u16();
            if response.status().is_success() {
                Ok(Some(status))
            } else {
                Err(Failure::retry(
                    format!("the endpoint answered {status}"),
                    Some(status),
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_match_exact_types_prefixes_and_everything() {
        let patterns = vec!["booking.*".to_owned(), "payout.completed".to_owned()];
        assert!(matches(&patterns, "booking.completed"));
        assert!(matches(&patterns, "payout.completed"));
        assert!(!matches(&patterns, "payout.failed"));
        assert!(matches(&["*".to_owned()], "provider.verified"));
        assert!(is_valid_pattern("booking.*"));
        assert!(is_valid_pattern("payment.paid"));
        assert!(!is_valid_pattern("bookings.*"));
        assert!(!is_valid_pattern("nothing"));
    }
}
