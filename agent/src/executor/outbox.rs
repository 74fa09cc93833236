//! Batched delivery of statuses from worker threads.
//!
//! Handing a status to a channel whose receiver sleeps wakes that receiver's
//! thread: a system call and a cross-core wake-up that cost more than
//! running a small task. A worker therefore queues the statuses its tasks
//! produce and hands them over in batches: before it parks, after
//! [`MAX_BATCH`] statuses, or once the oldest has waited [`MAX_DELAY`]. The
//! receiver then wakes once per batch instead of once per status. Outside
//! worker threads statuses go straight to their channel.
//!
//! A task that ends while its `STARTING` and `RUNNING` still wait here
//! drops them ([`supersede`]): its end says all they would. Such a task
//! costs one update on every hop (the checkpoint, the agent, the master's
//! registry, the framework, and the acknowledgement back) instead of three.
//! A task that runs longer than a batch reports them as before.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use wasmos_proto::v1::TaskStatus;

/// Most statuses held before a flush.
pub const MAX_BATCH: usize = 256;
/// Longest a status waits in the outbox.
pub const MAX_DELAY: Duration = Duration::from_millis(1);

struct Outbox {
    queue: Vec<(UnboundedSender<TaskStatus>, TaskStatus)>,
    oldest: Option<Instant>,
}

thread_local! {
    static OUTBOX: RefCell<Option<Outbox>> = const { RefCell::new(None) };
}

/// Makes the calling thread batch statuses (worker threads call this once).
pub fn enable() {
    OUTBOX.with(|o| {
        *o.borrow_mut() = Some(Outbox {
            queue: Vec::new(),
            oldest: None,
        })
    });
}

/// Sends `status` now, or queues it on a worker thread.
pub fn send(tx: &UnboundedSender<TaskStatus>, status: TaskStatus) {
    let rejected = OUTBOX.with(|o| match o.borrow_mut().as_mut() {
        Some(outbox) => {
            outbox.oldest.get_or_insert_with(Instant::now);
            outbox.queue.push((tx.clone(), status));
            None
        }
        None => Some(status),
    });
    if let Some(status) = rejected {
        // A closed channel means nobody listens any more; the task still
        // runs to its end and its sandbox stays readable.
        let _ = tx.send(status);
    }
}

/// Drops the statuses of `task_id` still queued on this thread: the task
/// has ended, and its end, which follows, supersedes them. States only move
/// forward, so no reader can tell the difference from updates overtaken on
/// the way, except that there are fewer of them.
pub fn supersede(task_id: &str) {
    OUTBOX.with(|o| {
        if let Some(outbox) = o.borrow_mut().as_mut() {
            outbox.queue.retain(|(_, s)| s.task_id != task_id);
            if outbox.queue.is_empty() {
                outbox.oldest = None;
            }
        }
    });
}

/// Hands queued statuses over if `force`, or if the batch is full or old.
pub fn flush(force: bool) {
    let batch = OUTBOX.with(|o| {
        let mut o = o.borrow_mut();
        let outbox = o.as_mut()?;
        let due = outbox.queue.len() >= MAX_BATCH
            || outbox.oldest.is_some_and(|t| t.elapsed() >= MAX_DELAY);
        if outbox.queue.is_empty() || !(force || due) {
            return None;
        }
        outbox.oldest = None;
        Some(std::mem::take(&mut outbox.queue))
    });
    for (tx, status) in batch.into_iter().flatten() {
        let _ = tx.send(status);
    }
}

/// When the oldest queued status was queued, if any.
#[cfg(test)]
fn pending_since() -> Option<Instant> {
    OUTBOX.with(|o| o.borrow().as_ref().and_then(|o| o.oldest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmos_proto::v1::TaskState;

    #[test]
    fn worker_threads_batch_and_others_send_at_once() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        send(&tx, TaskStatus::default());
        assert!(rx.try_recv().is_ok(), "not a worker: sent at once");
        std::thread::scope(|s| {
            s.spawn(|| {
                enable();
                send(&tx, TaskStatus::default());
                send(&tx, TaskStatus::default());
                flush(false);
                assert!(pending_since().is_some());
                flush(true);
                assert!(pending_since().is_none());
            });
        });
        assert!(rx.try_recv().is_ok() && rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err());
    }

    fn status(task: &str, state: TaskState) -> TaskStatus {
        TaskStatus {
            task_id: task.into(),
            state: state as i32,
            ..Default::default()
        }
    }

    #[test]
    fn an_end_supersedes_only_its_own_tasks_queued_progress() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                enable();
                send(&tx, status("a", TaskState::Starting));
                send(&tx, status("b", TaskState::Starting));
                send(&tx, status("a", TaskState::Running));
                supersede("a");
                send(&tx, status("a", TaskState::Finished));
                flush(true);
                // Nothing queued: a no-op that keeps no stale age.
                supersede("b");
                assert!(pending_since().is_none());
            });
        });
        let got: Vec<(String, TaskState)> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|s| (s.task_id.clone(), s.state()))
            .collect();
        assert_eq!(
            got,
            [
                ("b".to_string(), TaskState::Starting),
                ("a".to_string(), TaskState::Finished)
            ]
        );
    }

    #[test]
    fn what_was_handed_over_stays_handed_over() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                enable();
                send(&tx, status("a", TaskState::Starting));
                flush(true);
                supersede("a");
                send(&tx, status("a", TaskState::Failed));
                flush(true);
            });
        });
        let states: Vec<TaskState> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|s| s.state())
            .collect();
        assert_eq!(states, [TaskState::Starting, TaskState::Failed]);
    }
}
