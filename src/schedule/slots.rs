//! Slots (pure): when a therapist can start a session, and whether a `now` job still leaves
//! them time for what comes next.
//!
//! Every home-service booking keeps its therapist busy over a range: a scheduled one its session
//! with the travel buffer on each side, a `now` one from acceptance until travel, session and
//! buffer are over (the database's `booking_busy_range`). Two busy ranges of one therapist never
//! overlap (the exclusion constraint `excl_bookings_therapist_overlap`); these functions apply
//! the same rule, so what they offer the database accepts.

use chrono::{DateTime, Duration, NaiveDate, Utc};

use super::weekly::WeeklySchedule;
use crate::geo::Point;

/// A half-open range of time `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Interval {
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        Self { start, end }
    }

    pub fn overlaps(&self, other: &Interval) -> bool {
        self.start < other.end && other.start < self.end
    }

    pub fn contains(&self, other: &Interval) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

/// Something a therapist has already committed to: a booking's busy range, when its session
/// starts and where.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Commitment {
    pub busy: Interval,
    pub session_start: DateTime<Utc>,
    pub place: Option<Point>,
}

/// What a therapist's calendar holds besides the weekly schedule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Calendar {
    /// Time off and breaks.
    pub blocked: Vec<Interval>,
    /// Bookings that hold the therapist (pending requests naming them included).
    pub commitments: Vec<Commitment>,
}

/// The shape of a session to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub duration: Duration,
    /// Kept free on each side of a scheduled session.
    pub buffer: Duration,
}

impl Session {
    pub fn minutes(duration_minutes: i64, buffer_minutes: i64) -> Self {
        Self {
            duration: Duration::minutes(duration_minutes),
            buffer: Duration::minutes(buffer_minutes),
        }
    }

    /// The range a session starting at `start` keeps its therapist busy.
    pub fn busy_from(&self, start: DateTime<Utc>) -> Interval {
        Interval::new(start - self.buffer, start + self.duration + self.buffer)
    }
}

/// Whether a session starting at `start` fits: inside one of the schedule's ranges on its
/// local day (which may run through midnight into the next day's), clear of blocked times, and
/// its busy range clear of every commitment's.
pub fn fits(
    schedule: &WeeklySchedule,
    calendar: &Calendar,
    session: Session,
    start: DateTime<Utc>,
) -> bool {
    let local_date = start.with_timezone(&schedule.tz).date_naive();
    let wanted = Interval::new(start, start + session.duration);
    schedule
        .ranges_on(local_date)
        .iter()
        .any(|(from, to)| Interval::new(*from, *to).contains(&wanted))
        && is_clear(calendar, session, start)
}

/// Whether the session is clear of the calendar (the schedule aside).
pub fn is_clear(calendar: &Calendar, session: Session, start: DateTime<Utc>) -> bool {
    let wanted = Interval::new(start, start + session.duration);
    let busy = session.busy_from(start);
    !calendar.blocked.iter().any(|b| b.overlaps(&wanted))
        && !calendar.commitments.iter().any(|c| c.busy.overlaps(&busy))
}

/// The start times on `date` (a local date in the schedule's zone) at which the session fits,
/// on a grid of `step` from local midnight, no earlier than `earliest` and no later than
/// `latest`. Starts step in real time from each range's first grid point, so a day with a
/// daylight-saving change has exactly the slots its real hours hold.
pub fn for_day(
    schedule: &WeeklySchedule,
    calendar: &Calendar,
    session: Session,
    date: NaiveDate,
    step: Duration,
    earliest: DateTime<Utc>,
    latest: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let step_minutes = step.num_minutes().max(1);
    let day = chrono::Datelike::weekday(&date).num_days_from_sunday() as usize;
    let mut starts = Vec::new();
    for range in &schedule.days[day] {
        // Sessions start within the day's range but may end in the next day's, when the
        // therapist works through midnight.
        let (Some(end), Some(starts_until)) = (
            schedule.end_on(date, range),
            super::weekly::local_instant(schedule.tz, date, range.end),
        ) else {
            continue;
        };
        let first_minute =
            (i64::from(range.start) + step_minutes - 1) / step_minutes * step_minutes;
        let Some(mut start) = u16::try_from(first_minute)
            .ok()
            .and_then(|m| super::weekly::local_instant(schedule.tz, date, m))
        else {
            continue;
        };
        while start + session.duration <= end && start < starts_until {
            if start >= earliest && start <= latest && is_clear(calendar, session, start) {
                starts.push(start);
            }
            start += step;
        }
    }
    starts.sort_unstable();
    starts.dedup();
    starts
}

/// Whether `start` lies on the slot grid of its local day (minutes from local midnight a
/// multiple of `step`, or a real-time multiple of it from a range's first grid point when
/// a daylight-saving change moved the clock).
pub fn on_grid(
    schedule: &WeeklySchedule,
    calendar: &Calendar,
    session: Session,
    start: DateTime<Utc>,
    step: Duration,
) -> bool {
    let date = start.with_timezone(&schedule.tz).date_naive();
    for_day(schedule, calendar, session, date, step, start, start).contains(&start)
}

/// A `now` job a therapist might be offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NowJob {
    pub now: DateTime<Utc>,
    /// Travel from where the therapist is to the customer.
    pub travel: Duration,
    pub session: Session,
    pub place: Point,
}

impl NowJob {
    /// What the database will record for it if accepted now.
    pub fn busy(&self) -> Interval {
        Interval::new(
            self.now,
            self.now + self.travel + self.session.duration + self.session.buffer,
        )
    }
}

/// Book-now feasibility: the therapist can travel, do the session, and still reach each later
/// commitment in time (travel from this customer included), and the job runs into no blocked
/// time ahead. `travel_between` estimates travel between two places.
pub fn now_job_fits(
    calendar: &Calendar,
    job: &NowJob,
    travel_between: impl Fn(Point, Point) -> Duration,
) -> bool {
    let busy = job.busy();
    let session_end = job.now + job.travel + job.session.duration;
    let session = Interval::new(job.now + job.travel, session_end);
    if calendar
        .blocked
        .iter()
        .any(|b| b.start >= job.now && b.overlaps(&session))
    {
        return false;
    }
    calendar.commitments.iter().all(|c| {
        if c.busy.end <= job.now {
            return true;
        }
        if c.busy.overlaps(&busy) {
            return false;
        }
        match c.place {
            Some(place) if c.session_start >= job.now => {
                session_end + travel_between(job.place, place) <= c.session_start
            }
            _ => true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::weekly::{DayRange, WeeklySchedule, DEFAULT_TIMEZONE};
    use chrono::TimeZone;

    fn manila(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        DEFAULT_TIMEZONE
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    /// Mondays 09:00–12:00 and 14:00–18:00 in Manila.
    fn schedule() -> WeeklySchedule {
        let mut s = WeeklySchedule::empty(DEFAULT_TIMEZONE);
        s.days[1] = vec![
            DayRange {
                start: 540,
                end: 720,
            },
            DayRange {
                start: 840,
                end: 1080,
            },
        ];
        s
    }

    const MONDAY: (i32, u32, u32) = (2026, 12, 7);

    fn monday() -> NaiveDate {
        NaiveDate::from_ymd_opt(MONDAY.0, MONDAY.1, MONDAY.2).unwrap()
    }

    fn all_day() -> (DateTime<Utc>, DateTime<Utc>) {
        (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC)
    }

    #[test]
    fn slots_fill_each_range_on_the_step() {
        let (from, to) = all_day();
        let slots = for_day(
            &schedule(),
            &Calendar::default(),
            Session::minutes(60, 15),
            monday(),
            Duration::minutes(15),
            from,
            to,
        );
        // 09:00..=11:00 (9 starts) and 14:00..=17:00 (13 starts).
        assert_eq!(slots.len(), 9 + 13);
        assert_eq!(slots[0], manila(2026, 12, 7, 9, 0));
        assert_eq!(*slots.last().unwrap(), manila(2026, 12, 7, 17, 0));
    }

    #[test]
    fn a_night_shift_takes_sessions_across_midnight_but_not_past_its_end() {
        // Mondays 20:00–24:00 and Tuesdays 00:00–02:00: one shift through midnight.
        let mut night = WeeklySchedule::empty(DEFAULT_TIMEZONE);
        night.days[1] = vec![DayRange {
            start: 1200,
            end: 1440,
        }];
        night.days[2] = vec![DayRange { start: 0, end: 120 }];
        let (from, to) = all_day();
        let session = Session::minutes(60, 0);
        let slots = for_day(
            &night,
            &Calendar::default(),
            session,
            monday(),
            Duration::minutes(30),
            from,
            to,
        );
        // Monday's slots are 20:00 ..= 23:30 (the last one ends at 00:30 on Tuesday); from
        // midnight on, the starts are Tuesday's, to 01:00 (ending at 02:00).
        assert_eq!(slots.first(), Some(&manila(2026, 12, 7, 20, 0)));
        assert_eq!(slots.last(), Some(&manila(2026, 12, 7, 23, 30)));
        let tuesday = for_day(
            &night,
            &Calendar::default(),
            session,
            monday().succ_opt().unwrap(),
            Duration::minutes(30),
            from,
            to,
        );
        assert_eq!(
            tuesday,
            vec![
                manila(2026, 12, 8, 0, 0),
                manila(2026, 12, 8, 0, 30),
                manila(2026, 12, 8, 1, 0)
            ]
        );
        let calendar = Calendar::default();
        assert!(fits(
            &night,
            &calendar,
            session,
            manila(2026, 12, 7, 23, 30)
        ));
        assert!(!fits(
            &night,
            &calendar,
            session,
            manila(2026, 12, 8, 1, 30)
        ));
        // Without the Tuesday morning, the shift ends at midnight.
        night.days[2].clear();
        assert!(!fits(
            &night,
            &calendar,
            session,
            manila(2026, 12, 7, 23, 30)
        ));
        assert!(fits(&night, &calendar, session, manila(2026, 12, 7, 23, 0)));
    }

    #[test]
    fn bookings_block_their_session_and_both_buffers() {
        let (from, to) = all_day();
        let session = Session::minutes(60, 15);
        let booked = manila(2026, 12, 7, 15, 0);
        let calendar = Calendar {
            blocked: vec![Interval::new(
                manila(2026, 12, 7, 9, 0),
                manila(2026, 12, 7, 10, 0),
            )],
            commitments: vec![Commitment {
                busy: session.busy_from(booked),
                session_start: booked,
                place: None,
            }],
        };
        let slots = for_day(
            &schedule(),
            &calendar,
            session,
            monday(),
            Duration::minutes(15),
            from,
            to,
        );
        // The blocked hour removes 09:00–09:45; the 15:00 booking busies 14:45–16:15, so a new
        // session's busy range (start − 15 .. start + 75) must end by 14:45 or start at 16:15.
        assert!(!slots.contains(&manila(2026, 12, 7, 9, 45)));
        assert!(slots.contains(&manila(2026, 12, 7, 10, 0)));
        assert!(!slots.contains(&manila(2026, 12, 7, 14, 0)));
        assert!(!slots.contains(&manila(2026, 12, 7, 13, 30)));
        assert!(!slots.contains(&manila(2026, 12, 7, 16, 15)));
        assert!(slots.contains(&manila(2026, 12, 7, 16, 30)));
        assert!(!slots.contains(&manila(2026, 12, 7, 15, 0)));
    }

    #[test]
    fn fits_needs_the_schedule_and_a_clear_calendar() {
        let session = Session::minutes(90, 15);
        let cal = Calendar::default();
        assert!(fits(&schedule(), &cal, session, manila(2026, 12, 7, 14, 0)));
        assert!(
            !fits(&schedule(), &cal, session, manila(2026, 12, 7, 11, 0)),
            "runs past 12:00"
        );
        assert!(
            !fits(&schedule(), &cal, session, manila(2026, 12, 8, 14, 0)),
            "a Tuesday"
        );
        assert!(on_grid(
            &schedule(),
            &cal,
            session,
            manila(2026, 12, 7, 14, 15),
            Duration::minutes(15)
        ));
        assert!(!on_grid(
            &schedule(),
            &cal,
            session,
            manila(2026, 12, 7, 14, 10),
            Duration::minutes(15)
        ));
    }

    #[test]
    fn a_week_across_the_spring_change_keeps_real_hours() {
        let ny: chrono_tz::Tz = "America/New_York".parse().unwrap();
        let mut s = WeeklySchedule::empty(ny);
        for day in 0..7 {
            s.days[day] = vec![DayRange {
                start: 60,
                end: 300,
            }]; // 01:00–05:00 daily
        }
        let (from, to) = all_day();
        let session = Session::minutes(60, 0);
        let count = |d: u32| {
            for_day(
                &s,
                &Calendar::default(),
                session,
                NaiveDate::from_ymd_opt(2026, 3, d).unwrap(),
                Duration::minutes(60),
                from,
                to,
            )
        };
        assert_eq!(count(7).len(), 4, "a normal Saturday: 01, 02, 03, 04");
        let sunday = count(8);
        assert_eq!(sunday.len(), 3, "02:00 does not exist on the change day");
        assert_eq!(
            sunday[1].with_timezone(&ny).format("%H:%M").to_string(),
            "03:00"
        );
        assert_eq!(count(9).len(), 4);
    }

    fn job(now: DateTime<Utc>, travel_min: i64) -> NowJob {
        NowJob {
            now,
            travel: Duration::minutes(travel_min),
            session: Session::minutes(90, 15),
            place: Point::new(14.55, 121.02),
        }
    }

    #[test]
    fn a_now_job_must_leave_room_for_the_next_booking() {
        let next_at = manila(2026, 12, 7, 16, 0);
        let next = Commitment {
            busy: Session::minutes(60, 15).busy_from(next_at),
            session_start: next_at,
            place: Some(Point::new(14.60, 121.05)),
        };
        let calendar = Calendar {
            blocked: vec![],
            commitments: vec![next],
        };
        let travel = |_: Point, _: Point| Duration::minutes(40);
        // 13:00 + 20 travel + 90 session = 14:50, + 40 travel = 15:30 ≤ 16:00: fits.
        assert!(now_job_fits(
            &calendar,
            &job(manila(2026, 12, 7, 13, 0), 20),
            travel
        ));
        // 14:00 + 20 + 90 = 15:50: no room to travel 40 minutes to the 16:00 booking.
        assert!(!now_job_fits(
            &calendar,
            &job(manila(2026, 12, 7, 14, 0), 20),
            travel
        ));
        // Nearly next door, still the buffers must not overlap (14:00 + 10 + 90 + 15 > 15:45).
        let next_door = |_: Point, _: Point| Duration::minutes(1);
        assert!(!now_job_fits(
            &calendar,
            &job(manila(2026, 12, 7, 14, 0), 10),
            next_door
        ));
        // Past commitments do not matter.
        assert!(now_job_fits(
            &calendar,
            &job(manila(2026, 12, 7, 18, 0), 20),
            travel
        ));
    }

    #[test]
    fn a_now_job_may_not_run_into_time_off() {
        let calendar = Calendar {
            blocked: vec![Interval::new(
                manila(2026, 12, 7, 15, 0),
                manila(2026, 12, 7, 20, 0),
            )],
            commitments: vec![],
        };
        let travel = |_: Point, _: Point| Duration::zero();
        assert!(!now_job_fits(
            &calendar,
            &job(manila(2026, 12, 7, 14, 0), 10),
            travel
        ));
        assert!(now_job_fits(
            &calendar,
            &job(manila(2026, 12, 7, 13, 0), 10),
            travel
        ));
    }
}
