//! Executor configuration: one plain struct with documented defaults and
//! chainable setters, so the agent binary can map its flags onto it and tests
//! can shrink intervals without touching anything else.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::artifacts::ArtifactSource;
use super::engine::{Capacity, EngineSettings, MemoryModel, TaskEngine};

/// Default cap on each of a task's stdout and stderr files: 10 MiB.
pub const DEFAULT_OUTPUT_CAP: u64 = 10 << 20;

/// Default cap on the on-disk cache of compiled modules: 1 GiB, room for
/// hundreds of typical compiled modules (tens of KiB to a few MiB each).
pub const DEFAULT_MODULE_CACHE_BYTES: u64 = 1 << 30;

/// Default free space kept on the work dir's file system: 1 GiB.
pub const DEFAULT_MIN_FREE_DISK: u64 = 1 << 30;

/// Default time between two passes of the disk garbage collector: 10 s.
pub const DEFAULT_GC_INTERVAL: Duration = Duration::from_secs(10);

/// Default time an ended task's sandbox is kept after its last status was
/// acknowledged: 1 hour.
pub const DEFAULT_SANDBOX_RETENTION: Duration = Duration::from_secs(3600);

/// Default cap on the sandboxes of ended tasks kept: 100,000. An agent that
/// runs thousands of tasks a second would otherwise keep millions of
/// directories (and its memory of them) for the retention time.
pub const DEFAULT_MAX_SANDBOXES: usize = 100_000;

/// How an [`Executor`](crate::Executor) runs tasks.
///
/// ```
/// use wasmos_agent::ExecutorConfig;
///
/// let config = ExecutorConfig::new("/var/lib/wasmos")
///     .cpus(2.0)
///     .output_cap(1 << 20);
/// assert_eq!(config.worker_threads(), 2);
/// ```
#[derive(Clone)]
pub struct ExecutorConfig {
    /// Where sandboxes (`sandboxes/<task_id>/`) and, unless
    /// [`cache_dir`](Self::cache_dir) says otherwise, compiled modules
    /// (`modules/`) live.
    pub work_dir: PathBuf,
    /// On-disk cache of compiled modules. Default `<work_dir>/modules`;
    /// `None` keeps compiled modules in memory only.
    pub cache_dir: Option<PathBuf>,
    /// CPU cores this agent gives to tasks. Tasks run on `ceil(cpus)` worker
    /// threads. Default: the machine's available parallelism.
    pub cpus: f64,
    /// Cap on each of stdout and stderr, in bytes. Default 10 MiB.
    pub output_cap: u64,
    /// Fuel between two yield points of a running task: the granularity of
    /// CPU sharing, kills and timeouts. Default 1,000,000 (well under a
    /// millisecond of wasm).
    pub fuel_yield_interval: u64,
    /// How often the disk usage of running tasks is measured. Default 200 ms.
    pub disk_check_interval: Duration,
    /// Memory this agent gives to tasks, in bytes: the largest memory one
    /// task may have (with 4 GiB, wasm32's own limit) when the engine is
    /// sized. Default 4 GiB.
    pub mem: u64,
    /// The engine to run tasks on, shared with the other executors of this
    /// process. Default `None`: the executor builds its own, sized from
    /// [`cpus`](Self::cpus) and [`mem`](Self::mem) (or
    /// [`max_instances`](Self::max_instances)).
    pub engine: Option<Arc<TaskEngine>>,
    /// Use wasmtime's pooling instance allocator where it fits the address
    /// space (faster instantiation); `false` maps memories per task. Default
    /// true.
    pub pooling: bool,
    /// The most tasks instantiated at once. Default `None`: as many as the
    /// master may place, one per 0.001 [`cpus`](Self::cpus).
    pub max_instances: Option<u32>,
    /// Compiled modules kept in memory. Default 256.
    pub memory_cache_entries: usize,
    /// Cap on the bytes of the on-disk module cache
    /// ([`cache_dir`](Self::cache_dir)); the least recently used entries are
    /// evicted past it by the disk collector ([`crate::gc`]). A module
    /// already loaded stays usable: only its file goes. Default 1 GiB.
    pub module_cache_bytes: u64,
    /// Cap on the bytes all sandboxes take: past it, the disk collector
    /// deletes sandboxes of ended tasks, oldest first, before their
    /// retention time. `None`: no cap of its own (the agent sets 80% of the
    /// disk it offers). Default `None`.
    pub sandbox_disk_limit: Option<u64>,
    /// Free space to keep on the work dir's file system: below it, the disk
    /// collector deletes sandboxes of ended tasks, oldest first. Default
    /// 1 GiB.
    pub min_free_disk: u64,
    /// How often the disk collector checks sandboxes and the module cache
    /// (it also runs when a task ends). Default 10 s.
    pub gc_interval: Duration,
    /// An ended task's sandbox is deleted this long after its last status
    /// was acknowledged (sandboxes of an earlier run of the agent: after
    /// their last change). Default 1 hour.
    pub sandbox_retention: Duration,
    /// Most sandboxes of ended tasks kept: past it the oldest go, whatever
    /// their retention. Default 100,000.
    pub max_sandboxes: usize,
    /// Where `launch` fetches modules and inputs named by digest.
    pub artifacts: Option<Arc<dyn ArtifactSource>>,
    /// Identifies this agent in the statuses it sends (`agent_id`).
    pub agent_id: String,
    /// Hold each terminal status until the task's stdout, stderr and files
    /// are synced to the disk, so that a framework that saw a task end can
    /// read its outputs after any crash. Syncs are batched (one `syncfs`
    /// per batch of ended tasks). Default false; the executor process sets it.
    pub durable_outputs: bool,
}

impl std::fmt::Debug for ExecutorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorConfig")
            .field("work_dir", &self.work_dir)
            .field("cache_dir", &self.cache_dir)
            .field("cpus", &self.cpus)
            .field("output_cap", &self.output_cap)
            .field("fuel_yield_interval", &self.fuel_yield_interval)
            .field("disk_check_interval", &self.disk_check_interval)
            .field("mem", &self.mem)
            .field("engine", &self.engine)
            .field("pooling", &self.pooling)
            .field("max_instances", &self.max_instances)
            .field("memory_cache_entries", &self.memory_cache_entries)
            .field("module_cache_bytes", &self.module_cache_bytes)
            .field("sandbox_disk_limit", &self.sandbox_disk_limit)
            .field("min_free_disk", &self.min_free_disk)
            .field("gc_interval", &self.gc_interval)
            .field("sandbox_retention", &self.sandbox_retention)
            .field("max_sandboxes", &self.max_sandboxes)
            .field("artifacts", &self.artifacts.is_some())
            .field("agent_id", &self.agent_id)
            .field("durable_outputs", &self.durable_outputs)
            .finish()
    }
}

impl ExecutorConfig {
    /// The defaults above, with everything stored under `work_dir`.
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        let work_dir = work_dir.into();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        Self {
            cache_dir: Some(work_dir.join("modules")),
            work_dir,
            cpus,
            output_cap: DEFAULT_OUTPUT_CAP,
            fuel_yield_interval: 1_000_000,
            disk_check_interval: Duration::from_millis(200),
            mem: 4 << 30,
            engine: None,
            pooling: true,
            max_instances: None,
            memory_cache_entries: 256,
            module_cache_bytes: DEFAULT_MODULE_CACHE_BYTES,
            sandbox_disk_limit: None,
            min_free_disk: DEFAULT_MIN_FREE_DISK,
            gc_interval: DEFAULT_GC_INTERVAL,
            sandbox_retention: DEFAULT_SANDBOX_RETENTION,
            max_sandboxes: DEFAULT_MAX_SANDBOXES,
            artifacts: None,
            agent_id: String::new(),
            durable_outputs: false,
        }
    }

    /// Sets [`cpus`](Self::cpus).
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.cpus = cpus;
        self
    }

    /// Sets [`cache_dir`](Self::cache_dir).
    pub fn cache_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.cache_dir = dir;
        self
    }

    /// Sets [`output_cap`](Self::output_cap).
    pub fn output_cap(mut self, bytes: u64) -> Self {
        self.output_cap = bytes;
        self
    }

    /// Sets [`fuel_yield_interval`](Self::fuel_yield_interval).
    pub fn fuel_yield_interval(mut self, fuel: u64) -> Self {
        self.fuel_yield_interval = fuel;
        self
    }

    /// Sets [`disk_check_interval`](Self::disk_check_interval).
    pub fn disk_check_interval(mut self, every: Duration) -> Self {
        self.disk_check_interval = every;
        self
    }

    /// Sets [`pooling`](Self::pooling).
    pub fn pooling(mut self, on: bool) -> Self {
        self.pooling = on;
        self
    }

    /// Sets [`max_instances`](Self::max_instances).
    pub fn max_instances(mut self, slots: u32) -> Self {
        self.max_instances = Some(slots);
        self
    }

    /// Sets [`mem`](Self::mem).
    pub fn mem(mut self, bytes: u64) -> Self {
        self.mem = bytes;
        self
    }

    /// Sets [`engine`](Self::engine).
    pub fn engine(mut self, engine: Arc<TaskEngine>) -> Self {
        self.engine = Some(engine);
        self
    }

    /// What this executor may run at once, for sizing an engine.
    pub fn capacity(&self) -> Capacity {
        let mut capacity = Capacity::of(self.cpus, self.mem);
        if let Some(slots) = self.max_instances {
            capacity.tasks = u64::from(slots.max(1));
        }
        capacity
    }

    /// The engine to run on: the shared one, or one of its own.
    pub(super) fn task_engine(&self) -> anyhow::Result<Arc<TaskEngine>> {
        match &self.engine {
            Some(engine) => Ok(engine.clone()),
            None if self.pooling => TaskEngine::for_capacity(self.capacity()),
            None => TaskEngine::new(EngineSettings {
                memory: MemoryModel::OnDemand,
                ..EngineSettings::default()
            }),
        }
    }

    /// Sets [`module_cache_bytes`](Self::module_cache_bytes).
    pub fn module_cache_bytes(mut self, bytes: u64) -> Self {
        self.module_cache_bytes = bytes;
        self
    }

    /// Sets [`sandbox_disk_limit`](Self::sandbox_disk_limit).
    pub fn sandbox_disk_limit(mut self, bytes: Option<u64>) -> Self {
        self.sandbox_disk_limit = bytes;
        self
    }

    /// Sets [`min_free_disk`](Self::min_free_disk).
    pub fn min_free_disk(mut self, bytes: u64) -> Self {
        self.min_free_disk = bytes;
        self
    }

    /// Sets [`gc_interval`](Self::gc_interval).
    pub fn gc_interval(mut self, every: Duration) -> Self {
        self.gc_interval = every;
        self
    }

    /// Sets [`sandbox_retention`](Self::sandbox_retention).
    pub fn sandbox_retention(mut self, keep: Duration) -> Self {
        self.sandbox_retention = keep;
        self
    }

    /// Sets [`max_sandboxes`](Self::max_sandboxes).
    pub fn max_sandboxes(mut self, n: usize) -> Self {
        self.max_sandboxes = n;
        self
    }

    /// Sets [`artifacts`](Self::artifacts).
    pub fn artifacts(mut self, source: Arc<dyn ArtifactSource>) -> Self {
        self.artifacts = Some(source);
        self
    }

    /// Sets [`durable_outputs`](Self::durable_outputs).
    pub fn durable_outputs(mut self, on: bool) -> Self {
        self.durable_outputs = on;
        self
    }

    /// Sets [`agent_id`](Self::agent_id).
    pub fn agent_id(mut self, id: impl Into<String>) -> Self {
        self.agent_id = id.into();
        self
    }

    /// Worker threads that run wasm: `ceil(cpus)`, at least one and at most
    /// 4,096 (a bad `cpus` must not start a million threads).
    pub fn worker_threads(&self) -> usize {
        if self.cpus.is_finite() && self.cpus > 0.0 {
            (self.cpus.ceil() as usize).min(4096)
        } else {
            1
        }
    }
}
