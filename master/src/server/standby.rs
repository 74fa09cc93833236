//! What a master serves while it stands by (`wasmos master --etcd`), on the
//! ports it will serve on once it leads, so that a client that reaches a
//! standby learns where the leader is instead of failing:
//!
//! - on the gRPC port, every call is answered `UNAVAILABLE` before any
//!   credential check, with the leader's gRPC URL in the
//!   [`LEADER_METADATA`] metadata; while nobody leads (an election is on),
//!   with "no leader yet" and [`RETRY_METADATA`], the milliseconds to wait;
//! - on the HTTP port, `/health` answers 503 `standby` with the leader,
//!   and every other path redirects to the leader's HTTP port.
//!
//! The SDK, the CLI and agents follow the hint at once. Only other masters
//! are served: the `MasterPeers` service, which trades artifacts' bytes
//! (see `artifacts/peers.rs`), on a TLS cluster with a master's client
//! certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use wasmos_proto::v1::MasterInfo;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use wasmos_proto::v1::master_peers_server::MasterPeersServer;

use super::artifacts::{BlobService, MAX_UPLOAD_MESSAGE, PeerCerts};
use super::connections::{ConnectionLimits, GatedListener, Gatekeeper};
use super::tls_listener::TlsListener;

pub use wasmos_proto::{LEADER_METADATA, RETRY_METADATA};

/// The servers of a standby, until [`Standby::stop`].
pub struct Standby {
    stop: watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<()>>,
    grpc: SocketAddr,
    http: Option<SocketAddr>,
}

#[derive(Clone)]
struct Answers {
    leader: watch::Receiver<Option<MasterInfo>>,
    retry: Duration,
}

impl Standby {
    /// Serves on `grpc` and `http` (TLS with `tls`, rustls configs the
    /// cluster's CA vouches for; plaintext without), answering with what
    /// `leader` says now; `retry` is the wait hinted while nobody leads.
    /// Other masters trade artifacts with `blobs`.
    pub async fn start(
        grpc: SocketAddr,
        http: Option<SocketAddr>,
        tls: Option<StandbyTls>,
        blobs: BlobService,
        leader: watch::Receiver<Option<MasterInfo>>,
        retry: Duration,
    ) -> anyhow::Result<Standby> {
        let (stop, stopped) = watch::channel(false);
        let answers = Answers { leader, retry };
        let keeper = Gatekeeper::new(ConnectionLimits::from_fd_limit());
        let blobs = MasterPeersServer::new(blobs).max_decoding_message_size(MAX_UPLOAD_MESSAGE);
        let grpc_router = Router::new()
            .route_service("/wasmos.v1.MasterPeers/{*call}", blobs)
            .fallback(grpc_answer)
            .with_state(answers.clone());
        let (grpc_tls, http_tls) = match tls {
            Some(tls) => (Some(tls.grpc), Some(tls.http)),
            None => (None, None),
        };
        let (grpc_server, grpc) =
            serve(grpc, grpc_router, grpc_tls, &keeper, stopped.clone()).await?;
        let mut servers = vec![grpc_server];
        let http = match http {
            Some(http) => {
                let http_router = Router::new()
                    .route("/health", axum::routing::get(health))
                    .fallback(to_leader)
                    .with_state(answers);
                let (http_server, http) =
                    serve(http, http_router, http_tls, &keeper, stopped).await?;
                servers.push(http_server);
                Some(http)
            }
            None => None,
        };
        Ok(Standby {
            stop,
            servers,
            grpc,
            http,
        })
    }

    /// The address the gRPC port is bound to (port 0 resolved).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
    }

    /// The address the HTTP port is bound to, if it serves one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// Stops serving and frees the ports (for the master to bind them):
    /// connections still open are given a moment to close, then cut.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for mut server in self.servers {
            if tokio::time::timeout(Duration::from_millis(200), &mut server)
                .await
                .is_err()
            {
                server.abort();
                let _ = server.await;
            }
        }
    }
}

/// The TLS of a standby's ports.
pub struct StandbyTls {
    /// Takes the client certificates of other masters.
    grpc: Arc<rustls::ServerConfig>,
    http: Arc<rustls::ServerConfig>,
}

/// The TLS a standby serves with: the operator's own certificate
/// (`--tls-cert`), or one the cluster's CA (`ca`, read from the shared
/// registry) issues for `listen`'s names, as the master will once it leads.
pub fn tls_config(
    ca: &wasmos_proto::v1::StoredCa,
    settings: &super::TlsSettings,
    listen: SocketAddr,
) -> anyhow::Result<StandbyTls> {
    let identity = match &settings.own_identity {
        Some((chain, key)) => wasmos_tls::ServerIdentity {
            cert_chain_pem: chain.clone(),
            key_pem: key.clone(),
        },
        None => wasmos_tls::Ca::from_pem(&ca.cert_pem, &ca.key_pem)?.issue_server(
            &super::server_names(listen, settings),
            Duration::from_secs(24 * 3600),
        )?,
    };
    Ok(StandbyTls {
        grpc: identity.rustls_verifying_clients(&ca.cert_pem)?,
        http: identity.rustls()?,
    })
}

/// The client certificates of a TLS connection (for `MasterPeers`).
impl Connected<IncomingStream<'_, TlsListener>> for PeerCerts {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> PeerCerts {
        PeerCerts(
            stream
                .io()
                .get_ref()
                .1
                .peer_certificates()
                .map(<[_]>::to_vec),
        )
    }
}

impl Connected<IncomingStream<'_, GatedListener>> for PeerCerts {
    fn connect_info(_: IncomingStream<'_, GatedListener>) -> PeerCerts {
        PeerCerts(None)
    }
}

/// Binds `addr` and serves `router` on it until `stopped` says so; also
/// returns the address bound (`addr` with port 0 resolved).
async fn serve(
    addr: SocketAddr,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    keeper: &Arc<Gatekeeper>,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} while standing by: {e}"))?;
    let bound = listener.local_addr()?;
    let gated = GatedListener::new(listener, keeper.clone())?;
    let until_stopped = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let server = match tls {
        Some(config) => {
            let listener = TlsListener::new(gated, config);
            let app = router.into_make_service_with_connect_info::<PeerCerts>();
            tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(until_stopped)
                    .await;
            })
        }
        None => {
            let app = router.into_make_service_with_connect_info::<PeerCerts>();
            tokio::spawn(async move {
                let _ = axum::serve(gated, app)
                    .with_graceful_shutdown(until_stopped)
                    .await;
            })
        }
    };
    Ok((server, bound))
}

/// A gRPC answer with no message: `UNAVAILABLE`, and where to go.
async fn grpc_answer(State(answers): State<Answers>) -> Response {
    let leader = answers.leader.borrow().clone();
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from_static("14"));
    let message = match &leader {
        Some(leader) => {
            if let Ok(url) = HeaderValue::from_str(&leader.grpc_url) {
                headers.insert(LEADER_METADATA, url);
            }
            format!(
                "this master stands by; {} leads at {}",
                leader.master_id, leader.grpc_url
            )
        }
        None => {
            let ms = answers.retry.as_millis().to_string();
            headers.insert(RETRY_METADATA, HeaderValue::from_str(&ms).expect("digits"));
            format!("no leader yet: an election is on; retry in {ms} ms")
        }
    };
    // grpc-message is percent-encoded: the message is printable ASCII
    // without `%`.
    if let Ok(message) = HeaderValue::from_str(&message) {
        headers.insert("grpc-message", message);
    }
    response
}

async fn health(State(answers): State<Answers>) -> Response {
    let leader = answers.leader.borrow().clone();
    let body = serde_json::json!({
        "status": "standby",
        "leader": leader.as_ref().map(|l| &l.master_id),
        "leader_grpc": leader.as_ref().map(|l| &l.grpc_url),
        "leader_http": leader.as_ref().map(|l| &l.http_url),
    });
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

/// Every other HTTP path: to the same path on the leader's HTTP port.
async fn to_leader(State(answers): State<Answers>, uri: Uri) -> Response {
    let leader = answers.leader.borrow().clone();
    match leader.filter(|l| !l.http_url.is_empty()) {
        Some(leader) => {
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            let target = format!("{}{path}", leader.http_url.trim_end_matches('/'));
            (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, target)]).into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "this master stands by and no leader is known yet\n",
        )
            .into_response(),
    }
}
