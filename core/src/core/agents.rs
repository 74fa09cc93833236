//! Agents: registration, re-registration, heartbeats, loss.
//!
//! An agent's stream may drop and come back; only silence longer than
//! `agent_timeout` makes the master declare it lost, report its tasks `LOST`
//! and forget it. An agent that comes back after that rejoins under its old
//! id but is told to kill what it still runs: those tasks were reported lost
//! and may already have run elsewhere.
//!
//! After a restart of the master, agents of the registry are *recovering*:
//! known, not offered, their tasks kept and never reported lost, until they
//! re-register (and the two sides reconcile their tasks) or their
//! `agent_reregister_timeout` passes.

use crate::maps::HashSet;

use wasmos_proto::v1;
use wasmos_proto::v1::event::Kind as EventKind;
use wasmos_proto::v1::master_message::Kind as AgentKind;

use super::adopt::RefusedAdoption;
use super::{Agent, ConnectionId, Core, CoreError, Reply};
use crate::allocator::Scope;
use crate::ids::{AgentId, Role, TaskId, validate_role};
use crate::resources::Resources;
use crate::time::Time;

impl Core {
    pub(super) fn register_agent(
        &mut self,
        connection: ConnectionId,
        register: v1::Register,
        now: Time,
    ) -> Result<Reply, CoreError> {
        let info = register.agent.unwrap_or_default();
        let (total, reservations) = agent_resources(&info)?;
        let cap = self.config.caps.agent_resources;
        if !total.fits_in(&cap) {
            return Err(CoreError::InvalidAgent(format!(
                "the agent claims {total}; an agent may claim at most {cap} (--max-agent-resources)"
            )));
        }
        let id = if info.agent_id.is_empty() {
            // Agents may name any id, even one of the master's own form they
            // were never given: skip those, or a newcomer would be taken for
            // the agent that named it and lose its resources.
            loop {
                let id = AgentId::from(self.fresh_id('A'));
                if !self.agents.contains_key(&id) {
                    break id;
                }
            }
        } else {
            AgentId::from(info.agent_id.as_str())
        };
        // The shell checks the certificate against its copy of the
        // identities; this is the check no copy can get wrong.
        if self.identity_revoked(id.as_str()) {
            return Err(CoreError::PermissionDenied(format!(
                "agent {id} was revoked; join again with a new token"
            )));
        }
        let mut kill = Vec::new();

        if let Some(known) = self.agents.get(&id)
            && (known.total != total || known.reservations != reservations)
        {
            // Resources changed (the agent restarted with other flags): as in
            // Mesos, it is a new agent under its old id. What the master
            // placed there is LOST and what it still runs is killed, so no
            // task holds resources the agent no longer has. Checked first,
            // so a refused claim leaves the old agent as it was.
            let after = self.allocator.total() - known.total;
            if after.checked_add(&total).is_none() {
                return Err(CoreError::InvalidAgent(format!(
                    "{total} would overflow the cluster's total resources"
                )));
            }
            let reserved = reservations
                .iter()
                .try_fold(Resources::ZERO, |sum, (_, r)| sum.checked_add(r))
                .unwrap_or(Resources::MAX);
            if !reserved.fits_in(&total) {
                return Err(CoreError::InvalidAgent(format!(
                    "reservations ({reserved}) exceed the agent's total resources ({total})"
                )));
            }
            let why = format!(
                "the agent re-registered with other resources ({total}, was {})",
                known.total
            );
            self.forget_agent(&id, &why, now);
        }

        if let Some(agent) = self.agents.get_mut(&id) {
            // Re-registration of an agent the master still knows: keep it and
            // the tasks both sides agree on.
            agent.connection = Some(connection);
            agent.last_seen = now;
            agent.recovering_until = None;
            agent.info = info.clone();
            agent.info.agent_id = id.to_string();
            let known: Vec<TaskId> = agent.tasks.iter().cloned().collect();
            let draining = agent.draining;
            if !draining {
                self.allocator
                    .set_agent_active(&id, true)
                    .expect("agent known to allocator");
            }
            // The tasks both sides agree on: the master placed them here,
            // they still run, and they run the module they were launched
            // with. Ends the agent reports are applied before anything is
            // adopted (`adopt.rs`), so an adopted task never finds its
            // resources still held by one that ended.
            let mut reported_set: HashSet<TaskId> =
                HashSet::with_capacity_and_hasher(register.tasks.len(), Default::default());
            let mut unknown = Vec::new();
            for report in &register.tasks {
                let task = TaskId::from(report.task_id.as_str());
                match self.tasks.get(&task) {
                    Some(t)
                        if t.agent == id
                            && !t.released
                            && (report.artifact.is_empty()
                                || report.artifact == t.spec.artifact) =>
                    {
                        if t.kill_requested {
                            kill.push(task.to_string());
                        }
                        self.reported_state(&task, report.state(), now);
                        reported_set.insert(task);
                    }
                    // Ended, its end not yet confirmed: the agent still
                    // holds it, and its update (the end, durable now, or
                    // LOST) follows.
                    Some(t) if t.agent == id && t.end_unsynced => {
                        reported_set.insert(task);
                    }
                    Some(_) => kill.push(task.to_string()),
                    None => unknown.push(report),
                }
            }
            // Tasks the master placed here that the agent no longer has:
            // running, or ended with an end the agent never confirmed (its
            // executor lost it with its power).
            for task in known {
                let t = &self.tasks[&task];
                let open = (!t.released && is_launched(t.status.state())) || t.end_unsynced;
                if open && !reported_set.contains(&task) {
                    self.master_update(
                        &task,
                        v1::TaskState::Lost,
                        v1::Reason::AgentError,
                        "the agent re-registered without this task",
                        now,
                    );
                }
            }
            for report in unknown {
                match self.adopt(&id, report, now) {
                    Ok(true) => {}
                    Ok(false) => kill.push(report.task_id.clone()),
                    Err(why) => {
                        kill.push(report.task_id.clone());
                        self.adoptions.refused.push(RefusedAdoption {
                            agent: id.clone(),
                            task: report.task_id.clone(),
                            framework: report.framework_id.clone(),
                            why,
                        });
                    }
                }
            }
        } else {
            if self.agents.len() >= self.config.caps.agents {
                return Err(CoreError::Exhausted(format!(
                    "the master has {} agents, its limit (--max-agents)",
                    self.agents.len()
                )));
            }
            // A new agent, or one the master declared lost: either way it
            // starts empty, and anything it still runs must die.
            kill.extend(register.tasks.iter().map(|t| t.task_id.clone()));
            // Totals are exact integers: refuse an agent whose claim would
            // wrap the cluster's total around rather than corrupt every share.
            if self.allocator.total().checked_add(&total).is_none() {
                return Err(CoreError::InvalidAgent(format!(
                    "{total} would overflow the cluster's total resources"
                )));
            }
            self.allocator
                .add_agent(id.clone(), total, &reservations)
                .map_err(|e| CoreError::InvalidAgent(e.to_string()))?;
            let mut info = info;
            info.agent_id = id.to_string();
            self.agents.insert(
                id.clone(),
                Agent {
                    id: id.clone(),
                    info,
                    total,
                    reservations,
                    connection: Some(connection),
                    last_seen: now,
                    recovering_until: None,
                    draining: false,
                    offers: HashSet::default(),
                    tasks: HashSet::default(),
                    unsynced_ends: Vec::new(),
                },
            );
        }

        self.dirty_agent(&id);
        self.out.agent_message(
            &id,
            AgentKind::Registered(v1::Registered {
                agent_id: id.to_string(),
                heartbeat_interval_ms: self.config.agent_heartbeat_interval.as_millis() as u64,
                kill_task_ids: kill,
                master_epoch: self.config.master_epoch,
                holds_unsynced_ends: true,
            }),
        );
        self.schedule_agent(&id);
        self.allocate(now, Scope::Agents(std::slice::from_ref(&id)));
        self.answer_held_reconciliations(now);
        Ok(Reply::Registered(id))
    }

    pub(super) fn agent_heartbeat(&mut self, id: &AgentId, now: Time) -> Result<Reply, CoreError> {
        if !self.agents.contains_key(id) {
            return Err(CoreError::UnknownAgent(id.clone()));
        }
        self.agent_seen(id, now);
        Ok(Reply::Done)
    }

    /// The stream dropped: stop offering the agent and take back its offers,
    /// but keep its tasks until it times out.
    pub(super) fn agent_disconnected(
        &mut self,
        id: &AgentId,
        connection: ConnectionId,
        now: Time,
    ) -> Result<Reply, CoreError> {
        let Some(agent) = self.agents.get_mut(id) else {
            return Ok(Reply::Done);
        };
        if agent.connection != Some(connection) {
            return Ok(Reply::Done); // an older stream; a newer one is live
        }
        agent.connection = None;
        self.allocator
            .set_agent_active(id, false)
            .expect("agent known to allocator");
        self.rescind_agent_offers(id, now);
        Ok(Reply::Done)
    }

    /// An operator drains an agent: no more offers; its tasks run on.
    pub(super) fn drain_agent(&mut self, id: &AgentId) -> Result<Reply, CoreError> {
        let agent = self
            .agents
            .get_mut(id)
            .ok_or_else(|| CoreError::UnknownAgent(id.clone()))?;
        agent.draining = true;
        self.dirty_agent(id);
        self.allocator
            .set_agent_active(id, false)
            .expect("agent known to allocator");
        Ok(Reply::Done)
    }

    pub(super) fn undrain_agent(&mut self, id: &AgentId, now: Time) -> Result<Reply, CoreError> {
        let agent = self
            .agents
            .get_mut(id)
            .ok_or_else(|| CoreError::UnknownAgent(id.clone()))?;
        agent.draining = false;
        let connected = agent.connection.is_some();
        self.dirty_agent(id);
        if connected {
            self.allocator
                .set_agent_active(id, true)
                .expect("agent known to allocator");
            self.allocate(now, Scope::Agents(std::slice::from_ref(id)));
        }
        Ok(Reply::Done)
    }

    /// Forgets an agent and closes its stream.
    pub(super) fn remove_agent(&mut self, id: &AgentId, why: &str, now: Time) {
        self.forget_agent(id, why, now);
        self.out.close(super::Output::CloseAgent(id.clone()));
    }

    /// Forgets an agent: rescinds its offers, reports its tasks `LOST`, tells
    /// frameworks that had tasks there.
    fn forget_agent(&mut self, id: &AgentId, why: &str, now: Time) {
        self.rescind_agent_offers(id, now);
        let agent = self.agents.get(id).expect("known agent");
        let tasks: Vec<TaskId> = agent.tasks.iter().cloned().collect();
        let mut frameworks = HashSet::default();
        for task in &tasks {
            let t = &self.tasks[task];
            frameworks.insert(t.framework.clone());
            // An end nobody was told, which the agent never confirmed: as
            // lost as a task that still ran.
            if !t.released || t.end_unsynced {
                self.master_update(task, v1::TaskState::Lost, v1::Reason::AgentLost, why, now);
            }
        }
        // Forget the agent's hold on tasks; the tasks stay (LOST) until their
        // frameworks acknowledge.
        self.agents.remove(id);
        self.schedule_agent(id);
        self.dirty_agent(id);
        self.allocator
            .remove_agent(id)
            .expect("agent known to allocator");
        for framework in frameworks {
            if self.frameworks.contains_key(&framework) {
                self.out.framework_event(
                    &framework,
                    EventKind::Failure(v1::Failure {
                        agent_id: id.to_string(),
                        message: why.to_string(),
                    }),
                );
            }
        }
        self.answer_held_reconciliations(now);
    }
}

/// Is the task on its agent (as opposed to not yet, or no longer)?
pub(super) fn is_launched(state: v1::TaskState) -> bool {
    matches!(
        state,
        v1::TaskState::Staging | v1::TaskState::Starting | v1::TaskState::Running
    )
}

/// Checks and converts what an agent says it has.
pub(super) fn agent_resources(
    info: &v1::AgentInfo,
) -> Result<(Resources, Vec<(Role, Resources)>), CoreError> {
    let total = info
        .resources
        .as_ref()
        .ok_or_else(|| CoreError::InvalidAgent("no resources given".into()))
        .and_then(|r| Resources::try_from(r).map_err(|e| CoreError::InvalidAgent(e.to_string())))?;
    if total.cpu_millis == 0 || total.mem == 0 {
        return Err(CoreError::InvalidAgent(format!(
            "an agent needs cpus and mem, got {total}"
        )));
    }
    let mut reservations = Vec::new();
    for reservation in &info.reservations {
        validate_role(&reservation.role).map_err(CoreError::InvalidAgent)?;
        let resources = reservation
            .resources
            .as_ref()
            .map(Resources::try_from)
            .transpose()
            .map_err(|e| CoreError::InvalidAgent(e.to_string()))?
            .unwrap_or_default();
        reservations.push((Role::from(reservation.role.as_str()), resources));
    }
    Ok((total, reservations))
}
