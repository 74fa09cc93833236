//! Task statuses as they leave the executor: `wasmos.v1.TaskStatus`, each
//! with a fresh uuid for acknowledgement, so the cluster link can forward
//! them verbatim. Also the one place that maps how a task ended
//! ([`Outcome`]) to a state, a reason and a message.

/// The head of its stdout a task's terminal status carries.
const STDOUT_HEAD_BYTES: usize = 4096;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::UnboundedSender;
use wasmos_proto::v1::{Reason, StatusSource, TaskState, TaskStatus, TaskUsage};

use crate::sandbox::persist::{PersistQueue, TaskFiles};

/// How a task ended (or why it never started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exit code 0, or `_start` returned.
    Finished,
    /// `proc_exit` with a non-zero code.
    ExitNonzero(i32),
    /// A trap, or a WASI call the program made wrongly (a bad pointer or
    /// length); the message carries the wasm backtrace.
    Trap(String),
    /// `max_fuel` ran out.
    OutOfFuel(u64),
    /// The `mem` cap refused a grow or the initial memory.
    MemoryLimit(String),
    /// The wall-clock `timeout_ms` passed.
    Timeout(u64),
    /// Killed on request.
    Killed,
    /// Files in the root passed the `disk` cap.
    DiskLimit {
        /// Bytes the task had written when it was stopped.
        used: u64,
        /// The cap.
        limit: u64,
    },
    /// The module is not a valid WASI preview 1 command.
    InvalidModule(String),
    /// The spec itself is invalid.
    InvalidTask(String),
    /// The module or an input could not be fetched or had the wrong digest.
    ArtifactUnavailable(String),
    /// The agent failed on its side (I/O error, pool exhausted, ...).
    AgentError(String),
}

impl Outcome {
    /// State, reason and message of a terminal status for this outcome.
    pub fn describe(&self) -> (TaskState, Reason, String) {
        use Outcome::*;
        match self {
            Finished => (TaskState::Finished, Reason::Unspecified, "finished".into()),
            ExitNonzero(code) => (
                TaskState::Failed,
                Reason::ExitNonzero,
                format!("exited with code {code}"),
            ),
            Trap(msg) => (TaskState::Failed, Reason::Trap, msg.clone()),
            OutOfFuel(fuel) => (
                TaskState::Failed,
                Reason::OutOfFuel,
                format!("used all of its max_fuel ({fuel})"),
            ),
            MemoryLimit(msg) => (TaskState::Failed, Reason::MemoryLimit, msg.clone()),
            Timeout(ms) => (
                TaskState::Failed,
                Reason::Timeout,
                format!("still running after its timeout of {ms} ms"),
            ),
            Killed => (
                TaskState::Killed,
                Reason::Killed,
                "killed on request".into(),
            ),
            DiskLimit { used, limit } => (
                TaskState::Failed,
                Reason::DiskLimit,
                format!("wrote {used} bytes of files, over its disk limit of {limit} bytes"),
            ),
            InvalidModule(msg) => (TaskState::Error, Reason::InvalidModule, msg.clone()),
            InvalidTask(msg) => (TaskState::Error, Reason::InvalidTask, msg.clone()),
            ArtifactUnavailable(msg) => {
                (TaskState::Failed, Reason::ArtifactUnavailable, msg.clone())
            }
            AgentError(msg) => (TaskState::Failed, Reason::AgentError, msg.clone()),
        }
    }
}

/// A random (version 4) uuid from the thread's userspace CSPRNG: no system
/// call per status, which matters at tens of thousands of statuses a second.
fn fresh_uuid() -> Vec<u8> {
    let bytes: [u8; 16] = rand::random();
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .as_bytes()
        .to_vec()
}

/// True for states a task never leaves.
pub fn is_terminal(state: TaskState) -> bool {
    state.is_terminal()
}

/// Sends one task's statuses and remembers its latest state. If it is
/// dropped before a terminal status was sent (the agent shut down, or a bug
/// made the task panic), it sends `FAILED`/`REASON_AGENT_ERROR`, so that no
/// task is left without an end.
pub struct Reporter {
    tx: UnboundedSender<TaskStatus>,
    task_id: String,
    framework_id: String,
    agent_id: String,
    latest: Arc<Mutex<TaskState>>,
    done: bool,
    write_behind: Option<WriteBehind>,
    /// The executor's count of tasks not ended, less one at this end.
    open: Option<Arc<AtomicUsize>>,
}

/// Where a task's files go when it ends, and whether its terminal status
/// waits for them to be synced.
struct WriteBehind {
    files: Arc<TaskFiles>,
    queue: PersistQueue,
    durable: bool,
}

impl Reporter {
    /// A reporter for one task, writing its latest state into `latest`.
    pub fn new(
        tx: UnboundedSender<TaskStatus>,
        task_id: String,
        framework_id: String,
        agent_id: String,
        latest: Arc<Mutex<TaskState>>,
    ) -> Self {
        Self {
            tx,
            task_id,
            framework_id,
            agent_id,
            latest,
            done: false,
            write_behind: None,
            open: None,
        }
    }

    /// Counts the task in `open` (already counted by the caller) until its
    /// terminal status is sent.
    pub fn counted_in(mut self, open: Arc<AtomicUsize>) -> Self {
        self.open = Some(open);
        self
    }

    /// Hands the task's files to the write-behind when the task ends,
    /// however it ends. With `durable` the terminal status goes with them
    /// and leaves only once they are synced to the disk.
    pub fn write_behind(&mut self, files: Arc<TaskFiles>, queue: PersistQueue, durable: bool) {
        self.write_behind = Some(WriteBehind {
            files,
            queue,
            durable,
        });
    }

    /// Sends a non-terminal state (`STARTING`, `RUNNING`).
    pub fn progress(&mut self, state: TaskState, message: &str) {
        self.send(state, Reason::Unspecified, message.to_owned(), None, None);
    }

    /// Sends the terminal status for `outcome`.
    pub fn finish(&mut self, outcome: &Outcome, usage: TaskUsage) {
        let (state, reason, message) = outcome.describe();
        let exit_code = match outcome {
            Outcome::Finished => Some(0),
            Outcome::ExitNonzero(code) => Some(*code),
            _ => None,
        };
        self.send(state, reason, message, exit_code, Some(usage));
    }

    fn send(
        &mut self,
        state: TaskState,
        reason: Reason,
        message: String,
        exit_code: Option<i32>,
        usage: Option<TaskUsage>,
    ) {
        if self.done {
            return;
        }
        self.done = is_terminal(state);
        *self.latest.lock().unwrap() = state;
        if self.done
            && let Some(open) = &self.open
        {
            let before = open.fetch_sub(1, Ordering::AcqRel);
            debug_assert!(before > 0, "a task ended that was never counted");
        }
        if self.done {
            // Its STARTING and RUNNING, if still queued, say nothing the
            // end does not.
            super::outbox::supersede(&self.task_id);
        }
        let status = TaskStatus {
            task_id: self.task_id.clone(),
            framework_id: self.framework_id.clone(),
            agent_id: self.agent_id.clone(),
            state: state as i32,
            reason: reason as i32,
            message,
            exit_code,
            usage,
            uuid: fresh_uuid(),
            timestamp_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            source: StatusSource::Agent as i32,
            agent_recovering: false,
            stdout_head: Vec::new(),
        };
        let write_behind = if self.done {
            self.write_behind.take()
        } else {
            None
        };
        let mut status = status;
        if let Some(w) = &write_behind {
            // What it printed outlives its sandbox (the job service keeps it).
            status.stdout_head = w.files.stdout.head(STDOUT_HEAD_BYTES);
        }
        match write_behind {
            Some(w) if w.durable => {
                let tx = self.tx.clone();
                w.queue.submit(
                    w.files,
                    Some(Box::new(move || {
                        let _ = tx.send(status);
                    })),
                );
            }
            Some(w) => {
                super::outbox::send(&self.tx, status);
                w.queue.submit(w.files, None);
            }
            None => super::outbox::send(&self.tx, status),
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if !self.done {
            let outcome = Outcome::AgentError(
                "the task was stopped by the agent without a result (agent shutdown or internal error)"
                    .into(),
            );
            self.finish(&outcome, TaskUsage::default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_a_fresh_uuid_and_one_terminal_state() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let latest = Arc::new(Mutex::new(TaskState::Staging));
        let mut r = Reporter::new(tx, "t".into(), "f".into(), "a".into(), latest.clone());
        r.progress(TaskState::Starting, "");
        r.finish(&Outcome::ExitNonzero(3), TaskUsage::default());
        r.finish(&Outcome::Finished, TaskUsage::default()); // ignored
        drop(r); // no extra AGENT_ERROR: a terminal status went out
        let a = rx.try_recv().unwrap();
        let b = rx.try_recv().unwrap();
        assert!(rx.try_recv().is_err());
        assert_eq!(a.uuid.len(), 16);
        assert_eq!(
            uuid::Uuid::from_slice(&a.uuid).unwrap().get_version_num(),
            4
        );
        assert_ne!(a.uuid, b.uuid);
        assert_eq!(b.state(), TaskState::Failed);
        assert_eq!(b.reason(), Reason::ExitNonzero);
        assert_eq!(b.exit_code, Some(3));
        assert_eq!(*latest.lock().unwrap(), TaskState::Failed);
    }

    #[test]
    fn on_a_worker_thread_an_end_supersedes_its_queued_progress() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                crate::executor::outbox::enable();
                let latest = Arc::new(Mutex::new(TaskState::Staging));
                let mut r = Reporter::new(tx.clone(), "t".into(), "f".into(), "a".into(), latest);
                r.progress(TaskState::Starting, "");
                r.progress(TaskState::Running, "");
                r.finish(&Outcome::Finished, TaskUsage::default());
                crate::executor::outbox::flush(true);
            });
        });
        let states: Vec<TaskState> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|s| s.state())
            .collect();
        assert_eq!(states, [TaskState::Finished]);
    }

    #[test]
    fn a_dropped_reporter_ends_the_task() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let latest = Arc::new(Mutex::new(TaskState::Staging));
        let mut r = Reporter::new(tx, "t".into(), "f".into(), "".into(), latest);
        r.progress(TaskState::Running, "");
        drop(r);
        let _running = rx.try_recv().unwrap();
        let end = rx.try_recv().unwrap();
        assert_eq!(end.reason(), Reason::AgentError);
    }
}
