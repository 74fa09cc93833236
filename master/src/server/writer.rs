//! Where the parts of a running master outside the core write the registry
//! (the artifact index, the trust tables): straight into it while the
//! master starts, then in the actor's commits, so that every write of a
//! running master goes through one commit, behind one fence (on etcd).

use std::sync::Arc;

use super::actor::Command;
use super::handle::ActorHandle;
use crate::store::{Store, StoreError, Write};

#[derive(Clone)]
pub enum RegistryWriter {
    /// While the master starts: the registry itself.
    Registry(Arc<dyn Store>),
    /// Once the actor runs: joined to its commits.
    Actor(ActorHandle),
}

impl RegistryWriter {
    /// Writes `writes`; returns once they are durable.
    pub async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        match self {
            RegistryWriter::Registry(registry) => {
                let registry = registry.clone();
                tokio::task::spawn_blocking(move || registry.commit(&writes))
                    .await
                    .map_err(|e| StoreError::Io(format!("the registry's writer failed: {e}")))?
            }
            RegistryWriter::Actor(actor) => {
                let stopped =
                    || StoreError::Io("the master stopped before the write was durable".into());
                let (reply, durable) = tokio::sync::oneshot::channel();
                actor
                    .send(Command::Persist { writes, reply })
                    .await
                    .map_err(|_| stopped())?;
                durable.await.map_err(|_| stopped())
            }
        }
    }
}
