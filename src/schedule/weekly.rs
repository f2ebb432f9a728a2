//! A therapist's weekly schedule (pure): ranges of local time per weekday in an IANA time zone,
//! validated, and turned into instants for a given date whatever the zone's daylight saving.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::FieldError;

/// The zone a schedule is in when the therapist names none.
pub const DEFAULT_TIMEZONE: Tz = chrono_tz::Asia::Manila;
/// Minutes in a day: a range may end at 24:00.
pub const MINUTES_PER_DAY: u16 = 24 * 60;
/// Weekday names as the API spells them, index = `day_of_week` (0 = Sunday, as in the seed).
pub const DAY_NAMES: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

/// One range of local time within a day, in minutes from midnight: `start < end <= 1440`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DayRange {
    pub start: u16,
    pub end: u16,
}

impl DayRange {
    pub fn time(minutes: u16) -> NaiveTime {
        if minutes >= MINUTES_PER_DAY {
            NaiveTime::from_hms_opt(0, 0, 0).expect("midnight")
        } else {
            NaiveTime::from_hms_opt(u32::from(minutes / 60), u32::from(minutes % 60), 0)
                .expect("minutes within a day")
        }
    }

    /// `HH:MM` (24:00 for the end of the day).
    pub fn format(minutes: u16) -> String {
        format!("{:02}:{:02}", minutes / 60, minutes % 60)
    }
}

/// A weekly schedule in a time zone. `days[0]` is Sunday.
#[derive(Debug, Clone, PartialEq)]
pub struct WeeklySchedule {
    pub tz: Tz,
    pub days: [Vec<DayRange>; 7],
}

impl WeeklySchedule {
    pub fn empty(tz: Tz) -> Self {
        Self {
            tz,
            days: Default::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.days.iter().all(Vec::is_empty)
    }

    /// The ranges of `date` (a local date in the schedule's zone) as instants, in order. A
    /// boundary that falls in a daylight-saving gap moves to the end of the gap; one that
    /// falls in a repeated hour takes its first occurrence. A range that ends at midnight runs
    /// on through the next day's range from midnight ([`WeeklySchedule::end_on`]).
    pub fn ranges_on(&self, date: NaiveDate) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let day = date.weekday().num_days_from_sunday() as usize;
        self.days[day]
            .iter()
            .filter_map(|range| {
                let start = local_instant(self.tz, date, range.start)?;
                let end = self.end_on(date, range)?;
                (start < end).then_some((start, end))
            })
            .collect()
    }

    /// When `range` of `date` ends. A therapist who works to 24:00 and on from 00:00 the next
    /// day (a night shift is written as two days' ranges) works through midnight: the range
    /// ends where the next day's first range ends, so a session may run across midnight. One
    /// day is enough: no session is a day long.
    pub fn end_on(&self, date: NaiveDate, range: &DayRange) -> Option<DateTime<Utc>> {
        if range.end == MINUTES_PER_DAY {
            if let Some(next) = date.succ_opt() {
                let next_day = next.weekday().num_days_from_sunday() as usize;
                if let Some(morning) = self.days[next_day].iter().find(|r| r.start == 0) {
                    return local_instant(self.tz, next, morning.end);
                }
            }
        }
        local_instant(self.tz, date, range.end)
    }
}

/// The instant of `minutes` after local midnight of `date` in `tz` (1440 = next midnight).
pub fn local_instant(tz: Tz, date: NaiveDate, minutes: u16) -> Option<DateTime<Utc>> {
    let date = if minutes >= MINUTES_PER_DAY {
        date.succ_opt()?
    } else {
        date
    };
    resolve_local(tz, date.and_time(DayRange::time(minutes % MINUTES_PER_DAY)))
}

/// A local wall-clock time as an instant: the first occurrence in a repeated hour, the end of
/// the gap for a time the clocks skip.
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    // Gaps are at most a few hours in every zone; walk forward a minute at a time.
    for skip in 0..=240 {
        let candidate = local + Duration::minutes(skip);
        match tz.from_local_datetime(&candidate) {
            chrono::LocalResult::Single(at) => return Some(at.with_timezone(&Utc)),
            chrono::LocalResult::Ambiguous(first, _) => return Some(first.with_timezone(&Utc)),
            chrono::LocalResult::None => continue,
        }
    }
    None
}

/// One range as the API speaks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeBody {
    /// Local time `HH:MM`.
    #[schema(example = "09:00")]
    pub start: String,
    /// Local time `HH:MM`, after `start`; `24:00` is the end of the day.
    #[schema(example = "18:00")]
    pub end: String,
}

/// Parses `HH:MM` into minutes from midnight (`24:00` allowed when `allow_end_of_day`).
pub fn parse_time(value: &str, allow_end_of_day: bool) -> Option<u16> {
    let (h, m) = value.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if allow_end_of_day => Some(MINUTES_PER_DAY),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

/// Parses a zone name; only real IANA names (`Asia/Manila`, `UTC`), not abbreviations.
pub fn parse_timezone(name: &str) -> Option<Tz> {
    if name.is_empty() || name.len() > 50 {
        return None;
    }
    name.parse::<Tz>().ok()
}

/// Validates a weekly schedule sent by a client: known weekdays, `HH:MM` times, each range
/// ordered and within its day, ranges of one day not overlapping, at most `max_per_day` a day.
/// Every problem is reported, each naming its field (`weekly.monday[1].end`).
pub fn validate(
    timezone: Option<&str>,
    weekly: &BTreeMap<String, Vec<RangeBody>>,
    max_per_day: usize,
) -> Result<WeeklySchedule, Vec<FieldError>> {
    let mut errors = Vec::new();
    let tz = match timezone {
        None => DEFAULT_TIMEZONE,
        Some(name) => parse_timezone(name.trim()).unwrap_or_else(|| {
            errors.push(FieldError::new(
                "timezone",
                "must be an IANA time zone name such as Asia/Manila",
            ));
            DEFAULT_TIMEZONE
        }),
    };
    let mut schedule = WeeklySchedule::empty(tz);
    for (day_name, ranges) in weekly {
        let Some(day) = DAY_NAMES.iter().position(|d| d == day_name) else {
            errors.push(FieldError::new(
                format!("weekly.{day_name}"),
                "must be a weekday name: sunday, monday, tuesday, wednesday, thursday, friday or saturday",
            ));
            continue;
        };
        if ranges.len() > max_per_day {
            errors.push(FieldError::new(
                format!("weekly.{day_name}"),
                format!("at most {max_per_day} ranges a day"),
            ));
            continue;
        }
        let mut parsed = Vec::with_capacity(ranges.len());
        for (i, range) in ranges.iter().enumerate() {
            let field = |part: &str| format!("weekly.{day_name}[{i}].{part}");
            let start = parse_time(&range.start, false);
            let end = parse_time(&range.end, true);
            if start.is_none() {
                errors.push(FieldError::new(
                    field("start"),
                    "must be a time HH:MM from 00:00 to 23:59",
                ));
            }
            if end.is_none() {
                errors.push(FieldError::new(
                    field("end"),
                    "must be a time HH:MM from 00:01 to 24:00",
                ));
            }
            if let (Some(start), Some(end)) = (start, end) {
                if start >= end {
                    errors.push(FieldError::new(
                        field("end"),
                        "must be after start, within the same day",
                    ));
                } else {
                    parsed.push((i, DayRange { start, end }));
                }
            }
        }
        parsed.sort_by_key(|(_, r)| *r);
        for pair in parsed.windows(2) {
            let ((_, a), (j, b)) = (pair[0], pair[1]);
            if b.start < a.end {
                errors.push(FieldError::new(
                    format!("weekly.{day_name}[{j}]"),
                    format!(
                        "overlaps {}–{} on the same day",
                        DayRange::format(a.start),
                        DayRange::format(a.end)
                    ),
                ));
            }
        }
        schedule.days[day] = parsed.into_iter().map(|(_, r)| r).collect();
    }
    if errors.is_empty() {
        Ok(schedule)
    } else {
        Err(errors)
    }
}

/// The schedule as the API and `therapist_profiles.default_schedule` show it:
/// `{"timezone": "Asia/Manila", "monday": [{"start": "09:00", "end": "18:00"}], ...}`.
pub fn to_json(schedule: &WeeklySchedule) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    map.insert("timezone".into(), schedule.tz.name().into());
    for (day, ranges) in schedule.days.iter().enumerate() {
        if ranges.is_empty() {
            continue;
        }
        map.insert(
            DAY_NAMES[day].into(),
            ranges
                .iter()
                .map(|r| {
                    serde_json::json!({"start": DayRange::format(r.start), "end": DayRange::format(r.end)})
                })
                .collect(),
        );
    }
    serde_json::Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: &str, end: &str) -> RangeBody {
        RangeBody {
            start: start.into(),
            end: end.into(),
        }
    }

    #[test]
    fn times_parse_strictly() {
        assert_eq!(parse_time("09:30", false), Some(570));
        assert_eq!(parse_time("24:00", true), Some(1440));
        assert_eq!(parse_time("24:00", false), None);
        assert_eq!(parse_time("9:30", false), None);
        assert_eq!(parse_time("12:60", false), None);
        assert_eq!(parse_time("ab:cd", false), None);
    }

    #[test]
    fn several_ranges_a_day_are_kept_in_order() {
        let weekly = BTreeMap::from([(
            "monday".to_owned(),
            vec![range("14:00", "18:00"), range("08:00", "12:00")],
        )]);
        let schedule = validate(None, &weekly, 6).unwrap();
        assert_eq!(schedule.tz, DEFAULT_TIMEZONE);
        assert_eq!(
            schedule.days[1],
            [
                DayRange {
                    start: 480,
                    end: 720
                },
                DayRange {
                    start: 840,
                    end: 1080
                }
            ]
        );
    }

    #[test]
    fn bad_schedules_name_each_field() {
        let weekly = BTreeMap::from([
            (
                "monday".to_owned(),
                vec![range("09:00", "12:00"), range("11:00", "13:00")],
            ),
            ("tuesday".to_owned(), vec![range("18:00", "09:00")]),
            ("funday".to_owned(), vec![]),
        ]);
        let errors = validate(Some("Mars/Olympus"), &weekly, 6).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"timezone"), "{fields:?}");
        assert!(fields.contains(&"weekly.monday[1]"), "{fields:?}");
        assert!(fields.contains(&"weekly.tuesday[0].end"), "{fields:?}");
        assert!(fields.contains(&"weekly.funday"), "{fields:?}");
        let too_many = BTreeMap::from([(
            "friday".to_owned(),
            (0..7)
                .map(|h| range(&format!("0{h}:00"), &format!("0{h}:30")))
                .collect(),
        )]);
        assert_eq!(
            validate(None, &too_many, 6).unwrap_err()[0].field,
            "weekly.friday"
        );
    }

    #[test]
    fn ranges_become_instants_across_daylight_saving() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let mut schedule = WeeklySchedule::empty(ny);
        schedule.days[0] = vec![DayRange {
            start: 60,
            end: 300,
        }]; // Sundays 01:00–05:00
            // 2026-03-08: clocks jump from 02:00 to 03:00 — the range is three hours long.
        let spring = schedule.ranges_on(NaiveDate::from_ymd_opt(2026, 3, 8).unwrap());
        assert_eq!(spring[0].1 - spring[0].0, Duration::hours(3));
        // 2026-11-01: 01:00–02:00 happens twice — the range is five hours long.
        let fall = schedule.ranges_on(NaiveDate::from_ymd_opt(2026, 11, 1).unwrap());
        assert_eq!(fall[0].1 - fall[0].0, Duration::hours(5));
        // Manila has no daylight saving: always four hours.
        let mut manila = schedule.clone();
        manila.tz = DEFAULT_TIMEZONE;
        let day = manila.ranges_on(NaiveDate::from_ymd_opt(2026, 3, 8).unwrap());
        assert_eq!(day[0].1 - day[0].0, Duration::hours(4));
        assert_eq!(day[0].0.to_rfc3339(), "2026-03-07T17:00:00+00:00");
    }

    #[test]
    fn a_boundary_in_the_gap_moves_to_its_end() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let at = local_instant(ny, NaiveDate::from_ymd_opt(2026, 3, 8).unwrap(), 150).unwrap();
        assert_eq!(at.to_rfc3339(), "2026-03-08T07:00:00+00:00"); // 03:00 EDT
    }

    #[test]
    fn the_json_form_round_trips_the_names() {
        let weekly = BTreeMap::from([("saturday".to_owned(), vec![range("10:00", "24:00")])]);
        let schedule = validate(Some("Europe/Berlin"), &weekly, 6).unwrap();
        assert_eq!(
            to_json(&schedule),
            serde_json::json!({"timezone": "Europe/Berlin", "saturday": [{"start": "10:00", "end": "24:00"}]})
        );
    }
}
