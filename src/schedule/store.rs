//! The schedule tables (`practitioner_availability`, `practitioner_blocked_times`, and
//! `therapist_profiles.default_schedule` kept in step) and therapists' calendars read from
//! them and from their bookings.

use chrono::{DateTime, Utc};
use rustc_hash::FxHashMap;
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

use super::slots::{Calendar, Commitment, Interval};
use super::weekly::{self, DayRange, WeeklySchedule};
use crate::geo::load::statement_for;
use crate::geo::Point;

#[derive(sqlx::FromRow)]
struct RangeRow {
    provider_id: i64,
    day_of_week: i32,
    start_minute: i32,
    end_minute: i32,
    timezone: String,
}

#[derive(sqlx::FromRow)]
struct CommitmentRow {
    provider_id: i64,
    busy_from: DateTime<Utc>,
    busy_until: DateTime<Utc>,
    session_start: DateTime<Utc>,
    lat: Option<f64>,
    lng: Option<f64>,
}

#[derive(sqlx::FromRow)]
struct BlockedRow {
    provider_id: i64,
    start_datetime: DateTime<Utc>,
    end_datetime: DateTime<Utc>,
}

const RANGES_SQL: &str = "SELECT provider_id, day_of_week, \
        (EXTRACT(EPOCH FROM start_time) / 60)::int AS start_minute, \
        (EXTRACT(EPOCH FROM end_time) / 60)::int AS end_minute, timezone \
     FROM practitioner_availability \
     WHERE active IS NOT FALSE AND ($1::bigint IS NULL OR provider_id = $1) \
     ORDER BY provider_id, day_of_week, start_time";

const BLOCKED_SQL: &str = "SELECT provider_id, start_datetime, end_datetime \
     FROM practitioner_blocked_times \
     WHERE end_datetime > $1 AND start_datetime < $2 AND ($3::bigint IS NULL OR provider_id = $3) \
     ORDER BY provider_id, start_datetime";

// Each query that reads one therapist or everyone runs in the shape for its case (see
// `geo::load::statement_for`).
const COMMITMENTS_SQL: &str = include_str!("../../sql/schedule_commitments.sql");
const BASES_SQL: &str =
    "SELECT provider_id, base_location_latitude::float8, base_location_longitude::float8 \
     FROM therapist_profiles \
     WHERE base_location_latitude IS NOT NULL AND base_location_longitude IS NOT NULL \
       AND ($1::bigint IS NULL OR provider_id = $1)";

/// Schedules from their rows; a therapist whose rows are all gone keeps none.
fn schedules_from(rows: Vec<RangeRow>) -> FxHashMap<i64, WeeklySchedule> {
    let mut out: FxHashMap<i64, WeeklySchedule> = FxHashMap::default();
    for row in rows {
        let tz = weekly::parse_timezone(&row.timezone).unwrap_or(weekly::DEFAULT_TIMEZONE);
        let schedule = out
            .entry(row.provider_id)
            .or_insert_with(|| WeeklySchedule::empty(tz));
        if let (Ok(day), Ok(start), Ok(end)) = (
            usize::try_from(row.day_of_week),
            u16::try_from(row.start_minute),
            u16::try_from(row.end_minute),
        ) {
            if day < 7 && start < end {
                schedule.days[day].push(DayRange { start, end });
            }
        }
    }
    out
}

/// One therapist's weekly schedule (`None` when they never set one). The zone of an emptied
/// schedule is kept in `default_schedule`.
pub async fn schedule_of(
    db: &mut PgConnection,
    provider_id: i64,
) -> sqlx::Result<Option<WeeklySchedule>> {
    let rows: Vec<RangeRow> = sqlx::query_as(&statement_for(RANGES_SQL, "$1", Some(provider_id)))
        .bind(Some(provider_id))
        .fetch_all(&mut *db)
        .await?;
    if let Some(schedule) = schedules_from(rows).remove(&provider_id) {
        return Ok(Some(schedule));
    }
    let zone: Option<Option<String>> = sqlx::query_scalar(
        "SELECT default_schedule->>'timezone' FROM therapist_profiles WHERE provider_id = $1",
    )
    .bind(provider_id)
    .fetch_optional(&mut *db)
    .await?;
    Ok(zone.flatten().map(|name| {
        WeeklySchedule::empty(weekly::parse_timezone(&name).unwrap_or(weekly::DEFAULT_TIMEZONE))
    }))
}

/// Replaces a therapist's weekly schedule and `default_schedule` in the caller's transaction.
pub async fn replace_schedule(
    tx: &mut PgConnection,
    provider_id: i64,
    schedule: &WeeklySchedule,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM practitioner_availability WHERE provider_id = $1")
        .bind(provider_id)
        .execute(&mut *tx)
        .await?;
    let mut days = Vec::new();
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    for (day, ranges) in schedule.days.iter().enumerate() {
        for range in ranges {
            days.push(day as i32);
            starts.push(DayRange::format(range.start));
            ends.push(DayRange::format(range.end));
        }
    }
    sqlx::query(
        "INSERT INTO practitioner_availability (provider_id, day_of_week, start_time, end_time, timezone) \
         SELECT $1, d, s::time, e::time, $5 FROM UNNEST($2::int[], $3::text[], $4::text[]) AS r(d, s, e)",
    )
    .bind(provider_id)
    .bind(&days)
    .bind(&starts)
    .bind(&ends)
    .bind(schedule.tz.name())
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE therapist_profiles SET default_schedule = $2 WHERE provider_id = $1")
        .bind(provider_id)
        .bind(weekly::to_json(schedule))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

fn commitment(row: &CommitmentRow) -> Commitment {
    Commitment {
        busy: Interval::new(row.busy_from, row.busy_until),
        session_start: row.session_start,
        place: row.lat.zip(row.lng).map(|(lat, lng)| Point::new(lat, lng)),
    }
}

async fn commitments(
    db: impl PgExecutor<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    only: Option<i64>,
    except_booking: Option<i64>,
) -> sqlx::Result<Vec<CommitmentRow>> {
    sqlx::query_as(&statement_for(COMMITMENTS_SQL, "$3", only))
        .bind(from)
        .bind(to)
        .bind(only)
        .bind(except_booking)
        .fetch_all(db)
        .await
}

async fn blocked(
    db: impl PgExecutor<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    only: Option<i64>,
) -> sqlx::Result<Vec<BlockedRow>> {
    sqlx::query_as(&statement_for(BLOCKED_SQL, "$3", only))
        .bind(from)
        .bind(to)
        .bind(only)
        .fetch_all(db)
        .await
}

/// One therapist's calendar between `from` and `to`, leaving out `except_booking` (a booking
/// being moved does not stand in its own way).
pub async fn calendar_of(
    db: &mut PgConnection,
    provider_id: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    except_booking: Option<i64>,
) -> sqlx::Result<Calendar> {
    let commitments = commitments(&mut *db, from, to, Some(provider_id), except_booking).await?;
    let blocked = blocked(&mut *db, from, to, Some(provider_id)).await?;
    Ok(Calendar {
        blocked: blocked
            .iter()
            .map(|b| Interval::new(b.start_datetime, b.end_datetime))
            .collect(),
        commitments: commitments.iter().map(commitment).collect(),
    })
}

/// Every therapist's schedule and calendar between `from` and `to` (`only`: one therapist).
pub async fn calendars(
    db: &sqlx::PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    only: Option<i64>,
) -> sqlx::Result<(FxHashMap<i64, WeeklySchedule>, FxHashMap<i64, Calendar>)> {
    let ranges: Vec<RangeRow> = sqlx::query_as(&statement_for(RANGES_SQL, "$1", only))
        .bind(only)
        .fetch_all(db)
        .await?;
    let mut calendars: FxHashMap<i64, Calendar> = FxHashMap::default();
    for row in blocked(db, from, to, only).await? {
        calendars
            .entry(row.provider_id)
            .or_default()
            .blocked
            .push(Interval::new(row.start_datetime, row.end_datetime));
    }
    for row in commitments(db, from, to, only, None).await? {
        calendars
            .entry(row.provider_id)
            .or_default()
            .commitments
            .push(commitment(&row));
    }
    Ok((schedules_from(ranges), calendars))
}

/// Therapists' base locations (where scheduled work is priced and reached from).
pub async fn bases(db: &sqlx::PgPool, only: Option<i64>) -> sqlx::Result<FxHashMap<i64, Point>> {
    let rows: Vec<(i64, f64, f64)> = sqlx::query_as(&statement_for(BASES_SQL, "$1", only))
        .bind(only)
        .fetch_all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, lat, lng)| (id, Point::new(lat, lng)))
        .collect())
}

/// A blocked time as its therapist sees it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct BlockedTimeView {
    pub id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub reason: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

const BLOCKED_VIEW: &str =
    "uuid AS id, start_datetime AS starts_at, end_datetime AS ends_at, reason, created_at";

pub async fn add_blocked(
    db: impl PgExecutor<'_>,
    provider_id: i64,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    reason: Option<&str>,
) -> sqlx::Result<BlockedTimeView> {
    sqlx::query_as(&format!(
        "INSERT INTO practitioner_blocked_times (provider_id, start_datetime, end_datetime, reason, recurring) \
         VALUES ($1, $2, $3, $4, false) RETURNING {BLOCKED_VIEW}"
    ))
    .bind(provider_id)
    .bind(starts_at)
    .bind(ends_at)
    .bind(reason)
    .fetch_one(db)
    .await
}

/// Deletes one of the therapist's blocked times; `false` if they have none with this id.
pub async fn delete_blocked(
    db: impl PgExecutor<'_>,
    provider_id: i64,
    id: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query("DELETE FROM practitioner_blocked_times WHERE uuid = $1 AND provider_id = $2")
        .bind(id)
        .bind(provider_id)
        .execute(db)
        .await
        .map(|r| r.rows_affected() > 0)
}

/// The therapist's blocked times that end after `from`, soonest first.
pub async fn list_blocked(
    db: impl PgExecutor<'_>,
    provider_id: i64,
    from: DateTime<Utc>,
) -> sqlx::Result<Vec<BlockedTimeView>> {
    sqlx::query_as(&format!(
        "SELECT {BLOCKED_VIEW} FROM practitioner_blocked_times \
         WHERE provider_id = $1 AND end_datetime > $2 ORDER BY start_datetime LIMIT 500"
    ))
    .bind(provider_id)
    .bind(from)
    .fetch_all(db)
    .await
}
