//! Opening hours per weekday in a time zone: parsing what a store sends, and deciding whether a
//! visit fits. Pure: no I/O.
//!
//! A day holds any number of intervals (`09:00–12:00` and `13:00–21:00` for a lunch break), in
//! the store's own time zone, so a visit at 10:00 in Manila is checked against Manila's clock
//! whatever the server's. `24:00` closes at midnight; a shift past midnight is written as two
//! intervals on consecutive days (`20:00–24:00`, then `00:00–02:00`), which a visit may span.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::FieldError;

/// Weekday names as clients send them, Monday first (`Weekday::num_days_from_monday`).
pub const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
/// Most intervals one day may hold.
pub const MAX_INTERVALS_PER_DAY: usize = 6;
const MINUTES_PER_DAY: u32 = 24 * 60;

/// One opening interval, local time of day `HH:MM` (`close` may be `24:00`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpeningInterval {
    #[schema(example = "09:00")]
    pub open: String,
    #[schema(example = "21:00")]
    pub close: String,
}

/// A day as clients send it: a list of intervals, or the seed's single
/// `{open, close, closed}` object.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DayInput {
    Intervals(Vec<OpeningInterval>),
    Single(SeedDay),
}

/// The seed's form of a day: `{"open": "09:00", "close": "21:00", "closed": false}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeedDay {
    pub open: Option<String>,
    pub close: Option<String>,
    pub closed: Option<bool>,
}

/// Weekday name to that day's intervals; a missing day is closed.
pub type WeeklyInput = BTreeMap<String, DayInput>;

/// The canonical form stored in `store_profiles.operating_hours` and answered to clients: every
/// weekday present, its intervals sorted.
pub type WeeklyHours = BTreeMap<String, Vec<OpeningInterval>>;

/// Validated opening hours.
#[derive(Debug, Clone, PartialEq)]
pub struct OpeningHours {
    tz: Tz,
    /// Minutes since local midnight, `[open, close)`, sorted and disjoint; Monday first.
    days: [Vec<(u32, u32)>; 7],
}

/// A time zone name from the IANA database (`Asia/Manila`).
pub fn parse_timezone(name: &str) -> Option<Tz> {
    name.trim().parse::<Tz>().ok()
}

/// `HH:MM` as minutes since midnight; `24:00` only where `allow_midnight_end`.
pub fn parse_time_of_day(text: &str, allow_midnight_end: bool) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if allow_midnight_end => Some(MINUTES_PER_DAY),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

fn format_minutes(minutes: u32) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

impl OpeningHours {
    /// Checks a store's hours; every problem is named by its field (`opening_hours.monday[1].close`).
    pub fn parse(
        timezone_field: &str,
        timezone: &str,
        field: &str,
        weekly: &WeeklyInput,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let tz = parse_timezone(timezone);
        if tz.is_none() {
            errors.push(FieldError::new(
                timezone_field,
                "is not a time zone of the IANA database (for example Asia/Manila)",
            ));
        }
        let mut days: [Vec<(u32, u32)>; 7] = Default::default();
        for (name, day) in weekly {
            let Some(index) = WEEKDAYS.iter().position(|d| d == &name.to_lowercase()) else {
                errors.push(FieldError::new(
                    format!("{field}.{name}"),
                    "is not a weekday (monday … sunday)",
                ));
                continue;
            };
            let intervals = match day {
                DayInput::Intervals(list) => list.clone(),
                DayInput::Single(seed) if seed.closed == Some(true) => Vec::new(),
                DayInput::Single(seed) => match (&seed.open, &seed.close) {
                    (Some(open), Some(close)) => vec![OpeningInterval {
                        open: open.clone(),
                        close: close.clone(),
                    }],
                    _ => {
                        errors.push(FieldError::new(
                            format!("{field}.{name}"),
                            "needs open and close, or closed: true",
                        ));
                        continue;
                    }
                },
            };
            if intervals.len() > MAX_INTERVALS_PER_DAY {
                errors.push(FieldError::new(
                    format!("{field}.{name}"),
                    format!("has more than {MAX_INTERVALS_PER_DAY} intervals"),
                ));
                continue;
            }
            let mut parsed: Vec<(u32, u32, usize)> = Vec::new();
            for (i, interval) in intervals.iter().enumerate() {
                let at = format!("{field}.{name}[{i}]");
                let open = parse_time_of_day(&interval.open, false);
                let close = parse_time_of_day(&interval.close, true);
                if open.is_none() {
                    errors.push(FieldError::new(
                        format!("{at}.open"),
                        "is not a time of day (HH:MM, 00:00 to 23:59)",
                    ));
                }
                if close.is_none() {
                    errors.push(FieldError::new(
                        format!("{at}.close"),
                        "is not a time of day (HH:MM, 00:01 to 24:00)",
                    ));
                }
                if let (Some(open), Some(close)) = (open, close) {
                    if close <= open {
                        errors.push(FieldError::new(
                            format!("{at}.close"),
                            "must be after open (write a shift past midnight as two days)",
                        ));
                    } else {
                        parsed.push((open, close, i));
                    }
                }
            }
            parsed.sort_unstable();
            for pair in parsed.windows(2) {
                let ((open_a, close_a, _), (open_b, _, i_b)) = (pair[0], pair[1]);
                if open_b < close_a {
                    errors.push(FieldError::new(
                        format!("{field}.{name}[{i_b}]"),
                        format!(
                            "overlaps {}–{}",
                            format_minutes(open_a),
                            format_minutes(close_a)
                        ),
                    ));
                }
            }
            days[index] = parsed.into_iter().map(|(o, c, _)| (o, c)).collect();
        }
        match (errors.is_empty(), tz) {
            (true, Some(tz)) => Ok(Self { tz, days }),
            _ => Err(errors),
        }
    }

    /// Reads hours stored by [`OpeningHours::weekly`] (already validated when written).
    pub fn from_stored(timezone: &str, stored: &serde_json::Value) -> Option<Self> {
        let weekly: WeeklyInput = serde_json::from_value(stored.clone()).ok()?;
        Self::parse("timezone", timezone, "opening_hours", &weekly).ok()
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The canonical form: every weekday, intervals sorted.
    pub fn weekly(&self) -> WeeklyHours {
        WEEKDAYS
            .iter()
            .zip(&self.days)
            .map(|(name, intervals)| {
                let list = intervals
                    .iter()
                    .map(|&(open, close)| OpeningInterval {
                        open: format_minutes(open),
                        close: format_minutes(close),
                    })
                    .collect();
                ((*name).to_owned(), list)
            })
            .collect()
    }

    /// The open periods, in UTC, of the local days from `first` to `last`, merged where one
    /// ends as the next begins (so a visit may run past midnight into the next day's hours).
    fn periods(&self, first: NaiveDate, last: NaiveDate) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let mut periods: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
        for date in first.iter_days().take_while(|date| *date <= last) {
            let weekday = date.weekday().num_days_from_monday() as usize;
            let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists");
            for &(open, close) in &self.days[weekday] {
                let open = self.instant(midnight + Duration::minutes(i64::from(open)));
                let close = self.instant(midnight + Duration::minutes(i64::from(close)));
                match periods.last_mut() {
                    Some(last) if open <= last.1 => last.1 = last.1.max(close),
                    _ => periods.push((open, close)),
                }
            }
        }
        periods
    }

    /// A local wall-clock time as an instant; a time skipped by a clock change is taken as the
    /// first instant after the gap, an ambiguous one as its earlier instant.
    fn instant(&self, local: NaiveDateTime) -> DateTime<Utc> {
        let mut probe = local;
        for _ in 0..4 {
            match self.tz.from_local_datetime(&probe) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                    return t.with_timezone(&Utc)
                }
                LocalResult::None => probe += Duration::minutes(30),
            }
        }
        Utc.from_utc_datetime(&local)
    }

    /// Whether the store is open for the whole of `[start, end)`.
    pub fn covers(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
        if end <= start {
            return false;
        }
        let first = start.with_timezone(&self.tz).date_naive().pred_opt();
        let last = end.with_timezone(&self.tz).date_naive();
        let Some(first) = first else { return false };
        self.periods(first, last)
            .iter()
            .any(|&(open, close)| open <= start && end <= close)
    }

    /// Whether the store is open at `at`.
    pub fn is_open_at(&self, at: DateTime<Utc>) -> bool {
        self.covers(at, at + Duration::seconds(1))
    }

    /// The next time the store opens after `at` (within a week), if it is closed then.
    pub fn next_opening(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let first = at.with_timezone(&self.tz).date_naive().pred_opt()?;
        let last = first + Duration::days(8);
        self.periods(first, last)
            .into_iter()
            .map(|(open, _)| open)
            .find(|&open| open > at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hours(weekly: serde_json::Value) -> Result<OpeningHours, Vec<FieldError>> {
        let weekly: WeeklyInput = serde_json::from_value(weekly).unwrap();
        OpeningHours::parse("timezone", "Asia/Manila", "opening_hours", &weekly)
    }

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn times_of_day_are_real_times() {
        assert_eq!(parse_time_of_day("09:30", false), Some(570));
        assert_eq!(parse_time_of_day("24:00", true), Some(1440));
        assert_eq!(parse_time_of_day("24:00", false), None);
        for bad in ["25:00", "9:00", "09:60", "09-00", "ab:cd", "", "24:01"] {
            assert_eq!(parse_time_of_day(bad, true), None, "{bad}");
        }
    }

    #[test]
    fn overlapping_or_backwards_intervals_are_refused_by_field() {
        let errors = hours(json!({
            "monday": [{"open": "09:00", "close": "13:00"}, {"open": "12:00", "close": "18:00"}],
            "tuesday": [{"open": "18:00", "close": "09:00"}],
            "wednesday": [{"open": "25:00", "close": "26:00"}],
            "funday": [],
        }))
        .unwrap_err();
        assert_eq!(
            fields(errors),
            [
                "opening_hours.funday",
                "opening_hours.monday[1]",
                "opening_hours.tuesday[0].close",
                "opening_hours.wednesday[0].open",
                "opening_hours.wednesday[0].close",
            ]
        );
    }

    #[test]
    fn an_unknown_time_zone_is_named() {
        let weekly = WeeklyInput::new();
        let errors =
            OpeningHours::parse("timezone", "Mars/Olympus", "opening_hours", &weekly).unwrap_err();
        assert_eq!(fields(errors), ["timezone"]);
    }

    #[test]
    fn the_seed_form_is_read_and_answered_canonically() {
        let parsed = hours(json!({
            "monday": {"open": "09:00", "close": "21:00", "closed": false},
            "sunday": {"closed": true},
        }))
        .unwrap();
        let weekly = parsed.weekly();
        assert_eq!(weekly.len(), 7);
        assert_eq!(
            weekly["monday"],
            [OpeningInterval {
                open: "09:00".into(),
                close: "21:00".into()
            }]
        );
        assert!(weekly["sunday"].is_empty());
        let stored = serde_json::to_value(&weekly).unwrap();
        assert_eq!(
            OpeningHours::from_stored("Asia/Manila", &stored).unwrap(),
            parsed
        );
    }

    #[test]
    fn visits_are_checked_on_the_stores_own_clock() {
        // Manila is UTC+8: Monday 2026-11-30 09:00 local is 01:00Z.
        let parsed = hours(json!({
            "monday": [{"open": "09:00", "close": "12:00"}, {"open": "13:00", "close": "21:00"}],
        }))
        .unwrap();
        assert!(parsed.covers(utc("2026-11-30T01:00:00Z"), utc("2026-11-30T02:00:00Z")));
        // Into the lunch break.
        assert!(!parsed.covers(utc("2026-11-30T03:30:00Z"), utc("2026-11-30T04:30:00Z")));
        // Before opening, and on a closed Tuesday.
        assert!(!parsed.covers(utc("2026-11-30T00:30:00Z"), utc("2026-11-30T01:30:00Z")));
        assert!(!parsed.covers(utc("2026-12-01T02:00:00Z"), utc("2026-12-01T03:00:00Z")));
        assert!(parsed.is_open_at(utc("2026-11-30T12:59:00Z")));
        assert!(!parsed.is_open_at(utc("2026-11-30T13:00:00Z")));
        assert_eq!(
            parsed.next_opening(utc("2026-11-30T03:30:00Z")),
            Some(utc("2026-11-30T05:00:00Z"))
        );
    }

    #[test]
    fn a_visit_may_run_past_midnight_into_the_next_days_hours() {
        let parsed = hours(json!({
            "friday": [{"open": "20:00", "close": "24:00"}],
            "saturday": [{"open": "00:00", "close": "02:00"}],
        }))
        .unwrap();
        // Friday 2026-12-04 23:30 to Saturday 00:30 Manila time.
        assert!(parsed.covers(utc("2026-12-04T15:30:00Z"), utc("2026-12-04T16:30:00Z")));
        assert!(!parsed.covers(utc("2026-12-04T17:30:00Z"), utc("2026-12-04T18:30:00Z")));
    }

    #[test]
    fn clock_changes_are_respected() {
        // New York springs forward on 2026-03-08 at 02:00 local; open 01:00–04:00 is 2 h long.
        let weekly: WeeklyInput =
            serde_json::from_value(json!({"sunday": [{"open": "01:00", "close": "04:00"}]}))
                .unwrap();
        let parsed =
            OpeningHours::parse("timezone", "America/New_York", "opening_hours", &weekly).unwrap();
        // 01:00 EST = 06:00Z; 04:00 EDT = 08:00Z.
        assert!(parsed.covers(utc("2026-03-08T06:00:00Z"), utc("2026-03-08T08:00:00Z")));
        assert!(!parsed.covers(utc("2026-03-08T06:00:00Z"), utc("2026-03-08T09:00:00Z")));
    }
}
