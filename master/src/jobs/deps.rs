//! Whether a job may start, given the jobs it runs after (Slurm's
//! `afterok`, `afterany`, `afternotok`). Index-wise dependencies
//! (`after_each`) never hold a whole job back: its indices wait one by one.

use wasmos_proto::v1::{self, JobState};

/// What a job's dependencies say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Start.
    Open,
    /// Some dependency has not ended.
    Wait,
    /// A job it needed to succeed did not: the job fails, for this reason.
    Fail(String),
    /// It runs only if a dependency failed, and none did: it is cancelled
    /// unrun, for this reason.
    Cancel(String),
}

fn ended(state: JobState) -> bool {
    matches!(
        state,
        JobState::Succeeded | JobState::Failed | JobState::Cancelled
    )
}

/// Every job `spec` names, of every kind of dependency.
pub fn named(spec: &v1::JobSpec) -> impl Iterator<Item = &String> {
    spec.after
        .iter()
        .chain(&spec.after_any)
        .chain(&spec.after_failed)
        .chain((!spec.after_each.is_empty()).then_some(&spec.after_each))
}

/// The gate of a job with `spec`, `state_of` telling how the jobs it
/// names stand (`None`: no such job, which fails it).
pub fn gate(spec: &v1::JobSpec, state_of: impl Fn(&str) -> Option<JobState>) -> Gate {
    let mut wait = false;
    let mut cancel = None;
    for job in named(spec) {
        if state_of(job).is_none() {
            return Gate::Fail(format!("it depends on {job}, which does not exist"));
        }
    }
    for job in &spec.after {
        match state_of(job) {
            Some(JobState::Succeeded) => {}
            Some(state @ (JobState::Failed | JobState::Cancelled)) => {
                let how = if state == JobState::Failed {
                    "failed"
                } else {
                    "was cancelled"
                };
                return Gate::Fail(format!("{job}, which it runs after, {how}"));
            }
            _ => wait = true,
        }
    }
    for job in &spec.after_any {
        wait |= !state_of(job).is_some_and(ended);
    }
    if !spec.after_failed.is_empty() {
        let states: Vec<JobState> = spec
            .after_failed
            .iter()
            .filter_map(|job| state_of(job))
            .collect();
        if !states.iter().all(|&s| ended(s)) {
            wait = true;
        } else if states.iter().all(|&s| s == JobState::Succeeded) {
            cancel = Some(format!(
                "it runs only if one of {} failed, and none did",
                spec.after_failed.join(", ")
            ));
        }
    }
    match (cancel, wait) {
        (_, true) => Gate::Wait,
        (Some(reason), false) => Gate::Cancel(reason),
        (None, false) => Gate::Open,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn spec(after: &[&str], any: &[&str], failed: &[&str]) -> v1::JobSpec {
        let own = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
        v1::JobSpec {
            after: own(after),
            after_any: own(any),
            after_failed: own(failed),
            ..Default::default()
        }
    }

    fn states(pairs: &[(&str, JobState)]) -> impl Fn(&str) -> Option<JobState> {
        let map: HashMap<String, JobState> =
            pairs.iter().map(|(j, s)| (j.to_string(), *s)).collect();
        move |job| map.get(job).copied()
    }

    #[test]
    fn after_waits_for_success_and_fails_with_its_dependency() {
        let s = spec(&["j1", "j2"], &[], &[]);
        let running = states(&[("j1", JobState::Succeeded), ("j2", JobState::Running)]);
        assert_eq!(gate(&s, running), Gate::Wait);
        let done = states(&[("j1", JobState::Succeeded), ("j2", JobState::Succeeded)]);
        assert_eq!(gate(&s, done), Gate::Open);
        let failed = states(&[("j1", JobState::Failed), ("j2", JobState::Running)]);
        assert_eq!(
            gate(&s, failed),
            Gate::Fail("j1, which it runs after, failed".into())
        );
        assert_eq!(
            gate(&s, states(&[("j1", JobState::Succeeded)])),
            Gate::Fail("it depends on j2, which does not exist".into())
        );
    }

    #[test]
    fn after_any_waits_for_every_end_however_it_ended() {
        let s = spec(&[], &["j1", "j2"], &[]);
        let one = states(&[("j1", JobState::Failed), ("j2", JobState::Queued)]);
        assert_eq!(gate(&s, one), Gate::Wait);
        let both = states(&[("j1", JobState::Failed), ("j2", JobState::Cancelled)]);
        assert_eq!(gate(&s, both), Gate::Open);
    }

    #[test]
    fn after_failed_runs_only_on_a_failure() {
        let s = spec(&[], &[], &["j1", "j2"]);
        let waiting = states(&[("j1", JobState::Failed), ("j2", JobState::Running)]);
        assert_eq!(gate(&s, waiting), Gate::Wait);
        let one_failed = states(&[("j1", JobState::Failed), ("j2", JobState::Succeeded)]);
        assert_eq!(gate(&s, one_failed), Gate::Open);
        let none = states(&[("j1", JobState::Succeeded), ("j2", JobState::Succeeded)]);
        assert!(matches!(gate(&s, none), Gate::Cancel(r) if r.contains("j1, j2")));
    }
}
