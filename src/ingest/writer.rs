//! The batched writer: a bounded queue of pings to store, drained into `provider_locations`
//! with one multi-row `INSERT ... SELECT FROM UNNEST` per batch. A ping's ack (`stored: true`)
//! is sent only after the transaction holding it has committed.
//!
//! While the database is unreachable (restarting, failing over, out of connections) a batch is
//! retried with backoff and the queue fills, which slows the sockets down. A batch the database
//! refuses for good (a row it will never take, say a value a trigger or constraint rejects) is
//! split in halves until the refused rows stand alone: they are acknowledged `stored: false`
//! with a reason, and every other row is stored, so one bad fix never holds up the rest.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};

use crate::geo::Point;

/// Longest pause between retries while the database refuses a batch.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(5);

const INSERT_BATCH_SQL: &str = include_str!("../../sql/insert_provider_locations.sql");

/// Why the database refused a ping for good, as the ack's `reason` says it.
pub const REFUSED_BY_DATABASE: &str = "refused_by_database";

/// Sent to a socket once the writer is done with its ping: durably stored, or refused for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredAck {
    pub seq: i64,
    /// How the ingest pipeline recognises a resend of this ping.
    pub key: super::DedupeKey,
    /// `None` when stored; otherwise why it never will be.
    pub refused: Option<&'static str>,
}

pub type AckSender = mpsc::UnboundedSender<StoredAck>;

/// One row for `provider_locations`.
#[derive(Debug)]
pub struct PingRecord {
    pub provider_id: i64,
    pub seq: i64,
    pub key: super::DedupeKey,
    pub point: Point,
    pub accuracy_m: f64,
    pub heading: Option<f64>,
    pub speed_kmh: Option<f64>,
    pub battery: Option<i32>,
    pub recorded_at: DateTime<Utc>,
    pub queued_at: Instant,
    /// Where to send the ack; `None` for pings nobody waits on.
    pub ack: Option<AckSender>,
}

#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    pub batch_max: usize,
    pub flush_interval: Duration,
    /// After shutdown, how long the writer keeps draining before giving up.
    pub drain_deadline: Duration,
}

/// Runs until shutdown, then drains: it keeps writing until no socket is open and the queue is
/// empty (or the drain deadline passes), so every ping accepted before SIGTERM is stored.
pub async fn run(
    pool: PgPool,
    mut queue: mpsc::Receiver<PingRecord>,
    config: WriterConfig,
    open_sockets: Arc<AtomicUsize>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut batch: Vec<PingRecord> = Vec::with_capacity(config.batch_max);
    let mut draining_since: Option<Instant> = None;
    loop {
        if draining_since.is_none() && *shutdown.borrow() {
            draining_since = Some(Instant::now());
        }
        // An idle writer sleeps until the first ping arrives; only then does the flush interval
        // start (a timer every few milliseconds with nothing to write costs CPU for nothing).
        if batch.is_empty() && draining_since.is_none() {
            tokio::select! {
                received = queue.recv() => match received {
                    Some(record) => batch.push(record),
                    None => draining_since = Some(Instant::now()),
                },
                _ = shutdown.changed() => draining_since = Some(Instant::now()),
            }
        }
        let tick = tokio::time::sleep(config.flush_interval);
        tokio::pin!(tick);
        // Collect until the batch is full or the flush interval passes.
        loop {
            tokio::select! {
                biased;
                received = queue.recv(), if batch.len() < config.batch_max => match received {
                    Some(record) => {
                        batch.push(record);
                        while batch.len() < config.batch_max {
                            match queue.try_recv() {
                                Ok(record) => batch.push(record),
                                Err(_) => break,
                            }
                        }
                        if batch.len() >= config.batch_max { break; }
                    }
                    None => break,
                },
                _ = &mut tick => break,
                _ = shutdown.changed(), if draining_since.is_none() => {
                    draining_since = Some(Instant::now());
                }
            }
        }
        metrics::gauge!("hilot_ping_queue_depth")
            .set((queue.max_capacity() - queue.capacity()) as f64);
        if !batch.is_empty() {
            write_with_retry(&pool, &mut batch, draining_since, config.drain_deadline).await;
        }
        if let Some(since) = draining_since {
            let idle = queue.is_empty() && open_sockets.load(Ordering::Acquire) == 0;
            let closed = queue.is_closed() && queue.is_empty();
            if idle || closed || since.elapsed() > config.drain_deadline {
                if !queue.is_empty() {
                    tracing::error!(left = queue.len(), "drain deadline passed with pings still queued (never acknowledged as stored)");
                }
                return;
            }
        }
    }
}

/// Writes a batch: retried while the database is unavailable, split while it refuses a row.
/// Every ping gets its ack (stored or refused) unless the server gives up at shutdown.
async fn write_with_retry(
    pool: &PgPool,
    batch: &mut Vec<PingRecord>,
    draining_since: Option<Instant>,
    drain_deadline: Duration,
) {
    // Parts still to write, the next on top; a refused part comes back as its two halves.
    let mut parts = vec![std::mem::take(batch)];
    while let Some(mut part) = parts.pop() {
        let started = Instant::now();
        match insert_until_settled(pool, &part, draining_since, drain_deadline).await {
            Settled::Committed => {
                let committed_at = Instant::now();
                metrics::histogram!("hilot_ping_batch_rows").record(part.len() as f64);
                metrics::histogram!("hilot_ping_batch_write_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("hilot_pings_stored_total").increment(part.len() as u64);
                let ack_seconds = metrics::histogram!("hilot_ping_ack_seconds");
                for record in &part {
                    ack_seconds.record(committed_at.duration_since(record.queued_at).as_secs_f64());
                    acknowledge(record, None);
                }
            }
            Settled::Refused(error) if part.len() == 1 => {
                metrics::counter!("hilot_pings_refused_total").increment(1);
                let record = &part[0];
                tracing::warn!(
                    provider_id = record.provider_id,
                    seq = record.seq,
                    %error,
                    "the database refused a ping for good; acknowledged as not stored"
                );
                acknowledge(record, Some(REFUSED_BY_DATABASE));
            }
            Settled::Refused(_) => {
                metrics::counter!("hilot_ping_batch_splits_total").increment(1);
                let second = part.split_off(part.len() / 2);
                parts.push(second);
                parts.push(part);
            }
            Settled::GaveUp => {
                tracing::error!(
                    rows = part.len() + parts.iter().map(Vec::len).sum::<usize>(),
                    "giving up on pings at shutdown (never acknowledged as stored)"
                );
                return;
            }
        }
    }
}

fn acknowledge(record: &PingRecord, refused: Option<&'static str>) {
    if let Some(ack) = &record.ack {
        let _ = ack.send(StoredAck {
            seq: record.seq,
            key: record.key,
            refused,
        });
    }
}

enum Settled {
    Committed,
    /// The database refused the statement for a reason retrying cannot fix.
    Refused(sqlx::Error),
    /// Shutting down, and the drain deadline passed while the database was unavailable.
    GaveUp,
}

/// Inserts `part`, retrying with backoff while the failure is one that passes (connections,
/// restarts, serialisation, resources); a refusal for good is returned at once.
async fn insert_until_settled(
    pool: &PgPool,
    part: &[PingRecord],
    draining_since: Option<Instant>,
    drain_deadline: Duration,
) -> Settled {
    let mut backoff = Duration::from_millis(50);
    loop {
        let error = match insert_batch(pool, part).await {
            Ok(()) => return Settled::Committed,
            Err(error) if refused_for_good(&error) => return Settled::Refused(error),
            Err(error) => error,
        };
        metrics::counter!("hilot_ping_batch_failures_total").increment(1);
        tracing::warn!(%error, rows = part.len(), "storing pings failed; retrying");
        if draining_since.is_some_and(|since| since.elapsed() > drain_deadline) {
            return Settled::GaveUp;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
    }
}

/// Whether the database will refuse this statement however often it is retried: a data
/// exception (class 22), an integrity violation (23), or an error raised by a trigger (P0).
/// Everything else (connections, shutdowns, serialisation, resources) passes.
pub fn refused_for_good(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("22") || code.starts_with("23") || code.starts_with("P0")
        }),
        _ => false,
    }
}

/// Inserts the batch in one statement; a ping already stored (same provider, seq and fix time)
/// is skipped, so a resent ping is never stored twice.
pub async fn insert_batch(pool: &PgPool, batch: &[PingRecord]) -> sqlx::Result<()> {
    let n = batch.len();
    let mut provider_ids = Vec::with_capacity(n);
    let mut seqs = Vec::with_capacity(n);
    let mut lats = Vec::with_capacity(n);
    let mut lngs = Vec::with_capacity(n);
    let mut accuracies = Vec::with_capacity(n);
    let mut headings = Vec::with_capacity(n);
    let mut speeds = Vec::with_capacity(n);
    let mut moving = Vec::with_capacity(n);
    let mut batteries = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    for r in batch {
        provider_ids.push(r.provider_id);
        seqs.push(r.seq);
        lats.push(r.point.lat);
        lngs.push(r.point.lng);
        accuracies.push(r.accuracy_m);
        headings.push(r.heading);
        speeds.push(r.speed_kmh);
        moving.push(r.speed_kmh.is_some_and(|s| s >= 1.0));
        batteries.push(r.battery);
        times.push(r.recorded_at);
    }
    sqlx::query(INSERT_BATCH_SQL)
        .bind(provider_ids)
        .bind(seqs)
        .bind(lats)
        .bind(lngs)
        .bind(accuracies)
        .bind(headings)
        .bind(speeds)
        .bind(moving)
        .bind(batteries)
        .bind(times)
        .execute(pool)
        .await
        .map(|_| ())
}
