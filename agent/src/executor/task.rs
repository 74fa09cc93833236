//! One task's life on a worker: prepare (sandbox, program, inputs),
//! instantiate, run its entry point (a module's `_start`, a component's
//! `wasi:cli/run`) until it ends or is stopped, report.
//!
//! Everything here is one future, polled by a [`worker`](super::worker):
//! its CPU time is what the `cpus` limit measures, and dropping it (agent
//! shutdown) still produces a final status through the [`Reporter`].
//! `timeout_ms`, `usage.wall_time_ms`, `usage.cpu_time_ms` and the `cpus`
//! rate count from instantiation (a few microseconds before RUNNING):
//! fetching and compiling are the agent's time, not the task's, but a
//! module's start function is the task's.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use wasmos_proto::v1::{self, InputKind, TaskSpec, TaskState, TaskUsage};
use wasmtime_wasi::{FsPerms, ResourceTable, WasiCtxBuilder};

use super::artifacts::{check_limit, digest_of_file, is_digest};
use super::cache::{Compiled, LoadError, Program};
use super::engine::ComponentWasi;
use super::entry::run_in_store;
use super::shared::{ModuleSource, Shared};
use super::status::{Outcome, Reporter};
use super::worker::SchedInfo;
use crate::sandbox::persist::TaskFiles;
use crate::sandbox::{self, SandboxDirs};

/// Why a task is asked to stop before it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A kill request.
    Killed,
    /// The disk monitor saw `used` bytes written, over `limit`.
    DiskLimit {
        /// Bytes written.
        used: u64,
        /// The cap.
        limit: u64,
    },
}

/// The executor's handle on one task.
pub struct TaskControl {
    /// The framework that launched it.
    pub framework_id: String,
    /// The module digest its spec names (empty for inline modules).
    pub artifact: String,
    /// Its sandbox, stdout and stderr.
    pub files: Arc<TaskFiles>,
    /// Shared with its worker.
    pub sched: Arc<SchedInfo>,
    /// Its latest state.
    pub state: Arc<Mutex<TaskState>>,
    stop: watch::Sender<Option<Stop>>,
}

impl TaskControl {
    /// A control for a task with `cpus` and `files`.
    pub fn new(framework_id: String, artifact: String, files: Arc<TaskFiles>, cpus: f64) -> Self {
        Self {
            framework_id,
            artifact,
            files,
            sched: Arc::new(SchedInfo::new(cpus)),
            state: Arc::new(Mutex::new(TaskState::Staging)),
            stop: watch::Sender::new(None),
        }
    }

    /// Asks the task to stop; the first reason wins. Wakes it even when it
    /// is over its CPU rate.
    pub fn request_stop(&self, why: Stop) {
        self.sched.stopping.store(true, Ordering::Relaxed);
        self.stop.send_if_modified(|cur| {
            if cur.is_none() {
                *cur = Some(why);
                true
            } else {
                false
            }
        });
    }

    pub(super) fn stopped(&self) -> impl Future<Output = Stop> + use<> {
        let mut rx = self.stop.subscribe();
        async move {
            let stop = rx.wait_for(Option::is_some).await.ok().and_then(|s| *s);
            match stop {
                Some(stop) => stop,
                // The control (and its sender) outlives the task future.
                None => std::future::pending().await,
            }
        }
    }
}

/// Everything one launch needs.
pub struct Launch {
    pub spec: TaskSpec,
    pub module: ModuleSource,
    pub reporter: Reporter,
    pub control: Arc<TaskControl>,
    pub shared: Arc<Shared>,
    /// A sandbox with this task's id was on disk when the executor started.
    pub sandbox_exists: bool,
}

/// Runs a task to its end and sends its statuses.
pub async fn run(launch: Launch) {
    let Launch {
        spec,
        module,
        mut reporter,
        control,
        shared,
        sandbox_exists,
    } = launch;
    reporter.progress(TaskState::Starting, "");
    if sandbox_exists {
        // Another task's files: never mixed with this one's, never written.
        control.files.leave_to_disk();
        let outcome = sandbox_exists_outcome(&control.files.dirs.paths.dir);
        reporter.finish(&outcome, TaskUsage::default());
        return;
    }
    // However the task ends (its future dropped too: the reporter then
    // ends it), its files go to the write-behind with its terminal status.
    reporter.write_behind(
        control.files.clone(),
        shared.persist.clone(),
        shared.config.durable_outputs,
    );
    let prepared = tokio::select! {
        biased;
        stop = control.stopped() => Err(stop_outcome(stop)),
        r = prepare(&spec, module, &control, &shared) => r,
    };
    let prepared = match prepared {
        Ok(c) => c,
        Err(outcome) => {
            let usage = TaskUsage {
                cpu_time_ms: control.sched.cpu_ns.load(Ordering::Relaxed) / 1_000_000,
                ..TaskUsage::default()
            };
            reporter.finish(&outcome, usage);
            return;
        }
    };
    let (outcome, usage) = execute(&spec, &prepared, &control, &shared, &mut reporter).await;
    reporter.finish(&outcome, usage);
}

pub(super) fn stop_outcome(stop: Stop) -> Outcome {
    match stop {
        Stop::Killed => Outcome::Killed,
        Stop::DiskLimit { used, limit } => Outcome::DiskLimit { used, limit },
    }
}

/// Validates the spec, loads the module, and for a task that can touch
/// files or has inputs creates the sandbox and places the inputs (other
/// tasks get theirs written behind when they end).
async fn prepare(
    spec: &TaskSpec,
    module: ModuleSource,
    control: &TaskControl,
    shared: &Shared,
) -> Result<Prepared, Outcome> {
    let resources = spec.resources.unwrap_or_default();
    if !(resources.cpus.is_finite() && resources.cpus > 0.0) {
        return Err(Outcome::InvalidTask(format!(
            "cpus must be a positive number, got {}",
            resources.cpus
        )));
    }
    if resources.mem == 0 {
        return Err(Outcome::InvalidTask("mem must be positive".into()));
    }
    let mut inputs = Vec::with_capacity(spec.inputs.len());
    for input in &spec.inputs {
        let rel = sandbox::relative_path(&input.path)
            .map_err(|e| Outcome::InvalidTask(format!("input {e}")))?;
        if !is_digest(&input.artifact) {
            return Err(Outcome::InvalidTask(format!(
                "input `{}` names artifact `{}`, which is not a sha256 digest",
                input.path, input.artifact
            )));
        }
        inputs.push((rel, input));
    }
    let compiled = shared
        .load_module(&spec.artifact, module)
        .await
        .map_err(|e| match e {
            LoadError::Invalid(msg) => Outcome::InvalidModule(msg),
            LoadError::Unavailable(msg) => Outcome::ArtifactUnavailable(msg),
        })?;

    if !compiled.touches_files && inputs.is_empty() {
        return Ok(Prepared {
            compiled,
            baseline_disk: 0,
        });
    }
    // Inputs count against the task's disk. They are placed one at a time,
    // each streamed to a file as it arrives (never held whole in memory),
    // and an artifact named by several inputs is fetched once and copied
    // from its first place.
    let disk = resources.disk;
    let dirs = control.files.dirs.clone();
    let root = blocking(move || make_sandbox(&dirs)).await??;
    let paths = &control.files.dirs.paths;
    let mut placed_at: HashMap<&str, std::path::PathBuf> = HashMap::new();
    let mut used = 0u64;
    for (n, (rel, input)) in inputs.into_iter().enumerate() {
        let left = disk.saturating_sub(used);
        let first = placed_at.get(input.artifact.as_str()).cloned();
        let placed = match (input.kind(), first) {
            (InputKind::File, Some(first)) => {
                let (root, rel) = (root.clone(), rel.clone());
                blocking(move || copy_placed(&root, &first, &rel, left)).await?
            }
            (InputKind::File, None) => {
                let parent = rel.parent().map(std::path::Path::to_path_buf);
                if let Some(parent) = parent.filter(|p| !p.as_os_str().is_empty()) {
                    let root = root.clone();
                    blocking(move || root.create_dir_all(parent))
                        .await?
                        .map_err(|e| {
                            Outcome::InvalidTask(format!(
                                "input `{}` cannot be placed: {e}",
                                input.path
                            ))
                        })?;
                }
                spool(shared, input, &paths.root.join(&rel), left).await?
            }
            (InputKind::TarDirectory, _) => {
                // The archive waits beside the root, out of the task's
                // sight, while it is unpacked. Headers and padding make it
                // a little larger than what it unpacks to.
                let archive = paths.dir.join(format!(".input-{n}.tar"));
                let limit = left.saturating_mul(2).saturating_add(1 << 20);
                match spool(shared, input, &archive, limit).await? {
                    Err(e) => Err(e),
                    Ok(_) => {
                        let (root, rel) = (root.clone(), rel.clone());
                        blocking(move || {
                            let unpacked = std::fs::File::open(&archive)
                                .and_then(|file| sandbox::unpack_tar(&root, &rel, file, left));
                            let _ = std::fs::remove_file(&archive);
                            unpacked
                        })
                        .await?
                    }
                }
            }
        }
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::FileTooLarge => Outcome::DiskLimit {
                used: used.saturating_add(left).saturating_add(1),
                limit: disk,
            },
            _ => Outcome::InvalidTask(format!("input `{}` cannot be placed: {e}", input.path)),
        })?;
        used = used.saturating_add(placed);
        if used > disk {
            return Err(Outcome::DiskLimit { used, limit: disk });
        }
        placed_at.entry(input.artifact.as_str()).or_insert(rel);
    }
    Ok(Prepared {
        compiled,
        baseline_disk: used,
    })
}

/// Runs blocking file work off the worker thread: a worker that waits for
/// the disk stalls every task it runs.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Outcome> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Outcome::AgentError(format!("placing inputs: {e}")))
}

/// Streams `input`'s artifact into the new file `dest` (at most `limit`
/// bytes) and checks its digest. `Err(Outcome)` when it cannot be had;
/// `Ok(Err)` when it does not fit or cannot be written (placement errors).
async fn spool(
    shared: &Shared,
    input: &v1::Input,
    dest: &std::path::Path,
    limit: u64,
) -> Result<std::io::Result<u64>, Outcome> {
    let unavailable =
        |e: String| Outcome::ArtifactUnavailable(format!("input `{}`: {e}", input.path));
    let source = shared
        .config
        .artifacts
        .as_ref()
        .ok_or_else(|| unavailable("no artifact source is configured".into()))?;
    let size = match source.spool(&input.artifact, dest, limit).await {
        Ok(size) => size,
        Err(e) => {
            let _ = tokio::fs::remove_file(dest).await;
            return match e.kind() {
                std::io::ErrorKind::FileTooLarge | std::io::ErrorKind::AlreadyExists => Ok(Err(e)),
                _ => Err(unavailable(format!(
                    "cannot fetch artifact {}: {e}",
                    input.artifact
                ))),
            };
        }
    };
    let path = dest.to_path_buf();
    let actual = blocking(move || digest_of_file(&path)).await?;
    match actual {
        Ok(actual) if actual == input.artifact => Ok(Ok(size)),
        Ok(actual) => {
            let _ = tokio::fs::remove_file(dest).await;
            Err(unavailable(format!(
                "artifact {} arrived with sha256 {actual}",
                input.artifact
            )))
        }
        Err(e) => Ok(Err(e)),
    }
}

/// Copies the input already placed at `first` to `rel` under `root`.
/// Refuses (`FileTooLarge`) what would pass `budget` bytes.
fn copy_placed(
    root: &cap_std::fs::Dir,
    first: &std::path::Path,
    rel: &std::path::Path,
    budget: u64,
) -> std::io::Result<u64> {
    let size = root.metadata(first)?.len();
    check_limit(size, budget)?;
    if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        root.create_dir_all(parent)?;
    }
    root.copy(first, root, rel)?;
    Ok(size)
}

/// What a task needs to run.
struct Prepared {
    compiled: Arc<Compiled>,
    /// Bytes of the inputs in its root.
    baseline_disk: u64,
}

/// A launch whose id already has a sandbox on disk (from an earlier run of
/// the agent, found at start or when creating it): never mixed in.
fn sandbox_exists_outcome(dir: &std::path::Path) -> Outcome {
    Outcome::InvalidTask(format!(
        "a sandbox for this task id already exists at {}: task ids are never reused",
        dir.display()
    ))
}

/// Creates a sandbox's directories; its root, opened.
fn make_sandbox(dirs: &SandboxDirs) -> Result<Arc<cap_std::fs::Dir>, Outcome> {
    dirs.create().map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            sandbox_exists_outcome(&dirs.paths.dir)
        } else {
            Outcome::AgentError(format!(
                "cannot create sandbox {}: {e}",
                dirs.paths.dir.display()
            ))
        }
    })?;
    dirs.paths
        .root_dir()
        .map(Arc::new)
        .map_err(|e| Outcome::AgentError(format!("cannot open sandbox root: {e}")))
}

/// Instantiates and runs the program; returns how it ended and what it used.
async fn execute(
    spec: &TaskSpec,
    prepared: &Prepared,
    control: &Arc<TaskControl>,
    shared: &Shared,
    reporter: &mut Reporter,
) -> (Outcome, TaskUsage) {
    let resources = spec.resources.unwrap_or_default();
    let compiled = &prepared.compiled;
    let sandbox = &control.files.dirs.paths;
    let (stdout, stderr) = (&control.files.stdout, &control.files.stderr);
    let mut usage = TaskUsage::default();
    // Known without a walk when the task cannot have written files.
    let mut disk_bytes = None;

    let outcome = 'run: {
        let name = if spec.name.is_empty() {
            &spec.task_id
        } else {
            &spec.name
        };
        let mut wasi = WasiCtxBuilder::new();
        wasi.arg(name)
            .args(&spec.args)
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            // Nothing a module could not do: no sockets, no name lookups.
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for var in &spec.env {
            wasi.env(&var.name, &var.value);
        }
        // A program that imports nothing able to reach a descriptor beyond
        // stdio cannot tell whether its root is preopened, and cannot add a
        // byte to it: it gets no preopen, no disk watch and no end-of-task
        // walk (its root holds exactly its inputs).
        let touches_files = compiled.touches_files;
        if touches_files {
            wasi.initial_cwd("/");
            if let Err(e) = wasi.preopened_dir(&sandbox.root, "/", FsPerms::ReadWrite) {
                break 'run Outcome::AgentError(format!("cannot open sandbox root: {e:#}"));
            }
        }
        let baseline = prepared.baseline_disk;
        if !touches_files {
            disk_bytes = Some(baseline);
        }
        let _watch = touches_files.then(|| {
            shared
                .disk
                // The inputs already count against the cap (they are in
                // the root): the watch measures everything there.
                .watch(sandbox.root.clone(), 0, resources.disk, {
                    let control = Arc::downgrade(control);
                    let limit = resources.disk;
                    Box::new(move |used| {
                        if let Some(c) = control.upgrade() {
                            c.request_stop(Stop::DiskLimit { used, limit });
                        }
                    })
                })
        });
        let engine = &shared.engine;
        let ran = match &compiled.program {
            Program::Module(pre) => {
                let wasi = wasi.build_p1();
                run_in_store(pre, engine.engine(), wasi, spec, control, shared, reporter).await
            }
            Program::Component(pre) => {
                let wasi = ComponentWasi {
                    ctx: wasi.build(),
                    table: ResourceTable::new(),
                };
                let engine = engine.component_engine();
                run_in_store(pre, engine, wasi, spec, control, shared, reporter).await
            }
        };
        usage.wall_time_ms = ran.wall_time_ms;
        usage.fuel_consumed = ran.fuel_consumed;
        usage.peak_mem = ran.peak_mem;
        ran.outcome
    };

    let (out, err) = (stdout.usage(), stderr.usage());
    usage.stdout_bytes = out.bytes;
    usage.stdout_truncated = out.truncated;
    usage.stderr_bytes = err.bytes;
    usage.stderr_truncated = err.truncated;
    usage.disk_bytes = match disk_bytes {
        Some(bytes) => bytes,
        // A walk of the root, off the worker thread.
        None => {
            let root = sandbox.root.clone();
            tokio::task::spawn_blocking(move || sandbox::disk_usage(&root))
                .await
                .unwrap_or(0)
        }
    };
    usage.cpu_time_ms = control.sched.cpu_ns.load(Ordering::Relaxed) / 1_000_000;
    // The final measure: a task that wrote past its cap between two checks
    // (or ended before the first) fails, whatever its own ending.
    let outcome = match outcome {
        Outcome::Killed | Outcome::DiskLimit { .. } | Outcome::AgentError(_) => outcome,
        _ if usage.disk_bytes > resources.disk => Outcome::DiskLimit {
            used: usage.disk_bytes,
            limit: resources.disk,
        },
        other => other,
    };
    (outcome, usage)
}
