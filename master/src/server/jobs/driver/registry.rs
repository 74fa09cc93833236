//! The driver and the registry: its writes joined to the actor's turn,
//! the jobs rebuilt at start, an ended job's outcomes read when asked, and
//! an expired job's stdout heads deleted.

use tokio::sync::oneshot;
use tonic::Status;
use wasmos_proto::v1;

use super::super::super::actor::Command;
use super::Driver;
use crate::access::{Grant, Principal};
use crate::ids::FrameworkId;
use crate::jobs::{Jobs, persist};
use crate::store::{Record, Store, Table, scan};

/// Outcomes of this many indices leaving memory at once (a big job ended)
/// are worth handing the freed pages back to the system.
const TRIM_AFTER_INDICES: u64 = 1 << 16;

/// Reads job `job_id`'s chunks from `store` (a blocking read).
fn read_chunks(store: &dyn Store, job_id: &str) -> Result<Vec<v1::StoredJobChunk>, String> {
    let (from, to) = persist::chunk_range(job_id);
    let mut chunks = Vec::new();
    scan(
        store,
        Table::JobChunks,
        &from,
        to.as_deref(),
        &mut |record| {
            if let Record::JobChunk(c) = record {
                chunks.push(c);
            }
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(chunks)
}

impl Driver {
    /// Rebuilds the jobs of the registry: the tasks of their owners'
    /// frameworks the core recovered run again (none of their indices
    /// starts anew while an agent that may hold it has yet to come back:
    /// the core keeps such tasks until it decides they are lost), every
    /// owner with a live job subscribes again under its framework's id and
    /// reconciles.
    pub(super) async fn restore(&mut self, stored: Vec<v1::StoredJob>, epoch: u64) {
        if stored.is_empty() {
            return;
        }
        let frameworks: Vec<String> = stored
            .iter()
            .filter(|j| !j.framework_id.is_empty())
            .map(|j| j.framework_id.clone())
            .collect();
        let tasks = self
            .actor
            .query(move |core, _| {
                let mut frameworks = frameworks;
                frameworks.sort();
                frameworks.dedup();
                frameworks
                    .iter()
                    .flat_map(|f| core.framework_tasks(f))
                    .collect::<Vec<String>>()
            })
            .await
            .unwrap_or_default();
        let count = stored.len();
        let store = self.store.clone();
        let restored = tokio::task::spawn_blocking(move || {
            Jobs::restore(epoch, stored, |job| read_chunks(&*store, job), &tasks)
        })
        .await;
        let (jobs, notes) = match restored {
            Ok(restored) => restored,
            Err(e) => {
                tracing::error!(error = %e, "the jobs of the registry could not be read; the job service starts empty");
                return;
            }
        };
        for note in &notes {
            tracing::warn!("registry: {note}");
        }
        self.jobs = jobs;
        let live = self.jobs.live_owners();
        tracing::info!(
            jobs = count - notes.len(),
            owners = live.len(),
            "jobs loaded from the registry"
        );
        for (owner, framework) in live {
            self.principals.insert(
                owner.clone(),
                // The authority the job was submitted with: its role.
                Principal {
                    name: owner.principal.clone(),
                    accessor: String::new(),
                    grant: Grant::Roles(vec![owner.role.clone()]),
                },
            );
            let previous = framework.map(FrameworkId::from);
            let subscribed = match self.subscribe(&owner, previous.as_ref()).await {
                Ok(id) => Ok(id),
                Err(e) if previous.is_some() => {
                    tracing::warn!(principal = %owner.principal, error = %e, "a job framework could not subscribe again under its id; its jobs run in a new one");
                    self.subscribe(&owner, None).await
                }
                Err(e) => Err(e),
            };
            match subscribed {
                Ok(framework) => self.reconcile(&owner, framework).await,
                Err(e) => {
                    tracing::error!(principal = %owner.principal, error = %e, "a job framework could not subscribe; its jobs wait");
                }
            }
        }
        let effects = self.jobs.resume(self.now());
        self.carry_out(effects).await;
    }

    /// Reads job `id`'s outcomes from the registry if they are only there.
    pub(super) async fn load(&mut self, id: &str) -> Result<(), Status> {
        if !self.jobs.unloaded(id) {
            return Ok(());
        }
        // Its last outcomes may still be in a commit: read after it.
        self.durable(Vec::new()).await?;
        let store = self.store.clone();
        let job = id.to_string();
        let chunks = tokio::task::spawn_blocking(move || read_chunks(&*store, &job))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .and_then(|chunks| self.jobs.load(id, chunks));
        chunks.map_err(|e| {
            tracing::error!(job = %id, error = %e, "a job's results could not be read from the registry");
            Status::internal(format!("the results of {id} could not be read: {e}"))
        })
    }

    /// Deletes the stdout heads kept for `job` (past its retention).
    pub(super) async fn forget_outputs(&mut self, job: String) {
        let store = self.store.clone();
        let keys = tokio::task::spawn_blocking(move || {
            let (from, to) = persist::chunk_range(&job);
            let mut keys = Vec::new();
            scan(
                &*store,
                Table::JobOutputs,
                &from,
                to.as_deref(),
                &mut |record| keys.push(record.key()),
            )
            .map(|()| keys)
        })
        .await;
        match keys {
            Ok(Ok(keys)) if !keys.is_empty() => {
                // A page of deletes per commit: a million-index job's heads
                // must not make one turn's commit huge.
                for page in keys.chunks(10_000) {
                    let writes = page
                        .iter()
                        .map(|key| crate::store::Write::Delete(Table::JobOutputs, key.clone()))
                        .collect();
                    let (reply, done) = oneshot::channel();
                    if self
                        .actor
                        .send(Command::Persist { writes, reply })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let _ = done.await;
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the outputs of an expired job could not be read to delete them")
            }
            Err(e) => {
                tracing::warn!(error = %e, "the outputs of an expired job could not be deleted")
            }
        }
    }

    /// Joins what the jobs changed to the actor's next commit; with
    /// `durable`, waits for it: an error if it failed (the master then
    /// stops: a registry that cannot be written is the end of it).
    pub(super) async fn persist(&mut self, durable: bool) -> Result<(), Status> {
        let writes = self.jobs.writes();
        if self.jobs.take_unloaded() >= TRIM_AFTER_INDICES {
            tokio::task::spawn_blocking(super::super::super::memory::return_free_memory);
        }
        if writes.is_empty() {
            return Ok(());
        }
        if durable {
            return self.durable(writes).await;
        }
        let (reply, _done) = oneshot::channel();
        self.actor.send(Command::Persist { writes, reply }).await?;
        Ok(())
    }

    /// Joins `writes` (maybe none) to the actor's next commit and waits
    /// until it, and every commit before it, is durable: with none it is a
    /// barrier that what the service wrote so far can be read back.
    async fn durable(&mut self, writes: Vec<crate::store::Write>) -> Result<(), Status> {
        let (reply, done) = oneshot::channel();
        self.actor.send(Command::Persist { writes, reply }).await?;
        done.await.map_err(|_| {
            Status::unavailable("the registry could not be written; the master is stopping")
        })
    }
}
