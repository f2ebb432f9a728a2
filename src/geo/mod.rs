//! Geography: distances on the WGS84 ellipsoid (and a cheap sphere for thresholds), travel-time
//! estimates, and the live H3 index of therapists.

pub mod index;
pub mod load;

/// Mean Earth radius in metres (IUGG; the same sphere PostGIS uses for `use_spheroid => false`).
pub const EARTH_RADIUS_M: f64 = 6_371_008.771_415;

/// A WGS84 position in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub lat: f64,
    pub lng: f64,
}

impl Point {
    pub const fn new(lat: f64, lng: f64) -> Self {
        Self { lat, lng }
    }

    /// Whether both coordinates are finite and in range.
    pub fn is_valid(self) -> bool {
        self.lat.is_finite()
            && self.lng.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lng)
    }
}

/// Distance in metres along the WGS84 ellipsoid (Karney's geodesic, from the `geo` crate): the
/// distance PostGIS gives for `geography` with its default spheroid, to well under a millimetre.
/// Every distance a user sees (nearby, offers, quotes, ETAs, the geofence) is this one.
///
/// ```
/// use hilot::geo::{distance_m, Point};
/// let ayala = Point::new(14.5547, 121.0244);
/// let bgc = Point::new(14.5509, 121.0503);
/// assert!((distance_m(ayala, bgc) - 2812.6).abs() < 0.5);
/// ```
pub fn distance_m(a: Point, b: Point) -> f64 {
    use geo::Distance as _;
    geo::Geodesic.distance(geo::Point::new(a.lng, a.lat), geo::Point::new(b.lng, b.lat))
}

/// How far the great circle on the mean sphere ([`great_circle_m`]) can be from the WGS84
/// geodesic, relatively: the meridian radius of curvature ranges from 0.44 % below the mean
/// radius (at the equator) to 0.45 % above it (at the poles); 0.6 % leaves room for rounding.
pub const SPHERE_RELATIVE_ERROR: f64 = 0.006;

/// Great-circle (haversine) distance in metres on the mean sphere: a few multiplications, for
/// checks where a 0.5 % error does not matter (implausible jumps, the storage policy) and for
/// pruning searches, never for a distance shown to anyone.
pub fn great_circle_m(a: Point, b: Point) -> f64 {
    let (lat1, lat2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = lat2 - lat1;
    let dlng = (b.lng - a.lng).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlng / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

/// How road travel is estimated from straight-line distance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EtaModel {
    /// Road distance ÷ straight-line distance. 1.4 is typical of dense city grids.
    pub road_circuity: f64,
    /// Average door-to-door speed, km/h. Metro Manila traffic averages about 20 km/h.
    pub speed_kmh: f64,
}

/// Default circuity: roads are about 40 % longer than the straight line in Metro Manila.
pub const DEFAULT_ROAD_CIRCUITY: f64 = 1.4;
/// Default average speed of a therapist travelling to a customer.
pub const DEFAULT_TRAVEL_SPEED_KMH: f64 = 20.0;

impl Default for EtaModel {
    fn default() -> Self {
        Self {
            road_circuity: DEFAULT_ROAD_CIRCUITY,
            speed_kmh: DEFAULT_TRAVEL_SPEED_KMH,
        }
    }
}

impl EtaModel {
    /// Seconds to cover `distance_m` of straight line by road, rounded up.
    pub fn eta_seconds(self, distance_m: f64) -> u32 {
        let metres_per_second = self.speed_kmh.max(1.0) * 1000.0 / 3600.0;
        (distance_m.max(0.0) * self.road_circuity.max(1.0) / metres_per_second).ceil() as u32
    }

    /// [`EtaModel::eta_seconds`] in whole minutes, rounded up (as bookings record travel time).
    pub fn eta_minutes(self, distance_m: f64) -> i32 {
        i32::try_from(self.eta_seconds(distance_m).div_ceil(60)).unwrap_or(i32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haversine_matches_known_distances() {
        // One degree of latitude on the mean sphere.
        let d = great_circle_m(Point::new(0.0, 0.0), Point::new(1.0, 0.0));
        assert!((d - 111_195.08).abs() < 0.1, "{d}");
        assert_eq!(
            great_circle_m(Point::new(14.5, 121.0), Point::new(14.5, 121.0)),
            0.0
        );
    }

    #[test]
    fn geodesic_matches_the_ellipsoid_and_stays_near_the_sphere() {
        // One degree of latitude at the equator on WGS84 (GeographicLib's value).
        let d = distance_m(Point::new(0.0, 0.0), Point::new(1.0, 0.0));
        assert!((d - 110_574.389).abs() < 0.01, "{d}");
        assert_eq!(
            distance_m(Point::new(14.5, 121.0), Point::new(14.5, 121.0)),
            0.0
        );
        for (a, b) in [
            (Point::new(0.0, 0.0), Point::new(0.05, 0.0)),
            (Point::new(89.0, 0.0), Point::new(89.05, 0.0)),
            (Point::new(14.55, 121.02), Point::new(14.55, 121.07)),
            (Point::new(-33.9, 18.4), Point::new(-33.5, 18.9)),
        ] {
            let (g, s) = (distance_m(a, b), great_circle_m(a, b));
            assert!(
                (g / s - 1.0).abs() < SPHERE_RELATIVE_ERROR,
                "{a:?} {b:?}: {g} vs {s}"
            );
        }
    }

    #[test]
    fn eta_grows_with_distance_and_circuity() {
        let model = EtaModel {
            road_circuity: 1.5,
            speed_kmh: 36.0,
        };
        // 1 km straight = 1.5 km road at 10 m/s = 150 s.
        assert_eq!(model.eta_seconds(1000.0), 150);
        assert_eq!(model.eta_seconds(0.0), 0);
    }
}
