//! The executor: the agent's public face for running tasks.
//!
//! It owns the engine, the module cache, the worker threads, the disk
//! monitor and a small tokio runtime for host I/O, and knows every task it
//! launched since it started (sandboxes of earlier runs stay readable by
//! task id). It knows nothing of the master: a launch is a `TaskSpec` in,
//! statuses out on a channel, so the cluster link can forward both verbatim.
//!
//! The room, in the order its modules depend on each other (each uses only
//! those after it, and the [`sandbox`](crate::sandbox) room):
//! [`Executor`] (here, the API) → `task` (one task's life) → `shared` (the
//! state tasks share, [`ModuleSource`]) → `cache` (compiled modules) →
//! `engine` (the engine, the WASI linker, what a task's store holds) →
//! `validate`, `limits` (`mem`), `disk` (`disk`), `worker` and `cpu`
//! (`cpus`), `status` and `outbox` (statuses out), `config`, `artifacts`.

mod artifacts;
mod cache;
mod config;
mod cpu;
mod disk;
mod engine;
mod entry;
mod limits;
mod outbox;
mod shared;
mod status;
mod task;
mod validate;
mod worker;

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::UnboundedSender;
use wasmos_proto::v1::{self, TaskSpec, TaskState, TaskStatus};
use wasmtime::Engine;

pub use artifacts::{ArtifactSource, DirArtifacts, FetchFuture, SpoolFuture, digest_of, is_digest};
pub(crate) use artifacts::{TOO_LARGE, check_limit, create_new, write_new};
pub use cache::{CacheStats, TrimReport, trim_dir as trim_module_cache};
pub use config::{
    DEFAULT_GC_INTERVAL, DEFAULT_MAX_SANDBOXES, DEFAULT_MIN_FREE_DISK, DEFAULT_MODULE_CACHE_BYTES,
    DEFAULT_OUTPUT_CAP, DEFAULT_SANDBOX_RETENTION, ExecutorConfig,
};
pub use cpu::thread_cpu_ns;
pub use engine::{Capacity, EngineSettings, MemoryModel, TaskEngine, build_engine};
pub use limits::MemoryLimitExceeded;
pub use shared::ModuleSource;
pub use status::{Outcome, is_terminal};

use crate::sandbox::output_log::OutputLog;
use crate::sandbox::persist::{Persister, TaskFiles};
use crate::sandbox::{Sandbox, SandboxFile, check_task_id, relative_path};
use cache::ModuleCache;
use disk::DiskMonitor;
use shared::Shared;
use status::Reporter;
use task::{Launch, Stop, TaskControl};
use worker::Workers;

/// Why a launch was refused outright (no status is sent for it).
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Another task with this id is known to this executor.
    #[error("task `{0}` is already known to this agent")]
    Duplicate(String),
    /// The id cannot name a sandbox.
    #[error("{0}")]
    InvalidId(String),
}

/// Errors of [`Executor::kill`] and [`Executor::read`].
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// No such task on this executor (or sandbox on disk).
    #[error("task `{0}` is unknown to this agent")]
    Unknown(String),
    /// The task already ended.
    #[error("task `{0}` has already ended")]
    Ended(String),
    /// Reading the sandbox failed.
    #[error("reading the sandbox of `{task}`: {source}")]
    Io {
        /// The task.
        task: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The tasks an executor knows.
struct Tasks {
    /// Launched since it started, by id.
    launched: HashMap<String, Arc<TaskControl>>,
    /// Ids whose sandboxes were on disk when it started (and not removed
    /// since): a launch with one of them is refused, since its files would
    /// mix with another task's. Known from one listing at start, so a launch
    /// needs no file-system call to check.
    on_disk: HashSet<String>,
}

/// Runs WASI tasks under hard limits. See the crate docs for an example.
pub struct Executor {
    shared: Arc<Shared>,
    tasks: Mutex<Tasks>,
    /// How many launched tasks have not ended: asked several times a
    /// second, where counting them would walk every task still retained.
    open: Arc<AtomicUsize>,
    workers: Workers,
    persister: Option<Persister>,
    runtime: Option<tokio::runtime::Runtime>,
    /// `<work_dir>/executor.lock`, locked while the executor lives (and
    /// released after everything it wrote behind is on disk).
    _lock: std::fs::File,
}

impl Executor {
    /// Starts an executor: creates the work directory, the engine, the
    /// worker threads and the I/O runtime.
    pub fn new(config: ExecutorConfig) -> anyhow::Result<Self> {
        use anyhow::Context;
        let sandboxes_dir = config.work_dir.join("sandboxes");
        // Sandboxes and outputs are their tasks' owners' to read (through
        // the master), no other local user's: a directory others cannot
        // enter keeps them out whatever the files' own modes.
        wasmos_platform::private::private_dir(&config.work_dir)
            .with_context(|| format!("making {} private", config.work_dir.display()))?;
        std::fs::create_dir_all(&sandboxes_dir)
            .with_context(|| format!("creating work dir {}", config.work_dir.display()))?;
        let lock = lock_work_dir(&config.work_dir, "executor.lock")?;
        let sandboxes = wasmos_platform::private::open_dir(&sandboxes_dir)
            .with_context(|| format!("opening {}", sandboxes_dir.display()))?;
        // What an earlier executor logged and never wrote goes into its
        // sandboxes first, so they are on disk like any other.
        let output_log = if config.durable_outputs {
            let (log, restored) = OutputLog::open(&config.work_dir).with_context(|| {
                format!("opening the output log in {}", config.work_dir.display())
            })?;
            if restored > 0 {
                tracing::info!(
                    sandboxes = restored,
                    "output log: wrote the sandboxes a crash left unwritten"
                );
            }
            Some(log)
        } else {
            None
        };
        let on_disk = std::fs::read_dir(&sandboxes_dir)
            .with_context(|| format!("listing {}", sandboxes_dir.display()))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        let engine = config.task_engine()?;
        let cache = ModuleCache::new(
            engine.clone(),
            config.cache_dir.clone(),
            config.memory_cache_entries,
        )
        .context("creating the module cache")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wasmos-io")
            .enable_all()
            .build()
            .context("starting the I/O runtime")?;
        let workers = Workers::start(config.worker_threads(), runtime.handle().clone())
            .context("starting worker threads")?;
        let disk =
            DiskMonitor::start(config.disk_check_interval).context("starting the disk monitor")?;
        let persister = Persister::start(output_log).context("starting the sandbox persister")?;
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                engine,
                cache,
                disk,
                sandboxes: Arc::new(sandboxes),
                persist: persister.queue(),
            }),
            tasks: Mutex::new(Tasks {
                launched: HashMap::new(),
                on_disk,
            }),
            open: Arc::default(),
            workers,
            persister: Some(persister),
            runtime: Some(runtime),
            _lock: lock,
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ExecutorConfig {
        &self.shared.config
    }

    /// The engine tasks run on (for benchmarks comparing raw wasmtime).
    pub fn engine(&self) -> &Engine {
        self.shared.engine.engine()
    }

    /// How the engine lays out task memories.
    pub fn memory_model(&self) -> MemoryModel {
        self.shared.engine.memory_model()
    }

    /// Module cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.shared.cache.stats()
    }

    /// Where the compiled code of `digest` is cached on disk, if anywhere.
    pub fn cached_module_path(&self, digest: &str) -> Option<std::path::PathBuf> {
        self.shared.cache.disk_path(digest)
    }

    /// Starts a task. Returns at once; its statuses (`STARTING`, `RUNNING`,
    /// then exactly one terminal status) arrive on `statuses`, batched per
    /// worker and at most about a millisecond after they happen. A spec the
    /// agent cannot run (bad resources, bad inputs, invalid module) ends in
    /// an `ERROR`/`FAILED` status, not in an `Err` here: `Err` is only for a
    /// task id that cannot be used at all.
    pub fn launch(
        &self,
        framework_id: &str,
        spec: TaskSpec,
        module: ModuleSource,
        statuses: UnboundedSender<TaskStatus>,
    ) -> Result<(), LaunchError> {
        check_task_id(&spec.task_id).map_err(LaunchError::InvalidId)?;
        let cpus = spec.resources.map_or(0.0, |r| r.cpus);
        let files = Arc::new(TaskFiles::new(
            &self.shared.config.work_dir,
            self.shared.sandboxes.clone(),
            &spec.task_id,
            self.shared.config.output_cap,
        ));
        let control = Arc::new(TaskControl::new(
            framework_id.to_owned(),
            spec.artifact.clone(),
            files,
            cpus,
        ));
        let sandbox_exists = {
            let mut tasks = self.tasks.lock().unwrap();
            if tasks.launched.contains_key(&spec.task_id) {
                return Err(LaunchError::Duplicate(spec.task_id));
            }
            tasks.launched.insert(spec.task_id.clone(), control.clone());
            self.open.fetch_add(1, Ordering::AcqRel);
            tasks.on_disk.contains(&spec.task_id)
        };
        let reporter = Reporter::new(
            statuses,
            spec.task_id.clone(),
            framework_id.to_owned(),
            self.shared.config.agent_id.clone(),
            control.state.clone(),
        )
        .counted_in(self.open.clone());
        let sched = control.sched.clone();
        let launch = Launch {
            spec,
            module,
            reporter,
            control,
            shared: self.shared.clone(),
            sandbox_exists,
        };
        self.workers.spawn(Box::pin(task::run(launch)), sched);
        Ok(())
    }

    /// Kills a running task: it ends `KILLED` within one fuel-yield interval
    /// (well under 100 ms), even in a tight loop.
    pub fn kill(&self, task_id: &str) -> Result<(), TaskError> {
        let control = self.control(task_id)?;
        if is_terminal(*control.state.lock().unwrap()) {
            return Err(TaskError::Ended(task_id.to_owned()));
        }
        control.request_stop(Stop::Killed);
        Ok(())
    }

    /// The latest state of a task launched by this executor.
    pub fn state(&self, task_id: &str) -> Option<TaskState> {
        let control = self.control(task_id).ok()?;
        let state = *control.state.lock().unwrap();
        Some(state)
    }

    /// The framework that launched `task_id`.
    pub fn framework_of(&self, task_id: &str) -> Option<String> {
        self.control(task_id).ok().map(|c| c.framework_id.clone())
    }

    /// The module digest `task_id`'s spec names (empty for inline modules).
    pub fn artifact_of(&self, task_id: &str) -> Option<String> {
        self.control(task_id).ok().map(|c| c.artifact.clone())
    }

    /// How many tasks have not ended (without walking them).
    pub fn running_count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Ids of the tasks that have not ended.
    pub fn running_tasks(&self) -> Vec<String> {
        let tasks = self.tasks.lock().unwrap();
        let mut ids: Vec<String> = tasks
            .launched
            .iter()
            .filter(|(_, c)| !is_terminal(*c.state.lock().unwrap()))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Reads up to `max` bytes from `offset` of a sandbox file, while the
    /// task runs or after it ended (also for tasks of an earlier run of the
    /// agent, found by id on disk). Reads inside the root never follow a
    /// path out of it.
    pub fn read(
        &self,
        task_id: &str,
        file: &SandboxFile,
        offset: u64,
        max: usize,
    ) -> Result<Vec<u8>, TaskError> {
        self.read_sized(task_id, file, offset, max)
            .map(|(data, _)| data)
    }

    /// [`read`](Self::read), with the file's whole size.
    pub fn read_sized(
        &self,
        task_id: &str,
        file: &SandboxFile,
        offset: u64,
        max: usize,
    ) -> Result<(Vec<u8>, u64), TaskError> {
        let io_error = |source| TaskError::Io {
            task: task_id.to_owned(),
            source,
        };
        check_task_id(task_id).map_err(|_| TaskError::Unknown(task_id.to_owned()))?;
        if let Ok(control) = self.control(task_id)
            && let Some(pending) = control.files.read_pending(file, offset, max)
        {
            return pending.map_err(io_error);
        }
        let sandbox = Sandbox::at(&self.shared.config.work_dir, task_id);
        if !sandbox.dir.is_dir() {
            return Err(TaskError::Unknown(task_id.to_owned()));
        }
        sandbox.read(file, offset, max).map_err(io_error)
    }

    /// The entries of the directory `path` under a task's root (`""` or
    /// `/` for the root itself), sorted by name; never leaves the root.
    pub fn list(&self, task_id: &str, path: &str) -> Result<Vec<v1::FileEntry>, String> {
        // The id names a directory under `sandboxes/`: `/`, `..` or
        // `/proc/self` would name one outside every sandbox.
        check_task_id(task_id)?;
        let rel = path.trim_start_matches('/');
        let at_root = Path::new(rel).components().all(|c| c == Component::CurDir);
        let rel = if at_root {
            PathBuf::new()
        } else {
            relative_path(rel)?
        };
        let sandbox = self.sandbox(task_id);
        // A task that can touch no file has no root, in memory or on disk:
        // its root is empty.
        let no_root = match self.control(task_id) {
            Ok(control) if control.files.root_pending() => true,
            _ => sandbox.dir.is_dir() && !sandbox.root.exists(),
        };
        if no_root {
            return if at_root {
                Ok(Vec::new())
            } else {
                Err(format!("cannot open `{path}`: no such directory"))
            };
        }
        let root = sandbox
            .root_dir()
            .map_err(|e| format!("no sandbox root: {e}"))?;
        let dir = if at_root {
            root
        } else {
            root.open_dir(rel)
                .map_err(|e| format!("cannot open `{path}`: {e}"))?
        };
        let mut entries = Vec::new();
        for entry in dir.entries().map_err(|e| e.to_string())? {
            let entry = entry.map_err(|e| e.to_string())?;
            let meta = entry.metadata().map_err(|e| e.to_string())?;
            entries.push(v1::FileEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                is_dir: meta.is_dir(),
                size: meta.len(),
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// The sandbox paths of a task (existing or not: the sandbox of a task
    /// that can touch no file is written shortly after it ends).
    pub fn sandbox(&self, task_id: &str) -> Sandbox {
        Sandbox::at(&self.shared.config.work_dir, task_id)
    }

    /// Forgets an ended task and deletes its sandbox.
    pub fn remove(&self, task_id: &str) -> Result<(), TaskError> {
        check_task_id(task_id).map_err(|_| TaskError::Unknown(task_id.to_owned()))?;
        let launched = {
            let mut tasks = self.tasks.lock().unwrap();
            tasks.on_disk.remove(task_id);
            match tasks.launched.get(task_id) {
                Some(c) if !is_terminal(*c.state.lock().unwrap()) => {
                    return Err(TaskError::Io {
                        task: task_id.to_owned(),
                        source: std::io::Error::other("the task is still running"),
                    });
                }
                Some(c) => {
                    c.files.discard();
                    tasks.launched.remove(task_id);
                    true
                }
                None => false,
            }
        };
        let sandbox = Sandbox::at(&self.shared.config.work_dir, task_id);
        match std::fs::remove_dir_all(&sandbox.dir) {
            // Ended before its sandbox was written behind: now it never is.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && launched => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(TaskError::Unknown(task_id.to_owned()))
            }
            other => other.map_err(|source| TaskError::Io {
                task: task_id.to_owned(),
                source,
            }),
        }
    }

    fn control(&self, task_id: &str) -> Result<Arc<TaskControl>, TaskError> {
        self.tasks
            .lock()
            .unwrap()
            .launched
            .get(task_id)
            .cloned()
            .ok_or_else(|| TaskError::Unknown(task_id.to_owned()))
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Workers first (their tasks report AGENT_ERROR), then the runtime
        // they used, without blocking if dropped inside another runtime.
        let workers = std::mem::replace(&mut self.workers, Workers::none());
        drop(workers);
        // Then the persister, which writes what the tasks left in memory.
        drop(self.persister.take());
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Locks `<work_dir>/<name>` for this process: `executor.lock` (two
/// executors on one work dir would mix their sandboxes and module caches)
/// or the agent's `agent.lock`. The kernel drops the lock when the process
/// dies, so a crashed one never leaves it held.
pub(crate) fn lock_work_dir(dir: &std::path::Path, name: &str) -> anyhow::Result<std::fs::File> {
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(anyhow::anyhow!(
            "work dir {} is in use by another wasmos agent (it holds {}): give each agent its own --work-dir",
            dir.display(),
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(anyhow::anyhow!("locking {}: {e}", path.display()))
        }
    }
}
