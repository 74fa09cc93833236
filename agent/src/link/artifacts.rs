//! Artifacts from the master: the executor's [`ArtifactSource`] on a
//! cluster, fetching modules and input files from the master's `Artifacts`
//! service (the executor checks every digest itself).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

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

/// How long a fetch keeps trying a master it lost, counted from the loss
/// (a transfer that reached the master starts the count over).
const UNREACHABLE_FOR: Duration = Duration::from_secs(30);

/// How many transfers a fetch starts over after they were cut short.
const MAX_CUT_SHORT: u32 = 5;

/// Fetches artifacts from the master's `Artifacts` service. The client is
/// replaced when the agent's certificate is renewed.
pub(super) struct MasterArtifacts {
    client: Arc<RwLock<ArtifactsClient<Channel>>>,
    unreachable_for: Duration,
}

/// Why one try of a fetch ended without the artifact.
enum Failed {
    /// The master answered: its answer stands (no such artifact, not
    /// allowed, too large for the task).
    Final(std::io::Error),
    /// The connection was lost, before or during the transfer: the master
    /// may be restarting, so the whole fetch is tried again. `reached`:
    /// the master had answered this try before it was lost.
    Lost {
        error: std::io::Error,
        reached: bool,
    },
}

impl Failed {
    /// The status that cut a transfer the master had begun to answer.
    fn mid_transfer(status: tonic::Status) -> Self {
        match Self::from(status) {
            Self::Lost { error, .. } => Self::Lost {
                error,
                reached: true,
            },
            last => last,
        }
    }
}

impl From<tonic::Status> for Failed {
    /// A status the master sent is its answer, save `Unavailable`. One the
    /// transport made (it has a source) with a code that says the stream
    /// or connection broke (a refused dial, a reset stream, a closed
    /// connection) means the master went away; load shedding and the
    /// like stay answers.
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let made_here = std::error::Error::source(&status).is_some();
        let lost = match status.code() {
            Code::Unavailable => true,
            Code::Internal | Code::Unknown | Code::Cancelled => made_here,
            _ => false,
        };
        let error = std::io::Error::other(status.message().to_string());
        if lost {
            Self::Lost {
                error,
                reached: false,
            }
        } else {
            Self::Final(error)
        }
    }
}

impl From<std::io::Error> for Failed {
    /// Local file errors (and the task's disk limit) are final.
    fn from(error: std::io::Error) -> Self {
        Self::Final(error)
    }
}

impl MasterArtifacts {
    /// Fetches with whatever client `client` holds at the time.
    pub(super) fn new(client: Arc<RwLock<ArtifactsClient<Channel>>>) -> Self {
        Self {
            client,
            unreachable_for: UNREACHABLE_FOR,
        }
    }

    /// Runs `attempt` until it has the artifact, fails for good, or the
    /// master has been gone for `unreachable_for` since it was lost.
    /// Launches reach agents before the master's commit, so a task may be
    /// asking for its module while its master restarts; artifacts are
    /// content-addressed, so a transfer cut short is simply started again.
    async fn with_retries<T, F, Fut>(&self, mut attempt: F) -> std::io::Result<T>
    where
        F: FnMut(ArtifactsClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failed>>,
    {
        let mut pause = Duration::from_millis(50);
        let mut lost_at: Option<Instant> = None;
        let mut cut_short = 0;
        loop {
            let client = self.client.read().expect("not poisoned").clone();
            match attempt(client).await {
                Ok(value) => return Ok(value),
                Err(Failed::Final(error)) => return Err(error),
                Err(Failed::Lost { error, reached }) => {
                    let now = Instant::now();
                    if reached {
                        // A master that answers and then drops every
                        // transfer is not restarting: give up on it.
                        cut_short += 1;
                        if cut_short > MAX_CUT_SHORT {
                            return Err(error);
                        }
                        lost_at = None;
                    }
                    let since = *lost_at.get_or_insert(now);
                    if now + pause >= since + self.unreachable_for {
                        return Err(error);
                    }
                    tracing::debug!(%error, "artifact fetch lost its master; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// The chunks of the artifact named `digest`, as the master sends them.
async fn chunks(
    mut client: ArtifactsClient<Channel>,
    digest: &str,
) -> Result<tonic::Streaming<v1::FetchChunk>, Failed> {
    let request = v1::FetchRequest {
        digest: digest.to_string(),
    };
    Ok(client.fetch(request).await?.into_inner())
}

/// Writes the chunks of `stream` to `file`, refusing more than `limit`
/// bytes in all; returns their size.
async fn write_chunks(
    stream: &mut tonic::Streaming<v1::FetchChunk>,
    file: &mut tokio::fs::File,
    limit: u64,
) -> Result<u64, Failed> {
    use tokio::io::AsyncWriteExt;
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(Failed::mid_transfer)?;
        size = size.saturating_add(chunk.data.len() as u64);
        check_limit(size, limit)?;
        file.write_all(&chunk.data).await?;
    }
    file.flush().await?;
    Ok(size)
}

impl ArtifactSource for MasterArtifacts {
    fn fetch<'a>(&'a self, digest: &'a str) -> FetchFuture<'a> {
        Box::pin(self.with_retries(move |client| async move {
            let mut stream = chunks(client, digest).await?;
            let mut bytes = Vec::new();
            while let Some(chunk) = stream.next().await {
                bytes.extend_from_slice(&chunk.map_err(Failed::mid_transfer)?.data);
            }
            Ok(bytes)
        }))
    }

    /// Writes each chunk as it comes: one chunk in memory at a time. A
    /// transfer cut short removes the file it made and starts over.
    fn spool<'a>(
        &'a self,
        digest: &'a str,
        dest: &'a std::path::Path,
        limit: u64,
    ) -> SpoolFuture<'a> {
        Box::pin(self.with_retries(move |client| async move {
            let mut stream = chunks(client, digest).await?;
            let mut file = create_new(dest).await?;
            let written = write_chunks(&mut stream, &mut file, limit).await;
            if let Err(Failed::Lost { .. }) = &written {
                // Its writes done before the name goes (Windows refuses to
                // remove a file still being written).
                drop(file.into_std().await);
                tokio::fs::remove_file(dest)
                    .await
                    .or_else(not_found_is_fine)?;
            }
            written
        }))
    }
}

fn not_found_is_fine(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    //! A real gRPC server on loopback that dies mid-transfer, in its own
    //! runtime so that dropping the runtime closes its connections.

    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio_stream::Stream;
    use tonic::{Request, Response, Status, Streaming};
    use wasmos_proto::v1::artifacts_server::{Artifacts, ArtifactsServer};

    use super::*;

    const FIRST: &[u8] = b"the first chunk, ";
    const REST: &[u8] = b"and the rest of the artifact";

    #[derive(Clone, Copy)]
    enum Serve {
        /// Sends the first chunk, then nothing more, ever.
        FirstChunkOnly,
        /// Sends both chunks.
        Whole,
        /// Answers that there is no such artifact.
        NotFound,
        /// Sends the first chunk, then says it is unavailable.
        FirstChunkThenUnavailable,
    }

    struct FakeMaster {
        serve: Serve,
        calls: Arc<AtomicUsize>,
    }

    type Chunks = Pin<Box<dyn Stream<Item = Result<v1::FetchChunk, Status>> + Send>>;

    #[tonic::async_trait]
    impl Artifacts for FakeMaster {
        async fn upload(
            &self,
            _: Request<Streaming<v1::UploadChunk>>,
        ) -> Result<Response<v1::ArtifactInfo>, Status> {
            Err(Status::unimplemented("upload"))
        }

        type FetchStream = Chunks;

        async fn fetch(&self, _: Request<v1::FetchRequest>) -> Result<Response<Chunks>, Status> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let chunk = |data: &[u8]| {
                Ok(v1::FetchChunk {
                    data: data.to_vec(),
                })
            };
            let stream: Chunks = match self.serve {
                Serve::FirstChunkOnly => {
                    Box::pin(tokio_stream::iter(vec![chunk(FIRST)]).chain(tokio_stream::pending()))
                }
                Serve::Whole => Box::pin(tokio_stream::iter(vec![chunk(FIRST), chunk(REST)])),
                Serve::NotFound => return Err(Status::not_found("no artifact")),
                Serve::FirstChunkThenUnavailable => Box::pin(tokio_stream::iter(vec![
                    chunk(FIRST),
                    Err(Status::unavailable("going away")),
                ])),
            };
            Ok(Response::new(stream))
        }

        async fn stat(
            &self,
            _: Request<v1::StatRequest>,
        ) -> Result<Response<v1::ArtifactInfo>, Status> {
            Err(Status::unimplemented("stat"))
        }
    }

    /// A server on `listener` in a thread and runtime of its own, until
    /// the returned sender is dropped.
    fn serve(
        listener: std::net::TcpListener,
        serve: Serve,
    ) -> (tokio::sync::oneshot::Sender<()>, Arc<AtomicUsize>) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let calls = Arc::new(AtomicUsize::new(0));
        let master = FakeMaster {
            serve,
            calls: calls.clone(),
        };
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(ArtifactsServer::new(master))
                        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(
                            listener,
                        )),
                );
                let _ = stopped.await;
            });
            // The runtime drops here with every connection it served.
        });
        (stop, calls)
    }

    /// Binds the port again once the old server's socket is gone.
    async fn rebind(addr: std::net::SocketAddr) -> std::net::TcpListener {
        for _ in 0..200 {
            if let Ok(listener) = std::net::TcpListener::bind(addr) {
                return listener;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("cannot bind {addr} again");
    }

    fn source(addr: std::net::SocketAddr, unreachable_for: Duration) -> MasterArtifacts {
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
        MasterArtifacts {
            client: Arc::new(RwLock::new(client(endpoint))),
            unreachable_for,
        }
    }

    /// Waits until `done`, failing the test after 20 s.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn whole() -> Vec<u8> {
        [FIRST, REST].concat()
    }

    #[tokio::test]
    async fn a_spool_cut_short_by_a_master_restart_starts_the_file_over() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, _) = serve(listener, Serve::FirstChunkOnly);
        let artifacts = Arc::new(source(addr, UNREACHABLE_FOR));
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("input");
        let spool = tokio::spawn({
            let (artifacts, dest) = (artifacts.clone(), dest.clone());
            async move { artifacts.spool("digest", &dest, 1 << 20).await }
        });
        // The first chunk is on disk: the transfer is under way.
        until("the first chunk is on disk", || {
            std::fs::read(&dest).is_ok_and(|b| b == FIRST)
        })
        .await;
        drop(stop);
        let (_again, calls) = serve(rebind(addr).await, Serve::Whole);
        let size = tokio::time::timeout(Duration::from_secs(20), spool)
            .await
            .expect("the spool waits no longer than its master")
            .unwrap()
            .expect("the second master sends it whole");
        assert_eq!(size, whole().len() as u64);
        assert_eq!(std::fs::read(&dest).unwrap(), whole());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_fetch_cut_short_by_a_master_restart_is_fetched_again_whole() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, first_calls) = serve(listener, Serve::FirstChunkOnly);
        let artifacts = Arc::new(source(addr, UNREACHABLE_FOR));
        let fetch = tokio::spawn({
            let artifacts = artifacts.clone();
            async move { artifacts.fetch("digest").await }
        });
        until("the first master is asked", || {
            first_calls.load(Ordering::SeqCst) > 0
        })
        .await;
        drop(stop);
        let (_again, _) = serve(rebind(addr).await, Serve::Whole);
        let bytes = tokio::time::timeout(Duration::from_secs(20), fetch)
            .await
            .expect("the fetch waits no longer than its master")
            .unwrap()
            .expect("the second master sends it whole");
        assert_eq!(bytes, whole());
    }

    #[tokio::test]
    async fn a_spool_never_replaces_a_file_it_did_not_make() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop, _) = serve(listener, Serve::Whole);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("input");
        std::fs::write(&dest, "another input's").unwrap();
        let error = source(addr, UNREACHABLE_FOR)
            .spool("digest", &dest, 1 << 20)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists, "{error}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"another input's");
    }

    #[tokio::test]
    async fn a_master_that_cuts_every_transfer_short_is_given_up_on() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop, calls) = serve(listener, Serve::FirstChunkThenUnavailable);
        let fetched = tokio::time::timeout(
            Duration::from_secs(20),
            source(addr, UNREACHABLE_FOR).fetch("digest"),
        )
        .await
        .expect("the fetch gives up");
        assert!(fetched.is_err());
        assert_eq!(calls.load(Ordering::SeqCst) as u32, MAX_CUT_SHORT + 1);
    }

    #[tokio::test]
    async fn a_masters_answer_is_final() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop, calls) = serve(listener, Serve::NotFound);
        let artifacts = source(addr, UNREACHABLE_FOR);
        let error = artifacts.fetch("digest").await.unwrap_err();
        assert!(error.to_string().contains("no artifact"), "{error}");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "asked once, not again");
    }

    #[tokio::test]
    async fn a_master_that_stays_away_fails_the_fetch_after_its_window() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // Nothing listens there any more.
        let artifacts = source(addr, Duration::from_millis(300));
        let fetched = tokio::time::timeout(Duration::from_secs(20), artifacts.fetch("digest"))
            .await
            .expect("the fetch gives up");
        assert!(fetched.is_err());
    }
}
