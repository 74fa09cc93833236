//! The embedded registry: one redb file in the master's work dir.
//!
//! One redb table per [`Table`], `&str` keys, protobuf values. A commit is
//! one redb write transaction with its default durability (data and
//! header synced before `commit` returns), and writes each key once: its
//! last write in the commit.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use ::redb::{
    Database, DatabaseError, ReadOnlyDatabase, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, StorageBackend, TableDefinition, TableError,
};
use prost::Message;
use wasmos_core::maps::HashSet;
use wasmos_proto::v1;

use super::{Record, Registry, Store, StoreError, Table, Write};

type Def = TableDefinition<'static, &'static str, &'static [u8]>;

fn definition(table: Table) -> Def {
    TableDefinition::new(table.name())
}

/// A registry in one redb file.
pub struct RedbStore {
    pub(super) db: Database,
    name: String,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("name", &self.name)
            .finish()
    }
}

/// The registry's page cache in the master's memory. redb's default (1
/// GiB) lets it grow with every page a busy master ever wrote; the pages
/// a turn touches (the trees' upper levels, the newest leaves) are few,
/// and what a start reads once it reads from the file.
const CACHE_BYTES: usize = 32 << 20;

impl RedbStore {
    /// The registry's file in a work dir.
    pub fn path_in(work_dir: &Path) -> PathBuf {
        work_dir.join("registry.redb")
    }

    /// Opens (creating) the registry file at `path`. A file that is not a
    /// redb database, or a registry of another schema version, is refused
    /// before anything is written to it: opening a redb file for writing
    /// rewrites its header, so the checks read it read-only first.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let name = format!("the registry {}", path.display());
        if path.exists() {
            preflight(path, &name)?;
        }
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| StoreError::Io(format!("cannot open {name}: {e}")))?;
        Ok(RedbStore { db, name })
    }

    /// Opens a registry on any redb storage backend (tests use
    /// [`super::power_loss`]); `name` says where it is in messages.
    pub fn with_backend(
        backend: impl StorageBackend,
        name: impl Into<String>,
    ) -> Result<RedbStore, StoreError> {
        let name = name.into();
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(|e| StoreError::Io(format!("cannot open {name}: {e}")))?;
        Ok(RedbStore { db, name })
    }

    /// A record that does not decode, named with the file it is in.
    fn named(&self, e: StoreError) -> StoreError {
        match e {
            StoreError::Corrupt(m) => StoreError::Corrupt(format!("{}: {m}", self.name)),
            other => other,
        }
    }

    fn io(&self, what: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io(format!("cannot {what} {}: {e}", self.name))
    }
}

/// Checks an existing registry file read-only: that it is a redb
/// database, and that its header is one [`super::open`] accepts. A file a
/// killed master left without a clean shutdown cannot be opened read-only
/// (redb repairs it when opened for writing); its header is checked after.
fn preflight(path: &Path, name: &str) -> Result<(), StoreError> {
    let db = match ReadOnlyDatabase::open(path) {
        Ok(db) => db,
        Err(DatabaseError::RepairAborted) => return Ok(()),
        Err(e) => return Err(StoreError::Io(format!("cannot open {name}: {e}"))),
    };
    let read = |e: &dyn std::fmt::Display| StoreError::Io(format!("cannot read {name}: {e}"));
    let txn = db.begin_read().map_err(|e| read(&e))?;
    let mut meta = None;
    let mut records = 0;
    for table in Table::ALL {
        let handle = match txn.open_table(definition(table)) {
            Ok(handle) => handle,
            Err(TableError::TableDoesNotExist(_)) => continue,
            Err(e) => return Err(read(&e)),
        };
        if table == Table::Meta {
            if let Some(bytes) = handle.get("meta").map_err(|e| read(&e))? {
                let decoded = v1::RegistryMeta::decode(bytes.value())
                    .map_err(|e| StoreError::Corrupt(format!("{name}: its header: {e}")))?;
                meta = Some(decoded);
            }
        } else {
            records += handle.len().map_err(|e| read(&e))? as usize;
        }
    }
    super::check_header(meta.as_ref(), records, name).map(|_| ())
}

impl Store for RedbStore {
    fn load(&self) -> Result<Registry, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io("read", e))?;
        let mut registry = Registry::default();
        for table in Table::ALL.into_iter().filter(|t| t.is_loaded()) {
            let handle = match txn.open_table(definition(table)) {
                Ok(handle) => handle,
                Err(TableError::TableDoesNotExist(_)) => continue,
                Err(e) => return Err(self.io("read", e)),
            };
            for item in handle.iter().map_err(|e| self.io("read", e))? {
                let (key, value) = item.map_err(|e| self.io("read", e))?;
                registry
                    .insert(table, key.value(), value.value())
                    .map_err(|e| self.named(e))?;
            }
        }
        Ok(registry)
    }

    fn get(&self, table: Table, key: &str) -> Result<Option<Record>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io("read", e))?;
        let handle = match txn.open_table(definition(table)) {
            Ok(handle) => handle,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.io("read", e)),
        };
        let Some(bytes) = handle.get(key).map_err(|e| self.io("read", e))? else {
            return Ok(None);
        };
        Record::decode_at(table, key, bytes.value())
            .map(Some)
            .map_err(|e| self.named(e))
    }

    fn range(
        &self,
        table: Table,
        from: &str,
        to: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io("read", e))?;
        let handle = match txn.open_table(definition(table)) {
            Ok(handle) => handle,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.io("read", e)),
        };
        let items = match to {
            Some(to) if to <= from => return Ok(Vec::new()),
            Some(to) => handle.range(from..to),
            None => handle.range(from..),
        }
        .map_err(|e| self.io("read", e))?;
        let mut records = Vec::new();
        for item in items.take(limit) {
            let (key, value) = item.map_err(|e| self.io("read", e))?;
            records.push(
                Record::decode_at(table, key.value(), value.value()).map_err(|e| self.named(e))?,
            );
        }
        Ok(records)
    }

    fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        // A busy master's commit gathers many turns, and a record changed
        // in several of them (a job's chunk of outcomes, a task launched,
        // running, ended and archived) would be written once per turn. The
        // transaction is atomic, so only each key's last write counts:
        // walking back from the end, earlier writes of a key are skipped.
        let targets: Vec<(Table, Cow<'_, str>)> = writes
            .iter()
            .map(|write| match write {
                Write::Put(record) => (record.table(), Cow::Owned(record.key())),
                Write::Delete(table, key) => (*table, Cow::Borrowed(key.as_str())),
            })
            .collect();
        let mut written: HashSet<(Table, &str)> =
            HashSet::with_capacity_and_hasher(writes.len(), Default::default());
        let txn = self.db.begin_write().map_err(|e| self.io("write", e))?;
        {
            // Tables opened once per commit, as first needed.
            let mut open: Vec<(Table, ::redb::Table<&str, &[u8]>)> = Vec::with_capacity(3);
            for (write, (table, key)) in writes.iter().zip(&targets).rev() {
                if !written.insert((*table, key)) {
                    continue;
                }
                let index = match open.iter().position(|(t, _)| t == table) {
                    Some(i) => i,
                    None => {
                        let handle = txn
                            .open_table(definition(*table))
                            .map_err(|e| self.io("write", e))?;
                        open.push((*table, handle));
                        open.len() - 1
                    }
                };
                let handle = &mut open[index].1;
                match write {
                    Write::Put(record) => {
                        let bytes = record.encode();
                        handle
                            .insert(key.as_ref(), bytes.as_slice())
                            .map_err(|e| self.io("write", e))?;
                    }
                    Write::Delete(..) => {
                        handle
                            .remove(key.as_ref())
                            .map_err(|e| self.io("write", e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| self.io("commit to", e))
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}
