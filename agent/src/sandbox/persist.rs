//! Write-behind of sandboxes: a task's files as the executor holds them
//! ([`TaskFiles`]), and the thread that puts them on disk after the task
//! ended ([`Persister`]).
//!
//! Creating a directory and writing a small file cost more system time than
//! running a small task, and on a journaling disk a `mkdir` can block for
//! hundreds of microseconds. Done on a worker thread, that time stalls every
//! task the worker runs. So a task that can touch no file runs with its
//! output in memory and no directory at all, and when it ends its sandbox is
//! written by the persister thread, in batches: the worker goes straight on
//! to the next task. Until then reads are answered from memory, so a reader
//! never sees the difference. A backlog past [`MAX_BACKLOG`] tasks is
//! written by the worker itself, which bounds the memory held.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use super::output::CappedOutput;
use super::output_log::{Logged, OutputLog, Ticket};
use super::{SandboxDirs, SandboxFile};

/// Ended tasks waiting for the persister before workers write their own.
pub const MAX_BACKLOG: usize = 10_000;

/// How long the persister gathers work after a batch before it sleeps:
/// under load it is woken about once per this interval, not once per task.
const GATHER: Duration = Duration::from_millis(1);

/// One task's sandbox directories, stdout and stderr.
pub struct TaskFiles {
    /// The directories (created on first need).
    pub dirs: Arc<SandboxDirs>,
    /// The task's stdout.
    pub stdout: CappedOutput,
    /// The task's stderr.
    pub stderr: CappedOutput,
}

impl TaskFiles {
    /// The files of `task_id`, nothing created yet; each output capped at
    /// `cap` bytes.
    pub fn new(work_dir: &Path, sandboxes: Arc<std::fs::File>, task_id: &str, cap: u64) -> Self {
        let dirs = Arc::new(SandboxDirs::new(work_dir, sandboxes, task_id));
        Self {
            stdout: CappedOutput::new(dirs.paths.stdout.clone(), cap, dirs.clone()),
            stderr: CappedOutput::new(dirs.paths.stderr.clone(), cap, dirs.clone()),
            dirs,
        }
    }

    /// Puts the sandbox on disk: its directories and what its outputs hold
    /// in memory. Errors are logged: the task already ended, and its output
    /// is best effort.
    pub fn persist(&self) {
        if let Err(e) = self.dirs.ensure() {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(sandbox = %self.dirs.paths.dir.display(), error = %e, "cannot create sandbox; its output is lost");
            }
            self.stdout.discard();
            self.stderr.discard();
            return;
        }
        for out in [&self.stdout, &self.stderr] {
            if let Err(e) = out.persist() {
                tracing::warn!(sandbox = %self.dirs.paths.dir.display(), error = %e, "cannot write task output");
            }
        }
    }

    /// Leaves the sandbox to what is on disk: nothing in memory is written
    /// (a sandbox of another task with this id, or one being deleted).
    pub fn leave_to_disk(&self) {
        self.stdout.discard();
        self.stderr.discard();
    }

    /// Before the sandbox is deleted: drops what is in memory and makes
    /// sure a late write-behind never creates it again.
    pub fn discard(&self) {
        self.leave_to_disk();
        self.dirs.mark_removed();
    }

    /// Answers a read of `file` (bytes from `offset`, at most `max`, and the
    /// file's size) while the sandbox is not on disk yet; `None` once it is
    /// (read the disk).
    pub fn read_pending(
        &self,
        file: &SandboxFile,
        offset: u64,
        max: usize,
    ) -> Option<io::Result<(Vec<u8>, u64)>> {
        match file {
            SandboxFile::Stdout => self.stdout.read_pending(offset, max).map(Ok),
            SandboxFile::Stderr => self.stderr.read_pending(offset, max).map(Ok),
            // No directories yet: the task can touch no file, and its root
            // holds nothing.
            SandboxFile::Root(_) => self.root_pending().then(|| {
                Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "no such file in the task's root",
                ))
            }),
        }
    }

    /// True when all the sandbox holds is in memory: no directories, both
    /// outputs unspilled.
    pub fn memory_only(&self) -> bool {
        !self.dirs.created() && self.stdout.is_pending() && self.stderr.is_pending()
    }

    /// True while the sandbox has no directories yet but will get them:
    /// its root is empty.
    pub fn root_pending(&self) -> bool {
        !self.dirs.created() && self.stdout.is_pending()
    }
}

/// What to do once a task's files are synced to the disk (send its
/// terminal status).
pub type AfterSync = Box<dyn FnOnce() + Send>;

/// A task's files for the persister: what waits for them to be synced, and
/// the output log's ticket that keeps its outputs until they are written.
struct Job {
    files: Arc<TaskFiles>,
    after_sync: Option<AfterSync>,
    _ticket: Option<Ticket>,
}

/// A queue and the thread that empties it in batches.
struct Lane<J> {
    queue: Mutex<Vec<J>>,
    /// Set by the thread before it parks without a timeout: the next
    /// submitter wakes it.
    sleeping: AtomicBool,
    shutdown: AtomicBool,
    thread: OnceLock<Thread>,
}

impl<J> Lane<J> {
    fn new() -> Self {
        Lane {
            queue: Mutex::new(Vec::new()),
            sleeping: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            thread: OnceLock::new(),
        }
    }

    /// Queues `job`, or gives it back when the lane is [`MAX_BACKLOG`]
    /// behind or shut down. `urgent` (something waits for it) wakes the
    /// thread from its gathering pause if the job starts a batch.
    fn push(&self, job: J, urgent: bool) -> Result<(), J> {
        let mut queue = self.queue.lock().unwrap();
        if queue.len() >= MAX_BACKLOG || self.shutdown.load(Ordering::Acquire) {
            return Err(job);
        }
        let first = queue.is_empty();
        queue.push(job);
        drop(queue);
        let sleeping = self.sleeping.swap(false, Ordering::AcqRel);
        if (sleeping || (urgent && first))
            && let Some(t) = self.thread.get()
        {
            t.unpark();
        }
        Ok(())
    }

    /// The thread's loop: batches to `handle` until shut down and empty.
    fn run(&self, mut handle: impl FnMut(Vec<J>)) {
        loop {
            let batch = std::mem::take(&mut *self.queue.lock().unwrap());
            if !batch.is_empty() {
                handle(batch);
                // Let the next batch gather without anyone having to wake us.
                std::thread::park_timeout(GATHER);
                continue;
            }
            if self.shutdown.load(Ordering::Acquire) {
                // Submitters handle their own from now on.
                let rest = std::mem::take(&mut *self.queue.lock().unwrap());
                if !rest.is_empty() {
                    handle(rest);
                }
                return;
            }
            self.sleeping.store(true, Ordering::Release);
            // A push between the take above and the flag would go unnoticed
            // without this second look.
            if !self.queue.lock().unwrap().is_empty() {
                self.sleeping.store(false, Ordering::Release);
                continue;
            }
            std::thread::park();
        }
    }

    fn stop(&self, thread: JoinHandle<()>) {
        self.shutdown.store(true, Ordering::Release);
        thread.thread().unpark();
        let _ = thread.join();
    }
}

/// An ended task whose status waits for its outputs to be logged.
type Waiting = (Arc<TaskFiles>, AfterSync);

struct Inner {
    persist: Lane<Job>,
    /// With durable outputs: ended tasks whose outputs go to the log
    /// before their statuses leave.
    log: Option<(Arc<OutputLog>, Lane<Waiting>)>,
}

/// Hands ended tasks' files to the persister thread. Cheap to clone.
#[derive(Clone)]
pub struct PersistQueue(Arc<Inner>);

impl PersistQueue {
    /// Queues `files` for writing; writes them here and now when the
    /// persister is [`MAX_BACKLOG`] tasks behind (or gone). `after_sync`,
    /// if any, runs once they would survive a crash: logged (a task that
    /// touched no file, with an output log) or written and the file system
    /// synced (one sync for each batch).
    pub fn submit(&self, files: Arc<TaskFiles>, after_sync: Option<AfterSync>) {
        let after_sync = match (after_sync, &self.0.log) {
            (Some(after_sync), Some((_, lane))) if files.memory_only() => {
                match lane.push((files, after_sync), true) {
                    Ok(()) => return,
                    Err((f, a)) => return self.persist(f, Some(a), None),
                }
            }
            (after_sync, _) => after_sync,
        };
        self.persist(files, after_sync, None);
    }

    fn persist(
        &self,
        files: Arc<TaskFiles>,
        after_sync: Option<AfterSync>,
        ticket: Option<Ticket>,
    ) {
        let urgent = after_sync.is_some();
        let job = Job {
            files,
            after_sync,
            _ticket: ticket,
        };
        if let Err(job) = self.0.persist.push(job, urgent) {
            write_batch(vec![job]);
        }
    }

    /// The log thread's batch: log the outputs in one synced write, let the
    /// statuses go, then leave the sandboxes to the persister.
    fn log_batch(&self, log: &OutputLog, batch: Vec<Waiting>) {
        let records: Vec<Logged<'_>> = batch
            .iter()
            .map(|(files, _)| Logged {
                task_id: files.dirs.task_id(),
                stdout: files.stdout.memory_bytes(),
                stderr: files.stderr.memory_bytes(),
            })
            .collect();
        match log.append(&records) {
            Ok(tickets) => {
                drop(records);
                for ((files, after_sync), ticket) in batch.into_iter().zip(tickets) {
                    after_sync();
                    self.persist(files, None, Some(ticket));
                }
            }
            Err(e) => {
                drop(records);
                tracing::warn!(error = %e, "cannot append to the output log; syncing the sandboxes instead");
                let jobs = batch
                    .into_iter()
                    .map(|(files, after_sync)| Job {
                        files,
                        after_sync: Some(after_sync),
                        _ticket: None,
                    })
                    .collect();
                write_batch(jobs);
            }
        }
    }
}

/// Writes a batch of sandboxes, then, if anything waits for them, syncs
/// the file system once and lets the waiters go.
fn write_batch(batch: Vec<Job>) {
    let mut waiting = Vec::new();
    let mut any: Option<Arc<TaskFiles>> = None;
    for job in batch {
        job.files.persist();
        if let Some(after_sync) = job.after_sync {
            waiting.push(after_sync);
            any = Some(job.files);
        }
    }
    if let Some(files) = any {
        if let Err(e) = files.dirs.sync_file_system() {
            // The statuses still go: holding them forever would lose more.
            tracing::warn!(error = %e, "cannot sync the sandboxes to the disk");
        }
        waiting.into_iter().for_each(|f| f());
    }
}

/// The persister thread of one executor (and, with an output log, the
/// thread that appends to it). Dropping it writes what is queued and stops
/// the threads.
pub struct Persister {
    queue: PersistQueue,
    persist_thread: Option<JoinHandle<()>>,
    log_thread: Option<JoinHandle<()>>,
}

impl Persister {
    /// Starts the thread(s): with `log`, terminal statuses that wait for
    /// their outputs wait for the log, not for their sandboxes.
    pub fn start(log: Option<OutputLog>) -> io::Result<Self> {
        let queue = PersistQueue(Arc::new(Inner {
            persist: Lane::new(),
            log: log.map(|log| (Arc::new(log), Lane::new())),
        }));
        let q = queue.clone();
        let persist_thread = std::thread::Builder::new()
            .name("wasmos-persist".into())
            .spawn(move || {
                let log = q.0.log.as_ref().map(|(log, _)| log.clone());
                q.0.persist.run(|batch| {
                    write_batch(batch);
                    if let Some(log) = &log
                        && let Err(e) = log.retire()
                    {
                        tracing::warn!(error = %e, "cannot retire output log segments");
                    }
                })
            })?;
        let _ = queue.0.persist.thread.set(persist_thread.thread().clone());
        let log_thread = match &queue.0.log {
            Some((_, lane)) => {
                let q = queue.clone();
                let thread = std::thread::Builder::new()
                    .name("wasmos-outlog".into())
                    .spawn(move || {
                        let (log, lane) = q.0.log.as_ref().unwrap();
                        lane.run(|batch| q.log_batch(log, batch))
                    })?;
                let _ = lane.thread.set(thread.thread().clone());
                Some(thread)
            }
            None => None,
        };
        Ok(Self {
            queue,
            persist_thread: Some(persist_thread),
            log_thread,
        })
    }

    /// Where tasks hand their files.
    pub fn queue(&self) -> PersistQueue {
        self.queue.clone()
    }
}

impl Drop for Persister {
    fn drop(&mut self) {
        // The log first: what it hands on goes to the persister.
        if let (Some(thread), Some((_, lane))) = (self.log_thread.take(), &self.queue.0.log) {
            lane.stop(thread);
        }
        if let Some(thread) = self.persist_thread.take() {
            self.queue.0.persist.stop(thread);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_tasks_reach_the_disk_and_reads_never_see_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sandboxes")).unwrap();
        let handle = Arc::new(std::fs::File::open(dir.path().join("sandboxes")).unwrap());
        let persister = Persister::start(None).unwrap();
        let all: Vec<Arc<TaskFiles>> = (0..200)
            .map(|i| {
                let f = Arc::new(TaskFiles::new(
                    dir.path(),
                    handle.clone(),
                    &format!("t{i}"),
                    100,
                ));
                f.stdout.write_bytes(format!("out {i}").as_bytes());
                f
            })
            .collect();
        for f in &all {
            persister.queue().submit(f.clone(), None);
        }
        // Whether or not the persister got to it, a read answers the same.
        let read = |f: &TaskFiles| match f.read_pending(&SandboxFile::Stdout, 0, 100) {
            Some(r) => r.unwrap().0,
            None => std::fs::read(&f.dirs.paths.stdout).unwrap(),
        };
        assert_eq!(read(&all[7]), b"out 7");
        drop(persister); // writes what is left
        for (i, f) in all.iter().enumerate() {
            assert!(f.read_pending(&SandboxFile::Stdout, 0, 1).is_none());
            assert_eq!(read(f), format!("out {i}").as_bytes());
            assert!(f.dirs.paths.dir.is_dir() && !f.dirs.paths.root.exists());
        }
    }

    #[test]
    fn a_removed_sandbox_is_never_written_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sandboxes")).unwrap();
        let handle = Arc::new(std::fs::File::open(dir.path().join("sandboxes")).unwrap());
        let f = TaskFiles::new(dir.path(), handle, "gone", 100);
        f.stdout.write_bytes(b"x");
        f.discard();
        f.persist();
        assert!(!f.dirs.paths.dir.exists());
    }
}
