//! The job service's state machine driven as the shell will drive it:
//! offers in, launches out, statuses in, effects out.

use super::*;

pub(super) const GIB: u64 = 1 << 30;

pub(super) fn alice() -> Owner {
    Owner {
        role: "default".into(),
        principal: "alice".into(),
    }
}

pub(crate) fn job_spec(count: u32) -> v1::JobSpec {
    v1::JobSpec {
        name: "test".into(),
        task: Some(v1::TaskSpec {
            artifact: "ab".repeat(32),
            args: vec!["--index={i}".into()],
            env: vec![v1::EnvVar {
                name: "PART".into(),
                value: "part-{i}".into(),
            }],
            resources: Some(v1::Resources {
                cpus: 1.0,
                mem: GIB,
                disk: 0,
            }),
            ..Default::default()
        }),
        count,
        ..Default::default()
    }
}

pub(super) fn offer(id: &str, agent: &str, cpus: f64) -> v1::Offer {
    v1::Offer {
        offer_id: id.into(),
        agent_id: agent.into(),
        resources: Some(v1::Resources {
            cpus,
            mem: 64 * GIB,
            disk: 0,
        }),
        ..Default::default()
    }
}

pub(super) fn ended(task_id: &str, state: v1::TaskState, exit_code: Option<i32>) -> v1::TaskStatus {
    let reason = match (state, exit_code) {
        (v1::TaskState::Finished, _) => v1::Reason::Unspecified,
        (v1::TaskState::Failed, Some(_)) => v1::Reason::ExitNonzero,
        (v1::TaskState::Killed, _) => v1::Reason::Killed,
        (v1::TaskState::Lost, _) => v1::Reason::AgentLost,
        _ => v1::Reason::Trap,
    };
    v1::TaskStatus {
        task_id: task_id.into(),
        agent_id: "a1".into(),
        state: state as i32,
        reason: reason as i32,
        exit_code,
        usage: Some(v1::TaskUsage {
            cpu_time_ms: 7,
            fuel_consumed: 1000,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn submit(jobs: &mut Jobs, spec: v1::JobSpec) -> String {
    jobs.submit(alice(), spec, Time(0)).expect("submitted").0
}

/// Launches on one agent of `cpus` cores: the task ids placed.
pub(super) fn place(jobs: &mut Jobs, cpus: f64) -> Vec<v1::TaskSpec> {
    let placement = jobs.place(&alice(), vec![offer("o", "a1", cpus)]);
    placement
        .launches
        .into_iter()
        .flat_map(|l| l.tasks)
        .collect()
}

/// Places and ends tasks until nothing more starts; `end` says how each
/// attempt ends. Returns every effect.
pub(super) fn run_out(
    jobs: &mut Jobs,
    cpus: f64,
    mut end: impl FnMut(&v1::TaskSpec) -> v1::TaskStatus,
) -> Vec<Effect> {
    let mut effects = Vec::new();
    loop {
        let tasks = place(jobs, cpus);
        if tasks.is_empty() {
            return effects;
        }
        for task in &tasks {
            effects.extend(jobs.update(&end(task), Time(1)));
        }
    }
}

pub(super) fn finish(task: &v1::TaskSpec) -> v1::TaskStatus {
    ended(&task.task_id, v1::TaskState::Finished, Some(0))
}

fn env<'a>(task: &'a v1::TaskSpec, name: &str) -> &'a str {
    task.env
        .iter()
        .find(|e| e.name == name)
        .map_or("", |e| e.value.as_str())
}

#[test]
fn an_array_starts_as_offers_come_and_succeeds_when_every_index_finished() {
    let mut jobs = Jobs::new(1);
    let id = submit(&mut jobs, job_spec(10));
    assert_eq!(jobs.job(&id).unwrap().state, JobState::Queued);
    assert!(jobs.wants_offers(&alice()));

    let first = place(&mut jobs, 4.0);
    let ids: Vec<&str> = first.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            format!("{id}-0-1"),
            format!("{id}-1-1"),
            format!("{id}-2-1"),
            format!("{id}-3-1")
        ]
    );
    assert_eq!(first[2].args, ["--index=2"]);
    assert_eq!(env(&first[2], "PART"), "part-2");
    assert_eq!(env(&first[2], "WASMOS_INDEX"), "2");
    assert_eq!(env(&first[2], "WASMOS_ATTEMPT"), "1");
    assert_eq!(env(&first[2], "WASMOS_JOB"), id);
    assert_eq!(first[2].labels["wasmos.job"], id);
    assert_eq!(jobs.job(&id).unwrap().state, JobState::Running);

    let mut effects = Vec::new();
    for task in &first {
        effects.extend(jobs.update(&finish(task), Time(5)));
    }
    effects.extend(run_out(&mut jobs, 4.0, finish));
    let job = jobs.job(&id).unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.indices.counts().succeeded, 10);
    assert_eq!(
        effects,
        [Effect::Ended {
            job: id.clone(),
            state: JobState::Succeeded
        }]
    );
    let outcome = job.indices.outcome(9);
    assert_eq!(outcome.state, IndexState::Succeeded);
    assert_eq!((outcome.attempts, outcome.exit_code), (1, Some(0)));
    assert_eq!((outcome.cpu_time_ms, outcome.fuel), (7, 1000));
    assert_eq!(job.indices.agent(&outcome), "a1");
    assert!(!jobs.wants_offers(&alice()));
    let placement = jobs.place(&alice(), vec![offer("o9", "a1", 4.0)]);
    assert_eq!(
        placement.unused,
        ["o9"],
        "offers nothing takes are declined"
    );
}

#[test]
fn a_job_on_an_attribute_starts_only_on_agents_that_have_it() {
    let attribute = |key: &str, value: &str| v1::Attribute {
        key: key.into(),
        value: value.into(),
    };
    let mut jobs = Jobs::new(1);
    let anywhere = submit(&mut jobs, job_spec(1));
    let mut spec = job_spec(2);
    spec.on = vec![attribute("arch", "aarch64")];
    let arm = submit(&mut jobs, spec);

    let x86 = v1::Offer {
        attributes: vec![attribute("os", "linux"), attribute("arch", "x86_64")],
        ..offer("o1", "x86", 4.0)
    };
    let placement = jobs.place(&alice(), vec![x86]);
    let placed: Vec<_> = placement.launches.iter().flat_map(|l| &l.tasks).collect();
    assert_eq!(
        placed.len(),
        1,
        "only the job that asks for nothing: {placed:?}"
    );
    assert!(placed[0].task_id.starts_with(&anywhere));
    assert!(jobs.wants_offers(&alice()), "the aarch64 job still waits");

    let aarch64 = v1::Offer {
        attributes: vec![attribute("os", "linux"), attribute("arch", "aarch64")],
        ..offer("o2", "arm", 4.0)
    };
    let placement = jobs.place(&alice(), vec![aarch64]);
    let placed: Vec<_> = placement.launches.iter().flat_map(|l| &l.tasks).collect();
    assert_eq!(placed.len(), 2, "{placed:?}");
    assert!(placed.iter().all(|t| t.task_id.starts_with(&arm)));

    let mut spec = job_spec(1);
    spec.on = (0..=submit::MAX_ON)
        .map(|i| attribute(&format!("k{i}"), "v"))
        .collect();
    let refused = jobs.submit(alice(), spec, Time(0)).unwrap_err();
    assert!(refused.contains("on has 17 items"), "{refused}");
}

#[test]
fn retries_follow_the_policy_by_exit_code_and_count_attempts() {
    let mut jobs = Jobs::new(1);
    let mut spec = job_spec(4);
    spec.retry = Some(v1::RetryPolicy {
        max_attempts: 3,
        rules: retry::parse_rules("exit:75").unwrap(),
    });
    let id = submit(&mut jobs, spec);
    // Even indices say "try later" twice, then finish; odd ones fail.
    run_out(&mut jobs, 8.0, |task| {
        let index: u32 = env(task, "WASMOS_INDEX").parse().unwrap();
        let attempt: u32 = env(task, "WASMOS_ATTEMPT").parse().unwrap();
        match (index % 2, attempt) {
            (0, 1 | 2) => ended(&task.task_id, v1::TaskState::Failed, Some(75)),
            (0, _) => finish(task),
            _ => ended(&task.task_id, v1::TaskState::Failed, Some(1)),
        }
    });
    let job = jobs.job(&id).unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.reason, "2 of 4 indices failed");
    let even = job.indices.outcome(2);
    assert_eq!((even.state, even.attempts), (IndexState::Succeeded, 3));
    let odd = job.indices.outcome(3);
    assert_eq!((odd.state, odd.attempts), (IndexState::Failed, 1));
    assert_eq!(odd.exit_code, Some(1));
}

#[test]
fn the_default_policy_retries_a_lost_task_but_not_a_failure() {
    let mut jobs = Jobs::new(1);
    let id = submit(&mut jobs, job_spec(2));
    run_out(&mut jobs, 8.0, |task| match task.task_id.as_str() {
        t if t.ends_with("-0-1") => ended(t, v1::TaskState::Lost, None),
        t if t.ends_with("-1-1") => ended(t, v1::TaskState::Failed, None),
        _ => finish(task),
    });
    let job = jobs.job(&id).unwrap();
    assert_eq!(job.indices.outcome(0).state, IndexState::Succeeded);
    assert_eq!(job.indices.outcome(0).attempts, 2);
    assert_eq!(job.indices.outcome(1).state, IndexState::Failed);
}

#[test]
fn duplicates_and_older_attempts_change_nothing_and_unlaunched_tasks_wait_again() {
    let mut jobs = Jobs::new(1);
    let id = submit(&mut jobs, job_spec(2));
    let tasks = place(&mut jobs, 2.0);
    jobs.not_launched(&[tasks[1].task_id.clone()], Time(0));
    assert_eq!(jobs.job(&id).unwrap().indices.running(), 1);
    let again = place(&mut jobs, 2.0);
    assert_eq!(again[0].task_id, tasks[1].task_id, "the same attempt");

    let lost = ended(&tasks[0].task_id, v1::TaskState::Lost, None);
    jobs.update(&lost, Time(1));
    jobs.update(&lost, Time(1));
    let job = jobs.job(&id).unwrap();
    assert_eq!(job.indices.outcome(0).attempts, 1);
    assert_eq!(job.indices.counts().ended(), 0);
    let retry = place(&mut jobs, 2.0);
    assert_eq!(retry[0].task_id, format!("{id}-0-2"));
    // A late end of the first attempt is not the second's.
    jobs.update(&finish(&tasks[0]), Time(2));
    assert_eq!(jobs.job(&id).unwrap().indices.running(), 2);
}

#[test]
fn max_failed_stops_the_job_and_it_ends_once_its_kills_are_heard() {
    let mut jobs = Jobs::new(1);
    let mut spec = job_spec(100);
    spec.max_failed = 2;
    let id = submit(&mut jobs, spec);
    let tasks = place(&mut jobs, 5.0);
    assert!(
        jobs.update(
            &ended(&tasks[0].task_id, v1::TaskState::Failed, Some(1)),
            Time(1)
        )
        .is_empty()
    );
    let effects = jobs.update(
        &ended(&tasks[1].task_id, v1::TaskState::Failed, Some(1)),
        Time(1),
    );
    let mut killed: Vec<String> = tasks[2..].iter().map(|t| t.task_id.clone()).collect();
    killed.sort();
    match effects.as_slice() {
        [Effect::Kill { owner, task_ids }] => {
            let mut task_ids = task_ids.clone();
            task_ids.sort();
            assert_eq!((owner, task_ids), (&alice(), killed));
        }
        other => panic!("{other:?}"),
    }
    let job = jobs.job(&id).unwrap();
    assert_eq!(job.state, JobState::Running, "not ended while tasks run");
    assert!(job.reason.contains("max_failed"), "{}", job.reason);
    assert!(place(&mut jobs, 5.0).is_empty(), "nothing more starts");
    let mut last = Vec::new();
    for task in &tasks[2..] {
        last = jobs.update(&ended(&task.task_id, v1::TaskState::Killed, None), Time(2));
    }
    assert_eq!(
        last,
        [Effect::Ended {
            job: id.clone(),
            state: JobState::Failed
        }]
    );
    let counts = jobs.job(&id).unwrap().indices.counts();
    assert_eq!((counts.failed, counts.ended()), (100, 100));
}

#[test]
fn max_running_caps_what_runs_at_once() {
    let mut jobs = Jobs::new(1);
    let mut spec = job_spec(10);
    spec.max_running = 3;
    let id = submit(&mut jobs, spec);
    let tasks = place(&mut jobs, 8.0);
    assert_eq!(tasks.len(), 3);
    assert!(place(&mut jobs, 8.0).is_empty());
    assert!(!jobs.wants_offers(&alice()));
    jobs.update(&finish(&tasks[0]), Time(1));
    assert_eq!(place(&mut jobs, 8.0).len(), 1);
    run_out(&mut jobs, 8.0, finish);
    assert_eq!(jobs.job(&id).unwrap().state, JobState::Running);
}

#[test]
fn cancel_kills_what_runs_and_settles_what_waits() {
    let mut jobs = Jobs::new(1);
    let id = submit(&mut jobs, job_spec(1000));
    let tasks = place(&mut jobs, 2.0);
    let effects = jobs.cancel(&id, "cancelled by alice", Time(1)).unwrap();
    assert!(matches!(&effects[..], [Effect::Kill { task_ids, .. }] if task_ids.len() == 2));
    jobs.update(
        &ended(&tasks[0].task_id, v1::TaskState::Killed, None),
        Time(2),
    );
    // One ended by itself before its kill landed.
    let effects = jobs.update(&finish(&tasks[1]), Time(2));
    assert_eq!(
        effects,
        [Effect::Ended {
            job: id.clone(),
            state: JobState::Cancelled
        }]
    );
    let job = jobs.job(&id).unwrap();
    assert_eq!(job.reason, "cancelled by alice");
    let counts = job.indices.counts();
    assert_eq!((counts.succeeded, counts.cancelled), (1, 999));
    assert_eq!(jobs.cancel(&id, "again", Time(3)), Some(vec![]));
    assert_eq!(jobs.cancel("j1.999", "no such", Time(3)), None);
}

#[test]
fn a_held_job_starts_only_when_released() {
    let mut jobs = Jobs::new(1);
    let mut spec = job_spec(2);
    spec.hold = true;
    let id = submit(&mut jobs, spec);
    assert_eq!(jobs.job(&id).unwrap().state, JobState::Held);
    assert!(place(&mut jobs, 4.0).is_empty());
    jobs.release(&id, Time(1)).unwrap();
    assert_eq!(jobs.job(&id).unwrap().state, JobState::Queued);
    let tasks = place(&mut jobs, 1.0);
    assert!(jobs.hold(&id));
    assert!(
        place(&mut jobs, 4.0).is_empty(),
        "held: nothing more starts"
    );
    jobs.update(&finish(&tasks[0]), Time(2));
    jobs.release(&id, Time(3)).unwrap();
    run_out(&mut jobs, 4.0, finish);
    assert_eq!(jobs.job(&id).unwrap().state, JobState::Succeeded);
    assert!(!jobs.hold(&id), "an ended job is not held");
}

#[test]
fn after_waits_for_success_and_a_failed_dependency_fails_the_job_naming_it() {
    let mut jobs = Jobs::new(1);
    let first = submit(&mut jobs, job_spec(2));
    let mut then = job_spec(2);
    then.after = vec![first.clone()];
    let second = submit(&mut jobs, then.clone());
    assert_eq!(jobs.job(&second).unwrap().state, JobState::Waiting);
    let tasks = place(&mut jobs, 8.0);
    assert!(
        tasks
            .iter()
            .all(|t| t.task_id.starts_with(&format!("{first}-"))),
        "only the first job starts"
    );
    for task in &tasks {
        jobs.update(&finish(task), Time(1));
    }
    assert_eq!(jobs.job(&second).unwrap().state, JobState::Queued);
    run_out(&mut jobs, 8.0, finish);
    assert_eq!(jobs.job(&second).unwrap().state, JobState::Succeeded);

    let failing = submit(&mut jobs, job_spec(1));
    then.after = vec![failing.clone()];
    let doomed = submit(&mut jobs, then);
    let effects = run_out(&mut jobs, 8.0, |t| {
        ended(&t.task_id, v1::TaskState::Failed, Some(2))
    });
    let job = jobs.job(&doomed).unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(
        job.reason,
        format!("{failing}, which it runs after, failed")
    );
    assert_eq!(job.indices.outcome(0).attempts, 0, "it never ran");
    assert!(effects.contains(&Effect::Ended {
        job: doomed.clone(),
        state: JobState::Failed
    }));
}

#[test]
fn after_any_and_after_failed() {
    let mut jobs = Jobs::new(1);
    let first = submit(&mut jobs, job_spec(1));
    let mut any = job_spec(1);
    any.after_any = vec![first.clone()];
    let any = submit(&mut jobs, any);
    let mut on_failure = job_spec(1);
    on_failure.after_failed = vec![first.clone()];
    let on_failure = submit(&mut jobs, on_failure);
    let tasks = place(&mut jobs, 1.0);
    jobs.update(
        &ended(&tasks[0].task_id, v1::TaskState::Failed, Some(1)),
        Time(1),
    );
    assert_eq!(jobs.job(&any).unwrap().state, JobState::Queued);
    assert_eq!(jobs.job(&on_failure).unwrap().state, JobState::Queued);

    let good = submit(&mut jobs, job_spec(1));
    let mut cleanup = job_spec(1);
    cleanup.after_failed = vec![good.clone()];
    let cleanup = submit(&mut jobs, cleanup);
    run_out(&mut jobs, 8.0, finish);
    let job = jobs.job(&cleanup).unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert!(job.reason.contains("none did"), "{}", job.reason);
}

#[test]
fn after_each_runs_index_i_after_index_i() {
    let mut jobs = Jobs::new(1);
    let first = submit(&mut jobs, job_spec(4));
    let mut each = job_spec(4);
    each.after_each = first.clone();
    let second = submit(&mut jobs, each);
    // Index 1 of the first job succeeds, index 2 fails for good.
    let tasks = place(&mut jobs, 4.0);
    assert!(
        tasks
            .iter()
            .all(|t| t.task_id.starts_with(&format!("{first}-")))
    );
    jobs.update(&finish(&tasks[1]), Time(1));
    jobs.update(
        &ended(&tasks[2].task_id, v1::TaskState::Failed, Some(1)),
        Time(1),
    );
    let next = place(&mut jobs, 4.0);
    assert_eq!(
        next.iter().map(|t| t.task_id.clone()).collect::<Vec<_>>(),
        [format!("{second}-1-1")]
    );
    assert_eq!(
        jobs.job(&second).unwrap().indices.outcome(2).state,
        IndexState::Failed
    );
    jobs.update(&finish(&next[0]), Time(2));
    jobs.update(&finish(&tasks[0]), Time(2));
    jobs.update(&finish(&tasks[3]), Time(2));
    run_out(&mut jobs, 4.0, finish);
    let job = jobs.job(&second).unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.indices.counts().succeeded, 3);

    // Submitted after its dependency ended: it starts from what it left.
    let mut late = job_spec(4);
    late.after_each = first.clone();
    let late = submit(&mut jobs, late);
    let started = run_out(&mut jobs, 4.0, finish);
    assert!(started.contains(&Effect::Ended {
        job: late.clone(),
        state: JobState::Failed
    }));
    assert_eq!(jobs.job(&late).unwrap().indices.counts().succeeded, 3);
}

#[test]
fn priorities_order_an_owners_jobs_and_a_misfit_lets_the_next_one_in() {
    let mut jobs = Jobs::new(1);
    let low = submit(&mut jobs, job_spec(10));
    let mut urgent = job_spec(2);
    urgent.priority = 5;
    let urgent = submit(&mut jobs, urgent);
    let mut big = job_spec(1);
    big.priority = 9;
    big.task.as_mut().unwrap().resources.as_mut().unwrap().cpus = 16.0;
    let big = submit(&mut jobs, big);
    let tasks = place(&mut jobs, 4.0);
    let owners: Vec<&str> = tasks
        .iter()
        .map(|t| t.task_id.split('-').next().unwrap())
        .collect();
    assert_eq!(owners, [urgent.as_str(), &urgent, &low, &low]);
    assert_eq!(jobs.job(&big).unwrap().state, JobState::Queued);
}

#[test]
fn a_deadline_fails_what_has_not_finished() {
    let mut jobs = Jobs::new(1);
    let mut spec = job_spec(3);
    spec.deadline_ms = 1000;
    let id = submit(&mut jobs, spec);
    let tasks = place(&mut jobs, 1.0);
    assert!(jobs.tick(Time(999)).is_empty());
    let effects = jobs.tick(Time(1000));
    assert!(
        matches!(&effects[..], [Effect::Kill { task_ids, .. }] if task_ids == &[tasks[0].task_id.clone()])
    );
    let effects = jobs.update(
        &ended(&tasks[0].task_id, v1::TaskState::Killed, None),
        Time(1001),
    );
    assert_eq!(effects.len(), 1);
    let job = jobs.job(&id).unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert!(job.reason.contains("deadline"), "{}", job.reason);
}

#[test]
fn submissions_past_the_limits_are_refused_with_the_limit_named() {
    let mut jobs = Jobs::new(1);
    let refuse =
        |jobs: &mut Jobs, spec: v1::JobSpec| jobs.submit(alice(), spec, Time(0)).unwrap_err();
    assert!(refuse(&mut jobs, job_spec(0)).contains("1 to 1000000"));
    assert!(refuse(&mut jobs, job_spec(1_000_001)).contains("1 to 1000000"));
    let mut deps = job_spec(1);
    deps.after = (0..21).map(|i| format!("j{i}")).collect();
    assert!(refuse(&mut jobs, deps).contains("at most 20 jobs"));
    let mut unknown = job_spec(1);
    unknown.after = vec!["j1.77".into()];
    assert!(refuse(&mut jobs, unknown).contains("j1.77: no such job"));
    let mut policy = job_spec(1);
    policy.retry = Some(v1::RetryPolicy {
        max_attempts: 11,
        rules: vec![],
    });
    assert!(refuse(&mut jobs, policy).contains("at most 10 attempts"));
    let mut no_cpus = job_spec(1);
    no_cpus
        .task
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .cpus = 0.0;
    assert!(refuse(&mut jobs, no_cpus).contains("cpus"));
    let mut other_role = job_spec(1);
    other_role.role = "batch".into();
    assert!(refuse(&mut jobs, other_role).contains("role"));
    assert_eq!(jobs.jobs().count(), 0, "nothing refused is kept");
}

#[test]
fn an_idempotency_key_answers_the_first_jobs_id() {
    let mut jobs = Jobs::new(1);
    let mut spec = job_spec(3);
    spec.idempotency_key = "nightly-2026-12-05".into();
    let first = submit(&mut jobs, spec.clone());
    assert_eq!(
        jobs.by_key(&alice(), "nightly-2026-12-05").unwrap().id,
        first
    );
    assert!(jobs.by_key(&alice(), "").is_none());
    assert_eq!(submit(&mut jobs, spec), first);
    assert_eq!(jobs.jobs().count(), 1);
}

#[test]
fn a_million_indices_cost_nothing_until_they_start() {
    let mut jobs = Jobs::new(1);
    let id = submit(&mut jobs, job_spec(1_000_000));
    let tasks = place(&mut jobs, 16.0);
    assert_eq!(tasks.len(), 16);
    assert_eq!(tasks[15].task_id, format!("{id}-15-1"));
    let job = jobs.job(&id).unwrap();
    assert_eq!(job.indices.outcome(999_999), indices::Outcome::default());
    assert_eq!(job.indices.running(), 16);
}

#[test]
fn failed_indices_run_again_as_new_attempts() {
    let mut jobs = Jobs::new(1);
    let id = submit(&mut jobs, job_spec(6));
    run_out(&mut jobs, 8.0, |task| {
        if env(task, "WASMOS_INDEX").parse::<u32>().unwrap() < 2 {
            ended(&task.task_id, v1::TaskState::Failed, Some(1))
        } else {
            finish(task)
        }
    });
    assert_eq!(jobs.job(&id).unwrap().state, JobState::Failed);
    assert_eq!(jobs.retry_failed(&id, false), Some(2));
    let job = jobs.job(&id).unwrap();
    assert_eq!((job.state, job.reason.as_str()), (JobState::Queued, ""));
    assert_eq!(job.indices.counts().failed, 0);
    let again = place(&mut jobs, 8.0);
    let ids: Vec<&str> = again.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(ids, [format!("{id}-0-2"), format!("{id}-1-2")]);
    let effects: Vec<Effect> = again
        .iter()
        .flat_map(|t| jobs.update(&finish(t), Time(9)))
        .collect();
    assert_eq!(
        effects,
        [Effect::Ended {
            job: id.clone(),
            state: JobState::Succeeded
        }]
    );
    assert_eq!(jobs.retry_failed(&id, false), Some(0), "nothing failed");
    assert_eq!(jobs.job(&id).unwrap().state, JobState::Succeeded);
    assert_eq!(jobs.retry_failed("j1.99", false), None);
}

#[test]
fn a_principal_has_a_bounded_number_of_live_jobs() {
    let mut jobs = Jobs::new(1);
    let mut spec = job_spec(1);
    spec.hold = true;
    for _ in 0..submit::MAX_LIVE_JOBS_PER_PRINCIPAL {
        submit(&mut jobs, spec.clone());
    }
    let refused = jobs.submit(alice(), spec.clone(), Time(0)).unwrap_err();
    assert!(refused.contains("MAX_LIVE_JOBS_PER_PRINCIPAL"), "{refused}");
    let bob = Owner {
        role: "default".into(),
        principal: "bob".into(),
    };
    assert!(
        jobs.submit(bob, spec.clone(), Time(0)).is_ok(),
        "another principal's own"
    );
    // One ends: there is room again.
    let first = jobs.jobs().next().unwrap().id.clone();
    jobs.cancel(&first, "room", Time(1)).unwrap();
    assert!(jobs.submit(alice(), spec, Time(2)).is_ok());
}

#[test]
fn an_ended_job_past_its_retention_keeps_only_its_summary() {
    let mut jobs = Jobs::new(1);
    let id = submit(&mut jobs, job_spec(5000));
    let tasks = place(&mut jobs, 64.0);
    for task in &tasks {
        jobs.update(&finish(task), Time(1000));
    }
    run_out(&mut jobs, 64.0, finish);
    let running = submit(&mut jobs, job_spec(3));
    place(&mut jobs, 1.0);
    let retention = std::time::Duration::from_secs(10);
    assert_eq!(jobs.expire(Time(10_000), retention), 0, "not yet");
    assert_eq!(jobs.job(&id).unwrap().indices.outcome(7).attempts, 1);
    assert_eq!(jobs.expire(Time(11_001), retention), 1);
    let job = jobs.job(&id).unwrap();
    assert!(job.expired);
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.indices.counts().succeeded, 5000, "the summary stays");
    assert_eq!(job.indices.outcome(7), indices::Outcome::default());
    assert!(!jobs.job(&running).unwrap().expired, "a live job keeps all");
    assert_eq!(jobs.expire(Time(99_000), retention), 0, "once");
    assert_eq!(jobs.retry_failed(&id, false), None);
}

#[test]
fn an_index_wise_dependent_whose_every_counterpart_failed_ends_at_once() {
    let mut jobs = Jobs::new(1);
    let first = submit(&mut jobs, job_spec(2));
    run_out(&mut jobs, 8.0, |t| {
        ended(&t.task_id, v1::TaskState::Failed, Some(1))
    });
    let mut each = job_spec(2);
    each.after_each = first.clone();
    let (second, effects) = jobs.submit(alice(), each, Time(5)).unwrap();
    assert_eq!(
        effects,
        [Effect::Ended {
            job: second.clone(),
            state: JobState::Failed
        }]
    );
    assert_eq!(jobs.job(&second).unwrap().indices.counts().failed, 2);
}

#[test]
fn a_launch_refused_while_its_job_stops_settles_and_the_job_ends() {
    let mut jobs = Jobs::new(1);
    let id = submit(&mut jobs, job_spec(3));
    let tasks = place(&mut jobs, 2.0);
    jobs.cancel(&id, "cancelled", Time(1)).unwrap();
    jobs.update(
        &ended(&tasks[0].task_id, v1::TaskState::Killed, None),
        Time(2),
    );
    // The other launch's offer was rescinded: it never ran.
    let effects = jobs.not_launched(&[tasks[1].task_id.clone()], Time(3));
    assert_eq!(
        effects,
        [Effect::Ended {
            job: id.clone(),
            state: JobState::Cancelled
        }]
    );
    assert_eq!(jobs.job(&id).unwrap().indices.counts().cancelled, 3);
}

#[test]
fn the_lowest_priority_is_placed_last_without_overflow() {
    let mut jobs = Jobs::new(1);
    let mut lowest = job_spec(1);
    lowest.priority = i32::MIN;
    let lowest = submit(&mut jobs, lowest);
    let mut highest = job_spec(1);
    highest.priority = i32::MAX;
    let highest = submit(&mut jobs, highest);
    let tasks = place(&mut jobs, 2.0);
    assert!(tasks[0].task_id.starts_with(&format!("{highest}-")));
    assert!(tasks[1].task_id.starts_with(&format!("{lowest}-")));
}

#[test]
fn a_cancelled_million_keeps_no_outcome_per_index() {
    let mut jobs = Jobs::new(1);
    let id = submit(&mut jobs, job_spec(1_000_000));
    let tasks = place(&mut jobs, 2.0);
    jobs.cancel(&id, "cancelled", Time(1)).unwrap();
    for task in &tasks {
        jobs.update(&finish(task), Time(2));
    }
    let job = jobs.job(&id).unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.indices.counts().cancelled, 999_998);
    assert_eq!(job.indices.outcome(999_999).state, IndexState::Cancelled);
    assert_eq!(job.indices.outcome(1).state, IndexState::Succeeded);
    // Run again, cancelled ones too: every index waits, none twice.
    assert_eq!(jobs.retry_failed(&id, true), Some(999_998));
    let again = place(&mut jobs, 4.0);
    let ids: Vec<&str> = again.iter().map(|t| t.task_id.as_str()).collect();
    // Never started before: their first attempt.
    assert_eq!(
        ids,
        [
            format!("{id}-2-1"),
            format!("{id}-3-1"),
            format!("{id}-4-1"),
            format!("{id}-5-1")
        ]
    );
}

#[test]
fn a_long_chain_of_dependents_fails_without_recursion() {
    let mut jobs = Jobs::new(1);
    let head = submit(&mut jobs, job_spec(1));
    let mut last = head.clone();
    for _ in 0..3_000 {
        let mut next = job_spec(1);
        next.after = vec![last];
        last = submit(&mut jobs, next);
    }
    let effects = run_out(&mut jobs, 2.0, |t| {
        ended(&t.task_id, v1::TaskState::Failed, Some(1))
    });
    assert_eq!(effects.len(), 3_001, "every job of the chain ended");
    assert_eq!(jobs.job(&last).unwrap().state, JobState::Failed);
}

#[test]
fn a_retried_index_wise_dependent_never_runs_an_index_twice() {
    let mut jobs = Jobs::new(1);
    let first = submit(&mut jobs, job_spec(1));
    let mut each = job_spec(1);
    each.after_each = first.clone();
    let second = submit(&mut jobs, each);
    run_out(&mut jobs, 8.0, |t| {
        ended(&t.task_id, v1::TaskState::Failed, Some(1))
    });
    assert_eq!(jobs.job(&second).unwrap().state, JobState::Failed);
    // Retrying the dependent alone runs nothing: its counterpart failed.
    assert_eq!(jobs.retry_failed(&second, false), Some(0));
    // Retry the first: its index succeeds, and only then the second's.
    assert_eq!(jobs.retry_failed(&first, false), Some(1));
    assert_eq!(jobs.retry_failed(&second, false), Some(0));
    let launched = run_out(&mut jobs, 8.0, finish);
    assert!(launched.contains(&Effect::Ended {
        job: first.clone(),
        state: JobState::Succeeded
    }));
    // The second job ended failed before; it is retried now that its
    // counterpart succeeded, and runs its index once.
    assert_eq!(jobs.retry_failed(&second, false), Some(1));
    let tasks = place(&mut jobs, 8.0);
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert!(place(&mut jobs, 8.0).is_empty());
}

#[test]
fn a_job_failed_by_its_dependency_is_not_run_again() {
    let mut jobs = Jobs::new(1);
    let first = submit(&mut jobs, job_spec(1));
    let mut after = job_spec(1);
    after.after = vec![first.clone()];
    let second = submit(&mut jobs, after);
    run_out(&mut jobs, 8.0, |t| {
        ended(&t.task_id, v1::TaskState::Failed, Some(1))
    });
    assert_eq!(jobs.job(&second).unwrap().state, JobState::Failed);
    assert_eq!(jobs.retry_failed(&second, false), Some(0));
    assert_eq!(jobs.job(&second).unwrap().state, JobState::Failed);
}

/// A launch whose turn a crash took back from the registry but not from
/// its agent: the restarted master adopts the task, and the job takes it
/// up as that index's attempt when its update comes, instead of waiting
/// for an index it would never start (the core refuses the same task id).
#[test]
fn an_attempt_a_crash_lost_but_its_agent_kept_is_taken_up_by_its_index() {
    let mut jobs = Jobs::new(1);
    let id = submit(&mut jobs, job_spec(3));
    // Index 1's first attempt ran, though the job never took it.
    let adopted = format!("{id}-1-1");
    jobs.update(&ended(&adopted, v1::TaskState::Running, None), Time(1));
    let job = jobs.job(&id).unwrap();
    assert_eq!(job.indices.running_attempt(1), Some(1));
    assert_eq!(job.state, JobState::Running);
    let placed: Vec<String> = place(&mut jobs, 4.0)
        .into_iter()
        .map(|t| t.task_id)
        .collect();
    assert_eq!(placed, [format!("{id}-0-1"), format!("{id}-2-1")]);
    jobs.update(&ended(&adopted, v1::TaskState::Finished, Some(0)), Time(2));
    for task in &placed {
        jobs.update(&ended(task, v1::TaskState::Finished, Some(0)), Time(2));
    }
    let job = jobs.job(&id).unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.indices.outcome(1).attempts, 1);
    // A late update of an attempt already ended adopts nothing.
    jobs.update(&ended(&adopted, v1::TaskState::Lost, None), Time(3));
    assert_eq!(jobs.job(&id).unwrap().indices.counts().succeeded, 3);
}
