//! Reviews: after completion, within `review_window_days`, the customer reviews the therapist and
//! the therapist the customer, once each. The rating trigger (the seed's, fixed) keeps the
//! therapist's `average_rating` and `total_reviews` current, counting only visible reviews;
//! admins hide or flag reviews.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{PgExecutor, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{unique_violation, ApiError, Context as _};

/// A review to write.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewReview {
    /// 1 to 5.
    pub overall_rating: i32,
    pub comment: Option<String>,
    pub professionalism_rating: Option<i32>,
    pub communication_rating: Option<i32>,
    pub timeliness_rating: Option<i32>,
    pub quality_rating: Option<i32>,
    /// Short labels (`"On-time"`), at most 10.
    pub tags: Option<Vec<String>>,
}

/// Longest comment, in characters.
pub const MAX_COMMENT: usize = 2_000;
pub const MAX_TAGS: usize = 10;
pub const MAX_TAG: usize = 40;

impl NewReview {
    pub fn check(&self) -> Result<(), ApiError> {
        let mut errors = Vec::new();
        for (field, value) in [
            ("overall_rating", Some(self.overall_rating)),
            ("professionalism_rating", self.professionalism_rating),
            ("communication_rating", self.communication_rating),
            ("timeliness_rating", self.timeliness_rating),
            ("quality_rating", self.quality_rating),
        ] {
            if value.is_some_and(|v| !(1..=5).contains(&v)) {
                errors.push(crate::error::FieldError::new(field, "must be from 1 to 5"));
            }
        }
        if let Some(comment) = &self.comment {
            crate::domain::validate::check_text(&mut errors, "comment", comment, 0, MAX_COMMENT);
        }
        if let Some(tags) = &self.tags {
            if tags.len() > MAX_TAGS {
                errors.push(crate::error::FieldError::new(
                    "tags",
                    format!("at most {MAX_TAGS} tags"),
                ));
            }
            for tag in tags {
                crate::domain::validate::check_text(&mut errors, "tags", tag, 1, MAX_TAG);
            }
        }
        ApiError::check(errors)
    }
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ReviewView {
    pub id: Uuid,
    pub booking_id: Uuid,
    /// `customer` (reviewing the therapist) or `provider` (reviewing the customer).
    pub reviewer_type: String,
    pub reviewer_first_name: Option<String>,
    pub overall_rating: i32,
    pub professionalism_rating: Option<i32>,
    pub communication_rating: Option<i32>,
    pub timeliness_rating: Option<i32>,
    pub quality_rating: Option<i32>,
    pub comment: Option<String>,
    #[schema(value_type = Option<Vec<String>>)]
    pub tags: Option<Value>,
    pub is_visible: bool,
    pub is_flagged: bool,
    pub flagged_reason: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

const VIEW_SQL: &str = "SELECT r.uuid AS id, b.uuid AS booking_id, r.reviewer_type::text AS reviewer_type, \
        ru.first_name AS reviewer_first_name, r.overall_rating, r.professionalism_rating, r.communication_rating, \
        r.timeliness_rating, r.quality_rating, r.comment, r.tags, COALESCE(r.is_visible, true) AS is_visible, \
        COALESCE(r.is_flagged, false) AS is_flagged, r.flagged_reason, r.created_at \
     FROM reviews r JOIN bookings b ON b.id = r.booking_id JOIN users ru ON ru.id = r.reviewer_id";

/// booking id, status, customer, provider, the provider's user, completed_at.
type ReviewTarget = (
    i64,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<DateTime<Utc>>,
);

/// Writes the caller's review of the other party. Answers the review and, for a customer's
/// review, the provider whose rating moved (to refresh the live index).
pub async fn create(
    db: &PgPool,
    booking: Uuid,
    reviewer_id: i64,
    review: &NewReview,
) -> Result<(ReviewView, Option<i64>), ApiError> {
    review.check()?;
    let row: Option<ReviewTarget> = sqlx::query_as(
        "SELECT b.id, b.status::text, b.customer_id, b.provider_id, p.user_id, b.completed_at \
         FROM bookings b LEFT JOIN providers p ON p.id = b.provider_id WHERE b.uuid = $1 AND b.deleted_at IS NULL",
    )
    .bind(booking)
    .fetch_optional(db)
    .await
    .context("loading the booking")?;
    let (booking_id, status, customer, provider, therapist, completed_at) =
        row.ok_or_else(|| ApiError::not_found("booking"))?;
    let (reviewer_type, reviewee) = if reviewer_id == customer {
        ("customer", therapist)
    } else if Some(reviewer_id) == therapist {
        ("provider", Some(customer))
    } else {
        return Err(ApiError::not_found("booking"));
    };
    let (Some(reviewee), Some(completed_at)) =
        (reviewee, completed_at.filter(|_| status == "completed"))
    else {
        return Err(ApiError::Conflict(format!(
            "a booking can be reviewed once it is completed; this one is {status}"
        )));
    };
    let window = crate::db::app_settings::review_window_days(db)
        .await
        .context("reading the review window")?;
    if Utc::now() > completed_at + chrono::Duration::days(window) {
        return Err(ApiError::Conflict(format!(
            "reviews close {window} days after completion (review_window_days)"
        )));
    }
    let mut tx = db.begin().await.context("starting the review")?;
    let inserted = sqlx::query(
        "INSERT INTO reviews (booking_id, reviewer_id, reviewee_id, reviewer_type, overall_rating, \
             professionalism_rating, communication_rating, timeliness_rating, quality_rating, comment, tags) \
         VALUES ($1, $2, $3, $4::reviewer_type, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(booking_id)
    .bind(reviewer_id)
    .bind(reviewee)
    .bind(reviewer_type)
    .bind(review.overall_rating)
    .bind(review.professionalism_rating)
    .bind(review.communication_rating)
    .bind(review.timeliness_rating)
    .bind(review.quality_rating)
    .bind(review.comment.as_deref().map(str::trim).filter(|c| !c.is_empty()))
    .bind(review.tags.as_ref().map(|t| json!(t)))
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        Err(e) if unique_violation(&e).is_some() => {
            return Err(ApiError::Conflict(
                "you already reviewed this booking".into(),
            ))
        }
        Err(e) => return Err(ApiError::from(e)),
    }
    let view: ReviewView = sqlx::query_as(&format!(
        "{VIEW_SQL} WHERE r.booking_id = $1 AND r.reviewer_id = $2"
    ))
    .bind(booking_id)
    .bind(reviewer_id)
    .fetch_one(&mut *tx)
    .await
    .context("loading the review")?;
    crate::webhooks::emit(
        &mut tx,
        "review.created",
        json!({"review_id": view.id, "booking_id": booking, "reviewer_type": reviewer_type,
               "overall_rating": review.overall_rating}),
    )
    .await
    .context("queueing the webhook")?;
    tx.commit().await.context("committing the review")?;
    Ok((view, provider.filter(|_| reviewer_type == "customer")))
}

/// The reviews of a booking (for its parties).
pub async fn of_booking(db: impl PgExecutor<'_>, booking_id: i64) -> sqlx::Result<Vec<ReviewView>> {
    sqlx::query_as(&format!(
        "{VIEW_SQL} WHERE r.booking_id = $1 AND r.deleted_at IS NULL ORDER BY r.id"
    ))
    .bind(booking_id)
    .fetch_all(db)
    .await
}

/// A therapist's visible reviews by customers, newest first.
pub async fn of_provider(
    db: impl PgExecutor<'_>,
    provider_id: i64,
    limit: i64,
) -> sqlx::Result<Vec<ReviewView>> {
    sqlx::query_as(&format!(
        "{VIEW_SQL} JOIN providers p ON p.user_id = r.reviewee_id AND p.id = $1 \
         WHERE r.reviewer_type = 'customer' AND COALESCE(r.is_visible, true) AND r.deleted_at IS NULL \
         ORDER BY r.created_at DESC, r.id DESC LIMIT $2"
    ))
    .bind(provider_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Reviews for moderation, newest first.
pub async fn for_moderation(
    db: impl PgExecutor<'_>,
    flagged: Option<bool>,
    visible: Option<bool>,
    limit: i64,
) -> sqlx::Result<Vec<ReviewView>> {
    sqlx::query_as(&format!(
        "{VIEW_SQL} WHERE r.deleted_at IS NULL AND ($1::bool IS NULL OR COALESCE(r.is_flagged, false) = $1) \
           AND ($2::bool IS NULL OR COALESCE(r.is_visible, true) = $2) ORDER BY r.id DESC LIMIT $3"
    ))
    .bind(flagged)
    .bind(visible)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Hides, shows, flags or unflags a review; the rating trigger moves the average. Answers the
/// review and the provider whose rating may have moved.
pub async fn moderate(
    db: &PgPool,
    review: Uuid,
    is_visible: Option<bool>,
    is_flagged: Option<bool>,
    flagged_reason: Option<&str>,
) -> Result<(ReviewView, Option<i64>), ApiError> {
    let mut tx = db.begin().await.context("starting the moderation")?;
    let row: Option<(i64, Option<i64>)> = sqlx::query_as(
        "UPDATE reviews r SET is_visible = COALESCE($2, r.is_visible), is_flagged = COALESCE($3, r.is_flagged), \
             flagged_reason = CASE WHEN $3 IS FALSE THEN NULL ELSE COALESCE($4, r.flagged_reason) END \
         FROM bookings b WHERE r.uuid = $1 AND b.id = r.booking_id \
         RETURNING r.id, CASE WHEN r.reviewer_type = 'customer' THEN b.provider_id END",
    )
    .bind(review)
    .bind(is_visible)
    .bind(is_flagged)
    .bind(flagged_reason)
    .fetch_optional(&mut *tx)
    .await
    .context("moderating the review")?;
    let (id, provider) = row.ok_or_else(|| ApiError::not_found("review"))?;
    let view = sqlx::query_as(&format!("{VIEW_SQL} WHERE r.id = $1"))
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .context("loading the review")?;
    tx.commit().await.context("committing the moderation")?;
    Ok((view, provider))
}
