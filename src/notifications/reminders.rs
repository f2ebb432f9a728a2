//! Reminders: the parties of an accepted scheduled booking are notified once, a set time
//! (`reminder_minutes_before`) before it starts. A sweep runs every minute on every node; the
//! unique index `uq_notifications_one_reminder` makes each reminder happen once.

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use tokio::sync::watch;

use super::{kind, notify, Notice};

/// How often the sweep looks for bookings to remind.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// booking id, uuid, number, scheduled_at, customer, the therapist's user.
type DueReminder = (
    i64,
    uuid::Uuid,
    String,
    chrono::DateTime<chrono::Utc>,
    i64,
    Option<i64>,
);

/// Sends the reminders due now; answers how many were written.
pub async fn sweep(db: &PgPool) -> anyhow::Result<usize> {
    let minutes = crate::db::app_settings::reminder_minutes_before(db).await?;
    let due: Vec<DueReminder> = sqlx::query_as(
        "SELECT b.id, b.uuid, b.booking_number, b.scheduled_at, b.customer_id, p.user_id \
         FROM bookings b LEFT JOIN providers p ON p.id = b.provider_id \
         WHERE b.booking_type = 'scheduled' AND b.status = 'accepted' AND b.deleted_at IS NULL \
           AND b.scheduled_at > now() AND b.scheduled_at <= now() + make_interval(mins => $1::int)",
    )
    .bind(minutes as i32)
    .fetch_all(db)
    .await?;
    let mut written = 0;
    for (booking_id, uuid, number, at, customer, therapist) in due {
        let mut tx = db.begin().await?;
        for user_id in std::iter::once(customer).chain(therapist) {
            let minutes_before = (at - chrono::Utc::now()).num_minutes().max(0);
            let notice = Notice {
                user_id,
                kind: kind::REMINDER,
                title: "Booking reminder".into(),
                body: format!("Booking {number} starts in {minutes_before} minutes"),
                action_type: Some("open_booking"),
                action_data: json!({"booking_id": uuid, "scheduled_at": at, "minutes_before": minutes_before}),
                booking_id: Some(booking_id),
            };
            if notify(&mut tx, notice).await?.is_some() {
                written += 1;
            }
        }
        tx.commit().await?;
    }
    Ok(written)
}

/// Runs the sweep every minute until shutdown.
pub async fn run(db: PgPool, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(error) = sweep(&db).await {
            tracing::warn!(error = format!("{error:#}"), "the reminder sweep failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
