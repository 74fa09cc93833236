//! [`RetryPolicy`]: which failed tasks a [`Job`](super::Job) runs again.
//! The policy is the wire's `RetryPolicy`, read by the one function the
//! master's job service reads it with (`wasmos_core::retry`), so a job
//! retries the same way whether the SDK or the master drives it.

use wasmos_core::retry;
use wasmos_proto::v1;

/// Which failed tasks a [`Job`](super::Job) runs again, and how often.
///
/// A task is retried when any of the policy's rules matches its final
/// status and it has had fewer than `max_attempts` attempts. The default
/// retries only what was not the task's own fault: `LOST` (any reason),
/// `REASON_AGENT_LOST` and `REASON_AGENT_REMOVED`, up to 3 attempts in all.
/// A task that failed by itself (`REASON_EXIT_NONZERO`, a trap, a limit)
/// would most likely fail again, so it is not retried unless asked.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    policy: v1::RetryPolicy,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            policy: retry::default_policy(),
        }
    }
}

// Integers and lists of them only: equality is total (prost derives
// `PartialEq` alone for messages).
impl Eq for RetryPolicy {}

impl RetryPolicy {
    /// Never retry: every task runs once.
    pub fn never() -> RetryPolicy {
        RetryPolicy {
            policy: retry::never(),
        }
    }

    /// Attempts in all, the first included (at least 1). Default 3.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.policy.max_attempts = attempts.max(1);
        self
    }

    /// Also retry tasks that end in `state` (e.g. `Failed`).
    pub fn retry_state(self, state: v1::TaskState) -> Self {
        self.rule(v1::RetryRule {
            states: vec![state as i32],
            ..Default::default()
        })
    }

    /// Also retry tasks that end for `reason` (e.g. `Timeout`).
    pub fn retry_reason(self, reason: v1::Reason) -> Self {
        self.rule(v1::RetryRule {
            reasons: vec![reason as i32],
            ..Default::default()
        })
    }

    /// Also retry tasks whose module exited with `code` (a "try later").
    pub fn retry_exit_code(self, code: i32) -> Self {
        self.rule(v1::RetryRule {
            exit_codes: vec![code],
            ..Default::default()
        })
    }

    /// Also retry tasks whose end matches `rule` (see `RetryRule` in
    /// `proto/`; [`wasmos_core::retry::parse_rules`] reads `--retry-on`
    /// text into rules).
    pub fn rule(mut self, rule: v1::RetryRule) -> Self {
        self.policy.rules.push(rule);
        self
    }

    /// Would a task that ended with `status` after `attempts` attempts run
    /// again? Never for `FINISHED`.
    pub fn should_retry(&self, status: &v1::TaskStatus, attempts: u32) -> bool {
        retry::should_retry(&self.policy, status, attempts)
    }

    /// The policy as it travels on the wire.
    pub fn to_proto(&self) -> v1::RetryPolicy {
        self.policy.clone()
    }
}

impl From<v1::RetryPolicy> for RetryPolicy {
    fn from(policy: v1::RetryPolicy) -> Self {
        RetryPolicy { policy }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(state: v1::TaskState, reason: v1::Reason, exit_code: Option<i32>) -> v1::TaskStatus {
        v1::TaskStatus {
            state: state as i32,
            reason: reason as i32,
            exit_code,
            ..Default::default()
        }
    }

    #[test]
    fn builder_rules_add_to_the_default() {
        let policy = RetryPolicy::default()
            .retry_reason(v1::Reason::Timeout)
            .retry_exit_code(75)
            .max_attempts(4);
        let lost = ended(v1::TaskState::Lost, v1::Reason::AgentLost, None);
        let timeout = ended(v1::TaskState::Failed, v1::Reason::Timeout, None);
        let busy = ended(v1::TaskState::Failed, v1::Reason::ExitNonzero, Some(75));
        let broken = ended(v1::TaskState::Failed, v1::Reason::ExitNonzero, Some(1));
        for status in [&lost, &timeout, &busy] {
            assert!(policy.should_retry(status, 3), "{status:?}");
            assert!(!policy.should_retry(status, 4), "{status:?}");
        }
        assert!(!policy.should_retry(&broken, 1));
        assert!(!RetryPolicy::never().should_retry(&lost, 1));
        assert_eq!(RetryPolicy::from(policy.to_proto()), policy);
    }
}
