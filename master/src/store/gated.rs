//! A store whose commits wait while a file exists: how end-to-end tests
//! hold the master between sending a launch (or freeing an end) and making
//! it durable, to kill it right there (`wasmos master --hold-commits-while`,
//! a hidden flag). The windows it opens are a millisecond wide otherwise.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{Record, Registry, Store, StoreError, Table, Write};

pub struct GatedStore {
    inner: Arc<dyn Store>,
    gate: PathBuf,
}

impl GatedStore {
    /// `inner`, whose commits wait while `gate` exists.
    pub fn new(inner: Arc<dyn Store>, gate: PathBuf) -> GatedStore {
        GatedStore { inner, gate }
    }
}

impl Store for GatedStore {
    fn load(&self) -> Result<Registry, StoreError> {
        self.inner.load()
    }

    fn get(&self, table: Table, key: &str) -> Result<Option<Record>, StoreError> {
        self.inner.get(table, key)
    }

    fn range(
        &self,
        table: Table,
        from: &str,
        to: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.inner.range(table, from, to, limit)
    }

    fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        while self.gate.exists() {
            std::thread::sleep(Duration::from_millis(2));
        }
        self.inner.commit(writes)
    }

    fn describe(&self) -> String {
        format!(
            "{} (commits held while {} exists)",
            self.inner.describe(),
            self.gate.display()
        )
    }
}
