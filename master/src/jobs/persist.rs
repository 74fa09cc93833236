//! The job service's records: what changed, as registry writes joined to
//! the actor's turn, and the jobs rebuilt from them at start.
//!
//! A job is one record (`StoredJob`: state, counts, the counter of
//! indices never started), its spec (`StoredJobSpec`, written once, so the
//! record each turn rewrites stays small) and stored chunks of fixed
//! outcomes, written only when one of their indices changes. Which indices run is not
//! stored: task ids are `<job>-<index>-<attempt>`, so a restarted master
//! rebuilds it from the tasks the core recovered.

use std::collections::HashMap;

use wasmos_proto::v1::{self, IndexState, JobState};

use super::indices::{Counts, Indices, Kept};
use super::{Effect, Job, Jobs, Key, Owner, submit};
use crate::store::{Record, Store, Table, Write, chunk_key, prefix_end, scan};
use crate::{Time, retry};

/// Outcomes of ended jobs kept in memory after a read (a job's results are
/// read page by page; 56 MiB); past it, the least recently read are
/// unloaded.
pub const MAX_OUTCOMES_READ: u64 = 1 << 20;

impl Jobs {
    /// The registry writes that make it hold what changed since the last
    /// call: the records of jobs that changed, their changed chunks, and
    /// the chunks of jobs past their retention gone.
    pub fn writes(&mut self) -> Vec<Write> {
        let mut writes = Vec::new();
        for key in std::mem::take(&mut self.dirty) {
            let Some(job) = self.jobs.get_mut(&key) else {
                continue;
            };
            // Names before the chunks that number them: a store that
            // applies a commit in parts never holds a number without its
            // name.
            for (first, agents) in job.indices.take_new_agents() {
                writes.push(Write::Put(Record::JobAgents(v1::StoredJobAgents {
                    job_id: job.id.clone(),
                    first,
                    agents,
                })));
            }
            for (first, outcomes) in job.indices.take_changed_chunks() {
                writes.push(Write::Put(Record::JobChunk(v1::StoredJobChunk {
                    job_id: job.id.clone(),
                    first,
                    outcomes,
                })));
            }
            if !job.spec_written {
                writes.push(Write::Put(Record::JobSpec(Box::new(v1::StoredJobSpec {
                    job_id: job.id.clone(),
                    spec: Some(job.spec.clone()),
                }))));
                job.spec_written = true;
            }
            let framework = self.frameworks.get(&job.owner).cloned();
            writes.push(Write::Put(Record::Job(Box::new(stored(
                job,
                framework.unwrap_or_default(),
            )))));
            // An ended job's outcomes, now written, leave memory: nothing
            // in the live queue grows with finished work.
            if job.is_ended() && job.loaded {
                self.unloaded += job.indices.outcomes_in_memory();
                job.indices.unload();
                job.loaded = false;
            }
        }
        writes.extend(
            std::mem::take(&mut self.outputs)
                .into_iter()
                .map(|o| Write::Put(Record::JobOutput(o))),
        );
        for (job_id, count) in std::mem::take(&mut self.forgotten) {
            let chunks = count.div_ceil(super::indices::STORED_CHUNK);
            writes.extend((0..chunks).map(|c| {
                Write::Delete(
                    Table::JobChunks,
                    chunk_key(&job_id, c * super::indices::STORED_CHUNK),
                )
            }));
        }
        writes
    }

    /// How many outcomes left memory since the last call (the shell may
    /// then give the freed memory back to the system). A job that never
    /// started an index frees none.
    pub fn take_unloaded(&mut self) -> u64 {
        std::mem::take(&mut self.unloaded)
    }

    /// Jobs past their retention since the last call (or since the
    /// start, of those whose deletes a stopped master left undone), whose
    /// stdout heads and agent records the shell deletes (it reads which
    /// there are), then says so with [`Jobs::outputs_swept`].
    pub fn take_forgotten_outputs(&mut self) -> Vec<String> {
        std::mem::take(&mut self.forgotten_outputs)
    }

    /// Job `id`'s stdout heads and agent records are deleted (durably):
    /// its record says so with its next write, and no later start deletes
    /// them again.
    pub fn outputs_swept(&mut self, id: &str) {
        let Some(key) = submit::parse_job_id(id) else {
            return;
        };
        if let Some(job) = self.jobs.get_mut(&key)
            && job.expired
            && !job.outputs_swept
        {
            job.outputs_swept = true;
            self.dirty.insert(key);
        }
    }

    /// Says which framework `owner`'s jobs run in (their records name it,
    /// so that a restarted master subscribes it again under its id).
    pub fn set_framework(&mut self, owner: &Owner, framework: &str) {
        if self.frameworks.get(owner).map(String::as_str) == Some(framework) {
            return;
        }
        self.frameworks.insert(owner.clone(), framework.to_string());
        let live: Vec<Key> = self
            .live_jobs()
            .filter(|(_, j)| j.owner == *owner)
            .map(|(key, _)| key)
            .collect();
        self.dirty.extend(live);
    }

    /// The framework `owner`'s jobs last ran in, if known.
    pub fn framework(&self, owner: &Owner) -> Option<&str> {
        self.frameworks.get(owner).map(String::as_str)
    }

    /// Owners with a job that has not ended, and their frameworks.
    pub fn live_owners(&self) -> Vec<(Owner, Option<String>)> {
        let mut owners: Vec<Owner> = self.live_jobs().map(|(_, j)| j.owner.clone()).collect();
        owners.sort();
        owners.dedup();
        owners
            .into_iter()
            .map(|o| {
                let framework = self.frameworks.get(&o).cloned();
                (o, framework)
            })
            .collect()
    }

    /// The jobs of a master's start `epoch`, rebuilt from their records,
    /// the chunks `chunks_of` reads for a job id, and the ids of the
    /// tasks the master knows (running again where they name an index).
    /// Jobs whose records cannot be read are left out, each with a note.
    pub fn restore(
        epoch: u64,
        mut records: Vec<v1::StoredJob>,
        mut chunks_of: impl FnMut(&str) -> Result<StoredOutcomes, String>,
        tasks: &[String],
    ) -> (Jobs, Vec<String>) {
        let mut jobs = Jobs::new(epoch);
        let mut notes = Vec::new();
        let mut running: HashMap<&str, Vec<(u32, u32)>> = HashMap::new();
        for task in tasks {
            if let Some((job, index, attempt)) = submit::parse_task_id(task) {
                running.entry(job).or_default().push((index, attempt));
            }
        }
        // Oldest first: a job's dependencies are older than it.
        records.sort_by_key(|r| submit::parse_job_id(&r.job_id));
        // An ended job's outcomes are read now only if a live job runs
        // index by index after it.
        let counterparts: std::collections::HashSet<String> = records
            .iter()
            .filter(|r| !is_ended_state(r.state))
            .filter_map(|r| r.spec.as_ref())
            .map(|spec| spec.after_each.clone())
            .collect();
        for record in records {
            let id = record.job_id.clone();
            let load = !is_ended_state(record.state) || counterparts.contains(&id);
            let restored = restore_job(
                &jobs,
                record,
                load.then_some(&mut chunks_of),
                running.get(id.as_str()).map_or(&[][..], Vec::as_slice),
            );
            match restored {
                Ok((key, job, framework)) => {
                    // An ended job read for a job after it counts as read.
                    if job.is_ended() && job.loaded && job.indices.outcomes_in_memory() > 0 {
                        jobs.read.push_back(key);
                    }
                    jobs.take_in(key, job, framework);
                }
                Err(e) => notes.push(format!("job {id} is left out: {e}")),
            }
        }
        (jobs, notes)
    }

    /// Does job `id` keep its per-index outcomes in the registry only?
    /// Then [`Jobs::load`] them before reading them.
    pub fn unloaded(&self, id: &str) -> bool {
        self.job(id).is_some_and(|j| !j.loaded)
    }

    /// Takes in the stored chunks of job `id`, whose outcomes are only in
    /// the registry (it had ended). Ended jobs read this way stay in memory
    /// for the next pages of their results ([`Jobs::trim_read`]).
    pub fn load(&mut self, id: &str, stored: StoredOutcomes) -> Result<(), String> {
        let Some(key) = self.number_of(id) else {
            return Ok(());
        };
        let Some(job) = self.jobs.get_mut(&key) else {
            return Ok(());
        };
        if job.loaded {
            return Ok(());
        }
        // Agents an older master's record held are still in memory;
        // others are read back with the chunks.
        let (chunks, (names, written)) = stored.into_parts(job.indices.take_agents());
        let mut indices = match Indices::restore(
            job.indices.count(),
            !job.spec.after_each.is_empty(),
            job.indices.kept(),
            chunks,
            &[],
            |_| false,
        ) {
            Ok(indices) => indices,
            Err(e) => {
                job.indices.restore_agents(names, written);
                return Err(e);
            }
        };
        indices.restore_agents(names, written);
        job.indices = indices;
        job.loaded = true;
        self.read.retain(|k| *k != key);
        if job.indices.outcomes_in_memory() > 0 {
            self.read.push_back(key);
        }
        Ok(())
    }

    /// Unloads ended jobs read back, least recently loaded first, past
    /// [`MAX_OUTCOMES_READ`] outcomes in memory.
    pub fn trim_read(&mut self) {
        self.unload_read_beyond(MAX_OUTCOMES_READ);
    }

    /// Unloads the ended jobs loaded for reading, oldest first, until those
    /// left hold at most `max` outcomes in memory (the newest always
    /// stays).
    pub(super) fn unload_read_beyond(&mut self, max: u64) {
        let held = |jobs: &Jobs, key: &Key| {
            jobs.jobs
                .get(key)
                .map_or(0, |j| j.indices.outcomes_in_memory())
        };
        let mut total: u64 = self.read.iter().map(|k| held(self, k)).sum();
        while self.read.len() > 1 && total > max {
            let key = self.read.pop_front().expect("more than one");
            total -= held(self, &key);
            if let Some(job) = self.jobs.get_mut(&key)
                && job.is_ended()
                && job.loaded
                && !job.indices.has_changes()
            {
                self.unloaded += job.indices.outcomes_in_memory();
                job.indices.unload();
                job.loaded = false;
            }
        }
    }

    /// After a restore: kills again what jobs told to stop still run (the
    /// kills may not have gone out), settles what of theirs no longer
    /// runs, and ends the jobs that have nothing left running or waiting.
    pub fn resume(&mut self, now: Time) -> Vec<Effect> {
        let mut effects = Vec::new();
        let live: Vec<Key> = self.live_jobs.iter().copied().collect();
        for key in live {
            let job = self.jobs.get_mut(&key).expect("listed");
            if let Some(state) = job.stopping {
                // What ran and is gone settles as the job's end says.
                job.indices.settle_pending(super::index_end(state));
                self.dirty.insert(key);
                effects.extend(job.kill_running());
            }
            self.regate(key, &mut effects);
            self.settle(key, now, &mut effects);
        }
        effects
    }

    /// Takes in a restored job.
    fn take_in(&mut self, key: Key, job: Job, framework: String) {
        // Expired before its stdout heads and agents were deleted: the
        // shell deletes them now.
        if job.expired && !job.outputs_swept {
            self.forgotten_outputs.push(job.id.clone());
        }
        if !job.spec.idempotency_key.is_empty() {
            self.keys
                .insert((job.owner.clone(), job.spec.idempotency_key.clone()), key);
        }
        if !job.is_ended() {
            *self.live.entry(job.owner.principal.clone()).or_default() += 1;
            self.live_jobs.insert(key);
        }
        if let Some(other) = submit::parse_job_id(&job.spec.after_each)
            && self.jobs.contains_key(&other)
        {
            self.each_dependents.entry(other).or_default().push(key);
        }
        // Only a live job's record names its owner's current framework
        // (an ended one keeps the framework it last ran in).
        if !framework.is_empty() && !job.is_ended() {
            self.frameworks.insert(job.owner.clone(), framework);
        }
        self.jobs.insert(key, job);
    }
}

/// A job's record.
fn stored(job: &Job, framework_id: String) -> v1::StoredJob {
    let kept = job.indices.kept();
    let (unstarted_from, unstarted_state) = kept.unstarted_end.unwrap_or_default();
    v1::StoredJob {
        job_id: job.id.clone(),
        role: job.owner.role.clone(),
        principal: job.owner.principal.clone(),
        // In `job_specs`, written once.
        spec: None,
        state: job.state as i32,
        held: job.held,
        reason: job.reason.clone(),
        stopping: job.stopping.map_or(0, |s| s as i32),
        submitted_ms: job.submitted.millis(),
        ended_ms: job.ended_at.map_or(0, |t| t.millis()),
        expired: job.expired,
        next_fresh: kept.next_fresh,
        unstarted_from,
        unstarted_state: if kept.unstarted_end.is_some() {
            unstarted_state as i32
        } else {
            0
        },
        succeeded: kept.counts.succeeded,
        failed: kept.counts.failed,
        cancelled: kept.counts.cancelled,
        // In `job_agents`, each name written once.
        agents: Vec::new(),
        framework_id,
        output_bytes: job.output_bytes,
        outputs_dropped: job.outputs_dropped,
        outputs_swept: job.outputs_swept,
    }
}

/// One job from its record and chunks, with `running` (index, attempt)
/// running again.
/// With no `chunks_of`, its outcomes stay in the registry.
fn restore_job<F>(
    jobs: &Jobs,
    record: v1::StoredJob,
    chunks_of: Option<&mut F>,
    running: &[(u32, u32)],
) -> Result<(Key, Job, String), String>
where
    F: FnMut(&str) -> Result<StoredOutcomes, String>,
{
    let key = submit::parse_job_id(&record.job_id).ok_or("its id is not a job id")?;
    let spec = record.spec.clone().ok_or("it has no spec")?;
    let checked = submit::check(&spec)?;
    let state = JobState::try_from(record.state)
        .ok()
        .filter(|s| *s != JobState::Unspecified)
        .ok_or("its state is unknown")?;
    let stopping = JobState::try_from(record.stopping)
        .ok()
        .filter(|s| *s != JobState::Unspecified);
    let unstarted_end = IndexState::try_from(record.unstarted_state)
        .ok()
        .filter(|s| *s != IndexState::Pending)
        .map(|s| (record.unstarted_from, s));
    let kept = Kept {
        next_fresh: record.next_fresh,
        unstarted_end,
        counts: Counts {
            succeeded: record.succeeded,
            failed: record.failed,
            cancelled: record.cancelled,
        },
    };
    let loaded = record.expired || chunks_of.is_some();
    let stored = match chunks_of {
        Some(chunks_of) if !record.expired => chunks_of(&record.job_id)?,
        _ => StoredOutcomes::default(),
    };
    // A record of a master before `job_agents` holds the whole list: kept
    // in memory, and written out with the job's next record (unless the
    // job expired: its agents are deleted, not written again).
    let old_names = if record.expired {
        Vec::new()
    } else {
        record.agents
    };
    let (chunks, (names, written)) = stored.into_parts((old_names, 0));
    let counterpart = submit::parse_job_id(&spec.after_each).and_then(|k| jobs.jobs.get(&k));
    let ready = |index: u32| {
        counterpart.is_some_and(|other| other.indices.outcome(index).state == IndexState::Succeeded)
    };
    // An ended job runs nothing (a task of it the core still holds is one
    // whose end was written but not yet acknowledged).
    let running: &[(u32, u32)] = if is_ended_state(record.state) {
        &[]
    } else {
        running
    };
    let mut indices = Indices::restore(
        spec.count,
        !spec.after_each.is_empty(),
        kept,
        chunks,
        running,
        ready,
    )?;
    indices.restore_agents(names, written);
    let ended_at = (record.ended_ms > 0).then_some(Time(record.ended_ms));
    let job = Job {
        id: record.job_id,
        owner: Owner {
            role: record.role,
            principal: record.principal,
        },
        policy: spec.retry.clone().unwrap_or_else(retry::default_policy),
        shape: checked.shape,
        spec,
        submitted: Time(record.submitted_ms),
        state,
        held: record.held,
        reason: record.reason,
        stopping,
        indices,
        ended_at,
        expired: record.expired,
        loaded,
        // Written again with the job's next record: a record of a master
        // before `job_specs` still holds its spec, and the next one will
        // not.
        spec_written: false,
        output_bytes: record.output_bytes,
        outputs_dropped: record.outputs_dropped,
        outputs_swept: record.outputs_swept,
    };
    Ok((key, job, record.framework_id))
}

/// What the registry holds of a job beside its record and spec, read by
/// range: its stored chunks of outcomes and its records of agents.
#[derive(Debug, Default)]
pub struct StoredOutcomes {
    pub chunks: Vec<v1::StoredJobChunk>,
    pub agents: Vec<v1::StoredJobAgents>,
}

/// Reads job `job_id`'s chunks and records of agents from `store` (a
/// blocking read).
pub fn read_outcomes(store: &dyn Store, job_id: &str) -> Result<StoredOutcomes, String> {
    let (from, to) = chunk_range(job_id);
    let mut stored = StoredOutcomes::default();
    for table in [Table::JobChunks, Table::JobAgents] {
        scan(
            store,
            table,
            &from,
            to.as_deref(),
            &mut |record| match record {
                Record::JobChunk(c) => stored.chunks.push(c),
                Record::JobAgents(a) => stored.agents.push(a),
                _ => {}
            },
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(stored)
}

/// A job's list of agents and how many of them the registry holds.
type AgentList = (Vec<String>, usize);

impl StoredOutcomes {
    /// Its chunks as (first index, outcome bytes), and the job's agents
    /// with how many of them the registry holds: `held` (names in memory,
    /// as a record of an older master held them, and how many of them are
    /// written) if there are any, else those of its records of agents.
    fn into_parts(self, held: AgentList) -> (Vec<(u32, Vec<u8>)>, AgentList) {
        let chunks = self
            .chunks
            .into_iter()
            .map(|c| (c.first, c.outcomes))
            .collect();
        let agents = if held.0.is_empty() {
            let names = agents_from(self.agents);
            let written = names.len();
            (names, written)
        } else {
            held
        };
        (chunks, agents)
    }
}

/// A job's list of agents from its records, in order of place.
fn agents_from(mut records: Vec<v1::StoredJobAgents>) -> Vec<String> {
    records.sort_by_key(|r| r.first);
    let mut names = Vec::new();
    for record in records {
        // A place no record names (a lost record) reads as no agent.
        names.resize(record.first as usize, String::new());
        names.extend(record.agents);
    }
    names
}

fn is_ended_state(state: i32) -> bool {
    matches!(
        JobState::try_from(state),
        Ok(JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    )
}

/// The range of keys that holds `job_id`'s chunks.
pub fn chunk_range(job_id: &str) -> (String, Option<String>) {
    let prefix = format!("{job_id}/");
    let end = prefix_end(&prefix);
    (prefix, end)
}
