//! Which inputs a principal may make (the rules are in [`crate::access`]).
//!
//! Checked against the core's own state before the input is applied, in the
//! same actor turn, so ownership cannot change between check and use.

use wasmos_proto::v1;

use super::{Core, CoreError, Input};
use crate::access::{Denied, Principal};
use crate::ids::{DEFAULT_ROLE, FrameworkId, TaskId};
use crate::sandbox_read::{self, Checked, Listed, Refused};

impl Core {
    /// Refuses `input` with [`CoreError::PermissionDenied`] unless `who`
    /// may make it. Inputs naming unknown frameworks or tasks pass: the
    /// core then answers them NOT_FOUND as for anyone.
    pub fn authorize(&self, who: &Principal, input: &Input) -> Result<(), CoreError> {
        let framework = |id: &str, what: &str| -> Result<(), Denied> {
            match self.frameworks.get(&FrameworkId::from(id)) {
                Some(fw) => who.require_use(&format!("{what} framework {id}"), &fw.info.principal),
                None => who.require_writer(what),
            }
        };
        let checked = match input {
            Input::Subscribe {
                framework: info, ..
            } => {
                let role = if info.role.is_empty() {
                    DEFAULT_ROLE
                } else {
                    info.role.as_str()
                };
                who.require_role(role).and_then(|()| {
                    if info.framework_id.is_empty() {
                        Ok(())
                    } else {
                        framework(&info.framework_id, "re-subscribing")
                    }
                })
            }
            Input::Accept(r) => framework(&r.framework_id, "accepting offers of").and_then(|()| {
                r.tasks
                    .iter()
                    .try_for_each(|task| self.require_task_artifacts(who, task))
            }),
            Input::Decline(r) => framework(&r.framework_id, "declining offers of"),
            Input::Kill(r) => framework(&r.framework_id, "killing tasks of"),
            Input::Acknowledge(r) => framework(&r.framework_id, "acknowledging updates of"),
            Input::Reconcile(r) => framework(&r.framework_id, "reconciling tasks of"),
            Input::Revive(r) => framework(&r.framework_id, "reviving"),
            Input::SetDemand(r) => framework(&r.framework_id, "declaring the demand of"),
            Input::Suppress(r) => framework(&r.framework_id, "suppressing"),
            Input::Teardown(r) => framework(&r.framework_id, "tearing down"),
            Input::OperatorKill { task_ids } => task_ids.iter().try_for_each(|id| {
                match self.task_owner(&TaskId::from(id.as_str())) {
                    Some(owner) => who.require_use(&format!("killing task {id}"), owner),
                    None => who.require_writer("killing tasks"),
                }
            }),
            Input::UpdateRole { .. } => who.require_admin("changing a role's weight or quota"),
            // Checked as it is handled, against the principal it names,
            // which must be the caller.
            Input::ReadSandbox { who: reader, .. } => {
                if reader == who {
                    Ok(())
                } else {
                    Err(Denied(format!(
                        "{} may not read a sandbox as {}",
                        who.describe(),
                        reader.describe()
                    )))
                }
            }
            Input::DrainAgent { .. } => who.require_admin("draining an agent"),
            Input::UndrainAgent { .. } => who.require_admin("undraining an agent"),
            Input::AgentRegister { .. }
            | Input::AgentHeartbeat { .. }
            | Input::AgentUpdates { .. }
            | Input::AgentSynced { .. }
            | Input::AgentDisconnected { .. }
            | Input::FrameworkDisconnected { .. }
            | Input::Tick
            | Input::StoreArtifact { .. }
            | Input::ArtifactUsed { .. }
            | Input::ExpireArtifacts { .. }
            | Input::CreateToken { .. }
            | Input::RevokeToken { .. }
            | Input::Join { .. }
            | Input::RenewIdentity { .. }
            | Input::RevokeIdentity { .. } => Err(Denied(
                "only agents and the master itself make this input".into(),
            )),
        };
        checked.map_err(|Denied(why)| CoreError::PermissionDenied(why))
    }

    /// Checks a read of a task's sandbox by `who` against the task as the
    /// core lists it (live or of a removed framework): the rules of
    /// [`sandbox_read::check`], applied to the core's own records in the
    /// turn that sends the read, so the owner cannot change in between.
    /// The answer says which agent to ask and what.
    pub fn authorize_sandbox_read(
        &self,
        who: &Principal,
        request: &v1::ReadSandboxRequest,
    ) -> Result<Checked, Refused> {
        let task = self
            .tasks
            .get(request.task_id.as_str())
            .or_else(|| self.graveyard.get(request.task_id.as_str()));
        let listed = task.map(|task| Listed {
            owner: &task.owner,
            agent: &task.agent,
        });
        sandbox_read::check(who, request, listed)
    }

    /// Checks a sandbox read ([`Core::authorize_sandbox_read`]) and says
    /// what to send to the agent that holds the sandbox, numbered so that
    /// its answer finds the caller. A task the master forgot (acknowledged
    /// before a restart, or archived past the cap) is read where the
    /// caller says it ran: the agent keeps its sandbox and answers from
    /// disk.
    pub(super) fn read_sandbox(
        &mut self,
        who: &Principal,
        request: v1::ReadSandboxRequest,
    ) -> Result<super::Reply, CoreError> {
        let checked =
            self.authorize_sandbox_read(who, &request)
                .map_err(|refused| match refused {
                    Refused::Invalid(why) => CoreError::InvalidArgument(why),
                    Refused::Denied(why) => CoreError::PermissionDenied(why),
                    Refused::Unknown(why) => CoreError::NotFound(why),
                })?;
        if self
            .agents
            .get(&checked.agent)
            .is_none_or(|a| a.connection.is_none())
        {
            return Err(CoreError::Unavailable(format!(
                "agent {} of task {} is not connected",
                checked.agent, checked.task_id
            )));
        }
        self.next_id += 1;
        Ok(super::Reply::SandboxRead {
            agent: checked.agent,
            read: v1::SandboxRead {
                request_id: self.next_id,
                task_id: checked.task_id,
                target: checked.target.into(),
                path: checked.path,
                offset: request.offset,
                length: request.length,
            },
        })
    }

    /// The principal owning a task the core lists (live or of a removed
    /// framework).
    pub fn task_owner(&self, id: &TaskId) -> Option<&str> {
        self.tasks
            .get(id)
            .or_else(|| self.graveyard.get(id))
            .map(|t| t.owner.as_str())
    }

    /// Does `agent` run (or hold the sandbox of) a task that needs the
    /// artifact `digest`, as its module or an input? Agents may fetch only
    /// those.
    pub fn agent_needs_artifact(&self, agent: &crate::ids::AgentId, digest: &str) -> bool {
        self.agents.get(agent).is_some_and(|a| {
            a.tasks.iter().filter_map(|id| self.tasks.get(id)).any(|t| {
                t.spec.artifact == digest || t.spec.inputs.iter().any(|i| i.artifact == digest)
            })
        })
    }
}
