//! What DRF says each role and framework should hold: the yardstick that
//! `wasmos roles`, `wasmos frameworks` and `/metrics` hold shares against.
//!
//! The fair share is computed afresh from what everyone wants, as the DRF
//! paper defines it (continuous progressive filling): every claimant's
//! dominant share rises at the rate of its weight, each consuming resources
//! in the proportions of its own demand, until its demand is met or a
//! resource it needs runs out. The claimants are the roles (by weight),
//! then the frameworks of each role within what the role got.
//!
//! A framework's demand is what it holds plus the tasks it declared and
//! has not been offered; one that declared nothing wants without bound, in
//! the proportions of what it holds (or of the cluster, holding nothing).
//! A framework that is suppressed or disconnected wants only what it holds.
//!
//! Cost: each event (a claim met, a resource run out) is a pass over the
//! claims still rising, so O(n²) at worst for n claims at one level (the
//! roles, or one role's frameworks); it runs when an operator or a scraper
//! asks, never in the allocation cycle.

use crate::maps::HashMap;

use super::Allocator;
use crate::ids::{FrameworkId, Role};
use crate::resources::Resources;

/// Fair dominant shares of the cluster, by role and by framework.
#[derive(Clone, Debug, Default)]
pub struct FairShares {
    pub roles: HashMap<Role, f64>,
    pub frameworks: HashMap<FrameworkId, f64>,
}

/// One claimant of progressive filling.
#[derive(Clone, Copy, Debug)]
struct Claim {
    weight: f64,
    /// Fractions of each resource of the pool consumed per unit of
    /// dominant share (the largest is 1).
    rate: [f64; 3],
    /// The dominant share at which its demand is met.
    cap: f64,
}

impl Claim {
    /// A claim for `demand` (fractions of the pool); `bounded` false for a
    /// claimant that wants without bound in those proportions.
    fn new(weight: f64, demand: [f64; 3], bounded: bool) -> Option<Claim> {
        let dominant = demand.iter().cloned().fold(0.0, f64::max);
        if dominant <= 0.0 || weight <= 0.0 || !dominant.is_finite() {
            return None;
        }
        Some(Claim {
            weight,
            rate: demand.map(|d| d / dominant),
            cap: if bounded { dominant } else { f64::INFINITY },
        })
    }
}

/// Continuous weighted progressive filling of a pool of `capacity` (each a
/// fraction, at most 1) among `claims`; returns each claim's dominant share
/// of the pool.
fn progressive_filling(claims: &[Option<Claim>], capacity: [f64; 3]) -> Vec<f64> {
    let mut shares = vec![0.0; claims.len()];
    // Claims by the level (dominant share over weight) at which they are met.
    let mut order: Vec<usize> = (0..claims.len()).filter(|&i| claims[i].is_some()).collect();
    let claim = |i: usize| claims[i].expect("filtered");
    order.sort_by(|&a, &b| {
        let (a, b) = (claim(a), claim(b));
        (a.cap / a.weight).total_cmp(&(b.cap / b.weight))
    });
    let mut active: Vec<usize> = order.clone();
    let mut rising = vec![false; claims.len()];
    for &i in &active {
        rising[i] = true;
    }
    let mut used = [0.0f64; 3];
    let mut level = 0.0f64;
    let mut next_met = 0;
    while !active.is_empty() {
        // How fast each resource is used as the level rises.
        let mut rate = [0.0f64; 3];
        for &i in &active {
            let c = claim(i);
            for (sum, per) in rate.iter_mut().zip(c.rate) {
                *sum += c.weight * per;
            }
        }
        // The next event: a resource runs out, or the next claim is met.
        let mut step = f64::INFINITY;
        for r in 0..3 {
            if rate[r] > 0.0 {
                step = step.min(((capacity[r] - used[r]) / rate[r]).max(0.0));
            }
        }
        while next_met < order.len() && !rising[order[next_met]] {
            next_met += 1;
        }
        if next_met < order.len() {
            let c = claim(order[next_met]);
            step = step.min((c.cap / c.weight - level).max(0.0));
        }
        if !step.is_finite() {
            break;
        }
        level += step;
        for (used, rate) in used.iter_mut().zip(rate) {
            *used += rate * step;
        }
        let exhausted: Vec<usize> = (0..3)
            .filter(|&r| rate[r] > 0.0 && used[r] >= capacity[r] - 1e-12)
            .collect();
        active.retain(|&i| {
            let c = claim(i);
            let met = c.cap / c.weight <= level + 1e-12;
            let starved = exhausted.iter().any(|&r| c.rate[r] > 1e-12);
            if met || starved {
                shares[i] = (level * c.weight).min(c.cap);
                rising[i] = false;
                false
            } else {
                true
            }
        });
    }
    shares
}

impl Allocator {
    /// What DRF says each role and framework should hold now, given what
    /// they hold and what they declared they wait for (module docs).
    pub fn fair_shares(&self) -> FairShares {
        let total = self.total;
        let fraction = |r: &Resources| -> [f64; 3] {
            let f = |a: u64, t: u64| if t == 0 { 0.0 } else { a as f64 / t as f64 };
            [
                f(r.cpu_millis, total.cpu_millis),
                f(r.mem, total.mem),
                f(r.disk, total.disk),
            ]
        };
        let uniform = [
            (total.cpu_millis > 0) as u8 as f64,
            (total.mem > 0) as u8 as f64,
            (total.disk > 0) as u8 as f64,
        ];
        // Each framework's demand, as fractions of the cluster, and whether
        // it is bounded.
        let mut members: Vec<Vec<(FrameworkId, [f64; 3], bool)>> =
            vec![Vec::new(); self.roles.len()];
        for fw in self.frameworks.iter().flatten() {
            let wants = fw.key.is_some();
            let held = fraction(&fw.allocated);
            let (demand, bounded) = match (wants, fw.demand) {
                (false, _) => (held, true),
                (true, Some(d)) => {
                    let more = fraction(&d.task).map(|x| x * d.unmet() as f64);
                    ([0, 1, 2].map(|r| held[r] + more[r]), true)
                }
                (true, None) if held.iter().any(|&x| x > 0.0) => (held, false),
                (true, None) => (uniform, false),
            };
            members[fw.role as usize].push((fw.id.clone(), demand, bounded));
        }
        // Roles: the sum of their frameworks' demands.
        let role_claims: Vec<Option<Claim>> = self
            .roles
            .iter()
            .zip(&members)
            .map(|(role, fws)| {
                let demand = fws.iter().fold([0.0; 3], |sum, (_, d, _)| {
                    [sum[0] + d[0], sum[1] + d[1], sum[2] + d[2]]
                });
                let bounded = fws.iter().all(|(_, _, b)| *b);
                Claim::new(role.weight, demand, bounded)
            })
            .collect();
        let role_shares = progressive_filling(&role_claims, [1.0; 3]);
        // What each role's fair share takes of each resource.
        let taken: Vec<[f64; 3]> = role_claims
            .iter()
            .zip(&role_shares)
            .map(|(c, s)| c.map_or([0.0; 3], |c| c.rate.map(|x| x * s)))
            .collect();
        let all_taken = taken.iter().fold([0.0; 3], |sum, t| {
            [sum[0] + t[0], sum[1] + t[1], sum[2] + t[2]]
        });
        let mut out = FairShares::default();
        for (r, role) in self.roles.iter().enumerate() {
            out.roles.insert(role.name.clone(), role_shares[r]);
            if role_claims[r].is_none() {
                continue;
            }
            // The role's frameworks share what the other roles' fair shares
            // leave: the role's own, and what no other role wants.
            let capacity = [0, 1, 2].map(|x| (1.0 - (all_taken[x] - taken[r][x])).max(0.0));
            let claims: Vec<Option<Claim>> = members[r]
                .iter()
                .map(|(_, d, bounded)| Claim::new(1.0, *d, *bounded))
                .collect();
            let shares = progressive_filling(&claims, capacity);
            for ((id, _, _), share) in members[r].iter().zip(shares) {
                out.frameworks.insert(id.clone(), share);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(weight: f64, demand: [f64; 3], bounded: bool) -> Option<Claim> {
        Claim::new(weight, demand, bounded)
    }

    #[test]
    fn the_papers_example_is_two_thirds_each() {
        // A: <1 cpu, 4 GiB> of <9, 18>; B: <3 cpus, 1 GiB>; both unbounded.
        let a = claim(1.0, [1.0 / 9.0, 4.0 / 18.0, 0.0], false);
        let b = claim(1.0, [3.0 / 9.0, 1.0 / 18.0, 0.0], false);
        let shares = progressive_filling(&[a, b], [1.0; 3]);
        assert!((shares[0] - 2.0 / 3.0).abs() < 1e-9, "{shares:?}");
        assert!((shares[1] - 2.0 / 3.0).abs() < 1e-9, "{shares:?}");
    }

    #[test]
    fn weights_divide_and_met_demand_frees_the_rest() {
        // Same shape, weights 2:1: 2/3 and 1/3.
        let a = claim(2.0, [1.0, 0.5, 0.0], false);
        let b = claim(1.0, [1.0, 0.5, 0.0], false);
        let shares = progressive_filling(&[a, b], [1.0; 3]);
        assert!((shares[0] - 2.0 / 3.0).abs() < 1e-9, "{shares:?}");
        assert!((shares[1] - 1.0 / 3.0).abs() < 1e-9, "{shares:?}");
        // The heavier one wants only 0.2: the other gets the rest.
        let a = claim(2.0, [0.2, 0.1, 0.0], true);
        let shares = progressive_filling(&[a, b], [1.0; 3]);
        assert!((shares[0] - 0.2).abs() < 1e-9, "{shares:?}");
        assert!((shares[1] - 0.8).abs() < 1e-9, "{shares:?}");
        // Nobody: nothing.
        assert_eq!(progressive_filling(&[None, None], [1.0; 3]), vec![0.0, 0.0]);
    }
}
