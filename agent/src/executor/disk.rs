//! The `disk` limit: like Mesos' `disk/du` isolator, a thread measures the
//! root directory of every running task at a fixed interval and stops a task
//! whose files pass its cap.
//!
//! WASI writes go through wasmtime-wasi's own file implementation, so there
//! is no cheap hook on each write; a periodic walk costs nothing per write
//! and bounds the overshoot while a task runs to what it can write in one
//! interval (`--disk-check-interval`, 200 ms by default). When the task
//! ends, its root is measured once more, and a task past its cap fails with
//! `REASON_DISK_LIMIT` however short it ran. Inputs count against the cap.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::sandbox::disk_usage;

type OnExceed = Box<dyn Fn(u64) + Send + Sync>;

struct Watched {
    root: PathBuf,
    baseline: u64,
    limit: u64,
    on_exceed: Arc<OnExceed>,
}

struct Inner {
    watched: Mutex<HashMap<u64, Watched>>,
    next_id: AtomicU64,
    shutdown: AtomicBool,
}

/// The disk-usage checker of one executor.
pub struct DiskMonitor {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

/// Keeps a root under watch until dropped.
pub struct Watch {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.inner.watched.lock().unwrap().remove(&self.id);
    }
}

impl DiskMonitor {
    /// Starts the checker thread, measuring every `interval`.
    pub fn start(interval: Duration) -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            watched: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
        });
        let i2 = inner.clone();
        let thread = std::thread::Builder::new()
            .name("wasmos-disk".into())
            .spawn(move || run(i2, interval))?;
        Ok(Self {
            inner,
            thread: Some(thread),
        })
    }

    /// Watches `root`: once the bytes under it exceed `baseline + limit`,
    /// `on_exceed(bytes written)` is called once.
    pub fn watch(&self, root: PathBuf, baseline: u64, limit: u64, on_exceed: OnExceed) -> Watch {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.watched.lock().unwrap().insert(
            id,
            Watched {
                root,
                baseline,
                limit,
                on_exceed: Arc::new(on_exceed),
            },
        );
        Watch {
            inner: self.inner.clone(),
            id,
        }
    }
}

impl Drop for DiskMonitor {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn run(inner: Arc<Inner>, interval: Duration) {
    while !inner.shutdown.load(Ordering::Acquire) {
        std::thread::park_timeout(interval);
        let snapshot: Vec<(u64, PathBuf, u64, u64)> = inner
            .watched
            .lock()
            .unwrap()
            .iter()
            .map(|(id, w)| (*id, w.root.clone(), w.baseline, w.limit))
            .collect();
        for (id, root, baseline, limit) in snapshot {
            let written = disk_usage(&root).saturating_sub(baseline);
            if written > limit {
                let removed = inner.watched.lock().unwrap().remove(&id);
                if let Some(w) = removed {
                    (w.on_exceed)(written);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn reports_growth_past_the_limit_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("input"), vec![0u8; 5000]).unwrap();
        let monitor = DiskMonitor::start(Duration::from_millis(10)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let _watch = monitor.watch(
            dir.path().to_path_buf(),
            5000,
            1000,
            Box::new(move |used| tx.send(used).unwrap()),
        );
        std::thread::sleep(Duration::from_millis(50));
        assert!(rx.try_recv().is_err(), "inputs are not counted");
        std::fs::write(dir.path().join("out"), vec![0u8; 1500]).unwrap();
        let t = Instant::now();
        let used = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(used, 1500);
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(50));
        assert!(rx.try_recv().is_err(), "reported once");
    }
}
