//! The agent's link to the master: one `AgentLink.Attach` stream, dialled by
//! the agent, carrying registration, heartbeats, status updates and sandbox
//! reads one way, and launches, kills, acks and read requests the other.
//!
//! The executor never depends on this module; this module drives it,
//! through an [`ExecutorHandle`]: the executor is a process of its own by
//! default (see [`crate::process`]), so tasks go on while the agent
//! restarts. The executor keeps every status update in its checkpoint until
//! the framework acknowledges it (through the master); the link sends
//! unacknowledged ones again after each reconnect and every
//! `resend_interval`, so updates survive dropped streams and restarts.
//! The agent's id is kept in `<work_dir>/agent_id`, so a restarted agent
//! re-registers as itself.
//!
//! The room: the link itself (here), fetching artifacts from the master
//! ([`artifacts`]) and the agent's TLS identity ([`identity`]). It is the
//! only part of the crate that uses tonic (the `link` feature).

mod artifacts;
mod backoff;
pub mod identity;

pub use backoff::{Backoff, DEFAULT_MAX_BACKOFF, DEFAULT_MIN_BACKOFF};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use wasmos_proto::v1;
use wasmos_proto::v1::agent_link_client::AgentLinkClient;
use wasmos_proto::v1::agent_message::Kind as ToMaster;
use wasmos_proto::v1::artifacts_client::ArtifactsClient;
use wasmos_proto::v1::master_message::Kind as FromMaster;

use crate::ArtifactSource;
use crate::ExecutorConfig;
use crate::process::handle::{self, Event, ExecutorHandle, Mode};
use crate::process::service::ServiceConfig;
use artifacts::MasterArtifacts;
use wasmos_proto::v1::from_executor::Kind as FromExecutor;
use wasmos_proto::v1::to_executor::Kind as ToExecutor;

/// Everything `wasmos agent` can be told.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The master's gRPC URL, e.g. `http://127.0.0.1:5050`, or the URLs of
    /// several masters of one cluster, comma-separated: the agent attaches
    /// to whichever leads (the others do not listen) and moves on to the
    /// next when its master goes away.
    pub master: String,
    /// What the agent offers (resources, attributes, reservations, hostname).
    /// `agent_id` is filled in from `<work_dir>/agent_id` when present.
    pub info: v1::AgentInfo,
    /// How tasks are run; its `work_dir` also holds the agent id.
    pub executor: ExecutorConfig,
    /// First reconnect delay, doubled on each failure up to `max_backoff`;
    /// each wait is drawn from the upper half of its step ([`Backoff`]).
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Unacknowledged updates are sent again this often. Default 2 s.
    pub resend_interval: Duration,
    /// The agent's certificate and CA, for a TLS master (`https://`); `None`
    /// for a plaintext one on loopback.
    pub identity: Option<identity::Identity>,
    /// Where tasks run: in an executor process (the default where there
    /// are Unix sockets) or in this one.
    pub mode: Mode,
    /// An executor process with no agent for this long and no task left
    /// exits. Default 5 minutes.
    pub orphan_timeout: Duration,
    /// The executor protocol to speak (tests force others).
    pub protocol: v1::ExecutorProtocol,
    /// How the executor's checkpoint reaches the disk (tests simulate
    /// power loss).
    pub checkpoint: crate::checkpoint::Backend,
}

impl AgentConfig {
    pub fn new(master: String, info: v1::AgentInfo, executor: ExecutorConfig) -> AgentConfig {
        AgentConfig {
            master,
            info,
            executor,
            min_backoff: DEFAULT_MIN_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            resend_interval: Duration::from_secs(2),
            identity: None,
            mode: Mode::InProcess,
            orphan_timeout: Duration::from_secs(300),
            protocol: crate::process::protocol(),
            checkpoint: crate::checkpoint::Backend::File,
        }
    }

    /// The masters' URLs, in the order tried.
    pub fn masters(&self) -> Vec<&str> {
        let masters: Vec<&str> = self
            .master
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect();
        if masters.is_empty() {
            vec![self.master.as_str()]
        } else {
            masters
        }
    }

    /// The endpoint of the master at `url`, with the agent's certificate
    /// when it has one. HTTP/2 keepalive notices a master that stopped
    /// answering (paused, or cut off) without closing the connection.
    fn endpoint(&self, url: &str) -> anyhow::Result<Endpoint> {
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .with_context(|| format!("`{url}` is not a master URL (e.g. https://master:5050)"))?
            .connect_timeout(Duration::from_secs(3))
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true);
        match (&self.identity, endpoint.uri().scheme_str()) {
            (Some(identity), Some("https")) => {
                endpoint = endpoint.tls_config(identity.client_tls().tonic())?;
            }
            (None, Some("https")) => anyhow::bail!(
                "{url} serves TLS: the agent must join it first (--join <join string>, from `wasmos token create --agent`)"
            ),
            _ => {}
        }
        Ok(endpoint)
    }
}

/// A lazily connected client of the `Artifacts` service of the master at
/// `url`.
fn artifacts_client(config: &AgentConfig, url: &str) -> anyhow::Result<ArtifactsClient<Channel>> {
    Ok(artifacts::client(config.endpoint(url)?))
}

/// An update waiting for its acknowledgement (its status boxed: the map
/// that holds it shifts its values on every insert and remove).
struct Unacked {
    status: Box<v1::TaskStatus>,
    sent: Instant,
    /// Not yet durable on the executor: it is at this mark.
    unsynced: Option<v1::SyncMark>,
}

/// The running agent.
pub struct Agent {
    config: AgentConfig,
    executor: ExecutorHandle,
    events: mpsc::UnboundedReceiver<Event>,
    /// Unacknowledged updates in the order they were made (a copy of the
    /// executor's, which it checkpoints).
    unacked: BTreeMap<u64, Unacked>,
    by_uuid: HashMap<Vec<u8>, u64>,
    /// Tasks whose terminal update the master has not acknowledged, with
    /// their latest state: what a registration reports. A task that ended
    /// while the master was away is among them, or a master would declare
    /// it LOST and its work would be done twice.
    open: HashMap<String, v1::RunningTask>,
    next_seq: u64,
    agent_id: String,
    /// The newest master epoch seen; messages of an older master are refused.
    master_epoch: u64,
    /// The master holds ends sent before they are durable here until a
    /// `synced` mark covers them; without it (an older master) updates go
    /// only once durable.
    master_holds_unsynced: bool,
    heartbeat_interval: Duration,
    /// Which of the configured masters the agent dials (its index).
    current_master: usize,
    /// The leader a standby master named: dialled before the configured
    /// ones until it fails.
    leader_hint: Option<String>,
    /// The artifact fetcher, its client rebuilt after a renewal and when
    /// the agent moves to another master.
    artifacts: Arc<MasterArtifacts>,
    artifact_client: Arc<std::sync::RwLock<ArtifactsClient<Channel>>>,
    /// Tasks running (as the agent last heard), for its HTTP port.
    running: Arc<std::sync::atomic::AtomicUsize>,
    /// How long to wait before dialling again: from the first step once a
    /// master registered the agent, however its stream ended after.
    backoff: Backoff,
    /// `<work_dir>/agent.lock`, held while the agent lives.
    _lock: std::fs::File,
}

impl Agent {
    /// Locks the work dir, reads a saved agent id, and finds or starts the
    /// executor.
    pub fn new(mut config: AgentConfig) -> anyhow::Result<Agent> {
        add_platform_attributes(&mut config.info)?;
        let first_master = config.masters()[0].to_string();
        let artifact_client = Arc::new(std::sync::RwLock::new(artifacts_client(
            &config,
            &first_master,
        )?));
        // Keys, sandboxes and tasks' outputs: the agent's owner's alone.
        wasmos_tls::private_dir(&config.executor.work_dir)
            .with_context(|| format!("cannot create {}", config.executor.work_dir.display()))?;
        let lock = crate::executor::lock_work_dir(&config.executor.work_dir, "agent.lock")?;
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
        let service = ServiceConfig {
            executor: config.executor.clone().agent_id(agent_id.clone()),
            checkpoint: config.checkpoint,
            protocol: config.protocol.clone(),
            orphan_timeout: Some(config.orphan_timeout),
        };
        let (executor, events) = handle::start(config.mode.clone(), service, agent_id.clone())?;
        let mut backoff = Backoff::new(config.min_backoff, config.max_backoff);
        // Of several masters one leads again within a lease: look for it
        // at least every second.
        if config.masters().len() > 1 {
            backoff.cap(Duration::from_secs(1));
        }
        Ok(Agent {
            config,
            executor,
            events,
            unacked: BTreeMap::new(),
            by_uuid: HashMap::new(),
            open: HashMap::new(),
            next_seq: 0,
            agent_id,
            master_epoch: 0,
            master_holds_unsynced: false,
            heartbeat_interval: Duration::from_secs(1),
            current_master: 0,
            leader_hint: None,
            artifacts: Arc::new(MasterArtifacts::new(artifact_client.clone())),
            artifact_client,
            running: Arc::default(),
            backoff,
            _lock: lock,
        })
    }

    /// How many tasks run here, as the agent last heard (for its HTTP port).
    pub fn running_gauge(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        self.running.clone()
    }

    /// Attaches to the executor, then connects to the master, and
    /// reconnects with backoff, forever.
    pub async fn run(mut self) -> anyhow::Result<()> {
        // The registration reports what the executor holds: learn it first.
        loop {
            match self.events.recv().await {
                Some(Event::Attached(welcome)) => {
                    self.attached(welcome);
                    break;
                }
                Some(_) => {}
                None => anyhow::bail!("the executor could not be started"),
            }
        }
        loop {
            match self.session().await {
                Ok(()) => {
                    tracing::warn!("the master closed the stream; reconnecting");
                    // A master that leaves may have lost its leadership:
                    // the next one is tried at once.
                    if self.next_master() {
                        continue;
                    }
                }
                Err(e) => {
                    // A standby named the leader: go there at once; or
                    // nobody leads yet: wait as long as it said.
                    match e
                        .downcast_ref::<tonic::Status>()
                        .and_then(wasmos_proto::StandbyHint::of)
                    {
                        Some(wasmos_proto::StandbyHint::Leader(leader))
                            if self.leader_hint.as_deref() != Some(leader.as_str()) =>
                        {
                            tracing::info!(%leader, "a standby master named the leader");
                            self.leader_hint = Some(leader);
                            self.rebuild_artifact_client();
                            continue;
                        }
                        Some(wasmos_proto::StandbyHint::Wait(after)) => {
                            tracing::info!("no master leads yet; asking again in {after:?}");
                            tokio::time::sleep(after).await;
                            continue;
                        }
                        _ => {}
                    }
                    // Refused for who it is (revoked, unknown, over its
                    // token's resources) or for what it claims (more than
                    // the master's --max-agent-resources): it would claim
                    // the same again, so retrying cannot help.
                    if let Some(status) = e.downcast_ref::<tonic::Status>()
                        && matches!(
                            status.code(),
                            tonic::Code::PermissionDenied
                                | tonic::Code::Unauthenticated
                                | tonic::Code::InvalidArgument
                        )
                    {
                        anyhow::bail!("the master refused this agent: {}", status.message());
                    }
                    // Every master is tried in turn before backing off.
                    if self.config.masters().len() > 1 {
                        tracing::debug!("link to {} failed: {e:#}", self.master_url());
                        if self.next_master() {
                            continue;
                        }
                        tracing::warn!(
                            "no master answered (the last: {e:#}); retrying within {:?}",
                            self.backoff.step()
                        );
                    } else {
                        tracing::warn!(
                            "link to {} failed: {e:#}; retrying within {:?}",
                            self.master_url(),
                            self.backoff.step()
                        );
                    }
                }
            }
            tokio::time::sleep(self.backoff.wait()).await;
        }
    }

    /// The URL of the master the agent dials now: the leader a standby
    /// named, else the configured master it is at.
    fn master_url(&self) -> String {
        if let Some(leader) = &self.leader_hint {
            return leader.clone();
        }
        let masters = self.config.masters();
        masters[self.current_master % masters.len()].to_string()
    }

    /// Moves on: from a named leader back to the configured masters, else
    /// to the next configured master (with its artifact client); false
    /// when that wraps around to the first, or there is only one.
    fn next_master(&mut self) -> bool {
        if self.leader_hint.take().is_some() {
            self.rebuild_artifact_client();
            return true;
        }
        let count = self.config.masters().len();
        if count < 2 {
            return false;
        }
        self.current_master = (self.current_master + 1) % count;
        self.rebuild_artifact_client();
        self.current_master != 0
    }

    /// Points the artifact fetcher at the master dialled now.
    fn rebuild_artifact_client(&mut self) {
        match artifacts_client(&self.config, &self.master_url()) {
            Ok(client) => *self.artifact_client.write().expect("not poisoned") = client,
            Err(e) => tracing::warn!("rebuilding the artifact client: {e:#}"),
        }
    }

    /// One stream: register, then serve until it ends.
    async fn session(&mut self) -> anyhow::Result<()> {
        let url = self.master_url();
        let channel = self
            .config
            .endpoint(&url)?
            .connect()
            .await
            .with_context(|| format!("no master at {url}"))?;
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
        tracing::info!(agent = %self.agent_id, master = %url, "registered");
        // A master that goes away from here (killed, or a lost leader) is
        // dialled again after the shortest wait, not the last one.
        self.backoff.reset();
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
                    Some(Ok(message)) => self.master_message(message),
                    Some(Err(status)) => anyhow::bail!("stream failed: {}", status.message()),
                    None => return Ok(()),
                },
                Some(event) = self.events.recv() => self.executor_event(event, &outbound).await?,
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
        match artifacts_client(&self.config, &self.master_url()) {
            Ok(client) => *self.artifact_client.write().expect("not poisoned") = client,
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
                self.master_url(),
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
        self.master_holds_unsynced = registered.holds_unsynced_ends;
        if !registered.kill_task_ids.is_empty() {
            for task in &registered.kill_task_ids {
                tracing::info!(%task, "the master says this task was lost: killing it");
            }
            self.executor.send(ToExecutor::Kill(v1::KillTasks {
                task_ids: registered.kill_task_ids,
            }));
        }
        Ok(())
    }

    /// Orders of the master go to the executor; the link notes what it
    /// needs for the next registration.
    fn master_message(&mut self, message: v1::MasterMessage) {
        match message.kind {
            Some(FromMaster::RunTasks(run)) => {
                for launch in &run.tasks {
                    let Some(spec) = &launch.spec else { continue };
                    tracing::debug!(task = %spec.task_id, "launch");
                    self.open
                        .entry(spec.task_id.clone())
                        .or_insert_with(|| v1::RunningTask {
                            task_id: spec.task_id.clone(),
                            framework_id: launch.framework_id.clone(),
                            resources: None,
                            state: v1::TaskState::Staging as i32,
                            artifact: spec.artifact.clone(),
                            spec: Some(spec.clone()),
                            launch_mac: launch.mac.clone(),
                            launch_epoch: launch.master_epoch,
                        });
                }
                self.executor.send(ToExecutor::Run(run));
            }
            Some(FromMaster::KillTasks(kill)) => self.executor.send(ToExecutor::Kill(kill)),
            Some(FromMaster::AckUpdates(acks)) => {
                for ack in &acks.acks {
                    if let Some(seq) = self.by_uuid.remove(&ack.uuid)
                        && let Some(entry) = self.unacked.remove(&seq)
                        && crate::is_terminal(entry.status.state())
                    {
                        self.open.remove(&ack.task_id);
                    }
                }
                self.executor.send(ToExecutor::Acks(acks));
            }
            Some(FromMaster::SandboxRead(read)) => {
                self.executor.send(ToExecutor::SandboxRead(read));
            }
            Some(FromMaster::Registered(_)) | None => {}
        }
        self.count_running();
    }

    /// What the executor says goes to the master.
    async fn executor_event(
        &mut self,
        event: Event,
        outbound: &mpsc::Sender<v1::AgentMessage>,
    ) -> anyhow::Result<()> {
        match event {
            Event::Attached(welcome) => {
                self.attached(welcome);
                self.resend(outbound, Duration::ZERO).await?;
            }
            Event::Detached(why) => {
                tracing::warn!("the executor went away ({why}); its running tasks end LOST");
            }
            Event::Message(FromExecutor::Updates(updates)) => {
                for status in &updates.statuses {
                    self.note(status);
                    self.keep(status.clone(), updates.unsynced);
                }
                self.count_running();
                // Unsynced updates wait here for their mark unless the
                // master holds what they end.
                if updates.unsynced.is_none() || self.master_holds_unsynced {
                    send(outbound, ToMaster::Updates(updates)).await?;
                }
            }
            Event::Message(FromExecutor::Synced(mark)) => {
                let mut now_durable = Vec::new();
                for entry in self.unacked.values_mut() {
                    if entry
                        .unsynced
                        .as_ref()
                        .is_some_and(|at| at.incarnation == mark.incarnation && at.seq <= mark.seq)
                    {
                        entry.unsynced = None;
                        now_durable.push((*entry.status).clone());
                    }
                }
                if self.master_holds_unsynced {
                    send(outbound, ToMaster::Synced(mark)).await?;
                } else {
                    send_updates(outbound, &now_durable, None).await?;
                }
            }
            Event::Message(FromExecutor::SandboxReadReply(reply)) => {
                send(outbound, ToMaster::SandboxReadReply(reply)).await?;
            }
            Event::Message(FromExecutor::ArtifactRequest(request)) => {
                let artifacts = self.artifacts.clone();
                let executor = self.executor.clone();
                tokio::spawn(async move {
                    let mut reply = v1::ArtifactReply {
                        request_id: request.request_id,
                        ..Default::default()
                    };
                    // Spooled: streamed into the executor's file, never
                    // held whole here.
                    let result = if request.spool_path.is_empty() {
                        artifacts.fetch(&request.digest).await.map(|data| {
                            reply.data = data;
                        })
                    } else {
                        let dest = std::path::Path::new(&request.spool_path);
                        let spooled = artifacts.spool(&request.digest, dest, request.max_bytes);
                        spooled.await.map(|size| {
                            reply.spooled = true;
                            reply.size = size;
                        })
                    };
                    if let Err(e) = result {
                        reply.error = e.to_string();
                    }
                    executor.send(ToExecutor::Artifact(reply));
                });
            }
            Event::Message(FromExecutor::Welcome(_)) => {}
        }
        Ok(())
    }

    /// An executor attached: it holds the truth of tasks and updates. Tasks
    /// the link launched that it does not know were lost with its
    /// predecessor before they started: it reports them LOST.
    fn attached(&mut self, welcome: v1::ExecutorWelcome) {
        let known: std::collections::HashSet<&str> =
            welcome.tasks.iter().map(|t| t.task_id.as_str()).collect();
        // An end this link heard before its executor synced it may have
        // died with that executor: unknown to the new one, it is lost too
        // (the master holds such an end from its framework until then).
        let unsynced: std::collections::HashSet<&str> = self
            .unacked
            .values()
            .filter(|u| u.unsynced.is_some())
            .map(|u| u.status.task_id.as_str())
            .collect();
        let lost: Vec<v1::RunningTask> = self
            .open
            .values()
            .filter(|t| {
                !known.contains(t.task_id.as_str())
                    && (!crate::is_terminal(t.state()) || unsynced.contains(t.task_id.as_str()))
            })
            .cloned()
            .collect();
        self.open = welcome
            .tasks
            .into_iter()
            .map(|t| (t.task_id.clone(), t))
            .collect();
        for task in &lost {
            self.open.insert(task.task_id.clone(), task.clone());
        }
        if !lost.is_empty() {
            self.executor
                .send(ToExecutor::Lost(v1::ExecutorLost { tasks: lost }));
        }
        self.unacked.clear();
        self.by_uuid.clear();
        for status in welcome.pending {
            self.keep(status, None);
        }
        self.count_running();
    }

    /// Notes a task's latest state for the next registration.
    fn note(&mut self, status: &v1::TaskStatus) {
        let task = self
            .open
            .entry(status.task_id.clone())
            .or_insert_with(|| v1::RunningTask {
                task_id: status.task_id.clone(),
                framework_id: status.framework_id.clone(),
                ..Default::default()
            });
        task.state = status.state;
    }

    fn count_running(&self) {
        let running = self
            .open
            .values()
            .filter(|t| !crate::is_terminal(t.state()))
            .count();
        self.running
            .store(running, std::sync::atomic::Ordering::Relaxed);
    }

    fn keep(&mut self, status: v1::TaskStatus, unsynced: Option<v1::SyncMark>) {
        self.next_seq += 1;
        self.by_uuid.insert(status.uuid.clone(), self.next_seq);
        self.unacked.insert(
            self.next_seq,
            Unacked {
                status: Box::new(status),
                sent: Instant::now(),
                unsynced,
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
        // Durable ones in one run of batches; unsynced ones (to a master
        // that holds them) under the highest mark of their incarnation,
        // which covers each of them.
        let mut durable = Vec::new();
        let mut unsynced: BTreeMap<u64, (u64, Vec<v1::TaskStatus>)> = BTreeMap::new();
        for entry in self.unacked.values_mut() {
            if now.duration_since(entry.sent) < age {
                continue;
            }
            match &entry.unsynced {
                None => durable.push((*entry.status).clone()),
                Some(_) if !self.master_holds_unsynced => continue,
                Some(at) => {
                    let (seq, batch) = unsynced.entry(at.incarnation).or_default();
                    *seq = (*seq).max(at.seq);
                    batch.push((*entry.status).clone());
                }
            }
            entry.sent = now;
        }
        let batches = std::iter::once((None, durable)).chain(unsynced.into_iter().map(
            |(incarnation, (seq, batch))| {
                (
                    Some(v1::SyncMark {
                        incarnation,
                        seq,
                        sync_micros: 0,
                    }),
                    batch,
                )
            },
        ));
        for (mark, batch) in batches {
            send_updates(outbound, &batch, mark).await?;
        }
        Ok(())
    }

    /// The tasks to report when registering: those that still run, and
    /// those that ended with their terminal update not yet acknowledged.
    ///
    /// Each carries its launch (spec and MAC) for a master that lost it,
    /// within [`LAUNCHES_REPORTED_BYTES`] in all: the newest launches
    /// (staging, then starting) first, as they are the ones a crashed
    /// master may not have made durable; past the budget only ids and
    /// states go, which is all a master that knows its tasks needs.
    fn running_tasks(&self) -> Vec<v1::RunningTask> {
        let mut tasks: Vec<v1::RunningTask> = self.open.values().cloned().collect();
        let newest_first = |state: v1::TaskState| match state {
            v1::TaskState::Staging | v1::TaskState::Unspecified => 0,
            v1::TaskState::Starting => 1,
            v1::TaskState::Running => 2,
            _ => 3,
        };
        tasks.sort_by(|a, b| {
            newest_first(a.state())
                .cmp(&newest_first(b.state()))
                .then_with(|| a.task_id.cmp(&b.task_id))
        });
        let mut budget = LAUNCHES_REPORTED_BYTES;
        for task in &mut tasks {
            let size = task.spec.as_ref().map_or(0, |s| s.encoded_len()) + task.launch_mac.len();
            if size <= budget {
                budget -= size;
            } else {
                task.spec = None;
                task.launch_mac.clear();
            }
        }
        tasks
    }
}

/// How many bytes of launches (specs and MACs) a registration carries at
/// most: with the ids and states of up to 10,000 tasks it stays well under
/// the 4 MiB a gRPC message may be by default.
const LAUNCHES_REPORTED_BYTES: usize = 2 << 20;

/// Adds the attributes every agent reports of itself (`os`, `arch`), so a
/// task can ask for a kind of machine; an operator's attribute of the same
/// name is refused rather than let it shadow the truth.
fn add_platform_attributes(info: &mut v1::AgentInfo) -> anyhow::Result<()> {
    use wasmos_platform::host;
    if let Some(a) = info
        .attributes
        .iter()
        .find(|a| host::RESERVED_ATTRIBUTES.contains(&a.key.as_str()))
    {
        anyhow::bail!(
            "the attribute `{}` is the agent's own (it reports {}): choose another name",
            a.key,
            host::attributes()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    info.attributes.extend(
        host::attributes()
            .into_iter()
            .map(|(key, value)| v1::Attribute {
                key: key.into(),
                value: value.into(),
            }),
    );
    Ok(())
}

fn id_path(config: &AgentConfig) -> std::path::PathBuf {
    config.executor.work_dir.join("agent_id")
}

/// Sends `statuses` in messages of at most 4,096, each marked `unsynced`.
async fn send_updates(
    outbound: &mpsc::Sender<v1::AgentMessage>,
    statuses: &[v1::TaskStatus],
    unsynced: Option<v1::SyncMark>,
) -> anyhow::Result<()> {
    for chunk in statuses.chunks(4096) {
        let updates = v1::StatusUpdates {
            statuses: chunk.to_vec(),
            unsynced,
        };
        send(outbound, ToMaster::Updates(updates)).await?;
    }
    Ok(())
}

async fn send(outbound: &mpsc::Sender<v1::AgentMessage>, kind: ToMaster) -> anyhow::Result<()> {
    outbound
        .send(v1::AgentMessage { kind: Some(kind) })
        .await
        .map_err(|_| anyhow::anyhow!("the stream to the master closed"))
}
