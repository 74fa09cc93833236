//! A task's last state changes with their times: what an operator reads
//! on a task's page to see where it spent its time. Kept in memory only
//! and bounded, so 100,000 tasks cost little; a restarted master starts
//! each list from the state it recovered.

use wasmos_proto::v1;

use super::Task;
use super::pages::KnownTasks;

/// Changes kept per task; older ones are dropped.
const KEPT: usize = 6;

/// One change: the state (and reason) a task entered, and when (the
/// status's wall-clock time, milliseconds since the Unix epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub state: v1::TaskState,
    pub reason: v1::Reason,
    pub at_ms: u64,
}

#[derive(Clone, Debug, Default)]
pub(super) struct Transitions(Vec<Transition>);

impl Transitions {
    /// The list of a task first seen with `status`.
    pub(super) fn starting(status: &v1::TaskStatus) -> Transitions {
        let mut transitions = Transitions::default();
        transitions.record(status);
        transitions
    }

    /// Records `status` if it changes the state or reason.
    fn record(&mut self, status: &v1::TaskStatus) {
        let next = Transition {
            state: status.state(),
            reason: status.reason(),
            at_ms: status.timestamp_ms,
        };
        if self
            .0
            .last()
            .is_some_and(|last| (last.state, last.reason) == (next.state, next.reason))
        {
            return;
        }
        if self.0.len() == KEPT {
            self.0.remove(0);
        }
        self.0.push(next);
    }

    pub(super) fn list(&self) -> Vec<Transition> {
        self.0.clone()
    }
}

impl Task {
    /// Sets the task's latest status, noting the change of state here and
    /// in the counts of `known`.
    pub(super) fn set_status(&mut self, status: v1::TaskStatus, known: &mut KnownTasks) {
        known.changed(self.status.state(), status.state());
        self.transitions.record(&status);
        self.status = status;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: v1::TaskState, at_ms: u64) -> v1::TaskStatus {
        v1::TaskStatus {
            state: state as i32,
            timestamp_ms: at_ms,
            ..Default::default()
        }
    }

    #[test]
    fn only_changes_are_kept_and_only_the_last_few() {
        let mut t = Transitions::starting(&status(v1::TaskState::Staging, 1));
        t.record(&status(v1::TaskState::Running, 2));
        t.record(&status(v1::TaskState::Running, 3));
        assert_eq!(
            t.list().iter().map(|t| t.at_ms).collect::<Vec<_>>(),
            vec![1, 2],
            "a repeated RUNNING is no change"
        );
        for at in 10..20 {
            let state = if at % 2 == 0 {
                v1::TaskState::Running
            } else {
                v1::TaskState::Lost
            };
            t.record(&status(state, at));
        }
        let kept = t.list();
        assert_eq!(kept.len(), KEPT);
        assert_eq!(kept.last().unwrap().at_ms, 19);
        assert_eq!(kept.first().unwrap().at_ms, 19 - KEPT as u64 + 1);
    }
}
