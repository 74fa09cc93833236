//! Run a batch of tasks to completion: placement, retries, progress, cancel.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use wasmos_core::Resources;
use wasmos_core::packing::{self, Fill};
use wasmos_proto::v1;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::scheduler::{Event, Events, FrameworkConfig, Scheduler, is_terminal};

/// One task of a [`Job`]: what to run and with what limits.
///
/// Defaults: 0.1 cpus, 64 MiB of memory, no disk, no fuel limit, no timeout.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskTemplate {
    artifact: String,
    name: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    inputs: Vec<v1::Input>,
    cpus: f64,
    mem: u64,
    disk: u64,
    max_fuel: u64,
    timeout: Option<Duration>,
    labels: HashMap<String, String>,
}

impl TaskTemplate {
    /// A task running the module with this digest (from [`Client::upload`]).
    pub fn new(artifact: impl Into<String>) -> TaskTemplate {
        TaskTemplate {
            artifact: artifact.into(),
            name: None,
            args: Vec::new(),
            env: Vec::new(),
            inputs: Vec::new(),
            cpus: 0.1,
            mem: 64 << 20,
            disk: 0,
            max_fuel: 0,
            timeout: None,
            labels: HashMap::new(),
        }
    }

    /// argv\[0\] inside the module. Default: the task id.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Appends one argument (after argv\[0\]).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable. The task sees no other environment.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Places the uploaded artifact `digest` as the file `path` (relative,
    /// inside the sandbox) before the task starts. Inputs count against the
    /// task's [`disk`](Self::disk): give it their size plus what it writes.
    pub fn input(mut self, path: impl Into<String>, digest: impl Into<String>) -> Self {
        self.inputs.push(v1::Input {
            path: path.into(),
            artifact: digest.into(),
            kind: v1::InputKind::File as i32,
        });
        self
    }

    /// Unpacks the uploaded tar archive `digest` into the directory `path`
    /// (its files' bytes count against the task's disk).
    pub fn input_dir(mut self, path: impl Into<String>, digest: impl Into<String>) -> Self {
        self.inputs.push(v1::Input {
            path: path.into(),
            artifact: digest.into(),
            kind: v1::InputKind::TarDirectory as i32,
        });
        self
    }

    /// CPU share in cores (0.5 = half a core): the rate at which the task
    /// may burn CPU. Must be at least 0.001. Default 0.1.
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.cpus = cpus;
        self
    }

    /// Cap on the module's linear memory, in bytes. Default 64 MiB.
    pub fn mem(mut self, bytes: u64) -> Self {
        self.mem = bytes;
        self
    }

    /// Cap on files the task writes in its sandbox, in bytes. Default 0
    /// (stdout and stderr have caps of their own): set it if the task
    /// writes files.
    pub fn disk(mut self, bytes: u64) -> Self {
        self.disk = bytes;
        self
    }

    /// Total fuel (about one unit per wasm instruction) the task may burn
    /// before it fails with `REASON_OUT_OF_FUEL`. Default 0: no limit.
    pub fn max_fuel(mut self, fuel: u64) -> Self {
        self.max_fuel = fuel;
        self
    }

    /// Wall-clock deadline from start; past it the task fails with
    /// `REASON_TIMEOUT`. Default none.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// A free-form label, for the framework's own bookkeeping.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The resources one instance asks for.
    pub fn resources(&self) -> v1::Resources {
        v1::Resources {
            cpus: self.cpus,
            mem: self.mem,
            disk: self.disk,
        }
    }

    /// The wire spec of this template under `task_id`.
    pub fn spec(&self, task_id: impl Into<String>) -> v1::TaskSpec {
        v1::TaskSpec {
            task_id: task_id.into(),
            name: self.name.clone().unwrap_or_default(),
            artifact: self.artifact.clone(),
            args: self.args.clone(),
            env: self
                .env
                .iter()
                .map(|(name, value)| v1::EnvVar {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            inputs: self.inputs.clone(),
            resources: Some(self.resources()),
            max_fuel: self.max_fuel,
            timeout_ms: self.timeout.map_or(0, |t| t.as_millis().max(1) as u64),
            labels: self.labels.clone(),
        }
    }
}

/// Which failed tasks a [`Job`] runs again, and how often.
///
/// A task is retried when its terminal state or its reason is in the
/// policy's lists and it has had fewer than `max_attempts` attempts. The
/// default retries only what was not the task's own fault: `LOST` (any
/// reason), `REASON_AGENT_LOST` and `REASON_AGENT_REMOVED`, up to 3 attempts
/// in all. A task that failed by itself (`REASON_EXIT_NONZERO`, a trap, a
/// limit) would most likely fail again, so it is not retried unless asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    states: Vec<v1::TaskState>,
    reasons: Vec<v1::Reason>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            states: vec![v1::TaskState::Lost],
            reasons: vec![v1::Reason::AgentLost, v1::Reason::AgentRemoved],
        }
    }
}

impl RetryPolicy {
    /// Never retry: every task runs once.
    pub fn never() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            states: Vec::new(),
            reasons: Vec::new(),
        }
    }

    /// Attempts in all, the first included (at least 1). Default 3.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Also retry tasks that end in `state` (e.g. `Failed`).
    pub fn retry_state(mut self, state: v1::TaskState) -> Self {
        self.states.push(state);
        self
    }

    /// Also retry tasks that end for `reason` (e.g. `Timeout`).
    pub fn retry_reason(mut self, reason: v1::Reason) -> Self {
        self.reasons.push(reason);
        self
    }

    /// Would a task that ended with `status` after `attempts` attempts run
    /// again? Never for `FINISHED`.
    pub fn should_retry(&self, status: &v1::TaskStatus, attempts: u32) -> bool {
        let state = status.state();
        state != v1::TaskState::Finished
            && is_terminal(state)
            && attempts < self.max_attempts
            && (self.states.contains(&state) || self.reasons.contains(&status.reason()))
    }
}

/// A task's state change, as a [`Job`] reports it to its progress callback.
#[derive(Clone, Debug)]
pub struct JobUpdate {
    /// The task's position in the job (0-based).
    pub index: usize,
    /// Which attempt this is (1 for the first).
    pub attempt: u32,
    /// The status as the master sent it.
    pub status: v1::TaskStatus,
    /// True when the status is terminal and the task will run again.
    pub retrying: bool,
    /// Tasks with a final outcome so far.
    pub done: usize,
    /// Tasks in the job.
    pub total: usize,
}

/// The final outcome of one task of a job.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskOutcome {
    /// The task's position in the job (0-based).
    pub index: usize,
    /// The id of its last attempt.
    pub task_id: String,
    /// Its terminal state.
    pub state: v1::TaskState,
    /// Why (`Unspecified` for a plain success).
    pub reason: v1::Reason,
    /// What happened, for people.
    pub message: String,
    /// The module's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// What it consumed, when the agent reported it.
    pub usage: Option<v1::TaskUsage>,
    /// The agent its last attempt ran on (empty if it never reached one).
    pub agent_id: String,
    /// How many times it was launched.
    pub attempts: u32,
}

impl TaskOutcome {
    /// Did the task finish successfully?
    pub fn succeeded(&self) -> bool {
        self.state == v1::TaskState::Finished
    }
}

/// What a [`Job`] did.
#[derive(Clone, Debug)]
pub struct JobReport {
    /// The job's name.
    pub job: String,
    /// The framework that ran it (torn down by now).
    pub framework_id: String,
    /// One outcome per task, in job order.
    pub tasks: Vec<TaskOutcome>,
    /// True when the job was cancelled before every task ended by itself.
    pub cancelled: bool,
    /// Wall time from subscription to teardown.
    pub elapsed: Duration,
}

impl JobReport {
    /// Did every task finish successfully?
    pub fn succeeded(&self) -> bool {
        self.tasks.iter().all(TaskOutcome::succeeded)
    }

    /// The tasks that did not finish successfully.
    pub fn failed(&self) -> impl Iterator<Item = &TaskOutcome> {
        self.tasks.iter().filter(|t| !t.succeeded())
    }
}

/// Stops a running [`Job`] from anywhere (a Ctrl-C handler, a timeout).
/// Cancelling kills the job's remaining tasks, waits briefly for their
/// `KILLED` updates, tears the framework down and makes `run` return a
/// report with `cancelled: true`. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct CancelHandle {
    inner: Arc<(AtomicBool, Notify)>,
}

impl CancelHandle {
    /// Asks the job to stop. Idempotent.
    pub fn cancel(&self) {
        self.inner.0.store(true, Ordering::SeqCst);
        self.inner.1.notify_waiters();
    }

    /// Has [`CancelHandle::cancel`] been called?
    pub fn is_cancelled(&self) -> bool {
        self.inner.0.load(Ordering::SeqCst)
    }

    async fn cancelled(&self) {
        loop {
            let notified = self.inner.1.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// Where a [`Job`] runs: a connected [`Client`] or a master URL.
#[derive(Clone, Debug)]
pub enum Master {
    /// An existing connection.
    Client(Client),
    /// A URL to connect to (`http://127.0.0.1:5050`).
    Url(String),
}

impl From<Client> for Master {
    fn from(client: Client) -> Master {
        Master::Client(client)
    }
}
impl From<&Client> for Master {
    fn from(client: &Client) -> Master {
        Master::Client(client.clone())
    }
}
impl From<&str> for Master {
    fn from(url: &str) -> Master {
        Master::Url(url.to_string())
    }
}
impl From<String> for Master {
    fn from(url: String) -> Master {
        Master::Url(url)
    }
}
impl From<&String> for Master {
    fn from(url: &String) -> Master {
        Master::Url(url.clone())
    }
}

type Callback = Box<dyn FnMut(&JobUpdate) + Send>;

/// A batch of tasks run to completion by a framework of its own.
///
/// `run` subscribes a framework named after the job, packs pending tasks
/// onto offers (as many as fit, combining offers of one agent), declines
/// what it cannot use with a short filter, suppresses offers while nothing
/// is pending and revives when a retry makes something pending again,
/// retries tasks per its [`RetryPolicy`] under fresh task ids
/// (`<job>-<run>-<index>-<attempt>`, unique across the cluster thanks to a
/// random per-run part), and tears the framework down at the end. Dropping
/// the `run` future also tears it down (which kills the tasks).
pub struct Job {
    name: String,
    framework: FrameworkConfig,
    templates: Vec<TaskTemplate>,
    retry: RetryPolicy,
    on_update: Option<Callback>,
    cancel: CancelHandle,
    refuse_seconds: f64,
    kill_grace: Duration,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.name)
            .field("tasks", &self.templates.len())
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Job {
    /// A job called `name` (also its framework's name and the start of its
    /// task ids) with no tasks yet.
    pub fn new(name: impl Into<String>) -> Job {
        let name = name.into();
        Job {
            framework: FrameworkConfig::new(name.clone()),
            name,
            templates: Vec::new(),
            retry: RetryPolicy::default(),
            on_update: None,
            cancel: CancelHandle::default(),
            refuse_seconds: 1.0,
            kill_grace: Duration::from_secs(5),
        }
    }

    /// The role the job's framework runs in. Default `default`.
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.framework = self.framework.role(role);
        self
    }

    /// Replaces the framework settings (role, failover timeout, heartbeat
    /// timeout, ...); its name is what operators see.
    pub fn framework(mut self, config: FrameworkConfig) -> Self {
        self.framework = config;
        self
    }

    /// Adds one task.
    pub fn task(mut self, task: TaskTemplate) -> Self {
        self.templates.push(task);
        self
    }

    /// Adds tasks, e.g. `(0..n).map(|i| template.clone().arg(i.to_string()))`.
    pub fn tasks(mut self, tasks: impl IntoIterator<Item = TaskTemplate>) -> Self {
        self.templates.extend(tasks);
        self
    }

    /// Sets the retry policy. Default [`RetryPolicy::default`].
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Calls `callback` on every state change of every task (to draw a
    /// progress bar, log, or stream results). It runs on the job's task:
    /// keep it quick.
    pub fn on_update(mut self, callback: impl FnMut(&JobUpdate) + Send + 'static) -> Self {
        self.on_update = Some(Box::new(callback));
        self
    }

    /// How long offers the job cannot use are held back from it, in
    /// seconds. Short, because a retry may need them soon. Default 1.
    pub fn refuse_seconds(mut self, seconds: f64) -> Self {
        self.refuse_seconds = seconds;
        self
    }

    /// How long a cancelled job waits for its tasks' `KILLED` updates
    /// before it tears down anyway. Default 5 s.
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// A handle that cancels this job's `run`.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.cancel.clone()
    }

    /// Runs every task to a final outcome and returns them.
    ///
    /// Fails only if the job cannot run at all (no master, an invalid task
    /// spec, the framework removed by the master); tasks that fail are
    /// outcomes in the report, not errors.
    pub async fn run(self, master: impl Into<Master>) -> Result<JobReport> {
        let started = Instant::now();
        for (i, t) in self.templates.iter().enumerate() {
            if !(t.cpus >= 0.001 && t.cpus.is_finite()) || t.mem == 0 {
                return Err(Error::Config(format!(
                    "task {i} of job `{}` asks for cpus={} mem={}: a task needs cpus >= 0.001 and mem > 0",
                    self.name, t.cpus, t.mem
                )));
            }
        }
        let client = match master.into() {
            Master::Client(client) => client,
            Master::Url(url) => Client::connect(url).await?,
        };
        // Tasks of one shape are declared, so the master sizes offers for
        // them fairly; a job of mixed shapes takes what it is offered.
        let shape = self.templates.first().map(TaskTemplate::resources);
        let shape = shape.filter(|s| self.templates.iter().all(|t| t.resources() == *s));
        let mut framework = self.framework.clone();
        if let Some(task) = shape {
            framework = framework.demand(task, self.templates.len() as u64);
        }
        let (scheduler, events) = client.subscribe(framework).await?;
        let mut guard = TeardownOnDrop(Some(scheduler.clone()));
        let n = self.templates.len();
        let mut run = Run {
            prefix: format!("{}-{:08x}", sanitize(&self.name), rand::random::<u32>()),
            job: self,
            scheduler,
            pending: (0..n).collect(),
            attempts: vec![0; n],
            last: vec![None; n],
            outcomes: vec![None; n],
            active: HashMap::new(),
            in_doubt: HashSet::new(),
            done: 0,
            suppressed: false,
            cancelling: false,
            shape,
        };
        let result = run.drive(events).await;
        let torn = run.scheduler.teardown().await;
        guard.0 = None;
        result?;
        if let Err(e) = torn {
            tracing::warn!(error = %e, "teardown after the job failed");
        }
        let framework_id = run.scheduler.framework_id().to_string();
        let cancelled = run.cancelling;
        let tasks = run
            .outcomes
            .into_iter()
            .enumerate()
            .map(|(index, outcome)| {
                outcome.unwrap_or_else(|| {
                    let last = run.last[index].clone().unwrap_or_default();
                    TaskOutcome {
                        index,
                        task_id: last.task_id,
                        state: v1::TaskState::Killed,
                        reason: v1::Reason::Killed,
                        message: "the job was cancelled before this task ended".into(),
                        exit_code: None,
                        usage: last.usage,
                        agent_id: last.agent_id,
                        attempts: run.attempts[index],
                    }
                })
            })
            .collect();
        Ok(JobReport {
            job: run.job.name,
            framework_id,
            tasks,
            cancelled,
            elapsed: started.elapsed(),
        })
    }
}

/// Tears the framework down if `run` is dropped half-way.
struct TeardownOnDrop(Option<Scheduler>);

impl Drop for TeardownOnDrop {
    fn drop(&mut self) {
        if let Some(scheduler) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = scheduler.teardown().await;
            });
        }
    }
}

/// Task ids allow `[A-Za-z0-9._-]`: map the rest to `-`, keep it short.
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    if s.is_empty() { "job".into() } else { s }
}

/// What a template asks for, as the master counts it. A template with
/// resources no master takes (negative cpus) counts as nothing here, so it
/// is sent, and the master's refusal fails the job with its reason.
fn need_of(template: &TaskTemplate) -> Resources {
    Resources::try_from(&template.resources()).unwrap_or_default()
}

struct Run {
    job: Job,
    prefix: String,
    scheduler: Scheduler,
    pending: VecDeque<usize>,
    attempts: Vec<u32>,
    last: Vec<Option<v1::TaskStatus>>,
    outcomes: Vec<Option<TaskOutcome>>,
    /// Launched attempts not yet terminal: task id -> index.
    active: HashMap<String, usize>,
    /// Active tasks whose `Accept` got no answer: launched or not, the
    /// master's first word on them says.
    in_doubt: HashSet<String>,
    done: usize,
    suppressed: bool,
    cancelling: bool,
    /// The one shape of the job's tasks, declared as its demand.
    shape: Option<v1::Resources>,
}

impl Run {
    async fn drive(&mut self, mut events: Events) -> Result<()> {
        let cancel = self.job.cancel.clone();
        while self.done < self.outcomes.len() {
            let event = tokio::select! {
                _ = cancel.cancelled() => break,
                event = events.next() => event,
            };
            self.event(event).await?;
        }
        if self.done == self.outcomes.len() {
            return Ok(());
        }
        // Cancelled: kill what runs, wait a little for the KILLED updates.
        self.cancelling = true;
        self.pending.clear();
        let ids: Vec<String> = self.active.keys().cloned().collect();
        if !ids.is_empty() {
            if let Err(e) = self.scheduler.kill(ids).await {
                tracing::warn!(error = %e, "killing the cancelled job's tasks failed");
            }
            let deadline = tokio::time::Instant::now() + self.job.kill_grace;
            while !self.active.is_empty() {
                match tokio::time::timeout_at(deadline, events.next()).await {
                    Ok(event) => self.event(event).await?,
                    Err(_) => break,
                }
            }
        }
        Ok(())
    }

    fn fail(&self, message: String) -> Error {
        Error::Job {
            job: self.job.name.clone(),
            message,
        }
    }

    async fn event(&mut self, event: Option<Event>) -> Result<()> {
        match event {
            None => Err(self.fail("the framework's session ended unexpectedly".into())),
            Some(Event::Error(message)) => {
                Err(self.fail(format!("the master ended the job's framework: {message}")))
            }
            Some(Event::Offers(offers)) => self.place(offers).await,
            Some(Event::Update(status)) => self.update(status).await,
            Some(Event::Disconnected { reason }) => {
                tracing::warn!(job = %self.job.name, %reason, "lost the master; reconnecting");
                Ok(())
            }
            Some(Event::Resubscribed { .. }) => {
                if !self.pending.is_empty() {
                    self.revive().await;
                }
                Ok(())
            }
            Some(Event::Rescind(_) | Event::Failure { .. }) => Ok(()),
        }
    }

    /// Asks for offers again, declaring what is pending as the demand.
    async fn revive(&mut self) {
        let revived = match self.shape {
            Some(task) => {
                let pending = self.pending.len() as u64;
                self.scheduler.revive_with_demand(task, pending).await
            }
            None => self.scheduler.revive().await,
        };
        match revived {
            Ok(()) => self.suppressed = false,
            Err(e) => tracing::warn!(error = %e, "revive failed; will retry on the next change"),
        }
    }

    /// Packs pending tasks onto the offers, agent by agent.
    async fn place(&mut self, offers: Vec<v1::Offer>) -> Result<()> {
        let mut unused = Vec::new();
        for mut pool in packing::by_agent(offers) {
            if self.pending.is_empty() || self.cancelling {
                unused.extend(pool.offer_ids);
                continue;
            }
            let templates = &self.job.templates;
            let chosen = pool.take(&mut self.pending, Fill::FirstFit, |&index| {
                need_of(&templates[index])
            });
            let ids = pool.offer_ids;
            if chosen.is_empty() {
                unused.extend(ids);
                continue;
            }
            let specs: Vec<v1::TaskSpec> = chosen
                .iter()
                .map(|&index| {
                    self.attempts[index] += 1;
                    let id = format!("{}-{index}-{}", self.prefix, self.attempts[index]);
                    self.active.insert(id.clone(), index);
                    self.job.templates[index].spec(id)
                })
                .collect();
            let task_ids: Vec<String> = specs.iter().map(|s| s.task_id.clone()).collect();
            if let Err(e) = self
                .scheduler
                .accept(ids, specs, Some(self.job.refuse_seconds))
                .await
            {
                if e.code() == Some(tonic::Code::InvalidArgument) {
                    return Err(self.fail(format!("the master refused its tasks: {e}")));
                }
                if e.code().is_some_and(crate::scheduler::launch_in_doubt) {
                    // The master may have launched them (it went away before
                    // answering). They stay active under their ids; the
                    // session reconciles them once it is back, and a launch
                    // that never happened comes back as TASK_UNKNOWN.
                    tracing::info!(error = %e, tasks = task_ids.len(), "accept in doubt; reconciling its tasks");
                    self.in_doubt.extend(task_ids.iter().cloned());
                    if let Err(e) = self.scheduler.reconcile(task_ids).await {
                        tracing::debug!(error = %e, "reconcile failed; the session reconciles after re-subscribing");
                    }
                    continue;
                }
                // The offers went away (rescinded, re-subscribed): nothing
                // was launched, and the tasks wait for new offers.
                tracing::debug!(error = %e, "accept failed; the tasks wait for other offers");
                for (index, id) in chosen.iter().zip(task_ids) {
                    self.active.remove(&id);
                    self.attempts[*index] -= 1;
                }
                for index in chosen.into_iter().rev() {
                    self.pending.push_front(index);
                }
            }
        }
        if !unused.is_empty() {
            let refuse = if self.pending.is_empty() {
                30.0
            } else {
                self.job.refuse_seconds
            };
            if let Err(e) = self.scheduler.decline(unused, Some(refuse)).await {
                tracing::debug!(error = %e, "decline failed (the offers are gone anyway)");
            }
        }
        if self.pending.is_empty() && !self.suppressed {
            match self.scheduler.suppress().await {
                Ok(()) => self.suppressed = true,
                Err(e) => tracing::debug!(error = %e, "suppress failed"),
            }
        }
        Ok(())
    }

    async fn update(&mut self, status: v1::TaskStatus) -> Result<()> {
        // Updates of earlier attempts, duplicates after the end: ignored.
        let Some(&index) = self.active.get(&status.task_id) else {
            return Ok(());
        };
        let state = status.state();
        if self.in_doubt.remove(&status.task_id) && status.reason() == v1::Reason::TaskUnknown {
            // A launch in doubt that never happened: not an attempt.
            self.active.remove(&status.task_id);
            self.attempts[index] -= 1;
            self.pending.push_front(index);
            self.revive().await;
            return Ok(());
        }
        let attempt = self.attempts[index];
        let terminal = is_terminal(state);
        let retrying =
            terminal && !self.cancelling && self.job.retry.should_retry(&status, attempt);
        self.last[index] = Some(status.clone());
        if terminal {
            self.active.remove(&status.task_id);
            if retrying {
                tracing::info!(task = %status.task_id, ?state, reason = ?status.reason(), "retrying");
                self.pending.push_front(index);
                // Also clears the long filters of offers declined while
                // nothing was pending.
                self.revive().await;
            } else {
                self.outcomes[index] = Some(TaskOutcome {
                    index,
                    task_id: status.task_id.clone(),
                    state,
                    reason: status.reason(),
                    message: status.message.clone(),
                    exit_code: status.exit_code,
                    usage: status.usage,
                    agent_id: status.agent_id.clone(),
                    attempts: attempt,
                });
                self.done += 1;
            }
        }
        if let Some(callback) = self.job.on_update.as_mut() {
            callback(&JobUpdate {
                index,
                attempt,
                status,
                retrying,
                done: self.done,
                total: self.outcomes.len(),
            });
        }
        Ok(())
    }
}
