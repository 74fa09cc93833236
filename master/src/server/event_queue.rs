//! A framework's event queue, bounded in bytes as well as in events.
//!
//! The actor never waits on a framework: it puts events on the queue and
//! moves on. A framework that stops reading (or reads slower than its
//! events come) would make that queue hold any amount of memory, so the
//! queue counts the bytes it holds, and an event that would pass the limit
//! closes the stream instead: the framework gets RESOURCE_EXHAUSTED naming
//! the reason, and can re-subscribe (and reconcile) to catch up.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use prost::Message;
use tonic::Status;
use wasmos_proto::v1;

/// Events one framework's queue holds at most.
pub const QUEUE_EVENTS: usize = 8192;

type Item = Result<v1::Event, Status>;

/// What the two ends share.
struct Shared {
    state: Mutex<State>,
    limit: usize,
    reader: AtomicWaker,
}

#[derive(Default)]
struct State {
    events: VecDeque<(usize, Item)>,
    /// Encoded bytes of `events`.
    bytes: usize,
    /// Why the actor closed the queue, for the reader's last word.
    closed: Option<String>,
    /// The actor let go (the stream is to end after what is queued).
    sender_gone: bool,
    /// The stream ended: nothing more is queued.
    reader_gone: bool,
}

/// The actor's end.
pub struct EventSender {
    shared: Arc<Shared>,
}

/// The stream's end.
pub struct EventReceiver {
    shared: Arc<Shared>,
    ended: bool,
}

/// A queue holding at most `limit_bytes` of encoded events (and
/// [`QUEUE_EVENTS`] events).
pub fn queue(limit_bytes: usize) -> (EventSender, EventReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        limit: limit_bytes,
        reader: AtomicWaker::new(),
    });
    (
        EventSender {
            shared: shared.clone(),
        },
        EventReceiver {
            shared,
            ended: false,
        },
    )
}

impl EventSender {
    /// Queues `event` at once, or says why the stream must be closed (it
    /// fell too far behind, or it is gone). A queue closed for falling
    /// behind drops what it holds at once: its memory goes now, not when
    /// (or if) the framework reads again.
    pub fn try_send(&self, event: Item) -> Result<(), String> {
        let bytes = event.as_ref().map_or(0, |e| e.encoded_len());
        let mut state = self.shared.state.lock().expect("not poisoned");
        if state.reader_gone {
            return Err("the stream is gone".into());
        }
        if let Some(why) = &state.closed {
            return Err(why.clone());
        }
        let why = if state.bytes + bytes > self.shared.limit {
            format!(
                "the framework fell behind: {} bytes of events unread, the limit is {} \
                 (wasmos master --max-stream-bytes); re-subscribe and reconcile to catch up",
                state.bytes, self.shared.limit
            )
        } else if state.events.len() >= QUEUE_EVENTS {
            format!(
                "the framework fell behind: {QUEUE_EVENTS} events unread; \
                 re-subscribe and reconcile to catch up"
            )
        } else {
            state.bytes += bytes;
            state.events.push_back((bytes, event));
            drop(state);
            self.shared.reader.wake();
            return Ok(());
        };
        state.events = VecDeque::new();
        state.bytes = 0;
        state.closed = Some(why.clone());
        drop(state);
        self.shared.reader.wake();
        Err(why)
    }
}

impl Drop for EventSender {
    fn drop(&mut self) {
        self.shared.state.lock().expect("not poisoned").sender_gone = true;
        self.shared.reader.wake();
    }
}

impl EventReceiver {
    /// The next event; once the actor let go, the reason it closed the
    /// queue (if it did), then the end.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        self.shared.reader.register(cx.waker());
        let mut state = self.shared.state.lock().expect("not poisoned");
        if let Some(why) = state.closed.take() {
            self.ended = true;
            state.reader_gone = true;
            return Poll::Ready(Some(Err(Status::resource_exhausted(why))));
        }
        match state.events.pop_front() {
            Some((bytes, event)) => {
                state.bytes -= bytes;
                Poll::Ready(Some(event))
            }
            None if state.sender_gone => {
                self.ended = true;
                Poll::Ready(None)
            }
            None => Poll::Pending,
        }
    }

    /// Stops taking events (the credential ended): the actor's next send
    /// fails and it lets go; what is queued is dropped.
    pub fn close(&mut self) {
        let mut state = self.shared.state.lock().expect("not poisoned");
        state.reader_gone = true;
        state.events = VecDeque::new();
        state.bytes = 0;
    }
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn updates(n: usize) -> v1::Event {
        v1::Event {
            kind: Some(v1::event::Kind::Updates(v1::Updates {
                statuses: (0..n)
                    .map(|i| v1::TaskStatus {
                        task_id: format!("t{i}"),
                        ..Default::default()
                    })
                    .collect(),
            })),
        }
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_is_closed_with_the_reason_and_the_memory_freed() {
        let (tx, mut rx) = queue(10_000);
        let mut sent = 0;
        let why = loop {
            match tx.try_send(Ok(updates(50))) {
                Ok(()) => sent += 1,
                Err(why) => break why,
            }
        };
        assert!(sent > 0 && why.contains("fell behind"), "{why}");
        let status = std::future::poll_fn(|cx| rx.poll_recv(cx))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("10000"), "{status}");
        assert!(std::future::poll_fn(|cx| rx.poll_recv(cx)).await.is_none());
    }

    #[tokio::test]
    async fn a_reader_that_keeps_up_gets_everything() {
        let (tx, mut rx) = queue(10_000);
        for _ in 0..1000 {
            tx.try_send(Ok(updates(50))).unwrap();
            let event = std::future::poll_fn(|cx| rx.poll_recv(cx)).await.unwrap();
            assert!(event.is_ok());
        }
        assert_eq!(rx.shared.state.lock().unwrap().bytes, 0);
        drop(tx);
        assert!(std::future::poll_fn(|cx| rx.poll_recv(cx)).await.is_none());
    }
}
