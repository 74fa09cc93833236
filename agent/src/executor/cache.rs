//! Compiled modules and components, keyed by the sha256 of their bytes.
//!
//! Two levels: in memory (`Module` + `InstancePre`, or a component's
//! `CommandPre`, shared by every task of that program) and on disk
//! (`<dir>/<digest>-<engine key>.cwasm`, wasmtime's header telling a module
//! from a component), so a restarted agent does not recompile. Concurrent launches of one module
//! wait for a single compilation. Deserializing compiled code is `unsafe`
//! and wasmtime checks only the header, so every file carries a sha256 of
//! its payload of our own: an entry that fails it is deleted and rebuilt,
//! never run.
//!
//! The disk level is bounded: [`trim_dir`] evicts the least recently used
//! entries past a byte cap (the disk collector in [`crate::gc`] runs it).
//! Recency is the file's mtime: set when an entry is written, and touched
//! when it is loaded from disk or (at most once a minute) served from
//! memory. Evicting a file never affects a module already in memory, and a
//! file that vanished is simply compiled again.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use wasmtime::component::Component;
use wasmtime::{Engine, InstancePre, Module, Precompiled};
use wasmtime_wasi::p2::bindings::CommandPre;

use super::artifacts::digest_of;
use super::engine::{ComponentData, TaskData, TaskEngine};
use super::validate;

const MAGIC: &[u8; 8] = b"WASMOSC1";
const HEADER: usize = MAGIC.len() + 32;

/// A program ready to instantiate.
pub struct Compiled {
    /// Its imports resolved against the WASI linker once, not per task.
    pub program: Program,
    /// Whether it imports something that can reach a file
    /// ([`validate::can_touch_files`],
    /// [`validate::component_can_touch_files`]), known once, not per task.
    pub touches_files: bool,
}

/// What a task runs.
pub enum Program {
    /// A WASI preview 1 module: its `_start`.
    Module(InstancePre<TaskData>),
    /// A WASI preview 2 component: its `wasi:cli/run`.
    Component(CommandPre<ComponentData>),
}

/// Compiled code, before linking.
enum Code {
    Module(Module),
    Component(Component),
}

impl Code {
    fn serialize(&self) -> Option<Vec<u8>> {
        match self {
            Code::Module(m) => m.serialize().ok(),
            Code::Component(c) => c.serialize().ok(),
        }
    }
}

/// Why a module could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// Not wasm, failed validation, not a WASI command.
    #[error("{0}")]
    Invalid(String),
    /// The bytes could not be obtained or had the wrong digest.
    #[error("{0}")]
    Unavailable(String),
}

/// Counters for tests, benchmarks and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Modules compiled from bytes.
    pub compiled: u64,
    /// Modules loaded from the disk cache.
    pub disk_hits: u64,
    /// Lookups answered from memory.
    pub memory_hits: u64,
    /// Disk entries that failed their checksum or wasmtime's checks and were
    /// rebuilt.
    pub rejected: u64,
}

#[derive(Default)]
struct Counters {
    compiled: AtomicU64,
    disk_hits: AtomicU64,
    memory_hits: AtomicU64,
    rejected: AtomicU64,
}

/// One module's slot in memory.
#[derive(Default)]
struct Slot {
    cell: OnceCell<Arc<Compiled>>,
    /// Seconds since the cache's epoch when its disk entry was last marked
    /// as used.
    touched: AtomicU64,
}

type Cell = Arc<Slot>;

/// A disk entry served from memory is marked as used at most this often.
const TOUCH_EVERY_SECS: u64 = 60;

/// The two-level module cache of one engine.
pub struct ModuleCache {
    engine: Arc<TaskEngine>,
    dir: Option<PathBuf>,
    engine_key: String,
    capacity: usize,
    entries: Mutex<(HashMap<String, Cell>, VecDeque<String>)>,
    counters: Counters,
    epoch: Instant,
}

impl ModuleCache {
    /// A cache for `engine`, storing compiled code in `dir` if given.
    pub fn new(
        engine: Arc<TaskEngine>,
        dir: Option<PathBuf>,
        capacity: usize,
    ) -> std::io::Result<Self> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Self {
            engine_key: engine.compatibility_key(),
            engine,
            dir,
            capacity: capacity.max(1),
            entries: Mutex::new((HashMap::new(), VecDeque::new())),
            counters: Counters::default(),
            epoch: Instant::now(),
        })
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            compiled: c.compiled.load(Ordering::Relaxed),
            disk_hits: c.disk_hits.load(Ordering::Relaxed),
            memory_hits: c.memory_hits.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
        }
    }

    /// The file that holds (or would hold) `digest`'s compiled code.
    pub fn disk_path(&self, digest: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{digest}-{}.cwasm", self.engine_key)))
    }

    /// The compiled module for `digest`: from memory, else from disk, else
    /// compiled from the bytes `fetch` yields (checked against `digest`).
    /// Concurrent callers for one digest share one load.
    pub async fn get<F>(&self, digest: &str, fetch: F) -> Result<Arc<Compiled>, LoadError>
    where
        F: Future<Output = Result<Vec<u8>, LoadError>>,
    {
        let cell = self.cell(digest);
        if let Some(hit) = cell.cell.get() {
            self.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
            self.mark_used(digest, &cell);
            return Ok(hit.clone());
        }
        let result = cell
            .cell
            .get_or_try_init(|| self.load(digest, fetch))
            .await
            .cloned();
        if result.is_ok() {
            let now = self.epoch.elapsed().as_secs();
            cell.touched.store(now, Ordering::Relaxed);
        }
        if result.is_err() {
            // Do not keep failed entries: a later launch may bring good bytes.
            let mut entries = self.entries.lock().unwrap();
            if entries.0.get(digest).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                entries.0.remove(digest);
            }
        }
        result
    }

    /// Keeps the disk entry of a module served from memory from looking
    /// unused to [`trim_dir`]: refreshes its mtime, at most once a minute.
    fn mark_used(&self, digest: &str, cell: &Slot) {
        let now = self.epoch.elapsed().as_secs();
        let last = cell.touched.load(Ordering::Relaxed);
        if now < last + TOUCH_EVERY_SECS
            || cell
                .touched
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        if let Some(path) = self.disk_path(digest) {
            touch(&path);
        }
    }

    fn cell(&self, digest: &str) -> Cell {
        let mut guard = self.entries.lock().unwrap();
        let (map, order) = &mut *guard;
        if let Some(cell) = map.get(digest) {
            return cell.clone();
        }
        while map.len() >= self.capacity {
            match order.pop_front() {
                Some(old) => {
                    map.remove(&old);
                }
                None => break,
            }
        }
        let cell = Cell::default();
        map.insert(digest.to_owned(), cell.clone());
        order.push_back(digest.to_owned());
        cell
    }

    async fn load<F>(&self, digest: &str, fetch: F) -> Result<Arc<Compiled>, LoadError>
    where
        F: Future<Output = Result<Vec<u8>, LoadError>>,
    {
        if let Some(path) = self.disk_path(digest)
            && let Some(code) = self.load_from_disk(&path).await
        {
            self.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
            return self.finish(code);
        }
        let bytes = fetch.await?;
        let actual = digest_of(&bytes);
        if actual != digest {
            return Err(LoadError::Unavailable(format!(
                "module bytes have sha256 {actual}, expected {digest}"
            )));
        }
        let engine = self.engine.clone();
        let (code, serialized) = tokio::task::spawn_blocking(move || {
            let code = compile(&engine, &bytes)?;
            let serialized = code.serialize();
            Ok::<_, LoadError>((code, serialized))
        })
        .await
        .map_err(|e| LoadError::Unavailable(format!("compilation did not finish: {e}")))??;
        self.counters.compiled.fetch_add(1, Ordering::Relaxed);
        let compiled = self.finish(code)?;
        if let (Some(path), Some(payload)) = (self.disk_path(digest), serialized) {
            tokio::task::spawn_blocking(move || {
                if let Err(e) = write_entry(&path, &payload) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot store compiled module");
                }
            });
        }
        Ok(compiled)
    }

    /// Verified code from `path`, or `None` (after deleting the entry if it
    /// was corrupt).
    async fn load_from_disk(&self, path: &Path) -> Option<Code> {
        let engine = self.engine.clone();
        let owned = path.to_path_buf();
        let result = tokio::task::spawn_blocking(move || read_entry(&engine, &owned))
            .await
            .ok()?;
        match result {
            Ok(module) => {
                if module.is_some() {
                    touch(path);
                }
                module
            }
            Err(why) => {
                tracing::warn!(path = %path.display(), %why, "rejecting cached module; recompiling");
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    fn finish(&self, code: Code) -> Result<Arc<Compiled>, LoadError> {
        let compiled = match code {
            Code::Module(module) => {
                validate::check_command(&module, |name| self.engine.functions().contains(name))
                    .map_err(LoadError::Invalid)?;
                let pre = self
                    .engine
                    .linker()
                    .instantiate_pre(&module)
                    .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
                Compiled {
                    touches_files: validate::can_touch_files(&module),
                    program: Program::Module(pre),
                }
            }
            Code::Component(component) => {
                let engine = self.engine.component_engine();
                let pre = self
                    .engine
                    .component_linker()
                    .instantiate_pre(&component)
                    .map_err(|e| LoadError::Invalid(validate::component_link_error(&e)))?;
                let pre = CommandPre::new(pre)
                    .map_err(|e| LoadError::Invalid(validate::component_command_error(&e)))?;
                Compiled {
                    touches_files: validate::component_can_touch_files(&component, engine),
                    program: Program::Component(pre),
                }
            }
        };
        Ok(Arc::new(compiled))
    }
}

/// Compiles `bytes`: a component (by its header) on the component engine,
/// a module otherwise. Text (`.wat`) is a module unless only a component
/// parses from it.
fn compile(engine: &TaskEngine, bytes: &[u8]) -> Result<Code, LoadError> {
    let component = || Component::new(engine.component_engine(), bytes).map(Code::Component);
    if wasmparser::Parser::is_component(bytes) {
        return component()
            .map_err(|e| LoadError::Invalid(format!("not a valid wasm component: {e:#}")));
    }
    Module::new(engine.engine(), bytes)
        .map(Code::Module)
        .or_else(|e| match bytes.starts_with(b"\0asm") {
            false => component().map_err(|_| e),
            true => Err(e),
        })
        .map_err(|e| LoadError::Invalid(format!("not a valid wasm module: {e:#}")))
}

/// Writes `payload` with our header, atomically (temp file + rename).
fn write_entry(path: &Path, payload: &[u8]) -> std::io::Result<()> {
    let mut data = Vec::with_capacity(HEADER + payload.len());
    data.extend_from_slice(MAGIC);
    data.extend_from_slice(&Sha256::digest(payload));
    data.extend_from_slice(payload);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &data)?;
    std::fs::rename(&tmp, path)
}

/// Sets `path`'s mtime to now (its recency for [`trim_dir`]); a missing
/// file is no error.
fn touch(path: &Path) {
    if let Ok(file) = std::fs::OpenOptions::new().write(true).open(path) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// A temporary file older than this is left over by a crash, not being
/// written: it is deleted.
const STALE_TEMP: Duration = Duration::from_secs(600);

/// One file of the on-disk cache, for [`choose_evictions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskEntry {
    /// File name in the cache directory.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// When it was last written or used (its mtime).
    pub last_used: SystemTime,
}

/// What [`trim_dir`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TrimReport {
    /// Entries deleted to get under the cap.
    pub evicted: usize,
    /// Leftover temporary files deleted.
    pub stale_temps: usize,
    /// Bytes of the cache after trimming.
    pub bytes: u64,
}

/// Which entries to evict so that the rest take at most `cap` bytes: the
/// least recently used first (ties by name). Pure: indices into `entries`.
pub fn choose_evictions(entries: &[DiskEntry], cap: u64) -> Vec<usize> {
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    if total <= cap {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&entries[a], &entries[b]);
        a.last_used
            .cmp(&b.last_used)
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut evict = Vec::new();
    for i in order {
        if total <= cap {
            break;
        }
        total -= entries[i].bytes;
        evict.push(i);
    }
    evict
}

/// Bounds the cache directory `dir` to `cap` bytes of entries: deletes the
/// least recently used `.cwasm` files past it, and temporary files left
/// over by a crash. Files being written (recent temporaries) are counted
/// but never touched; files of other names are ignored.
pub fn trim_dir(dir: &Path, cap: u64) -> std::io::Result<TrimReport> {
    let mut report = TrimReport::default();
    let mut entries = Vec::new();
    let mut in_flight = 0u64;
    let now = SystemTime::now();
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(e),
    };
    for entry in listing {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let last_used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if name.ends_with(".cwasm") {
            entries.push(DiskEntry {
                name,
                bytes: meta.len(),
                last_used,
            });
        } else if is_temp_name(&name) {
            let age = now.duration_since(last_used).unwrap_or_default();
            if age > STALE_TEMP && std::fs::remove_file(entry.path()).is_ok() {
                report.stale_temps += 1;
            } else {
                in_flight += meta.len();
            }
        }
    }
    let evict = choose_evictions(&entries, cap.saturating_sub(in_flight));
    let mut gone = vec![false; entries.len()];
    for i in evict {
        match std::fs::remove_file(dir.join(&entries[i].name)) {
            Ok(()) => {
                report.evicted += 1;
                gone[i] = true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => gone[i] = true,
            Err(e) => {
                tracing::warn!(file = %entries[i].name, error = %e, "cannot evict cached module")
            }
        }
    }
    report.bytes = in_flight
        + entries
            .iter()
            .zip(&gone)
            .filter(|(_, gone)| !**gone)
            .map(|(e, _)| e.bytes)
            .sum::<u64>();
    Ok(report)
}

/// `<digest>-<key>.tmp<pid>`, as [`write_entry`] names its temporary file.
fn is_temp_name(name: &str) -> bool {
    name.rsplit_once(".tmp")
        .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// `Ok(None)`: no entry. `Err`: an entry that must not be used.
fn read_entry(engine: &TaskEngine, path: &Path) -> Result<Option<Code>, String> {
    let data = match std::fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("unreadable: {e}")),
    };
    let payload = verify_entry(&data)?;
    let refused = |e: wasmtime::Error| format!("wasmtime refused it: {e}");
    // SAFETY (both): `payload` was written by `write_entry` from the
    // `serialize` of the same kind of code (wasmtime's header says which),
    // by engines with the same compatibility key (it is in the file name),
    // and its sha256 matches, so it is the bytes wasmtime produced.
    match Engine::detect_precompiled(payload) {
        Some(Precompiled::Module) => unsafe { Module::deserialize(engine.engine(), payload) }
            .map(|m| Some(Code::Module(m)))
            .map_err(refused),
        Some(Precompiled::Component) => {
            unsafe { Component::deserialize(engine.component_engine(), payload) }
                .map(|c| Some(Code::Component(c)))
                .map_err(refused)
        }
        None => Err("not compiled code".into()),
    }
}

/// The payload of a cache file, if its header and checksum are right.
fn verify_entry(data: &[u8]) -> Result<&[u8], String> {
    if data.len() < HEADER || &data[..MAGIC.len()] != MAGIC {
        return Err("bad header".into());
    }
    let (sum, payload) = data[MAGIC.len()..].split_at(32);
    if Sha256::digest(payload).as_slice() != sum {
        return Err("checksum mismatch".into());
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, bytes: u64, secs: u64) -> DiskEntry {
        DiskEntry {
            name: name.into(),
            bytes,
            last_used: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    #[test]
    fn evictions_take_the_least_recently_used_until_under_the_cap() {
        let entries = [
            entry("c", 40, 30),
            entry("a", 40, 10),
            entry("b", 40, 20),
            entry("d", 40, 40),
        ];
        assert_eq!(choose_evictions(&entries, 160), Vec::<usize>::new());
        assert_eq!(choose_evictions(&entries, 159), vec![1]);
        assert_eq!(choose_evictions(&entries, 80), vec![1, 2]);
        assert_eq!(choose_evictions(&entries, 0), vec![1, 2, 0, 3]);
        // Ties go by name, so the choice is deterministic.
        let tied = [entry("y", 10, 5), entry("x", 10, 5)];
        assert_eq!(choose_evictions(&tied, 10), vec![1]);
    }

    #[test]
    fn trimming_a_directory_spares_files_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str, bytes: usize, secs_ago: u64| {
            let path = dir.path().join(name);
            std::fs::write(&path, vec![0u8; bytes]).unwrap();
            let when = SystemTime::now() - Duration::from_secs(secs_ago);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        };
        at("old-k.cwasm", 100, 300);
        at("mid-k.cwasm", 100, 200);
        at("new-k.cwasm", 100, 100);
        at("busy-k.tmp42", 50, 1);
        at("dead-k.tmp7", 50, 3600);
        at("notes.txt", 1000, 9999);
        let report = trim_dir(dir.path(), 260).unwrap();
        assert_eq!(
            report,
            TrimReport {
                evicted: 1,
                stale_temps: 1,
                bytes: 250
            }
        );
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["busy-k.tmp42", "mid-k.cwasm", "new-k.cwasm", "notes.txt"]
        );
        // A touched entry counts as recently used.
        touch(&dir.path().join("mid-k.cwasm"));
        trim_dir(dir.path(), 160).unwrap();
        assert!(dir.path().join("mid-k.cwasm").exists());
        assert!(!dir.path().join("new-k.cwasm").exists());
    }

    #[test]
    fn entries_detect_any_flipped_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.cwasm");
        write_entry(&path, b"compiled code here").unwrap();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(verify_entry(&data).unwrap(), b"compiled code here");
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x01;
            assert!(verify_entry(&bad).is_err(), "flip at {i} not detected");
        }
        assert!(verify_entry(&data[..HEADER - 1]).is_err());
    }
}
