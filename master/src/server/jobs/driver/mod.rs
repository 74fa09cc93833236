//! The glue between the job service's state machine ([`crate::jobs`]) and
//! the core, run by the actor inside its turns: no task, channel or
//! stream between them.
//!
//! Each owner's jobs run in one framework of theirs, subscribed like any
//! other but with the job service as its stream: the actor hands the
//! driver that framework's events at the end of the turn that made them,
//! ends included, and the driver's `Accept`s, `Decline`s, kills and
//! acknowledgements are core inputs of that turn. What the state machine
//! changed joins the commit the ends it saw are in ([`Host::persist`]),
//! with the acknowledgements of the updates it records, and every call,
//! reads too, is answered once what it changed or saw is durable
//! ([`Host::when_durable`]): a crash takes back an end and what the
//! service made of it together, and the agent sends the end again.
//!
//! Nothing here reads the registry: the actor's thread must not wait on a
//! disk. The service reads what an ended job's outcomes need (`registry.rs`)
//! and hands them in with its call; the jobs are rebuilt before the actor
//! starts, and the stdout heads of expired jobs are deleted by a task of
//! the master's.

pub mod registry;

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::oneshot;
use tonic::Status;
use wasmos_proto::v1;
use wasmos_proto::v1::event::Kind as EventKind;

use super::super::handle::{ActorHandle, status_of};
use crate::access::{Grant, Principal};
use crate::core::{Core, CoreError, Input, Reply};
use crate::ids::FrameworkId;
use crate::jobs::{Effect, Jobs, Owner};
use crate::store::Write;
use crate::time::Time;

/// How long a job framework's offers it cannot use are declined for while
/// it still has indices to start (short: a retry may need them soon).
const REFUSE_WHILE_PENDING_S: f64 = 1.0;
/// How long a job framework's tasks outlive it: it has no stream that
/// could end, but a restarted master subscribes it again only once the
/// jobs are rebuilt.
const FAILOVER_TIMEOUT_MS: u64 = 3600 * 1000;
/// How often deadlines and retention are checked.
pub const TICK: Duration = Duration::from_millis(250);
/// Outcomes of this many indices leaving memory at once (a big job ended)
/// are worth handing the freed pages back to the system.
const TRIM_AFTER_INDICES: u64 = 1 << 16;

/// An answer sent once everything it saw is durable.
pub type Answer = Box<dyn FnOnce() + Send>;

/// A read of the jobs (and their owners' frameworks), run in the actor.
/// Its answer waits for the commit of what it saw: the service acts on
/// ends in the turn they arrive, so a read may see what a crash could
/// still take back.
pub type Read = Box<dyn FnOnce(&Jobs, &HashMap<Owner, FrameworkId>) -> Answer + Send>;

/// An ended job's per-index outcomes, read from the registry by the
/// service for a call that needs them in memory.
pub struct Loaded {
    pub job_id: String,
    pub stored: crate::jobs::persist::StoredOutcomes,
}

/// A call of the `Jobs` service, as the driver takes it. Calls that read
/// an ended job's outcomes carry them (`loaded`).
pub enum Call {
    Submit {
        who: Principal,
        /// Boxed: a spec is large beside the other calls.
        spec: Box<v1::JobSpec>,
        loaded: Vec<Loaded>,
        reply: oneshot::Sender<Result<v1::SubmitJobResponse, Status>>,
    },
    /// Reads the jobs (the service filters what `who` may see).
    Read(Read),
    /// Which of these jobs keep their outcomes in the registry only:
    /// answered once every write before it is durable, so that the
    /// registry holds their last outcomes when the service reads them.
    Unloaded {
        ids: Vec<String>,
        reply: oneshot::Sender<Vec<String>>,
    },
    /// Takes in outcomes the service read, for the reads after it.
    Load {
        loaded: Vec<Loaded>,
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
        loaded: Vec<Loaded>,
        reply: oneshot::Sender<Option<u32>>,
    },
    /// Jobs past their retention since the last call (or left unswept by
    /// a stopped master), whose stdout heads and agent records are to be
    /// deleted; answered once what the jobs wrote so far is durable.
    TakeForgottenOutputs { reply: oneshot::Sender<Vec<String>> },
    /// These jobs' stdout heads and agent records are deleted: their
    /// records say so (answered once durable).
    OutputsSwept {
        ids: Vec<String>,
        reply: oneshot::Sender<()>,
    },
}

/// What the driver needs of the actor, within a turn.
pub trait Host {
    /// The core as it is in this turn, to read.
    fn core(&self) -> &Core;
    /// Feeds an input to the core.
    fn apply(&mut self, input: Input) -> Result<Reply, CoreError>;
    /// Subscribes a framework for `who` whose events come to the driver
    /// as `owner`'s.
    fn subscribe(
        &mut self,
        who: &Principal,
        owner: &Owner,
        info: v1::FrameworkInfo,
    ) -> Result<FrameworkId, CoreError>;
    /// Joins registry writes to the turn's commit.
    fn persist(&mut self, writes: Vec<Write>);
    /// Runs `answer` once everything written so far is durable.
    fn when_durable(&mut self, answer: Answer);
}

/// Where the service's calls go: the actor.
#[derive(Clone)]
pub struct JobsHandle {
    actor: ActorHandle,
}

impl JobsHandle {
    pub fn new(actor: ActorHandle) -> JobsHandle {
        JobsHandle { actor }
    }

    pub async fn call(&self, call: Call) -> Result<(), Status> {
        self.actor
            .send(super::super::actor::Command::Jobs(call))
            .await
    }

    /// Makes a call and waits for its answer.
    pub async fn ask<T>(&self, call: impl FnOnce(oneshot::Sender<T>) -> Call) -> Result<T, Status> {
        let (reply, answer) = oneshot::channel();
        self.call(call(reply)).await?;
        answer
            .await
            .map_err(|_| Status::unavailable("the job service has stopped"))
    }

    /// The artifacts jobs that have not ended name: kept however long
    /// they go unused.
    pub async fn pinned_artifacts(&self) -> Result<std::collections::HashSet<String>, Status> {
        self.ask(|reply| {
            Call::Read(Box::new(move |jobs, _| {
                let pinned = jobs.pinned_artifacts();
                Box::new(move || {
                    let _ = reply.send(pinned);
                })
            }))
        })
        .await
    }
}

/// The job service's state in the actor.
pub struct Driver {
    jobs: Jobs,
    frameworks: HashMap<Owner, FrameworkId>,
    principals: HashMap<Owner, Principal>,
    suppressed: HashMap<Owner, bool>,
    /// How long an ended job keeps its per-index outcomes.
    retention: Duration,
    wall_ms: Box<dyn Fn() -> u64 + Send>,
}

impl Driver {
    /// A driver of `jobs` (rebuilt from the registry, or none), whose job
    /// times come from `wall_ms`. [`Driver::start`] it in the actor.
    pub fn new(
        jobs: Jobs,
        retention: Duration,
        wall_ms: impl Fn() -> u64 + Send + 'static,
    ) -> Driver {
        Driver {
            jobs,
            frameworks: HashMap::new(),
            principals: HashMap::new(),
            suppressed: HashMap::new(),
            retention,
            wall_ms: Box::new(wall_ms),
        }
    }

    fn now(&self) -> Time {
        Time((self.wall_ms)())
    }

    /// After a restart: every owner with a live job subscribes again
    /// under its framework's id and reconciles its running tasks (none of
    /// their indices starts anew while an agent that may hold it has yet
    /// to come back: the core keeps such tasks until it decides they are
    /// lost), then the jobs resume.
    pub fn start(&mut self, host: &mut impl Host) {
        for (owner, framework) in self.jobs.live_owners() {
            self.principals.insert(
                owner.clone(),
                // The authority the job was submitted with: its role.
                Principal {
                    name: owner.principal.clone(),
                    accessor: String::new(),
                    grant: Grant::Roles(vec![owner.role.clone()]),
                },
            );
            let previous = framework.map(FrameworkId::from);
            let subscribed = match self.subscribe(&owner, previous.as_ref(), host) {
                Ok(id) => Ok(id),
                Err(e) if previous.is_some() => {
                    tracing::warn!(principal = %owner.principal, error = %e, "a job framework could not subscribe again under its id; its jobs run in a new one");
                    self.subscribe(&owner, None, host)
                }
                Err(e) => Err(e),
            };
            match subscribed {
                Ok(framework) => self.reconcile(&owner, framework, host),
                Err(e) => {
                    tracing::error!(principal = %owner.principal, error = %e, "a job framework could not subscribe; its jobs wait");
                }
            }
        }
        let effects = self.jobs.resume(self.now());
        self.carry_out(effects, host);
    }

    /// Takes one call of the service.
    pub fn call(&mut self, call: Call, host: &mut impl Host) {
        match call {
            Call::Submit {
                who,
                spec,
                loaded,
                reply,
            } => {
                match self
                    .load(loaded)
                    .and_then(|()| self.submit(who, *spec, host))
                {
                    // Answered once durable: a job whose id was told is
                    // never lost.
                    Ok(answer) => {
                        self.persist(host);
                        host.when_durable(Box::new(move || {
                            let _ = reply.send(Ok(answer));
                        }));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Call::Read(read) => host.when_durable(read(&self.jobs, &self.frameworks)),
            Call::Unloaded { ids, reply } => {
                let unloaded = ids
                    .into_iter()
                    .filter(|id| self.jobs.unloaded(id))
                    .collect();
                host.when_durable(Box::new(move || {
                    let _ = reply.send(unloaded);
                }));
            }
            Call::Load { loaded, reply } => {
                let _ = reply.send(self.load(loaded));
            }
            Call::Hold { id, reply } => {
                let held = self.jobs.hold(&id);
                self.answer_durable(reply, held, host);
            }
            Call::Release { id, reply } => {
                let effects = self.jobs.release(&id, self.now());
                self.answer_durable(reply, effects.is_some(), host);
                self.carry_out(effects.unwrap_or_default(), host);
            }
            Call::Retry {
                id,
                cancelled,
                loaded,
                reply,
            } => {
                // An index-wise dependent reruns what its counterpart
                // succeeded in: the service read both.
                if let Err(e) = self.load(loaded) {
                    tracing::warn!(job = %id, error = %e, "not retried");
                    let _ = reply.send(None);
                    return;
                }
                let reopened = self.jobs.retry_failed(&id, cancelled);
                if let Some(n) = reopened.filter(|n| *n > 0) {
                    tracing::info!(job = %id, indices = n, "failed indices run again");
                }
                self.answer_durable(reply, reopened, host);
                self.offers_wanted(host);
            }
            Call::Cancel { id, why, reply } => {
                let live = self.jobs.job(&id).is_some_and(|job| !job.is_ended());
                let effects = self.jobs.cancel(&id, &why, self.now());
                self.answer_durable(reply, live, host);
                self.carry_out(effects.unwrap_or_default(), host);
            }
            Call::TakeForgottenOutputs { reply } => {
                // Once what the jobs wrote so far is durable, so that the
                // sweeper's read finds every stdout head they wrote.
                let forgotten = self.jobs.take_forgotten_outputs();
                host.when_durable(Box::new(move || {
                    let _ = reply.send(forgotten);
                }));
            }
            Call::OutputsSwept { ids, reply } => {
                for id in &ids {
                    self.jobs.outputs_swept(id);
                }
                self.answer_durable(reply, (), host);
            }
        }
        // Only between calls: what one call loaded stays for all of it.
        self.jobs.trim_read();
    }

    /// Writes what changed and answers `value` once it is durable.
    fn answer_durable<T: Send + 'static>(
        &mut self,
        reply: oneshot::Sender<T>,
        value: T,
        host: &mut impl Host,
    ) {
        self.persist(host);
        host.when_durable(Box::new(move || {
            let _ = reply.send(value);
        }));
    }

    /// Takes in outcomes the service read from the registry.
    fn load(&mut self, loaded: Vec<Loaded>) -> Result<(), Status> {
        for Loaded { job_id, stored } in loaded {
            self.jobs.load(&job_id, stored).map_err(|e| {
                tracing::error!(job = %job_id, error = %e, "a job's results could not be read from the registry");
                Status::internal(format!("the results of {job_id} could not be read: {e}"))
            })?;
        }
        Ok(())
    }

    fn submit(
        &mut self,
        who: Principal,
        spec: v1::JobSpec,
        host: &mut impl Host,
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
        if !spec.after_each.is_empty() && self.jobs.unloaded(&spec.after_each) {
            return Err(Status::unavailable(format!(
                "the results of {} left memory while the job was submitted; try again",
                spec.after_each
            )));
        }
        // Checked before its framework is made, and the framework made
        // before the job is taken in: a job nothing can run never is.
        crate::jobs::submit::check(&spec).map_err(Status::invalid_argument)?;
        // The rules of the core's `Accept`, checked now: a job whose
        // launches would all be refused is refused itself.
        if let Some(task) = &spec.task {
            host.core()
                .require_task_artifacts(&who, task)
                .map_err(|denied| Status::permission_denied(denied.0))?;
            host.core().check_input_bytes(task).map_err(|e| match e {
                CoreError::InvalidTask { message, .. } => {
                    Status::invalid_argument(format!("its task: {message}"))
                }
                other => status_of(other),
            })?;
        }
        let existing = self.jobs.by_key(&owner, &spec.idempotency_key).is_some();
        self.principals.insert(owner.clone(), who);
        self.framework_of(&owner, host).map_err(status_of)?;
        let (job_id, effects) = self
            .jobs
            .submit(owner.clone(), spec, self.now())
            .map_err(Status::invalid_argument)?;
        tracing::info!(job = %job_id, principal = %owner.principal, role = %owner.role, existing, "job submitted");
        self.carry_out(effects, host);
        Ok(v1::SubmitJobResponse { job_id, existing })
    }

    /// Checks deadlines and retention.
    pub fn tick(&mut self, host: &mut impl Host) {
        let now = self.now();
        let effects = self.jobs.tick(now);
        self.carry_out(effects, host);
        let expired = self.jobs.expire(now, self.retention);
        if expired > 0 {
            tracing::info!(
                jobs = expired,
                "ended jobs past their retention keep only their summaries"
            );
        }
        self.persist(host);
    }

    /// Asks the core for the state of every task `owner`'s jobs run, after
    /// its framework subscribed again: the answers settle what ended or
    /// was lost while the master was down.
    fn reconcile(&mut self, owner: &Owner, framework: FrameworkId, host: &mut impl Host) {
        let task_ids = self.jobs.running_tasks(owner);
        if task_ids.is_empty() {
            return;
        }
        notify(
            host,
            Input::Reconcile(v1::ReconcileRequest {
                framework_id: framework.to_string(),
                task_ids,
            }),
        );
    }

    /// The owner's framework, subscribed on first use.
    fn framework_of(
        &mut self,
        owner: &Owner,
        host: &mut impl Host,
    ) -> Result<FrameworkId, CoreError> {
        if let Some(id) = self.frameworks.get(owner) {
            return Ok(id.clone());
        }
        self.subscribe(owner, None, host)
    }

    /// Subscribes `owner`'s framework (again, under `previous`).
    fn subscribe(
        &mut self,
        owner: &Owner,
        previous: Option<&FrameworkId>,
        host: &mut impl Host,
    ) -> Result<FrameworkId, CoreError> {
        let who = self.principals[owner].clone();
        let framework = host.subscribe(
            &who,
            owner,
            v1::FrameworkInfo {
                framework_id: previous.map(|f| f.to_string()).unwrap_or_default(),
                name: format!("jobs of {}", owner.principal),
                role: owner.role.clone(),
                failover_timeout_ms: FAILOVER_TIMEOUT_MS,
                user: owner.principal.clone(),
                principal: owner.principal.clone(),
                ..Default::default()
            },
        )?;
        tracing::info!(%framework, principal = %owner.principal, role = %owner.role, "job framework subscribed");
        self.jobs.set_framework(owner, framework.as_str());
        self.frameworks.insert(owner.clone(), framework.clone());
        self.suppressed.insert(owner.clone(), false);
        Ok(framework)
    }

    /// An event of `owner`'s framework, where a client would receive it.
    pub fn event(&mut self, owner: &Owner, event: v1::Event, host: &mut impl Host) {
        let Some(framework) = self.frameworks.get(owner).cloned() else {
            return;
        };
        let mut effects = Vec::new();
        match event.kind {
            Some(EventKind::Offers(offers)) => {
                let placement = self.jobs.place(owner, offers.offers);
                for launch in placement.launches {
                    let task_ids: Vec<String> =
                        launch.tasks.iter().map(|t| t.task_id.clone()).collect();
                    let accept = Input::Accept(v1::AcceptRequest {
                        framework_id: framework.to_string(),
                        offer_ids: launch.offer_ids.clone(),
                        tasks: launch.tasks,
                        filters: Some(v1::Filters {
                            refuse_seconds: Some(0.0),
                        }),
                    });
                    if let Err(e) = host.apply(accept) {
                        // Its indices wait again, and its offers go back
                        // (on their own: some may be gone, and a decline
                        // naming one refuses them all): kept, they would
                        // sit unused until they time out.
                        tracing::debug!(error = %e, tasks = task_ids.len(), "a job's accept failed; its indices wait again");
                        effects.extend(self.jobs.not_launched(&task_ids, self.now()));
                        decline(host, &framework, launch.offer_ids, REFUSE_WHILE_PENDING_S);
                        // A task the core refuses as invalid (an input
                        // uploaded since, larger than its disk) is refused
                        // at every attempt: its job fails, saying why.
                        if let CoreError::InvalidTask { message, .. } = &e {
                            let jobs: std::collections::BTreeSet<&str> = task_ids
                                .iter()
                                .filter_map(|t| crate::jobs::submit::parse_task_id(t))
                                .map(|(job, _, _)| job)
                                .collect();
                            for job in jobs {
                                let why = format!("its task cannot launch: {message}");
                                tracing::warn!(%job, "{why}");
                                effects.extend(
                                    self.jobs.fail(job, &why, self.now()).unwrap_or_default(),
                                );
                            }
                        }
                    }
                }
                if !placement.unused.is_empty() {
                    let refuse = if self.jobs.wants_offers(owner) {
                        REFUSE_WHILE_PENDING_S
                    } else {
                        3600.0
                    };
                    decline(host, &framework, placement.unused, refuse);
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
                self.persist(host);
                if !acks.is_empty() {
                    notify(
                        host,
                        Input::Acknowledge(v1::AcknowledgeRequest {
                            framework_id: framework.to_string(),
                            acks,
                        }),
                    );
                }
            }
            Some(EventKind::Error(error)) => {
                // Its tasks were killed with it, and no update of theirs
                // will come: they are lost (retried per their jobs'
                // policies) under a framework of its own again.
                tracing::warn!(principal = %owner.principal, message = %error.message, "a job framework was ended by the master; its running indices are lost");
                self.frameworks.remove(owner);
                let now = self.now();
                for task_id in self.jobs.running_tasks(owner) {
                    let lost = v1::TaskStatus {
                        task_id,
                        state: v1::TaskState::Lost as i32,
                        reason: v1::Reason::FrameworkRemoved as i32,
                        message: format!("its framework was removed: {}", error.message),
                        ..Default::default()
                    };
                    effects.extend(self.jobs.update(&lost, now));
                }
                if self.jobs.wants_offers(owner)
                    && let Err(e) = self.framework_of(owner, host)
                {
                    tracing::error!(principal = %owner.principal, error = %e, "a job framework could not subscribe again; its jobs wait");
                }
            }
            _ => {}
        }
        self.carry_out(effects, host);
    }

    /// Kills and notices the state machine asked for, then what follows
    /// any change: offers asked for or stopped, the changes written.
    fn carry_out(&mut self, effects: Vec<Effect>, host: &mut impl Host) {
        for effect in effects {
            match effect {
                Effect::Kill { owner, task_ids } => {
                    // One kill per task: the core refuses a kill naming a
                    // task it does not know (one whose launch it refused),
                    // and would refuse the others with it.
                    if let Some(framework) = self.frameworks.get(&owner).cloned() {
                        for task_id in task_ids {
                            notify(
                                host,
                                Input::Kill(v1::KillRequest {
                                    framework_id: framework.to_string(),
                                    task_ids: vec![task_id],
                                }),
                            );
                        }
                    }
                }
                Effect::Ended { job, state } => {
                    tracing::info!(%job, state = state.as_str_name(), "job ended");
                }
            }
        }
        self.offers_wanted(host);
        self.persist(host);
    }

    /// Revives owners with indices to start, suppresses the rest.
    fn offers_wanted(&mut self, host: &mut impl Host) {
        for (owner, framework) in &self.frameworks {
            let wants = self.jobs.wants_offers(owner);
            let suppressed = self.suppressed.get(owner).copied().unwrap_or(false);
            if wants && suppressed {
                notify(
                    host,
                    Input::Revive(v1::ReviveRequest {
                        framework_id: framework.to_string(),
                        ..Default::default()
                    }),
                );
            } else if !wants && !suppressed {
                notify(
                    host,
                    Input::Suppress(v1::SuppressRequest {
                        framework_id: framework.to_string(),
                    }),
                );
            }
            self.suppressed.insert(owner.clone(), !wants);
        }
    }

    /// Joins what the jobs changed to the turn's commit.
    fn persist(&mut self, host: &mut impl Host) {
        let writes = self.jobs.writes();
        if self.jobs.take_unloaded() >= TRIM_AFTER_INDICES {
            tokio::task::spawn_blocking(super::super::memory::return_free_memory);
        }
        if !writes.is_empty() {
            host.persist(writes);
        }
    }
}

/// Gives offers back, held from the framework for `refuse_seconds`.
fn decline(
    host: &mut impl Host,
    framework: &FrameworkId,
    offer_ids: Vec<String>,
    refuse_seconds: f64,
) {
    notify(
        host,
        Input::Decline(v1::DeclineRequest {
            framework_id: framework.to_string(),
            offer_ids,
            filters: Some(v1::Filters {
                refuse_seconds: Some(refuse_seconds),
            }),
        }),
    );
}

/// An input whose refusal is only worth a log line.
fn notify(host: &mut impl Host, input: Input) {
    if let Err(e) = host.apply(input) {
        tracing::debug!(error = %e, "the job service's input was refused");
    }
}
