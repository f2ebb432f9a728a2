//! `hilot demo`: seed a demo city around Makati and run the simulator gently against a running
//! server, so a newcomer sees therapists move and bookings dispatched within a minute.

use std::time::Duration;

use anyhow::Context as _;

use super::seed::{self, CitySpec, PhoneBlock, SimAccount, SimStore, MAKATI};
use super::{Behaviour, Plan, Server, Simulation, Travel};
use crate::config::Settings;

/// `hilot demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoOptions {
    /// The running server to drive.
    #[arg(long, env = "HILOT_DEMO_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Verified therapists in the demo city.
    #[arg(long, default_value_t = 300)]
    pub therapists: usize,
    /// Customers who book.
    #[arg(long, default_value_t = 100)]
    pub customers: usize,
    /// Bookings per minute across the city.
    #[arg(long, default_value_t = 12.0)]
    pub bookings_per_minute: f64,
    /// Share of bookings made for later (1.5 to 5.5 hours ahead) rather than now.
    #[arg(long, default_value_t = 0.25)]
    pub scheduled_share: f64,
    /// Seconds between a therapist's pings.
    #[arg(long, default_value_t = 2.0)]
    pub ping_interval_s: f64,
    /// Seed the accounts, print the dispatcher login, and exit without simulating.
    #[arg(long)]
    pub seed_only: bool,
    /// The demo database's `alerts.pending_wait_s`: a booking waiting this long raises an
    /// alert, so a newcomer sees one within the first minute (the walk-in left for a
    /// dispatcher). Production keeps its own setting (default 120 s); 0 leaves it alone.
    #[arg(long, env = "HILOT_DEMO_ALERT_AFTER_S", default_value_t = DEMO_ALERT_AFTER_S)]
    pub alert_after_s: u64,
}

/// The demo's alert threshold for waiting bookings, in seconds (see `--alert-after-s`).
pub const DEMO_ALERT_AFTER_S: u64 = 30;

/// Sets `alerts.pending_wait_s` in the demo's database (the server reads it at every look for
/// alerts), keeping the other thresholds.
pub async fn set_alert_after(pool: &sqlx::PgPool, seconds: u64) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE app_settings SET value = value || jsonb_build_object('pending_wait_s', $1::bigint) \
         WHERE key = 'alerts'",
    )
    .bind(i64::try_from(seconds).unwrap_or(i64::MAX))
    .execute(pool)
    .await
    .context("setting the demo's alert threshold")?;
    Ok(())
}

/// How often the demo prints what has happened.
const REPORT_EVERY: Duration = Duration::from_secs(15);

pub fn gentle_behaviour(ping_interval: Duration) -> Behaviour {
    Behaviour {
        ping_interval,
        accept_probability: 0.7,
        decision_delay: (Duration::from_secs(1), Duration::from_secs(5)),
        travel: Travel::Drive { speed_kmh: 40.0 },
        session: Duration::from_secs(45),
        wander_speed_kmh: 12.0,
        wander_radius_m: 1_500.0,
        off_duty_per_hour: 2.0,
        off_duty_for: Duration::from_secs(90),
    }
}

pub async fn run(settings: &Settings, options: DemoOptions) -> anyhow::Result<()> {
    let pool = crate::db::connect_and_migrate(settings).await?;
    let city = seed::seed_city(
        &pool,
        &CitySpec {
            block: PhoneBlock::Demo,
            therapists: options.therapists,
            customers: options.customers,
            area: MAKATI,
            travel_km: 8,
            all_services: false,
            online_with_fix: false,
            rng_seed: 2026,
            with_schedule: 0.5,
        },
    )
    .await?;
    let stores = seed::seed_makati_stores(&pool, PhoneBlock::Demo, 2026).await?;
    if options.alert_after_s > 0 {
        set_alert_after(&pool, options.alert_after_s).await?;
        println!(
            "demo: a booking waiting {} s raises an alert (alerts.pending_wait_s in this database; \
             --alert-after-s 0 keeps the setting)",
            options.alert_after_s
        );
    }
    pool.close().await;
    println!(
        "demo city: {} therapists (half with a weekly schedule), {} stores and {} customers around Makati; dispatcher login {} / {}",
        city.therapists.len(),
        stores.len(),
        city.customers.len(),
        city.admin.phone,
        seed::SIMULATED_PASSWORD
    );
    if options.seed_only {
        return Ok(());
    }
    let server = Server::new(&options.url);
    server.wait_ready(Duration::from_secs(120)).await?;
    let url = options.url.trim_end_matches('/');
    println!(
        "\n  Hilot is running with a demo city around Makati.\n  \
         Dashboard:        {url}/\n  \
         Dispatcher login: {} / {}\n  \
         API reference:    {url}/openapi.json\n  \
         Ctrl-C stops the server and the demo.\n",
        city.admin.phone,
        seed::SIMULATED_PASSWORD
    );
    let plan = Plan {
        behaviour: gentle_behaviour(Duration::from_secs_f64(options.ping_interval_s.max(0.2))),
        area: MAKATI,
        bookings_per_s: options.bookings_per_minute / 60.0,
        scheduled_ahead: super::DEFAULT_SCHEDULED_AHEAD,
        scheduled_share: options.scheduled_share,
        dashboards: 0,
        viewport_km: None,
        ramp: Duration::from_secs(10),
        other_node: None,
    };
    match book_store_visits(&server, &city.customers, &stores).await {
        Ok(visits) => println!(
            "demo: in-store bookings: {} checked in, {} appointments later today, {} waiting for a \
             store's confirmation (an alert on the console once it waited alerts.pending_wait_s)",
            visits.checked_in, visits.appointments, visits.unconfirmed
        ),
        Err(e) => println!("demo: could not book the store visits: {e:#}"),
    }
    let simulation = Simulation::start(server, &city, plan);
    let stats = simulation.stats.clone();
    let mut report = tokio::time::interval(REPORT_EVERY);
    report.tick().await;
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = report.tick() => {
                println!(
                    "demo: {} pings acked, {} bookings now and {} for later, {} accepted now and {} for later, {} completed, {} unmatched, {} errors",
                    stats.count_of("pings_acked"),
                    stats.count_of("bookings_created"),
                    stats.count_of("scheduled_bookings_created"),
                    stats.count_of("jobs_won"),
                    stats.count_of("scheduled_jobs_won"),
                    stats.count_of("bookings_completed"),
                    stats.count_of("bookings_unmatched"),
                    stats.error_total(),
                );
                for (kind, count) in stats.snapshot().errors {
                    println!("demo:   error {kind}: {count}");
                }
            }
            _ = &mut stop => break,
        }
    }
    println!("demo: stopping");
    simulation.stop(Duration::from_secs(10)).await;
    Ok(())
}

/// What [`book_store_visits`] left at the stores.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StoreVisits {
    /// Walk-ins the store confirmed and the customer checked in to.
    pub checked_in: usize,
    /// Walk-ins nobody confirmed: after `alerts.pending_wait_s` each is a `booking_waiting` alert.
    pub unconfirmed: usize,
    /// Confirmed appointments later today.
    pub appointments: usize,
}

async fn call(
    server: &Server,
    token: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let mut request = server.http.post(server.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("POST {path}"))?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "POST {path}: {status} {answer}");
    Ok(answer)
}

/// `POST /v1/bookings` of an in-store visit, now or at `at`, paid in cash.
async fn book_in_store(
    server: &Server,
    customer: &SimAccount,
    store: &SimStore,
    service: &uuid::Uuid,
    at: Option<chrono::DateTime<chrono::Utc>>,
) -> anyhow::Result<serde_json::Value> {
    let mut body = serde_json::json!({
        "service_id": service, "type": "in_store", "store_id": store.store_id,
        "booking_type": if at.is_some() { "scheduled" } else { "now" },
        "payment_method": "cash",
    });
    if let Some(at) = at {
        body["scheduled_at"] = serde_json::json!(at);
    }
    call(server, &customer.token, "/v1/bookings", Some(body)).await
}

/// Books visits at the demo's round-the-clock stores through the public API, so a newcomer
/// sees in-store bookings on the console at once: at each, a walk-in confirmed and checked in,
/// an appointment in three hours, and one walk-in left for a dispatcher (a waiting alert soon).
pub async fn book_store_visits(
    server: &Server,
    customers: &[SimAccount],
    stores: &[SimStore],
) -> anyhow::Result<StoreVisits> {
    let mut visits = StoreVisits::default();
    let mut customers = customers.iter().rev();
    let open: Vec<&SimStore> = stores.iter().filter(|s| s.always_open).collect();
    for (n, store) in open.iter().enumerate() {
        let service = store
            .service_ids
            .first()
            .context("a demo store sells nothing")?;
        let mut next_customer = || customers.next().context("too few demo customers");
        let walker = next_customer()?;
        let walk_in = book_in_store(server, walker, store, service, None).await?;
        let id = walk_in["id"].as_str().context("a booking without an id")?;
        let confirm = format!("/v1/store/bookings/{id}/confirm");
        call(server, &store.account.token, &confirm, None).await?;
        call(
            server,
            &walker.token,
            &format!("/v1/bookings/{id}/check-in"),
            None,
        )
        .await?;
        visits.checked_in += 1;
        let later = chrono::Utc::now() + chrono::Duration::hours(3);
        let appointment =
            book_in_store(server, next_customer()?, store, service, Some(later)).await?;
        let id = appointment["id"]
            .as_str()
            .context("a booking without an id")?;
        let confirm = format!("/v1/store/bookings/{id}/confirm");
        call(server, &store.account.token, &confirm, None).await?;
        visits.appointments += 1;
        if n == 0 {
            book_in_store(server, next_customer()?, store, service, None).await?;
            visits.unconfirmed += 1;
        }
    }
    Ok(visits)
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
