//! `loadtest storm`: a burst of concurrent registrations, then of concurrent logins (each an
//! Argon2id hash), while one client keeps reading `GET /v1/me`. Measures what the burst costs
//! everyone else: the server's RSS (it must stay bounded) and the authenticated read's latency
//! (open loop: each read is due at a fixed time and its latency counts from then).
//!
//! Run it against a server whose per-address registration and login limits are raised (as
//! `scripts/bench` does): a real storm comes from many addresses, and the point is to reach the
//! password hashing, not the limiter.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use hilot::simulator::Server;
use serde::Serialize;
use serde_json::{json, Value};

use crate::machine::Machine;
use crate::scenario::rss_mib;

/// The storm's targets (issue 11): RSS growth and the read's p99.
pub const MAX_RSS_GROWTH_MIB: f64 = 256.0;
pub const MAX_READ_P99_MS: f64 = 250.0;

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct StormArgs {
    /// The running server (loopback).
    #[arg(long, env = "HILOT_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Registrations sent at once.
    #[arg(long, default_value_t = 120)]
    pub registrations: usize,
    /// Logins sent at once, after the registrations have all been answered.
    #[arg(long, default_value_t = 120)]
    pub logins: usize,
    /// Authenticated reads per second during the storm.
    #[arg(long, default_value_t = 50.0)]
    pub reads_per_s: f64,
    /// Seconds of reads before the storm and after it.
    #[arg(long, default_value_t = 2)]
    pub settle_s: u64,
    /// Where to write the JSON report.
    #[arg(long, default_value = "storm-report.json")]
    #[serde(skip)]
    pub json: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct PhaseReport {
    pub requests: usize,
    pub seconds: f64,
    /// Answers by HTTP status (`201`, `200`, `429`, `503`, ...; `error` when none came).
    pub statuses: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct StormReport {
    pub storm: StormArgs,
    pub machine: Machine,
    pub registrations: PhaseReport,
    pub logins: PhaseReport,
    pub reads: ReadReport,
    pub server_rss_mib: RssReport,
    pub targets: BTreeMap<String, bool>,
}

#[derive(Debug, Serialize)]
pub struct ReadReport {
    pub count: u64,
    pub failed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct RssReport {
    pub before: f64,
    pub max: f64,
    pub end: f64,
}

fn password(i: usize) -> String {
    format!("storm passphrase number {i} of many")
}

async fn register(http: &reqwest::Client, url: &str, phone: &str, i: usize) -> (String, Value) {
    let body = json!({
        "phone": phone, "password": password(i), "first_name": "Ana", "last_name": "Reyes",
        "role": "customer",
    });
    answer(http.post(format!("{url}/v1/auth/register")).json(&body)).await
}

async fn answer(request: reqwest::RequestBuilder) -> (String, Value) {
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16().to_string();
            let body = response.json().await.unwrap_or(Value::Null);
            (status, body)
        }
        Err(_) => ("error".to_owned(), Value::Null),
    }
}

/// Sends `count` requests at once; answers the statuses and how long the last one took.
async fn burst<F, Fut>(count: usize, make: F) -> PhaseReport
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = (String, Value)> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..count).map(|i| tokio::spawn(make(i))).collect();
    let mut statuses = BTreeMap::new();
    for task in tasks {
        let status = task
            .await
            .map(|(s, _)| s)
            .unwrap_or_else(|_| "error".into());
        *statuses.entry(status).or_insert(0) += 1;
    }
    PhaseReport {
        requests: count,
        seconds: (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        statuses,
    }
}

pub async fn run(args: StormArgs) -> anyhow::Result<StormReport> {
    let server = Server::new(&args.url);
    server.wait_ready(Duration::from_secs(60)).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let url = args.url.trim_end_matches('/').to_owned();
    // A block of phone numbers of its own, offset per run so the storm can run again.
    let base: u64 = rand::random::<u64>() % 9_000_000;
    let phone = move |i: usize| format!("+63977{:07}", (base + i as u64) % 10_000_000);

    // The reader: one customer reading `GET /v1/me`, open loop.
    let (status, body) = register(&http, &url, &format!("+63976{:07}", base), 0).await;
    anyhow::ensure!(
        status == "201",
        "registering the reader answered {status}: {body}"
    );
    let reader_token = body["token"].as_str().context("no token")?.to_owned();
    let rss_before = rss_mib(&server).await.unwrap_or(0.0);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(read_loop(
        http.clone(),
        url.clone(),
        reader_token,
        args.reads_per_s,
        stop.clone(),
    ));
    let sampler = tokio::spawn(sample_rss(server.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(args.settle_s)).await;

    eprintln!("storm: {} registrations at once ...", args.registrations);
    let registrations = {
        let (http, url) = (http.clone(), url.clone());
        burst(args.registrations, move |i| {
            let (http, url, phone) = (http.clone(), url.clone(), phone(i));
            async move { register(&http, &url, &phone, i).await }
        })
        .await
    };
    eprintln!("storm: {} logins at once ...", args.logins);
    let logins = {
        let (http, url) = (http.clone(), url.clone());
        burst(args.logins, move |i| {
            let (http, url) = (http.clone(), url.clone());
            let body = json!({"phone": phone(i % args.registrations.max(1)), "password": password(i % args.registrations.max(1))});
            async move { answer(http.post(format!("{url}/v1/auth/login")).json(&body)).await }
        })
        .await
    };
    tokio::time::sleep(Duration::from_secs(args.settle_s)).await;
    stop.store(true, Ordering::Relaxed);
    let reads = reader.await.context("the reader task")?;
    let rss_max = sampler.await.context("the RSS sampler")?;
    let rss_end = rss_mib(&server).await.unwrap_or(0.0);

    let rss = RssReport {
        before: rss_before,
        max: rss_max.max(rss_end),
        end: rss_end,
    };
    let targets = BTreeMap::from([
        (
            format!("server RSS stays under the starting RSS + {MAX_RSS_GROWTH_MIB} MiB"),
            rss.max - rss.before <= MAX_RSS_GROWTH_MIB,
        ),
        (
            format!("authenticated read p99 ≤ {MAX_READ_P99_MS} ms"),
            reads.count > 0 && reads.p99_ms <= MAX_READ_P99_MS,
        ),
    ]);
    let report = StormReport {
        storm: args.clone(),
        machine: Machine::this(),
        registrations,
        logins,
        reads,
        server_rss_mib: rss,
        targets,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", args.json.display()))?;
    eprintln!("report written to {}", args.json.display());
    Ok(report)
}

/// Reads `GET /v1/me` on a fixed schedule until told to stop; latency counts from each read's
/// due time, so a stalled server cannot hide its tail by slowing the reader down.
async fn read_loop(
    http: reqwest::Client,
    url: String,
    token: String,
    per_s: f64,
    stop: Arc<AtomicBool>,
) -> ReadReport {
    let interval = Duration::from_secs_f64(1.0 / per_s.max(0.1));
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("bounds");
    let mut failed = 0;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut n: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = started + interval * n;
        n += 1;
        tokio::time::sleep_until(due.into()).await;
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        tasks.spawn(async move {
            let ok = http
                .get(format!("{url}/v1/me"))
                .bearer_auth(token)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            (ok, due.elapsed())
        });
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((true, latency)) => {
                let _ = histogram.record(latency.as_micros().max(1) as u64);
            }
            _ => failed += 1,
        }
    }
    let ms = |micros: u64| (micros as f64 / 10.0).round() / 100.0;
    ReadReport {
        count: histogram.len(),
        failed,
        p50_ms: ms(histogram.value_at_quantile(0.5)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        max_ms: ms(histogram.max()),
    }
}

/// The largest RSS seen (sampled every 250 ms) until told to stop.
async fn sample_rss(server: Server, stop: Arc<AtomicBool>) -> f64 {
    let mut max: f64 = 0.0;
    while !stop.load(Ordering::Relaxed) {
        if let Some(mib) = rss_mib(&server).await {
            max = max.max(mib);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    max
}

/// The README's storm section, from `storm.json` when `scripts/bench` wrote one.
pub fn render_section(results: &std::path::Path) -> anyhow::Result<String> {
    let path = results.join("storm.json");
    if !path.exists() {
        return Ok(String::new());
    }
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("parsing {}", path.display()))?;
    let statuses = |phase: &str| {
        s[phase]["statuses"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k} × {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let f = |pointer: &str| s.pointer(pointer).and_then(Value::as_f64).unwrap_or(0.0);
    let verdict = |met: bool| if met { "met" } else { "**missed**" };
    let growth = f("/server_rss_mib/max") - f("/server_rss_mib/before");
    let p99 = f("/reads/p99_ms");
    Ok(format!(
        "#### Registration and login storm (issue 11)\n\n\
         {} concurrent registrations, then {} concurrent logins (per-address limits raised, as \
         from many addresses), while one customer reads `GET /v1/me` {} times a second.\n\n\
         | phase | requests | seconds | answers |\n|---|---:|---:|---|\n\
         | registrations | {} | {:.2} | {} |\n| logins | {} | {:.2} | {} |\n\n\
         | target | measured | verdict |\n|---|---:|---|\n\
         | server RSS ≤ starting RSS + {MAX_RSS_GROWTH_MIB} MiB | {:.0} → {:.0} MiB (+{:.0}) | {} |\n\
         | `GET /v1/me` p99 ≤ {MAX_READ_P99_MS} ms during the storm | {:.1} ms (p50 {:.1}, max {:.1}; {} reads, {} failed) | {} |\n\n",
        f("/storm/registrations"),
        f("/storm/logins"),
        f("/storm/reads_per_s"),
        f("/registrations/requests"),
        f("/registrations/seconds"),
        statuses("registrations"),
        f("/logins/requests"),
        f("/logins/seconds"),
        statuses("logins"),
        f("/server_rss_mib/before"),
        f("/server_rss_mib/max"),
        growth,
        verdict(growth <= MAX_RSS_GROWTH_MIB),
        p99,
        f("/reads/p50_ms"),
        f("/reads/max_ms"),
        f("/reads/count"),
        f("/reads/failed"),
        verdict(f("/reads/count") > 0.0 && p99 <= MAX_READ_P99_MS),
    ))
}
