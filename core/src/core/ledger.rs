//! The usage ledger: what tasks used, per hour, role, principal and job.
//!
//! A task counts once, when its end is settled: terminal and no longer an
//! end heard before its agent made it durable (`end_unsynced`), which is
//! when its framework is told. It is counted while the core turns the
//! task's change into its record ([`Core::take_writes`]), so the task's
//! `usage_counted` and the bucket it added to are written in the same
//! commit: a crash loses both or neither, and an update delivered again
//! finds the task counted. A `LOST` task counts the usage its agent last
//! reported (none, if it never did) and its attempt.
//!
//! Buckets are keyed by the hour the end was counted in; only the current
//! hour's are kept in memory (the shell reads them back at start), earlier
//! ones are final and live only in the registry.

use crate::maps::{HashMap, HashSet};

use wasmos_proto::v1;

use super::{Core, Task, is_terminal};
use crate::ids::TaskId;
use crate::store::{Record, Write};

pub const HOUR_MS: u64 = 3_600_000;

/// Whose usage a bucket holds: role, principal, job.
type Owner = (String, String, String);

/// The current hour's buckets.
#[derive(Default)]
pub(super) struct Ledger {
    hour_ms: u64,
    buckets: HashMap<Owner, v1::StoredUsage>,
    changed: HashSet<Owner>,
}

impl Ledger {
    /// The ledger as the registry holds it: `buckets` of the latest hour
    /// among them are added to; others are final.
    pub(super) fn recover(buckets: Vec<v1::StoredUsage>) -> Ledger {
        let hour_ms = buckets.iter().map(|b| b.hour_ms).max().unwrap_or(0);
        Ledger {
            hour_ms,
            buckets: buckets
                .into_iter()
                .filter(|b| b.hour_ms == hour_ms)
                .map(|b| ((b.role.clone(), b.principal.clone(), b.job.clone()), b))
                .collect(),
            changed: HashSet::default(),
        }
    }

    /// Adds one task's end, counted at `wall_ms`.
    fn add(&mut self, wall_ms: u64, owner: Owner, first_attempt: bool, usage: &Used) {
        let hour_ms = wall_ms - wall_ms % HOUR_MS;
        if hour_ms > self.hour_ms {
            // A new hour: what the last one holds is written and final.
            self.hour_ms = hour_ms;
            self.buckets.clear();
        }
        let bucket = self
            .buckets
            .entry(owner.clone())
            .or_insert_with(|| v1::StoredUsage {
                hour_ms: self.hour_ms,
                role: owner.0.clone(),
                principal: owner.1.clone(),
                job: owner.2.clone(),
                ..Default::default()
            });
        bucket.tasks += 1;
        bucket.first_attempts += u64::from(first_attempt);
        bucket.cpu_ms += usage.cpu_ms;
        bucket.fuel += usage.fuel;
        bucket.wall_ms += usage.wall_ms;
        bucket.mem_gib_ms += usage.mem_gib_ms;
        self.changed.insert(owner);
    }

    /// The buckets changed since the last call, as writes.
    fn take_writes(&mut self) -> impl Iterator<Item = Write> + '_ {
        let changed = std::mem::take(&mut self.changed);
        changed
            .into_iter()
            .filter_map(|owner| self.buckets.get(&owner).cloned())
            .map(|bucket| Write::Put(Record::Usage(bucket)))
    }
}

/// What one task used, as the ledger adds it.
struct Used {
    cpu_ms: u64,
    fuel: u64,
    wall_ms: u64,
    mem_gib_ms: f64,
}

/// The job a task belongs to (its `wasmos.job` label) and whether it is
/// the first attempt of its index (`<job>-<index>-<attempt>`); a task of
/// no job is its own first attempt.
fn job_of(spec: &v1::TaskSpec) -> (String, bool) {
    let job = spec.labels.get("wasmos.job").cloned().unwrap_or_default();
    if job.is_empty() {
        return (job, true);
    }
    let first = spec
        .task_id
        .rsplit_once('-')
        .is_none_or(|(_, attempt)| attempt == "1");
    (job, first)
}

/// Adds `task` to the ledger if it ended and was not counted yet; with
/// `settled` only, not an end still awaiting its agent's sync.
fn count(ledger: &mut Ledger, wall_ms: u64, task: &mut Task, settled: bool) {
    if task.usage_counted || (settled && task.end_unsynced) || !is_terminal(task.status.state()) {
        return;
    }
    task.usage_counted = true;
    let usage = task.status.usage.unwrap_or_default();
    let used = Used {
        cpu_ms: usage.cpu_time_ms,
        fuel: usage.fuel_consumed,
        wall_ms: usage.wall_time_ms,
        mem_gib_ms: task.resources.mem as f64 / (1u64 << 30) as f64 * usage.wall_time_ms as f64,
    };
    let (job, first) = job_of(&task.spec);
    let owner = (task.role.to_string(), task.owner.clone(), job);
    ledger.add(wall_ms, owner, first, &used);
}

impl Core {
    /// Counts the tasks among `ids` whose end is settled and not yet
    /// counted (before their records are written).
    pub(super) fn count_settled(&mut self, ids: &HashSet<TaskId>) {
        let wall_ms = self.wall(self.last_now);
        for id in ids {
            let task = match self.tasks.get_mut(id) {
                Some(task) => task,
                None => match self.graveyard.get_mut(id) {
                    Some(task) => task,
                    None => continue,
                },
            };
            count(&mut self.ledger, wall_ms, task, true);
        }
    }

    /// Counts a task of a removed framework as it is buried: nobody will
    /// be told its end, and the graveyard may drop it before the turn's
    /// writes are made.
    pub(super) fn count_buried(&mut self, task: &mut Task) {
        let wall_ms = self.wall(self.last_now);
        count(&mut self.ledger, wall_ms, task, false);
    }

    /// The usage ledger's buckets of the current hour, as the registry
    /// should hold them.
    pub fn usage_buckets(&self) -> Vec<v1::StoredUsage> {
        let mut buckets: Vec<v1::StoredUsage> = self.ledger.buckets.values().cloned().collect();
        buckets
            .sort_by(|a, b| (&a.role, &a.principal, &a.job).cmp(&(&b.role, &b.principal, &b.job)));
        buckets
    }

    /// The ledger's changed buckets, as writes.
    pub(super) fn ledger_writes(&mut self) -> Vec<Write> {
        self.ledger.take_writes().collect()
    }
}
