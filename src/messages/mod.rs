//! In-booking chat: the customer and the assigned therapist write to each other from acceptance
//! until `messaging.open_after_completion_minutes` after completion. Nobody else reads a word
//! (anyone else gets 404, as for a booking that does not exist). Bodies are limited in length
//! and each sender in rate (`messaging` app setting). Delivery to sockets is the caller's: the
//! answer says who receives the `message` frame.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, Context as _, FieldError};
use crate::notifications::{self, kind, Notice};

/// Which side wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Customer,
    Therapist,
    /// A dispatcher writing to the parties from the console.
    Dispatcher,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatMessage {
    pub id: Uuid,
    pub booking_id: Uuid,
    pub from: Side,
    pub body: String,
    pub at: DateTime<Utc>,
    /// When the other party read it (read receipt).
    pub read_at: Option<DateTime<Utc>>,
    /// Whom a dispatcher's message was written to (absent on the parties' own messages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Side>,
}

impl ChatMessage {
    /// The `message` socket frame.
    pub fn frame(&self) -> String {
        let mut frame = json!({"type": "message", "booking_id": self.booking_id, "id": self.id,
                               "from": self.from, "body": self.body, "at": self.at});
        if let Some(to) = self.to {
            frame["to"] = json!(to);
        }
        frame.to_string()
    }
}

/// The two parties of a booking's chat.
#[derive(Debug, Clone, Copy)]
pub struct Parties {
    pub booking_id: i64,
    pub booking_uuid: Uuid,
    pub customer: i64,
    pub therapist: Option<i64>,
}

impl Parties {
    pub fn users(&self) -> impl Iterator<Item = i64> {
        std::iter::once(self.customer).chain(self.therapist)
    }
}

#[derive(sqlx::FromRow)]
struct ChatBooking {
    id: i64,
    uuid: Uuid,
    booking_number: String,
    status: String,
    customer_id: i64,
    therapist: Option<i64>,
    completed_at: Option<DateTime<Utc>>,
}

/// The booking if `user_id` is one of its two parties, else 404. A suspended or rejected
/// therapist (or store) is no longer a party.
async fn chat_booking(db: &PgPool, booking: Uuid, user_id: i64) -> Result<ChatBooking, ApiError> {
    let b: Option<ChatBooking> = sqlx::query_as(
        "SELECT b.id, b.uuid, b.booking_number, b.status::text AS status, b.customer_id, p.user_id AS therapist, \
                b.completed_at \
         FROM bookings b LEFT JOIN providers p ON p.id = b.provider_id \
           AND COALESCE(p.is_active, true) AND p.verification_status <> 'rejected' \
         WHERE b.uuid = $1 AND b.deleted_at IS NULL",
    )
    .bind(booking)
    .fetch_optional(db)
    .await
    .context("loading the booking")?;
    b.filter(|b| b.customer_id == user_id || b.therapist == Some(user_id))
        .ok_or_else(|| ApiError::not_found("booking"))
}

fn side_of(b: &ChatBooking, user_id: i64) -> Side {
    if b.customer_id == user_id {
        Side::Customer
    } else {
        Side::Therapist
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    uuid: Uuid,
    sender_id: i64,
    from_dispatcher: bool,
    message: String,
    created_at: DateTime<Utc>,
    read_at: Option<DateTime<Utc>>,
}

/// Saves one message (a party's, or a dispatcher's to one party).
async fn insert(
    tx: &mut sqlx::PgConnection,
    booking_id: i64,
    sender: i64,
    receiver: i64,
    text: &str,
    from_dispatcher: bool,
) -> Result<Row, ApiError> {
    sqlx::query_as(
        "INSERT INTO messages (booking_id, sender_id, receiver_id, message, from_dispatcher) \
         VALUES ($1, $2, $3, $4, $5) \
         RETURNING uuid, sender_id, from_dispatcher, message, created_at, read_at",
    )
    .bind(booking_id)
    .bind(sender)
    .bind(receiver)
    .bind(text)
    .bind(from_dispatcher)
    .fetch_one(tx)
    .await
    .context("saving the message")
}

fn view(b: &ChatBooking, row: Row, viewer: i64) -> ChatMessage {
    ChatMessage {
        id: row.uuid,
        booking_id: b.uuid,
        from: if row.from_dispatcher {
            Side::Dispatcher
        } else {
            side_of(b, row.sender_id)
        },
        body: row.message,
        at: row.created_at,
        read_at: row.read_at,
        to: row.from_dispatcher.then(|| side_of(b, viewer)),
    }
}

/// Sends a message; answers it and the parties whose sockets get the frame.
pub async fn post(
    db: &PgPool,
    booking: Uuid,
    sender: i64,
    body: &str,
) -> Result<(ChatMessage, Parties), ApiError> {
    let b = chat_booking(db, booking, sender).await?;
    let limits = crate::db::app_settings::messaging(db)
        .await
        .context("reading the chat limits")?;
    let text = checked_body(body, &limits)?;
    let open = match b.status.as_str() {
        "accepted" | "en_route" | "arrived" | "in_progress" => true,
        "completed" => b.completed_at.is_some_and(|at| {
            Utc::now() <= at + chrono::Duration::minutes(limits.open_after_completion_minutes)
        }),
        _ => false,
    };
    if !open {
        return Err(ApiError::Conflict(match b.status.as_str() {
            "pending" => "the chat opens when a therapist accepts the booking".into(),
            "completed" => format!(
                "the chat closed {} minutes after completion",
                limits.open_after_completion_minutes
            ),
            other => format!("the chat is closed: the booking is {other}"),
        }));
    }
    let receiver = if b.customer_id == sender {
        b.therapist
    } else {
        Some(b.customer_id)
    }
    .ok_or_else(|| ApiError::Conflict("the booking has no therapist yet".into()))?;
    let mut tx = db.begin().await.context("starting the message")?;
    // One sender's messages are counted under a lock on their user row, so a burst of parallel
    // sends cannot all pass the limit.
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
        .bind(sender)
        .execute(&mut *tx)
        .await
        .context("locking the sender")?;
    let (recent, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT count(*), min(created_at) FROM messages WHERE sender_id = $1 AND created_at > now() - interval '1 minute'",
    )
    .bind(sender)
    .fetch_one(&mut *tx)
    .await
    .context("counting recent messages")?;
    if recent >= limits.per_minute {
        let retry = oldest.map_or(60, |at| 60 - (Utc::now() - at).num_seconds().clamp(0, 59));
        return Err(ApiError::TooManyRequests {
            retry_after_secs: retry as u64,
        });
    }
    let row = insert(&mut tx, b.id, sender, receiver, text, false).await?;
    let message = view(&b, row, sender);
    let preview: String = text.chars().take(100).collect();
    notifications::notify(
        &mut tx,
        Notice {
            user_id: receiver,
            kind: kind::MESSAGE,
            title: format!("New message about booking {}", b.booking_number),
            body: preview,
            action_type: Some("open_chat"),
            action_data: json!({"booking_id": b.uuid, "message_id": message.id}),
            booking_id: Some(b.id),
        },
    )
    .await
    .context("notifying the receiver")?;
    tx.commit().await.context("committing the message")?;
    metrics::counter!("hilot_messages_sent_total").increment(1);
    Ok((message, parties(&b)))
}

/// A message body trimmed, or 422: empty, longer than `messaging.max_length`, or holding
/// control characters other than newlines.
fn checked_body<'a>(
    body: &'a str,
    limits: &crate::db::app_settings::Messaging,
) -> Result<&'a str, ApiError> {
    let text = body.trim();
    let length = text.chars().count();
    if length == 0 {
        return Err(ApiError::invalid("body", "must not be empty"));
    }
    if length > limits.max_length {
        return Err(ApiError::invalid(
            "body",
            format!(
                "must be at most {} characters (messaging.max_length)",
                limits.max_length
            ),
        ));
    }
    if let Some(problem) = crate::domain::validate::unsafe_text(text) {
        return Err(ApiError::Validation {
            detail: format!("body: {problem}"),
            errors: vec![FieldError::new("body", problem)],
        });
    }
    Ok(text)
}

/// Whom a dispatcher writes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Recipients {
    Customer,
    Therapist,
    /// The customer, and the therapist if the booking has one.
    #[default]
    Both,
}

/// A dispatcher writes to a booking's parties, whatever its status (the chat's opening hours
/// are the parties'): one message per receiver, each notified, and the action audited in the
/// same transaction. Answers each message with the user whose sockets get it.
pub async fn post_from_dispatcher(
    db: &PgPool,
    booking: Uuid,
    dispatcher: i64,
    body: &str,
    to: Recipients,
    audit_context: &crate::audit::AuditContext,
) -> Result<Vec<(ChatMessage, i64)>, ApiError> {
    let b: ChatBooking = sqlx::query_as(
        "SELECT b.id, b.uuid, b.booking_number, b.status::text AS status, b.customer_id, p.user_id AS therapist, \
                b.completed_at \
         FROM bookings b LEFT JOIN providers p ON p.id = b.provider_id WHERE b.uuid = $1 AND b.deleted_at IS NULL",
    )
    .bind(booking)
    .fetch_optional(db)
    .await
    .context("loading the booking")?
    .ok_or_else(|| ApiError::not_found("booking"))?;
    let limits = crate::db::app_settings::messaging(db)
        .await
        .context("reading the chat limits")?;
    let text = checked_body(body, &limits)?;
    let receivers: Vec<i64> = match (to, b.therapist) {
        (Recipients::Customer, _) | (Recipients::Both, None) => vec![b.customer_id],
        (Recipients::Therapist, Some(therapist)) => vec![therapist],
        (Recipients::Both, Some(therapist)) => vec![b.customer_id, therapist],
        (Recipients::Therapist, None) => {
            return Err(ApiError::Conflict(format!(
                "the booking has no therapist (it is {})",
                b.status
            )))
        }
    };
    let mut tx = db.begin().await.context("starting the message")?;
    let mut sent = Vec::with_capacity(receivers.len());
    for receiver in receivers {
        let row = insert(&mut tx, b.id, dispatcher, receiver, text, true).await?;
        let message = view(&b, row, receiver);
        notifications::notify(
            &mut tx,
            Notice {
                user_id: receiver,
                kind: kind::MESSAGE,
                title: format!("Hilot dispatch about booking {}", b.booking_number),
                body: text.chars().take(100).collect(),
                action_type: Some("open_chat"),
                action_data: json!({"booking_id": b.uuid, "message_id": message.id}),
                booking_id: Some(b.id),
            },
        )
        .await
        .context("notifying the receiver")?;
        sent.push((message, receiver));
    }
    crate::audit::record(
        &mut *tx,
        audit_context,
        "booking.messaged",
        "booking",
        b.id,
        json!({}),
        json!({"to": sent.iter().map(|(m, _)| m.to).collect::<Vec<_>>(), "body": text}),
    )
    .await
    .context("auditing the message")?;
    tx.commit().await.context("committing the message")?;
    metrics::counter!("hilot_messages_sent_total").increment(sent.len() as u64);
    Ok(sent)
}

fn parties(b: &ChatBooking) -> Parties {
    Parties {
        booking_id: b.id,
        booking_uuid: b.uuid,
        customer: b.customer_id,
        therapist: b.therapist,
    }
}

/// The booking's messages, oldest first, for one of its parties.
pub async fn list(
    db: &PgPool,
    booking: Uuid,
    user_id: i64,
    limit: i64,
) -> Result<Vec<ChatMessage>, ApiError> {
    let b = chat_booking(db, booking, user_id).await?;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT * FROM (SELECT uuid, sender_id, from_dispatcher, message, created_at, read_at, id \
             FROM messages WHERE booking_id = $1 AND deleted_at IS NULL \
               AND (NOT from_dispatcher OR receiver_id = $3) \
             ORDER BY id DESC LIMIT $2) recent ORDER BY id",
    )
    .bind(b.id)
    .bind(limit)
    .bind(user_id)
    .fetch_all(db)
    .await
    .context("listing messages")?;
    Ok(rows.into_iter().map(|r| view(&b, r, user_id)).collect())
}

/// Read receipts: what marking the messages read did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReadReceipt {
    pub booking_id: Uuid,
    /// The messages just marked read.
    pub message_ids: Vec<Uuid>,
    pub read_at: DateTime<Utc>,
}

impl ReadReceipt {
    /// The `message.read` frame the sender gets.
    pub fn frame(&self, by: Side) -> String {
        json!({"type": "message.read", "booking_id": self.booking_id, "message_ids": self.message_ids,
               "by": by, "at": self.read_at})
        .to_string()
    }
}

/// Marks every message to `user_id` in the booking read; answers the receipt, the reader's
/// side and the parties.
pub async fn mark_read(
    db: &PgPool,
    booking: Uuid,
    user_id: i64,
) -> Result<(ReadReceipt, Side, Parties), ApiError> {
    let b = chat_booking(db, booking, user_id).await?;
    let now = Utc::now();
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE messages SET is_read = true, read_at = $3 WHERE booking_id = $1 AND receiver_id = $2 \
         AND is_read IS NOT TRUE RETURNING uuid",
    )
    .bind(b.id)
    .bind(user_id)
    .bind(now)
    .fetch_all(db)
    .await
    .context("marking messages read")?;
    Ok((
        ReadReceipt {
            booking_id: b.uuid,
            message_ids: ids,
            read_at: now,
        },
        side_of(&b, user_id),
        parties(&b),
    ))
}

#[derive(sqlx::FromRow)]
struct DispatcherRow {
    uuid: Uuid,
    booking_uuid: Uuid,
    from_customer: bool,
    from_dispatcher: bool,
    to_customer: bool,
    message: String,
    created_at: DateTime<Utc>,
    read_at: Option<DateTime<Utc>>,
}

/// Every message of a booking, oldest first (the latest `limit`), as a dispatcher reads them:
/// the dispatcher is neither party, so nothing is marked read.
pub async fn for_dispatcher(
    db: &mut sqlx::PgConnection,
    booking_id: i64,
    limit: i64,
) -> sqlx::Result<Vec<ChatMessage>> {
    let rows: Vec<DispatcherRow> = sqlx::query_as(include_str!(
        "../../sql/booking_messages_for_dispatcher.sql"
    ))
    .bind(booking_id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| ChatMessage {
            id: row.uuid,
            booking_id: row.booking_uuid,
            from: if row.from_dispatcher {
                Side::Dispatcher
            } else if row.from_customer {
                Side::Customer
            } else {
                Side::Therapist
            },
            body: row.message,
            at: row.created_at,
            read_at: row.read_at,
            to: row.from_dispatcher.then_some(if row.to_customer {
                Side::Customer
            } else {
                Side::Therapist
            }),
        })
        .collect())
}
