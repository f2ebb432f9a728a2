//! The simulator behind `hilot demo` and `loadtest`: simulated apps, through the real server,
//! carry bookings from request to completion.

use std::time::Duration;

use hilot::simulator::demo::{book_store_visits, set_alert_after, StoreVisits};
use hilot::simulator::seed::{
    seed_city, seed_makati_stores, Area, CitySpec, PhoneBlock, SimStore, MAKATI,
};
use hilot::simulator::stats::Metric;
use hilot::simulator::{Behaviour, Plan, Server, Simulation, Travel};

use serde_json::json;

use crate::bookings::set_app_setting;
use crate::helpers::{json_body, spawn_app_with, test_settings};

/// A few blocks of Salcedo Village: short trips, so a test sees whole jobs.
const SALCEDO: Area = Area {
    south: 14.558,
    west: 121.018,
    north: 14.562,
    east: 121.022,
};

#[tokio::test]
async fn simulated_therapists_drive_to_customers_and_finish_their_sessions() {
    let mut settings = test_settings();
    settings.arrival_dwell_s = 1;
    let app = spawn_app_with(settings).await;
    let city = seed_city(
        &app.db,
        &CitySpec {
            block: PhoneBlock::Demo,
            therapists: 8,
            customers: 4,
            area: SALCEDO,
            travel_km: 5,
            all_services: true,
            online_with_fix: false,
            rng_seed: 1,
            with_schedule: 0.5,
        },
    )
    .await
    .expect("seeding the city");
    // Bookings for later 10 s ahead with no lead time: each is due at once, so the therapist
    // who took it sets out within the test.
    set_app_setting(
        &app,
        "scheduling",
        json!({"slot_step_minutes": 15, "travel_buffer_minutes": 15, "lead_minutes": 0,
               "horizon_days": 30, "max_ranges_per_day": 6, "unmatched_warning_minutes": 0,
               "reschedule_timeout_s": 3600}),
    )
    .await;
    let plan = Plan {
        behaviour: Behaviour {
            ping_interval: Duration::from_millis(300),
            accept_probability: 1.0,
            decision_delay: (Duration::from_millis(50), Duration::from_millis(150)),
            travel: Travel::Drive { speed_kmh: 120.0 },
            session: Duration::from_millis(500),
            wander_speed_kmh: 10.0,
            wander_radius_m: 100.0,
            off_duty_per_hour: 0.0,
            off_duty_for: Duration::ZERO,
        },
        area: SALCEDO,
        bookings_per_s: 1.0,
        scheduled_share: 0.3,
        scheduled_ahead: (Duration::from_secs(10), Duration::from_secs(10)),
        dashboards: 1,
        viewport_km: None,
        ramp: Duration::from_secs(1),
        other_node: None,
    };
    let simulation = Simulation::start(Server::new(&app.address), &city, plan);
    let stats = simulation.stats.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let scheduled_completed = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM bookings WHERE booking_type = 'scheduled' AND status = 'completed'",
        )
        .fetch_one(&app.db)
        .await
        .unwrap()
    };
    while (stats.count_of("bookings_completed") < 3 || scheduled_completed().await < 1)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let stats = simulation.stop(Duration::from_secs(10)).await;
    let seen = stats.snapshot();

    assert!(
        seen.counts.get("bookings_completed").copied().unwrap_or(0) >= 3,
        "customers saw too few completed bookings: {seen:#?}"
    );
    // Some customers booked for later; therapists with a schedule took them ahead of time and
    // set out when they were due (the lifecycle check below covers them too).
    assert!(
        seen.counts.get("scheduled_jobs_won").copied().unwrap_or(0) >= 1
            && seen
                .counts
                .get("scheduled_jobs_started")
                .copied()
                .unwrap_or(0)
                >= 1,
        "no booking for later was taken and carried out: {seen:#?}"
    );
    assert!(scheduled_completed().await >= 1);
    let scheduled_therapists: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT provider_id) FROM practitioner_availability")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(
        scheduled_therapists, 4,
        "half the therapists keep a schedule"
    );
    assert!(
        seen.errors.is_empty(),
        "the simulated apps hit errors: {:#?}",
        seen.errors
    );
    // One node here: nothing crosses to another node's dashboards.
    for metric in Metric::ALL
        .into_iter()
        .filter(|m| *m != Metric::PingToOtherNodeDashboard)
    {
        assert!(
            seen.latencies[&metric].count > 0,
            "nothing measured for {metric:?}: {seen:#?}"
        );
    }

    // What the customers were told is what the database holds: whole, ordered lifecycles.
    let timelines: Vec<Vec<String>> = sqlx::query_scalar(
        "SELECT array_agg(t.status::text ORDER BY t.id) FROM bookings b \
         JOIN booking_timeline t ON t.booking_id = b.id WHERE b.status = 'completed' GROUP BY b.id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(timelines.len() >= 3, "{timelines:?}");
    for timeline in timelines {
        let steps: Vec<&str> = timeline.iter().map(String::as_str).collect();
        assert_eq!(
            steps,
            [
                "pending",
                "accepted",
                "en_route",
                "arrived",
                "in_progress",
                "completed"
            ],
            "a completed booking skipped or repeated a step"
        );
    }
    // Arrival came from the geofence (the therapists drove to the door), not from a button.
    let by_hand: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM booking_timeline WHERE status = 'arrived' \
         AND (created_by IS NOT NULL OR description NOT LIKE '%geofence%')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(by_hand, 0, "some arrivals were reported by hand");
}

#[tokio::test]
async fn the_demo_city_has_verified_stores_in_makati_with_visits_booked() {
    let mut settings = test_settings();
    settings.watch_interval_s = 1;
    let app = spawn_app_with(settings).await;
    let city = seed_city(
        &app.db,
        &CitySpec {
            block: PhoneBlock::Demo,
            therapists: 2,
            customers: 6,
            area: MAKATI,
            travel_km: 5,
            all_services: false,
            online_with_fix: false,
            rng_seed: 7,
            with_schedule: 0.0,
        },
    )
    .await
    .expect("seeding the city");
    let stores = seed_makati_stores(&app.db, PhoneBlock::Demo, 7)
        .await
        .expect("seeding the stores");
    let again = seed_makati_stores(&app.db, PhoneBlock::Demo, 7)
        .await
        .expect("seeding the stores again");
    let ids = |s: &[SimStore]| s.iter().map(|s| s.store_id).collect::<Vec<_>>();
    assert_eq!(ids(&stores), ids(&again), "seeding again reuses the stores");
    assert!(stores.len() >= 4 && stores.iter().any(|s| s.always_open));

    // The demo's own alert threshold (a short one here, to keep the test quick).
    set_alert_after(&app.db, 2)
        .await
        .expect("setting the demo's alert threshold");
    let server = Server::new(&app.address);
    let visits = book_store_visits(&server, &city.customers, &again)
        .await
        .expect("booking the demo visits");
    let open = stores.iter().filter(|s| s.always_open).count();
    assert_eq!(
        visits,
        StoreVisits {
            checked_in: open,
            unconfirmed: 1,
            appointments: open,
        }
    );

    // The dispatcher sees every store in Makati, and the rooms the walk-ins hold.
    let [west, south, east, north] = MAKATI.bbox();
    let shown = json_body(
        app.get_as(
            &city.admin.token,
            &format!("/v1/dispatch/stores?bbox={west},{south},{east},{north}"),
        )
        .await,
        200,
    )
    .await;
    let shown = shown.as_array().expect("a list of stores");
    assert_eq!(shown.len(), stores.len(), "{shown:?}");
    let in_use: i64 = shown
        .iter()
        .map(|s| s["rooms_in_use"].as_i64().unwrap())
        .sum();
    assert!(in_use >= (open + 1) as i64, "{shown:?}");
    // A customer finds them near Ayala Avenue, selling what they sell.
    let store = &stores[0];
    let nearby = json_body(
        app.get_as(
            &city.customers[0].token,
            &format!(
                "/v1/stores/nearby?lat=14.5547&lng=121.0244&service_id={}&radius_m=5000",
                store.service_ids[0]
            ),
        )
        .await,
        200,
    )
    .await;
    assert!(
        nearby["stores"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["store_id"] == store.store_id.to_string()),
        "{nearby}"
    );

    // The walk-in nobody confirmed raises the demo's alert once it waited the threshold.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let alerts = json_body(app.get_as(&city.admin.token, "/v1/admin/alerts").await, 200).await;
        let waiting = alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["kind"] == "booking_waiting")
            .count();
        if waiting >= 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no waiting alert within 30 s: {alerts}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// A load test stops mid-job; the next one on the same server drives the same accounts. Each
/// simulated app asks for the job it still has under way when it connects, as the real app
/// does on start, and carries it to the end: otherwise those therapists stay busy for the
/// server and every later run has fewer of them.
#[tokio::test]
async fn a_simulated_therapist_carries_on_the_job_a_stopped_run_left_under_way() {
    let app = spawn_app_with(test_settings()).await;
    let city = seed_city(
        &app.db,
        &CitySpec {
            block: PhoneBlock::Demo,
            therapists: 6,
            customers: 4,
            area: SALCEDO,
            travel_km: 5,
            all_services: true,
            online_with_fix: false,
            rng_seed: 3,
            with_schedule: 0.0,
        },
    )
    .await
    .expect("seeding the city");
    let plan = |bookings_per_s: f64, job_step: Duration| Plan {
        behaviour: Behaviour {
            ping_interval: Duration::from_millis(300),
            accept_probability: 1.0,
            decision_delay: (Duration::from_millis(50), Duration::from_millis(150)),
            travel: Travel::Skip { step: job_step },
            session: job_step,
            wander_speed_kmh: 10.0,
            wander_radius_m: 100.0,
            off_duty_per_hour: 0.0,
            off_duty_for: Duration::ZERO,
        },
        area: SALCEDO,
        bookings_per_s,
        scheduled_share: 0.0,
        scheduled_ahead: (Duration::from_secs(3600), Duration::from_secs(3600)),
        dashboards: 0,
        viewport_km: None,
        ramp: Duration::from_millis(500),
        other_node: None,
    };
    let under_way = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT id FROM bookings WHERE status IN ('accepted', 'en_route', 'arrived', 'in_progress') \
             ORDER BY id",
        )
        .fetch_all(&app.db)
        .await
        .unwrap()
    };

    // The first run: jobs take a minute a step, so whatever was taken is under way at the stop.
    let first = Simulation::start(
        Server::new(&app.address),
        &city,
        plan(2.0, Duration::from_secs(60)),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while under_way().await.len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    first.stop(Duration::from_secs(10)).await;
    let left = under_way().await;
    assert!(
        left.len() >= 2,
        "the first run left no job under way: {left:?}"
    );

    // The second run books nothing: its therapists only finish what the first one left.
    let second = Simulation::start(
        Server::new(&app.address),
        &city,
        plan(0.0, Duration::from_millis(300)),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !under_way().await.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = second.stop(Duration::from_secs(10)).await;
    let seen = stats.snapshot();
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status::text FROM bookings WHERE id = ANY($1) ORDER BY id")
            .bind(&left)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(
        statuses,
        vec!["completed".to_owned(); left.len()],
        "the jobs the first run left were not carried out: {seen:#?}"
    );
    assert_eq!(
        seen.counts.get("jobs_resumed").copied(),
        Some(left.len() as u64),
        "{seen:#?}"
    );
    assert!(seen.errors.is_empty(), "{:#?}", seen.errors);
}
