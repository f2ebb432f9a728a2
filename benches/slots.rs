//! Slots near a place (`GET /v1/slots`), computed from the in-memory diary: a day in a city of
//! 2,000 therapists spread over Metro Manila, each working 09:00–18:00 Manila time with three
//! bookings that day; 60-minute sessions, 15-minute buffers and step, 20 km widest radius.
//! Run: `cargo bench --bench slots` (the README's Performance section quotes it; target ≤ 20 ms).

use std::hint::black_box;

use chrono::{Duration, NaiveDate, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use hilot::geo::index::{ServiceOffer, TherapistProfile};
use hilot::geo::Point;
use hilot::schedule::diary::{Diary, Entry, SlotsNearQuery};
use hilot::schedule::slots::{Calendar, Commitment, Interval, Session};
use hilot::schedule::weekly::{self, DayRange, WeeklySchedule};
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use uuid::Uuid;

/// Metro Manila's bounding box, roughly (as in benches/nearby.rs).
const METRO_MANILA: (f64, f64, f64, f64) = (14.35, 120.95, 14.78, 121.13);
const THERAPISTS: i64 = 2_000;

fn random_point(rng: &mut impl Rng) -> Point {
    let (south, west, north, east) = METRO_MANILA;
    Point::new(rng.gen_range(south..north), rng.gen_range(west..east))
}

fn filled_diary(rng: &mut impl Rng, date: NaiveDate, session: Session) -> Diary {
    let diary = Diary::new();
    let mut schedule = WeeklySchedule::empty(weekly::DEFAULT_TIMEZONE);
    for day in &mut schedule.days {
        day.push(DayRange {
            start: 9 * 60,
            end: 18 * 60,
        });
    }
    for id in 1..=THERAPISTS {
        let base = random_point(rng);
        // Three bookings that day, at random quarter hours within working hours.
        let commitments = (0..3)
            .map(|_| {
                let minute = 9 * 60 + 15 * rng.gen_range(0..32u16);
                let start = weekly::local_instant(weekly::DEFAULT_TIMEZONE, date, minute).unwrap();
                Commitment {
                    busy: session.busy_from(start),
                    session_start: start,
                    place: Some(random_point(rng)),
                }
            })
            .collect();
        diary.put(Entry {
            profile: TherapistProfile {
                provider_id: id,
                user_id: id,
                uuid: Uuid::from_u128(id as u128),
                first_name: "Therapist".into(),
                average_rating: Decimal::new(45, 1),
                verified: true,
                active: true,
                online: true,
                service_radius_km: 20,
                services: vec![ServiceOffer {
                    service_id: 1,
                    price: Decimal::from(800),
                    available: true,
                    home_service_enabled: true,
                    base_distance_km: 5,
                    per_km_surcharge: Decimal::from(20),
                    max_travel_distance_km: 20,
                }],
            },
            base: Some(base),
            schedule: Some(schedule.clone()),
            calendar: Calendar {
                blocked: vec![Interval::new(
                    weekly::local_instant(weekly::DEFAULT_TIMEZONE, date, 12 * 60).unwrap(),
                    weekly::local_instant(weekly::DEFAULT_TIMEZONE, date, 13 * 60).unwrap(),
                )],
                commitments,
            },
        });
    }
    diary
}

fn slots_near(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let now = Utc::now();
    let date = (now + Duration::days(3))
        .with_timezone(&weekly::DEFAULT_TIMEZONE)
        .date_naive();
    let session = Session::minutes(60, 15);
    let diary = filled_diary(&mut rng, date, session);
    let window = (
        weekly::local_instant(weekly::DEFAULT_TIMEZONE, date, 0).unwrap(),
        weekly::local_instant(weekly::DEFAULT_TIMEZONE, date, weekly::MINUTES_PER_DAY).unwrap(),
    );
    let places: Vec<Point> = (0..256).map(|_| random_point(&mut rng)).collect();
    let mut i = 0;
    c.bench_function("slots_near_2000_therapists_one_day", |b| {
        b.iter(|| {
            i = (i + 1) % places.len();
            let found = diary.slots_near(&SlotsNearQuery {
                place: places[i],
                service_id: 1,
                session,
                window,
                earliest: now,
                latest: now + Duration::days(30),
                step: Duration::minutes(15),
                max_radius_m: 20_000.0,
            });
            black_box(found)
        })
    });
}

criterion_group!(benches, slots_near);
criterion_main!(benches);
