//! What a job tells its caller: each state change ([`JobUpdate`]), each
//! task's final outcome ([`TaskOutcome`]) and the whole ([`JobReport`]).

use std::time::Duration;

use wasmos_proto::v1;

/// A task's state change, as a [`Job`](super::Job) reports it to its progress callback.
#[derive(Clone, Debug)]
pub struct JobUpdate {
    /// The task's position in the job (0-based).
    pub index: usize,
    /// Which attempt this is (1 for the first).
    pub attempt: u32,
    /// The status as the master sent it.
    pub status: v1::TaskStatus,
    /// True when the status is terminal and the task will run again.
    pub retrying: bool,
    /// Tasks with a final outcome so far.
    pub done: usize,
    /// Tasks in the job.
    pub total: usize,
}

/// The final outcome of one task of a job.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskOutcome {
    /// The task's position in the job (0-based).
    pub index: usize,
    /// The id of its last attempt.
    pub task_id: String,
    /// Its terminal state.
    pub state: v1::TaskState,
    /// Why (`Unspecified` for a plain success).
    pub reason: v1::Reason,
    /// What happened, for people.
    pub message: String,
    /// The module's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// What it consumed, when the agent reported it.
    pub usage: Option<v1::TaskUsage>,
    /// The agent its last attempt ran on (empty if it never reached one).
    pub agent_id: String,
    /// How many times it was launched.
    pub attempts: u32,
}

impl TaskOutcome {
    /// Did the task finish successfully?
    pub fn succeeded(&self) -> bool {
        self.state == v1::TaskState::Finished
    }
}

/// What a [`Job`](super::Job) did.
#[derive(Clone, Debug)]
pub struct JobReport {
    /// The job's name.
    pub job: String,
    /// The framework that ran it (torn down by now).
    pub framework_id: String,
    /// One outcome per task, in job order.
    pub tasks: Vec<TaskOutcome>,
    /// True when the job was cancelled before every task ended by itself.
    pub cancelled: bool,
    /// Wall time from subscription to teardown.
    pub elapsed: Duration,
}

impl JobReport {
    /// Did every task finish successfully?
    pub fn succeeded(&self) -> bool {
        self.tasks.iter().all(TaskOutcome::succeeded)
    }

    /// The tasks that did not finish successfully.
    pub fn failed(&self) -> impl Iterator<Item = &TaskOutcome> {
        self.tasks.iter().filter(|t| !t.succeeded())
    }
}
