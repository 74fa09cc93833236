//! The wasmos agent's executor: runs WASI preview 1 tasks in wasmtime
//! under hard limits on `cpus`, `mem`, `disk`, fuel and wall time, in
//! private sandboxes, and reports their statuses and usage.
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

mod artifacts;
mod cache;
mod config;
mod cpu;
mod disk;
mod engine;
mod executor;
pub mod gc;
pub mod identity;
mod limits;
pub mod link;
mod outbox;
mod output;
mod persist;
mod sandbox;
mod status;
mod task;
mod validate;
mod worker;

pub use artifacts::{ArtifactSource, DirArtifacts, FetchFuture, digest_of, is_digest};
pub use cache::{CacheStats, TrimReport, trim_dir as trim_module_cache};
pub use config::{
    DEFAULT_GC_INTERVAL, DEFAULT_MAX_SANDBOXES, DEFAULT_MIN_FREE_DISK, DEFAULT_MODULE_CACHE_BYTES,
    DEFAULT_OUTPUT_CAP, DEFAULT_SANDBOX_RETENTION, ExecutorConfig,
};
pub use cpu::thread_cpu_ns;
pub use engine::{EngineSettings, build_engine};
pub use executor::{Executor, LaunchError, ModuleSource, TaskError};
pub use limits::MemoryLimitExceeded;
pub use sandbox::{Sandbox, SandboxFile};
pub use status::{Outcome, is_terminal};
