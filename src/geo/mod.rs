//! Geography: great-circle distance, travel-time estimates, and the live H3 index of therapists.

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

/// Great-circle (haversine) distance in metres.
///
/// ```
/// use hilot::geo::{distance_m, Point};
/// let ayala = Point::new(14.5547, 121.0244);
/// let bgc = Point::new(14.5509, 121.0503);
/// assert!((distance_m(ayala, bgc) - 2814.0).abs() < 5.0);
/// ```
pub fn distance_m(a: Point, b: Point) -> f64 {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haversine_matches_known_distances() {
        // One degree of latitude on the mean sphere.
        let d = distance_m(Point::new(0.0, 0.0), Point::new(1.0, 0.0));
        assert!((d - 111_195.08).abs() < 0.1, "{d}");
        assert_eq!(
            distance_m(Point::new(14.5, 121.0), Point::new(14.5, 121.0)),
            0.0
        );
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
