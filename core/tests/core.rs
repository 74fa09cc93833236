//! Scenario tests of the master core: validation, offers, agents, tasks and
//! frameworks, each driven through `Core::handle` by the harness, which
//! checks the core's invariants after every step.

use std::time::Duration;

use wasmos_core::core::{AgentView, CoreConfig, CoreError, FrameworkView, Input, Reply};
use wasmos_core::testing::{GIB, Harness, acked, killed, launched, offered, rescinded, task};
use wasmos_core::{AgentId, FrameworkId, OfferId, Resources, Role, TaskId};
use wasmos_proto::v1;
use wasmos_proto::v1::event::Kind as EventKind;
use wasmos_proto::v1::master_message::Kind as AgentKind;

// ----- helpers ---------------------------------------------------------------

/// Everything an operator can see of the core, to check that a refused call
/// changed nothing.
fn accept_input(
    fw: &FrameworkId,
    offers: &[&str],
    tasks: Vec<v1::TaskSpec>,
    refuse_seconds: Option<f64>,
) -> Input {
    Input::Accept(v1::AcceptRequest {
        framework_id: fw.to_string(),
        offer_ids: offers.iter().map(|o| o.to_string()).collect(),
        tasks,
        filters: Some(v1::Filters { refuse_seconds }),
    })
}

fn decline_input(fw: &FrameworkId, offers: &[&str], refuse_seconds: Option<f64>) -> Input {
    Input::Decline(v1::DeclineRequest {
        framework_id: fw.to_string(),
        offer_ids: offers.iter().map(|o| o.to_string()).collect(),
        filters: Some(v1::Filters { refuse_seconds }),
    })
}

/// A good accept of `offer`: proof that a refused call left it usable.
fn assert_usable(h: &mut Harness, fw: &FrameworkId, offer: &v1::Offer) {
    let reply = h.accept(fw, &[offer], vec![task("good", 0.5, GIB)], None);
    assert_eq!(reply, Ok(Reply::Launched(vec![TaskId::from("good")])));
    assert_eq!(h.state_of("good"), Some(v1::TaskState::Staging));
}

/// The framework's one outstanding offer.
fn only_offer(h: &mut Harness, fw: &FrameworkId) -> v1::Offer {
    let mut offers = h.take_offers(fw);
    assert_eq!(offers.len(), 1, "expected one offer, got {offers:?}");
    offers.pop().unwrap()
}

/// One agent of 4 cpus and 4 GiB, and a framework of role `web` holding an
/// offer of all of it.
fn one_agent_one_framework() -> (Harness, AgentId, FrameworkId, v1::Offer) {
    let mut h = Harness::new();
    let agent = h.add_agent(4.0, 4 * GIB);
    let fw = h.subscribe("web", "web");
    let offer = only_offer(&mut h, &fw);
    assert_eq!(offered(&offer), Resources::new(4.0, 4 * GIB, 0));
    (h, agent, fw, offer)
}

/// Launches tasks of (id, cpus, mem) on `offer`; the rest is offered again
/// at once (refuse 0).
fn launch(h: &mut Harness, fw: &FrameworkId, offer: &v1::Offer, tasks: &[(&str, f64, u64)]) {
    let specs = tasks.iter().map(|&(id, c, m)| task(id, c, m)).collect();
    let reply = h.accept(fw, &[offer], specs, Some(0.0));
    let ids = tasks.iter().map(|t| TaskId::from(t.0)).collect();
    assert_eq!(reply, Ok(Reply::Launched(ids)));
}

fn framework(h: &Harness, fw: &FrameworkId) -> FrameworkView {
    h.core
        .frameworks()
        .into_iter()
        .find(|f| &f.id == fw)
        .expect("framework known")
}

fn find_agent(h: &Harness, id: &AgentId) -> Option<AgentView> {
    h.core.agents().into_iter().find(|a| &a.id == id)
}

fn allocation(h: &Harness, fw: &FrameworkId) -> Resources {
    h.core.allocator().framework_allocation(fw).unwrap()
}

/// (task id, state) of statuses.
fn states(statuses: &[v1::TaskStatus]) -> Vec<(String, v1::TaskState)> {
    statuses
        .iter()
        .map(|s| (s.task_id.clone(), s.state()))
        .collect()
}

fn offer_events(events: &[v1::Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e.kind, Some(EventKind::Offers(_))))
        .count()
}

fn registered(messages: &[v1::MasterMessage]) -> Vec<v1::Registered> {
    messages
        .iter()
        .filter_map(|m| match &m.kind {
            Some(AgentKind::Registered(r)) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn kill_messages(messages: &[v1::MasterMessage]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match &m.kind {
            Some(AgentKind::KillTasks(k)) => Some(k.task_ids.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

// ----- 1. validation ---------------------------------------------------------

#[test]
fn accept_of_an_unknown_offer_is_refused_and_changes_nothing() {
    let (mut h, _, fw, offer) = one_agent_one_framework();
    let err = h.refused(accept_input(
        &fw,
        &["m-O999"],
        vec![task("t1", 1.0, GIB)],
        None,
    ));
    assert_eq!(err, CoreError::UnknownOffer(OfferId::from("m-O999")));
    // A good offer with a bad one: still refused whole.
    let err = h.refused(accept_input(
        &fw,
        &[&offer.offer_id, "m-O999"],
        vec![task("t1", 1.0, GIB)],
        None,
    ));
    assert_eq!(err, CoreError::UnknownOffer(OfferId::from("m-O999")));
    let err = h.refused(accept_input(&fw, &[], vec![task("t1", 1.0, GIB)], None));
    assert_eq!(err, CoreError::NoOffers);
    assert_eq!(h.state_of("t1"), None);
    assert_usable(&mut h, &fw, &offer);
}

#[test]
fn accepting_an_offer_twice_is_refused() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    h.accept(&fw, &[&offer], vec![task("t1", 1.0, GIB)], None)
        .unwrap();
    let err = h.refused(accept_input(
        &fw,
        &[&offer.offer_id],
        vec![task("t2", 1.0, GIB)],
        None,
    ));
    assert_eq!(
        err,
        CoreError::UnknownOffer(OfferId::from(offer.offer_id.as_str()))
    );
    assert_eq!(h.state_of("t2"), None);
    // The same offer twice in one accept.
    h.advance_with_heartbeats(5000, &[&agent]);
    let again = only_offer(&mut h, &fw);
    let err = h.refused(accept_input(
        &fw,
        &[&again.offer_id, &again.offer_id],
        vec![task("t2", 1.0, GIB)],
        None,
    ));
    assert_eq!(
        err,
        CoreError::DuplicateOffer(OfferId::from(again.offer_id.as_str()))
    );
    assert_usable(&mut h, &fw, &again);
}

#[test]
fn accept_of_another_frameworks_offer_is_refused() {
    let mut h = Harness::new();
    h.add_agent(4.0, 4 * GIB);
    let f1 = h.subscribe("one", "web");
    let f2 = h.subscribe("two", "web");
    h.add_agent(4.0, 4 * GIB);
    let o1 = only_offer(&mut h, &f1);
    let o2 = only_offer(&mut h, &f2);
    assert_ne!(o1.agent_id, o2.agent_id);
    let err = h.refused(accept_input(
        &f2,
        &[&o1.offer_id],
        vec![task("t1", 1.0, GIB)],
        None,
    ));
    assert_eq!(
        err,
        CoreError::ForeignOffer {
            offer: OfferId::from(o1.offer_id.as_str()),
            framework: f2.clone(),
        }
    );
    let err = h.refused(decline_input(&f2, &[&o1.offer_id], None));
    assert!(matches!(err, CoreError::ForeignOffer { .. }), "{err}");
    assert_usable(&mut h, &f1, &o1);
}

#[test]
fn accept_of_offers_on_two_agents_is_refused() {
    let mut h = Harness::new();
    h.add_agent(4.0, 4 * GIB);
    h.add_agent(4.0, 4 * GIB);
    let fw = h.subscribe("web", "web");
    let offers = h.take_offers(&fw);
    assert_eq!(offers.len(), 2);
    assert_ne!(offers[0].agent_id, offers[1].agent_id);
    let err = h.refused(accept_input(
        &fw,
        &[&offers[0].offer_id, &offers[1].offer_id],
        vec![task("t1", 1.0, GIB)],
        None,
    ));
    assert_eq!(
        err,
        CoreError::OffersOnDifferentAgents(
            OfferId::from(offers[0].offer_id.as_str()),
            OfferId::from(offers[1].offer_id.as_str()),
        )
    );
    assert_usable(&mut h, &fw, &offers[1]);
}

#[test]
fn accept_beyond_the_offer_is_refused_naming_the_resource() {
    let (mut h, _, fw, offer) = one_agent_one_framework();
    let disk = v1::TaskSpec {
        resources: Some(v1::Resources {
            cpus: 1.0,
            mem: GIB,
            disk: 1,
        }),
        ..task("t1", 1.0, GIB)
    };
    for (tasks, resource) in [
        (vec![task("t1", 4.001, GIB)], "cpus"),
        (vec![task("t1", 1.0, 4 * GIB + 1)], "mem"),
        (vec![disk], "disk"),
        // Each fits alone; together they do not.
        (vec![task("t1", 3.0, GIB), task("t2", 1.5, GIB)], "cpus"),
    ] {
        let err = h.refused(accept_input(&fw, &[&offer.offer_id], tasks, None));
        assert!(
            matches!(&err, CoreError::InsufficientResources { resource: r, .. } if *r == resource),
            "{err}"
        );
        assert!(
            err.to_string().contains(&format!("more {resource}")),
            "{err}"
        );
    }
    assert_usable(&mut h, &fw, &offer);
}

#[test]
fn accept_with_bad_cpus_or_mem_is_refused() {
    let (mut h, _, fw, offer) = one_agent_one_framework();
    for (cpus, mem, needle) in [
        (-1.0, GIB, "cpus must be a finite number"),
        (f64::NAN, GIB, "cpus must be a finite number"),
        (f64::INFINITY, GIB, "cpus must be a finite number"),
        (0.0, GIB, "cpus must be at least"),
        (0.0001, GIB, "cpus must be at least"),
        (1.0, 0, "mem must be more than 0"),
    ] {
        let err = h.refused(accept_input(
            &fw,
            &[&offer.offer_id],
            vec![task("t1", cpus, mem)],
            None,
        ));
        match &err {
            CoreError::InvalidTask { task, message } => {
                assert_eq!(task, "t1");
                assert!(message.contains(needle), "{cpus} {mem}: {message}");
            }
            other => panic!("{cpus} {mem}: unexpected {other:?}"),
        }
    }
    let no_resources = v1::TaskSpec {
        resources: None,
        ..task("t1", 1.0, GIB)
    };
    let err = h.refused(accept_input(
        &fw,
        &[&offer.offer_id],
        vec![no_resources],
        None,
    ));
    assert!(matches!(err, CoreError::InvalidTask { .. }), "{err}");
    // One bad task refuses the whole accept, good ones included.
    let err = h.refused(accept_input(
        &fw,
        &[&offer.offer_id],
        vec![task("ok", 1.0, GIB), task("t1", 1.0, 0)],
        None,
    ));
    assert!(matches!(err, CoreError::InvalidTask { .. }), "{err}");
    assert_eq!(h.state_of("ok"), None);
    assert_usable(&mut h, &fw, &offer);
}

#[test]
fn duplicate_task_ids_are_refused_within_a_request_and_against_known_tasks() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    let err = h.refused(accept_input(
        &fw,
        &[&offer.offer_id],
        vec![task("t1", 1.0, GIB), task("t1", 1.0, GIB)],
        None,
    ));
    assert_eq!(err, CoreError::DuplicateTask(TaskId::from("t1")));
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB)]);
    let rest = only_offer(&mut h, &fw);
    let err = h.refused(accept_input(
        &fw,
        &[&rest.offer_id],
        vec![task("t1", 1.0, GIB)],
        None,
    ));
    assert_eq!(err, CoreError::DuplicateTask(TaskId::from("t1")));
    // Still refused once t1 finished and was archived: ids are unique for as
    // long as the master remembers them.
    let done = h.report(&agent, "t1", v1::TaskState::Finished);
    let mut finished = h.take_updates(&fw);
    finished.retain(|s| s.uuid == done.uuid);
    h.ack(&fw, &finished);
    assert_eq!(framework(&h, &fw).active_tasks, 0);
    let rest = only_offer(&mut h, &fw);
    let err = h.refused(accept_input(
        &fw,
        &[&rest.offer_id],
        vec![task("t1", 1.0, GIB)],
        None,
    ));
    assert_eq!(err, CoreError::DuplicateTask(TaskId::from("t1")));
    assert_usable(&mut h, &fw, &rest);
}

#[test]
fn every_call_with_an_unknown_framework_is_refused() {
    let (mut h, _, fw, offer) = one_agent_one_framework();
    let ghost = FrameworkId::from("m-F404");
    let id = ghost.to_string();
    let calls = vec![
        accept_input(&ghost, &[&offer.offer_id], vec![task("t1", 1.0, GIB)], None),
        decline_input(&ghost, &[&offer.offer_id], None),
        Input::Kill(v1::KillRequest {
            framework_id: id.clone(),
            task_ids: vec!["t1".into()],
        }),
        Input::Acknowledge(v1::AcknowledgeRequest {
            framework_id: id.clone(),
            acks: vec![],
        }),
        Input::Reconcile(v1::ReconcileRequest {
            framework_id: id.clone(),
            task_ids: vec![],
        }),
        Input::Revive(v1::ReviveRequest {
            demand: None,
            framework_id: id.clone(),
        }),
        Input::Suppress(v1::SuppressRequest {
            framework_id: id.clone(),
        }),
        Input::Teardown(v1::TeardownRequest {
            framework_id: id.clone(),
        }),
        Input::Subscribe {
            connection: 77,
            framework: v1::FrameworkInfo {
                framework_id: id.clone(),
                role: "web".into(),
                ..Default::default()
            },
        },
        // An empty id is no framework either.
        Input::Revive(v1::ReviveRequest {
            demand: None,
            framework_id: String::new(),
        }),
    ];
    for call in calls {
        let what = format!("{call:?}");
        let err = h.refused(call);
        assert!(
            matches!(&err, CoreError::UnknownFramework(f) if f.as_str() == id || f.as_str().is_empty()),
            "{what}: {err}"
        );
    }
    assert_usable(&mut h, &fw, &offer);
}

#[test]
fn subscribe_with_an_invalid_role_is_refused() {
    let mut h = Harness::new();
    h.add_agent(4.0, 4 * GIB);
    let long = "x".repeat(65);
    for role in ["Admin", "a b", ".hidden", "-x", "a/b", "ü", long.as_str()] {
        let err = h.refused(Input::Subscribe {
            connection: 1,
            framework: v1::FrameworkInfo {
                role: role.into(),
                ..Default::default()
            },
        });
        match err {
            CoreError::InvalidRole(message) => assert!(message.contains(role), "{message}"),
            other => panic!("{role}: unexpected {other:?}"),
        }
    }
    assert!(h.core.frameworks().is_empty());
    // No framework named a role: the default one is used.
    let fw = h.subscribe("plain", "");
    assert_eq!(framework(&h, &fw).role, Role::from("default"));
}

#[test]
fn a_framework_cannot_kill_reconcile_or_ack_another_frameworks_task() {
    let mut h = Harness::new();
    let a1 = h.add_agent(4.0, 4 * GIB);
    let f1 = h.subscribe("one", "web");
    let f2 = h.subscribe("two", "web");
    h.add_agent(4.0, 4 * GIB);
    let o1 = only_offer(&mut h, &f1);
    let o2 = only_offer(&mut h, &f2);
    launch(&mut h, &f1, &o1, &[("t1", 1.0, GIB)]);
    launch(&mut h, &f2, &o2, &[("t2", 1.0, GIB)]);
    let running = h.report(&a1, "t1", v1::TaskState::Running);
    let foreign = CoreError::ForeignTask {
        task: TaskId::from("t1"),
        framework: f2.clone(),
    };
    let err = h.refused(Input::Kill(v1::KillRequest {
        framework_id: f2.to_string(),
        // Its own task first: the whole call is refused all the same.
        task_ids: vec!["t2".into(), "t1".into()],
    }));
    assert_eq!(err, foreign);
    let err = h.refused(Input::Reconcile(v1::ReconcileRequest {
        framework_id: f2.to_string(),
        task_ids: vec!["t1".into()],
    }));
    assert_eq!(err, foreign);
    let err = h.refused(Input::Acknowledge(v1::AcknowledgeRequest {
        framework_id: f2.to_string(),
        acks: vec![v1::Ack {
            task_id: "t1".into(),
            agent_id: a1.to_string(),
            uuid: running.uuid.clone(),
        }],
    }));
    assert_eq!(err, foreign);
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Running));
    // The owner may.
    h.kill(&f1, &["t1"]).unwrap();
    assert_eq!(killed(&h.take_agent_messages(&a1)), vec!["t1".to_string()]);
}

#[test]
fn bad_refuse_seconds_are_refused() {
    let (mut h, _, fw, offer) = one_agent_one_framework();
    for bad in [-1.0, -0.001, f64::NAN, f64::INFINITY, 400.0 * 86400.0] {
        let err = h.refused(decline_input(&fw, &[&offer.offer_id], Some(bad)));
        assert!(
            matches!(&err, CoreError::InvalidArgument(m) if m.contains("refuse_seconds")),
            "{bad}: {err}"
        );
        let err = h.refused(accept_input(
            &fw,
            &[&offer.offer_id],
            vec![task("t1", 1.0, GIB)],
            Some(bad),
        ));
        assert!(matches!(err, CoreError::InvalidArgument(_)), "{bad}: {err}");
    }
    assert_usable(&mut h, &fw, &offer);
}

#[test]
fn a_bad_artifact_digest_or_input_is_refused() {
    let (mut h, _, fw, offer) = one_agent_one_framework();
    let good = task("t1", 1.0, GIB);
    let input = |path: &str, artifact: String| v1::Input {
        path: path.into(),
        artifact,
        kind: 0,
    };
    let bad_specs = vec![
        v1::TaskSpec {
            artifact: String::new(),
            ..good.clone()
        },
        v1::TaskSpec {
            artifact: "AB".repeat(32),
            ..good.clone()
        },
        v1::TaskSpec {
            artifact: "ab".repeat(31),
            ..good.clone()
        },
        v1::TaskSpec {
            artifact: "zz".repeat(32),
            ..good.clone()
        },
        v1::TaskSpec {
            inputs: vec![input("data", "nope".into())],
            ..good.clone()
        },
        v1::TaskSpec {
            inputs: vec![input("../etc/passwd", "ab".repeat(32))],
            ..good.clone()
        },
        v1::TaskSpec {
            inputs: vec![input("/etc/passwd", "ab".repeat(32))],
            ..good.clone()
        },
        v1::TaskSpec {
            task_id: "a/b".into(),
            ..good.clone()
        },
        v1::TaskSpec {
            task_id: String::new(),
            ..good.clone()
        },
    ];
    for spec in bad_specs {
        let what = format!("{spec:?}");
        let err = h.refused(accept_input(&fw, &[&offer.offer_id], vec![spec], None));
        assert!(
            matches!(err, CoreError::InvalidTask { .. }),
            "{what}: {err}"
        );
    }
    let err = h.refused(accept_input(
        &fw,
        &[&offer.offer_id],
        vec![v1::TaskSpec {
            artifact: "AB".repeat(32),
            ..good
        }],
        None,
    ));
    assert!(err.to_string().contains("artifact digest"), "{err}");
    assert_usable(&mut h, &fw, &offer);
}

#[test]
fn an_agent_without_sound_resources_is_refused() {
    let mut h = Harness::new();
    let fw = h.subscribe("web", "web");
    let reservation = |role: &str, cpus: f64| v1::Reservation {
        role: role.into(),
        resources: Some(v1::Resources {
            cpus,
            mem: GIB,
            disk: 0,
        }),
    };
    let cases = vec![
        (
            v1::AgentInfo {
                resources: None,
                ..Harness::agent_info(4.0, 4 * GIB)
            },
            "no resources",
        ),
        (Harness::agent_info(-1.0, 4 * GIB), "cpus"),
        (Harness::agent_info(f64::NAN, 4 * GIB), "cpus"),
        (Harness::agent_info(0.0, 4 * GIB), "needs cpus and mem"),
        (Harness::agent_info(4.0, 0), "needs cpus and mem"),
        (
            v1::AgentInfo {
                reservations: vec![reservation("db", 5.0)],
                ..Harness::agent_info(4.0, 4 * GIB)
            },
            "exceed",
        ),
        (
            v1::AgentInfo {
                // Each fits alone; together they do not.
                reservations: vec![reservation("db", 2.5), reservation("web", 2.5)],
                ..Harness::agent_info(4.0, 4 * GIB)
            },
            "exceed",
        ),
        (
            v1::AgentInfo {
                reservations: vec![reservation("Bad Role", 1.0)],
                ..Harness::agent_info(4.0, 4 * GIB)
            },
            "invalid role",
        ),
        (
            v1::AgentInfo {
                reservations: vec![reservation("db", -1.0)],
                ..Harness::agent_info(4.0, 4 * GIB)
            },
            "cpus",
        ),
    ];
    for (info, needle) in cases {
        let what = format!("{info:?}");
        let err = h.refused(Input::AgentRegister {
            connection: 9,
            register: v1::Register {
                agent: Some(info),
                tasks: vec![],
            },
        });
        match err {
            CoreError::InvalidAgent(message) => {
                assert!(message.contains(needle), "{what}: {message}")
            }
            other => panic!("{what}: unexpected {other:?}"),
        }
    }
    let err = h.refused(Input::AgentRegister {
        connection: 9,
        register: v1::Register {
            agent: None,
            tasks: vec![],
        },
    });
    assert!(matches!(err, CoreError::InvalidAgent(_)), "{err}");
    assert!(h.core.agents().is_empty());
    assert_eq!(h.core.allocator().total(), Resources::ZERO);
    assert!(h.take_offers(&fw).is_empty());
    // A sound agent still registers and is offered.
    h.add_agent(4.0, 4 * GIB);
    assert_eq!(
        offered(&only_offer(&mut h, &fw)),
        Resources::new(4.0, 4 * GIB, 0)
    );
}

// ----- 2. accept -------------------------------------------------------------

#[test]
fn accept_launches_tasks_over_a_reserved_and_an_unreserved_offer_of_one_agent() {
    let mut h = Harness::new();
    let agent = h
        .register_agent(
            v1::AgentInfo {
                reservations: vec![v1::Reservation {
                    role: "web".into(),
                    resources: Some(v1::Resources {
                        cpus: 1.0,
                        mem: GIB,
                        disk: 0,
                    }),
                }],
                ..Harness::agent_info(4.0, 4 * GIB)
            },
            vec![],
        )
        .unwrap();
    let fw = h.subscribe("web", "web");
    let offers = h.take_offers(&fw);
    assert_eq!(offers.len(), 2, "{offers:?}");
    let reserved = offers.iter().find(|o| o.reservation_role == "web").unwrap();
    let unreserved = offers
        .iter()
        .find(|o| o.reservation_role.is_empty())
        .unwrap();
    assert_eq!(offered(reserved), Resources::new(1.0, GIB, 0));
    assert_eq!(offered(unreserved), Resources::new(3.0, 3 * GIB, 0));

    h.take_agent_messages(&agent);
    let reply = h.accept(
        &fw,
        &[reserved, unreserved],
        vec![task("t1", 1.5, GIB), task("t2", 1.0, GIB)],
        None,
    );
    assert_eq!(
        reply,
        Ok(Reply::Launched(vec![
            TaskId::from("t1"),
            TaskId::from("t2")
        ]))
    );
    // One RunTasks message with both tasks, in request order.
    let messages = h.take_agent_messages(&agent);
    assert_eq!(messages.len(), 1, "{messages:?}");
    let Some(AgentKind::RunTasks(run)) = &messages[0].kind else {
        panic!("expected RunTasks, got {messages:?}")
    };
    assert_eq!(launched(&messages), vec!["t1", "t2"]);
    for launch in &run.tasks {
        assert_eq!(launch.framework_id, fw.to_string());
        let spec = launch.spec.as_ref().unwrap();
        assert_eq!(spec.name, spec.task_id, "name defaults to the task id");
    }
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Staging));
    assert_eq!(h.state_of("t2"), Some(v1::TaskState::Staging));
    let view = agent_view(&h, &agent);
    assert_eq!(view.used, Resources::new(2.5, 2 * GIB, 0));
    assert_eq!(view.offered, Resources::ZERO);
    // The reservation is drawn first, and all of it is used.
    let books = h.core.allocator().agent_allocation(&agent).unwrap();
    assert_eq!(books.reserved[0].2, Resources::new(1.0, GIB, 0));
    assert_eq!(books.unreserved_allocated, Resources::new(1.5, GIB, 0));
    assert_eq!(allocation(&h, &fw), Resources::new(2.5, 2 * GIB, 0));

    // The remainder comes back after the default 5 s filter, not before.
    h.advance_with_heartbeats(4999, &[&agent]);
    assert!(h.take_offers(&fw).is_empty());
    h.advance(1);
    let rest = only_offer(&mut h, &fw);
    assert_eq!(offered(&rest), Resources::new(1.5, 2 * GIB, 0));
    assert_eq!(rest.agent_id, agent.to_string());
    assert!(rest.reservation_role.is_empty());
}

fn agent_view(h: &Harness, id: &AgentId) -> AgentView {
    find_agent(h, id).expect("agent known")
}

// ----- 3. decline and filters -------------------------------------------------

#[test]
fn declined_agent_is_held_back_for_the_default_five_seconds() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    h.decline(&fw, std::slice::from_ref(&offer), None).unwrap();
    assert_eq!(allocation(&h, &fw), Resources::ZERO);
    h.advance_with_heartbeats(4999, &[&agent]);
    assert!(h.take_offers(&fw).is_empty(), "offered again within 5 s");
    h.advance(1);
    let again = only_offer(&mut h, &fw);
    assert_eq!(offered(&again), offered(&offer));
    assert_ne!(again.offer_id, offer.offer_id);
}

#[test]
fn declined_agent_goes_to_another_framework_meanwhile() {
    let (mut h, agent, f1, offer) = one_agent_one_framework();
    let f2 = h.subscribe("other", "web");
    assert!(h.take_offers(&f2).is_empty());
    h.decline(&f1, &[offer], None).unwrap();
    let o2 = only_offer(&mut h, &f2);
    assert_eq!(o2.agent_id, agent.to_string());
}

#[test]
fn decline_with_refuse_zero_is_offered_again_at_once() {
    let (mut h, _, fw, offer) = one_agent_one_framework();
    h.decline(&fw, std::slice::from_ref(&offer), Some(0.0))
        .unwrap();
    let again = only_offer(&mut h, &fw);
    assert_eq!(offered(&again), offered(&offer));
    assert_ne!(again.offer_id, offer.offer_id);
}

// ----- 4. suppress and revive ------------------------------------------------

#[test]
fn suppressed_framework_gets_no_offers_even_after_its_filters_expire() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    h.suppress(&fw).unwrap();
    assert!(framework(&h, &fw).suppressed);
    h.decline(&fw, &[offer], Some(1.0)).unwrap();
    h.advance_with_heartbeats(11_000, &[&agent]);
    assert!(h.take_offers(&fw).is_empty());
    assert_eq!(agent_view(&h, &agent).offered, Resources::ZERO);
    // A second framework is offered what the suppressed one does not want.
    let other = h.subscribe("other", "web");
    assert_eq!(h.take_offers(&other).len(), 1);
}

#[test]
fn revive_clears_filters_and_offers_at_once() {
    let (mut h, _, fw, offer) = one_agent_one_framework();
    h.decline(&fw, &[offer], Some(3600.0)).unwrap();
    h.advance(1000);
    assert!(h.take_offers(&fw).is_empty());
    h.revive(&fw).unwrap();
    let again = only_offer(&mut h, &fw);
    assert_eq!(offered(&again), Resources::new(4.0, 4 * GIB, 0));
    // Revive also ends a suppression.
    h.decline(&fw, &[again], Some(0.0)).unwrap();
    let again = only_offer(&mut h, &fw);
    h.suppress(&fw).unwrap();
    h.decline(&fw, &[again], Some(0.0)).unwrap();
    assert!(h.take_offers(&fw).is_empty());
    h.revive(&fw).unwrap();
    assert!(!framework(&h, &fw).suppressed);
    assert_eq!(h.take_offers(&fw).len(), 1);
}

// ----- 5. offer timeout ------------------------------------------------------

#[test]
fn unused_offer_is_rescinded_after_the_offer_timeout_and_offered_again() {
    let mut h = Harness::with_config(CoreConfig {
        offer_timeout: Some(Duration::from_secs(10)),
        ..CoreConfig::default()
    });
    let agent = h.add_agent(4.0, 4 * GIB);
    let fw = h.subscribe("web", "web");
    let offer = h.offers[&fw][0].clone();
    h.advance_with_heartbeats(9999, &[&agent]);
    assert!(rescinded(&h.take_events(&fw)).is_empty());
    h.advance(1);
    let events = h.take_events(&fw);
    assert_eq!(rescinded(&events), vec![offer.offer_id.clone()]);
    // Rescinded before re-offered, in the same round.
    let kinds: Vec<bool> = events
        .iter()
        .map(|e| matches!(e.kind, Some(EventKind::Rescind(_))))
        .collect();
    assert_eq!(kinds, vec![true, false]);
    let again = only_offer(&mut h, &fw);
    assert_ne!(again.offer_id, offer.offer_id);
    assert_eq!(offered(&again), offered(&offer));
    // The rescinded offer is gone for good.
    let err = h.refused(accept_input(
        &fw,
        &[&offer.offer_id],
        vec![task("t1", 1.0, GIB)],
        None,
    ));
    assert!(matches!(err, CoreError::UnknownOffer(_)));
}

// ----- 6. agent removal ------------------------------------------------------

#[test]
fn silent_agent_is_removed_its_offers_rescinded_and_its_tasks_lost() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB)]);
    let rest = h.offers[&fw][0].clone();
    assert!(h.core.allocator().framework_share(&fw).unwrap() > 0.0);
    h.advance(3000);
    assert!(
        find_agent(&h, &agent).is_some(),
        "3 s of silence is allowed"
    );
    h.clear_messages();
    h.advance(1);

    assert!(find_agent(&h, &agent).is_none());
    assert_eq!(h.closed_agents, vec![agent.clone()]);
    let events = h.take_events(&fw);
    assert_eq!(rescinded(&events), vec![rest.offer_id.clone()]);
    let failure = events
        .iter()
        .find_map(|e| match &e.kind {
            Some(EventKind::Failure(f)) => Some(f.clone()),
            _ => None,
        })
        .expect("a Failure event");
    assert_eq!(failure.agent_id, agent.to_string());
    let updates = h.take_updates(&fw);
    assert_eq!(states(&updates), vec![("t1".into(), v1::TaskState::Lost)]);
    let lost = &updates[0];
    assert_eq!(lost.reason(), v1::Reason::AgentLost);
    assert_eq!(lost.source(), v1::StatusSource::Master);
    assert!(
        !lost.uuid.is_empty(),
        "a master update must be acknowledged"
    );
    assert_eq!(lost.agent_id, agent.to_string());
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Lost));
    assert_eq!(allocation(&h, &fw), Resources::ZERO);
    assert_eq!(h.core.allocator().framework_share(&fw), Some(0.0));
    assert_eq!(h.core.allocator().total(), Resources::ZERO);

    // Acknowledging the LOST update archives the task.
    assert_eq!(framework(&h, &fw).active_tasks, 1);
    h.ack(&fw, &updates);
    assert_eq!(framework(&h, &fw).active_tasks, 0);
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Lost));
    // ... and it is not sent again on re-subscription.
    h.disconnect_framework(&fw);
    h.resubscribe(&fw, "web").unwrap();
    assert!(h.take_updates(&fw).is_empty());
}

#[test]
fn a_heartbeat_in_time_keeps_an_agent() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB)]);
    h.advance(2000);
    h.heartbeat(&agent);
    h.advance(2000);
    h.advance(1000);
    assert!(find_agent(&h, &agent).is_some(), "heartbeat 3 s ago");
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Staging));
    // Status updates count as signs of life too.
    h.report(&agent, "t1", v1::TaskState::Running);
    h.advance(3000);
    assert!(find_agent(&h, &agent).is_some());
    h.advance(1);
    assert!(find_agent(&h, &agent).is_none());
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Lost));
}

#[test]
fn a_dropped_agent_stream_loses_no_task_until_the_timeout() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB)]);
    let rest = h.offers[&fw][0].clone();
    h.clear_messages();
    h.disconnect_agent(&agent);
    // Its offers are taken back at once, and it is offered no more.
    assert_eq!(rescinded(&h.take_events(&fw)), vec![rest.offer_id]);
    assert!(!agent_view(&h, &agent).connected);
    h.advance(2000);
    assert!(h.take_offers(&fw).is_empty());
    assert!(h.take_updates(&fw).is_empty());
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Staging));
    assert_eq!(agent_view(&h, &agent).used, Resources::new(1.0, GIB, 0));
    h.advance(1000);
    assert!(find_agent(&h, &agent).is_some());
    h.advance(1);
    assert!(find_agent(&h, &agent).is_none());
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Lost));
}

#[test]
fn a_stale_disconnect_from_an_old_stream_is_ignored() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    let old = h.agent_connections[&agent];
    h.reregister_agent(&agent, Harness::agent_info(4.0, 4 * GIB), &[])
        .unwrap();
    let new = h.agent_connections[&agent];
    assert_ne!(old, new);
    h.clear_messages();
    h.handle(Input::AgentDisconnected {
        agent: agent.clone(),
        connection: old,
    })
    .unwrap();
    assert!(agent_view(&h, &agent).connected);
    assert!(h.take_events(&fw).is_empty(), "no offer was rescinded");
    assert_usable(&mut h, &fw, &offer);
    // The live stream's end does count.
    h.disconnect_agent(&agent);
    assert!(!agent_view(&h, &agent).connected);
}

// ----- 7. agent re-registration ---------------------------------------------

#[test]
fn reregistering_agent_keeps_the_tasks_it_reports() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB), ("t2", 1.0, GIB)]);
    h.report(&agent, "t1", v1::TaskState::Running);
    h.disconnect_agent(&agent);
    h.advance(2000);
    h.clear_messages();
    let id = h
        .reregister_agent(&agent, Harness::agent_info(4.0, 4 * GIB), &["t1", "t2"])
        .unwrap();
    assert_eq!(id, agent);
    let reg = registered(&h.take_agent_messages(&agent));
    assert_eq!(reg.len(), 1);
    assert_eq!(reg[0].agent_id, agent.to_string());
    assert!(reg[0].kill_task_ids.is_empty(), "{:?}", reg[0]);
    assert!(h.take_updates(&fw).is_empty());
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Running));
    assert_eq!(h.state_of("t2"), Some(v1::TaskState::Staging));
    let view = agent_view(&h, &agent);
    assert!(view.connected);
    assert_eq!(view.used, Resources::new(2.0, 2 * GIB, 0));
    // It is offered again: what the tasks leave.
    let rest = only_offer(&mut h, &fw);
    assert_eq!(offered(&rest), Resources::new(2.0, 2 * GIB, 0));
    // And it is alive again: no loss 3 s after the old heartbeat.
    h.advance(1500);
    assert!(find_agent(&h, &agent).is_some());
}

#[test]
fn an_agent_that_reregisters_with_other_resources_is_a_new_agent_under_its_id() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB)]);
    h.report(&agent, "t1", v1::TaskState::Running);
    h.disconnect_agent(&agent);
    h.take_offers(&fw);
    h.clear_messages();
    // Restarted with more cpus and less mem; it still reports t1.
    let id = h
        .reregister_agent(&agent, Harness::agent_info(8.0, 2 * GIB), &["t1"])
        .unwrap();
    assert_eq!(id, agent);
    // The master's totals are the new ones: nothing is offered that the
    // agent no longer has, and the new cpus are offered.
    assert_eq!(h.core.allocator().total(), Resources::new(8.0, 2 * GIB, 0));
    let view = agent_view(&h, &agent);
    assert_eq!(view.used, Resources::ZERO);
    assert_eq!(
        offered(&only_offer(&mut h, &fw)),
        Resources::new(8.0, 2 * GIB, 0)
    );
    // What ran on the old agent is LOST and killed where it still runs.
    let updates = h.take_updates(&fw);
    assert_eq!(states(&updates), vec![("t1".into(), v1::TaskState::Lost)]);
    assert_eq!(updates[0].reason(), v1::Reason::AgentLost);
    assert!(
        updates[0].message.contains("other resources"),
        "{}",
        updates[0].message
    );
    let reg = registered(&h.take_agent_messages(&agent));
    assert_eq!(reg[0].kill_task_ids, vec!["t1".to_string()]);

    // A claim that cannot stand is refused and leaves the agent as it was.
    let bad = v1::AgentInfo {
        reservations: vec![v1::Reservation {
            role: "gold".into(),
            resources: Some(v1::Resources {
                cpus: 16.0,
                mem: GIB,
                disk: 0,
            }),
        }],
        ..Harness::agent_info(8.0, 2 * GIB)
    };
    assert!(h.reregister_agent(&agent, bad, &[]).is_err());
    assert_eq!(h.core.allocator().total(), Resources::new(8.0, 2 * GIB, 0));
    assert!(find_agent(&h, &agent).is_some());
}

#[test]
fn a_task_the_reregistering_agent_does_not_report_becomes_lost() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB), ("t2", 1.0, GIB)]);
    h.disconnect_agent(&agent);
    h.take_offers(&fw);
    h.reregister_agent(&agent, Harness::agent_info(4.0, 4 * GIB), &["t1"])
        .unwrap();
    let updates = h.take_updates(&fw);
    assert_eq!(states(&updates), vec![("t2".into(), v1::TaskState::Lost)]);
    assert!(!updates[0].uuid.is_empty());
    assert_eq!(updates[0].reason(), v1::Reason::AgentError);
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Staging));
    assert_eq!(h.state_of("t2"), Some(v1::TaskState::Lost));
    // t2's resources are free again.
    assert_eq!(agent_view(&h, &agent).used, Resources::new(1.0, GIB, 0));
    assert_eq!(
        offered(&only_offer(&mut h, &fw)),
        Resources::new(3.0, 3 * GIB, 0)
    );
    h.ack(&fw, &updates);
    assert_eq!(framework(&h, &fw).active_tasks, 1);
}

#[test]
fn an_agent_declared_lost_rejoins_under_its_id_and_kills_what_it_reported() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB)]);
    h.advance(3001);
    assert!(find_agent(&h, &agent).is_none());
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Lost));
    h.clear_messages();
    h.take_offers(&fw);

    let id = h
        .reregister_agent(&agent, Harness::agent_info(4.0, 4 * GIB), &["t1"])
        .unwrap();
    assert_eq!(id, agent, "it keeps its id");
    let reg = registered(&h.take_agent_messages(&agent));
    assert_eq!(reg.len(), 1);
    assert_eq!(reg[0].kill_task_ids, vec!["t1".to_string()]);
    // It starts empty; the task stays LOST.
    let view = agent_view(&h, &agent);
    assert_eq!((view.used, view.tasks), (Resources::ZERO, 0));
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Lost));
    assert_eq!(
        offered(&only_offer(&mut h, &fw)),
        Resources::new(4.0, 4 * GIB, 0)
    );
    // A late word about t1 from the agent changes nothing: acked, not
    // forwarded.
    let late = h.report(&agent, "t1", v1::TaskState::Running);
    assert!(h.take_updates(&fw).is_empty());
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Lost));
    assert_eq!(
        acked(&h.take_agent_messages(&agent)),
        vec![("t1".to_string(), late.uuid)]
    );
}

// ----- 8. status updates and acks -------------------------------------------

#[test]
fn running_and_finished_are_forwarded_and_finishing_frees_resources_at_once() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    launch(&mut h, &fw, &offer, &[("t1", 4.0, 4 * GIB)]);
    assert!(h.take_offers(&fw).is_empty(), "the task holds it all");
    let running = h.report(&agent, "t1", v1::TaskState::Running);
    let updates = h.take_updates(&fw);
    assert_eq!(
        states(&updates),
        vec![("t1".into(), v1::TaskState::Running)]
    );
    assert_eq!(updates[0].uuid, running.uuid);
    assert_eq!(updates[0].framework_id, fw.to_string());
    assert_eq!(updates[0].agent_id, agent.to_string());
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Running));
    assert!(h.take_offers(&fw).is_empty());

    h.report(&agent, "t1", v1::TaskState::Finished);
    assert_eq!(
        states(&h.take_updates(&fw)),
        vec![("t1".into(), v1::TaskState::Finished)]
    );
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Finished));
    assert_eq!(agent_view(&h, &agent).used, Resources::ZERO);
    // Offered again without waiting for a tick.
    assert_eq!(
        offered(&only_offer(&mut h, &fw)),
        Resources::new(4.0, 4 * GIB, 0)
    );
}

#[test]
fn framework_acks_are_forwarded_to_the_agent_and_archive_terminal_tasks() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB)]);
    h.report(&agent, "t1", v1::TaskState::Running);
    let running = h.take_updates(&fw);
    h.take_agent_messages(&agent);
    h.ack(&fw, &running);
    assert_eq!(
        acked(&h.take_agent_messages(&agent)),
        vec![("t1".to_string(), running[0].uuid.clone())]
    );
    assert_eq!(framework(&h, &fw).active_tasks, 1);

    h.advance(1000);
    h.report(&agent, "t1", v1::TaskState::Finished);
    let finished = h.take_updates(&fw);
    h.take_agent_messages(&agent);
    h.ack(&fw, &finished);
    assert_eq!(
        acked(&h.take_agent_messages(&agent)),
        vec![("t1".to_string(), finished[0].uuid.clone())]
    );
    assert_eq!(framework(&h, &fw).active_tasks, 0);
    assert_eq!(agent_view(&h, &agent).tasks, 0);
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Finished));
}

#[test]
fn an_update_for_an_unknown_task_is_acked_and_the_task_killed() {
    let mut h = Harness::new();
    let a1 = h.add_agent(4.0, 4 * GIB);
    let fw = h.subscribe("web", "web");
    let a2 = h.add_agent(4.0, 4 * GIB);
    let offers = h.take_offers(&fw);
    let o1 = offers
        .iter()
        .find(|o| o.agent_id == a1.to_string())
        .unwrap();
    launch(&mut h, &fw, o1, &[("t1", 1.0, GIB)]);
    h.clear_messages();

    let ghost = h.report(&a1, "ghost", v1::TaskState::Running);
    let messages = h.take_agent_messages(&a1);
    assert_eq!(kill_messages(&messages), vec!["ghost".to_string()]);
    assert_eq!(acked(&messages), vec![("ghost".to_string(), ghost.uuid)]);
    assert!(h.take_updates(&fw).is_empty());

    // A terminal one needs no kill.
    let gone = h.report(&a1, "gone", v1::TaskState::Failed);
    let messages = h.take_agent_messages(&a1);
    assert!(kill_messages(&messages).is_empty());
    assert_eq!(acked(&messages), vec![("gone".to_string(), gone.uuid)]);

    // t1 reported by an agent it is not on is unknown there.
    let wrong = h.report(&a2, "t1", v1::TaskState::Finished);
    let messages = h.take_agent_messages(&a2);
    assert_eq!(acked(&messages), vec![("t1".to_string(), wrong.uuid)]);
    assert!(h.take_updates(&fw).is_empty());
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Staging));
    assert_eq!(agent_view(&h, &a1).used, Resources::new(1.0, GIB, 0));
}

#[test]
fn a_resent_terminal_update_is_forwarded_again_and_frees_nothing_twice() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB)]);
    let finished = h.report(&agent, "t1", v1::TaskState::Finished);
    assert_eq!(h.take_updates(&fw).len(), 1);
    let offers_before = h.offers[&fw].len();
    h.advance(500);
    h.handle(Input::AgentUpdates {
        agent: agent.clone(),
        statuses: vec![finished.clone()],
        unsynced: None,
    })
    .unwrap();
    let again = h.take_updates(&fw);
    assert_eq!(states(&again), vec![("t1".into(), v1::TaskState::Finished)]);
    assert_eq!(again[0].uuid, finished.uuid);
    assert_eq!(h.offers[&fw].len(), offers_before, "nothing freed twice");
    assert_eq!(
        agent_view(&h, &agent).offered,
        Resources::new(4.0, 4 * GIB, 0)
    );
    // A different late update after the terminal one is acked, not forwarded.
    h.take_agent_messages(&agent);
    let late = h.report(&agent, "t1", v1::TaskState::Running);
    assert!(h.take_updates(&fw).is_empty());
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Finished));
    assert_eq!(
        acked(&h.take_agent_messages(&agent)),
        vec![("t1".to_string(), late.uuid)]
    );
}

// ----- 9. kill ---------------------------------------------------------------

#[test]
fn kill_of_a_running_task_is_sent_to_its_agent() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB)]);
    h.report(&agent, "t1", v1::TaskState::Running);
    h.clear_messages();
    h.kill(&fw, &["t1"]).unwrap();
    let messages = h.take_agent_messages(&agent);
    assert_eq!(kill_messages(&messages), vec!["t1".to_string()]);
    // The task runs until the agent says otherwise.
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Running));
    assert_eq!(agent_view(&h, &agent).used, Resources::new(1.0, GIB, 0));
    h.report(&agent, "t1", v1::TaskState::Killed);
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Killed));
    assert_eq!(agent_view(&h, &agent).used, Resources::ZERO);
    // Killing a task that is over sends nothing.
    h.clear_messages();
    h.kill(&fw, &["t1"]).unwrap();
    assert!(h.take_agent_messages(&agent).is_empty());
}

#[test]
fn kill_of_an_unknown_task_is_refused() {
    let (mut h, _, fw, offer) = one_agent_one_framework();
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB)]);
    let err = h.refused(Input::Kill(v1::KillRequest {
        framework_id: fw.to_string(),
        task_ids: vec!["t1".into(), "nope".into()],
    }));
    assert_eq!(err, CoreError::UnknownTask(TaskId::from("nope")));
}

#[test]
fn an_operator_kills_tasks_of_any_framework_and_unknown_ids_kill_nothing() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB), ("t2", 1.0, GIB)]);
    h.clear_messages();
    let err = h.refused(Input::OperatorKill {
        task_ids: vec!["t1".into(), "nope".into()],
    });
    assert_eq!(err, CoreError::UnknownTask(TaskId::from("nope")));
    h.handle(Input::OperatorKill {
        task_ids: vec!["t2".into()],
    })
    .unwrap();
    let messages = h.take_agent_messages(&agent);
    assert_eq!(kill_messages(&messages), vec!["t2".to_string()]);
}

#[test]
fn kill_while_the_agent_is_away_is_delivered_when_it_reregisters() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB), ("t2", 1.0, GIB)]);
    h.disconnect_agent(&agent);
    h.clear_messages();
    h.kill(&fw, &["t1"]).unwrap();
    assert!(
        h.take_agent_messages(&agent).is_empty(),
        "no stream to send on"
    );
    h.reregister_agent(&agent, Harness::agent_info(4.0, 4 * GIB), &["t1", "t2"])
        .unwrap();
    let reg = registered(&h.take_agent_messages(&agent));
    assert_eq!(reg.len(), 1);
    assert_eq!(reg[0].kill_task_ids, vec!["t1".to_string()]);
    assert_eq!(h.state_of("t2"), Some(v1::TaskState::Staging));
}

// ----- 10. reconciliation ----------------------------------------------------

#[test]
fn explicit_reconciliation_answers_known_and_unknown_tasks() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB)]);
    h.report(&agent, "t1", v1::TaskState::Running);
    h.take_updates(&fw);
    h.reconcile(&fw, &["t1", "nope"]).unwrap();
    let updates = h.take_updates(&fw);
    assert_eq!(
        states(&updates),
        vec![
            ("t1".into(), v1::TaskState::Running),
            ("nope".into(), v1::TaskState::Lost),
        ]
    );
    assert!(updates.iter().all(|s| s.uuid.is_empty()), "nothing to ack");
    assert_eq!(updates[0].reason(), v1::Reason::Reconciliation);
    assert_eq!(updates[0].agent_id, agent.to_string());
    assert_eq!(updates[1].reason(), v1::Reason::TaskUnknown);
    assert_eq!(updates[1].framework_id, fw.to_string());
    // Reconciling changes nothing.
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Running));
    assert_eq!(h.state_of("nope"), None);
}

#[test]
fn implicit_reconciliation_answers_all_the_frameworks_tasks() {
    let mut h = Harness::new();
    let a1 = h.add_agent(4.0, 4 * GIB);
    let f1 = h.subscribe("one", "web");
    let f2 = h.subscribe("two", "web");
    h.add_agent(4.0, 4 * GIB);
    let o1 = only_offer(&mut h, &f1);
    let o2 = only_offer(&mut h, &f2);
    launch(&mut h, &f1, &o1, &[("t1", 1.0, GIB), ("t2", 1.0, GIB)]);
    launch(&mut h, &f2, &o2, &[("t3", 1.0, GIB)]);
    // t2 finishes and is archived: still reconciled.
    h.report(&a1, "t2", v1::TaskState::Finished);
    let finished = h.take_updates(&f1);
    h.ack(&f1, &finished);
    h.reconcile(&f1, &[]).unwrap();
    let mut answer = states(&h.take_updates(&f1));
    answer.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        answer,
        vec![
            ("t1".into(), v1::TaskState::Staging),
            ("t2".into(), v1::TaskState::Finished),
        ]
    );
    assert!(h.take_updates(&f2).is_empty());
}

// ----- 11. framework failover -------------------------------------------------

#[test]
fn framework_resubscribing_in_time_keeps_its_id_and_tasks() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB)]);
    let old_offer = h.offers[&fw][0].clone();
    h.clear_messages();
    h.disconnect_framework(&fw);
    assert_eq!(
        rescinded(&h.take_events(&fw)),
        vec![old_offer.offer_id.clone()]
    );
    let view = framework(&h, &fw);
    assert!(!view.connected);
    assert_eq!(view.offers, 0);
    assert_eq!(allocation(&h, &fw), Resources::new(1.0, GIB, 0));
    h.advance_with_heartbeats(30_000, &[&agent]);
    assert_eq!(offer_events(&h.take_events(&fw)), 0, "no offers while away");

    let id = h.resubscribe(&fw, "web").unwrap();
    assert_eq!(id, fw);
    let events = h.take_events(&fw);
    assert!(matches!(
        &events[0].kind,
        Some(EventKind::Subscribed(s)) if s.framework_id == fw.to_string()
    ));
    let view = framework(&h, &fw);
    assert!(view.connected);
    assert_eq!(view.active_tasks, 1);
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Staging));
    // Offered what the task leaves; the old offer is dead.
    let fresh = only_offer(&mut h, &fw);
    assert_eq!(offered(&fresh), Resources::new(3.0, 3 * GIB, 0));
    let err = h.refused(accept_input(
        &fw,
        &[&old_offer.offer_id],
        vec![task("t2", 1.0, GIB)],
        None,
    ));
    assert!(matches!(err, CoreError::UnknownOffer(_)));
}

#[test]
fn resubscribing_on_a_new_stream_rescinds_the_old_streams_offers() {
    let (mut h, _, fw, offer) = one_agent_one_framework();
    let old = h.framework_connections[&fw];
    h.resubscribe(&fw, "web").unwrap();
    assert_eq!(rescinded(&h.take_events(&fw)), vec![offer.offer_id.clone()]);
    let fresh = only_offer(&mut h, &fw);
    assert_ne!(fresh.offer_id, offer.offer_id);
    // The old stream's end does not disconnect the new one.
    h.handle(Input::FrameworkDisconnected {
        framework: fw.clone(),
        connection: old,
    })
    .unwrap();
    assert!(framework(&h, &fw).connected);
    assert_usable(&mut h, &fw, &fresh);
}

#[test]
fn master_updates_missed_while_away_are_resent_on_resubscribe() {
    let mut h = Harness::new();
    let a1 = h.add_agent(4.0, 4 * GIB);
    let a2 = h.add_agent(4.0, 4 * GIB);
    let fw = h.subscribe("web", "web");
    let offers = h.take_offers(&fw);
    let on = |a: &AgentId| offers.iter().find(|o| o.agent_id == a.to_string()).unwrap();
    launch(&mut h, &fw, on(&a1), &[("t1", 1.0, GIB)]);
    launch(&mut h, &fw, on(&a2), &[("t2", 1.0, GIB)]);
    h.disconnect_framework(&fw);
    h.clear_messages();
    // a2 goes silent while the framework is away.
    h.advance_with_heartbeats(3001, &[&a1]);
    assert!(find_agent(&h, &a2).is_none());
    assert_eq!(h.state_of("t2"), Some(v1::TaskState::Lost));
    assert!(h.take_updates(&fw).is_empty(), "no stream to send on");

    h.resubscribe(&fw, "web").unwrap();
    let updates = h.take_updates(&fw);
    assert_eq!(states(&updates), vec![("t2".into(), v1::TaskState::Lost)]);
    assert_eq!(updates[0].reason(), v1::Reason::AgentLost);
    assert!(!updates[0].uuid.is_empty());
    // Until acknowledged, every re-subscription resends it.
    h.resubscribe(&fw, "web").unwrap();
    assert_eq!(h.take_updates(&fw), updates);
    h.ack(&fw, &updates);
    h.resubscribe(&fw, "web").unwrap();
    assert!(h.take_updates(&fw).is_empty());
    assert_eq!(framework(&h, &fw).active_tasks, 1);
}

#[test]
fn framework_past_its_failover_timeout_is_removed_and_its_tasks_killed() {
    let mut h = Harness::new();
    let agent = h.add_agent(4.0, 4 * GIB);
    let fw = h
        .subscribe_with(v1::FrameworkInfo {
            name: "web".into(),
            role: "web".into(),
            failover_timeout_ms: 10_000,
            ..Default::default()
        })
        .unwrap();
    let subscribed = h.take_events(&fw).into_iter().find_map(|e| match e.kind {
        Some(EventKind::Subscribed(s)) => Some(s),
        _ => None,
    });
    assert_eq!(subscribed.unwrap().failover_timeout_ms, 10_000);
    let offer = only_offer(&mut h, &fw);
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB)]);
    h.report(&agent, "t1", v1::TaskState::Running);
    h.disconnect_framework(&fw);
    h.advance_with_heartbeats(9999, &[&agent]);
    assert!(!framework(&h, &fw).connected);
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Running));
    h.clear_messages();
    h.heartbeat(&agent);
    h.advance(1);

    assert!(h.core.frameworks().is_empty());
    assert_eq!(h.closed_frameworks, vec![fw.clone()]);
    assert_eq!(
        kill_messages(&h.take_agent_messages(&agent)),
        vec!["t1".to_string()]
    );
    // Operators still see the task, killed for its framework's sake.
    let t1 = h.core.task("t1").expect("remembered for operators");
    assert_eq!(t1.state(), v1::TaskState::Killed);
    assert_eq!(t1.status.reason(), v1::Reason::FrameworkRemoved);
    assert_eq!(h.core.allocator().framework_allocation(&fw), None);
    let view = agent_view(&h, &agent);
    assert_eq!((view.used, view.tasks), (Resources::ZERO, 0));
    let err = h.refused(Input::Subscribe {
        connection: 99,
        framework: v1::FrameworkInfo {
            framework_id: fw.to_string(),
            role: "web".into(),
            ..Default::default()
        },
    });
    assert_eq!(err, CoreError::UnknownFramework(fw.clone()));
    // The freed resources go to whoever comes next.
    let next = h.subscribe("next", "web");
    assert_eq!(
        offered(&only_offer(&mut h, &next)),
        Resources::new(4.0, 4 * GIB, 0)
    );
}

#[test]
fn resubscribing_with_a_different_role_is_refused() {
    let (mut h, _, fw, offer) = one_agent_one_framework();
    let err = h.refused(Input::Subscribe {
        connection: 42,
        framework: v1::FrameworkInfo {
            framework_id: fw.to_string(),
            role: "batch".into(),
            ..Default::default()
        },
    });
    assert_eq!(
        err,
        CoreError::RoleChange(fw.clone(), "web".into(), "batch".into())
    );
    assert_eq!(framework(&h, &fw).role, Role::from("web"));
    assert_usable(&mut h, &fw, &offer);
}

// ----- 12. teardown ----------------------------------------------------------

#[test]
fn teardown_kills_the_tasks_and_closes_the_stream() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB), ("t2", 1.0, GIB)]);
    h.report(&agent, "t1", v1::TaskState::Running);
    let outstanding = h.offers[&fw][0].clone();
    h.clear_messages();
    let (reply, messages) = h.handle_seen(Input::Teardown(v1::TeardownRequest {
        framework_id: fw.to_string(),
    }));
    assert_eq!(reply, Ok(Reply::Done));
    assert_eq!(
        messages.last(),
        Some(&wasmos_core::core::Output::CloseFramework(fw.clone())),
        "the stream closes after everything else"
    );
    let events = h.take_events(&fw);
    assert_eq!(rescinded(&events), vec![outstanding.offer_id]);
    assert!(
        events
            .iter()
            .any(|e| matches!(e.kind, Some(EventKind::Error(_))))
    );
    let mut kills = kill_messages(&h.take_agent_messages(&agent));
    kills.sort();
    assert_eq!(kills, vec!["t1".to_string(), "t2".to_string()]);
    assert!(h.core.frameworks().is_empty());
    assert!(
        h.core
            .tasks()
            .iter()
            .all(|t| t.state() == v1::TaskState::Killed
                && t.status.reason() == v1::Reason::FrameworkRemoved)
    );
    let view = agent_view(&h, &agent);
    assert_eq!(
        (view.used, view.offered),
        (Resources::ZERO, Resources::ZERO)
    );
    assert_eq!(
        h.teardown(&fw),
        Err(CoreError::UnknownFramework(fw.clone()))
    );
}

// ----- 13. reservations and quota -------------------------------------------

#[test]
fn reserved_resources_are_offered_only_to_frameworks_of_their_role() {
    let mut h = Harness::new();
    let batch = h.subscribe("batch", "batch");
    let agent = h
        .register_agent(
            v1::AgentInfo {
                reservations: vec![v1::Reservation {
                    role: "db".into(),
                    resources: Some(v1::Resources {
                        cpus: 1.0,
                        mem: GIB,
                        disk: 0,
                    }),
                }],
                ..Harness::agent_info(4.0, 4 * GIB)
            },
            vec![],
        )
        .unwrap();
    // batch gets the unreserved part only, even as the only framework.
    let offer = only_offer(&mut h, &batch);
    assert_eq!(offered(&offer), Resources::new(3.0, 3 * GIB, 0));
    assert!(offer.reservation_role.is_empty());
    h.decline(&batch, &[offer], Some(0.0)).unwrap();
    assert!(
        h.offers[&batch]
            .iter()
            .all(|o| o.reservation_role.is_empty())
    );
    h.advance(1000);
    assert_eq!(
        agent_view(&h, &agent).offered,
        Resources::new(3.0, 3 * GIB, 0)
    );

    let db = h.subscribe("db", "db");
    let reserved = only_offer(&mut h, &db);
    assert_eq!(reserved.reservation_role, "db");
    assert_eq!(offered(&reserved), Resources::new(1.0, GIB, 0));
    // Launching on it draws on the reservation.
    launch(&mut h, &db, &reserved, &[("d1", 1.0, GIB)]);
    let books = h.core.allocator().agent_allocation(&agent).unwrap();
    assert_eq!(books.reserved[0].0, Role::from("db"));
    assert_eq!(books.reserved[0].2, Resources::new(1.0, GIB, 0));
    // When d1 ends, the reservation goes back to db, not batch.
    h.report(&agent, "d1", v1::TaskState::Finished);
    let back = only_offer(&mut h, &db);
    assert_eq!(back.reservation_role, "db");
    assert!(
        h.offers[&batch]
            .iter()
            .all(|o| o.reservation_role.is_empty())
    );
}

#[test]
fn a_role_below_its_quota_is_offered_before_a_heavier_weighted_role() {
    let mut h = Harness::new();
    // `heavy` is made first, so on equal shares it would win the tie.
    h.handle(Input::UpdateRole {
        role: "heavy".into(),
        weight: Some(10.0),
        quota: None,
    })
    .unwrap();
    h.handle(Input::UpdateRole {
        role: "guaranteed".into(),
        weight: None,
        quota: Some(Resources::new(4.0, 4 * GIB, 0)),
    })
    .unwrap();
    let heavy = h.subscribe("heavy", "heavy");
    let guaranteed = h.subscribe("guaranteed", "guaranteed");
    let a1 = h.add_agent(4.0, 4 * GIB);
    assert!(h.take_offers(&heavy).is_empty());
    assert_eq!(only_offer(&mut h, &guaranteed).agent_id, a1.to_string());
    // Quota met: the next agent goes by weighted share.
    let a2 = h.add_agent(4.0, 4 * GIB);
    assert!(h.take_offers(&guaranteed).is_empty());
    assert_eq!(only_offer(&mut h, &heavy).agent_id, a2.to_string());
    let roles = h.core.allocator().roles();
    let quota_role = roles
        .iter()
        .find(|r| r.name.as_str() == "guaranteed")
        .unwrap();
    assert_eq!(quota_role.allocated, Resources::new(4.0, 4 * GIB, 0));
}

// ----- 14. completed tasks ---------------------------------------------------

#[test]
fn completed_tasks_are_capped_per_framework() {
    let mut h = Harness::with_config(CoreConfig {
        completed_tasks_per_framework: 3,
        ..CoreConfig::default()
    });
    let agent = h.add_agent(4.0, 4 * GIB);
    let fw = h.subscribe("web", "web");
    let offer = only_offer(&mut h, &fw);
    let ids = ["t1", "t2", "t3", "t4", "t5"];
    let tasks: Vec<(&str, f64, u64)> = ids.iter().map(|id| (*id, 0.5, GIB / 2)).collect();
    launch(&mut h, &fw, &offer, &tasks);
    for id in ids {
        h.report(&agent, id, v1::TaskState::Finished);
        let updates = h.take_updates(&fw);
        h.ack(&fw, &updates);
        h.advance(10);
    }
    for id in ["t1", "t2"] {
        assert_eq!(h.state_of(id), None, "{id} should be forgotten");
    }
    for id in ["t3", "t4", "t5"] {
        assert_eq!(h.state_of(id), Some(v1::TaskState::Finished), "{id}");
    }
    assert_eq!(framework(&h, &fw).active_tasks, 0);
    h.reconcile(&fw, &[]).unwrap();
    assert_eq!(h.take_updates(&fw).len(), 3);
    // A forgotten id may be used again.
    let rest = h.take_offers(&fw).pop().expect("freed resources offered");
    launch(&mut h, &fw, &rest, &[("t1", 0.5, GIB / 2)]);
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Staging));
}

// ----- 15. garbage -----------------------------------------------------------

#[test]
fn garbage_inputs_never_panic_and_leave_the_core_consistent() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB)]);
    let rest = h.offers[&fw][0].clone();
    let ghost_agent = AgentId::from("m-A404");
    let garbage_status = |task: &str, state: i32| v1::TaskStatus {
        task_id: task.into(),
        state,
        uuid: b"junk".to_vec(),
        ..Default::default()
    };
    let fid = fw.to_string();
    let inputs = vec![
        Input::AgentHeartbeat {
            agent: ghost_agent.clone(),
        },
        Input::AgentHeartbeat {
            agent: AgentId::from(""),
        },
        Input::AgentUpdates {
            agent: ghost_agent.clone(),
            statuses: vec![garbage_status("t1", 6)],
            unsynced: None,
        },
        Input::AgentUpdates {
            agent: agent.clone(),
            statuses: vec![
                garbage_status("", 3),
                garbage_status("nope", 0),
                garbage_status("nope", 99),
                garbage_status("nope", -1),
            ],
            unsynced: None,
        },
        Input::AgentDisconnected {
            agent: ghost_agent.clone(),
            connection: 12345,
        },
        Input::AgentDisconnected {
            agent: agent.clone(),
            connection: 12345,
        },
        Input::FrameworkDisconnected {
            framework: FrameworkId::from("m-F404"),
            connection: 1,
        },
        Input::FrameworkDisconnected {
            framework: fw.clone(),
            connection: 12345,
        },
        Input::Acknowledge(v1::AcknowledgeRequest {
            framework_id: fid.clone(),
            acks: vec![
                v1::Ack::default(),
                v1::Ack {
                    task_id: "nope".into(),
                    agent_id: "m-A404".into(),
                    uuid: b"junk".to_vec(),
                },
                v1::Ack {
                    task_id: "t1".into(),
                    agent_id: String::new(),
                    uuid: vec![],
                },
            ],
        }),
        Input::Reconcile(v1::ReconcileRequest {
            framework_id: fid.clone(),
            task_ids: vec![String::new(), "x".repeat(10_000)],
        }),
        Input::Kill(v1::KillRequest {
            framework_id: fid.clone(),
            task_ids: vec![],
        }),
        Input::Kill(v1::KillRequest {
            framework_id: fid.clone(),
            task_ids: vec![String::new()],
        }),
        Input::Kill(v1::KillRequest {
            framework_id: fid.clone(),
            task_ids: vec!["t1".into(), "t1".into()],
        }),
        decline_input(&fw, &[], None),
        decline_input(&fw, &[&rest.offer_id, &rest.offer_id], Some(0.0)),
        accept_input(&fw, &[&rest.offer_id, &rest.offer_id], vec![], None),
        accept_input(&fw, &[""], vec![], None),
        Input::Accept(v1::AcceptRequest::default()),
        Input::Decline(v1::DeclineRequest::default()),
        Input::Subscribe {
            connection: 500,
            framework: v1::FrameworkInfo {
                failover_timeout_ms: u64::MAX,
                ..Default::default()
            },
        },
        Input::AgentRegister {
            connection: 501,
            register: v1::Register {
                agent: Some(Harness::agent_info(1e15, u64::MAX)),
                tasks: vec![],
            },
        },
        Input::AgentRegister {
            connection: 502,
            register: v1::Register::default(),
        },
        Input::UpdateRole {
            role: "Not A Role".into(),
            weight: Some(2.0),
            quota: None,
        },
        Input::UpdateRole {
            role: "web".into(),
            weight: Some(f64::NAN),
            quota: None,
        },
        Input::UpdateRole {
            role: "web".into(),
            weight: Some(-1.0),
            quota: None,
        },
        Input::UpdateRole {
            role: "web".into(),
            weight: Some(0.0),
            quota: None,
        },
        Input::DrainAgent {
            agent: ghost_agent.clone(),
        },
        Input::Tick,
    ];
    for input in inputs {
        let what = format!("{input:?}");
        let what = &what[..what.len().min(200)];
        // The harness checks the invariants after every step.
        let (reply, _) = h.handle_seen(input);
        if let Err(e) = reply {
            assert!(!e.to_string().is_empty(), "{what}");
        }
    }
    // Time running backwards must not confuse the clocks either.
    h.now = wasmos_core::Time(h.now.0 - 500_000);
    h.handle(Input::Tick).unwrap();
    h.now = wasmos_core::Time(h.now.0 + 500_000);
    h.handle(Input::Tick).unwrap();

    // What matters still works.
    assert!(find_agent(&h, &agent).is_some());
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Staging));
    h.report(&agent, "t1", v1::TaskState::Finished);
    assert_eq!(agent_view(&h, &agent).used, Resources::ZERO);
    h.revive(&fw).unwrap();
    let offers: Vec<v1::Offer> = h
        .take_offers(&fw)
        .into_iter()
        .filter(|o| o.agent_id == agent.to_string())
        .collect();
    assert_eq!(offers.len(), 1, "{offers:?}");
    assert_usable(&mut h, &fw, &offers[0]);
}

#[test]
fn a_declined_offer_listed_twice_is_refused() {
    let (mut h, _, fw, offer) = one_agent_one_framework();
    let err = h.refused(decline_input(
        &fw,
        &[&offer.offer_id, &offer.offer_id],
        None,
    ));
    assert_eq!(
        err,
        CoreError::DuplicateOffer(OfferId::from(offer.offer_id.as_str()))
    );
    assert_usable(&mut h, &fw, &offer);
}

#[test]
fn an_update_with_an_unknown_state_does_not_hide_a_task_from_loss() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB)]);
    h.take_updates(&fw);
    for state in [0, 99] {
        h.handle(Input::AgentUpdates {
            agent: agent.clone(),
            statuses: vec![v1::TaskStatus {
                task_id: "t1".into(),
                state,
                uuid: format!("junk-{state}").into_bytes(),
                ..Default::default()
            }],
            unsynced: None,
        })
        .unwrap();
    }
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Staging));
    assert!(h.take_updates(&fw).is_empty(), "garbage is not forwarded");
    // The agent comes back without t1: it is lost, not stuck.
    h.reregister_agent(&agent, Harness::agent_info(4.0, 4 * GIB), &[])
        .unwrap();
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Lost));
    assert_eq!(agent_view(&h, &agent).used, Resources::ZERO);
}

#[test]
fn a_new_agent_never_gets_the_id_of_a_known_one() {
    let mut h = Harness::new();
    // An agent names an id of the master's own form that it was never given:
    // the very id the master hands out next.
    let squatter = h
        .reregister_agent(&AgentId::from("m-A1"), Harness::agent_info(1.0, GIB), &[])
        .unwrap();
    assert_eq!(squatter.as_str(), "m-A1");
    let fresh = h.add_agent(4.0, 4 * GIB);
    assert_ne!(fresh, squatter);
    assert_eq!(h.core.agents().len(), 2);
    assert_eq!(h.core.allocator().total(), Resources::new(5.0, 5 * GIB, 0));
}

#[test]
fn tasks_whose_sizes_overflow_when_summed_are_refused() {
    let (mut h, _, fw, offer) = one_agent_one_framework();
    let half = 1u64 << 63;
    let err = h.refused(accept_input(
        &fw,
        &[&offer.offer_id],
        vec![task("t1", 1.0, half), task("t2", 1.0, half)],
        None,
    ));
    assert!(
        matches!(&err, CoreError::InvalidArgument(m) if m.contains("more than can be counted")),
        "{err}"
    );
    assert_usable(&mut h, &fw, &offer);
}

#[test]
fn an_agent_that_would_overflow_the_cluster_total_is_refused() {
    // Past the default caps no single agent could; with them lifted, the
    // sum is still checked.
    let mut h = Harness::with_config(CoreConfig {
        caps: wasmos_core::core::Caps {
            agent_resources: Resources::MAX,
            ..Default::default()
        },
        ..CoreConfig::default()
    });
    h.register_agent(Harness::agent_info(4.0, u64::MAX), vec![])
        .unwrap();
    let err = h.refused(Input::AgentRegister {
        connection: 7,
        register: v1::Register {
            agent: Some(Harness::agent_info(4.0, GIB)),
            tasks: vec![],
        },
    });
    assert!(matches!(err, CoreError::InvalidAgent(_)), "{err}");
    assert_eq!(h.core.allocator().total(), Resources::new(4.0, u64::MAX, 0));
}

#[test]
fn an_update_overtaken_by_a_later_one_is_acknowledged_and_does_not_move_the_task_back() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB)]);
    h.take_agent_messages(&agent);
    let starting = h.report(&agent, "t1", v1::TaskState::Starting);
    h.report(&agent, "t1", v1::TaskState::Running);
    h.take_updates(&fw);
    h.take_agent_messages(&agent);
    // The agent resends STARTING (unacknowledged): it comes after RUNNING.
    h.handle(Input::AgentUpdates {
        agent: agent.clone(),
        statuses: vec![starting.clone()],
        unsynced: None,
    })
    .unwrap();
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Running));
    assert!(
        h.take_updates(&fw).is_empty(),
        "the framework hears nothing"
    );
    assert_eq!(
        acked(&h.take_agent_messages(&agent)),
        [("t1".to_string(), starting.uuid)],
        "the agent may forget it"
    );
}

// ----- principals ------------------------------------------------------------

fn principal(name: &str, roles: &[&str]) -> wasmos_core::access::Principal {
    wasmos_core::access::Principal {
        name: name.into(),
        accessor: format!("{name}-token"),
        grant: wasmos_core::access::Grant::Roles(roles.iter().map(|r| r.to_string()).collect()),
    }
}

#[test]
fn only_the_owning_principal_or_an_admin_may_use_a_framework_and_ownership_survives_a_restart() {
    let mut h = Harness::new();
    let agent = h.add_agent(4.0, 4 * GIB);
    let alice = principal("alice", &["batch"]);
    let bob = principal("bob", &["ci", "batch"]);
    let fw = h
        .subscribe_with(v1::FrameworkInfo {
            name: "alices".into(),
            role: "batch".into(),
            principal: "alice".into(),
            ..Default::default()
        })
        .unwrap();
    let offer = h.take_offers(&fw).remove(0);
    h.accept(&fw, &[&offer], vec![task("t1", 1.0, GIB)], None)
        .unwrap();
    assert_eq!(h.core.task("t1").unwrap().owner, "alice");
    assert_eq!(h.core.task_owner(&TaskId::from("t1")), Some("alice"));

    let f = fw.to_string();
    let inputs = [
        Input::Kill(v1::KillRequest {
            framework_id: f.clone(),
            task_ids: vec!["t1".into()],
        }),
        Input::Teardown(v1::TeardownRequest {
            framework_id: f.clone(),
        }),
        Input::Accept(v1::AcceptRequest {
            framework_id: f.clone(),
            ..Default::default()
        }),
        Input::Reconcile(v1::ReconcileRequest {
            framework_id: f.clone(),
            task_ids: vec![],
        }),
        Input::Subscribe {
            connection: 99,
            framework: v1::FrameworkInfo {
                framework_id: f.clone(),
                role: "batch".into(),
                ..Default::default()
            },
        },
        Input::OperatorKill {
            task_ids: vec!["t1".into()],
        },
    ];
    for input in &inputs {
        match h.core.authorize(&bob, input) {
            Err(CoreError::PermissionDenied(why)) => {
                assert!(
                    why.contains("alice") && why.contains("bob"),
                    "{input:?}: {why}"
                )
            }
            other => panic!("{input:?}: bob was let through: {other:?}"),
        }
        h.core.authorize(&alice, input).expect("the owner may");
        h.core
            .authorize(&wasmos_core::access::Principal::local(), input)
            .expect("an admin may");
    }
    // Roles bound new subscriptions; operator inputs need an admin.
    let new_in = |role: &str| Input::Subscribe {
        connection: 7,
        framework: v1::FrameworkInfo {
            role: role.into(),
            ..Default::default()
        },
    };
    assert!(h.core.authorize(&alice, &new_in("ci")).is_err());
    assert!(h.core.authorize(&alice, &new_in("batch")).is_ok());
    assert!(
        h.core.authorize(&alice, &new_in("")).is_err(),
        "the default role is a role"
    );
    for input in [
        Input::DrainAgent {
            agent: agent.clone(),
        },
        Input::UndrainAgent {
            agent: agent.clone(),
        },
        Input::UpdateRole {
            role: "batch".into(),
            weight: Some(2.0),
            quota: None,
        },
    ] {
        assert!(
            matches!(
                h.core.authorize(&alice, &input),
                Err(CoreError::PermissionDenied(_))
            ),
            "{input:?}"
        );
    }
    // Its sandbox: read by its owner (on the agent it ran on) and admins,
    // refused to bob, in the core's own records.
    let read = v1::ReadSandboxRequest {
        task_id: "t1".into(),
        target: v1::SandboxTarget::Stdout.into(),
        ..Default::default()
    };
    let checked = h.core.authorize_sandbox_read(&alice, &read).unwrap();
    assert_eq!(checked.agent, agent);
    assert!(matches!(
        h.core.authorize_sandbox_read(&bob, &read),
        Err(wasmos_core::sandbox_read::Refused::Denied(why)) if why.contains("alice")
    ));
    let local = wasmos_core::access::Principal::local();
    assert!(h.core.authorize_sandbox_read(&local, &read).is_ok());
    // As an input: refused to bob; for alice, numbered and addressed to
    // the agent that holds the sandbox.
    let refused = h.refused(Input::ReadSandbox {
        who: bob.clone(),
        request: read.clone(),
    });
    assert!(
        matches!(refused, CoreError::PermissionDenied(_)),
        "{refused}"
    );
    let Ok(Reply::SandboxRead {
        agent: to,
        read: first,
    }) = h.handle(Input::ReadSandbox {
        who: alice.clone(),
        request: read.clone(),
    })
    else {
        panic!("alice reads her own task's sandbox")
    };
    assert_eq!((to, first.task_id.as_str()), (agent.clone(), "t1"));
    let Ok(Reply::SandboxRead { read: second, .. }) = h.handle(Input::ReadSandbox {
        who: alice.clone(),
        request: read.clone(),
    }) else {
        panic!("read again")
    };
    assert_ne!(first.request_id, second.request_id, "each read its own id");
    assert!(
        h.core
            .authorize(
                &bob,
                &Input::ReadSandbox {
                    who: alice.clone(),
                    request: read.clone(),
                }
            )
            .is_err(),
        "nobody reads as another"
    );
    let unknown = h.refused(Input::ReadSandbox {
        who: alice.clone(),
        request: v1::ReadSandboxRequest {
            task_id: "nope".into(),
            ..read.clone()
        },
    });
    assert!(matches!(unknown, CoreError::NotFound(_)), "{unknown}");
    h.disconnect_agent(&agent);
    let away = h.refused(Input::ReadSandbox {
        who: alice.clone(),
        request: read.clone(),
    });
    assert!(matches!(away, CoreError::Unavailable(_)), "{away}");
    // A re-subscription does not change the owner, whoever makes it.
    let mut h2 = h;
    h2.restart();
    assert_eq!(h2.core.task("t1").unwrap().owner, "alice");
    let again = h2
        .subscribe_with(v1::FrameworkInfo {
            framework_id: f.clone(),
            role: "batch".into(),
            principal: "mallory".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(framework(&h2, &again).principal, "alice");
    assert!(h2.core.authorize(&bob, &inputs[0]).is_err());
    // The agent running t1 may fetch its module; no other agent may.
    assert!(
        h2.core
            .agent_needs_artifact(&agent, &task("t1", 1.0, GIB).artifact)
    );
    assert!(
        !h2.core
            .agent_needs_artifact(&AgentId::from("elsewhere"), &task("t1", 1.0, GIB).artifact)
    );
}

#[test]
fn weights_outside_the_documented_range_are_refused_and_undrain_offers_again() {
    let mut h = Harness::new();
    let agent = h.add_agent(4.0, 4 * GIB);
    for weight in [1e-300, 0.0, 1e9, f64::NAN] {
        let err = h.refused(Input::UpdateRole {
            role: "batch".into(),
            weight: Some(weight),
            quota: None,
        });
        assert!(err.to_string().contains("0.001..=1000"), "{weight}: {err}");
    }
    h.handle(Input::DrainAgent {
        agent: agent.clone(),
    })
    .unwrap();
    let fw = h.subscribe("f", "");
    assert!(h.take_offers(&fw).is_empty(), "a drained agent is offered");
    h.handle(Input::UndrainAgent {
        agent: agent.clone(),
    })
    .unwrap();
    assert_eq!(
        h.take_offers(&fw).len(),
        1,
        "an undrained agent is offered again"
    );
    assert!(!h.core.agents()[0].draining);
}

#[test]
fn agents_claiming_past_the_cap_or_reservations_that_wrap_are_refused() {
    let mut h = Harness::new();
    let err = h.refused(Input::AgentRegister {
        connection: 7,
        register: v1::Register {
            agent: Some(Harness::agent_info(1_000_000.0, GIB)),
            tasks: vec![],
        },
    });
    assert!(err.to_string().contains("--max-agent-resources"), "{err}");
    // Two reservations whose sum wraps around u64 must not pass as small.
    let mut h = Harness::with_config(CoreConfig {
        caps: wasmos_core::core::Caps {
            agent_resources: Resources::MAX,
            ..Default::default()
        },
        ..CoreConfig::default()
    });
    let mut info = Harness::agent_info(4.0, 4 * GIB);
    for _ in 0..2 {
        info.reservations.push(v1::Reservation {
            role: "batch".into(),
            resources: Some(v1::Resources {
                cpus: 0.0,
                mem: 1 << 63,
                disk: 0,
            }),
        });
    }
    let err = h.refused(Input::AgentRegister {
        connection: 8,
        register: v1::Register {
            agent: Some(info),
            tasks: vec![],
        },
    });
    assert!(err.to_string().contains("exceed"), "{err}");
}

#[test]
fn repeated_ids_cost_one_and_too_many_are_refused() {
    let (mut h, agent, fw, offer) = one_agent_one_framework();
    launch(&mut h, &fw, &offer, &[("t1", 1.0, GIB)]);
    h.take_agent_messages(&agent);
    h.handle(Input::Kill(v1::KillRequest {
        framework_id: fw.to_string(),
        task_ids: vec!["t1".into(); 800_000],
    }))
    .unwrap();
    assert_eq!(
        killed(&h.take_agent_messages(&agent)),
        vec!["t1".to_string()]
    );
    let err = h.refused(Input::Reconcile(v1::ReconcileRequest {
        framework_id: fw.to_string(),
        task_ids: (0..50_001).map(|i| format!("x{i}")).collect(),
    }));
    assert!(err.to_string().contains("50000"), "{err}");
    let err = h.refused(Input::Subscribe {
        connection: 9,
        framework: v1::FrameworkInfo {
            name: "n".repeat(300),
            ..Default::default()
        },
    });
    assert!(
        err.to_string().contains("framework.name is 300 bytes"),
        "{err}"
    );
}
