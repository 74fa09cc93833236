//! Run a batch of tasks to completion: placement, retries, progress,
//! cancel. [`Job`] is the builder and its `run`; the engine is `run.rs`,
//! the vocabulary (templates, retry policies, outcomes, cancel handles,
//! where to run) one file each.

mod cancel;
mod master;
mod outcome;
mod retry;
mod run;
mod template;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use wasmos_proto::v1;

pub use cancel::CancelHandle;
pub use master::Master;
pub use outcome::{JobReport, JobUpdate, TaskOutcome};
pub use retry::RetryPolicy;
pub use template::TaskTemplate;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::scheduler::{FrameworkConfig, Scheduler};
use run::Run;

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
    /// Attributes an agent must have for the job's tasks to run on it.
    on: Vec<v1::Attribute>,
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
            on: Vec::new(),
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

    /// Runs the job's tasks only on agents whose attribute `key` is
    /// `value`; called again, every such condition must hold. Every agent
    /// reports its `os` (`linux`, `macos`, `windows`) and `arch` (`x86_64`,
    /// `aarch64`), and operators add their own (`wasmos agent --attr
    /// zone=eu-1`): `.on("arch", "aarch64")`. Other agents' offers are
    /// declined for a long while: their attributes do not change.
    pub fn on(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.on.push(v1::Attribute {
            key: key.into(),
            value: value.into(),
        });
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
