//! Reschedules (`booking_reschedule_requests`): either side of an accepted scheduled booking
//! proposes a new time, the other approves or rejects it, and unanswered requests expire. On
//! approval the booking moves in one transaction, or nothing changes and the answer is 409
//! when the new time is taken (the exclusion constraint decides).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::lifecycle::BookingStatus;
use super::notify::frame;
use super::scheduled::{event, notice};
use super::store::{self, BookingFacts};
use super::{Caller, Dispatcher};
use crate::error::{exclusion_violation, unique_violation, ApiError, Context as _, FieldError};
use crate::schedule::slots::Session;
use crate::schedule::{self, SchedulingSettings};

/// A request as its answer locks it: id, requested_by, status, original and new times, expiry.
type LockedRequest = (
    i64,
    i64,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    DateTime<Utc>,
);

/// A reschedule request as both sides see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RescheduleView {
    pub id: Uuid,
    pub booking_id: Uuid,
    /// `pending`, `approved`, `rejected` or `expired`.
    #[schema(example = "pending")]
    pub status: String,
    /// `customer` or `therapist`.
    #[schema(example = "customer")]
    pub requested_by: String,
    pub original_scheduled_at: DateTime<Utc>,
    pub new_scheduled_at: DateTime<Utc>,
    pub reason: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: Option<DateTime<Utc>>,
    pub responded_at: Option<DateTime<Utc>>,
    pub response_notes: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    booking_id: Uuid,
    status: String,
    requested_by_customer: bool,
    original_scheduled_at: DateTime<Utc>,
    new_scheduled_at: DateTime<Utc>,
    reason: Option<String>,
    expires_at: DateTime<Utc>,
    created_at: Option<DateTime<Utc>>,
    responded_at: Option<DateTime<Utc>>,
    response_notes: Option<String>,
}

impl From<Row> for RescheduleView {
    fn from(r: Row) -> Self {
        Self {
            id: r.id,
            booking_id: r.booking_id,
            status: r.status,
            requested_by: if r.requested_by_customer {
                "customer"
            } else {
                "therapist"
            }
            .into(),
            original_scheduled_at: r.original_scheduled_at,
            new_scheduled_at: r.new_scheduled_at,
            reason: r.reason,
            expires_at: r.expires_at,
            created_at: r.created_at,
            responded_at: r.responded_at,
            response_notes: r.response_notes,
        }
    }
}

const VIEW_SQL: &str = "SELECT r.uuid AS id, b.uuid AS booking_id, r.status::text AS status, \
        r.requested_by = b.customer_id AS requested_by_customer, r.original_scheduled_at, \
        r.new_scheduled_at, r.reason, r.expires_at, r.created_at, r.responded_at, r.response_notes \
     FROM booking_reschedule_requests r JOIN bookings b ON b.id = r.booking_id";

async fn view(db: &mut PgConnection, request_id: i64) -> sqlx::Result<RescheduleView> {
    sqlx::query_as::<_, Row>(&format!("{VIEW_SQL} WHERE r.id = $1"))
        .bind(request_id)
        .fetch_one(db)
        .await
        .map(Into::into)
}

/// Checks a scheduled time against the lead time and the horizon (pure); each problem names
/// `field`.
pub fn check_time(
    field: &str,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
    settings: &SchedulingSettings,
) -> Result<(), ApiError> {
    if at <= now {
        return Err(ApiError::invalid(field, "must be in the future"));
    }
    if at < now + settings.lead {
        return Err(ApiError::invalid(
            field,
            format!(
                "must be at least {} minutes from now (the lead time)",
                settings.lead.num_minutes()
            ),
        ));
    }
    if at > now + settings.horizon {
        return Err(ApiError::invalid(
            field,
            format!(
                "must be within {} days (the booking horizon)",
                settings.horizon.num_days()
            ),
        ));
    }
    Ok(())
}

impl Dispatcher {
    fn side(booking: &BookingFacts, caller: Caller) -> Option<&'static str> {
        if booking.customer_id == caller.user_id {
            Some("customer")
        } else if caller.provider_id.is_some() && booking.provider_id == caller.provider_id {
            Some("therapist")
        } else {
            None
        }
    }

    /// The user on the other side of a booking from `user_id`.
    async fn other_side(&self, booking: &BookingFacts, user_id: i64) -> Option<i64> {
        if booking.customer_id == user_id {
            match booking.provider_user_id {
                Some(id) => Some(id),
                None => match booking.provider_id {
                    Some(p) => self.provider_user(p).await,
                    None => None,
                },
            }
        } else {
            Some(booking.customer_id)
        }
    }

    async fn tell_reschedule(&self, user_id: i64, request: &RescheduleView, title: &str) {
        let payload = json!({
            "type": event::RESCHEDULE,
            "booking_id": request.booking_id,
            "request_id": request.id,
            "status": request.status,
            "requested_by": request.requested_by,
            "original_scheduled_at": request.original_scheduled_at,
            "new_scheduled_at": request.new_scheduled_at,
            "expires_at": request.expires_at,
        });
        let body = format!(
            "Reschedule to {}: {}",
            request.new_scheduled_at.format("%Y-%m-%d %H:%M UTC"),
            request.status
        );
        if let Err(error) = notice(
            &self.inner.db,
            user_id,
            event::RESCHEDULE,
            title,
            &body,
            &payload,
        )
        .await
        {
            tracing::warn!(%error, "writing a reschedule notification failed");
        }
        self.inner.bus.to_user(user_id, frame(payload)).await;
    }

    /// Proposes a new time for an accepted scheduled booking (its customer or its therapist).
    pub async fn propose_reschedule(
        &self,
        booking_uuid: Uuid,
        caller: Caller,
        new_at: DateTime<Utc>,
        reason: Option<&str>,
    ) -> Result<RescheduleView, ApiError> {
        let booking = store::facts_by_uuid(&self.inner.db, booking_uuid)
            .await
            .context("loading the booking")?
            .ok_or_else(|| ApiError::not_found("booking"))?;
        let Some(_side) = Self::side(&booking, caller) else {
            return Err(ApiError::not_found("booking"));
        };
        let (Some(original), true) = (booking.scheduled_at, booking.is_scheduled()) else {
            return Err(ApiError::FieldConflict(FieldError::new(
                "booking_id",
                "only a scheduled booking can be rescheduled",
            )));
        };
        match booking.status {
            BookingStatus::Accepted => {}
            BookingStatus::Pending => {
                return Err(ApiError::FieldConflict(FieldError::new(
                    "booking_id",
                    "no therapist holds this booking yet: cancel it (free while pending) and book another time",
                )))
            }
            other => {
                return Err(ApiError::FieldConflict(FieldError::new(
                    "booking_id",
                    format!(
                        "the booking is {}: it has started or ended and can no longer be rescheduled",
                        other.as_str()
                    ),
                )))
            }
        }
        let settings = SchedulingSettings::load(&self.inner.db).await;
        let now = Utc::now();
        check_time("scheduled_at", new_at, now, &settings)?;
        if new_at == original {
            return Err(ApiError::invalid(
                "scheduled_at",
                "is the booking's current time",
            ));
        }
        let provider_id = booking
            .provider_id
            .ok_or_else(|| ApiError::not_found("booking"))?;
        let session = Session::minutes(
            i64::from(booking.duration_minutes.unwrap_or(60)),
            i64::from(booking.buffer_minutes),
        );
        let mut tx = self
            .inner
            .db
            .begin()
            .await
            .context("starting the reschedule")?;
        let fits = match schedule::store::schedule_of(&mut tx, provider_id)
            .await
            .context("reading the schedule")?
        {
            Some(weekly) => {
                let busy = session.busy_from(new_at);
                let calendar = schedule::store::calendar_of(
                    &mut tx,
                    provider_id,
                    busy.start,
                    busy.end,
                    Some(booking.id),
                )
                .await
                .context("reading the calendar")?;
                schedule::slots::fits(&weekly, &calendar, session, new_at)
            }
            None => false,
        };
        if !fits {
            return Err(ApiError::invalid(
                "scheduled_at",
                "is not a free slot of the therapist (see GET /v1/therapists/{provider_id}/slots)",
            ));
        }
        let expires_at = (now + settings.reschedule_timeout)
            .min(original.min(new_at) - settings.lead)
            .max(now);
        let inserted: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "INSERT INTO booking_reschedule_requests \
                 (booking_id, requested_by, original_scheduled_at, new_scheduled_at, reason, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(booking.id)
        .bind(caller.user_id)
        .bind(original)
        .bind(new_at)
        .bind(reason)
        .bind(expires_at)
        .fetch_one(&mut *tx)
        .await;
        let request_id = match inserted {
            Ok(id) => id,
            Err(error) if unique_violation(&error).is_some() => {
                return Err(ApiError::FieldConflict(FieldError::new(
                    "booking_id",
                    "a reschedule request of this booking is already waiting for an answer",
                )))
            }
            Err(error) => return Err(ApiError::from(error)),
        };
        let request = view(&mut tx, request_id)
            .await
            .context("loading the request")?;
        tx.commit().await.context("committing the request")?;
        metrics::counter!("hilot_reschedules_total", "outcome" => "proposed").increment(1);
        if let Some(other) = self.other_side(&booking, caller.user_id).await {
            self.tell_reschedule(other, &request, "Reschedule requested")
                .await;
        }
        Ok(request)
    }

    /// The booking's reschedule requests, oldest first (its customer, its therapist, admins).
    pub async fn reschedules(
        &self,
        booking_uuid: Uuid,
        caller: Caller,
    ) -> Result<Vec<RescheduleView>, ApiError> {
        let booking = self.visible_booking(booking_uuid, caller).await?;
        let rows: Vec<Row> =
            sqlx::query_as(&format!("{VIEW_SQL} WHERE r.booking_id = $1 ORDER BY r.id"))
                .bind(booking.id)
                .fetch_all(&self.inner.db)
                .await
                .context("listing reschedule requests")?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The other side approves (`approve`) or rejects a pending request. Approval moves the
    /// booking atomically; when the new time is taken meanwhile nothing changes and the answer
    /// is 409.
    pub async fn answer_reschedule(
        &self,
        booking_uuid: Uuid,
        request_uuid: Uuid,
        caller: Caller,
        approve: bool,
        notes: Option<&str>,
    ) -> Result<RescheduleView, ApiError> {
        let booking = store::facts_by_uuid(&self.inner.db, booking_uuid)
            .await
            .context("loading the booking")?
            .ok_or_else(|| ApiError::not_found("booking"))?;
        if Self::side(&booking, caller).is_none() {
            return Err(ApiError::not_found("booking"));
        }
        let mut tx = self.inner.db.begin().await.context("starting the answer")?;
        // The booking first, then the request: the same order as every booking change.
        let (status, scheduled_at): (BookingStatus, Option<DateTime<Utc>>) =
            sqlx::query_as("SELECT status, scheduled_at FROM bookings WHERE id = $1 FOR UPDATE")
                .bind(booking.id)
                .fetch_one(&mut *tx)
                .await
                .context("locking the booking")?;
        let request: Option<LockedRequest> = sqlx::query_as(
            "SELECT id, requested_by, status::text, original_scheduled_at, new_scheduled_at, expires_at \
             FROM booking_reschedule_requests WHERE uuid = $1 AND booking_id = $2 FOR UPDATE",
        )
        .bind(request_uuid)
        .bind(booking.id)
        .fetch_optional(&mut *tx)
        .await
        .context("locking the request")?;
        let Some((request_id, requested_by, request_status, original, new_at, expires_at)) =
            request
        else {
            return Err(ApiError::not_found("reschedule request"));
        };
        if requested_by == caller.user_id {
            return Err(ApiError::Forbidden(
                "the other side of the booking answers a reschedule request, not the one who made it".into(),
            ));
        }
        if request_status != "pending" || expires_at < Utc::now() {
            return Err(ApiError::Conflict(format!(
                "the request is no longer open ({})",
                if request_status == "pending" {
                    "expired"
                } else {
                    &request_status
                }
            )));
        }
        if approve {
            if status != BookingStatus::Accepted || scheduled_at != Some(original) {
                return Err(ApiError::Conflict(format!(
                    "the booking changed since the request was made (it is {})",
                    status.as_str()
                )));
            }
            store::set_actor(&mut tx, Some(caller.user_id), "Rescheduled")
                .await
                .context("marking the actor")?;
            let moved = sqlx::query(
                "UPDATE bookings SET scheduled_at = $2, due_notified_at = NULL WHERE id = $1 AND status = 'accepted'",
            )
            .bind(booking.id)
            .bind(new_at)
            .execute(&mut *tx)
            .await;
            match moved {
                Ok(_) => {}
                Err(error) if exclusion_violation(&error).is_some() => {
                    return Err(ApiError::Conflict(
                        "the new time is no longer free: the therapist has another booking then"
                            .into(),
                    ))
                }
                Err(error) => return Err(ApiError::from(error)),
            }
            sqlx::query(
                "INSERT INTO booking_timeline (booking_id, status, description, created_by, metadata) \
                 VALUES ($1, $2, $3, $4, jsonb_build_object('rescheduled_from', $5::timestamptz, 'rescheduled_to', $6::timestamptz))",
            )
            .bind(booking.id)
            .bind(status.as_str())
            .bind(format!(
                "Rescheduled from {} to {}",
                original.format("%Y-%m-%d %H:%M UTC"),
                new_at.format("%Y-%m-%d %H:%M UTC")
            ))
            .bind(caller.user_id)
            .bind(original)
            .bind(new_at)
            .execute(&mut *tx)
            .await
            .context("recording the reschedule")?;
            // No status change, so no money moves: only the event (webhooks) is queued.
            crate::effects::emit_booking_event(&mut tx, booking.id, "booking.rescheduled").await?;
        }
        sqlx::query(
            "UPDATE booking_reschedule_requests SET status = $2::reschedule_status, responded_by = $3, \
                 responded_at = now(), response_notes = $4 WHERE id = $1",
        )
        .bind(request_id)
        .bind(if approve { "approved" } else { "rejected" })
        .bind(caller.user_id)
        .bind(notes)
        .execute(&mut *tx)
        .await
        .context("answering the request")?;
        let answered = view(&mut tx, request_id)
            .await
            .context("loading the request")?;
        tx.commit().await.context("committing the answer")?;
        metrics::counter!("hilot_reschedules_total", "outcome" => if approve { "approved" } else { "rejected" })
            .increment(1);
        if approve {
            if let Some(provider_id) = booking.provider_id {
                self.inner.diary.changed(&self.inner.db, provider_id).await;
            }
        }
        self.tell_reschedule(
            requested_by,
            &answered,
            if approve {
                "Reschedule approved"
            } else {
                "Reschedule rejected"
            },
        )
        .await;
        Ok(answered)
    }

    /// Requests nobody answered in time expire; whoever made them is told.
    pub(super) async fn expire_reschedules(&self) -> anyhow::Result<()> {
        let expired: Vec<i64> = sqlx::query_scalar(
            "UPDATE booking_reschedule_requests SET status = 'expired', responded_at = now() \
             WHERE status = 'pending' AND expires_at < now() RETURNING id",
        )
        .fetch_all(&self.inner.db)
        .await?;
        for id in expired {
            let mut conn = self.inner.db.acquire().await?;
            let request = view(&mut conn, id).await?;
            let requested_by: i64 = sqlx::query_scalar(
                "SELECT requested_by FROM booking_reschedule_requests WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
            drop(conn);
            metrics::counter!("hilot_reschedules_total", "outcome" => "expired").increment(1);
            self.tell_reschedule(requested_by, &request, "Reschedule expired")
                .await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_must_respect_the_lead_and_the_horizon() {
        let settings = SchedulingSettings::default();
        let now = Utc::now();
        let field = |r: Result<(), ApiError>| match r {
            Err(ApiError::Validation { errors, .. }) => errors[0].field.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(check_time(
                "scheduled_at",
                now - chrono::Duration::minutes(1),
                now,
                &settings
            )),
            "scheduled_at"
        );
        assert!(check_time("x", now + chrono::Duration::minutes(30), now, &settings).is_err());
        assert!(check_time("x", now + chrono::Duration::days(31), now, &settings).is_err());
        assert!(check_time("x", now + chrono::Duration::hours(2), now, &settings).is_ok());
    }
}
