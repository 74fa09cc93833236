//! A task's stdout or stderr: a file beside its root directory (where the
//! task cannot see or change it), capped in size.
//!
//! Past the cap, output is dropped and the truncation recorded; a task never
//! fails because it talks too much. Writes go straight to the file, so the
//! output can be read while the task runs. The file is created on the first
//! write: most tasks that write nothing cost no file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// What a capped output saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutputUsage {
    /// Bytes the task wrote, including dropped ones.
    pub bytes: u64,
    /// True once output passed the cap.
    pub truncated: bool,
}

struct Inner {
    path: PathBuf,
    cap: u64,
    file: Mutex<Option<File>>,
    written: AtomicU64,
    truncated: AtomicBool,
}

/// A size-capped output file; cheap to clone (all clones share the file).
#[derive(Clone)]
pub struct CappedOutput(Arc<Inner>);

impl CappedOutput {
    /// Output to `path` (created on first write), keeping at most `cap` bytes.
    pub fn new(path: PathBuf, cap: u64) -> Self {
        Self(Arc::new(Inner {
            path,
            cap,
            file: Mutex::new(None),
            written: AtomicU64::new(0),
            truncated: AtomicBool::new(false),
        }))
    }

    /// Bytes written so far and whether any were dropped.
    pub fn usage(&self) -> OutputUsage {
        OutputUsage {
            bytes: self.0.written.load(Ordering::Relaxed),
            truncated: self.0.truncated.load(Ordering::Relaxed),
        }
    }

    /// Appends what fits under the cap. I/O errors on the host side (disk
    /// full, ...) drop the output like the cap does: the task's output is
    /// best effort, its execution is not.
    pub fn write_bytes(&self, buf: &[u8]) {
        let before = self
            .0
            .written
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        let room = self.0.cap.saturating_sub(before);
        let keep = room.min(buf.len() as u64) as usize;
        if keep < buf.len() {
            self.0.truncated.store(true, Ordering::Relaxed);
        }
        if keep == 0 {
            return;
        }
        let mut file = self.0.file.lock().unwrap();
        if file.is_none() {
            match OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.0.path)
            {
                Ok(f) => *file = Some(f),
                Err(e) => {
                    tracing::warn!(path = %self.0.path.display(), error = %e, "cannot open task output");
                    self.0.truncated.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
        if let Some(f) = file.as_mut()
            && f.write_all(&buf[..keep]).is_err()
        {
            self.0.truncated.store(true, Ordering::Relaxed);
        }
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(1 << 20)
    }
}

impl tokio::io::AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_cap_bytes_and_counts_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout");
        let out = CappedOutput::new(path.clone(), 10);
        assert!(!path.exists(), "created lazily");
        out.write_bytes(b"hello ");
        assert_eq!(
            out.usage(),
            OutputUsage {
                bytes: 6,
                truncated: false
            }
        );
        out.write_bytes(b"world, and more");
        out.write_bytes(b"!");
        assert_eq!(std::fs::read(&path).unwrap(), b"hello worl");
        assert_eq!(
            out.usage(),
            OutputUsage {
                bytes: 22,
                truncated: true
            }
        );
    }
}
