//! A task's stdout or stderr: capped in size, kept in memory while it is
//! small, in a file beside the task's root directory (where the task cannot
//! see or change it) once it grows or the task ends.
//!
//! Past the cap, output is dropped and the truncation recorded; a task never
//! fails because it talks too much. Most tasks print a few lines: holding
//! those in memory keeps the file system (a directory, an open, a write, a
//! close: more than running a small task costs) off the worker thread.
//! Output past [`SPILL_BYTES`] goes to the file as it is written, so a long
//! task's output can be followed on disk; until then reads are served from
//! memory ([`CappedOutput::read_pending`]). Either way the whole output is
//! on disk shortly after the task ends ([`super::persist`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::SandboxDirs;

/// Output kept in memory before it goes to its file: 64 KiB.
pub const SPILL_BYTES: usize = 64 << 10;

/// What a capped output saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutputUsage {
    /// Bytes the task wrote, including dropped ones.
    pub bytes: u64,
    /// True once output passed the cap.
    pub truncated: bool,
}

enum Sink {
    /// Not on disk yet. `full` once spilling failed: later output is
    /// dropped.
    Memory { data: Vec<u8>, full: bool },
    /// Spilled: appending to the file.
    File(File),
    /// Closed: what was kept is in the file (or there was nothing).
    OnDisk,
}

struct Inner {
    path: PathBuf,
    cap: u64,
    dirs: Arc<SandboxDirs>,
    sink: Mutex<Sink>,
    written: AtomicU64,
    truncated: AtomicBool,
}

/// A size-capped output; cheap to clone (all clones share it).
#[derive(Clone)]
pub struct CappedOutput(Arc<Inner>);

impl CappedOutput {
    /// Output for the file `path` of the sandbox `dirs`, keeping at most
    /// `cap` bytes.
    pub fn new(path: PathBuf, cap: u64, dirs: Arc<SandboxDirs>) -> Self {
        Self(Arc::new(Inner {
            path,
            cap,
            dirs,
            sink: Mutex::new(Sink::Memory {
                data: Vec::new(),
                full: false,
            }),
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
        let buf = &buf[..keep];
        let mut sink = self.0.sink.lock().unwrap();
        let spilled = match &mut *sink {
            Sink::Memory { full: true, .. } | Sink::OnDisk => Err(()),
            Sink::Memory { data, .. } if data.len() + buf.len() <= SPILL_BYTES => {
                data.extend_from_slice(buf);
                return;
            }
            Sink::Memory { data, full } => match self.spill(data, buf) {
                Ok(file) => Ok(Some(file)),
                Err(e) => {
                    tracing::warn!(path = %self.0.path.display(), error = %e, "cannot write task output");
                    *full = true;
                    Err(())
                }
            },
            Sink::File(f) => f.write_all(buf).map(|()| None).map_err(|_| ()),
        };
        match spilled {
            Ok(Some(file)) => *sink = Sink::File(file),
            Ok(None) => {}
            Err(()) => self.0.truncated.store(true, Ordering::Relaxed),
        }
    }

    /// Moves the output to its file: creates the sandbox's directories if
    /// needed, writes what memory held and `more`.
    fn spill(&self, held: &[u8], more: &[u8]) -> std::io::Result<File> {
        self.0.dirs.ensure()?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.0.path)?;
        file.write_all(held)?;
        file.write_all(more)?;
        Ok(file)
    }

    /// Writes what is still in memory to the file and closes it; later
    /// reads go to disk. The sandbox's directories must exist.
    pub fn persist(&self) -> std::io::Result<()> {
        let mut sink = self.0.sink.lock().unwrap();
        if let Sink::Memory { data, .. } = &*sink
            && !data.is_empty()
        {
            std::fs::write(&self.0.path, data)?;
        }
        *sink = Sink::OnDisk;
        Ok(())
    }

    /// The first `n` bytes kept: from memory, or from the file once the
    /// output went there (empty if it cannot be read).
    pub fn head(&self, n: usize) -> Vec<u8> {
        if let Sink::Memory { data, .. } = &*self.0.sink.lock().unwrap() {
            return data[..n.min(data.len())].to_vec();
        }
        let mut head = Vec::with_capacity(n);
        if let Ok(file) = File::open(&self.0.path) {
            let _ = file.take(n as u64).read_to_end(&mut head);
        }
        head
    }

    /// What is held in memory (empty once on disk).
    pub fn memory_bytes(&self) -> Vec<u8> {
        match &*self.0.sink.lock().unwrap() {
            Sink::Memory { data, .. } => data.clone(),
            _ => Vec::new(),
        }
    }

    /// Forgets what is in memory; reads go to disk from now on.
    pub fn discard(&self) {
        *self.0.sink.lock().unwrap() = Sink::OnDisk;
    }

    /// True while the output is in memory only.
    pub fn is_pending(&self) -> bool {
        matches!(*self.0.sink.lock().unwrap(), Sink::Memory { .. })
    }

    /// Up to `max` bytes from `offset` and the total size, if the output is
    /// still in memory (`None`: read the file).
    pub fn read_pending(&self, offset: u64, max: usize) -> Option<(Vec<u8>, u64)> {
        match &*self.0.sink.lock().unwrap() {
            Sink::Memory { data, .. } => {
                let start = (offset.min(data.len() as u64)) as usize;
                let end = start.saturating_add(max).min(data.len());
                Some((data[start..end].to_vec(), data.len() as u64))
            }
            _ => None,
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

    fn output(dir: &std::path::Path, cap: u64) -> (CappedOutput, Arc<SandboxDirs>) {
        std::fs::create_dir_all(dir.join("sandboxes")).unwrap();
        let handle = Arc::new(File::open(dir.join("sandboxes")).unwrap());
        let dirs = Arc::new(SandboxDirs::new(dir, handle, "t"));
        let path = dirs.paths.stdout.clone();
        (CappedOutput::new(path, cap, dirs.clone()), dirs)
    }

    #[test]
    fn the_head_comes_from_memory_then_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (out, dirs) = output(dir.path(), 1 << 20);
        out.write_bytes(b"first line\n");
        assert_eq!(out.head(5), b"first");
        assert_eq!(out.head(100), b"first line\n");
        // Past the spill size the output is on disk; the head still reads.
        out.write_bytes(&vec![b'x'; SPILL_BYTES]);
        assert!(!out.is_pending());
        assert_eq!(out.head(12), b"first line\nx");
        dirs.ensure().unwrap();
        out.persist().unwrap();
        assert_eq!(out.head(4), b"firs");
    }

    #[test]
    fn keeps_the_first_cap_bytes_and_counts_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (out, dirs) = output(dir.path(), 10);
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
        assert!(!dirs.paths.dir.exists(), "small output stays in memory");
        assert_eq!(
            out.read_pending(0, 100).unwrap(),
            (b"hello worl".to_vec(), 10)
        );
        assert_eq!(out.read_pending(6, 2).unwrap().0, b"wo");
        dirs.ensure().unwrap();
        out.persist().unwrap();
        assert!(out.read_pending(0, 100).is_none(), "read from disk now");
        assert_eq!(std::fs::read(&dirs.paths.stdout).unwrap(), b"hello worl");
        assert_eq!(
            out.usage(),
            OutputUsage {
                bytes: 22,
                truncated: true
            }
        );
    }

    #[test]
    fn large_output_spills_to_its_file_as_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (out, dirs) = output(dir.path(), 1 << 20);
        let line = vec![b'x'; 1000];
        for _ in 0..(SPILL_BYTES / 1000) {
            out.write_bytes(&line);
        }
        assert!(out.is_pending() && !dirs.created());
        out.write_bytes(&line);
        assert!(!out.is_pending() && dirs.created(), "spilled");
        let on_disk = std::fs::metadata(&dirs.paths.stdout).unwrap().len();
        assert_eq!(on_disk, (SPILL_BYTES / 1000 * 1000 + 1000) as u64);
        out.write_bytes(b"tail");
        out.persist().unwrap();
        assert_eq!(
            std::fs::metadata(&dirs.paths.stdout).unwrap().len(),
            on_disk + 4
        );
    }
}
