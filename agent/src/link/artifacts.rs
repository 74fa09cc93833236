//! Artifacts from the master: the executor's [`ArtifactSource`] on a
//! cluster, fetching modules and input files from the master's `Artifacts`
//! service (the executor checks every digest itself).

use std::sync::{Arc, RwLock};

use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use wasmos_proto::v1;
use wasmos_proto::v1::artifacts_client::ArtifactsClient;

use crate::{ArtifactSource, FetchFuture};

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
}

impl ArtifactSource for MasterArtifacts {
    fn fetch<'a>(&'a self, digest: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            let mut client = self.client.read().expect("not poisoned").clone();
            let mut stream = client
                .fetch(v1::FetchRequest {
                    digest: digest.to_string(),
                })
                .await
                .map_err(|s| std::io::Error::other(s.message().to_string()))?
                .into_inner();
            let mut bytes = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|s| std::io::Error::other(s.message().to_string()))?;
                bytes.extend_from_slice(&chunk.data);
            }
            Ok(bytes)
        })
    }
}
