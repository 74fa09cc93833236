//! [`CancelHandle`]: stops a running job from anywhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Stops a running [`Job`](super::Job) from anywhere (a Ctrl-C handler, a timeout).
/// Cancelling kills the job's remaining tasks, waits briefly for their
/// `KILLED` updates, tears the framework down and makes `run` return a
/// report with `cancelled: true`. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct CancelHandle {
    inner: Arc<(AtomicBool, Notify)>,
}

impl CancelHandle {
    /// Asks the job to stop. Idempotent.
    pub fn cancel(&self) {
        self.inner.0.store(true, Ordering::SeqCst);
        self.inner.1.notify_waiters();
    }

    /// Has [`CancelHandle::cancel`] been called?
    pub fn is_cancelled(&self) -> bool {
        self.inner.0.load(Ordering::SeqCst)
    }

    pub(super) async fn cancelled(&self) {
        loop {
            let notified = self.inner.1.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}
