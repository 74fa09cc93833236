//! The output log: durable outputs without a sync per sandbox.
//!
//! With durable outputs a task's terminal status may leave the executor
//! only once its stdout and stderr would survive a crash. Writing and
//! syncing its sandbox first would cost a `mkdir`, two files and a sync of
//! the file system per batch, and tie every status to the disk's pace. A
//! task that could touch no file has nothing on disk but those two outputs,
//! so they are appended to this log instead, a whole batch in one write and
//! one `fdatasync`, and the sandbox is written behind as usual.
//!
//! ```text
//! <work_dir>/outputs/<segment>.log   frames (crate::frames) of one OutputRecord each
//! ```
//!
//! A segment is closed past [`SEGMENT_BYTES`] and deleted once every
//! sandbox in it was written and the file system synced after. On start,
//! what segments remain (a crash came first) are written into their
//! sandboxes, synced, and deleted: reads never see the difference. A torn
//! record at a segment's end (the crash hit the append) is dropped: its
//! statuses never left.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prost::Message;
use wasmos_proto::v1;

use super::{Sandbox, sync_file_system};

/// A segment is closed (and can go) once it holds this much.
pub const SEGMENT_BYTES: u64 = 4 << 20;

/// One segment file and how many of its sandboxes are not written yet.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    outstanding: AtomicUsize,
}

/// A logged task whose sandbox is not written yet; dropped once it is (or
/// it never will be).
#[derive(Debug)]
pub struct Ticket(Arc<Segment>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Active {
    file: File,
    segment: Arc<Segment>,
    bytes: u64,
    next: u64,
    closed: Vec<Arc<Segment>>,
}

/// The output log of one work dir.
pub struct OutputLog {
    dir: PathBuf,
    /// `<work_dir>/sandboxes`, open (for `syncfs`).
    sandboxes: File,
    active: Mutex<Active>,
}

/// One task's outputs, as logged.
pub struct Logged<'a> {
    pub task_id: &'a str,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl OutputLog {
    /// Opens the log of `work_dir`, first writing what an earlier executor
    /// left in it into its sandboxes. Returns the log and how many
    /// sandboxes it wrote.
    pub fn open(work_dir: &Path) -> io::Result<(OutputLog, usize)> {
        let dir = work_dir.join("outputs");
        std::fs::create_dir_all(&dir)?;
        let sandboxes_dir = work_dir.join("sandboxes");
        std::fs::create_dir_all(&sandboxes_dir)?;
        let sandboxes = wasmos_platform::private::open_dir(&sandboxes_dir)?;
        let segments = list_segments(&dir)?;
        let mut restored = 0;
        for path in segments.values() {
            for record in read_segment(path)? {
                restore(work_dir, &sandboxes, &record)?;
                restored += 1;
            }
        }
        if !segments.is_empty() {
            sync_file_system(&sandboxes)?;
            for path in segments.values() {
                std::fs::remove_file(path)?;
            }
        }
        let next = segments.keys().next_back().map_or(0, |n| n + 1);
        let (file, segment) = new_segment(&dir, next)?;
        let log = OutputLog {
            dir,
            sandboxes,
            active: Mutex::new(Active {
                file,
                segment,
                bytes: 0,
                next: next + 1,
                closed: Vec::new(),
            }),
        };
        Ok((log, restored))
    }

    /// Appends `records` in one write and syncs them: once this returns
    /// they survive a crash. One ticket per record, to drop once its
    /// sandbox is written.
    pub fn append(&self, records: &[Logged<'_>]) -> io::Result<Vec<Ticket>> {
        let mut buf = Vec::new();
        for r in records {
            let record = v1::OutputRecord {
                task_id: r.task_id.to_string(),
                stdout: r.stdout.clone(),
                stderr: r.stderr.clone(),
            };
            crate::frames::push_with(&mut buf, |body| record.encode(body).expect("a Vec grows"));
        }
        let mut active = self.active.lock().unwrap();
        active.file.write_all(&buf)?;
        active.file.sync_data()?;
        active.bytes += buf.len() as u64;
        let segment = active.segment.clone();
        segment
            .outstanding
            .fetch_add(records.len(), Ordering::AcqRel);
        let tickets = records.iter().map(|_| Ticket(segment.clone())).collect();
        if active.bytes >= SEGMENT_BYTES {
            let (file, segment) = new_segment(&self.dir, active.next)?;
            active.next += 1;
            let old = std::mem::replace(&mut active.segment, segment);
            active.closed.push(old);
            active.file = file;
            active.bytes = 0;
        }
        Ok(tickets)
    }

    /// Deletes the closed segments whose sandboxes are all written, after
    /// one sync of the file system (so the sandboxes are on the disk).
    pub fn retire(&self) -> io::Result<()> {
        let done: Vec<Arc<Segment>> = {
            let active = self.active.lock().unwrap();
            active
                .closed
                .iter()
                .filter(|s| s.outstanding.load(Ordering::Acquire) == 0)
                .cloned()
                .collect()
        };
        if done.is_empty() {
            return Ok(());
        }
        sync_file_system(&self.sandboxes)?;
        for segment in &done {
            std::fs::remove_file(&segment.path)?;
        }
        self.active
            .lock()
            .unwrap()
            .closed
            .retain(|s| !done.iter().any(|d| Arc::ptr_eq(s, d)));
        Ok(())
    }
}

fn new_segment(dir: &Path, n: u64) -> io::Result<(File, Arc<Segment>)> {
    let path = dir.join(format!("{n:020}.log"));
    let file = OpenOptions::new().create(true).append(true).open(&path)?;
    // The new name must survive too, or a crash could lose the segment.
    wasmos_platform::disk::sync_dir(dir)?;
    let segment = Arc::new(Segment {
        path,
        outstanding: AtomicUsize::new(0),
    });
    Ok((file, segment))
}

/// The segment files of `dir` by number.
fn list_segments(dir: &Path) -> io::Result<BTreeMap<u64, PathBuf>> {
    let mut segments = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if let Some(n) = path
            .file_name()
            .and_then(|n| n.to_str()?.strip_suffix(".log")?.parse().ok())
        {
            segments.insert(n, path);
        }
    }
    Ok(segments)
}

/// The whole records of a segment (a torn or corrupt tail ends it).
fn read_segment(path: &Path) -> io::Result<Vec<v1::OutputRecord>> {
    let bytes = std::fs::read(path)?;
    let mut records = Vec::new();
    let mut frames = crate::frames::Frames::new(&bytes);
    for body in frames.by_ref() {
        match v1::OutputRecord::decode(body) {
            Ok(record) => records.push(record),
            Err(_) => break,
        }
    }
    let at = frames.end();
    if at < bytes.len() {
        tracing::warn!(segment = %path.display(), dropped = bytes.len() - at, "output log: a torn record at the end was dropped");
    }
    Ok(records)
}

/// Writes a logged task's sandbox as the persister would have.
fn restore(work_dir: &Path, sandboxes: &File, record: &v1::OutputRecord) -> io::Result<()> {
    if super::check_task_id(&record.task_id).is_err() {
        return Ok(());
    }
    let sandbox = Sandbox::at(work_dir, &record.task_id);
    // A logged task could touch no file: no root, as the persister makes it.
    match sandbox.create_dir_in(sandboxes, &record.task_id) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        other => {
            other?;
        }
    }
    for (path, data) in [
        (&sandbox.stdout, &record.stdout),
        (&sandbox.stderr, &record.stderr),
    ] {
        if !data.is_empty() {
            std::fs::write(path, data)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged<'a>(task_id: &'a str, out: &str) -> Logged<'a> {
        Logged {
            task_id,
            stdout: out.as_bytes().to_vec(),
            stderr: Vec::new(),
        }
    }

    #[test]
    fn what_was_logged_is_in_its_sandbox_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, restored) = OutputLog::open(dir.path()).unwrap();
            assert_eq!(restored, 0);
            let tickets = log
                .append(&[logged("a-1", "one\n"), logged("b-1", "two\n")])
                .unwrap();
            // A crash: the sandboxes were never written.
            std::mem::forget(tickets);
        }
        let (_log, restored) = OutputLog::open(dir.path()).unwrap();
        assert_eq!(restored, 2);
        let sandbox = Sandbox::at(dir.path(), "a-1");
        assert_eq!(std::fs::read_to_string(&sandbox.stdout).unwrap(), "one\n");
        assert!(sandbox.dir.is_dir() && !sandbox.root.exists());
        assert!(!sandbox.stderr.exists(), "no stderr, no file");
        let segments = list_segments(&dir.path().join("outputs")).unwrap();
        assert_eq!(segments.len(), 1, "the old segment went: {segments:?}");
    }

    #[test]
    fn a_torn_record_is_dropped_and_the_whole_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = OutputLog::open(dir.path()).unwrap();
            std::mem::forget(log.append(&[logged("a-1", "kept\n")]).unwrap());
            std::mem::forget(log.append(&[logged("b-1", "torn\n")]).unwrap());
        }
        let segment = list_segments(&dir.path().join("outputs"))
            .unwrap()
            .into_values()
            .next()
            .unwrap();
        let len = std::fs::metadata(&segment).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (_log, restored) = OutputLog::open(dir.path()).unwrap();
        assert_eq!(restored, 1);
        assert!(Sandbox::at(dir.path(), "a-1").stdout.exists());
        assert!(!Sandbox::at(dir.path(), "b-1").dir.exists());
    }

    #[test]
    fn a_closed_segment_goes_once_its_sandboxes_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = OutputLog::open(dir.path()).unwrap();
        let big = "x".repeat(SEGMENT_BYTES as usize);
        let first = log.append(&[logged("big-1", &big)]).unwrap();
        let outputs = dir.path().join("outputs");
        assert_eq!(list_segments(&outputs).unwrap().len(), 2, "rotated");
        log.retire().unwrap();
        assert_eq!(list_segments(&outputs).unwrap().len(), 2, "still needed");
        drop(first);
        log.retire().unwrap();
        assert_eq!(list_segments(&outputs).unwrap().len(), 1);
    }
}
