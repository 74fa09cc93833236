//! Tasks: status updates, acknowledgements, kills, reconciliation.
//!
//! Status updates are delivered at least once. An agent keeps each update
//! until the framework acknowledges it; the master forwards updates and acks
//! and remembers the latest state. Updates the master makes itself (`LOST`
//! when an agent is gone) are kept by the master until acknowledged and are
//! sent again when the framework re-subscribes. A terminal task gives its
//! resources back at once; once its terminal update is acknowledged it is
//! archived, and only the newest `completed_tasks_per_framework` are kept.

use wasmos_proto::v1;

use super::{Core, CoreError, Reply};
use crate::allocator::Scope;
use crate::ids::{AgentId, FrameworkId, TaskId};
use crate::time::Time;

/// Is this a state a task never leaves?
pub fn is_terminal(state: v1::TaskState) -> bool {
    state.is_terminal()
}

/// How far along a task in `state` is: updates never move it back.
pub fn progress(state: v1::TaskState) -> u8 {
    match state {
        v1::TaskState::Unspecified => 0,
        v1::TaskState::Staging => 1,
        v1::TaskState::Starting => 2,
        v1::TaskState::Running => 3,
        _ => 4,
    }
}

/// Reconciliations held while agents recover, at most: past it, "unknown"
/// is answered at once (a framework asking about millions of tasks it never
/// launched gets what it asked for).
const MAX_HELD_RECONCILIATIONS: usize = 1_000_000;

impl Core {
    pub(super) fn agent_updates(
        &mut self,
        agent: &AgentId,
        statuses: Vec<v1::TaskStatus>,
        unsynced: Option<v1::SyncMark>,
        now: Time,
    ) -> Result<Reply, CoreError> {
        if !self.agents.contains_key(agent) {
            return Err(CoreError::UnknownAgent(agent.clone()));
        }
        self.agent_seen(agent, now);
        let mut freed = false;
        for mut status in statuses {
            // No state, or one this master does not know: recording it would
            // leave the task neither launched nor terminal, so a re-registering
            // agent that dropped it would never get it declared LOST. Ack it so
            // the agent stops resending, and keep the last good state.
            if !matches!(v1::TaskState::try_from(status.state), Ok(s) if s != v1::TaskState::Unspecified)
            {
                self.dismiss(agent, status);
                continue;
            }
            let id = TaskId::from(status.task_id.as_str());
            let known = self.tasks.get(&id).filter(|t| &t.agent == agent);
            let Some(task) = known else {
                // Not ours to forward: let the agent forget it, and stop it.
                if !is_terminal(status.state()) {
                    self.out.kill(agent, status.task_id.clone());
                }
                self.dismiss(agent, status);
                continue;
            };
            let replaces_unsynced_end = task.end_unsynced && is_terminal(status.state());
            if task.released
                && !task.status.uuid.is_empty()
                && task.status.uuid != status.uuid
                && !replaces_unsynced_end
            {
                // The master already settled this task (e.g. LOST); a late
                // word from the agent changes nothing. (An end the agent
                // reported on re-registering has no uuid: its own update,
                // which follows, replaces it. An end nobody was told yet,
                // because it was not durable on the agent, gives way to what
                // the agent says after: the LOST of an executor that lost
                // it with its power.)
                self.dismiss(agent, status);
                continue;
            }
            if progress(status.state()) < progress(task.status.state()) {
                // An older update resent, or overtaken on the way (STARTING
                // after RUNNING): states only move forward.
                self.dismiss(agent, status);
                continue;
            }
            status.framework_id = task.framework.to_string();
            status.agent_id = agent.to_string();
            let framework = task.framework.clone();
            let terminal = is_terminal(status.state());
            let task = self.tasks.get_mut(&id).expect("known task");
            // The same unconfirmed end sent again already waits for a mark.
            let waiting = task.end_unsynced && task.status.uuid == status.uuid;
            task.set_status(status.clone(), &mut self.known);
            let release = terminal && !task.released;
            // An end not yet durable on the agent frees the resources now
            // and is told once the agent's `synced` covers it.
            let unconfirmed = terminal && unsynced.is_some();
            task.end_unsynced = unconfirmed;
            self.dirty_task(&id);
            if release {
                self.release_task(&id);
                freed = true;
            }
            if waiting && unconfirmed {
                // Its first mark still stands.
            } else if let Some(mark) = unsynced.filter(|_| unconfirmed) {
                self.agents
                    .get_mut(agent)
                    .expect("checked")
                    .unsynced_ends
                    .push((mark, id));
            } else if self.framework_connected(&framework) {
                self.out.update(&framework, status);
            }
        }
        if freed {
            self.allocate(now, Scope::Agents(std::slice::from_ref(agent)));
        }
        Ok(Reply::Done)
    }

    /// The agent's updates up to `mark` are durable on its side: the ends
    /// they hold are told to their frameworks.
    pub(super) fn agent_synced(
        &mut self,
        agent: &AgentId,
        mark: v1::SyncMark,
        now: Time,
    ) -> Result<Reply, CoreError> {
        let Some(a) = self.agents.get_mut(agent) else {
            return Err(CoreError::UnknownAgent(agent.clone()));
        };
        let waiting = std::mem::take(&mut a.unsynced_ends);
        let mut still = Vec::with_capacity(waiting.len());
        for (at, id) in waiting {
            let Some(task) = self
                .tasks
                .get_mut(&id)
                .filter(|t| t.end_unsynced && &t.agent == agent)
            else {
                continue; // confirmed, replaced or gone meanwhile
            };
            if at.incarnation != mark.incarnation || at.seq > mark.seq {
                still.push((at, id));
                continue;
            }
            task.end_unsynced = false;
            let (framework, status) = (task.framework.clone(), task.status.clone());
            self.dirty_task(&id);
            if self.framework_connected(&framework) {
                self.out.update(&framework, status);
            }
        }
        self.agents.get_mut(agent).expect("checked").unsynced_ends = still;
        self.agent_seen(agent, now);
        Ok(Reply::Done)
    }

    pub(super) fn acknowledge(
        &mut self,
        req: v1::AcknowledgeRequest,
        _now: Time,
    ) -> Result<Reply, CoreError> {
        let framework = FrameworkId::from(req.framework_id.as_str());
        self.framework_mut(&framework)?;
        for ack in &req.acks {
            self.check_owner(&framework, &ack.task_id, true)?;
        }
        for ack in req.acks {
            let id = TaskId::from(ack.task_id.as_str());
            // Unknown (already archived) tasks: a duplicate ack, harmless.
            let Some(task) = self.tasks.get_mut(&id) else {
                continue;
            };
            let terminal_acked = is_terminal(task.status.state()) && task.status.uuid == ack.uuid;
            if task
                .master_update
                .as_ref()
                .is_some_and(|u| u.uuid == ack.uuid)
            {
                task.master_update = None;
                self.dirty_task(&id);
            } else if self
                .agents
                .get(&task.agent)
                .is_some_and(|a| a.connection.is_some())
            {
                self.out.ack(
                    &task.agent,
                    v1::StatusAck {
                        task_id: ack.task_id,
                        uuid: ack.uuid,
                    },
                );
            }
            if terminal_acked {
                self.archive(&id);
            }
        }
        Ok(Reply::Done)
    }

    pub(super) fn kill(&mut self, req: v1::KillRequest, _now: Time) -> Result<Reply, CoreError> {
        let framework = FrameworkId::from(req.framework_id.as_str());
        self.framework_mut(&framework)?;
        for id in &req.task_ids {
            self.check_owner(&framework, id, false)?;
        }
        for id in req.task_ids {
            let task = self.tasks.get_mut(id.as_str()).expect("checked");
            if task.released {
                continue; // already over
            }
            task.kill_requested = true;
            let agent = task.agent.clone();
            let task_id = TaskId::from(id.as_str());
            self.dirty_task(&task_id);
            if self
                .agents
                .get(&agent)
                .is_some_and(|a| a.connection.is_some())
            {
                self.out.kill(&agent, id);
            }
        }
        Ok(Reply::Done)
    }

    /// Kills tasks for an operator: each on behalf of its own framework.
    pub(super) fn operator_kill(
        &mut self,
        task_ids: Vec<String>,
        now: Time,
    ) -> Result<Reply, CoreError> {
        let mut by_framework: Vec<(FrameworkId, Vec<String>)> = Vec::new();
        for id in task_ids {
            let task = self
                .tasks
                .get(id.as_str())
                .ok_or_else(|| CoreError::UnknownTask(TaskId::from(id.as_str())))?;
            match by_framework.iter_mut().find(|(f, _)| *f == task.framework) {
                Some((_, ids)) => ids.push(id),
                None => by_framework.push((task.framework.clone(), vec![id])),
            }
        }
        for (framework, task_ids) in by_framework {
            self.kill(
                v1::KillRequest {
                    framework_id: framework.to_string(),
                    task_ids,
                },
                now,
            )?;
        }
        Ok(Reply::Done)
    }

    pub(super) fn reconcile(
        &mut self,
        req: v1::ReconcileRequest,
        now: Time,
    ) -> Result<Reply, CoreError> {
        let framework = FrameworkId::from(req.framework_id.as_str());
        let fw = self.framework_mut(&framework)?;
        let ids: Vec<TaskId> = if req.task_ids.is_empty() {
            fw.tasks
                .iter()
                .chain(fw.completed.iter())
                .cloned()
                .collect()
        } else {
            for id in &req.task_ids {
                self.check_owner(&framework, id, true)?;
            }
            req.task_ids
                .iter()
                .map(|id| TaskId::from(id.as_str()))
                .collect()
        };
        let hold = self.agents_recovering();
        for id in ids {
            if hold
                && !self.tasks.contains_key(&id)
                && self.held_reconciliations.len() < MAX_HELD_RECONCILIATIONS
            {
                // An agent still to re-register may hold it (launched just
                // before a crash): "unknown" now would have it run twice.
                self.held_reconciliations.push((framework.clone(), id));
                continue;
            }
            let status = self.reconciliation_answer(&framework, &id, now);
            self.out.update(&framework, status);
        }
        Ok(Reply::Done)
    }

    /// Is any agent of the registry still to re-register after a restart?
    pub(super) fn agents_recovering(&self) -> bool {
        self.agents.values().any(|a| a.recovering_until.is_some())
    }

    /// Answers the reconciliations held while agents were recovering, once
    /// none is.
    pub(super) fn answer_held_reconciliations(&mut self, now: Time) {
        if self.held_reconciliations.is_empty() || self.agents_recovering() {
            return;
        }
        for (framework, id) in std::mem::take(&mut self.held_reconciliations) {
            if self.frameworks.contains_key(&framework) && self.framework_connected(&framework) {
                let status = self.reconciliation_answer(&framework, &id, now);
                self.out.update(&framework, status);
            }
        }
    }

    /// What a reconciliation says of task `id`: its latest status, or
    /// `LOST` (`TASK_UNKNOWN`) for a task the master does not know.
    fn reconciliation_answer(
        &self,
        framework: &FrameworkId,
        id: &TaskId,
        now: Time,
    ) -> v1::TaskStatus {
        match self.tasks.get(id) {
            Some(task) if task.end_unsynced => v1::TaskStatus {
                // Its end is heard, not yet durable: not for telling.
                state: v1::TaskState::Running as i32,
                reason: v1::Reason::Reconciliation as i32,
                message: "its end is not yet confirmed by its agent".into(),
                uuid: Vec::new(),
                ..task.status.clone()
            },
            Some(task) => {
                let mut status = task.status.clone();
                status.uuid.clear();
                status.agent_recovering = !task.released
                    && self
                        .agents
                        .get(&task.agent)
                        .is_some_and(|a| a.recovering_until.is_some());
                if status.reason == v1::Reason::Unspecified as i32 {
                    status.reason = v1::Reason::Reconciliation as i32;
                }
                status
            }
            None => v1::TaskStatus {
                task_id: id.to_string(),
                framework_id: framework.to_string(),
                state: v1::TaskState::Lost as i32,
                reason: v1::Reason::TaskUnknown as i32,
                message: "the master does not know this task".into(),
                timestamp_ms: self.wall(now),
                source: v1::StatusSource::Master as i32,
                ..Default::default()
            },
        }
    }

    /// Acknowledges an update to its agent without forwarding it, so the
    /// agent stops resending what the master will not act on.
    fn dismiss(&mut self, agent: &AgentId, status: v1::TaskStatus) {
        self.out.ack(
            agent,
            v1::StatusAck {
                task_id: status.task_id,
                uuid: status.uuid,
            },
        );
    }

    /// Records a status the master decided on, and sends it.
    pub(super) fn master_update(
        &mut self,
        id: &TaskId,
        state: v1::TaskState,
        reason: v1::Reason,
        message: &str,
        now: Time,
    ) {
        let uuid = self.fresh_id('U').into_bytes();
        let timestamp_ms = self.wall(now);
        let task = self.tasks.get_mut(id).expect("known task");
        let status = v1::TaskStatus {
            task_id: id.to_string(),
            framework_id: task.framework.to_string(),
            agent_id: task.agent.to_string(),
            state: state as i32,
            reason: reason as i32,
            message: message.to_string(),
            exit_code: None,
            usage: task.status.usage,
            uuid,
            timestamp_ms,
            source: v1::StatusSource::Master as i32,
            agent_recovering: false,
            stdout_head: Vec::new(),
        };
        task.set_status(status.clone(), &mut self.known);
        task.master_update = Some(status.clone());
        task.end_unsynced = false;
        let framework = task.framework.clone();
        self.dirty_task(id);
        if is_terminal(state) {
            self.release_task(id);
        }
        if self.framework_connected(&framework) {
            self.out.update(&framework, status);
        }
    }

    /// Sends again the master's own updates that a framework has not
    /// acknowledged (after it re-subscribes).
    pub(super) fn resend_master_updates(&mut self, framework: &FrameworkId) {
        let fw = &self.frameworks[framework];
        for id in &fw.tasks {
            if let Some(update) = &self.tasks[id].master_update {
                self.out.update(framework, update.clone());
            }
        }
    }

    /// Gives a task's resources back, once.
    pub(super) fn release_task(&mut self, id: &TaskId) {
        let task = self.tasks.get_mut(id).expect("known task");
        if task.released {
            return;
        }
        task.released = true;
        let (framework, agent) = (task.framework.clone(), task.agent.clone());
        let consumption = task.consumption.clone();
        self.release(&framework, &agent, &consumption);
    }

    /// Moves an acknowledged terminal task to its framework's archive.
    fn archive(&mut self, id: &TaskId) {
        let task = self.tasks.get_mut(id).expect("known task");
        if task.archived {
            return;
        }
        task.archived = true;
        let (framework, agent) = (task.framework.clone(), task.agent.clone());
        self.dirty_task(id);
        if let Some(a) = self.agents.get_mut(&agent) {
            a.tasks.remove(id);
        }
        let cap = self.config.completed_tasks_per_framework;
        let fw = self
            .frameworks
            .get_mut(&framework)
            .expect("task's framework");
        if fw.tasks.remove(id) {
            super::uncount_principal_tasks(&mut self.principal_tasks, &fw.info.principal, 1);
        }
        fw.completed.push_back(id.clone());
        while fw.completed.len() > cap {
            let old = fw.completed.pop_front().expect("non-empty");
            if let Some(forgotten) = self.tasks.remove(&old) {
                self.known.remove(&old, forgotten.status.state());
            }
        }
    }

    fn framework_connected(&self, id: &FrameworkId) -> bool {
        self.frameworks
            .get(id)
            .is_some_and(|f| f.connection.is_some())
    }

    /// Checks that `task` belongs to `framework`. Unknown tasks pass when
    /// `allow_unknown` (acks and reconciliation may name forgotten tasks).
    fn check_owner(
        &self,
        framework: &FrameworkId,
        task: &str,
        allow_unknown: bool,
    ) -> Result<(), CoreError> {
        match self.tasks.get(task) {
            Some(t) if &t.framework != framework => Err(CoreError::ForeignTask {
                task: TaskId::from(task),
                framework: framework.clone(),
            }),
            Some(_) => Ok(()),
            None if allow_unknown => Ok(()),
            None => Err(CoreError::UnknownTask(TaskId::from(task))),
        }
    }
}
