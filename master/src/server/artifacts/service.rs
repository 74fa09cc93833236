//! The `Artifacts` service: uploads (into the [`ArtifactStore`]), fetches
//! and stats, each allowed only to whom may read or write the artifact.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use wasmos_proto::v1;
use wasmos_proto::v1::artifacts_server::Artifacts;

use super::ArtifactStore;
use crate::ids::{AgentId, validate_digest};
use crate::server::audit::{Actor, Audit};
use crate::server::handle::ActorHandle;
use crate::server::trust::{Caller, Trust, caller_of};

/// Chunk size of fetch streams: well under gRPC's 4 MiB message limit.
const CHUNK: usize = 256 * 1024;

pub struct ArtifactsService {
    pub store: ArtifactStore,
    pub actor: ActorHandle,
    pub audit: Arc<Audit>,
    /// Ends uploads whose token is revoked or expires (`None`: insecure,
    /// no tokens).
    pub trust: Option<Arc<Trust>>,
}

impl ArtifactsService {
    /// May the caller read `digest`? Principals: those who uploaded it;
    /// agents: those running (or keeping the sandbox of) a task that uses
    /// it. Others are told it does not exist, so digests reveal nothing.
    async fn require_read<T>(&self, request: &Request<T>, digest: &str) -> Result<(), Status> {
        validate_digest(digest).map_err(Status::invalid_argument)?;
        let caller = caller_of(request)?;
        let allowed = match &caller {
            Caller::Principal(who) => self.store.readable(who, digest).await?,
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
        if self.store.contains(digest).await? {
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
        let credential_ended = {
            let ended = self.trust.as_ref().map(|t| t.token_ended(&who.accessor));
            async move {
                match ended {
                    Some(ended) => ended.await,
                    None => std::future::pending().await,
                }
            }
        };
        let stored = self
            .store
            .put(&who, request.into_inner(), credential_ended)
            .await;
        // An upload cut by its token's end is audited (refusals by the
        // limits are not: a flood of them would flood the log).
        self.audit.refusal(
            Actor::Principal(&who),
            "Artifacts.Upload",
            serde_json::Value::Null,
            &stored,
        );
        let info = stored?;
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
        let file = self.store.open_file(&request.into_inner().digest).await?;
        let stream =
            super::file_chunks(file, CHUNK).map(|chunk| chunk.map(|data| v1::FetchChunk { data }));
        Ok(Response::new(Box::pin(stream)))
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
