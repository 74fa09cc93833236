//! State shared by the [`Executor`](super::Executor) handle and its
//! tasks: the configuration, the engine, the module cache, the disk monitor
//! and the sandboxes' write-behind queue, and how a launch's module is
//! found ([`ModuleSource`]) and loaded.

use std::sync::Arc;

use super::artifacts::{digest_of, is_digest};
use super::cache::{Compiled, LoadError, ModuleCache};
use super::config::ExecutorConfig;
use super::disk::DiskMonitor;
use super::engine::TaskEngine;
use crate::sandbox::persist::PersistQueue;

/// Where the module of a launch comes from.
#[derive(Debug, Clone)]
pub enum ModuleSource {
    /// These bytes (`.wasm` or `.wat`). If the spec names an artifact, the
    /// bytes must have that digest.
    Bytes(Arc<[u8]>),
    /// Fetch `spec.artifact` from the configured
    /// [`ArtifactSource`](super::ArtifactSource) (unless
    /// the compiled module is already cached).
    Artifact,
}

/// State shared by the executor handle and its tasks.
pub struct Shared {
    pub(super) config: ExecutorConfig,
    pub(super) engine: Arc<TaskEngine>,
    pub(super) cache: ModuleCache,
    pub(super) disk: DiskMonitor,
    /// `<work_dir>/sandboxes`, open: sandboxes are created relative to it.
    pub(super) sandboxes: Arc<std::fs::File>,
    /// Where ended tasks' files go to be written.
    pub(super) persist: PersistQueue,
}

impl Shared {
    /// The compiled module for a launch.
    pub(super) async fn load_module(
        &self,
        artifact: &str,
        source: ModuleSource,
    ) -> Result<Arc<Compiled>, LoadError> {
        match source {
            ModuleSource::Bytes(bytes) => {
                let digest = digest_of(&bytes);
                if !artifact.is_empty() && artifact != digest {
                    return Err(LoadError::Unavailable(format!(
                        "module bytes have sha256 {digest}, but the task names artifact {artifact}"
                    )));
                }
                self.cache
                    .get(&digest, async move { Ok(bytes.to_vec()) })
                    .await
            }
            ModuleSource::Artifact => {
                if !is_digest(artifact) {
                    return Err(LoadError::Unavailable(format!(
                        "task names artifact `{artifact}`, which is not a sha256 digest"
                    )));
                }
                self.cache
                    .get(artifact, async {
                        self.fetch(artifact).await.map_err(LoadError::Unavailable)
                    })
                    .await
            }
        }
    }

    async fn fetch(&self, digest: &str) -> Result<Vec<u8>, String> {
        let source = self
            .config
            .artifacts
            .as_ref()
            .ok_or_else(|| format!("no artifact source is configured to fetch {digest}"))?;
        source
            .fetch(digest)
            .await
            .map_err(|e| format!("cannot fetch artifact {digest}: {e}"))
    }
}
