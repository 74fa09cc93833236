//! [`TaskTemplate`]: one task of a job, as the caller describes it.

use std::collections::HashMap;
use std::time::Duration;

use wasmos_proto::v1;

/// One task of a [`Job`](super::Job): what to run and with what limits.
///
/// Defaults: 0.1 cpus, 64 MiB of memory, no disk, no fuel limit, no timeout.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskTemplate {
    artifact: String,
    name: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    inputs: Vec<v1::Input>,
    pub(super) cpus: f64,
    pub(super) mem: u64,
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
