//! A registry in memory: nothing survives the process. For benchmarks (the
//! cost of durability is the durable figure against this one) and tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Record, Registry, Store, StoreError, Table, Write};

/// Records encoded as a durable store would, kept in a map.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<BTreeMap<(Table, String), Vec<u8>>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl Store for MemoryStore {
    fn load(&self) -> Result<Registry, StoreError> {
        let records = self.records.lock().unwrap();
        Registry::decode(
            records
                .iter()
                .map(|((table, key), bytes)| (*table, key.clone(), bytes.clone())),
        )
    }

    fn get(&self, table: Table, key: &str) -> Result<Option<Record>, StoreError> {
        let records = self.records.lock().unwrap();
        records
            .get(&(table, key.to_string()))
            .map(|bytes| Record::decode_at(table, key, bytes))
            .transpose()
    }

    fn range(
        &self,
        table: Table,
        from: &str,
        to: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let records = self.records.lock().unwrap();
        records
            .range((table, from.to_string())..)
            .take_while(|((t, key), _)| *t == table && to.is_none_or(|to| key.as_str() < to))
            .take(limit)
            .map(|((_, key), bytes)| Record::decode_at(table, key, bytes))
            .collect()
    }

    fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        let mut records = self.records.lock().unwrap();
        for write in writes {
            match write {
                Write::Put(record) => {
                    records.insert((record.table(), record.key()), record.encode());
                }
                Write::Delete(table, key) => {
                    records.remove(&(*table, key.clone()));
                }
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "the in-memory registry".into()
    }

    fn is_in_memory(&self) -> bool {
        true
    }
}
