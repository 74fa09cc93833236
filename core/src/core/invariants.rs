//! Accounting checks that tests and simulations run after every step.
//!
//! They recompute everything from the core's own records (offers and tasks)
//! and compare with the allocator's books, so a bookkeeping slip anywhere
//! shows up at the step that caused it.

use crate::maps::HashMap;

use super::Core;
use super::tasks::is_terminal;
use crate::ids::{AgentId, FrameworkId, Role};
use crate::resources::Resources;

impl Core {
    /// Checks, for every agent and pool, that offered + used + free = total
    /// (and so that nothing is offered twice), that each framework's
    /// allocation is the sum of its offers and unreleased tasks, that indexes
    /// agree, and that no task is left running on a removed agent.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.allocator.check_consistency()?;
        self.check_timers()?;
        self.check_known_tasks()?;
        self.check_principal_tasks_count()?;
        // (agent, pool) -> offered + used, and framework -> the same.
        let mut per_pool: HashMap<(AgentId, Option<Role>), Resources> = HashMap::default();
        let mut per_framework: HashMap<FrameworkId, Resources> = HashMap::default();
        for offer in self.offers.values() {
            let agent = self
                .agents
                .get(&offer.agent)
                .ok_or_else(|| format!("offer {} is on unknown agent {}", offer.id, offer.agent))?;
            let fw = self
                .frameworks
                .get(&offer.framework)
                .ok_or_else(|| format!("offer {} is for unknown framework", offer.id))?;
            if !agent.offers.contains(&offer.id) || !fw.offers.contains(&offer.id) {
                return Err(format!("offer {} missing from an index", offer.id));
            }
            if fw.connection.is_none() {
                return Err(format!("offer {} held by disconnected {}", offer.id, fw.id));
            }
            *per_pool
                .entry((offer.agent.clone(), offer.reservation.clone()))
                .or_default() += offer.resources;
            *per_framework.entry(offer.framework.clone()).or_default() += offer.resources;
        }
        for task in self.tasks.values() {
            if !self.frameworks.contains_key(&task.framework) {
                return Err(format!("task {} of unknown framework", task.id));
            }
            if task.end_unsynced && !(task.released && is_terminal(task.status.state())) {
                return Err(format!(
                    "task {}: an unconfirmed end on a task that is not ended",
                    task.id
                ));
            }
            if task.released {
                continue;
            }
            if is_terminal(task.status.state()) {
                return Err(format!("terminal task {} still holds resources", task.id));
            }
            let agent = self.agents.get(&task.agent).ok_or_else(|| {
                format!(
                    "task {} is {:?} on removed agent {}",
                    task.id,
                    task.status.state(),
                    task.agent
                )
            })?;
            if !agent.tasks.contains(&task.id) {
                return Err(format!(
                    "task {} missing from agent {}'s index",
                    task.id, agent.id
                ));
            }
            let used = task
                .consumption
                .iter()
                .fold(Resources::ZERO, |a, (_, r)| a + *r);
            if used != task.resources {
                return Err(format!("task {} consumption does not add up", task.id));
            }
            for (pool, r) in &task.consumption {
                *per_pool
                    .entry((task.agent.clone(), pool.clone()))
                    .or_default() += *r;
            }
            *per_framework.entry(task.framework.clone()).or_default() += task.resources;
        }
        for agent in self.agents.values() {
            let books = self
                .allocator
                .agent_allocation(&agent.id)
                .ok_or_else(|| format!("agent {} unknown to the allocator", agent.id))?;
            let held = per_pool
                .remove(&(agent.id.clone(), None))
                .unwrap_or_default();
            if held != books.unreserved_allocated {
                return Err(format!(
                    "agent {}: offered + used = {held} but the allocator has {} allocated",
                    agent.id, books.unreserved_allocated
                ));
            }
            for (role, total, allocated) in &books.reserved {
                let held = per_pool
                    .remove(&(agent.id.clone(), Some(role.clone())))
                    .unwrap_or_default();
                if held != *allocated || !held.fits_in(total) {
                    return Err(format!(
                        "agent {} reservation {role}: offered + used = {held}, allocator {allocated}, total {total}",
                        agent.id
                    ));
                }
            }
        }
        if let Some(((agent, pool), r)) = per_pool.into_iter().next() {
            return Err(format!(
                "{r} held on agent {agent} pool {pool:?} the allocator does not know"
            ));
        }
        for fw in self.frameworks.values() {
            let held = per_framework.remove(&fw.id).unwrap_or_default();
            let books = self
                .allocator
                .framework_allocation(&fw.id)
                .unwrap_or_default();
            if held != books {
                return Err(format!(
                    "framework {}: offers + tasks = {held} but the allocator has {books}",
                    fw.id
                ));
            }
        }
        Ok(())
    }

    /// The per-principal task counts agree with the frameworks' sets.
    fn check_principal_tasks_count(&self) -> Result<(), String> {
        let mut counted: HashMap<&str, usize> = HashMap::default();
        for fw in self.frameworks.values().filter(|f| !f.tasks.is_empty()) {
            *counted.entry(fw.info.principal.as_str()).or_default() += fw.tasks.len();
        }
        let kept: HashMap<&str, usize> = self
            .principal_tasks
            .iter()
            .map(|(p, n)| (p.as_str(), *n))
            .collect();
        if counted != kept {
            return Err(format!(
                "tasks per principal: counted {counted:?}, kept {kept:?}"
            ));
        }
        Ok(())
    }
}
