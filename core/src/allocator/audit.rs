//! Checks for tests and simulations: the allocator's own sums, and a
//! brute-force audit of every fair-share grant.

use super::Allocator;
use crate::resources::Resources;
use crate::time::Time;

impl Allocator {
    /// Checks the allocator's own sums: every pool's allocation fits in it,
    /// shares in the sorters match the allocations (and each framework and
    /// role sits where it thinks it does), and the free unreserved total
    /// matches the agents. For tests and simulations.
    pub fn check_consistency(&self) -> Result<(), String> {
        let mut free = Resources::ZERO;
        let mut total = Resources::ZERO;
        for agent in self.agents.iter().flatten() {
            total += agent.total;
            if !agent.unreserved_allocated.fits_in(&agent.unreserved_total) {
                return Err(format!("agent {} over-allocated", agent.id));
            }
            for pool in &agent.reserved {
                if !pool.allocated.fits_in(&pool.total) {
                    return Err(format!("agent {} reservation over-allocated", agent.id));
                }
            }
            if agent.active {
                free += agent.unreserved_free();
            }
        }
        if total != self.total || free != self.free_unreserved {
            return Err(format!(
                "totals drifted: total {total} vs {}, free {free} vs {}",
                self.total, self.free_unreserved
            ));
        }
        let mut by_role = vec![Resources::ZERO; self.roles.len()];
        for fw in self.frameworks.iter().flatten() {
            by_role[fw.role as usize] += fw.allocated;
            let wants = fw.connected && !fw.suppressed;
            if wants != fw.key.is_some() {
                return Err(format!("framework {} sorter membership is wrong", fw.id));
            }
            if let Some(key) = fw.key
                && self.roles[fw.role as usize].frameworks.at(fw.position) != Some(key)
            {
                return Err(format!("framework {} is not where its sorter says", fw.id));
            }
        }
        for role in &self.roles {
            if let Some(key) = role.key
                && self.role_order.at(role.position) != Some(key)
            {
                return Err(format!(
                    "role {} is not where the role sorter says",
                    role.name
                ));
            }
        }
        for (role, sum) in self.roles.iter().zip(by_role) {
            if role.allocated != sum {
                return Err(format!(
                    "role {} allocation {} != sum of its frameworks {sum}",
                    role.name, role.allocated
                ));
            }
        }
        Ok(())
    }

    /// Checks a fair-share grant to `fw` on `agent` by brute force: no other
    /// eligible framework may have a lower weighted role share, or a lower
    /// share within the same role.
    pub(super) fn audit_grant(
        &mut self,
        fw: u32,
        agent: u32,
        now: Time,
        others_allowed: bool,
        offer: &Resources,
    ) {
        let total = self.total;
        let role_share = |r: u32| {
            let role = &self.roles[r as usize];
            role.allocated.dominant_share(&total) / role.weight
        };
        let chosen = self.frameworks[fw as usize].as_ref().expect("slot");
        let (chosen_rs, chosen_s) = (
            role_share(chosen.role),
            chosen.allocated.dominant_share(&total),
        );
        let mut violations = Vec::new();
        for (slot, other) in self.frameworks.iter().enumerate() {
            let Some(other) = other else { continue };
            let slot = slot as u32;
            if slot == fw
                || !other.connected
                || other.suppressed
                || self.wants(slot, agent, now, offer).is_none()
                || (!others_allowed && !self.has_unmet_quota(other.role))
            {
                continue;
            }
            let other_rs = role_share(other.role);
            let other_s = other.allocated.dominant_share(&total);
            let lower_role = other_rs < chosen_rs - 1e-9;
            let lower_in_role = other.role == chosen.role && other_s < chosen_s - 1e-9;
            if lower_role || lower_in_role {
                violations.push(format!(
                    "agent {} went to {} (role share {chosen_rs:.6}, share {chosen_s:.6}) while {} (role share {other_rs:.6}, share {other_s:.6}) wanted it",
                    self.agents[agent as usize].as_ref().expect("slot").id,
                    chosen.id,
                    other.id,
                ));
            }
        }
        self.audit.as_mut().expect("audit on").extend(violations);
    }
}
