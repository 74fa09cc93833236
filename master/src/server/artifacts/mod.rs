//! Content-addressed artifact storage and the `Artifacts` service.
//!
//! An artifact is stored once, as `<dir>/<sha256>`, written to a temporary
//! file while its hash is computed and renamed into place only when the
//! digest matches: a torn or corrupt upload never becomes visible. The
//! registry holds the index of stored artifacts (digest, size, when): an
//! upload is answered once its file is synced and its record committed, in
//! the actor's commits like every other write of a running master.

mod intake;
pub mod limits;
mod peers;
mod service;

use std::collections::HashMap;
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

use crate::access::Principal;
use crate::ids::validate_digest;
use crate::server::writer::RegistryWriter;
use crate::store::{Record, Store, StoreError, Table, Write};
use limits::{Claim, Holdings, UploadSlots};

/// What the registry holds, by digest, and what each principal holds: kept
/// together so they never disagree.
#[derive(Default)]
struct Index {
    artifacts: HashMap<String, v1::StoredArtifact>,
    holdings: Holdings,
}

impl Index {
    fn insert(&mut self, record: v1::StoredArtifact) {
        self.holdings.add(&record);
        if let Some(old) = self.artifacts.insert(record.digest.clone(), record) {
            self.holdings.remove(&old);
        }
    }

    fn remove(&mut self, digest: &str) {
        if let Some(old) = self.artifacts.remove(digest) {
            self.holdings.remove(&old);
        }
    }
}

/// Artifacts on the master's disk.
#[derive(Clone)]
pub struct ArtifactStore {
    dir: PathBuf,
    max_size: u64,
    /// The most bytes one principal (not an admin) may have stored.
    quota: u64,
    /// The most artifacts, bytes and uploads, in all and per principal.
    limits: StoreLimits,
    /// Where the index is written: the registry at start, then the
    /// actor's commits ([`ArtifactStore::write_through`]).
    writer: RegistryWriter,
    index: Arc<Mutex<Index>>,
    /// The uploads in progress.
    slots: Arc<Mutex<UploadSlots>>,
    /// Held from an upload's check against the limits until its record is
    /// indexed: uploads finishing together cannot each pass a limit that
    /// only one of them fits.
    storing: Arc<tokio::sync::Mutex<()>>,
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

impl ArtifactStore {
    /// Opens (creating) the store under `dir`, with its index in `registry`
    /// (as loaded: `indexed`). Files and index are reconciled: a file the
    /// index lacks (stored just before a crash) is indexed, a record whose
    /// file is gone is dropped. On a registry masters share the index is
    /// not this disk's: a record whose file is missing here stays (another
    /// master holds the bytes), and a file without a record (expired
    /// meanwhile) goes. Uploads larger than `max_size` bytes are refused.
    pub fn open(
        dir: &Path,
        max_size: u64,
        quota: u64,
        limits: StoreLimits,
        registry: Arc<dyn Store>,
        indexed: &[v1::StoredArtifact],
    ) -> anyhow::Result<ArtifactStore> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        let mut on_disk = std::collections::HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str()
                && validate_digest(name).is_ok()
            {
                on_disk.insert(name.to_string(), entry.metadata()?.len());
            }
        }
        let shared = registry.is_shared();
        let mut writes = Vec::new();
        let mut index = Index::default();
        for record in indexed {
            if on_disk.remove(&record.digest).is_none() && !shared {
                writes.push(Write::Delete(Table::Artifacts, record.digest.clone()));
            } else {
                index.insert(record.clone());
            }
        }
        if shared {
            for digest in std::mem::take(&mut on_disk).into_keys() {
                std::fs::remove_file(dir.join(&digest))?;
                tracing::info!(%digest, "artifact expired (no longer indexed)");
            }
        }
        for (digest, size) in on_disk {
            // Stored just before a crash, before its record: whoever
            // uploaded it uploads it again to own it.
            let record = v1::StoredArtifact {
                digest: digest.clone(),
                size,
                stored_ms: wall_ms(),
                owners: Vec::new(),
                last_used_ms: 0,
            };
            writes.push(Write::Put(Record::Artifact(record.clone())));
            index.insert(record);
        }
        registry.commit(&writes)?;
        Ok(ArtifactStore {
            dir: dir.to_path_buf(),
            max_size,
            quota,
            limits,
            writer: RegistryWriter::new(registry),
            index: Arc::new(Mutex::new(index)),
            slots: Arc::new(Mutex::new(UploadSlots::new(
                limits.uploads,
                limits.uploads_per_principal,
            ))),
            storing: Arc::new(tokio::sync::Mutex::new(())),
            peers: None,
            fetching: Arc::default(),
            held_alone: Arc::default(),
        })
    }

    /// Writes the index in the turns of `actor` from now on (this store
    /// and every clone of it): joined to its commits, behind the same
    /// fence (on etcd), answered once durable.
    pub fn write_through(&self, actor: crate::server::handle::ActorHandle) {
        self.writer.write_through(actor);
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
    async fn ensure_local(&self, path: &Path, digest: &str) {
        let Some(peers) = &self.peers else { return };
        if !self.contains(digest) || tokio::fs::try_exists(path).await.unwrap_or(true) {
            return;
        }
        // One fetch at a time per store: a digest asked for by many
        // agents at once is fetched once.
        let _fetching = self.fetching.lock().await;
        if !tokio::fs::try_exists(path).await.unwrap_or(true) {
            peers.fetch(digest, &self.dir, self.max_size).await;
        }
    }

    /// Refuses a principal an artifact it did not upload (admins and
    /// read-only operators read all). An artifact nobody stored passes:
    /// a task using it fails to fetch it, as it would for anyone.
    pub fn require_readable(&self, who: &Principal, digest: &str) -> Result<(), Status> {
        if who.sees_all() {
            return Ok(());
        }
        let index = self.index.lock().expect("not poisoned");
        match index.artifacts.get(digest) {
            Some(a) if !a.owners.contains(&who.name) => Err(Status::permission_denied(format!(
                "artifact {digest} was not uploaded by {}; upload it yourself (the same bytes are stored once)",
                who.describe()
            ))),
            _ => Ok(()),
        }
    }

    /// May `who` read `digest`? Unlike [`ArtifactStore::require_readable`],
    /// false for an artifact nobody stored.
    fn readable(&self, who: &Principal, digest: &str) -> bool {
        let index = self.index.lock().expect("not poisoned");
        index
            .artifacts
            .get(digest)
            .is_some_and(|a| who.sees_all() || a.owners.contains(&who.name))
    }

    /// Bytes the file inputs of `spec` place in its sandbox, as far as the
    /// store knows their sizes (tar inputs are checked by the agent as they
    /// unpack).
    pub fn file_input_bytes(&self, spec: &v1::TaskSpec) -> u64 {
        let index = self.index.lock().expect("not poisoned");
        spec.inputs
            .iter()
            .filter(|i| i.kind() == v1::InputKind::File)
            .filter_map(|i| index.artifacts.get(&i.artifact).map(|a| a.size))
            .fold(0u64, u64::saturating_add)
    }

    /// Is `digest` stored (whoever may read it)?
    fn contains(&self, digest: &str) -> bool {
        let index = self.index.lock().expect("not poisoned");
        index.artifacts.contains_key(digest)
    }

    async fn commit(&self, write: Write) -> Result<(), StoreError> {
        self.writer.commit(vec![write]).await
    }

    fn path(&self, digest: &str) -> Result<PathBuf, Status> {
        validate_digest(digest).map_err(Status::invalid_argument)?;
        Ok(self.dir.join(digest))
    }

    /// Notes a use of `digest` in its record, at most once a
    /// [`LAST_USE_RESOLUTION`] (the file's modification time says it
    /// exactly, but only on this master's disk). Written in the background:
    /// a use waits for no commit.
    fn note_use(&self, digest: &str) {
        let now = wall_ms();
        let record = {
            let mut index = self.index.lock().expect("not poisoned");
            let Some(record) = index.artifacts.get(digest) else {
                return;
            };
            let last = record.last_used_ms.max(record.stored_ms);
            if now.saturating_sub(last) < LAST_USE_RESOLUTION.as_millis() as u64 {
                return;
            }
            let mut record = record.clone();
            record.last_used_ms = now;
            index.insert(record.clone());
            record
        };
        let store = self.clone();
        tokio::spawn(async move {
            if let Err(e) = store.commit(Write::Put(Record::Artifact(record))).await {
                tracing::warn!("cannot note an artifact's use in the registry: {e}");
            }
        });
    }

    /// Size of a stored artifact, if present. Counts as a use (see
    /// [`ArtifactStore::expire`]).
    pub async fn stat(&self, digest: &str) -> Result<Option<u64>, Status> {
        let path = self.path(digest)?;
        self.ensure_local(&path, digest).await;
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

    /// Deletes artifacts unused (not uploaded, fetched or asked about) for
    /// `ttl`, but never those `pinned` (named by a job of the job service
    /// that has not ended: a held job, or one waiting for its dependencies,
    /// may go long without starting a task). A job in progress keeps using
    /// its artifacts, so only those no framework or agent has wanted for
    /// that long go. The last use is the later of the record's (any
    /// master's, to the minute) and this disk's file time (exact); an
    /// indexed artifact whose file is elsewhere expires too. Files nobody
    /// indexed go once as old. Returns how many artifacts expired.
    pub async fn expire(
        &self,
        ttl: std::time::Duration,
        pinned: &std::collections::HashSet<String>,
    ) -> std::io::Result<usize> {
        let now = wall_ms();
        let ttl_ms = ttl.as_millis() as u64;
        let records: Vec<v1::StoredArtifact> = {
            let index = self.index.lock().expect("not poisoned");
            index.artifacts.values().cloned().collect()
        };
        let mut removed = 0;
        for record in records {
            if pinned.contains(&record.digest) {
                continue;
            }
            let path = self.dir.join(&record.digest);
            let touched = match tokio::fs::metadata(&path).await {
                Ok(meta) => meta.modified().ok().map_or(0, |m| {
                    m.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
                }),
                Err(_) => 0,
            };
            let last_use = record.last_used_ms.max(record.stored_ms).max(touched);
            if now.saturating_sub(last_use) <= ttl_ms {
                continue;
            }
            self.commit(Write::Delete(Table::Artifacts, record.digest.clone()))
                .await
                .map_err(std::io::Error::other)?;
            self.index
                .lock()
                .expect("not poisoned")
                .remove(&record.digest);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            tracing::info!(digest = %record.digest, "artifact expired");
            removed += 1;
        }
        let indexed = |digest: &str| self.contains(digest);
        sweep_unindexed(&self.dir, &indexed, ttl).await?;
        Ok(removed)
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
        // a file is never renamed into place without its record.
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

    /// Moves a received upload into place for `owner`, if the store's
    /// limits let it, and indexes it.
    async fn store(
        &self,
        owner: &Principal,
        received: intake::Received,
    ) -> Result<v1::ArtifactInfo, Status> {
        let intake::Received { tmp, digest, size } = received;
        let storing = self.storing.lock().await;
        let record = {
            let index = self.index.lock().expect("not poisoned");
            let existing = index.artifacts.get(&digest);
            let claim = Claim {
                principal: &owner.name,
                admin: owner.is_admin(),
                size,
                new: existing.is_none(),
                owned: existing.is_some_and(|a| a.owners.contains(&owner.name)),
            };
            limits::admit(&index.holdings, &self.limits, self.quota, claim)
                .map_err(Status::resource_exhausted)?;
            let mut record = existing.cloned().unwrap_or(v1::StoredArtifact {
                digest: digest.clone(),
                size,
                stored_ms: wall_ms(),
                owners: Vec::new(),
                last_used_ms: 0,
            });
            // Uploaded again: a use.
            record.last_used_ms = wall_ms();
            if !record.owners.contains(&owner.name) {
                record.owners.push(owner.name.clone());
            }
            record
        };
        let internal = |e: std::io::Error| Status::internal(format!("artifact store: {e}"));
        let path = self.dir.join(&digest);
        tokio::fs::rename(tmp.path(), &path)
            .await
            .map_err(internal)?;
        tmp.stored();
        touch(&path).await;
        self.commit(Write::Put(Record::Artifact(record.clone())))
            .await
            .map_err(|e| Status::unavailable(format!("cannot index the artifact: {e}")))?;
        self.index.lock().expect("not poisoned").insert(record);
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
        self.ensure_local(&path, digest).await;
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

/// How often, at most, a use of an artifact is written into its record.
pub const LAST_USE_RESOLUTION: std::time::Duration = std::time::Duration::from_secs(60);

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

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
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
