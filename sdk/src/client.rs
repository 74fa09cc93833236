//! The connection to a master, and artifact uploads.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;
use wasmos_proto::StandbyHint;
use wasmos_proto::v1;
use wasmos_proto::v1::artifacts_client::ArtifactsClient;
use wasmos_proto::v1::scheduler_client::SchedulerClient;

use crate::connect::{Channel, ConnectOptions};
use crate::error::{Error, Result};
use crate::scheduler::{Events, FrameworkConfig, Scheduler};

/// Size of each `Upload` chunk: well under gRPC's 4 MiB message limit, large
/// enough that a 100 MiB module takes only a hundred messages.
pub const UPLOAD_CHUNK: usize = 1 << 20;

/// How long [`Client::connect_with`] waits for an election to end.
pub const FOLLOW_FOR: Duration = Duration::from_secs(30);

/// What a master says it is.
enum Probe {
    Serving,
    /// A standby: the leader's URL.
    Leader(String),
    /// A standby while nobody leads: its answer and the wait it hints.
    Wait(tonic::Status, Duration),
}

/// A connection to one master.
///
/// Cheap to clone: clones share one HTTP/2 connection, which reconnects by
/// itself after a network error. Create one per master and pass it around.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
    url: String,
    /// Every master given to [`Client::connect_with`], and how to reach
    /// them: where [`Client::follow_leader`] looks after a failover.
    cluster: std::sync::Arc<(String, ConnectOptions)>,
}

/// What [`Client::upload`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uploaded {
    /// The artifact's name: the sha256 of its bytes, lowercase hex. Use it as
    /// a task's `artifact` or an input's `artifact`.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// True when the master already had these bytes and nothing was sent.
    pub already_present: bool,
}

impl Client {
    /// Connects to the master at `url` (`https://master:5050`, or
    /// `http://127.0.0.1:5050` for a local cluster), trusting the CA and
    /// sending the token of the environment (`WASMOS_CA`, `WASMOS_TOKEN`)
    /// or the profile (see [`ConnectOptions::from_env`]).
    ///
    /// Fails at once when nothing listens there, so a typo in a URL shows up
    /// before any work is done.
    pub async fn connect(url: impl Into<String>) -> Result<Client> {
        Client::connect_with(url, ConnectOptions::from_env()?).await
    }

    /// Connects with what `options` say to trust and show.
    ///
    /// `url` may list several masters of one cluster, comma-separated
    /// (`https://m1:5050,https://m2:5050`). Of masters on etcd one leads;
    /// a standby answers with the leader's address, which is followed, and
    /// during an election with a wait, which is waited (for at most
    /// [`FOLLOW_FOR`]). So any master of the cluster leads to its leader.
    pub async fn connect_with(url: impl Into<String>, options: ConnectOptions) -> Result<Client> {
        let url = url.into();
        let started = std::time::Instant::now();
        loop {
            let mut last_error = None;
            let mut wait = None;
            for one in url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
                let client = match Client::connect_one(one.to_string(), options.clone()).await {
                    Ok(client) => client,
                    Err(e @ Error::Connect { .. }) => {
                        last_error = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                match client.probe().await {
                    Probe::Serving => return Ok(client.of_cluster(&url)),
                    Probe::Leader(leader) => {
                        match Client::connect_one(leader, options.clone()).await {
                            Ok(leader) => return Ok(leader.of_cluster(&url)),
                            Err(e @ Error::Connect { .. }) => last_error = Some(e),
                            Err(e) => return Err(e),
                        }
                    }
                    Probe::Wait(status, after) => {
                        wait = Some(after);
                        last_error = Some(Error::Rpc {
                            call: "Connect",
                            status,
                        });
                    }
                }
            }
            match wait {
                Some(after) if started.elapsed() + after < FOLLOW_FOR => {
                    tokio::time::sleep(after).await;
                }
                _ => {
                    return Err(last_error.unwrap_or_else(|| Error::InvalidUrl {
                        url,
                        message: "no URL given".into(),
                    }));
                }
            }
        }
    }

    fn of_cluster(mut self, urls: &str) -> Client {
        self.cluster = std::sync::Arc::new((urls.to_string(), self.cluster.1.clone()));
        self
    }

    /// A client of the master that leads now, found from the masters this
    /// client was made with (see [`Client::connect_with`]): after a
    /// failover, the new leader.
    pub async fn follow_leader(&self) -> Result<Client> {
        let (urls, options) = &*self.cluster;
        Client::connect_with(urls.clone(), options.clone()).await
    }

    /// Asks the master whether it serves: a standby answers `UNAVAILABLE`
    /// with the leader's URL, or, while nobody leads, with a wait. Any
    /// other answer (a master that serves, an older one without the health
    /// service, a refused credential) is this master's to give.
    async fn probe(&self) -> Probe {
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
        let request = tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        };
        // A master that does not answer in time is left to the call that
        // follows to report.
        let answer = tokio::time::timeout(Duration::from_secs(5), health.check(request)).await;
        let Ok(Err(status)) = answer else {
            return Probe::Serving;
        };
        match StandbyHint::of(&status) {
            Some(StandbyHint::Leader(leader)) => Probe::Leader(leader),
            Some(StandbyHint::Wait(after)) => Probe::Wait(status, after),
            None => Probe::Serving,
        }
    }

    /// Connects to the one master at `url`.
    async fn connect_one(url: String, options: ConnectOptions) -> Result<Client> {
        let invalid = |message: String| Error::InvalidUrl {
            url: url.clone(),
            message,
        };
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        let authority = endpoint
            .uri()
            .authority()
            .map(|a| a.to_string())
            .ok_or_else(|| invalid("no host:port".into()))?;
        match endpoint.uri().scheme_str() {
            Some("https") => {
                let ca = options.ca_pem.clone().ok_or_else(|| {
                    Error::Config(format!(
                        "{url} serves TLS: give the cluster's CA (--ca FILE, WASMOS_CA, or \
                         `wasmos login`); a master writes it to <work-dir>/ca.pem"
                    ))
                })?;
                let mut tls = wasmos_tls::ClientTls::trusting(ca);
                tls.identity = options.identity.clone();
                endpoint = endpoint
                    .tls_config(tls.tonic())
                    .map_err(|e| invalid(e.to_string()))?;
            }
            Some("http") => {
                // A plaintext client of a TLS master would fail with a bare
                // "transport error" on its first call: ask first.
                if wasmos_tls::speaks_tls(&authority).await {
                    return Err(Error::Config(format!(
                        "the master at {url} serves TLS: use https://{authority} (with --ca)"
                    )));
                }
            }
            _ => return Err(invalid("the scheme must be https:// or http://".into())),
        }
        let channel = endpoint.connect().await.map_err(|source| Error::Connect {
            url: url.clone(),
            source,
        })?;
        Ok(Client {
            channel: InterceptedService::new(channel, options.credentials()?),
            cluster: std::sync::Arc::new((url.clone(), options)),
            url,
        })
    }

    /// The URL this client was created with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The underlying channel, to call services the SDK does not wrap
    /// (e.g. `Operator`).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub(crate) fn scheduler_client(&self) -> SchedulerClient<Channel> {
        SchedulerClient::new(self.channel.clone())
    }

    /// Registers a new framework and starts its session. See [`Scheduler`].
    pub async fn subscribe(&self, config: FrameworkConfig) -> Result<(Scheduler, Events)> {
        Scheduler::subscribe(self.clone(), config).await
    }

    /// Uploads a module or input file and returns its digest.
    ///
    /// `bytes` may be a wasm binary, any other file, or WebAssembly text
    /// (`.wat`), which is compiled to a binary first so users can pass either.
    /// Asks the master first (`Stat`) and skips the upload when it already
    /// has these bytes.
    pub async fn upload(&self, bytes: impl AsRef<[u8]>) -> Result<Uploaded> {
        let bytes = module_bytes(bytes.as_ref())?;
        let digest = digest_of(&bytes);
        self.upload_expecting(&bytes, &digest).await
    }

    /// Uploads bytes exactly as they are (no `.wat` detection): for input
    /// files that might look like WebAssembly text.
    pub async fn upload_raw(&self, bytes: &[u8]) -> Result<Uploaded> {
        self.upload_expecting(bytes, &digest_of(bytes)).await
    }

    /// Uploads `bytes` that must hash to `expected` (lowercase hex sha256),
    /// e.g. a digest recorded in a manifest. The master verifies the bytes
    /// and refuses a mismatch with `InvalidArgument`, so a corrupt copy never
    /// gets stored under a name that is not its own. Bytes are sent as they
    /// are (no `.wat` conversion).
    pub async fn upload_expecting(&self, bytes: &[u8], expected: &str) -> Result<Uploaded> {
        let mut artifacts = ArtifactsClient::new(self.channel.clone());
        match artifacts
            .stat(v1::StatRequest {
                digest: expected.to_string(),
            })
            .await
        {
            Ok(info) => {
                let info = info.into_inner();
                return Ok(Uploaded {
                    digest: info.digest,
                    size: info.size,
                    already_present: true,
                });
            }
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => return Err(Error::rpc("Stat")(status)),
        }
        let mut chunks: Vec<v1::UploadChunk> = bytes
            .chunks(UPLOAD_CHUNK)
            .map(|data| v1::UploadChunk {
                digest: String::new(),
                data: data.to_vec(),
            })
            .collect();
        if chunks.is_empty() {
            chunks.push(v1::UploadChunk::default());
        }
        chunks[0].digest = expected.to_string();
        let info = artifacts
            .upload(tokio_stream::iter(chunks))
            .await
            .map_err(Error::rpc("Upload"))?
            .into_inner();
        Ok(Uploaded {
            digest: info.digest,
            size: info.size,
            already_present: false,
        })
    }
}

/// The sha256 of `bytes` as lowercase hex: the name the master gives them.
pub fn digest_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Turns WebAssembly text into a binary; passes anything else through.
///
/// Bytes that start with the wasm magic number, or that are not UTF-8 text,
/// are returned unchanged. Text whose first form (after `;;` comments) is a
/// parenthesised S-expression and that parses as `.wat` is compiled. Other
/// text is returned unchanged (it may be an input file), unless it clearly
/// tries to be a module (starts with `(module` or `(component`), in which
/// case the parse error is returned so a typo is not uploaded as data. To
/// upload bytes exactly as they are, use [`Client::upload_raw`].
pub fn module_bytes(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>> {
    use std::borrow::Cow;
    if bytes.starts_with(b"\0asm") {
        return Ok(Cow::Borrowed(bytes));
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Ok(Cow::Borrowed(bytes));
    };
    let body = strip_wat_comments(text);
    if !body.starts_with('(') {
        return Ok(Cow::Borrowed(bytes));
    }
    match wat::parse_str(text) {
        Ok(binary) => Ok(Cow::Owned(binary)),
        Err(e) if body.starts_with("(module") || body.starts_with("(component") => {
            Err(Error::Wat(e.to_string()))
        }
        Err(_) => Ok(Cow::Borrowed(bytes)),
    }
}

/// The text after leading whitespace and `;;` line comments.
fn strip_wat_comments(mut text: &str) -> &str {
    loop {
        text = text.trim_start();
        match text.strip_prefix(";;") {
            Some(rest) => text = rest.split_once('\n').map_or("", |(_, r)| r),
            None => return text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wat_is_compiled_binary_and_data_pass_through() {
        let wasm = module_bytes(b";; hi\n(module)").unwrap();
        assert!(wasm.starts_with(b"\0asm"));
        assert_eq!(&*module_bytes(&wasm).unwrap(), &*wasm);
        assert_eq!(&*module_bytes(b"plain data").unwrap(), b"plain data");
        assert!(module_bytes(b"(module (func $f (bogus)))").is_err());
    }
}
