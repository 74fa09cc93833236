//! The allocator: who is offered which agent's resources, by hierarchical
//! weighted Dominant Resource Fairness (DRF).
//!
//! A pure module: no I/O, no clock (callers pass `now`), no knowledge of
//! offers, tasks or the wire. The master core tells it what exists (agents,
//! frameworks, roles), what is allocated and what comes back; it answers with
//! [`Allocation`]s, which the core turns into offers.
//!
//! # The allocation cycle
//!
//! ```text
//!                 ┌──────────────────────── for each agent with free resources ─┐
//!  rebuild keys   │ 1. quota:     roles below their quota guarantee, lowest      │
//!  if the cluster │               weighted share first, get the agent's free     │
//!  total changed  │               unreserved resources                           │
//!  ─────────────▶ │ 2. reserved:  each reservation of the agent goes to the      │
//!                 │               lowest-share framework of its role             │
//!                 │ 3. fair:      roles by weighted dominant share (share/weight)│
//!                 │                └▶ frameworks of the role by dominant share   │
//!                 │                   └▶ first one not filtered that wants some: │
//!                 │                      declared demand: tasks of its shape,    │
//!                 │                      until the next share (demand.rs), then  │
//!                 │                      the next lowest; none declared: all     │
//!                 │                      that is left; never the quota headroom  │
//!                 │  after each grant: framework and role move in their sorters  │
//!                 └──────────────────────────────────────────────────────────────┘
//! ```
//!
//! Progressive filling falls out of step 3: each grant raises the receiver's
//! share, so the next grant goes to whoever is now lowest; with declared
//! demand the step is a task, so what frameworks run is DRF's allocation,
//! not only its order (one agent may go to several). Only frameworks
//! that want offers (connected, not suppressed) sit in the sorters, and a
//! share change moves one entry of a `BTreeSet`, so a cycle costs
//! O(agents × log frameworks) when few filters apply. Free crumbs smaller than
//! `min_allocatable` are not offered.
//!
//! Files: `mod.rs` holds the state and its bookkeeping, `cycle.rs` the
//! allocation cycle and recovery, `demand.rs` declared demand and the size
//! of a grant, `fairness.rs` the DRF-fair shares operators compare with,
//! `audit.rs` the checks tests run, `sorter.rs` the ordered set.

mod audit;
mod cycle;
mod demand;
mod fairness;
mod sorter;

use crate::maps::HashMap;

use serde::Serialize;

use crate::deadlines::Deadlines;
use crate::ids::{AgentId, FrameworkId, Role};
use crate::resources::Resources;
use crate::time::Time;
pub use demand::Demand;
use demand::DemandState;
pub use fairness::FairShares;
use sorter::{Key, Sorter};

/// Settings of the allocator.
#[derive(Clone, Debug)]
pub struct AllocatorConfig {
    /// Free resources are offered only when they hold at least this many cpus
    /// *and* this much memory: every task needs both, so a crumb with one and
    /// not the other is useless. Default: 0.01 cpus and 4 MiB.
    pub min_allocatable: Resources,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        AllocatorConfig {
            min_allocatable: Resources::new(0.01, 4 << 20, 0),
        }
    }
}

/// Resources of one agent granted to one framework.
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    pub framework: FrameworkId,
    pub agent: AgentId,
    pub resources: Resources,
    /// `Some(role)` when the resources come from the agent's reservation for
    /// that role.
    pub reservation: Option<Role>,
}

/// Which agents a cycle considers.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    /// Every agent: the periodic cycle, and after a framework arrives or
    /// revives.
    All,
    /// Just these: resources were freed on them.
    Agents(&'a [AgentId]),
}

/// A refused request to the allocator.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AllocatorError {
    #[error("agent {0} is already known")]
    DuplicateAgent(AgentId),
    #[error("unknown agent {0}")]
    UnknownAgent(AgentId),
    #[error("framework {0} is already known")]
    DuplicateFramework(FrameworkId),
    #[error("unknown framework {0}")]
    UnknownFramework(FrameworkId),
    #[error("reservations ({reserved}) exceed the agent's total resources ({total})")]
    ReservationsExceedTotal {
        reserved: Resources,
        total: Resources,
    },
    #[error("weight of role {0} must be a finite number > 0, got {1}")]
    BadWeight(Role, f64),
}

/// An agent's pools as the allocator sees them.
#[derive(Clone, Debug)]
pub struct AgentAllocation {
    pub total: Resources,
    pub unreserved_total: Resources,
    pub unreserved_allocated: Resources,
    /// (role, reserved total, allocated).
    pub reserved: Vec<(Role, Resources, Resources)>,
    pub active: bool,
}

/// What an operator sees of a role.
#[derive(Clone, Debug, Serialize)]
pub struct RoleSummary {
    pub name: Role,
    pub weight: f64,
    pub quota: Resources,
    pub allocated: Resources,
    /// Dominant share divided by weight.
    pub weighted_share: f64,
    pub frameworks: u32,
}

struct ReservedPool {
    role: u32,
    total: Resources,
    allocated: Resources,
}

struct AgentEntry {
    id: AgentId,
    /// Distinguishes this agent from earlier ones in the same slot, so a stale
    /// filter never applies to a newcomer.
    generation: u32,
    total: Resources,
    unreserved_total: Resources,
    unreserved_allocated: Resources,
    reserved: Vec<ReservedPool>,
    active: bool,
}

impl AgentEntry {
    fn unreserved_free(&self) -> Resources {
        self.unreserved_total - self.unreserved_allocated
    }
}

/// Resources of one agent a framework refused, and for how long. As in
/// Mesos, a filter holds back only offers it covers: once more resources
/// are free on the agent than were refused, the framework sees them again.
/// (Otherwise a framework that used part of an offer would be kept off the
/// agent even as tasks finish there, and lose its fair share.)
#[derive(Clone, Copy, Debug)]
struct Filter {
    /// The agent's generation, so a filter never outlives its agent.
    generation: u32,
    until: Time,
    refused: Resources,
}

struct FrameworkEntry {
    id: FrameworkId,
    role: u32,
    allocated: Resources,
    connected: bool,
    suppressed: bool,
    /// Agent slot → what the framework refused there.
    filters: HashMap<u32, Filter>,
    /// Present iff the framework sits in its role's sorter (wants offers).
    key: Option<Key>,
    /// Where it sits in that sorter, while it does.
    position: u32,
    /// What it waits to launch, if it said.
    demand: Option<DemandState>,
}

struct RoleEntry {
    name: Role,
    weight: f64,
    quota: Resources,
    allocated: Resources,
    /// Frameworks of the role that want offers.
    frameworks: Sorter,
    members: u32,
    /// Present iff the role sits in the role sorter (has a wanting framework).
    key: Option<Key>,
    /// Where it sits in the role sorter, while it does.
    position: u32,
}

/// The hierarchical weighted DRF allocator. See the module docs.
pub struct Allocator {
    config: AllocatorConfig,
    agents: Vec<Option<AgentEntry>>,
    free_agent_slots: Vec<u32>,
    agent_slots: HashMap<AgentId, u32>,
    frameworks: Vec<Option<FrameworkEntry>>,
    free_framework_slots: Vec<u32>,
    framework_slots: HashMap<FrameworkId, u32>,
    roles: Vec<RoleEntry>,
    role_slots: HashMap<Role, u32>,
    role_order: Sorter,
    /// Roles with a non-zero quota.
    quota_roles: Vec<u32>,
    /// Everything every registered agent has: the denominator of shares.
    total: Resources,
    /// Free unreserved resources on active agents: what quota headroom is
    /// checked against.
    free_unreserved: Resources,
    /// Set when `total` changed: every key is stale until rebuilt.
    dirty: bool,
    next_generation: u32,
    rotation: usize,
    /// What one agent's fair stage gave each framework: kept between
    /// agents so a cycle does not allocate it once per agent.
    given: Vec<(u32, Resources)>,
    audit: Option<Vec<String>>,
    /// When each filter ends, by (framework slot, agent slot): what
    /// [`Allocator::next_filter_expiry`] reads and a tick pops.
    filter_ends: Deadlines<(u32, u32)>,
}

impl Allocator {
    pub fn new(config: AllocatorConfig) -> Allocator {
        Allocator {
            config,
            agents: Vec::new(),
            free_agent_slots: Vec::new(),
            agent_slots: HashMap::default(),
            frameworks: Vec::new(),
            free_framework_slots: Vec::new(),
            framework_slots: HashMap::default(),
            roles: Vec::new(),
            role_slots: HashMap::default(),
            role_order: Sorter::default(),
            quota_roles: Vec::new(),
            total: Resources::ZERO,
            free_unreserved: Resources::ZERO,
            dirty: false,
            next_generation: 0,
            rotation: 0,
            given: Vec::new(),
            audit: None,
            filter_ends: Deadlines::default(),
        }
    }

    /// Turns on fairness auditing: every fair-share grant is checked by brute
    /// force against all frameworks, with shares recomputed from scratch, and
    /// violations are recorded. Slow; for tests and simulations.
    pub fn enable_audit(&mut self) {
        self.audit = Some(Vec::new());
    }

    /// Fairness violations found by the audit since the last call.
    pub fn take_audit_violations(&mut self) -> Vec<String> {
        self.audit.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The sum of all agents' resources.
    pub fn total(&self) -> Resources {
        self.total
    }

    // ----- agents -----------------------------------------------------------

    /// Adds an agent with its total resources and reservations (parts of the
    /// total set aside for roles). It starts active.
    pub fn add_agent(
        &mut self,
        id: AgentId,
        total: Resources,
        reservations: &[(Role, Resources)],
    ) -> Result<(), AllocatorError> {
        if self.agent_slots.contains_key(&id) {
            return Err(AllocatorError::DuplicateAgent(id));
        }
        // The sum of what an agent declares is checked: a crafted sum must
        // not wrap around and pass `fits_in`.
        let reserved_sum = reservations
            .iter()
            .try_fold(Resources::ZERO, |acc, (_, r)| acc.checked_add(r))
            .unwrap_or(Resources::MAX);
        if !reserved_sum.fits_in(&total) {
            return Err(AllocatorError::ReservationsExceedTotal {
                reserved: reserved_sum,
                total,
            });
        }
        let mut pools: Vec<ReservedPool> = Vec::new();
        for (role, resources) in reservations {
            let role = self.role_slot(role);
            match pools.iter_mut().find(|p| p.role == role) {
                Some(pool) => pool.total += *resources,
                None => pools.push(ReservedPool {
                    role,
                    total: *resources,
                    allocated: Resources::ZERO,
                }),
            }
        }
        self.next_generation = self.next_generation.wrapping_add(1);
        let entry = AgentEntry {
            id: id.clone(),
            generation: self.next_generation,
            total,
            unreserved_total: total - reserved_sum,
            unreserved_allocated: Resources::ZERO,
            reserved: pools,
            active: true,
        };
        self.free_unreserved += entry.unreserved_free();
        let slot = match self.free_agent_slots.pop() {
            Some(slot) => {
                self.agents[slot as usize] = Some(entry);
                slot
            }
            None => {
                self.agents.push(Some(entry));
                (self.agents.len() - 1) as u32
            }
        };
        self.agent_slots.insert(id, slot);
        self.total += total;
        self.dirty = true;
        Ok(())
    }

    /// Removes an agent. The caller first recovers everything allocated on
    /// it (offers and tasks), so that frameworks' shares stay right.
    pub fn remove_agent(&mut self, id: &AgentId) -> Result<(), AllocatorError> {
        let slot = self
            .agent_slots
            .remove(id)
            .ok_or_else(|| AllocatorError::UnknownAgent(id.clone()))?;
        let agent = self.agents[slot as usize].take().expect("slot in use");
        if agent.active {
            self.free_unreserved -= agent.unreserved_free();
        }
        self.total -= agent.total;
        self.free_agent_slots.push(slot);
        self.dirty = true;
        Ok(())
    }

    /// An inactive agent (disconnected, draining) is not offered.
    pub fn set_agent_active(&mut self, id: &AgentId, active: bool) -> Result<(), AllocatorError> {
        let slot = self.agent_slot(id)?;
        let agent = self.agents[slot as usize].as_mut().expect("slot in use");
        if agent.active != active {
            agent.active = active;
            if active {
                self.free_unreserved += agent.unreserved_free();
            } else {
                self.free_unreserved -= agent.unreserved_free();
            }
        }
        Ok(())
    }

    // ----- frameworks -------------------------------------------------------

    /// Adds a connected framework in `role`; it wants offers at once.
    pub fn add_framework(&mut self, id: FrameworkId, role: &Role) -> Result<(), AllocatorError> {
        if self.framework_slots.contains_key(&id) {
            return Err(AllocatorError::DuplicateFramework(id));
        }
        let role = self.role_slot(role);
        self.roles[role as usize].members += 1;
        let entry = FrameworkEntry {
            id: id.clone(),
            role,
            allocated: Resources::ZERO,
            connected: true,
            suppressed: false,
            filters: HashMap::default(),
            key: None,
            position: 0,
            demand: None,
        };
        let slot = match self.free_framework_slots.pop() {
            Some(slot) => {
                self.frameworks[slot as usize] = Some(entry);
                slot
            }
            None => {
                self.frameworks.push(Some(entry));
                (self.frameworks.len() - 1) as u32
            }
        };
        self.framework_slots.insert(id, slot);
        self.refresh_framework(slot);
        Ok(())
    }

    /// Removes a framework. The caller first recovers everything allocated to
    /// it.
    pub fn remove_framework(&mut self, id: &FrameworkId) -> Result<(), AllocatorError> {
        let slot = self.framework_slot(id)?;
        self.set_framework_flags(slot, |f| f.connected = false);
        self.framework_slots.remove(id);
        let fw = self.frameworks[slot as usize].take().expect("slot in use");
        for &agent in fw.filters.keys() {
            self.filter_ends.clear(&(slot, agent));
        }
        debug_assert!(
            fw.allocated.is_zero(),
            "removed {id} with {:?}",
            fw.allocated
        );
        let role = &mut self.roles[fw.role as usize];
        role.members -= 1;
        role.allocated = role.allocated.saturating_sub(&fw.allocated);
        self.refresh_role(fw.role);
        self.free_framework_slots.push(slot);
        Ok(())
    }

    /// A disconnected framework keeps its allocation but is not offered.
    pub fn set_framework_connected(
        &mut self,
        id: &FrameworkId,
        connected: bool,
    ) -> Result<(), AllocatorError> {
        let slot = self.framework_slot(id)?;
        self.set_framework_flags(slot, |f| f.connected = connected);
        Ok(())
    }

    /// Stops offers to a framework until it revives.
    pub fn suppress(&mut self, id: &FrameworkId) -> Result<(), AllocatorError> {
        let slot = self.framework_slot(id)?;
        self.set_framework_flags(slot, |f| f.suppressed = true);
        Ok(())
    }

    /// Resumes offers to a framework and clears all its filters.
    pub fn revive(&mut self, id: &FrameworkId) -> Result<(), AllocatorError> {
        let slot = self.framework_slot(id)?;
        let fw = self.frameworks[slot as usize]
            .as_ref()
            .expect("slot in use");
        for &agent in fw.filters.keys() {
            self.filter_ends.clear(&(slot, agent));
        }
        self.set_framework_flags(slot, |f| {
            f.suppressed = false;
            f.filters.clear();
        });
        Ok(())
    }

    /// Whether a framework that wants offers declared demand that no offer
    /// covers now.
    pub fn has_unmet_demand(&self, id: &FrameworkId) -> bool {
        let Some(&slot) = self.framework_slots.get(id) else {
            return false;
        };
        let fw = self.frameworks[slot as usize].as_ref().expect("slot");
        fw.key.is_some() && fw.demand.is_some_and(|d| d.unmet() > 0)
    }

    /// Whether a framework wants offers (connected and not suppressed).
    pub fn wants_offers(&self, id: &FrameworkId) -> bool {
        self.framework_slots
            .get(id)
            .map(|&slot| {
                self.frameworks[slot as usize]
                    .as_ref()
                    .expect("slot")
                    .key
                    .is_some()
            })
            .unwrap_or(false)
    }

    /// A framework's dominant share of the cluster.
    pub fn framework_share(&self, id: &FrameworkId) -> Option<f64> {
        let slot = *self.framework_slots.get(id)?;
        let fw = self.frameworks[slot as usize].as_ref()?;
        Some(fw.allocated.dominant_share(&self.total))
    }

    /// What a framework holds (offered or used).
    pub fn framework_allocation(&self, id: &FrameworkId) -> Option<Resources> {
        let slot = *self.framework_slots.get(id)?;
        Some(self.frameworks[slot as usize].as_ref()?.allocated)
    }

    /// How an agent's resources are split between pools and how much of each
    /// is allocated.
    pub fn agent_allocation(&self, id: &AgentId) -> Option<AgentAllocation> {
        let agent = self.agents[*self.agent_slots.get(id)? as usize].as_ref()?;
        Some(AgentAllocation {
            total: agent.total,
            unreserved_total: agent.unreserved_total,
            unreserved_allocated: agent.unreserved_allocated,
            reserved: agent
                .reserved
                .iter()
                .map(|p| {
                    (
                        self.roles[p.role as usize].name.clone(),
                        p.total,
                        p.allocated,
                    )
                })
                .collect(),
            active: agent.active,
        })
    }

    // ----- roles ------------------------------------------------------------

    /// Sets a role's weight (default 1): its share is divided by it.
    pub fn set_weight(&mut self, role: &Role, weight: f64) -> Result<(), AllocatorError> {
        if !weight.is_finite() || weight <= 0.0 {
            return Err(AllocatorError::BadWeight(role.clone(), weight));
        }
        let slot = self.role_slot(role);
        self.roles[slot as usize].weight = weight;
        self.refresh_role(slot);
        Ok(())
    }

    /// Sets a role's quota guarantee (zero removes it).
    pub fn set_quota(&mut self, role: &Role, quota: Resources) {
        let slot = self.role_slot(role);
        self.roles[slot as usize].quota = quota;
        self.quota_roles.retain(|&r| r != slot);
        if !quota.is_zero() {
            self.quota_roles.push(slot);
        }
    }

    /// Every role the allocator knows, by name.
    pub fn roles(&self) -> Vec<RoleSummary> {
        let mut roles: Vec<RoleSummary> = self
            .roles
            .iter()
            .map(|r| RoleSummary {
                name: r.name.clone(),
                weight: r.weight,
                quota: r.quota,
                allocated: r.allocated,
                weighted_share: r.allocated.dominant_share(&self.total) / r.weight,
                frameworks: r.members,
            })
            .collect();
        roles.sort_by(|a, b| a.name.cmp(&b.name));
        roles
    }

    // ----- keeping the sorters right -----------------------------------------

    fn set_framework_flags(&mut self, slot: u32, change: impl FnOnce(&mut FrameworkEntry)) {
        change(self.frameworks[slot as usize].as_mut().expect("slot"));
        self.refresh_framework(slot);
    }

    /// Puts a framework where it belongs in its role's sorter (or out of it),
    /// then does the same for the role.
    fn refresh_framework(&mut self, slot: u32) {
        let total = self.total;
        let fw = self.frameworks[slot as usize].as_mut().expect("slot");
        let wants = fw.connected && !fw.suppressed;
        let new_key = wants.then(|| sorter::key(fw.allocated.dominant_share(&total), slot));
        let (old_key, position, role) = (fw.key, fw.position, fw.role);
        fw.key = new_key;
        let frameworks = &mut self.frameworks;
        let mut moved = |fw: u32, at: u32| {
            frameworks[fw as usize].as_mut().expect("slot").position = at;
        };
        let sorter = &mut self.roles[role as usize].frameworks;
        match (old_key, new_key) {
            (Some(_), Some(new)) => sorter.update(position, new, &mut moved),
            (Some(_), None) => sorter.remove(position, &mut moved),
            (None, Some(new)) => sorter.insert(new, &mut moved),
            (None, None) => {}
        }
        self.refresh_role(role);
    }

    fn refresh_role(&mut self, slot: u32) {
        let total = self.total;
        let role = &mut self.roles[slot as usize];
        let new_key = (!role.frameworks.is_empty())
            .then(|| sorter::key(role.allocated.dominant_share(&total) / role.weight, slot));
        let (old_key, position) = (role.key, role.position);
        role.key = new_key;
        let roles = &mut self.roles;
        let mut moved = |role: u32, at: u32| roles[role as usize].position = at;
        match (old_key, new_key) {
            (Some(_), Some(new)) => self.role_order.update(position, new, &mut moved),
            (Some(_), None) => self.role_order.remove(position, &mut moved),
            (None, Some(new)) => self.role_order.insert(new, &mut moved),
            (None, None) => {}
        }
    }

    /// Recomputes every key after the cluster total changed.
    fn rebuild(&mut self) {
        self.role_order.clear();
        for role in &mut self.roles {
            role.frameworks.clear();
            role.key = None;
        }
        for fw in self.frameworks.iter_mut().flatten() {
            fw.key = None;
        }
        for slot in 0..self.frameworks.len() as u32 {
            if self.frameworks[slot as usize].is_some() {
                self.refresh_framework(slot);
            }
        }
        self.dirty = false;
    }

    // ----- lookups ----------------------------------------------------------

    fn role_slot(&mut self, role: &Role) -> u32 {
        if let Some(&slot) = self.role_slots.get(role) {
            return slot;
        }
        let slot = self.roles.len() as u32;
        self.roles.push(RoleEntry {
            name: role.clone(),
            weight: 1.0,
            quota: Resources::ZERO,
            allocated: Resources::ZERO,
            frameworks: Sorter::default(),
            members: 0,
            key: None,
            position: 0,
        });
        self.role_slots.insert(role.clone(), slot);
        slot
    }

    fn agent_slot(&self, id: &AgentId) -> Result<u32, AllocatorError> {
        self.agent_slots
            .get(id)
            .copied()
            .ok_or_else(|| AllocatorError::UnknownAgent(id.clone()))
    }

    fn framework_slot(&self, id: &FrameworkId) -> Result<u32, AllocatorError> {
        self.framework_slots
            .get(id)
            .copied()
            .ok_or_else(|| AllocatorError::UnknownFramework(id.clone()))
    }

    fn pool_index(&self, agent: u32, role: &Role) -> Option<usize> {
        let role = *self.role_slots.get(role)?;
        self.agents[agent as usize]
            .as_ref()?
            .reserved
            .iter()
            .position(|p| p.role == role)
    }
}

#[cfg(test)]
mod tests;
