//! The master restarted on its registry: what comes back, what agents and
//! frameworks find, and what becomes of those that do not return. Driven
//! through the core with the harness's in-memory registry (the real redb
//! backend and real processes are in the root package's tests).

use std::time::Duration;

use wasmos_core::core::{CoreConfig, Reply};
use wasmos_core::testing::{GIB, Harness, task};
use wasmos_core::{AgentId, FrameworkId, TaskId};
use wasmos_proto::v1;
use wasmos_proto::v1::event::Kind as EventKind;
use wasmos_proto::v1::master_message::Kind as AgentKind;

fn harness() -> Harness {
    Harness::with_config(CoreConfig {
        agent_reregister_timeout: Duration::from_secs(60),
        default_failover_timeout: Duration::from_secs(100),
        ..CoreConfig::default()
    })
}

/// One agent, one framework, tasks t1..tn running.
fn running(h: &mut Harness, n: usize) -> (AgentId, FrameworkId) {
    let agent = h.add_agent(8.0, 8 * GIB);
    let fw = h.subscribe("job", "batch");
    let offer = h.take_offers(&fw).remove(0);
    let specs = (1..=n).map(|i| task(&format!("t{i}"), 1.0, GIB)).collect();
    let ids: Vec<TaskId> = (1..=n).map(|i| TaskId::from(format!("t{i}"))).collect();
    assert_eq!(
        h.accept(&fw, &[&offer], specs, Some(0.0)),
        Ok(Reply::Launched(ids))
    );
    for i in 1..=n {
        h.report(&agent, &format!("t{i}"), v1::TaskState::Running);
    }
    let updates = h.take_updates(&fw);
    h.ack(&fw, &updates);
    (agent, fw)
}

fn running_task(id: &str) -> v1::RunningTask {
    v1::RunningTask {
        task_id: id.into(),
        state: v1::TaskState::Running as i32,
        artifact: "ab".repeat(32),
        ..Default::default()
    }
}

fn registered(h: &mut Harness, agent: &AgentId) -> v1::Registered {
    h.take_agent_messages(agent)
        .into_iter()
        .find_map(|m| match m.kind {
            Some(AgentKind::Registered(r)) => Some(r),
            _ => None,
        })
        .expect("a registered message")
}

#[test]
fn tasks_of_an_agent_that_has_not_come_back_are_never_lost_before_its_timeout() {
    let mut h = harness();
    let (agent, fw) = running(&mut h, 2);
    h.restart();
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Running));

    // 59 s later (no heartbeat can come: the agent has no stream yet), the
    // framework is back and asks: RUNNING, flagged as not confirmed.
    h.advance(59_000);
    let back = h.resubscribe(&fw, "batch").unwrap();
    assert_eq!(back, fw);
    h.take_updates(&fw);
    h.reconcile(&fw, &["t1", "t2"]).unwrap();
    let answers = h.take_updates(&fw);
    assert_eq!(answers.len(), 2);
    for status in &answers {
        assert_eq!(status.state(), v1::TaskState::Running, "{status:?}");
        assert!(status.agent_recovering, "{status:?}");
    }
    assert!(
        h.take_offers(&fw).is_empty(),
        "a recovering agent is not offered"
    );

    // Past the timeout: gone, its tasks LOST with AGENT_LOST.
    h.advance(2_000);
    assert!(h.core.agents().iter().all(|a| a.id != agent));
    let lost = h.take_updates(&fw);
    assert_eq!(lost.len(), 2, "{lost:?}");
    for status in &lost {
        assert_eq!(status.state(), v1::TaskState::Lost);
        assert_eq!(status.reason(), v1::Reason::AgentLost);
        assert!(status.message.contains("re-register"), "{}", status.message);
    }
    // A gone agent that returns is not re-admitted with its old tasks.
    h.register_agent(
        v1::AgentInfo {
            agent_id: agent.to_string(),
            ..Harness::agent_info(8.0, 8 * GIB)
        },
        vec![running_task("t1")],
    )
    .unwrap();
    let kill = registered(&mut h, &agent).kill_task_ids;
    assert_eq!(kill, vec!["t1".to_string()]);
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Lost));
}

#[test]
fn a_returning_agent_and_the_master_reconcile_their_tasks_both_ways() {
    let mut h = harness();
    let (agent, fw) = running(&mut h, 4);
    h.restart();
    h.resubscribe(&fw, "batch").unwrap();
    h.take_updates(&fw);

    // t1 and t2 still run; t3 is gone from the agent; t4 runs another
    // module than it was launched with; t9 was never launched by this master.
    let mut other = running_task("t4");
    other.artifact = "cd".repeat(32);
    let id = h
        .register_agent(
            v1::AgentInfo {
                agent_id: agent.to_string(),
                ..Harness::agent_info(8.0, 8 * GIB)
            },
            vec![
                running_task("t1"),
                running_task("t2"),
                other,
                running_task("t9"),
            ],
        )
        .unwrap();
    assert_eq!(id, agent);
    let registered = registered(&mut h, &agent);
    assert_eq!(registered.master_epoch, 2, "the restarted master's epoch");
    let mut kill = registered.kill_task_ids;
    kill.sort();
    assert_eq!(kill, vec!["t4".to_string(), "t9".to_string()]);
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Running));
    assert_eq!(h.state_of("t2"), Some(v1::TaskState::Running));
    for lost in ["t3", "t4"] {
        assert_eq!(h.state_of(lost), Some(v1::TaskState::Lost), "{lost}");
    }
    // The agent is offered again: what t1 and t2 do not hold.
    let offers = h.take_offers(&fw);
    let offered: f64 = offers.iter().map(|o| o.resources.unwrap().cpus).sum();
    assert_eq!(offered, 6.0);
    // The kept tasks finish as usual.
    h.report(&agent, "t1", v1::TaskState::Finished);
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Finished));
}

#[test]
fn failover_deadlines_count_from_the_restart_for_frameworks_connected_at_the_crash() {
    let mut h = harness();
    let (_agent, connected) = running(&mut h, 1);
    let away = h.subscribe("away", "batch");
    h.advance(1_000);
    h.disconnect_framework(&away); // deadline: now + 100 s
    h.advance(80_000);
    h.restart();
    let names = |h: &Harness| -> Vec<FrameworkId> {
        let mut ids: Vec<FrameworkId> = h.core.frameworks().into_iter().map(|f| f.id).collect();
        ids.sort();
        ids
    };
    assert_eq!(names(&h).len(), 2);
    // 21 s later the one that was away is past its stored deadline; the one
    // that was connected has 100 s from the restart.
    h.advance(21_000);
    assert_eq!(names(&h), vec![connected.clone()]);
    h.advance(78_000);
    assert_eq!(names(&h), vec![connected.clone()]);
    h.advance(2_000);
    assert!(names(&h).is_empty());
}

#[test]
fn the_masters_own_unacknowledged_updates_and_kills_survive_a_restart() {
    let mut h = harness();
    let (agent, fw) = running(&mut h, 2);
    h.kill(&fw, &["t1"]).unwrap();
    // The agent is lost before it answers: t2 LOST by the master, t1 too.
    h.disconnect_agent(&agent);
    h.advance(4_000);
    let lost = h.take_updates(&fw);
    assert_eq!(lost.len(), 2);
    h.restart();
    // Not acknowledged before the crash: sent again at re-subscription.
    h.resubscribe(&fw, "batch").unwrap();
    let again = h.take_updates(&fw);
    let mut uuids: Vec<Vec<u8>> = again.iter().map(|s| s.uuid.clone()).collect();
    let mut before: Vec<Vec<u8>> = lost.iter().map(|s| s.uuid.clone()).collect();
    uuids.sort();
    before.sort();
    assert_eq!(uuids, before, "the same updates, by uuid");
    h.ack(&fw, &again);
    assert!(
        h.core
            .tasks()
            .iter()
            .all(|t| t.state() == v1::TaskState::Lost)
    );
}

#[test]
fn a_kill_asked_before_the_crash_reaches_the_agent_when_it_returns() {
    let mut h = harness();
    let (agent, fw) = running(&mut h, 2);
    h.disconnect_agent(&agent);
    h.kill(&fw, &["t2"]).unwrap();
    h.restart();
    h.register_agent(
        v1::AgentInfo {
            agent_id: agent.to_string(),
            ..Harness::agent_info(8.0, 8 * GIB)
        },
        vec![running_task("t1"), running_task("t2")],
    )
    .unwrap();
    assert_eq!(
        registered(&mut h, &agent).kill_task_ids,
        vec!["t2".to_string()]
    );
}

#[test]
fn subscribed_tells_the_epoch() {
    let mut h = harness();
    let fw = h.subscribe("job", "batch");
    h.restart();
    h.restart();
    h.resubscribe(&fw, "batch").unwrap();
    let epoch = h
        .take_events(&fw)
        .into_iter()
        .find_map(|e| match e.kind {
            Some(EventKind::Subscribed(s)) => Some(s.master_epoch),
            _ => None,
        })
        .unwrap();
    assert_eq!(epoch, 3);
}
