//! Matcher rounds in one city with 10,000 available therapists (Metro Manila):
//! - `dispatch_round_1000_bookings`: 1,000 bookings arriving in one window, assigned in one round;
//! - `dispatch_round_10k_parked`: a therapist comes online while 10,000 bookings wait where
//!   nobody is in reach (another island); the event and the round that follows.
//!
//! Run: `cargo bench --bench dispatch` (scripts/bench reports both in the README).

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion};
use hilot::dispatch::waiting::{admit_all, RoundRules, WaitingBooking, WaitingBookings};
use hilot::geo::index::{LiveFix, LiveIndex, ServiceOffer, TherapistProfile};
use hilot::geo::{EtaModel, Point};
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use uuid::Uuid;

/// Metro Manila's bounding box, roughly.
const METRO_MANILA: (f64, f64, f64, f64) = (14.35, 120.95, 14.78, 121.13);
/// Cebu City, 570 km away: bookings there have nobody in reach.
const CEBU: (f64, f64, f64, f64) = (10.25, 123.85, 10.40, 123.95);
const THERAPISTS: i64 = 10_000;

fn random_point(rng: &mut impl Rng, (south, west, north, east): (f64, f64, f64, f64)) -> Point {
    Point::new(rng.gen_range(south..north), rng.gen_range(west..east))
}

fn add_therapist(index: &LiveIndex, id: i64, at: Point) {
    index.upsert_profile(TherapistProfile {
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
    });
    index.update_fix(
        id,
        LiveFix {
            point: at,
            heading: None,
            speed_kmh: None,
            accuracy_m: Some(10.0),
            at: Utc::now(),
        },
    );
}

fn city(rng: &mut impl Rng) -> LiveIndex {
    let index = LiveIndex::new(Duration::from_secs(24 * 3600));
    for id in 1..=THERAPISTS {
        add_therapist(&index, id, random_point(rng, METRO_MANILA));
    }
    index
}

fn rules() -> RoundRules {
    RoundRules {
        batch_size: 1,
        radius_step_m: 5_000.0,
        max_radius_m: 20_000.0,
        solve_budget: Duration::from_millis(20),
        search_budget: Duration::from_secs(60),
    }
}

fn waiting(
    rng: &mut impl Rng,
    count: i64,
    area: (f64, f64, f64, f64),
    radius_m: f64,
) -> WaitingBookings {
    let now = Utc::now();
    let mut waiting = WaitingBookings::default();
    for id in 1..=count {
        let requested = now - chrono::Duration::milliseconds(rng.gen_range(0..1000));
        waiting.insert(
            WaitingBooking::new(
                id,
                random_point(rng, area),
                1,
                requested,
                now + chrono::Duration::minutes(5),
                radius_m,
            )
            .expect("valid point"),
        );
    }
    waiting
}

fn round_of_1000_bookings(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let index = city(&mut rng);
    let filter = admit_all();
    c.bench_function("dispatch_round_1000_bookings", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let mut bookings = waiting(&mut rng, 1_000, METRO_MANILA, 5_000.0);
                let started = Instant::now();
                let (planned, _) =
                    bookings.plan_round(&index, EtaModel::default(), &rules(), &filter, Utc::now());
                total += started.elapsed();
                for offer in black_box(planned) {
                    index.release_offer(offer.provider_id);
                }
            }
            total
        })
    });
}

fn round_with_10k_parked(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let index = city(&mut rng);
    let filter = admit_all();
    // Already at the widest radius (proving an empty 20 km is the index's costliest search), so
    // the first round, which finds nobody for any of them and parks them, is quick to set up.
    let mut bookings = waiting(&mut rng, 10_000, CEBU, 20_000.0);
    let (planned, _) =
        bookings.plan_round(&index, EtaModel::default(), &rules(), &filter, Utc::now());
    assert!(planned.is_empty());
    let newcomer = THERAPISTS + 1;
    add_therapist(&index, newcomer, random_point(&mut rng, METRO_MANILA));
    let at = index.live_fix(newcomer).expect("placed").point;
    c.bench_function("dispatch_round_10k_parked", |b| {
        b.iter(|| {
            bookings.supply_at(newcomer, at, false);
            let (planned, _) =
                bookings.plan_round(&index, EtaModel::default(), &rules(), &filter, Utc::now());
            black_box(planned)
        })
    });
}

criterion_group!(benches, round_of_1000_bookings, round_with_10k_parked);
criterion_main!(benches);
