//! Scheduled bookings' calendar: weekly schedules in a time zone, blocked times, slots, and
//! whether a booking (later, or now) fits a therapist's day.
//!
//! - [`weekly`]: the weekly schedule, its validation and its time zone (pure).
//! - [`slots`]: slot computation and book-now feasibility (pure).
//! - [`store`]: the schedule tables, and the calendar of one therapist read from them.
//! - [`diary`]: every therapist's calendar in memory, kept fresh across nodes, for questions
//!   about many therapists at once (slots near a place, the matcher's eligibility, nearby).
//!
//! The database has the last word: the exclusion constraint `excl_bookings_therapist_overlap`
//! refuses any booking whose busy range overlaps another of the same therapist, whoever writes
//! it. The slot rules here are the same rule, so what they offer it accepts.

pub mod diary;
pub mod slots;
pub mod store;
pub mod weekly;

use std::time::Duration;

use serde_json::Value;
use sqlx::PgExecutor;

use crate::providers::setting_as_f64;

/// `scheduling.slot_step_minutes`: slots start on this grid from local midnight.
pub const DEFAULT_SLOT_STEP_MINUTES: i64 = 15;
/// `scheduling.travel_buffer_minutes`: kept free on each side of a scheduled session, so two
/// bookings of one therapist are at least twice this apart.
pub const DEFAULT_TRAVEL_BUFFER_MINUTES: i64 = 15;
/// `scheduling.lead_minutes`: the earliest a scheduled booking may start from now; when an
/// assigned therapist is expected to set out; when an open booking nobody took is cancelled.
pub const DEFAULT_LEAD_MINUTES: i64 = 60;
/// `scheduling.horizon_days`: how far ahead a booking may be made.
pub const DEFAULT_HORIZON_DAYS: i64 = 30;
/// `scheduling.max_ranges_per_day`.
pub const DEFAULT_MAX_RANGES_PER_DAY: usize = 6;
/// `scheduling.unmatched_warning_minutes`: the customer of an open booking nobody has taken
/// is told this long before it would be cancelled.
pub const DEFAULT_UNMATCHED_WARNING_MINUTES: i64 = 60;
/// `scheduling.reschedule_timeout_s`: how long the other side has to answer a reschedule.
pub const DEFAULT_RESCHEDULE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// `scheduled_request_timeout` (seconds): how long a named therapist has to answer a request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// `scheduling.reminder_minutes`: reminders before a scheduled booking.
pub const DEFAULT_REMINDER_MINUTES: [i64; 2] = [60, 15];

/// The scheduling rules, from app_settings (`scheduling`, `scheduled_request_timeout`).
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulingSettings {
    pub slot_step: chrono::Duration,
    pub travel_buffer_minutes: i64,
    pub lead: chrono::Duration,
    pub horizon: chrono::Duration,
    pub max_ranges_per_day: usize,
    pub unmatched_warning: chrono::Duration,
    pub reschedule_timeout: chrono::Duration,
    pub request_timeout: chrono::Duration,
    pub reminder_minutes: Vec<i64>,
}

impl Default for SchedulingSettings {
    fn default() -> Self {
        Self::from_values(None, None)
    }
}

fn minutes(value: Option<&Value>, key: &str, default: i64, max: i64) -> i64 {
    value
        .and_then(|v| v.get(key))
        .and_then(setting_as_f64)
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map_or(default, |v| (v as i64).min(max))
}

impl SchedulingSettings {
    /// Reads the settings (one query); anything missing or malformed takes its default.
    pub async fn load(db: impl PgExecutor<'_>) -> Self {
        let rows: Vec<(String, Value)> = sqlx::query_as(
            "SELECT key, value FROM app_settings WHERE key IN ('scheduling', 'scheduled_request_timeout')",
        )
        .fetch_all(db)
        .await
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "reading scheduling settings failed; using defaults");
            Vec::new()
        });
        let find = |key: &str| rows.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        Self::from_values(find("scheduling"), find("scheduled_request_timeout"))
    }

    pub fn from_values(scheduling: Option<Value>, request_timeout: Option<Value>) -> Self {
        let s = scheduling.as_ref();
        let request_s = request_timeout
            .as_ref()
            .and_then(setting_as_f64)
            .filter(|v| v.is_finite() && *v > 0.0)
            .map_or(DEFAULT_REQUEST_TIMEOUT.as_secs() as i64, |v| v as i64);
        let reminder_minutes = s
            .and_then(|v| v.get("reminder_minutes"))
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(setting_as_f64)
                    .filter(|m| *m >= 1.0)
                    .map(|m| (m as i64).min(7 * 24 * 60))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_else(|| DEFAULT_REMINDER_MINUTES.to_vec());
        Self {
            slot_step: chrono::Duration::minutes(
                minutes(s, "slot_step_minutes", DEFAULT_SLOT_STEP_MINUTES, 240).max(5),
            ),
            travel_buffer_minutes: minutes(
                s,
                "travel_buffer_minutes",
                DEFAULT_TRAVEL_BUFFER_MINUTES,
                240,
            ),
            lead: chrono::Duration::minutes(minutes(
                s,
                "lead_minutes",
                DEFAULT_LEAD_MINUTES,
                7 * 24 * 60,
            )),
            horizon: chrono::Duration::days(
                minutes(s, "horizon_days", DEFAULT_HORIZON_DAYS, 366).max(1),
            ),
            max_ranges_per_day: minutes(
                s,
                "max_ranges_per_day",
                DEFAULT_MAX_RANGES_PER_DAY as i64,
                48,
            )
            .max(1) as usize,
            unmatched_warning: chrono::Duration::minutes(minutes(
                s,
                "unmatched_warning_minutes",
                DEFAULT_UNMATCHED_WARNING_MINUTES,
                7 * 24 * 60,
            )),
            reschedule_timeout: chrono::Duration::seconds(
                minutes(
                    s,
                    "reschedule_timeout_s",
                    DEFAULT_RESCHEDULE_TIMEOUT.as_secs() as i64,
                    30 * 86_400,
                )
                .max(1),
            ),
            request_timeout: chrono::Duration::seconds(request_s.clamp(1, 30 * 86_400)),
            reminder_minutes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_seeded_settings_and_the_defaults_agree() {
        let seeded = SchedulingSettings::from_values(
            Some(
                json!({"slot_step_minutes": 15, "travel_buffer_minutes": 15, "lead_minutes": 60,
                        "horizon_days": 30, "max_ranges_per_day": 6, "unmatched_warning_minutes": 60,
                        "reschedule_timeout_s": 86400}),
            ),
            Some(json!(1800)),
        );
        assert_eq!(seeded, SchedulingSettings::default());
        assert_eq!(seeded.reminder_minutes, [60, 15]);
        let odd = SchedulingSettings::from_values(
            Some(json!({"slot_step_minutes": "x", "lead_minutes": -5})),
            Some(json!("90")),
        );
        assert_eq!(odd.slot_step, chrono::Duration::minutes(15));
        assert_eq!(odd.lead, chrono::Duration::minutes(60));
        assert_eq!(odd.request_timeout, chrono::Duration::seconds(90));
    }
}
