//! The `Operator` service: what is where, roles, drains, sandbox reads.

use std::time::Duration;

use tokio::sync::oneshot;
use tonic::{Request, Response, Status};
use wasmos_proto::v1;
use wasmos_proto::v1::operator_server::Operator;

use super::actor::Command;
use super::handle::ActorHandle;
use crate::core::{Core, Input};
use crate::ids::Role;
use crate::resources::Resources;

/// How long a sandbox read may take through the agent's stream.
const SANDBOX_READ_TIMEOUT: Duration = Duration::from_secs(10);

pub struct OperatorService {
    pub actor: ActorHandle,
    /// `None` on an insecure master.
    pub trust: Option<std::sync::Arc<super::trust::Trust>>,
}

fn wire(r: &Resources) -> Option<v1::Resources> {
    Some(r.into())
}

fn role_info(core: &Core, name: &Role) -> Option<v1::RoleInfo> {
    core.allocator()
        .roles()
        .into_iter()
        .find(|r| &r.name == name)
        .map(|r| v1::RoleInfo {
            name: r.name.to_string(),
            weight: r.weight,
            quota: wire(&r.quota),
            allocated: wire(&r.allocated),
            weighted_share: r.weighted_share,
            frameworks: r.frameworks,
        })
}

#[tonic::async_trait]
impl Operator for OperatorService {
    async fn list_tasks(
        &self,
        request: Request<v1::ListTasksRequest>,
    ) -> Result<Response<v1::ListTasksResponse>, Status> {
        let request = request.into_inner();
        let tasks = self
            .actor
            .query(move |core, _| {
                core.tasks()
                    .into_iter()
                    .filter(|t| {
                        request.task_ids.is_empty()
                            || request.task_ids.iter().any(|id| id == t.id.as_str())
                    })
                    .filter(|t| {
                        request.framework_id.is_empty()
                            || request.framework_id == t.framework.as_str()
                    })
                    .map(|t| v1::TaskInfo {
                        task_id: t.id.to_string(),
                        framework_id: t.framework.to_string(),
                        agent_id: t.agent.to_string(),
                        name: t.spec.name.clone(),
                        resources: wire(&t.resources),
                        status: Some(t.status),
                    })
                    .collect()
            })
            .await?;
        Ok(Response::new(v1::ListTasksResponse { tasks }))
    }

    async fn list_agents(
        &self,
        _request: Request<v1::ListAgentsRequest>,
    ) -> Result<Response<v1::ListAgentsResponse>, Status> {
        let agents = self
            .actor
            .query(|core, _| {
                core.agents()
                    .into_iter()
                    .map(|a| v1::AgentState {
                        info: core.agent_info(&a.id).cloned(),
                        used: wire(&a.used),
                        offered: wire(&a.offered),
                        connected: a.connected,
                        draining: a.draining,
                        tasks: a.tasks as u32,
                    })
                    .collect()
            })
            .await?;
        Ok(Response::new(v1::ListAgentsResponse { agents }))
    }

    async fn list_frameworks(
        &self,
        _request: Request<v1::ListFrameworksRequest>,
    ) -> Result<Response<v1::ListFrameworksResponse>, Status> {
        let frameworks = self
            .actor
            .query(|core, _| {
                core.frameworks()
                    .into_iter()
                    .map(|f| v1::FrameworkState {
                        info: Some(v1::FrameworkInfo {
                            framework_id: f.id.to_string(),
                            name: f.name,
                            role: f.role.to_string(),
                            ..Default::default()
                        }),
                        connected: f.connected,
                        suppressed: f.suppressed,
                        used: wire(&f.allocated.saturating_sub(&f.offered)),
                        offered: wire(&f.offered),
                        dominant_share: f.dominant_share,
                        active_tasks: f.active_tasks as u32,
                    })
                    .collect()
            })
            .await?;
        Ok(Response::new(v1::ListFrameworksResponse { frameworks }))
    }

    async fn list_roles(
        &self,
        _request: Request<v1::ListRolesRequest>,
    ) -> Result<Response<v1::ListRolesResponse>, Status> {
        let roles = self
            .actor
            .query(|core, _| {
                core.allocator()
                    .roles()
                    .iter()
                    .filter_map(|r| role_info(core, &r.name))
                    .collect()
            })
            .await?;
        Ok(Response::new(v1::ListRolesResponse { roles }))
    }

    async fn update_role(
        &self,
        request: Request<v1::UpdateRoleRequest>,
    ) -> Result<Response<v1::RoleInfo>, Status> {
        let request = request.into_inner();
        let quota = request
            .quota
            .as_ref()
            .map(Resources::try_from)
            .transpose()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let role = request.role.clone();
        self.actor
            .call(Input::UpdateRole {
                role: request.role,
                weight: request.weight,
                quota,
            })
            .await?;
        let info = self
            .actor
            .query(move |core, _| role_info(core, &Role::from(role.as_str())))
            .await?;
        info.map(Response::new)
            .ok_or_else(|| Status::internal("role vanished after update"))
    }

    async fn create_token(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let trust = self
            .trust
            .as_ref()
            .ok_or_else(super::agent_link::insecure)?;
        Ok(Response::new(
            trust.create_token(request.into_inner()).await?,
        ))
    }

    async fn revoke_agent(
        &self,
        request: Request<v1::RevokeAgentRequest>,
    ) -> Result<Response<v1::RevokeAgentResponse>, Status> {
        let trust = self
            .trust
            .as_ref()
            .ok_or_else(super::agent_link::insecure)?;
        let agent_id = request.into_inner().agent_id;
        // Revoked first: from here the agent cannot attach again, so the
        // removal below is final.
        trust.revoke(&agent_id).await?;
        let agent = crate::ids::AgentId::from(agent_id.as_str());
        let tasks_lost = {
            let agent = agent.clone();
            self.actor
                .query(move |core, _| {
                    core.agents()
                        .into_iter()
                        .find(|a| a.id == agent)
                        .map_or(0, |a| a.tasks as u32)
                })
                .await?
        };
        self.actor
            .call(Input::RemoveAgent {
                agent,
                why: "the agent's certificate was revoked".into(),
            })
            .await?;
        Ok(Response::new(v1::RevokeAgentResponse { tasks_lost }))
    }

    async fn drain_agent(
        &self,
        request: Request<v1::DrainAgentRequest>,
    ) -> Result<Response<v1::DrainAgentResponse>, Status> {
        let agent = request.into_inner().agent_id.as_str().into();
        self.actor.call(Input::DrainAgent { agent }).await?;
        Ok(Response::new(v1::DrainAgentResponse {}))
    }

    async fn kill_tasks(
        &self,
        request: Request<v1::OperatorKillRequest>,
    ) -> Result<Response<v1::OperatorKillResponse>, Status> {
        let task_ids = request.into_inner().task_ids;
        self.actor.call(Input::OperatorKill { task_ids }).await?;
        Ok(Response::new(v1::OperatorKillResponse {}))
    }

    async fn read_sandbox(
        &self,
        request: Request<v1::ReadSandboxRequest>,
    ) -> Result<Response<v1::SandboxReadReply>, Status> {
        let (reply, answer) = oneshot::channel();
        self.actor
            .send(Command::ReadSandbox {
                request: request.into_inner(),
                reply,
            })
            .await?;
        let reply = tokio::time::timeout(SANDBOX_READ_TIMEOUT, answer)
            .await
            .map_err(|_| {
                Status::deadline_exceeded("the agent did not answer the sandbox read in 10 s")
            })?
            .map_err(|_| Status::unavailable("the agent went away during the sandbox read"))??;
        if !reply.error.is_empty() {
            return Err(Status::not_found(reply.error));
        }
        Ok(Response::new(reply))
    }
}
