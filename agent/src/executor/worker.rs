//! The threads that run wasm: `ceil(cpus)` of them, each a small scheduler
//! of task futures.
//!
//! tokio cannot say which future it polls next or measure what each poll
//! cost, and both are what CPU sharing needs. So each worker polls its tasks
//! itself: among the tasks that are ready and within their CPU rate
//! ([`CpuBucket`]) it polls the one with the least weighted CPU time
//! (`cpu_ns / cpus`, "virtual runtime" as in Linux's CFS), reading the
//! thread's CPU clock around the poll. A CPU-bound task returns at every fuel
//! yield, so when the machine is busy tasks still share what the worker gets
//! in proportion to their `cpus`, and when it is idle none runs past its
//! rate. Host I/O (timers, files) runs on the executor's tokio runtime, which
//! every worker enters.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{JoinHandle, Thread};
use std::time::Instant;

use super::cpu::{CpuBucket, thread_cpu_ns};

/// A task as the scheduler sees it, shared with the task's own future.
#[derive(Debug)]
pub struct SchedInfo {
    /// The task's `cpus`.
    pub cpus: f64,
    /// Set when the task must stop (kill, disk limit): it then runs even if
    /// over its rate, so that it can stop at once.
    pub stopping: AtomicBool,
    /// CPU time its polls took so far, from the poll that set `started`.
    pub cpu_ns: AtomicU64,
    /// Set by the task as it instantiates its module: polls before that
    /// (fetching, compiling, placing inputs) are the agent's work, not
    /// the task's, and are neither charged to its rate nor to its usage. A
    /// task waiting on a compile with a hundred others would otherwise
    /// start its run owing CPU time at `cpus` 0.01, and wait tens of
    /// milliseconds for it.
    pub started: AtomicBool,
}

impl SchedInfo {
    /// Scheduling state for a task limited to `cpus`.
    pub fn new(cpus: f64) -> Self {
        Self {
            cpus,
            stopping: AtomicBool::new(false),
            cpu_ns: AtomicU64::new(0),
            started: AtomicBool::new(false),
        }
    }
}

type TaskFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Slot {
    future: TaskFuture,
    info: Arc<SchedInfo>,
    waker: Arc<SlotWaker>,
    bucket: CpuBucket,
    vruntime: f64,
}

struct SlotWaker {
    woken: AtomicBool,
    worker: Arc<Shared>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.woken.swap(true, Ordering::AcqRel) {
            self.worker.unpark();
        }
    }
}

struct Shared {
    inbox: Mutex<Vec<(TaskFuture, Arc<SchedInfo>)>>,
    thread: Mutex<Option<Thread>>,
    /// Sum of `cpus` of the tasks on this worker, in millionths.
    load: AtomicU64,
    shutdown: AtomicBool,
}

impl Shared {
    fn unpark(&self) {
        if let Some(t) = self.thread.lock().unwrap().as_ref() {
            t.unpark();
        }
    }
}

/// The worker threads of one executor.
pub struct Workers {
    shared: Vec<Arc<Shared>>,
    threads: Vec<JoinHandle<()>>,
}

/// How far (in weighted CPU nanoseconds) behind the busiest task a task
/// that was idle may re-enter: idle time is not banked as credit.
const MIN_SLACK_NS: f64 = 10_000_000.0;

impl Workers {
    /// Starts `n` workers that enter `runtime` for host I/O.
    pub fn start(n: usize, runtime: tokio::runtime::Handle) -> std::io::Result<Self> {
        let mut shared = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let s = Arc::new(Shared {
                inbox: Mutex::new(Vec::new()),
                thread: Mutex::new(None),
                load: AtomicU64::new(0),
                shutdown: AtomicBool::new(false),
            });
            let (s2, rt) = (s.clone(), runtime.clone());
            let handle = std::thread::Builder::new()
                .name(format!("wasmos-worker-{i}"))
                .spawn(move || run(s2, rt))?;
            *s.thread.lock().unwrap() = Some(handle.thread().clone());
            shared.push(s);
            threads.push(handle);
        }
        Ok(Self { shared, threads })
    }

    /// No workers (what is left after shutdown).
    pub fn none() -> Self {
        Self {
            shared: Vec::new(),
            threads: Vec::new(),
        }
    }

    /// Runs `future` on the least loaded worker.
    pub fn spawn(&self, future: TaskFuture, info: Arc<SchedInfo>) {
        let worker = self
            .shared
            .iter()
            .min_by_key(|s| s.load.load(Ordering::Relaxed))
            .expect("at least one worker");
        worker.load.fetch_add(micro(info.cpus), Ordering::Relaxed);
        worker.inbox.lock().unwrap().push((future, info));
        worker.unpark();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for s in &self.shared {
            s.shutdown.store(true, Ordering::Release);
            s.unpark();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn micro(cpus: f64) -> u64 {
    (cpus.clamp(0.0, 1e6) * 1e6) as u64
}

fn run(shared: Arc<Shared>, runtime: tokio::runtime::Handle) {
    let _enter = runtime.enter();
    super::outbox::enable();
    let mut slots: Vec<Slot> = Vec::new();
    let mut min_vruntime = 0.0f64;
    loop {
        let new: Vec<_> = std::mem::take(&mut *shared.inbox.lock().unwrap());
        let now = Instant::now();
        for (future, info) in new {
            let waker = Arc::new(SlotWaker {
                woken: AtomicBool::new(true),
                worker: shared.clone(),
            });
            slots.push(Slot {
                future,
                bucket: CpuBucket::new(info.cpus, now),
                info,
                waker,
                vruntime: min_vruntime,
            });
        }
        if shared.shutdown.load(Ordering::Acquire) {
            // Dropping the futures cancels the tasks (their reporters send
            // a final status).
            slots.clear();
            super::outbox::flush(true);
            return;
        }

        let mut best: Option<(usize, f64)> = None;
        let mut wake_at: Option<Instant> = None;
        for (i, slot) in slots.iter_mut().enumerate() {
            if !slot.waker.woken.load(Ordering::Acquire) {
                continue;
            }
            if !slot.info.stopping.load(Ordering::Relaxed)
                && let Some(t) = slot.bucket.throttled_until(now)
            {
                wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
                continue;
            }
            if best.is_none_or(|(_, v)| slot.vruntime < v) {
                best = Some((i, slot.vruntime));
            }
        }

        let Some((i, _)) = best else {
            // Nothing to run: hand over what the tasks reported before
            // sleeping.
            super::outbox::flush(true);
            match wake_at {
                Some(t) => std::thread::park_timeout(t.saturating_duration_since(Instant::now())),
                None => std::thread::park(),
            }
            continue;
        };

        let slot = &mut slots[i];
        // A task that was idle does not bank unlimited credit against busy
        // ones: it re-enters just behind the current minimum.
        slot.vruntime = slot.vruntime.max(min_vruntime - MIN_SLACK_NS);
        min_vruntime = min_vruntime.max(slot.vruntime);
        slot.waker.woken.store(false, Ordering::Release);
        let waker = Waker::from(slot.waker.clone());
        let mut cx = Context::from_waker(&waker);
        let before = thread_cpu_ns();
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| slot.future.as_mut().poll(&mut cx)));
        let used = thread_cpu_ns().saturating_sub(before);
        if slot.info.started.load(Ordering::Relaxed) {
            slot.bucket.charge(used, Instant::now());
            slot.vruntime += used as f64 / slot.info.cpus.max(1e-3);
            slot.info.cpu_ns.fetch_add(used, Ordering::Relaxed);
        }
        let done = match result {
            Ok(Poll::Ready(())) => true,
            Ok(Poll::Pending) => false,
            Err(_) => {
                tracing::error!("a task panicked; dropping it");
                true
            }
        };
        if done {
            let slot = slots.swap_remove(i);
            shared
                .load
                .fetch_sub(micro(slot.info.cpus), Ordering::Relaxed);
        }
        // A busy worker still hands statuses over within `outbox::MAX_DELAY`.
        super::outbox::flush(false);
    }
}
