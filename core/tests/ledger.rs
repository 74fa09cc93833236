//! The usage ledger counts every task once, when its end is settled, in
//! the same writes as the task (the harness checks after every input that
//! the registry holds what the core's ledger says): an end delivered again,
//! a restart, an end heard before it was durable, a lost agent.

use wasmos_core::core::{Input, Reply};
use wasmos_core::testing::{GIB, Harness, task};
use wasmos_core::{AgentId, FrameworkId};
use wasmos_proto::v1;

fn ended(task: &str, state: v1::TaskState, uuid: &str, cpu_ms: u64) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: task.into(),
        state: state as i32,
        uuid: uuid.as_bytes().to_vec(),
        source: v1::StatusSource::Agent as i32,
        usage: Some(v1::TaskUsage {
            cpu_time_ms: cpu_ms,
            wall_time_ms: 2 * cpu_ms,
            fuel_consumed: 1000 * cpu_ms,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn send(h: &mut Harness, agent: &AgentId, status: v1::TaskStatus, unsynced: Option<u64>) {
    h.handle(Input::AgentUpdates {
        agent: agent.clone(),
        statuses: vec![status],
        unsynced: unsynced.map(|seq| v1::SyncMark {
            incarnation: 1,
            seq,
            sync_micros: 0,
        }),
    })
    .unwrap();
}

/// One agent, one framework in role `batch`, `specs` launched and running.
fn running(specs: Vec<v1::TaskSpec>) -> (Harness, AgentId, FrameworkId) {
    let mut h = Harness::new();
    let agent = h.add_agent(4.0, 16 * GIB);
    let fw = h.subscribe("job", "batch");
    let offer = h.take_offers(&fw).remove(0);
    let ids: Vec<String> = specs.iter().map(|s| s.task_id.clone()).collect();
    h.accept(&fw, &[&offer], specs, Some(0.0)).unwrap();
    for id in &ids {
        h.report(&agent, id, v1::TaskState::Running);
    }
    h.take_updates(&fw);
    (h, agent, fw)
}

/// The ledger's one bucket.
fn bucket(h: &Harness) -> v1::StoredUsage {
    let buckets = h.core.usage_buckets();
    assert_eq!(buckets.len(), 1, "{buckets:?}");
    buckets[0].clone()
}

#[test]
fn an_end_counts_once_however_often_it_is_delivered_and_across_a_restart() {
    let (mut h, agent, fw) = running(vec![task("t1", 1.0, 2 * GIB), task("t2", 1.0, GIB)]);
    let end = ended("t1", v1::TaskState::Finished, "e1", 30);
    send(&mut h, &agent, end.clone(), None);
    send(&mut h, &agent, end.clone(), None);
    let b = bucket(&h);
    assert_eq!((b.tasks, b.first_attempts), (1, 1));
    assert_eq!((b.cpu_ms, b.wall_ms, b.fuel), (30, 60, 30_000));
    assert_eq!(b.mem_gib_ms, 120.0, "2 GiB for 60 ms");
    assert_eq!(
        (b.role.as_str(), b.principal.as_str(), b.job.as_str()),
        ("batch", "", "")
    );

    h.restart();
    let fw = h.resubscribe(&fw, "batch").unwrap();
    h.reregister_agent(&agent, Harness::agent_info(4.0, 16 * GIB), &["t1", "t2"])
        .unwrap();
    send(&mut h, &agent, end, None);
    assert_eq!(bucket(&h).tasks, 1, "the same end after a restart");
    let end = ended("t2", v1::TaskState::Failed, "e2", 5);
    send(&mut h, &agent, end.clone(), None);
    let told = h.take_updates(&fw);
    h.ack(&fw, &told);
    let b = bucket(&h);
    assert_eq!(
        (b.tasks, b.cpu_ms),
        (2, 35),
        "added to the bucket read back"
    );
}

#[test]
fn an_end_not_yet_durable_counts_when_synced_and_once_if_replaced() {
    let (mut h, agent, _fw) = running(vec![task("t1", 1.0, GIB), task("t2", 1.0, GIB)]);
    send(
        &mut h,
        &agent,
        ended("t1", v1::TaskState::Finished, "e1", 10),
        Some(1),
    );
    assert!(h.core.usage_buckets().is_empty(), "not settled yet");
    assert_eq!(
        h.handle(Input::AgentSynced {
            agent: agent.clone(),
            mark: v1::SyncMark {
                incarnation: 1,
                seq: 1,
                sync_micros: 0
            },
        }),
        Ok(Reply::Done)
    );
    assert_eq!(bucket(&h).tasks, 1);
    // t2's end is lost with the executor's power: its LOST counts instead.
    send(
        &mut h,
        &agent,
        ended("t2", v1::TaskState::Finished, "e2", 10),
        Some(2),
    );
    send(
        &mut h,
        &agent,
        ended("t2", v1::TaskState::Lost, "l2", 0),
        None,
    );
    let b = bucket(&h);
    assert_eq!(
        (b.tasks, b.cpu_ms),
        (2, 10),
        "the finished t1 and the lost t2"
    );
}

#[test]
fn a_job_task_counts_under_its_job_and_a_retry_is_not_a_first_attempt() {
    let spec = |id: &str| {
        let mut t = task(id, 1.0, GIB);
        t.labels.insert("wasmos.job".into(), "j1.1".into());
        t
    };
    let (mut h, agent, _fw) = running(vec![spec("j1.1-0-1"), spec("j1.1-1-2")]);
    send(
        &mut h,
        &agent,
        ended("j1.1-0-1", v1::TaskState::Finished, "a", 1),
        None,
    );
    send(
        &mut h,
        &agent,
        ended("j1.1-1-2", v1::TaskState::Finished, "b", 1),
        None,
    );
    let b = bucket(&h);
    assert_eq!(b.job, "j1.1");
    assert_eq!((b.tasks, b.first_attempts), (2, 1));
}

#[test]
fn a_task_lost_with_its_agent_counts_its_attempt() {
    let (mut h, agent, _fw) = running(vec![task("t1", 1.0, GIB)]);
    h.disconnect_agent(&agent);
    h.advance(3_600_000);
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Lost));
    let buckets = h.core.usage_buckets();
    assert_eq!(
        buckets.iter().map(|b| b.tasks).sum::<u64>(),
        1,
        "{buckets:?}"
    );
}
