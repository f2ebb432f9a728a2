//! Assignment (pure): which therapists a round offers which waiting bookings to.
//!
//! The objective, per round: first, as many bookings as possible get an offer (and a booking's
//! first offer counts before anyone's extra offers when `batch_size` > 1); then, the least total
//! of `cost = ETA − waiting credit` over the offers made, where
//!
//! ```text
//! waiting credit = WAIT_WEIGHT × min(seconds the booking has waited, WAIT_CREDIT_CAP)
//! ```
//!
//! With equal waits that is the least total ETA. A booking that has waited longer may take a
//! therapist up to that many seconds of ETA farther than a fresh one would, so scarce supply
//! goes to the oldest bookings first and nobody starves behind a stream of nearer newcomers.
//! Between therapists whose costs are equal (to the tenth of a second), the better-rated one
//! wins: the rating is a tie-break, worth less than any difference in cost.
//!
//! The candidate graph is sparse (each booking's k nearest eligible therapists). It is split
//! into connected components; each small enough is solved exactly with the Kuhn–Munkres
//! (Hungarian) algorithm from the `pathfinding` crate, the rest greedily (cheapest edge first),
//! and once the round's time budget is spent every remaining component is solved greedily.

use std::time::{Duration, Instant};

use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;

/// Seconds of ETA one second of waiting is worth.
pub const WAIT_WEIGHT: f64 = 1.0;
/// Waiting beyond this earns no more credit (a booking that waited ten minutes and one that
/// waited an hour compete on ETA).
pub const WAIT_CREDIT_CAP_S: f64 = 600.0;
/// Components solved exactly only while Kuhn–Munkres's work (rows² × columns) stays below this;
/// larger ones go greedy. About a millisecond or two.
pub const EXACT_WORK_LIMIT: usize = 2_000_000;
/// Costs are compared in tenths of a second.
const COST_UNITS_PER_S: f64 = 10.0;
/// Each tenth of a second of cost is split into this many steps, below which the rating
/// (0.00 to 5.00, in hundredths: 0 to 500 steps) breaks ties.
const RATING_STEPS_PER_UNIT: i64 = 1024;
/// The best rating there is.
const MAX_RATING: f64 = 5.0;
/// Weight of making a booking's first offer, and of each extra offer when `batch_size` > 1:
/// both dwarf any difference in cost, so cardinality comes first.
const FIRST_OFFER_WEIGHT: i64 = 1 << 50;
const EXTRA_OFFER_WEIGHT: i64 = 1 << 40;

/// A booking in a round: how many offers it may still receive, and how long it has waited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BookingNeed {
    /// Offers to make now (`batch_size` minus its open offers), at least 1.
    pub slots: usize,
    /// Offers it already has open: when positive, every slot is an extra offer.
    pub open: usize,
    pub waited_s: f64,
}

/// A candidate pair: `booking` (index into the needs) and `therapist` (any id), with the ETA
/// and the therapist's average rating (0 to 5; the tie-break).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Edge {
    pub booking: usize,
    pub therapist: i64,
    pub eta_s: f64,
    pub rating: f64,
}

/// What a round decided, and how.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assignment {
    /// (booking index, therapist id).
    pub pairs: Vec<(usize, i64)>,
    pub exact_components: usize,
    pub greedy_components: usize,
}

/// The credit a booking earns for waiting (seconds of ETA).
pub fn waiting_credit(waited_s: f64) -> f64 {
    WAIT_WEIGHT * waited_s.clamp(0.0, WAIT_CREDIT_CAP_S)
}

/// The cost of offering a booking that has waited `waited_s` to a therapist `eta_s` away.
pub fn edge_cost(eta_s: f64, waited_s: f64) -> f64 {
    eta_s - waiting_credit(waited_s)
}

/// The edge's cost in integer steps: the cost in tenths of a second, then the rating's
/// shortfall from the best (in hundredths) below it.
fn cost_units(edge: &Edge, waited_s: f64) -> i64 {
    let cost = (edge_cost(edge.eta_s, waited_s) * COST_UNITS_PER_S).round() as i64;
    let shortfall = ((MAX_RATING - edge.rating.clamp(0.0, MAX_RATING)) * 100.0).round() as i64;
    cost * RATING_STEPS_PER_UNIT + shortfall
}

/// Connected components of the candidate graph, as lists of edge indices (union–find over
/// bookings and therapists). Bookings without edges belong to none.
pub fn components(bookings: usize, edges: &[Edge]) -> Vec<Vec<usize>> {
    let mut therapist_slot: rustc_hash::FxHashMap<i64, usize> = Default::default();
    for edge in edges {
        let next = bookings + therapist_slot.len();
        therapist_slot.entry(edge.therapist).or_insert(next);
    }
    let mut parent: Vec<usize> = (0..bookings + therapist_slot.len()).collect();
    fn root(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for edge in edges {
        let a = root(&mut parent, edge.booking);
        let b = root(&mut parent, therapist_slot[&edge.therapist]);
        if a != b {
            parent[a] = b;
        }
    }
    let mut by_root: rustc_hash::FxHashMap<usize, Vec<usize>> = Default::default();
    for (i, edge) in edges.iter().enumerate() {
        let r = root(&mut parent, edge.booking);
        by_root.entry(r).or_default().push(i);
    }
    let mut out: Vec<Vec<usize>> = by_root.into_values().collect();
    // Deterministic order: smallest first (cheap ones solved exactly before the budget runs out),
    // then by first edge.
    out.sort_by_key(|c| (c.len(), c[0]));
    out
}

/// Decides the round's offers. `needs[b]` describes booking `b`; `edges` are its candidates.
pub fn assign(needs: &[BookingNeed], edges: &[Edge], budget: Duration) -> Assignment {
    let started = Instant::now();
    let mut result = Assignment::default();
    for component in components(needs.len(), edges) {
        let comp: Vec<Edge> = component.iter().map(|&i| edges[i]).collect();
        let within_budget = started.elapsed() < budget;
        match within_budget.then(|| solve_exact(needs, &comp)).flatten() {
            Some(pairs) => {
                result.exact_components += 1;
                result.pairs.extend(pairs);
            }
            None => {
                result.greedy_components += 1;
                result.pairs.extend(solve_greedy(needs, &comp));
            }
        }
    }
    result.pairs.sort_unstable();
    result
}

fn slot_weight(need: &BookingNeed, slot: usize) -> i64 {
    if need.open == 0 && slot == 0 {
        FIRST_OFFER_WEIGHT
    } else {
        EXTRA_OFFER_WEIGHT
    }
}

/// Kuhn–Munkres on one component: rows are booking slots, columns therapists (transposed when
/// there are more slots than therapists). `None` when the component is too large.
fn solve_exact(needs: &[BookingNeed], comp: &[Edge]) -> Option<Vec<(usize, i64)>> {
    let mut therapists: Vec<i64> = comp.iter().map(|e| e.therapist).collect();
    therapists.sort_unstable();
    therapists.dedup();
    let mut bookings: Vec<usize> = comp.iter().map(|e| e.booking).collect();
    bookings.sort_unstable();
    bookings.dedup();
    // One row per slot of each booking.
    let slots: Vec<(usize, usize)> = bookings
        .iter()
        .flat_map(|&b| (0..needs[b].slots.max(1)).map(move |s| (b, s)))
        .collect();
    let (n, m) = (slots.len(), therapists.len());
    let (small, large) = (n.min(m), n.max(m));
    if small.saturating_mul(small).saturating_mul(large) > EXACT_WORK_LIMIT {
        return None;
    }
    let column = |t: i64| therapists.binary_search(&t).expect("listed");
    // weights[slot][therapist]; 0 = no edge (never better than a real edge, whose weight is
    // the slot's weight minus a cost far smaller).
    let mut weights = vec![0i64; n * m];
    let first_slot_row: rustc_hash::FxHashMap<usize, usize> = slots
        .iter()
        .enumerate()
        .filter(|(_, (_, s))| *s == 0)
        .map(|(row, (b, _))| (*b, row))
        .collect();
    for edge in comp {
        let need = &needs[edge.booking];
        let cost = cost_units(edge, need.waited_s);
        let first = first_slot_row[&edge.booking];
        for s in 0..need.slots.max(1) {
            weights[(first + s) * m + column(edge.therapist)] = slot_weight(need, s) - cost;
        }
    }
    let assigned: Vec<(usize, usize)> = if n <= m {
        let matrix = Matrix::from_vec(n, m, weights.clone()).expect("n × m weights");
        let (_, columns) = kuhn_munkres(&matrix);
        columns.into_iter().enumerate().collect()
    } else {
        let mut transposed = vec![0i64; m * n];
        for r in 0..n {
            for c in 0..m {
                transposed[c * n + r] = weights[r * m + c];
            }
        }
        let matrix = Matrix::from_vec(m, n, transposed).expect("m × n weights");
        let (_, rows) = kuhn_munkres(&matrix);
        rows.into_iter().enumerate().map(|(c, r)| (r, c)).collect()
    };
    Some(
        assigned
            .into_iter()
            .filter(|&(r, c)| weights[r * m + c] > 0)
            .map(|(r, c)| (slots[r].0, therapists[c]))
            .collect(),
    )
}

/// Greedy on one component: first offers cheapest edge first, then extra offers likewise.
pub fn solve_greedy(needs: &[BookingNeed], comp: &[Edge]) -> Vec<(usize, i64)> {
    let mut order: Vec<&Edge> = comp.iter().collect();
    order.sort_by(|a, b| {
        let ca = cost_units(a, needs[a.booking].waited_s);
        let cb = cost_units(b, needs[b.booking].waited_s);
        ca.cmp(&cb)
            .then(a.booking.cmp(&b.booking))
            .then(a.therapist.cmp(&b.therapist))
    });
    let mut given: rustc_hash::FxHashMap<usize, usize> = Default::default();
    let mut taken: rustc_hash::FxHashSet<i64> = Default::default();
    let mut pairs = Vec::new();
    for first_pass in [true, false] {
        for edge in &order {
            let need = &needs[edge.booking];
            let count = given.get(&edge.booking).copied().unwrap_or(0);
            let wanted = if first_pass && need.open == 0 {
                1
            } else {
                need.slots.max(1)
            };
            if count >= wanted || taken.contains(&edge.therapist) {
                continue;
            }
            taken.insert(edge.therapist);
            given.insert(edge.booking, count + 1);
            pairs.push((edge.booking, edge.therapist));
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn need(waited_s: f64) -> BookingNeed {
        BookingNeed {
            slots: 1,
            open: 0,
            waited_s,
        }
    }

    fn edge(booking: usize, therapist: i64, eta_s: f64) -> Edge {
        Edge {
            booking,
            therapist,
            eta_s,
            rating: 4.0,
        }
    }

    #[test]
    fn at_equal_cost_the_better_rated_therapist_wins_and_rating_never_outweighs_a_second() {
        let rated = |therapist, eta_s, rating| Edge {
            rating,
            ..edge(0, therapist, eta_s)
        };
        for budget in [Duration::from_secs(1), Duration::ZERO] {
            let tie = assign(
                &[need(0.0)],
                &[rated(1, 300.0, 4.0), rated(2, 300.0, 5.0)],
                budget,
            );
            assert_eq!(tie.pairs, [(0, 2)]);
            let nearer = assign(
                &[need(0.0)],
                &[rated(1, 299.0, 0.0), rated(2, 300.0, 5.0)],
                budget,
            );
            assert_eq!(nearer.pairs, [(0, 1)]);
        }
    }

    fn total_cost(needs: &[BookingNeed], edges: &[Edge], pairs: &[(usize, i64)]) -> f64 {
        pairs
            .iter()
            .map(|&(b, t)| {
                let e = edges
                    .iter()
                    .find(|e| e.booking == b && e.therapist == t)
                    .expect("an assigned pair is an edge");
                edge_cost(e.eta_s, needs[b].waited_s)
            })
            .sum()
    }

    /// The issue's example: B1 is 1.4 km from T1 and 1.6 km from T2; B2 is 1.0 km from T1 and
    /// 4.0 km from T2. First come, nearest first gives 5.4 km of travel; the optimum 2.6 km.
    #[test]
    fn two_bookings_get_the_pairing_of_least_total_travel() {
        let needs = [need(0.1), need(0.0)];
        let edges = [
            edge(0, 1, 1400.0),
            edge(0, 2, 1600.0),
            edge(1, 1, 1000.0),
            edge(1, 2, 4000.0),
        ];
        let result = assign(&needs, &edges, Duration::from_secs(1));
        assert_eq!(result.pairs, [(0, 2), (1, 1)]);
        assert_eq!(result.exact_components, 1);
        assert_eq!(solve_greedy(&needs, &edges), [(1, 1), (0, 2)]);
    }

    #[test]
    fn with_equal_waits_one_therapist_goes_to_the_nearest_booking() {
        let needs = [need(5.0), need(5.0), need(5.0)];
        let edges = [edge(0, 7, 300.0), edge(1, 7, 120.0), edge(2, 7, 200.0)];
        assert_eq!(
            assign(&needs, &edges, Duration::from_secs(1)).pairs,
            [(1, 7)]
        );
    }

    #[test]
    fn a_booking_that_waited_longer_wins_a_scarce_therapist_within_its_credit() {
        // Booking 0 waited 200 s more, booking 1 is 100 s nearer: the older one wins.
        let needs = [need(200.0), need(0.0)];
        let edges = [edge(0, 7, 300.0), edge(1, 7, 200.0)];
        assert_eq!(
            assign(&needs, &edges, Duration::from_secs(1)).pairs,
            [(0, 7)]
        );
        // Beyond the credit, nearness wins again.
        let edges = [edge(0, 7, 900.0), edge(1, 7, 200.0)];
        assert_eq!(
            assign(&needs, &edges, Duration::from_secs(1)).pairs,
            [(1, 7)]
        );
    }

    #[test]
    fn more_bookings_matched_beats_less_travel() {
        // Giving T1 to B0 (cheap) would leave B1 with nobody; both get one instead.
        let needs = [need(0.0), need(0.0)];
        let edges = [edge(0, 1, 100.0), edge(0, 2, 900.0), edge(1, 1, 800.0)];
        assert_eq!(
            assign(&needs, &edges, Duration::from_secs(1)).pairs,
            [(0, 2), (1, 1)]
        );
    }

    #[test]
    fn batches_give_every_booking_a_first_offer_before_anyone_a_second() {
        let needs = [
            BookingNeed {
                slots: 2,
                open: 0,
                waited_s: 0.0,
            },
            BookingNeed {
                slots: 2,
                open: 0,
                waited_s: 0.0,
            },
        ];
        let edges = [
            edge(0, 1, 100.0),
            edge(0, 2, 110.0),
            edge(0, 3, 120.0),
            edge(1, 3, 500.0),
        ];
        let pairs = assign(&needs, &edges, Duration::from_secs(1)).pairs;
        assert_eq!(pairs, [(0, 1), (0, 2), (1, 3)]);
    }

    #[test]
    fn components_split_the_graph() {
        let edges = [
            edge(0, 1, 1.0),
            edge(1, 1, 1.0),
            edge(2, 5, 1.0),
            edge(3, 6, 1.0),
            edge(3, 5, 1.0),
        ];
        let comps = components(5, &edges);
        assert_eq!(comps, [vec![0, 1], vec![2, 3, 4]]);
    }

    #[test]
    fn a_spent_budget_falls_back_to_greedy() {
        let needs = [need(0.0), need(0.0)];
        let edges = [edge(0, 1, 1.0), edge(1, 2, 1.0)];
        let result = assign(&needs, &edges, Duration::ZERO);
        assert_eq!(result.greedy_components, 2);
        assert_eq!(result.pairs, [(0, 1), (1, 2)]);
    }

    /// Exhaustive search over small random instances: the exact solver matches as many bookings
    /// as possible at the least cost, and greedy never matches a therapist twice.
    #[test]
    fn exact_assignment_is_optimal_on_random_small_instances() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        for _ in 0..300 {
            let bookings = rng.gen_range(1..=4);
            let therapists = rng.gen_range(1..=4i64);
            let needs: Vec<BookingNeed> = (0..bookings)
                .map(|_| need(rng.gen_range(0.0..700.0)))
                .collect();
            let mut edges = Vec::new();
            for b in 0..bookings {
                for t in 0..therapists {
                    if rng.gen_bool(0.6) {
                        edges.push(edge(b, t, rng.gen_range(10.0..2000.0)));
                    }
                }
            }
            let result = assign(&needs, &edges, Duration::from_secs(1));
            // Brute force: every injective choice of one therapist (or none) per booking.
            let mut best: Option<(usize, f64)> = None;
            let mut choice = vec![-1i64; bookings];
            fn search(
                b: usize,
                choice: &mut Vec<i64>,
                needs: &[BookingNeed],
                edges: &[Edge],
                therapists: i64,
                best: &mut Option<(usize, f64)>,
            ) {
                if b == choice.len() {
                    let pairs: Vec<(usize, i64)> = choice
                        .iter()
                        .enumerate()
                        .filter(|(_, t)| **t >= 0)
                        .map(|(b, t)| (b, *t))
                        .collect();
                    let key = (pairs.len(), total_cost(needs, edges, &pairs));
                    if best.is_none_or(|(n, c)| key.0 > n || (key.0 == n && key.1 < c - 1e-6)) {
                        *best = Some(key);
                    }
                    return;
                }
                choice[b] = -1;
                search(b + 1, choice, needs, edges, therapists, best);
                for t in 0..therapists {
                    let used = choice[..b].contains(&t);
                    let is_edge = edges.iter().any(|e| e.booking == b && e.therapist == t);
                    if !used && is_edge {
                        choice[b] = t;
                        search(b + 1, choice, needs, edges, therapists, best);
                    }
                }
                choice[b] = -1;
            }
            search(0, &mut choice, &needs, &edges, therapists, &mut best);
            let (count, cost) = best.unwrap();
            assert_eq!(result.pairs.len(), count, "{needs:?} {edges:?}");
            let got = total_cost(&needs, &edges, &result.pairs);
            assert!(
                (got - cost).abs() < 0.2,
                "{got} vs {cost}: {needs:?} {edges:?}"
            );
            let greedy = solve_greedy(&needs, &edges);
            let mut seen: Vec<i64> = greedy.iter().map(|p| p.1).collect();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), greedy.len());
        }
    }
}
