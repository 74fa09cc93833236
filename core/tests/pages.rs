//! The paged views the web UI and the list calls read: a page holds the
//! tasks (agents, frameworks) after its cursor in id order, every one a
//! filter matches appears on exactly one page, and nobody sees tasks or
//! frameworks they may not; each task keeps its last changes of state.

use wasmos_core::access::{Grant, Principal};
use wasmos_core::core::{TaskFilter, TaskPage};
use wasmos_core::testing::{GIB, Harness, task};
use wasmos_proto::v1;

/// 25 tasks of framework `a` (owner `alice`) and 5 of `b` (owner `bob`),
/// `a-07` and `b-02` finished.
fn thirty_tasks() -> Harness {
    let mut h = Harness::new();
    let agent = h.add_agent(64.0, 64 * GIB);
    for (name, owner, count) in [("a", "alice", 25), ("b", "bob", 5)] {
        let fw = h
            .subscribe_with(v1::FrameworkInfo {
                name: name.into(),
                role: "web".into(),
                principal: owner.into(),
                ..Default::default()
            })
            .unwrap();
        let offer = h.take_offers(&fw).pop().expect("an offer");
        let tasks = (0..count)
            .map(|i| task(&format!("{name}-{i:02}"), 0.1, 1 << 20))
            .collect();
        h.accept(&fw, &[&offer], tasks, None).unwrap();
        for i in 0..count {
            h.report(&agent, &format!("{name}-{i:02}"), v1::TaskState::Running);
        }
    }
    h.report(&agent, "a-07", v1::TaskState::Finished);
    h.report(&agent, "b-02", v1::TaskState::Finished);
    h
}

fn admin() -> Principal {
    Principal::local()
}

fn bob() -> Principal {
    Principal {
        name: "bob".into(),
        accessor: "b".into(),
        grant: Grant::Roles(vec!["web".into()]),
    }
}

fn ids(page: &TaskPage) -> Vec<String> {
    page.tasks.iter().map(|t| t.id.to_string()).collect()
}

/// Every page of `filter` as seen by `who`, `limit` at a time.
fn walk(h: &Harness, filter: &TaskFilter, who: &Principal, limit: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = h.core.task_page(filter, who, after.as_deref(), limit);
        assert!(page.tasks.len() <= limit);
        seen.extend(ids(&page));
        match page.next {
            Some(next) => after = Some(next.to_string()),
            None => return seen,
        }
    }
}

#[test]
fn pages_walk_every_matching_task_once_in_id_order() {
    let h = thirty_tasks();
    let all = TaskFilter::default();
    let first = h.core.task_page(&all, &admin(), None, 7);
    assert_eq!(first.matching, 30);
    assert_eq!(
        ids(&first),
        ["a-00", "a-01", "a-02", "a-03", "a-04", "a-05", "a-06"]
    );
    assert_eq!(
        first.next.as_ref().map(|t| t.to_string()),
        Some("a-06".into())
    );

    let walked = walk(&h, &all, &admin(), 7);
    let mut sorted = walked.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(walked, sorted, "in id order, none twice");
    assert_eq!(walked.len(), 30);

    // A page exactly as long as what is left says there is no next one.
    let last = h.core.task_page(&all, &admin(), Some("a-24"), 5);
    assert_eq!(ids(&last), ["b-00", "b-01", "b-02", "b-03", "b-04"]);
    assert_eq!(last.next, None);
}

#[test]
fn a_job_filter_walks_only_that_jobs_ids() {
    // Ids of the job service are `<job>-<index>-<attempt>`: `a` is a "job"
    // here, and `a-0` one too, whose ids are not `a`'s prefix plus `-`.
    let h = thirty_tasks();
    let of_a = TaskFilter {
        job: "a".into(),
        ..Default::default()
    };
    let walked = walk(&h, &of_a, &admin(), 4);
    assert_eq!(walked.len(), 25);
    assert!(walked.iter().all(|id| id.starts_with("a-")));
    assert_eq!(h.core.task_page(&of_a, &admin(), None, 4).matching, 25);
    // A cursor before the job starts at its first id; one past it, nothing.
    assert_eq!(
        ids(&h.core.task_page(&of_a, &admin(), Some("0"), 1)),
        ["a-00"]
    );
    assert!(
        h.core
            .task_page(&of_a, &admin(), Some("z"), 4)
            .tasks
            .is_empty()
    );
    let none = TaskFilter {
        job: "a-0".into(),
        ..Default::default()
    };
    assert_eq!(h.core.task_page(&none, &admin(), None, 4).matching, 0);
    // Bob walks the same filter the long way and sees none of Alice's.
    assert!(walk(&h, &of_a, &bob(), 4).is_empty());
}

#[test]
fn filters_and_visibility_narrow_the_pages_and_their_counts() {
    let h = thirty_tasks();
    let finished = TaskFilter {
        state: Some(v1::TaskState::Finished),
        ..Default::default()
    };
    assert_eq!(walk(&h, &finished, &admin(), 1), ["a-07", "b-02"]);
    assert_eq!(walk(&h, &finished, &bob(), 10), ["b-02"]);
    let page = h.core.task_page(&TaskFilter::default(), &bob(), None, 100);
    assert_eq!(page.matching, 5);
    assert!(page.tasks.iter().all(|t| t.owner == "bob"));

    let framework_a = h.core.task_page(&TaskFilter::default(), &admin(), None, 1);
    let a = framework_a.tasks[0].framework.clone();
    let of_a = TaskFilter {
        framework: a,
        state: Some(v1::TaskState::Running),
        ..Default::default()
    };
    assert_eq!(h.core.task_page(&of_a, &admin(), None, 100).matching, 24);
    let nowhere = TaskFilter {
        agent: "no-such-agent".into(),
        ..Default::default()
    };
    assert_eq!(h.core.task_page(&nowhere, &admin(), None, 100).matching, 0);

    let counts = h.core.task_counts(&bob());
    assert_eq!(counts.get(&v1::TaskState::Running), Some(&4));
    assert_eq!(counts.get(&v1::TaskState::Finished), Some(&1));
    let counts = h.core.task_counts(&admin());
    assert_eq!(counts.get(&v1::TaskState::Running), Some(&28));
    assert_eq!(counts.get(&v1::TaskState::Finished), Some(&2));
}

#[test]
fn a_task_keeps_its_changes_of_state() {
    let h = thirty_tasks();
    let task = h.core.task("a-07").unwrap();
    let states: Vec<_> = task.transitions.iter().map(|t| t.state).collect();
    assert_eq!(
        states,
        [
            v1::TaskState::Staging,
            v1::TaskState::Running,
            v1::TaskState::Finished
        ]
    );
}

/// Every page of agents, `limit` at a time, and the count each page gave.
fn walk_agents(h: &Harness, limit: usize) -> (Vec<String>, Vec<usize>) {
    let (mut seen, mut counts) = (Vec::new(), Vec::new());
    let mut after: Option<String> = None;
    loop {
        let page = h.core.agent_page(after.as_deref(), limit);
        assert!(page.items.len() <= limit);
        counts.push(page.matching);
        seen.extend(page.items.iter().map(|a| a.id.to_string()));
        match page.next {
            Some(next) => after = Some(next),
            None => return (seen, counts),
        }
    }
}

#[test]
fn agent_pages_walk_every_agent_once_in_id_order() {
    let mut h = thirty_tasks();
    for _ in 0..9 {
        h.add_agent(4.0, 8 * GIB);
    }
    let everyone: Vec<String> = h.core.agents().iter().map(|a| a.id.to_string()).collect();
    assert_eq!(everyone.len(), 10);
    for limit in [1, 3, 4, 10, 11] {
        let (seen, counts) = walk_agents(&h, limit);
        assert_eq!(seen, everyone, "pages of {limit}");
        assert!(counts.iter().all(|&c| c == 10), "{counts:?}");
    }
    // A page's views are the same as the full list's: the agent with the
    // tasks shows them.
    let first = h.core.agent_page(None, 10);
    let full = h.core.agents();
    for (paged, listed) in first.items.iter().zip(&full) {
        assert_eq!(paged.id, listed.id);
        assert_eq!(paged.tasks, listed.tasks);
        assert_eq!(paged.used, listed.used);
    }
    assert_eq!(first.items.iter().map(|a| a.tasks).sum::<usize>(), 30);
    // Past the last id: an empty last page that still counts them all.
    let last = everyone.last().unwrap();
    let beyond = h.core.agent_page(Some(last), 5);
    assert!(beyond.items.is_empty() && beyond.next.is_none());
    assert_eq!(beyond.matching, 10);
}

#[test]
fn framework_pages_show_each_only_the_frameworks_they_may_see() {
    let h = thirty_tasks();
    let walk = |who: &Principal, limit: usize| {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = h.core.framework_page(who, after.as_deref(), limit);
            seen.extend(page.items.iter().map(|f| (f.name.clone(), page.matching)));
            match page.next {
                Some(next) => after = Some(next),
                None => return seen,
            }
        }
    };
    assert_eq!(
        walk(&admin(), 1),
        [("a".to_string(), 2), ("b".to_string(), 2)]
    );
    assert_eq!(walk(&bob(), 1), [("b".to_string(), 1)]);
    let page = h.core.framework_page(&admin(), None, 5);
    let a = page.items.iter().find(|f| f.name == "a").unwrap();
    // 25 launched, `a-07` finished but not acknowledged: all still held.
    assert_eq!(a.active_tasks, 25);
}
