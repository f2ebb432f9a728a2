//! The simulator: therapists, customers and dispatchers that use Hilot only through its public
//! HTTP and WebSocket API, as the real apps do. `hilot demo` runs it gently against a demo city;
//! the `loadtest` binary runs it hard and reports latencies.
//!
//! - [`seed`]: the simulated city's accounts (straight into the database, as an operator would).
//! - [`therapist`], [`customer`], [`dashboard`]: one task per simulated app.
//! - [`movement`]: pure geometry of wandering and travelling.
//! - [`stats`]: what the simulated people saw, as HDR histograms and counts.

pub mod client;
pub mod customer;
pub mod dashboard;
pub mod demo;
pub mod movement;
pub mod seed;
pub mod stats;
pub mod therapist;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use client::Server;
use seed::{Area, SeededCity};
use stats::Stats;

/// How a therapist gets to the customer once accepted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Travel {
    /// Drive there at this speed, pinging on the way; the server's geofence reports arrival.
    Drive { speed_kmh: f64 },
    /// Report `arrived` after this long without moving (load tests: jobs stay short).
    Skip { step: Duration },
}

/// How simulated therapists behave.
#[derive(Debug, Clone)]
pub struct Behaviour {
    pub ping_interval: Duration,
    pub accept_probability: f64,
    /// Uniform range of the time a therapist takes to answer an offer.
    pub decision_delay: (Duration, Duration),
    pub travel: Travel,
    /// How long a session lasts once `in_progress`.
    pub session: Duration,
    pub wander_speed_kmh: f64,
    /// How far from base an idle therapist wanders.
    pub wander_radius_m: f64,
    /// Chance per hour that an idle therapist goes off duty, and for how long.
    pub off_duty_per_hour: f64,
    pub off_duty_for: Duration,
}

impl Behaviour {
    fn off_duty_chance_per_tick(&self) -> f64 {
        self.off_duty_per_hour * self.ping_interval.as_secs_f64() / 3600.0
    }
}

/// Everything one simulation run does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub behaviour: Behaviour,
    pub area: Area,
    pub bookings_per_s: f64,
    /// Share (0–1) of the bookings made for later rather than now ...
    pub scheduled_share: f64,
    /// ... for a time between these two leads from the moment of booking (at least the
    /// server's `scheduling.lead_minutes`).
    pub scheduled_ahead: (Duration, Duration),
    pub dashboards: usize,
    /// Each dashboard watches a random square viewport this many km wide inside the area;
    /// `None`: the whole area.
    pub viewport_km: Option<f64>,
    /// Therapists connect spread over this long; bookings start after it.
    pub ramp: Duration,
    /// Another node of the same service: every other dashboard watches through it, timing the
    /// fixes that reach it through the replication.
    pub other_node: Option<Server>,
}

/// A running simulation: stop it with [`Simulation::stop`].
pub struct Simulation {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    pub stats: Arc<Stats>,
}

impl Simulation {
    /// Starts every simulated app of `city` against `server`.
    pub fn start(server: Server, city: &SeededCity, plan: Plan) -> Self {
        let (stop, stopped) = watch::channel(false);
        let stats = Arc::new(Stats::new());
        let behaviour = Arc::new(plan.behaviour.clone());
        let mut tasks = JoinSet::new();
        let count = city.therapists.len().max(1) as f64;
        for (i, therapist) in city.therapists.iter().cloned().enumerate() {
            let delay = plan.ramp.mul_f64(i as f64 / count);
            let (server, behaviour, stats, mut stopped) = (
                server.clone(),
                behaviour.clone(),
                stats.clone(),
                stopped.clone(),
            );
            tasks.spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = crate::shutdown::stopped(&mut stopped) => return,
                }
                therapist::run(server, therapist, behaviour, stats, stopped).await
            });
        }
        for customer in city.customers.iter().cloned() {
            tasks.spawn(customer::listen(
                server.clone(),
                customer,
                stats.clone(),
                stopped.clone(),
            ));
        }
        let mut rng = rand::thread_rng();
        for n in 0..plan.dashboards {
            let bbox = match plan.viewport_km {
                Some(km) => viewport_in(plan.area, km, &mut rng).bbox(),
                None => plan.area.bbox(),
            };
            let (through, metric) = match &plan.other_node {
                Some(other) if n % 2 == 1 => {
                    (other.clone(), stats::Metric::PingToOtherNodeDashboard)
                }
                _ => (server.clone(), stats::Metric::PingToDashboard),
            };
            tasks.spawn(dashboard::watch_viewport(
                through,
                city.dashboard_admins[n % city.dashboard_admins.len()]
                    .token
                    .clone(),
                bbox,
                metric,
                stats.clone(),
                stopped.clone(),
            ));
        }
        let (customers, services, area, rate, ramp, scheduled_share, ahead) = (
            city.customers.clone(),
            city.service_ids.clone(),
            plan.area,
            plan.bookings_per_s,
            plan.ramp,
            plan.scheduled_share,
            plan.scheduled_ahead,
        );
        let (booking_stats, mut booking_stop) = (stats.clone(), stopped.clone());
        tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(ramp) => {}
                _ = crate::shutdown::stopped(&mut booking_stop) => return,
            }
            customer::book_poisson(
                server,
                customers,
                services,
                area,
                rate,
                scheduled_share,
                ahead,
                booking_stats,
                booking_stop,
            )
            .await
        });
        Self { stop, tasks, stats }
    }

    /// Tells every simulated app to stop and waits (at most `patience`) for them to finish.
    pub async fn stop(mut self, patience: Duration) -> Arc<Stats> {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(patience, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
        self.stats
    }
}

/// Bookings for later start 1.5 to 5.5 hours ahead (the default lead time is an hour).
pub const DEFAULT_SCHEDULED_AHEAD: (Duration, Duration) =
    (Duration::from_secs(90 * 60), Duration::from_secs(330 * 60));

/// A random square viewport `km` wide inside `area` (or the whole area if it is smaller).
fn viewport_in(area: Area, km: f64, rng: &mut impl Rng) -> Area {
    let h = (km * 1000.0 / movement::METRES_PER_DEGREE).min(area.north - area.south);
    let w = (km * 1000.0 / (movement::METRES_PER_DEGREE * area.center().lat.to_radians().cos()))
        .min(area.east - area.west);
    let south = area.south + rng.gen::<f64>() * (area.north - area.south - h);
    let west = area.west + rng.gen::<f64>() * (area.east - area.west - w);
    Area {
        south,
        west,
        north: south + h,
        east: west + w,
    }
}
