//! Artifacts from the master: the executor's [`ArtifactSource`] on a
//! cluster, fetching modules and input files from the master's `Artifacts`
//! service (the executor checks every digest itself).

use std::sync::{Arc, RwLock};

use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use wasmos_proto::v1;
use wasmos_proto::v1::artifacts_client::ArtifactsClient;

use crate::executor::{check_limit, create_new};
use crate::{ArtifactSource, FetchFuture, SpoolFuture};

/// A lazily connected client of the `Artifacts` service at `endpoint`.
pub(super) fn client(endpoint: Endpoint) -> ArtifactsClient<Channel> {
    ArtifactsClient::new(endpoint.connect_lazy()).max_decoding_message_size(8 << 20)
}

/// Fetches artifacts from the master's `Artifacts` service. The client is
/// replaced when the agent's certificate is renewed.
pub(super) struct MasterArtifacts {
    client: Arc<RwLock<ArtifactsClient<Channel>>>,
}

impl MasterArtifacts {
    /// Fetches with whatever client `client` holds at the time.
    pub(super) fn new(client: Arc<RwLock<ArtifactsClient<Channel>>>) -> Self {
        Self { client }
    }

    /// The artifact's chunks as the master sends them. A master that
    /// cannot be reached is tried again for [`UNREACHABLE_FOR`]: launches
    /// reach agents before the master's commit, so a task may be asking for
    /// its module while the master restarts.
    async fn chunks(&self, digest: &str) -> std::io::Result<tonic::Streaming<v1::FetchChunk>> {
        let give_up = std::time::Instant::now() + UNREACHABLE_FOR;
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            let mut client = self.client.read().expect("not poisoned").clone();
            let request = v1::FetchRequest {
                digest: digest.to_string(),
            };
            match client.fetch(request).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        && std::time::Instant::now() + pause < give_up =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(1));
                }
                Err(status) => return Err(io_error(status)),
            }
        }
    }
}

/// How long a fetch waits for an unreachable master.
const UNREACHABLE_FOR: std::time::Duration = std::time::Duration::from_secs(30);

fn io_error(status: tonic::Status) -> std::io::Error {
    std::io::Error::other(status.message().to_string())
}

impl ArtifactSource for MasterArtifacts {
    fn fetch<'a>(&'a self, digest: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            let mut stream = self.chunks(digest).await?;
            let mut bytes = Vec::new();
            while let Some(chunk) = stream.next().await {
                bytes.extend_from_slice(&chunk.map_err(io_error)?.data);
            }
            Ok(bytes)
        })
    }

    /// Writes each chunk as it comes: one chunk in memory at a time.
    fn spool<'a>(
        &'a self,
        digest: &'a str,
        dest: &'a std::path::Path,
        limit: u64,
    ) -> SpoolFuture<'a> {
        Box::pin(async move {
            use tokio::io::AsyncWriteExt;
            let mut stream = self.chunks(digest).await?;
            let mut file = create_new(dest).await?;
            let mut size = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(io_error)?;
                size = size.saturating_add(chunk.data.len() as u64);
                check_limit(size, limit)?;
                file.write_all(&chunk.data).await?;
            }
            file.flush().await?;
            Ok(size)
        })
    }
}
