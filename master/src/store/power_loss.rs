//! A redb storage backend for tests that simulates power loss.
//!
//! Writes land in a volatile image; `sync_data` copies it to the durable
//! image, as a disk's cache reaching the platter. [`PowerLossDisk::power_off`]
//! throws the volatile image away: a backend opened after it sees only what
//! was synced. A master restarted on that must not have lost anything it
//! acknowledged, which is what the registry's tests check.

use std::io;
use std::sync::{Arc, Mutex};

use ::redb::StorageBackend;

#[derive(Default)]
struct Images {
    durable: Vec<u8>,
    volatile: Vec<u8>,
    /// Bumped by `power_off`: backends of an earlier power cycle go dead.
    cycle: u64,
    syncs: u64,
}

/// The simulated disk, shared by the backends opened on it.
#[derive(Clone, Default)]
pub struct PowerLossDisk {
    images: Arc<Mutex<Images>>,
}

impl PowerLossDisk {
    pub fn new() -> PowerLossDisk {
        PowerLossDisk::default()
    }

    /// A backend on the disk as it is now.
    pub fn backend(&self) -> PowerLossBackend {
        let cycle = self.images.lock().unwrap().cycle;
        PowerLossBackend {
            disk: self.clone(),
            cycle,
        }
    }

    /// The power goes: every write not yet synced is lost, and backends
    /// opened before now fail every call (their process is gone).
    pub fn power_off(&self) {
        let mut images = self.images.lock().unwrap();
        images.volatile = images.durable.clone();
        images.cycle += 1;
    }

    /// How many times a backend synced.
    pub fn syncs(&self) -> u64 {
        self.images.lock().unwrap().syncs
    }
}

/// One process's view of a [`PowerLossDisk`].
pub struct PowerLossBackend {
    disk: PowerLossDisk,
    cycle: u64,
}

impl std::fmt::Debug for PowerLossBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerLossBackend")
            .field("cycle", &self.cycle)
            .finish()
    }
}

impl PowerLossBackend {
    fn with<T>(&self, f: impl FnOnce(&mut Images) -> io::Result<T>) -> io::Result<T> {
        let mut images = self.disk.images.lock().unwrap();
        if images.cycle != self.cycle {
            return Err(io::Error::other("the power went off"));
        }
        f(&mut images)
    }
}

impl StorageBackend for PowerLossBackend {
    fn len(&self) -> io::Result<u64> {
        self.with(|i| Ok(i.volatile.len() as u64))
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.with(|i| {
            let start = offset as usize;
            let source = i
                .volatile
                .get(start..start + out.len())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "read past the end"))?;
            out.copy_from_slice(source);
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|i| {
            i.volatile.resize(len as usize, 0);
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|i| {
            i.durable = i.volatile.clone();
            i.syncs += 1;
            Ok(())
        })
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.with(|i| {
            let start = offset as usize;
            let end = start + data.len();
            if i.volatile.len() < end {
                i.volatile.resize(end, 0);
            }
            i.volatile[start..end].copy_from_slice(data);
            Ok(())
        })
    }
}
