//! Content-addressed artifact storage and the `Artifacts` service.
//!
//! An artifact is stored once, as `<dir>/<sha256>`, written to a temporary
//! file while its hash is computed and renamed into place only when the
//! digest matches: a torn or corrupt upload never becomes visible. The
//! registry holds the index of stored artifacts (digest, size, when): an
//! upload is answered once its file is synced and its record committed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use wasmos_proto::v1;
use wasmos_proto::v1::artifacts_server::Artifacts;

use super::audit::{Actor, Audit};
use super::handle::ActorHandle;
use super::trust::{Caller, caller_of};
use crate::access::Principal;
use crate::ids::{AgentId, validate_digest};
use crate::store::{Record, Store, StoreError, Table, Write};

/// Chunk size of fetch streams: well under gRPC's 4 MiB message limit.
const CHUNK: usize = 256 * 1024;

/// An upload that sends no chunk for this long is dropped (its temp file
/// removed).
const UPLOAD_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// Master-wide caps of the artifact store (`--max-artifacts`,
/// `--max-artifact-bytes`).
#[derive(Clone, Copy, Debug)]
pub struct StoreLimits {
    pub count: usize,
    pub bytes: u64,
}

/// Artifacts on the master's disk.
#[derive(Clone)]
pub struct ArtifactStore {
    dir: PathBuf,
    max_size: u64,
    /// The most bytes one principal (not an admin) may have stored.
    quota: u64,
    /// The most artifacts, and bytes, the master stores in all.
    limits: StoreLimits,
    registry: Arc<dyn Store>,
    /// What the registry holds, by digest: who may read what.
    index: Arc<Mutex<HashMap<String, v1::StoredArtifact>>>,
}

impl ArtifactStore {
    /// Opens (creating) the store under `dir`, with its index in `registry`
    /// (as loaded: `indexed`). Files and index are reconciled: a file the
    /// index lacks (stored just before a crash) is indexed, a record whose
    /// file is gone is dropped. Uploads larger than `max_size` bytes are
    /// refused.
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
        let mut writes = Vec::new();
        let mut index = HashMap::new();
        for record in indexed {
            if on_disk.remove(&record.digest).is_none() {
                writes.push(Write::Delete(Table::Artifacts, record.digest.clone()));
            } else {
                index.insert(record.digest.clone(), record.clone());
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
            };
            writes.push(Write::Put(Record::Artifact(record.clone())));
            index.insert(digest, record);
        }
        registry.commit(&writes)?;
        Ok(ArtifactStore {
            dir: dir.to_path_buf(),
            max_size,
            quota,
            limits,
            registry,
            index: Arc::new(Mutex::new(index)),
        })
    }

    /// Refuses a principal an artifact it did not upload (admins and
    /// read-only operators read all). An artifact nobody stored passes:
    /// a task using it fails to fetch it, as it would for anyone.
    pub fn require_readable(&self, who: &Principal, digest: &str) -> Result<(), Status> {
        if who.sees_all() {
            return Ok(());
        }
        let index = self.index.lock().expect("not poisoned");
        match index.get(digest) {
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
            .filter_map(|i| index.get(&i.artifact).map(|a| a.size))
            .fold(0u64, u64::saturating_add)
    }

    /// Bytes stored on behalf of `principal`.
    pub fn stored_by(&self, principal: &str) -> u64 {
        let index = self.index.lock().expect("not poisoned");
        index
            .values()
            .filter(|a| a.owners.iter().any(|o| o == principal))
            .map(|a| a.size)
            .sum()
    }

    async fn commit(&self, write: Write) -> Result<(), StoreError> {
        let registry = self.registry.clone();
        tokio::task::spawn_blocking(move || registry.commit(&[write]))
            .await
            .map_err(|e| StoreError::Io(format!("the registry's writer failed: {e}")))?
    }

    fn path(&self, digest: &str) -> Result<PathBuf, Status> {
        validate_digest(digest).map_err(Status::invalid_argument)?;
        Ok(self.dir.join(digest))
    }

    /// Size of a stored artifact, if present. Counts as a use (see
    /// [`ArtifactStore::expire`]).
    pub async fn stat(&self, digest: &str) -> Result<Option<u64>, Status> {
        let path = self.path(digest)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) => {
                touch(&path).await;
                Ok(Some(meta.len()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Status::internal(format!("artifact store: {e}"))),
        }
    }

    /// Deletes artifacts unused (not uploaded, fetched or asked about) for
    /// `ttl`. A job in progress keeps using its artifacts, so only those no
    /// framework or agent has wanted for that long go. Returns how many.
    pub async fn expire(&self, ttl: std::time::Duration) -> std::io::Result<usize> {
        let now = std::time::SystemTime::now();
        let mut removed = 0;
        let mut entries = tokio::fs::read_dir(&self.dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if validate_digest(name).is_err() {
                continue; // tmp/ and anything not ours
            }
            let meta = entry.metadata().await?;
            let idle = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok());
            if idle.is_some_and(|idle| idle > ttl) {
                self.commit(Write::Delete(Table::Artifacts, name.to_string()))
                    .await
                    .map_err(std::io::Error::other)?;
                self.index.lock().expect("not poisoned").remove(name);
                tokio::fs::remove_file(entry.path()).await?;
                tracing::info!(digest = name, "artifact expired");
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Stores bytes from `chunks` for `owner`; checks them against
    /// `expected` (if any) and against the owner's quota (admins have none).
    pub async fn put(
        &self,
        owner: &Principal,
        expected: Option<String>,
        mut chunks: impl Stream<Item = Result<Vec<u8>, Status>> + Unpin,
    ) -> Result<v1::ArtifactInfo, Status> {
        if let Some(expected) = &expected {
            validate_digest(expected).map_err(Status::invalid_argument)?;
        }
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("{:016x}", rand::random::<u64>()));
        let internal = |e: std::io::Error| Status::internal(format!("artifact store: {e}"));
        let mut file = tokio::fs::File::create(&tmp).await.map_err(internal)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let result = async {
            loop {
                // An upload that stalls holds a temp file and a stream:
                // one that sends nothing for this long is dropped.
                let chunk = match tokio::time::timeout(UPLOAD_IDLE, chunks.next()).await {
                    Ok(Some(chunk)) => chunk?,
                    Ok(None) => break,
                    Err(_) => {
                        return Err(Status::deadline_exceeded(format!(
                            "the upload sent nothing for {} s",
                            UPLOAD_IDLE.as_secs()
                        )));
                    }
                };
                size += chunk.len() as u64;
                if size > self.max_size {
                    return Err(Status::resource_exhausted(format!(
                        "artifact larger than the master's limit of {} bytes",
                        self.max_size
                    )));
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(internal)?;
            }
            file.flush().await.map_err(internal)?;
            // On disk before it is indexed and the upload answered.
            file.sync_all().await.map_err(internal)?;
            let digest = hex::encode(hasher.finalize());
            if let Some(expected) = &expected
                && *expected != digest
            {
                return Err(Status::invalid_argument(format!(
                    "artifact digest mismatch: expected {expected}, the bytes hash to {digest}; the upload is corrupt"
                )));
            }
            let record = {
                let index = self.index.lock().expect("not poisoned");
                let mut record = index.get(&digest).cloned().unwrap_or(v1::StoredArtifact {
                    digest: digest.clone(),
                    size,
                    stored_ms: wall_ms(),
                    owners: Vec::new(),
                });
                let new = !index.contains_key(&digest);
                let stored: u64 = index.values().map(|a| a.size).sum();
                let count = index.len();
                drop(index);
                if new && (count >= self.limits.count || stored + size > self.limits.bytes) {
                    return Err(Status::resource_exhausted(format!(
                        "the master stores {count} artifacts of {stored} bytes; one more of {size} bytes would pass its limits of {} artifacts and {} bytes (--max-artifacts, --max-artifact-bytes)",
                        self.limits.count, self.limits.bytes
                    )));
                }
                if !record.owners.contains(&owner.name) {
                    if !owner.is_admin() {
                        let stored = self.stored_by(&owner.name);
                        if stored + size > self.quota {
                            return Err(Status::resource_exhausted(format!(
                                "{} has {stored} bytes of artifacts stored; {size} more would pass its quota of {} bytes",
                                owner.describe(),
                                self.quota
                            )));
                        }
                    }
                    record.owners.push(owner.name.clone());
                }
                record
            };
            let path = self.dir.join(&digest);
            tokio::fs::rename(&tmp, &path).await.map_err(internal)?;
            touch(&path).await;
            self.commit(Write::Put(Record::Artifact(record.clone())))
                .await
                .map_err(|e| Status::unavailable(format!("cannot index the artifact: {e}")))?;
            self.index
                .lock()
                .expect("not poisoned")
                .insert(digest.clone(), record);
            Ok(v1::ArtifactInfo { digest, size })
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// Opens a stored artifact for reading (a use, see [`ArtifactStore::expire`]).
    pub async fn open_file(&self, digest: &str) -> Result<tokio::fs::File, Status> {
        let path = self.path(digest)?;
        touch(&path).await;
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

pub struct ArtifactsService {
    pub store: ArtifactStore,
    pub actor: ActorHandle,
    pub audit: Arc<Audit>,
}

impl ArtifactsService {
    /// May the caller read `digest`? Principals: those who uploaded it;
    /// agents: those running (or keeping the sandbox of) a task that uses
    /// it. Others are told it does not exist, so digests reveal nothing.
    async fn require_read<T>(&self, request: &Request<T>, digest: &str) -> Result<(), Status> {
        validate_digest(digest).map_err(Status::invalid_argument)?;
        let caller = caller_of(request)?;
        let allowed = match &caller {
            Caller::Principal(who) => self.store.readable(who, digest),
            Caller::Agent(agent) => {
                let agent = AgentId::from(agent.as_str());
                let digest = digest.to_string();
                self.actor
                    .query(move |core, _| core.agent_needs_artifact(&agent, &digest))
                    .await?
            }
        };
        if allowed {
            return Ok(());
        }
        let refused = Err(Status::not_found(format!(
            "no artifact {digest} you may read: upload it first"
        )));
        if self
            .store
            .index
            .lock()
            .expect("not poisoned")
            .contains_key(digest)
        {
            let who = match &caller {
                Caller::Principal(p) => Actor::Principal(p),
                Caller::Agent(a) => Actor::Agent(a),
            };
            // Audited as the refusal it is, though the caller hears NOT_FOUND.
            self.audit.record::<()>(
                who,
                "Artifacts.Read",
                serde_json::json!({"digest": digest}),
                &Err(Status::permission_denied("not an owner of the artifact")),
            );
        }
        refused
    }
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<v1::FetchChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Artifacts for ArtifactsService {
    async fn upload(
        &self,
        request: Request<Streaming<v1::UploadChunk>>,
    ) -> Result<Response<v1::ArtifactInfo>, Status> {
        let who = match caller_of(&request)? {
            Caller::Principal(who) => who,
            Caller::Agent(agent) => {
                return Err(Status::permission_denied(format!(
                    "agent {agent} may not upload artifacts"
                )));
            }
        };
        if let Err(denied) = who.require_writer("uploading an artifact") {
            let refused = Err(Status::permission_denied(denied.0));
            self.audit.refusal(
                Actor::Principal(&who),
                "Artifacts.Upload",
                serde_json::Value::Null,
                &refused,
            );
            return refused;
        }
        let mut inbound = request.into_inner();
        let first = inbound.next().await.transpose()?.unwrap_or_default();
        let expected = (!first.digest.is_empty()).then_some(first.digest);
        let chunks =
            tokio_stream::once(Ok(first.data)).chain(inbound.map(|chunk| chunk.map(|c| c.data)));
        let info = self.store.put(&who, expected, Box::pin(chunks)).await?;
        tracing::info!(digest = %info.digest, size = info.size, principal = %who.name, "artifact stored");
        Ok(Response::new(info))
    }

    type FetchStream = FetchStream;

    async fn fetch(
        &self,
        request: Request<v1::FetchRequest>,
    ) -> Result<Response<FetchStream>, Status> {
        self.require_read(&request, &request.get_ref().digest)
            .await?;
        let mut file = self.store.open_file(&request.into_inner().digest).await?;
        let stream = async_stream(move |tx| async move {
            let mut buf = vec![0u8; CHUNK];
            loop {
                match file.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx
                            .send(Ok(v1::FetchChunk {
                                data: buf[..n].to_vec(),
                            }))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!("artifact read: {e}"))))
                            .await;
                        break;
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn stat(
        &self,
        request: Request<v1::StatRequest>,
    ) -> Result<Response<v1::ArtifactInfo>, Status> {
        self.require_read(&request, &request.get_ref().digest)
            .await?;
        let digest = request.into_inner().digest;
        match self.store.stat(&digest).await? {
            Some(size) => Ok(Response::new(v1::ArtifactInfo { digest, size })),
            None => Err(Status::not_found(format!("no artifact {digest}"))),
        }
    }
}

/// A stream fed by a spawned task through a small channel (back-pressure:
/// the task reads the file only as fast as the client takes chunks).
fn async_stream<F, Fut>(produce: F) -> FetchStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<v1::FetchChunk, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(produce(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
