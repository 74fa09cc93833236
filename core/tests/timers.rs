//! The core says when it next needs time, and allocates on change.
//!
//! The harness ticks the core at each deadline it names and checks, after
//! every step, that a tick before `next_timeout()` changes nothing and that
//! a tick leaves nothing due. These tests pin the deadlines themselves: an
//! idle core asks for no wake-up before its next real deadline, and freed
//! resources are offered by the input that freed them, not by a timer.

use std::time::Duration;

use wasmos_core::Time;
use wasmos_core::core::{CoreConfig, Input};
use wasmos_core::testing::{GIB, Harness, rescinded, task};

fn config() -> CoreConfig {
    CoreConfig {
        agent_timeout: Duration::from_secs(3),
        offer_timeout: Some(Duration::from_secs(60)),
        default_failover_timeout: Duration::from_secs(30),
        ..CoreConfig::default()
    }
}

#[test]
fn an_empty_core_never_asks_for_time() {
    let mut h = Harness::with_config(config());
    assert_eq!(h.core.next_timeout(), None);
    h.advance(3_600_000);
    assert_eq!(h.core.next_timeout(), None);
}

#[test]
fn an_idle_core_wakes_only_when_an_agent_could_time_out() {
    let mut h = Harness::with_config(config());
    let a = h.add_agent(4.0, 8 * GIB);
    h.advance(400);
    let b = h.add_agent(4.0, 8 * GIB);
    h.advance(300);
    let c = h.add_agent(4.0, 8 * GIB);
    // Three agents, no frameworks: the only deadline is the first moment
    // an agent has been silent for longer than the agent timeout.
    let first = Time(h.now.0 - 700 + 3_000 + 1);
    assert_eq!(h.core.next_timeout(), Some(first));

    // A minute of heartbeats: every one moves its agent's deadline, and the
    // core never asks for a wake-up before the earliest of them.
    for _ in 0..60 {
        for agent in [&a, &b, &c] {
            h.heartbeat(agent);
            h.now = Time(h.now.0 + 100);
        }
        let last_a = h.now.0 - 300;
        assert_eq!(h.core.next_timeout(), Some(Time(last_a + 3_001)));
        h.advance(700);
    }
    assert_eq!(h.core.agents().len(), 3);
    assert!(h.closed_agents.is_empty(), "no agent was lost");

    // Silence: the agents are lost at their deadlines, in order, and then
    // the core needs no time at all.
    h.advance(10_000);
    assert_eq!(h.closed_agents, vec![a, b, c]);
    assert_eq!(h.core.next_timeout(), None);
}

#[test]
fn an_unused_offer_is_rescinded_at_its_expiry_and_offered_again() {
    let mut h = Harness::with_config(config());
    let agent = h.add_agent(4.0, 8 * GIB);
    let fw = h.subscribe("fw", "r");
    let offered_at = h.now;
    let offer = h.take_offers(&fw).pop().expect("an offer");
    let expiry = offered_at + Duration::from_secs(60);
    assert_eq!(h.core.next_timeout(), Some(Time(h.now.0 + 3_001)));
    h.advance_with_heartbeats(59_000, &[&agent]);
    assert!(rescinded(&h.take_events(&fw)).is_empty());
    h.heartbeat(&agent);
    assert_eq!(h.core.next_timeout(), Some(expiry));
    h.advance(1_000);
    assert_eq!(rescinded(&h.take_events(&fw)), vec![offer.offer_id.clone()]);
    // The tick that rescinded it offered the agent again, in the same turn.
    let again = h.take_offers(&fw);
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].offer_id, offer.offer_id);
}

#[test]
fn a_filter_wakes_the_core_when_it_ends_and_the_agent_is_offered_again() {
    let mut h = Harness::with_config(config());
    let agent = h.add_agent(4.0, 8 * GIB);
    let fw = h.subscribe("fw", "r");
    let offers = h.take_offers(&fw);
    h.decline(&fw, &offers, Some(2.0)).expect("declines");
    let filter_end = h.now + Duration::from_secs(2);
    assert!(h.take_offers(&fw).is_empty(), "filtered");
    assert_eq!(h.core.next_timeout(), Some(filter_end));

    h.heartbeat(&agent);
    h.advance(1_999);
    assert!(h.take_offers(&fw).is_empty(), "still filtered");
    h.advance(1);
    let offers = h.take_offers(&fw);
    assert_eq!(offers.len(), 1, "offered when the filter ended");

    // A revive clears filters, and their deadlines with them: the agent's
    // timeout is the next deadline again.
    h.decline(&fw, &offers, Some(30.0)).expect("declines");
    let filter_end = h.now + Duration::from_secs(30);
    h.advance_with_heartbeats(28_000, &[&agent]);
    h.heartbeat(&agent);
    assert_eq!(h.core.next_timeout(), Some(filter_end));
    h.revive(&fw).expect("revives");
    assert_eq!(h.take_offers(&fw).len(), 1, "revive offers at once");
    let agent_timeout = Time(h.now.0 + 3_001);
    assert_eq!(h.core.next_timeout(), Some(agent_timeout));
}

#[test]
fn a_disconnected_framework_is_removed_at_its_failover_deadline() {
    let mut h = Harness::with_config(config());
    let fw = h.subscribe("fw", "r");
    assert_eq!(h.core.next_timeout(), None, "connected: no deadline");
    h.disconnect_framework(&fw);
    let deadline = h.now + Duration::from_secs(30);
    assert_eq!(h.core.next_timeout(), Some(deadline));
    h.advance(29_999);
    assert_eq!(h.core.frameworks().len(), 1);
    h.advance(1);
    assert!(h.core.frameworks().is_empty());
    assert_eq!(h.closed_frameworks, vec![fw]);
    assert_eq!(h.core.next_timeout(), None);

    // Re-subscribing in time clears the deadline.
    let fw = h.subscribe("fw2", "r");
    h.disconnect_framework(&fw);
    h.advance(10_000);
    h.resubscribe(&fw, "r").expect("resubscribes");
    assert_eq!(h.core.next_timeout(), None);
}

#[test]
fn after_a_restart_the_core_waits_for_agents_until_their_reregistration_deadline() {
    let mut h = Harness::with_config(CoreConfig {
        agent_reregister_timeout: Duration::from_secs(600),
        ..config()
    });
    let agent = h.add_agent(4.0, 8 * GIB);
    let fw = h.subscribe("fw", "r");
    let offer = h.take_offers(&fw).pop().expect("offer");
    h.accept(&fw, &[&offer], vec![task("t1", 1.0, GIB)], None)
        .expect("launches");
    h.restart();
    // The recovered framework's failover deadline comes first, then the
    // agent's re-registration deadline: nothing earlier.
    let failover = h.now + Duration::from_secs(30);
    assert_eq!(h.core.next_timeout(), Some(failover));
    h.resubscribe(&fw, "r").expect("resubscribes");
    assert_eq!(
        h.core.next_timeout(),
        Some(h.now + Duration::from_secs(600))
    );
    h.reregister_agent(&agent, Harness::agent_info(4.0, 8 * GIB), &["t1"])
        .expect("re-registers");
    assert_eq!(h.core.next_timeout(), Some(Time(h.now.0 + 3_001)));
}

#[test]
fn resources_freed_by_a_framework_leaving_are_offered_in_the_same_input() {
    let mut h = Harness::with_config(config());
    h.add_agent(4.0, 8 * GIB);
    let a = h.subscribe("a", "r");
    let b = h.subscribe("b", "r");
    // The whole agent went to `a`; `b` got nothing.
    assert_eq!(h.take_offers(&a).len(), 1);
    assert!(h.take_offers(&b).is_empty());
    // `a` drops its stream: its offer is rescinded and, in that same input
    // (no tick, no time passing), offered to `b`.
    let now = h.now;
    h.disconnect_framework(&a);
    assert_eq!(h.now, now);
    assert_eq!(h.take_offers(&b).len(), 1);
}

#[test]
fn a_tick_before_the_next_timeout_changes_nothing() {
    // The harness asserts this on every tick; here, ticks at every
    // millisecond of a busy stretch prove it over many states.
    let mut h = Harness::with_config(config());
    let agent = h.add_agent(4.0, 8 * GIB);
    let fw = h.subscribe("fw", "r");
    let offers = h.take_offers(&fw);
    h.decline(&fw, &offers, Some(0.05)).expect("declines");
    for _ in 0..200 {
        h.now = Time(h.now.0 + 1);
        h.handle(Input::Tick).expect("tick");
    }
    assert_eq!(h.take_offers(&fw).len(), 1);
    h.heartbeat(&agent);
}

#[test]
fn heartbeats_write_nothing_to_the_registry() {
    let mut h = Harness::with_config(config());
    let agent = h.add_agent(4.0, 8 * GIB);
    // Ten minutes of heartbeats, one a second: each moves the agent's
    // deadline and none becomes a write, so a cluster's heartbeats cost
    // no commits however many agents send them.
    for _ in 0..600 {
        h.now = Time(h.now.0 + 1_000);
        let out = h.core.handle(
            Input::AgentHeartbeat {
                agent: agent.clone(),
            },
            h.now,
        );
        out.reply.expect("heartbeat");
        assert!(out.writes.is_empty(), "a heartbeat wrote {:?}", out.writes);
        assert_eq!(h.core.next_timeout(), Some(Time(h.now.0 + 3_001)));
    }
    assert_eq!(h.core.agents().len(), 1);
}
