//! Declared demand, and DRF at task granularity.
//!
//! A framework may declare what it waits to launch: `tasks` tasks of one
//! shape. The fair stage then gives it that shape, a few tasks at a time,
//! instead of a whole free agent: the framework of lowest share gets tasks
//! until its share (or its role's) would pass the next one's, then the
//! next one is lowest, and so on until the agent's free resources hold no
//! more wanted task. That is the DRF paper's progressive filling with tasks
//! as the step, so one agent can go to several frameworks in one cycle.
//!
//! A grant of `k` tasks at once keeps the cycle's cost to the number of
//! times the lowest share changes hands, not the number of tasks: `k` is
//! the most tasks after which the framework is still no higher than the
//! next framework of its role and its role no higher than the next role,
//! or than its part of what the cycle hands out ([`Step`]), whichever is
//! more. That part keeps frameworks of equal shares (every framework, when
//! a cluster starts) from splitting each agent a task each: each takes its
//! part on one agent and the next framework takes the next agent, as DRF
//! over the whole cycle would, with no framework more than its part ahead.
//!
//! Demand is counted down as the framework is offered tasks (`offered`) and
//! as it launches them (`waiting`); offers it gives back count back up.

use super::{Allocator, AllocatorError};
use crate::ids::FrameworkId;
use crate::resources::Resources;

/// What a framework says it waits to launch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Demand {
    /// One task's resources.
    pub task: Resources,
    /// How many such tasks wait.
    pub tasks: u64,
}

/// A framework's demand as the allocator counts it.
#[derive(Clone, Copy, Debug)]
pub(super) struct DemandState {
    pub(super) task: Resources,
    /// Tasks the framework waits to launch (declared, less those launched).
    pub(super) waiting: u64,
    /// Of those, tasks its outstanding offers were sized for.
    pub(super) offered: u64,
}

impl DemandState {
    /// Tasks still to be offered.
    pub(super) fn unmet(&self) -> u64 {
        self.waiting.saturating_sub(self.offered)
    }
}

/// How many tasks of `task` fit in `resources`.
pub(super) fn tasks_in(resources: &Resources, task: &Resources) -> u64 {
    let per = |have: u64, need: u64| have.checked_div(need).unwrap_or(u64::MAX);
    per(resources.cpu_millis, task.cpu_millis)
        .min(per(resources.mem, task.mem))
        .min(per(resources.disk, task.disk))
}

/// The most tasks of `task` that can be added to `held` while its dominant
/// share of `total` stays at most `cap` before the last one: at least 1.
pub(super) fn tasks_below(held: &Resources, task: &Resources, total: &Resources, cap: f64) -> u64 {
    let room = |held: u64, need: u64, total: u64| -> u64 {
        if need == 0 || total == 0 {
            return u64::MAX;
        }
        let limit = cap * total as f64 - held as f64;
        if limit <= 0.0 {
            0
        } else {
            // A hair below the exact quotient, so rounding never lets a
            // framework pass the next one.
            ((limit / need as f64) * (1.0 - 1e-12)).floor() as u64
        }
    };
    let extra = room(held.cpu_millis, task.cpu_millis, total.cpu_millis)
        .min(room(held.mem, task.mem, total.mem))
        .min(room(held.disk, task.disk, total.disk));
    extra.saturating_add(1)
}

/// What one allocation cycle hands out, for sizing grants.
pub(super) struct Step {
    /// The dominant share of the free unreserved resources of the agents
    /// in the cycle.
    pub(super) pool_share: f64,
    /// The sum of the weights of the roles that want offers.
    pub(super) weights: f64,
}

impl Allocator {
    /// Sets (or, with `None`, clears) what a framework waits to launch.
    /// Tasks already offered stay counted while the shape is unchanged.
    pub fn set_demand(
        &mut self,
        id: &FrameworkId,
        demand: Option<Demand>,
    ) -> Result<(), AllocatorError> {
        let slot = self.framework_slot(id)?;
        let fw = self.frameworks[slot as usize].as_mut().expect("slot");
        fw.demand = demand.map(|d| DemandState {
            task: d.task,
            waiting: d.tasks,
            offered: match fw.demand {
                Some(old) if old.task == d.task => old.offered,
                _ => 0,
            },
        });
        Ok(())
    }

    /// The framework launched `tasks` tasks: they wait no longer.
    pub fn launched(&mut self, id: &FrameworkId, tasks: u64) -> Result<(), AllocatorError> {
        let slot = self.framework_slot(id)?;
        let fw = self.frameworks[slot as usize].as_mut().expect("slot");
        if let Some(d) = fw.demand.as_mut() {
            d.waiting = d.waiting.saturating_sub(tasks);
            d.offered = d.offered.saturating_sub(tasks);
        }
        Ok(())
    }

    /// What a framework waits to launch, as the allocator counts it now:
    /// its shape, and the tasks not yet offered.
    pub fn demand(&self, id: &FrameworkId) -> Option<Demand> {
        let slot = *self.framework_slots.get(id)?;
        let d = self.frameworks[slot as usize].as_ref()?.demand?;
        Some(Demand {
            task: d.task,
            tasks: d.unmet(),
        })
    }

    /// How many tasks of its demand framework `fw` gets in one grant: as
    /// many as keep it no higher than the next framework of its role (or
    /// its part of the cycle), and its role no higher than the next role
    /// (or the role's part), capped by `most`.
    pub(super) fn tasks_per_grant(&self, fw: u32, most: u64, step: &Step) -> u64 {
        let entry = self.frameworks[fw as usize].as_ref().expect("slot");
        let demand = entry.demand.expect("a framework with demand");
        let role = &self.roles[entry.role as usize];
        let role_part = if step.weights > 0.0 {
            step.pool_share * role.weight / step.weights
        } else {
            0.0
        };
        let mut k = most;
        if let Some(key) = entry.key
            && let Some(next) = role.frameworks.next_after(key)
        {
            let own = f64::from_bits(key.0);
            let part = role_part / role.frameworks.len().max(1) as f64;
            let cap = f64::from_bits(next.0).max(own + part);
            k = k.min(tasks_below(
                &entry.allocated,
                &demand.task,
                &self.total,
                cap,
            ));
        }
        if let Some(key) = role.key
            && let Some(next) = self.role_order.next_after(key)
        {
            let own = f64::from_bits(key.0) * role.weight;
            let cap = (f64::from_bits(next.0) * role.weight).max(own + role_part);
            k = k.min(tasks_below(&role.allocated, &demand.task, &self.total, cap));
        }
        k.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_in_counts_whole_tasks_of_every_resource() {
        let task = Resources::new(1.0, 4 << 30, 0);
        assert_eq!(tasks_in(&Resources::new(9.0, 18 << 30, 0), &task), 4);
        assert_eq!(tasks_in(&Resources::new(2.5, 18 << 30, 5), &task), 2);
        assert_eq!(tasks_in(&Resources::ZERO, &task), 0);
    }

    #[test]
    fn tasks_below_stops_where_the_share_would_pass_the_cap() {
        let total = Resources::new(9.0, 18 << 30, 0);
        let a = Resources::new(1.0, 4 << 30, 0);
        // From 0, up to a share of 4/9: one task (4/18) is below, the
        // second (8/18) stays below 4/9 = 8/18 before the third: 2 + 1.
        assert_eq!(tasks_below(&Resources::ZERO, &a, &total, 0.0), 1);
        assert_eq!(tasks_below(&Resources::ZERO, &a, &total, 4.0 / 18.0), 1);
        assert_eq!(tasks_below(&Resources::ZERO, &a, &total, 8.0 / 18.0), 2);
        assert_eq!(tasks_below(&Resources::ZERO, &a, &total, 1.0), 5);
        // A zero total of a resource the task needs none of does not limit.
        assert_eq!(
            tasks_below(&Resources::ZERO, &Resources::new(1.0, 0, 0), &total, 1.0),
            9
        );
    }
}
