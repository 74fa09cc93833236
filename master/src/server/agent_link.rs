//! The `AgentLink` service: each agent's one bidirectional stream.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use wasmos_proto::v1;
use wasmos_proto::v1::agent_link_server::AgentLink;
use wasmos_proto::v1::agent_message::Kind;

use super::actor::{Command, STREAM_BUFFER};
use super::handle::{ActorHandle, status_of};

/// How long a new stream may take to send its `register` message.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

pub struct AgentLinkService {
    pub actor: ActorHandle,
}

#[tonic::async_trait]
impl AgentLink for AgentLinkService {
    type AttachStream = ReceiverStream<Result<v1::MasterMessage, Status>>;

    async fn attach(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
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
        let (messages, stream) = mpsc::channel(STREAM_BUFFER);
        let (reply, answer) = oneshot::channel();
        self.actor
            .send(Command::AttachAgent {
                register,
                messages,
                reply,
            })
            .await?;
        let (agent, connection) = answer
            .await
            .map_err(|_| Status::unavailable("the master is shutting down"))?
            .map_err(status_of)?;
        tracing::info!(%agent, "agent attached");
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
}
