//! The outbox worker: claims due deliveries (a few per target, `FOR UPDATE SKIP LOCKED`, so
//! workers on several nodes share the queue safely), delivers them concurrently through their
//! channel's courier, and records each outcome: delivered, retried after an exponential backoff,
//! or dead-lettered after the last attempt.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;
use sqlx::PgPool;
use tokio::sync::{watch, Notify, Semaphore};

use super::{Courier, Couriers, Failure, Job};

const CLAIM_SQL: &str = include_str!("../../sql/outbox_claim.sql");
/// Deliveries one claim takes per target, and the most a worker has in flight per target.
pub const PER_TARGET_IN_FLIGHT: usize = 2;
/// A claim looks at most this many times its limit (and at least [`CLAIM_HEAD_MIN`]) rows
/// at the head of a channel's queue.
pub const CLAIM_HEAD_FACTOR: usize = 4;
pub const CLAIM_HEAD_MIN: usize = 64;
/// How often the backlog gauges are refreshed.
pub const BACKLOG_GAUGE_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    pub poll: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub max_attempts: u32,
    /// An attempt longer than this has failed; the lease is a little longer.
    pub attempt_timeout: Duration,
    pub concurrency: usize,
}

/// The wait before attempt `attempt + 1`: base × 2^(attempt − 1), capped, with ±20 % jitter so
/// deliveries that failed together do not retry together.
pub fn backoff(config: &WorkerConfig, attempt: i32) -> Duration {
    let exponent = attempt.saturating_sub(1).clamp(0, 30) as u32;
    let raw = config
        .backoff_base
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(config.backoff_max);
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    raw.mul_f64(jitter).min(config.backoff_max)
}

/// Runs until shutdown; deliveries in flight then finish (bounded by their timeout).
pub async fn run(
    db: PgPool,
    couriers: Couriers,
    config: WorkerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    if couriers.is_empty() {
        return;
    }
    let channels: Vec<String> = couriers
        .iter()
        .map(|(c, _)| c.as_str().to_owned())
        .collect();
    let couriers: HashMap<String, Arc<dyn Courier>> = couriers
        .into_iter()
        .map(|(c, courier)| (c.as_str().to_owned(), courier))
        .collect();
    let couriers = Arc::new(couriers);
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
    // Deliveries in flight per target, and attempts in flight per channel.
    let in_flight: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let attempts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let lease_s = (config.attempt_timeout + Duration::from_secs(30)).as_secs_f64();
    let mut last_gauges = Instant::now() - BACKLOG_GAUGE_INTERVAL;
    let finished = Arc::new(Notify::new());
    loop {
        if *shutdown.borrow() {
            break;
        }
        if last_gauges.elapsed() >= BACKLOG_GAUGE_INTERVAL {
            last_gauges = Instant::now();
            export_backlog(&db).await;
        }
        let free = permits.available_permits();
        let busy: Vec<String> = in_flight
            .lock()
            .iter()
            .filter(|(_, n)| **n >= PER_TARGET_IN_FLIGHT)
            .map(|(t, _)| t.clone())
            .collect();
        // One channel at a time, each from the head of its own queue, within its courier's
        // bound on attempts in flight; a courier that takes deliveries in batches gets them in
        // one attempt (one permit).
        let mut spawned = 0;
        let mut full = false;
        for channel in &channels {
            let Some(courier) = couriers.get(channel).cloned() else {
                continue;
            };
            let batch = courier.batch_size().max(1);
            let attempts_room = courier
                .max_attempts_in_flight()
                .saturating_sub(*attempts.lock().get(channel).unwrap_or(&0))
                .min(free - spawned);
            if attempts_room == 0 {
                full = true; // at capacity: more may be due once a delivery ends
                continue;
            }
            let limit = attempts_room.saturating_mul(batch);
            let got = claim(&db, channel, &busy, limit, lease_s).await;
            full |= got.len() == limit;
            for chunk in got.chunks(batch) {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                spawned += 1;
                let jobs = chunk.to_vec();
                {
                    let mut map = in_flight.lock();
                    for job in &jobs {
                        *map.entry(job.target.clone()).or_default() += 1;
                    }
                }
                *attempts.lock().entry(channel.clone()).or_default() += 1;
                let db = db.clone();
                let courier = courier.clone();
                let in_flight = in_flight.clone();
                let attempts = attempts.clone();
                let finished = finished.clone();
                let channel = channel.clone();
                tokio::spawn(async move {
                    attempt(&db, courier.as_ref(), &config, &jobs).await;
                    {
                        let mut map = in_flight.lock();
                        for job in &jobs {
                            if let Some(n) = map.get_mut(&job.target) {
                                *n -= 1;
                                if *n == 0 {
                                    map.remove(&job.target);
                                }
                            }
                        }
                    }
                    if let Some(n) = attempts.lock().get_mut(&channel) {
                        *n = n.saturating_sub(1);
                    }
                    drop(permit);
                    finished.notify_one();
                });
            }
        }
        // More may be due than there was room for: claim again as soon as a delivery ends
        // (not at once, which claimed nothing for the full channels and spun on the others).
        tokio::select! {
            _ = finished.notified(), if full => {}
            _ = tokio::time::sleep(config.poll) => {}
            _ = crate::outbox::worker::stopped(&mut shutdown) => break,
        }
    }
    // Let deliveries in flight finish (each is bounded by its timeout).
    let _ = tokio::time::timeout(
        config.attempt_timeout + Duration::from_secs(1),
        permits.acquire_many(config.concurrency.max(1) as u32),
    )
    .await;
}

/// Claims up to `limit` due deliveries of `channel` (see `sql/outbox_claim.sql`).
async fn claim(
    db: &PgPool,
    channel: &str,
    busy: &[String],
    limit: usize,
    lease_s: f64,
) -> Vec<Job> {
    if limit == 0 {
        return Vec::new();
    }
    sqlx::query_as(CLAIM_SQL)
        .bind(channel)
        .bind(busy)
        .bind(PER_TARGET_IN_FLIGHT as i64)
        .bind(limit as i64)
        .bind(lease_s)
        .bind((limit * CLAIM_HEAD_FACTOR).max(CLAIM_HEAD_MIN) as i64)
        .fetch_all(db)
        .await
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "claiming outbox deliveries failed");
            Vec::new()
        })
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn attempt(db: &PgPool, courier: &dyn Courier, config: &WorkerConfig, jobs: &[Job]) {
    let Some(first) = jobs.first() else {
        return;
    };
    let started = Instant::now();
    let outcomes =
        match tokio::time::timeout(config.attempt_timeout, courier.deliver_batch(jobs)).await {
            Ok(outcomes) => outcomes,
            Err(_) => jobs
                .iter()
                .map(|_| {
                    Err(Failure::retry(
                        format!("no answer within {:?}", config.attempt_timeout),
                        None,
                    ))
                })
                .collect(),
        };
    metrics::histogram!("hilot_outbox_attempt_seconds", "channel" => first.channel.clone())
        .record(started.elapsed().as_secs_f64());
    for (job, outcome) in jobs.iter().zip(outcomes) {
        record(db, config, job, outcome, courier.records_delivery()).await;
    }
}

/// Records one delivery's outcome: delivered, retried after a backoff, or dead.
async fn record(
    db: &PgPool,
    config: &WorkerConfig,
    job: &Job,
    outcome: super::Outcome,
    already_recorded: bool,
) {
    let recorded = match outcome {
        Ok(status) => {
            metrics::counter!("hilot_outbox_deliveries_total", "channel" => job.channel.clone(), "outcome" => "delivered").increment(1);
            metrics::histogram!("hilot_outbox_delivery_latency_seconds", "channel" => job.channel.clone())
                .record((chrono::Utc::now() - job.created_at).num_milliseconds().max(0) as f64 / 1000.0);
            if already_recorded {
                return;
            }
            sqlx::query(
                "UPDATE outbox SET status = 'delivered', delivered_at = now(), last_status_code = $2, \
                     last_error = NULL, updated_at = now() WHERE id = $1",
            )
            .bind(job.id)
            .bind(status.map(i32::from))
            .execute(db)
            .await
        }
        Err(failure) => {
            let dead = !failure.retry || job.attempts >= config.max_attempts as i32;
            let outcome = if dead { "dead" } else { "retry" };
            metrics::counter!("hilot_outbox_deliveries_total", "channel" => job.channel.clone(), "outcome" => outcome).increment(1);
            tracing::info!(
                channel = job.channel,
                target = job.target,
                attempt = job.attempts,
                error = failure.error,
                outcome,
                "outbox delivery failed"
            );
            let wait = backoff(config, job.attempts).as_secs_f64();
            let error: String = failure.error.chars().take(1000).collect();
            let result = sqlx::query(
                "UPDATE outbox SET status = CASE WHEN $2 THEN 'dead'::outbox_status ELSE 'pending' END, \
                     dead_at = CASE WHEN $2 THEN now() END, \
                     next_attempt_at = now() + make_interval(secs => $3), \
                     last_error = $4, last_status_code = $5, updated_at = now() WHERE id = $1",
            )
            .bind(job.id)
            .bind(dead)
            .bind(wait)
            .bind(&error)
            .bind(failure.status_code.map(i32::from))
            .execute(db)
            .await;
            if !dead {
                // The target is failing: its other due deliveries wait for the same retry time
                // rather than each failing on it now.
                let _ = sqlx::query(
                    "UPDATE outbox SET next_attempt_at = GREATEST(next_attempt_at, now() + make_interval(secs => $2)) \
                     WHERE target = $1 AND status = 'pending' AND id <> $3 AND next_attempt_at <= now()",
                )
                .bind(&job.target)
                .bind(wait)
                .bind(job.id)
                .execute(db)
                .await;
            }
            result
        }
    };
    if let Err(error) = recorded {
        // The lease runs out and the delivery is tried again: at least once, never lost.
        tracing::warn!(%error, id = job.id, "recording an outbox outcome failed");
    }
}

async fn export_backlog(db: &PgPool) {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT channel, status::text, count(*) FROM outbox WHERE status IN ('pending', 'dead') GROUP BY 1, 2",
    )
    .fetch_all(db)
    .await
    .unwrap_or_default();
    for channel in ["event", "push", "webhook", "gateway"] {
        for status in ["pending", "dead"] {
            let n = rows
                .iter()
                .find(|(c, s, _)| c == channel && s == status)
                .map_or(0, |(_, _, n)| *n);
            metrics::gauge!("hilot_outbox_backlog", "channel" => channel, "status" => status)
                .set(n as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let config = WorkerConfig {
            poll: Duration::from_millis(100),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(60),
            max_attempts: 5,
            attempt_timeout: Duration::from_secs(10),
            concurrency: 4,
        };
        let first = backoff(&config, 1).as_secs_f64();
        assert!((4.0..=6.0).contains(&first), "{first}");
        let third = backoff(&config, 3).as_secs_f64();
        assert!((16.0..=24.0).contains(&third), "{third}");
        assert!(backoff(&config, 20) <= Duration::from_secs(60));
    }
}
