//! The wasmos agent's executor: runs WASI tasks (preview 1 modules and
//! preview 2 components) in wasmtime under hard limits on `cpus`, `mem`,
//! `disk`, fuel and wall time, in private sandboxes, and reports their
//! statuses and usage.
//!
//! It never depends on the link to the master: a launch is a
//! `wasmos.v1.TaskSpec` plus the module's bytes (or an [`ArtifactSource`]),
//! and statuses come out as `wasmos.v1.TaskStatus` on a channel.
//!
//! ```no_run
//! use std::sync::Arc;
//! use wasmos_agent::{Executor, ExecutorConfig, ModuleSource};
//! use wasmos_proto::v1::{Resources, TaskSpec};
//!
//! let executor = Executor::new(ExecutorConfig::new("/tmp/wasmos-agent")).unwrap();
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let spec = TaskSpec {
//!     task_id: "hello-1".into(),
//!     resources: Some(Resources { cpus: 0.5, mem: 64 << 20, disk: 1 << 20 }),
//!     ..Default::default()
//! };
//! let wat: Arc<[u8]> = Arc::from(&br#"(module (func (export "_start")))"#[..]);
//! executor.launch("framework-1", spec, ModuleSource::Bytes(wat), tx).unwrap();
//! while let Some(status) = rx.blocking_recv() {
//!     println!("{:?} {:?}", status.state(), status.reason());
//! }
//! ```
//!
//! Its modules depend one way: `link` (the connection to the master and
//! the agent's TLS identity; the default `link` feature, the only user of
//! tonic) → `process` (the executor process beside the agent, its socket
//! protocol and supervision) → `checkpoint` (unacknowledged updates on
//! disk) → `executor` (running tasks in wasmtime under limits) → `sandbox`
//! (a task's directory and outputs, written behind). [`gc`], the disk
//! collector, uses the executor's public API and the sandbox module;
//! `frames` is the checksummed record both append-only files (the
//! checkpoint and the output log) are made of. See
//! `ARCHITECTURE.md` at the repository's root for how they fit the rest.

pub mod checkpoint;
mod executor;
mod frames;
pub mod gc;
#[cfg(feature = "link")]
pub mod link;
pub mod process;
mod sandbox;

pub use executor::{
    ArtifactSource, CacheStats, Capacity, DEFAULT_GC_INTERVAL, DEFAULT_MAX_SANDBOXES,
    DEFAULT_MIN_FREE_DISK, DEFAULT_MODULE_CACHE_BYTES, DEFAULT_OUTPUT_CAP,
    DEFAULT_SANDBOX_RETENTION, DirArtifacts, EngineSettings, Executor, ExecutorConfig, FetchFuture,
    LaunchError, MemoryLimitExceeded, MemoryModel, ModuleSource, Outcome, SpoolFuture, TaskEngine,
    TaskError, TrimReport, build_engine, digest_of, is_digest, is_terminal, thread_cpu_ns,
    trim_module_cache,
};
#[cfg(feature = "link")]
pub use link::identity;
pub use sandbox::{Sandbox, SandboxFile, check_task_id, relative_path, unpack_tar};
