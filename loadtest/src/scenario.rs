//! `loadtest run`: one scenario of simulated therapists, customers and dashboards.
//!
//! Pings and bookings are open-loop: each is due at a scheduled time and its latency counts
//! from then, so a server that stalls cannot slow the load down and hide its own tail
//! (coordinated omission). Latencies are recorded only during the hold, after the ramp.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hilot::simulator::seed::{self, Area, CitySpec, PhoneBlock};
use hilot::simulator::stats::{Metric, Percentiles, Stats};
use hilot::simulator::{Behaviour, Plan, Server, Simulation, Travel};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::machine::Machine;

#[derive(Debug, Clone, Copy, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum City {
    Makati,
    MetroManila,
}

impl City {
    fn area(self) -> Area {
        match self {
            City::Makati => seed::MAKATI,
            City::MetroManila => seed::METRO_MANILA,
        }
    }
}

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct RunArgs {
    /// A name for this scenario in the report.
    #[arg(long, default_value = "scenario")]
    pub name: String,
    /// A line about the conditions (for example, what else ran against the server).
    #[arg(long, default_value = "")]
    pub note: String,
    /// The running server (loopback).
    #[arg(long, env = "HILOT_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The server's database, for seeding the simulated accounts (default: the local cluster).
    /// Another node of the same service (several nodes behind one database and Redis): every
    /// other dashboard watches through it, so the report times fixes that crossed nodes
    /// (`ping → dashboard on another node`, replication lag included) beside those that did not.
    #[arg(long)]
    pub other_node_url: Option<String>,

    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    #[serde(skip)]
    pub database_url: Option<String>,
    /// Simulated therapists, each on its own WebSocket.
    #[arg(long, default_value_t = 2_000)]
    pub therapists: usize,
    /// Simulated customers, each on its own WebSocket.
    #[arg(long, default_value_t = 500)]
    pub customers: usize,
    /// Book-now requests per second across the city (Poisson).
    #[arg(long, default_value_t = 20.0)]
    pub bookings_per_s: f64,
    /// Share (0–1) of those bookings made for later (open, 1.5 to 5.5 hours ahead) instead of
    /// now; half the therapists then keep a weekly schedule.
    #[arg(long, default_value_t = 0.0)]
    pub scheduled_share: f64,
    /// Dashboards watching the city.
    #[arg(long, default_value_t = 5)]
    pub dashboards: usize,
    /// Each dashboard watches a random square this many km wide (default: the whole city).
    #[arg(long)]
    pub viewport_km: Option<f64>,
    /// Seconds between each therapist's pings.
    #[arg(long, default_value_t = 1.0)]
    pub ping_interval_s: f64,
    /// Chance a therapist accepts an offer.
    #[arg(long, default_value_t = 0.8)]
    pub accept_probability: f64,
    /// Shortest and longest time (ms) a therapist takes to answer an offer.
    #[arg(long, default_value_t = 200)]
    pub decide_min_ms: u64,
    #[arg(long, default_value_t = 1_500)]
    pub decide_max_ms: u64,
    /// Seconds between each step of a job (en route, arrived, in session, completed).
    #[arg(long, default_value_t = 2.0)]
    pub job_step_s: f64,
    /// Seconds over which therapists connect; nothing is measured then.
    #[arg(long, default_value_t = 15)]
    pub ramp_s: u64,
    /// Seconds of measured load after the ramp.
    #[arg(long, default_value_t = 60)]
    pub hold_s: u64,
    #[arg(long, value_enum, default_value = "makati")]
    pub city: City,
    /// Where to write the JSON report.
    #[arg(long, default_value = "loadtest-report.json")]
    #[serde(skip)]
    pub json: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: RunArgs,
    pub machine: Machine,
    pub measured_s: f64,
    pub throughput_per_s: BTreeMap<String, f64>,
    pub latencies_ms: BTreeMap<Metric, Percentiles>,
    pub counts: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub error_total: u64,
    pub server_rss_mib: RssReport,
    /// The server's CPU over the hold, all threads, from its `process_cpu_seconds_total`.
    pub server_cpu: Option<CpuReport>,
}

/// What the server's CPU did during the hold, and that CPU divided by each kind of work (all
/// of the server's CPU over each count, so in a scenario with one kind of work it is that
/// work's cost; `loadtest report` separates the kinds across scenarios).
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct CpuReport {
    pub seconds: f64,
    /// Cores kept busy on average (seconds of CPU per second of hold).
    pub cores: f64,
    pub us_per_ping_acked: Option<f64>,
    pub us_per_booking: Option<f64>,
    pub us_per_dashboard_move: Option<f64>,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct RssReport {
    pub before: f64,
    pub max: f64,
    pub end: f64,
}

/// The server, once ready, and a small pool on its database for seeding accounts (the given
/// URL, else the one the server itself would use).
pub async fn ready_server_and_seeding_pool(
    url: &str,
    database_url: Option<&str>,
) -> anyhow::Result<(Server, sqlx::PgPool)> {
    let database_url = match database_url {
        Some(url) if !url.is_empty() => url.to_owned(),
        _ => hilot::config::Settings::default().resolved_database_url()?,
    };
    let server = Server::new(url);
    server.wait_ready(Duration::from_secs(60)).await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&database_url)
        .await
        .context("connecting to the server's database to seed accounts")?;
    Ok((server, pool))
}

pub async fn run(args: RunArgs) -> anyhow::Result<Report> {
    let (server, pool) =
        ready_server_and_seeding_pool(&args.url, args.database_url.as_deref()).await?;
    eprintln!(
        "seeding {} therapists and {} customers ...",
        args.therapists, args.customers
    );
    let city = seed::seed_city(
        &pool,
        &CitySpec {
            block: PhoneBlock::LoadTest,
            therapists: args.therapists,
            customers: args.customers,
            area: args.city.area(),
            travel_km: 10,
            all_services: false,
            online_with_fix: false,
            rng_seed: 7,
            with_schedule: if args.scheduled_share > 0.0 { 0.5 } else { 0.0 },
        },
    )
    .await?;
    pool.close().await;

    let plan = Plan {
        behaviour: Behaviour {
            ping_interval: Duration::from_secs_f64(args.ping_interval_s.max(0.05)),
            accept_probability: args.accept_probability,
            decision_delay: (
                Duration::from_millis(args.decide_min_ms),
                Duration::from_millis(args.decide_max_ms.max(args.decide_min_ms)),
            ),
            travel: Travel::Skip {
                step: Duration::from_secs_f64(args.job_step_s),
            },
            session: Duration::from_secs_f64(args.job_step_s),
            wander_speed_kmh: 15.0,
            wander_radius_m: 1_500.0,
            off_duty_per_hour: 0.0,
            off_duty_for: Duration::ZERO,
        },
        area: args.city.area(),
        bookings_per_s: args.bookings_per_s,
        scheduled_ahead: hilot::simulator::DEFAULT_SCHEDULED_AHEAD,
        scheduled_share: args.scheduled_share,
        dashboards: args.dashboards,
        viewport_km: args.viewport_km,
        ramp: Duration::from_secs(args.ramp_s),
        other_node: args.other_node_url.as_deref().map(Server::new),
    };
    let rss = Arc::new(peak::RssSampler::default());
    let before = rss_mib(&server).await.unwrap_or(0.0);
    let sampler = tokio::spawn(sample_rss(server.clone(), rss.clone()));

    let simulation = Simulation::start(server.clone(), &city, plan);
    let stats = simulation.stats.clone();
    let total = args.ramp_s + args.hold_s;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>5} [{bar:30}] {pos}/{len}s {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix("ramp");
    let mut cpu_at_hold = None;
    if args.ramp_s == 0 {
        cpu_at_hold = server_cpu_s(&server).await;
    }
    for second in 1..=total {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if second == args.ramp_s {
            stats.reset();
            rss.reset_max();
            cpu_at_hold = server_cpu_s(&server).await;
            bar.set_prefix("hold");
        }
        bar.set_position(second);
        bar.set_message(progress_line(&stats));
    }
    bar.finish_and_clear();
    let measured = stats.snapshot();
    let cpu_at_end = server_cpu_s(&server).await;
    eprintln!("stopping: waiting for acknowledgements still owed ...");
    let stats = simulation.stop(Duration::from_secs(20)).await;
    // Pings lost at the stop count against the run too.
    let after_stop = stats.snapshot();
    sampler.abort();
    let end = rss_mib(&server).await.unwrap_or(0.0);

    let hold = args.hold_s.max(1) as f64;
    let rate = |name: &str| {
        ((measured.counts.get(name).copied().unwrap_or(0) as f64 / hold) * 10.0).round() / 10.0
    };
    let throughput_per_s = [
        "pings_sent",
        "pings_acked",
        "bookings_created",
        "scheduled_bookings_created",
        "scheduled_bookings_accepted",
        "offers_received",
        "jobs_won",
        "bookings_completed",
        "dashboard_moves",
    ]
    .into_iter()
    .map(|name| (name.to_owned(), rate(name)))
    .collect();
    let errors = after_stop.errors.clone();
    let report = Report {
        scenario: args.clone(),
        machine: Machine::this(),
        measured_s: hold,
        throughput_per_s,
        latencies_ms: measured.latencies,
        counts: measured.counts,
        error_total: errors.values().sum(),
        errors,
        server_rss_mib: RssReport {
            before,
            max: rss.max().max(end),
            end,
        },
        server_cpu: None,
    };
    let report = Report {
        server_cpu: cpu_at_hold
            .zip(cpu_at_end)
            .map(|(start, end)| cpu_report(end - start, hold, &report.counts)),
        ..report
    };
    print_report(&report);
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", args.json.display()))?;
    eprintln!("report written to {}", args.json.display());
    Ok(report)
}

fn progress_line(stats: &Stats) -> String {
    format!(
        "acked {} · bookings {} · won {} · dashboard moves {} · errors {}",
        stats.count_of("pings_acked"),
        stats.count_of("bookings_created"),
        stats.count_of("jobs_won"),
        stats.count_of("dashboard_moves"),
        stats.error_total()
    )
}

fn print_report(report: &Report) {
    println!(
        "\n{} — {} therapists (ping every {} s), {} bookings/s, {} dashboards; {} s measured",
        report.scenario.name,
        report.scenario.therapists,
        report.scenario.ping_interval_s,
        report.scenario.bookings_per_s,
        report.scenario.dashboards,
        report.measured_s
    );
    println!(
        "{:<36} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    for (metric, p) in &report.latencies_ms {
        println!(
            "{:<36} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            metric.label(),
            p.count,
            p.p50_ms,
            p.p90_ms,
            p.p99_ms,
            p.p999_ms,
            p.max_ms
        );
    }
    let rates: Vec<String> = report
        .throughput_per_s
        .iter()
        .map(|(k, v)| format!("{k} {v}/s"))
        .collect();
    println!("throughput: {}", rates.join(", "));
    println!(
        "server RSS: {:.0} MiB before, {:.0} MiB max, {:.0} MiB at the end",
        report.server_rss_mib.before, report.server_rss_mib.max, report.server_rss_mib.end
    );
    if let Some(cpu) = &report.server_cpu {
        let us = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.1} µs"));
        println!(
            "server CPU: {:.2} s ({:.2} cores); per ping acked {}, per booking {}, per dashboard move {}",
            cpu.seconds,
            cpu.cores,
            us(cpu.us_per_ping_acked),
            us(cpu.us_per_booking),
            us(cpu.us_per_dashboard_move)
        );
    }
    if report.errors.is_empty() {
        println!("errors: none");
    } else {
        for (kind, count) in &report.errors {
            println!("error {kind}: {count}");
        }
    }
}

/// The server's CPU time so far (user + system, all threads), from its `/metrics`.
pub async fn server_cpu_s(server: &Server) -> Option<f64> {
    server.metric("process_cpu_seconds_total").await
}

/// `seconds` of server CPU over `hold` seconds, per unit of each kind of work counted.
pub fn cpu_report(seconds: f64, hold: f64, counts: &BTreeMap<String, u64>) -> CpuReport {
    let per = |name: &str| {
        let n = counts.get(name).copied().unwrap_or(0);
        (n > 0).then(|| round(seconds * 1e6 / n as f64, 1))
    };
    CpuReport {
        seconds: round(seconds, 2),
        cores: round(seconds / hold.max(1e-9), 3),
        us_per_ping_acked: per("pings_acked"),
        us_per_booking: per("bookings_created"),
        us_per_dashboard_move: per("dashboard_moves"),
    }
}

fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// The server's RSS in MiB, from its `/metrics`.
pub async fn rss_mib(server: &Server) -> Option<f64> {
    let bytes = server.metric("process_resident_memory_bytes").await?;
    Some((bytes / 1024.0 / 1024.0 * 10.0).round() / 10.0)
}

async fn sample_rss(server: Server, rss: Arc<peak::RssSampler>) {
    loop {
        if let Some(mib) = rss_mib(&server).await {
            rss.observe(mib);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The largest RSS seen, in an atomic (the bits of a non-negative f64 order like the values).
mod peak {
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Default)]
    pub struct RssSampler {
        max_bits: AtomicU64,
    }

    impl RssSampler {
        pub fn observe(&self, mib: f64) {
            self.max_bits.fetch_max(mib.to_bits(), Ordering::Relaxed);
        }
        pub fn max(&self) -> f64 {
            f64::from_bits(self.max_bits.load(Ordering::Relaxed))
        }
        pub fn reset_max(&self) {
            self.max_bits.store(0, Ordering::Relaxed);
        }
    }
}
