//! Rebuilding the core from its registry after a restart.
//!
//! What was persisted comes back as it was, with the master's view of the
//! network reset: every agent is *recovering* (known, not offered, its tasks
//! kept) until it re-registers or its `agent_reregister_timeout` passes;
//! every framework is disconnected and has until its failover deadline to
//! re-subscribe: a whole failover timeout from now if it was connected at the
//! crash, its stored wall-clock deadline if it was already away. Offers are
//! not persisted: they die with the process and are made anew.

use crate::maps::HashSet;
use std::collections::VecDeque;
use std::time::Duration;

use wasmos_proto::v1;

use super::persist::resources_of;
use super::transitions::Transitions;
use super::{Agent, Core, CoreConfig, Framework, Task, agents::agent_resources};
use crate::ids::{AgentId, FrameworkId, Role, TaskId};
use crate::store::Registry;
use crate::time::Time;

/// What recovery noticed and dealt with, for the log.
#[derive(Debug, Default)]
pub struct Recovered {
    pub agents: usize,
    pub frameworks: usize,
    pub tasks: usize,
    /// Records that could not stand (a task of a framework that is gone, say)
    /// and what was done about each.
    pub notes: Vec<String>,
}

impl Core {
    /// A core holding what `registry` holds, at time `now`.
    ///
    /// Fails, changing nothing on disk, when a record cannot be understood:
    /// a registry the master cannot read must not be half-used.
    pub fn recover(
        config: CoreConfig,
        mut registry: Registry,
        now: Time,
    ) -> Result<(Core, Recovered), String> {
        let mut core = Core::new(config);
        let mut report = Recovered::default();
        core.last_now = now;
        core.ledger = super::ledger::Ledger::recover(registry.usage.clone());
        core.artifacts =
            super::artifacts::ArtifactIndex::recover(std::mem::take(&mut registry.artifacts));
        core.trust = super::trust::TrustTables::recover(
            std::mem::take(&mut registry.tokens),
            std::mem::take(&mut registry.identities),
        );

        for role in &registry.roles {
            let name = Role::from(role.name.as_str());
            let quota = role
                .quota
                .as_ref()
                .map(|q| resources_of(Some(q), &format!("role {}", role.name)))
                .transpose()?;
            if let Some(weight) = role.weight {
                core.allocator
                    .set_weight(&name, weight)
                    .map_err(|e| format!("role {}: {e}", role.name))?;
            }
            if let Some(quota) = quota {
                core.allocator.set_quota(&name, quota);
            }
            core.role_settings.insert(name, (role.weight, quota));
        }

        let reregister_by = now + core.config.agent_reregister_timeout;
        for stored in registry.agents {
            let info = stored.info.unwrap_or_default();
            let id = AgentId::from(info.agent_id.as_str());
            let (total, reservations) =
                agent_resources(&info).map_err(|e| format!("agent {id}: {e}"))?;
            core.allocator
                .add_agent(id.clone(), total, &reservations)
                .map_err(|e| format!("agent {id}: {e}"))?;
            core.allocator
                .set_agent_active(&id, false)
                .expect("just added");
            core.agents.insert(
                id.clone(),
                Agent {
                    id,
                    info,
                    total,
                    reservations,
                    connection: None,
                    last_seen: now,
                    recovering_until: Some(reregister_by),
                    draining: stored.draining,
                    offers: HashSet::default(),
                    tasks: HashSet::default(),
                    unsynced_ends: Vec::new(),
                },
            );
        }
        let ids: Vec<AgentId> = core.agents.keys().cloned().collect();
        for id in &ids {
            core.schedule_agent(id);
        }
        report.agents = core.agents.len();

        for stored in registry.frameworks {
            let info = stored.info.unwrap_or_default();
            let id = FrameworkId::from(info.framework_id.as_str());
            let role = Role::from(info.role.as_str());
            let failover_timeout = Duration::from_millis(stored.failover_timeout_ms);
            let deadline = if stored.connected {
                now + failover_timeout
            } else {
                core.time_at_wall(stored.failover_deadline_ms)
            };
            core.allocator
                .add_framework(id.clone(), &role)
                .map_err(|e| format!("framework {id}: {e}"))?;
            core.allocator
                .set_framework_connected(&id, false)
                .expect("just added");
            if stored.suppressed {
                core.allocator.suppress(&id).expect("just added");
            }
            // A demand that no longer passes the checks is dropped: the
            // framework is offered whole agents until it declares again.
            let demand = info
                .demand
                .as_ref()
                .and_then(|d| super::validate::validate_demand(d).ok());
            core.allocator.set_demand(&id, demand).expect("just added");
            // The deadline differs from the stored one if it was connected.
            core.dirty_framework(&id);
            core.frameworks.insert(
                id.clone(),
                Framework {
                    id,
                    info,
                    role,
                    connection: None,
                    failover_timeout,
                    failover_deadline: Some(deadline),
                    suppressed: stored.suppressed,
                    offers: HashSet::default(),
                    tasks: HashSet::default(),
                    completed: VecDeque::new(),
                },
            );
        }
        let ids: Vec<FrameworkId> = core.frameworks.keys().cloned().collect();
        for id in &ids {
            core.schedule_framework(id);
        }
        report.frameworks = core.frameworks.len();

        let mut orphans = Vec::new();
        for stored in registry.tasks {
            let spec = stored.spec.unwrap_or_default();
            let id = TaskId::from(spec.task_id.as_str());
            let framework = FrameworkId::from(stored.framework_id.as_str());
            let agent = AgentId::from(stored.agent_id.as_str());
            if !core.frameworks.contains_key(&framework) {
                // Its framework's removal was persisted, the task's was not
                // (they are one commit, so only a registry edited by hand).
                report.notes.push(format!(
                    "task {id} of unknown framework {framework}: dropped"
                ));
                core.dirty_task(&id);
                continue;
            }
            let resources = resources_of(spec.resources.as_ref(), &format!("task {id}"))?;
            let mut consumption = Vec::with_capacity(stored.consumption.len());
            for c in &stored.consumption {
                let role = (!c.reservation_role.is_empty())
                    .then(|| Role::from(c.reservation_role.as_str()));
                consumption.push((
                    role,
                    resources_of(c.resources.as_ref(), &format!("task {id}"))?,
                ));
            }
            let status = stored.status.unwrap_or_default();
            let released = status.state().is_terminal();
            let on_known_agent = core.agents.contains_key(&agent);
            if !released && on_known_agent {
                for (reservation, amount) in &consumption {
                    core.allocator
                        .allocate_used(&framework, &agent, reservation.as_ref(), *amount)
                        .map_err(|e| format!("task {id}: {e}"))?;
                }
            }
            if let Some(a) = core.agents.get_mut(&agent) {
                a.tasks.insert(id.clone());
            }
            core.add_framework_task(&framework, &id);
            let owner = core.frameworks[&framework].info.principal.clone();
            let role = core.frameworks[&framework].role.clone();
            // A settled end in the registry is counted (it was, in the
            // commit that settled it; or it predates the ledger).
            let settled = released && !stored.end_unsynced;
            core.known.add(&id, status.state());
            core.tasks.insert(
                id.clone(),
                Task {
                    id: id.clone(),
                    framework,
                    agent,
                    spec,
                    resources,
                    consumption,
                    transitions: Transitions::starting(&status),
                    status,
                    // A running task on an agent that is gone holds nothing.
                    released: released || !on_known_agent,
                    kill_requested: stored.kill_requested,
                    master_update: stored.master_update,
                    // Still to be confirmed by its agent (which sends the
                    // end again, or a LOST that replaces it).
                    end_unsynced: stored.end_unsynced && released,
                    archived: false,
                    owner,
                    role,
                    usage_counted: stored.usage_counted || settled,
                },
            );
            if !released && !on_known_agent {
                orphans.push(id);
            }
        }
        report.tasks = core.tasks.len();
        for id in orphans {
            // Its agent's removal was persisted and this LOST was not: say it
            // now (the task held nothing, so nothing is released twice).
            report
                .notes
                .push(format!("task {id} was on an agent that is gone: LOST"));
            core.lose_orphan(&id, now);
        }
        Ok((core, report))
    }

    /// Reports `LOST` for a recovered task whose agent is gone.
    /// It holds nothing in the allocator (it was recovered released).
    fn lose_orphan(&mut self, id: &TaskId, now: Time) {
        let uuid = self.fresh_id('U').into_bytes();
        let timestamp_ms = self.wall(now);
        let task = self.tasks.get_mut(id).expect("recovered");
        let status = v1::TaskStatus {
            task_id: id.to_string(),
            framework_id: task.framework.to_string(),
            agent_id: task.agent.to_string(),
            state: v1::TaskState::Lost as i32,
            reason: v1::Reason::AgentLost as i32,
            message: "its agent was removed before the master restarted".into(),
            usage: task.status.usage,
            uuid,
            timestamp_ms,
            source: v1::StatusSource::Master as i32,
            ..Default::default()
        };
        task.set_status(status.clone(), &mut self.known);
        task.master_update = Some(status);
        self.dirty_task(id);
    }
}
