//! DRF in fact: frameworks declare what they wait to launch, and offers are
//! sized by progressive filling at task granularity, so what each framework
//! runs is the DRF allocation, not only the order it is offered agents in.

use wasmos_core::core::Input;
use wasmos_core::testing::{GIB, Harness, offered, task};
use wasmos_core::{FrameworkId, Resources};
use wasmos_proto::v1;

fn demand(cpus: f64, mem: u64, tasks: u64) -> v1::Demand {
    v1::Demand {
        task: Some(v1::Resources { cpus, mem, disk: 0 }),
        tasks,
    }
}

fn subscribe_with_demand(h: &mut Harness, name: &str, role: &str, d: v1::Demand) -> FrameworkId {
    h.subscribe_with(v1::FrameworkInfo {
        name: name.into(),
        role: role.into(),
        demand: Some(d),
        ..Default::default()
    })
    .expect("subscribes")
}

/// A framework that launches as many tasks of `shape` as each of its
/// offers holds, and keeps the rest (which the master takes back).
struct Launcher {
    fw: FrameworkId,
    shape: Resources,
    running: Vec<(String, wasmos_core::AgentId)>,
    next: u32,
}

impl Launcher {
    fn new(fw: FrameworkId, shape: Resources) -> Launcher {
        Launcher {
            fw,
            shape,
            running: Vec::new(),
            next: 0,
        }
    }

    /// Uses every offer the framework holds; returns how many launched.
    fn launch(&mut self, h: &mut Harness) -> usize {
        let mut launched = 0;
        for offer in h.take_offers(&self.fw) {
            let mut room = offered(&offer);
            let mut specs = Vec::new();
            while self.shape.fits_in(&room) {
                room -= self.shape;
                self.next += 1;
                let id = format!("{}-t{}", self.fw, self.next);
                specs.push(task(&id, self.shape.cpus(), self.shape.mem));
                self.running.push((id, offer.agent_id.as_str().into()));
            }
            launched += specs.len();
            h.accept(&self.fw, &[&offer], specs, Some(0.0))
                .expect("accepts");
        }
        launched
    }

    /// Ends its oldest task.
    fn finish_one(&mut self, h: &mut Harness) {
        let (id, agent) = self.running.remove(0);
        let status = h.report(&agent, &id, v1::TaskState::Finished);
        h.ack(&self.fw, &[status]);
    }
}

#[test]
fn the_papers_example_reaches_three_and_two_in_one_cycle_and_stays_there() {
    let mut h = Harness::new();
    h.enable_audit();
    let need_a = Resources::new(1.0, 4 * GIB, 0);
    let need_b = Resources::new(3.0, GIB, 0);
    let a = subscribe_with_demand(&mut h, "A", "r", demand(1.0, 4 * GIB, 600));
    let b = subscribe_with_demand(&mut h, "B", "r", demand(3.0, GIB, 600));
    // One cycle: the agent joins and is split between both at once.
    h.add_agent(9.0, 18 * GIB);
    let (offers_a, offers_b) = (h.offers[&a].clone(), h.offers[&b].clone());
    assert_eq!(offers_a.len(), 1);
    assert_eq!(offers_b.len(), 1);
    assert_eq!(offered(&offers_a[0]), Resources::new(3.0, 12 * GIB, 0));
    assert_eq!(offered(&offers_b[0]), Resources::new(6.0, 2 * GIB, 0));

    let mut fa = Launcher::new(a.clone(), need_a);
    let mut fb = Launcher::new(b.clone(), need_b);
    assert_eq!(fa.launch(&mut h), 3);
    assert_eq!(fb.launch(&mut h), 2);
    // Tasks end and restart in lockstep: whoever's task ends gets its
    // resources back, and the split never moves.
    for round in 0..40 {
        if round % 2 == 0 {
            fa.finish_one(&mut h);
        } else {
            fb.finish_one(&mut h);
        }
        fa.launch(&mut h);
        fb.launch(&mut h);
        assert_eq!(
            (fa.running.len(), fb.running.len()),
            (3, 2),
            "round {round}"
        );
    }
    let share = |fw: &FrameworkId| h.core.allocator().framework_share(fw).unwrap();
    assert!((share(&a) - 2.0 / 3.0).abs() < 1e-9);
    assert!((share(&b) - 2.0 / 3.0).abs() < 1e-9);
    // And that is what DRF says they should hold.
    let fair = h.core.allocator().fair_shares();
    assert!((fair.frameworks[&a] - 2.0 / 3.0).abs() < 1e-9, "{fair:?}");
    assert!((fair.frameworks[&b] - 2.0 / 3.0).abs() < 1e-9, "{fair:?}");
    assert!((fair.roles[&wasmos_core::Role::from("r")] - 1.0).abs() < 1e-9);
    assert_eq!(h.core.take_audit_violations(), Vec::<String>::new());
}

#[test]
fn three_frameworks_of_mixed_shapes_and_weights_converge_to_weighted_drf() {
    let mut h = Harness::new();
    h.enable_audit();
    h.handle(Input::UpdateRole {
        role: "b".into(),
        weight: Some(2.0),
        quota: None,
    })
    .unwrap();
    let shapes = [
        ("A", "a", Resources::new(1.0, GIB, 0), 1.0),
        ("B", "b", Resources::new(1.0, GIB, 0), 2.0),
        ("C", "c", Resources::new(0.5, 4 * GIB, 0), 1.0),
    ];
    let mut launchers: Vec<(Launcher, f64)> = shapes
        .iter()
        .map(|(name, role, shape, weight)| {
            let d = demand(shape.cpus(), shape.mem, 1_000);
            let fw = subscribe_with_demand(&mut h, name, role, d);
            (Launcher::new(fw, *shape), *weight)
        })
        .collect();
    // Four agents of 12 cpus and 24 GiB: 48 cpus, 96 GiB.
    for _ in 0..4 {
        h.add_agent(12.0, 24 * GIB);
    }
    for _ in 0..3 {
        for (l, _) in launchers.iter_mut() {
            l.launch(&mut h);
        }
    }
    let total = Resources::new(48.0, 96 * GIB, 0);
    let weighted: Vec<f64> = launchers
        .iter()
        .map(|(l, w)| {
            let held = Resources::new(
                l.shape.cpus() * l.running.len() as f64,
                l.shape.mem * l.running.len() as u64,
                0,
            );
            held.dominant_share(&total) / w
        })
        .collect();
    // Equal weighted shares, to one task's step: A's step is 1/48, B's is
    // 1/96 (weight 2), C's 4/96.
    let step = 4.0 / 96.0;
    for (i, x) in weighted.iter().enumerate() {
        for y in &weighted[i + 1..] {
            assert!((x - y).abs() <= step + 1e-9, "weighted shares {weighted:?}");
        }
    }
    // And no task of anyone fits in what is left: the cluster is full.
    let used: f64 = launchers
        .iter()
        .map(|(l, _)| l.shape.cpus() * l.running.len() as f64)
        .sum();
    assert!(used > 48.0 - 0.5 - 1e-9, "cpus used {used} of 48");
    assert_eq!(h.core.take_audit_violations(), Vec::<String>::new());
}

#[test]
fn a_framework_is_offered_no_more_than_it_waits_for_and_the_rest_goes_to_one_that_declared_none() {
    let mut h = Harness::new();
    let small = subscribe_with_demand(&mut h, "small", "r", demand(1.0, GIB, 2));
    h.add_agent(8.0, 16 * GIB);
    let offers = h.take_offers(&small);
    assert_eq!(offers.len(), 1);
    assert_eq!(offered(&offers[0]), Resources::new(2.0, 2 * GIB, 0));
    // A framework that declares nothing takes whole agents, as before.
    let greedy = h.subscribe("greedy", "r");
    let rest = h.take_offers(&greedy);
    assert_eq!(rest.len(), 1);
    assert_eq!(offered(&rest[0]), Resources::new(6.0, 14 * GIB, 0));
    // Launching its two tasks counts its demand down to nothing: resources
    // freed later go to the framework that declared none.
    h.accept(
        &small,
        &[&offers[0]],
        vec![task("s1", 1.0, GIB), task("s2", 1.0, GIB)],
        Some(0.0),
    )
    .unwrap();
    h.decline(&greedy, &rest, Some(0.0)).unwrap();
    assert!(h.take_offers(&small).is_empty());
    assert_eq!(h.take_offers(&greedy).len(), 1);
}

#[test]
fn demand_declined_on_one_agent_is_offered_on_another_at_once() {
    // Its demand fits one agent, so it is offered one; it will not run
    // there (an attribute it needs is elsewhere) and declines for long.
    let mut h = Harness::new();
    let picky = subscribe_with_demand(&mut h, "picky", "r", demand(1.0, GIB, 2));
    h.add_agent(8.0, 16 * GIB);
    h.add_agent(8.0, 16 * GIB);
    let first = h.take_offers(&picky);
    assert_eq!(first.len(), 1, "its demand fits one agent: {first:?}");
    h.decline(&picky, &first, Some(300.0)).unwrap();
    let second = h.take_offers(&picky);
    assert_eq!(second.len(), 1, "the other agent is offered at once");
    assert_ne!(second[0].agent_id, first[0].agent_id);
    assert_eq!(offered(&second[0]), Resources::new(2.0, 2 * GIB, 0));
}

#[test]
fn set_demand_and_revive_raise_it_and_a_bad_demand_changes_nothing() {
    let mut h = Harness::new();
    let fw = subscribe_with_demand(&mut h, "fw", "r", demand(1.0, GIB, 0));
    h.add_agent(4.0, 8 * GIB);
    assert!(h.take_offers(&fw).is_empty(), "it waits for nothing");

    for bad in [
        demand(0.0, GIB, 1),
        demand(1.0, 0, 1),
        demand(f64::NAN, GIB, 1),
        demand(-1.0, GIB, 1),
        demand(1.0, GIB, 2_000_000_000),
        v1::Demand {
            task: None,
            tasks: 1,
        },
    ] {
        h.refused(Input::SetDemand(v1::SetDemandRequest {
            framework_id: fw.to_string(),
            demand: Some(bad),
        }));
    }
    h.handle(Input::SetDemand(v1::SetDemandRequest {
        framework_id: fw.to_string(),
        demand: Some(demand(1.0, GIB, 3)),
    }))
    .unwrap();
    let offers = h.take_offers(&fw);
    assert_eq!(offered(&offers[0]), Resources::new(3.0, 3 * GIB, 0));
    h.decline(&fw, &offers, Some(0.0)).unwrap();
    // Declined offers count back: the same three tasks are offered again.
    let offers = h.take_offers(&fw);
    assert_eq!(offered(&offers[0]), Resources::new(3.0, 3 * GIB, 0));

    // Revive with a demand replaces it; clearing the demand offers whole
    // agents again.
    h.decline(&fw, &offers, Some(60.0)).unwrap();
    h.handle(Input::Revive(v1::ReviveRequest {
        framework_id: fw.to_string(),
        demand: Some(demand(2.0, GIB, 1)),
    }))
    .unwrap();
    let offers = h.take_offers(&fw);
    assert_eq!(offers.len(), 1);
    assert_eq!(offered(&offers[0]), Resources::new(2.0, GIB, 0));
    h.handle(Input::SetDemand(v1::SetDemandRequest {
        framework_id: fw.to_string(),
        demand: None,
    }))
    .unwrap();
    let rest = h.take_offers(&fw);
    assert_eq!(rest.len(), 1);
    assert_eq!(offered(&rest[0]), Resources::new(2.0, 7 * GIB, 0));
}

#[test]
fn demand_survives_a_restart_of_the_master() {
    let mut h = Harness::new();
    let fw = subscribe_with_demand(&mut h, "fw", "r", demand(1.0, GIB, 2));
    h.restart();
    h.resubscribe(&fw, "r").expect("resubscribes");
    h.add_agent(8.0, 8 * GIB);
    let offers = h.take_offers(&fw);
    assert_eq!(offered(&offers[0]), Resources::new(2.0, 2 * GIB, 0));
}

#[test]
fn reservations_and_quotas_still_come_first() {
    let mut h = Harness::new();
    h.handle(Input::UpdateRole {
        role: "q".into(),
        weight: None,
        quota: Some(Resources::new(4.0, 4 * GIB, 0)),
    })
    .unwrap();
    let other = subscribe_with_demand(&mut h, "other", "o", demand(1.0, GIB, 100));
    let quota = subscribe_with_demand(&mut h, "quota", "q", demand(1.0, GIB, 100));
    h.add_agent(8.0, 8 * GIB);
    // The role below its quota gets the agent first (whole, as quota grants
    // are); the other role gets what its headroom leaves.
    let q: Resources = h
        .take_offers(&quota)
        .iter()
        .map(offered)
        .fold(Resources::ZERO, |a, b| a + b);
    assert!(
        Resources::new(4.0, 4 * GIB, 0).fits_in(&q),
        "quota role got {q}"
    );
    let _ = h.take_offers(&other);
}
