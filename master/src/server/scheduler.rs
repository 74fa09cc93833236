//! The `Scheduler` service: frameworks subscribe and make calls.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use wasmos_proto::v1;
use wasmos_proto::v1::scheduler_server::Scheduler;

use super::actor::Command;
use super::audit::{self, Actor, Audit};
use super::event_queue::{self, EventReceiver};
use super::handle::{ActorHandle, status_of};
use super::trust::{Trust, principal_of};
use crate::access::Principal;
use crate::core::{ConnectionId, Input, Reply};
use crate::ids::FrameworkId;

pub struct SchedulerService {
    pub actor: ActorHandle,
    /// `None` on an insecure master.
    pub trust: Option<Arc<Trust>>,
    pub audit: Arc<Audit>,
    /// The most bytes of events queued for one framework.
    pub max_stream_bytes: usize,
}

impl SchedulerService {
    /// Feeds `input` to the core as `who`; refusals (and, for `audited`
    /// calls, every outcome) go to the audit log.
    async fn call(
        &self,
        who: &Principal,
        name: &str,
        args: serde_json::Value,
        audited: bool,
        input: Input,
    ) -> Result<Reply, Status> {
        let result = self.actor.call_as(who, input).await;
        if audited {
            self.audit
                .record(Actor::Principal(who), name, args, &result);
        } else {
            self.audit.refusal(
                Actor::Principal(who),
                name,
                serde_json::Value::Null,
                &result,
            );
        }
        result
    }
}

/// A framework's event stream as tonic sends it. The actor holds the only
/// sender, so the stream ends as soon as the actor lets go of it (teardown,
/// a full stream, a re-subscription elsewhere); and when tonic drops it (the
/// framework went away), the actor hears of it.
pub struct EventStream {
    events: EventReceiver,
    gone: Option<(ActorHandle, FrameworkId, ConnectionId)>,
    /// Resolves when the token that opened the stream is revoked or
    /// expires (with why): the stream then ends with UNAUTHENTICATED.
    credential_ended: Option<Pin<Box<dyn Future<Output = String> + Send>>>,
}

impl Stream for EventStream {
    type Item = Result<v1::Event, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(ended) = self.credential_ended.as_mut()
            && let Poll::Ready(why) = ended.as_mut().poll(cx)
        {
            // Ends here: tonic sends this status and drops the stream,
            // which tells the actor the framework went away.
            self.credential_ended = None;
            self.events.close();
            return Poll::Ready(Some(Err(Status::unauthenticated(format!(
                "{why}; the stream is closed"
            )))));
        }
        self.events.poll_recv(cx)
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
        let who = principal_of(&request)?;
        let info = request
            .into_inner()
            .framework
            .ok_or_else(|| Status::invalid_argument("subscribe needs a `framework`"))?;
        let args = serde_json::json!({
            "framework_id": info.framework_id,
            "name": info.name,
            "role": info.role,
        });
        let (events, stream) = event_queue::queue(self.max_stream_bytes);
        let (reply, answer) = oneshot::channel();
        self.actor
            .send(Command::Subscribe {
                who: who.clone(),
                info,
                events,
                reply,
            })
            .await?;
        let answered = answer
            .await
            .map_err(|_| Status::unavailable("the master is shutting down"))
            .and_then(|r| r.map_err(status_of));
        self.audit.record(
            Actor::Principal(&who),
            "Scheduler.Subscribe",
            args,
            &answered,
        );
        let (framework, connection) = answered?;
        tracing::info!(%framework, principal = %who.name, "framework subscribed");
        let credential_ended = self.trust.as_ref().map(|trust| {
            Box::pin(trust.token_ended(&who.accessor))
                as Pin<Box<dyn Future<Output = String> + Send>>
        });
        Ok(Response::new(EventStream {
            events: stream,
            gone: Some((self.actor.clone(), framework, connection)),
            credential_ended,
        }))
    }

    async fn accept(
        &self,
        request: Request<v1::AcceptRequest>,
    ) -> Result<Response<v1::AcceptResponse>, Status> {
        let who = principal_of(&request)?;
        // Whose artifacts a task may run, and whether its inputs fit its
        // disk, the core checks in the turn that launches it.
        let input = Input::Accept(request.into_inner());
        match self
            .call(
                &who,
                "Scheduler.Accept",
                serde_json::Value::Null,
                false,
                input,
            )
            .await?
        {
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
        // Moved, not cloned: a call may be megabytes of ids.
        let who = principal_of(&request)?;
        let input = Input::Decline(request.into_inner());
        self.call(
            &who,
            "Scheduler.Decline",
            serde_json::Value::Null,
            false,
            input,
        )
        .await?;
        Ok(Response::new(v1::DeclineResponse {}))
    }

    async fn kill(
        &self,
        request: Request<v1::KillRequest>,
    ) -> Result<Response<v1::KillResponse>, Status> {
        let who = principal_of(&request)?;
        let r = request.into_inner();
        let args = serde_json::json!({
            "framework_id": r.framework_id,
            "task_ids": audit::some_ids(&r.task_ids),
            "count": r.task_ids.len(),
        });
        self.call(&who, "Scheduler.Kill", args, true, Input::Kill(r))
            .await?;
        Ok(Response::new(v1::KillResponse {}))
    }

    async fn acknowledge(
        &self,
        request: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::AcknowledgeResponse>, Status> {
        // Moved, not cloned: a call may be megabytes of ids.
        let who = principal_of(&request)?;
        let input = Input::Acknowledge(request.into_inner());
        self.call(
            &who,
            "Scheduler.Acknowledge",
            serde_json::Value::Null,
            false,
            input,
        )
        .await?;
        Ok(Response::new(v1::AcknowledgeResponse {}))
    }

    async fn reconcile(
        &self,
        request: Request<v1::ReconcileRequest>,
    ) -> Result<Response<v1::ReconcileResponse>, Status> {
        // Moved, not cloned: a call may be megabytes of ids.
        let who = principal_of(&request)?;
        let input = Input::Reconcile(request.into_inner());
        self.call(
            &who,
            "Scheduler.Reconcile",
            serde_json::Value::Null,
            false,
            input,
        )
        .await?;
        Ok(Response::new(v1::ReconcileResponse {}))
    }

    async fn revive(
        &self,
        request: Request<v1::ReviveRequest>,
    ) -> Result<Response<v1::ReviveResponse>, Status> {
        // Moved, not cloned: a call may be megabytes of ids.
        let who = principal_of(&request)?;
        let input = Input::Revive(request.into_inner());
        self.call(
            &who,
            "Scheduler.Revive",
            serde_json::Value::Null,
            false,
            input,
        )
        .await?;
        Ok(Response::new(v1::ReviveResponse {}))
    }

    async fn set_demand(
        &self,
        request: Request<v1::SetDemandRequest>,
    ) -> Result<Response<v1::SetDemandResponse>, Status> {
        let who = principal_of(&request)?;
        let input = Input::SetDemand(request.into_inner());
        self.call(
            &who,
            "Scheduler.SetDemand",
            serde_json::Value::Null,
            false,
            input,
        )
        .await?;
        Ok(Response::new(v1::SetDemandResponse {}))
    }

    async fn suppress(
        &self,
        request: Request<v1::SuppressRequest>,
    ) -> Result<Response<v1::SuppressResponse>, Status> {
        // Moved, not cloned: a call may be megabytes of ids.
        let who = principal_of(&request)?;
        let input = Input::Suppress(request.into_inner());
        self.call(
            &who,
            "Scheduler.Suppress",
            serde_json::Value::Null,
            false,
            input,
        )
        .await?;
        Ok(Response::new(v1::SuppressResponse {}))
    }

    async fn teardown(
        &self,
        request: Request<v1::TeardownRequest>,
    ) -> Result<Response<v1::TeardownResponse>, Status> {
        let who = principal_of(&request)?;
        let r = request.into_inner();
        let args = serde_json::json!({"framework_id": r.framework_id});
        self.call(&who, "Scheduler.Teardown", args, true, Input::Teardown(r))
            .await?;
        Ok(Response::new(v1::TeardownResponse {}))
    }
}
