//! Checkpoints of executors before the log: a redb file,
//! `<work-dir>/checkpoint.redb`, read once when an upgraded executor first
//! starts (its tasks and unacknowledged updates move into the log).

use std::path::Path;

use prost::Message;
use redb::{
    Database, Key, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableError,
};
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
    each(&txn, TASKS, &io, |id, bytes| {
        let task = v1::CheckpointTask::decode(bytes).map_err(|e| io(&e))?;
        live.tasks.insert(id.to_string(), task);
        Ok(())
    })?;
    // Absent in checkpoints written before launches were kept.
    each(&txn, LAUNCHES, &io, |id, bytes| {
        let launch = v1::TaskLaunch::decode(bytes).map_err(|e| io(&e))?;
        live.launches.insert(id.to_string(), launch);
        Ok(())
    })?;
    each(&txn, UPDATES, &io, |seq, bytes| {
        let status = v1::TaskStatus::decode(bytes).map_err(|e| io(&e))?;
        live.updates.insert(seq, status);
        Ok(())
    })?;
    Ok(live)
}

/// Calls `each` with every entry of `table`, in key order; a table the
/// file does not have has none.
fn each<K: Key + 'static>(
    txn: &ReadTransaction,
    table: TableDefinition<K, &[u8]>,
    io: &impl Fn(&dyn std::fmt::Display) -> anyhow::Error,
    mut each: impl FnMut(K::SelfType<'_>, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let table = match txn.open_table(table) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(io(&e)),
    };
    for item in table.iter().map_err(|e| io(&e))? {
        let (key, value) = item.map_err(|e| io(&e))?;
        each(key.value(), value.value())?;
    }
    Ok(())
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
