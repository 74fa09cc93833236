//! The executor's checkpoint: the tasks it has not forgotten and the status
//! updates the framework has not acknowledged, in `<work-dir>/checkpoint.log`,
//! so that after any restart (the executor's, or the machine's) every
//! unacknowledged update is sent again and every task that was running is
//! accounted for.
//!
//! **An append-only log.** Each batch of writes is one checksummed frame
//! ([`crate::frames`]) appended in one `write`: no tree to rebalance, no
//! page copied, no allocation per record beyond its encoding. Most batches
//! are not synced (a launch, `RUNNING`, an acknowledgement: the page cache
//! keeps them across a `kill -9`, and a power cut that loses them costs no
//! more than a task reported `LOST`); a batch carrying a terminal update is
//! synced (`fdatasync`), and the agent told so (`synced`), before a
//! framework hears of the end, so a framework never sees an end the
//! executor could forget. A torn frame at the end (the power went during
//! an append) is cut off when the log is opened: its batch was never
//! synced, so nothing it held was promised.
//!
//! **Snapshots keep it small.** The checkpoint keeps what is live (tasks
//! not forgotten, updates not acknowledged) in memory as well; once the log
//! has grown by [`SNAPSHOT_AFTER`] and to twice its last snapshot, a synced
//! batch writes the live records to a new file, syncs it and renames it
//! over the log. Most of a task's records are forgotten within a second of
//! its end, so a snapshot is small and rare.
//!
//! A task's launch (its spec and MAC, which a restarted master adopts the
//! task from) is written once; its state record, which every state change
//! rewrites, stays a few bytes.
//!
//! Executors before the log kept a redb file, `checkpoint.redb`
//! ([`legacy`]): the first start of a newer executor moves it into the log.
//!
//! [`Backend::PowerLoss`] keeps unsynced batches in memory only, for tests:
//! a `kill -9` then loses exactly what a power cut would.

mod legacy;
mod record;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use wasmos_proto::v1;

use crate::frames;

/// The first bytes of a checkpoint log, then its format's version (u32 LE).
const MAGIC: &[u8; 8] = b"wsmsckpt";
const VERSION: u32 = 1;
const FILE_HEADER: usize = MAGIC.len() + 4;
/// The log is rewritten from the live records once it has grown by this
/// much since the last snapshot (and to twice that snapshot's size).
pub const SNAPSHOT_AFTER: u64 = 4 << 20;
/// A snapshot's frames hold about this much each.
const SNAPSHOT_FRAME: usize = 1 << 20;

/// How the checkpoint reaches the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// The log file, as in production.
    #[default]
    File,
    /// The log file, but batches not synced stay in memory (tests: a
    /// `kill -9` loses them as a power cut would). Synced batches also
    /// wait while `<work-dir>/hold-syncs` exists, so a test can cut the
    /// power between an end going out and its sync.
    PowerLoss,
}

/// What a checkpoint held when it was opened.
#[derive(Debug, Default)]
pub struct Loaded {
    pub tasks: BTreeMap<String, v1::CheckpointTask>,
    /// Unacknowledged updates by sequence number.
    pub updates: BTreeMap<u64, v1::TaskStatus>,
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// A task's state, without its `spec` and `launch_mac` (see `Launch`).
    Task(String, v1::CheckpointTask),
    /// A task's launch; forgotten with the task.
    Launch(String, v1::TaskLaunch),
    ForgetTask(String),
    Update(u64, v1::TaskStatus),
    ForgetUpdate(u64),
}

/// The live records: what a snapshot writes.
#[derive(Debug, Default)]
struct Live {
    tasks: HashMap<String, v1::CheckpointTask>,
    launches: HashMap<String, v1::TaskLaunch>,
    updates: BTreeMap<u64, v1::TaskStatus>,
}

impl Live {
    fn apply(&mut self, write: Write) {
        match write {
            Write::Task(id, task) => {
                self.tasks.insert(id, task);
            }
            Write::Launch(id, launch) => {
                self.launches.insert(id, launch);
            }
            Write::ForgetTask(id) => {
                self.tasks.remove(&id);
                self.launches.remove(&id);
            }
            Write::Update(seq, status) => {
                self.updates.insert(seq, status);
            }
            Write::ForgetUpdate(seq) => {
                self.updates.remove(&seq);
            }
        }
    }

    /// The tasks with their launches, and the updates.
    fn loaded(&self) -> Loaded {
        let tasks = self
            .tasks
            .iter()
            .map(|(id, task)| {
                let mut task = task.clone();
                if let Some(launch) = self.launches.get(id) {
                    task.spec = launch.spec.clone();
                    task.launch_mac = launch.mac.clone();
                    task.launch_epoch = launch.master_epoch;
                }
                (id.clone(), task)
            })
            .collect();
        Loaded {
            tasks,
            updates: self.updates.clone(),
        }
    }

    /// The live records as a log file: its header, then frames.
    fn snapshot(&self) -> Vec<u8> {
        let mut file = file_header();
        let mut batch = Vec::new();
        let mut flush = |batch: &mut Vec<u8>, force: bool| {
            if !batch.is_empty() && (force || batch.len() >= SNAPSHOT_FRAME) {
                frames::push(&mut file, batch);
                batch.clear();
            }
        };
        for (id, task) in &self.tasks {
            record::task(&mut batch, id, task);
            if let Some(launch) = self.launches.get(id) {
                record::launch(&mut batch, id, launch);
            }
            flush(&mut batch, false);
        }
        for (seq, status) in &self.updates {
            record::update(&mut batch, *seq, status);
            flush(&mut batch, false);
        }
        flush(&mut batch, true);
        file
    }
}

fn file_header() -> Vec<u8> {
    let mut header = Vec::with_capacity(FILE_HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header
}

/// The open checkpoint.
pub struct Checkpoint {
    path: PathBuf,
    work_dir: PathBuf,
    backend: Backend,
    /// The log, written at its end.
    file: File,
    /// The bytes of whole frames in the file.
    len: u64,
    /// Its length after the last snapshot.
    snapshot_len: u64,
    live: Live,
    /// Frames appended but not yet in the file (`PowerLoss` only).
    unsynced: Vec<u8>,
    /// A failed append may have left the file behind `live`: the next
    /// synced batch writes a snapshot.
    behind: bool,
    /// The frame being built, kept for its capacity.
    buf: Vec<u8>,
    /// Synced commits wait while this file exists (power-loss tests).
    hold_syncs_while: Option<PathBuf>,
}

impl Checkpoint {
    /// Where the checkpoint of `work_dir` lives.
    pub fn path_in(work_dir: &Path) -> PathBuf {
        work_dir.join("checkpoint.log")
    }

    /// Opens (creating) the checkpoint in `work_dir` and reads it whole. A
    /// checkpoint of a newer format is refused, never overwritten.
    pub fn open(work_dir: &Path, backend: Backend) -> anyhow::Result<(Checkpoint, Loaded)> {
        let path = Self::path_in(work_dir);
        let legacy_path = work_dir.join("checkpoint.redb");
        let io = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!("cannot open the checkpoint {}: {e}", path.display())
        };
        let existing = match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&e)),
        };
        let (file, len, live) = match existing {
            Some(bytes) => {
                let (live, whole) = replay(&path, &bytes)?;
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|e| io(&e))?;
                if whole < bytes.len() {
                    tracing::warn!(checkpoint = %path.display(), dropped = bytes.len() - whole, "checkpoint: a torn batch at the end was dropped (it was never synced)");
                    file.set_len(whole as u64).map_err(|e| io(&e))?;
                    file.sync_data().map_err(|e| io(&e))?;
                }
                (file, whole as u64, live)
            }
            None => {
                // A log is created whole (as a snapshot), so a crash leaves
                // either none or one that opens.
                let live = if legacy_path.exists() {
                    legacy::load(&legacy_path)?
                } else {
                    Live::default()
                };
                let file = write_snapshot(&path, work_dir, &live.snapshot()).map_err(|e| io(&e))?;
                let len = file.metadata().map_err(|e| io(&e))?.len();
                (file, len, live)
            }
        };
        let checkpoint = Checkpoint {
            path: path.clone(),
            work_dir: work_dir.to_path_buf(),
            backend,
            file,
            len,
            snapshot_len: len,
            live,
            unsynced: Vec::new(),
            behind: false,
            buf: Vec::new(),
            hold_syncs_while: (backend == Backend::PowerLoss).then(|| work_dir.join("hold-syncs")),
        };
        if legacy_path.exists() {
            // Its records are in the synced log now.
            std::fs::remove_file(&legacy_path).map_err(|e| io(&e))?;
            wasmos_platform::disk::sync_dir(work_dir).map_err(|e| io(&e))?;
            tracing::info!(from = %legacy_path.display(), to = %path.display(), tasks = checkpoint.live.tasks.len(), updates = checkpoint.live.updates.len(), "checkpoint: moved into the log");
        }
        let loaded = checkpoint.live.loaded();
        Ok((checkpoint, loaded))
    }

    /// Applies `writes` as one batch, synced to the disk when `durable`
    /// (also with no writes: everything before is then synced).
    pub fn commit(&mut self, writes: Vec<Write>, durable: bool) -> anyhow::Result<()> {
        self.commit_lists(vec![writes], durable)
    }

    /// Applies several lists of writes, in order, as one batch: what a
    /// writer gathered from many senders, without first moving them all
    /// into one list (a busy executor's batch holds thousands of writes,
    /// and a list that large is a fresh mapping of memory each time).
    pub fn commit_lists(&mut self, writes: Vec<Vec<Write>>, durable: bool) -> anyhow::Result<()> {
        if durable && let Some(gate) = &self.hold_syncs_while {
            while gate.exists() {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        self.buf.clear();
        if writes.iter().any(|list| !list.is_empty()) {
            frames::push_with(&mut self.buf, |body| {
                for write in writes.iter().flatten() {
                    record::encode(body, write);
                }
            });
        }
        for write in writes.into_iter().flatten() {
            self.live.apply(write);
        }
        let grown = self.len + self.unsynced.len() as u64 - self.snapshot_len;
        if durable && (self.behind || (grown >= SNAPSHOT_AFTER && grown >= self.snapshot_len)) {
            return self.snapshot();
        }
        let result = match self.backend {
            Backend::File => self.append(durable),
            Backend::PowerLoss => {
                self.unsynced.extend_from_slice(&self.buf);
                if durable {
                    std::mem::swap(&mut self.buf, &mut self.unsynced);
                    self.unsynced.clear();
                    self.append(true)
                } else {
                    Ok(())
                }
            }
        };
        result.map_err(|e| {
            self.behind = true;
            anyhow::anyhow!("cannot write the checkpoint {}: {e}", self.path.display())
        })
    }

    /// Appends `buf` to the file (synced when `durable`); on a failure,
    /// cuts off what part of it was written.
    fn append(&mut self, durable: bool) -> std::io::Result<()> {
        if let Err(e) = self.file.write_all(&self.buf) {
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += self.buf.len() as u64;
        if durable {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Rewrites the log as the live records, synced.
    fn snapshot(&mut self) -> anyhow::Result<()> {
        let bytes = self.live.snapshot();
        let file = write_snapshot(&self.path, &self.work_dir, &bytes).map_err(|e| {
            self.behind = true;
            anyhow::anyhow!("cannot write the checkpoint {}: {e}", self.path.display())
        })?;
        self.file = file;
        self.len = bytes.len() as u64;
        self.snapshot_len = self.len;
        self.unsynced.clear();
        self.behind = false;
        Ok(())
    }
}

/// Writes `bytes` as the log at `path`: to a file beside it, synced, then
/// renamed over it. Returns the new file, open at its end.
fn write_snapshot(path: &Path, dir: &Path, bytes: &[u8]) -> std::io::Result<File> {
    let next = path.with_extension("log.next");
    let mut file = File::create(&next)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    std::fs::rename(&next, path)?;
    wasmos_platform::disk::sync_dir(dir)?;
    Ok(file)
}

/// The live records of a log's bytes, and the length of its whole frames
/// (what follows them is a torn batch).
fn replay(path: &Path, bytes: &[u8]) -> anyhow::Result<(Live, usize)> {
    let bad = |why: &str| anyhow::anyhow!("the checkpoint {} {why}", path.display());
    if bytes.len() < FILE_HEADER || &bytes[..MAGIC.len()] != MAGIC {
        return Err(bad("is not a wasmos checkpoint log"));
    }
    let version = u32::from_le_bytes(bytes[MAGIC.len()..FILE_HEADER].try_into().unwrap());
    if version != VERSION {
        return Err(bad(&format!(
            "has format {version}; this wasmos reads {VERSION}: use the wasmos that wrote it, or move the file away (its tasks' updates are then lost)"
        )));
    }
    let mut live = Live::default();
    let mut frames = frames::Frames::new(&bytes[FILE_HEADER..]);
    for body in frames.by_ref() {
        // A whole frame that does not decode was written by a broken
        // executor, not torn by a crash: refuse rather than guess.
        let writes = record::decode(body).map_err(|e| bad(&format!("holds a bad batch: {e}")))?;
        for write in writes {
            live.apply(write);
        }
    }
    Ok((live, FILE_HEADER + frames.end()))
}

#[cfg(test)]
mod tests;
