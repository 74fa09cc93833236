//! Where the parts of a running master outside the core write the registry
//! (the trust tables): straight into it while the
//! master starts, then in the actor's commits, so that every write of a
//! running master goes through one commit, behind one fence (on etcd).

use std::sync::{Arc, OnceLock};

use super::actor::Command;
use super::handle::ActorHandle;
use crate::store::{Store, StoreError, Write};

/// A registry writer that switches to the actor's commits once, for every
/// clone at once: no copy made before the switch keeps writing around the
/// actor.
#[derive(Clone)]
pub struct RegistryWriter(Arc<Inner>);

struct Inner {
    registry: Arc<dyn Store>,
    actor: OnceLock<ActorHandle>,
}

impl RegistryWriter {
    /// Writes straight into `registry` until [`RegistryWriter::write_through`].
    pub fn new(registry: Arc<dyn Store>) -> RegistryWriter {
        RegistryWriter(Arc::new(Inner {
            registry,
            actor: OnceLock::new(),
        }))
    }

    /// From now on, writes join the commits of `actor` (the first call
    /// decides; a master has one actor).
    pub fn write_through(&self, actor: ActorHandle) {
        let _ = self.0.actor.set(actor);
    }

    /// Writes `writes`; returns once they are durable.
    pub async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        match self.0.actor.get() {
            None => {
                let registry = self.0.registry.clone();
                tokio::task::spawn_blocking(move || registry.commit(&writes))
                    .await
                    .map_err(|e| StoreError::Io(format!("the registry's writer failed: {e}")))?
            }
            Some(actor) => {
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
