//! A store whose commits wait while a file exists: how end-to-end tests
//! hold the master between sending a launch (or freeing an end) and making
//! it durable, to kill it right there (`wasmos master --hold-commits-while`,
//! a hidden flag). The windows it opens are a millisecond wide otherwise.
//!
//! Whether a held commit holds a launch depends on what the master was
//! doing when the gate went up, so while one waits, `<gate>.launches` lists
//! the tasks it launches (one id a line, none if it launches nothing). A
//! gate that says `launches` lets commits that launch nothing through and
//! holds the first that launches something: a test that wants launches
//! caught need not lift the gate and try again (the commit of a turn's ends
//! would be caught each time, and its launches commit right after it).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmos_proto::v1;

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

    /// Where a held commit's launches are listed: `<gate>.launches`.
    fn launches_listing(&self) -> PathBuf {
        let mut name = self.gate.as_os_str().to_owned();
        name.push(".launches");
        PathBuf::from(name)
    }
}

/// The tasks these writes launch: task records still `STAGING`, as a
/// launch is written in the turn of its `Accept`.
fn launches(writes: &[Write]) -> Vec<String> {
    writes
        .iter()
        .filter_map(|w| match w {
            Write::Put(Record::Task(task))
                if task.status.as_ref().map(|s| s.state()) == Some(v1::TaskState::Staging) =>
            {
                task.spec.as_ref().map(|s| s.task_id.clone())
            }
            _ => None,
        })
        .collect()
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
        let holds = |gate: &str| gate.trim() != "launches" || !launches(writes).is_empty();
        if std::fs::read_to_string(&self.gate).is_ok_and(|gate| holds(&gate)) {
            let listing = self.launches_listing();
            let held = launches(writes).join("\n");
            // Whole or not at all: written aside, then renamed.
            let aside = listing.with_extension("launches.tmp");
            std::fs::write(&aside, held)
                .and_then(|()| std::fs::rename(&aside, &listing))
                .map_err(|e| StoreError::Io(format!("{}: {e}", listing.display())))?;
            while self.gate.exists() {
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = std::fs::remove_file(&listing);
        }
        self.inner.commit(writes)
    }

    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }

    fn describe(&self) -> String {
        format!(
            "{} (commits held while {} exists)",
            self.inner.describe(),
            self.gate.display()
        )
    }
}
