//! An executor reports a task's end before syncing it, so the master frees
//! the resources at once; the framework is told the end only once the
//! agent says it is durable (`AgentSynced`), and an end nobody was told
//! gives way to the LOST of an executor that lost it with its power.

use wasmos_core::core::{Input, Reply};
use wasmos_core::testing::{GIB, Harness, offered, task};
use wasmos_core::{AgentId, FrameworkId, Resources};
use wasmos_proto::v1;

fn mark(incarnation: u64, seq: u64) -> v1::SyncMark {
    v1::SyncMark {
        incarnation,
        seq,
        sync_micros: 0,
    }
}

fn status(task: &str, state: v1::TaskState, uuid: &str) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: task.into(),
        state: state as i32,
        uuid: uuid.as_bytes().to_vec(),
        source: v1::StatusSource::Agent as i32,
        ..Default::default()
    }
}

/// One agent of one cpu, t1 running on all of it.
fn running() -> (Harness, AgentId, FrameworkId) {
    let mut h = Harness::new();
    let agent = h.add_agent(1.0, 4 * GIB);
    let fw = h.subscribe("job", "batch");
    let offer = h.take_offers(&fw).remove(0);
    h.accept(&fw, &[&offer], vec![task("t1", 1.0, GIB)], Some(0.0))
        .unwrap();
    h.report(&agent, "t1", v1::TaskState::Running);
    h.take_updates(&fw);
    h.take_offers(&fw);
    (h, agent, fw)
}

fn updates(
    h: &mut Harness,
    agent: &AgentId,
    statuses: Vec<v1::TaskStatus>,
    unsynced: Option<v1::SyncMark>,
) {
    h.handle(Input::AgentUpdates {
        agent: agent.clone(),
        statuses,
        unsynced,
    })
    .unwrap();
}

/// t1 ends; the agent sends it before its executor synced it (mark 7/3).
fn end_unsynced(h: &mut Harness, agent: &AgentId) {
    updates(
        h,
        agent,
        vec![status("t1", v1::TaskState::Finished, "end")],
        Some(mark(7, 3)),
    );
}

fn synced(h: &mut Harness, agent: &AgentId, at: v1::SyncMark) {
    assert_eq!(
        h.handle(Input::AgentSynced {
            agent: agent.clone(),
            mark: at,
        }),
        Ok(Reply::Done)
    );
}

fn told(h: &mut Harness, fw: &FrameworkId) -> Vec<(String, v1::TaskState)> {
    h.take_updates(fw)
        .into_iter()
        .map(|s| (s.task_id.clone(), s.state()))
        .collect()
}

#[test]
fn an_unsynced_end_frees_its_resources_at_once_and_is_told_once_synced() {
    let (mut h, agent, fw) = running();
    end_unsynced(&mut h, &agent);
    // The cpu is offered again in the same input; the end is not told.
    let offers = h.take_offers(&fw);
    assert_eq!(offered(&offers[0]), Resources::new(1.0, 4 * GIB, 0));
    assert!(
        told(&mut h, &fw).is_empty(),
        "an end told before it was durable"
    );
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Finished));
    // Reconciliation does not tell it either.
    h.reconcile(&fw, &["t1"]).unwrap();
    assert_eq!(
        told(&mut h, &fw),
        [("t1".to_string(), v1::TaskState::Running)]
    );
    // A new task takes the cpu meanwhile.
    h.accept(&fw, &[&offers[0]], vec![task("t2", 1.0, GIB)], Some(0.0))
        .unwrap();
    // Short of the mark, or another incarnation's: nothing yet.
    synced(&mut h, &agent, mark(7, 2));
    synced(&mut h, &agent, mark(8, 9));
    assert!(told(&mut h, &fw).is_empty());
    // At the mark: told, with the agent's uuid (for the acknowledgement).
    synced(&mut h, &agent, mark(7, 3));
    let end = h.take_updates(&fw);
    assert_eq!(end.len(), 1);
    assert_eq!(
        (end[0].state(), end[0].uuid.as_slice()),
        (v1::TaskState::Finished, &b"end"[..])
    );
    // Once.
    synced(&mut h, &agent, mark(7, 5));
    assert!(told(&mut h, &fw).is_empty());
}

#[test]
fn an_executor_that_lost_an_unsynced_end_reports_lost_and_that_is_what_is_told() {
    let (mut h, agent, fw) = running();
    end_unsynced(&mut h, &agent);
    // Power lost before the sync: the new executor finds t1 running in its
    // checkpoint, and reports it lost (durable).
    let mut lost = status("t1", v1::TaskState::Lost, "lost");
    lost.reason = v1::Reason::ExecutorTerminated as i32;
    updates(&mut h, &agent, vec![lost], None);
    assert_eq!(told(&mut h, &fw), [("t1".to_string(), v1::TaskState::Lost)]);
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Lost));
    // The old incarnation's mark, should it come, tells nothing more; nor
    // does the old end sent again.
    synced(&mut h, &agent, mark(7, 3));
    updates(
        &mut h,
        &agent,
        vec![status("t1", v1::TaskState::Finished, "end")],
        None,
    );
    assert!(told(&mut h, &fw).is_empty());
    // A confirmed end is final: a later LOST does not replace it.
    let offer = h.take_offers(&fw).remove(0);
    h.accept(&fw, &[&offer], vec![task("t2", 1.0, GIB)], Some(0.0))
        .unwrap();
    updates(
        &mut h,
        &agent,
        vec![status("t2", v1::TaskState::Finished, "t2-end")],
        None,
    );
    updates(
        &mut h,
        &agent,
        vec![status("t2", v1::TaskState::Lost, "t2-lost")],
        None,
    );
    assert_eq!(
        told(&mut h, &fw),
        [("t2".to_string(), v1::TaskState::Finished)]
    );
}

#[test]
fn an_agent_lost_before_confirming_an_end_makes_the_task_lost() {
    let (mut h, agent, fw) = running();
    end_unsynced(&mut h, &agent);
    h.disconnect_agent(&agent);
    h.advance(10_000);
    let told = h.take_updates(&fw);
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(
        (told[0].state(), told[0].reason()),
        (v1::TaskState::Lost, v1::Reason::AgentLost)
    );
}

#[test]
fn an_unconfirmed_end_survives_a_restart_unconfirmed() {
    let (mut h, agent, fw) = running();
    end_unsynced(&mut h, &agent);
    h.restart();
    h.resubscribe(&fw, "batch").unwrap();
    h.reregister_agent(&agent, Harness::agent_info(1.0, 4 * GIB), &["t1"])
        .unwrap();
    h.take_updates(&fw);
    h.reconcile(&fw, &["t1"]).unwrap();
    assert_eq!(
        told(&mut h, &fw),
        [("t1".to_string(), v1::TaskState::Running)]
    );
    // The agent sends it again, durable by now: told.
    updates(
        &mut h,
        &agent,
        vec![status("t1", v1::TaskState::Finished, "end")],
        None,
    );
    assert_eq!(
        told(&mut h, &fw),
        [("t1".to_string(), v1::TaskState::Finished)]
    );
}

#[test]
fn an_agent_that_comes_back_without_a_task_whose_end_was_unconfirmed_makes_it_lost() {
    // The executor lost the task with its power before even its launch was
    // synced: the agent comes back without it.
    let (mut h, agent, fw) = running();
    end_unsynced(&mut h, &agent);
    h.disconnect_agent(&agent);
    h.reregister_agent(&agent, Harness::agent_info(1.0, 4 * GIB), &[])
        .unwrap();
    let told = h.take_updates(&fw);
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(
        (told[0].state(), told[0].reason()),
        (v1::TaskState::Lost, v1::Reason::AgentError)
    );
    // One that comes back with it keeps it, unconfirmed, for its update.
    let (mut h, agent, fw) = running();
    end_unsynced(&mut h, &agent);
    h.disconnect_agent(&agent);
    h.reregister_agent(&agent, Harness::agent_info(1.0, 4 * GIB), &["t1"])
        .unwrap();
    assert!(h.take_updates(&fw).is_empty());
    updates(
        &mut h,
        &agent,
        vec![status("t1", v1::TaskState::Finished, "end")],
        None,
    );
    assert_eq!(told_states(&mut h, &fw), [v1::TaskState::Finished]);
}

fn told_states(h: &mut Harness, fw: &FrameworkId) -> Vec<v1::TaskState> {
    h.take_updates(fw).iter().map(|s| s.state()).collect()
}
