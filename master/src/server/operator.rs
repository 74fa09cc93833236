//! The `Operator` service: what is where, roles, drains, sandbox reads.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tonic::{Request, Response, Status};
use wasmos_proto::v1;
use wasmos_proto::v1::operator_server::Operator;

mod lists;

use super::actor::Command;
use super::audit::{Actor, Audit};
use super::handle::ActorHandle;
use super::trust::{Trust, principal_of};
use crate::access::Principal;
use crate::allocator::FairShares;
use crate::core::{Core, Input};
use crate::ids::Role;
use crate::resources::Resources;

/// How long a sandbox read may take through the agent's stream.
const SANDBOX_READ_TIMEOUT: Duration = Duration::from_secs(10);

pub struct OperatorService {
    pub actor: ActorHandle,
    /// `None` on an insecure master.
    pub trust: Option<Arc<Trust>>,
    pub audit: Arc<Audit>,
    /// This master and the others, for `ListMasters`.
    pub masters: super::masters::Masters,
}

impl OperatorService {
    fn trust(&self) -> Result<&Trust, Status> {
        self.trust
            .as_deref()
            .ok_or_else(super::agent_link::insecure)
    }

    /// Runs an admin-only change as the request's principal, and audits it.
    async fn admin_change<T, R, F>(
        &self,
        request: &Request<T>,
        call: &str,
        what: &str,
        args: serde_json::Value,
        change: F,
    ) -> Result<R, Status>
    where
        F: std::future::Future<Output = Result<R, Status>>,
    {
        let who = principal_of(request)?;
        let result = match who.require_admin(what) {
            Ok(()) => change.await,
            Err(denied) => Err(Status::permission_denied(denied.0)),
        };
        self.audit
            .record(Actor::Principal(&who), call, args, &result);
        result
    }

    /// Feeds `input` to the core as `who` and audits the outcome (the core
    /// checks what `who` may do).
    async fn audited_call(
        &self,
        who: &Principal,
        call: &str,
        args: serde_json::Value,
        input: Input,
    ) -> Result<crate::core::Reply, Status> {
        let result = self.actor.call_as(who, input).await;
        self.audit
            .record(Actor::Principal(who), call, args, &result);
        result
    }

    /// Refuses a read to principals that may not see everything; audits
    /// the refusal.
    fn require_sees_all<T>(&self, request: &Request<T>, call: &str) -> Result<Principal, Status> {
        let who = principal_of(request)?;
        if who.sees_all() {
            return Ok(who);
        }
        let refused = Err(Status::permission_denied(format!(
            "{call} needs an admin or read-only token; {} is neither",
            who.describe()
        )));
        self.audit.refusal(
            Actor::Principal(&who),
            call,
            serde_json::Value::Null,
            &refused,
        );
        refused
    }
}

fn wire(r: &Resources) -> Option<v1::Resources> {
    Some(r.into())
}

fn role_info(core: &Core, name: &Role, fair: &FairShares) -> Option<v1::RoleInfo> {
    core.allocator()
        .roles()
        .into_iter()
        .find(|r| &r.name == name)
        .map(|r| v1::RoleInfo {
            fair_share: fair.roles.get(&r.name).copied().unwrap_or(0.0),
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
        let who = principal_of(&request)?;
        let request = request.into_inner();
        let answer = self
            .actor
            .query(move |core, _| lists::tasks(core, &who, request))
            .await?;
        Ok(Response::new(answer))
    }

    async fn list_agents(
        &self,
        request: Request<v1::ListAgentsRequest>,
    ) -> Result<Response<v1::ListAgentsResponse>, Status> {
        // Capacity is no secret among the cluster's users: any principal
        // may list agents (and roles), to size its jobs.
        let request = request.into_inner();
        let answer = self
            .actor
            .query(move |core, _| lists::agents(core, request))
            .await?;
        Ok(Response::new(answer))
    }

    async fn list_frameworks(
        &self,
        request: Request<v1::ListFrameworksRequest>,
    ) -> Result<Response<v1::ListFrameworksResponse>, Status> {
        let who = principal_of(&request)?;
        let request = request.into_inner();
        let answer = self
            .actor
            .query(move |core, _| lists::frameworks(core, &who, request))
            .await?;
        Ok(Response::new(answer))
    }

    async fn list_roles(
        &self,
        _request: Request<v1::ListRolesRequest>,
    ) -> Result<Response<v1::ListRolesResponse>, Status> {
        let roles = self
            .actor
            .query(|core, _| {
                let fair = core.allocator().fair_shares();
                core.allocator()
                    .roles()
                    .iter()
                    .filter_map(|r| role_info(core, &r.name, &fair))
                    .collect()
            })
            .await?;
        Ok(Response::new(v1::ListRolesResponse { roles }))
    }

    async fn update_role(
        &self,
        request: Request<v1::UpdateRoleRequest>,
    ) -> Result<Response<v1::RoleInfo>, Status> {
        let r = request.get_ref().clone();
        let args = serde_json::json!({
            "role": r.role,
            "weight": r.weight,
            "quota": r.quota.as_ref().map(|q| Resources::try_from(q).map(|q| q.to_string()).unwrap_or_default()),
        });
        let who = principal_of(&request)?;
        let change = async {
            let quota = r
                .quota
                .as_ref()
                .map(Resources::try_from)
                .transpose()
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let role = r.role.clone();
            self.actor
                .call_as(
                    &who,
                    Input::UpdateRole {
                        role: r.role,
                        weight: r.weight,
                        quota,
                    },
                )
                .await?;
            self.actor
                .query(move |core, _| {
                    let fair = core.allocator().fair_shares();
                    role_info(core, &Role::from(role.as_str()), &fair)
                })
                .await?
                .ok_or_else(|| Status::internal("role vanished after update"))
        };
        let result = change.await;
        self.audit
            .record(Actor::Principal(&who), "Operator.UpdateRole", args, &result);
        result.map(Response::new)
    }

    async fn create_token(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let r = request.get_ref().clone();
        let args = serde_json::json!({
            "kind": format!("{:?}", r.kind()),
            "principal": r.principal,
            "roles": r.roles,
            "ttl_ms": r.ttl_ms,
            "uses": r.uses,
        });
        let others = if r.kind() == v1::TokenKind::AgentJoin {
            self.masters.others_host_port().await
        } else {
            Vec::new()
        };
        let created = self
            .admin_change(
                &request,
                "Operator.CreateToken",
                "making a token",
                args,
                async { self.trust()?.create_token(r, &others).await },
            )
            .await?;
        // The secret is in the answer only; the audit line names the accessor.
        Ok(Response::new(created))
    }

    async fn list_tokens(
        &self,
        request: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        self.require_sees_all(&request, "Operator.ListTokens")?;
        Ok(Response::new(v1::ListTokensResponse {
            tokens: self.trust()?.list_tokens(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        let accessor = request.get_ref().accessor.clone();
        let args = serde_json::json!({"accessor": accessor});
        self.admin_change(
            &request,
            "Operator.RevokeToken",
            "revoking a token",
            args,
            async { self.trust()?.revoke_token(&accessor).await },
        )
        .await?;
        Ok(Response::new(v1::RevokeTokenResponse {}))
    }

    async fn who_am_i(
        &self,
        request: Request<v1::WhoAmIRequest>,
    ) -> Result<Response<v1::WhoAmIResponse>, Status> {
        let who = principal_of(&request)?;
        let token = self.trust.as_ref().and_then(|t| {
            t.list_tokens()
                .into_iter()
                .find(|token| token.accessor == who.accessor)
        });
        let (kind, roles) = match &who.grant {
            crate::access::Grant::Admin => (v1::TokenKind::Admin, Vec::new()),
            crate::access::Grant::ReadOnly => (v1::TokenKind::ReadOnly, Vec::new()),
            crate::access::Grant::Roles(roles) => (v1::TokenKind::Principal, roles.clone()),
        };
        Ok(Response::new(v1::WhoAmIResponse {
            may: who.abilities(),
            principal: who.name,
            kind: kind as i32,
            roles,
            accessor: who.accessor,
            expires_ms: token.map_or(0, |t| t.expires_ms),
        }))
    }

    async fn list_masters(
        &self,
        request: Request<v1::ListMastersRequest>,
    ) -> Result<Response<v1::ListMastersResponse>, Status> {
        principal_of(&request)?;
        let masters = self.masters.list().await?;
        Ok(Response::new(v1::ListMastersResponse { masters }))
    }

    async fn read_audit(
        &self,
        request: Request<v1::ReadAuditRequest>,
    ) -> Result<Response<v1::ReadAuditResponse>, Status> {
        self.require_sees_all(&request, "Operator.ReadAudit")?;
        let r = request.into_inner();
        let limit = if r.limit == 0 { 1000 } else { r.limit as usize };
        let audit = self.audit.clone();
        let read = tokio::task::spawn_blocking(move || audit.read(r.since_ms, limit))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(format!("cannot read the audit log: {e}")))?;
        Ok(Response::new(v1::ReadAuditResponse {
            entries: read.entries,
            dropped_until_ms: read.dropped_until_ms,
            oldest_kept_ms: read.oldest_kept_ms,
            leading_since_ms: self.masters.led_after_others_since_ms(),
        }))
    }

    async fn revoke_agent(
        &self,
        request: Request<v1::RevokeAgentRequest>,
    ) -> Result<Response<v1::RevokeAgentResponse>, Status> {
        let agent_id = request.get_ref().agent_id.clone();
        let args = serde_json::json!({"agent_id": agent_id});
        let tasks_lost = self
            .admin_change(
                &request,
                "Operator.RevokeAgent",
                "revoking an agent",
                args,
                async {
                    let agent = crate::ids::AgentId::from(agent_id.as_str());
                    let tasks_lost = self
                        .actor
                        .query(move |core, _| {
                            core.agents()
                                .into_iter()
                                .find(|a| a.id == agent)
                                .map_or(0, |a| a.tasks as u32)
                        })
                        .await?;
                    // The core revokes the identity and removes the agent
                    // (its tasks `LOST`) in one turn: it cannot attach again.
                    self.trust()?.revoke(&agent_id).await?;
                    Ok(tasks_lost)
                },
            )
            .await?;
        Ok(Response::new(v1::RevokeAgentResponse { tasks_lost }))
    }

    async fn drain_agent(
        &self,
        request: Request<v1::DrainAgentRequest>,
    ) -> Result<Response<v1::DrainAgentResponse>, Status> {
        let agent_id = request.get_ref().agent_id.clone();
        let args = serde_json::json!({"agent_id": agent_id});
        let who = principal_of(&request)?;
        let input = Input::DrainAgent {
            agent: agent_id.as_str().into(),
        };
        self.audited_call(&who, "Operator.DrainAgent", args, input)
            .await?;
        Ok(Response::new(v1::DrainAgentResponse {}))
    }

    async fn undrain_agent(
        &self,
        request: Request<v1::UndrainAgentRequest>,
    ) -> Result<Response<v1::UndrainAgentResponse>, Status> {
        let agent_id = request.get_ref().agent_id.clone();
        let args = serde_json::json!({"agent_id": agent_id});
        let who = principal_of(&request)?;
        let input = Input::UndrainAgent {
            agent: agent_id.as_str().into(),
        };
        self.audited_call(&who, "Operator.UndrainAgent", args, input)
            .await?;
        Ok(Response::new(v1::UndrainAgentResponse {}))
    }

    async fn kill_tasks(
        &self,
        request: Request<v1::OperatorKillRequest>,
    ) -> Result<Response<v1::OperatorKillResponse>, Status> {
        let who = principal_of(&request)?;
        let task_ids = request.into_inner().task_ids;
        let args = serde_json::json!({
            "task_ids": super::audit::some_ids(&task_ids),
            "count": task_ids.len(),
        });
        self.audited_call(
            &who,
            "Operator.KillTasks",
            args,
            Input::OperatorKill { task_ids },
        )
        .await?;
        Ok(Response::new(v1::OperatorKillResponse {}))
    }

    async fn read_sandbox(
        &self,
        request: Request<v1::ReadSandboxRequest>,
    ) -> Result<Response<v1::SandboxReadReply>, Status> {
        let who = principal_of(&request)?;
        let request = request.into_inner();
        // Every read is audited, allowed or not: reading a task's files is
        // reading what its owner wrote.
        let shown = |text: &str| {
            let mut text = text.to_owned();
            crate::limits::truncate(&mut text, 256);
            text
        };
        let args = serde_json::json!({
            "task_id": shown(&request.task_id),
            "agent_id": shown(&request.agent_id),
            "target": request.target().as_str_name(),
            "path": shown(&request.path),
        });
        let (reply, answer) = oneshot::channel();
        self.actor
            .send(Command::ReadSandbox {
                who: who.clone(),
                request,
                reply,
            })
            .await?;
        let reply = match tokio::time::timeout(SANDBOX_READ_TIMEOUT, answer).await {
            Err(_) => Err(Status::deadline_exceeded(
                "the agent did not answer the sandbox read in 10 s",
            )),
            Ok(answer) => answer
                .map_err(|_| Status::unavailable("the agent went away during the sandbox read"))
                .and_then(|reply| reply),
        }
        .and_then(|reply| {
            if reply.error.is_empty() {
                Ok(reply)
            } else {
                Err(Status::not_found(reply.error))
            }
        });
        self.audit
            .record(Actor::Principal(&who), "Operator.ReadSandbox", args, &reply);
        let reply = reply?;
        Ok(Response::new(reply))
    }
}
