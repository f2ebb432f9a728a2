//! Ranking candidates for an offer (pure): soonest arrival, then best rating, then id.

use std::cmp::Reverse;

use rust_decimal::Decimal;

use crate::geo::index::{NearbyHit, ServiceOffer};
use crate::geo::EtaModel;

#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub provider_id: i64,
    pub distance_m: f64,
    pub eta_seconds: u32,
    pub rating: Decimal,
    pub offer: ServiceOffer,
}

/// Orders candidates by ETA, then rating (best first), then provider id; skips `excluded`.
pub fn rank(hits: Vec<NearbyHit>, eta: EtaModel, excluded: impl Fn(i64) -> bool) -> Vec<Candidate> {
    let mut candidates: Vec<Candidate> = hits
        .into_iter()
        .filter(|hit| !excluded(hit.provider_id))
        .map(|hit| Candidate {
            provider_id: hit.provider_id,
            distance_m: hit.distance_m,
            eta_seconds: eta.eta_seconds(hit.distance_m),
            rating: hit.average_rating,
            offer: hit.offer,
        })
        .collect();
    candidates.sort_by_key(|c| (c.eta_seconds, Reverse(c.rating), c.provider_id));
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn hit(id: i64, distance_m: f64, rating: i64) -> NearbyHit {
        NearbyHit {
            provider_id: id,
            uuid: Uuid::nil(),
            first_name: String::new(),
            average_rating: Decimal::from(rating),
            distance_m,
            offer: ServiceOffer {
                service_id: 1,
                price: Decimal::from(800),
                available: true,
                home_service_enabled: true,
                base_distance_km: 5,
                per_km_surcharge: Decimal::ZERO,
                max_travel_distance_km: 10,
            },
        }
    }

    #[test]
    fn eta_first_then_rating_then_id() {
        let eta = EtaModel::default();
        // 1 and 2 have the same ETA (within a second); 2 has the better rating.
        let ranked = rank(
            vec![
                hit(3, 900.0, 5),
                hit(1, 490.0, 4),
                hit(2, 490.5, 5),
                hit(4, 490.0, 4),
            ],
            eta,
            |_| false,
        );
        let ids: Vec<i64> = ranked.iter().map(|c| c.provider_id).collect();
        assert_eq!(ids, [2, 1, 4, 3]);
    }

    #[test]
    fn excluded_therapists_are_skipped() {
        let ranked = rank(
            vec![hit(1, 100.0, 5), hit(2, 200.0, 5)],
            EtaModel::default(),
            |id| id == 1,
        );
        assert_eq!(ranked.len(), 1);
        assert_eq!(ranked[0].provider_id, 2);
    }
}
