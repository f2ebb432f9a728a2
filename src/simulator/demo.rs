//! `hilot demo`: seed a demo city around Makati and run the simulator gently against a running
//! server, so a newcomer sees therapists move and bookings dispatched within a minute.

use std::time::Duration;

use super::seed::{self, CitySpec, PhoneBlock, MAKATI};
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
    /// Seconds between a therapist's pings.
    #[arg(long, default_value_t = 2.0)]
    pub ping_interval_s: f64,
    /// Seed the accounts, print the dispatcher login, and exit without simulating.
    #[arg(long)]
    pub seed_only: bool,
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
        },
    )
    .await?;
    pool.close().await;
    println!(
        "demo city: {} therapists and {} customers around Makati; dispatcher login {} / {}",
        city.therapists.len(),
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
        dashboards: 0,
        viewport_km: None,
        ramp: Duration::from_secs(10),
        other_node: None,
    };
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
                    "demo: {} pings acked, {} bookings, {} accepted, {} completed, {} unmatched, {} errors",
                    stats.count_of("pings_acked"),
                    stats.count_of("bookings_created"),
                    stats.count_of("jobs_won"),
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

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
