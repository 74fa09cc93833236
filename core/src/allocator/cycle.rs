//! The allocation cycle (quota, reservations, fair share) and recovery of
//! resources, with offer filters.

use std::time::Duration;

use super::demand;
use super::sorter::Key;
use super::{Allocation, Allocator, AllocatorError, Filter, Scope};
use crate::ids::{AgentId, FrameworkId, Role};
use crate::resources::Resources;
use crate::time::Time;

impl Allocator {
    /// Counts resources as allocated without offering them: tasks an agent
    /// already runs when it re-registers.
    pub fn allocate_used(
        &mut self,
        framework: &FrameworkId,
        agent: &AgentId,
        reservation: Option<&Role>,
        resources: Resources,
    ) -> Result<(), AllocatorError> {
        let fw = self.framework_slot(framework)?;
        let slot = self.agent_slot(agent)?;
        let pool = reservation.and_then(|role| self.pool_index(slot, role));
        self.grant(fw, slot, pool, resources);
        Ok(())
    }

    /// Returns resources to the pool: a declined or rescinded offer, the
    /// unused part of an accepted one, or a finished task. With `refuse`, the
    /// framework is not offered this agent again until `now + refuse`.
    pub fn recover(
        &mut self,
        framework: &FrameworkId,
        agent: &AgentId,
        reservation: Option<&Role>,
        resources: Resources,
        refuse: Option<Duration>,
        now: Time,
    ) -> Result<(), AllocatorError> {
        let fw_slot = self.framework_slot(framework)?;
        let agent_slot = self.agent_slot(agent)?;
        let pool = reservation.and_then(|role| self.pool_index(agent_slot, role));
        let agent = self.agents[agent_slot as usize].as_mut().expect("slot");
        match pool {
            Some(p) => {
                let pool = &mut agent.reserved[p];
                debug_assert!(resources.fits_in(&pool.allocated));
                pool.allocated = pool.allocated.saturating_sub(&resources);
            }
            None => {
                debug_assert!(resources.fits_in(&agent.unreserved_allocated));
                agent.unreserved_allocated = agent.unreserved_allocated.saturating_sub(&resources);
                if agent.active {
                    self.free_unreserved += resources;
                }
            }
        }
        let generation = agent.generation;
        let fw = self.frameworks[fw_slot as usize].as_mut().expect("slot");
        debug_assert!(resources.fits_in(&fw.allocated));
        fw.allocated = fw.allocated.saturating_sub(&resources);
        if let Some(d) = fw.demand.as_mut() {
            // An offer (or its unused part) came back: its tasks are wanted
            // again.
            d.offered = d
                .offered
                .saturating_sub(demand::tasks_in(&resources, &d.task));
        }
        if let Some(refuse) = refuse.filter(|d| !d.is_zero()) {
            let until = now + refuse;
            // Pools of one accept are recovered one by one: widen a live
            // filter rather than replace it.
            let filter = match fw.filters.get(&agent_slot) {
                Some(f) if f.generation == generation && now < f.until => Filter {
                    generation,
                    until: until.max(f.until),
                    refused: f.refused.checked_add(&resources).unwrap_or(f.refused),
                },
                _ => Filter {
                    generation,
                    until,
                    refused: resources,
                },
            };
            fw.filters.insert(agent_slot, filter);
            self.filter_ends.set((fw_slot, agent_slot), filter.until);
        }
        let role = fw.role;
        let role_entry = &mut self.roles[role as usize];
        role_entry.allocated = role_entry.allocated.saturating_sub(&resources);
        self.refresh_framework(fw_slot);
        Ok(())
    }

    /// Forgets filters that have run out, so they cost nothing later, and
    /// returns the agents they held back: what may now be offered.
    pub fn expire_filters(&mut self, now: Time) -> Vec<AgentId> {
        let mut agents = Vec::new();
        for (fw_slot, agent_slot) in self.filter_ends.pop_due(now) {
            let Some(fw) = self.frameworks[fw_slot as usize].as_mut() else {
                continue;
            };
            let Some(filter) = fw.filters.remove(&agent_slot) else {
                continue;
            };
            if let Some(agent) = self.agents[agent_slot as usize]
                .as_ref()
                .filter(|a| a.generation == filter.generation)
            {
                agents.push(agent.id.clone());
            }
        }
        agents
    }

    /// When the first filter ends: an allocation may then offer what it
    /// held back.
    pub fn next_filter_expiry(&self) -> Option<Time> {
        self.filter_ends.next()
    }

    /// Runs an allocation cycle over `scope` and returns the grants. Each
    /// grant counts as allocated to its framework until recovered.
    pub fn allocate(&mut self, now: Time, scope: Scope<'_>) -> Vec<Allocation> {
        if self.dirty {
            self.rebuild();
        }
        if self.role_order.is_empty() || self.agents.is_empty() {
            return Vec::new();
        }
        let slots: Vec<u32> = match scope {
            Scope::All => {
                let n = self.agents.len();
                self.rotation = (self.rotation + 1) % n;
                (0..n)
                    .map(|i| ((self.rotation + i) % n) as u32)
                    .filter(|&s| self.agents[s as usize].is_some())
                    .collect()
            }
            Scope::Agents(ids) => ids
                .iter()
                .filter_map(|id| self.agent_slots.get(id).copied())
                .collect(),
        };
        // About one grant an agent when frameworks take whole agents: sized
        // once, not grown (and copied) a doubling at a time.
        let mut grants = Vec::with_capacity(slots.len());
        if self.any_unmet_quota() {
            for &slot in &slots {
                self.allocate_quota(slot, now, &mut grants);
            }
        }
        let pool = slots
            .iter()
            .filter_map(|&s| self.agents[s as usize].as_ref())
            .filter(|a| a.active)
            .fold(Resources::ZERO, |sum, a| sum + a.unreserved_free());
        let step = demand::Step {
            pool_share: pool.dominant_share(&self.total),
            weights: self
                .role_order
                .unordered()
                .map(|(_, r)| self.roles[r as usize].weight)
                .sum(),
        };
        for &slot in &slots {
            self.allocate_reserved(slot, now, &mut grants);
            self.allocate_fair(slot, now, &step, &mut grants);
        }
        grants
    }

    /// Stage 1: roles below their quota guarantee come first.
    fn allocate_quota(&mut self, slot: u32, now: Time, grants: &mut Vec<Allocation>) {
        let Some(agent) = self.agents[slot as usize].as_ref() else {
            return;
        };
        let free = agent.unreserved_free();
        if !agent.active || !self.allocatable(&free) {
            return;
        }
        let mut candidates: Vec<(Key, u32)> = self
            .quota_roles
            .iter()
            .filter_map(|&r| {
                let role = &self.roles[r as usize];
                let unmet = !role.quota.saturating_sub(&role.allocated).is_zero();
                role.key.filter(|_| unmet).map(|k| (k, r))
            })
            .collect();
        candidates.sort_unstable();
        for (_, role) in candidates {
            if let Some(fw) = self.first_unfiltered(role, slot, now, &free) {
                self.grant(fw, slot, None, free);
                grants.push(self.allocation(fw, slot, None, free));
                return;
            }
        }
    }

    /// Stage 2: each reservation goes to the lowest-share framework of its
    /// role.
    fn allocate_reserved(&mut self, slot: u32, now: Time, grants: &mut Vec<Allocation>) {
        let Some(agent) = self.agents[slot as usize].as_ref() else {
            return;
        };
        if !agent.active || agent.reserved.is_empty() {
            return;
        }
        for p in 0..agent.reserved.len() {
            let pool = &self.agents[slot as usize].as_ref().expect("slot").reserved[p];
            let free = pool.total - pool.allocated;
            if !self.allocatable(&free) {
                continue;
            }
            if let Some(fw) = self.first_unfiltered(pool.role, slot, now, &free) {
                self.grant(fw, slot, Some(p), free);
                grants.push(self.allocation(fw, slot, Some(p), free));
            }
        }
    }

    /// Stage 3: the agent's free unreserved resources go, by progressive
    /// filling, to the frameworks of lowest share in the roles of lowest
    /// weighted share, keeping enough headroom for unmet quotas. A framework
    /// that declared demand gets its tasks a grant at a time (`demand.rs`);
    /// one that declared none gets all that is left. Each framework's grants
    /// on the agent make one allocation.
    fn allocate_fair(
        &mut self,
        slot: u32,
        now: Time,
        step: &demand::Step,
        grants: &mut Vec<Allocation>,
    ) {
        let Some(agent) = self.agents[slot as usize].as_ref() else {
            return;
        };
        let mut free = agent.unreserved_free();
        if !agent.active || !self.allocatable(&free) {
            return;
        }
        let headroom = self.required_headroom();
        let others_allowed =
            headroom.is_zero() || headroom.fits_in(&self.free_unreserved.saturating_sub(&free));
        let mut given = std::mem::take(&mut self.given);
        while self.allocatable(&free) {
            let Some((fw, want)) = self.lowest_wanting(slot, now, others_allowed, &free) else {
                break;
            };
            if self.audit.is_some() {
                self.audit_grant(fw, slot, now, others_allowed, &free);
            }
            let grant = match want {
                Want::Whole => free,
                Want::Tasks(task) => {
                    let most = self.frameworks[fw as usize]
                        .as_ref()
                        .and_then(|f| f.demand)
                        .map_or(0, |d| d.unmet())
                        .min(demand::tasks_in(&free, &task));
                    let k = self.tasks_per_grant(fw, most, step);
                    let entry = self.frameworks[fw as usize].as_mut().expect("slot");
                    entry.demand.as_mut().expect("demand").offered += k;
                    Resources {
                        cpu_millis: task.cpu_millis * k,
                        mem: task.mem * k,
                        disk: task.disk * k,
                    }
                }
            };
            self.grant(fw, slot, None, grant);
            free -= grant;
            match given.iter_mut().find(|(f, _)| *f == fw) {
                Some((_, sum)) => *sum += grant,
                None => given.push((fw, grant)),
            }
            if want == Want::Whole {
                break;
            }
        }
        for (fw, resources) in given.drain(..) {
            grants.push(self.allocation(fw, slot, None, resources));
        }
        self.given = given;
    }

    /// The framework that should be offered next from `free` on agent
    /// `slot`, and what it wants of it: the first in share order (roles,
    /// then frameworks) not filtered there that wants something that fits.
    fn lowest_wanting(
        &self,
        slot: u32,
        now: Time,
        others_allowed: bool,
        free: &Resources,
    ) -> Option<(u32, Want)> {
        for (_, role) in self.role_order.iter() {
            if !others_allowed && !self.has_unmet_quota(role) {
                continue;
            }
            for (_, fw) in self.roles[role as usize].frameworks.iter() {
                if let Some(want) = self.wants(fw, slot, now, free) {
                    return Some((fw, want));
                }
            }
        }
        None
    }

    /// What framework `fw` would take of `free` on agent `slot`: nothing if
    /// it refused as much there lately, or if its declared demand has no
    /// task left to offer or none that fits.
    pub(super) fn wants(&self, fw: u32, slot: u32, now: Time, free: &Resources) -> Option<Want> {
        let entry = self.frameworks[fw as usize].as_ref().expect("slot");
        match entry.demand {
            None => (!self.filtered(fw, slot, now, free)).then_some(Want::Whole),
            Some(d) => {
                (d.unmet() > 0 && d.task.fits_in(free) && !self.filtered(fw, slot, now, &d.task))
                    .then_some(Want::Tasks(d.task))
            }
        }
    }
}

/// What a framework takes of an agent's free resources in the fair stage.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Want {
    /// Everything: it declared no demand.
    Whole,
    /// Tasks of this shape, as many as fairness gives it.
    Tasks(Resources),
}

impl Allocator {
    /// The lowest-share framework of `role` that has not refused `offer`
    /// on agent `slot`.
    fn first_unfiltered(&self, role: u32, slot: u32, now: Time, offer: &Resources) -> Option<u32> {
        self.roles[role as usize]
            .frameworks
            .iter()
            .map(|(_, fw)| fw)
            .find(|&fw| !self.filtered(fw, slot, now, offer))
    }

    /// Did framework `fw` refuse (at least) `offer` on `agent`, recently?
    pub(super) fn filtered(&self, fw: u32, agent: u32, now: Time, offer: &Resources) -> bool {
        let fw = self.frameworks[fw as usize].as_ref().expect("slot");
        if fw.filters.is_empty() {
            return false;
        }
        let generation = self.agents[agent as usize].as_ref().map(|a| a.generation);
        match fw.filters.get(&agent) {
            Some(f) => {
                Some(f.generation) == generation && now < f.until && offer.fits_in(&f.refused)
            }
            None => false,
        }
    }

    fn allocatable(&self, free: &Resources) -> bool {
        let min = &self.config.min_allocatable;
        free.cpu_millis >= min.cpu_millis.max(1) && free.mem >= min.mem.max(1)
    }

    pub(super) fn has_unmet_quota(&self, role: u32) -> bool {
        let role = &self.roles[role as usize];
        !role.quota.is_zero() && !role.quota.saturating_sub(&role.allocated).is_zero()
    }

    fn any_unmet_quota(&self) -> bool {
        self.quota_roles.iter().any(|&r| self.has_unmet_quota(r))
    }

    /// Unreserved resources that must stay free so every role can still reach
    /// its quota.
    fn required_headroom(&self) -> Resources {
        // Saturating: quotas come from operators and may be absurdly large;
        // a headroom that wrapped around would hold nothing back.
        self.quota_roles.iter().fold(Resources::ZERO, |acc, &r| {
            let role = &self.roles[r as usize];
            let unmet = role.quota.saturating_sub(&role.allocated);
            acc.checked_add(&unmet).unwrap_or(Resources {
                cpu_millis: u64::MAX,
                mem: u64::MAX,
                disk: u64::MAX,
            })
        })
    }

    fn grant(&mut self, fw_slot: u32, agent_slot: u32, pool: Option<usize>, resources: Resources) {
        let agent = self.agents[agent_slot as usize].as_mut().expect("slot");
        match pool {
            Some(p) => agent.reserved[p].allocated += resources,
            None => {
                agent.unreserved_allocated += resources;
                if agent.active {
                    self.free_unreserved = self.free_unreserved.saturating_sub(&resources);
                }
            }
        }
        let fw = self.frameworks[fw_slot as usize].as_mut().expect("slot");
        fw.allocated += resources;
        let role = fw.role;
        self.roles[role as usize].allocated += resources;
        self.refresh_framework(fw_slot);
    }

    fn allocation(
        &self,
        fw: u32,
        agent: u32,
        pool: Option<usize>,
        resources: Resources,
    ) -> Allocation {
        let agent = self.agents[agent as usize].as_ref().expect("slot");
        Allocation {
            framework: self.frameworks[fw as usize]
                .as_ref()
                .expect("slot")
                .id
                .clone(),
            agent: agent.id.clone(),
            resources,
            reservation: pool.map(|p| self.roles[agent.reserved[p].role as usize].name.clone()),
        }
    }
}
