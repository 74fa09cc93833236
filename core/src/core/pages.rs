//! Paged, filtered views of the tasks, for the web UI and its JSON API.
//!
//! A page copies only its own tasks, never a sort and a clone of all of
//! them as [`Core::tasks`] does. For someone who sees everything, a page of
//! all tasks or of one job is a walk of the ordered ids from its cursor
//! (0.3 ms of the actor's turn with 100,000 tasks known); a page for a
//! principal who sees only their own tasks, or filtered by state, reason,
//! role, framework or agent, is one pass over the tasks (~10 ms).

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::ops::Bound;

use wasmos_proto::v1;

use super::{Core, Task};
use crate::access::Principal;
use crate::ids::TaskId;
use crate::resources::Resources;

/// Every task the core knows (live, archived and of removed frameworks)
/// in id order, and how many are in each state: kept as tasks come, change
/// and go, so that a page for someone who sees everything is a walk of a
/// few entries and its counts need no pass at all.
#[derive(Debug, Default)]
pub(super) struct KnownTasks {
    ids: BTreeSet<TaskId>,
    by_state: BTreeMap<v1::TaskState, usize>,
}

impl KnownTasks {
    pub(super) fn add(&mut self, id: &TaskId, state: v1::TaskState) {
        if self.ids.insert(id.clone()) {
            *self.by_state.entry(state).or_default() += 1;
        }
    }

    pub(super) fn remove(&mut self, id: &TaskId, state: v1::TaskState) {
        if self.ids.remove(id) {
            self.count_out(state);
        }
    }

    pub(super) fn changed(&mut self, from: v1::TaskState, to: v1::TaskState) {
        if from != to {
            self.count_out(from);
            *self.by_state.entry(to).or_default() += 1;
        }
    }

    fn count_out(&mut self, state: v1::TaskState) {
        if let Some(n) = self.by_state.get_mut(&state) {
            *n -= 1;
            if *n == 0 {
                self.by_state.remove(&state);
            }
        }
    }
}

/// Which tasks a page holds. Empty fields match everything.
#[derive(Clone, Debug, Default)]
pub struct TaskFilter {
    pub state: Option<v1::TaskState>,
    pub reason: Option<v1::Reason>,
    pub role: String,
    pub framework: String,
    pub agent: String,
    /// Only the tasks of this job of the job service (ids `<job>-<index>-<attempt>`).
    pub job: String,
}

impl TaskFilter {
    /// True when nothing but (at most) the job narrows the tasks: a walk
    /// of the ids in order finds the page.
    fn by_job_at_most(&self) -> bool {
        self.state.is_none()
            && self.reason.is_none()
            && self.role.is_empty()
            && self.framework.is_empty()
            && self.agent.is_empty()
    }

    fn matches(&self, task: &Task) -> bool {
        self.state.is_none_or(|s| task.status.state() == s)
            && self.reason.is_none_or(|r| task.status.reason() == r)
            && (self.role.is_empty() || task.role.as_str() == self.role)
            && (self.framework.is_empty() || task.framework.as_str() == self.framework)
            && (self.agent.is_empty() || task.agent.as_str() == self.agent)
            && (self.job.is_empty()
                || task
                    .id
                    .as_str()
                    .strip_prefix(self.job.as_str())
                    .is_some_and(|rest| rest.starts_with('-')))
    }
}

/// A page of a listing in id order (agents, frameworks).
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// How many the listing matched in all.
    pub matching: usize,
    /// The id to ask the next page after; `None` on the last page.
    pub next: Option<String>,
}

/// Of `ids` (in any order), the `limit + 1` smallest past `after`, in
/// order (one more than a page says a next page exists), and how many
/// there were in all. One pass and a heap of `limit + 1`: no sort or copy
/// of everything, whatever the listing's size.
pub(super) fn first_after<'a, K>(
    ids: impl Iterator<Item = &'a K>,
    after: Option<&str>,
    limit: usize,
) -> (Vec<&'a K>, usize)
where
    K: Ord + Borrow<str> + 'a,
{
    // A max-heap whose top is the largest kept, so a smaller id replaces it.
    let mut kept: BinaryHeap<&K> = BinaryHeap::with_capacity(limit + 2);
    let mut matching = 0;
    for id in ids {
        matching += 1;
        if after.is_some_and(|after| Borrow::<str>::borrow(id) <= after) {
            continue;
        }
        if kept.len() <= limit {
            kept.push(id);
        } else if kept.peek().is_some_and(|top| id < *top) {
            kept.pop();
            kept.push(id);
        }
    }
    (kept.into_sorted_vec(), matching)
}

/// One line of a page: what a table shows of a task.
#[derive(Clone, Debug)]
pub struct TaskLine {
    pub id: TaskId,
    pub name: String,
    pub framework: String,
    pub agent: String,
    pub role: String,
    pub owner: String,
    pub state: v1::TaskState,
    pub reason: v1::Reason,
    pub resources: Resources,
    pub updated_ms: u64,
}

/// A page of tasks in id order.
#[derive(Clone, Debug, Default)]
pub struct TaskPage {
    pub tasks: Vec<TaskLine>,
    /// How many tasks the filter (and who asks) matched in all.
    pub matching: usize,
    /// The id to ask the next page after; `None` on the last page.
    pub next: Option<TaskId>,
}

impl Core {
    /// The first `limit` tasks after `after` (in id order) that `filter`
    /// matches, of those `who` may see.
    pub fn task_page(
        &self,
        filter: &TaskFilter,
        who: &Principal,
        after: Option<&str>,
        limit: usize,
    ) -> TaskPage {
        let limit = limit.max(1);
        if who.sees_all() && filter.by_job_at_most() {
            return self.page_in_order(&filter.job, after, limit);
        }
        let ids = self
            .tasks
            .values()
            .chain(self.graveyard.values())
            .filter(|t| filter.matches(t) && who.may_see(&t.owner))
            .map(|t| &t.id);
        let (ids, matching) = first_after(ids, after, limit);
        self.page_of(ids, limit, matching)
    }

    /// The page of tasks of job `job` (of all tasks, if empty) after
    /// `after`, read off the ordered ids: no pass over the other tasks.
    fn page_in_order(&self, job: &str, after: Option<&str>, limit: usize) -> TaskPage {
        let prefix = (!job.is_empty()).then(|| format!("{job}-"));
        let prefix = prefix.as_deref();
        let in_job = |id: &&TaskId| prefix.is_none_or(|p| id.as_str().starts_with(p));
        // From the job's first id, or past the cursor if that is further.
        let start = match (prefix, after) {
            (Some(p), Some(a)) if a < p => Bound::Included(p),
            (_, Some(a)) => Bound::Excluded(a),
            (Some(p), None) => Bound::Included(p),
            (None, None) => Bound::Unbounded,
        };
        let from = |start| {
            self.known
                .ids
                .range::<str, _>((start, Bound::Unbounded))
                .take_while(in_job)
        };
        let matching = match prefix {
            None => self.known.ids.len(),
            Some(p) => from(Bound::Included(p)).count(),
        };
        self.page_of(from(start).take(limit + 1).collect(), limit, matching)
    }

    /// The page of the first `limit` of `ids` (in order; one more says a
    /// next page exists).
    fn page_of(&self, ids: Vec<&TaskId>, limit: usize, matching: usize) -> TaskPage {
        let more = ids.len() > limit;
        let tasks: Vec<TaskLine> = ids
            .into_iter()
            .take(limit)
            .filter_map(|id| self.tasks.get(id).or_else(|| self.graveyard.get(id)))
            .map(line)
            .collect();
        let next = more.then(|| tasks.last().map(|t| t.id.clone())).flatten();
        TaskPage {
            tasks,
            matching,
            next,
        }
    }

    /// How many tasks `who` may see are in each state.
    pub fn task_counts(&self, who: &Principal) -> BTreeMap<v1::TaskState, usize> {
        if who.sees_all() {
            return self.known.by_state.clone();
        }
        let mut counts = BTreeMap::new();
        for task in self.tasks.values().chain(self.graveyard.values()) {
            if who.may_see(&task.owner) {
                *counts.entry(task.status.state()).or_default() += 1;
            }
        }
        counts
    }

    /// The index agrees with the task tables (an invariant the tests check
    /// after every step).
    pub(super) fn check_known_tasks(&self) -> Result<(), String> {
        let mut by_state = BTreeMap::new();
        for task in self.tasks.values().chain(self.graveyard.values()) {
            if !self.known.ids.contains(&task.id) {
                return Err(format!("task {} is missing from the ordered ids", task.id));
            }
            *by_state.entry(task.status.state()).or_default() += 1;
        }
        if self.known.ids.len() != self.tasks.len() + self.graveyard.len() {
            return Err(format!(
                "{} ordered ids for {} tasks",
                self.known.ids.len(),
                self.tasks.len() + self.graveyard.len()
            ));
        }
        if by_state != self.known.by_state {
            return Err(format!(
                "counts by state {:?}, the tasks say {by_state:?}",
                self.known.by_state
            ));
        }
        Ok(())
    }
}

fn line(task: &Task) -> TaskLine {
    TaskLine {
        id: task.id.clone(),
        name: task.spec.name.clone(),
        framework: task.framework.to_string(),
        agent: task.agent.to_string(),
        role: task.role.to_string(),
        owner: task.owner.clone(),
        state: task.status.state(),
        reason: task.status.reason(),
        resources: task.resources,
        updated_ms: task.status.timestamp_ms,
    }
}
