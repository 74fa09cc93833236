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
mod handle;
mod http;
mod metrics;
mod operator;
mod scheduler;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::transport::server::TcpIncoming;
use wasmos_proto::v1::agent_link_server::AgentLinkServer;
use wasmos_proto::v1::artifacts_server::ArtifactsServer;
use wasmos_proto::v1::operator_server::OperatorServer;
use wasmos_proto::v1::scheduler_server::SchedulerServer;

pub use actor::ActorConfig;
pub use artifacts::ArtifactStore;

use crate::core::{Core, CoreConfig, Input};
use crate::ids::Role;
use crate::resources::Resources;

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
    /// Artifacts nobody uploaded, fetched or asked about for this long are
    /// deleted. Default 24 hours.
    pub artifact_ttl: Duration,
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
                allocation_interval: Duration::from_millis(200),
            },
            role_weights: Vec::new(),
            quotas: Vec::new(),
            max_artifact_size: 256 << 20,
            artifact_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// A running master.
pub struct Master {
    grpc_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Master {
    /// Binds the ports, starts the actor and the servers, and returns at once.
    pub async fn start(config: MasterConfig) -> anyhow::Result<Master> {
        let store =
            ArtifactStore::open(&config.work_dir.join("artifacts"), config.max_artifact_size)
                .with_context(|| {
                    format!(
                        "cannot create the artifact store under {}",
                        config.work_dir.display()
                    )
                })?;
        let mut core = Core::new(config.core.clone());
        for (role, weight) in &config.role_weights {
            core.handle(
                Input::UpdateRole {
                    role: role.clone(),
                    weight: Some(*weight),
                    quota: None,
                },
                actor::now(),
            )
            .reply
            .map_err(|e| anyhow::anyhow!("--role-weight {role}={weight}: {e}"))?;
        }
        for (role, quota) in &config.quotas {
            crate::ids::validate_role(role).map_err(|e| anyhow::anyhow!("--quota: {e}"))?;
            core.handle(
                Input::UpdateRole {
                    role: Role::from(role.as_str()).to_string(),
                    weight: None,
                    quota: Some(*quota),
                },
                actor::now(),
            )
            .reply
            .map_err(|e| anyhow::anyhow!("--quota {role}: {e}"))?;
        }

        let sweeper = store.clone();
        let ttl = config.artifact_ttl;
        let sweep_every = (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(600));

        let (commands, inbox) = mpsc::channel(65_536);
        let handle = handle::ActorHandle::new(commands);
        let mut tasks = vec![tokio::spawn(
            actor::Actor::new(core, config.actor.clone()).run(inbox),
        )];
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(sweep_every);
            loop {
                every.tick().await;
                if let Err(e) = sweeper.expire(ttl).await {
                    tracing::warn!("expiring artifacts: {e}");
                }
            }
        }));

        let listener = TcpListener::bind(config.listen).await.with_context(|| {
            format!(
                "cannot listen on {} (is another master running?)",
                config.listen
            )
        })?;
        let grpc_addr = listener.local_addr()?;
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<SchedulerServer<scheduler::SchedulerService>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(wasmos_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("gRPC reflection")?;
        let router = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(SchedulerServer::new(scheduler::SchedulerService {
                actor: handle.clone(),
            }))
            .add_service(AgentLinkServer::new(agent_link::AgentLinkService {
                actor: handle.clone(),
            }))
            .add_service(
                ArtifactsServer::new(artifacts::ArtifactsService { store })
                    .max_decoding_message_size(8 << 20),
            )
            .add_service(OperatorServer::new(operator::OperatorService {
                actor: handle.clone(),
            }));
        tasks.push(tokio::spawn(async move {
            if let Err(e) = router
                // `serve_with_incoming` ignores the builder's `tcp_nodelay`:
                // without it, Nagle's algorithm holds each small event or
                // reply until the peer's delayed ACK (40 ms on Linux).
                .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
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
                let app = http::router(handle.clone());
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app).await {
                        tracing::error!("HTTP server failed: {e}");
                    }
                }));
                Some(http_addr)
            }
            None => None,
        };
        tracing::info!(%grpc_addr, ?http_addr, "master started");
        Ok(Master {
            grpc_addr,
            http_addr,
            tasks,
        })
    }

    /// The address the gRPC server listens on.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The address the HTTP server listens on, if any.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Runs until the servers stop (they run until the process ends).
    pub async fn wait(mut self) {
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
