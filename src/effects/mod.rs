//! What a booking's status change sets off. Inside the database transaction that commits it
//! (dispatch calls [`on_booking_transition`] once at each point where a transition commits): the
//! money (settlement on completion, charges on acceptance, fees and refunds on cancellation) and
//! one `event` row in the outbox, so money moves exactly when the status does, or not at all.
//! After commit, the outbox worker fans the event out ([`EventCourier`]): the parties'
//! notifications (with their pushes) and the operators' webhooks, written in one transaction
//! with the event's completion, so each happens once. The transition's own transaction stays
//! short (one statement for a cash booking), whoever waits on its locks.

use futures_util::future::BoxFuture;
use serde_json::json;
use sqlx::{PgConnection, PgPool};

use crate::error::{ApiError, Context as _};
use crate::money::ledger::money_text;
use crate::money::settlement::{self, BookingMoney};
use crate::notifications::{kind, Notice};
use crate::outbox::{Courier, Failure, Job, Outcome};

/// Loads the booking's money facts and queues its event (`booking.<status>` unless named), in
/// one statement.
async fn load_and_queue(
    tx: &mut PgConnection,
    booking_id: i64,
    event: Option<&str>,
) -> Result<BookingMoney, ApiError> {
    sqlx::query_as(&format!(
        "WITH b AS ({} WHERE b.id = $1), queued AS ( \
             INSERT INTO outbox (channel, target, event_type, payload) \
             SELECT 'event', 'event:' || b.id, COALESCE($2, 'booking.' || b.status), \
                    jsonb_build_object('booking_id', b.id, 'status', b.status) FROM b \
         ) SELECT * FROM b",
        settlement::LOAD_SELECT
    ))
    .bind(booking_id)
    .bind(event)
    .fetch_one(&mut *tx)
    .await
    .context("loading the booking's effects")
}

/// Runs the consequences of the status the booking just moved to (read from the row, as the
/// caller's `UPDATE` left it in this transaction).
pub async fn on_booking_transition(tx: &mut PgConnection, booking_id: i64) -> Result<(), ApiError> {
    let f = load_and_queue(tx, booking_id, None).await?;
    match f.status.as_str() {
        "accepted" => settlement::on_accepted(tx, &f).await?,
        "completed" => settlement::on_completed(tx, &f).await?,
        "cancelled" | "no_show" => settlement::on_cancelled(tx, &f).await?,
        _ => {}
    }
    Ok(())
}

/// Queues `booking.created` for a booking just made (in its transaction).
pub async fn emit_booking_event(
    tx: &mut PgConnection,
    booking_id: i64,
    event: &str,
) -> Result<(), ApiError> {
    load_and_queue(tx, booking_id, Some(event))
        .await
        .map(|_| ())
}

/// The notices a booking event sends its parties.
fn notices(f: &BookingMoney, status: &str) -> Vec<Notice> {
    let booking_id = f.id;
    let therapist = f
        .therapist_name
        .clone()
        .unwrap_or_else(|| "Your therapist".into());
    let number = &f.booking_number;
    let to_customer = |kind, title: &str, body: String| Notice {
        user_id: f.customer_id,
        kind,
        title: title.to_owned(),
        body,
        action_type: Some("open_booking"),
        action_data: json!({"booking_id": f.uuid}),
        booking_id: Some(booking_id),
    };
    let mut notices = Vec::new();
    match status {
        "accepted" => notices.push(to_customer(
            kind::ACCEPTED,
            "Booking accepted",
            format!("{therapist} accepted booking {number}"),
        )),
        "en_route" => notices.push(to_customer(
            kind::EN_ROUTE,
            "On the way",
            format!("{therapist} is on the way"),
        )),
        "arrived" => notices.push(to_customer(
            kind::ARRIVED,
            "Arrived",
            format!("{therapist} has arrived"),
        )),
        "in_progress" => notices.push(to_customer(
            kind::IN_PROGRESS,
            "Session started",
            format!("Booking {number} has started"),
        )),
        "completed" => {
            notices.push(to_customer(
                kind::COMPLETED,
                "Session complete",
                format!(
                    "Booking {number} is complete (₱{}). How was it? Leave a review.",
                    money_text(f.total_amount)
                ),
            ));
            if let Some(user_id) = f.therapist_user_id {
                notices.push(Notice {
                    user_id,
                    kind: kind::COMPLETED,
                    title: "Booking complete".into(),
                    body: format!(
                        "You earned ₱{} for booking {number}",
                        money_text(f.provider_earnings)
                    ),
                    action_type: Some("open_booking"),
                    action_data: json!({"booking_id": f.uuid}),
                    booking_id: Some(booking_id),
                });
            }
        }
        "cancelled" | "no_show" => {
            let reason = f.cancellation_reason.clone().unwrap_or_default();
            let body = if f.cancellation_fee > rust_decimal::Decimal::ZERO {
                format!(
                    "Booking {number} was cancelled ({reason}); fee ₱{}",
                    money_text(f.cancellation_fee)
                )
            } else {
                format!("Booking {number} was cancelled ({reason})")
            };
            let kind = if status == "no_show" {
                kind::NO_SHOW
            } else {
                kind::CANCELLED
            };
            for user_id in std::iter::once(f.customer_id).chain(f.therapist_user_id) {
                if f.cancelled_by != Some(user_id) {
                    notices.push(Notice {
                        user_id,
                        kind,
                        title: "Booking cancelled".into(),
                        body: body.clone(),
                        action_type: Some("open_booking"),
                        action_data: json!({"booking_id": f.uuid}),
                        booking_id: Some(booking_id),
                    });
                }
            }
        }
        _ => {}
    }
    notices
}

/// The booking's data in operator webhooks, for the booking whose id is `id` (an SQL expression).
fn booking_event_data(id: &str) -> String {
    format!(
        "SELECT jsonb_build_object('booking_id', b.uuid, 'booking_number', b.booking_number, \
            'status', b.status, 'provider_id', p.uuid, 'service_id', s.uuid, \
            'total_amount', to_char(b.total_amount, 'FM999999990.00'), 'currency', 'PHP', \
            'payment_method', b.payment_method, 'cancellation_reason', b.cancellation_reason, \
            'cancellation_fee', to_char(COALESCE(b.cancellation_fee, 0), 'FM999999990.00')) \
         FROM bookings b JOIN services s ON s.id = b.service_id LEFT JOIN providers p ON p.id = b.provider_id \
         WHERE b.id = {id}"
    )
}

/// Writes the events' notices (with a push per active device, as [`crate::notifications::notify`]
/// does) and queues their webhooks (`data.status` as of each event), for a whole batch in one
/// statement, in the events' order.
async fn announce(
    tx: &mut PgConnection,
    notices: &[(usize, i64, Notice)],
    events: &[(usize, i64, &str, &str)],
) -> sqlx::Result<()> {
    let notices: Vec<serde_json::Value> = notices
        .iter()
        .map(|(ord, booking_id, n)| {
            json!({"ord": ord, "booking_id": booking_id, "user_id": n.user_id, "type": n.kind,
                   "title": n.title, "body": n.body})
        })
        .collect();
    let events: Vec<serde_json::Value> = events
        .iter()
        .map(|(ord, booking_id, event, status)| {
            json!({"ord": ord, "booking_id": booking_id, "event_type": event, "status": status})
        })
        .collect();
    sqlx::query(&format!(
        "WITH notes AS ( \
             INSERT INTO notifications (user_id, type, title, body, action_type, action_data, booking_id) \
             SELECT n.user_id, n.type, n.title, n.body, 'open_booking', \
                    jsonb_build_object('booking_id', (SELECT uuid FROM bookings WHERE id = n.booking_id)), \
                    n.booking_id \
             FROM jsonb_to_recordset($1) \
                 AS n(ord BIGINT, booking_id BIGINT, user_id BIGINT, type TEXT, title TEXT, body TEXT) \
             ORDER BY n.ord \
             ON CONFLICT DO NOTHING \
             RETURNING uuid, user_id, type, title, body, action_type, action_data \
         ), pushes AS ( \
             INSERT INTO outbox (channel, target, event_type, payload) \
             SELECT 'push', 'push:' || d.id, n.type, jsonb_build_object( \
                 'device_token_id', d.id, 'token', d.token, 'device_type', d.device_type::text, \
                 'notification_id', n.uuid, 'type', n.type, 'title', n.title, 'body', n.body, \
                 'action_type', n.action_type, 'action_data', n.action_data) \
             FROM notes n JOIN device_tokens d ON d.user_id = n.user_id AND d.is_active IS NOT FALSE \
         ), hooks AS ( \
             INSERT INTO outbox (channel, target, endpoint_id, event_type, payload) \
             SELECT 'webhook', 'webhook:' || e.id, e.id, ev.event_type, \
                    jsonb_build_object('type', ev.event_type, 'timestamp', now(), \
                        'data', ({}) || jsonb_build_object('status', ev.status)) \
             FROM jsonb_to_recordset($2) AS ev(ord BIGINT, booking_id BIGINT, event_type TEXT, status TEXT) \
             JOIN webhook_endpoints e ON {} \
             ORDER BY ev.ord, e.id \
         ) SELECT count(*) FROM notes",
        booking_event_data("ev.booking_id"),
        crate::webhooks::subscribed_to("ev.event_type")
    ))
    .bind(serde_json::Value::Array(notices))
    .bind(serde_json::Value::Array(events))
    .execute(&mut *tx)
    .await
    .map(|_| ())
}

/// Booking events one fan-out transaction takes: at 100 bookings a second (six events each) one
/// transaction per event was five round trips and a commit apiece, and the queue fell behind.
pub const EVENT_BATCH: usize = 32;
/// Such transactions a node's outbox worker runs at a time, so a burst of transitions never
/// competes with requests for the database.
pub const EVENT_ATTEMPTS_IN_FLIGHT: usize = 2;

/// The outbox courier of booking events: writes the events' notices and webhooks and marks them
/// delivered, in one transaction for a batch (so a retry after a crash does not repeat them).
pub struct EventCourier {
    pub db: PgPool,
}

/// What a booking event asks: its booking and the status it announces.
fn event_of(job: &Job) -> Result<(i64, String), Failure> {
    let booking_id = job
        .payload
        .get("booking_id")
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(|| Failure::permanent("an event without its booking", None))?;
    let status = job
        .payload
        .get("status")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok((booking_id, status))
}

/// Writes the claimed events' notices and webhooks in the transaction: their bookings read in
/// one query and everything written in one statement, however many events the batch holds.
async fn fan_out(tx: &mut PgConnection, events: &[(&Job, i64, String)]) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut booking_ids: Vec<i64> = events
        .iter()
        .map(|(_, booking_id, _)| *booking_id)
        .collect();
    booking_ids.sort_unstable();
    booking_ids.dedup();
    let loaded: std::collections::HashMap<i64, BookingMoney> =
        settlement::load_many(&mut *tx, &booking_ids)
            .await?
            .into_iter()
            .map(|f| (f.id, f))
            .collect();
    let mut all_notices = Vec::new();
    let mut announced = Vec::with_capacity(events.len());
    for (ord, (job, booking_id, status)) in events.iter().enumerate() {
        // As one event's own read would: a booking that is gone fails the batch (and then
        // this event alone).
        let f = loaded.get(booking_id).ok_or(sqlx::Error::RowNotFound)?;
        // A booking just made, or moved to another time (the reschedule answer told both
        // parties already), notifies nobody here; its webhooks still go out.
        if !matches!(
            job.event_type.as_str(),
            "booking.created" | "booking.rescheduled"
        ) {
            all_notices.extend(
                notices(f, status)
                    .into_iter()
                    .map(|n| (ord, *booking_id, n)),
            );
        }
        announced.push((ord, *booking_id, job.event_type.as_str(), status.as_str()));
    }
    announce(&mut *tx, &all_notices, &announced).await
}

impl EventCourier {
    /// Fans out the events in one transaction: those still pending are marked delivered and
    /// their notices and webhooks written (another worker did the rest).
    async fn fan_out_together(&self, events: &[(&Job, i64, String)]) -> sqlx::Result<()> {
        let mut tx = self.db.begin().await?;
        let ids: Vec<i64> = events.iter().map(|(job, _, _)| job.id).collect();
        let claimed: Vec<i64> = sqlx::query_scalar(
            "UPDATE outbox SET status = 'delivered', delivered_at = now(), updated_at = now() \
             WHERE id = ANY($1) AND status = 'pending' RETURNING id",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let claimed: Vec<(&Job, i64, String)> = events
            .iter()
            .filter(|(job, _, _)| claimed.contains(&job.id))
            .cloned()
            .collect();
        fan_out(&mut tx, &claimed).await?;
        tx.commit().await
    }
}

impl Courier for EventCourier {
    fn deliver<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let (booking_id, status) = event_of(job)?;
            self.fan_out_together(&[(job, booking_id, status)])
                .await
                .map(|()| None)
                .map_err(|e| Failure::retry(format!("fanning out the event: {e}"), None))
        })
    }

    fn batch_size(&self) -> usize {
        EVENT_BATCH
    }

    /// One transaction for the batch; if it fails, each event is tried on its own, so one
    /// that cannot be fanned out holds up no other.
    fn deliver_batch<'a>(&'a self, jobs: &'a [Job]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let events: Vec<(&Job, i64, String)> = jobs
                .iter()
                .filter_map(|job| event_of(job).ok().map(|(b, s)| (job, b, s)))
                .collect();
            if events.len() == jobs.len() && self.fan_out_together(&events).await.is_ok() {
                return jobs.iter().map(|_| Ok(None)).collect();
            }
            crate::outbox::deliver_each(self, jobs).await
        })
    }

    fn max_attempts_in_flight(&self) -> usize {
        EVENT_ATTEMPTS_IN_FLIGHT
    }

    fn records_delivery(&self) -> bool {
        true
    }
}
