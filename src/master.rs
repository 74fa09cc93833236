//! `wasmos master`: runs the master until Ctrl-C or SIGTERM: alone on its
//! work dir's registry, or (`--etcd`) as one of several masters sharing a
//! registry in etcd, leading or standing by.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use wasmos_master::Resources;
use wasmos_master::server::{Master, MasterConfig, TlsSettings, Transport};

use crate::cli_args;

/// Run the master: pools the agents' resources and offers them to
/// frameworks with weighted Dominant Resource Fairness.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// gRPC address for frameworks, agents and operators.
    #[arg(long, default_value = "127.0.0.1:5050")]
    listen: SocketAddr,
    /// HTTP address for the web UI (`/`), /health, /state (JSON) and
    /// /metrics (Prometheus).
    #[arg(long, default_value = "127.0.0.1:5051")]
    http: SocketAddr,
    /// Serve no HTTP port.
    #[arg(long, conflicts_with = "http")]
    no_http: bool,
    /// Where the master keeps its registry (`registry.redb`: agents,
    /// frameworks, roles, tasks, the artifact index) and artifacts. A master
    /// restarted on the same work dir carries on where it stopped.
    #[arg(long, default_value = "wasmos-master")]
    work_dir: PathBuf,
    /// Keep the registry in memory: nothing survives a restart (frameworks
    /// must subscribe anew, agents re-register as new). For throwaway
    /// clusters and benchmarks.
    #[arg(long)]
    ephemeral: bool,
    /// etcd's client URLs (`http://127.0.0.1:2379[,...]`): keep the
    /// registry in etcd, shared with the other masters of the same
    /// --etcd-prefix. One of them leads (campaigning through etcd's
    /// election on a lease); the others stand by and take over when it
    /// stops. Artifacts and the audit log stay in each master's work dir.
    #[arg(long, value_name = "URL[,URL...]", conflicts_with = "ephemeral")]
    etcd: Option<String>,
    /// The key prefix of this cluster in etcd: several clusters can share
    /// one etcd under different prefixes.
    #[arg(long, default_value = "/wasmos", requires = "etcd")]
    etcd_prefix: String,
    /// The leader's lease in etcd (whole seconds): a leader that cannot
    /// renew it (etcd or the network down, the process paused) stops
    /// before it ends, and a standby leads once it has ended.
    #[arg(long, default_value = "5s", value_parser = cli_args::duration, requires = "etcd")]
    leader_lease: Duration,
    /// How often the leader compacts etcd's history (keeping one interval
    /// of it): etcd keeps every revision until compacted, and refuses all
    /// writes once its quota is full.
    #[arg(long, default_value = "1m", value_parser = cli_args::duration, requires = "etcd")]
    etcd_compact_every: Duration,
    #[command(flatten)]
    etcd_tls: crate::etcd_tls::EtcdTlsArgs,
    /// While FILE exists, registry commits wait (tests: to kill the master
    /// between sending a launch and making it durable); if it says
    /// `launches`, only those that launch tasks.
    #[arg(long, hide = true, value_name = "FILE")]
    hold_commits_while: Option<PathBuf>,
    /// After a restart, how long an agent has to re-register before it is
    /// declared gone and its tasks LOST. Until then its tasks are kept and
    /// never reported lost.
    #[arg(long, default_value = "10m", value_parser = cli_args::duration)]
    agent_reregister_timeout: Duration,
    /// A role's weight, e.g. `--role-weight batch=2` (repeatable; default 1).
    #[arg(long = "role-weight", value_name = "ROLE=WEIGHT", value_parser = cli_args::role_weight)]
    role_weights: Vec<(String, f64)>,
    /// A role's quota guarantee, e.g. `--quota batch=cpus:4,mem:8GiB`.
    #[arg(long = "quota", value_name = "ROLE=RESOURCES", value_parser = cli_args::role_resources)]
    quotas: Vec<(String, Resources)>,
    /// How often agents heartbeat.
    #[arg(long, default_value = "1s", value_parser = cli_args::duration)]
    agent_heartbeat: Duration,
    /// Silence after which an agent is declared lost and its tasks LOST.
    #[arg(long, default_value = "3s", value_parser = cli_args::duration)]
    agent_timeout: Duration,
    /// The shortest time between two wake-ups of the master for its
    /// deadlines (offer expiry, agent and failover timeouts, filters):
    /// deadlines closer together are handled in one turn. Freed resources
    /// never wait for it; they are offered at once.
    #[arg(long, alias = "allocation-interval", default_value = "200ms", value_parser = cli_args::duration)]
    min_tick_interval: Duration,
    /// Unused offers are rescinded after this long.
    #[arg(long, default_value = "60s", value_parser = cli_args::duration)]
    offer_timeout: Duration,
    /// Failover timeout for frameworks that ask for none.
    #[arg(long, default_value = "60s", value_parser = cli_args::duration)]
    failover_timeout: Duration,
    /// How often frameworks get a heartbeat event.
    #[arg(long, default_value = "5s", value_parser = cli_args::duration)]
    framework_heartbeat: Duration,
    /// Finished tasks remembered per framework.
    #[arg(long, default_value_t = 1000)]
    completed_tasks: usize,
    /// The largest artifact accepted.
    #[arg(long, default_value = "256MiB", value_parser = cli_args::size)]
    max_artifact_size: u64,
    /// The most artifact bytes one principal (not an admin) may have
    /// stored; an upload past it is refused.
    #[arg(long, default_value = "4GiB", value_parser = cli_args::size)]
    artifact_quota: u64,
    /// The most artifacts the master stores in all.
    #[arg(long, default_value_t = 100_000)]
    max_artifacts: usize,
    /// The most artifact bytes the master stores in all.
    #[arg(long, default_value = "64GiB", value_parser = cli_args::size)]
    max_artifact_bytes: u64,
    /// The most artifacts one principal (not an admin) may have stored, so
    /// one principal cannot fill --max-artifacts for all [default: a tenth
    /// of --max-artifacts].
    #[arg(long)]
    max_artifacts_per_principal: Option<usize>,
    /// The most uploads in progress at once in the master; each holds a
    /// chunk of up to 1 MiB and its connection's buffers.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
    max_uploads: u64,
    /// The most uploads in progress at once for one principal (at most half
    /// of --max-uploads, so others always find room).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    max_uploads_per_principal: u64,
    /// The slowest an upload may be, in bytes per second averaged over
    /// --upload-rate-window, once --upload-grace has passed; slower ones are
    /// cut (DEADLINE_EXCEEDED) and their temp files removed. 0: no minimum.
    #[arg(long, default_value = "64KiB", value_parser = cli_args::size)]
    upload_min_rate: u64,
    /// The window --upload-min-rate is averaged over. Bytes count as whole
    /// chunks arrive, so it should span several chunks at the minimum rate.
    #[arg(long, default_value = "30s", value_parser = cli_args::duration)]
    upload_rate_window: Duration,
    /// How long an upload may be slower than --upload-min-rate from its
    /// start.
    #[arg(long, default_value = "10s", value_parser = cli_args::duration)]
    upload_grace: Duration,
    /// The most agents the master keeps; past it a new agent is refused.
    #[arg(long, default_value_t = 50_000)]
    max_agents: usize,
    /// The most one agent may advertise; a larger claim is refused. It
    /// bounds every agent, also one whose join token sets no
    /// --max-resources: raise it for bigger machines (up to
    /// cpus:4096,mem:64TiB,disk:256TiB).
    #[arg(long, default_value = "cpus:256,mem:2TiB,disk:64TiB", value_parser = |s: &str| Resources::parse(s))]
    max_agent_resources: Resources,
    /// The most frameworks subscribed in one role.
    #[arg(long, default_value_t = 1_000)]
    max_frameworks_per_role: usize,
    /// The most tasks one framework holds (running, or ended and not yet
    /// acknowledged); an Accept past it is refused.
    #[arg(long, default_value_t = 1_000_000)]
    max_tasks_per_framework: usize,
    /// The most frameworks one principal holds in one role: its share of
    /// --max-frameworks-per-role, so no principal takes a shared role's
    /// every slot.
    #[arg(long, default_value_t = 250)]
    max_frameworks_per_principal: usize,
    /// The most tasks all of one principal's frameworks hold together.
    #[arg(long, default_value_t = 1_000_000)]
    max_tasks_per_principal: usize,
    /// A framework disconnected for longer than this gives its slot under
    /// the framework limits back (it keeps its tasks until its failover
    /// timeout).
    #[arg(long, default_value = "60s", value_parser = cli_args::duration)]
    framework_slot_grace: Duration,
    /// The most bytes of events queued for one framework: a framework that
    /// falls further behind has its stream closed (it re-subscribes).
    #[arg(long, default_value = "8MiB", value_parser = cli_args::size)]
    max_stream_bytes: u64,
    /// The size of one file of the audit log: past it `audit.log` is
    /// rotated to `audit.log.1`, and so on.
    #[arg(long, default_value = "64MiB", value_parser = cli_args::size)]
    audit_log_bytes: u64,
    /// How many files of the audit log are kept, `audit.log` included (at
    /// least 2): with `--audit-log-bytes`, its disk budget. Older lines are
    /// deleted, and `wasmos audit` says so.
    #[arg(long, default_value_t = wasmos_master::server::AUDIT_LOG_FILES)]
    audit_log_files: u32,
    /// The most gRPC connections open at once [default: the file-descriptor
    /// limit (raised to its hard limit) less 512]. Past it, new connections
    /// are closed at once.
    #[arg(long)]
    max_connections: Option<usize>,
    /// The most gRPC connections from one address [default: a quarter of
    /// --max-connections].
    #[arg(long)]
    max_connections_per_address: Option<usize>,
    /// Serve /metrics without a token, for a local scraper. Only with a
    /// loopback --http address; otherwise /metrics, like /state, needs an
    /// admin or read-only token.
    #[arg(long)]
    metrics_public: bool,
    /// Artifacts unused (not uploaded, fetched or asked about) for this long
    /// are deleted.
    #[arg(long, default_value = "24h", value_parser = cli_args::duration)]
    artifact_ttl: Duration,
    /// A job that ended this long ago keeps its summary (`wasmos jobs`,
    /// `job show`) and loses its per-index outcomes (`job results`).
    #[arg(long, default_value = "7d", value_parser = cli_args::duration)]
    job_retention: Duration,
    /// Threads for network I/O. Every call goes through the one actor that
    /// owns the core, so one thread serves best until a master carries
    /// thousands of connections: it spares the cross-thread wake-ups that
    /// cost more than handling a small message (measured in BENCHMARKS.md).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// Serve plaintext and ask no credentials: only on loopback addresses
    /// (with any other --listen or --http the master exits before binding).
    /// For development; `wasmos local` does this for itself.
    #[arg(long)]
    insecure: bool,
    /// Serve this certificate chain (PEM) instead of one the cluster's CA
    /// issues. Agents then join with the CA of this chain's last certificate.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "insecure"
    )]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Also accept client certificates signed by this CA (PEM).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    client_ca: Option<PathBuf>,
    /// One more name (DNS name or IP) the issued server certificate covers,
    /// beyond --listen, localhost, loopback and this host's name (repeatable).
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_sans: Vec<String>,
    /// HOST:PORT agents and clients reach this master by, put in join strings
    /// (repeatable) [default: --listen, or this host's name and port].
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Vec<String>,
    /// How long an agent certificate is valid; agents renew theirs when two
    /// thirds of it have passed.
    #[arg(long, default_value = "30d", value_parser = cli_args::duration)]
    agent_cert_ttl: Duration,
}

impl Args {
    pub fn config(&self) -> anyhow::Result<MasterConfig> {
        let mut config = MasterConfig::new(self.listen, self.work_dir.clone());
        config.http = (!self.no_http).then_some(self.http);
        config.role_weights = self.role_weights.clone();
        config.quotas = self.quotas.clone();
        config.core.agent_heartbeat_interval = self.agent_heartbeat;
        config.core.agent_timeout = self.agent_timeout;
        config.core.agent_reregister_timeout = self.agent_reregister_timeout;
        if self.ephemeral {
            config.store = Some(Arc::new(wasmos_master::store::MemoryStore::new()));
        }
        config.hold_commits_while = self.hold_commits_while.clone();
        config.core.offer_timeout = Some(self.offer_timeout);
        config.core.default_failover_timeout = self.failover_timeout;
        config.core.completed_tasks_per_framework = self.completed_tasks;
        config.actor.min_tick_interval = self.min_tick_interval;
        config.core.framework_heartbeat_interval = self.framework_heartbeat;
        config.max_artifact_size = self.max_artifact_size;
        config.artifact_quota = self.artifact_quota;
        let mut limits =
            wasmos_master::server::StoreLimits::new(self.max_artifacts, self.max_artifact_bytes);
        if let Some(per_principal) = self.max_artifacts_per_principal {
            limits.count_per_principal = per_principal;
        }
        limits.uploads = usize::try_from(self.max_uploads).unwrap_or(usize::MAX);
        limits.uploads_per_principal =
            usize::try_from(self.max_uploads_per_principal).unwrap_or(usize::MAX);
        limits.min_rate = wasmos_master::server::MinRate {
            bytes_per_sec: self.upload_min_rate,
            window: self.upload_rate_window,
            grace: self.upload_grace,
        };
        config.artifact_limits = limits;
        config.max_stream_bytes = usize::try_from(self.max_stream_bytes).unwrap_or(usize::MAX);
        config.audit_log_bytes = self.audit_log_bytes;
        config.audit_log_files = self.audit_log_files;
        if self.max_connections.is_some() || self.max_connections_per_address.is_some() {
            let mut limits = wasmos_master::server::ConnectionLimits::from_fd_limit();
            if let Some(total) = self.max_connections {
                limits.total = total;
                limits.per_address = (total / 4).max(1);
            }
            if let Some(per_address) = self.max_connections_per_address {
                limits.per_address = per_address;
            }
            config.connection_limits = Some(limits);
        }
        config.core.caps = wasmos_master::core::Caps {
            agents: self.max_agents,
            agent_resources: self.max_agent_resources,
            frameworks_per_role: self.max_frameworks_per_role,
            tasks_per_framework: self.max_tasks_per_framework,
            frameworks_per_principal: self.max_frameworks_per_principal,
            tasks_per_principal: self.max_tasks_per_principal,
            framework_slot_grace: self.framework_slot_grace,
        };
        config.metrics_public = self.metrics_public;
        config.artifact_ttl = self.artifact_ttl;
        config.job_retention = self.job_retention;
        config.transport = if self.insecure {
            Transport::Insecure
        } else {
            let read = |path: &PathBuf| {
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))
            };
            let mut tls = TlsSettings::new();
            if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
                tls.own_identity = Some((read(cert)?, read(key)?));
            }
            tls.client_ca_pem = self.client_ca.as_ref().map(read).transpose()?;
            tls.sans = self.tls_sans.clone();
            tls.advertise = self.advertise.clone();
            tls.agent_cert_ttl = self.agent_cert_ttl;
            Transport::Tls(tls)
        };
        Ok(config)
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(etcd) = &args.etcd {
        return crate::master_ha::run(&args, etcd).await;
    }
    let master = Master::start(args.config()?).await?;
    announce(&args, &master);
    tokio::select! {
        result = master.wait() => result,
        why = crate::shutdown::requested() => {
            println!("stopping ({why})");
            Ok(())
        }
    }
}

impl Args {
    pub fn etcd_prefix(&self) -> &str {
        &self.etcd_prefix
    }

    pub fn leader_lease(&self) -> Duration {
        self.leader_lease
    }

    pub fn etcd_tls(&self) -> &crate::etcd_tls::EtcdTlsArgs {
        &self.etcd_tls
    }

    pub fn etcd_compact_every(&self) -> Duration {
        self.etcd_compact_every
    }

    /// Does it serve plaintext (`--insecure`)?
    pub fn insecure(&self) -> bool {
        self.insecure
    }

    /// The gRPC URL clients reach this master by, before it has bound
    /// (`--advertise`, else `--listen`).
    pub fn grpc_url(&self) -> String {
        self.grpc_url_bound(None)
    }

    /// The gRPC URL clients reach this master by once its port is `bound`
    /// (`--listen` with port 0 resolved), unless `--advertise` says.
    pub fn grpc_url_bound(&self, bound: Option<std::net::SocketAddr>) -> String {
        let scheme = if self.insecure { "http" } else { "https" };
        match self.advertise.first() {
            Some(host_port) => format!("{scheme}://{host_port}"),
            None => format!("{scheme}://{}", bound.unwrap_or(self.listen)),
        }
    }
}

/// Says where a started master serves and where its credentials are.
pub fn announce(args: &Args, master: &Master) {
    println!(
        "wasmos master listening on {} (epoch {})",
        master.url(),
        master.epoch()
    );
    let scheme = if master.ca_pem().is_some() {
        "https"
    } else {
        "http"
    };
    if let Some(http) = master.http_addr() {
        let login = if scheme == "https" {
            " (log in with a token; browsers trust the cluster by its ca.pem)"
        } else {
            ""
        };
        println!("  web UI on {scheme}://{http}/{login}");
        println!("  /state and /metrics on {scheme}://{http}");
    }
    if let Some(token) = master.admin_token_path() {
        let ca = args.work_dir.join("ca.pem");
        println!("  CA certificate in {} (clients: --ca)", ca.display());
        if master.made_admin_token() {
            println!(
                "  new admin token in {} (clients: --token)",
                token.display()
            );
        } else if token.exists() {
            println!("  admin token in {}", token.display());
        } else {
            println!(
                "  admin token: in the work dir of the master that first led this cluster (admin.token)"
            );
        }
    }
}
