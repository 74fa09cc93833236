//! The job service's reads of the registry, all off the actor's thread:
//! the jobs rebuilt at start, an ended job's outcomes read when a call
//! needs them, and an expired job's stdout heads found to delete.

use std::sync::Arc;

use tokio::sync::oneshot;
use tonic::Status;
use wasmos_proto::v1;

use super::super::super::actor::Command;
use super::super::super::handle::ActorHandle;
use super::{Call, JobsHandle, Loaded};
use crate::jobs::Jobs;
use crate::jobs::persist;
use crate::store::{Store, Table, Write, scan};

/// Rebuilds the jobs of the registry (a blocking read, before the actor
/// starts): the tasks of their owners' frameworks the core recovered
/// (`tasks`) run again. Jobs whose records cannot be read are left out
/// with a warning.
pub fn restore(
    store: &dyn Store,
    stored: Vec<v1::StoredJob>,
    epoch: u64,
    tasks: &[String],
) -> Jobs {
    if stored.is_empty() {
        return Jobs::new(epoch);
    }
    let count = stored.len();
    let (jobs, notes) = Jobs::restore(
        epoch,
        stored,
        |job| persist::read_outcomes(store, job),
        tasks,
    );
    for note in &notes {
        tracing::warn!("registry: {note}");
    }
    tracing::info!(
        jobs = count - notes.len(),
        owners = jobs.live_owners().len(),
        "jobs loaded from the registry"
    );
    jobs
}

/// The frameworks whose tasks [`restore`] needs to know: those the stored
/// jobs ran in.
pub fn frameworks_of(stored: &[v1::StoredJob]) -> Vec<String> {
    let mut frameworks: Vec<String> = stored
        .iter()
        .filter(|j| !j.framework_id.is_empty())
        .map(|j| j.framework_id.clone())
        .collect();
    frameworks.sort();
    frameworks.dedup();
    frameworks
}

impl JobsHandle {
    /// The outcomes of those of `ids` that keep them in the registry only
    /// (ended jobs), read after every write before this call is durable.
    pub async fn read_unloaded(
        &self,
        store: &Arc<dyn Store>,
        ids: Vec<String>,
    ) -> Result<Vec<Loaded>, Status> {
        let ids: Vec<String> = ids.into_iter().filter(|id| !id.is_empty()).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let unloaded = self.ask(|reply| Call::Unloaded { ids, reply }).await?;
        if unloaded.is_empty() {
            return Ok(Vec::new());
        }
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            unloaded
                .into_iter()
                .map(|job_id| {
                    let stored = persist::read_outcomes(&*store, &job_id).map_err(|e| {
                        tracing::error!(job = %job_id, error = %e, "a job's results could not be read from the registry");
                        Status::internal(format!("the results of {job_id} could not be read: {e}"))
                    })?;
                    Ok(Loaded { job_id, stored })
                })
                .collect()
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }

    /// Brings job `id`'s per-index outcomes into memory (an ended job's
    /// are in the registry only, until asked for).
    pub async fn load(&self, store: &Arc<dyn Store>, id: &str) -> Result<(), Status> {
        let loaded = self.read_unloaded(store, vec![id.to_string()]).await?;
        if loaded.is_empty() {
            return Ok(());
        }
        self.ask(|reply| Call::Load { loaded, reply }).await?
    }
}

/// Deletes the stdout heads and the records of agents of jobs past their
/// retention, every `every`: their keys are read here, the deletes go to
/// the actor a page per commit (a million-index job's heads must not make
/// one commit huge). Once they are durable the job's record says so; a
/// master stopped before that deletes them again after its next start
/// (the job service lists such jobs at once).
pub async fn forget_outputs(
    jobs: JobsHandle,
    actor: ActorHandle,
    store: Arc<dyn Store>,
    every: std::time::Duration,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Ok(forgotten) = jobs.ask(|reply| Call::TakeForgottenOutputs { reply }).await else {
            return;
        };
        let mut swept = Vec::with_capacity(forgotten.len());
        for job in forgotten {
            let store = store.clone();
            let (from, to) = persist::chunk_range(&job);
            let keys = tokio::task::spawn_blocking(move || {
                let mut keys = Vec::new();
                for table in [Table::JobOutputs, Table::JobAgents] {
                    scan(&*store, table, &from, to.as_deref(), &mut |record| {
                        keys.push((table, record.key()))
                    })?;
                }
                Ok::<_, crate::store::StoreError>(keys)
            })
            .await;
            let keys = match keys {
                Ok(Ok(keys)) => keys,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "the outputs of an expired job could not be read to delete them");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the outputs of an expired job could not be deleted");
                    continue;
                }
            };
            for page in keys.chunks(10_000) {
                let writes = page
                    .iter()
                    .map(|(table, key)| Write::Delete(*table, key.clone()))
                    .collect();
                let (reply, done) = oneshot::channel();
                if actor
                    .send(Command::Persist { writes, reply })
                    .await
                    .is_err()
                {
                    return;
                }
                if done.await.is_err() {
                    return;
                }
            }
            swept.push(job);
        }
        // One write for the batch: a first start after an upgrade lists
        // every expired job of the registry.
        if !swept.is_empty()
            && jobs
                .ask(|reply| Call::OutputsSwept { ids: swept, reply })
                .await
                .is_err()
        {
            return;
        }
    }
}
