//! The agent's link to the master: one `AgentLink.Attach` stream, dialled by
//! the agent, carrying registration, heartbeats, status updates and sandbox
//! reads one way, and launches, kills, acks and read requests the other.
//!
//! The executor never depends on this module; this module drives it. The
//! link keeps every status update until the framework acknowledges it
//! (through the master) and sends unacknowledged ones again after each
//! reconnect and every `resend_interval`, so updates survive dropped streams.
//! The agent's id is kept in `<work_dir>/agent_id`, so a restarted agent
//! re-registers as itself.
//!
//! The room: the link itself (here), fetching artifacts from the master
//! ([`artifacts`]) and the agent's TLS identity ([`identity`]). It is the
//! only part of the crate that uses tonic (the `link` feature).

mod artifacts;
pub mod identity;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use wasmos_proto::v1;
use wasmos_proto::v1::agent_link_client::AgentLinkClient;
use wasmos_proto::v1::agent_message::Kind as ToMaster;
use wasmos_proto::v1::artifacts_client::ArtifactsClient;
use wasmos_proto::v1::master_message::Kind as FromMaster;

use crate::{Executor, ExecutorConfig, ModuleSource, SandboxFile};
use artifacts::MasterArtifacts;

/// Everything `wasmos agent` can be told.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The master's gRPC URL, e.g. `http://127.0.0.1:5050`.
    pub master: String,
    /// What the agent offers (resources, attributes, reservations, hostname).
    /// `agent_id` is filled in from `<work_dir>/agent_id` when present.
    pub info: v1::AgentInfo,
    /// How tasks are run; its `work_dir` also holds the agent id.
    pub executor: ExecutorConfig,
    /// First reconnect delay, doubled on each failure up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Unacknowledged updates are sent again this often. Default 2 s.
    pub resend_interval: Duration,
    /// The agent's certificate and CA, for a TLS master (`https://`); `None`
    /// for a plaintext one on loopback.
    pub identity: Option<identity::Identity>,
}

impl AgentConfig {
    pub fn new(master: String, info: v1::AgentInfo, executor: ExecutorConfig) -> AgentConfig {
        AgentConfig {
            master,
            info,
            executor,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            resend_interval: Duration::from_secs(2),
            identity: None,
        }
    }

    /// The master's endpoint, with the agent's certificate when it has one.
    fn endpoint(&self) -> anyhow::Result<Endpoint> {
        let mut endpoint = Endpoint::from_shared(self.master.clone())
            .with_context(|| {
                format!(
                    "`{}` is not a master URL (e.g. https://master:5050)",
                    self.master
                )
            })?
            .connect_timeout(Duration::from_secs(3));
        match (&self.identity, endpoint.uri().scheme_str()) {
            (Some(identity), Some("https")) => {
                endpoint = endpoint.tls_config(identity.client_tls().tonic())?;
            }
            (None, Some("https")) => anyhow::bail!(
                "{} serves TLS: the agent must join it first (--join <join string>, from `wasmos token create --agent`)",
                self.master
            ),
            _ => {}
        }
        Ok(endpoint)
    }
}

/// A lazily connected client of the master's `Artifacts` service.
fn artifacts_client(config: &AgentConfig) -> anyhow::Result<ArtifactsClient<Channel>> {
    Ok(artifacts::client(config.endpoint()?))
}

/// An update waiting for its acknowledgement.
struct Unacked {
    status: v1::TaskStatus,
    sent: Instant,
}

/// The running agent.
pub struct Agent {
    config: AgentConfig,
    executor: Arc<Executor>,
    statuses: mpsc::UnboundedReceiver<v1::TaskStatus>,
    status_sender: mpsc::UnboundedSender<v1::TaskStatus>,
    /// Unacknowledged updates in the order they were made.
    unacked: BTreeMap<u64, Unacked>,
    by_uuid: HashMap<Vec<u8>, u64>,
    /// Tasks launched here whose terminal update the master has not
    /// acknowledged: what a registration reports. The executor's own
    /// running set is not enough: a task that ended while the master was
    /// away has its terminal update still on its way to this link.
    open: HashSet<String>,
    next_seq: u64,
    agent_id: String,
    /// The newest master epoch seen; messages of an older master are refused.
    master_epoch: u64,
    heartbeat_interval: Duration,
    /// Keeps sandboxes and the module cache within their disk limits.
    gc: crate::gc::GcHandle,
    /// The artifact fetcher's client, rebuilt after a renewal.
    artifacts: Arc<std::sync::RwLock<ArtifactsClient<Channel>>>,
}

impl Agent {
    /// Creates the executor (fetching artifacts from the master) and reads a
    /// saved agent id.
    pub fn new(mut config: AgentConfig) -> anyhow::Result<Agent> {
        let artifacts = Arc::new(std::sync::RwLock::new(artifacts_client(&config)?));
        config.executor.artifacts = Some(Arc::new(MasterArtifacts::new(artifacts.clone())));
        std::fs::create_dir_all(&config.executor.work_dir)
            .with_context(|| format!("cannot create {}", config.executor.work_dir.display()))?;
        let agent_id = match &config.identity {
            Some(identity) => {
                std::fs::write(id_path(&config), identity.agent_id())
                    .context("cannot save the agent id")?;
                identity.agent_id().to_string()
            }
            None => std::fs::read_to_string(id_path(&config))
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        };
        if config.executor.sandbox_disk_limit.is_none() {
            // Sandboxes may take 80% of the disk offered: the rest is
            // headroom for tasks that outgrow their estimate.
            let offered = config.info.resources.as_ref().map_or(0, |r| r.disk);
            if offered > 0 {
                config.executor.sandbox_disk_limit = Some(offered / 5 * 4);
            }
        }
        let executor = Arc::new(Executor::new(config.executor.clone())?);
        let gc = crate::gc::spawn(executor.clone()).context("starting the disk collector")?;
        let (status_sender, statuses) = mpsc::unbounded_channel();
        Ok(Agent {
            config,
            executor,
            statuses,
            status_sender,
            unacked: BTreeMap::new(),
            by_uuid: HashMap::new(),
            open: HashSet::new(),
            next_seq: 0,
            agent_id,
            master_epoch: 0,
            heartbeat_interval: Duration::from_secs(1),
            gc,
            artifacts,
        })
    }

    /// The executor, for the agent's own HTTP port.
    pub fn executor(&self) -> Arc<Executor> {
        self.executor.clone()
    }

    /// Connects, and reconnects with backoff, forever.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let mut backoff = self.config.min_backoff;
        loop {
            match self.session().await {
                Ok(()) => {
                    tracing::warn!("the master closed the stream; reconnecting");
                    backoff = self.config.min_backoff;
                }
                Err(e) => {
                    // Refused for who it is (revoked, unknown, over its
                    // token's resources): retrying cannot help.
                    if let Some(status) = e.downcast_ref::<tonic::Status>()
                        && matches!(
                            status.code(),
                            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
                        )
                    {
                        anyhow::bail!("the master refused this agent: {}", status.message());
                    }
                    tracing::warn!(
                        "link to {} failed: {e:#}; retrying in {backoff:?}",
                        self.config.master
                    );
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    /// One stream: register, then serve until it ends.
    async fn session(&mut self) -> anyhow::Result<()> {
        let channel = self
            .config
            .endpoint()?
            .connect()
            .await
            .with_context(|| format!("no master at {}", self.config.master))?;
        let mut client = AgentLinkClient::new(channel.clone()).max_decoding_message_size(64 << 20);
        let (outbound, rx) = mpsc::channel::<v1::AgentMessage>(4096);
        let mut info = self.config.info.clone();
        info.agent_id = self.agent_id.clone();
        let tasks = self.running_tasks();
        send(
            &outbound,
            ToMaster::Register(v1::Register {
                agent: Some(info),
                tasks,
            }),
        )
        .await?;
        let mut inbound = client
            .attach(ReceiverStream::new(rx))
            .await
            .context("the master refused the agent")?
            .into_inner();

        let first = inbound
            .next()
            .await
            .context("the stream ended before registration")??;
        let Some(FromMaster::Registered(registered)) = first.kind else {
            anyhow::bail!("the master's first message was not `registered`");
        };
        self.registered(registered)?;
        tracing::info!(agent = %self.agent_id, master = %self.config.master, "registered");
        self.resend(&outbound, Duration::ZERO).await?;

        let mut heartbeat = tokio::time::interval(self.heartbeat_interval);
        let mut resend = tokio::time::interval(self.config.resend_interval);
        let mut renewal = tokio::time::interval(
            self.config
                .identity
                .as_ref()
                .map_or(Duration::from_secs(3600), |i| i.check_interval()),
        );
        loop {
            tokio::select! {
                _ = renewal.tick() => self.renew_if_due(&channel).await,
                message = inbound.next() => match message {
                    Some(Ok(message)) => self.master_message(message, &outbound).await?,
                    Some(Err(status)) => anyhow::bail!("stream failed: {}", status.message()),
                    None => return Ok(()),
                },
                Some(status) = self.statuses.recv() => {
                    let mut batch = vec![status];
                    while batch.len() < 4096 {
                        match self.statuses.try_recv() {
                            Ok(status) => batch.push(status),
                            Err(_) => break,
                        }
                    }
                    for status in &batch {
                        if crate::is_terminal(status.state()) {
                            // An invalid task may have met another task's
                            // sandbox: let the collector measure that one.
                            let bytes = status
                                .usage
                                .filter(|_| status.reason() != v1::Reason::InvalidTask)
                                .map(|u| sandbox_bytes(&u, self.executor.config().output_cap));
                            self.gc.task_ended(&status.task_id, bytes);
                        }
                        self.keep(status.clone());
                    }
                    send(&outbound, ToMaster::Updates(v1::StatusUpdates { statuses: batch })).await?;
                }
                _ = heartbeat.tick() => {
                    send(&outbound, ToMaster::Heartbeat(v1::AgentHeartbeat {})).await?;
                }
                _ = resend.tick() => self.resend(&outbound, self.config.resend_interval).await?,
            }
        }
    }

    /// Renews the certificate once it is due, over the stream's own
    /// connection (which goes on with the old one: no task notices). A
    /// failure is retried at the next check.
    async fn renew_if_due(&mut self, channel: &Channel) {
        let Some(identity) = self.config.identity.as_mut() else {
            return;
        };
        if !identity.renewal_due() {
            return;
        }
        if let Err(e) = identity.renew(channel.clone()).await {
            tracing::warn!("{e:#}");
            return;
        }
        match artifacts_client(&self.config) {
            Ok(client) => *self.artifacts.write().expect("not poisoned") = client,
            Err(e) => tracing::warn!("rebuilding the artifact client: {e:#}"),
        }
    }

    fn registered(&mut self, registered: v1::Registered) -> anyhow::Result<()> {
        // A master of an older epoch than one already seen is a stale master
        // still running (a partitioned or replaced leader): taking orders
        // from it could undo what the newer one decided.
        if registered.master_epoch < self.master_epoch {
            anyhow::bail!(
                "the master at {} answered with epoch {}, older than epoch {} seen before: a stale master; refusing it",
                self.config.master,
                registered.master_epoch,
                self.master_epoch
            );
        }
        if registered.master_epoch > self.master_epoch {
            if self.master_epoch > 0 {
                tracing::info!(
                    from = self.master_epoch,
                    to = registered.master_epoch,
                    "the master restarted"
                );
            }
            self.master_epoch = registered.master_epoch;
        }
        if registered.agent_id != self.agent_id {
            self.agent_id = registered.agent_id.clone();
            std::fs::write(id_path(&self.config), &self.agent_id)
                .context("cannot save the agent id")?;
        }
        if registered.heartbeat_interval_ms > 0 {
            self.heartbeat_interval = Duration::from_millis(registered.heartbeat_interval_ms);
        }
        for task in registered.kill_task_ids {
            tracing::info!(%task, "the master says this task was lost: killing it");
            let _ = self.executor.kill(&task);
        }
        Ok(())
    }

    async fn master_message(
        &mut self,
        message: v1::MasterMessage,
        outbound: &mpsc::Sender<v1::AgentMessage>,
    ) -> anyhow::Result<()> {
        match message.kind {
            Some(FromMaster::RunTasks(run)) => {
                for launch in run.tasks {
                    let Some(spec) = launch.spec else { continue };
                    let task_id = spec.task_id.clone();
                    match self.executor.launch(
                        &launch.framework_id,
                        spec,
                        ModuleSource::Artifact,
                        self.status_sender.clone(),
                    ) {
                        Ok(()) => {
                            tracing::debug!(%task_id, "launched");
                            self.open.insert(task_id);
                        }
                        // The master sent it again (e.g. after a reconnect).
                        Err(crate::LaunchError::Duplicate(_)) => {}
                        Err(e) => self.synthesize(
                            &launch.framework_id,
                            &task_id,
                            v1::TaskState::Error,
                            v1::Reason::InvalidTask,
                            &e.to_string(),
                        ),
                    }
                }
            }
            Some(FromMaster::KillTasks(kill)) => {
                for task in kill.task_ids {
                    if let Err(crate::TaskError::Unknown(_)) = self.executor.kill(&task) {
                        // Never launched here: say so, so the master settles it.
                        self.synthesize(
                            "",
                            &task,
                            v1::TaskState::Killed,
                            v1::Reason::Killed,
                            "killed before it reached this agent",
                        );
                    }
                }
            }
            Some(FromMaster::AckUpdates(acks)) => {
                for ack in acks.acks {
                    if let Some(seq) = self.by_uuid.remove(&ack.uuid)
                        && let Some(entry) = self.unacked.remove(&seq)
                        && crate::is_terminal(entry.status.state())
                    {
                        self.retire(ack.task_id);
                    }
                }
            }
            Some(FromMaster::SandboxRead(read)) => {
                let executor = self.executor.clone();
                let outbound = outbound.clone();
                tokio::task::spawn_blocking(move || {
                    let reply = sandbox_read(&executor, read);
                    let _ = outbound.blocking_send(v1::AgentMessage {
                        kind: Some(ToMaster::SandboxReadReply(reply)),
                    });
                });
            }
            Some(FromMaster::Registered(_)) | None => {}
        }
        Ok(())
    }

    /// A status the agent makes itself for a task the executor cannot.
    fn synthesize(
        &mut self,
        framework: &str,
        task: &str,
        state: v1::TaskState,
        reason: v1::Reason,
        message: &str,
    ) {
        let status = v1::TaskStatus {
            task_id: task.to_string(),
            framework_id: framework.to_string(),
            agent_id: self.agent_id.clone(),
            state: state as i32,
            reason: reason as i32,
            message: message.to_string(),
            uuid: rand_uuid(),
            source: v1::StatusSource::Agent as i32,
            ..Default::default()
        };
        let _ = self.status_sender.send(status);
    }

    fn keep(&mut self, status: v1::TaskStatus) {
        self.next_seq += 1;
        self.by_uuid.insert(status.uuid.clone(), self.next_seq);
        self.unacked.insert(
            self.next_seq,
            Unacked {
                status,
                sent: Instant::now(),
            },
        );
    }

    /// Sends again every unacknowledged update older than `age`.
    async fn resend(
        &mut self,
        outbound: &mpsc::Sender<v1::AgentMessage>,
        age: Duration,
    ) -> anyhow::Result<()> {
        let now = Instant::now();
        let mut batch = Vec::new();
        for entry in self.unacked.values_mut() {
            if now.duration_since(entry.sent) >= age {
                entry.sent = now;
                batch.push(entry.status.clone());
            }
        }
        for chunk in batch.chunks(4096) {
            send(
                outbound,
                ToMaster::Updates(v1::StatusUpdates {
                    statuses: chunk.to_vec(),
                }),
            )
            .await?;
        }
        Ok(())
    }

    /// A finished task's last update was acknowledged: the disk collector
    /// deletes its sandbox after the retention time.
    fn retire(&mut self, task: String) {
        self.open.remove(&task);
        self.gc.task_retired(&task);
    }

    /// The tasks to report when registering: those that still run, and
    /// those that ended with their terminal update not yet acknowledged
    /// (they ended while the master was away). Without the latter, a master
    /// would declare them LOST, and their work would be done twice.
    fn running_tasks(&self) -> Vec<v1::RunningTask> {
        let mut open: Vec<&String> = self.open.iter().collect();
        open.sort();
        let mut tasks: Vec<v1::RunningTask> = open
            .into_iter()
            .cloned()
            .map(|task| v1::RunningTask {
                framework_id: self.executor.framework_of(&task).unwrap_or_default(),
                state: self.executor.state(&task).unwrap_or(v1::TaskState::Running) as i32,
                artifact: self.executor.artifact_of(&task).unwrap_or_default(),
                task_id: task,
                resources: None,
            })
            .collect();
        let mut listed: std::collections::HashSet<String> =
            tasks.iter().map(|t| t.task_id.clone()).collect();
        for entry in self.unacked.values() {
            let status = &entry.status;
            if crate::is_terminal(status.state()) && listed.insert(status.task_id.clone()) {
                tasks.push(v1::RunningTask {
                    framework_id: self
                        .executor
                        .framework_of(&status.task_id)
                        .unwrap_or_else(|| status.framework_id.clone()),
                    state: status.state,
                    artifact: self
                        .executor
                        .artifact_of(&status.task_id)
                        .unwrap_or_default(),
                    task_id: status.task_id.clone(),
                    resources: None,
                });
            }
        }
        tasks
    }
}

fn id_path(config: &AgentConfig) -> std::path::PathBuf {
    config.executor.work_dir.join("agent_id")
}

fn rand_uuid() -> Vec<u8> {
    uuid::Uuid::new_v4().as_bytes().to_vec()
}

async fn send(outbound: &mpsc::Sender<v1::AgentMessage>, kind: ToMaster) -> anyhow::Result<()> {
    outbound
        .send(v1::AgentMessage { kind: Some(kind) })
        .await
        .map_err(|_| anyhow::anyhow!("the stream to the master closed"))
}

/// Serves a sandbox read for the master.
fn sandbox_read(executor: &Executor, read: v1::SandboxRead) -> v1::SandboxReadReply {
    let mut reply = v1::SandboxReadReply {
        request_id: read.request_id,
        ..Default::default()
    };
    let length = if read.length == 0 {
        1 << 20
    } else {
        read.length.min(4 << 20)
    } as usize;
    let target = v1::SandboxTarget::try_from(read.target).unwrap_or(v1::SandboxTarget::Unspecified);
    reply.complete = executor.state(&read.task_id).is_none_or(crate::is_terminal);
    let file = match target {
        v1::SandboxTarget::Stdout => SandboxFile::Stdout,
        v1::SandboxTarget::Stderr => SandboxFile::Stderr,
        v1::SandboxTarget::File => SandboxFile::Root(read.path.clone()),
        v1::SandboxTarget::List => {
            match executor.list(&read.task_id, &read.path) {
                Ok(entries) => reply.entries = entries,
                Err(e) => reply.error = e,
            }
            return reply;
        }
        v1::SandboxTarget::Unspecified => {
            reply.error = "sandbox read names no target (stdout, stderr, file or list)".into();
            return reply;
        }
    };
    match executor.read_sized(&read.task_id, &file, read.offset, length) {
        Ok((data, size)) => {
            reply.size = size;
            reply.data = data;
        }
        Err(e) => reply.error = e.to_string(),
    }
    reply
}

/// What a task's sandbox takes on disk, from its final usage: its root's
/// files and the output it kept.
fn sandbox_bytes(usage: &v1::TaskUsage, output_cap: u64) -> u64 {
    usage.disk_bytes + usage.stdout_bytes.min(output_cap) + usage.stderr_bytes.min(output_cap)
}
