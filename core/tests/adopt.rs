//! Launches go to their agent before the registry holds them, and ends free
//! resources before it holds them; a master that crashes in between learns
//! the truth from its agents when they re-register. Driven through the core
//! with the harness: `handle_uncommitted` sends an input's messages and
//! holds its writes, `restart` loses them.

use std::time::Duration;

use wasmos_core::core::{CoreConfig, Input, LaunchKey, Reply};
use wasmos_core::testing::{GIB, Harness, launches, reported, task};
use wasmos_core::{AgentId, FrameworkId, Resources};
use wasmos_proto::v1;
use wasmos_proto::v1::master_message::Kind as AgentKind;

fn harness() -> Harness {
    Harness::with_config(CoreConfig {
        agent_reregister_timeout: Duration::from_secs(60),
        launch_key: LaunchKey::new([42; 32]),
        ..CoreConfig::default()
    })
}

/// An agent of `cpus`, a framework, and the framework's offer of it.
fn cluster(h: &mut Harness, cpus: f64) -> (AgentId, FrameworkId, v1::Offer) {
    let agent = h.add_agent(cpus, 8 * GIB);
    let fw = h.subscribe("job", "batch");
    let offer = h.take_offers(&fw).remove(0);
    (agent, fw, offer)
}

/// `fw` accepts `offer` for `tasks`, the launch goes out, and the master
/// dies before the commit lands. Returns the launches the agent got.
fn accept_then_crash(
    h: &mut Harness,
    fw: &FrameworkId,
    agent: &AgentId,
    offer: &v1::Offer,
    tasks: Vec<v1::TaskSpec>,
) -> Vec<v1::TaskLaunch> {
    h.take_agent_messages(agent);
    let reply = h.handle_uncommitted(Input::Accept(v1::AcceptRequest {
        framework_id: fw.to_string(),
        offer_ids: vec![offer.offer_id.clone()],
        tasks,
        filters: Some(v1::Filters {
            refuse_seconds: Some(0.0),
        }),
    }));
    assert!(matches!(reply, Ok(Reply::Launched(_))), "{reply:?}");
    let sent = launches(&h.take_agent_messages(agent));
    assert!(!sent.is_empty());
    for launch in &sent {
        assert_eq!(launch.mac.len(), 32, "every launch is signed");
    }
    h.restart();
    sent
}

fn reregister(h: &mut Harness, agent: &AgentId, cpus: f64, tasks: Vec<v1::RunningTask>) {
    let mut info = Harness::agent_info(cpus, 8 * GIB);
    info.agent_id = agent.to_string();
    h.register_agent(info, tasks).expect("re-registers");
}

fn kills_on_registration(h: &mut Harness, agent: &AgentId) -> Vec<String> {
    h.take_agent_messages(agent)
        .into_iter()
        .find_map(|m| match m.kind {
            Some(AgentKind::Registered(r)) => Some(r.kill_task_ids),
            _ => None,
        })
        .expect("a registered message")
}

fn allocated(h: &Harness, fw: &FrameworkId) -> Resources {
    h.core
        .allocator()
        .framework_allocation(fw)
        .unwrap_or_default()
}

#[test]
fn a_launch_lost_in_a_crash_is_adopted_from_its_agent_and_runs_once() {
    let mut h = harness();
    let (agent, fw, offer) = cluster(&mut h, 4.0);
    let sent = accept_then_crash(&mut h, &fw, &agent, &offer, vec![task("t1", 1.0, GIB)]);
    assert_eq!(h.state_of("t1"), None, "the registry never held it");

    // The framework is back first; the agent reports the task it runs.
    h.resubscribe(&fw, "batch").unwrap();
    reregister(
        &mut h,
        &agent,
        4.0,
        vec![reported(&sent[0], v1::TaskState::Running)],
    );
    assert!(
        kills_on_registration(&mut h, &agent).is_empty(),
        "nothing killed"
    );
    assert!(h.core.take_adoptions().refused.is_empty());
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Running));
    let view = h.core.task("t1").unwrap();
    assert_eq!(view.resources, Resources::new(1.0, GIB, 0));
    assert_eq!(
        (view.framework.clone(), view.agent.clone()),
        (fw.clone(), agent.clone())
    );
    let offered: Resources = h
        .take_offers(&fw)
        .iter()
        .map(wasmos_core::testing::offered)
        .fold(Resources::ZERO, |a, b| a + b);
    assert_eq!(
        offered,
        Resources::new(3.0, 7 * GIB, 0),
        "the task's share is not offered"
    );

    // Adopted as a launch is: durable (the harness checks the registry
    // against the core at every step), so it survives another crash.
    h.restart();
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Running));
    h.resubscribe(&fw, "batch").unwrap();
    reregister(
        &mut h,
        &agent,
        4.0,
        vec![reported(&sent[0], v1::TaskState::Running)],
    );
    assert!(kills_on_registration(&mut h, &agent).is_empty());

    // Its own updates follow: the framework hears them, its end once.
    let running = h.report(&agent, "t1", v1::TaskState::Running);
    let finished = h.report(&agent, "t1", v1::TaskState::Finished);
    let told: Vec<_> = h
        .take_updates(&fw)
        .into_iter()
        .map(|s| (s.state(), s.uuid))
        .collect();
    assert_eq!(
        told,
        [
            (v1::TaskState::Running, running.uuid),
            (v1::TaskState::Finished, finished.uuid.clone())
        ]
    );
    h.take_agent_messages(&agent);
    h.ack(
        &fw,
        &[v1::TaskStatus {
            agent_id: agent.to_string(),
            ..finished.clone()
        }],
    );
    assert_eq!(
        wasmos_core::testing::acked(&h.take_agent_messages(&agent)),
        [("t1".to_string(), finished.uuid)],
        "the agent may forget it"
    );
}

#[test]
fn an_end_that_freed_resources_for_a_lost_launch_is_applied_before_the_adoption() {
    // One cpu: t1 runs; it ends and t2 takes its cpu, and the master dies
    // before either commit.
    let mut h = harness();
    let (agent, fw, offer) = cluster(&mut h, 1.0);
    h.accept(&fw, &[&offer], vec![task("t1", 1.0, GIB)], Some(0.0))
        .unwrap();
    h.report(&agent, "t1", v1::TaskState::Running);
    h.take_updates(&fw);
    h.take_agent_messages(&agent);
    let finished = v1::TaskStatus {
        task_id: "t1".into(),
        state: v1::TaskState::Finished as i32,
        uuid: b"t1-end".to_vec(),
        source: v1::StatusSource::Agent as i32,
        ..Default::default()
    };
    h.handle_uncommitted(Input::AgentUpdates {
        agent: agent.clone(),
        statuses: vec![finished.clone()],
        unsynced: None,
    })
    .unwrap();
    let offer = h.take_offers(&fw).remove(0);
    let sent = accept_then_crash(&mut h, &fw, &agent, &offer, vec![task("t2", 1.0, GIB)]);
    assert_eq!(
        h.state_of("t1"),
        Some(v1::TaskState::Running),
        "the end was lost"
    );
    assert_eq!(h.state_of("t2"), None, "so was the launch");

    // The agent reports both: t1 ended (its update not yet acknowledged),
    // t2 running. The invariants (checked at every step) hold: one cpu,
    // used once.
    h.resubscribe(&fw, "batch").unwrap();
    reregister(
        &mut h,
        &agent,
        1.0,
        vec![
            v1::RunningTask {
                task_id: "t1".into(),
                framework_id: fw.to_string(),
                state: v1::TaskState::Finished as i32,
                ..Default::default()
            },
            reported(&sent[0], v1::TaskState::Running),
        ],
    );
    assert!(kills_on_registration(&mut h, &agent).is_empty());
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Finished));
    assert_eq!(h.state_of("t2"), Some(v1::TaskState::Running));
    assert_eq!(
        allocated(&h, &fw),
        Resources::new(1.0, GIB, 0),
        "t2 alone holds the cpu"
    );
    assert!(
        h.take_offers(&fw)
            .iter()
            .all(|o| wasmos_core::testing::offered(o).cpu_millis == 0),
        "no cpu left to offer"
    );

    // t1's own end follows, and is what the framework is told.
    h.handle(Input::AgentUpdates {
        agent: agent.clone(),
        statuses: vec![finished.clone()],
        unsynced: None,
    })
    .unwrap();
    let told = h.take_updates(&fw);
    assert_eq!(told.len(), 1);
    assert_eq!(
        (told[0].state(), &told[0].uuid),
        (v1::TaskState::Finished, &finished.uuid)
    );
}

#[test]
fn a_task_with_a_forged_or_misused_mac_is_killed_and_its_refusal_kept() {
    let mut h = harness();
    let (agent, fw, offer) = cluster(&mut h, 4.0);
    let other = h.subscribe("other", "batch");
    let sent = accept_then_crash(&mut h, &fw, &agent, &offer, vec![task("t1", 1.0, GIB)]);
    h.resubscribe(&fw, "batch").unwrap();
    h.resubscribe(&other, "batch").unwrap();

    let good = reported(&sent[0], v1::TaskState::Running);
    // Billed to another framework; a bigger task; a MAC of another key; no
    // MAC at all; a task the master never launched anywhere.
    let billed_elsewhere = v1::RunningTask {
        task_id: "t1".into(),
        framework_id: other.to_string(),
        ..good.clone()
    };
    let mut bigger = good.clone();
    bigger.task_id = "t2".into();
    bigger.spec = Some(task("t2", 3.0, GIB));
    let foreign = reported(
        &v1::TaskLaunch {
            framework_id: fw.to_string(),
            spec: Some(task("t3", 1.0, GIB)),
            mac: LaunchKey::new([7; 32]).sign(&agent, &fw, 1, &task("t3", 1.0, GIB)),
            master_epoch: 1,
        },
        v1::TaskState::Running,
    );
    let unsigned = v1::RunningTask {
        task_id: "t4".into(),
        framework_id: fw.to_string(),
        state: v1::TaskState::Running as i32,
        spec: Some(task("t4", 1.0, GIB)),
        ..Default::default()
    };
    reregister(
        &mut h,
        &agent,
        4.0,
        vec![billed_elsewhere, bigger, foreign, unsigned],
    );
    let mut kills = kills_on_registration(&mut h, &agent);
    kills.sort();
    assert_eq!(kills, ["t1", "t2", "t3", "t4"]);
    for id in ["t1", "t2", "t3", "t4"] {
        assert_eq!(h.state_of(id), None, "{id} not adopted");
    }
    assert_eq!(
        allocated(&h, &other),
        Resources::ZERO,
        "nothing billed to the other"
    );
    let refused = h.core.take_adoptions().refused;
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert!(refused.iter().all(|r| r.agent == agent));
    assert!(refused[0].why.contains("MAC"), "{refused:?}");
    assert!(refused[3].why.contains("signed launch"), "{refused:?}");
    // The same launch on another agent is no better.
    let elsewhere = h.add_agent(4.0, 8 * GIB);
    h.disconnect_agent(&elsewhere);
    h.take_agent_messages(&elsewhere);
    reregister(&mut h, &elsewhere, 4.0, vec![good]);
    assert_eq!(kills_on_registration(&mut h, &elsewhere), ["t1"]);
}

#[test]
fn a_replayed_launch_is_never_adopted_twice_nor_overcommitted() {
    // Finished tasks are forgotten as soon as they are acknowledged.
    let mut h = Harness::with_config(CoreConfig {
        completed_tasks_per_framework: 0,
        launch_key: LaunchKey::new([42; 32]),
        ..CoreConfig::default()
    });
    let (agent, fw, offer) = cluster(&mut h, 2.0);
    h.take_agent_messages(&agent);
    h.accept(&fw, &[&offer], vec![task("t1", 2.0, GIB)], Some(0.0))
        .unwrap();
    let first = launches(&h.take_agent_messages(&agent));
    let end = h.report(&agent, "t1", v1::TaskState::Finished);
    h.ack(
        &fw,
        &[v1::TaskStatus {
            agent_id: agent.to_string(),
            ..end
        }],
    );
    assert_eq!(h.state_of("t1"), None, "forgotten");
    let offer = h.take_offers(&fw).remove(0);
    h.accept(&fw, &[&offer], vec![task("t2", 2.0, GIB)], Some(0.0))
        .unwrap();
    h.report(&agent, "t2", v1::TaskState::Running);
    let t2 = || v1::RunningTask {
        task_id: "t2".into(),
        framework_id: fw.to_string(),
        state: v1::TaskState::Running as i32,
        ..Default::default()
    };

    // The agent's stream drops; it comes back claiming t1 runs again, with
    // t1's genuine MAC: a launch of this master's own run that it settled,
    // so killed, and nothing to audit.
    h.disconnect_agent(&agent);
    h.take_agent_messages(&agent);
    let replayed = reported(&first[0], v1::TaskState::Running);
    reregister(&mut h, &agent, 2.0, vec![replayed.clone(), t2()]);
    assert_eq!(kills_on_registration(&mut h, &agent), ["t1"]);
    assert_eq!(h.state_of("t1"), None);
    assert!(h.core.take_adoptions().refused.is_empty());

    // After a restart it is a launch of an earlier run, so a candidate for
    // adoption: t2 holds the agent, so t1 is killed, not overcommitted.
    h.restart();
    h.resubscribe(&fw, "batch").unwrap();
    reregister(&mut h, &agent, 2.0, vec![replayed, t2()]);
    assert_eq!(kills_on_registration(&mut h, &agent), ["t1"]);
    assert_eq!(h.state_of("t1"), None);
    assert_eq!(h.state_of("t2"), Some(v1::TaskState::Running));
    let refused = h.core.take_adoptions().refused;
    assert!(refused[0].why.contains("no room"), "{refused:?}");
}

#[test]
fn reconciliation_says_unknown_only_once_no_agent_may_hold_the_task() {
    let mut h = harness();
    let (agent, fw, offer) = cluster(&mut h, 4.0);
    let other = h.add_agent(4.0, 8 * GIB);
    let sent = accept_then_crash(&mut h, &fw, &agent, &offer, vec![task("t1", 1.0, GIB)]);
    h.resubscribe(&fw, "batch").unwrap();
    h.take_updates(&fw);

    // Both agents are still away: neither t1 (launched) nor t9 (never
    // launched) is answered.
    h.reconcile(&fw, &["t1", "t9"]).unwrap();
    assert!(
        h.take_updates(&fw).is_empty(),
        "no answer while agents recover"
    );
    // t1's agent is back and reports it: adopted, and answered. The other
    // agent may still hold t9.
    reregister(
        &mut h,
        &agent,
        4.0,
        vec![reported(&sent[0], v1::TaskState::Running)],
    );
    assert!(h.take_updates(&fw).is_empty());
    // The other agent's re-registration deadline passes: now t9 is unknown
    // and t1 is what its agent said.
    h.advance_with_heartbeats(61_000, &[&agent]);
    assert!(
        h.core.agents().iter().all(|a| a.id != other),
        "the other agent is gone"
    );
    let answers: Vec<_> = h
        .take_updates(&fw)
        .into_iter()
        .map(|s| (s.task_id.clone(), s.state(), s.reason()))
        .collect();
    assert_eq!(
        answers,
        [
            (
                "t1".to_string(),
                v1::TaskState::Running,
                v1::Reason::Reconciliation
            ),
            (
                "t9".to_string(),
                v1::TaskState::Lost,
                v1::Reason::TaskUnknown
            ),
        ]
    );
    // With every agent back, unknown is answered at once.
    h.reconcile(&fw, &["t8"]).unwrap();
    assert_eq!(h.take_updates(&fw)[0].reason(), v1::Reason::TaskUnknown);
}
