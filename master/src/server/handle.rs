//! A cheap, cloneable way for gRPC and HTTP handlers to talk to the actor.

use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use super::actor::Command;
use super::metrics::Metrics;
use crate::access::Principal;
use crate::core::{Core, CoreError, Input, Reply};

#[derive(Clone)]
pub struct ActorHandle {
    commands: mpsc::Sender<Command>,
}

impl ActorHandle {
    pub fn new(commands: mpsc::Sender<Command>) -> ActorHandle {
        ActorHandle { commands }
    }

    /// Sends a command; fails only when the master is shutting down.
    pub async fn send(&self, command: Command) -> Result<(), Status> {
        self.commands
            .send(command)
            .await
            .map_err(|_| Status::unavailable("the master is shutting down"))
    }

    /// Sends a command from code that cannot wait (a `Drop`): at once if
    /// the queue has room, else from a task of its own.
    pub fn send_soon(&self, command: Command) {
        use tokio::sync::mpsc::error::TrySendError;
        match self.commands.try_send(command) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(command)) => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let commands = self.commands.clone();
                    runtime.spawn(async move {
                        let _ = commands.send(command).await;
                    });
                }
            }
        }
    }

    /// Feeds one input to the core and returns its reply as a gRPC result.
    /// For inputs the master makes itself or already authorized.
    pub async fn call(&self, input: Input) -> Result<Reply, Status> {
        self.call_checked(None, input).await
    }

    /// [`ActorHandle::call`] for `who`: the core refuses what it may not do
    /// (see `core/access.rs`), in the same turn that would apply it.
    pub async fn call_as(&self, who: &Principal, input: Input) -> Result<Reply, Status> {
        self.call_checked(Some(who.clone()), input).await
    }

    async fn call_checked(&self, who: Option<Principal>, input: Input) -> Result<Reply, Status> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Call { input, who, reply }).await?;
        answer
            .await
            .map_err(|_| Status::unavailable("the master is shutting down"))?
            .map_err(status_of)
    }

    /// Reads the core.
    pub async fn query<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Core, &Metrics) -> T + Send + 'static,
    ) -> Result<T, Status> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Query(Box::new(move |core, metrics| {
            let _ = reply.send(read(core, metrics));
        })))
        .await?;
        answer
            .await
            .map_err(|_| Status::unavailable("the master is shutting down"))
    }
}

/// The gRPC status for a refused call: the core's message, as it is.
pub fn status_of(error: CoreError) -> Status {
    let message = error.to_string();
    match error {
        CoreError::UnknownFramework(_)
        | CoreError::UnknownOffer(_)
        | CoreError::UnknownTask(_)
        | CoreError::UnknownAgent(_)
        | CoreError::NotFound(_) => Status::not_found(message),
        CoreError::Unavailable(_) => Status::unavailable(message),
        CoreError::ForeignOffer { .. }
        | CoreError::ForeignTask { .. }
        | CoreError::PermissionDenied(_) => Status::permission_denied(message),
        CoreError::DuplicateTask(_) => Status::already_exists(message),
        CoreError::Exhausted(_) => Status::resource_exhausted(message),
        // The framework's packing was off, not its request: a distinct code
        // lets it tell the two apart.
        CoreError::InsufficientResources { .. } => Status::failed_precondition(message),
        _ => Status::invalid_argument(message),
    }
}
