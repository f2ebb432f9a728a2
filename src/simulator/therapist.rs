//! One simulated therapist app: a task that owns its socket and its state, and runs one
//! `select!` loop over its ping clock, the frames it receives and its next timer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::rngs::StdRng as SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use uuid::Uuid;

use super::client::{self, Incoming, Server, Socket};
use super::movement::{bearing_deg, metres_in, random_point_near, step_towards};
use super::seed::SimTherapist;
use super::stats::{Metric, Stats};
use super::{Behaviour, Travel};
use crate::dispatch::lifecycle::BookingStatus;
use crate::geo::{great_circle_m, Point};

/// Pings still unacknowledged this long after stopping are reported as lost.
const ACK_GRACE: Duration = Duration::from_secs(5);
/// With travel simulated, a therapist who has reached the door but heard no geofence
/// `arrived` after this long reports arrival by hand (as the app's button would).
const MANUAL_ARRIVAL_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Duty {
    /// Online, wandering near base, open to offers.
    Idle,
    /// Sent `offer.accept`; waiting for `booking.status: accepted` (or losing the race).
    /// `later`: a booking for later, which leaves them free now once won.
    Accepting {
        booking: Uuid,
        customer: Point,
        later: bool,
    },
    /// Travelling to the customer.
    EnRoute { booking: Uuid, customer: Point },
    /// At the door, waiting for the geofence to report arrival.
    AtDoor { booking: Uuid },
    /// In session until the `Complete` timer.
    InSession { booking: Uuid },
    /// Offline until the `BackOnDuty` timer.
    Off,
}

#[derive(Debug, Clone, Copy)]
enum Timer {
    Decide {
        booking: Uuid,
        customer: Point,
        accept: bool,
        later: bool,
    },
    SendStatus {
        booking: Uuid,
        status: &'static str,
    },
    BackOnDuty,
}

/// What the app reads of its own bookings (`GET /v1/bookings`) to pick up a job under way.
#[derive(Debug, serde::Deserialize)]
struct ListedBooking {
    id: Uuid,
    status: BookingStatus,
    booking_type: String,
    location: Option<ListedPlace>,
}

#[derive(Debug, serde::Deserialize)]
struct ListedPlace {
    lat: f64,
    lng: f64,
}

struct Therapist {
    me: SimTherapist,
    behaviour: Arc<Behaviour>,
    stats: Arc<Stats>,
    rng: SmallRng,
    position: Point,
    waypoint: Point,
    duty: Duty,
    timer: Option<(Instant, Timer)>,
    seq: i64,
    /// Scheduled send time of each unacknowledged ping, by seq.
    in_flight: HashMap<i64, Instant>,
    /// Bookings for later they won, with the customer's place: they set out on `booking.due`.
    later_jobs: HashMap<Uuid, Point>,
    /// Those now due, oldest first: they set out on the next tick they are free.
    due_jobs: std::collections::VecDeque<(Uuid, Point)>,
    /// How often to ping: the behaviour's until the server's `config` frame says otherwise.
    ping_interval: Duration,
}

/// Runs one therapist until `stop`, reconnecting if the server goes away.
pub async fn run(
    server: Server,
    me: SimTherapist,
    behaviour: Arc<Behaviour>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = SmallRng::from_entropy();
    // Start at base: a restarted simulator cannot know where the last run left its phone, and
    // base is never further than the wander radius from it (the server rejects teleports).
    let position = me.base;
    let waypoint = random_point_near(me.base, behaviour.wander_radius_m, &mut rng);
    let ping_interval = behaviour.ping_interval;
    let mut therapist = Therapist {
        me,
        behaviour,
        stats,
        rng,
        position,
        waypoint,
        duty: Duty::Idle,
        timer: None,
        seq: 0,
        in_flight: HashMap::new(),
        later_jobs: HashMap::new(),
        due_jobs: std::collections::VecDeque::new(),
        ping_interval,
    };
    let mut backoff = client::Backoff::new();
    loop {
        match server
            .socket("therapist", &therapist.me.account.token)
            .await
        {
            Ok(socket) => {
                backoff.reset();
                therapist.stats.count("therapist_connected");
                if therapist.session(&server, socket, &mut stop).await {
                    return;
                }
                therapist.stats.error("therapist_socket_closed");
            }
            Err(error) => client::count_connect_failure(&therapist.stats, &error),
        }
        // Whatever job was under way is the server's to resolve; start afresh.
        therapist.duty = Duty::Idle;
        therapist.timer = None;
        therapist.in_flight.clear();
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = crate::shutdown::stopped(&mut stop) => return,
        }
    }
}

impl Therapist {
    /// One connection. Returns true when told to stop, false when the socket failed.
    async fn session(
        &mut self,
        server: &Server,
        mut socket: Socket,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        if self
            .send(&mut socket, json!({"type": "availability", "online": true}))
            .await
            .is_err()
        {
            return false;
        }
        if self.resume_job(server, &mut socket).await.is_err() {
            return false;
        }
        // Apps ping on their own clocks: spread the phases over one interval.
        let mut interval = self.ping_interval;
        let phase = interval.mul_f64(self.rng.gen::<f64>());
        let mut clock = tokio::time::interval_at(Instant::now() + phase, interval);
        clock.set_missed_tick_behavior(MissedTickBehavior::Burst);
        loop {
            if self.ping_interval != interval {
                // The server asked for another pace (`config`): the next fix is due one new
                // interval after the last one.
                interval = self.ping_interval;
                clock = tokio::time::interval_at(Instant::now() + interval, interval);
                clock.set_missed_tick_behavior(MissedTickBehavior::Burst);
            }
            let timer_at = self.timer.map(|(at, _)| at);
            tokio::select! {
                scheduled = clock.tick() => {
                    if self.on_tick(&mut socket, scheduled).await.is_err() { return false; }
                }
                incoming = client::next_frame(&mut socket) => match incoming {
                    Incoming::Frame(frame) => {
                        if self.on_frame(&mut socket, frame).await.is_err() { return false; }
                    }
                    Incoming::Closed => return false,
                    Incoming::Ignored => {}
                },
                _ = tokio::time::sleep_until(timer_at.unwrap_or_else(Instant::now)), if timer_at.is_some() => {
                    if let Some((_, timer)) = self.timer.take() {
                        if self.on_timer(&mut socket, timer).await.is_err() { return false; }
                    }
                }
                _ = crate::shutdown::stopped(stop) => {
                    self.finish(socket).await;
                    return true;
                }
            }
        }
    }

    async fn send(&mut self, socket: &mut Socket, frame: Value) -> Result<(), ()> {
        client::send_json(socket, &frame).await.map_err(|_| ())
    }

    /// The ping clock: move, maybe change duty, and send a fix (unless off duty).
    async fn on_tick(&mut self, socket: &mut Socket, scheduled: Instant) -> Result<(), ()> {
        let dt = self.ping_interval.as_secs_f64();
        let previous = self.position;
        if self.duty == Duty::Idle {
            if let Some((booking, customer)) = self.due_jobs.pop_front() {
                self.stats.count("scheduled_jobs_started");
                self.set_out(socket, booking, customer).await?;
            }
        }
        match self.duty {
            Duty::Off => return Ok(()),
            Duty::Idle => {
                if self.rng.gen::<f64>() < self.behaviour.off_duty_chance_per_tick() {
                    self.duty = Duty::Off;
                    self.timer = Some((
                        Instant::now() + self.behaviour.off_duty_for,
                        Timer::BackOnDuty,
                    ));
                    self.stats.count("went_off_duty");
                    return self
                        .send(socket, json!({"type": "availability", "online": false}))
                        .await;
                }
                let step = metres_in(self.behaviour.wander_speed_kmh, dt);
                self.position = step_towards(self.position, self.waypoint, step);
                if self.position == self.waypoint {
                    self.waypoint = random_point_near(
                        self.me.base,
                        self.behaviour.wander_radius_m,
                        &mut self.rng,
                    );
                }
            }
            Duty::EnRoute { booking, customer } => {
                if let Travel::Drive { speed_kmh } = self.behaviour.travel {
                    self.position = step_towards(self.position, customer, metres_in(speed_kmh, dt));
                    if great_circle_m(self.position, customer) < 1.0 {
                        self.duty = Duty::AtDoor { booking };
                        self.timer = Some((
                            Instant::now() + MANUAL_ARRIVAL_AFTER,
                            Timer::SendStatus {
                                booking,
                                status: "arrived",
                            },
                        ));
                    }
                }
            }
            Duty::Accepting { .. } | Duty::AtDoor { .. } | Duty::InSession { .. } => {}
        }
        let moved = great_circle_m(previous, self.position);
        let heading = (moved > 0.5).then(|| bearing_deg(previous, self.position));
        self.seq += 1;
        self.in_flight.insert(self.seq, scheduled);
        self.stats.count("pings_sent");
        let frame = json!({
            "type": "location",
            "seq": self.seq,
            "lat": self.position.lat,
            "lng": self.position.lng,
            "accuracy_m": 8.0,
            "heading": heading,
            "speed_kmh": (moved / dt * 3.6 * 10.0).round() / 10.0,
            // The fix was taken at its scheduled time, even if this send runs late.
            "recorded_at": Utc::now() - scheduled.elapsed(),
        });
        self.send(socket, frame).await
    }

    async fn on_frame(&mut self, socket: &mut Socket, frame: Value) -> Result<(), ()> {
        match client::kind(&frame) {
            "ack" => {
                let seq = frame.get("seq").and_then(Value::as_i64).unwrap_or(-1);
                match self.in_flight.remove(&seq) {
                    Some(scheduled) => {
                        self.stats.record(Metric::PingToAck, scheduled.elapsed());
                        self.stats.count("pings_acked");
                    }
                    None => self.stats.error("ack_for_unknown_seq"),
                }
            }
            "config" => {
                if let Some(seconds) = frame.get("ping_interval_s").and_then(Value::as_f64) {
                    self.ping_interval = Duration::from_secs_f64(seconds.max(0.05));
                    self.stats.count("ping_interval_changes");
                }
            }
            "offer" => self.on_offer(socket, &frame).await?,
            "offer.withdrawn" => self.on_withdrawn(&frame),
            "booking.status" => self.on_booking_status(socket, &frame).await?,
            "booking.due" => self.on_due(&frame),
            "error" => self.on_error(&frame),
            _ => {}
        }
        Ok(())
    }

    async fn on_offer(&mut self, socket: &mut Socket, frame: &Value) -> Result<(), ()> {
        let Some(booking) = client::booking_id(frame) else {
            self.stats.error("offer_without_booking_id");
            return Ok(());
        };
        self.stats.offer_received(booking, Instant::now());
        self.stats.count("offers_received");
        let deciding = matches!(self.timer, Some((_, Timer::Decide { .. })));
        if self.duty != Duty::Idle || deciding {
            // One offer at a time, as in the app: a second one while deciding is declined.
            self.stats.count("offers_declined");
            return self
                .send(
                    socket,
                    json!({"type": "offer.decline", "booking_id": booking}),
                )
                .await;
        }
        let location = frame.get("location");
        let coordinate = |name| location.and_then(|l| l.get(name)).and_then(Value::as_f64);
        let (Some(lat), Some(lng)) = (coordinate("lat"), coordinate("lng")) else {
            self.stats.error("offer_without_location");
            return Ok(());
        };
        let later = frame.get("booking_type").and_then(Value::as_str) == Some("scheduled");
        let accept = self.rng.gen::<f64>() < self.behaviour.accept_probability;
        let (low, high) = self.behaviour.decision_delay;
        let delay = if high > low {
            self.rng.gen_range(low..high)
        } else {
            low
        };
        self.timer = Some((
            Instant::now() + delay,
            Timer::Decide {
                booking,
                customer: Point::new(lat, lng),
                accept,
                later,
            },
        ));
        Ok(())
    }

    fn on_withdrawn(&mut self, frame: &Value) {
        let booking = client::booking_id(frame);
        match (self.timer, self.duty) {
            (Some((_, Timer::Decide { booking: b, .. })), _) if Some(b) == booking => {
                self.timer = None;
                self.stats.count("offers_withdrawn_while_deciding");
            }
            (_, Duty::Accepting { booking: b, .. }) if Some(b) == booking => {
                self.duty = Duty::Idle;
                self.stats.count("accepts_lost_race");
            }
            _ => {}
        }
    }

    async fn on_booking_status(&mut self, socket: &mut Socket, frame: &Value) -> Result<(), ()> {
        let Some(booking) = client::booking_id(frame) else {
            return Ok(());
        };
        let status = frame.get("status").and_then(Value::as_str).unwrap_or("");
        if status == "cancelled" {
            // A booking for later they hold may be called off before it is due.
            self.later_jobs.remove(&booking);
            self.due_jobs.retain(|(b, _)| *b != booking);
        }
        let mine = match self.duty {
            Duty::Accepting { booking: b, .. }
            | Duty::EnRoute { booking: b, .. }
            | Duty::AtDoor { booking: b }
            | Duty::InSession { booking: b } => b == booking,
            Duty::Idle | Duty::Off => false,
        };
        if !mine {
            return Ok(());
        }
        match (status, self.duty) {
            // A booking for later is in their calendar now; they stay free until it is due
            // (`booking.due`, at its lead time).
            (
                "accepted",
                Duty::Accepting {
                    later: true,
                    customer,
                    ..
                },
            ) => {
                self.stats.count("scheduled_jobs_won");
                self.later_jobs.insert(booking, customer);
                self.duty = Duty::Idle;
            }
            ("accepted", Duty::Accepting { customer, .. }) => {
                self.stats.count("jobs_won");
                self.set_out(socket, booking, customer).await?;
            }
            ("arrived", Duty::EnRoute { .. } | Duty::AtDoor { .. }) => {
                self.stats.count("arrivals");
                self.start_session(socket, booking).await?;
            }
            ("completed", _) => {
                self.stats.count("jobs_completed");
                self.duty = Duty::Idle;
                self.timer = None;
            }
            ("cancelled" | "no_show", _) => {
                self.stats.count("jobs_cancelled");
                self.duty = Duty::Idle;
                self.timer = None;
            }
            _ => {}
        }
        Ok(())
    }

    /// Drives to the customer (`en_route`); with travel skipped, arrives after a step.
    async fn set_out(
        &mut self,
        socket: &mut Socket,
        booking: Uuid,
        customer: Point,
    ) -> Result<(), ()> {
        self.send(
            socket,
            json!({"type": "status", "booking_id": booking, "status": "en_route"}),
        )
        .await?;
        self.head_for(booking, customer);
        Ok(())
    }

    /// Carries on the job the server still has under way for them, as the app does when it
    /// starts: one left by a dropped socket, or by an earlier simulator on these accounts (a
    /// load test stops mid-job). Without it they would stay busy for the server, never offered
    /// anything again, and each load test on the same server would have fewer therapists.
    async fn resume_job(&mut self, server: &Server, socket: &mut Socket) -> Result<(), ()> {
        let listed = match server
            .http
            .get(server.url("/v1/bookings?limit=10"))
            .bearer_auth(&self.me.account.token)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
        {
            Ok(response) => response.json::<Vec<ListedBooking>>().await,
            Err(error) => Err(error),
        };
        let bookings = match listed {
            Ok(bookings) => bookings,
            Err(_) => {
                // Not fatal: the job (if any) stays the server's to resolve.
                self.stats.error("therapist_jobs_unlisted");
                return Ok(());
            }
        };
        // Busy as the server counts it (`BookingStatus::is_active`), less a booking for later
        // already accepted: that one leaves them free until it is due.
        let Some(job) = bookings.into_iter().find(|b| {
            b.status.is_active() && (b.status != BookingStatus::Accepted || b.booking_type == "now")
        }) else {
            return Ok(());
        };
        let Some(place) = job.location else {
            self.stats.error("therapist_job_unreadable");
            return Ok(());
        };
        let customer = Point::new(place.lat, place.lng);
        self.stats.count("jobs_resumed");
        match job.status {
            BookingStatus::Accepted => self.set_out(socket, job.id, customer).await,
            BookingStatus::EnRoute => {
                self.head_for(job.id, customer);
                Ok(())
            }
            BookingStatus::Arrived => self.start_session(socket, job.id).await,
            _ => {
                // In session: it ends a session's length from now.
                self.in_session(job.id);
                Ok(())
            }
        }
    }

    /// At the door: the session starts (`in_progress`) and ends a session's length later.
    async fn start_session(&mut self, socket: &mut Socket, booking: Uuid) -> Result<(), ()> {
        self.send(
            socket,
            json!({"type": "status", "booking_id": booking, "status": "in_progress"}),
        )
        .await?;
        self.in_session(booking);
        Ok(())
    }

    /// In session until a session's length from now, then `completed`.
    fn in_session(&mut self, booking: Uuid) {
        self.duty = Duty::InSession { booking };
        self.timer = Some((
            Instant::now() + self.behaviour.session,
            Timer::SendStatus {
                booking,
                status: "completed",
            },
        ));
    }

    /// On the way to the customer: driving (the ping clock moves them), or, with travel
    /// skipped, at the door a step from now.
    fn head_for(&mut self, booking: Uuid, customer: Point) {
        self.duty = Duty::EnRoute { booking, customer };
        if let Travel::Skip { step } = self.behaviour.travel {
            self.timer = Some((
                Instant::now() + step,
                Timer::SendStatus {
                    booking,
                    status: "arrived",
                },
            ));
        }
    }

    /// A booking for later they won is due: they set out on the next tick they are free (the
    /// matcher kept their calendar clear for it, but an off-duty spell may not be over).
    fn on_due(&mut self, frame: &Value) {
        let Some(booking) = client::booking_id(frame) else {
            return;
        };
        if let Some(customer) = self.later_jobs.remove(&booking) {
            self.due_jobs.push_back((booking, customer));
        }
    }

    fn on_error(&mut self, frame: &Value) {
        let code = frame
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        if let (Duty::Accepting { .. }, "conflict") = (self.duty, code) {
            // Another therapist was first, or the offer expired: an outcome, not a fault.
            self.duty = Duty::Idle;
            self.stats.count("accepts_lost_race");
            return;
        }
        self.stats.error(format!("therapist_frame_error:{code}"));
    }

    async fn on_timer(&mut self, socket: &mut Socket, timer: Timer) -> Result<(), ()> {
        match timer {
            Timer::Decide {
                booking,
                customer,
                accept,
                later,
            } => {
                if accept && self.duty == Duty::Idle {
                    self.duty = Duty::Accepting {
                        booking,
                        customer,
                        later,
                    };
                    self.stats.accept_sent(booking, Instant::now());
                    self.stats.count("offers_accepted");
                    self.send(
                        socket,
                        json!({"type": "offer.accept", "booking_id": booking}),
                    )
                    .await
                } else {
                    self.stats.count("offers_declined");
                    self.send(
                        socket,
                        json!({"type": "offer.decline", "booking_id": booking}),
                    )
                    .await
                }
            }
            Timer::SendStatus { booking, status } => {
                if status == "arrived" {
                    self.duty = Duty::AtDoor { booking };
                }
                self.send(
                    socket,
                    json!({"type": "status", "booking_id": booking, "status": status}),
                )
                .await
            }
            Timer::BackOnDuty => {
                self.duty = Duty::Idle;
                self.stats.count("came_on_duty");
                self.send(socket, json!({"type": "availability", "online": true}))
                    .await
            }
        }
    }

    /// Stops pinging, waits a little for the acks still owed, then closes politely.
    async fn finish(&mut self, mut socket: Socket) {
        let deadline = Instant::now() + ACK_GRACE;
        while !self.in_flight.is_empty() {
            let frame = tokio::select! {
                incoming = client::next_frame(&mut socket) => incoming,
                _ = tokio::time::sleep_until(deadline) => break,
            };
            match frame {
                Incoming::Frame(frame) if client::kind(&frame) == "ack" => {
                    let _ = self.on_frame(&mut socket, frame).await;
                }
                Incoming::Closed => break,
                _ => {}
            }
        }
        for _ in self.in_flight.drain() {
            self.stats.error("ping_unacknowledged");
        }
        let _ = futures_util::SinkExt::close(&mut socket).await;
    }
}
