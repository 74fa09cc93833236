//! The agent's disk collector: keeps what the agent stores on disk bounded.
//!
//! * **Sandboxes past their retention.** An ended task's sandbox is deleted
//!   [`sandbox_retention`](ExecutorConfig::sandbox_retention) after its last
//!   status was acknowledged ([`GcHandle::task_retired`]; a sandbox of an
//!   earlier run of the agent: after its last change), and past
//!   [`max_sandboxes`](ExecutorConfig::max_sandboxes) ended ones the oldest
//!   go at once: a busy agent ends thousands of tasks a second.
//! * **Sandboxes under disk pressure.** When all sandboxes together take
//!   more than [`sandbox_disk_limit`](ExecutorConfig::sandbox_disk_limit),
//!   or the work dir's file system has less than
//!   [`min_free_disk`](ExecutorConfig::min_free_disk) free, sandboxes of
//!   ended tasks are deleted, oldest end first, until both hold again (or
//!   none is left), even before their retention time. A running task's
//!   sandbox is never deleted.
//! * **The on-disk module cache** is trimmed to
//!   [`module_cache_bytes`](ExecutorConfig::module_cache_bytes), least
//!   recently used entries first ([`trim_module_cache`](crate::trim_module_cache)).
//!
//! One pass is [`Collector::collect`]; [`spawn`] runs passes on a thread of
//! their own every [`gc_interval`](ExecutorConfig::gc_interval) and soon
//! after a [`GcHandle::task_ended`] (at most one pass per
//! [`MAX_GAP_AFTER_TASK_END`] for those, and over the sandboxes the
//! collector knows of, [`Collector::collect_known`]: listing every sandbox
//! is left to one pass an interval). The
//! pure functions [`expired_or_excess`] and [`choose_victims`] choose the
//! sandboxes. The collector only uses the executor's public API
//! (`running_tasks`, `state`, `remove`, `config`).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use wasmos_platform::disk::free_space;

use crate::{Executor, ExecutorConfig};

/// One sandbox, as [`choose_victims`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxUse {
    /// The task id (the sandbox's directory name).
    pub task: String,
    /// When the task ended (ignored while it runs).
    pub ended_at: SystemTime,
    /// When its last status was acknowledged, if it was: the retention
    /// counts from there.
    pub retired_at: Option<SystemTime>,
    /// Bytes the sandbox takes.
    pub bytes: u64,
    /// The task has not ended: its sandbox must stay.
    pub running: bool,
}

/// The limits and the file system's state, for [`choose_victims`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pressure {
    /// Most bytes all sandboxes may take (`None`: no such limit).
    pub sandbox_limit: Option<u64>,
    /// Free bytes to keep on the file system.
    pub min_free: u64,
    /// Free bytes on the file system now (`None`: unknown).
    pub free: Option<u64>,
}

/// Sandboxes of ended tasks to delete whatever the disk: those retired
/// `retention` or longer before `now`, then, of the rest, the oldest ends
/// past the `max` newest.
pub fn expired_or_excess(
    sandboxes: &[SandboxUse],
    now: SystemTime,
    retention: Duration,
    max: usize,
) -> Vec<String> {
    let expired = |s: &SandboxUse| {
        s.retired_at
            .is_some_and(|t| now.duration_since(t).is_ok_and(|age| age >= retention))
    };
    let mut victims: Vec<String> = Vec::new();
    let mut kept: Vec<&SandboxUse> = Vec::new();
    for s in sandboxes.iter().filter(|s| !s.running) {
        if expired(s) {
            victims.push(s.task.clone());
        } else {
            kept.push(s);
        }
    }
    if kept.len() > max {
        kept.sort_by(|a, b| {
            a.ended_at
                .cmp(&b.ended_at)
                .then_with(|| a.task.cmp(&b.task))
        });
        let excess = kept.len() - max;
        victims.extend(kept[..excess].iter().map(|s| s.task.clone()));
    }
    victims
}

/// The sandboxes to delete, in order: ended tasks, oldest end first (ties
/// by task id), until the sandboxes are within `sandbox_limit` and deleting
/// them frees enough to reach `min_free`. If that cannot be reached, every
/// ended task's sandbox is chosen. Never a running task's.
pub fn choose_victims(sandboxes: &[SandboxUse], pressure: &Pressure) -> Vec<String> {
    let total: u64 = sandboxes.iter().map(|s| s.bytes).sum();
    let over_limit = pressure
        .sandbox_limit
        .map_or(0, |limit| total.saturating_sub(limit));
    let short_of_free = pressure
        .free
        .map_or(0, |free| pressure.min_free.saturating_sub(free));
    let mut need = over_limit.max(short_of_free);
    if need == 0 {
        return Vec::new();
    }
    let mut ended: Vec<&SandboxUse> = sandboxes.iter().filter(|s| !s.running).collect();
    ended.sort_by(|a, b| {
        a.ended_at
            .cmp(&b.ended_at)
            .then_with(|| a.task.cmp(&b.task))
    });
    let mut victims = Vec::new();
    for s in ended {
        if need == 0 {
            break;
        }
        need = need.saturating_sub(s.bytes);
        victims.push(s.task.clone());
    }
    victims
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Sandboxes deleted, in the order they were.
    pub removed: Vec<String>,
    /// Bytes of all sandboxes before the pass.
    pub sandbox_bytes: u64,
    /// Free bytes on the work dir's file system before the pass.
    pub free_bytes: Option<u64>,
    /// Module cache entries evicted.
    pub evicted_modules: usize,
    /// Bytes of the module cache after the pass.
    pub module_cache_bytes: u64,
}

/// What the collector remembers of an ended task's sandbox: it does not
/// change any more, so it is measured once.
#[derive(Debug, Clone, Copy)]
struct Ended {
    at: SystemTime,
    bytes: Option<u64>,
    retired_at: Option<SystemTime>,
}

/// The collector's memory between passes: when tasks ended, and the sizes
/// of their sandboxes. Entries go when their sandbox does.
#[derive(Debug, Default)]
pub struct Collector {
    ended: Mutex<HashMap<String, Ended>>,
}

impl Collector {
    /// A collector that knows no task yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `task` ended now (a better age than the sandbox's
    /// mtimes, which is what a task the collector never heard of gets),
    /// with its sandbox's size if known (from the task's final usage:
    /// then the sandbox is never walked).
    pub fn task_ended(&self, task: &str, bytes: Option<u64>) {
        self.ended
            .lock()
            .unwrap()
            .entry(task.to_owned())
            .or_insert(Ended {
                at: SystemTime::now(),
                bytes,
                retired_at: None,
            });
    }

    /// Records that `task`'s last status was acknowledged: its retention
    /// starts now.
    pub fn task_retired(&self, task: &str) {
        let now = SystemTime::now();
        self.ended
            .lock()
            .unwrap()
            .entry(task.to_owned())
            .or_insert(Ended {
                at: now,
                bytes: None,
                retired_at: None,
            })
            .retired_at
            .get_or_insert(now);
    }

    /// One pass over `executor`'s sandboxes and module cache, listing every
    /// sandbox on disk (so it finds those of an earlier run). Blocking (it
    /// walks directories): run it off async threads.
    pub fn collect(&self, executor: &Executor) -> GcReport {
        self.pass(executor, true)
    }

    /// A pass over the sandboxes the collector knows (of tasks that ended
    /// or run) and the module cache, without listing the sandboxes
    /// directory: what a task's end asks for. Listing costs the kernel a
    /// walk of every retained sandbox, and tasks end by the thousand a
    /// second; the periodic [`collect`](Self::collect) finds the rest.
    pub fn collect_known(&self, executor: &Executor) -> GcReport {
        self.pass(executor, false)
    }

    fn pass(&self, executor: &Executor, list: bool) -> GcReport {
        let config = executor.config();
        let mut report = GcReport::default();
        let sandboxes_dir = config.work_dir.join("sandboxes");
        // List the directories before asking what runs: a task launched
        // in between is then seen running, never as an ended stray.
        let listed = list.then(|| list_dirs(&sandboxes_dir));
        let running: HashSet<String> = executor.running_tasks().into_iter().collect();
        let running_use = |task: &String| SandboxUse {
            task: task.clone(),
            ended_at: SystemTime::now(),
            retired_at: None,
            bytes: crate::sandbox::disk_usage(&sandboxes_dir.join(task)),
            running: true,
        };
        let mut uses = Vec::new();
        {
            let mut ended = self.ended.lock().unwrap();
            match listed {
                Some(dirs) => {
                    let present: HashSet<&String> = dirs.iter().collect();
                    // A sandbox written behind its task may not be listed yet.
                    let recent = SystemTime::now() - WRITE_BEHIND_GRACE;
                    ended.retain(|task, e| present.contains(task) || e.at > recent);
                    uses.reserve(dirs.len());
                    for task in &dirs {
                        let is_running = running.contains(task)
                            || executor.state(task).is_some_and(|s| !crate::is_terminal(s));
                        if is_running {
                            uses.push(running_use(task));
                            continue;
                        }
                        // A sandbox the collector never heard of (an earlier
                        // run's): aged, and retired, from its last change.
                        let record = ended.entry(task.clone()).or_insert_with(|| {
                            let at = last_modified(&sandboxes_dir.join(task));
                            Ended {
                                at,
                                bytes: None,
                                retired_at: Some(at),
                            }
                        });
                        uses.push(ended_use(task, record, &sandboxes_dir));
                    }
                }
                // What the collector knows: the tasks its executor says
                // ended, and those running. This pass runs after every
                // second of ends, over up to `max_sandboxes` of them: one
                // walk of the map, no lookup per task.
                None => {
                    uses.reserve(ended.len() + running.len());
                    uses.extend(running.iter().map(running_use));
                    for (task, record) in ended.iter_mut() {
                        if !running.contains(task) {
                            uses.push(ended_use(task, record, &sandboxes_dir));
                        }
                    }
                }
            }
        }
        report.sandbox_bytes = uses.iter().map(|u| u.bytes).sum();
        report.free_bytes = free_space(&sandboxes_dir);
        let pressure = Pressure {
            sandbox_limit: config.sandbox_disk_limit,
            min_free: config.min_free_disk,
            free: report.free_bytes,
        };
        let old = expired_or_excess(
            &uses,
            SystemTime::now(),
            config.sandbox_retention,
            config.max_sandboxes,
        );
        if !old.is_empty() {
            let gone: HashSet<&String> = old.iter().collect();
            uses.retain(|u| !gone.contains(&u.task));
        }
        let pressed = choose_victims(&uses, &pressure);
        let why = |i: usize| {
            if i < old.len() {
                "retention time or sandbox count"
            } else {
                "disk pressure"
            }
        };
        for (i, task) in old.iter().chain(&pressed).enumerate() {
            match executor.remove(task) {
                Ok(()) | Err(crate::TaskError::Unknown(_)) => {
                    tracing::debug!(%task, reason = why(i), "deleted the sandbox of an ended task");
                    self.ended.lock().unwrap().remove(task);
                    report.removed.push(task.clone());
                }
                Err(e) => tracing::warn!(%task, error = %e, "cannot delete sandbox"),
            }
        }
        if !report.removed.is_empty() {
            tracing::info!(
                removed = report.removed.len(),
                for_disk_pressure = pressed.len(),
                "deleted sandboxes of ended tasks"
            );
        }
        if let Some(dir) = &config.cache_dir {
            match crate::trim_module_cache(dir, config.module_cache_bytes) {
                Ok(trim) => {
                    report.evicted_modules = trim.evicted;
                    report.module_cache_bytes = trim.bytes;
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot trim the module cache")
                }
            }
        }
        report
    }
}

/// How long the collector remembers an ended task whose sandbox it has not
/// seen on disk: sandboxes are written shortly after their task ends.
const WRITE_BEHIND_GRACE: Duration = Duration::from_secs(60);

/// How an ended task's sandbox counts in a pass. One not measured yet is
/// measured once it is written (a sandbox written behind its task).
fn ended_use(task: &str, record: &mut Ended, sandboxes_dir: &Path) -> SandboxUse {
    let bytes = match record.bytes {
        Some(bytes) => bytes,
        None => {
            let dir = sandboxes_dir.join(task);
            if dir.exists() {
                *record.bytes.insert(crate::sandbox::disk_usage(&dir))
            } else {
                0
            }
        }
    };
    SandboxUse {
        task: task.to_owned(),
        ended_at: record.at,
        retired_at: record.retired_at,
        bytes,
        running: false,
    }
}

/// Longest a pass asked for by a task's end waits after the previous pass
/// (or the [`gc_interval`](ExecutorConfig::gc_interval), if shorter).
pub const MAX_GAP_AFTER_TASK_END: Duration = Duration::from_secs(1);

/// Runs a [`Collector`] on its own thread until dropped.
pub struct GcHandle {
    collector: Arc<Collector>,
    /// Set when a pass was asked for and has not started: later requests
    /// need not wake the thread again.
    asked: Arc<AtomicBool>,
    wake: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GcHandle {
    /// Records that `task` ended (with its sandbox's size, if known) and
    /// asks for a pass soon.
    pub fn task_ended(&self, task: &str, bytes: Option<u64>) {
        self.collector.task_ended(task, bytes);
        self.wake();
    }

    /// Records that `task`'s last status was acknowledged: its sandbox is
    /// deleted after the retention time.
    pub fn task_retired(&self, task: &str) {
        self.collector.task_retired(task);
    }

    /// Asks for a pass soon.
    pub fn wake(&self) {
        if !self.asked.swap(true, Ordering::AcqRel) {
            let _ = self.wake.send(());
        }
    }

    /// The collector the thread runs.
    pub fn collector(&self) -> &Arc<Collector> {
        &self.collector
    }
}

impl Drop for GcHandle {
    fn drop(&mut self) {
        // Closing the channel ends the thread's wait.
        let (dead, _) = mpsc::channel();
        self.wake = dead;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts collecting for `executor`: a pass every
/// [`gc_interval`](ExecutorConfig::gc_interval) and after each
/// [`GcHandle::task_ended`] (wake-ups that arrive together share a pass).
pub fn spawn(executor: Arc<Executor>) -> std::io::Result<GcHandle> {
    let collector = Arc::new(Collector::new());
    let (wake, woken) = mpsc::channel::<()>();
    let asked = Arc::new(AtomicBool::new(false));
    let interval = effective_interval(executor.config());
    let gap = interval.min(MAX_GAP_AFTER_TASK_END);
    let thread = std::thread::Builder::new()
        .name("wasmos-gc".into())
        .spawn({
            let collector = collector.clone();
            let asked = asked.clone();
            move || {
                let mut listed: Option<Instant> = None;
                loop {
                    let started = Instant::now();
                    asked.store(false, Ordering::Release);
                    // Every sandbox is listed once an interval; the passes
                    // tasks' ends ask for between look at what they know.
                    let report = if listed.is_none_or(|at| at.elapsed() >= interval) {
                        listed = Some(started);
                        collector.collect(&executor)
                    } else {
                        collector.collect_known(&executor)
                    };
                    if !report.removed.is_empty() || report.evicted_modules > 0 {
                        tracing::debug!(?report, "disk collector pass");
                    }
                    match woken.recv_timeout(interval) {
                        Ok(()) => {
                            // Tasks end by the thousand a second, and a pass
                            // lists every sandbox: one pass per `gap`.
                            let next = started + gap;
                            while let Some(wait) = next.checked_duration_since(Instant::now()) {
                                match woken.recv_timeout(wait) {
                                    Ok(()) => {}
                                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                                }
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            }
        })?;
    Ok(GcHandle {
        collector,
        asked,
        wake,
        thread: Some(thread),
    })
}

fn effective_interval(config: &ExecutorConfig) -> Duration {
    config.gc_interval.max(Duration::from_millis(1))
}

/// Names of the directories in `dir` (none if it cannot be read).
fn list_dirs(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The latest mtime of a sandbox's own files (the directory, its root,
/// stdout and stderr): about when its task last did something.
fn last_modified(dir: &Path) -> SystemTime {
    ["", "root", "stdout", "stderr"]
        .iter()
        .filter_map(|name| std::fs::metadata(dir.join(name)).ok()?.modified().ok())
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
        .min(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn ended(task: &str, secs: u64, bytes: u64) -> SandboxUse {
        SandboxUse {
            task: task.into(),
            ended_at: at(secs),
            retired_at: None,
            bytes,
            running: false,
        }
    }

    fn running(task: &str, bytes: u64) -> SandboxUse {
        SandboxUse {
            task: task.into(),
            ended_at: at(0),
            retired_at: None,
            bytes,
            running: true,
        }
    }

    fn limit(bytes: u64) -> Pressure {
        Pressure {
            sandbox_limit: Some(bytes),
            min_free: 0,
            free: None,
        }
    }

    #[test]
    fn retired_sandboxes_go_after_their_retention_and_the_oldest_past_the_cap() {
        let retired = |task: &str, secs: u64| SandboxUse {
            retired_at: Some(at(secs)),
            ..ended(task, secs, 1)
        };
        let all = [
            retired("old", 10),
            retired("young", 95),
            ended("unacked", 5, 1),
            running("r", 1),
        ];
        let minute = Duration::from_secs(60);
        // At 100 s with a 60 s retention: only the one retired at 10 s.
        assert_eq!(expired_or_excess(&all, at(100), minute, 10), ["old"]);
        assert!(expired_or_excess(&all, at(69), minute, 10).is_empty());
        // A cap of one ended sandbox: of those not expired, the newest stays.
        assert_eq!(
            expired_or_excess(&all, at(100), minute, 1),
            ["old", "unacked"]
        );
        // Running sandboxes never count or go.
        assert_eq!(
            expired_or_excess(&all, at(0), minute, 0),
            ["unacked", "old", "young"]
        );
    }

    #[test]
    fn nothing_is_chosen_without_pressure() {
        let all = [ended("a", 1, 100), running("r", 100)];
        assert!(choose_victims(&all, &limit(200)).is_empty());
        let roomy = Pressure {
            sandbox_limit: None,
            min_free: 1000,
            free: Some(1000),
        };
        assert!(choose_victims(&all, &roomy).is_empty());
        assert!(choose_victims(&[], &limit(0)).is_empty());
    }

    #[test]
    fn the_oldest_ended_sandboxes_go_first_until_under_the_limit() {
        let all = [
            ended("c", 30, 100),
            ended("a", 10, 100),
            running("r", 100),
            ended("b", 20, 100),
        ];
        assert_eq!(choose_victims(&all, &limit(399)), ["a"]);
        assert_eq!(choose_victims(&all, &limit(250)), ["a", "b"]);
        // Ties on the end time go by task id.
        let tied = [ended("y", 5, 10), ended("x", 5, 10)];
        assert_eq!(choose_victims(&tied, &limit(10)), ["x"]);
    }

    #[test]
    fn a_running_task_is_never_chosen() {
        let all = [running("r", 1000), ended("old", 1, 10), ended("new", 2, 10)];
        // Even deleting every ended sandbox cannot get under the limit.
        assert_eq!(choose_victims(&all, &limit(100)), ["old", "new"]);
        assert!(choose_victims(&[running("r", 1000)], &limit(0)).is_empty());
    }

    #[test]
    fn low_free_space_frees_what_is_missing() {
        let all = [ended("a", 1, 100), ended("b", 2, 100), ended("c", 3, 100)];
        let low = |free| Pressure {
            sandbox_limit: None,
            min_free: 1000,
            free: Some(free),
        };
        assert_eq!(choose_victims(&all, &low(950)), ["a"]);
        assert_eq!(choose_victims(&all, &low(850)), ["a", "b"]);
        assert_eq!(choose_victims(&all, &low(0)), ["a", "b", "c"]);
        // The larger of the two needs wins.
        let both = Pressure {
            sandbox_limit: Some(250),
            min_free: 1000,
            free: Some(990),
        };
        assert_eq!(choose_victims(&all, &both), ["a"]);
        let both = Pressure {
            free: Some(750),
            ..both
        };
        assert_eq!(choose_victims(&all, &both), ["a", "b", "c"]);
    }
}
