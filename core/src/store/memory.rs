//! A registry in memory: nothing survives the process. For benchmarks (the
//! cost of durability is the durable figure against this one) and tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Registry, Store, StoreError, Table, Write};

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
