//! The dispatch console's server side: what a dispatcher reads (booking detail, search,
//! alerts, trip replay) and, once acting, what they change.
//!
//! - [`detail`]: one booking with both parties, its visit, its trip so far and its audit trail.
//! - [`search`]: therapists, bookings and stores by name, phone or booking number.
//! - [`alerts`]: bookings waiting, therapists silent on a booking, sessions overrunning.
//! - [`trip`]: a booking's stored fixes from acceptance to arrival, as GeoJSON.
//!
//! What dispatchers change goes through the engine: `crate::dispatch::manual` (offer,
//! reassign, cancel, offline) and `crate::messages::post_from_dispatcher`.

pub mod alerts;
pub mod basemap;
pub mod detail;
pub mod search;
pub mod trip;
