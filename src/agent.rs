//! `wasmos agent`: runs tasks for a master. Dials out; listens on nothing
//! unless `--http` opens a local port for `/state` and `/metrics`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::routing::get;
use wasmos_agent::ExecutorConfig;
use wasmos_agent::identity::Identity;
use wasmos_agent::link::{Agent, AgentConfig};
use wasmos_agent::process::handle::Mode;
use wasmos_master::Resources;
use wasmos_proto::v1;

use crate::cli_args;

/// Run an agent: offers this machine's cpus, memory and disk to a master and
/// runs the wasm tasks it is sent, each under hard limits in its own sandbox.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub action: Option<Action>,
    /// The master's URL, or the URLs of several masters of one cluster,
    /// comma-separated: the agent attaches to whichever leads [default: the
    /// one joined, else http://127.0.0.1:5050].
    #[arg(long, env = "WASMOS_MASTER")]
    master: Option<String>,
    /// Join a TLS master with the string `wasmos token create --agent`
    /// printed: the agent pins the cluster's CA by it, makes its own key and
    /// gets a certificate naming its agent id, kept in <work-dir>/tls/.
    /// Needed once; a restarted agent uses the identity it has. The string
    /// holds a secret that every local user sees in `ps` when it is given
    /// here: prefer --join-file, or the WASMOS_JOIN environment variable.
    #[arg(long, value_name = "JOIN_STRING", conflicts_with = "join_file")]
    join: Option<String>,
    /// Join with the string read from this file (see --join). Without
    /// --join or --join-file, the WASMOS_JOIN environment variable is read.
    #[arg(long, value_name = "PATH")]
    join_file: Option<PathBuf>,
    /// CPU cores to offer (default: all of this machine's).
    #[arg(long)]
    cpus: Option<f64>,
    /// Memory to offer, e.g. 4GiB.
    #[arg(long, default_value = "4GiB", value_parser = cli_args::size)]
    mem: u64,
    /// Disk to offer for task files, e.g. 10GiB.
    #[arg(long, default_value = "10GiB", value_parser = cli_args::size)]
    disk: u64,
    /// An attribute frameworks can match on, e.g. `--attr zone=eu-1`.
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = cli_args::key_value)]
    attrs: Vec<(String, String)>,
    /// Reserve resources for a role, e.g. `--reserve batch=cpus:1,mem:1GiB`.
    #[arg(long = "reserve", value_name = "ROLE=RESOURCES", value_parser = cli_args::role_resources)]
    reservations: Vec<(String, Resources)>,
    /// Where sandboxes, compiled modules and the agent id live.
    #[arg(long, default_value = "wasmos-agent")]
    pub work_dir: PathBuf,
    /// This agent's name for people (default: the host name).
    #[arg(long)]
    hostname: Option<String>,
    /// Open a local HTTP port for /state and /metrics (none by default).
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Cap on each task's stdout and stderr.
    #[arg(long, default_value = "10MiB", value_parser = cli_args::size)]
    output_cap: u64,
    /// Sandboxes of finished, acknowledged tasks are deleted after this long.
    #[arg(long, default_value = "1h", value_parser = cli_args::duration)]
    sandbox_retention: Duration,
    /// Most sandboxes of ended tasks kept: past it the oldest are deleted
    /// before their retention time. An agent running thousands of tasks a
    /// second would otherwise keep millions of directories for an hour.
    #[arg(long, default_value_t = wasmos_agent::DEFAULT_MAX_SANDBOXES)]
    max_sandboxes: usize,
    /// Cap on the on-disk cache of compiled modules; the least recently used
    /// are evicted past it (a restarted agent then recompiles them). The
    /// default, 1GiB, holds hundreds of typical modules.
    #[arg(long, default_value = "1GiB", value_parser = cli_args::size)]
    module_cache_size: u64,
    /// Cap on the disk all sandboxes take together: past it, sandboxes of
    /// ended tasks are deleted oldest first, before their retention time
    /// (a running task's never). Default: 80% of --disk, leaving headroom
    /// for tasks that write more than they asked for.
    #[arg(long, value_parser = cli_args::size)]
    sandbox_disk_limit: Option<u64>,
    /// Free space to keep on the work dir's file system: below it, sandboxes
    /// of ended tasks are deleted oldest first. The default, 1GiB, keeps the
    /// agent (and its machine) able to write logs and compiled modules.
    #[arg(long, default_value = "1GiB", value_parser = cli_args::size)]
    min_free_disk: u64,
    /// How often disk use (sandboxes, module cache) is checked; it is also
    /// checked whenever a task ends. The default, 10s, bounds the overshoot
    /// of a fast writer without walking sandboxes constantly.
    #[arg(long, default_value = "10s", value_parser = cli_args::duration)]
    gc_interval: Duration,
    /// Run tasks in this process instead of an executor process: they then
    /// end when the agent does (a restart loses them).
    #[arg(long)]
    in_process_executor: bool,
    /// An executor process left with no agent for this long, and no task
    /// running, exits by itself.
    #[arg(long, default_value = "5m", value_parser = cli_args::duration)]
    executor_orphan_timeout: Duration,
    /// Run as the Windows service of this name, started by the service
    /// control manager (`sc.exe create NAME binPath= "...\\wasmos.exe agent
    /// --windows-service NAME ..."`), which stops it; logs then go to
    /// <work-dir>/agent.log, as a service has no console.
    #[cfg(windows)]
    #[arg(long, value_name = "NAME")]
    pub windows_service: Option<String>,
    /// The agent/executor protocol to speak, MAJOR.MINOR (tests force
    /// another to check upgrades).
    #[arg(long, hide = true, value_parser = wasmos_agent::process::parse_protocol)]
    executor_protocol: Option<v1::ExecutorProtocol>,
    /// `power-loss`: the executor keeps unsynced checkpoint writes in
    /// memory only (tests).
    #[arg(long, hide = true, value_parser = crate::executor::checkpoint_backend)]
    executor_checkpoint: Option<wasmos_agent::checkpoint::Backend>,
}

/// Operator actions on agents.
#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// End an agent's certificate: its stream is closed, its tasks are
    /// LOST, and it can never attach again under that id.
    Revoke {
        /// The agent's id (see `wasmos agents`).
        agent_id: String,
        #[command(flatten)]
        master: crate::ops::MasterArg,
    },
    /// Stop offering an agent's resources; its running tasks finish.
    Drain {
        /// The agent's id (see `wasmos agents`).
        agent_id: String,
        #[command(flatten)]
        master: crate::ops::MasterArg,
    },
    /// Offer a drained agent's resources again.
    Undrain {
        /// The agent's id (see `wasmos agents`).
        agent_id: String,
        #[command(flatten)]
        master: crate::ops::MasterArg,
    },
}

impl Args {
    pub fn config(&self) -> anyhow::Result<AgentConfig> {
        anyhow::ensure!(!self.gc_interval.is_zero(), "--gc-interval must be > 0");
        let mut executor = ExecutorConfig::new(&self.work_dir)
            .output_cap(self.output_cap)
            .module_cache_bytes(self.module_cache_size)
            .sandbox_disk_limit(Some(self.sandbox_disk_limit.unwrap_or(self.disk / 5 * 4)))
            .min_free_disk(self.min_free_disk)
            .gc_interval(self.gc_interval)
            .sandbox_retention(self.sandbox_retention)
            .max_sandboxes(self.max_sandboxes);
        if let Some(cpus) = self.cpus {
            anyhow::ensure!(
                cpus.is_finite() && cpus > 0.0,
                "--cpus must be > 0, got {cpus}"
            );
            // Each cpu is a worker thread; a master takes at most 256 per
            // agent by default, 4,096 at most (`wasmos master
            // --max-agent-resources`).
            anyhow::ensure!(
                cpus <= MAX_CPUS,
                "--cpus {cpus} is more than an agent may offer ({MAX_CPUS}): give this machine's cores"
            );
            executor = executor.cpus(cpus);
        }
        let cpus = executor.cpus;
        executor = executor.mem(self.mem);
        let info = v1::AgentInfo {
            hostname: self
                .hostname
                .clone()
                .unwrap_or_else(wasmos_platform::host::hostname),
            resources: Some(v1::Resources {
                cpus,
                mem: self.mem,
                disk: self.disk,
            }),
            attributes: self
                .attrs
                .iter()
                .map(|(key, value)| v1::Attribute {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            reservations: self
                .reservations
                .iter()
                .map(|(role, r)| v1::Reservation {
                    role: role.clone(),
                    resources: Some(r.into()),
                })
                .collect(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        };
        let master = self
            .master
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:5050".into());
        let mut config = AgentConfig::new(master, info, executor);
        if !self.in_process_executor {
            let program = std::env::current_exe().map_err(|e| {
                anyhow::anyhow!("cannot find this program to start the executor: {e}")
            })?;
            config.mode = Mode::for_platform(program);
        }
        config.orphan_timeout = self.executor_orphan_timeout;
        if let Some(protocol) = &self.executor_protocol {
            config.protocol = protocol.clone();
        }
        config.checkpoint = self.executor_checkpoint.unwrap_or_default();
        Ok(config)
    }
}

/// The join string: `--join`, `--join-file` or `WASMOS_JOIN`, in that
/// order; none, if none is given.
fn join_string(args: &Args) -> anyhow::Result<Option<String>> {
    if let Some(text) = &args.join {
        tracing::warn!(
            "the join string given with --join shows in `ps` to every local user, \
             secret included: prefer --join-file PATH or WASMOS_JOIN"
        );
        return Ok(Some(text.clone()));
    }
    if let Some(path) = &args.join_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the join string from {}", path.display()))?;
        return Ok(Some(text.trim().to_string()));
    }
    Ok(std::env::var("WASMOS_JOIN").ok().filter(|v| !v.is_empty()))
}

/// The identity in the work dir, or a new one from the join string. A work
/// dir that has joined never reads the join string again, so a service's
/// join file or `WASMOS_JOIN` may be removed once it has.
async fn identity(args: &Args, hostname: &str) -> anyhow::Result<Option<Identity>> {
    if let Some(identity) = Identity::load(&args.work_dir)? {
        if args.join.is_some() || args.join_file.is_some() {
            tracing::info!(
                agent = identity.agent_id(),
                "this work dir has joined already; the join string is not used again"
            );
        }
        return Ok(Some(identity));
    }
    match join_string(args)? {
        None => Ok(None),
        Some(text) => {
            let join = wasmos_tls::JoinString::parse(&text)?;
            Ok(Some(Identity::join(&args.work_dir, &join, hostname).await?))
        }
    }
}

/// The most cpus `wasmos agent` offers (and worker threads it starts).
const MAX_CPUS: f64 = 4096.0;

/// Runs `wasmos agent` until it fails or `stop` resolves (with what asked).
pub async fn run(args: Args, stop: impl Future<Output = &'static str>) -> anyhow::Result<()> {
    if let Some(Action::Drain { agent_id, master }) = &args.action {
        master
            .operator()
            .await?
            .drain_agent(v1::DrainAgentRequest {
                agent_id: agent_id.clone(),
            })
            .await
            .map_err(crate::ops::grpc)?;
        println!("agent {agent_id} drained: it gets no new tasks");
        return Ok(());
    }
    if let Some(Action::Undrain { agent_id, master }) = &args.action {
        master
            .operator()
            .await?
            .undrain_agent(v1::UndrainAgentRequest {
                agent_id: agent_id.clone(),
            })
            .await
            .map_err(crate::ops::grpc)?;
        println!("agent {agent_id} undrained: its resources are offered again");
        return Ok(());
    }
    if let Some(Action::Revoke { agent_id, master }) = &args.action {
        let reply = master
            .operator()
            .await?
            .revoke_agent(v1::RevokeAgentRequest {
                agent_id: agent_id.clone(),
            })
            .await
            .map_err(crate::ops::grpc)?
            .into_inner();
        println!(
            "agent {agent_id} revoked; {} of its tasks reported LOST",
            reply.tasks_lost
        );
        return Ok(());
    }
    let mut config = args.config()?;
    config.identity = identity(&args, &config.info.hostname).await?;
    if let Some(identity) = &config.identity {
        if args.master.is_none() {
            config.master = identity.master().to_string();
        }
        config.info.agent_id = identity.agent_id().to_string();
    }
    println!(
        "wasmos agent offering {} to {}",
        Resources::try_from(config.info.resources.as_ref().expect("set above"))?,
        config.master
    );
    let config_cpus = config.executor.cpus;
    let agent = Agent::new(config)?;
    if let Some(addr) = args.http {
        serve_http(addr, agent.running_gauge(), config_cpus).await?;
    }
    tokio::select! {
        result = agent.run() => result,
        why = stop => {
            println!("stopping ({why})");
            Ok(())
        }
    }
}

/// `/state` and `/metrics` of this agent, on a port its operator opened.
async fn serve_http(addr: SocketAddr, running: Arc<AtomicUsize>, cpus: f64) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("  /state and /metrics on http://{}", listener.local_addr()?);
    let app = axum::Router::new()
        .route(
            "/state",
            get(move |State(running): State<Arc<AtomicUsize>>| async move {
                axum::Json(serde_json::json!({
                    "running_tasks": running.load(Ordering::Relaxed),
                    "cpus": cpus,
                }))
            }),
        )
        .route("/metrics", get(metrics))
        .with_state(running);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(())
}

async fn metrics(State(running): State<Arc<AtomicUsize>>) -> String {
    format!(
        "# HELP wasmos_agent_running_tasks Tasks running on this agent.\n# TYPE wasmos_agent_running_tasks gauge\nwasmos_agent_running_tasks {}\n",
        running.load(Ordering::Relaxed)
    )
}
