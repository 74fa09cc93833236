//! The job service's state machine: jobs that live in the master, run by
//! the master itself as one framework per owner (role and principal), so
//! that DRF, quotas, filters and permissions treat them as any framework.
//!
//! Sans-IO like the core: no tokio, no clock (`now` is given), no store.
//! The shell feeds it the offers and updates of its owners' frameworks and
//! carries out what it answers: [`Placement`]s become `Accept`s and
//! [`Effect`]s become kills and notices, in the same turn as the core.
//!
//! - [`submit`]: a job checked against the limits; the task spec of each
//!   index, made only when the index starts (task ids
//!   `<job>-<index>-<attempt>`).
//! - [`indices`]: one job's indices, a counter and a queue until they
//!   start, fixed-size outcomes in chunks after.
//! - [`deps`]: whether a job may start, given the jobs it runs after.
//!
//! A job's life: `HELD` (until released) or `WAITING` (for dependencies),
//! `QUEUED`, `RUNNING` from its first start, and one end: `SUCCEEDED` when
//! every index finished, `FAILED` when one failed for good (a dependency,
//! `max_failed`, the deadline), `CANCELLED`. A job told to stop kills what
//! runs and ends once the kills are heard, so that "ended" always means
//! nothing of it runs any more.

pub mod deps;
pub mod indices;
pub mod persist;
pub mod submit;

#[cfg(test)]
mod persist_tests;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use wasmos_proto::v1::{self, IndexState, JobState};

use crate::core::is_terminal;
use crate::limits::MAX_TASKS_PER_ACCEPT;
use crate::{Resources, Time, packing, retry};
use deps::Gate;
use indices::Indices;

/// A job's place in the order of submissions: the epoch of the master's
/// start that took it in and its number within that start.
pub type Key = (u64, u64);

/// Whose a job is: its tasks run in a framework of this role, owned by
/// this principal (one framework per owner).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub role: String,
    pub principal: String,
}

/// One job.
#[derive(Debug)]
pub struct Job {
    pub id: String,
    pub owner: Owner,
    /// As submitted, its role filled in.
    pub spec: v1::JobSpec,
    /// What each index asks for.
    pub shape: Resources,
    pub policy: v1::RetryPolicy,
    pub submitted: Time,
    pub state: JobState,
    /// Held by its owner or an admin (also while `WAITING`).
    pub held: bool,
    /// Why it failed or was cancelled (empty otherwise).
    pub reason: String,
    /// The end it was told to reach (killing what runs), not reached yet.
    stopping: Option<JobState>,
    pub indices: Indices,
    pub ended_at: Option<Time>,
    /// Ended past its retention: its per-index outcomes are gone.
    pub expired: bool,
    /// Expired, and its stdout heads and agent records deleted.
    pub outputs_swept: bool,
    /// Bytes of stdout heads kept for it, and indices whose head was not
    /// (past [`submit::MAX_OUTPUT_BYTES_PER_JOB`]).
    pub output_bytes: u64,
    pub outputs_dropped: u32,
    /// Its per-index outcomes are in memory. An ended job's leave it once
    /// written, and are read back from the registry when asked for
    /// ([`Jobs::load`]).
    pub loaded: bool,
    /// Its spec is in the registry's `job_specs` (written once, with the
    /// job's first record; after a restart, again with its next one).
    pub spec_written: bool,
}

impl Job {
    pub fn is_ended(&self) -> bool {
        matches!(
            self.state,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    /// May an index of it start now?
    fn startable(&self) -> bool {
        matches!(self.state, JobState::Queued | JobState::Running)
            && !self.held
            && self.stopping.is_none()
            && self.indices.has_pending()
            && (self.spec.max_running == 0
                || self.indices.running() < self.spec.max_running as usize)
    }

    /// The kill of every index running, if any runs.
    fn kill_running(&self) -> Option<Effect> {
        let task_ids = self.running_task_ids();
        (!task_ids.is_empty()).then(|| Effect::Kill {
            owner: self.owner.clone(),
            task_ids,
        })
    }

    /// Task ids of every index running.
    fn running_task_ids(&self) -> Vec<String> {
        self.indices
            .running_attempts()
            .map(|(index, attempt)| submit::task_id(&self.id, index, attempt))
            .collect()
    }
}

/// Tasks to launch on one agent, with the offers to name.
#[derive(Debug, PartialEq)]
pub struct Launch {
    pub offer_ids: Vec<String>,
    pub tasks: Vec<v1::TaskSpec>,
}

/// What to do with one owner's offers.
#[derive(Debug, Default, PartialEq)]
pub struct Placement {
    pub launches: Vec<Launch>,
    /// Offers nothing was placed on: to decline.
    pub unused: Vec<String>,
}

/// What the shell carries out for the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Kill these tasks of `owner`'s framework.
    Kill { owner: Owner, task_ids: Vec<String> },
    /// A job ended (nothing of it runs any more).
    Ended { job: String, state: JobState },
}

/// How the indices that wait end when their job is told to end `state`.
fn index_end(state: JobState) -> IndexState {
    if state == JobState::Cancelled {
        IndexState::Cancelled
    } else {
        IndexState::Failed
    }
}

/// Every job the master holds.
#[derive(Debug, Default)]
pub struct Jobs {
    /// Job ids are `j<epoch>.<n>`: unique across the master's starts.
    epoch: u64,
    jobs: BTreeMap<Key, Job>,
    keys: HashMap<(Owner, String), Key>,
    /// Jobs whose index i waits for index i of the key job.
    each_dependents: HashMap<Key, Vec<Key>>,
    /// Jobs not ended, by principal.
    live: HashMap<String, usize>,
    /// Jobs not ended: all that placing, offers and pins look at (ended
    /// jobs stay for their summaries and must cost a turn nothing).
    live_jobs: BTreeSet<Key>,
    next: u64,
    /// Jobs changed since their records were last taken ([`Jobs::writes`]).
    dirty: BTreeSet<Key>,
    /// Jobs past their retention whose chunks are still stored: their ids
    /// and index counts.
    forgotten: Vec<(String, u32)>,
    /// The framework each owner's jobs run in, as the shell last said.
    frameworks: HashMap<Owner, String>,
    /// Stdout heads to write ([`Jobs::writes`]).
    outputs: Vec<v1::StoredJobOutput>,
    /// Jobs past their retention whose stdout heads the shell deletes.
    forgotten_outputs: Vec<String>,
    /// Ended jobs loaded to be read, least recently loaded first.
    read: VecDeque<Key>,
    /// Outcomes that left memory ([`Jobs::take_unloaded`]).
    unloaded: u64,
}

impl Jobs {
    /// The jobs of the master's start `epoch` (none yet).
    pub fn new(epoch: u64) -> Jobs {
        Jobs {
            epoch,
            ..Jobs::default()
        }
    }

    /// `j<epoch>.17` → 17, for this start's epoch.
    fn number_of(&self, job: &str) -> Option<Key> {
        submit::parse_job_id(job)
    }

    fn id_of(&self, (epoch, number): Key) -> String {
        format!("j{epoch}.{number}")
    }

    /// A job about to change (its record is written with the turn).
    fn job_mut(&mut self, key: Key) -> &mut Job {
        self.dirty.insert(key);
        self.jobs.get_mut(&key).expect("known")
    }

    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.get(&self.number_of(id)?)
    }

    /// The job `owner` submitted under idempotency key `key`, if any.
    pub fn by_key(&self, owner: &Owner, key: &str) -> Option<&Job> {
        if key.is_empty() {
            return None;
        }
        let number = self.keys.get(&(owner.clone(), key.to_string()))?;
        self.jobs.get(number)
    }

    /// Every job, oldest first.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    /// The jobs submitted after `id` (all, for `None` or an id that is not
    /// a job's), oldest first: a page of a listing.
    pub fn jobs_after(&self, id: Option<&str>) -> impl Iterator<Item = &Job> {
        let after = id.and_then(|id| self.number_of(id)).unwrap_or((0, 0));
        self.jobs
            .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            .map(|(_, job)| job)
    }

    /// Takes in a job: its id, or why it was refused. A second submission
    /// of an owner with the same idempotency key answers the first's id.
    pub fn submit(
        &mut self,
        owner: Owner,
        mut spec: v1::JobSpec,
        now: Time,
    ) -> Result<(String, Vec<Effect>), String> {
        let checked = submit::check(&spec)?;
        if owner.role != checked.role {
            return Err(format!(
                "the job's role is {}, its owner's framework runs in {}",
                checked.role, owner.role
            ));
        }
        let key = (owner.clone(), spec.idempotency_key.clone());
        if !spec.idempotency_key.is_empty()
            && let Some(number) = self.keys.get(&key)
        {
            return Ok((self.id_of(*number), Vec::new()));
        }
        let live = self.live.get(&owner.principal).copied().unwrap_or(0);
        if live >= submit::MAX_LIVE_JOBS_PER_PRINCIPAL {
            return Err(format!(
                "{} has {live} jobs that have not ended, the most one principal may have (MAX_LIVE_JOBS_PER_PRINCIPAL); wait for some to end or cancel them",
                owner.principal
            ));
        }
        for dependency in deps::named(&spec) {
            if self.job(dependency).is_none() {
                return Err(format!("it depends on {dependency}: no such job"));
            }
        }
        let each = if spec.after_each.is_empty() {
            None
        } else {
            let other = self.job(&spec.after_each).expect("checked above");
            if other.expired {
                return Err(format!(
                    "it runs index i after index i of {}, whose per-index outcomes have expired",
                    other.id
                ));
            }
            if other.indices.count() < spec.count {
                return Err(format!(
                    "it runs index i after index i of {}, which has {} indices; this job has {}",
                    other.id,
                    other.indices.count(),
                    spec.count
                ));
            }
            self.number_of(&spec.after_each)
        };
        spec.role = checked.role;
        self.next += 1;
        let number = (self.epoch, self.next);
        let id = self.id_of(number);
        let job = Job {
            id: id.clone(),
            owner,
            policy: spec.retry.clone().unwrap_or_else(retry::default_policy),
            shape: checked.shape,
            indices: Indices::new(spec.count, each.is_some()),
            held: spec.hold,
            state: if spec.hold {
                JobState::Held
            } else {
                JobState::Waiting
            },
            spec,
            submitted: now,
            reason: String::new(),
            stopping: None,
            ended_at: None,
            expired: false,
            outputs_swept: false,
            loaded: true,
            spec_written: false,
            output_bytes: 0,
            outputs_dropped: 0,
        };
        if !job.spec.idempotency_key.is_empty() {
            self.keys.insert(key, number);
        }
        self.dirty.insert(number);
        *self.live.entry(job.owner.principal.clone()).or_default() += 1;
        self.live_jobs.insert(number);
        self.jobs.insert(number, job);
        let mut effects = Vec::new();
        if let Some(other) = each {
            self.each_dependents.entry(other).or_default().push(number);
            // What the other job already settled.
            for index in 0..self.jobs[&number].indices.count() {
                let state = self.jobs[&other].indices.outcome(index).state;
                self.pass_index(number, index, state);
            }
            if self.jobs[&other].is_ended() {
                self.fail_unmatched(number, other);
            }
        }
        self.regate(number, &mut effects);
        // A job may end at once (a failed dependency, every index-wise
        // counterpart failed).
        self.settle(number, now, &mut effects);
        Ok((id, effects))
    }

    /// Task ids of every index of `owner`'s jobs running (to reconcile).
    pub fn running_tasks(&self, owner: &Owner) -> Vec<String> {
        self.jobs
            .values()
            .filter(|j| j.owner == *owner)
            .flat_map(Job::running_task_ids)
            .collect()
    }

    /// Jobs not ended, oldest first.
    fn live_jobs(&self) -> impl Iterator<Item = (Key, &Job)> + '_ {
        self.live_jobs.iter().map(|key| (*key, &self.jobs[key]))
    }

    /// The artifacts (modules and inputs) of every job that has not ended.
    pub fn pinned_artifacts(&self) -> std::collections::HashSet<String> {
        self.live_jobs()
            .filter_map(|(_, j)| j.spec.task.as_ref())
            .flat_map(|t| {
                std::iter::once(t.artifact.clone())
                    .chain(t.inputs.iter().map(|i| i.artifact.clone()))
            })
            .collect()
    }

    /// Does any job of `owner` have an index to start?
    pub fn wants_offers(&self, owner: &Owner) -> bool {
        self.live_jobs()
            .any(|(_, j)| j.owner == *owner && j.startable())
    }

    /// Places `owner`'s waiting indices on its offers: its jobs by
    /// priority (higher first), then age; a job that does not fit what is
    /// left, or asks for attributes the agent lacks (`on`), lets a later
    /// one use it.
    pub fn place(&mut self, owner: &Owner, offers: Vec<v1::Offer>) -> Placement {
        let mut order: Vec<(std::cmp::Reverse<i32>, Key)> = self
            .live_jobs()
            .filter(|(_, j)| j.owner == *owner && j.startable())
            .map(|(n, j)| (std::cmp::Reverse(j.spec.priority), n))
            .collect();
        order.sort_unstable();
        let mut placement = Placement::default();
        for mut pool in packing::by_agent(offers) {
            let mut tasks = Vec::new();
            for &(_, number) in &order {
                let job = self.jobs.get_mut(&number).expect("listed");
                if !job.startable() || !pool.matches(&job.spec.on) {
                    continue;
                }
                let mut room =
                    (pool.copies_of(&job.shape) as usize).min(MAX_TASKS_PER_ACCEPT - tasks.len());
                if job.spec.max_running > 0 {
                    room = room.min(job.spec.max_running as usize - job.indices.running());
                }
                let taken = job.indices.take(room);
                if taken.is_empty() {
                    continue;
                }
                self.dirty.insert(number);
                for _ in &taken {
                    pool.free -= job.shape;
                }
                job.state = JobState::Running;
                let template = job.spec.task.as_ref().expect("checked at submit");
                tasks.extend(
                    taken.into_iter().map(|(index, attempt)| {
                        submit::index_spec(template, &job.id, index, attempt)
                    }),
                );
                if tasks.len() == MAX_TASKS_PER_ACCEPT {
                    break;
                }
            }
            if tasks.is_empty() {
                placement.unused.extend(pool.offer_ids);
            } else {
                placement.launches.push(Launch {
                    offer_ids: pool.offer_ids,
                    tasks,
                });
            }
        }
        placement
    }

    /// Tasks whose `Accept` failed (their offers went away): their indices
    /// wait again, under the same attempt.
    /// A job told to stop settles them instead (and may end).
    pub fn not_launched(&mut self, task_ids: &[String], now: Time) -> Vec<Effect> {
        let mut effects = Vec::new();
        for task in task_ids {
            if let Some((job, index, attempt)) = submit::parse_task_id(task)
                && let Some(number) = self.number_of(job)
                && let Some(job) = self.jobs.get_mut(&number)
            {
                if !job.indices.untake(index, attempt) {
                    continue; // it ended meanwhile (its end was heard)
                }
                if let Some(state) = job.stopping {
                    job.indices.settle(index, index_end(state));
                    self.dirty.insert(number);
                    self.settle(number, now, &mut effects);
                }
            }
        }
        effects
    }

    /// Takes in a status of a job's task: a final one ends its attempt
    /// (retried per the job's policy, or final), and may end the job.
    pub fn update(&mut self, status: &v1::TaskStatus, now: Time) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some((job_id, index, attempt)) = submit::parse_task_id(&status.task_id) else {
            return effects;
        };
        let Some(number) = self.number_of(job_id) else {
            return effects;
        };
        let Some(job) = self.jobs.get_mut(&number) else {
            return effects;
        };
        if job.loaded && job.indices.adopt(index, attempt) {
            // A launch a crash took back from the registry, not from its
            // agent: the index runs it (see `Indices::adopt`).
            self.dirty.insert(number);
            job.state = JobState::Running;
        }
        if !job.loaded
            || !is_terminal(status.state())
            || job.indices.running_attempt(index) != Some(attempt)
        {
            return effects;
        }
        self.dirty.insert(number);
        let job = self.jobs.get_mut(&number).expect("known");
        let outcome = match (status.state(), job.stopping) {
            (v1::TaskState::Finished, _) => IndexState::Succeeded,
            (_, Some(JobState::Cancelled)) => IndexState::Cancelled,
            (_, Some(_)) => IndexState::Failed,
            (_, None) if retry::should_retry(&job.policy, status, attempt) => IndexState::Pending,
            (_, None) => IndexState::Failed,
        };
        job.indices.end(index, attempt, status, outcome);
        if !status.stdout_head.is_empty() {
            // Failed indices' heads are kept past the job's share.
            let len = status.stdout_head.len() as u64;
            let share = match outcome {
                IndexState::Succeeded => submit::MAX_OUTPUT_BYTES_PER_JOB,
                _ => 2 * submit::MAX_OUTPUT_BYTES_PER_JOB,
            };
            if job.output_bytes + len <= share {
                job.output_bytes += len;
                self.outputs.push(v1::StoredJobOutput {
                    job_id: job.id.clone(),
                    index,
                    attempt,
                    stdout_head: status.stdout_head.clone(),
                });
            } else {
                job.outputs_dropped += 1;
            }
        }
        if outcome == IndexState::Failed
            && job.stopping.is_none()
            && job.spec.max_failed > 0
            && job.indices.counts().failed >= job.spec.max_failed
        {
            let reason = format!(
                "{} indices failed (it stops at {}, its max_failed)",
                job.indices.counts().failed,
                job.spec.max_failed
            );
            self.stop(number, JobState::Failed, reason, &mut effects);
        }
        if outcome != IndexState::Pending {
            for dependent in self.pass_on(number, index, outcome) {
                self.settle(dependent, now, &mut effects);
            }
        }
        self.settle(number, now, &mut effects);
        effects
    }

    /// Holds a job: nothing more of it starts until it is released (what
    /// runs goes on). False if it has ended.
    pub fn hold(&mut self, id: &str) -> bool {
        let Some(number) = self.number_of(id) else {
            return false;
        };
        match self.jobs.get_mut(&number) {
            Some(job) if !job.is_ended() => {
                self.dirty.insert(number);
                job.held = true;
                if matches!(job.state, JobState::Waiting | JobState::Queued) {
                    job.state = JobState::Held;
                }
                true
            }
            _ => false,
        }
    }

    /// Releases a held job. False if it has ended.
    pub fn release(&mut self, id: &str, now: Time) -> Option<Vec<Effect>> {
        let number = self.number_of(id)?;
        let job = self.jobs.get_mut(&number)?;
        if job.is_ended() {
            return None;
        }
        self.dirty.insert(number);
        job.held = false;
        let mut effects = Vec::new();
        if job.state == JobState::Held {
            job.state = JobState::Waiting;
            self.regate(number, &mut effects);
            self.settle(number, now, &mut effects);
        }
        Some(effects)
    }

    /// Cancels a job: what runs is killed, nothing more starts; it ends
    /// `CANCELLED` once its kills are heard. `None` if there is no such
    /// job; no effect on one that ended.
    pub fn cancel(&mut self, id: &str, why: &str, now: Time) -> Option<Vec<Effect>> {
        self.end_early(id, JobState::Cancelled, why, now)
    }

    /// Fails job `id` for good, saying `why`: its task can never launch
    /// (the core refused it as invalid, as it would every attempt).
    pub fn fail(&mut self, id: &str, why: &str, now: Time) -> Option<Vec<Effect>> {
        self.end_early(id, JobState::Failed, why, now)
    }

    /// Stops job `id` (unless it ended) as `state`, saying `why`: what
    /// runs is killed, what has not started never will.
    fn end_early(
        &mut self,
        id: &str,
        state: JobState,
        why: &str,
        now: Time,
    ) -> Option<Vec<Effect>> {
        let number = self.number_of(id)?;
        let job = self.jobs.get(&number)?;
        let mut effects = Vec::new();
        if !job.is_ended() {
            self.stop(number, state, why.to_string(), &mut effects);
            self.settle(number, now, &mut effects);
        }
        Some(effects)
    }

    /// Runs a job's failed indices again, each as a new attempt (with
    /// `cancelled`, its cancelled ones too): an ended job opens again. How
    /// many indices wait again; `None` for no such job, or one still
    /// stopping (its kills not yet heard). Jobs that already failed or were
    /// cancelled because of this one stay as they ended.
    pub fn retry_failed(&mut self, id: &str, cancelled: bool) -> Option<u32> {
        let number = self.number_of(id)?;
        let job = self.jobs.get(&number)?;
        if (job.stopping.is_some() && !job.is_ended()) || job.expired {
            return None;
        }
        // What its dependencies decided stands: a job failed by one is
        // not run again, an index-wise dependent reruns only indices
        // whose counterpart succeeded.
        let gate = deps::gate(&job.spec, |id| self.job(id).map(|j| j.state));
        if matches!(gate, Gate::Fail(_) | Gate::Cancel(_)) {
            return Some(0);
        }
        let counterpart = self
            .number_of(&job.spec.after_each)
            .and_then(|n| self.jobs.get(&n));
        let ready: Vec<bool> = match counterpart {
            Some(other) => (0..job.indices.count())
                .map(|i| other.indices.outcome(i).state == IndexState::Succeeded)
                .collect(),
            None => Vec::new(),
        };
        self.dirty.insert(number);
        let job = self.jobs.get_mut(&number).expect("known");
        let reopened = job
            .indices
            .reopen(cancelled, |i| ready.is_empty() || ready[i as usize]);
        if reopened > 0 {
            job.stopping = None;
            job.reason.clear();
            job.ended_at = None;
            if job.is_ended() {
                *self.live.entry(job.owner.principal.clone()).or_default() += 1;
                self.live_jobs.insert(number);
                job.state = if job.held {
                    JobState::Held
                } else {
                    JobState::Queued
                };
            }
        }
        Some(reopened)
    }

    /// Ended jobs whose end is `retention` or more before `now` lose
    /// their per-index outcomes and keep their summaries (nothing of the
    /// live queue grows with finished work); how many expired now.
    pub fn expire(&mut self, now: Time, retention: std::time::Duration) -> usize {
        let retention = retention.as_millis() as u64;
        let mut expired = 0;
        for (number, job) in self.jobs.iter_mut() {
            let due = job
                .ended_at
                .is_some_and(|at| now.millis() >= at.millis().saturating_add(retention));
            if due && !job.expired {
                job.indices.forget_outcomes();
                job.expired = true;
                self.dirty.insert(*number);
                self.forgotten.push((job.id.clone(), job.indices.count()));
                self.forgotten_outputs.push(job.id.clone());
                expired += 1;
            }
        }
        expired
    }

    /// Jobs past their deadline stop (`FAILED`).
    pub fn tick(&mut self, now: Time) -> Vec<Effect> {
        let due: Vec<Key> = self
            .live_jobs()
            .filter(|(_, j)| {
                j.stopping.is_none()
                    && j.spec.deadline_ms > 0
                    && now.millis() >= j.submitted.millis().saturating_add(j.spec.deadline_ms)
            })
            .map(|(n, _)| n)
            .collect();
        let mut effects = Vec::new();
        for number in due {
            let reason = format!(
                "its deadline passed ({} ms after it was submitted)",
                self.jobs[&number].spec.deadline_ms
            );
            self.stop(number, JobState::Failed, reason, &mut effects);
            self.settle(number, now, &mut effects);
        }
        effects
    }

    /// Tells a job to end in `state`: what waits settles, what runs is
    /// killed (it ends once the kills are heard).
    fn stop(&mut self, number: Key, state: JobState, reason: String, effects: &mut Vec<Effect>) {
        self.dirty.insert(number);
        let job = self.jobs.get_mut(&number).expect("known");
        job.stopping = Some(state);
        job.reason = reason;
        job.indices.settle_pending(index_end(state));
        effects.extend(job.kill_running());
        // Index-wise dependents lose every index that will not succeed.
        for dependent in self
            .each_dependents
            .get(&number)
            .cloned()
            .unwrap_or_default()
        {
            self.fail_unmatched(dependent, number);
        }
    }

    /// Ends the jobs whose indices have all ended, from `first` on, and
    /// moves on what depended on them. A worklist, not recursion: a chain
    /// of dependencies may be thousands of jobs long.
    fn settle(&mut self, first: Key, now: Time, effects: &mut Vec<Effect>) {
        let mut work = vec![first];
        while let Some(number) = work.pop() {
            if !self.end_if_done(number, now, effects) {
                continue;
            }
            for dependent in self
                .each_dependents
                .get(&number)
                .cloned()
                .unwrap_or_default()
            {
                self.fail_unmatched(dependent, number);
                work.push(dependent);
            }
            let waiting: Vec<Key> = self
                .live_jobs()
                .filter(|(_, j)| j.state == JobState::Waiting)
                .map(|(n, _)| n)
                .collect();
            for waiting in waiting {
                if self.regate(waiting, effects) {
                    work.push(waiting);
                }
            }
        }
    }

    /// Ends job `number` if every index of it has ended; true if it ended
    /// now.
    fn end_if_done(&mut self, number: Key, now: Time, effects: &mut Vec<Effect>) -> bool {
        self.dirty.insert(number);
        let job = self.jobs.get_mut(&number).expect("known");
        if job.is_ended() || !job.indices.all_ended() {
            return false;
        }
        let counts = job.indices.counts();
        job.state = match job.stopping {
            Some(state) => state,
            None if counts.failed == 0 && counts.cancelled == 0 => JobState::Succeeded,
            None => {
                job.reason = format!(
                    "{} of {} indices failed",
                    counts.failed,
                    job.indices.count()
                );
                JobState::Failed
            }
        };
        job.ended_at = Some(now);
        if let Some(live) = self.live.get_mut(&job.owner.principal) {
            *live = live.saturating_sub(1);
        }
        self.live_jobs.remove(&number);
        effects.push(Effect::Ended {
            job: job.id.clone(),
            state: job.state,
        });
        true
    }

    /// Moves a `WAITING` job on as its dependencies say; true when that
    /// stopped it (it may then end: [`Jobs::settle`]).
    fn regate(&mut self, number: Key, effects: &mut Vec<Effect>) -> bool {
        let job = &self.jobs[&number];
        if job.state != JobState::Waiting {
            return false;
        }
        match deps::gate(&job.spec, |id| self.job(id).map(|j| j.state)) {
            Gate::Wait => false,
            Gate::Open => {
                self.job_mut(number).state = JobState::Queued;
                false
            }
            Gate::Fail(reason) => {
                self.stop(number, JobState::Failed, reason, effects);
                true
            }
            Gate::Cancel(reason) => {
                self.stop(number, JobState::Cancelled, reason, effects);
                true
            }
        }
    }

    /// Index `index` of job `number` ended `state` for good: the same
    /// index of its index-wise dependents may start, or fails.
    /// Returns those dependents (they may have ended).
    fn pass_on(&mut self, number: Key, index: u32, state: IndexState) -> Vec<Key> {
        let dependents = self
            .each_dependents
            .get(&number)
            .cloned()
            .unwrap_or_default();
        for &dependent in &dependents {
            self.pass_index(dependent, index, state);
        }
        dependents
    }

    fn pass_index(&mut self, dependent: Key, index: u32, state: IndexState) {
        let Some(job) = self.jobs.get_mut(&dependent) else {
            return;
        };
        if index >= job.indices.count() || job.is_ended() || job.stopping.is_some() {
            return;
        }
        self.dirty.insert(dependent);
        match state {
            IndexState::Succeeded => job.indices.ready(index),
            IndexState::Failed | IndexState::Cancelled => {
                job.indices.settle(index, IndexState::Failed)
            }
            IndexState::Pending | IndexState::Running => {}
        }
    }

    /// Every index of `dependent` whose counterpart in the ended (or
    /// stopping) job `other` did not succeed fails.
    fn fail_unmatched(&mut self, dependent: Key, other: Key) {
        let (job, counterpart) = (&self.jobs[&dependent], &self.jobs[&other]);
        if job.is_ended() || !job.loaded || !counterpart.loaded {
            return; // what ended stays as it ended
        }
        let count = job.indices.count();
        let unmatched: Vec<u32> = (0..count)
            .filter(|&i| self.jobs[&other].indices.outcome(i).state != IndexState::Succeeded)
            .filter(|&i| self.jobs[&dependent].indices.outcome(i).state == IndexState::Pending)
            .filter(|&i| self.jobs[&other].indices.running_attempt(i).is_none())
            .collect();
        let job = self.job_mut(dependent);
        for index in unmatched {
            job.indices.settle(index, IndexState::Failed);
        }
    }
}
