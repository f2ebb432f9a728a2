//! In-process `nearby` on 100,000 therapists spread over Metro Manila: radius 5 km, k = 10.
//! Run: `cargo bench --bench nearby` (the README's Performance table quotes it).

use std::hint::black_box;
use std::time::Duration;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion};
use hilot::geo::index::{LiveFix, LiveIndex, NearbyQuery, ServiceOffer, TherapistProfile};
use hilot::geo::Point;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use uuid::Uuid;

/// Metro Manila's bounding box, roughly: Valenzuela to Muntinlupa, Manila Bay to Marikina.
pub const METRO_MANILA: (f64, f64, f64, f64) = (14.35, 120.95, 14.78, 121.13);
const THERAPISTS: usize = 100_000;

fn random_point(rng: &mut impl Rng) -> Point {
    let (south, west, north, east) = METRO_MANILA;
    Point::new(rng.gen_range(south..north), rng.gen_range(west..east))
}

fn filled_index(rng: &mut impl Rng) -> LiveIndex {
    let index = LiveIndex::new(Duration::from_secs(3600));
    let now = Utc::now();
    for id in 1..=THERAPISTS as i64 {
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
                point: random_point(rng),
                heading: None,
                speed_kmh: None,
                accuracy_m: Some(10.0),
                at: now,
            },
        );
    }
    index
}

fn nearby(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let index = filled_index(&mut rng);
    let queries: Vec<NearbyQuery> = (0..1024)
        .map(|_| NearbyQuery {
            point: random_point(&mut rng),
            service_id: 1,
            radius_m: 5_000.0,
            limit: 10,
            placement: hilot::geo::index::Placement::Exact,
        })
        .collect();
    let now = Utc::now();
    let mut i = 0;
    c.bench_function("nearby_100k_5km_k10", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            black_box(index.nearby(black_box(&queries[i]), now))
        })
    });
}

criterion_group!(benches, nearby);
criterion_main!(benches);
