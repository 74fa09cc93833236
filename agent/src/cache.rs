//! Compiled modules, keyed by the sha256 of their bytes.
//!
//! Two levels: in memory (`Module` + `InstancePre`, shared by every task of
//! that module) and on disk (`<dir>/<digest>-<engine key>.cwasm`), so a
//! restarted agent does not recompile. Concurrent launches of one module
//! wait for a single compilation. Deserializing compiled code is `unsafe`
//! and wasmtime checks only the header, so every file carries a sha256 of
//! its payload of our own: an entry that fails it is deleted and rebuilt,
//! never run.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use wasmtime::{Engine, InstancePre, Linker, Module};

use crate::artifacts::digest_of;
use crate::task::TaskData;
use crate::validate;

const MAGIC: &[u8; 8] = b"WASMOSC1";
const HEADER: usize = MAGIC.len() + 32;

/// A module ready to instantiate.
pub struct Compiled {
    /// Imports resolved against the WASI linker once, not per task.
    pub pre: InstancePre<TaskData>,
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

type Cell = Arc<OnceCell<Arc<Compiled>>>;

/// The two-level module cache of one engine.
pub struct ModuleCache {
    engine: Engine,
    linker: Arc<Linker<TaskData>>,
    wasi_functions: HashSet<String>,
    dir: Option<PathBuf>,
    engine_key: String,
    capacity: usize,
    entries: Mutex<(HashMap<String, Cell>, VecDeque<String>)>,
    counters: Counters,
}

impl ModuleCache {
    /// A cache for `engine`, storing compiled code in `dir` if given.
    pub fn new(
        engine: Engine,
        linker: Arc<Linker<TaskData>>,
        wasi_functions: HashSet<String>,
        dir: Option<PathBuf>,
        capacity: usize,
    ) -> std::io::Result<Self> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Self {
            engine_key: crate::engine::compatibility_key(&engine),
            engine,
            linker,
            wasi_functions,
            dir,
            capacity: capacity.max(1),
            entries: Mutex::new((HashMap::new(), VecDeque::new())),
            counters: Counters::default(),
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
        if let Some(hit) = cell.get() {
            self.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit.clone());
        }
        let result = cell
            .get_or_try_init(|| self.load(digest, fetch))
            .await
            .cloned();
        if result.is_err() {
            // Do not keep failed entries: a later launch may bring good bytes.
            let mut entries = self.entries.lock().unwrap();
            if entries.0.get(digest).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                entries.0.remove(digest);
            }
        }
        result
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
            && let Some(module) = self.load_from_disk(&path).await
        {
            self.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
            return self.finish(module);
        }
        let bytes = fetch.await?;
        let actual = digest_of(&bytes);
        if actual != digest {
            return Err(LoadError::Unavailable(format!(
                "module bytes have sha256 {actual}, expected {digest}"
            )));
        }
        let engine = self.engine.clone();
        let (module, serialized) = tokio::task::spawn_blocking(move || {
            let module = Module::new(&engine, &bytes)
                .map_err(|e| LoadError::Invalid(format!("not a valid wasm module: {e:#}")))?;
            let serialized = module.serialize().ok();
            Ok::<_, LoadError>((module, serialized))
        })
        .await
        .map_err(|e| LoadError::Unavailable(format!("compilation did not finish: {e}")))??;
        self.counters.compiled.fetch_add(1, Ordering::Relaxed);
        let compiled = self.finish(module)?;
        if let (Some(path), Some(payload)) = (self.disk_path(digest), serialized) {
            tokio::task::spawn_blocking(move || {
                if let Err(e) = write_entry(&path, &payload) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot store compiled module");
                }
            });
        }
        Ok(compiled)
    }

    /// A verified module from `path`, or `None` (after deleting the entry
    /// if it was corrupt).
    async fn load_from_disk(&self, path: &Path) -> Option<Module> {
        let engine = self.engine.clone();
        let owned = path.to_path_buf();
        let result = tokio::task::spawn_blocking(move || read_entry(&engine, &owned))
            .await
            .ok()?;
        match result {
            Ok(module) => module,
            Err(why) => {
                tracing::warn!(path = %path.display(), %why, "rejecting cached module; recompiling");
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    fn finish(&self, module: Module) -> Result<Arc<Compiled>, LoadError> {
        validate::check_command(&module, |name| self.wasi_functions.contains(name))
            .map_err(LoadError::Invalid)?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        Ok(Arc::new(Compiled { pre }))
    }
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

/// `Ok(None)`: no entry. `Err`: an entry that must not be used.
fn read_entry(engine: &Engine, path: &Path) -> Result<Option<Module>, String> {
    let data = match std::fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("unreadable: {e}")),
    };
    let payload = verify_entry(&data)?;
    // SAFETY: `payload` was written by `write_entry` from `Module::serialize`
    // of an engine with the same compatibility key (it is in the file name),
    // and its sha256 matches, so it is the bytes wasmtime produced.
    unsafe { Module::deserialize(engine, payload) }
        .map(Some)
        .map_err(|e| format!("wasmtime refused it: {e}"))
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
