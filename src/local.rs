//! `wasmos local`: a master and N agents in one process, plaintext on
//! loopback, with its address saved in the profile, so every other command
//! works with no flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use wasmos_agent::link::{Agent, AgentConfig};
use wasmos_agent::{Capacity, ExecutorConfig, TaskEngine};
use wasmos_master::server::{Master, MasterConfig};
use wasmos_proto::v1;
use wasmos_sdk::Profile;

use crate::cli_args;

/// Run a whole cluster in this process: a master and N agents.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// How many agents.
    #[arg(long, default_value_t = 3)]
    pub agents: usize,
    /// gRPC address of the master.
    #[arg(long, default_value = "127.0.0.1:5050")]
    pub listen: SocketAddr,
    /// HTTP address of the master: its web UI, /state and /metrics.
    #[arg(long, default_value = "127.0.0.1:5051")]
    pub http: SocketAddr,
    /// Where the master and agents keep their files (default: a `wasmos`
    /// directory under the user's data directory).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// CPU cores each agent offers.
    #[arg(long, default_value_t = 1.0)]
    pub cpus: f64,
    /// Memory each agent offers.
    #[arg(long, default_value = "2GiB", value_parser = cli_args::size)]
    pub mem: u64,
    /// Disk each agent offers.
    #[arg(long, default_value = "2GiB", value_parser = cli_args::size)]
    pub disk: u64,
}

/// The user's data directory: `$XDG_DATA_HOME/wasmos` or `~/.local/share/wasmos`.
pub fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("wasmos");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/wasmos"),
        None => std::env::temp_dir().join("wasmos"),
    }
}

/// A running in-process cluster. Dropping it stops the agents, then the
/// master.
pub struct LocalCluster {
    pub master: Master,
    pub url: String,
    agents: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for agent in &self.agents {
            agent.abort();
        }
    }
}

/// Starts the master and the agents; returns once the master listens.
pub async fn start(args: &Args) -> anyhow::Result<LocalCluster> {
    anyhow::ensure!(args.agents > 0, "--agents must be at least 1");
    anyhow::ensure!(
        args.cpus.is_finite() && args.cpus > 0.0,
        "--cpus must be > 0"
    );
    let dir = args.work_dir.clone().unwrap_or_else(data_dir);
    let mut config = MasterConfig::new(args.listen, dir.join("master"));
    config.http = Some(args.http);
    config.transport = wasmos_master::server::Transport::Insecure;
    let master = Master::start(config).await?;
    let url = format!("http://{}", master.grpc_addr());
    // One engine for every agent: one pool, one reservation of address
    // space, sized for all of them.
    let one = Capacity::of(args.cpus, args.mem);
    let engine = TaskEngine::for_capacity((1..args.agents).fold(one, |all, _| all.plus(one)))?;
    let mut agents = Vec::with_capacity(args.agents);
    for i in 0..args.agents {
        let executor = ExecutorConfig::new(dir.join(format!("agent-{i}")))
            .cpus(args.cpus)
            .mem(args.mem)
            .engine(engine.clone());
        let info = v1::AgentInfo {
            hostname: format!("local-{i}"),
            resources: Some(v1::Resources {
                cpus: args.cpus,
                mem: args.mem,
                disk: args.disk,
            }),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        };
        let agent = Agent::new(AgentConfig::new(url.clone(), info, executor))?;
        agents.push(tokio::spawn(async move {
            if let Err(e) = agent.run().await {
                tracing::error!("agent {i} stopped: {e:#}");
            }
        }));
    }
    Ok(LocalCluster {
        master,
        url,
        agents,
    })
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let cluster = start(&args).await?;
    println!(
        "wasmos local cluster: master on {} with {} agents",
        cluster.url, args.agents
    );
    if let Some(http) = cluster.master.http_addr() {
        println!("  web UI on http://{http}/");
        println!("  /state and /metrics on http://{http}");
    }
    match save_profile(&cluster.url) {
        Ok(Some(path)) => println!(
            "  profile: {} (other commands find it there)",
            path.display()
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!("not saving a profile: {e}"),
    }
    println!("  try: wasmos agents   (Ctrl-C stops the cluster)");
    let why = crate::shutdown::requested().await;
    println!("stopping ({why})");
    Ok(())
}

/// Points the profile at this cluster, so other commands reach it with no
/// flags, unless the profile is someone's login (an `https://` master or a
/// token): that one is never overwritten.
fn save_profile(url: &str) -> anyhow::Result<Option<PathBuf>> {
    let replaceable = match Profile::load()? {
        None => true,
        Some(p) => {
            p.token.is_none() && p.master.as_deref().is_none_or(|m| m.starts_with("http://"))
        }
    };
    if !replaceable {
        return Ok(None);
    }
    let profile = Profile {
        master: Some(url.to_string()),
        ca: None,
        token: None,
    };
    Ok(Some(profile.save()?))
}
