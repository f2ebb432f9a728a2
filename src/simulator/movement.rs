//! How simulated therapists move: pure functions of position, target and time.

use rand::Rng;

use crate::geo::{great_circle_m, Point};

/// Metres per degree of latitude (and of longitude at the equator) on Hilot's sphere.
pub const METRES_PER_DEGREE: f64 = crate::geo::EARTH_RADIUS_M * std::f64::consts::PI / 180.0;

/// Initial compass bearing from `from` to `to`, degrees clockwise from north in [0, 360).
pub fn bearing_deg(from: Point, to: Point) -> f64 {
    let (lat1, lat2) = (from.lat.to_radians(), to.lat.to_radians());
    let dlng = (to.lng - from.lng).to_radians();
    let y = dlng.sin() * lat2.cos();
    let x = lat1.cos() * lat2.sin() - lat1.sin() * lat2.cos() * dlng.cos();
    y.atan2(x).to_degrees().rem_euclid(360.0)
}

/// The point `metres` along the straight line from `from` towards `to`, stopping at `to`.
/// Over the few kilometres a therapist travels, a local flat approximation is exact to
/// centimetres.
pub fn step_towards(from: Point, to: Point, metres: f64) -> Point {
    let total = great_circle_m(from, to);
    if total <= metres || total == 0.0 {
        return to;
    }
    let f = metres / total;
    Point::new(
        from.lat + (to.lat - from.lat) * f,
        from.lng + (to.lng - from.lng) * f,
    )
}

/// A random point within `radius_m` of `center`, uniform over the disc.
pub fn random_point_near(center: Point, radius_m: f64, rng: &mut impl Rng) -> Point {
    let r = radius_m * rng.gen::<f64>().sqrt();
    let theta = rng.gen_range(0.0..std::f64::consts::TAU);
    let dlat = r * theta.cos() / METRES_PER_DEGREE;
    let dlng = r * theta.sin() / (METRES_PER_DEGREE * center.lat.to_radians().cos());
    Point::new(center.lat + dlat, center.lng + dlng)
}

/// Metres covered in `seconds` at `speed_kmh`.
pub fn metres_in(speed_kmh: f64, seconds: f64) -> f64 {
    speed_kmh / 3.6 * seconds
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const AYALA: Point = Point::new(14.5547, 121.0244);
    const BGC: Point = Point::new(14.5509, 121.0503);

    #[test]
    fn a_step_covers_the_distance_asked_and_never_overshoots() {
        let next = step_towards(AYALA, BGC, 500.0);
        assert!((great_circle_m(AYALA, next) - 500.0).abs() < 1.0);
        assert!((great_circle_m(next, BGC) - (great_circle_m(AYALA, BGC) - 500.0)).abs() < 1.0);
        assert_eq!(step_towards(AYALA, BGC, 10_000.0), BGC);
    }

    #[test]
    fn bearing_points_the_way_of_travel() {
        assert!((bearing_deg(AYALA, Point::new(14.6, 121.0244)) - 0.0).abs() < 0.01);
        let east = bearing_deg(AYALA, BGC);
        assert!((90.0..110.0).contains(&east), "{east}");
    }

    #[test]
    fn random_points_stay_within_the_radius() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..1000 {
            let p = random_point_near(AYALA, 1500.0, &mut rng);
            assert!(great_circle_m(AYALA, p) <= 1501.0);
        }
    }

    #[test]
    fn city_speeds_convert_to_metres() {
        assert!((metres_in(36.0, 10.0) - 100.0).abs() < 1e-9);
    }
}
