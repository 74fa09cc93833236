//! What the core asks the shell to persist.
//!
//! Handlers mark what they changed ([`Dirty`]); at the end of each input the
//! core turns every marked agent, framework, role and task into one
//! [`Write`]: its record as it is now, or its deletion if it is gone. So a
//! task launched and finished within one input is written once, and no
//! handler builds records itself. The shell commits a turn's writes before it
//! sends anything the turn produced.

use crate::maps::HashSet;

use wasmos_proto::v1;

use super::{Agent, Core, Framework, Task};
use crate::ids::{AgentId, FrameworkId, Role, TaskId};
use crate::resources::Resources;
use crate::store::{Record, Table, Write};
use crate::time::Time;

/// Keys changed by the current input.
#[derive(Default)]
pub(super) struct Dirty {
    agents: HashSet<AgentId>,
    frameworks: HashSet<FrameworkId>,
    roles: HashSet<Role>,
    tasks: HashSet<TaskId>,
}

impl Core {
    pub(super) fn dirty_task(&mut self, id: &TaskId) {
        if !self.dirty.tasks.contains(id) {
            self.dirty.tasks.insert(id.clone());
        }
    }

    pub(super) fn dirty_framework(&mut self, id: &FrameworkId) {
        if !self.dirty.frameworks.contains(id) {
            self.dirty.frameworks.insert(id.clone());
        }
    }

    pub(super) fn dirty_agent(&mut self, id: &AgentId) {
        if !self.dirty.agents.contains(id) {
            self.dirty.agents.insert(id.clone());
        }
    }

    pub(super) fn dirty_role(&mut self, role: &Role) {
        self.dirty.roles.insert(role.clone());
    }

    /// The writes for everything marked, and clears the marks. `handle`
    /// returns them with each input; the shell calls this once after
    /// [`Core::recover`], whose changes (deadlines restarted, orphans lost)
    /// are marked too.
    pub fn take_writes(&mut self) -> Vec<Write> {
        let dirty = std::mem::take(&mut self.dirty);
        self.count_settled(&dirty.tasks);
        let mut writes = Vec::with_capacity(
            dirty.agents.len() + dirty.frameworks.len() + dirty.roles.len() + dirty.tasks.len(),
        );
        for role in dirty.roles {
            writes.push(match self.role_settings.get(&role) {
                Some((weight, quota)) => Write::Put(Record::Role(v1::StoredRole {
                    name: role.to_string(),
                    weight: *weight,
                    quota: quota.as_ref().map(Into::into),
                })),
                None => Write::Delete(Table::Roles, role.to_string()),
            });
        }
        for id in dirty.agents {
            writes.push(match self.agents.get(&id) {
                Some(agent) => Write::Put(Record::Agent(self.stored_agent(agent))),
                None => Write::Delete(Table::Agents, id.to_string()),
            });
        }
        for id in dirty.frameworks {
            writes.push(match self.frameworks.get(&id) {
                Some(fw) => Write::Put(Record::Framework(self.stored_framework(fw))),
                None => Write::Delete(Table::Frameworks, id.to_string()),
            });
        }
        for id in dirty.tasks {
            writes.push(match self.tasks.get(&id).filter(|t| !t.archived) {
                Some(task) => Write::Put(Record::Task(Box::new(stored_task(task)))),
                None => Write::Delete(Table::Tasks, id.to_string()),
            });
        }
        writes.extend(self.ledger_writes());
        writes.extend(self.artifacts.take_writes());
        writes.extend(self.trust.take_writes());
        writes
    }

    /// Every record the registry should hold for the core as it is now: what
    /// the writes so far add up to. Tests compare the two after every step.
    pub fn registry_records(&self) -> Vec<Record> {
        let mut records = Vec::new();
        for (role, (weight, quota)) in &self.role_settings {
            records.push(Record::Role(v1::StoredRole {
                name: role.to_string(),
                weight: *weight,
                quota: quota.as_ref().map(Into::into),
            }));
        }
        records.extend(
            self.agents
                .values()
                .map(|a| Record::Agent(self.stored_agent(a))),
        );
        records.extend(
            self.frameworks
                .values()
                .map(|f| Record::Framework(self.stored_framework(f))),
        );
        records.extend(
            self.tasks
                .values()
                .filter(|t| !t.archived)
                .map(|t| Record::Task(Box::new(stored_task(t)))),
        );
        records.extend(self.artifacts.records().cloned().map(Record::Artifact));
        records.extend(self.trust.records());
        records
    }

    /// Wall-clock milliseconds of a core time: for timestamps people read
    /// and deadlines that must survive a restart.
    pub(super) fn wall(&self, time: Time) -> u64 {
        self.config
            .wall_clock_origin_ms
            .saturating_add(time.millis())
    }

    /// The core time of a wall-clock instant (the origin if before it).
    pub(super) fn time_at_wall(&self, wall_ms: u64) -> Time {
        Time(wall_ms.saturating_sub(self.config.wall_clock_origin_ms))
    }

    fn stored_agent(&self, agent: &Agent) -> v1::StoredAgent {
        v1::StoredAgent {
            info: Some(agent.info.clone()),
            last_seen_ms: self.wall(agent.last_seen),
            draining: agent.draining,
        }
    }

    fn stored_framework(&self, fw: &Framework) -> v1::StoredFramework {
        v1::StoredFramework {
            info: Some(fw.info.clone()),
            connected: fw.connection.is_some(),
            failover_deadline_ms: fw.failover_deadline.map(|d| self.wall(d)).unwrap_or(0),
            failover_timeout_ms: fw.failover_timeout.as_millis() as u64,
            suppressed: fw.suppressed,
        }
    }
}

fn stored_task(task: &Task) -> v1::StoredTask {
    v1::StoredTask {
        framework_id: task.framework.to_string(),
        agent_id: task.agent.to_string(),
        spec: Some(task.spec.clone()),
        status: Some(task.status.clone()),
        consumption: task
            .consumption
            .iter()
            .map(|(role, resources)| v1::StoredConsumption {
                reservation_role: role.as_ref().map(|r| r.to_string()).unwrap_or_default(),
                resources: Some(resources.into()),
            })
            .collect(),
        kill_requested: task.kill_requested,
        master_update: task.master_update.clone(),
        end_unsynced: task.end_unsynced,
        usage_counted: task.usage_counted,
    }
}

/// Converts a stored bundle back, naming the record if it is malformed.
pub(super) fn resources_of(r: Option<&v1::Resources>, what: &str) -> Result<Resources, String> {
    r.map(Resources::try_from)
        .transpose()
        .map_err(|e| format!("{what}: {e}"))
        .map(Option::unwrap_or_default)
}
