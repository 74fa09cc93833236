//! Batched delivery of statuses from worker threads.
//!
//! Handing a status to a channel whose receiver sleeps wakes that receiver's
//! thread: a system call and a cross-core wake-up that cost more than
//! running a small task. A worker therefore queues the statuses its tasks
//! produce and hands them over in batches: before it parks, after
//! [`MAX_BATCH`] statuses, or once the oldest has waited [`MAX_DELAY`]. The
//! receiver then wakes once per batch instead of once per status. Outside
//! worker threads statuses go straight to their channel.

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
}
