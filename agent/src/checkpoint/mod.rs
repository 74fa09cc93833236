//! The executor's checkpoint: the tasks it has not forgotten and the status
//! updates the framework has not acknowledged, in `<work-dir>/checkpoint.redb`,
//! so that after any restart (the executor's, or the machine's) every
//! unacknowledged update is sent again and every task that was running is
//! accounted for.
//!
//! Writes come in batches, one redb transaction each. Most are committed
//! without a sync (a launch, `RUNNING`, an acknowledgement: the page cache
//! keeps them across a `kill -9`, and a power cut that loses them costs no
//! more than a task reported `LOST`); a batch carrying a terminal update is
//! synced, and the agent told so (`synced`), before a framework hears of
//! the end, so a framework never sees an end the executor could forget.
//!
//! A task's launch (its spec and MAC, which a restarted master adopts the
//! task from) is written once, in `launches`; its record in `tasks`, which
//! every state change rewrites, stays a few bytes.
//!
//! [`power_loss`] is a backend for tests that keeps unsynced writes in
//! memory only: a `kill -9` then loses exactly what a power cut would.

pub mod power_loss;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use wasmos_proto::v1;

/// Task id → `CheckpointTask`.
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
/// Task id → `TaskLaunch`, as the master sent it (written once).
const LAUNCHES: TableDefinition<&str, &[u8]> = TableDefinition::new("launches");
/// Sequence number → `TaskStatus`, in the order the updates were made.
const UPDATES: TableDefinition<u64, &[u8]> = TableDefinition::new("updates");
/// `schema` → the layout version of the tables above.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SCHEMA: u64 = 1;

/// How the checkpoint reaches the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// A redb file, as in production.
    #[default]
    File,
    /// A file that only changes when redb syncs (tests: see [`power_loss`]).
    /// Its synced commits also wait while `<work-dir>/hold-syncs` exists,
    /// so a test can cut the power between an end going out and its sync.
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
#[derive(Debug, Clone)]
pub enum Write {
    /// A task's state, without its `spec` and `launch_mac` (see `Launch`).
    Task(String, v1::CheckpointTask),
    /// A task's launch; forgotten with the task.
    Launch(String, v1::TaskLaunch),
    ForgetTask(String),
    Update(u64, v1::TaskStatus),
    ForgetUpdate(u64),
}

/// The open checkpoint.
pub struct Checkpoint {
    db: Database,
    path: PathBuf,
    /// Synced commits wait while this file exists (power-loss tests).
    hold_syncs_while: Option<PathBuf>,
}

impl Checkpoint {
    /// Where the checkpoint of `work_dir` lives.
    pub fn path_in(work_dir: &Path) -> PathBuf {
        work_dir.join("checkpoint.redb")
    }

    /// Opens (creating) the checkpoint in `work_dir` and reads it whole. A
    /// checkpoint of a newer schema is refused, never overwritten.
    pub fn open(work_dir: &Path, backend: Backend) -> anyhow::Result<(Checkpoint, Loaded)> {
        let path = Self::path_in(work_dir);
        let db = match backend {
            Backend::File => Database::builder().create(&path),
            Backend::PowerLoss => {
                Database::builder().create_with_backend(power_loss::FileImage::open(&path)?)
            }
        }
        .map_err(|e| anyhow::anyhow!("cannot open the checkpoint {}: {e}", path.display()))?;
        let checkpoint = Checkpoint {
            db,
            path,
            hold_syncs_while: (backend == Backend::PowerLoss).then(|| work_dir.join("hold-syncs")),
        };
        let loaded = checkpoint.load()?;
        Ok((checkpoint, loaded))
    }

    fn load(&self) -> anyhow::Result<Loaded> {
        let io = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!("cannot read the checkpoint {}: {e}", self.path.display())
        };
        let txn = self.db.begin_read().map_err(|e| io(&e))?;
        match txn.open_table(META) {
            Ok(meta) => {
                let schema = meta.get("schema").map_err(|e| io(&e))?.map(|v| v.value());
                if let Some(schema) = schema
                    && schema != SCHEMA
                {
                    anyhow::bail!(
                        "the checkpoint {} has schema {schema}; this wasmos reads {SCHEMA}: use the wasmos that wrote it, or move the file away (its tasks' updates are then lost)",
                        self.path.display()
                    );
                }
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(io(&e)),
        }
        let mut loaded = Loaded::default();
        match txn.open_table(TASKS) {
            Ok(table) => {
                for item in table.iter().map_err(|e| io(&e))? {
                    let (id, bytes) = item.map_err(|e| io(&e))?;
                    let task = v1::CheckpointTask::decode(bytes.value()).map_err(|e| io(&e))?;
                    loaded.tasks.insert(id.value().to_string(), task);
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
                    if let Some(task) = loaded.tasks.get_mut(id.value()) {
                        task.spec = launch.spec;
                        task.launch_mac = launch.mac;
                        task.launch_epoch = launch.master_epoch;
                    }
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
                    loaded.updates.insert(seq.value(), status);
                }
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(io(&e)),
        }
        Ok(loaded)
    }

    /// Applies `writes` in one transaction, synced to the disk when
    /// `durable`.
    pub fn commit(&self, writes: &[Write], durable: bool) -> anyhow::Result<()> {
        let io = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!("cannot write the checkpoint {}: {e}", self.path.display())
        };
        if durable && let Some(gate) = &self.hold_syncs_while {
            while gate.exists() {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        let mut txn = self.db.begin_write().map_err(|e| io(&e))?;
        if !durable {
            txn.set_durability(Durability::None).map_err(|e| io(&e))?;
        }
        {
            let mut meta = txn.open_table(META).map_err(|e| io(&e))?;
            meta.insert("schema", SCHEMA).map_err(|e| io(&e))?;
            let mut tasks = txn.open_table(TASKS).map_err(|e| io(&e))?;
            let mut launches = txn.open_table(LAUNCHES).map_err(|e| io(&e))?;
            let mut updates = txn.open_table(UPDATES).map_err(|e| io(&e))?;
            for write in writes {
                match write {
                    Write::Task(id, task) => {
                        tasks
                            .insert(id.as_str(), task.encode_to_vec().as_slice())
                            .map_err(|e| io(&e))?;
                    }
                    Write::Launch(id, launch) => {
                        launches
                            .insert(id.as_str(), launch.encode_to_vec().as_slice())
                            .map_err(|e| io(&e))?;
                    }
                    Write::ForgetTask(id) => {
                        tasks.remove(id.as_str()).map_err(|e| io(&e))?;
                        launches.remove(id.as_str()).map_err(|e| io(&e))?;
                    }
                    Write::Update(seq, status) => {
                        updates
                            .insert(*seq, status.encode_to_vec().as_slice())
                            .map_err(|e| io(&e))?;
                    }
                    Write::ForgetUpdate(seq) => {
                        updates.remove(*seq).map_err(|e| io(&e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| io(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(task: &str, state: v1::TaskState) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: task.into(),
            state: state as i32,
            uuid: vec![1, 2, 3],
            ..Default::default()
        }
    }

    #[test]
    fn what_is_committed_is_loaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let (c, loaded) = Checkpoint::open(dir.path(), Backend::File).unwrap();
        assert!(loaded.tasks.is_empty() && loaded.updates.is_empty());
        let task = v1::CheckpointTask {
            framework_id: "f".into(),
            artifact: "a".into(),
            state: v1::TaskState::Running as i32,
            ..Default::default()
        };
        c.commit(
            &[
                Write::Task("t1".into(), task.clone()),
                Write::Task("t2".into(), task.clone()),
                Write::Update(1, status("t1", v1::TaskState::Running)),
                Write::Update(2, status("t1", v1::TaskState::Finished)),
            ],
            false,
        )
        .unwrap();
        c.commit(
            &[Write::ForgetUpdate(1), Write::ForgetTask("t2".into())],
            true,
        )
        .unwrap();
        drop(c);
        let (_, loaded) = Checkpoint::open(dir.path(), Backend::File).unwrap();
        assert_eq!(loaded.tasks.keys().collect::<Vec<_>>(), ["t1"]);
        assert_eq!(loaded.tasks["t1"], task);
        assert_eq!(loaded.updates.len(), 1);
        assert_eq!(loaded.updates[&2].state(), v1::TaskState::Finished);
    }

    #[test]
    fn a_launch_is_written_once_and_comes_back_with_its_task() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = Checkpoint::open(dir.path(), Backend::File).unwrap();
        let spec = v1::TaskSpec {
            task_id: "t1".into(),
            artifact: "a".into(),
            ..Default::default()
        };
        let state = |state: v1::TaskState| v1::CheckpointTask {
            framework_id: "f".into(),
            artifact: "a".into(),
            state: state as i32,
            ..Default::default()
        };
        let launch = |id: &str| v1::TaskLaunch {
            framework_id: "f".into(),
            spec: Some(v1::TaskSpec {
                task_id: id.into(),
                ..spec.clone()
            }),
            mac: vec![9; 32],
            master_epoch: 4,
        };
        c.commit(
            &[
                Write::Task("t1".into(), state(v1::TaskState::Staging)),
                Write::Launch("t1".into(), launch("t1")),
                Write::Task("t2".into(), state(v1::TaskState::Staging)),
                Write::Launch("t2".into(), launch("t2")),
            ],
            false,
        )
        .unwrap();
        // State changes rewrite the small record only; t2 is forgotten.
        c.commit(
            &[
                Write::Task("t1".into(), state(v1::TaskState::Running)),
                Write::ForgetTask("t2".into()),
            ],
            true,
        )
        .unwrap();
        drop(c);
        let (_, loaded) = Checkpoint::open(dir.path(), Backend::File).unwrap();
        assert_eq!(loaded.tasks.keys().collect::<Vec<_>>(), ["t1"]);
        let t1 = &loaded.tasks["t1"];
        assert_eq!(t1.state(), v1::TaskState::Running);
        assert_eq!(t1.spec.as_ref(), Some(&spec));
        assert_eq!(t1.launch_mac, vec![9; 32]);
        assert_eq!(t1.launch_epoch, 4);
    }

    #[test]
    fn the_power_loss_backend_keeps_only_synced_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = Checkpoint::open(dir.path(), Backend::PowerLoss).unwrap();
        c.commit(
            &[Write::Update(1, status("synced", v1::TaskState::Finished))],
            true,
        )
        .unwrap();
        c.commit(
            &[Write::Update(2, status("unsynced", v1::TaskState::Running))],
            false,
        )
        .unwrap();
        // A process that dies here: its memory (the unsynced batch) is gone.
        std::mem::forget(c);
        let (_, loaded) = Checkpoint::open(dir.path(), Backend::PowerLoss).unwrap();
        assert_eq!(
            loaded
                .updates
                .values()
                .map(|s| s.task_id.as_str())
                .collect::<Vec<_>>(),
            ["synced"]
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(Checkpoint::path_in(dir.path())).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert("schema", 99).unwrap();
            txn.commit().unwrap();
        }
        let err = Checkpoint::open(dir.path(), Backend::File).err().unwrap();
        assert!(err.to_string().contains("schema 99"), "{err}");
    }
}
