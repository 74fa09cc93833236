//! The executor's side of the agent/executor protocol: the [`Executor`]
//! with its checkpoint and disk collector, and every task and update it
//! holds. The [`server`](super::server) runs it behind a Unix socket in the
//! `wasmos executor` process; the agent runs it in its own process where
//! there are no Unix sockets. Either way it is driven by [`Input`]s and
//! answers on the attached agent's [`Outlet`].
//!
//! Every status the executor makes is numbered, written to the checkpoint
//! and kept until the framework acknowledges it. To an agent of protocol
//! 1.2 or later it goes at once, marked `unsynced` (this executor's
//! incarnation and the batch's last number), and a `synced` mark follows
//! once its batch is committed (synced when it carries a terminal status):
//! the master frees an ended task's resources on hearing the end and tells
//! the framework at the mark. To an older agent it goes only after the
//! commit, as before.
//! A task the checkpoint shows running when the service starts was running
//! in an executor that died: it ends `LOST` with
//! `REASON_EXECUTOR_TERMINATED`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use wasmos_proto::v1;
use wasmos_proto::v1::from_executor::Kind as Out;
use wasmos_proto::v1::to_executor::Kind as In;

use super::artifacts::AgentArtifacts;
use crate::checkpoint::{self, Checkpoint, Write};
use crate::{Executor, ExecutorConfig, ModuleSource, SandboxFile, is_terminal};

/// Where messages for one attached agent go.
pub type Outlet = UnboundedSender<v1::FromExecutor>;

/// What the service needs to start.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub executor: ExecutorConfig,
    pub checkpoint: checkpoint::Backend,
    /// The protocol it speaks (tests force others).
    pub protocol: v1::ExecutorProtocol,
    /// With no agent attached for this long and no task running, the
    /// service ends (and with it the executor process). `None`: never.
    pub orphan_timeout: Option<Duration>,
}

/// What drives the service.
pub enum Input {
    /// A connection said `hello`; `id` names it in later inputs.
    Connected {
        id: u64,
        hello: v1::ExecutorHello,
        outlet: Outlet,
    },
    /// A message of connection `id`.
    Message(u64, v1::ToExecutor),
    /// Connection `id` closed.
    Disconnected(u64),
}

/// Why the service ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Drained at an agent's request: its tasks ended and are checkpointed.
    Drained,
    /// No agent came back within the orphan timeout, and no task was left.
    Orphaned,
    /// Every input sender is gone (the agent's own process is ending).
    Closed,
}

/// The attached agent and what has been committed, shared with the
/// checkpoint writer, which delivers committed updates.
struct Delivery {
    agent: Option<(u64, Outlet)>,
    /// The attached agent takes updates before their commit (protocol 1.2).
    early: bool,
    /// Updates up to this sequence number are committed.
    committed: u64,
    /// Random at every start: sequence numbers restart after a power loss.
    incarnation: u64,
}

/// The running service.
pub struct Service {
    executor: Arc<Executor>,
    gc: crate::gc::GcHandle,
    artifacts: Arc<AgentArtifacts>,
    statuses: UnboundedReceiver<v1::TaskStatus>,
    status_tx: UnboundedSender<v1::TaskStatus>,
    /// Every task not yet forgotten (its end acknowledged), by id.
    tasks: HashMap<String, v1::CheckpointTask>,
    /// Unacknowledged updates by sequence number, boxed: a B-tree shifts
    /// its values within a node on every insert and remove, and a status
    /// is a few hundred bytes.
    unacked: BTreeMap<u64, Box<v1::TaskStatus>>,
    by_uuid: HashMap<Vec<u8>, u64>,
    next_seq: u64,
    writer: Writer,
    delivery: Arc<Mutex<Delivery>>,
    protocol: v1::ExecutorProtocol,
    orphan_timeout: Option<Duration>,
    detached_since: Option<Instant>,
    draining: bool,
}

impl Service {
    /// Starts the executor (taking `executor.lock`), opens the checkpoint
    /// and accounts for what an earlier executor left in it.
    pub fn start(config: ServiceConfig) -> anyhow::Result<Service> {
        let artifacts = Arc::new(AgentArtifacts::default());
        let executor_config = config
            .executor
            .clone()
            .durable_outputs(true)
            .artifacts(artifacts.clone());
        let work_dir = executor_config.work_dir.clone();
        let executor = Arc::new(Executor::new(executor_config)?);
        let (checkpoint, loaded) = Checkpoint::open(&work_dir, config.checkpoint)?;
        let gc = crate::gc::spawn(executor.clone())
            .map_err(|e| anyhow::anyhow!("starting the disk collector: {e}"))?;
        let (status_tx, statuses) = mpsc::unbounded_channel();
        let next_seq = loaded.updates.keys().next_back().map_or(1, |s| s + 1);
        let delivery = Arc::new(Mutex::new(Delivery {
            agent: None,
            early: false,
            committed: next_seq - 1,
            incarnation: rand::random(),
        }));
        let mut service = Service {
            executor,
            gc,
            artifacts,
            statuses,
            status_tx,
            tasks: loaded.tasks.into_iter().collect(),
            by_uuid: loaded
                .updates
                .iter()
                .map(|(seq, s)| (s.uuid.clone(), *seq))
                .collect(),
            unacked: loaded
                .updates
                .into_iter()
                .map(|(seq, s)| (seq, Box::new(s)))
                .collect(),
            next_seq,
            writer: Writer::start(checkpoint, delivery.clone())?,
            delivery,
            protocol: config.protocol,
            orphan_timeout: config.orphan_timeout,
            detached_since: Some(Instant::now()),
            draining: false,
        };
        service.recover();
        Ok(service)
    }

    /// The executor (for its counters).
    pub fn executor(&self) -> &Arc<Executor> {
        &self.executor
    }

    /// Tasks the checkpoint shows unended ran in an executor that is gone.
    fn recover(&mut self) {
        let ended: std::collections::HashSet<&str> = self
            .unacked
            .values()
            .filter(|s| is_terminal(s.state()))
            .map(|s| s.task_id.as_str())
            .collect();
        let lost: Vec<(String, String)> = self
            .tasks
            .iter()
            .filter(|(id, t)| !is_terminal(t.state()) && !ended.contains(id.as_str()))
            .map(|(id, t)| (id.clone(), t.framework_id.clone()))
            .collect();
        let carried = self.unacked.len();
        for (task, framework) in &lost {
            self.synthesize(
                framework,
                task,
                v1::TaskState::Lost,
                v1::Reason::ExecutorTerminated,
                "the executor process ended while the task ran",
            );
        }
        if carried > 0 || !lost.is_empty() {
            tracing::info!(
                updates = carried,
                lost = lost.len(),
                "checkpoint: unacknowledged updates carried over; tasks of a dead executor reported LOST"
            );
        }
    }

    /// Runs until drained, orphaned, or its inputs close.
    pub async fn run(mut self, mut inputs: UnboundedReceiver<Input>) -> Exit {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Idle for two ticks running: a terminal status the write-behind
        // still holds (it waits for its sync) has arrived by then.
        let mut idle_ticks = 0;
        let exit = loop {
            tokio::select! {
                input = inputs.recv() => match input {
                    Some(input) => self.input(input),
                    None => break Exit::Closed,
                },
                Some(status) = self.statuses.recv() => {
                    let mut batch = vec![status];
                    while batch.len() < 4096 {
                        match self.statuses.try_recv() {
                            Ok(status) => batch.push(status),
                            Err(_) => break,
                        }
                    }
                    self.record(batch);
                }
                _ = tick.tick() => {
                    idle_ticks = if self.executor.running_count() == 0
                        && self.statuses.is_empty()
                    {
                        idle_ticks + 1
                    } else {
                        0
                    };
                    let idle = idle_ticks >= 2;
                    if self.draining && idle {
                        break Exit::Drained;
                    }
                    if let (Some(since), Some(timeout)) = (self.detached_since, self.orphan_timeout)
                        && idle
                        && since.elapsed() >= timeout
                    {
                        break Exit::Orphaned;
                    }
                }
            }
        };
        // Whatever the tasks reported last is in the checkpoint before the
        // process goes.
        while let Ok(status) = self.statuses.try_recv() {
            self.record(vec![status]);
        }
        self.writer.flush();
        exit
    }

    fn input(&mut self, input: Input) {
        match input {
            Input::Connected { id, hello, outlet } => self.attach(id, hello, outlet),
            Input::Disconnected(id) => {
                let mut delivery = self.delivery.lock().unwrap();
                if delivery
                    .agent
                    .as_ref()
                    .is_some_and(|(current, _)| *current == id)
                {
                    delivery.agent = None;
                    self.detached_since = Some(Instant::now());
                    tracing::info!("the agent detached; tasks go on");
                }
            }
            Input::Message(id, message) => {
                let outlet = {
                    let delivery = self.delivery.lock().unwrap();
                    match &delivery.agent {
                        Some((current, outlet)) if *current == id => outlet.clone(),
                        // A connection that was replaced: its agent is gone.
                        _ => return,
                    }
                };
                if let Some(kind) = message.kind {
                    self.message(kind, outlet);
                }
            }
        }
    }

    fn attach(&mut self, id: u64, hello: v1::ExecutorHello, outlet: Outlet) {
        let theirs = hello.protocol.unwrap_or_default();
        let compatible = super::compatible(&theirs, &self.protocol);
        // Everything recorded so far is made durable first (one sync), so
        // the welcome holds every update, none of them unsynced, and no
        // commit in flight delivers to the agent that came before.
        self.writer.flush();
        let mut delivery = self.delivery.lock().unwrap();
        let committed = delivery.committed;
        let welcome = v1::ExecutorWelcome {
            protocol: Some(self.protocol.clone()),
            pid: std::process::id(),
            tasks: if compatible {
                self.open_tasks()
            } else {
                Vec::new()
            },
            pending: if compatible {
                self.unacked
                    .range(..=committed)
                    .map(|(_, s)| (**s).clone())
                    .collect()
            } else {
                Vec::new()
            },
            compatible,
            draining: self.draining,
        };
        tracing::info!(
            agent = %hello.agent_id,
            agent_protocol = %super::show(&theirs),
            protocol = %super::show(&self.protocol),
            compatible,
            tasks = welcome.tasks.len(),
            pending = welcome.pending.len(),
            "an agent attached"
        );
        let _ = outlet.send(v1::FromExecutor {
            kind: Some(Out::Welcome(welcome)),
        });
        delivery.agent = Some((id, outlet.clone()));
        delivery.early = compatible && super::takes_unsynced(&theirs);
        drop(delivery);
        self.detached_since = None;
        if compatible {
            self.artifacts.attach(outlet);
        }
    }

    /// Every task whose end is not acknowledged, as a registration lists it.
    fn open_tasks(&self) -> Vec<v1::RunningTask> {
        let mut tasks: Vec<v1::RunningTask> = self
            .tasks
            .iter()
            .map(|(id, t)| v1::RunningTask {
                task_id: id.clone(),
                framework_id: t.framework_id.clone(),
                resources: None,
                state: t.state,
                artifact: t.artifact.clone(),
                spec: t.spec.clone(),
                launch_mac: t.launch_mac.clone(),
                launch_epoch: t.launch_epoch,
            })
            .collect();
        tasks.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        tasks
    }

    fn message(&mut self, kind: In, outlet: Outlet) {
        match kind {
            In::Run(run) => self.launch(run),
            In::Kill(kill) => {
                for task in kill.task_ids {
                    match self.executor.kill(&task) {
                        Err(crate::TaskError::Unknown(_)) if !self.tasks.contains_key(&task) => {
                            self.synthesize(
                                "",
                                &task,
                                v1::TaskState::Killed,
                                v1::Reason::Killed,
                                "killed before it reached this agent",
                            )
                        }
                        _ => {}
                    }
                }
            }
            In::Acks(acks) => self.acknowledged(acks),
            In::SandboxRead(read) => {
                let executor = self.executor.clone();
                tokio::task::spawn_blocking(move || {
                    let reply = sandbox_read(&executor, read);
                    let _ = outlet.send(v1::FromExecutor {
                        kind: Some(Out::SandboxReadReply(reply)),
                    });
                });
            }
            In::Artifact(reply) => self.artifacts.reply(reply),
            In::Drain(_) => {
                if !self.draining {
                    tracing::info!(
                        running = self.executor.running_count(),
                        "draining: no new tasks; exiting once the running ones end"
                    );
                }
                self.draining = true;
            }
            In::Lost(lost) => {
                for task in lost.tasks {
                    if !self.tasks.contains_key(&task.task_id) {
                        self.synthesize(
                            &task.framework_id,
                            &task.task_id,
                            v1::TaskState::Lost,
                            v1::Reason::ExecutorTerminated,
                            "the executor process ended before it recorded the task",
                        );
                    }
                }
            }
            In::Hello(_) => {}
        }
    }

    fn launch(&mut self, run: v1::RunTasks) {
        let mut writes = Vec::new();
        for launch in run.tasks {
            let Some(spec) = launch.spec else { continue };
            let task_id = spec.task_id.clone();
            if self.tasks.contains_key(&task_id) {
                continue; // sent again (e.g. after a reconnect)
            }
            if self.draining {
                self.synthesize(
                    &launch.framework_id,
                    &task_id,
                    v1::TaskState::Lost,
                    v1::Reason::ExecutorTerminated,
                    "the executor is draining to be replaced",
                );
                continue;
            }
            // The spec and MAC are what a master that lost this launch
            // adopts the task from (reported by `open_tasks`): written once.
            let record = v1::CheckpointTask {
                framework_id: launch.framework_id.clone(),
                artifact: spec.artifact.clone(),
                state: v1::TaskState::Staging as i32,
                spec: Some(spec.clone()),
                launch_mac: launch.mac.clone(),
                launch_epoch: launch.master_epoch,
            };
            let kept = v1::TaskLaunch {
                framework_id: launch.framework_id.clone(),
                spec: Some(spec.clone()),
                mac: launch.mac,
                master_epoch: launch.master_epoch,
            };
            match self.executor.launch(
                &launch.framework_id,
                spec,
                ModuleSource::Artifact,
                self.status_tx.clone(),
            ) {
                Ok(()) => {
                    writes.push(Write::Task(task_id.clone(), state_of(&record)));
                    writes.push(Write::Launch(task_id.clone(), kept));
                    self.tasks.insert(task_id, record);
                }
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
        self.writer.submit(writes, false, None);
    }

    /// Numbers a batch of statuses, checkpoints it and hands it to the
    /// writer, which delivers it once committed.
    fn record(&mut self, batch: Vec<v1::TaskStatus>) {
        let mut writes = Vec::with_capacity(batch.len() * 2);
        let mut durable = false;
        for status in &batch {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.by_uuid.insert(status.uuid.clone(), seq);
            self.unacked.insert(seq, Box::new(status.clone()));
            let task =
                self.tasks
                    .entry(status.task_id.clone())
                    .or_insert_with(|| v1::CheckpointTask {
                        framework_id: status.framework_id.clone(),
                        ..Default::default()
                    });
            task.state = status.state;
            writes.push(Write::Task(status.task_id.clone(), state_of(task)));
            writes.push(Write::Update(seq, status.clone()));
            if is_terminal(status.state()) {
                durable = true;
                // An invalid task may have met another task's sandbox: let
                // the collector measure that one.
                let bytes = status
                    .usage
                    .filter(|_| status.reason() != v1::Reason::InvalidTask)
                    .map(|u| sandbox_bytes(&u, self.executor.config().output_cap));
                self.gc.task_ended(&status.task_id, bytes);
            }
        }
        let upto = self.next_seq - 1;
        let delivery = self.delivery.lock().unwrap();
        let sent = match &delivery.agent {
            Some((_, agent)) if delivery.early => {
                let unsynced = v1::SyncMark {
                    incarnation: delivery.incarnation,
                    seq: upto,
                    sync_micros: 0,
                };
                for chunk in batch.chunks(4096) {
                    let _ = agent.send(v1::FromExecutor {
                        kind: Some(Out::Updates(v1::StatusUpdates {
                            statuses: chunk.to_vec(),
                            unsynced: Some(unsynced),
                        })),
                    });
                }
                true
            }
            _ => false,
        };
        drop(delivery);
        self.writer.submit(
            writes,
            durable,
            Some(Delivered {
                upto,
                statuses: if sent { Vec::new() } else { batch },
                sent,
            }),
        );
    }

    fn acknowledged(&mut self, acks: v1::AckUpdates) {
        let mut writes = Vec::new();
        for ack in acks.acks {
            let Some(seq) = self.by_uuid.remove(&ack.uuid) else {
                continue;
            };
            writes.push(Write::ForgetUpdate(seq));
            if let Some(status) = self.unacked.remove(&seq)
                && is_terminal(status.state())
            {
                self.tasks.remove(&status.task_id);
                writes.push(Write::ForgetTask(status.task_id.clone()));
                self.gc.task_retired(&status.task_id);
            }
        }
        self.writer.submit(writes, false, None);
    }

    /// A status the service makes itself for a task the executor cannot
    /// report on.
    fn synthesize(
        &self,
        framework: &str,
        task: &str,
        state: v1::TaskState,
        reason: v1::Reason,
        message: &str,
    ) {
        let status = v1::TaskStatus {
            task_id: task.to_string(),
            framework_id: framework.to_string(),
            state: state as i32,
            reason: reason as i32,
            message: message.to_string(),
            uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
            timestamp_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            source: v1::StatusSource::Agent as i32,
            ..Default::default()
        };
        let _ = self.status_tx.send(status);
    }
}

/// A task's record without its launch (which is written once, apart):
/// what every state change writes.
fn state_of(task: &v1::CheckpointTask) -> v1::CheckpointTask {
    v1::CheckpointTask {
        framework_id: task.framework_id.clone(),
        artifact: task.artifact.clone(),
        state: task.state,
        spec: None,
        launch_mac: Vec::new(),
        launch_epoch: 0,
    }
}

/// The most status updates the checkpoint writer sends in one message.
const MAX_UPDATES_A_MESSAGE: usize = 4096;

/// The updates of a batch for the checkpoint writer.
struct Delivered {
    /// The highest sequence number in it.
    upto: u64,
    /// Sent to the agent once committed (when not `sent`).
    statuses: Vec<v1::TaskStatus>,
    /// Already sent, unsynced: the writer sends the `synced` mark.
    sent: bool,
}

/// A batch for the checkpoint writer.
enum Job {
    Commit {
        writes: Vec<Write>,
        durable: bool,
        deliver: Option<Delivered>,
    },
    /// Answered once everything before it is committed.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The checkpoint's writer thread: commits what queued up while it was
/// busy in one transaction (group commit), then delivers the updates in it.
struct Writer {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Writer {
    fn start(mut checkpoint: Checkpoint, delivery: Arc<Mutex<Delivery>>) -> anyhow::Result<Writer> {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("wasmos-checkpoint".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut writes: Vec<Vec<Write>> = Vec::new();
                    let mut durable = false;
                    let mut deliver = Vec::new();
                    let mut flushed = Vec::new();
                    let mut upto = 0;
                    let mut synced = None;
                    for job in std::iter::once(first).chain(rx.try_iter()) {
                        match job {
                            Job::Commit {
                                writes: w,
                                durable: d,
                                deliver: batch,
                            } => {
                                if !w.is_empty() {
                                    writes.push(w);
                                }
                                durable |= d;
                                if let Some(batch) = batch {
                                    upto = batch.upto;
                                    if batch.sent {
                                        synced = Some(batch.upto);
                                    } else if !batch.statuses.is_empty() {
                                        deliver.push(batch.statuses);
                                    }
                                }
                            }
                            Job::Flush(done) => flushed.push(done),
                        }
                    }
                    // A flush commits even with nothing new: the
                    // commits before it were not synced.
                    let synced_commit = durable || !flushed.is_empty();
                    let started = Instant::now();
                    let mut committed = true;
                    if (!writes.is_empty() || !flushed.is_empty())
                        && let Err(e) = checkpoint.commit_lists(writes, synced_commit)
                    {
                        // The updates still go: holding them would stall
                        // every task; a restart may then lose them. But no
                        // `synced` mark claims them durable: their ends
                        // are told only when sent again after a restart.
                        tracing::error!("{e:#}");
                        committed = false;
                    }
                    let mut delivery = delivery.lock().unwrap();
                    delivery.committed = delivery.committed.max(upto);
                    if let Some((_, agent)) = &delivery.agent {
                        for statuses in super::regroup::regroup(deliver, MAX_UPDATES_A_MESSAGE) {
                            let _ = agent.send(v1::FromExecutor {
                                kind: Some(Out::Updates(v1::StatusUpdates {
                                    statuses,
                                    unsynced: None,
                                })),
                            });
                        }
                        // Every terminal update up to here was in a synced
                        // commit (its batch asked for one); the others need
                        // none.
                        if let Some(seq) = synced.filter(|_| committed) {
                            let _ = agent.send(v1::FromExecutor {
                                kind: Some(Out::Synced(v1::SyncMark {
                                    incarnation: delivery.incarnation,
                                    seq,
                                    sync_micros: if synced_commit {
                                        started.elapsed().as_micros() as u64
                                    } else {
                                        0
                                    },
                                })),
                            });
                        }
                    }
                    drop(delivery);
                    flushed.into_iter().for_each(|done| {
                        let _ = done.send(());
                    });
                }
            })?;
        Ok(Writer { jobs })
    }

    fn submit(&self, writes: Vec<Write>, durable: bool, deliver: Option<Delivered>) {
        if writes.is_empty() && deliver.is_none() {
            return;
        }
        let _ = self.jobs.send(Job::Commit {
            writes,
            durable,
            deliver,
        });
    }

    /// Waits until everything submitted is committed and synced.
    fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        let _ = self.jobs.send(Job::Commit {
            writes: Vec::new(),
            durable: true,
            deliver: None,
        });
        if self.jobs.send(Job::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

/// Serves a sandbox read.
pub fn sandbox_read(executor: &Executor, read: v1::SandboxRead) -> v1::SandboxReadReply {
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
    reply.complete = executor.state(&read.task_id).is_none_or(is_terminal);
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
