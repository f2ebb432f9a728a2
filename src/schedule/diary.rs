//! Every therapist's calendar in memory: weekly schedule, blocked times and commitments, with
//! their base location and service terms. It answers questions about many therapists at once
//! without the database: slots near a place, and whether a candidate can take a booking (the
//! matcher's eligibility and nearby).
//!
//! Freshness across nodes: whoever changes a therapist's calendar calls [`Diary::changed`],
//! which reloads them here at once and tells every node through `NOTIFY hilot_schedule`; each
//! node's [`run`] listens and reloads the therapist named, and reloads everything every
//! [`FULL_RELOAD_INTERVAL`] in case a notification was lost. The database's exclusion
//! constraint stays the last word on every booking.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use h3o::{CellIndex, LatLng, Resolution};
use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;

use super::slots::{self, Calendar, NowJob, Session};
use super::store;
use super::weekly::WeeklySchedule;
use super::SchedulingSettings;
use crate::domain::pricing::Quote;
use crate::geo::index::{ServiceOffer, TherapistProfile};
use crate::geo::{distance_m, EtaModel, Point};

/// The PostgreSQL channel calendar changes travel on between nodes.
pub const NOTIFY_CHANNEL: &str = "hilot_schedule";
/// Everything is reloaded this often, in case a notification was lost.
pub const FULL_RELOAD_INTERVAL: Duration = Duration::from_secs(60);
/// The diary keeps calendars from this long ago (a `now` booking under way) ...
const KEEP_PAST: chrono::Duration = chrono::Duration::hours(12);
/// ... to this far ahead (beyond any booking horizon).
const KEEP_AHEAD: chrono::Duration = chrono::Duration::days(400);
/// Therapists are bucketed by the cell of their base at this resolution (edge ≈ 9.9 km).
const BASE_CELL_RESOLUTION: Resolution = Resolution::Five;

/// One therapist as the diary knows them.
#[derive(Debug, Clone)]
pub struct Entry {
    pub profile: TherapistProfile,
    pub base: Option<Point>,
    pub schedule: Option<WeeklySchedule>,
    pub calendar: Calendar,
}

impl Entry {
    /// May take bookings at all: verified, active, with a schedule that has hours.
    pub fn bookable(&self) -> bool {
        self.profile.verified
            && self.profile.active
            && self.schedule.as_ref().is_some_and(|s| !s.is_empty())
    }

    /// Their terms for a home service, if they offer it.
    pub fn home_service(&self, service_id: i64) -> Option<&ServiceOffer> {
        self.profile
            .services
            .iter()
            .find(|o| o.service_id == service_id && o.available && o.home_service_enabled)
    }

    /// Whether they travel from their base to `place` for this service: within both their
    /// service radius and the service's travel limit. Answers the distance.
    pub fn reach_from_base(&self, offer: &ServiceOffer, place: Point) -> Option<f64> {
        let base = self.base?;
        let d = distance_m(base, place);
        let limit_km = f64::from(
            self.profile
                .service_radius_km
                .min(offer.max_travel_distance_km),
        );
        (d <= limit_km * 1000.0).then_some(d)
    }

    /// Whether a scheduled session starting at `start` fits their schedule and calendar.
    pub fn fits(&self, session: Session, start: DateTime<Utc>) -> bool {
        self.schedule
            .as_ref()
            .is_some_and(|s| slots::fits(s, &self.calendar, session, start))
    }

    /// Whether a `now` job leaves them time for what they have booked later.
    pub fn now_job_fits(
        &self,
        job: &NowJob,
        travel_between: impl Fn(Point, Point) -> chrono::Duration,
    ) -> bool {
        slots::now_job_fits(&self.calendar, job, travel_between)
    }
}

#[derive(Default)]
struct Inner {
    entries: FxHashMap<i64, Arc<Entry>>,
    cells: FxHashMap<CellIndex, Vec<i64>>,
}

impl Inner {
    fn remove(&mut self, provider_id: i64) {
        if let Some(old) = self.entries.remove(&provider_id) {
            if let Some(cell) = old.base.and_then(base_cell) {
                if let Some(bucket) = self.cells.get_mut(&cell) {
                    bucket.retain(|id| *id != provider_id);
                }
            }
        }
    }

    fn insert(&mut self, entry: Entry) {
        let id = entry.profile.provider_id;
        self.remove(id);
        if let Some(cell) = entry.base.and_then(base_cell) {
            self.cells.entry(cell).or_default().push(id);
        }
        self.entries.insert(id, Arc::new(entry));
    }
}

fn base_cell(point: Point) -> Option<CellIndex> {
    LatLng::new(point.lat, point.lng)
        .ok()
        .map(|ll| ll.to_cell(BASE_CELL_RESOLUTION))
}

/// A booking a therapist might be offered, as their calendar sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Job {
    /// Book now at `place`: travel there, do the session, and still make what comes next.
    Now { session: Session, place: Point },
    /// A scheduled session starting at `start`.
    Later {
        start: DateTime<Utc>,
        session: Session,
    },
}

/// One start time near a place: how many therapists can come, and the cheapest quote.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotNear {
    pub start: DateTime<Utc>,
    pub therapists: u32,
    pub best_quote: Quote,
}

/// A question about slots near a place.
#[derive(Debug, Clone, Copy)]
pub struct SlotsNearQuery {
    pub place: Point,
    pub service_id: i64,
    pub session: Session,
    /// The day asked about, as instants (midnight to midnight in the caller's zone).
    pub window: (DateTime<Utc>, DateTime<Utc>),
    /// No slot earlier (now + lead) or later (now + horizon) than these.
    pub earliest: DateTime<Utc>,
    pub latest: DateTime<Utc>,
    pub step: chrono::Duration,
    /// The widest distance any therapist travels (the platform's `service_radius_max`).
    pub max_radius_m: f64,
}

/// Every therapist's calendar on this node.
#[derive(Default)]
pub struct Diary {
    inner: RwLock<Inner>,
    /// The scheduling rules as of the last full reload, for answers that must not read the
    /// database (nearby's feasibility of a session now).
    settings: RwLock<SchedulingSettings>,
}

impl Diary {
    pub fn new() -> Self {
        Self::default()
    }

    /// The calendar predicate of dispatch (the matcher's eligibility, nearby, ranking): may this
    /// therapist, `travel` away from the job, take it at `now`? A `now` job must leave room for
    /// every later commitment (a therapist with none is free); a scheduled one needs a schedule
    /// with room at that time.
    pub fn can_take(
        &self,
        provider_id: i64,
        job: &Job,
        travel: chrono::Duration,
        now: DateTime<Utc>,
        eta: EtaModel,
    ) -> bool {
        let entry = self.inner.read().entries.get(&provider_id).cloned();
        match (job, entry) {
            (Job::Now { .. }, None) => true,
            (Job::Now { session, place }, Some(entry)) => entry.now_job_fits(
                &NowJob {
                    now,
                    travel,
                    session: *session,
                    place: *place,
                },
                |a, b| chrono::Duration::seconds(i64::from(eta.eta_seconds(distance_m(a, b)))),
            ),
            (Job::Later { .. }, None) => false,
            (Job::Later { start, session }, Some(entry)) => {
                entry.bookable() && entry.fits(*session, *start)
            }
        }
    }

    /// Slots near a place (computed, never stored): for each start time in the window, how many
    /// bookable therapists based within reach can take the session then, with the cheapest
    /// quote among them (distance from their base). No coordinates leave here.
    pub fn slots_near(&self, q: &SlotsNearQuery) -> Vec<SlotNear> {
        let mut by_start: std::collections::BTreeMap<DateTime<Utc>, (u32, Quote)> =
            std::collections::BTreeMap::new();
        let earliest = q.earliest.max(q.window.0);
        let latest = q.latest.min(q.window.1 - chrono::Duration::nanoseconds(1));
        if earliest > latest {
            return Vec::new();
        }
        for entry in self.based_near(q.place, q.max_radius_m) {
            if !entry.bookable() {
                continue;
            }
            let Some(offer) = entry.home_service(q.service_id) else {
                continue;
            };
            let Some(distance) = entry.reach_from_base(offer, q.place) else {
                continue;
            };
            let Some(schedule) = entry.schedule.as_ref() else {
                continue;
            };
            let quote = crate::domain::pricing::quote(
                offer.price,
                offer.base_distance_km,
                offer.per_km_surcharge,
                distance,
            );
            let first = earliest.with_timezone(&schedule.tz).date_naive();
            let last = latest.with_timezone(&schedule.tz).date_naive();
            let mut date = first;
            while date <= last {
                for start in slots::for_day(
                    schedule,
                    &entry.calendar,
                    q.session,
                    date,
                    q.step,
                    earliest,
                    latest,
                ) {
                    let slot = by_start.entry(start).or_insert((0, quote));
                    slot.0 += 1;
                    if quote.total_amount < slot.1.total_amount {
                        slot.1 = quote;
                    }
                }
                let Some(next) = date.succ_opt() else { break };
                date = next;
            }
        }
        by_start
            .into_iter()
            .map(|(start, (therapists, best_quote))| SlotNear {
                start,
                therapists,
                best_quote,
            })
            .collect()
    }

    /// Replaces what the diary holds (tests and benchmarks build one by hand).
    pub fn put(&self, entry: Entry) {
        self.inner.write().insert(entry);
    }

    pub fn len(&self) -> usize {
        self.inner.read().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, provider_id: i64) -> Option<Arc<Entry>> {
        self.inner.read().entries.get(&provider_id).cloned()
    }

    /// Therapists whose base lies within `radius_m` of `point` (a superset is never returned:
    /// each is checked by distance).
    pub fn based_near(&self, point: Point, radius_m: f64) -> Vec<Arc<Entry>> {
        let Ok(origin) = LatLng::new(point.lat, point.lng) else {
            return Vec::new();
        };
        let origin = origin.to_cell(BASE_CELL_RESOLUTION);
        // Cells vary in size; a ring k away holds nothing nearer than about 1.5 k − 2 edges of
        // 0.6 × the average edge.
        let edge_m = BASE_CELL_RESOLUTION.edge_length_km() * 1000.0 * 0.6;
        let k = ((radius_m / edge_m + 2.0) / 1.5).ceil().max(1.0) as u32;
        let inner = self.inner.read();
        let mut out = Vec::new();
        for cell in origin.grid_disk::<Vec<_>>(k) {
            let Some(ids) = inner.cells.get(&cell) else {
                continue;
            };
            for id in ids {
                let entry = &inner.entries[id];
                if entry.base.is_some_and(|b| distance_m(b, point) <= radius_m) {
                    out.push(entry.clone());
                }
            }
        }
        out
    }

    /// The scheduling rules, as read at the last full reload (at most a minute old).
    pub fn settings(&self) -> SchedulingSettings {
        self.settings.read().clone()
    }

    /// Reloads everyone and the scheduling rules (start-up, and every minute).
    pub async fn reload_all(&self, db: &PgPool) -> anyhow::Result<usize> {
        *self.settings.write() = SchedulingSettings::load(db).await;
        let entries = load(db, None).await?;
        let count = entries.len();
        let mut inner = Inner::default();
        for entry in entries {
            inner.insert(entry);
        }
        *self.inner.write() = inner;
        Ok(count)
    }

    /// Reloads one therapist.
    pub async fn reload(&self, db: &PgPool, provider_id: i64) -> anyhow::Result<()> {
        let mut entries = load(db, Some(provider_id)).await?;
        match entries.pop() {
            Some(entry) => self.inner.write().insert(entry),
            None => self.inner.write().remove(provider_id),
        }
        Ok(())
    }

    /// A therapist's calendar changed (schedule, blocked time, a booking taken, moved or
    /// ended): reload them here now, and tell the other nodes. Failures are logged: the minute's
    /// full reload heals them.
    pub async fn changed(&self, db: &PgPool, provider_id: i64) {
        if let Err(error) = self.reload(db, provider_id).await {
            tracing::warn!(
                provider_id,
                error = format!("{error:#}"),
                "reloading a calendar failed"
            );
        }
        if let Err(error) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(provider_id.to_string())
            .execute(db)
            .await
        {
            tracing::warn!(provider_id, %error, "announcing a calendar change failed");
        }
    }
}

async fn load(db: &PgPool, only: Option<i64>) -> anyhow::Result<Vec<Entry>> {
    let now = Utc::now();
    let profiles = crate::geo::load::load_profiles(db, only).await?;
    let (mut schedules, mut calendars) =
        store::calendars(db, now - KEEP_PAST, now + KEEP_AHEAD, only).await?;
    let bases = store::bases(db, only).await?;
    Ok(profiles
        .into_iter()
        .map(|profile| {
            let id = profile.provider_id;
            Entry {
                base: bases.get(&id).copied(),
                schedule: schedules.remove(&id),
                calendar: calendars.remove(&id).unwrap_or_default(),
                profile,
            }
        })
        .collect())
}

/// Keeps this node's diary fresh until shutdown: loads it, then reloads each therapist another
/// node names, and everyone every minute.
pub async fn run(diary: Arc<Diary>, db: PgPool, mut shutdown: watch::Receiver<bool>) {
    let mut listener = None;
    let mut full = tokio::time::interval(FULL_RELOAD_INTERVAL);
    loop {
        if listener.is_none() {
            listener = match PgListener::connect_with(&db).await {
                Ok(mut l) => match l.listen(NOTIFY_CHANNEL).await {
                    Ok(()) => Some(l),
                    Err(error) => {
                        tracing::warn!(%error, "the diary cannot listen; reloading every minute");
                        None
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "the diary cannot listen; reloading every minute");
                    None
                }
            };
        }
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.try_recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = crate::shutdown::stopped(&mut shutdown) => return,
            _ = full.tick() => {
                if let Err(error) = diary.reload_all(&db).await {
                    tracing::warn!(error = format!("{error:#}"), "reloading the diary failed");
                }
            }
            message = notified => match message {
                Ok(Some(n)) => {
                    if let Ok(provider_id) = n.payload().parse::<i64>() {
                        if let Err(error) = diary.reload(&db, provider_id).await {
                            tracing::warn!(provider_id, error = format!("{error:#}"), "reloading a calendar failed");
                        }
                    }
                }
                // Reconnected: something may have been missed.
                Ok(None) => {
                    let _ = diary.reload_all(&db).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "the diary's listener failed; reconnecting");
                    listener = None;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}
