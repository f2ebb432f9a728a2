//! `loadtest quality`: dispatch quality, first come nearest first against batched assignment.
//!
//! One seeded stream of requests over a seeded city is replayed twice in simulated time, through
//! Hilot's live index: once first come, nearest first (each waiting booking, oldest first, takes
//! the nearest free therapist as soon as there is one), once through the matcher's own code (the
//! waiting bookings and the assignment) with rounds every `--window-ms`. Therapists accept at once, travel at the ETA
//! model's speed, spend `--session-min` with the customer and stay where the session was. The
//! stream's demand is a share of supply (80–120 % by default). Reported per share and policy:
//! fulfilment, mean pickup ETA and p95 wait (request to offer; unserved requests count as the
//! pending timeout).

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hilot::dispatch::waiting::{admit_all, RoundRules, WaitingBooking, WaitingBookings};
use hilot::geo::index::{
    LiveFix, LiveIndex, NearbyQuery, ServiceOffer, TherapistProfile, TherapistState,
};
use hilot::geo::{EtaModel, Point};
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;

/// Central Metro Manila (Makati, BGC, Pasig, Mandaluyong): about 12 km × 11 km.
const CITY: (f64, f64, f64, f64) = (14.52, 120.99, 14.62, 121.10);
/// The simulation's time step.
const TICK: Duration = Duration::from_millis(100);

#[derive(Debug, clap::Args)]
pub struct QualityArgs {
    #[arg(long, default_value_t = 300)]
    therapists: usize,
    /// Demand as percentages of supply, comma-separated.
    #[arg(long, default_value = "80,100,120", value_delimiter = ',')]
    demand_pct: Vec<u32>,
    /// Simulated length of each run.
    #[arg(long, default_value_t = 10_800)]
    duration_s: u64,
    #[arg(long, default_value_t = 30)]
    session_min: u64,
    #[arg(long, default_value_t = 1000)]
    window_ms: u64,
    #[arg(long, default_value_t = 300)]
    pending_timeout_s: u64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where to write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

struct Request {
    at: DateTime<Utc>,
    point: Point,
}

#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    requests: usize,
    fulfilled: usize,
    mean_pickup_eta_s: f64,
    p95_wait_s: f64,
}

fn random_point(rng: &mut impl Rng) -> Point {
    let (south, west, north, east) = CITY;
    Point::new(rng.gen_range(south..north), rng.gen_range(west..east))
}

fn profile(id: i64) -> TherapistProfile {
    TherapistProfile {
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
            per_km_surcharge: Decimal::ZERO,
            max_travel_distance_km: 20,
        }],
    }
}

fn place(index: &LiveIndex, id: i64, point: Point, at: DateTime<Utc>) {
    index.update_fix(
        id,
        LiveFix {
            point,
            heading: None,
            speed_kmh: None,
            accuracy_m: Some(5.0),
            at,
        },
    );
}

/// Replays `requests` against therapists starting at `starts`: first come, nearest first when
/// `window` is `None` (each waiting booking, oldest first, takes the nearest free therapist as
/// soon as there is one), otherwise the matcher's batched rounds every `window`.
fn replay(
    args: &QualityArgs,
    starts: &[Point],
    requests: &[Request],
    start: DateTime<Utc>,
    window: Option<Duration>,
) -> Outcome {
    let eta = EtaModel::default();
    let index = LiveIndex::new(Duration::from_secs(365 * 24 * 3600));
    for (i, point) in starts.iter().enumerate() {
        let id = i as i64 + 1;
        index.upsert_profile(profile(id));
        place(&index, id, *point, start);
    }
    let rules = RoundRules {
        batch_size: 1,
        radius_step_m: 5_000.0,
        max_radius_m: 20_000.0,
        solve_budget: Duration::from_millis(20),
        search_budget: Duration::from_secs(60),
    };
    let filter = admit_all();
    let pending_timeout = chrono::Duration::seconds(args.pending_timeout_s as i64);
    let session = chrono::Duration::minutes(args.session_min as i64);
    let tick = chrono::Duration::from_std(TICK).expect("small");
    let round_every = chrono::Duration::from_std(window.unwrap_or_default()).expect("small");
    let end = start + chrono::Duration::seconds(args.duration_s as i64) + pending_timeout;
    let mut waiting = WaitingBookings::default();
    // Free again at: (when, therapist, where).
    let mut busy: Vec<(DateTime<Utc>, i64, Point)> = Vec::new();
    let mut next_request = 0;
    // As on the server: a round runs one window after the first change since the last round.
    let mut round_at: Option<DateTime<Utc>> = None;
    let mut pickup_etas = Vec::new();
    let mut waits = Vec::new();
    let mut now = start;
    while now <= end {
        let requests_before = next_request;
        let busy_before = busy.len();
        while next_request < requests.len() && requests[next_request].at <= now {
            let request = &requests[next_request];
            let id = next_request as i64 + 1;
            waiting.insert(
                WaitingBooking::new(
                    id,
                    request.point,
                    1,
                    request.at,
                    request.at + pending_timeout,
                    5_000.0,
                )
                .expect("valid point"),
            );
            next_request += 1;
        }
        busy.retain(|&(free_at, provider, point)| {
            if free_at > now {
                return true;
            }
            place(&index, provider, point, now);
            index.set_dispatch_state(provider, None);
            waiting.supply_at(provider, point, false);
            false
        });
        for id in waiting.ids() {
            if waiting.get(id).is_some_and(|b| b.deadline <= now) {
                waiting.remove(id);
                waits.push(pending_timeout.num_milliseconds() as f64 / 1000.0);
            }
        }
        let changed = next_request != requests_before || busy.len() != busy_before;
        if window.is_none() && !changed {
            now += tick;
            continue;
        }
        if window.is_none() {
            // First come, nearest first: oldest booking first, nearest free therapist, whenever
            // a booking arrives or a therapist is freed.
            let mut queue: Vec<(DateTime<Utc>, i64)> = waiting
                .ids()
                .into_iter()
                .filter_map(|id| waiting.get(id).map(|b| (b.requested_at, id)))
                .collect();
            queue.sort_unstable();
            for (_, id) in queue {
                let booking = waiting.get(id).expect("listed");
                let nearest = index.nearby(
                    &NearbyQuery {
                        point: booking.point,
                        service_id: 1,
                        radius_m: rules.max_radius_m,
                        limit: 1,
                        placement: hilot::geo::index::Placement::Exact,
                    },
                    now,
                );
                let Some(hit) = nearest.first() else { continue };
                let booking = waiting.remove(id).expect("listed");
                index.set_dispatch_state(hit.provider_id, Some(TherapistState::Busy));
                let eta_s = eta.eta_seconds(hit.distance_m);
                let travel = chrono::Duration::seconds(i64::from(eta_s));
                busy.push((now + travel + session, hit.provider_id, booking.point));
                pickup_etas.push(f64::from(eta_s));
                waits.push((now - booking.requested_at).num_milliseconds() as f64 / 1000.0);
            }
            now += tick;
            continue;
        }
        if waiting.has_dirty() && round_at.is_none() {
            round_at = Some(now + round_every);
        }
        if round_at.is_some_and(|at| now >= at) {
            round_at = None;
            let (planned, _) = waiting.plan_round(&index, eta, &rules, &filter, now);
            for offer in planned {
                let Some(booking) = waiting.remove(offer.booking_id) else {
                    continue;
                };
                index.set_dispatch_state(offer.provider_id, Some(TherapistState::Busy));
                let travel = chrono::Duration::seconds(i64::from(offer.eta_seconds));
                busy.push((now + travel + session, offer.provider_id, booking.point));
                pickup_etas.push(f64::from(offer.eta_seconds));
                waits.push((now - booking.requested_at).num_milliseconds() as f64 / 1000.0);
            }
        }
        now += tick;
    }
    waits.sort_by(f64::total_cmp);
    let p95 = waits
        .get(((waits.len() as f64 * 0.95).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0.0);
    Outcome {
        requests: requests.len(),
        fulfilled: pickup_etas.len(),
        mean_pickup_eta_s: if pickup_etas.is_empty() {
            0.0
        } else {
            pickup_etas.iter().sum::<f64>() / pickup_etas.len() as f64
        },
        p95_wait_s: p95,
    }
}

pub fn run(args: QualityArgs) -> anyhow::Result<()> {
    let start = DateTime::parse_from_rfc3339("2026-12-01T08:00:00Z")?.with_timezone(&Utc);
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let starts: Vec<Point> = (0..args.therapists)
        .map(|_| random_point(&mut rng))
        .collect();
    // Supply: a therapist completes one booking per (session + a typical pickup of ~10 min).
    let cycle_s = args.session_min as f64 * 60.0 + 600.0;
    let supply_per_s = args.therapists as f64 / cycle_s;
    let mut levels = Vec::new();
    println!(
        "{:>7} | {:<22} | {:>8} | {:>11} | {:>15} | {:>10}",
        "demand", "policy", "requests", "fulfilment", "mean pickup ETA", "p95 wait"
    );
    for &pct in &args.demand_pct {
        let rate = supply_per_s * f64::from(pct) / 100.0;
        let mut stream = rand::rngs::StdRng::seed_from_u64(args.seed ^ u64::from(pct));
        let mut requests = Vec::new();
        let mut t = 0.0;
        loop {
            t += -(1.0 - stream.gen::<f64>()).ln() / rate;
            if t >= args.duration_s as f64 {
                break;
            }
            requests.push(Request {
                at: start + chrono::Duration::milliseconds((t * 1000.0) as i64),
                point: random_point(&mut stream),
            });
        }
        for (policy, window) in [
            ("first_come_nearest", None),
            ("batched", Some(Duration::from_millis(args.window_ms))),
        ] {
            let outcome = replay(&args, &starts, &requests, start, window);
            let fulfilment = 100.0 * outcome.fulfilled as f64 / outcome.requests.max(1) as f64;
            println!(
                "{:>6}% | {:<22} | {:>8} | {:>10.1}% | {:>13.0} s | {:>8.1} s",
                pct,
                policy,
                outcome.requests,
                fulfilment,
                outcome.mean_pickup_eta_s,
                outcome.p95_wait_s
            );
            levels.push(json!({
                "demand_pct": pct,
                "policy": policy,
                "window_ms": window.map(|w| w.as_millis() as u64),
                "requests": outcome.requests,
                "fulfilled": outcome.fulfilled,
                "fulfilment_pct": fulfilment,
                "mean_pickup_eta_s": outcome.mean_pickup_eta_s,
                "p95_wait_s": outcome.p95_wait_s,
            }));
        }
    }
    if let Some(path) = &args.json {
        let report = json!({
            "therapists": args.therapists,
            "duration_s": args.duration_s,
            "session_min": args.session_min,
            "window_ms": args.window_ms,
            "pending_timeout_s": args.pending_timeout_s,
            "seed": args.seed,
            "levels": levels,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
