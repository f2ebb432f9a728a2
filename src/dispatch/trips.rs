//! Active bookings on this node: the therapist is busy, the customer sees them travel, and
//! arrival is detected by geofence.

use std::time::Instant;

use chrono::{DateTime, Utc};
use rustc_hash::FxHashMap;
use serde_json::json;
use uuid::Uuid;

use super::lifecycle::{check_transition, Actor, BookingStatus};
use super::notify::frame;
use super::store::{self, BookingFacts};
use super::Dispatcher;
use crate::geo::index::{LiveFix, Moved, TherapistState};
use crate::geo::{distance_m, Point};

/// The customer gets the therapist's position at most this often.
pub const LOCATION_PUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Leaving the arrival circle resets the dwell only beyond this multiple of its radius, so GPS
/// jitter at the edge neither delays nor flips arrival.
pub const GEOFENCE_EXIT_FACTOR: f64 = 1.5;

/// When an en-route therapist counts as arrived: within `radius_m` for `dwell`.
#[derive(Debug, Clone, Copy)]
pub struct Geofence {
    pub radius_m: f64,
    pub dwell: std::time::Duration,
}

/// A therapist's active booking, for the geofence and the customer's live view.
#[derive(Debug, Clone)]
struct Trip {
    booking_id: i64,
    booking_uuid: Uuid,
    customer_id: i64,
    status: BookingStatus,
    destination: Option<Point>,
    inside_since: Option<DateTime<Utc>>,
    arriving: bool,
    last_push: Option<Instant>,
}

/// Active bookings by provider.
#[derive(Default)]
pub struct Trips {
    by_provider: FxHashMap<i64, Trip>,
}

impl Dispatcher {
    pub(super) fn track_trip(
        &self,
        booking: &BookingFacts,
        provider_id: i64,
        status: BookingStatus,
    ) {
        self.inner
            .index
            .set_dispatch_state(provider_id, Some(TherapistState::Busy));
        let destination = booking
            .lat
            .zip(booking.lng)
            .map(|(lat, lng)| Point::new(lat, lng));
        self.inner.trips.lock().by_provider.insert(
            provider_id,
            Trip {
                booking_id: booking.id,
                booking_uuid: booking.uuid,
                customer_id: booking.customer_id,
                status,
                destination,
                inside_since: None,
                arriving: false,
                last_push: None,
            },
        );
    }

    /// Ends the therapist's trip if it is this booking's; a trip to another booking goes on.
    pub(super) fn end_trip_of(&self, provider_id: i64, booking_id: i64) {
        let ours = self
            .inner
            .trips
            .lock()
            .by_provider
            .get(&provider_id)
            .is_some_and(|trip| trip.booking_id == booking_id);
        if ours {
            self.end_trip(provider_id);
        }
    }

    /// A booking's status changed: its trip follows. A therapist's trip is one booking; a change
    /// to another of their bookings (a scheduled one later on) leaves the trip alone.
    pub(super) fn trip_status_changed(&self, provider_id: i64, booking_id: i64, to: BookingStatus) {
        let mut trips = self.inner.trips.lock();
        let Some(trip) = trips.by_provider.get_mut(&provider_id) else {
            return;
        };
        if trip.booking_id != booking_id {
            return;
        }
        if to.is_final() {
            drop(trips);
            self.end_trip(provider_id);
        } else {
            trip.status = to;
        }
    }

    pub(super) fn end_trip(&self, provider_id: i64) {
        self.inner.trips.lock().by_provider.remove(&provider_id);
        self.inner.index.set_dispatch_state(provider_id, None);
    }

    /// The customer's live view: status, ETA, and the therapist's position while on the way.
    pub fn track(&self, booking: &BookingFacts) -> (Option<LiveFix>, Option<u32>) {
        // An accepted scheduled booking shares nothing until its therapist sets out.
        if !booking.status.shares_position()
            || (booking.is_scheduled() && booking.status == BookingStatus::Accepted)
        {
            return (None, None);
        }
        let Some(provider_id) = booking.provider_id else {
            return (None, None);
        };
        let Some(fix) = self.inner.index.live_fix(provider_id) else {
            return (None, None);
        };
        let eta = booking.lat.zip(booking.lng).map(|(lat, lng)| {
            self.inner
                .eta
                .eta_seconds(distance_m(fix.point, Point::new(lat, lng)))
        });
        (Some(fix), eta)
    }

    /// Called for every accepted, matchable fix: live position for the customer (at most once a
    /// second while accepted or en route), arrival by geofence while en route, and, for an
    /// available therapist, the matcher hears they may now be in reach of a waiting booking:
    /// when the fix brings them back on the map (as if they came online) or into another cell.
    /// A move within a cell is not an event: the matcher looks at cell changes only, and at
    /// 10,000 therapists those events were most of its inbox.
    pub fn on_fix(&self, provider_id: i64, fix: LiveFix, moved: &Moved) {
        if self.inner.index.state(provider_id) == Some(TherapistState::Available) {
            if moved.back_on_map {
                self.signal(super::matcher::MatchEvent::TherapistAvailable { provider_id });
            } else if moved.new_cell {
                self.signal(super::matcher::MatchEvent::TherapistMoved { provider_id });
            }
            return;
        }
        let mut push = None;
        let mut arrive = None;
        {
            let mut trips = self.inner.trips.lock();
            let Some(trip) = trips.by_provider.get_mut(&provider_id) else {
                return;
            };
            if trip.status.shares_position()
                && trip
                    .last_push
                    .is_none_or(|at| at.elapsed() >= LOCATION_PUSH_INTERVAL)
            {
                trip.last_push = Some(Instant::now());
                let eta = trip
                    .destination
                    .map(|d| self.inner.eta.eta_seconds(distance_m(fix.point, d)));
                push = Some((
                    trip.customer_id,
                    json!({
                        "type": "provider.location",
                        "booking_id": trip.booking_uuid,
                        "lat": fix.point.lat,
                        "lng": fix.point.lng,
                        "heading": fix.heading,
                        "eta_seconds": eta,
                        "at": fix.at,
                    }),
                ));
            }
            if trip.status == BookingStatus::EnRoute && !trip.arriving {
                if let Some(destination) = trip.destination {
                    let geofence = self.inner.geofence;
                    let d = distance_m(fix.point, destination);
                    if d <= geofence.radius_m {
                        let since = *trip.inside_since.get_or_insert(fix.at);
                        let dwell = chrono::Duration::from_std(geofence.dwell)
                            .unwrap_or(chrono::Duration::seconds(20));
                        if fix.at - since >= dwell {
                            trip.arriving = true;
                            arrive = Some(trip.booking_id);
                        }
                    } else if d > geofence.radius_m * GEOFENCE_EXIT_FACTOR {
                        trip.inside_since = None;
                    }
                }
            }
        }
        if let Some((customer, payload)) = push {
            let bus = self.inner.bus.clone();
            tokio::spawn(async move { bus.to_user(customer, frame(payload)).await });
        }
        if let Some(booking_id) = arrive {
            let this = self.clone();
            tokio::spawn(async move { this.arrive_by_geofence(provider_id, booking_id).await });
        }
    }

    async fn arrive_by_geofence(&self, provider_id: i64, booking_id: i64) {
        let Ok(Some(booking)) = store::facts_by_id(&self.inner.db, booking_id).await else {
            return;
        };
        if check_transition(booking.status, BookingStatus::Arrived, Actor::System).is_err() {
            return;
        }
        let geofence = self.inner.geofence;
        let note = format!(
            "Arrived (geofence: within {:.0} m for {} s)",
            geofence.radius_m,
            geofence.dwell.as_secs()
        );
        if let Err(error) = self
            .apply_transition(&booking, BookingStatus::Arrived, None, &note)
            .await
        {
            tracing::warn!(booking_id, %error, "geofence arrival not recorded");
            if let Some(trip) = self.inner.trips.lock().by_provider.get_mut(&provider_id) {
                trip.arriving = false;
            }
        } else {
            metrics::counter!("hilot_geofence_arrivals_total").increment(1);
        }
    }
}
