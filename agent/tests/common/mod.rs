//! Shared helpers of the agent's integration tests: real executors in
//! temporary work dirs, real guests, real statuses.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use wasmos_agent::{Executor, ExecutorConfig, ModuleSource, is_terminal};
use wasmos_proto::v1::{EnvVar, Resources, TaskSpec, TaskState, TaskStatus};

/// A guest built by `scripts/test` into `examples/guests/target`: a WASI
/// preview 1 module.
pub fn guest(name: &str) -> Arc<[u8]> {
    built_guest("wasm32-wasip1", name)
}

/// The same guest built for wasm32-wasip2: a WASI preview 2 component.
pub fn component(name: &str) -> Arc<[u8]> {
    built_guest("wasm32-wasip2", name)
}

fn built_guest(target: &str, name: &str) -> Arc<[u8]> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/guests/target")
        .join(target)
        .join("release")
        .join(format!("{name}.wasm"));
    match std::fs::read(&path) {
        Ok(bytes) => bytes.into(),
        Err(e) => panic!(
            "guest `{name}` is missing at {} ({e}): run `scripts/test`, or build the guests with \
             `cargo build --release --target {target} --manifest-path examples/guests/Cargo.toml`",
            path.display()
        ),
    }
}

/// A `.wat` fixture from `agent/tests/fixtures`.
pub fn fixture(name: &str) -> Arc<[u8]> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.wat"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
        .into()
}

/// An executor in a fresh temporary work dir.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub executor: Executor,
}

impl Harness {
    pub fn new() -> Self {
        Self::with(|c| c)
    }

    pub fn with(tweak: impl FnOnce(ExecutorConfig) -> ExecutorConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = tweak(ExecutorConfig::new(dir.path().join("work")).max_instances(200));
        let executor = Executor::new(config).unwrap();
        Self { dir, executor }
    }

    /// Launches and returns the status stream.
    pub fn launch(&self, spec: TaskSpec, module: Arc<[u8]>) -> UnboundedReceiver<TaskStatus> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.executor
            .launch("fw-test", spec, ModuleSource::Bytes(module), tx)
            .unwrap();
        rx
    }

    /// Launches and waits for the terminal status; returns all statuses.
    pub fn run(&self, spec: TaskSpec, module: Arc<[u8]>) -> Vec<TaskStatus> {
        let rx = self.launch(spec, module);
        collect(rx, Duration::from_secs(60))
    }

    pub fn stdout(&self, task_id: &str) -> String {
        let bytes = self
            .executor
            .read(task_id, &wasmos_agent::SandboxFile::Stdout, 0, 1 << 20)
            .unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Statuses until (and including) the terminal one.
pub fn collect(mut rx: UnboundedReceiver<TaskStatus>, limit: Duration) -> Vec<TaskStatus> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut all = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => {
                    let end = is_terminal(s.state());
                    all.push(s);
                    if end {
                        return all;
                    }
                }
                Ok(None) => panic!("status channel closed without a terminal status: {all:#?}"),
                Err(_) => panic!("no terminal status within {limit:?}: {all:#?}"),
            }
        }
    })
}

/// Waits for the next status (any state).
pub fn next(rx: &mut UnboundedReceiver<TaskStatus>, limit: Duration) -> TaskStatus {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(limit, rx.recv())
            .await
            .expect("a status in time")
            .expect("channel open")
    })
}

pub fn states(statuses: &[TaskStatus]) -> Vec<TaskState> {
    statuses.iter().map(|s| s.state()).collect()
}

/// Checks that a task reported some of `path`'s states, in its order, and
/// ended with its last. A task's `STARTING` and `RUNNING` that still wait
/// in its worker's outbox when it ends are dropped (the end supersedes
/// them), so a short task may report its end alone.
#[track_caller]
pub fn assert_path(statuses: &[TaskStatus], path: &[TaskState], what: &str) {
    let seen = states(statuses);
    assert_eq!(seen.last(), path.last(), "{what}: {statuses:#?}");
    let mut rest = path.iter();
    for state in &seen {
        assert!(
            rest.any(|s| s == state),
            "{what}: {seen:?} is not a part of {path:?}"
        );
    }
}

/// A spec with generous limits: 1 cpu, 256 MiB, 64 MiB of disk.
pub fn spec(task_id: &str, args: &[&str]) -> TaskSpec {
    TaskSpec {
        task_id: task_id.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        resources: Some(Resources {
            cpus: 1.0,
            mem: 256 << 20,
            disk: 64 << 20,
        }),
        ..Default::default()
    }
}

pub fn env(pairs: &[(&str, &str)]) -> Vec<EnvVar> {
    pairs
        .iter()
        .map(|(n, v)| EnvVar {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect()
}
