//! Artifacts among the masters of one cluster on etcd.
//!
//! The leader indexes an artifact in the shared registry, but its bytes are
//! on the leader's own disk. So before an upload is answered the leader
//! hands the bytes to at least one other live master ([`PeerLink::hand_out`],
//! the `Hold` call), and a master asked for bytes it lacks (a new leader,
//! after the one that stored them died) fetches them from another
//! ([`PeerLink::fetch`], the `Give` call). Masters find each other in etcd
//! (`<prefix>/masters/`, kept alive by each master's lease) and, on a TLS
//! cluster, prove who they are with a client certificate the cluster's CA
//! issued each (`wasmos://master/<id>`): artifacts are readable only by
//! their owners, and only masters may trade them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};
use wasmos_proto::v1;
use wasmos_proto::v1::master_peers_client::MasterPeersClient;
use wasmos_proto::v1::master_peers_server::MasterPeers;

use super::intake::{self, Received};
use super::limits::MinRate;
use crate::ids::validate_digest;

/// Chunks handed to a peer: as large as an upload's.
const CHUNK: usize = super::MAX_UPLOAD_CHUNK;

/// How long one master may take to hold or give one artifact.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);

/// The client certificates a connection to a standby came with (the
/// leader's gRPC port reads them from tonic instead), for the standby's
/// `MasterPeers` service: axum's connect info of its TLS listener.
#[derive(Clone, Debug, Default)]
pub struct PeerCerts(pub Option<Vec<rustls::pki_types::CertificateDer<'static>>>);

/// The `MasterPeers` service: holds and gives the files of `dir`, the
/// master's artifact directory, to other masters only.
pub struct BlobService {
    dir: PathBuf,
    max_size: u64,
    /// On a TLS cluster callers must show a master's certificate; an
    /// insecure one (loopback only) has no credentials at all.
    tls: bool,
}

impl BlobService {
    pub fn new(dir: &Path, max_size: u64, tls: bool) -> anyhow::Result<BlobService> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        Ok(BlobService {
            dir: dir.to_path_buf(),
            max_size,
            tls,
        })
    }

    /// The master that made `request`, or why it is refused.
    fn require_master<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if !self.tls {
            return Ok(());
        }
        let from_tonic = request.peer_certs().map(|c| c.to_vec());
        let from_axum = || {
            request
                .extensions()
                .get::<axum::extract::ConnectInfo<PeerCerts>>()
                .and_then(|info| info.0.0.clone())
        };
        let certs = from_tonic.or_else(from_axum).unwrap_or_default();
        match certs
            .first()
            .and_then(|leaf| wasmos_tls::master_id_of(leaf))
        {
            Some(_) => Ok(()),
            None => Err(Status::permission_denied(
                "only the cluster's masters trade artifacts (with a master certificate of its CA)",
            )),
        }
    }
}

type GiveStream = std::pin::Pin<Box<dyn Stream<Item = Result<v1::FetchChunk, Status>> + Send>>;

#[tonic::async_trait]
impl MasterPeers for BlobService {
    async fn hold(
        &self,
        request: Request<Streaming<v1::UploadChunk>>,
    ) -> Result<Response<v1::ArtifactInfo>, Status> {
        self.require_master(&request)?;
        let mut chunks = request.into_inner();
        let first = chunks
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("no chunk"))??;
        validate_digest(&first.digest).map_err(|e| {
            Status::invalid_argument(format!("a held artifact names its digest: {e}"))
        })?;
        let digest = first.digest.clone();
        let path = self.dir.join(&digest);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(Response::new(v1::ArtifactInfo {
                size: tokio::fs::metadata(&path).await.map_or(0, |m| m.len()),
                digest,
            }));
        }
        let chunks = tokio_stream::once(Ok(first)).chain(chunks);
        let received =
            intake::receive(&self.dir.join("tmp"), self.max_size, NO_FLOOR, chunks).await?;
        let info = v1::ArtifactInfo {
            digest: received.digest.clone(),
            size: received.size,
        };
        place(received, &self.dir).await?;
        tracing::debug!(digest = %info.digest, "holding an artifact for the cluster");
        Ok(Response::new(info))
    }

    type GiveStream = GiveStream;

    async fn give(
        &self,
        request: Request<v1::FetchRequest>,
    ) -> Result<Response<GiveStream>, Status> {
        self.require_master(&request)?;
        let digest = request.into_inner().digest;
        validate_digest(&digest).map_err(Status::invalid_argument)?;
        let file = tokio::fs::File::open(self.dir.join(&digest))
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    Status::not_found(format!("no artifact {digest} here"))
                }
                _ => Status::internal(format!("artifact store: {e}")),
            })?;
        let chunks =
            super::file_chunks(file, CHUNK).map(|chunk| chunk.map(|data| v1::FetchChunk { data }));
        Ok(Response::new(Box::pin(chunks)))
    }
}

/// Peers hold what the leader checked already: no minimum rate.
const NO_FLOOR: MinRate = MinRate {
    bytes_per_sec: 0,
    window: Duration::from_secs(30),
    grace: Duration::from_secs(10),
};

/// Renames a received artifact into `dir` (under its digest).
async fn place(received: Received, dir: &Path) -> Result<(), Status> {
    let Received { tmp, digest, .. } = received;
    tokio::fs::rename(tmp.path(), dir.join(&digest))
        .await
        .map_err(|e| Status::internal(format!("artifact store: {e}")))?;
    tmp.stored();
    Ok(())
}

/// How a master reaches the other masters of its cluster.
pub struct PeerLink {
    me: String,
    peers: crate::etcd::Peers,
    /// The cluster's CA and this master's certificate (`None`: insecure).
    tls: Option<wasmos_tls::ClientTls>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl PeerLink {
    /// The masters registered under `peers` other than `me`, reached with
    /// `tls` (the cluster's CA and a master certificate it issued).
    pub fn new(
        me: &str,
        peers: crate::etcd::Peers,
        tls: Option<wasmos_tls::ClientTls>,
    ) -> PeerLink {
        PeerLink {
            me: me.to_string(),
            peers,
            tls,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The gRPC URLs of the other live masters.
    async fn others(&self) -> Vec<String> {
        match crate::etcd::leadership::masters(&self.peers.etcd, &self.peers.keys).await {
            Ok(masters) => masters
                .into_iter()
                .filter(|m| m.master_id != self.me && reachable(&m.grpc_url))
                .map(|m| m.grpc_url)
                .collect(),
            Err(e) => {
                tracing::warn!("cannot list the other masters: {}", e.message());
                Vec::new()
            }
        }
    }

    fn client(&self, url: &str) -> Result<MasterPeersClient<Channel>, Status> {
        let mut channels = self.channels.lock().expect("not poisoned");
        let channel = match channels.get(url) {
            Some(channel) => channel.clone(),
            None => {
                let mut endpoint = Endpoint::from_shared(url.to_string())
                    .map_err(|e| Status::internal(format!("master URL {url}: {e}")))?
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(TRANSFER_TIMEOUT);
                if let Some(tls) = &self.tls {
                    endpoint = endpoint
                        .tls_config(tls.tonic())
                        .map_err(|e| Status::internal(format!("TLS to {url}: {e}")))?;
                }
                let channel = endpoint.connect_lazy();
                channels.insert(url.to_string(), channel.clone());
                channel
            }
        };
        Ok(MasterPeersClient::new(channel).max_decoding_message_size(super::MAX_UPLOAD_MESSAGE))
    }

    /// Hands the artifact at `path` to every other live master; returns
    /// once one holds it (true), or all failed or none runs (false). The
    /// others go on in the background.
    pub async fn hand_out(&self, path: &Path, digest: &str) -> bool {
        let others = self.others().await;
        let (held, mut answers) = tokio::sync::mpsc::channel(others.len().max(1));
        for url in others {
            let client = match self.client(&url) {
                Ok(client) => client,
                Err(e) => {
                    tracing::warn!(%url, "cannot reach a master: {}", e.message());
                    continue;
                }
            };
            let (path, digest, held) = (path.to_path_buf(), digest.to_string(), held.clone());
            tokio::spawn(async move {
                let result = hold(client, &path, &digest).await;
                if let Err(e) = &result {
                    tracing::warn!(%url, %digest, "a master did not take the artifact: {}", e.message());
                }
                let _ = held.send(result.is_ok()).await;
            });
        }
        drop(held);
        while let Some(ok) = answers.recv().await {
            if ok {
                return true;
            }
        }
        false
    }

    /// Fetches `digest` from another master into `dir` (the artifact
    /// directory, checked against the digest on the way); false if no
    /// master has it.
    pub async fn fetch(&self, digest: &str, dir: &Path, max_size: u64) -> bool {
        for url in self.others().await {
            let Ok(mut client) = self.client(&url) else {
                continue;
            };
            let answer = client
                .give(v1::FetchRequest {
                    digest: digest.to_string(),
                })
                .await;
            let chunks = match answer {
                Ok(chunks) => chunks.into_inner(),
                Err(e) => {
                    tracing::debug!(%url, digest, "a master does not give the artifact: {}", e.message());
                    continue;
                }
            };
            let chunks = tokio_stream::once(Ok(named(digest))).chain(chunks.map(|chunk| {
                chunk.map(|c| v1::UploadChunk {
                    digest: String::new(),
                    data: c.data,
                })
            }));
            match intake::receive(&dir.join("tmp"), max_size, NO_FLOOR, chunks).await {
                Ok(received) => match place(received, dir).await {
                    Ok(()) => {
                        tracing::info!(%url, digest, "fetched an artifact from another master");
                        return true;
                    }
                    Err(e) => tracing::warn!(digest, "{}", e.message()),
                },
                Err(e) => {
                    tracing::warn!(%url, digest, "fetching an artifact failed: {}", e.message());
                }
            }
        }
        false
    }
}

/// Can another master be reached at `url`? Not at an empty one, nor at
/// port 0 (a master told to listen on any free port says so until it
/// serves).
pub fn reachable(url: &str) -> bool {
    !url.is_empty() && !url.ends_with(":0")
}

/// Sends the file at `path` to one master's `Hold`.
async fn hold(
    mut client: MasterPeersClient<Channel>,
    path: &Path,
    digest: &str,
) -> Result<(), Status> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Status::internal(format!("artifact read: {e}")))?;
    // The digest goes first, alone; a read error ends the stream early,
    // and the peer's digest check fails.
    let chunks = tokio_stream::once(named(digest)).chain(
        super::file_chunks(file, CHUNK)
            .map_while(Result::ok)
            .map(|data| v1::UploadChunk {
                digest: String::new(),
                data,
            }),
    );
    client.hold(chunks).await.map(|_| ())
}

/// The first chunk of a transfer: the digest the bytes must hash to.
fn named(digest: &str) -> v1::UploadChunk {
    v1::UploadChunk {
        digest: digest.to_string(),
        data: Vec::new(),
    }
}
