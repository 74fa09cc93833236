//! Checkpoints of executors before the log: a redb file,
//! `<work-dir>/checkpoint.redb`, read once when an upgraded executor first
//! starts (its tasks and unacknowledged updates move into the log).

use std::path::Path;

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use wasmos_proto::v1;

use super::Live;

/// Task id → `CheckpointTask`.
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
/// Task id → `TaskLaunch`, as the master sent it.
const LAUNCHES: TableDefinition<&str, &[u8]> = TableDefinition::new("launches");
/// Sequence number → `TaskStatus`.
const UPDATES: TableDefinition<u64, &[u8]> = TableDefinition::new("updates");
/// `schema` → the layout version of the tables above.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The one layout there was.
const SCHEMA: u64 = 1;

/// Everything the redb checkpoint at `path` holds. One of a newer schema
/// is refused.
pub fn load(path: &Path) -> anyhow::Result<Live> {
    let io = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!("cannot read the checkpoint {}: {e}", path.display())
    };
    let db = Database::open(path).map_err(|e| io(&e))?;
    let txn = db.begin_read().map_err(|e| io(&e))?;
    match txn.open_table(META) {
        Ok(meta) => {
            let schema = meta.get("schema").map_err(|e| io(&e))?.map(|v| v.value());
            if let Some(schema) = schema
                && schema != SCHEMA
            {
                anyhow::bail!(
                    "the checkpoint {} has schema {schema}; this wasmos reads {SCHEMA}: use the wasmos that wrote it, or move the file away (its tasks' updates are then lost)",
                    path.display()
                );
            }
        }
        Err(TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(io(&e)),
    }
    let mut live = Live::default();
    match txn.open_table(TASKS) {
        Ok(table) => {
            for item in table.iter().map_err(|e| io(&e))? {
                let (id, bytes) = item.map_err(|e| io(&e))?;
                let task = v1::CheckpointTask::decode(bytes.value()).map_err(|e| io(&e))?;
                live.tasks.insert(id.value().to_string(), task);
            }
        }
        Err(TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(io(&e)),
    }
    // Absent in checkpoints written before launches were kept.
    match txn.open_table(LAUNCHES) {
        Ok(table) => {
            for item in table.iter().map_err(|e| io(&e))? {
                let (id, bytes) = item.map_err(|e| io(&e))?;
                let launch = v1::TaskLaunch::decode(bytes.value()).map_err(|e| io(&e))?;
                live.launches.insert(id.value().to_string(), launch);
            }
        }
        Err(TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(io(&e)),
    }
    match txn.open_table(UPDATES) {
        Ok(table) => {
            for item in table.iter().map_err(|e| io(&e))? {
                let (seq, bytes) = item.map_err(|e| io(&e))?;
                let status = v1::TaskStatus::decode(bytes.value()).map_err(|e| io(&e))?;
                live.updates.insert(seq.value(), status);
            }
        }
        Err(TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(io(&e)),
    }
    Ok(live)
}

/// Writes a redb checkpoint as executors before the log did (tests).
#[cfg(test)]
pub fn write(path: &Path, schema: u64, live: &Live) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        txn.open_table(META)
            .unwrap()
            .insert("schema", schema)
            .unwrap();
        let mut tasks = txn.open_table(TASKS).unwrap();
        for (id, task) in &live.tasks {
            tasks
                .insert(id.as_str(), task.encode_to_vec().as_slice())
                .unwrap();
        }
        let mut launches = txn.open_table(LAUNCHES).unwrap();
        for (id, launch) in &live.launches {
            launches
                .insert(id.as_str(), launch.encode_to_vec().as_slice())
                .unwrap();
        }
        let mut updates = txn.open_table(UPDATES).unwrap();
        for (seq, status) in &live.updates {
            updates
                .insert(*seq, status.encode_to_vec().as_slice())
                .unwrap();
        }
    }
    txn.commit().unwrap();
}
