//! Which tasks that ended badly run again: the one reading of a
//! `RetryPolicy` (`proto/`), shared by the SDK's `Job` and the master's job
//! service, with the `--retry-on` syntax people write it in.
//!
//! A task runs again when it ended other than `FINISHED`, has attempts
//! left, and any rule matches its final status. The default retries only
//! what was not the task's own fault: `LOST`, and the loss of its agent.
//! A task that failed by itself (a non-zero exit, a trap, a limit) would
//! most likely fail again, so it is retried only when asked, by reason or
//! exit code (`exit:75`, a "try later" some programs use).

use wasmos_proto::v1::{self, Reason, TaskState};

use crate::limits::{MAX_ATTEMPTS, MAX_RETRY_RULES};

/// Attempts in all under the default policy.
pub const DEFAULT_ATTEMPTS: u32 = 3;

/// Entries one rule may list in each of its lists.
const MAX_RULE_ENTRIES: usize = 32;

/// The policy a job gets when it names none: `LOST`, `REASON_AGENT_LOST`
/// and `REASON_AGENT_REMOVED`, 3 attempts in all.
pub fn default_policy() -> v1::RetryPolicy {
    v1::RetryPolicy {
        max_attempts: DEFAULT_ATTEMPTS,
        rules: vec![
            v1::RetryRule {
                states: vec![TaskState::Lost as i32],
                ..Default::default()
            },
            v1::RetryRule {
                reasons: vec![Reason::AgentLost as i32, Reason::AgentRemoved as i32],
                ..Default::default()
            },
        ],
    }
}

/// A policy that never retries: every task runs once.
pub fn never() -> v1::RetryPolicy {
    v1::RetryPolicy {
        max_attempts: 1,
        rules: Vec::new(),
    }
}

/// Would a task whose final status is `status`, after `attempts`
/// attempts, run again under `policy`? Never for `FINISHED` or a state
/// that is not an end.
pub fn should_retry(policy: &v1::RetryPolicy, status: &v1::TaskStatus, attempts: u32) -> bool {
    let failed = matches!(
        status.state(),
        TaskState::Failed | TaskState::Killed | TaskState::Lost | TaskState::Error
    );
    failed
        && attempts < policy.max_attempts.max(1)
        && policy.rules.iter().any(|rule| matches(rule, status))
}

/// Does `rule` hold for `status`? An empty rule holds for every end but a
/// kill someone asked for (`REASON_KILLED`): that is not a failure to undo.
pub fn matches(rule: &v1::RetryRule, status: &v1::TaskStatus) -> bool {
    let empty = rule.states.is_empty() && rule.reasons.is_empty() && rule.exit_codes.is_empty();
    if empty {
        return status.reason() != Reason::Killed;
    }
    (rule.states.is_empty() || rule.states.contains(&status.state))
        && (rule.reasons.is_empty() || rule.reasons.contains(&status.reason))
        && (rule.exit_codes.is_empty()
            || status
                .exit_code
                .is_some_and(|code| rule.exit_codes.contains(&code)))
}

/// Checks a policy from the outside against the limits: at most
/// [`MAX_ATTEMPTS`] attempts and [`MAX_RETRY_RULES`] rules, only terminal
/// states other than `FINISHED`, only known reasons.
pub fn validate(policy: &v1::RetryPolicy) -> Result<(), String> {
    if policy.max_attempts > MAX_ATTEMPTS {
        return Err(format!(
            "a retry policy allows at most {MAX_ATTEMPTS} attempts, got {}",
            policy.max_attempts
        ));
    }
    if policy.rules.len() > MAX_RETRY_RULES {
        return Err(format!(
            "a retry policy has at most {MAX_RETRY_RULES} rules, got {}",
            policy.rules.len()
        ));
    }
    for rule in &policy.rules {
        let longest = rule
            .states
            .len()
            .max(rule.reasons.len())
            .max(rule.exit_codes.len());
        if longest > MAX_RULE_ENTRIES {
            return Err(format!(
                "a retry rule lists at most {MAX_RULE_ENTRIES} states, reasons or exit codes, got {longest}"
            ));
        }
        for &state in &rule.states {
            match TaskState::try_from(state) {
                Ok(TaskState::Failed | TaskState::Killed | TaskState::Lost | TaskState::Error) => {}
                _ => {
                    return Err(format!(
                        "a retry rule names the state {}: only FAILED, KILLED, LOST and ERROR end a task badly",
                        state_name(state)
                    ));
                }
            }
        }
        for &reason in &rule.reasons {
            if !matches!(Reason::try_from(reason), Ok(r) if r != Reason::Unspecified) {
                return Err(format!("a retry rule names an unknown reason ({reason})"));
            }
        }
    }
    Ok(())
}

/// Reads `--retry-on` text: rules separated by commas, each one or more
/// conditions joined by `+`, all of which must hold. A condition is a
/// state (`LOST`, `FAILED`, `KILLED`, `ERROR`), a reason (`TIMEOUT`,
/// `OUT_OF_FUEL`, `AGENT_LOST`, ...), `exit:N`, or `any` (every end but a
/// requested kill). `state:` and `reason:` say which one a name is where
/// both exist (`KILLED` alone is the state). Case and `-`/`_` do not
/// matter: `lost,timeout,exit:75,failed+out-of-fuel`.
pub fn parse_rules(text: &str) -> Result<Vec<v1::RetryRule>, String> {
    let mut rules = Vec::new();
    for item in text.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(format!("an empty rule in {text:?}"));
        }
        let mut rule = v1::RetryRule::default();
        for condition in item.split('+').map(str::trim) {
            parse_condition(condition, &mut rule)?;
        }
        rules.push(rule);
    }
    Ok(rules)
}

fn parse_condition(condition: &str, rule: &mut v1::RetryRule) -> Result<(), String> {
    let lower = condition.to_ascii_lowercase();
    if lower == "any" {
        return Ok(());
    }
    if let Some(code) = lower.strip_prefix("exit:") {
        let code = code
            .trim()
            .parse::<i32>()
            .map_err(|_| format!("{condition:?}: an exit code is a whole number, as in exit:75"))?;
        rule.exit_codes.push(code);
        return Ok(());
    }
    let name = lower.replace('-', "_").to_ascii_uppercase();
    let (kind, name) = match name.split_once(':') {
        Some((kind, name)) => (Some(kind.to_string()), name.to_string()),
        None => (None, name),
    };
    let state = TaskState::from_str_name(&format!("TASK_STATE_{name}")).filter(|s| {
        matches!(
            s,
            TaskState::Failed | TaskState::Killed | TaskState::Lost | TaskState::Error
        )
    });
    let reason =
        Reason::from_str_name(&format!("REASON_{name}")).filter(|r| *r != Reason::Unspecified);
    match (kind.as_deref(), state, reason) {
        (None | Some("STATE"), Some(state), _) => rule.states.push(state as i32),
        (None | Some("REASON"), _, Some(reason)) => rule.reasons.push(reason as i32),
        _ => {
            return Err(format!(
                "{condition:?} is not a retry condition: use a state (LOST, FAILED, KILLED, ERROR), a reason (TIMEOUT, OUT_OF_FUEL, MEMORY_LIMIT, TRAP, EXIT_NONZERO, AGENT_LOST, ...), exit:N or any"
            ));
        }
    }
    Ok(())
}

/// The rule as `--retry-on` writes it (`LOST`, `FAILED+exit:75`, `any`).
pub fn describe(rule: &v1::RetryRule) -> String {
    let states = rule.states.iter().map(|&s| state_name(s));
    let reasons = rule.reasons.iter().map(|&r| {
        let name = Reason::try_from(r).map_or_else(|_| r.to_string(), |r| r.as_str_name().into());
        let name = name.trim_start_matches("REASON_");
        // `KILLED` alone reads as the state.
        if TaskState::from_str_name(&format!("TASK_STATE_{name}")).is_some() {
            format!("reason:{name}")
        } else {
            name.to_string()
        }
    });
    let codes = rule.exit_codes.iter().map(|c| format!("exit:{c}"));
    let parts: Vec<String> = states.chain(reasons).chain(codes).collect();
    if parts.is_empty() {
        "any".into()
    } else {
        parts.join("+")
    }
}

fn state_name(state: i32) -> String {
    TaskState::try_from(state).map_or_else(
        |_| state.to_string(),
        |s| s.as_str_name().trim_start_matches("TASK_STATE_").into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(state: TaskState, reason: Reason, exit_code: Option<i32>) -> v1::TaskStatus {
        v1::TaskStatus {
            state: state as i32,
            reason: reason as i32,
            exit_code,
            ..Default::default()
        }
    }

    #[test]
    fn the_default_retries_the_lost_family_up_to_three_attempts() {
        let policy = default_policy();
        let lost = ended(TaskState::Lost, Reason::ExecutorTerminated, None);
        let agent_gone = ended(TaskState::Failed, Reason::AgentRemoved, None);
        assert!(should_retry(&policy, &lost, 1));
        assert!(should_retry(&policy, &agent_gone, 2));
        assert!(!should_retry(&policy, &lost, 3), "three attempts in all");
        for own_fault in [
            ended(TaskState::Failed, Reason::ExitNonzero, Some(1)),
            ended(TaskState::Failed, Reason::Timeout, None),
            ended(TaskState::Killed, Reason::Killed, None),
        ] {
            assert!(!should_retry(&policy, &own_fault, 1), "{own_fault:?}");
        }
        let finished = ended(TaskState::Finished, Reason::Unspecified, Some(0));
        let any = v1::RetryPolicy {
            max_attempts: 10,
            rules: vec![v1::RetryRule::default()],
        };
        assert!(!should_retry(&any, &finished, 1), "a success never reruns");
        let running = ended(TaskState::Running, Reason::Unspecified, None);
        assert!(!should_retry(&any, &running, 1));
        assert!(!should_retry(&never(), &lost, 1));
    }

    #[test]
    fn conditions_of_a_rule_all_hold_and_any_rule_will_do() {
        let rules = parse_rules("failed+exit:75, timeout").unwrap();
        let policy = v1::RetryPolicy {
            max_attempts: 5,
            rules,
        };
        assert!(should_retry(
            &policy,
            &ended(TaskState::Failed, Reason::ExitNonzero, Some(75)),
            1
        ));
        assert!(!should_retry(
            &policy,
            &ended(TaskState::Failed, Reason::ExitNonzero, Some(1)),
            1
        ));
        assert!(
            !should_retry(&policy, &ended(TaskState::Lost, Reason::AgentLost, None), 1),
            "exit:75 needs an exit code"
        );
        assert!(should_retry(
            &policy,
            &ended(TaskState::Failed, Reason::Timeout, None),
            4
        ));
    }

    #[test]
    fn any_skips_a_requested_kill() {
        let policy = v1::RetryPolicy {
            max_attempts: 2,
            rules: parse_rules("any").unwrap(),
        };
        assert!(should_retry(
            &policy,
            &ended(TaskState::Error, Reason::InvalidTask, None),
            1
        ));
        assert!(!should_retry(
            &policy,
            &ended(TaskState::Killed, Reason::Killed, None),
            1
        ));
        let killed = parse_rules("killed").unwrap();
        assert_eq!(killed[0].states, [TaskState::Killed as i32]);
        assert!(matches(
            &killed[0],
            &ended(TaskState::Killed, Reason::Killed, None)
        ));
    }

    #[test]
    fn rules_read_back_as_written() {
        let text = "LOST,TIMEOUT,exit:75,FAILED+OUT_OF_FUEL,reason:KILLED,any";
        let rules =
            parse_rules("lost, timeout,EXIT:75,failed+out-of-fuel,reason:killed,ANY").unwrap();
        let back: Vec<String> = rules.iter().map(describe).collect();
        assert_eq!(back.join(","), text);
        assert_eq!(parse_rules(text).unwrap(), rules);
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (text, says) in [
            ("lost,,timeout", "empty rule"),
            ("finished", "not a retry condition"),
            ("exit:soon", "whole number"),
            ("state:timeout", "not a retry condition"),
        ] {
            let error = parse_rules(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn policies_past_the_limits_are_refused() {
        assert_eq!(validate(&default_policy()), Ok(()));
        let many = v1::RetryPolicy {
            max_attempts: 3,
            rules: vec![v1::RetryRule::default(); MAX_RETRY_RULES + 1],
        };
        assert!(validate(&many).unwrap_err().contains("at most 5 rules"));
        let long = v1::RetryPolicy {
            max_attempts: MAX_ATTEMPTS + 1,
            rules: vec![],
        };
        assert!(validate(&long).unwrap_err().contains("at most 10 attempts"));
        let finished = v1::RetryPolicy {
            max_attempts: 2,
            rules: vec![v1::RetryRule {
                states: vec![TaskState::Finished as i32],
                ..Default::default()
            }],
        };
        assert!(validate(&finished).unwrap_err().contains("FINISHED"));
        let unknown = v1::RetryPolicy {
            max_attempts: 2,
            rules: vec![v1::RetryRule {
                reasons: vec![999],
                ..Default::default()
            }],
        };
        assert!(validate(&unknown).unwrap_err().contains("unknown reason"));
    }
}
