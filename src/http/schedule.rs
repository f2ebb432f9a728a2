//! Scheduling: a therapist's weekly schedule and blocked times; slots of one therapist and
//! slots near a place.

use std::collections::BTreeMap;

use actix_web::{delete, get, post, put, web, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Caller;
use super::extract::{Json, Query};
use super::nearby::QuoteView;
use crate::accounts::Role;
use crate::domain::money::CURRENCY;
use crate::domain::validate::{check_lat_lng, check_text, optional_text};
use crate::error::{ApiError, Context as _, FieldError, Problem};
use crate::geo::Point;
use crate::providers;
use crate::schedule::diary::SlotsNearQuery;
use crate::schedule::slots::Session;
use crate::schedule::store::{self, BlockedTimeView};
use crate::schedule::weekly::{self, RangeBody, WeeklySchedule};
use crate::schedule::{slots, SchedulingSettings};
use crate::state::AppState;

/// The longest blocked time accepted at once.
pub const MAX_BLOCKED_DAYS: i64 = 366;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// IANA time zone of the ranges (default `Asia/Manila`).
    #[schema(example = "Asia/Manila")]
    pub timezone: Option<String>,
    /// Ranges of local time per weekday (`sunday` … `saturday`); a day left out has none.
    #[schema(value_type = Object, example = json!({"monday": [{"start": "09:00", "end": "12:00"}, {"start": "14:00", "end": "18:00"}]}))]
    pub weekly: BTreeMap<String, Vec<RangeBody>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    #[schema(example = "Asia/Manila")]
    pub timezone: String,
    /// Every weekday, each with its ranges (possibly none).
    #[schema(value_type = Object)]
    pub weekly: BTreeMap<String, Vec<RangeBody>>,
}

fn view_of(schedule: &WeeklySchedule) -> ScheduleView {
    let weekly = weekly::DAY_NAMES
        .iter()
        .enumerate()
        .map(|(day, name)| {
            (
                (*name).to_owned(),
                schedule.days[day]
                    .iter()
                    .map(|r| RangeBody {
                        start: weekly::DayRange::format(r.start),
                        end: weekly::DayRange::format(r.end),
                    })
                    .collect(),
            )
        })
        .collect();
    ScheduleView {
        timezone: schedule.tz.name().to_owned(),
        weekly,
    }
}

/// Set the caller's weekly schedule (replaces the whole week). Several ranges a day, in a time
/// zone; ranges of a day may not overlap. Bookings already made are kept.
#[utoipa::path(
    tag = "scheduling",
    security(("bearer" = [])),
    request_body = ScheduleRequest,
    responses(
        (status = 200, description = "The schedule now in force", body = ScheduleView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a therapist", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No therapist profile yet", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (each named: `timezone`, `weekly.monday[1].end`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/v1/therapist/schedule")]
pub async fn put_schedule(
    state: web::Data<AppState>,
    caller: Caller,
    Json(body): Json<ScheduleRequest>,
) -> Result<web::Json<ScheduleView>, ApiError> {
    caller.require(Role::Therapist)?;
    let settings = SchedulingSettings::load(&state.db).await;
    let schedule = weekly::validate(
        body.timezone.as_deref(),
        &body.weekly,
        settings.max_ranges_per_day,
    )
    .map_err(|errors| ApiError::check(errors).unwrap_err())?;
    let provider = providers::own_therapist(&state.db, caller.user_id()).await?;
    let mut tx = state.db.begin().await.context("starting the schedule")?;
    store::replace_schedule(&mut tx, provider.id, &schedule)
        .await
        .context("saving the schedule")?;
    tx.commit().await.context("saving the schedule")?;
    state.diary.changed(&state.db, provider.id).await;
    Ok(web::Json(view_of(&schedule)))
}

/// The caller's weekly schedule (an empty week in `Asia/Manila` before they set one).
#[utoipa::path(
    tag = "scheduling",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The schedule", body = ScheduleView),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a therapist", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No therapist profile yet", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/therapist/schedule")]
pub async fn get_schedule(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<web::Json<ScheduleView>, ApiError> {
    caller.require(Role::Therapist)?;
    let provider = providers::own_therapist(&state.db, caller.user_id()).await?;
    let mut conn = state.db.acquire().await.context("reading the schedule")?;
    let schedule = store::schedule_of(&mut conn, provider.id)
        .await
        .context("reading the schedule")?
        .unwrap_or_else(|| WeeklySchedule::empty(weekly::DEFAULT_TIMEZONE));
    Ok(web::Json(view_of(&schedule)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockedTimeRequest {
    pub starts_at: DateTime<Utc>,
    /// After `starts_at`, in the future, at most 366 days later.
    pub ends_at: DateTime<Utc>,
    /// Shown only to the therapist (`time off`, `lunch`).
    pub reason: Option<String>,
}

/// Block time off (no scheduled booking then, and no book-now job that runs into it). Bookings
/// already made are kept: cancel them if need be.
#[utoipa::path(
    tag = "scheduling",
    security(("bearer" = [])),
    request_body = BlockedTimeRequest,
    responses(
        (status = 201, description = "The blocked time", body = BlockedTimeView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a therapist", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No therapist profile yet", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (`ends_at` before `starts_at`, in the past, too long)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/therapist/blocked-times")]
pub async fn add_blocked_time(
    state: web::Data<AppState>,
    caller: Caller,
    Json(body): Json<BlockedTimeRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Therapist)?;
    let mut errors = Vec::new();
    if body.ends_at <= body.starts_at {
        errors.push(FieldError::new("ends_at", "must be after starts_at"));
    } else if body.ends_at - body.starts_at > chrono::Duration::days(MAX_BLOCKED_DAYS) {
        errors.push(FieldError::new(
            "ends_at",
            format!("must be at most {MAX_BLOCKED_DAYS} days after starts_at"),
        ));
    }
    if body.ends_at <= Utc::now() {
        errors.push(FieldError::new("ends_at", "must be in the future"));
    }
    if let Some(reason) = &body.reason {
        check_text(&mut errors, "reason", reason, 0, 255);
    }
    ApiError::check(errors)?;
    let provider = providers::own_therapist(&state.db, caller.user_id()).await?;
    let blocked = store::add_blocked(
        &state.db,
        provider.id,
        body.starts_at,
        body.ends_at,
        optional_text(&body.reason),
    )
    .await
    .context("saving the blocked time")?;
    state.diary.changed(&state.db, provider.id).await;
    Ok(HttpResponse::Created().json(blocked))
}

/// The caller's blocked times that have not ended, soonest first.
#[utoipa::path(
    tag = "scheduling",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Blocked times", body = [BlockedTimeView]),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a therapist", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No therapist profile yet", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/therapist/blocked-times")]
pub async fn list_blocked_times(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<web::Json<Vec<BlockedTimeView>>, ApiError> {
    caller.require(Role::Therapist)?;
    let provider = providers::own_therapist(&state.db, caller.user_id()).await?;
    store::list_blocked(&state.db, provider.id, Utc::now())
        .await
        .context("listing blocked times")
        .map(web::Json)
}

/// Remove one of the caller's blocked times.
#[utoipa::path(
    tag = "scheduling",
    security(("bearer" = [])),
    params(("blocked_time_id" = Uuid, Path, description = "The blocked time's id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a therapist", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such blocked time of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/therapist/blocked-times/{blocked_time_id}")]
pub async fn delete_blocked_time(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Therapist)?;
    let provider = providers::own_therapist(&state.db, caller.user_id()).await?;
    if !store::delete_blocked(&state.db, provider.id, path.into_inner())
        .await
        .context("removing the blocked time")?
    {
        return Err(ApiError::not_found("blocked time"));
    }
    state.diary.changed(&state.db, provider.id).await;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TherapistSlotsParams {
    /// A service id from `GET /v1/services`.
    pub service_id: Uuid,
    /// A date `YYYY-MM-DD` in the therapist's time zone.
    pub date: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Slot {
    pub start: DateTime<Utc>,
    /// `start` plus the service's duration.
    pub end: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TherapistSlots {
    /// The therapist's time zone, in which `date` is read.
    #[schema(example = "Asia/Manila")]
    pub timezone: String,
    pub date: NaiveDate,
    pub duration_minutes: i32,
    /// Start times, earliest first, on the slot step (default 15 minutes).
    pub slots: Vec<Slot>,
}

fn parse_date(value: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .filter(|d| value.len() == 10 && d.to_string() == value)
        .ok_or_else(|| ApiError::invalid("date", "must be a date YYYY-MM-DD"))
}

/// A date within the bookable range: from yesterday (any zone's today) to the horizon.
fn check_date(date: NaiveDate, settings: &SchedulingSettings) -> Result<(), ApiError> {
    let today = Utc::now().date_naive();
    let last = (Utc::now() + settings.horizon).date_naive();
    if date < today.pred_opt().unwrap_or(today) || date > last.succ_opt().unwrap_or(last) {
        return Err(ApiError::invalid(
            "date",
            format!(
                "must be between today and {} days ahead (the booking horizon)",
                settings.horizon.num_days()
            ),
        ));
    }
    Ok(())
}

/// When a therapist can start a service on a date: inside their schedule, clear of blocked
/// times and of their bookings (with the travel buffer before and after each), from the lead
/// time on and within the booking horizon.
#[utoipa::path(
    tag = "scheduling",
    security(("bearer" = [])),
    params(("provider_id" = Uuid, Path, description = "The therapist"), TherapistSlotsParams),
    responses(
        (status = 200, description = "The free start times", body = TherapistSlots),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such bookable therapist, or they do not offer the service at home (`service_id`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query (`date`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/therapists/{provider_id}/slots")]
pub async fn therapist_slots(
    state: web::Data<AppState>,
    _caller: Caller,
    path: web::Path<Uuid>,
    Query(params): Query<TherapistSlotsParams>,
) -> Result<web::Json<TherapistSlots>, ApiError> {
    let settings = SchedulingSettings::load(&state.db).await;
    let date = parse_date(&params.date)?;
    check_date(date, &settings)?;
    let service_id = state
        .catalog
        .service_id(&state.db, params.service_id)
        .await?
        .ok_or_else(|| ApiError::FieldNotFound(FieldError::new("service_id", "no such service")))?;
    let bookable = bookable_therapist(&state, path.into_inner(), service_id).await?;
    let duration = state
        .catalog
        .duration_minutes(&state.db, service_id)
        .await?;
    let session = Session::minutes(i64::from(duration), settings.travel_buffer_minutes);
    let now = Utc::now();
    let mut conn = state.db.acquire().await.context("reading the calendar")?;
    let schedule = store::schedule_of(&mut conn, bookable)
        .await
        .context("reading the schedule")?
        .unwrap_or_else(|| WeeklySchedule::empty(weekly::DEFAULT_TIMEZONE));
    let day_start = weekly::local_instant(schedule.tz, date, 0).unwrap_or(now);
    let day_end = weekly::local_instant(schedule.tz, date, weekly::MINUTES_PER_DAY).unwrap_or(now);
    let margin = chrono::Duration::hours(6);
    let calendar = store::calendar_of(
        &mut conn,
        bookable,
        day_start - margin,
        day_end + margin,
        None,
    )
    .await
    .context("reading the calendar")?;
    let starts = slots::for_day(
        &schedule,
        &calendar,
        session,
        date,
        settings.slot_step,
        now + settings.lead,
        now + settings.horizon,
    );
    Ok(web::Json(TherapistSlots {
        timezone: schedule.tz.name().to_owned(),
        date,
        duration_minutes: duration,
        slots: starts
            .into_iter()
            .map(|start| Slot {
                start,
                end: start + session.duration,
            })
            .collect(),
    }))
}

/// The internal id of a verified, active therapist who offers the service at home; 404 otherwise
/// (a therapist nobody may book is not revealed).
pub(super) async fn bookable_therapist(
    state: &AppState,
    provider_uuid: Uuid,
    service_id: i64,
) -> Result<i64, ApiError> {
    let row: Option<(i64, bool)> = sqlx::query_as(
        "SELECT p.id, EXISTS (SELECT 1 FROM provider_services ps WHERE ps.provider_id = p.id \
                AND ps.service_id = $2 AND ps.is_available IS NOT FALSE AND ps.home_service_enabled IS NOT FALSE) \
         FROM providers p JOIN therapists_eligible_now e ON e.provider_id = p.id WHERE p.uuid = $1",
    )
    .bind(provider_uuid)
    .bind(service_id)
    .fetch_optional(&state.db)
    .await
    .context("finding the therapist")?;
    match row {
        None => Err(ApiError::not_found("therapist")),
        Some((_, false)) => Err(ApiError::FieldNotFound(FieldError::new(
            "service_id",
            "this therapist does not offer this service at home",
        ))),
        Some((id, true)) => Ok(id),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SlotsNearParams {
    /// Customer latitude.
    pub lat: f64,
    /// Customer longitude.
    pub lng: f64,
    /// A service id from `GET /v1/services`.
    pub service_id: Uuid,
    /// A date `YYYY-MM-DD` in `timezone`.
    pub date: String,
    /// The zone `date` is read in (default `Asia/Manila`).
    pub timezone: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SlotNearView {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// How many therapists can come at this time.
    pub therapists: u32,
    /// The cheapest of their quotes (distance from each therapist's base).
    pub best_quote: QuoteView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SlotsNear {
    #[schema(example = "Asia/Manila")]
    pub timezone: String,
    pub date: NaiveDate,
    pub duration_minutes: i32,
    /// Start times, earliest first. Never any therapist's identity or position.
    pub slots: Vec<SlotNearView>,
}

/// Slots near a place: for each start time on the date, how many therapists who travel there
/// can come, with the best quote. Computed from memory, never stored.
#[utoipa::path(
    tag = "scheduling",
    security(("bearer" = [])),
    params(SlotsNearParams),
    responses(
        (status = 200, description = "Start times with the number of therapists and the best quote", body = SlotsNear),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many searches (shared with nearby's per-user limit)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown service (`service_id`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query (`lat`, `lng`, `date`, `timezone`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/slots")]
pub async fn slots_near(
    state: web::Data<AppState>,
    caller: Caller,
    Query(params): Query<SlotsNearParams>,
) -> Result<web::Json<SlotsNear>, ApiError> {
    // The count of therapists changes where the query crosses a therapist's travel radius, so
    // many queries would trace the circle around their base: the nearby search's per-user
    // bucket bounds both.
    if !caller.is_admin() {
        state.limits.nearby_per_user.check(&caller.user_id())?;
    }
    let mut errors = Vec::new();
    check_lat_lng(&mut errors, "lat", "lng", params.lat, params.lng);
    let tz = match params.timezone.as_deref() {
        None => weekly::DEFAULT_TIMEZONE,
        Some(name) => weekly::parse_timezone(name).unwrap_or_else(|| {
            errors.push(FieldError::new(
                "timezone",
                "must be an IANA time zone name such as Asia/Manila",
            ));
            weekly::DEFAULT_TIMEZONE
        }),
    };
    ApiError::check(errors)?;
    let settings = SchedulingSettings::load(&state.db).await;
    let date = parse_date(&params.date)?;
    check_date(date, &settings)?;
    let service_id = state
        .catalog
        .service_id(&state.db, params.service_id)
        .await?
        .ok_or_else(|| ApiError::FieldNotFound(FieldError::new("service_id", "no such service")))?;
    let duration = state
        .catalog
        .duration_minutes(&state.db, service_id)
        .await?;
    let max_radius_km = providers::service_radius_max_km(&state.db).await?;
    let now = Utc::now();
    let session = Session::minutes(i64::from(duration), settings.travel_buffer_minutes);
    let window = (
        weekly::local_instant(tz, date, 0).unwrap_or(now),
        weekly::local_instant(tz, date, weekly::MINUTES_PER_DAY).unwrap_or(now),
    );
    let found = state.diary.slots_near(&SlotsNearQuery {
        place: Point::new(params.lat, params.lng),
        service_id,
        session,
        window,
        earliest: now + settings.lead,
        latest: now + settings.horizon,
        step: settings.slot_step,
        max_radius_m: f64::from(max_radius_km) * 1000.0,
    });
    Ok(web::Json(SlotsNear {
        timezone: tz.name().to_owned(),
        date,
        duration_minutes: duration,
        slots: found
            .into_iter()
            .map(|s| SlotNearView {
                start: s.start,
                end: s.start + session.duration,
                therapists: s.therapists,
                best_quote: QuoteView {
                    service_price: s.best_quote.service_price,
                    distance_surcharge: s.best_quote.distance_surcharge,
                    total_amount: s.best_quote.total_amount,
                    currency: CURRENCY,
                },
            })
            .collect(),
    }))
}

/// Whether a therapist can take the session at `start`: `Ok(())`, a 422 naming `scheduled_at`
/// when it lies outside their schedule or in blocked time, or a 409 when another booking (with
/// its travel buffers) holds the time: two customers racing for one slot see the same 409
/// whether the loser is stopped here or by the exclusion constraint.
pub(super) async fn check_therapist_free(
    state: &AppState,
    provider_id: i64,
    session: Session,
    start: DateTime<Utc>,
    slot_step: chrono::Duration,
) -> Result<(), ApiError> {
    let mut conn = state.db.acquire().await.context("reading the calendar")?;
    let schedule = store::schedule_of(&mut conn, provider_id)
        .await
        .context("reading the schedule")?;
    let busy = session.busy_from(start);
    let calendar = store::calendar_of(&mut conn, provider_id, busy.start, busy.end, None)
        .await
        .context("reading the calendar")?;
    let open = slots::Calendar {
        blocked: calendar.blocked.clone(),
        commitments: Vec::new(),
    };
    match schedule {
        Some(schedule) if slots::fits(&schedule, &open, session, start) => {
            // A request is for one of the slots the therapist offers, not any minute inside
            // their hours (`GET .../slots` lists them).
            if !slots::on_grid(&schedule, &open, session, start, slot_step) {
                return Err(ApiError::invalid(
                    "scheduled_at",
                    format!(
                        "is not one of the therapist's slots: they start every {} minutes (see GET /v1/therapists/{{provider_id}}/slots)",
                        slot_step.num_minutes()
                    ),
                ));
            }
        }
        _ => {
            return Err(ApiError::invalid(
                "scheduled_at",
                "is outside the therapist's schedule or in their time off (see GET /v1/therapists/{provider_id}/slots)",
            ))
        }
    }
    if !slots::is_clear(&calendar, session, start) {
        return Err(ApiError::FieldConflict(FieldError::new(
            "scheduled_at",
            "the therapist is already booked then: choose another slot",
        )));
    }
    Ok(())
}
