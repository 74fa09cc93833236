//! Frameworks: subscription, failover, suppress/revive, teardown.
//!
//! A framework whose stream drops keeps its tasks for its failover timeout;
//! re-subscribing with its id in time picks up where it left off (including
//! any status updates it has not acknowledged). After the timeout, or on
//! teardown, its tasks are killed and it is forgotten.

use crate::maps::{HashMap, HashSet};
use std::collections::VecDeque;
use std::time::Duration;

use wasmos_proto::v1;
use wasmos_proto::v1::event::Kind as EventKind;

use super::validate::validate_demand;
use super::{ConnectionId, Core, CoreError, Framework, Output, Reply};
use crate::allocator::Scope;
use crate::ids::{DEFAULT_ROLE, FrameworkId, Role, TaskId, validate_role};
use crate::time::Time;

impl Core {
    pub(super) fn subscribe(
        &mut self,
        connection: ConnectionId,
        info: v1::FrameworkInfo,
        now: Time,
    ) -> Result<Reply, CoreError> {
        let role = if info.role.is_empty() {
            DEFAULT_ROLE
        } else {
            info.role.as_str()
        };
        validate_role(role).map_err(CoreError::InvalidRole)?;
        let role = Role::from(role);
        let demand = info.demand.as_ref().map(validate_demand).transpose()?;
        let failover_timeout = match info.failover_timeout_ms {
            0 => self.config.default_failover_timeout,
            ms => Duration::from_millis(ms).min(self.config.max_failover_timeout),
        };

        let id = if info.framework_id.is_empty() {
            self.check_framework_slots(&role, &info.principal, now)?;
            let id = FrameworkId::from(self.fresh_id('F'));
            self.allocator
                .add_framework(id.clone(), &role)
                .expect("fresh framework id");
            self.allocator
                .set_demand(&id, demand)
                .expect("framework just added");
            let mut info = info;
            info.framework_id = id.to_string();
            info.role = role.to_string();
            self.frameworks.insert(
                id.clone(),
                Framework {
                    id: id.clone(),
                    info,
                    role,
                    connection: Some(connection),
                    failover_timeout,
                    failover_deadline: None,
                    suppressed: false,
                    offers: HashSet::default(),
                    tasks: HashSet::default(),
                    completed: VecDeque::new(),
                },
            );
            id
        } else {
            let id = FrameworkId::from(info.framework_id.as_str());
            let fw = self.framework_mut(&id)?;
            if fw.role != role {
                return Err(CoreError::RoleChange(
                    id,
                    fw.role.to_string(),
                    role.to_string(),
                ));
            }
            fw.connection = Some(connection);
            fw.failover_deadline = None;
            fw.failover_timeout = failover_timeout;
            fw.info.name = info.name;
            fw.info.user = info.user;
            fw.info.failover_timeout_ms = info.failover_timeout_ms;
            if info.demand.is_some() {
                fw.info.demand = info.demand;
                self.allocator
                    .set_demand(&id, demand)
                    .expect("framework known to allocator");
            }
            // Offers made to the old stream are unknown to the new one.
            self.rescind_framework_offers(&id, now);
            self.allocator
                .set_framework_connected(&id, true)
                .expect("framework known to allocator");
            id
        };

        self.schedule_framework(&id);
        self.dirty_framework(&id);
        self.out.framework_event(
            &id,
            EventKind::Subscribed(v1::Subscribed {
                framework_id: id.to_string(),
                heartbeat_interval_ms: self.config.framework_heartbeat_interval.as_millis() as u64,
                failover_timeout_ms: failover_timeout.as_millis() as u64,
                master_epoch: self.config.master_epoch,
            }),
        );
        self.resend_master_updates(&id);
        self.allocate(now, Scope::All);
        Ok(Reply::Subscribed(id))
    }

    /// Refuses a new framework of `principal` in `role` when the role's
    /// slots, or the principal's share of them, are taken. A framework
    /// takes a slot while it is connected and for a short grace after it
    /// disconnects (`framework_slot_grace`).
    fn check_framework_slots(
        &self,
        role: &Role,
        principal: &str,
        now: Time,
    ) -> Result<(), CoreError> {
        let caps = &self.config.caps;
        let holding = self
            .frameworks
            .values()
            .filter(|f| f.role == *role && f.holds_slot(caps.framework_slot_grace, now));
        let (mut in_role, mut by_principal) = (0, HashMap::<&str, usize>::default());
        for f in holding {
            in_role += 1;
            *by_principal.entry(f.info.principal.as_str()).or_default() += 1;
        }
        let own = by_principal.get(principal).copied().unwrap_or(0);
        if own >= caps.frameworks_per_principal {
            return Err(CoreError::Exhausted(format!(
                "principal `{principal}` holds {own} frameworks in role `{role}`, the most one principal may (--max-frameworks-per-principal); frameworks disconnected for over {:?} give their slot back",
                caps.framework_slot_grace
            )));
        }
        if in_role >= caps.frameworks_per_role {
            let (top, most) = by_principal
                .iter()
                .max_by_key(|(name, n)| (**n, std::cmp::Reverse(**name)))
                .map(|(name, n)| (*name, *n))
                .unwrap_or_default();
            return Err(CoreError::Exhausted(format!(
                "role `{role}` has {in_role} frameworks, its limit (--max-frameworks-per-role); principal `{top}` holds the most ({most})"
            )));
        }
        Ok(())
    }

    pub(super) fn framework_disconnected(
        &mut self,
        id: &FrameworkId,
        connection: ConnectionId,
        now: Time,
    ) -> Result<Reply, CoreError> {
        let Some(fw) = self.frameworks.get_mut(id) else {
            return Ok(Reply::Done);
        };
        if fw.connection != Some(connection) {
            return Ok(Reply::Done); // an older stream; a newer one is live
        }
        fw.connection = None;
        fw.failover_deadline = Some(now + fw.failover_timeout);
        self.schedule_framework(id);
        self.dirty_framework(id);
        self.allocator
            .set_framework_connected(id, false)
            .expect("framework known to allocator");
        self.rescind_framework_offers(id, now);
        Ok(Reply::Done)
    }

    /// SetDemand: replaces what the framework waits to launch, then offers
    /// what that makes wanted.
    pub(super) fn set_demand(
        &mut self,
        id: &FrameworkId,
        demand: Option<&v1::Demand>,
        now: Time,
    ) -> Result<Reply, CoreError> {
        self.framework_mut(id)?;
        self.declare_demand(id, demand)?;
        self.allocate(now, Scope::All);
        Ok(Reply::Done)
    }

    /// Checks and records a declared demand (or its absence): in the
    /// allocator, and in the framework's record so a restart keeps it.
    fn declare_demand(
        &mut self,
        id: &FrameworkId,
        demand: Option<&v1::Demand>,
    ) -> Result<(), CoreError> {
        let checked = demand.map(validate_demand).transpose()?;
        self.framework_mut(id)?.info.demand = demand.cloned();
        self.dirty_framework(id);
        self.allocator
            .set_demand(id, checked)
            .expect("framework known to allocator");
        Ok(())
    }

    pub(super) fn suppress(&mut self, id: &FrameworkId) -> Result<Reply, CoreError> {
        self.framework_mut(id)?.suppressed = true;
        self.dirty_framework(id);
        self.allocator
            .suppress(id)
            .expect("framework known to allocator");
        Ok(Reply::Done)
    }

    pub(super) fn revive(
        &mut self,
        id: &FrameworkId,
        demand: Option<&v1::Demand>,
        now: Time,
    ) -> Result<Reply, CoreError> {
        self.framework_mut(id)?;
        if let Some(demand) = demand {
            self.declare_demand(id, Some(demand))?;
        }
        self.framework_mut(id)?.suppressed = false;
        self.dirty_framework(id);
        self.allocator
            .revive(id)
            .expect("framework known to allocator");
        self.allocate(now, Scope::All);
        Ok(Reply::Done)
    }

    pub(super) fn teardown(&mut self, id: &FrameworkId, now: Time) -> Result<Reply, CoreError> {
        self.framework_mut(id)?;
        self.remove_framework(id, "the framework was torn down", now);
        Ok(Reply::Done)
    }

    /// Kills a framework's tasks, takes back its offers, and forgets it.
    pub(super) fn remove_framework(&mut self, id: &FrameworkId, why: &str, now: Time) {
        self.rescind_framework_offers(id, now);
        let fw = self.frameworks.get(id).expect("known framework");
        let tasks: Vec<TaskId> = fw
            .tasks
            .iter()
            .chain(fw.completed.iter())
            .cloned()
            .collect();
        let mut freed_agents = Vec::new();
        for task_id in tasks {
            let mut task = self.tasks.remove(&task_id).expect("framework's task");
            if !task.archived {
                self.dirty_task(&task_id);
            }
            if let Some(agent) = self.agents.get_mut(&task.agent) {
                agent.tasks.remove(&task_id);
                if !task.released {
                    self.out.kill(&task.agent, task_id.to_string());
                    freed_agents.push(task.agent.clone());
                }
            }
            if !task.released {
                self.release(&task.framework, &task.agent, &task.consumption);
                task.released = true;
                let killed = v1::TaskStatus {
                    state: v1::TaskState::Killed as i32,
                    reason: v1::Reason::FrameworkRemoved as i32,
                    message: why.to_string(),
                    uuid: Vec::new(),
                    timestamp_ms: self.wall(now),
                    source: v1::StatusSource::Master as i32,
                    ..task.status.clone()
                };
                task.set_status(killed, &mut self.known);
            }
            task.master_update = None;
            self.bury(task);
        }
        if let Some(fw) = self.frameworks.remove(id) {
            super::uncount_principal_tasks(
                &mut self.principal_tasks,
                &fw.info.principal,
                fw.tasks.len(),
            );
        }
        self.schedule_framework(id);
        self.dirty_framework(id);
        self.allocator
            .remove_framework(id)
            .expect("framework known to allocator");
        self.out.framework_event(
            id,
            EventKind::Error(v1::Error {
                message: why.to_string(),
            }),
        );
        self.out.close(Output::CloseFramework(id.clone()));
        freed_agents.dedup();
        self.allocate(now, Scope::Agents(&freed_agents));
    }
}
