//! Simulated customers: each keeps a customer socket open to hear about its bookings, and a
//! Poisson process books at random addresses over HTTP (now, and a share for later).

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng as SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::client::{self, Incoming, Server};
use super::seed::{Area, SimAccount};
use super::stats::Stats;

/// Listens on one customer's socket until `stop`.
pub async fn listen(
    server: Server,
    me: SimAccount,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = client::Backoff::new();
    loop {
        match server.socket("customer", &me.token).await {
            Ok(mut socket) => loop {
                backoff.reset(); // cheap: a connection that works starts the next retry afresh
                tokio::select! {
                    incoming = client::next_frame(&mut socket) => match incoming {
                        Incoming::Frame(frame) => on_frame(&stats, &frame),
                        Incoming::Closed => {
                            stats.error("customer_socket_closed");
                            break;
                        }
                        Incoming::Ignored => {}
                    },
                    _ = crate::shutdown::stopped(&mut stop) => {
                        let _ = futures_util::SinkExt::close(&mut socket).await;
                        return;
                    }
                }
            },
            Err(error) => super::client::count_connect_failure(&stats, &error),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = crate::shutdown::stopped(&mut stop) => return,
        }
    }
}

fn on_frame(stats: &Stats, frame: &Value) {
    if client::kind(frame) != "booking.status" {
        return;
    }
    let Some(booking) = client::booking_id(frame) else {
        return;
    };
    match frame.get("status").and_then(Value::as_str) {
        Some("accepted") if stats.is_scheduled(booking) => {
            stats.count("scheduled_bookings_accepted")
        }
        Some("accepted") => stats.customer_saw_accepted(booking, Instant::now()),
        Some("completed") => {
            stats.count("bookings_completed");
            stats.booking_finished(booking);
        }
        Some("cancelled") => {
            let reason = frame.get("reason").and_then(Value::as_str).unwrap_or("");
            stats.count(if reason == "no_therapist_available" {
                "bookings_unmatched"
            } else {
                "bookings_cancelled"
            });
            stats.booking_finished(booking);
        }
        _ => {}
    }
}

/// Books at `per_second` on average (exponential gaps) until `stop`: a `scheduled_share` of
/// the bookings are open bookings for later (within `ahead` of now, on a whole second), the
/// rest book now. Open loop: each booking is sent at its scheduled time on its own task, and its
/// latency counts from that time, so a slow server cannot push later requests back and hide
/// its own tail.
#[allow(clippy::too_many_arguments)]
pub async fn book_poisson(
    server: Server,
    customers: Vec<SimAccount>,
    service_ids: Vec<uuid::Uuid>,
    area: Area,
    per_second: f64,
    scheduled_share: f64,
    ahead: (Duration, Duration),
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) {
    if per_second <= 0.0 || customers.is_empty() || service_ids.is_empty() {
        return;
    }
    let mut rng = SmallRng::from_entropy();
    let mut next = Instant::now();
    loop {
        let gap = -(1.0_f64 - rng.gen::<f64>()).ln() / per_second;
        next += Duration::from_secs_f64(gap);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = crate::shutdown::stopped(&mut stop) => return,
        }
        let customer = customers.choose(&mut rng).expect("customers").clone();
        let service_id = *service_ids.choose(&mut rng).expect("services");
        let at = area.random_point(&mut rng);
        let mut body = json!({
            "service_id": service_id,
            "booking_type": "now",
            "location": {
                "lat": at.lat,
                "lng": at.lng,
                "address": format!("{} Simulated St., Makati", rng.gen_range(1..=999)),
            },
            "customer_notes": "simulated booking",
        });
        if rng.gen::<f64>() < scheduled_share {
            body["booking_type"] = json!("scheduled");
            let (earliest, latest) = ahead;
            let lead = if latest > earliest {
                rng.gen_range(earliest..=latest)
            } else {
                earliest
            };
            body["scheduled_at"] = json!(later(chrono::Utc::now(), lead));
        }
        tokio::spawn(book(server.clone(), customer, body, next, stats.clone()));
    }
}

/// `lead` after `now`, on a whole second.
fn later(now: chrono::DateTime<chrono::Utc>, lead: Duration) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(now.timestamp() + lead.as_secs() as i64 + 1, 0).unwrap_or(now)
}

async fn book(
    server: Server,
    customer: SimAccount,
    body: Value,
    scheduled: Instant,
    stats: Arc<Stats>,
) {
    let for_later = body["booking_type"] == "scheduled";
    stats.count(if for_later {
        "scheduled_bookings_requested"
    } else {
        "bookings_requested"
    });
    let response = server
        .http
        .post(server.url("/v1/bookings"))
        .bearer_auth(&customer.token)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&body)
        .send()
        .await;
    let response = match response {
        Ok(r) => r,
        Err(_) => return stats.error("http_transport"),
    };
    let status = response.status();
    if for_later {
        stats.record(
            super::stats::Metric::ScheduledBookingCreated,
            scheduled.elapsed(),
        );
    }
    if status.as_u16() != 201 {
        // Name the first field the problem points at, so a report says what was refused.
        let problem: Value = response.json().await.unwrap_or_default();
        if problem["type"] == "/problems/too-many-pending-bookings" {
            // This customer already has bookings waiting: a person would not book another
            // either. The server did right, so it is no error.
            return stats.count("bookings_refused_waiting");
        }
        let field = problem
            .pointer("/errors/0/field")
            .and_then(Value::as_str)
            .map(|f| format!(":{f}"))
            .unwrap_or_default();
        let kind = if for_later { "book_later" } else { "book_now" };
        return stats.error(format!("{kind}_http_{}{field}", status.as_u16()));
    }
    let booking: Value = match response.json().await {
        Ok(v) => v,
        Err(_) => return stats.error("book_now_bad_body"),
    };
    match booking
        .get("id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
    {
        // A booking for later is not dispatched at once: its offers and acceptance stay out
        // of the book-now latencies.
        Some(id) if for_later => {
            stats.count("scheduled_bookings_created");
            stats.scheduled_booking(id);
        }
        Some(id) => {
            stats.count("bookings_created");
            stats.booking_requested(id, scheduled);
        }
        None => stats.error("book_now_bad_body"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookings_for_later_start_on_a_whole_second_at_least_the_lead_ahead() {
        let now = chrono::DateTime::from_timestamp_millis(1_700_000_000_500).unwrap();
        let at = later(now, Duration::from_secs(90 * 60));
        assert_eq!(at.timestamp_subsec_millis(), 0);
        assert!(at >= now + chrono::Duration::minutes(90));
        assert!(at <= now + chrono::Duration::minutes(90) + chrono::Duration::seconds(1));
    }
}
