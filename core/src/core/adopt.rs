//! What a re-registering agent reports that the master did not know.
//!
//! Launches reach their agent before the registry holds them, and an end
//! frees its resources before the registry holds it, so a master that
//! crashes and restarts can be behind its agents: a task it launched and
//! never made durable, a task it still thinks runs that has ended. The
//! agent's report on re-registration settles both, in this order:
//!
//! 1. **Ends first.** A task the master holds as running that the agent
//!    reports ended gives its resources back now (one it reports further
//!    along, `RUNNING` for `STAGING`, moves on too). Its status becomes the
//!    reported state with no uuid (the master heard it, nobody acknowledges
//!    it); the agent's own update, which it sends again after registering,
//!    replaces it and is what the framework is told.
//! 2. **Then adoption.** A task the master does not know, reported with the
//!    spec and MAC of its launch (`launch_key.rs`) by a master of an
//!    earlier start, is taken in as if just launched: placed on the agent's
//!    free resources (its framework's reservation first), in the reported
//!    state. A launch of this master's own run that it does not know any
//!    more is one it settled and archived: the agent is told to kill it,
//!    and that is all. A MAC that does not check out, a framework that is
//!    gone, an id already used, or resources the agent no longer has free:
//!    the agent is told to kill it, and the refusal is kept for the audit
//!    log (`Core::take_adoptions`). An ended task adopted may be one whose
//!    end the framework already acknowledged (the ack never reached the
//!    agent): it hears the end again, as delivery is at least once.
//!
//! Meanwhile a framework that reconciles a task the master does not know
//! gets no answer while any agent may still report it (`held_reconciliations`
//! in `tasks.rs`): "unknown" would make it launch the task again while the
//! first copy runs.

use wasmos_proto::v1;

use super::offers::draw;
use super::tasks::{is_terminal, progress};
use super::transitions::Transitions;
use super::validate::validate_task;
use super::{Core, Task};
use crate::ids::{AgentId, FrameworkId, Role, TaskId};
use crate::resources::Resources;
use crate::time::Time;

/// What re-registrations since the last [`Core::take_adoptions`] adopted
/// and refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Adoptions {
    pub adopted: Vec<TaskId>,
    pub refused: Vec<RefusedAdoption>,
}

/// A task an agent reported that the master would not take in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedAdoption {
    pub agent: AgentId,
    pub task: String,
    pub framework: String,
    pub why: String,
}

impl Core {
    /// Step 1: a task the master holds as running moves to the state its
    /// agent reports, if that is further along (a `RUNNING`, or an end, the
    /// master heard before its crash and never made durable); an end gives
    /// its resources back.
    pub(super) fn reported_state(&mut self, id: &TaskId, state: v1::TaskState, now: Time) {
        let timestamp_ms = self.wall(now);
        let task = self.tasks.get_mut(id).expect("known task");
        if task.released || progress(state) <= progress(task.status.state()) {
            return;
        }
        task.set_status(
            v1::TaskStatus {
                state: state as i32,
                reason: v1::Reason::Unspecified as i32,
                message: "reported by its agent on re-registration".into(),
                uuid: Vec::new(),
                timestamp_ms,
                source: v1::StatusSource::Agent as i32,
                ..task.status.clone()
            },
            &mut self.known,
        );
        // A report may hold an end the agent's executor has not synced:
        // told once the agent's own update for it comes (or replaced).
        task.end_unsynced = is_terminal(state);
        self.dirty_task(id);
        if is_terminal(state) {
            self.release_task(id);
        }
    }

    /// Step 2: takes in a task the master did not know (`Ok(true)`), or
    /// says why not. `Ok(false)`: a launch of this master's own run, so one
    /// it settled and forgot (archived): nothing to adopt, nothing to report.
    pub(super) fn adopt(
        &mut self,
        agent: &AgentId,
        report: &v1::RunningTask,
        now: Time,
    ) -> Result<bool, String> {
        let id = TaskId::from(report.task_id.as_str());
        let framework = FrameworkId::from(report.framework_id.as_str());
        let Some(spec) = report
            .spec
            .as_ref()
            .filter(|_| !report.launch_mac.is_empty())
        else {
            return Err("the master does not know it, and it came without a signed launch".into());
        };
        if spec.task_id != report.task_id {
            return Err(format!("its spec names another task ({})", spec.task_id));
        }
        if !self.config.launch_key.verify(
            agent,
            &framework,
            report.launch_epoch,
            spec,
            &report.launch_mac,
        ) {
            return Err(
                "its launch's MAC does not check out: this master never launched it here".into(),
            );
        }
        if report.launch_epoch >= self.config.master_epoch {
            return Ok(false);
        }
        if self.task_id_taken(&id) {
            return Err("its id is used by another task".into());
        }
        let Some(role) = self.frameworks.get(&framework).map(|f| f.role.clone()) else {
            return Err(format!("its framework {framework} is gone"));
        };
        let resources = validate_task(spec).map_err(|e| e.to_string())?;
        let state = match report.state() {
            v1::TaskState::Unspecified => v1::TaskState::Staging,
            state => state,
        };
        let ended = is_terminal(state);
        let consumption = if ended {
            // Holds nothing: where it would have come from does not matter.
            vec![(None, resources)]
        } else {
            self.draw_free(agent, &role, resources)
                .ok_or_else(|| format!("the agent has no room left for its {resources}"))?
        };
        if !ended {
            for (reservation, amount) in &consumption {
                self.allocator
                    .allocate_used(&framework, agent, reservation.as_ref(), *amount)
                    .expect("framework and agent known to the allocator");
            }
        }
        let owner = self.frameworks[&framework].info.principal.clone();
        let role = self.frameworks[&framework].role.clone();
        let status = v1::TaskStatus {
            task_id: id.to_string(),
            framework_id: framework.to_string(),
            agent_id: agent.to_string(),
            state: state as i32,
            message: "adopted from its agent after the master restarted".into(),
            timestamp_ms: self.wall(now),
            source: v1::StatusSource::Agent as i32,
            ..Default::default()
        };
        self.insert_task(Task {
            id: id.clone(),
            framework: framework.clone(),
            agent: agent.clone(),
            spec: spec.clone(),
            resources,
            consumption,
            transitions: Transitions::starting(&status),
            status,
            released: ended,
            kill_requested: false,
            master_update: None,
            // An ended task adopted is one its framework may have been
            // told of (and acknowledged) before the crash, if the ack
            // never reached the agent: its end stands as reported, and
            // the agent's own update follows (a duplicate at worst).
            end_unsynced: false,
            archived: false,
            owner,
            role,
            // An end it reported may be one its framework was told and
            // acknowledged before the crash (counted then): never counted
            // twice, at the cost of one whose launch was never committed.
            usage_counted: ended,
        });
        self.adoptions.adopted.push(id);
        Ok(true)
    }

    /// Where `need` fits in what is free on `agent`: `role`'s reservation
    /// first, then unreserved resources (as an `Accept` draws on offers);
    /// `None` if it does not.
    fn draw_free(
        &self,
        agent: &AgentId,
        role: &Role,
        need: Resources,
    ) -> Option<Vec<(Option<Role>, Resources)>> {
        let books = self.allocator.agent_allocation(agent)?;
        let mut pools: Vec<(Option<Role>, Resources)> = books
            .reserved
            .iter()
            .filter(|(r, _, _)| r == role)
            .map(|(r, total, allocated)| (Some(r.clone()), total.saturating_sub(allocated)))
            .collect();
        pools.push((
            None,
            books
                .unreserved_total
                .saturating_sub(&books.unreserved_allocated),
        ));
        let free = pools.iter().fold(Resources::ZERO, |sum, (_, r)| sum + *r);
        need.fits_in(&free).then(|| draw(&mut pools, need))
    }

    /// What was adopted and refused since the last call, for the log, the
    /// metrics and the audit log.
    pub fn take_adoptions(&mut self) -> Adoptions {
        std::mem::take(&mut self.adoptions)
    }
}
