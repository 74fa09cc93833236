//! Content-addressed artifact storage and the `Artifacts` service.
//!
//! An artifact is stored once, as `<dir>/<sha256>`, written to a temporary
//! file while its hash is computed and renamed into place only once the
//! digest matches and its record is committed: a torn or corrupt upload
//! never becomes visible. The index of stored artifacts (digest, size,
//! owners, last use) is core state (`wasmos_core`'s `core/artifacts.rs`):
//! this store asks the actor to change it, so each change is one input of
//! the actor's turn, in its commit, behind its fence, on its clock.

mod intake;
mod peers;
mod service;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_stream::Stream;
use tonic::Status;
use wasmos_proto::v1;

pub use intake::{MAX_UPLOAD_CHUNK, MAX_UPLOAD_MESSAGE, Refused, UploadState};
pub use limits::{MinRate, StoreLimits};
pub use peers::{BlobService, PeerCerts, PeerLink, reachable};
pub use service::ArtifactsService;
pub use wasmos_core::artifact_limits as limits;

use crate::access::Principal;
use crate::core::{Input, Reply};
use crate::ids::validate_digest;
use crate::server::handle::ActorHandle;
use limits::UploadSlots;

/// Artifacts on the master's disk.
#[derive(Clone)]
pub struct ArtifactStore {
    dir: PathBuf,
    max_size: u64,
    /// The most uploads at once, and the slowest an upload may be.
    limits: StoreLimits,
    /// Where the index lives: the core, behind the actor.
    actor: ActorHandle,
    /// The uploads in progress.
    slots: Arc<Mutex<UploadSlots>>,
    /// Held by an upload from its file's move into place until the core
    /// answered its record: a refused upload's file is deleted only if no
    /// other upload stored the same bytes meanwhile.
    storing: Arc<tokio::sync::Mutex<()>>,
    /// When this master last told the core of each artifact's use: a
    /// busy artifact costs a turn a minute, not one a fetch.
    uses_told: Arc<Mutex<HashMap<String, std::time::Instant>>>,
    /// The other masters of a cluster on etcd: they hold a copy of every
    /// artifact, and give this master what it lacks.
    peers: Option<Arc<PeerLink>>,
    fetching: Arc<tokio::sync::Mutex<()>>,
    /// Uploads answered while no other master held a copy.
    pub held_alone: Arc<std::sync::atomic::AtomicU64>,
}

/// An upload slot, given back when dropped.
struct Slot {
    slots: Arc<Mutex<UploadSlots>>,
    principal: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots
            .lock()
            .expect("not poisoned")
            .release(&self.principal);
    }
}

/// The artifact files under `dir` (creating it), as (digest, size): what
/// the core reconciles its index with as a master starts
/// (`Core::reconcile_artifact_files`).
pub fn files_in(dir: &Path) -> std::io::Result<Vec<(String, u64)>> {
    std::fs::create_dir_all(dir.join("tmp"))?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str()
            && validate_digest(name).is_ok()
        {
            files.push((name.to_string(), entry.metadata()?.len()));
        }
    }
    Ok(files)
}

/// Deletes the files of `digests` under `dir`: those the index, shared by
/// the masters of a cluster, no longer holds (expired meanwhile).
pub fn remove_files(dir: &Path, digests: &[String]) -> std::io::Result<()> {
    for digest in digests {
        match std::fs::remove_file(dir.join(digest)) {
            Ok(()) => tracing::info!(%digest, "artifact expired (no longer indexed)"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl ArtifactStore {
    /// The store under `dir` (see [`files_in`]), its index in the core
    /// behind `actor`. Uploads larger than `max_size` bytes are refused.
    pub fn new(
        dir: &Path,
        max_size: u64,
        limits: StoreLimits,
        actor: ActorHandle,
    ) -> ArtifactStore {
        ArtifactStore {
            dir: dir.to_path_buf(),
            max_size,
            limits,
            actor,
            slots: Arc::new(Mutex::new(UploadSlots::new(
                limits.uploads,
                limits.uploads_per_principal,
            ))),
            storing: Arc::default(),
            uses_told: Arc::default(),
            peers: None,
            fetching: Arc::default(),
            held_alone: Arc::default(),
        }
    }

    /// Copies every upload to the other masters `peers` names before it
    /// is answered, and fetches from them what this disk lacks.
    pub fn with_peers(mut self, peers: PeerLink) -> ArtifactStore {
        self.peers = Some(Arc::new(peers));
        self
    }

    /// Makes sure `digest`'s file is here if the index has it: fetched
    /// from another master when missing (this master leads since the one
    /// that stored it stopped).
    async fn ensure_local(&self, path: &Path, digest: &str) -> Result<(), Status> {
        let Some(peers) = &self.peers else {
            return Ok(());
        };
        if tokio::fs::try_exists(path).await.unwrap_or(true) || !self.contains(digest).await? {
            return Ok(());
        }
        // One fetch at a time per store: a digest asked for by many
        // agents at once is fetched once.
        let _fetching = self.fetching.lock().await;
        if !tokio::fs::try_exists(path).await.unwrap_or(true) {
            peers.fetch(digest, &self.dir, self.max_size).await;
        }
        Ok(())
    }

    /// May `who` read `digest`: did they upload it (admins and read-only
    /// operators read all)? False for an artifact nobody stored.
    async fn readable(&self, who: &Principal, digest: &str) -> Result<bool, Status> {
        let (who, digest) = (who.clone(), digest.to_string());
        self.actor
            .query(move |core, _| core.artifact_readable(&who, &digest))
            .await
    }

    /// Is `digest` stored (whoever may read it)?
    async fn contains(&self, digest: &str) -> Result<bool, Status> {
        let digest = digest.to_string();
        self.actor
            .query(move |core, _| core.artifact_indexed(&digest))
            .await
    }

    fn path(&self, digest: &str) -> Result<PathBuf, Status> {
        validate_digest(digest).map_err(Status::invalid_argument)?;
        Ok(self.dir.join(digest))
    }

    /// Notes a use of `digest` in its record, at most once a
    /// [`crate::core::LAST_USE_RESOLUTION`] (the file's modification time
    /// says it exactly, but only on this master's disk). Sent in the
    /// background: a use waits for no commit.
    fn note_use(&self, digest: &str) {
        let now = std::time::Instant::now();
        {
            let mut told = self.uses_told.lock().expect("not poisoned");
            if told
                .get(digest)
                .is_some_and(|at| now.duration_since(*at) < crate::core::LAST_USE_RESOLUTION)
            {
                return;
            }
            // Bounded by the index's own cap; forget the stale rather
            // than grow with every digest ever fetched.
            if told.len() >= 4 * self.limits.count.max(1) {
                told.retain(|_, at| now.duration_since(*at) < crate::core::LAST_USE_RESOLUTION);
            }
            told.insert(digest.to_string(), now);
        }
        let actor = self.actor.clone();
        let digest = digest.to_string();
        tokio::spawn(async move {
            if let Err(e) = actor.call(Input::ArtifactUsed { digest }).await {
                tracing::warn!("cannot note an artifact's use in the registry: {e}");
            }
        });
    }

    /// Size of a stored artifact, if present. Counts as a use (see
    /// [`ArtifactStore::expire`]).
    pub async fn stat(&self, digest: &str) -> Result<Option<u64>, Status> {
        let path = self.path(digest)?;
        self.ensure_local(&path, digest).await?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) => {
                touch(&path).await;
                self.note_use(digest);
                Ok(Some(meta.len()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Status::internal(format!("artifact store: {e}"))),
        }
    }

    /// Expires artifacts unused (not uploaded, fetched or asked about) for
    /// the core's TTL, but never those `pinned` (named by a job of the job
    /// service that has not ended: a held job, or one waiting for its
    /// dependencies, may go long without starting a task). The core
    /// decides, on its clock, from the later of the record's last use (any
    /// master's, to the minute) and this disk's file time (exact), which
    /// this store reads and hands it; an indexed artifact whose file is
    /// elsewhere expires too. Then the files of expired artifacts go, and
    /// files nobody indexed once unchanged for `grace`. Returns how many
    /// artifacts expired.
    pub async fn expire(
        &self,
        grace: std::time::Duration,
        pinned: HashSet<String>,
    ) -> std::io::Result<usize> {
        let unavailable = |e: Status| std::io::Error::other(e.message().to_string());
        let mut indexed = self
            .actor
            .query(|core, _| core.indexed_artifacts())
            .await
            .map_err(unavailable)?;
        let mut touched = HashMap::new();
        for digest in &indexed {
            if let Ok(meta) = tokio::fs::metadata(self.dir.join(digest)).await
                && let Ok(modified) = meta.modified()
            {
                let at = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
                touched.insert(digest.clone(), at.as_millis() as u64);
            }
        }
        let expired = match self
            .actor
            .call(Input::ExpireArtifacts { pinned, touched })
            .await
            .map_err(unavailable)?
        {
            Reply::Expired(expired) => expired,
            other => unreachable!("expiry answered {other:?}"),
        };
        for digest in &expired {
            match tokio::fs::remove_file(self.dir.join(digest)).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            tracing::info!(%digest, "artifact expired");
            indexed.remove(digest);
        }
        // Uploaded since the list was taken: younger than `grace`, kept.
        sweep_unindexed(&self.dir, &|digest| indexed.contains(digest), grace).await?;
        Ok(expired.len())
    }

    /// Stores an upload's `chunks` for `owner`, as they arrive (see
    /// `intake.rs`), within a slot of the uploads in progress; checks the
    /// bytes against the digest the first chunk names (if any) and the
    /// store's limits. An upload still arriving when `credential_ended`
    /// resolves (its token revoked or expired) is cut: its temp file goes,
    /// nothing is stored.
    pub async fn put(
        &self,
        owner: &Principal,
        chunks: impl Stream<Item = Result<v1::UploadChunk, Status>> + Unpin,
        credential_ended: impl Future<Output = String>,
    ) -> Result<v1::ArtifactInfo, Status> {
        let slot = self.take_slot(&owner.name)?;
        let tmp_dir = self.dir.join("tmp");
        let received = tokio::select! {
            received = intake::receive(
                &tmp_dir,
                self.max_size,
                self.limits.min_rate,
                chunks,
            ) => received?,
            why = credential_ended => {
                return Err(Status::unauthenticated(format!(
                    "{why} while its upload was in progress: the upload was cut and nothing stored"
                )));
            }
        };
        drop(slot);
        // Received whole: stored even if the caller goes away meanwhile, so
        // a record is never committed without its file renamed into place.
        let store = self.clone();
        let owner = owner.clone();
        tokio::spawn(async move { store.store(&owner, received).await })
            .await
            .map_err(|e| Status::internal(format!("artifact store: {e}")))?
    }

    /// A slot of the uploads in progress for `principal`, or the limit that
    /// is full and who holds it.
    fn take_slot(&self, principal: &str) -> Result<Slot, Status> {
        self.slots
            .lock()
            .expect("not poisoned")
            .take(principal)
            .map_err(Status::resource_exhausted)?;
        Ok(Slot {
            slots: self.slots.clone(),
            principal: principal.to_string(),
        })
    }

    /// Moves a received upload into place, then indexes it for `owner` if
    /// the store's limits let it (the core decides, in the turn that
    /// commits the record). A crash in between leaves a file without its
    /// record, which the next start indexes with no owner (or, on a shared
    /// registry, deletes): the uploader was never answered, and uploads
    /// again. A refused upload's file goes, unless its bytes are indexed.
    async fn store(
        &self,
        owner: &Principal,
        received: intake::Received,
    ) -> Result<v1::ArtifactInfo, Status> {
        let intake::Received { tmp, digest, size } = received;
        let internal = |e: std::io::Error| Status::internal(format!("artifact store: {e}"));
        let path = self.dir.join(&digest);
        let storing = self.storing.lock().await;
        tokio::fs::rename(tmp.path(), &path)
            .await
            .map_err(internal)?;
        tmp.stored();
        touch(&path).await;
        let indexed = self
            .actor
            .call(Input::StoreArtifact {
                owner: owner.clone(),
                digest: digest.clone(),
                size,
            })
            .await;
        if let Err(refused) = indexed {
            if !self.contains(&digest).await.unwrap_or(true) {
                let _ = tokio::fs::remove_file(&path).await;
            }
            return Err(refused);
        }
        drop(storing);
        if let Some(peers) = &self.peers
            && !peers.hand_out(&path, &digest).await
        {
            // Answered anyway: refusing would stop a lone master from
            // taking uploads at all. The metric says so.
            self.held_alone
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(%digest, "no other master holds the artifact: it is on this master's disk alone");
        }
        Ok(v1::ArtifactInfo { digest, size })
    }

    /// Opens a stored artifact for reading (a use, see [`ArtifactStore::expire`]).
    pub async fn open_file(&self, digest: &str) -> Result<tokio::fs::File, Status> {
        let path = self.path(digest)?;
        self.ensure_local(&path, digest).await?;
        touch(&path).await;
        self.note_use(digest);
        tokio::fs::File::open(&path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    Status::not_found(format!("no artifact {digest}: upload it first"))
                }
                _ => Status::internal(format!("artifact store: {e}")),
            })
    }
}

/// Deletes the files in `dir` named by a digest `indexed` does not know
/// and unchanged for `grace`: expired by the leader, or (on a lone master)
/// stored by an upload whose record never landed. Every master sweeps its
/// own disk, standbys included. Returns how many went.
pub async fn sweep_unindexed(
    dir: &Path,
    indexed: &(dyn Fn(&str) -> bool + Sync),
    grace: std::time::Duration,
) -> std::io::Result<usize> {
    let now = SystemTime::now();
    let mut removed = 0;
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if validate_digest(name).is_err() || indexed(name) {
            continue; // tmp/ and anything not ours, or an indexed one
        }
        let meta = entry.metadata().await?;
        let idle = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok());
        if idle.is_some_and(|idle| idle > grace) {
            match tokio::fs::remove_file(entry.path()).await {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            tracing::info!(digest = name, "deleted an artifact no longer indexed");
        }
    }
    Ok(removed)
}

/// A stored file's bytes in chunks of at most `chunk` bytes, read only as
/// fast as they are taken (what `Fetch` sends and peers trade); a read
/// error is the last item.
pub fn file_chunks(
    file: tokio::fs::File,
    chunk: usize,
) -> impl Stream<Item = Result<Vec<u8>, Status>> + Send + 'static {
    use tokio_stream::StreamExt;
    tokio_util::io::ReaderStream::with_capacity(file, chunk).map(|read| {
        read.map(Vec::from)
            .map_err(|e| Status::internal(format!("artifact read: {e}")))
    })
}

/// Marks an artifact as used now: its modification time is its last use.
async fn touch(path: &Path) {
    let path = path.to_path_buf();
    let _ = tokio::task::spawn_blocking(move || {
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()))
    })
    .await;
}

#[cfg(test)]
mod tests;
