//! The master's network shell: gRPC (`Scheduler`, `AgentLink`, `Artifacts`,
//! `Operator`, health, reflection) and HTTP (`/health`, `/state`,
//! `/metrics`) around the sans-IO core.
//!
//! One actor task owns the core (`actor.rs`); every handler talks to it
//! through an [`handle::ActorHandle`]. This is the only part of the master
//! that knows about tokio, tonic or axum.

mod actor;
mod agent_link;
mod artifacts;
mod audit;
mod connections;
mod event_queue;
mod handle;
mod histogram;
mod http;
mod jobs;
mod masters;
mod memory;
mod metrics;
mod operator;
mod refusals;
mod scheduler;
pub mod standby;
mod tls_listener;
pub mod trust;
mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::service::interceptor::InterceptedService;
use wasmos_proto::v1::agent_link_server::AgentLinkServer;
use wasmos_proto::v1::artifacts_server::ArtifactsServer;
use wasmos_proto::v1::jobs_server::JobsServer;
use wasmos_proto::v1::master_peers_server::MasterPeersServer;
use wasmos_proto::v1::operator_server::OperatorServer;
use wasmos_proto::v1::scheduler_server::SchedulerServer;

pub use actor::ActorConfig;
pub use artifacts::{
    ArtifactStore, BlobService, MAX_UPLOAD_CHUNK, MAX_UPLOAD_MESSAGE, MinRate, Refused,
    StoreLimits, UploadState, sweep_unindexed,
};
pub use audit::{AUDIT_LOG_BYTES, AUDIT_LOG_FILES};
pub use connections::ConnectionLimits;
pub use trust::{TlsSettings, Transport};

use crate::core::{Core, CoreConfig, Input};
use crate::ids::Role;
use crate::resources::Resources;
use crate::store::{self, RedbStore, Store};

/// The HTTP/2 receive window of each stream (see [`Master::start`]): a
/// quarter of an upload chunk, enough for 2.5 GB/s on loopback and 25 MB/s
/// at 10 ms round trips.
const UPLOAD_STREAM_WINDOW: u32 = 256 << 10;

/// Reads the wall clock, in milliseconds since the Unix epoch. The master
/// reads it once, at start (see `actor.rs`); tests pass their own.
#[derive(Clone)]
pub struct WallClock(pub Arc<dyn Fn() -> u64 + Send + Sync>);

impl WallClock {
    /// The system's clock.
    pub fn system() -> WallClock {
        WallClock(Arc::new(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64
        }))
    }

    pub fn now_ms(&self) -> u64 {
        (self.0)()
    }
}

impl std::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WallClock({} ms)", self.now_ms())
    }
}

/// Everything `wasmos master` can be told.
#[derive(Clone, Debug)]
pub struct MasterConfig {
    /// gRPC address. Port 0 picks a free port (see [`Master::grpc_addr`]).
    pub listen: SocketAddr,
    /// HTTP address for `/health`, `/state`, `/metrics`; `None` for none.
    pub http: Option<SocketAddr>,
    /// Where artifacts are stored.
    pub work_dir: PathBuf,
    pub core: CoreConfig,
    pub actor: ActorConfig,
    /// Initial role weights (also settable at run time via `Operator`).
    pub role_weights: Vec<(String, f64)>,
    /// Initial role quotas.
    pub quotas: Vec<(String, Resources)>,
    /// The largest artifact accepted, in bytes. Default 256 MiB.
    pub max_artifact_size: u64,
    /// The most artifact bytes one principal (not an admin) may have
    /// stored. Default 4 GiB.
    pub artifact_quota: u64,
    /// The most artifacts and bytes stored in all (default 100,000 and
    /// 64 GiB), by one principal (a tenth of the artifacts), the uploads in
    /// progress (128, 8 per principal) and their minimum rate (64 KiB/s
    /// over 30 s after 10 s): see [`StoreLimits::new`].
    pub artifact_limits: StoreLimits,
    /// Serve `/metrics` without a token (`--metrics-public`): only on a
    /// loopback HTTP address.
    pub metrics_public: bool,
    /// Caps on gRPC connections; `None` derives them from the file
    /// descriptor limit ([`ConnectionLimits::from_fd_limit`]).
    pub connection_limits: Option<ConnectionLimits>,
    /// The most bytes of events queued for one framework before its stream
    /// is closed as fallen behind. Default 8 MiB: a reconciliation of the
    /// most ids one call may name (50,000) fits, with room.
    pub max_stream_bytes: usize,
    /// Artifacts nobody uploaded, fetched or asked about for this long are
    /// deleted. Default 24 hours.
    pub artifact_ttl: Duration,
    /// A job that ended this long ago keeps its summary and loses its
    /// per-index outcomes. Default 7 days.
    pub job_retention: Duration,
    /// Where the registry lives. Default `None`: `registry.redb` in
    /// `work_dir`.
    pub store: Option<Arc<dyn Store>>,
    /// Of masters on etcd: where the others say they are (`ListMasters`).
    /// `None` for a master alone.
    pub peers: Option<crate::etcd::Peers>,
    /// How often the master pings each connection (agents' streams
    /// among them), and how long it waits for the answer, at most 10 s,
    /// before closing it. Default 30 s; masters on etcd ping every half
    /// lease, so a silent agent is let go within about a lease.
    pub keepalive: Duration,
    /// Of a master on etcd: the leaders so far, its own term counted (for
    /// the metrics).
    pub leader_history: Option<crate::etcd::leadership::LeaderHistory>,
    /// While this file exists, registry commits wait (a test hook: see
    /// `store::GatedStore`).
    pub hold_commits_while: Option<PathBuf>,
    /// The wall clock. Default the system's.
    pub wall_clock: WallClock,
    /// The size of one audit log file ([`AUDIT_LOG_BYTES`]) and how many
    /// are kept ([`AUDIT_LOG_FILES`]): its disk budget.
    pub audit_log_bytes: u64,
    pub audit_log_files: u32,
    /// TLS (the default) or plaintext on loopback.
    pub transport: Transport,
}

impl MasterConfig {
    /// Defaults for a master listening on `listen` with its files in
    /// `work_dir`.
    pub fn new(listen: SocketAddr, work_dir: PathBuf) -> MasterConfig {
        MasterConfig {
            listen,
            http: None,
            work_dir,
            core: CoreConfig {
                master_id: format!("{:08x}", rand::random::<u32>()),
                ..CoreConfig::default()
            },
            actor: ActorConfig {
                min_tick_interval: Duration::from_millis(200),
                max_backlog: actor::MAX_BACKLOG,
            },
            role_weights: Vec::new(),
            quotas: Vec::new(),
            max_artifact_size: 256 << 20,
            artifact_quota: 4 << 30,
            artifact_limits: StoreLimits::new(100_000, 64 << 30),
            metrics_public: false,
            max_stream_bytes: 8 << 20,
            connection_limits: None,
            artifact_ttl: Duration::from_secs(24 * 3600),
            job_retention: Duration::from_secs(7 * 24 * 3600),
            store: None,
            peers: None,
            keepalive: Duration::from_secs(30),
            leader_history: None,
            hold_commits_while: None,
            wall_clock: WallClock::system(),
            audit_log_bytes: AUDIT_LOG_BYTES,
            audit_log_files: AUDIT_LOG_FILES,
            transport: Transport::Tls(TlsSettings::new()),
        }
    }
}

/// A running master.
pub struct Master {
    grpc_addr: SocketAddr,
    trust: Option<Arc<trust::Trust>>,
    new_admin_token: Option<PathBuf>,
    http_addr: Option<SocketAddr>,
    epoch: u64,
    actor: Option<tokio::task::JoinHandle<Result<(), store::StoreError>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The servers, which end gracefully when this is dropped: a dropped
    /// task would leave its connections' tasks serving a dead actor, and
    /// clients on them would never reconnect to a new master.
    servers: Vec<tokio::task::JoinHandle<()>>,
    shutdown: Option<tokio::sync::watch::Sender<()>>,
    /// Its open windows of repeated refusals are summed up when the master
    /// is stopped or dropped (`wasmos master` on Ctrl-C).
    audit: Arc<audit::Audit>,
}

impl Master {
    /// Loads the registry, binds the ports, starts the actor and the
    /// servers, and returns. Health reports SERVING only once the whole
    /// registry is loaded and this start's epoch is durable.
    pub async fn start(config: MasterConfig) -> anyhow::Result<Master> {
        if matches!(config.transport, Transport::Insecure) {
            for addr in std::iter::once(config.listen).chain(config.http) {
                if !addr.ip().is_loopback() {
                    anyhow::bail!(
                        "--insecure serves plaintext without credentials, so only on a loopback \
                         address, not {addr}: drop --insecure (TLS is the default) or listen on 127.0.0.1"
                    );
                }
            }
        }
        if config.metrics_public
            && let Some(http) = config.http
            && !http.ip().is_loopback()
        {
            anyhow::bail!(
                "--metrics-public serves /metrics without a token, so only on a loopback HTTP \
                 address, not {http}: drop it (a read-only token reads /metrics) or use --http 127.0.0.1:PORT"
            );
        }
        // The work dir holds the registry (the CA's key, tasks' env), the
        // admin token and the audit log: its owner's alone.
        wasmos_tls::private_dir(&config.work_dir)
            .with_context(|| format!("cannot create the work dir {}", config.work_dir.display()))?;
        let registry: Arc<dyn Store> = match &config.store {
            Some(store) => store.clone(),
            None => Arc::new(RedbStore::open(&RedbStore::path_in(&config.work_dir))?),
        };
        let registry: Arc<dyn Store> = match &config.hold_commits_while {
            Some(gate) => Arc::new(store::GatedStore::new(registry, gate.clone())),
            None => registry,
        };
        let loading = Instant::now();
        let mut opened = {
            let registry = registry.clone();
            tokio::task::spawn_blocking(move || store::open(&*registry)).await??
        };
        let clock = actor::Clock::start();
        let mut core_config = config.core.clone();
        core_config.master_epoch = opened.epoch;
        core_config.launch_key = opened.launch_key.clone();
        core_config.wall_clock_origin_ms = config.wall_clock.now_ms();
        // The core's wall time (its origin plus its monotonic clock), for
        // the shell's checks of what the core stamps (a token's expiry):
        // one clock, not two that drift apart.
        let core_wall_clock = {
            let origin = core_config.wall_clock_origin_ms;
            WallClock(Arc::new(move || origin + clock.now().millis()))
        };
        core_config.artifacts = crate::core::ArtifactRules {
            limits: config.artifact_limits,
            quota: config.artifact_quota,
            ttl: config.artifact_ttl,
        };
        let trust_records = trust::Records::take(&mut opened.registry);
        let stored_jobs = opened.registry.take_jobs();
        // The usage ledger's current hour, which the core adds to.
        opened.registry.usage = {
            let registry = registry.clone();
            let now = config.wall_clock.now_ms();
            tokio::task::spawn_blocking(move || store::usage_of_hour(&*registry, now)).await??
        };
        let (mut core, recovered) = Core::recover(core_config, opened.registry, clock.now())
            .map_err(|e| anyhow::anyhow!("{}: {e}", registry.describe()))?;
        for note in &recovered.notes {
            tracing::warn!("registry: {note}");
        }
        tracing::info!(
            epoch = opened.epoch,
            agents = recovered.agents,
            frameworks = recovered.frameworks,
            tasks = recovered.tasks,
            elapsed = ?loading.elapsed(),
            "registry loaded from {}",
            registry.describe()
        );
        let mut writes = core.take_writes();
        for (role, weight) in &config.role_weights {
            let out = core.handle(
                Input::UpdateRole {
                    role: role.clone(),
                    weight: Some(*weight),
                    quota: None,
                },
                clock.now(),
            );
            out.reply
                .map_err(|e| anyhow::anyhow!("--role-weight {role}={weight}: {e}"))?;
            writes.extend(out.writes);
        }
        for (role, quota) in &config.quotas {
            crate::ids::validate_role(role).map_err(|e| anyhow::anyhow!("--quota: {e}"))?;
            let out = core.handle(
                Input::UpdateRole {
                    role: Role::from(role.as_str()).to_string(),
                    weight: None,
                    quota: Some(*quota),
                },
                clock.now(),
            );
            out.reply
                .map_err(|e| anyhow::anyhow!("--quota {role}: {e}"))?;
            writes.extend(out.writes);
        }
        // The artifact index is the core's; the files are this disk's.
        let artifacts_dir = config.work_dir.join("artifacts");
        let cannot_open = || {
            format!(
                "cannot open the artifact store under {}",
                artifacts_dir.display()
            )
        };
        let on_disk = artifacts::files_in(&artifacts_dir).with_context(cannot_open)?;
        let expired_files =
            core.reconcile_artifact_files(on_disk, registry.is_shared(), clock.now());
        writes.extend(core.take_writes());
        registry.commit(&writes)?;
        artifacts::remove_files(&artifacts_dir, &expired_files.0).with_context(cannot_open)?;

        let ttl = config.artifact_ttl;
        let sweep_every = (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(600));

        let limits = config
            .connection_limits
            .unwrap_or_else(ConnectionLimits::from_fd_limit);
        let gatekeeper = connections::Gatekeeper::new(limits);
        tracing::info!(
            total = limits.total,
            per_address = limits.per_address,
            "connection limits"
        );
        // The jobs are rebuilt before the actor starts: it runs them, and
        // reads no registry itself.
        let job_tasks: Vec<String> = jobs::driver::registry::frameworks_of(&stored_jobs)
            .iter()
            .flat_map(|f| core.framework_tasks(f))
            .collect();
        let restored = {
            let registry = registry.clone();
            let epoch = opened.epoch;
            tokio::task::spawn_blocking(move || {
                jobs::driver::registry::restore(&*registry, stored_jobs, epoch, &job_tasks)
            })
            .await?
        };
        let wall_clock = config.wall_clock.clone();
        let driver =
            jobs::driver::Driver::new(restored, config.job_retention, move || wall_clock.now_ms());
        let (commands, inbox) = mpsc::channel(65_536);
        let handle = handle::ActorHandle::new(commands);
        let store = ArtifactStore::new(
            &artifacts_dir,
            config.max_artifact_size,
            config.artifact_limits,
            handle.clone(),
        );
        let actor = tokio::spawn(
            actor::Actor::new(core, config.actor.clone(), clock, registry.clone())
                .with_connections_shed(gatekeeper.shed_counter())
                .with_artifacts_held_alone(store.held_alone.clone())
                .with_jobs(driver)
                .run(inbox),
        );
        let sweeper = store.clone();
        let job_service = jobs::JobsHandle::new(handle.clone());
        let pins = job_service.clone();
        let mut tasks = vec![tokio::spawn(async move {
            let mut every = tokio::time::interval(sweep_every);
            loop {
                every.tick().await;
                // Nothing expires while the jobs cannot say what they need.
                let Ok(pinned) = pins.pinned_artifacts().await else {
                    continue;
                };
                if let Err(e) = sweeper.expire(ttl, pinned).await {
                    tracing::warn!("expiring artifacts: {e}");
                }
            }
        })];
        tasks.push(tokio::spawn(jobs::driver::registry::forget_outputs(
            job_service.clone(),
            handle.clone(),
            registry.clone(),
            jobs::driver::TICK,
        )));

        let listener = TcpListener::bind(config.listen).await.with_context(|| {
            format!(
                "cannot listen on {} (is another master running?)",
                config.listen
            )
        })?;
        let grpc_addr = listener.local_addr()?;
        let trust = match &config.transport {
            Transport::Insecure => None,
            Transport::Tls(settings) => {
                let mut settings = settings.clone();
                if settings.advertise.is_empty() {
                    settings.advertise = vec![default_advertise(grpc_addr)];
                }
                let names = server_names(grpc_addr, &settings);
                let registry = registry.clone();
                let work_dir = config.work_dir.clone();
                let clock = core_wall_clock.clone();
                let actor = handle.clone();
                let trust = tokio::task::spawn_blocking(move || {
                    trust::Trust::open(
                        registry,
                        trust_records,
                        settings,
                        &names,
                        &work_dir,
                        clock,
                        actor,
                    )
                })
                .await??;
                let new_admin_token = trust.make_admin_token().await?;
                Some((Arc::new(trust), new_admin_token))
            }
        };
        let (trust, new_admin_token) = match trust {
            Some((trust, token)) => (Some(trust), token),
            None => (None, None),
        };
        // With other masters, every upload is copied to them and what this
        // disk lacks is fetched from them (see `artifacts/peers.rs`).
        let (store, blobs) = match &config.peers {
            Some(peers) => {
                let tls = match &trust {
                    Some(trust) => Some(trust.peer_tls(&config.core.master_id)?),
                    None => None,
                };
                let link = artifacts::PeerLink::new(&config.core.master_id, peers.clone(), tls);
                let blobs = artifacts::BlobService::new(
                    &config.work_dir.join("artifacts"),
                    config.max_artifact_size,
                    trust.is_some(),
                )?;
                (store.with_peers(link), Some(blobs))
            }
            None => (store, None),
        };
        let audit = Arc::new(
            audit::Audit::open_rotating(
                &config.work_dir,
                config.wall_clock.clone(),
                config.audit_log_bytes,
                config.audit_log_files,
            )
            .with_context(|| format!("cannot open the audit log in {}", config.work_dir.display()))?
            .with_master(&config.core.master_id),
        );
        let gate = |agents, service| trust::Gate {
            trust: trust.clone(),
            agents,
            audit: audit.clone(),
            connections: gatekeeper.clone(),
            service,
        };
        // Summaries of repeated refusals are written within a second of
        // their window closing, even when nothing else is written.
        let ticking = audit.clone();
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                ticking.flush_due();
            }
        }));
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<SchedulerServer<scheduler::SchedulerService>>()
            .await;
        // Reflection v1, and v1alpha for the clients that only speak it
        // (grpcio-reflection, grpcui, Postman, older grpcurl).
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(wasmos_proto::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1().context("gRPC reflection")?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .context("gRPC reflection v1alpha")?;
        // Peers that stop answering are found by HTTP/2 pings; one
        // connection cannot open streams without end.
        let mut server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(config.keepalive))
            .http2_keepalive_timeout(Some(config.keepalive.min(Duration::from_secs(10))))
            .max_concurrent_streams(Some(1024))
            // What a peer may send ahead of what a call has read: held in
            // memory per stream, so an upload in progress holds at most
            // this beside the chunk it is on (hyper's default is 1 MiB).
            .initial_stream_window_size(Some(UPLOAD_STREAM_WINDOW));
        if let Some(trust) = &trust {
            server = server
                .tls_config(
                    trust
                        .server_identity()
                        .tonic(Some(trust.client_roots()))
                        .timeout(Duration::from_secs(10)),
                )
                .context("the master's TLS certificate")?;
        }

        let masters = masters::Masters {
            master_id: config.core.master_id.clone(),
            epoch: opened.epoch,
            peers: config.peers.clone(),
            history: config.leader_history,
            since_ms: config.wall_clock.now_ms(),
        };
        // The gRPC port and the web UI serve the same two services.
        let operator_service = Arc::new(operator::OperatorService {
            actor: handle.clone(),
            trust: trust.clone(),
            audit: audit.clone(),
            masters: masters.clone(),
        });
        let jobs_service = Arc::new(jobs::JobsService {
            jobs: job_service,
            audit: audit.clone(),
            registry: registry.clone(),
        });
        let router = server
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(InterceptedService::new(
                SchedulerServer::new(scheduler::SchedulerService {
                    actor: handle.clone(),
                    trust: trust.clone(),
                    audit: audit.clone(),
                    max_stream_bytes: config.max_stream_bytes,
                }),
                gate(false, "Scheduler"),
            ))
            .add_service(AgentLinkServer::new(agent_link::AgentLinkService {
                actor: handle.clone(),
                trust: trust.clone(),
                audit: audit.clone(),
                connections: gatekeeper.clone(),
            }))
            .add_service(InterceptedService::new(
                ArtifactsServer::new(artifacts::ArtifactsService {
                    store,
                    actor: handle.clone(),
                    audit: audit.clone(),
                    trust: trust.clone(),
                })
                // One upload chunk at a time, each at most this: what an
                // upload in progress holds (see `artifacts/intake.rs`).
                .max_decoding_message_size(MAX_UPLOAD_MESSAGE),
                gate(true, "Artifacts"),
            ))
            .add_service(InterceptedService::new(
                OperatorServer::from_arc(operator_service.clone()),
                gate(false, "Operator"),
            ))
            .add_service(InterceptedService::new(
                JobsServer::from_arc(jobs_service.clone()),
                gate(false, "Jobs"),
            ))
            // Masters only: checked by certificate in the service itself.
            .add_optional_service(blobs.map(|blobs| {
                MasterPeersServer::new(blobs).max_decoding_message_size(MAX_UPLOAD_MESSAGE)
            }));
        let (shutdown, stopping) = tokio::sync::watch::channel(());
        let stopped = |mut rx: tokio::sync::watch::Receiver<()>| async move {
            // Ends when the sender (the `Master`) is dropped.
            while rx.changed().await.is_ok() {}
        };
        let mut servers = Vec::new();
        let grpc_stopped = stopped(stopping.clone());
        let gatekeeper_for_server = gatekeeper.clone();
        servers.push(tokio::spawn(async move {
            if let Err(e) = router
                // Admitted connections only, each with TCP_NODELAY (see
                // `connections.rs`).
                .serve_with_incoming_shutdown(
                    connections::admitted(listener, gatekeeper_for_server),
                    grpc_stopped,
                )
                .await
            {
                tracing::error!("gRPC server failed: {e}");
            }
        }));

        let http_addr = match config.http {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} for HTTP"))?;
                let http_addr = listener.local_addr()?;
                let listener = connections::GatedListener::new(listener, gatekeeper.clone())?;
                let history = Arc::new(ui::history::History::default());
                tasks.push(ui::spawn_sampler(handle.clone(), history.clone()));
                let ui = Arc::new(ui::Ui {
                    actor: handle.clone(),
                    operator: operator_service.clone(),
                    jobs: jobs_service.clone(),
                    sessions: ui::session::Sessions::new(trust.clone()),
                    history,
                });
                let state = http::HttpState {
                    actor: handle.clone(),
                    masters: masters.clone(),
                };
                let app = http::router(state, trust.clone(), config.metrics_public)
                    .merge(ui::router(ui))
                    .into_make_service_with_connect_info::<ui::Peer>();
                let http_stopped = stopped(stopping.clone());
                let served = match &trust {
                    None => tokio::spawn(async move {
                        axum::serve(listener, app)
                            .with_graceful_shutdown(http_stopped)
                            .await
                    }),
                    Some(trust) => {
                        let listener = tls_listener::TlsListener::new(
                            listener,
                            trust.server_identity().rustls()?,
                        );
                        tokio::spawn(async move {
                            axum::serve(listener, app)
                                .with_graceful_shutdown(http_stopped)
                                .await
                        })
                    }
                };
                servers.push(tokio::spawn(async move {
                    if let Ok(Err(e)) = served.await {
                        tracing::error!("HTTP server failed: {e}");
                    }
                }));
                Some(http_addr)
            }
            None => None,
        };
        let tls = trust.is_some();
        tracing::info!(%grpc_addr, ?http_addr, epoch = opened.epoch, tls, "master started");
        Ok(Master {
            grpc_addr,
            trust,
            new_admin_token,
            http_addr,
            epoch: opened.epoch,
            actor: Some(actor),
            tasks,
            servers,
            shutdown: Some(shutdown),
            audit,
        })
    }

    /// This start's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The address the gRPC server listens on.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The gRPC URL clients use: `https://` unless the master is insecure.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme(), self.grpc_addr)
    }

    /// `https` unless the master is insecure.
    pub fn scheme(&self) -> &'static str {
        if self.trust.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The CA clients verify this master against (`None` if insecure).
    pub fn ca_pem(&self) -> Option<&str> {
        self.trust.as_deref().map(|t| t.ca_pem())
    }

    /// Where the admin token is kept (`None` if insecure).
    pub fn admin_token_path(&self) -> Option<&std::path::Path> {
        self.trust.as_deref().map(|t| t.admin_token_path())
    }

    /// True when this start wrote a new admin token.
    pub fn made_admin_token(&self) -> bool {
        self.new_admin_token.is_some()
    }

    /// The address the HTTP server listens on, if any.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Runs until the master cannot go on: its actor stopped (a registry
    /// write failed, or it panicked) or a server failed. The error says why;
    /// `wasmos master` then exits non-zero for its supervisor to restart it,
    /// and the restarted master loses nothing that was durable.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let actor = self.actor.take().expect("waited once");
        let servers =
            futures::future::select_all(self.tasks.iter_mut().chain(self.servers.iter_mut()));
        tokio::select! {
            result = actor => match result {
                Ok(Ok(())) => anyhow::bail!("the master's actor stopped"),
                Ok(Err(e)) => Err(anyhow::anyhow!(e).context("the master stopped: a registry write failed")),
                Err(e) if e.is_panic() => anyhow::bail!("the master's actor panicked: {}", panic_message(e)),
                Err(e) => anyhow::bail!("the master's actor ended: {e}"),
            },
            _ = servers => anyhow::bail!("a server of the master stopped"),
        }
    }
}

impl Master {
    /// Stops the master and waits until everything it ran has ended, so its
    /// registry file is closed (and may be opened again) when this returns.
    pub async fn stop(mut self) {
        let actor = self.actor.take();
        let tasks = std::mem::take(&mut self.tasks);
        for task in actor
            .iter()
            .map(|a| a.abort_handle())
            .chain(tasks.iter().map(|t| t.abort_handle()))
        {
            task.abort();
        }
        if let Some(actor) = actor {
            let _ = actor.await;
        }
        for task in tasks {
            let _ = task.await;
        }
        // The servers close their connections; a client that holds one
        // open past a few seconds is cut off.
        self.shutdown.take();
        for server in std::mem::take(&mut self.servers) {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

/// Where clients reach a master listening on `addr`: the address itself,
/// or this host's name for an unspecified address.
fn default_advertise(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!(
            "{}:{}",
            hostname().unwrap_or_else(|| "localhost".into()),
            addr.port()
        )
    } else {
        addr.to_string()
    }
}

/// The names an issued server certificate covers: the listen address,
/// loopback, `localhost`, this host's name, the advertised hosts and
/// `--tls-san`.
pub fn server_names(addr: SocketAddr, settings: &TlsSettings) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if !addr.ip().is_unspecified() {
        names.push(addr.ip().to_string());
    }
    names.extend(hostname());
    for advertised in &settings.advertise {
        let host = advertised
            .rsplit_once(':')
            .map_or(advertised.as_str(), |(host, _)| host);
        names.push(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        );
    }
    names.extend(settings.sans.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| !n.is_empty() && seen.insert(n.clone()));
    names
}

/// This host's name, unless the OS has none to give.
fn hostname() -> Option<String> {
    Some(wasmos_platform::host::hostname()).filter(|h| h != "localhost")
}

fn panic_message(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

impl Drop for Master {
    fn drop(&mut self) {
        self.audit.flush_all();
        if let Some(actor) = &self.actor {
            actor.abort();
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}
