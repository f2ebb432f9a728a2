//! Reminders: the parties of an accepted scheduled booking are notified before it starts, once
//! per mark of `scheduling.reminder_minutes` (60 and 15 minutes by default). Only the nearest
//! mark due is sent, so a booking accepted ten minutes ahead gets the 15-minute reminder and not
//! both at once. The dispatcher's scheduled sweep (every node, every few seconds) runs this and
//! sends the socket frames; the unique index `uq_notifications_one_reminder_each` makes each
//! reminder happen once however many nodes sweep.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::{kind, notify, Notice};
use crate::schedule::SchedulingSettings;

/// A reminder just written: whom to tell on their socket, and what.
#[derive(Debug, Clone)]
pub struct Reminder {
    pub user_id: i64,
    /// `{type: "booking.reminder", booking_id, scheduled_at, minutes_before, mark}`.
    pub payload: Value,
}

/// booking id, uuid, number, scheduled_at, customer, the therapist's user.
type Upcoming = (i64, Uuid, String, DateTime<Utc>, i64, i64);

/// Writes the reminders due now (notification rows and device pushes) and answers them.
pub async fn due(db: &PgPool, marks: &[i64]) -> anyhow::Result<Vec<Reminder>> {
    let Some(widest) = marks.iter().copied().max() else {
        return Ok(Vec::new());
    };
    let upcoming: Vec<Upcoming> = sqlx::query_as(
        "SELECT b.id, b.uuid, b.booking_number, b.scheduled_at, b.customer_id, p.user_id \
         FROM bookings b JOIN providers p ON p.id = b.provider_id \
         WHERE b.booking_type = 'scheduled' AND b.status IN ('accepted', 'en_route') \
           AND b.deleted_at IS NULL \
           AND b.scheduled_at > now() AND b.scheduled_at <= now() + make_interval(mins => $1::int)",
    )
    .bind(widest as i32)
    .fetch_all(db)
    .await?;
    let mut written = Vec::new();
    for (booking_id, uuid, number, at, customer, therapist) in upcoming {
        let left = at - Utc::now();
        let Some(mark) = marks
            .iter()
            .copied()
            .filter(|m| left <= chrono::Duration::minutes(*m))
            .min()
        else {
            continue;
        };
        let minutes_before = left.num_minutes().max(0);
        let payload = json!({
            "type": kind::REMINDER,
            "booking_id": uuid,
            "scheduled_at": at,
            "minutes_before": minutes_before,
            "mark": mark,
        });
        let mut tx = db.begin().await?;
        let mut told = Vec::new();
        for user_id in [customer, therapist] {
            let notice = Notice {
                user_id,
                kind: kind::REMINDER,
                title: "Booking reminder".into(),
                body: format!("Booking {number} starts in {minutes_before} minutes"),
                action_type: Some("open_booking"),
                action_data: payload.clone(),
                booking_id: Some(booking_id),
            };
            if notify(&mut tx, notice).await?.is_some() {
                told.push(Reminder {
                    user_id,
                    payload: payload.clone(),
                });
            }
        }
        tx.commit().await?;
        written.extend(told);
    }
    Ok(written)
}

/// Writes the reminders due now under the operator's settings; answers how many were written.
pub async fn sweep(db: &PgPool) -> anyhow::Result<usize> {
    let settings = SchedulingSettings::load(db).await;
    Ok(due(db, &settings.reminder_minutes).await?.len())
}
