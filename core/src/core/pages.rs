//! Paged, filtered views of the tasks, for the web UI and its JSON API.
//!
//! A page copies only its own tasks: the rest are looked at, counted and
//! left where they are. With 100,000 tasks known a page costs a pass over
//! the maps (a few milliseconds of the actor's turn), not a sort and a
//! clone of all of them as [`Core::tasks`] does.

use std::collections::{BTreeMap, BinaryHeap};

use wasmos_proto::v1;

use super::{Core, Task};
use crate::ids::TaskId;
use crate::resources::Resources;

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
    /// and `visible` (given the task's owner) match.
    pub fn task_page(
        &self,
        filter: &TaskFilter,
        visible: impl Fn(&str) -> bool,
        after: Option<&str>,
        limit: usize,
    ) -> TaskPage {
        let limit = limit.max(1);
        // The `limit + 1` smallest ids past `after`: a max-heap whose top
        // is the largest kept, so a smaller id replaces it.
        let mut kept: BinaryHeap<&TaskId> = BinaryHeap::with_capacity(limit + 2);
        let mut matching = 0;
        for task in self.tasks.values().chain(self.graveyard.values()) {
            if !filter.matches(task) || !visible(&task.owner) {
                continue;
            }
            matching += 1;
            if after.is_some_and(|after| task.id.as_str() <= after) {
                continue;
            }
            if kept.len() <= limit {
                kept.push(&task.id);
            } else if kept.peek().is_some_and(|top| &task.id < *top) {
                kept.pop();
                kept.push(&task.id);
            }
        }
        let mut ids = kept.into_sorted_vec();
        let more = ids.len() > limit;
        ids.truncate(limit);
        let tasks: Vec<TaskLine> = ids
            .iter()
            .filter_map(|id| self.tasks.get(*id).or_else(|| self.graveyard.get(*id)))
            .map(line)
            .collect();
        let next = more.then(|| tasks.last().map(|t| t.id.clone())).flatten();
        TaskPage {
            tasks,
            matching,
            next,
        }
    }

    /// How many tasks `visible` may see are in each state.
    pub fn task_counts(&self, visible: impl Fn(&str) -> bool) -> BTreeMap<v1::TaskState, usize> {
        let mut counts = BTreeMap::new();
        for task in self.tasks.values().chain(self.graveyard.values()) {
            if visible(&task.owner) {
                *counts.entry(task.status.state()).or_default() += 1;
            }
        }
        counts
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
