//! `loadtest overload`: twice the load the server can take, and what becomes of it.
//!
//! First the capacity: `GET /v1/bookings` (a token check and a database query per request)
//! closed-loop from 16 clients for a few seconds. Then an open loop at `--factor` times that
//! rate: every request is due at its scheduled time and its latency counts from then
//! (coordinated omission), whether the server admits it (2xx) or refuses it (503 with
//! `Retry-After`). A server that sheds load well keeps the admitted requests fast and refuses
//! the rest quickly; one that queues everything makes every latency grow for the whole run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use hilot::simulator::seed::{self, CitySpec, PhoneBlock};
use hilot::simulator::stats::{latency_histogram, Percentiles};
use parking_lot::Mutex;
use serde::Serialize;

use crate::machine::Machine;
use crate::scenario::server_cpu_s;

/// Clients of the capacity probe, each issuing its next request as soon as one is answered.
const PROBE_CLIENTS: usize = 16;
const PROBE: Duration = Duration::from_secs(5);
/// Requests the load generator keeps outstanding at most (beyond, it counts them as not sent:
/// its own limit, not the server's). On a machine it shares with the server, a generator that
/// opens thousands of connections starves the server it measures.
const MAX_OUTSTANDING: usize = 1_024;

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct OverloadArgs {
    #[arg(long, default_value = "overload")]
    pub name: String,
    #[arg(long, env = "HILOT_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    #[serde(skip)]
    pub database_url: Option<String>,
    /// Offered load as a multiple of the measured capacity.
    #[arg(long, default_value_t = 2.0)]
    pub factor: f64,
    /// Seconds of overload measured.
    #[arg(long, default_value_t = 20)]
    pub hold_s: u64,
    #[arg(long, default_value = "loadtest-overload.json")]
    #[serde(skip)]
    pub json: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct OverloadReport {
    pub scenario: OverloadArgs,
    pub machine: Machine,
    /// Requests per second the server answered closed-loop (the capacity).
    pub capacity_per_s: f64,
    pub offered_per_s: f64,
    pub admitted_per_s: f64,
    pub refused_per_s: f64,
    pub admitted_ms: Percentiles,
    pub refused_ms: Percentiles,
    /// Anything but 2xx and 503: by kind.
    pub errors: BTreeMap<String, u64>,
    pub error_total: u64,
    /// Requests the load generator itself could not send in time (its own limit).
    pub not_sent: u64,
    pub server_cpu_s: Option<f64>,
}

#[derive(Default)]
struct Outcomes {
    admitted: Option<Histogram<u64>>,
    refused: Option<Histogram<u64>>,
    errors: BTreeMap<String, u64>,
}

pub async fn run(args: OverloadArgs) -> anyhow::Result<OverloadReport> {
    let (server, pool) =
        crate::scenario::ready_server_and_seeding_pool(&args.url, args.database_url.as_deref())
            .await?;
    let city = seed::seed_city(
        &pool,
        &CitySpec {
            block: PhoneBlock::LoadTest,
            therapists: 1,
            customers: 64,
            area: seed::MAKATI,
            travel_km: 10,
            all_services: false,
            online_with_fix: false,
            rng_seed: 14,
            with_schedule: 0.0,
        },
    )
    .await?;
    pool.close().await;
    let tokens: Arc<Vec<String>> =
        Arc::new(city.customers.iter().map(|c| c.token.clone()).collect());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(MAX_OUTSTANDING)
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = server.url("/v1/bookings");

    eprintln!(
        "capacity: {PROBE_CLIENTS} clients, closed loop, {} s ...",
        PROBE.as_secs()
    );
    let probe_end = Instant::now() + PROBE;
    let mut probes = tokio::task::JoinSet::new();
    for i in 0..PROBE_CLIENTS {
        let (http, url, token) = (http.clone(), url.clone(), tokens[i % tokens.len()].clone());
        probes.spawn(async move {
            let mut answered = 0u64;
            while Instant::now() < probe_end {
                let ok = http
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                answered += u64::from(ok);
            }
            answered
        });
    }
    let mut answered = 0;
    while let Some(n) = probes.join_next().await {
        answered += n?;
    }
    let capacity = answered as f64 / PROBE.as_secs_f64();
    anyhow::ensure!(
        capacity > 0.0,
        "the server answered nothing in the capacity probe"
    );
    let offered = capacity * args.factor;
    eprintln!(
        "capacity {capacity:.0}/s; offering {offered:.0}/s for {} s ...",
        args.hold_s
    );

    let outcomes = Arc::new(Mutex::new(Outcomes {
        admitted: Some(latency_histogram()),
        refused: Some(latency_histogram()),
        errors: BTreeMap::new(),
    }));
    let outstanding = Arc::new(tokio::sync::Semaphore::new(MAX_OUTSTANDING));
    let cpu_before = server_cpu_s(&server).await;
    let interval = Duration::from_secs_f64(1.0 / offered);
    let started = Instant::now();
    let total = (offered * args.hold_s as f64) as u64;
    let mut not_sent = 0u64;
    let mut requests = tokio::task::JoinSet::new();
    for n in 0..total {
        let due = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = outstanding.clone().try_acquire_owned() else {
            not_sent += 1;
            continue;
        };
        let (http, url, token) = (
            http.clone(),
            url.clone(),
            tokens[n as usize % tokens.len()].clone(),
        );
        let outcomes = outcomes.clone();
        requests.spawn(async move {
            let _permit = permit;
            let result = http.get(&url).bearer_auth(&token).send().await;
            let us = due.elapsed().as_micros() as u64;
            let mut outcomes = outcomes.lock();
            match result.map(|r| r.status().as_u16()) {
                Ok(200..=299) => outcomes
                    .admitted
                    .as_mut()
                    .unwrap()
                    .saturating_record(us.max(1)),
                Ok(503) => outcomes
                    .refused
                    .as_mut()
                    .unwrap()
                    .saturating_record(us.max(1)),
                Ok(status) => *outcomes.errors.entry(format!("http_{status}")).or_default() += 1,
                Err(error) => {
                    let kind = if error.is_timeout() {
                        "timeout"
                    } else {
                        "connection"
                    };
                    *outcomes.errors.entry(kind.to_owned()).or_default() += 1;
                }
            }
        });
    }
    while requests.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = server_cpu_s(&server).await;
    let outcomes = std::mem::take(&mut *outcomes.lock());
    let admitted = outcomes.admitted.unwrap_or_else(latency_histogram);
    let refused = outcomes.refused.unwrap_or_else(latency_histogram);
    let per_s = |n: u64| (n as f64 / elapsed * 10.0).round() / 10.0;
    let report = OverloadReport {
        scenario: args.clone(),
        machine: Machine::this(),
        capacity_per_s: (capacity * 10.0).round() / 10.0,
        offered_per_s: (offered * 10.0).round() / 10.0,
        admitted_per_s: per_s(admitted.len()),
        refused_per_s: per_s(refused.len()),
        admitted_ms: Percentiles::of(&admitted),
        refused_ms: Percentiles::of(&refused),
        error_total: outcomes.errors.values().sum(),
        errors: outcomes.errors,
        not_sent,
        server_cpu_s: cpu_before
            .zip(cpu_after)
            .map(|(b, a)| ((a - b) * 100.0).round() / 100.0),
    };
    println!(
        "\n{}: capacity {:.0}/s, offered {:.0}/s; admitted {:.0}/s (p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms), refused {:.0}/s (p99 {:.1} ms); errors {}; not sent {}",
        report.scenario.name,
        report.capacity_per_s,
        report.offered_per_s,
        report.admitted_per_s,
        report.admitted_ms.p50_ms,
        report.admitted_ms.p99_ms,
        report.admitted_ms.max_ms,
        report.refused_per_s,
        report.refused_ms.p99_ms,
        report.error_total,
        report.not_sent
    );
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", args.json.display()))?;
    eprintln!("report written to {}", args.json.display());
    Ok(report)
}
