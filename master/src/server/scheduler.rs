//! The `Scheduler` service: frameworks subscribe and make calls.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use wasmos_proto::v1;
use wasmos_proto::v1::scheduler_server::Scheduler;

use super::actor::{Command, STREAM_BUFFER};
use super::handle::{ActorHandle, status_of};
use crate::core::{ConnectionId, Input, Reply};
use crate::ids::FrameworkId;

pub struct SchedulerService {
    pub actor: ActorHandle,
}

/// A framework's event stream as tonic sends it. The actor holds the only
/// sender, so the stream ends as soon as the actor lets go of it (teardown,
/// a full stream, a re-subscription elsewhere); and when tonic drops it (the
/// framework went away), the actor hears of it.
pub struct EventStream {
    events: ReceiverStream<Result<v1::Event, Status>>,
    gone: Option<(ActorHandle, FrameworkId, ConnectionId)>,
}

impl Stream for EventStream {
    type Item = Result<v1::Event, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.events).poll_next(cx)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        if let Some((actor, framework, connection)) = self.gone.take() {
            tracing::info!(%framework, "framework stream closed");
            actor.send_soon(Command::FrameworkGone {
                framework,
                connection,
            });
        }
    }
}

#[tonic::async_trait]
impl Scheduler for SchedulerService {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let info = request
            .into_inner()
            .framework
            .ok_or_else(|| Status::invalid_argument("subscribe needs a `framework`"))?;
        let (events, stream) = mpsc::channel(STREAM_BUFFER);
        let (reply, answer) = oneshot::channel();
        self.actor
            .send(Command::Subscribe {
                info,
                events,
                reply,
            })
            .await?;
        let (framework, connection) = answer
            .await
            .map_err(|_| Status::unavailable("the master is shutting down"))?
            .map_err(status_of)?;
        tracing::info!(%framework, "framework subscribed");
        Ok(Response::new(EventStream {
            events: ReceiverStream::new(stream),
            gone: Some((self.actor.clone(), framework, connection)),
        }))
    }

    async fn accept(
        &self,
        request: Request<v1::AcceptRequest>,
    ) -> Result<Response<v1::AcceptResponse>, Status> {
        match self.actor.call(Input::Accept(request.into_inner())).await? {
            Reply::Launched(ids) => Ok(Response::new(v1::AcceptResponse {
                task_ids: ids.into_iter().map(|id| id.to_string()).collect(),
            })),
            _ => Ok(Response::new(v1::AcceptResponse::default())),
        }
    }

    async fn decline(
        &self,
        request: Request<v1::DeclineRequest>,
    ) -> Result<Response<v1::DeclineResponse>, Status> {
        self.actor
            .call(Input::Decline(request.into_inner()))
            .await?;
        Ok(Response::new(v1::DeclineResponse {}))
    }

    async fn kill(
        &self,
        request: Request<v1::KillRequest>,
    ) -> Result<Response<v1::KillResponse>, Status> {
        self.actor.call(Input::Kill(request.into_inner())).await?;
        Ok(Response::new(v1::KillResponse {}))
    }

    async fn acknowledge(
        &self,
        request: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::AcknowledgeResponse>, Status> {
        self.actor
            .call(Input::Acknowledge(request.into_inner()))
            .await?;
        Ok(Response::new(v1::AcknowledgeResponse {}))
    }

    async fn reconcile(
        &self,
        request: Request<v1::ReconcileRequest>,
    ) -> Result<Response<v1::ReconcileResponse>, Status> {
        self.actor
            .call(Input::Reconcile(request.into_inner()))
            .await?;
        Ok(Response::new(v1::ReconcileResponse {}))
    }

    async fn revive(
        &self,
        request: Request<v1::ReviveRequest>,
    ) -> Result<Response<v1::ReviveResponse>, Status> {
        self.actor.call(Input::Revive(request.into_inner())).await?;
        Ok(Response::new(v1::ReviveResponse {}))
    }

    async fn suppress(
        &self,
        request: Request<v1::SuppressRequest>,
    ) -> Result<Response<v1::SuppressResponse>, Status> {
        self.actor
            .call(Input::Suppress(request.into_inner()))
            .await?;
        Ok(Response::new(v1::SuppressResponse {}))
    }

    async fn teardown(
        &self,
        request: Request<v1::TeardownRequest>,
    ) -> Result<Response<v1::TeardownResponse>, Status> {
        self.actor
            .call(Input::Teardown(request.into_inner()))
            .await?;
        Ok(Response::new(v1::TeardownResponse {}))
    }
}
