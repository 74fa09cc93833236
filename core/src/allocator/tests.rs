use std::time::Duration;

use super::*;

fn agent(n: usize) -> AgentId {
    AgentId::from(format!("a{n}"))
}

fn fw(name: &str) -> FrameworkId {
    FrameworkId::from(name)
}

fn role(name: &str) -> Role {
    Role::from(name)
}

fn cluster(agents: usize, per_agent: Resources) -> Allocator {
    let mut a = Allocator::new(AllocatorConfig::default());
    for i in 0..agents {
        a.add_agent(agent(i), per_agent, &[]).unwrap();
    }
    a
}

fn count_by_framework(grants: &[Allocation]) -> HashMap<String, usize> {
    let mut counts = HashMap::default();
    for g in grants {
        *counts.entry(g.framework.to_string()).or_default() += 1;
    }
    counts
}

#[test]
fn weights_two_to_one_split_a_large_cluster_two_to_one() {
    let mut a = cluster(3000, Resources::new(1.0, 1 << 30, 0));
    a.add_framework(fw("heavy"), &role("gold")).unwrap();
    a.add_framework(fw("light"), &role("bronze")).unwrap();
    a.set_weight(&role("gold"), 2.0).unwrap();
    let grants = a.allocate(Time::ZERO, Scope::All);
    let counts = count_by_framework(&grants);
    assert_eq!(grants.len(), 3000);
    let (heavy, light) = (counts["heavy"] as i64, counts["light"] as i64);
    assert!(
        (heavy - 2 * light).abs() <= 2,
        "heavy {heavy} light {light}"
    );
}

#[test]
fn frameworks_within_a_role_share_equally() {
    let mut a = cluster(100, Resources::new(2.0, 1 << 30, 0));
    for name in ["f1", "f2", "f3", "f4"] {
        a.add_framework(fw(name), &role("batch")).unwrap();
    }
    let counts = count_by_framework(&a.allocate(Time::ZERO, Scope::All));
    assert_eq!(
        counts
            .values()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        [25].into()
    );
}

#[test]
fn nothing_is_granted_twice_and_recovery_frees_it() {
    let mut a = cluster(10, Resources::new(1.0, 1 << 30, 0));
    a.add_framework(fw("f"), &role("r")).unwrap();
    let grants = a.allocate(Time::ZERO, Scope::All);
    assert_eq!(grants.len(), 10);
    assert!(
        a.allocate(Time::ZERO, Scope::All).is_empty(),
        "all resources are held"
    );
    let g = &grants[0];
    a.recover(&g.framework, &g.agent, None, g.resources, None, Time::ZERO)
        .unwrap();
    let again = a.allocate(Time::ZERO, Scope::Agents(std::slice::from_ref(&g.agent)));
    assert_eq!(again, vec![g.clone()]);
}

#[test]
fn filters_hold_an_agent_back_until_they_expire() {
    let mut a = cluster(1, Resources::new(1.0, 1 << 30, 0));
    a.add_framework(fw("f"), &role("r")).unwrap();
    let g = a.allocate(Time::ZERO, Scope::All).remove(0);
    a.recover(
        &g.framework,
        &g.agent,
        None,
        g.resources,
        Some(Duration::from_secs(5)),
        Time::ZERO,
    )
    .unwrap();
    assert!(a.allocate(Time(4_999), Scope::All).is_empty());
    assert_eq!(a.allocate(Time(5_000), Scope::All).len(), 1);
}

#[test]
fn a_filtered_framework_yields_to_the_next() {
    let mut a = cluster(1, Resources::new(1.0, 1 << 30, 0));
    a.add_framework(fw("f1"), &role("r")).unwrap();
    a.add_framework(fw("f2"), &role("r")).unwrap();
    let g = a.allocate(Time::ZERO, Scope::All).remove(0);
    assert_eq!(g.framework, fw("f1"));
    a.recover(
        &g.framework,
        &g.agent,
        None,
        g.resources,
        Some(Duration::from_secs(5)),
        Time::ZERO,
    )
    .unwrap();
    assert_eq!(a.allocate(Time(1), Scope::All)[0].framework, fw("f2"));
}

#[test]
fn suppress_stops_offers_and_revive_clears_filters() {
    let mut a = cluster(2, Resources::new(1.0, 1 << 30, 0));
    a.add_framework(fw("f"), &role("r")).unwrap();
    let grants = a.allocate(Time::ZERO, Scope::All);
    for g in &grants {
        a.recover(
            &g.framework,
            &g.agent,
            None,
            g.resources,
            Some(Duration::from_secs(60)),
            Time::ZERO,
        )
        .unwrap();
    }
    a.suppress(&fw("f")).unwrap();
    assert!(!a.wants_offers(&fw("f")));
    assert!(
        a.allocate(Time(100_000), Scope::All).is_empty(),
        "suppressed"
    );
    a.revive(&fw("f")).unwrap();
    assert_eq!(
        a.allocate(Time(1), Scope::All).len(),
        2,
        "revive clears filters"
    );
}

#[test]
fn reservations_go_only_to_their_role() {
    let mut a = Allocator::new(AllocatorConfig::default());
    let total = Resources::new(4.0, 4 << 30, 0);
    let reserved = Resources::new(3.0, 3 << 30, 0);
    a.add_agent(agent(0), total, &[(role("db"), reserved)])
        .unwrap();
    a.add_framework(fw("web"), &role("web")).unwrap();
    let grants = a.allocate(Time::ZERO, Scope::All);
    assert_eq!(grants.len(), 1);
    assert_eq!(
        grants[0].resources,
        total - reserved,
        "web gets only the unreserved part"
    );
    assert_eq!(grants[0].reservation, None);
    a.add_framework(fw("db1"), &role("db")).unwrap();
    let grants = a.allocate(Time::ZERO, Scope::All);
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].framework, fw("db1"));
    assert_eq!(grants[0].resources, reserved);
    assert_eq!(grants[0].reservation, Some(role("db")));
    let g = &grants[0];
    a.recover(
        &g.framework,
        &g.agent,
        Some(&role("db")),
        g.resources,
        None,
        Time::ZERO,
    )
    .unwrap();
    assert_eq!(a.framework_allocation(&fw("db1")), Some(Resources::ZERO));
}

#[test]
fn reservations_larger_than_the_agent_are_refused() {
    let mut a = Allocator::new(AllocatorConfig::default());
    let err = a
        .add_agent(
            agent(0),
            Resources::new(1.0, 1 << 30, 0),
            &[(role("db"), Resources::new(2.0, 0, 0))],
        )
        .unwrap_err();
    assert!(matches!(
        err,
        AllocatorError::ReservationsExceedTotal { .. }
    ));
}

#[test]
fn quota_is_met_before_fair_sharing_and_headroom_is_kept() {
    let mut a = cluster(10, Resources::new(1.0, 1 << 30, 0));
    // `big` arrives first and would take everything under plain DRF order
    // ties; `small` has a quota of 4 agents' worth.
    a.add_framework(fw("big"), &role("big")).unwrap();
    a.add_framework(fw("small"), &role("small")).unwrap();
    a.set_weight(&role("big"), 100.0).unwrap();
    a.set_quota(&role("small"), Resources::new(4.0, 4 << 30, 0));
    let counts = count_by_framework(&a.allocate(Time::ZERO, Scope::All));
    assert!(counts["small"] >= 4, "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 10);
}

#[test]
fn headroom_is_held_for_a_quota_role_whose_framework_is_filtered() {
    let mut a = cluster(4, Resources::new(1.0, 1 << 30, 0));
    a.add_framework(fw("q"), &role("q")).unwrap();
    a.add_framework(fw("other"), &role("other")).unwrap();
    a.set_quota(&role("q"), Resources::new(2.0, 2 << 30, 0));
    a.suppress(&fw("q")).unwrap();
    let counts = count_by_framework(&a.allocate(Time::ZERO, Scope::All));
    assert_eq!(
        counts.get("other"),
        Some(&2),
        "two agents stay free for q's quota"
    );
}

#[test]
fn crumbs_below_min_allocatable_are_not_offered() {
    let mut a = cluster(1, Resources::new(0.001, 1 << 30, 0));
    a.add_framework(fw("f"), &role("r")).unwrap();
    assert!(a.allocate(Time::ZERO, Scope::All).is_empty());
}

#[test]
fn a_disconnected_framework_is_not_offered_and_inactive_agents_are_skipped() {
    let mut a = cluster(2, Resources::new(1.0, 1 << 30, 0));
    a.add_framework(fw("f"), &role("r")).unwrap();
    a.set_framework_connected(&fw("f"), false).unwrap();
    assert!(a.allocate(Time::ZERO, Scope::All).is_empty());
    a.set_framework_connected(&fw("f"), true).unwrap();
    a.set_agent_active(&agent(0), false).unwrap();
    let grants = a.allocate(Time::ZERO, Scope::All);
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].agent, agent(1));
}

#[test]
fn audit_finds_no_violation_in_a_busy_cycle() {
    let mut a = cluster(500, Resources::new(2.0, 4 << 30, 0));
    a.enable_audit();
    for i in 0..20 {
        a.add_framework(fw(&format!("f{i}")), &role(&format!("r{}", i % 3)))
            .unwrap();
    }
    a.set_weight(&role("r0"), 3.0).unwrap();
    let grants = a.allocate(Time::ZERO, Scope::All);
    assert_eq!(grants.len(), 500);
    assert_eq!(a.take_audit_violations(), Vec::<String>::new());
}

#[test]
fn bad_weights_are_refused() {
    let mut a = cluster(1, Resources::new(1.0, 1 << 30, 0));
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(a.set_weight(&role("r"), bad).is_err());
    }
}

#[test]
fn a_filter_holds_back_only_what_was_refused() {
    let mut a = cluster(1, Resources::new(2.0, 4 << 30, 0));
    a.add_framework(fw("f"), &role("r")).unwrap();
    let g = a.allocate(Time::ZERO, Scope::All).remove(0);
    // The framework uses 1 cpu and refuses the rest for a minute.
    let used = Resources::new(1.0, 1 << 30, 0);
    let rest = g.resources - used;
    a.recover(
        &g.framework,
        &g.agent,
        None,
        rest,
        Some(Duration::from_secs(60)),
        Time::ZERO,
    )
    .unwrap();
    assert!(
        a.allocate(Time(1), Scope::All).is_empty(),
        "the refused rest stays back"
    );
    // Its task ends: more is free than was refused, so it is offered again.
    a.recover(&g.framework, &g.agent, None, used, None, Time(2))
        .unwrap();
    let again = a.allocate(Time(3), Scope::All);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].resources, g.resources);
}
