//! The task that drives the job service's state machine ([`crate::jobs`]):
//! it subscribes one framework per owner through the actor, as any
//! framework does but with no network between, turns the owner's offers
//! into `Accept`s, its updates into job progress (and acknowledgements),
//! and answers the `Jobs` service's calls.
//!
//! Jobs are durable: what the state machine changed goes to the actor as
//! registry writes ([`Command::Persist`]) joined to its turn's commit,
//! always before the acknowledgement of the updates it records and before
//! a submission is answered. A restarted master rebuilds the jobs from
//! their records and the tasks the core recovered, subscribes each
//! owner's framework again under its id and reconciles what ran
//! (`registry.rs`).

mod registry;

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tonic::Status;
use wasmos_proto::v1;
use wasmos_proto::v1::event::Kind as EventKind;

use super::super::actor::Command;
use super::super::event_queue;
use super::super::handle::ActorHandle;
use crate::access::Principal;
use crate::core::Input;
use crate::ids::FrameworkId;
use crate::jobs::{Effect, Jobs, Owner};
use crate::store::Store;
use crate::time::Time;

/// How long a job framework's offers it cannot use are declined for while
/// it still has indices to start (short: a retry may need them soon).
const REFUSE_WHILE_PENDING_S: f64 = 1.0;
/// How long a job framework's tasks outlive its stream: the driver
/// re-subscribes at once when a stream ends, and at start when the master
/// restarts.
const FAILOVER_TIMEOUT_MS: u64 = 3600 * 1000;
/// How often deadlines are checked.
const TICK: Duration = Duration::from_millis(250);

/// A read of the jobs (and their owners' frameworks), run in the driver.
pub type Read = Box<dyn FnOnce(&Jobs, &HashMap<Owner, FrameworkId>) + Send>;

/// A call of the `Jobs` service, as the driver takes it.
pub enum Call {
    Submit {
        who: Principal,
        /// Boxed: a spec is large beside the other calls.
        spec: Box<v1::JobSpec>,
        reply: oneshot::Sender<Result<v1::SubmitJobResponse, Status>>,
    },
    /// Reads the jobs (the service filters what `who` may see).
    Read(Read),
    /// Brings a job's per-index outcomes into memory if they are only in
    /// the registry (a job that ended before the master restarted), so
    /// that the reads after it see them.
    Load {
        id: String,
        reply: oneshot::Sender<Result<(), Status>>,
    },
    Hold {
        id: String,
        reply: oneshot::Sender<bool>,
    },
    Release {
        id: String,
        reply: oneshot::Sender<bool>,
    },
    Cancel {
        id: String,
        why: String,
        reply: oneshot::Sender<bool>,
    },
    /// How many indices wait again; `None` if the job is still stopping.
    Retry {
        id: String,
        cancelled: bool,
        reply: oneshot::Sender<Option<u32>>,
    },
}

/// What reaches the driver.
enum Inbound {
    Call(Call),
    /// An event of an owner's framework.
    Event(Owner, v1::Event),
    /// Tasks whose `Accept` the master refused: their indices wait again.
    NotLaunched(Vec<String>),
    /// The event stream of an owner's framework ended.
    StreamEnded(Owner, FrameworkId),
}

/// Where calls for the driver go.
#[derive(Clone)]
pub struct JobsHandle {
    calls: mpsc::UnboundedSender<Call>,
}

impl JobsHandle {
    pub fn call(&self, call: Call) -> Result<(), Status> {
        self.calls
            .send(call)
            .map_err(|_| Status::unavailable("the job service has stopped"))
    }

    /// The artifacts jobs that have not ended name: kept however long
    /// they go unused.
    pub async fn pinned_artifacts(&self) -> Result<std::collections::HashSet<String>, Status> {
        let (reply, answer) = oneshot::channel();
        self.call(Call::Read(Box::new(move |jobs, _| {
            let _ = reply.send(jobs.pinned_artifacts());
        })))?;
        answer
            .await
            .map_err(|_| Status::unavailable("the job service has stopped"))
    }
}

/// Starts the driver: the handle the service calls through, and the
/// driver's task (which holds the registry: the master aborts it when it
/// stops). It first
/// rebuilds the jobs `stored` in `store` (calls wait until it has).
/// Job ids name the master's start (`epoch`), so they never repeat.
pub fn spawn(
    actor: ActorHandle,
    store: Arc<dyn Store>,
    stored: Vec<v1::StoredJob>,
    epoch: u64,
    retention: Duration,
    wall_ms: impl Fn() -> u64 + Send + Sync + 'static,
) -> (JobsHandle, tokio::task::JoinHandle<()>) {
    let (calls, mut call_rx) = mpsc::unbounded_channel();
    let (inbound, inbox) = mpsc::unbounded_channel();
    let forward = inbound.clone();
    tokio::spawn(async move {
        while let Some(call) = call_rx.recv().await {
            if forward.send(Inbound::Call(call)).is_err() {
                return;
            }
        }
    });
    let driver = Driver {
        actor,
        jobs: Jobs::new(epoch),
        frameworks: HashMap::new(),
        principals: HashMap::new(),
        suppressed: HashMap::new(),
        inbound,
        retention,
        wall_ms: Box::new(wall_ms),
        store,
    };
    let task = tokio::spawn(async move {
        let mut driver = driver;
        driver.restore(stored, epoch).await;
        driver.run(inbox).await;
    });
    (JobsHandle { calls }, task)
}

struct Driver {
    actor: ActorHandle,
    jobs: Jobs,
    frameworks: HashMap<Owner, FrameworkId>,
    principals: HashMap<Owner, Principal>,
    suppressed: HashMap<Owner, bool>,
    inbound: mpsc::UnboundedSender<Inbound>,
    /// How long an ended job keeps its per-index outcomes.
    retention: Duration,
    wall_ms: Box<dyn Fn() -> u64 + Send + Sync>,
    /// The registry, for the chunks of jobs read when asked.
    store: Arc<dyn Store>,
}

impl Driver {
    fn now(&self) -> Time {
        Time((self.wall_ms)())
    }

    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Inbound>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                inbound = inbox.recv() => match inbound {
                    Some(Inbound::Call(call)) => {
                        self.call(call).await;
                        // Only between calls: what one call loaded stays
                        // for all of it.
                        self.jobs.trim_read();
                    }
                    Some(Inbound::Event(owner, event)) => self.event(owner, event).await,
                    Some(Inbound::NotLaunched(tasks)) => {
                        let effects = self.jobs.not_launched(&tasks, self.now());
                        self.carry_out(effects).await;
                    }
                    Some(Inbound::StreamEnded(owner, framework)) => {
                        self.resubscribe(owner, framework).await;
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    let now = self.now();
                    let effects = self.jobs.tick(now);
                    self.carry_out(effects).await;
                    let expired = self.jobs.expire(now, self.retention);
                    if expired > 0 {
                        tracing::info!(jobs = expired, "ended jobs past their retention keep only their summaries");
                    }
                    for job in self.jobs.take_forgotten_outputs() {
                        self.forget_outputs(job).await;
                    }
                    let _ = self.persist(false).await;
                }
            }
        }
    }

    async fn call(&mut self, call: Call) {
        match call {
            Call::Submit { who, spec, reply } => {
                let answer = self.submit(who, *spec).await;
                let _ = reply.send(answer);
            }
            Call::Read(read) => read(&self.jobs, &self.frameworks),
            Call::Load { id, reply } => {
                let _ = reply.send(self.load(&id).await);
            }
            Call::Hold { id, reply } => {
                let held = self.jobs.hold(&id);
                let _ = self.persist(true).await;
                let _ = reply.send(held);
            }
            Call::Release { id, reply } => {
                let effects = self.jobs.release(&id, self.now());
                let _ = self.persist(true).await;
                let _ = reply.send(effects.is_some());
                self.carry_out(effects.unwrap_or_default()).await;
            }
            Call::Retry {
                id,
                cancelled,
                reply,
            } => {
                // An index-wise dependent reruns what its counterpart
                // succeeded in: both read.
                let after_each = self
                    .jobs
                    .job(&id)
                    .map(|j| j.spec.after_each.clone())
                    .unwrap_or_default();
                for job in [id.as_str(), after_each.as_str()] {
                    if job.is_empty() {
                        continue;
                    }
                    if let Err(e) = self.load(job).await {
                        tracing::warn!(job = %id, error = %e, "not retried");
                        let _ = reply.send(None);
                        return;
                    }
                }
                let reopened = self.jobs.retry_failed(&id, cancelled);
                if let Some(n) = reopened.filter(|n| *n > 0) {
                    tracing::info!(job = %id, indices = n, "failed indices run again");
                }
                let _ = self.persist(true).await;
                let _ = reply.send(reopened);
                self.offers_wanted().await;
            }
            Call::Cancel { id, why, reply } => {
                let live = self.jobs.job(&id).is_some_and(|job| !job.is_ended());
                let effects = self.jobs.cancel(&id, &why, self.now());
                let _ = self.persist(true).await;
                let _ = reply.send(live);
                self.carry_out(effects.unwrap_or_default()).await;
            }
        }
    }

    async fn submit(
        &mut self,
        who: Principal,
        spec: v1::JobSpec,
    ) -> Result<v1::SubmitJobResponse, Status> {
        let role = if spec.role.is_empty() {
            "default".to_string()
        } else {
            spec.role.clone()
        };
        let owner = Owner {
            role,
            principal: who.name.clone(),
        };
        // A job may only name jobs its submitter may see: another's are
        // not there for it.
        for dependency in crate::jobs::deps::named(&spec) {
            if !self
                .jobs
                .job(dependency)
                .is_some_and(|job| who.may_see(&job.owner.principal))
            {
                return Err(Status::invalid_argument(format!(
                    "it depends on {dependency}: no such job"
                )));
            }
        }
        if !spec.after_each.is_empty() {
            self.load(&spec.after_each).await?;
        }
        // Checked before its framework is made, and the framework made
        // before the job is taken in: a job nothing can run never is.
        crate::jobs::submit::check(&spec).map_err(Status::invalid_argument)?;
        let existing = self.jobs.by_key(&owner, &spec.idempotency_key).is_some();
        self.principals.insert(owner.clone(), who);
        self.framework_of(&owner).await?;
        let (job_id, effects) = self
            .jobs
            .submit(owner.clone(), spec, self.now())
            .map_err(Status::invalid_argument)?;
        tracing::info!(job = %job_id, principal = %owner.principal, role = %owner.role, existing, "job submitted");
        // Answered once durable: a job whose id was told is never lost.
        self.persist(true).await?;
        self.carry_out(effects).await;
        Ok(v1::SubmitJobResponse { job_id, existing })
    }

    /// A framework whose stream ended subscribes again under its id, and
    /// asks after its running tasks (updates of the gap come again).
    async fn resubscribe(&mut self, owner: Owner, framework: FrameworkId) {
        if self.frameworks.get(&owner) != Some(&framework) {
            return;
        }
        self.frameworks.remove(&owner);
        match self.subscribe(&owner, Some(&framework)).await {
            Ok(framework) => {
                self.suppressed.insert(owner.clone(), false);
                self.reconcile(&owner, framework).await;
            }
            Err(e) => {
                tracing::error!(principal = %owner.principal, error = %e, "a job framework could not subscribe again; its jobs are stuck");
            }
        }
    }

    /// Asks the core for the state of every task `owner`'s jobs run, after
    /// its framework subscribed again: the answers settle what ended or
    /// was lost while no stream was there to say so.
    async fn reconcile(&mut self, owner: &Owner, framework: FrameworkId) {
        let task_ids = self.jobs.running_tasks(owner);
        if task_ids.is_empty() {
            return;
        }
        self.send(Input::Reconcile(v1::ReconcileRequest {
            framework_id: framework.to_string(),
            task_ids,
        }))
        .await;
    }

    /// The owner's framework, subscribed on first use.
    async fn framework_of(&mut self, owner: &Owner) -> Result<FrameworkId, Status> {
        if let Some(id) = self.frameworks.get(owner) {
            return Ok(id.clone());
        }
        self.subscribe(owner, None).await
    }

    /// Subscribes `owner`'s framework (again, under `previous`).
    async fn subscribe(
        &mut self,
        owner: &Owner,
        previous: Option<&FrameworkId>,
    ) -> Result<FrameworkId, Status> {
        let who = self.principals[owner].clone();
        let (events, mut stream) = event_queue::queue(64 << 20);
        let (reply, answer) = oneshot::channel();
        self.actor
            .send(Command::Subscribe {
                who: who.clone(),
                info: v1::FrameworkInfo {
                    framework_id: previous.map(|f| f.to_string()).unwrap_or_default(),
                    name: format!("jobs of {}", owner.principal),
                    role: owner.role.clone(),
                    failover_timeout_ms: FAILOVER_TIMEOUT_MS,
                    user: owner.principal.clone(),
                    principal: owner.principal.clone(),
                    ..Default::default()
                },
                events,
                reply,
            })
            .await?;
        let (framework, _connection) = answer
            .await
            .map_err(|_| Status::unavailable("the master is shutting down"))?
            .map_err(super::super::handle::status_of)?;
        tracing::info!(%framework, principal = %owner.principal, role = %owner.role, "job framework subscribed");
        self.jobs.set_framework(owner, framework.as_str());
        self.frameworks.insert(owner.clone(), framework.clone());
        self.suppressed.insert(owner.clone(), false);
        let inbound = self.inbound.clone();
        let owner = owner.clone();
        let ended = framework.clone();
        tokio::spawn(async move {
            while let Some(event) = poll_fn(|cx| stream.poll_recv(cx)).await {
                match event {
                    Ok(event) => {
                        if inbound.send(Inbound::Event(owner.clone(), event)).is_err() {
                            return;
                        }
                    }
                    Err(status) => {
                        tracing::warn!(principal = %owner.principal, error = %status, "a job framework's stream ended; subscribing again");
                        break;
                    }
                }
            }
            let _ = inbound.send(Inbound::StreamEnded(owner, ended));
        });
        Ok(framework)
    }

    async fn event(&mut self, owner: Owner, event: v1::Event) {
        let Some(framework) = self.frameworks.get(&owner).cloned() else {
            return;
        };
        let mut effects = Vec::new();
        match event.kind {
            Some(EventKind::Offers(offers)) => {
                let placement = self.jobs.place(&owner, offers.offers);
                for launch in placement.launches {
                    let task_ids: Vec<String> =
                        launch.tasks.iter().map(|t| t.task_id.clone()).collect();
                    let input = Input::Accept(v1::AcceptRequest {
                        framework_id: framework.to_string(),
                        offer_ids: launch.offer_ids,
                        tasks: launch.tasks,
                        filters: Some(v1::Filters {
                            refuse_seconds: Some(0.0),
                        }),
                    });
                    // The answer waits for the launch's commit: not here.
                    let actor = self.actor.clone();
                    let inbound = self.inbound.clone();
                    tokio::spawn(async move {
                        if let Err(e) = actor.call(input).await {
                            tracing::debug!(error = %e, tasks = task_ids.len(), "a job's accept failed; its indices wait again");
                            let _ = inbound.send(Inbound::NotLaunched(task_ids));
                        }
                    });
                }
                if !placement.unused.is_empty() {
                    let refuse = if self.jobs.wants_offers(&owner) {
                        REFUSE_WHILE_PENDING_S
                    } else {
                        3600.0
                    };
                    self.send(Input::Decline(v1::DeclineRequest {
                        framework_id: framework.to_string(),
                        offer_ids: placement.unused,
                        filters: Some(v1::Filters {
                            refuse_seconds: Some(refuse),
                        }),
                    }))
                    .await;
                }
            }
            Some(EventKind::Updates(updates)) => {
                let now = self.now();
                let mut acks = Vec::new();
                for status in &updates.statuses {
                    effects.extend(self.jobs.update(status, now));
                    if !status.uuid.is_empty() {
                        acks.push(v1::Ack {
                            task_id: status.task_id.clone(),
                            agent_id: status.agent_id.clone(),
                            uuid: status.uuid.clone(),
                        });
                    }
                }
                // What the updates changed is written before (or with)
                // their acknowledgement: once acknowledged, no update of
                // theirs comes again.
                let _ = self.persist(false).await;
                if !acks.is_empty() {
                    self.send(Input::Acknowledge(v1::AcknowledgeRequest {
                        framework_id: framework.to_string(),
                        acks,
                    }))
                    .await;
                }
            }
            Some(EventKind::Error(error)) => {
                // Its tasks were killed with it, and no update of theirs
                // will come: they are lost (retried per their jobs'
                // policies) under a framework of its own again.
                tracing::warn!(principal = %owner.principal, message = %error.message, "a job framework was ended by the master; its running indices are lost");
                self.frameworks.remove(&owner);
                let now = self.now();
                for task_id in self.jobs.running_tasks(&owner) {
                    let lost = v1::TaskStatus {
                        task_id,
                        state: v1::TaskState::Lost as i32,
                        reason: v1::Reason::FrameworkRemoved as i32,
                        message: format!("its framework was removed: {}", error.message),
                        ..Default::default()
                    };
                    effects.extend(self.jobs.update(&lost, now));
                }
                if self.jobs.wants_offers(&owner)
                    && let Err(e) = self.framework_of(&owner).await
                {
                    tracing::error!(principal = %owner.principal, error = %e, "a job framework could not subscribe again; its jobs wait");
                }
            }
            _ => {}
        }
        self.carry_out(effects).await;
    }

    /// Kills and notices the state machine asked for, then what follows
    /// any change: offers asked for or stopped, the changes written.
    async fn carry_out(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Kill { owner, task_ids } => {
                    // One kill per task: the master refuses a kill naming a
                    // task it does not know yet (an `Accept` still on its
                    // way), and would refuse the others with it.
                    if let Some(framework) = self.frameworks.get(&owner).cloned() {
                        for task_id in task_ids {
                            self.send(Input::Kill(v1::KillRequest {
                                framework_id: framework.to_string(),
                                task_ids: vec![task_id],
                            }))
                            .await;
                        }
                    }
                }
                Effect::Ended { job, state } => {
                    tracing::info!(%job, state = state.as_str_name(), "job ended");
                }
            }
        }
        self.offers_wanted().await;
        let _ = self.persist(false).await;
    }

    /// Revives owners with indices to start, suppresses the rest.
    async fn offers_wanted(&mut self) {
        let owners: Vec<(Owner, FrameworkId)> = self
            .frameworks
            .iter()
            .map(|(o, f)| (o.clone(), f.clone()))
            .collect();
        for (owner, framework) in owners {
            let wants = self.jobs.wants_offers(&owner);
            let suppressed = self.suppressed.get(&owner).copied().unwrap_or(false);
            if wants && suppressed {
                self.send(Input::Revive(v1::ReviveRequest {
                    framework_id: framework.to_string(),
                    ..Default::default()
                }))
                .await;
            } else if !wants && !suppressed {
                self.send(Input::Suppress(v1::SuppressRequest {
                    framework_id: framework.to_string(),
                }))
                .await;
            }
            self.suppressed.insert(owner, !wants);
        }
    }

    /// Sends an input whose answer nothing waits for, after every command
    /// the driver sent before it.
    async fn send(&self, input: Input) {
        let (reply, _answer) = oneshot::channel();
        let _ = self
            .actor
            .send(Command::Call {
                input,
                who: None,
                reply,
            })
            .await;
    }
}
