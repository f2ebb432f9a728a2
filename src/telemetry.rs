//! Logs (tracing) and metrics (Prometheus text).

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{fmt, EnvFilter};

/// Log filter when `RUST_LOG` is unset. actix-http's HTTP/1 dispatcher logs every request it
/// cannot parse (a raw `<` in a path, a bad header) at ERROR, which let anyone fill the error log
/// with one line per request; those requests are answered 400 and are the client's fault, so
/// that logger is off.
pub const DEFAULT_LOG_FILTER: &str =
    "info,sqlx=warn,actix_server=warn,actix_http::h1::dispatcher=off";

/// Latency buckets (seconds) for every `*_seconds` histogram: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Booking → first offer is a batch window (1 s by default) plus a round: finer buckets around
/// the window tell a round of 20 ms from one of 60.
const FIRST_OFFER_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0, 1.01, 1.02, 1.03, 1.04, 1.05, 1.075, 1.1, 1.25,
    1.5, 2.0, 5.0, 10.0,
];

/// Keeps the log writer's thread alive; dropping it flushes the lines still queued.
pub type LogGuard = Option<tracing_appender::non_blocking::WorkerGuard>;

/// Log lines queued for the writer thread; beyond this a line is dropped (and counted by the
/// writer) rather than making a request wait for stdout.
const LOG_QUEUE_LINES: usize = 64 * 1024;

/// Installs the global subscriber: JSON lines when stdout is not a terminal (or
/// `HILOT_LOG_FORMAT=json`), human-readable text otherwise. Lines are written by a thread of
/// their own, so no request or socket ever waits on stdout (the access log is one line per
/// request). Keep the guard until exit. Safe to call more than once.
pub fn init_logging() -> LogGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let json = match std::env::var("HILOT_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") | Ok("pretty") => false,
        _ => !std::io::stdout().is_terminal(),
    };
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true)
        .finish(std::io::stdout());
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_writer(writer);
    let installed = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.compact().try_init()
    };
    installed.ok().map(|_| guard)
}

/// The process-wide Prometheus recorder; every `metrics::counter!` etc. lands here.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("latency buckets are non-empty")
            // A full name outranks a suffix (the exporter sorts its matchers).
            .set_buckets_for_metric(
                Matcher::Full("hilot_first_offer_seconds".into()),
                FIRST_OFFER_BUCKETS,
            )
            .expect("first-offer buckets are non-empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder can only exist if a test installed one first; keep ours regardless.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Sets `process_resident_memory_bytes` from `/proc/self/status` (Linux; elsewhere a no-op),
/// so every scrape of `/metrics` shows the server's current RSS.
pub fn record_process_memory() {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return;
    };
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        });
    if let Some(kib) = kib {
        metrics::gauge!("process_resident_memory_bytes").set(kib * 1024.0);
    }
}

/// Sets `process_cpu_seconds_total` (user + system time of the whole process, all threads)
/// from `/proc/self/stat` (Linux; elsewhere a no-op), as Prometheus's process collectors do, so
/// a load test can divide the server's CPU by the work it did.
pub fn record_process_cpu() {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    if let Some(seconds) = cpu_seconds_from_stat(&stat) {
        metrics::gauge!("process_cpu_seconds_total").set(seconds);
    }
}

/// Clock ticks per second of `/proc` times (`USER_HZ`: 100 on every Linux the server runs on).
const USER_HZ: f64 = 100.0;

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in seconds. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
fn cpu_seconds_from_stat(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// Counts one answered request and records its latency, by route template, method and status.
/// Each combination's counter and histogram are resolved once and kept: a labelled `counter!`
/// would allocate its labels and hash them on every request.
pub fn record_request(method: &actix_web::http::Method, route: &str, status: u16, seconds: f64) {
    type Key = (actix_web::http::Method, u16);
    /// Per route template: each method and status seen, with its counter and histogram.
    type ByRoute = std::collections::HashMap<String, Vec<(Key, Counter, Histogram)>>;
    static HANDLES: OnceLock<parking_lot::RwLock<ByRoute>> = OnceLock::new();
    let handles = HANDLES.get_or_init(Default::default);
    let find = |list: &Vec<(Key, Counter, Histogram)>| {
        list.iter()
            .find(|((m, s), _, _)| m == method && *s == status)
            .map(|(_, c, h)| (c.clone(), h.clone()))
    };
    let known = handles.read().get(route).and_then(find);
    let (counter, histogram) = match known {
        Some(found) => found,
        None => {
            let mut map = handles.write();
            let list = map.entry(route.to_owned()).or_default();
            match find(list) {
                Some(found) => found,
                None => {
                    let (m, r) = (method.to_string(), route.to_owned());
                    let counter = metrics::counter!("hilot_http_requests_total", "method" => m.clone(), "route" => r.clone(), "status" => status.to_string());
                    let histogram = metrics::histogram!("hilot_http_request_duration_seconds", "method" => m, "route" => r);
                    list.push(((method.clone(), status), counter.clone(), histogram.clone()));
                    (counter, histogram)
                }
            }
        }
    };
    counter.increment(1);
    histogram.record(seconds);
}

/// How often the gauges that are read rather than counted (index size, queue depth) refresh.
pub const GAUGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Publishes gauges of the live index, the ping queue and the database pools until shutdown.
pub async fn export_gauges(
    state: crate::state::AppState,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        metrics::gauge!("hilot_index_therapists").set(state.index.len() as f64);
        for (therapist_state, count) in state.index.counts(chrono::Utc::now()) {
            let label = serde_json::to_value(therapist_state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            metrics::gauge!("hilot_index_fresh_therapists", "state" => label).set(count as f64);
        }
        metrics::gauge!("hilot_ping_queue_depth").set(state.ingest.queue_depth() as f64);
        // A pool with no idle connection makes every query wait its turn: the first thing to
        // look at when latency grows while the database itself answers quickly.
        for (name, pool) in [
            ("requests", &state.db),
            ("background", &state.background_db),
            ("answers", state.dispatcher.answers_pool()),
        ] {
            let idle = pool.num_idle() as f64;
            let open = f64::from(pool.size());
            metrics::gauge!("hilot_db_connections", "pool" => name, "state" => "idle").set(idle);
            metrics::gauge!("hilot_db_connections", "pool" => name, "state" => "busy")
                .set(open - idle);
        }
        tokio::select! {
            _ = tokio::time::sleep(GAUGE_INTERVAL) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let stat = "4242 (hilot (serve)) S 1 4242 4242 0 -1 4194560 9000 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(cpu_seconds_from_stat(stat), Some(3.25));
        assert_eq!(cpu_seconds_from_stat("garbage"), None);
    }
}
