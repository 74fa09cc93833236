//! The `AgentLink` service: each agent's one bidirectional stream.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use wasmos_proto::v1;
use wasmos_proto::v1::agent_link_server::AgentLink;
use wasmos_proto::v1::agent_message::Kind;

use super::actor::{Command, STREAM_BUFFER};
use super::audit::{Actor, Audit};
use super::handle::{ActorHandle, status_of};
use super::trust::Trust;
use crate::resources::Resources;

/// How long a new stream may take to send its `register` message.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

pub struct AgentLinkService {
    pub actor: ActorHandle,
    /// `None` on an insecure master: agents name their own ids.
    pub trust: Option<Arc<Trust>>,
    pub audit: Arc<Audit>,
    /// Told of each agent's connection: a certificate proved who it is, so
    /// no anonymous newcomer takes its place.
    pub connections: Arc<super::connections::Gatekeeper>,
}

#[tonic::async_trait]
impl AgentLink for AgentLinkService {
    type AttachStream = ReceiverStream<Result<v1::MasterMessage, Status>>;

    async fn attach(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let identity = match &self.trust {
            Some(trust) => Some(trust.agent_of(&request)?.ok_or_else(|| {
                Status::unauthenticated(
                    "agents attach with the certificate they got by joining: \
                     start the agent with --join <join string> (`wasmos token create --agent`)",
                )
            })?),
            None => None,
        };
        if let Some(peer) = request.remote_addr() {
            self.connections.vouch(peer);
        }
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.next())
            .await
            .map_err(|_| Status::deadline_exceeded("no register message within 10 s"))?
            .ok_or_else(|| Status::invalid_argument("stream ended before register"))??;
        let Some(Kind::Register(register)) = first.kind else {
            return Err(Status::invalid_argument(
                "the first message on an agent stream must be `register`",
            ));
        };
        let mut register = register;
        if let Some(identity) = identity {
            // The id is the certificate's, whatever the message says.
            let info = register.agent.get_or_insert_with(Default::default);
            info.agent_id = identity.agent_id.clone();
            if let Some(max) = identity.max_resources {
                let claimed = info
                    .resources
                    .as_ref()
                    .map(Resources::try_from)
                    .transpose()
                    .map_err(|e| Status::invalid_argument(format!("resources: {e}")))?
                    .unwrap_or(Resources::ZERO);
                if !claimed.fits_in(&max) {
                    return Err(Status::permission_denied(format!(
                        "agent {} advertises {claimed}, more than its join token allows ({max})",
                        identity.agent_id
                    )));
                }
            }
        }
        let (messages, stream) = mpsc::channel(STREAM_BUFFER);
        let (reply, answer) = oneshot::channel();
        self.actor
            .send(Command::AttachAgent {
                register,
                messages,
                reply,
            })
            .await?;
        let attached = answer
            .await
            .map_err(|_| Status::unavailable("the master is shutting down"))?
            .map_err(status_of)?;
        let (agent, connection) = (attached.agent, attached.connection);
        tracing::info!(%agent, "agent attached");
        let adopted = &attached.adoptions.adopted;
        if !adopted.is_empty() {
            tracing::info!(
                %agent,
                tasks = adopted.len(),
                first = %adopted[0],
                "adopted tasks launched before the master's last crash and never made durable"
            );
        }
        for refused in &attached.adoptions.refused {
            tracing::warn!(
                %agent,
                task = %refused.task,
                framework = %refused.framework,
                "the agent reported a task the master will not adopt; told to kill it: {}",
                refused.why
            );
            self.audit.record::<()>(
                Actor::Agent(agent.as_str()),
                "AgentLink.Attach",
                serde_json::json!({ "adopt_task": refused.task, "framework_id": refused.framework }),
                &Err(Status::permission_denied(refused.why.clone())),
            );
        }
        let actor = self.actor.clone();
        tokio::spawn(async move {
            loop {
                match inbound.next().await {
                    Some(Ok(v1::AgentMessage {
                        kind: Some(message),
                    })) => {
                        let command = Command::FromAgent {
                            agent: agent.clone(),
                            message,
                        };
                        if actor.send(command).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(status)) => {
                        tracing::info!(%agent, %status, "agent stream failed");
                        break;
                    }
                    None => break,
                }
            }
            tracing::info!(%agent, "agent stream closed");
            let _ = actor.send(Command::AgentGone { agent, connection }).await;
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn join(
        &self,
        request: Request<v1::JoinRequest>,
    ) -> Result<Response<v1::JoinResponse>, Status> {
        let trust = self.trust.as_ref().ok_or_else(insecure)?;
        // A join token is a credential: an address refused too often is
        // throttled as for any call without a valid one.
        let source = request.remote_addr().map(|a| a.ip());
        self.audit.throttle_source(source, "AgentLink.Join")?;
        let request = request.into_inner();
        let args = serde_json::json!({
            "hostname": request.hostname,
            // Never the token itself: only its public part, if it parses.
            "token_accessor": wasmos_tls::Secret::parse(&request.token).ok().map(|t| t.accessor),
        });
        let joined = trust.join(request).await;
        let who = match &joined {
            Ok(joined) => Actor::Agent(&joined.agent_id),
            Err(_) => Actor::Unknown(source),
        };
        self.audit.record(who, "AgentLink.Join", args, &joined);
        Ok(Response::new(joined?))
    }

    async fn renew(
        &self,
        request: Request<v1::RenewRequest>,
    ) -> Result<Response<v1::RenewResponse>, Status> {
        let trust = self.trust.as_ref().ok_or_else(insecure)?;
        let agent = trust
            .agent_of(&request)?
            .ok_or_else(|| Status::unauthenticated("renewal needs the agent's certificate"))?;
        Ok(Response::new(
            trust
                .renew(&agent.agent_id, &request.into_inner().csr_pem)
                .await?,
        ))
    }
}

/// The answer of an insecure master to calls about certificates and tokens.
pub fn insecure() -> Status {
    Status::failed_precondition(
        "this master runs with --insecure: it has no CA and issues no certificates or tokens",
    )
}
