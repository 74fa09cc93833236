//! No principal can take every slot of a shared cap: each holds at most
//! its share of a role's frameworks and of the cluster's tasks, and
//! frameworks it left disconnected give their slot back after a grace.

use std::time::Duration;

use wasmos_core::core::{Caps, CoreConfig, CoreError};
use wasmos_core::testing::{GIB, Harness, task};
use wasmos_proto::v1;

fn harness(caps: Caps) -> Harness {
    Harness::with_config(CoreConfig {
        caps,
        ..CoreConfig::default()
    })
}

fn framework(principal: &str, role: &str) -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        name: format!("{principal}'s"),
        role: role.into(),
        principal: principal.into(),
        ..Default::default()
    }
}

fn exhausted(result: Result<impl std::fmt::Debug, CoreError>) -> String {
    match result {
        Err(CoreError::Exhausted(why)) => why,
        other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
    }
}

#[test]
fn a_principal_holds_at_most_its_share_of_a_roles_frameworks() {
    let mut h = harness(Caps {
        frameworks_per_role: 5,
        frameworks_per_principal: 3,
        ..Caps::default()
    });
    for _ in 0..3 {
        h.subscribe_with(framework("alice", "r1")).unwrap();
    }
    let why = exhausted(h.subscribe_with(framework("alice", "r1")));
    assert!(
        why.contains("`alice`") && why.contains("--max-frameworks-per-principal"),
        "{why}"
    );
    // Her share is per role, and bob's is his own.
    h.subscribe_with(framework("alice", "r2")).unwrap();
    h.subscribe_with(framework("bob", "r1")).unwrap();
    h.subscribe_with(framework("bob", "r1")).unwrap();
    // The role is full now: the refusal names the limit and who holds most.
    let why = exhausted(h.subscribe_with(framework("carol", "r1")));
    assert!(
        why.contains("--max-frameworks-per-role") && why.contains("`alice` holds the most (3)"),
        "{why}"
    );
}

#[test]
fn frameworks_left_disconnected_give_their_slot_back_after_the_grace() {
    let mut h = harness(Caps {
        frameworks_per_role: 2,
        frameworks_per_principal: 2,
        framework_slot_grace: Duration::from_secs(30),
        ..Caps::default()
    });
    let agent = h.add_agent(4.0, 4 * GIB);
    let left = h.subscribe_with(framework("alice", "r1")).unwrap();
    let offer = h.take_offers(&left).remove(0);
    h.accept(&left, &[&offer], vec![task("t1", 1.0, GIB)], None)
        .unwrap();
    h.subscribe_with(framework("alice", "r1")).unwrap();
    h.disconnect_framework(&left);
    // Within the grace (a dropped stream that comes back) it keeps its slot.
    h.advance_with_heartbeats(10_000, &[&agent]);
    exhausted(h.subscribe_with(framework("bob", "r1")));
    // Past it, the slot is free for anyone; the framework keeps its task
    // until its failover timeout and may still come back.
    h.advance_with_heartbeats(25_000, &[&agent]);
    h.subscribe_with(framework("bob", "r1")).unwrap();
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Staging));
    h.resubscribe(&left, "r1").unwrap();
}

#[test]
fn a_principal_holds_at_most_its_share_of_tasks_across_its_frameworks() {
    let mut h = harness(Caps {
        tasks_per_principal: 3,
        ..Caps::default()
    });
    h.add_agent(16.0, 16 * GIB);
    let first = h.subscribe_with(framework("alice", "r1")).unwrap();
    let offer = h.take_offers(&first).remove(0);
    let two = vec![task("a1", 0.1, GIB / 16), task("a2", 0.1, GIB / 16)];
    // Each accept filters the agent for its framework a while, so the
    // rest of it is offered to the next framework.
    h.accept(&first, &[&offer], two, None).unwrap();
    let second = h.subscribe_with(framework("alice", "r2")).unwrap();
    let offer = h.take_offers(&second).remove(0);
    let two = vec![task("a3", 0.1, GIB / 16), task("a4", 0.1, GIB / 16)];
    let why = exhausted(h.accept(&second, &[&offer], two, None));
    assert!(
        why.contains("`alice` holds 2 tasks") && why.contains("--max-tasks-per-principal"),
        "{why}"
    );
    // Nothing was launched, and one more still fits her share.
    assert_eq!(h.state_of("a3"), None);
    h.accept(&second, &[&offer], vec![task("a3", 0.1, GIB / 16)], None)
        .unwrap();
    // Bob's share is his own.
    let bob = h.subscribe_with(framework("bob", "r1")).unwrap();
    let offer = h.take_offers(&bob).remove(0);
    let three = (1..=3)
        .map(|i| task(&format!("b{i}"), 0.1, GIB / 16))
        .collect();
    h.accept(&bob, &[&offer], three, None).unwrap();
}
